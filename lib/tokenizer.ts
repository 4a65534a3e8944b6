// Tokenizers: text to token ids and back. `Tokenizer` reads a Hugging Face tokenizer.json (through
// the pure-JS `@huggingface/tokenizers`); `ByteTokenizer` needs no file (UTF-8 bytes plus three
// special tokens). Both implement `TextTokenizer`, which datasets and the trainer take.
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { ChatMessage, checkMessages, renderChat } from './chat';
import { budgetFor, withBudget } from './util/budget';
import { checkJsonDepth, MAX_CONFIG_JSON_BYTES, MAX_TOKENIZER_JSON_BYTES, readJsonFile, readTextFile } from './util/json';
import { checkKeys, describeKind as describe, inspectSymbol, isRecord as isPlainObject } from './util/options';
import { checkHubOptions, HUB_OPTION_NAMES, HubOptions, resolveLocal, resolveRepo } from './hub/resolve';


export interface EncodeOptions {
  /**
   * Apply the tokenizer's own rules for special tokens (default true). For `Tokenizer` these are
   * the post-processor of tokenizer.json, or `add_bos_token`/`add_eos_token` of
   * tokenizer_config.json when it sets them; for `ByteTokenizer` the constructor's
   * `addBos`/`addEos` (by default none).
   */
  addSpecialTokens?: boolean;
  /** Put the bos token first (true) or not (false), whatever the rules say. */
  addBos?: boolean;
  /** Put the eos token last (true) or not (false), whatever the rules say. */
  addEos?: boolean;
}

export interface DecodeOptions {
  /**
   * Leave special tokens (bos, eos, pad, ...) out of the text. The default differs:
   * `Tokenizer` false (as in Hugging Face), `ByteTokenizer` true.
   */
  skipSpecialTokens?: boolean;
}

/** What datasets, the trainer and generation need from a tokenizer. */
/** A tokenizer as files: the contents of tokenizer.json and of tokenizer_config.json. */
export interface TokenizerFiles {
  'tokenizer.json': object;
  'tokenizer_config.json': Record<string, unknown>;
}

export interface TextTokenizer {
  /** Number of token ids: every id in 0..vocabSize-1 may be decoded. */
  readonly vocabSize: number;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  readonly padTokenId: number | undefined;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  readonly padToken: string | undefined;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string;
  /**
   * The Jinja chat template that renders `messages` records (Hugging Face's `chat_template`), when
   * the tokenizer has one.
   */
  readonly chatTemplate?: string | undefined;
  /** The id of one token (as it appears in the vocabulary), or undefined. */
  tokenToId(token: string): number | undefined;
  /** The token of one id, or undefined when the id is not in the vocabulary. */
  idToToken(id: number): string | undefined;
}

/** A special token in tokenizer_config.json: its text, or a serialized AddedToken. */
export type SpecialTokenValue = string | { content: string; [key: string]: unknown } | null;

/** The keys of tokenizer_config.json this package reads (others are passed on untouched). */
export interface TokenizerConfig {
  bos_token?: SpecialTokenValue;
  eos_token?: SpecialTokenValue;
  pad_token?: SpecialTokenValue;
  unk_token?: SpecialTokenValue;
  /** When set, decides whether encode puts bos first (instead of the post-processor). */
  add_bos_token?: boolean;
  /** When set, decides whether encode puts eos last (instead of the post-processor). */
  add_eos_token?: boolean;
  /** Hugging Face's old clean-up of spaces before punctuation when decoding. Default here: false. */
  clean_up_tokenization_spaces?: boolean;
  additional_special_tokens?: SpecialTokenValue[];
  /** Jinja template of chat messages; or named templates, of which 'default' is used. */
  chat_template?: string | { name: string; template: string }[];
  [key: string]: unknown;
}

export interface TokenizerFileOptions {
  /**
   * tokenizer_config.json to read. Default: the one next to tokenizer.json, when there is one;
   * null: none.
   */
  configFile?: string | null;
  /** Keys that override those of tokenizer_config.json (e.g. `{ pad_token: '<unk>' }`). */
  config?: TokenizerConfig;
}

const MODEL_TYPES = ['BPE', 'WordPiece', 'Unigram', 'WordLevel'];


function checkText(where: string, text: unknown): asserts text is string {
  if (typeof text !== 'string') throw new TypeError(`${where}: text must be a string, got ${describe(text)}`);
}

