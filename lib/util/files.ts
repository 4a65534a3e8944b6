// Writing files and folders so that a crash (kill -9, power loss) or a full disk never leaves a
// half-written one where a complete one was: everything is written to a hidden sibling, checked,
// flushed to disk, and only then renamed into place. Every folder rlora writes (a model, an
// adapter, a merged model, a checkpoint) goes through replaceFolder.
import * as fs from 'fs';
import * as path from 'path';

import { native } from '../native';

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
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    let up = path.resolve(dir);
    while (!fs.existsSync(up) && path.dirname(up) !== up) up = path.dirname(up);
    let why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    try {
      fs.accessSync(up, fs.constants.W_OK);
      if (!fs.statSync(up).isDirectory()) why = `${up} is not a folder`;
    } catch (a) {
      why = `${up} is not writable (${(a as NodeJS.ErrnoException).code ?? (a as Error).message})`;
    }
    throw new Error(`${what} ${dir} cannot be created: ${why}`);
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
    const n = write(fd, data, done, data.length - done);
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

export interface ReplaceFolderOptions {
  /**
   * The entries of such a folder that rlora writes: when `dir` exists, every other entry (a README
   * or tokenizer the user put there) is copied into the new folder. Default: rlora owns everything
   * (a checkpoint), so nothing is carried over.
   */
  owns?: (name: string) => boolean;
  /** Checks the new folder before it replaces the old one (e.g. that every file reads back); throws to keep the old. */
  verify?: (tmp: string) => void;
}

/**
 * Writes the folder `dir` so that at every instant it is either the old complete folder or the new
 * complete one: `fill` writes into a hidden sibling, the files the user kept in the old folder are
 * copied in (ReplaceFolderOptions.owns), everything is flushed and verified, then the two are
 * swapped in one atomic step (renameat2's RENAME_EXCHANGE; where the system lacks it, the old folder
 * is renamed aside and the new one renamed in), and the old one is removed. If anything fails before the
 * swap, the sibling is removed and `dir` is untouched; a crash leaves at most a hidden sibling.
 */
export function replaceFolder(dir: string, fill: (tmp: string) => void, options: ReplaceFolderOptions = {}): void {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (st && !st.isDirectory()) throw new Error(`${dir} exists and is not a folder`);
  ensureFolder(path.dirname(path.resolve(dir)), 'the folder of');
  const tmp = sideName(dir, 'tmp');
  try {
    fs.mkdirSync(tmp);
  } catch (e) {
    throw new Error(`${dir} cannot be written: nothing can be created beside it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let old: string | undefined;
  try {
    fill(tmp);
    if (st && options.owns) {
      const written = new Set(fs.readdirSync(tmp));
      for (const name of fs.readdirSync(dir)) {
        if (options.owns(name) || written.has(name) || isLeftover(name)) continue;
        fs.cpSync(path.join(dir, name), path.join(tmp, name), { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
      }
    }
    for (const name of fs.readdirSync(tmp)) {
      const p = path.join(tmp, name);
      if (fs.lstatSync(p).isFile()) fsyncPath(p);
    }
    fsyncPath(tmp);
    options.verify?.(tmp);
    if (st && native.exchangePaths(tmp, dir) === 0) {
      old = tmp; // one atomic step: `dir` is the new folder, `tmp` the old one
    } else {
      // where the system cannot swap in one step: the old folder aside, then the new one in (a
      // crash between the two leaves `dir` absent and the old folder in its hidden sibling)
      if (st) {
        old = sideName(dir, 'old');
        fs.renameSync(dir, old);
      }
      fs.renameSync(tmp, dir);
    }
  } catch (e) {
    if (old !== undefined && old !== tmp && !fs.existsSync(dir)) fs.renameSync(old, dir); // the swap failed half-way: put the old one back
    if (old !== tmp) fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncPath(path.dirname(path.resolve(dir)));
  if (old !== undefined) fs.rmSync(old, { recursive: true, force: true });
}

/** Runs fn; an error whose message does not name `file` is thrown again with it in front. */
export function naming<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (message.includes(file)) throw e;
    throw new Error(`${file}: ${message}`);
  }
}
