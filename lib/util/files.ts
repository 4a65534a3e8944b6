// Writing files and folders so that a crash (kill -9, power loss) or a full disk never leaves a
// half-written one where a complete one was: everything is written to a hidden sibling, checked,
// flushed to disk, and only then renamed into place. Every folder rlora writes (a model, an
// adapter, a merged model, a checkpoint) goes through replaceFolder (lib/replace-folder.ts, which needs
// the addon); these helpers need none, so the CLI can use them before the addon loads.
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

/** A hidden sibling name for a file or folder being written or removed (`.<name>.<what>-<pid>-<time>`). */
export function sideName(target: string, what: 'tmp' | 'old' | 'deleting'): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${what}-${process.pid}-${Date.now()}`);
}

/** Whether `name` is a temporary sibling (sideName, or saveSafetensors' `<file>.tmp-<pid>`) left behind by a process that died. */
export function isLeftover(name: string): boolean {
  return /\.(tmp|old|deleting)-\d+(-\d+)?$/.test(name);
}

/**
 * Creates `dir` (and its parents) if needed; a failure says which existing folder is not writable
 * and why (Node's recursive mkdir reports a read-only file system as ENOENT).
 */
export function ensureFolder(dir: string, what: string): void {
  if (fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) return;
  let up = path.resolve(dir);
  while (!fs.existsSync(up) && path.dirname(up) !== up) up = path.dirname(up);
  /** Why nothing can be created in `up`, or undefined. */
  const blocked = (): string | undefined => {
    try {
      if (!fs.statSync(up).isDirectory()) return `${up} is not a folder`;
      fs.accessSync(up, fs.constants.W_OK);
      return undefined;
    } catch (a) {
      return `${up} is not writable (${(a as NodeJS.ErrnoException).code ?? (a as Error).message})`;
    }
  };
  // checked first: Node's recursive mkdir loops without end under /proc (and reports a read-only
  // file system as ENOENT)
  const before = blocked();
  if (before) throw new Error(`${what} ${dir} cannot be created: ${before}`);
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new Error(`${what} ${dir} cannot be created: ${blocked() ?? (e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/**
 * ensureFolder, then whether files can be written in `dir`: one error naming it and the reason (a
 * read-only mount: EROFS; a folder without write permission: EACCES) before anything is started.
 */
export function ensureWritableFolder(dir: string, what: string): void {
  ensureFolder(dir, what);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    throw new Error(`${what} ${dir} is not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}${(e as NodeJS.ErrnoException).code === 'EROFS' ? ': a read-only file system' : ''})`);
  }
}

/** Flushes a file or a folder (its entries) to disk. */
export function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes all of `data` at the file's current position, however many calls it takes: fs.writeSync
 * may write fewer bytes than asked (a full disk first writes what fits), and a short count ignored
 * leaves a truncated file that looks written. A write that makes no progress throws ENOSPC.
 * (`write` is fs.writeSync; tests pass one that writes less.)
 */
export function writeAll(fd: number, data: Uint8Array, file: string, write: (fd: number, data: Uint8Array, offset: number, length: number) => number = fs.writeSync): void {
  let done = 0;
  while (done < data.length) {
    let n: number;
    try {
      n = write(fd, data, done, data.length - done);
    } catch (e) {
      // EFBIG, EIO, ENOSPC from the system: say which file (Node's message names none)
      const err = e as NodeJS.ErrnoException;
      if (typeof err.message === 'string' && !err.message.includes(file)) err.message = `${err.message} (writing ${file}, ${done} of ${data.length} bytes written)`;
      throw err;
    }
    if (n <= 0) {
      const e = new Error(`ENOSPC: no space left on device, write ${file} (${done} of ${data.length} bytes written)`) as NodeJS.ErrnoException;
      e.code = 'ENOSPC';
      throw e;
    }
    done += n;
  }
}

/** Writes a file in one piece, checking every byte went out and flushing it. */
export function writeFileFully(file: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const fd = fs.openSync(file, 'w');
  try {
    writeAll(fd, bytes, file);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Replaces a file atomically: a hidden sibling written in full and flushed, then renamed over it. */
export function writeFileAtomically(file: string, data: string | Uint8Array): void {
  const tmp = sideName(file, 'tmp');
  try {
    writeFileFully(tmp, data);
    fs.renameSync(tmp, file);
    fsyncPath(path.dirname(file));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Removes a folder atomically as far as readers can tell: renamed away first, then deleted. */
export function removeAtomically(dir: string): void {
  const trash = sideName(dir, 'deleting');
  fs.renameSync(dir, trash);
  fs.rmSync(trash, { recursive: true, force: true });
}

/** Runs fn; an error whose message does not name `file` is thrown again with it in front. */
export function naming<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof Error) && !util.types.isNativeError(e)) throw new Error(`${file}: ${String(e)}`);
    const err = e as Error;
    if (!err.message.includes(file)) err.message = `${file}: ${err.message}`; // its class (TypeError, RangeError) kept
    throw err;
  }
}

/**
 * Whether `a` and `b` name the same existing file or folder, however they are spelt: the same
 * device and inode after following links (path strings differ for a link, "x/../y" or a bind
 * mount). False when either does not exist.
 */
export function sameFile(a: string, b: string): boolean {
  const sa = fs.statSync(a, { throwIfNoEntry: false }), sb = fs.statSync(b, { throwIfNoEntry: false });
  if (!sa || !sb) return path.resolve(a) === path.resolve(b);
  return sa.dev === sb.dev && sa.ino === sb.ino;
}

/** Whether `dir` is the current folder or a folder above it (a folder rlora replaces whole cannot be one). */
export function holdsWorkingFolder(dir: string): boolean {
  let up = process.cwd();
  for (;;) {
    if (sameFile(dir, up)) return true;
    if (path.dirname(up) === up) return false;
    up = path.dirname(up);
  }
}

/**
 * Opens `file` for reading only when it is a regular file (after links), without ever blocking: a
 * FIFO or a device named by a link would block open() until a writer came, or read without end.
 * Returns the descriptor and the file's size; `fail` makes the error (it names the file).
 */
export function openRegularFile(file: string, fail: (what: string) => never): { fd: number; size: number } {
  const kind = (st: fs.Stats): string => (st.isFIFO() ? 'a FIFO' : st.isDirectory() ? 'a folder' : st.isSocket() ? 'a socket' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : 'not a regular file');
  const before = fs.statSync(file); // ENOENT as Node says it
  if (!before.isFile()) fail(`not a regular file (${kind(before)})`);
  // O_NONBLOCK: a FIFO put in its place since the stat opens at once, and fstat refuses it
  const fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    fail(`not a regular file (${kind(st)})`);
  }
  return { fd, size: st.size };
}
