// Loading what train and eval share: the library (lazily: nothing here loads the addon until a
// function runs), models, tokenizers, datasets, and the per-task evaluation table.
import * as fs from 'fs';
import * as path from 'path';

import type * as Rlora from '../index';
import type { RepoKind } from '../hub/cache';
import { isPathLike, resolveRepo } from '../hub/resolve';
import { ADAPTER_CONFIG_FILE } from '../adapter/files';
import { isRepoId } from '../hub/cache';
import { openRegularFile } from '../util/files';
import { readJsonFile } from '../util/json';
import { InputError, UsageError } from './args';

/** The library, loaded on first use (the native addon comes with it). */
export function lib(): typeof Rlora {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('../index') as typeof Rlora;
}

/** Runs `fn`, turning its error into an InputError that starts with `what` (no stack trace). */
export async function as<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof InputError) throw e;
    const msg = e instanceof Error ? e.message : String(e);
    if (process.env.RLORA_DEBUG && e instanceof Error) console.error(e.stack);
    throw new InputError(what ? `${what}: ${msg}` : msg);
  }
}

export interface ModelSource {
  /** A folder, or a Hugging Face Hub repo id. */
  path?: string;
  /** The revision of a Hub repo (default main). */
  revision?: string;
  config?: Rlora.HFConfig;
  seed?: number;
  dtype?: Rlora.Dtype;
  device?: string;
}

/** The model of `src`: a folder, a Hub repo id (the cache, else a download), or random weights from a config. Its folder is `model.source`. */
export async function loadModel(src: ModelSource, where: string): Promise<Rlora.Model> {
  const { Model } = lib();
  const options = { dtype: src.dtype, device: src.device as Rlora.Device | undefined };
  if (src.path) {
    if (isPathLike(src.path) && !fs.existsSync(src.path)) throw new InputError(`${where}: model folder not found: ${src.path}`);
    return as(where, () => Model.fromPretrained(src.path!, { ...options, ...(src.revision !== undefined ? { revision: src.revision } : {}) }));
  }
  return as(`${where}.config`, () => Model.fromConfig(src.config!, { ...options, seed: src.seed ?? 0 }));
}

/**
 * The local folder of a folder or Hub repo id given on the command line (`what`: "--adapter"):
 * as given when it exists, else the repo's snapshot in the Hugging Face cache, else downloaded.
 */
export async function resolveFolder(idOrPath: string, kind: RepoKind, what: string): Promise<string> {
  return as('', async () => (await resolveRepo(idOrPath, { kind }, `${what} ${idOrPath}`)).path);
}

/**
 * The base model an adapter folder names (adapter_config.json's base_model_name_or_path, with its
 * revision), for commands given --adapter without --model: a folder that exists (as written, or
 * relative to the adapter folder), else a Hub repo id. `needs` says what to pass instead.
 */
export function adapterBase(adapterDir: string, needs = '--model DIR|ID'): ModelSource {
  const file = path.join(adapterDir, ADAPTER_CONFIG_FILE);
  const cfg = readJsonFile(file);
  const named = typeof cfg === 'object' && cfg !== null && !Array.isArray(cfg) ? (cfg as Record<string, unknown>) : {};
  const base = named.base_model_name_or_path;
  if (typeof base !== 'string' || base.length === 0) throw new UsageError(`${needs} is required: ${file} names no base model`);
  for (const dir of [path.resolve(base), path.resolve(adapterDir, base)]) if (fs.existsSync(path.join(dir, 'config.json'))) return { path: dir };
  if (!fs.existsSync(base) && isRepoId(base)) return { path: base, ...(typeof named.revision === 'string' ? { revision: named.revision } : {}) };
  throw new UsageError(`${needs} is required: ${file} names its base model ${JSON.stringify(base)}, which is no model folder here nor a Hub repo id`);
}

/**
 * Refuses data files that are missing, not regular files or unreadable, in one line naming `what` (the
 * run.json key or the flag) and the file, before any model is loaded: a wrong path used to be
 * reported only after the model had loaded (a minute for a large one).
 */
export function checkDataFiles(files: string | string[] | undefined, what: string): void {
  for (const f of files === undefined ? [] : Array.isArray(files) ? files : [files]) {
    try {
      const { fd } = openRegularFile(f, (why) => {
        throw new InputError(why.includes('(a folder)') ? `${what}: ${f} is a folder, not a JSON lines file` : `${what}: ${f} is ${why}`);
      });
      fs.closeSync(fd);
    } catch (e) {
      if (e instanceof InputError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new InputError(code === 'ENOENT' ? `${what}: file not found: ${f}` : `${what}: cannot read ${f} (${code ?? (e as Error).message})`);
    }
  }
}

/** A --model argument: a folder that exists as an absolute path, else as given (a Hub repo id, or a path the error names). */
export function modelArgument(arg: string): string {
  return fs.existsSync(arg) ? path.resolve(arg) : arg;
}

/** 'byte', a tokenizer.json, a folder holding one, or a Hub repo id; else the model folder's tokenizer.json. */
export async function loadTokenizer(spec: string | undefined, modelDir: string | undefined, where: string): Promise<Rlora.TextTokenizer> {
  const { ByteTokenizer, Tokenizer } = lib();
  if (spec === 'byte') return new ByteTokenizer();
  if (spec) return as(where, () => (fs.existsSync(spec) || isPathLike(spec) ? Tokenizer.fromFile(spec) : Tokenizer.fromPretrained(spec)));
  if (modelDir && fs.existsSync(path.join(modelDir, 'tokenizer.json'))) return as(where, () => Tokenizer.fromFile(modelDir));
  throw new InputError(
    `${where}: no tokenizer given${modelDir ? ` and ${modelDir} has no tokenizer.json` : ''}: name a tokenizer.json (or a folder with one), or "byte" for the byte tokenizer`,
  );
}

/** Every token id of the datasets (and the pad id) must be an embedding row of the model. */
export function checkVocabulary(model: Rlora.Model, tokenizer: Rlora.TextTokenizer, datasets: Rlora.MultiTaskDataset[]): void {
  const vocab = model.resolvedConfig.vocabSize;
  const pad = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  if (pad >= vocab) throw new InputError(`the tokenizer's padding id ${pad} is not below the model's vocab_size ${vocab}: they do not belong together`);
  for (const ds of datasets) {
    for (let i = 0; i < ds.size; i++) {
      const e = ds.get(i);
      let max = 0;
      for (const id of e.inputIds) if (id > max) max = id;
      if (max >= vocab) {
        throw new InputError(
          `example ${i} (task ${JSON.stringify(e.task)}) has token id ${max}, but the model's vocab_size is ${vocab}: ` +
            `the tokenizer (vocabulary ${tokenizer.vocabSize}) does not belong to this model`,
        );
      }
    }
  }
}

export function describeDataset(ds: Rlora.MultiTaskDataset): string {
  const tasks = ds.tasks.map((t) => `${t} ${ds.countByTask[t]}`).join(', ');
  return `${ds.size} examples (${tasks})${ds.truncated ? `, ${ds.truncated} cut to maxLength ${ds.maxLength}` : ''}`;
}

export { evalTable } from '../logging/text';
