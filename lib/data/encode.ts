// Records to tokens (the records themselves are read by formats.ts): templates ("{prompt}\n{response}"
// or a function), conversations rendered with the tokenizer's chat template, and the labels that put
// the loss on the response (or the assistant turns, or every token of a text) only.
import { constants as bufferConstants } from 'buffer';
import * as util from 'util';

import { ChatMessage, renderChat } from '../chat';
import type { TextTokenizer } from '../tokenizer';
import { DEFAULT_MAX_LINE_BYTES } from './jsonl';
import { checkKeys, closest, describeKind as describe, isRecord as isPlainObject } from '../util/options';
import { DEFAULT_FIELDS, FIELD_KEYS, FieldKey, ReadExample, RecordFormat, TemplateFields } from './formats';

export interface DatasetOptions {
  tokenizer: TextTokenizer;
  /**
   * How prompt and response become text. A string with `{prompt}` and `{response}` placeholders
   * (and optionally `{task}`), where the response part starts at `{response}`: the text before
   * `{response}` is the prompt, `{response}` and everything after it (e.g. a closing newline) is
   * the response, e.g. `"Q: {prompt}\nA: {response}"`. Or a function returning `{prompt,
   * response}` strings. Default `"{prompt}\n{response}"` (DEFAULT_TEMPLATE): a newline between
   * them, so the model can tell where the prompt ends. It applies to `{prompt, response}` records
   * and (given) to `messages` ones; `text`, TRL's `{prompt, completion}` and Alpaca's records have
   * their own rendering (README "Data").
   */
  template?: string | ((e: TemplateFields) => { prompt: string; response: string });
  /**
   * Most tokens of a sequence (bos + prompt + response + eos), default 512. Longer sequences are
   * cut at the end and counted in `truncated`. When bos + prompt alone leave no room for a
   * response token, the prompt is cut from the left instead (bos and the end of the prompt are
   * kept) so that exactly one response token remains; such an example counts as truncated too.
   */
  maxLength?: number;
  /**
   * JSON field names of the records (fromJsonl, fromArray): the task's (in every format) and the
   * prompt's and response's of `{prompt, response}` records. Default
   * `{task: 'task', prompt: 'prompt', response: 'response'}`.
   */
  fields?: { task?: string; prompt?: string; response?: string };
  /** Prepend bos / append eos when the tokenizer has them. Default true / true. */
  addBos?: boolean;
  addEos?: boolean;
  /**
   * fromJsonl: the longest line, in bytes of UTF-8 without its line end (`\n` or `\r\n`); a longer
   * line is an error naming the file and line, raised as soon as the line passes the limit (it is
   * never read whole). An integer from 1 to 536,870,888 (the longest string V8 makes). Default
   * 64 MiB (67,108,864).
   */
  maxLineBytes?: number;
}

export interface EncodedExample {
  /** Position in its dataset. */
  index: number;
  task: string;
  /**
   * The record's prompt and response, as given (before the template): for a text record '' and
   * the text; for Alpaca's the rendered Alpaca prompt and the output; for a conversation the last
   * message before the answer and the answer.
   */
  prompt: string;
  response: string;
  /** The record's format, when not `{prompt, response}` (README "Data"). */
  format?: Exclude<RecordFormat, 'prompt-response'>;
  /** bos? + prompt tokens + response tokens + eos?, cut to maxLength. Frozen. */
  inputIds: number[];
  /** Number of leading tokens that get no loss (bos + prompt). */
  promptLength: number;
  /**
   * Token ranges [start, end) before promptLength that get loss too: the earlier assistant turns of
   * a `messages` record. Absent for prompt/response records.
   */
  lossSpans?: readonly (readonly [number, number])[];
  /** True when the record's messages were rendered with the tokenizer's chat template. */
  chat?: true;
  /** Whether the sequence was cut to maxLength. */
  truncated: boolean;
}

type TemplateFn = (e: TemplateFields) => { prompt: string; response: string };

/** Options checked once, with their defaults. */
export interface ResolvedOptions {
  tokenizer: TextTokenizer;
  template: TemplateFn;
  maxLength: number;
  fields: Record<FieldKey, string>;
  bos: number | undefined; // the id to put first, when addBos and the tokenizer has one
  eos: number | undefined;
  maxLineBytes: number;
  original: DatasetOptions;
}