function checkOptions(where: string, options: unknown, keys: readonly string[]): void {
  if (options === undefined) return;
  if (!isPlainObject(options)) throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
  checkKeys(options, keys, where);
  for (const key of keys) {
    const v = options[key];
    if (v !== undefined && typeof v !== 'boolean') throw new TypeError(`${where}: option ${key} must be a boolean, got ${describe(v)}`);
  }
}

/** Checks every id of `ids` is an integer in 0..vocabSize-1 (and, with `known`, has a token). */
function checkIds(where: string, ids: unknown, vocabSize: number, known?: (id: number) => boolean): number[] {
  if (!Array.isArray(ids) && !(ArrayBuffer.isView(ids) && !(ids instanceof DataView))) {
    throw new TypeError(`${where}: ids must be an array of token ids, got ${describe(ids)}`);
  }
  const out = Array.from(ids as ArrayLike<unknown>);
  out.forEach((id, i) => {
    if (typeof id !== 'number' || !Number.isInteger(id)) {
      throw new TypeError(`${where}: ids[${i}] is ${describe(id)}, not an integer token id`);
    }
    if (id < 0 || id >= vocabSize) {
      throw new RangeError(`${where}: token id ${id} (ids[${i}]) is outside the vocabulary (size ${vocabSize}, ids 0..${vocabSize - 1})`);
    }
    if (known && !known(id)) {
      throw new RangeError(`${where}: token id ${id} (ids[${i}]) has no token in the vocabulary (size ${vocabSize})`);
    }
  });
  return out as number[];
}

function readJson(file: string, what: 'tokenizer file' | 'tokenizer config file', where: string): unknown {
  if (!fs.existsSync(file)) throw new Error(`${where}: ${what} not found: ${file}`);
  return readJsonFile(file, { where, maxBytes: what === 'tokenizer file' ? MAX_TOKENIZER_JSON_BYTES : MAX_CONFIG_JSON_BYTES });
}

function tokenText(value: unknown, key: string, source: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (isPlainObject(value) && typeof value.content === 'string') return value.content;
  throw new Error(`${source}: ${key} must be a string, an object with a string "content", or null; got ${describe(value)}`);
}

/** Whether a tokenizer.json holds a regex of its own (`{"Regex": ...}` in a Split, Replace, ...). */
function hasOwnRegex(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(hasOwnRegex);
  if (!isPlainObject(value)) return false;
  return Object.entries(value).some(([k, v]) => (k === 'Regex' && typeof v === 'string') || (k !== 'model' && k !== 'added_tokens' && hasOwnRegex(v)));
}

/**
 * Checks the shape of a tokenizer.json and returns a copy with the optional top-level keys the
 * library needs filled with their defaults. `source` names the file in the errors.
 */
function normalizeTokenizerJson(json: unknown, source: string): Record<string, unknown> {
  const notIt = (what: string): Error =>
    new Error(`${source} is not a Hugging Face tokenizer.json: ${what}`);
  if (!isPlainObject(json)) throw notIt(`expected a JSON object, got ${describe(json)}`);
  const model = json.model;
  if (!isPlainObject(model)) {
    throw notIt(
      model === undefined
        ? `it has no "model" (top-level keys: ${Object.keys(json).slice(0, 10).join(', ') || 'none'})`
        : `"model" must be an object, got ${describe(model)}`,
    );
  }
  const type = model.type;
  if (type !== undefined && !(typeof type === 'string' && MODEL_TYPES.includes(type))) {
    throw notIt(`model type ${util.inspect(type)} is not supported; supported: ${MODEL_TYPES.join(', ')}`);
  }
  const vocab = model.vocab;
  if (!(isPlainObject(vocab) || Array.isArray(vocab))) {
    throw notIt(vocab === undefined ? 'its model has no "vocab"' : `model.vocab must be an object or an array, got ${describe(vocab)}`);
  }
  if (type === 'BPE' && !Array.isArray(model.merges)) {
    throw notIt(`a BPE model needs a "merges" array, got ${describe(model.merges)}`);
  }
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) throw notIt(`"added_tokens" must be an array, got ${describe(added)}`);
  added.forEach((t, i) => {
    if (!isPlainObject(t) || typeof t.content !== 'string' || !Number.isInteger(t.id) || (t.id as number) < 0) {
      throw notIt(`added_tokens[${i}] must be an object with a string "content" and a non-negative integer "id", got ${util.inspect(t, { depth: 1 })}`);
    }
  });
  for (const key of ['normalizer', 'pre_tokenizer', 'decoder'] as const) {
    const growth = replaceGrowth(json[key]);
    if (growth > MAX_REPLACE_GROWTH) {
      throw notIt(`its ${key}'s Replace steps can make a text up to ${growth.toExponential(1)} times longer (the product of each step's replacement over its pattern; at most ${MAX_REPLACE_GROWTH} is taken): encoding would exhaust memory`);
    }
  }
  return {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    ...json,
    added_tokens: added,
  };
}

