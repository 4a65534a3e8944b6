// Reading a JSON file that may come from anyone (a downloaded model or adapter folder): only a
// regular file under a size limit is read (a path to /dev/zero or a FIFO would otherwise read
// without end), and a syntax error names the file, line and column but never echoes its contents
// (V8's own message quotes the first bytes, which printed a line of the password file when an
// adapter folder named it).
import * as fs from 'fs';

/** The most a config-like JSON file (config.json, adapter_config.json, trainer_state.json, ...) may hold. */
export const MAX_CONFIG_JSON_BYTES = 16 << 20;
/** The most a tokenizer.json may hold (the largest common ones are about 10 MB). */
export const MAX_TOKENIZER_JSON_BYTES = 256 << 20;

export interface ReadJsonOptions {
  /** Default MAX_CONFIG_JSON_BYTES. */
  maxBytes?: number;
  /** Prefix of error messages (what is being read, by whom); default: the file name alone. */
  where?: string;
}

/** The most a chat_template.jinja or a run's log.jsonl may hold before it is refused unread. */
export const MAX_TEXT_FILE_BYTES = 1 << 30;

/**
 * The text of `file`, read only when it is a regular file of at most `maxBytes` (a link to
 * /dev/zero or a FIFO would otherwise read without end or block); errors name the file.
 */
export function readTextFile(file: string, options: ReadJsonOptions & { kind?: string } = {}): string {
  const maxBytes = options.maxBytes ?? MAX_TEXT_FILE_BYTES;
  const at = options.where ? `${options.where}: ${file}` : file;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(err.code === 'ENOENT' ? `${at} not found` : `cannot read ${at}: ${err.message}`);
  }
  const kind = options.kind ?? 'text';
  if (!st.isFile()) throw new Error(`${at} is not a regular file (a ${kind} file was expected)`);
  if (st.size > maxBytes) throw new Error(`${at} holds ${st.size} bytes, more than the ${maxBytes} a ${kind} file of this kind may hold`);
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${at}: ${(e as Error).message}`);
  }
}

/** How deep a JSON file rlora reads may nest: real configs and tokenizers nest under 10 levels. */
export const MAX_JSON_DEPTH = 100;

/**
 * Throws when `value` nests deeper than MAX_JSON_DEPTH, naming `at` and the path to the first
 * place too deep (code that walks such a value recursively would overflow the stack with a bare
 * "Maximum call stack size exceeded"). Walks with a stack of its own.
 */
export function checkJsonDepth(value: unknown, at: string): void {
  const stack: { v: unknown; depth: number; path: string }[] = [{ v: value, depth: 0, path: '' }];
  while (stack.length) {
    const { v, depth, path } = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= MAX_JSON_DEPTH) {
      const shown = path.length > 120 ? `${path.slice(0, 120)}...` : path;
      throw new Error(`${at} nests more than ${MAX_JSON_DEPTH} levels deep (at ${shown || 'the top'}); no tokenizer or config needs that many`);
    }
    if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, depth: depth + 1, path: `${path}[${i}]` }));
    else for (const [k, x] of Object.entries(v)) stack.push({ v: x, depth: depth + 1, path: path ? `${path}.${k}` : k });
  }
}

/** Reads and parses `file`; errors name it and say what is wrong, without quoting its contents. */
export function readJsonFile(file: string, options: ReadJsonOptions = {}): unknown {
  const at = options.where ? `${options.where}: ${file}` : file;
  const text = readTextFile(file, { maxBytes: options.maxBytes ?? MAX_CONFIG_JSON_BYTES, where: options.where, kind: 'JSON' });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`${at} is not valid JSON${where(text, (e as Error).message)}`);
  }
  checkJsonDepth(value, at);
  return value;
}

/** " (line L, column C)" where V8's message gives a position, else " (it does not start like JSON)" or "". */
function where(text: string, message: string): string {
  const m = /at position (\d+)/.exec(message);
  if (m) {
    const pos = Number(m[1]);
    const before = text.slice(0, pos);
    const line = before.split('\n').length;
    const column = pos - before.lastIndexOf('\n');
    return ` (line ${line}, column ${column})`;
  }
  if (/Unexpected end of JSON input/.test(message)) return ' (it ends too early)';
  if (/^Unexpected token/.test(message)) return ' (an unexpected character)';
  return '';
}
