// Declarative option specs, their checker and their help text, shared by every options table (the
// Trainer's options, run.json's sections, sweep.json): a value is checked against its spec and each
// problem is reported with where it was written, the rule and the value received. A wrong JSON type
// is a 'type' problem (a TypeError where thrown), a value outside the rule a 'range' problem (a
// RangeError). The same table writes the key reference of a --help (describeKeys, keyPaths).
import { closest, isPlainObject, show } from './options';

export type Spec =
  | { kind: 'string' }
  | { kind: 'path' }
  | { kind: 'boolean' }
  /** `safe`: an integer must also be a safe integer (at most 2^53 - 1 in size). */
  | { kind: 'number'; integer?: boolean; safe?: boolean; min?: number; max?: number; minOpen?: boolean; maxOpen?: boolean }
  | { kind: 'enum'; values: readonly (string | boolean)[] }
  | { kind: 'object'; keys: Record<string, Key> }
  /** Any JSON object, checked by whoever uses it (a Hugging Face config). */
  | { kind: 'json-object' }
  /** `values`: the strings allowed; `allowEmpty`: [] is fine. */
  | { kind: 'string-array'; values?: readonly string[]; allowEmpty?: boolean }
  /** Anything: the user of the value checks it (a function, say). */
  | { kind: 'any' }
  | { kind: 'one-of'; options: Spec[] }
  /** An array of values of `of`, at least `min` of them. */
  | { kind: 'array'; of: Spec; min?: number }
  /**
   * A value only its user knows how to check (a sweep's data, seeds, ...): `type` is how it looks
   * in help texts, `check` returns its problems (`api`: the value comes from code, not a JSON file).
   */
  | { kind: 'custom'; type: string; check: (value: unknown, where: string, api: boolean) => Problem[] };

export interface Key {
  spec: Spec;
  required?: boolean;
  /** How the value looks, for help texts (defaults to one made from the spec). */
  type?: string;
  /** What it is, for help texts; '' keeps it out of them. */
  doc: string;
  /** Not written in a JSON file (a function): refused as an unknown key there, kept out of the help. */
  apiOnly?: boolean;
  /** Why the key is refused (it is kept out of the help): a key of a neighbouring table that the user of this one sets itself. */
  refused?: string;
}

export interface Problem {
  kind: 'type' | 'range';
  message: string;
}

export const int = (min: number, max?: number): Spec => ({ kind: 'number', integer: true, min, max });
/** An integer that is also safe: at most 2^53 - 1 in size (a count, a seed). */
export const safeInt = (min: number, max?: number): Spec => ({ kind: 'number', integer: true, safe: true, min, max });
export const num = (min?: number, minOpen = false, max?: number, maxOpen = false): Spec => ({ kind: 'number', min, minOpen, max, maxOpen });
export const bool: Spec = { kind: 'boolean' };
export const str: Spec = { kind: 'string' };
export const pth: Spec = { kind: 'path' };
export const oneOf = (...values: (string | boolean)[]): Spec => ({ kind: 'enum', values });

/** The rule a number spec states: "an integer from 1 to 65536", "a finite number >= 0 and < 1". */
function numberRule(spec: Extract<Spec, { kind: 'number' }>, finite: boolean): string {
  const { min, max } = spec;
  let range: string;
  if (spec.integer && min !== undefined && max !== undefined && !spec.minOpen && !spec.maxOpen) range = `from ${min} to ${max}`;
  else {
    const lo = min === undefined ? '' : spec.minOpen ? `> ${min}` : `>= ${min}`;
    const hi = max === undefined ? '' : spec.maxOpen ? `< ${max}` : `<= ${max}`;
    range = [lo, hi].filter(Boolean).join(' and ');
  }
  const what = spec.integer ? 'an integer' : finite ? 'a finite number' : 'a number';
  return range ? `${what} ${range}` : what;
}

/** How a spec's value looks, for help texts and errors ("integer", "\"a\"|\"b\"", "string[]"). */
export function typeOf(spec: Spec): string {
  switch (spec.kind) {
    case 'path':
      return 'path';
    case 'number':
      return spec.integer ? 'integer' : 'number';
    case 'enum':
      return spec.values.map((v) => JSON.stringify(v)).join('|');
    case 'string-array':
      return spec.values ? `(${spec.values.map((v) => JSON.stringify(v)).join('|')})[]` : 'string[]';
    case 'json-object':
    case 'object':
      return 'object';
    case 'one-of':
      return spec.options.map(typeOf).join(' | ');
    case 'array':
      return `${typeOf(spec.of)}[]`;
    case 'custom':
      return spec.type;
    default:
      return spec.kind;
  }
}

