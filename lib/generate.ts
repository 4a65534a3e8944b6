// From text to text: generateText (prompts), generateChat (conversations) and completeText (the
// detailed form rlora serve uses: finish reasons and token counts), all over the one generation
// path of lib/generation.ts. Stop strings end the text before them, also across token boundaries;
// streamed pieces never split a character.
import type { Model } from './model';
import { checkAborted, resolveSampling, SAMPLING_OPTION_NAMES, SamplingOptions, stopList } from './generation';
import { ChatMessage, checkMessages, renderChat } from './chat';
import { encodePrompt, encodeRendered } from './data';
import { Tensor } from './tensor';
import { idList } from './token-batch';
import type { TextTokenizer } from './tokenizer';
import { checkKeys, show } from './util/options';

export interface GenerateTextOptions extends SamplingOptions {
  /**
   * Called with each new piece of text as soon as it is sure: whole characters only, and never
   * text that could still turn out to start a stop string. With several prompts or sequences,
   * the second argument is the sequence's index in the result.
   */
  onText?: (text: string, index: number) => void;
  /**
   * Put the tokenizer's bos first (when it has one), as rlora's datasets encode prompts by default
   * (DatasetOptions.addBos). Default true; an adapter records what its training data used
   * (adapter.trainingData.addBos). The prompt is then encoded without other special tokens.
   * (generateText only: a chat template writes its own special tokens.)
   */
  addBos?: boolean;
  /** Strings that end the text: it ends before the first one (which is not part of it). */
  stop?: string | string[];
}

const TEXT_OPTION_NAMES = [...SAMPLING_OPTION_NAMES, 'onText', 'addBos', 'stop'] as const satisfies readonly (keyof GenerateTextOptions)[];
const CHAT_OPTION_NAMES = TEXT_OPTION_NAMES.filter((n) => n !== 'addBos');

/** One generated text with why it ended and its token counts (completeText). */
export interface TextCompletion {
  text: string;
  /** 'stop': an eos token or a stop string ended it; 'length': maxNewTokens did. */
  finishReason: 'stop' | 'length';
  /** Tokens of its prompt (without padding). */
  promptTokens: number;
  /** New tokens made for it, the eos or the token that completed a stop string included. */
  completionTokens: number;
  /** Which prompt it continues (0 for a single prompt). */
  promptIndex: number;
}

/**
 * Continues `prompt` and returns the new text: encodes the prompt as datasets encode prompts (the
 * tokenizer's bos first unless options.addBos is false, never an eos), generates with the model's
 * key/value cache and decodes the tokens before the first eos or stop string. The eos ids are
 * options.eosTokenId, else generation_config.json's, else config.json's, else the tokenizer's.
 * Several prompts (an array) are generated together in one left-padded batch, and
 * numReturnSequences > 1 gives that many texts per prompt: the result is then a list (prompt 0's
 * sequences first).
 */
export function generateText(model: Model, tokenizer: TextTokenizer, prompt: string, options?: GenerateTextOptions & { numReturnSequences?: 1 }): Promise<string>;
export function generateText(model: Model, tokenizer: TextTokenizer, prompts: readonly string[], options?: GenerateTextOptions): Promise<string[]>;
export function generateText(model: Model, tokenizer: TextTokenizer, prompt: string | readonly string[], options?: GenerateTextOptions): Promise<string | string[]>;
export async function generateText(model: Model, tokenizer: TextTokenizer, prompt: string | readonly string[], options: GenerateTextOptions = {}): Promise<string | string[]> {
  const where = 'generateText';
  const list = promptList(prompt, where, (p): p is string => typeof p === 'string', 'a string');
  const { addBos, ...rest } = checkedOptions(options, TEXT_OPTION_NAMES, where);
  // exactly as a dataset encodes a prompt (it used to follow the tokenizer's own rules, which for
  // the byte tokenizer meant no bos: generation then disagreed with evaluation)
  const ids = list.map((p) => encodePrompt(tokenizer, p, addBos ?? true));
  return shaped(await complete(model, tokenizer, ids, rest, where), typeof prompt === 'string');
}

