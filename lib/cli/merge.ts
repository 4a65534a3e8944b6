// rlora merge: folds a single-head (LoRA) adapter into its base model's weights and writes a
// Hugging Face model folder that transformers (or rlora) loads with no adapter.
import * as fs from 'fs';
import * as path from 'path';

import { InputError, intOption, parseArgs, stringOption, Subcommand, UsageError } from './args';
import { as, lib, loadModel, modelArgument, resolveFolder } from './common';
import { ADAPTER_CONFIG_FILE } from '../adapter/files';
import { holdsWorkingFolder, sameFile } from '../util/files';

/** Files of a model folder that describe its tokenizer and generation, copied beside the merged weights. */
const COPIED = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'tokenizer.model', 'chat_template.jinja'];

export const mergeCommand: Subcommand = {
  summary: 'fold a LoRA adapter into its base model and write a merged Hugging Face folder',
  help: `rlora merge --model DIR|ID --adapter DIR|ID --out DIR [--max-shard-size BYTES] [--overwrite]

Loads the base model, attaches the adapter and folds it into the weights (W0 + s B A, minus the
offset when the adapter has one), then writes config.json, the weights (sharded over
--max-shard-size, with model.safetensors.index.json), generation_config.json when the base has one,
and the base folder's tokenizer files. Only single-head adapters merge: a multi-head adapter's
router depends on the input (load it with its base model instead).

  --model DIR|ID         the base model's Hugging Face folder, or a Hub repo id ("org/name":
                         the Hugging Face cache, else a download into it)
  --adapter DIR|ID       the adapter folder (adapter_config.json, adapter_model.safetensors), or
                         a Hub repo id
  --out DIR              where the merged model goes (must not hold a model unless --overwrite)
  --max-shard-size N     most bytes per weights file (default 5000000000, as transformers)
  --overwrite            replace the model files already in --out

Examples:
  rlora merge --model models/SmolLM2-135M --adapter runs/a/adapter --out models/SmolLM2-135M-merged`,
  run: (args) => runMerge(args),
};

async function runMerge(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, { model: 'value', adapter: 'value', out: 'value', 'max-shard-size': 'value', overwrite: 'flag' });
  if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
  const modelArg = stringOption(opts, 'model');
  const adapterArg = stringOption(opts, 'adapter');
  const out = stringOption(opts, 'out');
  if (!modelArg || !adapterArg || !out) throw new UsageError('--model DIR, --adapter DIR and --out DIR are required');
  const maxShardSize = intOption(opts, 'max-shard-size', 1);
  // the same folder however it is spelt (a link to the base's folder had its weights overwritten);
  // --overwrite is never offered for it
  const isBase = (dir: string): boolean => sameFile(out, dir);
  const real = (dir: string): string => (fs.existsSync(dir) ? fs.realpathSync(dir) : path.resolve(dir));
  if (isBase(modelArg)) throw new InputError(`--out ${out} is the base model's folder (${real(modelArg)}): write the merged model elsewhere`);
  if (holdsWorkingFolder(out)) throw new InputError(`--out ${out} is the current folder or holds it: rlora replaces the whole --out folder, so name a folder of its own (e.g. --out ./merged)`);
  if (fs.existsSync(path.join(out, 'config.json')) && !opts.overwrite) throw new InputError(`${out} already holds a model (config.json): pass --overwrite to replace it`);
  const adapterDir = await resolveFolder(adapterArg, 'adapter', '--adapter');
  if (!fs.existsSync(path.join(adapterDir, ADAPTER_CONFIG_FILE))) throw new InputError(`${adapterDir} is not an adapter folder: no adapter_config.json`);

  const rl = lib();
  const model = await loadModel({ path: modelArgument(modelArg) }, 'model');
  const modelDir = model.source!; // a Hub repo's snapshot folder
  if (isBase(modelDir)) throw new InputError(`--out ${out} is the base model's folder (${real(modelDir)}): write the merged model elsewhere`);
  const adapter = await as(`adapter ${adapterDir}`, () => rl.Adapter.load(model, adapterDir));
  if (adapter.options.heads !== 1) {
    throw new InputError(`${adapterDir} is a ${adapter.options.method} adapter with ${adapter.options.heads} heads: only single-head (lora) adapters can be merged, because the router mixes the heads differently for every token; load it with its base model instead`);
  }
  const modules = adapter.layers.size;
  adapter.merge();
  // the tokenizer's files go in with the weights, in one replacement of the folder
  const copied = COPIED.filter((f) => fs.existsSync(path.join(modelDir, f)));
  const copyFiles = copied.map((f) => path.join(modelDir, f));
  await as(`writing ${out}`, () => model.save(out, maxShardSize === undefined ? { copyFiles } : { maxShardSize, copyFiles }));
  const files = fs.readdirSync(out).filter((f) => f.endsWith('.safetensors'));
  console.log(`merged ${modules} module${modules === 1 ? '' : 's'} of ${adapterDir} into ${modelDir}; wrote ${out} (${files.length} weights file${files.length === 1 ? '' : 's'}${copied.length ? `, ${copied.join(', ')}` : ''})`);
  return 0;
}