/**
 * Problems of `value` against `spec` at `where` ("trainer.batchSize"); empty when it is fine.
 * `api`: the value comes from code, not from a JSON file (apiOnly keys are known then, and custom
 * specs may take values JSON cannot hold).
 */
export function check(value: unknown, spec: Spec, where: string, api = false): Problem[] {
  const type = (message: string): Problem[] => [{ kind: 'type', message }];
  const range = (message: string): Problem[] => [{ kind: 'range', message }];
  switch (spec.kind) {
    case 'any':
      return [];
    case 'string':
    case 'path':
      if (typeof value !== 'string') return type(`${where} must be a non-empty ${spec.kind === 'path' ? 'path (a string)' : 'string'}, got ${show(value)}`);
      return value === '' ? range(`${where} must be a non-empty ${spec.kind === 'path' ? 'path (a string)' : 'string'}, got ""`) : [];
    case 'boolean':
      return typeof value === 'boolean' ? [] : type(`${where} must be true or false, got ${show(value)}`);
    case 'number': {
      if (typeof value !== 'number') {
        const hint = typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)) ? ` (a string: write ${Number(value)} without quotes)` : '';
        return type(`${where} must be ${numberRule(spec, false)}, got ${show(value)}${hint}`);
      }
      const unsafe = spec.integer && spec.safe && Number.isInteger(value) && !Number.isSafeInteger(value);
      const bad =
        !Number.isFinite(value) ||
        (spec.integer && !Number.isInteger(value)) ||
        unsafe ||
        (spec.min !== undefined && (spec.minOpen ? value <= spec.min : value < spec.min)) ||
        (spec.max !== undefined && (spec.maxOpen ? value >= spec.max : value > spec.max));
      return bad ? range(`${where} must be ${numberRule(spec, true)}, got ${show(value)}${unsafe ? ` (larger than ${Number.MAX_SAFE_INTEGER}, where integers are not exact)` : ''}`) : [];
    }
    case 'enum': {
      if (spec.values.includes(value as string | boolean)) return [];
      const list = spec.values.map((v) => JSON.stringify(v)).join(', ');
      const near = typeof value === 'string' ? closest(value, spec.values.filter((v): v is string => typeof v === 'string')) : undefined;
      const message = `${where} must be one of ${list}, got ${show(value)}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}`;
      return typeof value === 'string' ? range(message) : type(message);
    }
    case 'string-array':
      if (!Array.isArray(value)) return type(`${where} must be a non-empty array of strings, got ${show(value)}`);
      if (value.length === 0 && !spec.allowEmpty) return range(`${where} must be a non-empty array of strings, got []`);
      return value.flatMap((v, i) => check(v, spec.values ? { kind: 'enum', values: spec.values } : str, `${where}[${i}]`));
    case 'array': {
      const min = spec.min ?? 0;
      const rule = min === 0 ? 'an array' : min === 1 ? 'a non-empty array' : `an array of at least ${min} values`;
      if (!Array.isArray(value)) return type(`${where} must be ${rule}, got ${show(value)}`);
      if (value.length < min) return range(`${where} must be ${rule}, got ${show(value)}`);
      return value.flatMap((v, i) => check(v, spec.of, `${where}[${i}]`, api));
    }
    case 'custom':
      return spec.check(value, where, api);
    case 'json-object':
      return isPlainObject(value) ? [] : type(`${where} must be an object, got ${show(value)}`);
    case 'object': {
      if (!isPlainObject(value)) return type(`${where || 'the file'} must be ${where ? 'an object' : 'a JSON object'}, got ${show(value)}`);
      const problems: Problem[] = [];
      const known = Object.keys(spec.keys).filter((k) => !spec.keys[k].refused && (api || !spec.keys[k].apiOnly));
      for (const [k, v] of Object.entries(value)) {
        const at = where ? `${where}.${k}` : k;
        const key = Object.hasOwn(spec.keys, k) ? spec.keys[k] : undefined;
        if (key?.refused) {
          problems.push(...range(`${at} cannot be given here: ${key.refused}`));
          continue;
        }
        if (!key || (key.apiOnly && !api)) {
          const near = closest(k, known);
          problems.push(...range(`${at} is not a known key${near ? ` (did you mean ${where ? `${where}.` : ''}${near}?)` : ''}; known keys${where ? ` of ${where}` : ''}: ${known.join(', ')}`));
          continue;
        }
        if (v === undefined) continue;
        problems.push(...check(v, key.spec, at, api));
      }
      for (const [k, key] of Object.entries(spec.keys)) {
        if (key.required && value[k] === undefined) problems.push(...type(`${where ? `${where}.` : ''}${k} is required: ${key.doc.replace(/:$/, '')}`));
      }
      return problems;
    }
    case 'one-of': {
      // the alternative the value's JSON type picks, so that errors speak of the right one
      const kindOf = (s: Spec): string => (s.kind === 'path' ? 'string' : s.kind === 'json-object' ? 'object' : s.kind === 'string-array' ? 'array' : s.kind);
      const valueKind = isPlainObject(value) ? 'object' : Array.isArray(value) ? 'array' : typeof value;
      const byType = spec.options.find((o) => kindOf(o) === valueKind || (o.kind === 'enum' && o.values.some((v) => typeof v === valueKind)));
      const alternatives = spec.options.map((o) => (o.kind === 'enum' ? o.values.map((v) => JSON.stringify(v)).join(', ') : o.kind === 'object' || o.kind === 'json-object' ? 'an object' : typeOf(o))).join(' or ');
      if (!byType) return type(`${where} must be ${alternatives}, got ${show(value)}`);
      // a value of the enum's type that is not one of its values: every alternative is named
      if (byType.kind === 'enum' && !byType.values.includes(value as string | boolean)) return range(`${where} must be ${alternatives}, got ${show(value)}`);
      return check(value, byType, where, api);
    }
  }
}

