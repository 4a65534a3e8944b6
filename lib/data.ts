// Multi-task data: examples {task, prompt, response} (or {task, messages} conversations rendered
// with the tokenizer's chat template) read from JSON lines or built in code, tokenized once (loss
// on response tokens, or the assistant turns, only), and a batch sampler that mixes tasks
// (proportional, uniform or temperature sampling) with a seeded, resumable order.
import { constants as bufferConstants } from 'buffer';
import * as fs from 'fs';
import * as util from 'util';

import { ChatMessage, renderChat } from './chat';
import type { TextTokenizer } from './tokenizer';

// Node's util.inspect.custom (the same registered symbol), named without @types/node so that
// rlora's published .d.ts files type-check in projects that do not install it.
const inspectSymbol: unique symbol = Symbol.for('nodejs.util.inspect.custom');

/** One example of a task. */
export interface Example {
  task: string;
  prompt: string;
  response: string;
  /**
   * A conversation (Hugging Face's chat format) instead of prompt and response: rendered with the
   * tokenizer's chat_template, loss on the assistant turns only; the last message is the
   * assistant's answer that evaluation generates. Records give it as a `messages` field.
   */
  messages?: ChatMessage[];
}


export interface DatasetOptions {
  tokenizer: TextTokenizer;
  /**
   * How prompt and response become text. A string with `{prompt}` and `{response}` placeholders
   * (and optionally `{task}`), where the response part starts at `{response}`: the text before
   * `{response}` is the prompt, `{response}` and everything after it (e.g. a closing newline) is
   * the response, e.g. `"Q: {prompt}\nA: {response}"`. Or a function returning `{prompt,
   * response}` strings. Default `"{prompt}\n{response}"` (DEFAULT_TEMPLATE): a newline between
   * them, so the model can tell where the prompt ends.
   */
  template?: string | ((e: Example) => { prompt: string; response: string });
  /**
   * Most tokens of a sequence (bos + prompt + response + eos), default 512. Longer sequences are
   * cut at the end and counted in `truncated`. When bos + prompt alone leave no room for a
   * response token, the prompt is cut from the left instead (bos and the end of the prompt are
   * kept) so that exactly one response token remains; such an example counts as truncated too.
   */
  maxLength?: number;
  /**
   * JSON field names of the records (fromJsonl, fromArray). Default
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
  /** The record's prompt and response, as given (before the template). */
  prompt: string;
  response: string;
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

const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;
/** fromJsonl reads files in chunks of this many bytes. */
const READ_CHUNK_BYTES = 64 * 1024;

const DEFAULT_FIELDS = { task: 'task', prompt: 'prompt', response: 'response' } as const;
type FieldKey = keyof typeof DEFAULT_FIELDS;
const FIELD_KEYS: readonly FieldKey[] = ['task', 'prompt', 'response'];

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${util.inspect(value)}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

type TemplateFn = (e: Example) => { prompt: string; response: string };

/** Options checked once, with their defaults. */
interface ResolvedOptions {
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
  const at = template.indexOf('{response}');
  if (at < 0) throw new Error(`${where}: template ${JSON.stringify(template)} has no {response} placeholder (the response part starts there)`);
  const head = template.slice(0, at);
  const tail = template.slice(at);
  const fill = (part: string, e: Example): string =>
    part.replace(/\{(prompt|response|task)\}/g, (_, key: FieldKey) => e[key]);
  return (e) => ({ prompt: fill(head, e), response: fill(tail, e) });
}

function resolveOptions(where: string, options: DatasetOptions): ResolvedOptions {
  if (!isPlainObject(options)) throw new TypeError(`${where}: options must be an object with a tokenizer, got ${describe(options)}`);
  const tokenizer = options.tokenizer;
  if (!isPlainObject(tokenizer) || typeof (tokenizer as Partial<TextTokenizer>).encode !== 'function') {
    throw new TypeError(`${where}: options.tokenizer must be a tokenizer (Tokenizer, ByteTokenizer or a TextTokenizer), got ${describe(tokenizer)}`);
  }
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

/** Reads the three fields of a raw record; `at` names it in errors ("examples[3]", "file:7"). */
function readRecord(at: string, record: unknown, fields: Record<FieldKey, string>): Example {
  if (!isPlainObject(record)) throw new Error(`${at}: a record must be a JSON object, got ${describe(record)}`);
  if (Object.prototype.hasOwnProperty.call(record, 'messages')) return readChatRecord(at, record, fields);
  const out = {} as Example;
  for (const key of FIELD_KEYS) {
    const name = fields[key];
    if (!Object.prototype.hasOwnProperty.call(record, name)) {
      const keys = Object.keys(record);
      throw new Error(`${at}: missing field "${name}" (the ${key}); the record has ${keys.length ? keys.map((k) => `"${k}"`).join(', ') : 'no fields'}`);
    }
    const value = record[name];
    if (typeof value !== 'string') throw new TypeError(`${at}: field "${name}" (the ${key}) must be a string, got ${describe(value)}`);
    out[key] = value;
  }
  if (out.task === '') throw new Error(`${at}: field "${fields.task}" (the task) is empty`);
  return out;
}

/** An encoded example, frozen (the dataset hands it out as is). */
function encoded(index: number, e: Example, inputIds: number[], promptLength: number, truncated: boolean, lossSpans: readonly (readonly [number, number])[] = [], chat = false): EncodedExample {
  return Object.freeze({
    index,
    task: e.task,
    prompt: e.prompt,
    response: e.response,
    inputIds: Object.freeze(inputIds) as number[],
    promptLength,
    ...(lossSpans.length ? { lossSpans: Object.freeze(lossSpans) } : {}),
    ...(chat ? { chat: true as const } : {}),
    truncated,
  });
}

/** A `{task, messages}` record: turns of {role, content} strings, the last one the assistant's. */
function readChatRecord(at: string, record: Record<string, unknown>, fields: Record<FieldKey, string>): Example {
  const task = record[fields.task];
  if (typeof task !== 'string' || task === '') throw new TypeError(`${at}: field "${fields.task}" (the task) must be a non-empty string, got ${describe(task)}`);
  const m = record.messages;
  if (!Array.isArray(m) || m.length === 0) throw new TypeError(`${at}: field "messages" must be a non-empty array of {role, content}, got ${describe(m)}`);
  const messages: ChatMessage[] = m.map((x, i) => {
    if (!isPlainObject(x) || typeof x.role !== 'string' || typeof x.content !== 'string') {
      throw new TypeError(`${at}: messages[${i}] must be {role, content} with string values, got ${describe(x)}`);
    }
    return { role: x.role, content: x.content };
  });
  const last = messages[messages.length - 1];
  if (last.role !== 'assistant') throw new Error(`${at}: the last message must be the assistant's (the answer to learn and to generate), got role ${JSON.stringify(last.role)}`);
  const before = messages.slice(0, -1);
  return { task, prompt: before.length ? before[before.length - 1].content : '', response: last.content, messages };
}

/**
 * Tokenizes a conversation with the tokenizer's chat template: the text is rendered turn by turn
 * (the conversation up to each assistant turn with the generation prompt, then with the turn), so
 * each assistant turn's tokens are known; those get loss, the rest (system, user, the template's
 * markup before a turn) do not. The template supplies bos/eos as it writes them.
 */
function encodeChat(at: string, index: number, e: Example, o: ResolvedOptions): EncodedExample {
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
  msgs.forEach((msg, i) => {
    if (msg.role !== 'assistant') return;
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

/** Tokenizes one example: bos? + prompt + response + eos?, cut to maxLength. */
function encodeExample(at: string, index: number, e: Example, o: ResolvedOptions): EncodedExample {
  if (e.messages) {
    if (o.original.template === undefined) return encodeChat(at, index, e, o);
    // a template wins: the earlier turns' contents (one per line) are the prompt, the last answer the response
    e = { task: e.task, prompt: e.messages.slice(0, -1).map((m) => m.content).join('\n'), response: e.response };
  }
  let parts: { prompt: string; response: string };
  try {
    parts = o.template(e);
  } catch (err) {
    throw new Error(`${at}: the template failed: ${(err as Error).message}`);
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
      `${at}: the example has no token to learn (response ${JSON.stringify(e.response)} gives ${responseIds.length} token(s)` +
        `${o.eos === undefined ? ', no eos is appended' : ''}${promptLength === 0 ? ', and nothing precedes it' : ''})`,
    );
  }
  return encoded(index, e, inputIds, promptLength, truncated);
}

/**
 * Calls onLine(text, lineNumber) for each line of an open file, without its line end (`\n` or
 * `\r\n`; a last line may lack one), reading chunks of READ_CHUNK_BYTES. A line is decoded as UTF-8
 * once complete, so a character split across chunks decodes whole. A line longer than maxLineBytes
 * is an error (`file:line: ...`) as soon as it passes the limit: at most maxLineBytes + 1 bytes of
 * it are held. Read errors name the file and the last line read.
 */
async function forEachLine(
  where: string,
  file: string,
  handle: fs.promises.FileHandle,
  maxLineBytes: number,
  onLine: (text: string, lineNumber: number) => void,
): Promise<void> {
  const chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  let parts: Buffer[] = []; // the current line's bytes from earlier chunks (copies)
  let length = 0;
  let lineNumber = 1;
  const tooLong = (): Error =>
    new RangeError(`${file}:${lineNumber}: the line is longer than maxLineBytes (${maxLineBytes} bytes); raise options.maxLineBytes to read it`);
  const finish = (data: Buffer, start: number, end: number): void => {
    let bytes: Buffer;
    if (parts.length === 0) bytes = data.subarray(start, end);
    else {
      parts.push(data.subarray(start, end));
      bytes = Buffer.concat(parts, length + end - start);
    }
    if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, bytes.length - 1);
    if (bytes.length > maxLineBytes) throw tooLong();
    parts = [];
    length = 0;
    onLine(bytes.toString('utf8'), lineNumber++);
  };
  for (;;) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(chunk, 0, chunk.length, null));
    } catch (e) {
      throw new Error(`${where}: cannot read ${file} (after line ${lineNumber - 1}): ${(e as Error).message}`);
    }
    if (bytesRead === 0) break;
    const data = chunk.subarray(0, bytesRead);
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      const end = nl < 0 ? bytesRead : nl;
      // + 1: the \r of a \r\n line end, known only at the \n
      if (length + end - start > maxLineBytes + 1) throw tooLong();
      if (nl < 0) {
        if (end > start) {
          parts.push(Buffer.from(data.subarray(start, end))); // the chunk buffer is reused
          length += end - start;
        }
        break;
      }
      finish(data, start, end);
      start = nl + 1;
    }
  }
  if (length > 0) finish(Buffer.alloc(0), 0, 0);
}