/** The template when none is given: the prompt, a newline, the response. */
export const DEFAULT_TEMPLATE = '{prompt}\n{response}';

/** Splits a string template at `{response}`; fills `{prompt}`, `{response}` and `{task}` in one pass. */
function stringTemplate(where: string, template: string): TemplateFn {
  // a misspelt placeholder would be kept as text, silently dropping the field ("{promt}")
  for (const m of template.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) {
    if (FIELD_KEYS.includes(m[1] as FieldKey)) continue;
    const near = closest(m[1], [...FIELD_KEYS]);
    throw new Error(`${where}: template ${JSON.stringify(template)} has the placeholder {${m[1]}}${near ? ` (did you mean {${near}}?)` : ''}; the placeholders are {task}, {prompt} and {response}`);
  }
  const at = template.indexOf('{response}');
  if (at < 0) throw new Error(`${where}: template ${JSON.stringify(template)} has no {response} placeholder (the response part starts there)`);
  const head = template.slice(0, at);
  const tail = template.slice(at);
  const fill = (part: string, e: TemplateFields): string =>
    part.replace(/\{(prompt|response|task)\}/g, (_, key: FieldKey) => e[key]);
  return (e) => ({ prompt: fill(head, e), response: fill(tail, e) });
}

const DATASET_OPTION_NAMES = ['tokenizer', 'template', 'maxLength', 'fields', 'addBos', 'addEos', 'maxLineBytes'] as const satisfies readonly (keyof DatasetOptions)[];

export function resolveOptions(where: string, options: DatasetOptions): ResolvedOptions {
  if (!isPlainObject(options)) throw new TypeError(`${where}: options must be an object with a tokenizer, got ${describe(options)}`);
  const tokenizer = options.tokenizer;
  if (!isPlainObject(tokenizer) || typeof (tokenizer as Partial<TextTokenizer>).encode !== 'function') {
    throw new TypeError(`${where}: options.tokenizer must be a tokenizer (Tokenizer, ByteTokenizer or a TextTokenizer), got ${describe(tokenizer)}`);
  }
  // a misspelt option ("maxLen") would otherwise be ignored and its default used
  checkKeys(options, DATASET_OPTION_NAMES, where);
  let template: TemplateFn;
  const t = options.template;
  if (t === undefined) template = stringTemplate(where, DEFAULT_TEMPLATE);
  else if (typeof t === 'string') template = stringTemplate(where, t);
  else if (typeof t === 'function') template = t;
  else throw new TypeError(`${where}: options.template must be a string or a function, got ${describe(t)}`);

  const maxLength = options.maxLength ?? 512;
  if (typeof maxLength !== 'number' || !Number.isInteger(maxLength) || maxLength < 2) {
    throw new RangeError(`${where}: options.maxLength must be an integer >= 2 (bos or a prompt token, and a response token), got ${describe(maxLength)}`);
  }
  const fields: Record<FieldKey, string> = { ...DEFAULT_FIELDS };
  if (options.fields !== undefined) {
    if (!isPlainObject(options.fields)) throw new TypeError(`${where}: options.fields must be an object, got ${describe(options.fields)}`);
    for (const [key, value] of Object.entries(options.fields)) {
      if (!(FIELD_KEYS as readonly string[]).includes(key)) {
        throw new Error(`${where}: options.fields has an unknown key ${JSON.stringify(key)} (known: ${FIELD_KEYS.join(', ')})`);
      }
      if (value === undefined) continue;
      if (typeof value !== 'string' || value === '') throw new TypeError(`${where}: options.fields.${key} must be a non-empty string, got ${describe(value)}`);
      fields[key as FieldKey] = value;
    }
  }
  for (const key of ['addBos', 'addEos'] as const) {
    const v = options[key];
    if (v !== undefined && typeof v !== 'boolean') throw new TypeError(`${where}: options.${key} must be a boolean, got ${describe(v)}`);
  }
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  if (typeof maxLineBytes !== 'number' || !Number.isInteger(maxLineBytes) || maxLineBytes < 1 || maxLineBytes > bufferConstants.MAX_STRING_LENGTH) {
    throw new RangeError(`${where}: options.maxLineBytes must be an integer from 1 to ${bufferConstants.MAX_STRING_LENGTH}, got ${describe(maxLineBytes)}`);
  }
  const bos = options.addBos ?? true ? tokenizer.bosTokenId : undefined;
  const eos = options.addEos ?? true ? tokenizer.eosTokenId : undefined;
  return { tokenizer, template, maxLength, fields, bos, eos, maxLineBytes, original: options };
}