/** Throws the first of `problems`: a TypeError for a wrong type, a RangeError for a value out of range. */
export function throwFirst(problems: Problem[]): void {
  const p = problems[0];
  if (p) throw p.kind === 'type' ? new TypeError(p.message) : new RangeError(p.message);
}

/** Checks one value against its spec and throws its first problem (TypeError or RangeError). */
export function checkValue(value: unknown, spec: Spec, where: string): void {
  throwFirst(check(value, spec, where));
}

// ---------------------------------------------------------------------------------------------
// Help texts

/** The keys of a table a help text lists: documented, written in a file, not refused. */
const documented = (keys: Record<string, Key>): [string, Key][] => Object.entries(keys).filter(([, k]) => k.doc !== '' && !k.apiOnly && !k.refused);

/** The table of keys inside a key's value, with the suffix of its dotted path: "." (an object), "[]." (an array of objects). */
function innerKeys(spec: Spec): [Record<string, Key>, string] | undefined {
  if (spec.kind === 'object') return [spec.keys, '.'];
  if (spec.kind === 'array' && spec.of.kind === 'object') return [spec.of.keys, '[].'];
  if (spec.kind === 'one-of') {
    const o = spec.options.find((x) => x.kind === 'object');
    if (o?.kind === 'object') return [o.keys, '.'];
  }
  return undefined;
}

/** Words of `text` in lines of at most `width` characters; the first starts with `first`, later ones with `hang`. */
export function wrap(first: string, text: string, hang: string, width = 100): string[] {
  const lines: string[] = [];
  let line = first;
  for (const word of text.split(' ')) {
    if (line.length + 1 + word.length > width && line.trim() !== '' && line.length > hang.length) {
      lines.push(line.trimEnd());
      line = hang + word;
    } else line += (line.endsWith(' ') || line === '' ? '' : ' ') + word;
  }
  lines.push(line.trimEnd());
  return lines;
}

/**
 * The key reference of a --help, made from the table the checks use: a line (wrapped) per
 * documented key, "name*  type: doc" (* required), the keys of an object (or an array of objects)
 * below it, indented. A table listed once is not listed again (its key says where it is).
 */
export function describeKeys(keys: Record<string, Key>, indent = '  '): string {
  const lines: string[] = [];
  const listed = new Set<Record<string, Key>>();
  const walk = (table: Record<string, Key>, at: string): void => {
    listed.add(table);
    const docd = documented(table);
    const w = Math.max(...docd.map(([n, k]) => n.length + (k.required ? 1 : 0)));
    for (const [name, key] of docd) {
      const head = `${at}${(name + (key.required ? '*' : '')).padEnd(w)}  `;
      lines.push(...wrap(head, `${key.type ?? typeOf(key.spec)}: ${key.doc}`, ' '.repeat(head.length + 2)));
      const inner = innerKeys(key.spec)?.[0];
      if (inner && !listed.has(inner) && documented(inner).length) walk(inner, at + '    ');
    }
  };
  walk(keys, indent);
  return lines.join('\n');
}

/** Every documented key of a table as a dotted path ("trainer.learningRate", "variants[].name"), for tests and tools. */
export function keyPaths(keys: Record<string, Key>): string[] {
  const out: string[] = [];
  const walk = (table: Record<string, Key>, prefix: string): void => {
    for (const [name, key] of documented(table)) {
      out.push(prefix + name);
      const inner = innerKeys(key.spec);
      if (inner) walk(inner[0], prefix + name + inner[1]);
    }
  };
  walk(keys, '');
  return out;
}