/**
 * Answers a conversation: renders `messages` with the tokenizer's chat_template and the generation
 * prompt (Tokenizer.applyChatTemplate(messages, {addGenerationPrompt: true})), encodes that text as
 * datasets encode chat records (the special tokens it writes become their ids), and returns the new
 * text up to the first eos or stop string, as generateText does. A list of conversations is
 * answered in one batch. This is how an adapter trained on chat records is used: its evaluation
 * generates from the same tokens.
 */
export function generateChat(model: Model, tokenizer: TextTokenizer, messages: readonly ChatMessage[], options?: Omit<GenerateTextOptions, 'addBos'> & { numReturnSequences?: 1 }): Promise<string>;
export function generateChat(model: Model, tokenizer: TextTokenizer, conversations: readonly (readonly ChatMessage[])[], options?: Omit<GenerateTextOptions, 'addBos'>): Promise<string[]>;
export function generateChat(model: Model, tokenizer: TextTokenizer, messages: readonly ChatMessage[] | readonly (readonly ChatMessage[])[], options?: Omit<GenerateTextOptions, 'addBos'>): Promise<string | string[]>;
export async function generateChat(model: Model, tokenizer: TextTokenizer, messages: readonly ChatMessage[] | readonly (readonly ChatMessage[])[], options: Omit<GenerateTextOptions, 'addBos'> = {}): Promise<string | string[]> {
  const where = 'generateChat';
  const single = Array.isArray(messages) && !Array.isArray(messages[0]);
  const list = (single ? [messages] : messages) as readonly (readonly ChatMessage[])[];
  if (!Array.isArray(list) || list.length === 0) throw new TypeError(`${where}: messages must be a conversation (a list of {role, content}) or a non-empty list of them, got ${show(messages)}`);
  const rest = checkedOptions(options, CHAT_OPTION_NAMES, where);
  const ids = list.map((m, i) => chatIds(tokenizer, m, list.length === 1 ? where : `${where}: conversation ${i}`));
  return shaped(await complete(model, tokenizer, ids, rest, where), single);
}

/** The token ids a conversation's answer continues: the chat template with the generation prompt, encoded as datasets do. */
export function chatIds(tokenizer: TextTokenizer, messages: readonly ChatMessage[], where: string): number[] {
  if (!tokenizer.chatTemplate) throw new Error(`${where}: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja); use generateText with a prompt template instead`);
  return encodeRendered(tokenizer, renderChat(tokenizer.chatTemplate, checkMessages(messages, where), true, tokenizer));
}

/**
 * The detailed form of generateText / generateChat over prompts already encoded (token ids): each
 * text with its finish reason and token counts, prompt 0's sequences first. rlora serve answers
 * with these.
 */