function withIndex(e: EncodedExample, index: number): EncodedExample {
  return e.index === index ? e : Object.freeze({ ...e, index });
}

/**
 * How a dataset turned records into tokens, as an adapter folder records it (rlora_config.json
 * `data`) so that evaluating the adapter later encodes data the same way.
 */
export interface DataSettings {
  /** The template string; null when none was given (prompt and response as they are). */
  template: string | null;
  /** True when the template was a function (it cannot be recorded: give it again). */
  templateFunction?: boolean;
  maxLength: number;
  fields: { task: string; prompt: string; response: string };
  addBos: boolean;
  addEos: boolean;
  /** 'byte' (ByteTokenizer), the tokenizer.json path it was read from, or null when unknown. */
  tokenizer: string | null;
  /** True when its records were conversations rendered with the tokenizer's chat template (generate with generateChat). */
  chat?: boolean;
}

/** Whether position t of e lies in one of its earlier assistant turns. */
function inLossSpan(e: EncodedExample, t: number): boolean {
  return t >= 1 && e.lossSpans !== undefined && e.lossSpans.some(([a, b]) => t >= a && t < b);
}

/** Tokenized examples of several tasks. */
export class MultiTaskDataset {
  readonly size: number;
  /** Sorted unique task names. */
  readonly tasks: string[];
  readonly countByTask: Record<string, number>;
  /** How many sequences were cut to maxLength. */
  readonly truncated: number;
  readonly tokenizer: TextTokenizer;
  readonly maxLength: number;
  readonly #examples: readonly EncodedExample[];
  readonly #byTask: Map<string, number[]>;
  readonly #options: DatasetOptions;