/** The most a tokenizer's Replace steps may lengthen a text: real ones replace a character by one or a few. */
const MAX_REPLACE_GROWTH = 65536;

/**
 * How many times longer a text can come out of the Replace steps in `step` (a normalizer, a
 * pre-tokenizer or a decoder, nested in Sequences), each applied to the output of the one before:
 * the product of content length over pattern length (a regex may match one character).
 */
function replaceGrowth(step: unknown): number {
  let growth = 1;
  const stack = [step];
  while (stack.length) {
    const v = stack.pop();
    if (Array.isArray(v)) stack.push(...v);
    else if (isPlainObject(v)) {
      if (v.type === 'Replace' && typeof v.content === 'string' && isPlainObject(v.pattern)) {
        const p = v.pattern;
        const matched = typeof p.String === 'string' ? Math.max(1, p.String.length) : 1;
        growth *= Math.max(1, v.content.length / matched);
      }
      stack.push(...Object.values(v));
    }
  }
  return growth;
}

/** A special token of the config, found in the vocabulary. */
interface SpecialToken {
  token: string;
  id: number;
}

/** A Hugging Face tokenizer (tokenizer.json, plus tokenizer_config.json for the special tokens). */
export class Tokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  readonly padTokenId: number | undefined;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  readonly padToken: string | undefined;
  /** The model type of tokenizer.json: BPE, WordPiece, Unigram or WordLevel. */
  readonly modelType: string;
  /** Where it came from: the tokenizer.json path, or 'JSON' for fromJSON. */
  readonly source: string;
  /**
   * tokenizer_config.json's chat_template (its 'default' entry when it lists named templates), or
   * chat_template.jinja beside tokenizer.json; undefined when neither.
   */
  readonly chatTemplate: string | undefined;

  readonly #hf: HfTokenizer;
  readonly #vocab: readonly (string | undefined)[];
  readonly #cleanUpSpaces: boolean;
  readonly #addBos: boolean | undefined; // tokenizer_config.json's add_bos_token
  readonly #addEos: boolean | undefined;
  readonly #templateBos: boolean; // the post-processor puts bos first
  readonly #templateEos: boolean;

  readonly #files: TokenizerFiles;
  // tokenizer.json's own regexes could backtrack without end (`(a+)+$`): encoding and decoding
  // with such a tokenizer run under a time budget (lib/util/budget.ts).
  readonly #regexes: boolean;

  private constructor(json: unknown, config: TokenizerConfig, source: string) {
    const tokenizerJson = normalizeTokenizerJson(json, source);
    this.#files = { 'tokenizer.json': json as object, 'tokenizer_config.json': { ...config } as Record<string, unknown> };
    this.#regexes = hasOwnRegex(tokenizerJson);
    if (!isPlainObject(config)) throw new TypeError(`${source}: tokenizer config must be an object, got ${describe(config)}`);
    for (const key of ['add_bos_token', 'add_eos_token', 'clean_up_tokenization_spaces'] as const) {
      const v = config[key];
      if (v !== undefined && v !== null && typeof v !== 'boolean') throw new Error(`${source}: ${key} must be a boolean, got ${describe(v)}`);
    }
    const model = tokenizerJson.model as Record<string, unknown>;
    const bos = tokenText(config.bos_token, 'bos_token', source);
    const eos = tokenText(config.eos_token, 'eos_token', source);
    const pad = tokenText(config.pad_token, 'pad_token', source);
    // The library reads some special tokens from its config: give it their text. Its WordLevel
    // model (which it handles as "Legacy") takes unk_token only from the config.
    const unk = tokenText(config.unk_token, 'unk_token', source) ?? (typeof model.unk_token === 'string' ? model.unk_token : undefined);
    const additional = Array.isArray(config.additional_special_tokens)
      ? config.additional_special_tokens.map((t, i) => tokenText(t, `additional_special_tokens[${i}]`, source)).filter((t): t is string => t !== undefined)
      : undefined;
    this.#cleanUpSpaces = config.clean_up_tokenization_spaces ?? false;
    const ct = config.chat_template;
    if (ct === undefined || ct === null) this.chatTemplate = undefined;
    else if (typeof ct === 'string') this.chatTemplate = ct;
    else if (Array.isArray(ct) && ct.every((t) => isPlainObject(t) && typeof t.name === 'string' && typeof t.template === 'string')) {
      this.chatTemplate = ct.find((t) => t.name === 'default')?.template;
    } else throw new Error(`${source}: chat_template must be a string or a list of {name, template}, got ${describe(ct)}`);
    const libConfig = {
      ...config,
      bos_token: bos,
      eos_token: eos,
      pad_token: pad,
      unk_token: unk,
      additional_special_tokens: additional,
      clean_up_tokenization_spaces: this.#cleanUpSpaces,
    };
    try {
      this.#hf = new HfTokenizer(tokenizerJson, libConfig);
    } catch (e) {
      throw new Error(`${source}: cannot build the tokenizer: ${(e as Error).message}`);
    }
    const hfModel = this.#hf.model;
    this.#vocab = hfModel ? hfModel.vocab : [];
    this.vocabSize = this.#vocab.length;
    this.modelType = typeof model.type === 'string' ? model.type : hfModel?.constructor.name ?? 'unknown';
    this.source = source;

    const resolve = (token: string | undefined, key: string): SpecialToken | undefined => {
      if (token === undefined) return undefined;
      const id = this.#hf.token_to_id(token);
      if (id === undefined) {
        throw new Error(`${source}: ${key} ${JSON.stringify(token)} of the tokenizer config is not in the vocabulary (set it with options.config, or null for none)`);
      }
      return { token, id };
    };
    const b = resolve(bos, 'bos_token');
    const e = resolve(eos, 'eos_token');
    const p = resolve(pad, 'pad_token');
    [this.bosToken, this.bosTokenId] = [b?.token, b?.id];
    [this.eosToken, this.eosTokenId] = [e?.token, e?.id];
    [this.padToken, this.padTokenId] = [p?.token, p?.id];
    this.#addBos = config.add_bos_token ?? undefined;
    this.#addEos = config.add_eos_token ?? undefined;

    // What the post-processor adds around a text: encode the empty text (it adds its special
    // tokens to empty texts too).
    const probe = this.#hf.encode('', { add_special_tokens: true }).ids;
    this.#templateBos = b !== undefined && probe.length > 0 && probe[0] === b.id;
    this.#templateEos =
      e !== undefined && probe.length > (this.#templateBos ? 1 : 0) && probe[probe.length - 1] === e.id;
  }

  /**
   * Loads a tokenizer.json (or the tokenizer.json in a directory), and the tokenizer_config.json
   * next to it when there is one (special tokens: bos_token, eos_token, pad_token; add_bos_token,
   * add_eos_token). A Hugging Face Hub repo id where no such file or folder exists reads the repo's
   * snapshot in the Hugging Face cache; this call downloads nothing (Tokenizer.fromPretrained does).
   */
  static fromFile(file: string, options: TokenizerFileOptions = {}): Tokenizer {
    const where = 'Tokenizer.fromFile';
    if (typeof file !== 'string') throw new TypeError(`${where}: path must be a string, got ${describe(file)}`);
    if (!isPlainObject(options)) throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
    if (file !== '') {
      // a Hub repo id: its snapshot in the Hugging Face cache (this call is synchronous: no download)
      const found = resolveLocal(file, { kind: 'tokenizer' }, where);
      if ('download' in found) {
        const d = found.download;
        throw new Error(
          `${where}: ${file} is no file or folder here, and the Hugging Face cache ${d.cacheDir} has no tokenizer.json of the repo ${d.repo} (${d.missing} is missing in ${d.repoDir}): ` +
            `\`await Tokenizer.fromPretrained(${JSON.stringify(file)})\` downloads it (or \`rlora download ${file}\` beforehand)`,
        );
      }
      file = found.path;
    }
    let stat: fs.Stats;
    try {
      stat = fs.statSync(file);
    } catch {
      throw new Error(`${where}: tokenizer file not found: ${file}`);
    }
    if (stat.isDirectory()) {
      const inside = path.join(file, 'tokenizer.json');
      if (!fs.existsSync(inside)) throw new Error(`${where}: ${file} is a directory without a tokenizer.json`);
      file = inside;
    }
    const json = readJson(file, 'tokenizer file', where);

    let configFile: string | null;
    if (options.configFile === undefined) {
      const beside = path.join(path.dirname(file), 'tokenizer_config.json');
      configFile = fs.existsSync(beside) ? beside : null;
    } else if (options.configFile === null || typeof options.configFile === 'string') {
      configFile = options.configFile;
    } else {
      throw new TypeError(`${where}: options.configFile must be a path or null, got ${describe(options.configFile)}`);
    }
    let fileConfig: TokenizerConfig = {};
    if (configFile !== null) {
      const parsed = readJson(configFile, 'tokenizer config file', where);
      if (!isPlainObject(parsed)) throw new Error(`${where}: ${configFile} is not a tokenizer_config.json: expected a JSON object, got ${describe(parsed)}`);
      fileConfig = parsed as TokenizerConfig;
    }
    if (options.config !== undefined && !isPlainObject(options.config)) {
      throw new TypeError(`${where}: options.config must be an object, got ${describe(options.config)}`);
    }
    // transformers 4.43+ saves the chat template beside tokenizer.json
    const jinja = path.join(path.dirname(file), 'chat_template.jinja');
    if (fileConfig.chat_template === undefined && fs.existsSync(jinja)) fileConfig = { ...fileConfig, chat_template: readTextFile(jinja, { where, maxBytes: MAX_CONFIG_JSON_BYTES, kind: 'chat template' }) };
    return new Tokenizer(json, { ...fileConfig, ...options.config }, file);
  }

  /**
   * Tokenizer.fromFile for a folder, a tokenizer.json or a Hugging Face Hub repo id: a repo's
   * tokenizer.json, tokenizer_config.json, special_tokens_map.json and chat_template.jinja come from
   * the Hugging Face cache, else they are downloaded into it (`revision`, `token`,
   * `localFilesOnly`: HubOptions), as Model.fromPretrained does.
   */
  static async fromPretrained(nameOrPath: string, options: TokenizerFileOptions & HubOptions = {}): Promise<Tokenizer> {
    const where = `Tokenizer.fromPretrained(${JSON.stringify(nameOrPath)})`;
    checkKeys(options as unknown, ['configFile', 'config', ...HUB_OPTION_NAMES], where);
    checkHubOptions(options, where);
    const { revision, token, localFilesOnly, ...fileOptions } = options;
    const found = await resolveRepo(nameOrPath, { revision, token, localFilesOnly, kind: 'tokenizer' }, where);
    return Tokenizer.fromFile(found.path, fileOptions);
  }

  /**
   * A tokenizer from the contents of a tokenizer.json (parsed, or as a JSON string) and the
   * contents of a tokenizer_config.json (special tokens).
   */
  static fromJSON(tokenizerJson: object | string, config: TokenizerConfig = {}): Tokenizer {
    let json: unknown = tokenizerJson;
    if (typeof json === 'string') {
      try {
        json = JSON.parse(json);
      } catch (e) {
        throw new Error(`Tokenizer.fromJSON: the string is not valid JSON (${(e as Error).message})`);
      }
    }
    checkJsonDepth(json, 'Tokenizer.fromJSON'); // (fromFile's readJsonFile checks what it reads)
    return new Tokenizer(json, config, 'Tokenizer.fromJSON');
  }

  encode(text: string, options?: EncodeOptions): number[] {
    checkText('Tokenizer.encode', text);
    checkOptions('Tokenizer.encode', options, ['addSpecialTokens', 'addBos', 'addEos']);
    const { addSpecialTokens = true, addBos, addEos } = options ?? {};
    // By the post-processor, unless a bos/eos rule is set (by the config or this call).
    const byRules = addBos === undefined && addEos === undefined && this.#addBos === undefined && this.#addEos === undefined;
    const encoding = this.#budgeted(text.length, 'encode', () => this.#hf.encode(text, { add_special_tokens: byRules && addSpecialTokens }));
    const ids = encoding.ids;
    const missing = ids.findIndex((id) => !Number.isInteger(id));
    if (missing >= 0) {
      throw new Error(
        `Tokenizer.encode: token ${JSON.stringify(encoding.tokens[missing])} has no id in the vocabulary and the tokenizer has no unk token`,
      );
    }
    if (byRules) return ids;
    const bos = addBos ?? (addSpecialTokens && (this.#addBos ?? this.#templateBos));
    const eos = addEos ?? (addSpecialTokens && (this.#addEos ?? this.#templateEos));
    if (bos) {
      if (this.bosTokenId === undefined) throw new Error(`Tokenizer.encode: addBos, but this tokenizer has no bos token (${this.source})`);
      ids.unshift(this.bosTokenId);
    }
    if (eos) {
      if (this.eosTokenId === undefined) throw new Error(`Tokenizer.encode: addEos, but this tokenizer has no eos token (${this.source})`);
      ids.push(this.eosTokenId);
    }
    return ids;
  }

  /** The contents of tokenizer.json and tokenizer_config.json that make this tokenizer again (Tokenizer.fromFile reads them back). */
  files(): TokenizerFiles {
    return { 'tokenizer.json': this.#files['tokenizer.json'], 'tokenizer_config.json': { ...this.#files['tokenizer_config.json'] } };
  }

  /**
   * The text the tokenizer's chat_template renders for `messages`, as transformers'
   * `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`: with
   * `addGenerationPrompt` the template's opening of the assistant's turn follows, which is what a
   * model continues (rlora's datasets and `generateChat` render chat the same way). Throws when the
   * tokenizer has no chat_template.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    checkOptions('Tokenizer.applyChatTemplate', options, ['addGenerationPrompt']);
    if (!this.chatTemplate) throw new Error(`Tokenizer.applyChatTemplate: this tokenizer has no chat_template (${this.source}): tokenizer_config.json or chat_template.jinja gives one`);
    return renderChat(this.chatTemplate, checkMessages(messages, 'Tokenizer.applyChatTemplate'), options.addGenerationPrompt ?? false, this);
  }

  decode(ids: ArrayLike<number>, options?: DecodeOptions): string {
    checkOptions('Tokenizer.decode', options, ['skipSpecialTokens']);
    const list = checkIds('Tokenizer.decode', ids, this.vocabSize, (id) => this.#vocab[id] !== undefined);
    if (list.length === 0) return '';
    return this.#budgeted(list.length * 16, 'decode', () => this.#hf.decode(list, {
      skip_special_tokens: options?.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.#cleanUpSpaces,
    }));
  }

  /** `fn()`, under a time budget for `chars` characters of text when tokenizer.json has regexes of its own. */
  #budgeted<T>(chars: number, what: string, fn: () => T): T {
    if (!this.#regexes) return fn();
    return withBudget(budgetFor(chars), fn, () => `Tokenizer.${what}: ${this.source}'s regexes ran too long (a pattern that backtracks, such as "(a+)+$"?)`);
  }

  tokenToId(token: string): number | undefined {
    if (typeof token !== 'string') throw new TypeError(`Tokenizer.tokenToId: token must be a string, got ${describe(token)}`);
    return this.#hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) return undefined;
    return this.#vocab[id];
  }

  [inspectSymbol](): string {
    const special = (token: string | undefined, id: number | undefined): string =>
      token === undefined ? 'none' : `${JSON.stringify(token)} (${id})`;
    return (
      `Tokenizer(model=${this.modelType}, vocabSize=${this.vocabSize}, bos=${special(this.bosToken, this.bosTokenId)}, ` +
      `eos=${special(this.eosToken, this.eosTokenId)}, pad=${special(this.padToken, this.padTokenId)}, source=${this.source})`
    );
  }
}

export interface ByteTokenizerOptions {
  /** encode puts bos first unless told otherwise (default false). */
  addBos?: boolean;
  /** encode puts eos last unless told otherwise (default false). */
  addEos?: boolean;
}

const BYTE_SPECIALS = ['<bos>', '<eos>', '<pad>'] as const;

/** GPT-2's printable stand-in character of each byte, as byte-level BPE vocabularies spell bytes. */
function byteLevelChars(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => (out[b] = String.fromCodePoint(cs[i])));
  return out;
}

/**
 * A tokenizer that needs no file: ids 0..255 are the bytes of the UTF-8 text, 256 is bos, 257 eos,
 * 258 pad (vocabSize 259). Byte ids have the tokens `<0x00>`..`<0xFF>`.
 */
export class ByteTokenizer implements TextTokenizer {
  static readonly BOS = 256;
  static readonly EOS = 257;
  static readonly PAD = 258;
  readonly vocabSize = 259;
  readonly bosTokenId: number = ByteTokenizer.BOS;
  readonly eosTokenId: number = ByteTokenizer.EOS;
  readonly padTokenId: number = ByteTokenizer.PAD;
  readonly bosToken: string = BYTE_SPECIALS[0];
  readonly eosToken: string = BYTE_SPECIALS[1];
  readonly padToken: string = BYTE_SPECIALS[2];
  readonly #addBos: boolean;
  readonly #addEos: boolean;

  constructor(options: ByteTokenizerOptions = {}) {
    checkOptions('ByteTokenizer', options, ['addBos', 'addEos']);
    this.#addBos = options.addBos ?? false;
    this.#addEos = options.addEos ?? false;
  }

  /**
   * This tokenizer as Hugging Face files: a byte-level BPE (as GPT-2's) with one token per byte and
   * no merges, so that `Tokenizer.fromFile` (and transformers' tokenizers) give the same ids for
   * every text, with `<bos>`, `<eos>`, `<pad>` at 256, 257, 258.
   */
  files(): TokenizerFiles {
    const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    const vocab = Object.fromEntries(byteLevelChars().map((c, b) => [c, b]));
    return {
      'tokenizer.json': {
        version: '1.0',
        truncation: null,
        padding: null,
        added_tokens: BYTE_SPECIALS.map((t, i) => special(256 + i, t)),
        normalizer: null,
        pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
        post_processor: null,
        decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] },
      },
      'tokenizer_config.json': {
        bos_token: this.bosToken, eos_token: this.eosToken, pad_token: this.padToken,
        add_bos_token: this.#addBos, add_eos_token: this.#addEos, clean_up_tokenization_spaces: false,
      },
    };
  }

  /** The UTF-8 bytes of `text` (a lone surrogate becomes U+FFFD, as in TextEncoder). */
  encode(text: string, options?: EncodeOptions): number[] {
    checkText('ByteTokenizer.encode', text);
    checkOptions('ByteTokenizer.encode', options, ['addSpecialTokens', 'addBos', 'addEos']);
    const { addSpecialTokens = true, addBos, addEos } = options ?? {};
    const ids = Array.from(Buffer.from(text, 'utf8'));
    if (addBos ?? (addSpecialTokens && this.#addBos)) ids.unshift(this.bosTokenId);
    if (addEos ?? (addSpecialTokens && this.#addEos)) ids.push(this.eosTokenId);
    return ids;
  }

  /**
   * The text of the byte ids; invalid UTF-8 decodes to U+FFFD, as in TextDecoder. Skipped special
   * tokens are removed before decoding (bytes on both sides join); kept ones read `<bos>`,
   * `<eos>`, `<pad>`.
   */
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string {
    checkOptions('ByteTokenizer.decode', options, ['skipSpecialTokens']);
    const list = checkIds('ByteTokenizer.decode', ids, this.vocabSize);
    const skip = options?.skipSpecialTokens ?? true;
    const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    let out = '';
    let bytes: number[] = [];
    const flush = (): void => {
      if (bytes.length > 0) out += decoder.decode(Uint8Array.from(bytes));
      bytes = [];
    };
    for (const id of list) {
      if (id < 256) {
        bytes.push(id);
      } else if (!skip) {
        flush();
        out += BYTE_SPECIALS[id - 256];
      }
    }
    flush();
    return out;
  }

  tokenToId(token: string): number | undefined {
    if (typeof token !== 'string') throw new TypeError(`ByteTokenizer.tokenToId: token must be a string, got ${describe(token)}`);
    const special = (BYTE_SPECIALS as readonly string[]).indexOf(token);
    if (special >= 0) return 256 + special;
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    return m ? parseInt(m[1], 16) : undefined;
  }

  idToToken(id: number): string | undefined {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) return undefined;
    return id < 256 ? `<0x${id.toString(16).toUpperCase().padStart(2, '0')}>` : BYTE_SPECIALS[id - 256];
  }

  [inspectSymbol](): string {
    return `ByteTokenizer(vocabSize=${this.vocabSize}, bytes=0..255, bos="${this.bosToken}" (256), eos="${this.eosToken}" (257), pad="${this.padToken}" (258))`;
  }
}