/** An encoded example, frozen (the dataset hands it out as is). */
function encoded(index: number, e: ReadExample, inputIds: number[], promptLength: number, truncated: boolean, lossSpans: readonly (readonly [number, number])[] = [], chat = false): EncodedExample {
  return Object.freeze({
    index,
    task: e.task,
    prompt: e.prompt,
    response: e.response,
    ...(e.format === 'prompt-response' ? {} : { format: e.format }),
    inputIds: Object.freeze(inputIds) as number[],
    promptLength,
    ...(lossSpans.length ? { lossSpans: Object.freeze(lossSpans) } : {}),
    ...(chat ? { chat: true as const } : {}),
    truncated,
  });
}

/**
 * Tokenizes a conversation with the tokenizer's chat template: the text is rendered turn by turn
 * (the conversation up to each assistant turn with the generation prompt, then with the turn), so
 * each assistant turn's tokens are known; those get loss, the rest (system, user, the template's
 * markup before a turn) do not. The template supplies bos/eos as it writes them.
 */
function encodeChat(at: string, index: number, e: ReadExample, o: ResolvedOptions): EncodedExample {
  const tok = o.tokenizer;
  const source = tok.chatTemplate;
  if (!source) {
    throw new Error(`${at}: the record has messages, but the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja): give options.template, or a tokenizer that has one`);
  }
  const render = (messages: ChatMessage[], addGenerationPrompt: boolean): string => {
    try {
      return renderChat(source, messages, addGenerationPrompt, tok);
    } catch (err) {
      throw new Error(`${at}: ${(err as Error).message === '' ? 'the chat template failed' : (err as Error).message}`);
    }
  };
  const msgs = e.messages!;
  let ids: number[] = [];
  let spans: [number, number][] = [];
  let text = '';
  const lossFrom = e.lossFrom ?? 0; // a conversational prompt-completion's prompt gets none
  msgs.forEach((msg, i) => {
    if (msg.role !== 'assistant' || i < lossFrom) return;
    const before = render(msgs.slice(0, i), true);
    const upto = render(msgs.slice(0, i + 1), false);
    if (!before.startsWith(text) || !upto.startsWith(before)) {
      throw new Error(`${at}: the chat template does not render the conversation turn by turn (the text before message ${i} is not the start of the text with it), so the assistant's tokens cannot be told apart`);
    }
    ids.push(...encodeRendered(tok, before.slice(text.length)));
    const start = ids.length;
    ids.push(...encodeRendered(tok, upto.slice(before.length)));
    spans.push([start, ids.length]);
    text = upto;
  });
  let truncated = false;
  const max = o.maxLength;
  let promptLength = spans[spans.length - 1][0];
  if (promptLength > max - 1) {
    // no room for the answer: drop the conversation's start (earlier turns)
    const cut = promptLength - (max - 1);
    ids = ids.slice(cut);
    spans = spans.map(([a, b]) => [a - cut, b - cut] as [number, number]).filter(([, b]) => b > 0).map(([a, b]) => [Math.max(a, 0), b] as [number, number]);
    promptLength -= cut;
    truncated = true;
  }
  if (ids.length > max) {
    ids = ids.slice(0, max);
    truncated = true;
  }
  if (ids.length - Math.max(promptLength, 1) <= 0) throw new Error(`${at}: the last assistant turn renders to no token to learn`);
  const lossSpans = spans.slice(0, -1).filter(([a, b]) => b > a).map((sp) => Object.freeze(sp) as readonly [number, number]);
  return encoded(index, e, ids, promptLength, truncated, lossSpans, true);
}

/**
 * Text a chat template wrote, as tokens: the tokenizer's bos, eos and pad tokens written as text
 * become their ids (as Hugging Face tokenizers read special tokens in text; ByteTokenizer would
 * spell them out byte by byte), the rest is encoded as text.
 */
export function encodeRendered(tokenizer: TextTokenizer, text: string): number[] {
  const specials = new Map<string, number>();
  for (const [t, id] of [[tokenizer.bosToken, tokenizer.bosTokenId], [tokenizer.eosToken, tokenizer.eosTokenId], [tokenizer.padToken, tokenizer.padTokenId]] as const) {
    if (t && id !== undefined) specials.set(t, id);
  }
  if (specials.size === 0) return encodeText(tokenizer, text);
  const pattern = new RegExp(`(${[...specials.keys()].map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})`);
  return text.split(pattern).flatMap((part, i) => (i % 2 === 1 ? [specials.get(part)!] : part ? encodeText(tokenizer, part) : []));
}