export async function completeText(model: Model, tokenizer: TextTokenizer, prompts: readonly (readonly number[])[], options: Omit<GenerateTextOptions, 'addBos'> = {}): Promise<TextCompletion[]> {
  const where = 'completeText';
  const list = promptList(prompts, where, (p): p is readonly number[] => Array.isArray(p) && p.length > 0 && p.every((t) => Number.isSafeInteger(t) && t >= 0), 'a non-empty list of token ids');
  return complete(model, tokenizer, list, checkedOptions(options, CHAT_OPTION_NAMES, where), where);
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

function promptList<T>(v: T | readonly T[], where: string, ok: (x: unknown) => x is T, what: string): T[] {
  const list = (ok(v) ? [v] : v) as unknown;
  if (!Array.isArray(list) || list.length === 0) throw new TypeError(`${where}: prompt must be ${what} or a non-empty list of them, got ${show(v)}`);
  list.forEach((p, i) => {
    if (!ok(p)) throw new TypeError(`${where}: prompt ${i} must be ${what}, got ${show(p)}`);
  });
  return list as T[];
}

function checkedOptions<T extends GenerateTextOptions>(options: T, known: readonly string[], where: string): T {
  // the keys here, before any prompt is encoded; the sampling values in complete(), with the model's defaults
  checkKeys(options, known, where);
  if (options.onText !== undefined && typeof options.onText !== 'function') throw new TypeError(`${where}: onText must be a function, got ${show(options.onText)}`);
  if (options.addBos !== undefined && typeof options.addBos !== 'boolean') throw new TypeError(`${where}: addBos must be true or false, got ${show(options.addBos)}`);
  return options;
}

/** The texts of completions: one string for one prompt and one sequence, else the list. */
function shaped(done: TextCompletion[], single: boolean): string | string[] {
  return single && done.length === 1 ? done[0].text : done.map((d) => d.text);
}

interface RowState {
  tokens: number[];
  ended: boolean;
  finish: 'stop' | 'length';
  /** The text cut before a stop string, once one was found. */
  cut?: string;
  /** What onText has been given so far. */
  shown: string;
  completionTokens: number;
}

/** Generates for encoded prompts: left-padded into one batch, stepped one token at a time when text must be watched. */
async function complete(model: Model, tokenizer: TextTokenizer, prompts: readonly (readonly number[])[], options: Omit<GenerateTextOptions, 'addBos'>, where: string): Promise<TextCompletion[]> {
  const { onText, stop, ...sampling } = options;
  const o = resolveSampling(sampling, SAMPLING_OPTION_NAMES, where, model.generationDefaults(), idList(tokenizer.eosTokenId));
  const stops = stopList(stop, where);
  const width = Math.max(...prompts.map((p) => p.length));
  const padded = prompts.some((p) => p.length !== width);
  const ids = Tensor.from(prompts.map((p) => [...new Array<number>(width - p.length).fill(o.padTokenId), ...p]), undefined, { dtype: 'int64' });
  const mask = padded ? Tensor.from(prompts.map((p) => [...new Array<number>(width - p.length).fill(0), ...new Array<number>(p.length).fill(1)]), undefined, { dtype: 'int64' }) : null;
  const n = o.numReturnSequences;
  const run = model.startGeneration(ids, mask, o, where);
  const state: RowState[] = Array.from({ length: run.rows }, () => ({ tokens: [], ended: false, finish: 'length', shown: '', completionTokens: 0 }));
  // text that may still be the start of a stop string is held back from onText
  const holdBack = stops.length ? Math.max(...stops.map((s) => s.length)) - 1 : 0;
  const watch = onText !== undefined || stops.length > 0 || o.signal !== undefined;
  try {
    while (!run.finished) {
      checkAborted(o.signal);
      const step = await run.step(watch ? 1 : o.maxNewTokens);
      const endNow = state.map(() => false);
      step.forEach((tokens, i) => {
        const r = state[i];
        if (r.ended) return;
        for (const t of tokens) {
          r.completionTokens++;
          if (o.eosTokenIds.includes(t)) {
            r.ended = true;
            r.finish = 'stop';
            break;
          }
          r.tokens.push(t);
        }
        if (!watch) return;
        const text = tokenizer.decode(r.tokens);
        if (stops.length && !r.ended) {
          const at = Math.min(...stops.map((s) => text.indexOf(s)).filter((k) => k >= 0));
          if (Number.isFinite(at)) {
            r.cut = text.slice(0, at);
            r.ended = true;
            r.finish = 'stop';
            endNow[i] = true;
          }
        }
        if (onText && !r.ended) {
          let sure = text.slice(0, text.length - holdBack);
          while (sure.endsWith('\uFFFD')) sure = sure.slice(0, -1); // a character still arriving in bytes
          if (sure.length > r.shown.length && sure.startsWith(r.shown)) {
            onText(sure.slice(r.shown.length), i);
            r.shown = sure;
          }
        }
      });
      run.endRows(endNow);
    }
  } finally {
    run.dispose();
  }
  return state.map((r, i) => {
    const text = r.cut ?? tokenizer.decode(r.tokens);
    if (onText && text.length > r.shown.length && text.startsWith(r.shown)) onText(text.slice(r.shown.length), i);
    const promptIndex = Math.floor(i / n);
    return { text, finishReason: r.finish, promptTokens: prompts[promptIndex].length, completionTokens: r.completionTokens, promptIndex };
  });
}
