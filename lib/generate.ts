// Generation one token at a time (Model.stream) and from text to text (generateText).
import type { GenerateOptions, Model, TokenBatch } from './model';
import { toTokenTensor } from './model';
import { ChatMessage, checkMessages, renderChat } from './chat';
import { encodePrompt, encodeRendered } from './data';
import type { TextTokenizer } from './tokenizer';

/** The options of `Model.stream`: those of `Model.generate` for one row without padding. */
export type StreamOptions = Omit<GenerateOptions, 'attentionMask' | 'padTokenId'>;

export interface GenerateTextOptions extends StreamOptions {
  /** Called with each new piece of text as soon as it decodes (whole characters only). */
  onText?: (text: string) => void;
  /**
   * Put the tokenizer's bos first (when it has one), as rlora's datasets encode prompts by default
   * (DatasetOptions.addBos). Default true; an adapter records what its training data used
   * (adapter.trainingData.addBos). The prompt is then encoded without other special tokens.
   */
  addBos?: boolean;
}

const asList = (v: number | number[] | null | undefined): number[] => (v == null ? [] : Array.isArray(v) ? v : [v]);

/** The single row of `ids` as numbers; more rows (or none) are refused. */
function oneRow(ids: TokenBatch, shape: [number, number] | undefined): number[] {
  if (Array.isArray(ids) && ids.length > 0 && !Array.isArray(ids[0])) {
    throw new TypeError('Model.stream: inputIds must be one row [[id, ...]], got a flat array (wrap it in [...])');
  }
  if (Array.isArray(ids) && ids.length > 1) {
    throw new RangeError(`Model.stream: streams one batch row only, got ${ids.length} rows (call it once per row, or use Model.generate for a batch)`);
  }
  const t = toTokenTensor(ids, 'Model.stream: inputIds', shape);
  if (t.shape.length !== 2) throw new RangeError(`Model.stream: inputIds must be [1, sequence], got shape [${t.shape.join(', ')}]`);
  if (t.shape[0] !== 1) {
    throw new RangeError(`Model.stream: streams one batch row only, got ${t.shape[0]} rows (call it once per row, or use Model.generate for a batch)`);
  }
  if (t.shape[1] === 0) throw new RangeError('Model.stream: inputIds must hold at least one token');
  return Array.from(t.data() as BigInt64Array, Number);
}

/**
 * The new tokens of one row, as Model.stream yields them (it delegates here). The last token is
 * the eos token when generation stopped at one.
 *
 * It calls `model.generate` for one token at a time on the growing sequence, so each token costs
 * a forward pass over the whole sequence; reusing the key/value cache is a later optimisation.
 * Greedy decoding (temperature 0) yields exactly what `generate` returns; sampled tokens use seed
 * `seed + i` for the i-th token, so they differ from one `generate` call with the same seed.
 */
export async function* streamTokens(model: Model, inputIds: TokenBatch, options: StreamOptions = {}): AsyncGenerator<number, void, undefined> {
  if ((options as GenerateOptions).attentionMask !== undefined) {
    throw new TypeError('Model.stream: attentionMask is not supported (one row needs no padding)');
  }
  const seq = oneRow(inputIds, options.shape);
  const maxNewTokens = options.maxNewTokens ?? 32;
  if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 0) throw new RangeError(`Model.stream: maxNewTokens must be an integer >= 0, got ${maxNewTokens}`);
  const eos = options.eosTokenId !== undefined ? asList(options.eosTokenId) : asList(model.config.eos_token_id);
  const seed = options.seed ?? 0;
  for (let i = 0; i < maxNewTokens; i++) {
    const [row] = await model.generate([seq], {
      maxNewTokens: 1,
      temperature: options.temperature,
      topK: options.topK,
      topP: options.topP,
      eosTokenId: eos,
      seed: seed + i,
    });
    const token = row[seq.length];
    seq.push(token);
    yield token;
    if (eos.includes(token)) return;
  }
}

/**
 * Continues `prompt` and returns the new text: encodes the prompt as datasets encode prompts (the
 * tokenizer's bos first unless options.addBos is false, never an eos), streams new tokens (Model.stream) and decodes those before the
 * first eos. The eos ids are options.eosTokenId, else the model config's, else the tokenizer's.
 */
export async function generateText(model: Model, tokenizer: TextTokenizer, prompt: string, options: GenerateTextOptions = {}): Promise<string> {
  if (typeof prompt !== 'string') throw new TypeError(`generateText: prompt must be a string, got ${typeof prompt}`);
  const { addBos, ...rest } = options;
  // exactly as a dataset encodes a prompt (it used to follow the tokenizer's own rules, which for
  // the byte tokenizer meant no bos: generation then disagreed with evaluation)
  return continueIds(model, tokenizer, encodePrompt(tokenizer, prompt, addBos ?? true), rest);
}

/**
 * Answers a conversation: renders `messages` with the tokenizer's chat_template and the generation
 * prompt (Tokenizer.applyChatTemplate(messages, {addGenerationPrompt: true})), encodes that text as
 * datasets encode chat records (the special tokens it writes become their ids), and returns the new
 * text up to the first eos, as generateText does. This is how an adapter trained on chat records is
 * used: its evaluation generates from the same tokens.
 */
export async function generateChat(model: Model, tokenizer: TextTokenizer, messages: readonly ChatMessage[], options: Omit<GenerateTextOptions, 'addBos'> = {}): Promise<string> {
  if (!tokenizer.chatTemplate) throw new Error('generateChat: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja); use generateText with a prompt template instead');
  const text = renderChat(tokenizer.chatTemplate, checkMessages(messages, 'generateChat'), true, tokenizer);
  return continueIds(model, tokenizer, encodeRendered(tokenizer, text), options);
}

/** Streams new tokens after `ids` and returns their text before the first eos (generateText, generateChat). */
async function continueIds(model: Model, tokenizer: TextTokenizer, ids: number[], options: Omit<GenerateTextOptions, 'addBos'>): Promise<string> {
  const { onText, ...rest } = options;
  const configEos = asList(model.config.eos_token_id);
  const eos = options.eosTokenId !== undefined ? asList(options.eosTokenId) : configEos.length ? configEos : asList(tokenizer.eosTokenId);
  const fresh: number[] = [];
  let shown = '';
  for await (const token of streamTokens(model, [ids], { ...rest, eosTokenId: eos })) {
    if (eos.includes(token)) break;
    fresh.push(token);
    if (onText) {
      // a multi-byte character may span tokens: wait until it decodes whole
      const text = tokenizer.decode(fresh);
      if (!text.endsWith('\uFFFD') && text.startsWith(shown) && text.length > shown.length) {
        onText(text.slice(shown.length));
        shown = text;
      }
    }
  }
  const text = tokenizer.decode(fresh);
  if (onText && text.startsWith(shown) && text.length > shown.length) onText(text.slice(shown.length));
  return text;
}

/**
 * The prompt a template makes of `prompt`: the template up to `{response}` (all of it when it has
 * none) with `{prompt}` filled in, as rlora's datasets build their prompts.
 */
export function applyPromptTemplate(template: string, prompt: string): string {
  const at = template.indexOf('{response}');
  const head = at < 0 ? template : template.slice(0, at);
  return head.replace(/\{prompt\}/g, () => prompt);
}