function encodeText(tokenizer: TextTokenizer, text: string): number[] {
  return tokenizer.encode(text, { addSpecialTokens: false, addBos: false, addEos: false });
}

/**
 * The ids of a prompt exactly as a dataset encodes an example's prompt (a plain text, already
 * through its template): the tokenizer's bos first when `addBos` (the datasets' default) and the
 * tokenizer has one, then the text without special tokens. Generation encodes its prompts this
 * way, so that it sees what training and evaluation saw.
 */
export function encodePrompt(tokenizer: TextTokenizer, text: string, addBos = true): number[] {
  const bos = addBos ? tokenizer.bosTokenId : undefined;
  return [...(bos === undefined ? [] : [bos]), ...encodeText(tokenizer, text)];
}

/**
 * Tokenizes one example: bos? + prompt + response + eos?, cut to maxLength. The template makes
 * prompt and response of `{prompt, response}` records (and of conversations when given); a text
 * record is all response (loss on every token), TRL's prompt and completion strings are joined as
 * they are, Alpaca's prompt is already rendered.
 */
export function encodeExample(at: string, index: number, e: ReadExample, o: ResolvedOptions): EncodedExample {
  let parts: { prompt: string; response: string };
  if (e.messages && o.original.template === undefined) return encodeChat(at, index, e, o);
  if (e.format === 'prompt-response' || e.messages) {
    // with messages, a template wins: the earlier turns' contents (one per line) are the prompt, the last answer the response
    const fields = e.messages ? { task: e.task, prompt: e.messages.slice(0, -1).map((m) => m.content).join('\n'), response: e.response } : { task: e.task, prompt: e.prompt, response: e.response };
    try {
      parts = o.template(fields);
    } catch (err) {
      throw new Error(`${at}: the template failed: ${(err as Error).message}`);
    }
  } else {
    parts = { prompt: e.prompt, response: e.response };
  }
  if (!isPlainObject(parts) || typeof parts.prompt !== 'string' || typeof parts.response !== 'string') {
    throw new TypeError(`${at}: the template function must return {prompt, response} strings, got ${util.inspect(parts, { depth: 1 })}`);
  }
  let promptIds = encodeText(o.tokenizer, parts.prompt);
  const responseIds = encodeText(o.tokenizer, parts.response);
  if (o.eos !== undefined) responseIds.push(o.eos);
  const head = o.bos !== undefined ? [o.bos] : [];
  const max = o.maxLength;
  let truncated = false;
  if (head.length + promptIds.length > max - 1 && responseIds.length > 0) {
    // No room for a response token: keep bos and the end of the prompt (nearest the response).
    promptIds = promptIds.slice(promptIds.length - (max - 1 - head.length));
    truncated = true;
  }
  const promptPart = head.concat(promptIds);
  let inputIds = promptPart.concat(responseIds);
  if (inputIds.length > max) {
    inputIds = inputIds.slice(0, max);
    truncated = true;
  }
  const promptLength = promptPart.length;
  // A token gets loss when its label is set and it has a token before it (position >= 1).
  if (inputIds.length - Math.max(promptLength, 1) <= 0) {
    throw new Error(
      `${at}: the example has no token to learn (${e.format === 'text' ? 'text' : 'response'} ${JSON.stringify(e.response)} gives ${responseIds.length} token(s)` +
        `${o.eos === undefined ? ', no eos is appended' : ''}${promptLength === 0 ? ', and nothing precedes it' : ''})`,
    );
  }
  return encoded(index, e, inputIds, promptLength, truncated);
}

export function withIndex(e: EncodedExample, index: number): EncodedExample {
  return e.index === index ? e : Object.freeze({ ...e, index });
}


/** The label of a token that no loss is computed for (prompt, padding), as torch's ignore_index. */
export const IGNORE_INDEX = -100;

/** Whether position t of e lies in one of its earlier assistant turns. */
export function inLossSpan(e: EncodedExample, t: number): boolean {
  return t >= 1 && e.lossSpans !== undefined && e.lossSpans.some(([a, b]) => t >= a && t < b);
}
