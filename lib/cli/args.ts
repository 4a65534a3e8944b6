// What every `rlora` subcommand shares: the Subcommand shape, option parsing, usage errors and
// terminal helpers. Nothing here loads the native addon.
import { closest } from '../util/options';

export interface Subcommand {
  /** One line for `rlora --help`. */
  summary: string;
  /** Usage and options, shown by `rlora <name> --help`. */
  help: string;
  /** Runs with the arguments after the subcommand's name; resolves to the exit code. */
  run(args: string[]): Promise<number> | number;
}

/** A mistake in how the command was called: printed with the command's help, exit code 2. */
export class UsageError extends Error {}

/** A mistake in an input the user gave (a config file, a log): printed alone, exit code 1. */
export class InputError extends Error {}

/** Parsed options: a flag is true, a value a string, a 'list' option (given once or more) a list of strings. */
export type ParsedOptions = Record<string, string | boolean | string[]>;

/**
 * --name, --name=value and --name value; the rest are positional. Throws on an option not in `known`.
 * A 'list' option may be given several times; its values are collected in order.
 */
export function parseArgs(args: string[], known: Record<string, 'flag' | 'value' | 'list'>): { opts: ParsedOptions; rest: string[] } {
  const opts: ParsedOptions = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      rest.push(...args.slice(i + 1));
      break;
    }
    if (!a.startsWith('--')) {
      rest.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const kind = known[name];
    if (!kind) {
      const near = closest(name, Object.keys(known), 2);
      throw new UsageError(`unknown option --${name}${near ? `; did you mean --${near}?` : ''}`);
    }
    if (kind === 'flag') {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      opts[name] = true;
      continue;
    }
    let value: string;
    if (eq >= 0) value = a.slice(eq + 1);
    else if (i + 1 < args.length) value = args[++i];
    else throw new UsageError(`--${name} needs a value`);
    if (kind === 'list') opts[name] = [...((opts[name] as string[] | undefined) ?? []), value];
    else opts[name] = value;
  }
  return { opts, rest };
}

/** An option's value as an integer >= min, or undefined when absent. */
export function intOption(opts: ParsedOptions, name: string, min: number, max?: number): number | undefined {
  const v = opts[name];
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
    throw new UsageError(`--${name} must be an integer ${max !== undefined ? `from ${min} to ${max}` : `>= ${min}`}, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** A string option, or undefined. */
export function stringOption(opts: ParsedOptions, name: string): string | undefined {
  const v = opts[name];
  return typeof v === 'string' ? v : undefined;
}

/** Whether to write ANSI colors to a stream: a terminal, and NO_COLOR unset (https://no-color.org). */
export function useColor(stream: NodeJS.WriteStream = process.stdout): boolean {
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  if (process.env.FORCE_COLOR !== undefined && process.env.FORCE_COLOR !== '0') return true;
  return Boolean(stream.isTTY);
}


export { formatBytes } from '../util/units';

export { closest, editDistance } from '../util/options';
export { table } from '../logging/text';