  private constructor(examples: EncodedExample[], options: DatasetOptions, where: string) {
    if (examples.length === 0) throw new Error(`${where}: no examples (an empty dataset cannot be trained or evaluated on)`);
    this.#examples = examples;
    this.#options = options;
    this.tokenizer = options.tokenizer;
    this.maxLength = options.maxLength ?? 512;
    this.size = examples.length;
    const byTask = new Map<string, number[]>();
    let truncated = 0;
    for (const e of examples) {
      let list = byTask.get(e.task);
      if (!list) byTask.set(e.task, (list = []));
      list.push(e.index);
      if (e.truncated) truncated++;
    }
    this.truncated = truncated;
    this.tasks = [...byTask.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.#byTask = new Map(this.tasks.map((t) => [t, byTask.get(t)!]));
    this.countByTask = Object.fromEntries(this.tasks.map((t) => [t, byTask.get(t)!.length]));
    Object.freeze(this.tasks);
    Object.freeze(this.countByTask);
  }

  /** How this dataset encodes records (template, maxLength, fields, bos/eos, tokenizer). */
  settings(): DataSettings {
    const o = this.#options;
    const t = o.tokenizer as { source?: unknown; constructor?: { name?: string } };
    const tokenizer = t.constructor?.name === 'ByteTokenizer' ? 'byte' : typeof t.source === 'string' && t.source !== 'JSON' ? t.source : null;
    return {
      template: typeof o.template === 'string' ? o.template : null,
      ...(typeof o.template === 'function' ? { templateFunction: true } : {}),
      maxLength: this.maxLength,
      fields: { task: o.fields?.task ?? DEFAULT_FIELDS.task, prompt: o.fields?.prompt ?? DEFAULT_FIELDS.prompt, response: o.fields?.response ?? DEFAULT_FIELDS.response },
      addBos: o.addBos ?? true,
      addEos: o.addEos ?? true,
      tokenizer,
      ...(this.#examples.some((e) => e.chat) ? { chat: true } : {}),
    };
  }

  /**
   * Reads a JSON lines file (UTF-8), one record per line (blank lines skipped; lines end in `\n` or
   * `\r\n`), streaming it in chunks. A line longer than `options.maxLineBytes` (default 64 MiB) is
   * an error. Errors name the file and line: `data.jsonl:7: ...`.
   */
  static async fromJsonl(path: string, options: DatasetOptions): Promise<MultiTaskDataset> {
    const where = 'MultiTaskDataset.fromJsonl';
    if (typeof path !== 'string') throw new TypeError(`${where}: path must be a string, got ${describe(path)}`);
    const o = resolveOptions(where, options);
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(path, 'r');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') throw new Error(`${where}: file not found: ${path}`);
      throw new Error(`${where}: cannot read ${path}: ${err.message}`);
    }
    if ((await handle.stat()).isDirectory()) {
      await handle.close();
      throw new Error(`${where}: ${path} is a directory, not a JSON lines file`);
    }
    const examples: EncodedExample[] = [];
    try {
      await forEachLine(where, path, handle, o.maxLineBytes, (line, lineNumber) => {
        if (lineNumber === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
        if (line.trim() === '') return;
        const at = `${path}:${lineNumber}`;
        let record: unknown;
        try {
          record = JSON.parse(line);
        } catch (e) {
          throw new Error(`${at}: invalid JSON (${(e as Error).message})`);
        }
        try {
          examples.push(encodeExample(at, examples.length, readRecord(at, record, o.fields), o));
        } catch (e) {
          // errors of ours name the line; others (e.g. a tokenizer's) get it here
          if (util.types.isNativeError(e) && e.message.startsWith(`${at}: `)) throw e;
          throw new Error(`${at}: ${util.types.isNativeError(e) ? e.message : String(e)}`);
        }
      });
    } finally {
      await handle.close().catch(() => undefined);
    }
    return new MultiTaskDataset(examples, options, `${where}: ${path}`);
  }

  /** Examples from records (field names as in `options.fields`). Errors name `examples[i]`. */
  static fromArray(examples: ReadonlyArray<Example | Record<string, unknown>>, options: DatasetOptions): MultiTaskDataset {
    const where = 'MultiTaskDataset.fromArray';
    if (!Array.isArray(examples)) throw new TypeError(`${where}: examples must be an array of records, got ${describe(examples)}`);
    const o = resolveOptions(where, options);
    const encoded = examples.map((record, i) => {
      const at = `${where}: examples[${i}]`;
      return encodeExample(at, i, readRecord(at, record, o.fields), o);
    });
    return new MultiTaskDataset(encoded, options, where);
  }

  get(i: number): EncodedExample {
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= this.size) {
      throw new RangeError(`MultiTaskDataset.get: index ${describe(i)} is out of range (size ${this.size}, indices 0..${this.size - 1})`);
    }
    return this.#examples[i];
  }

  /** Indices of the examples of `task`, in dataset order (a copy). */
  indicesOf(task: string): number[] {
    const list = this.#byTask.get(task);
    if (!list) throw new Error(`MultiTaskDataset.indicesOf: unknown task ${describe(task)} (tasks: ${this.tasks.map((t) => JSON.stringify(t)).join(', ')})`);
    return list.slice();
  }

  /**
   * A dataset of the examples at these indices, in this order (same tokenizer and options), for
   * splits. Its examples are numbered 0..indices.length-1; an index may appear more than once.
   */
  subset(indices: number[]): MultiTaskDataset {
    const where = 'MultiTaskDataset.subset';
    if (!Array.isArray(indices)) throw new TypeError(`${where}: indices must be an array, got ${describe(indices)}`);
    const picked = indices.map((i, k) => {
      if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= this.size) {
        throw new RangeError(`${where}: indices[${k}] is ${describe(i)}, not an index of this dataset (size ${this.size})`);
      }
      return withIndex(this.#examples[i], k);
    });
    return new MultiTaskDataset(picked, this.#options, where);
  }

  [inspectSymbol](): string {
    const counts = this.tasks.map((t) => `${t}: ${this.countByTask[t]}`).join(', ');
    return `MultiTaskDataset(size=${this.size}, tasks={${counts}}, maxLength=${this.maxLength}, truncated=${this.truncated})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Sampling

export type Sampling = 'proportional' | 'uniform' | 'temperature';
const SAMPLINGS: readonly Sampling[] = ['proportional', 'uniform', 'temperature'];

export interface SamplerOptions {
  batchSize: number;
  /**
   * 'proportional' (default): every example once per epoch, in a seeded shuffled order. 'uniform':
   * each row picks a task uniformly at random, then the next example of that task's own shuffled
   * cycle. 'temperature': like uniform, with task k picked with probability n_k^(1/T) / sum_j n_j^(1/T).
   */
  sampling?: Sampling;
  /** T of 'temperature' (default 2). */
  temperature?: number;
  /** Default 0. */
  seed?: number;
  /**
   * Batches of similar lengths (default false): rows are sorted by length within windows of 50
   * batches, cut into batches, and the batch order is shuffled (over the epoch for
   * 'proportional', within the window otherwise).
   */
  groupByLength?: boolean;
}

export interface Batch {
  /** Right-padded with padId to the longest sequence of the batch. */
  inputIds: number[][];
  /** 1 token, 0 padding. */
  attentionMask: number[][];
  /**
   * Hugging Face convention: the token id where the token gets loss (response tokens and eos),
   * -100 elsewhere (prompt, bos, padding); the model shifts internally.
   */
  labels: number[][];
  tasks: string[];
  /** Dataset index of each row. */
  indices: number[];
  /** Number of labels != -100 at positions >= 1 (those that count after the shift). */
  lossTokens: number;
}

/** A cycle through one task's examples (uniform and temperature sampling). */
interface TaskCycle {
  order: number[];
  position: number;
}

/** Where a sampler stands; JSON-serialisable. */
export interface SamplerState {
  version: 1;
  sampling: Sampling;
  batchSize: number;
  temperature: number | null;
  groupByLength: boolean;
  datasetSize: number;
  countByTask: Record<string, number>;
  /** xoshiro128** state (four unsigned 32-bit words). */
  rng: [number, number, number, number];
  /** Batches taken so far. */
  step: number;
  /** Batches drawn but not yet taken (dataset indices). */
  pending: number[][];
  /** Uniform and temperature sampling: each task's cycle, made when the task is first picked. */
  cycles: Record<string, { order: number[]; position: number }>;
}

const GROUP_WINDOW = 50;
/** The label of a token that no loss is computed for (prompt, padding), as torch's ignore_index. */
export const IGNORE_INDEX = -100;

/** xoshiro128** (Blackman and Vigna), seeded through splitmix32. */
class Rng {
  s: Uint32Array;

  constructor(words: ArrayLike<number>) {
    this.s = Uint32Array.from(words);
  }

  static fromSeed(seed: number): Rng {
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x9e3779b9);
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      words.push((z ^ (z >>> 16)) >>> 0);
    }
    if (!words.some((w) => w !== 0)) words[0] = 1;
    return new Rng(words);
  }

  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1), 53 bits. */
  float(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in 0..n-1 (n <= 2^32), without bias. */
  below(n: number): number {
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** Fisher-Yates, in place. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    return a;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function chunk(rows: number[], size: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < rows.length; i += size) out.push(rows.slice(i, i + size));
  return out;
}

/** Draws batches from a dataset, forever; its position can be saved and restored. */
export class BatchSampler {
  /** Batches per epoch: ceil(dataset.size / batchSize). */
  readonly stepsPerEpoch: number;
  readonly batchSize: number;
  readonly sampling: Sampling;
  readonly temperature: number;
  readonly groupByLength: boolean;
  readonly padId: number;
  /** Probability of each task per row (for 'proportional', its share n_k / N). */
  readonly taskProbabilities: Record<string, number>;
  readonly #dataset: MultiTaskDataset;
  readonly #cumulative: number[]; // cumulative task probabilities, in dataset.tasks order
  #rng: Rng;
  #step = 0;
  #pending: number[][] = [];
  #pendingPos = 0; // batches of #pending already taken
  #cycles = new Map<string, TaskCycle>();

  constructor(dataset: MultiTaskDataset, options: SamplerOptions, padId: number) {
    const where = 'BatchSampler';
    if (!(dataset instanceof MultiTaskDataset)) throw new TypeError(`${where}: dataset must be a MultiTaskDataset, got ${describe(dataset)}`);
    if (dataset.size === 0) throw new Error(`${where}: the dataset is empty`);
    if (!isPlainObject(options)) throw new TypeError(`${where}: options must be an object with a batchSize, got ${describe(options)}`);
    const { batchSize, sampling = 'proportional', temperature = 2, seed = 0, groupByLength = false } = options;
    if (typeof batchSize !== 'number' || !Number.isInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`${where}: batchSize must be an integer >= 1, got ${describe(batchSize)}`);
    }
    if (!SAMPLINGS.includes(sampling)) throw new Error(`${where}: unknown sampling ${describe(sampling)} (known: ${SAMPLINGS.join(', ')})`);
    if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature <= 0) {
      throw new RangeError(`${where}: temperature must be a finite number > 0, got ${describe(temperature)}`);
    }
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw new TypeError(`${where}: seed must be an integer, got ${describe(seed)}`);
    if (typeof groupByLength !== 'boolean') throw new TypeError(`${where}: groupByLength must be a boolean, got ${describe(groupByLength)}`);
    if (typeof padId !== 'number' || !Number.isInteger(padId) || padId < 0) {
      throw new RangeError(`${where}: padId must be a non-negative integer token id, got ${describe(padId)}`);
    }
    this.#dataset = dataset;
    this.batchSize = batchSize;
    this.sampling = sampling;
    this.temperature = temperature;
    this.groupByLength = groupByLength;
    this.padId = padId;
    this.stepsPerEpoch = Math.ceil(dataset.size / batchSize);
    this.#rng = Rng.fromSeed(seed);

    const counts = dataset.tasks.map((t) => dataset.countByTask[t]);
    let weights: number[];
    if (sampling === 'proportional') weights = counts.slice();
    else if (sampling === 'uniform') weights = counts.map(() => 1);
    else {
      // n^(1/T), relative to the largest task (no overflow for small T).
      const logMax = Math.log(Math.max(...counts));
      weights = counts.map((n) => Math.exp((Math.log(n) - logMax) / temperature));
    }
    const total = weights.reduce((a, b) => a + b, 0);
    const probs = weights.map((w) => w / total);
    this.taskProbabilities = Object.freeze(Object.fromEntries(dataset.tasks.map((t, k) => [t, probs[k]])));
    let acc = 0;
    this.#cumulative = probs.map((p) => (acc += p));
  }

  /** Epochs completed (batches taken / stepsPerEpoch, rounded down). */
  get epoch(): number {
    return Math.floor(this.#step / this.stepsPerEpoch);
  }

  /** Batches taken so far. */
  get step(): number {
    return this.#step;
  }

  /** The next batch; never ends (a new epoch starts with a new shuffle when one is used up). */
  next(): Batch {
    if (this.#pendingPos >= this.#pending.length) {
      this.#pending = this.sampling === 'proportional' ? this.#epochBatches() : this.#drawBatches();
      this.#pendingPos = 0;
    }
    const rows = this.#pending[this.#pendingPos++];
    this.#step++;
    return this.#collate(rows);
  }

  /** One epoch of 'proportional': every example once. */
  #epochBatches(): number[][] {
    const order = this.#rng.shuffle(Array.from({ length: this.#dataset.size }, (_, i) => i));
    if (!this.groupByLength) return chunk(order, this.batchSize);
    const window = GROUP_WINDOW * this.batchSize;
    const batches: number[][] = [];
    for (let i = 0; i < order.length; i += window) batches.push(...chunk(this.#byLength(order.slice(i, i + window)), this.batchSize));
    return this.#rng.shuffle(batches);
  }

  /** 'uniform' and 'temperature': one batch, or a window of batches grouped by length. */
  #drawBatches(): number[][] {
    const count = this.groupByLength ? GROUP_WINDOW : 1;
    const rows: number[] = [];
    for (let i = 0; i < count * this.batchSize; i++) rows.push(this.#nextOfTask(this.#pickTask()));
    if (!this.groupByLength) return [rows];
    return this.#rng.shuffle(chunk(this.#byLength(rows), this.batchSize));
  }

  #pickTask(): string {
    const tasks = this.#dataset.tasks;
    const u = this.#rng.float();
    const k = this.#cumulative.findIndex((c) => u < c);
    return tasks[k < 0 ? tasks.length - 1 : k];
  }

  #nextOfTask(task: string): number {
    let cycle = this.#cycles.get(task);
    if (!cycle) {
      cycle = { order: this.#rng.shuffle(this.#dataset.indicesOf(task)), position: 0 };
      this.#cycles.set(task, cycle);
    } else if (cycle.position >= cycle.order.length) {
      this.#rng.shuffle(cycle.order);
      cycle.position = 0;
    }
    return cycle.order[cycle.position++];
  }

  /** Stable sort by length, longest first. */
  #byLength(rows: number[]): number[] {
    const length = new Map(rows.map((i) => [i, this.#dataset.get(i).inputIds.length]));
    return rows.sort((a, b) => length.get(b)! - length.get(a)!);
  }

  #collate(rows: number[]): Batch {
    const examples = rows.map((i) => this.#dataset.get(i));
    const width = Math.max(...examples.map((e) => e.inputIds.length));
    const batch: Batch = { inputIds: [], attentionMask: [], labels: [], tasks: [], indices: rows.slice(), lossTokens: 0 };
    for (const e of examples) {
      const n = e.inputIds.length;
      const ids: number[] = [];
      const mask: number[] = [];
      const labels: number[] = [];
      for (let t = 0; t < n; t++) {
        const id = e.inputIds[t];
        ids.push(id);
        mask.push(1);
        labels.push(t >= e.promptLength || inLossSpan(e, t) ? id : IGNORE_INDEX);
      }
      for (let t = n; t < width; t++) {
        ids.push(this.padId);
        mask.push(0);
        labels.push(IGNORE_INDEX);
      }
      batch.lossTokens += n - Math.max(e.promptLength, 1) + (e.lossSpans ?? []).reduce((a, [s0, s1]) => a + s1 - Math.max(s0, 1), 0);
      batch.inputIds.push(ids);
      batch.attentionMask.push(mask);
      batch.labels.push(labels);
      batch.tasks.push(e.task);
    }
    return batch;
  }

  /** Where the sampler stands (a deep copy, JSON-serialisable). */
  state(): SamplerState {
    return {
      version: 1,
      sampling: this.sampling,
      batchSize: this.batchSize,
      temperature: this.sampling === 'temperature' ? this.temperature : null,
      groupByLength: this.groupByLength,
      datasetSize: this.#dataset.size,
      countByTask: { ...this.#dataset.countByTask },
      rng: Array.from(this.#rng.s) as [number, number, number, number],
      step: this.#step,
      pending: this.#pending.slice(this.#pendingPos).map((b) => b.slice()),
      cycles: Object.fromEntries([...this.#cycles].map(([t, c]) => [t, { order: c.order.slice(), position: c.position }])),
    };
  }

  /**
   * Continues from a state of a sampler with the same dataset and options (the seed may differ:
   * the state holds the generator's state); the batches that follow are those the original gave.
   */
  setState(state: SamplerState): void {
    const where = 'BatchSampler.setState';
    if (!isPlainObject(state)) throw new TypeError(`${where}: state must be an object from BatchSampler.state(), got ${describe(state)}`);
    if (state.version !== 1) throw new Error(`${where}: unknown state version ${describe(state.version)} (expected 1)`);
    const mismatch = (what: string, saved: unknown, here: unknown): Error =>
      new Error(`${where}: the state was saved with ${what} ${util.inspect(saved)}, this sampler has ${util.inspect(here)}`);
    if (state.sampling !== this.sampling) throw mismatch('sampling', state.sampling, this.sampling);
    if (state.batchSize !== this.batchSize) throw mismatch('batchSize', state.batchSize, this.batchSize);
    if (this.sampling === 'temperature' && state.temperature !== this.temperature) throw mismatch('temperature', state.temperature, this.temperature);
    if (state.groupByLength !== this.groupByLength) throw mismatch('groupByLength', state.groupByLength, this.groupByLength);
    if (state.datasetSize !== this.#dataset.size) throw mismatch('a dataset of size', state.datasetSize, this.#dataset.size);
    const counts = this.#dataset.countByTask;
    if (!isPlainObject(state.countByTask) || util.isDeepStrictEqual({ ...state.countByTask }, { ...counts }) === false) {
      throw mismatch('examples per task', state.countByTask, counts);
    }
    const rng = state.rng;
    if (!Array.isArray(rng) || rng.length !== 4 || !rng.every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32) || rng.every((w) => w === 0)) {
      throw new Error(`${where}: state.rng must be four unsigned 32-bit integers, not all zero, got ${util.inspect(rng)}`);
    }
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`${where}: state.step must be a non-negative integer, got ${describe(state.step)}`);
    const size = this.#dataset.size;
    const checkIndices = (what: string, list: unknown): number[] => {
      if (!Array.isArray(list) || !list.every((i) => Number.isInteger(i) && i >= 0 && i < size)) {
        throw new Error(`${where}: ${what} must be an array of dataset indices (0..${size - 1})`);
      }
      return list.slice();
    };
    if (!Array.isArray(state.pending)) throw new Error(`${where}: state.pending must be an array of batches`);
    const pending = state.pending.map((b, k) => checkIndices(`state.pending[${k}]`, b));
    if (pending.some((b) => b.length === 0)) throw new Error(`${where}: state.pending has an empty batch`);
    if (!isPlainObject(state.cycles)) throw new Error(`${where}: state.cycles must be an object`);
    const cycles = new Map<string, TaskCycle>();
    for (const task of this.#dataset.tasks) {
      const c = (state.cycles as Record<string, TaskCycle>)[task];
      if (c === undefined) continue;
      const order = checkIndices(`state.cycles[${JSON.stringify(task)}].order`, isPlainObject(c) ? c.order : undefined);
      if (order.length !== counts[task] || !Number.isInteger(c.position) || c.position < 0 || c.position > order.length) {
        throw new Error(`${where}: state.cycles[${JSON.stringify(task)}] does not fit task ${JSON.stringify(task)} (${counts[task]} examples)`);
      }
      cycles.set(task, { order, position: c.position });
    }
    this.#rng = new Rng(rng);
    this.#step = state.step;
    this.#pending = pending;
    this.#pendingPos = 0;
    this.#cycles = cycles;
  }
}

/** Left-padded prompts (bos + prompt tokens) for generation, with their mask. */
export function promptBatch(examples: EncodedExample[], padId: number): { inputIds: number[][]; attentionMask: number[][] } {
  const where = 'promptBatch';
  if (!Array.isArray(examples) || examples.length === 0) throw new Error(`${where}: examples must be a non-empty array of encoded examples, got ${describe(examples)}`);
  if (typeof padId !== 'number' || !Number.isInteger(padId) || padId < 0) {
    throw new RangeError(`${where}: padId must be a non-negative integer token id, got ${describe(padId)}`);
  }
  examples.forEach((e, i) => {
    if (!isPlainObject(e) || !Array.isArray(e.inputIds) || !Number.isInteger(e.promptLength)) {
      throw new TypeError(`${where}: examples[${i}] is not an encoded example (from MultiTaskDataset.get), got ${describe(e)}`);
    }
    if (e.promptLength < 1) {
      throw new Error(`${where}: examples[${i}] (index ${e.index}) has no prompt token (no bos and an empty prompt): generation needs at least one`);
    }
  });
  const width = Math.max(...examples.map((e) => e.promptLength));
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  for (const e of examples) {
    const pad = width - e.promptLength;
    inputIds.push(new Array<number>(pad).fill(padId).concat(e.inputIds.slice(0, e.promptLength)));
    attentionMask.push(new Array<number>(pad).fill(0).concat(new Array<number>(e.promptLength).fill(1)));
  }
  return { inputIds, attentionMask };
}
