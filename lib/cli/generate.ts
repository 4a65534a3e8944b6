// rlora generate: continue a prompt with a model (and an adapter), printing tokens as they come.
import * as fs from 'fs';
import * as path from 'path';

import { InputError, intOption, parseArgs, stringOption, Subcommand, UsageError } from './args';
import { adapterBase, as, checkVocabulary, lib, loadModel, loadTokenizer, modelArgument, resolveFolder } from './common';
import { ADAPTER_CONFIG_FILE, RLORA_CONFIG_FILE } from '../adapter/files';

export const generateCommand: Subcommand = {
  summary: 'continue a prompt with a model (and an adapter), printing the text as it comes',
  help: `rlora generate --model DIR|ID --prompt TEXT [--adapter DIR|ID] [options]
rlora generate --adapter DIR|ID --prompt TEXT [options]

Loads the model (and attaches the adapter), encodes the prompt with the model folder's
tokenizer.json (the byte tokenizer when the folder has none; stderr says which) and prints the
generated text on stdout token by token, stopping at eos or after --max-new-tokens.

  --model DIR|ID        the base model's Hugging Face folder, or a Hub repo id ("org/name":
                        the Hugging Face cache, else a download into it); default with --adapter:
                        the base model the adapter names (base_model_name_or_path, its revision)
  --adapter DIR|ID      an adapter folder (adapter_config.json, adapter_model.safetensors), or
                        a Hub repo id
  --prompt TEXT         the text to continue
  --max-new-tokens N    most new tokens (default 32)
  --min-new-tokens N    eos cannot end the text before N new tokens (default 0)
  --temperature T       0 (default) is greedy decoding; above 0 samples (at least 1e-30)
  --top-k K             sample from the K most likely tokens (default 0: off)
  --top-p P             sample from the smallest set of tokens whose probability reaches P
                        (default 1: off)
  --repetition-penalty R  penalise tokens already in the text, as transformers (default 1: off)
  --stop TEXT           end the text before TEXT (repeat for several)
  --seed S              seed of the sampling (default: fresh randomness each run)
  --template STR        e.g. "Q: {prompt}\\nA: {response}": the prompt is the template up to
                        {response} with {prompt} filled in. Default with --adapter: the template
                        the adapter was trained with (its rlora_config.json records it; stderr
                        says so), else none
  --chat                the prompt is a user's message, rendered with the tokenizer's chat
                        template and its generation prompt. Default with --adapter: on when the
                        adapter was trained on chat records (rlora_config.json records it)
  --system TEXT         with chat, a system message before the user's

Examples:
  rlora generate --model models/SmolLM2-135M --prompt "The capital of France is"
  rlora generate --model models/SmolLM2-135M --adapter runs/a/adapter --template "Q: {prompt}\\nA: {response}" --prompt "2+2?"`,
  run: (args) => runGenerate(args),
};

