// Option checking shared by the library: "did you mean", unknown keys, and how a value is shown
// in an error. Every error names the option (and where it was written) and the value received.
import * as util from 'util';

/**
 * Node's util.inspect.custom (the same registered symbol), named without @types/node so that
 * rlora's published .d.ts files type-check in projects that do not install it. Classes implement
 * `[inspectSymbol]()` for their one-line summary in the REPL.
 */
export const inspectSymbol: unique symbol = Symbol.for('nodejs.util.inspect.custom');

/**
 * The closest of `candidates` to `word`, for "did you mean": at most `maxDistance` edits away
 * (Damerau-Levenshtein: a swap of two neighbours counts as one) and fewer edits than `word` has
 * letters, so that a one-letter typo of nothing in particular suggests nothing.
 */
export function closest(word: string, candidates: string[], maxDistance = 3): string | undefined {
  let best: string | undefined;
  let bestD = Math.min(maxDistance, word.length - 1) + 1;
  const lw = word.toLowerCase();
  for (const c of candidates) {
    const d = editDistance(lw, c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

/** Damerau-Levenshtein distance (optimal string alignment): insertions, deletions, substitutions, adjacent swaps. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** A value as an error message shows it: strings quoted, objects inspected on one line, short. A Promise asks whether an await is missing. */
export function show(v: unknown): string {
  if (v instanceof Promise) return 'a Promise (did you forget await?)';
  const s = typeof v === 'string' ? JSON.stringify(v) : util.inspect(v, { depth: 1, breakLength: Infinity });
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

/** A plain object ({} or Object.create(null)), not an array, class instance, or null. */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Refuses keys of `options` not in `known`: a RangeError "<where>: unknown option "dtpye" (did you
 * mean "dtype"?); known: ...". `options` must be a plain object (else a TypeError).
 */
export function checkKeys(options: unknown, known: readonly string[], where: string): asserts options is Record<string, unknown> {
  if (!isPlainObject(options)) throw new TypeError(`${where}: options must be an object, got ${show(options)}`);
  for (const k of Object.keys(options)) {
    if (known.includes(k)) continue;
    const near = closest(k, [...known]);
    throw new RangeError(`${where}: unknown option ${JSON.stringify(k)}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}; known: ${known.join(', ')}`);
  }
}

/**
 * Refuses a value not among `choices`: a TypeError for a non-string, a RangeError with "did you mean"
 * otherwise (`aliases` maps common other spellings, e.g. "fp16", to the choice to suggest).
 */
export function checkChoice<T extends string>(value: unknown, choices: readonly T[], what: string, aliases: Record<string, T> = {}): T {
  if (typeof value !== 'string') throw new TypeError(`${what} must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}, got ${show(value)}`);
  if ((choices as readonly string[]).includes(value)) return value as T;
  const near = Object.hasOwn(aliases, value.toLowerCase()) ? aliases[value.toLowerCase()] : closest(value, [...choices]);
  throw new RangeError(`${what} must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}, got ${JSON.stringify(value)}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}`);
}

/** Refuses a value that is not an instance of `cls`: a TypeError "<what> must be a <Name>, got <value>". */
export function checkInstance<T>(value: unknown, cls: { readonly prototype: T; readonly name: string }, what: string): asserts value is T {
  if (!(value instanceof (cls as unknown as abstract new () => unknown))) {
    const name = cls.name;
    throw new TypeError(`${what} must be ${/^[AEIOU]/.test(name) ? 'an' : 'a'} ${name}, got ${show(value)}`);
  }
}

/** Any object but null or an array (a record as JSON gives it, or one built in code). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** What kind of value `v` is, for errors about data: "null", "an array", "an object", or its type and value. */
export function describeKind(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${util.inspect(v)}`;
}
