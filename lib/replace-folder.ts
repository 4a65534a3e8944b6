// Replacing a folder as one step: written beside the old one, flushed, verified, then swapped in
// (renameat2's RENAME_EXCHANGE through the addon, where the system has it). Every folder rlora
// writes (model, adapter, merged model, checkpoint) goes through here. The other file helpers,
// which need no addon, are in util/files.ts; this one needs the addon, so it
// sits in lib/, above lib/native.ts, not in lib/util/.
import * as fs from 'fs';
import * as path from 'path';

import { native } from './native';
import { ensureFolder, fsyncPath, isLeftover, sideName } from './util/files';
import { processAlive as alive } from './util/process';

export interface ReplaceFolderOptions {
  /**
   * The entries of such a folder that rlora writes: when `dir` exists, every other entry (a README
   * or tokenizer the user put there) is copied into the new folder. Default: rlora owns everything
   * (a checkpoint), so nothing is carried over.
   */
  owns?: (name: string) => boolean;
  /** Checks the new folder before it replaces the old one (e.g. that every file reads back); throws to keep the old. */
  verify?: (tmp: string) => void;
  /**
   * A name rlora owns (a checkpoint): a link there is refused, naming it, and never followed (saving
   * through a link planted at checkpoint-<step> replaced the folder it named). Default false: a
   * link the user made to a model or adapter folder is followed, and the link stays.
   */
  refuseLink?: boolean;
}

/**
 * Writes the folder `dir` so that at every instant it is either the old complete folder or the new
 * complete one: `fill` writes into a hidden sibling, the files the user kept in the old folder are
 * copied in (ReplaceFolderOptions.owns), everything is flushed and verified, then the two are
 * swapped in one atomic step (renameat2's RENAME_EXCHANGE; where the system lacks it, the old folder
 * is renamed aside and the new one renamed in), and the old one is removed. If anything fails before the
 * swap, the sibling is removed and `dir` is untouched; a crash leaves at most a hidden sibling.
 */
export function replaceFolder(target: string, fill: (tmp: string) => void, options: ReplaceFolderOptions = {}): void {
  if (options.refuseLink && fs.lstatSync(target, { throwIfNoEntry: false })?.isSymbolicLink()) {
    throw new Error(`${target} is a link (to ${fs.readlinkSync(target)}); rlora writes this name itself and never follows a link there: remove the link`);
  }
  // a link to a folder: the folder it names is replaced, and the link stays (it used to become a folder of its own)
  const dir = fs.lstatSync(target, { throwIfNoEntry: false })?.isSymbolicLink() && fs.statSync(target, { throwIfNoEntry: false }) ? fs.realpathSync(target) : target;
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (st?.isDirectory()) removeStaleSiblings(dir);
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


/**
 * Removes the hidden siblings of `dir` (sideName's `.<name>.<tmp|old|deleting>-<pid>-<time>`) that
 * processes no longer running left (a save killed with -9). Called only while `dir` itself is a
 * complete folder: a killed swap may have left the only copy in an `.old` sibling otherwise.
 */
function removeStaleSiblings(dir: string): void {
  const parent = path.dirname(path.resolve(dir));
  const name = path.basename(path.resolve(dir));
  for (const entry of fs.readdirSync(parent)) {
    const m = /^\.(.+)\.(?:tmp|old|deleting)-(\d+)-\d+$/.exec(entry);
    if (!m || m[1] !== name || alive(Number(m[2]))) continue;
    fs.rmSync(path.join(parent, entry), { recursive: true, force: true });
  }
}