async function runGenerate(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, {
    model: 'value', adapter: 'value', prompt: 'value', 'max-new-tokens': 'value', 'min-new-tokens': 'value', temperature: 'value', seed: 'value', template: 'value',
    chat: 'flag', system: 'value', 'top-k': 'value', 'top-p': 'value', 'repetition-penalty': 'value', stop: 'list',
  });
  if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
  const modelArg = stringOption(opts, 'model');
  if (!modelArg && stringOption(opts, 'adapter') === undefined) throw new UsageError('--model DIR|ID is required (or an --adapter, whose base model is used)');
  const prompt = stringOption(opts, 'prompt');
  if (prompt === undefined) throw new UsageError('--prompt TEXT is required');
  const adapterArg = stringOption(opts, 'adapter');
  const maxNewTokens = intOption(opts, 'max-new-tokens', 0);
  const seed = intOption(opts, 'seed', 0);
  const tempOpt = stringOption(opts, 'temperature');
  const temperature = tempOpt === undefined ? undefined : Number(tempOpt);
  if (temperature !== undefined && (tempOpt!.trim() === '' || !Number.isFinite(temperature) || temperature < 0)) {
    throw new UsageError(`--temperature must be a number >= 0, got ${JSON.stringify(tempOpt)}`);
  }
  const minNewTokens = intOption(opts, 'min-new-tokens', 0);
  const topK = intOption(opts, 'top-k', 0);
  const number = (flag: string, ok: (v: number) => boolean, what: string): number | undefined => {
    const raw = stringOption(opts, flag);
    if (raw === undefined) return undefined;
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(v) || !ok(v)) throw new UsageError(`--${flag} must be ${what}, got ${JSON.stringify(raw)}`);
    return v;
  };
  const topP = number('top-p', (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  const repetitionPenalty = number('repetition-penalty', (v) => v > 0, 'a number > 0');
  const stop = (opts.stop as string[] | undefined) ?? [];
  if (stop.some((x) => x === '')) throw new UsageError('--stop must not be empty');
  const template = stringOption(opts, 'template');
  if (template !== undefined && !template.includes('{prompt}')) {
    throw new UsageError(`--template ${JSON.stringify(template)} has no {prompt}: the prompt would be dropped (e.g. "Q: {prompt}\\nA: {response}")`);
  }
  const system = stringOption(opts, 'system');
  if (opts.chat && template !== undefined) throw new UsageError('--chat and --template exclude each other: a chat prompt goes through the tokenizer\'s chat template');
  const adapterDir = adapterArg === undefined ? undefined : await resolveFolder(adapterArg, 'adapter', '--adapter');
  if (adapterDir !== undefined && !fs.existsSync(path.join(adapterDir, ADAPTER_CONFIG_FILE))) {
    throw new InputError(`${adapterDir} is not an adapter folder: no adapter_config.json`);
  }

  const rl = lib();
  const source = modelArg !== undefined ? { path: modelArgument(modelArg) } : adapterBase(adapterDir!);
  const model = await loadModel(source, `model${modelArg === undefined ? ` ${source.path} (the adapter's base_model_name_or_path)` : ''}`);
  const modelDir = model.source!; // a Hub repo's snapshot folder
  const hasTokenizer = fs.existsSync(path.join(modelDir, 'tokenizer.json'));
  const tokenizer = await loadTokenizer(hasTokenizer ? undefined : 'byte', modelDir, 'tokenizer');
  console.error(hasTokenizer ? `rlora generate: tokenizer ${path.join(modelDir, 'tokenizer.json')}` : `rlora generate: ${modelDir} has no tokenizer.json; using the byte tokenizer`);
  checkVocabulary(model, tokenizer, []);
  const adapter = adapterDir !== undefined ? await as(`adapter ${adapterDir}`, () => rl.Adapter.load(model, adapterDir)) : undefined;
  // the prompt as the adapter saw prompts in training (its data template; null: the default one)
  const trained = adapter?.trainingData;
  const generation = {
    ...(maxNewTokens !== undefined ? { maxNewTokens } : {}),
    ...(temperature !== undefined ? { temperature } : {}),
    ...(seed !== undefined ? { seed } : {}),
    ...(minNewTokens !== undefined ? { minNewTokens } : {}),
    ...(topK !== undefined ? { topK } : {}),
    ...(topP !== undefined ? { topP } : {}),
    ...(repetitionPenalty !== undefined ? { repetitionPenalty } : {}),
    ...(stop.length ? { stop } : {}),
    onText: (piece: string) => void process.stdout.write(piece),
  };
  const chat = Boolean(opts.chat) || (template === undefined && trained?.chat === true);
  if (system !== undefined && !chat) throw new UsageError('--system needs chat: --chat, or an adapter trained on chat records');
  if (chat) {
    if (!tokenizer.chatTemplate) throw new InputError(`${hasTokenizer ? path.join(modelDir, 'tokenizer.json') : 'the byte tokenizer'} has no chat_template (tokenizer_config.json or chat_template.jinja): chat needs one`);
    if (!opts.chat) console.error(`rlora generate: the adapter was trained on chat records (${path.join(adapterDir!, RLORA_CONFIG_FILE)}): the prompt is a user's message, rendered with the tokenizer's chat template`);
    const messages = [...(system !== undefined ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }];
    await as('generate', () => rl.generateChat(model, tokenizer, messages, generation));
    process.stdout.write('\n');
    return 0;
  }
  let use = template;
  if (use === undefined && trained && !trained.templateFunction) {
    use = trained.template ?? rl.DEFAULT_TEMPLATE;
    console.error(`rlora generate: the prompt goes through the template the adapter was trained with (${path.join(adapterDir!, RLORA_CONFIG_FILE)}): ${JSON.stringify(use)}`);
  }
  const text = use === undefined ? prompt : rl.applyPromptTemplate(use, prompt);
  await as('generate', () =>
    rl.generateText(model, tokenizer, text, { ...generation, addBos: trained?.addBos ?? true }), // as the adapter's training data was encoded
  );
  process.stdout.write('\n');
  return 0;
}
