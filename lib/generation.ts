// The one generation path: options as transformers' `generate` names them (in camelCase), their
// checks and defaults, and the loop over a native Generation (native/model/generate.cpp, with the
// key/value cache) that Model.generate, Model.stream and the text functions (lib/generate.ts) share.
import { randomInt } from 'crypto';

import { native, NativeGenerateOptions, NativeGeneration, NativeModel } from './native';
import { Tensor } from './tensor';
import { idList } from './token-batch';
import { checkKeys, show } from './util/options';

/**
 * An AbortSignal (declared here by its shape, so rlora's types need no DOM or @types/node): a
 * standard `AbortController().signal` is one.
 */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
}

/** The options every generation call takes (Model.generate, Model.stream, generateText, generateChat, rlora serve). */
export interface SamplingOptions {
  /** New tokens at most. Default 32. */
  maxNewTokens?: number;
  /** The eos tokens cannot end a row before this many new tokens. Default 0. */
  minNewTokens?: number;
  /** 0 (default) is greedy decoding; else at least 1e-30 (smaller ones would overflow). */
  temperature?: number;
  /** Sample from the k most likely tokens only; 0 (default) is off. */
  topK?: number;
  /** Sample from the smallest set of tokens whose probability reaches p; 1 (default) is off. */
  topP?: number;
  /**
   * Penalise tokens already in the row (prompt and new tokens), as transformers: a positive logit
   * is divided by it, a negative one multiplied. 1 (default) is off.
   */
  repetitionPenalty?: number;
  /**
   * A row stops at this token (or any of these). Default: generation_config.json's eos_token_id,
   * then config.json's (the text functions then fall back to the tokenizer's eos).
   */
  eosTokenId?: number | number[];
  /**
   * Seed of the sampling: the same seed gives the same tokens. Default: fresh randomness on every
   * call (as transformers does unless seeded). Greedy decoding draws nothing.
   */
  seed?: number;
  /**
   * Sequences made for each prompt (sampled independently). Default 1; more is refused with greedy
   * decoding (every sequence would be the same), as transformers refuses it.
   */
  numReturnSequences?: number;
  /** Stops generation after the current token; the call then rejects with the signal's reason. */
  signal?: AbortSignalLike;
}

/** The names of SamplingOptions, for option checks ("did you mean"). */
export const SAMPLING_OPTION_NAMES = [
  'maxNewTokens', 'minNewTokens', 'temperature', 'topK', 'topP', 'repetitionPenalty', 'eosTokenId', 'seed', 'numReturnSequences', 'signal',
] as const satisfies readonly (keyof SamplingOptions)[];

/** The smallest temperature that samples (0 is greedy), as the native sampler states it. */
export const MIN_TEMPERATURE: number = native.minTemperature;

/** What a model brings to the defaults: its configs' eos and pad ids. */
export interface GenerationDefaults {
  /** generation_config.json's eos_token_id, else config.json's. */
  eosTokenIds: number[];
  /** generation_config.json's pad_token_id, else config.json's, else the first eos, else 0. */
  padTokenId: number;
}

/** SamplingOptions checked, with every default filled in: what the native Generation takes, and the rest the loop uses. */
export interface ResolvedSampling extends NativeGenerateOptions {
  numReturnSequences: number;
  signal?: AbortSignalLike;
}

function integer(v: unknown, name: string, where: string, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw new TypeError(`${where}: ${name} must be an integer >= ${min}, got ${show(v)}`);
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${where}: ${name} must be an integer >= ${min}, got ${show(v)}`);
  return v;
}

function number(v: unknown, name: string, where: string, ok: (x: number) => boolean, what: string, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw new TypeError(`${where}: ${name} must be ${what}, got ${show(v)}`);
  if (!ok(v)) throw new RangeError(`${where}: ${name} must be ${what}, got ${show(v)}`);
  return v;
}

/**
 * Checks the sampling options (the names in `known` are the caller's whole vocabulary: others are
 * refused with "did you mean") and fills in the defaults. `eosFallback` is used when neither the
 * options nor the model's configs name an eos (the tokenizer's, for the text functions).
 */
export function resolveSampling(options: unknown, known: readonly string[], where: string, defaults: GenerationDefaults, eosFallback: number[] = []): ResolvedSampling {
  checkKeys(options, known, where);
  const o = options as SamplingOptions;
  const temperature = number(o.temperature, 'temperature', where, (t) => t === 0 || (t >= MIN_TEMPERATURE && Number.isFinite(t)), `0 (greedy) or a finite number >= ${MIN_TEMPERATURE}`, 0);
  const numReturnSequences = integer(o.numReturnSequences, 'numReturnSequences', where, 1, 1);
  if (numReturnSequences > 1 && temperature === 0) {
    throw new RangeError(`${where}: numReturnSequences ${numReturnSequences} needs sampling (temperature > 0): greedy decoding makes the same sequence every time`);
  }
  let eosTokenIds = o.eosTokenId !== undefined ? idList(o.eosTokenId) : defaults.eosTokenIds.length ? defaults.eosTokenIds : eosFallback;
  if (o.eosTokenId !== undefined && (!Array.isArray(eosTokenIds) || eosTokenIds.some((id) => !Number.isSafeInteger(id) || id < 0))) {
    throw new TypeError(`${where}: eosTokenId must be a token id or a list of them, got ${show(o.eosTokenId)}`);
  }
  eosTokenIds = [...eosTokenIds];
  const seed = o.seed === undefined ? randomInt(2 ** 48 - 1) : integer(o.seed, 'seed', where, 0, 0);
  if (o.signal !== undefined && (typeof o.signal !== 'object' || o.signal === null || typeof o.signal.aborted !== 'boolean')) throw new TypeError(`${where}: signal must be an AbortSignal, got ${show(o.signal)}`);
  return {
    maxNewTokens: integer(o.maxNewTokens, 'maxNewTokens', where, 0, 32),
    minNewTokens: integer(o.minNewTokens, 'minNewTokens', where, 0, 0),
    temperature,
    topK: integer(o.topK, 'topK', where, 0, 0),
    topP: number(o.topP, 'topP', where, (p) => p > 0 && p <= 1, 'a number in (0, 1]', 1),
    repetitionPenalty: number(o.repetitionPenalty, 'repetitionPenalty', where, (p) => p > 0 && Number.isFinite(p), 'a finite number > 0', 1),
    eosTokenIds,
    padTokenId: defaults.padTokenId,
    seed,
    numReturnSequences,
    signal: o.signal,
  };
}

/** The eos and pad defaults of a model's config.json and generation_config.json (transformers' order). */
export function generationDefaults(config: { eos_token_id?: unknown; pad_token_id?: unknown }, generationConfig?: Record<string, unknown>): GenerationDefaults {
  const ids = (v: unknown): number[] => (v == null ? [] : [v].flat().filter((x): x is number => Number.isSafeInteger(x) && (x as number) >= 0));
  const eos = ids(generationConfig?.eos_token_id).length ? ids(generationConfig?.eos_token_id) : ids(config.eos_token_id);
  const pad = ids(generationConfig?.pad_token_id)[0] ?? ids(config.pad_token_id)[0] ?? eos[0] ?? 0;
  return { eosTokenIds: eos, padTokenId: pad };
}

/** Rows repeated numReturnSequences times each (row 0 n times, then row 1, ...), as transformers expands inputs. */
export function expandRows(ids: Tensor, mask: Tensor | null, n: number): { ids: Tensor; mask: Tensor | null } {
  if (n === 1) return { ids, mask };
  const rep = (t: Tensor): Tensor => {
    const [b, s] = t.shape;
    const flat = t.data() as BigInt64Array;
    const out = new BigInt64Array(b * n * s);
    for (let i = 0; i < b; i++) for (let j = 0; j < n; j++) out.set(flat.subarray(i * s, (i + 1) * s), (i * n + j) * s);
    return Tensor.from(out, [b * n, s], { dtype: 'int64' });
  };
  return { ids: rep(ids), mask: mask && rep(mask) };
}

/**
 * A generation in progress over left-padded rows: `steps(chunk)` yields each step's new tokens
 * ([row][k], ended rows included, padded), checking the abort signal between steps; `endRows`
 * ends rows the caller is done with (a stop string). The adapters attached at the start must stay
 * (the native side refuses to go on otherwise).
 */
export class GenerationRun {
  private readonly g: NativeGeneration;
  readonly rows: number;

  constructor(model: NativeModel, ids: Tensor, mask: Tensor | null, o: ResolvedSampling) {
    this.rows = ids.shape[0];
    const { numReturnSequences: _n, signal: _s, ...nativeOptions } = o; // the loop's own, not the native side's
    this.g = new native.NativeGeneration(model, ids.native, mask?.native ?? null, nativeOptions);
  }

  get finished(): boolean {
    return this.g.finished;
  }

  /** Up to `n` new tokens of every row (fewer once every row ended), as numbers. */
  async step(n: number): Promise<number[][]> {
    const t = new Tensor(await this.g.step(n));
    const [b, k] = t.shape;
    const flat = t.data() as BigInt64Array;
    t.dispose();
    return Array.from({ length: b }, (_, i) => Array.from(flat.subarray(i * k, (i + 1) * k), Number));
  }

  /** Ends the flagged rows now: they are padded from the next step on. */
  endRows(flags: boolean[]): void {
    if (!flags.some(Boolean)) return;
    const t = Tensor.from(Uint8Array.from(flags, Number), [flags.length]);
    this.g.endRows(t.native);
    t.dispose();
  }

  /** Frees the key/value cache now. */
  dispose(): void {
    this.g.dispose();
  }
}

/** stop as a list of non-empty strings (undefined: none). */
export function stopList(v: unknown, where: string): string[] {
  if (v === undefined) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) throw new TypeError(`${where}: stop must be a string or a list of strings, got ${show(v)}`);
  if (list.some((x) => x === '')) throw new RangeError(`${where}: stop holds an empty string (it would end every row at once)`);
  return list;
}

/** Throws the signal's reason when it has been aborted (after the current token). */
export function checkAborted(signal: AbortSignalLike | undefined): void {
  if (signal?.aborted) throw signal.reason ?? new DOMException('generation aborted', 'AbortError');
}
