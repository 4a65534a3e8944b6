// The Hugging Face cache as Python's huggingface_hub lays it out, shared both ways: where it is
// (HF_HUB_CACHE, HF_HOME), the settings rlora reads from the environment (HF_ENDPOINT, HF_TOKEN,
// HF_HUB_OFFLINE), the checks on repo ids, revisions and file names that come from users, configs
// and servers, and the lookups that need no network. Synchronous, so Tokenizer.fromFile can use it.
//
//   <cache>/models--<org>--<name>/refs/<revision>          the commit hash a branch or tag pointed to
//   <cache>/models--<org>--<name>/snapshots/<commit>/<file> a link to ../../blobs/<etag>
//   <cache>/models--<org>--<name>/blobs/<etag>             the file (sha256 for LFS files, the git
//                                                          blob id for others); <etag>.incomplete
//                                                          while it downloads
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, RLORA_CONFIG_FILE } from '../adapter/files';
import { MAX_CONFIG_JSON_BYTES, readJsonFile } from '../util/json';
import { isPlainObject, show } from '../util/options';

/** Environment variables, as process.env holds them (declared here: rlora's types need no @types/node). */
export type Environment = Readonly<Record<string, string | undefined>>;

/** What a folder is resolved for: which files it must hold. */
export type RepoKind = 'model' | 'adapter' | 'tokenizer';

/** Where the Hub is: HF_ENDPOINT, else https://huggingface.co (no trailing slash). */
export function hubEndpoint(env: Environment = process.env): string {
  const raw = env.HF_ENDPOINT?.trim() || 'https://huggingface.co';
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`HF_ENDPOINT must be an http(s) URL, got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`HF_ENDPOINT must be an http(s) URL, got ${JSON.stringify(raw)}`);
  return raw.replace(/\/+$/, '');
}

/** `~` and `~/...` as the home folder, as Python's os.path.expanduser. */
function expandHome(p: string): string {
  return p === '~' ? os.homedir() : p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p;
}

/** HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (Python's order). */
export function hfHome(env: Environment = process.env): string {
  if (env.HF_HOME) return path.resolve(expandHome(env.HF_HOME));
  return path.join(env.XDG_CACHE_HOME ? path.resolve(expandHome(env.XDG_CACHE_HOME)) : path.join(os.homedir(), '.cache'), 'huggingface');
}

/** The cache folder: HF_HUB_CACHE (or the older HUGGINGFACE_HUB_CACHE), else HF_HOME/hub. */
export function hubCacheDir(env: Environment = process.env): string {
  const set = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  return set ? path.resolve(expandHome(set)) : path.join(hfHome(env), 'hub');
}

/** A true value of an environment variable as huggingface_hub reads it: 1, ON, YES, TRUE. */
export function envFlag(name: string, env: Environment = process.env): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((env[name] ?? '').trim().toUpperCase());
}

/** HF_HUB_OFFLINE: the cache only, no request. */
export function isOffline(env: Environment = process.env): boolean {
  return envFlag('HF_HUB_OFFLINE', env);
}

/**
 * The token, as Python finds it: HF_TOKEN, else the file HF_TOKEN_PATH names, else HF_HOME/token
 * (what `huggingface-cli login` writes); `source` says which.
 */
export function hubToken(env: Environment = process.env): { token: string; source: string } | undefined {
  const fromEnv = env.HF_TOKEN?.trim();
  if (fromEnv) return { token: fromEnv, source: 'HF_TOKEN' };
  const file = env.HF_TOKEN_PATH ? path.resolve(expandHome(env.HF_TOKEN_PATH)) : path.join(hfHome(env), 'token');
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > 4096) return undefined;
    const token = fs.readFileSync(file, 'utf8').trim();
    return token ? { token, source: file } : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Names: repo ids, revisions, file names

const REPO_ID = /^(?:[\w.-]+\/)?[\w.-]{1,96}$/;

/** Why `id` is not a Hugging Face repo id (huggingface_hub's validate_repo_id rules), or undefined. */
export function repoIdProblem(id: string): string | undefined {
  if (!REPO_ID.test(id)) return 'a repo id is "name" or "org/name": letters, digits, "-", "_" and "." (at most 96 a part)';
  if (id.includes('--') || id.includes('..')) return 'a repo id holds no "--" and no ".."';
  if (id.split('/').some((part) => /^[-.]|[-.]$/.test(part))) return 'no part of a repo id starts or ends with "-" or "."';
  if (id.endsWith('.git')) return 'a repo id does not end with ".git"';
  // the Hub's prefixes of other repo kinds (the client refuses a model id that starts with one)
  if (/^(models?|datasets?|spaces?|buckets?|kernels?)\//.test(id)) return `"${id.split('/')[0]}/" is no organisation: a model repo id is "org/name"`;
  return undefined;
}

/** Whether `s` can name a Hub repo (it may still be meant as a folder that does not exist). */
export function isRepoId(s: string): boolean {
  return repoIdProblem(s) === undefined;
}

/** `id` when it is a valid repo id, else an Error naming it and the rule (`asFolder`: it was no folder here either). */
export function checkRepoId(id: string, where: string, asFolder = false): string {
  const problem = repoIdProblem(id);
  if (problem) throw new Error(`${at(where)}${asFolder ? `there is no folder ${id} here, and ` : ''}${JSON.stringify(id)} is not a Hugging Face repo id: ${problem}`);
  return id;
}

/** The start of an error message: "<where>: ", or nothing when `where` is empty. */
export function at(where: string): string {
  return where ? `${where}: ` : '';
}

/** A 40-digit commit hash. */
export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/**
 * Why a revision (a branch, tag or commit) is unsafe as a path under refs/, or undefined: no "..",
 * no absolute path, no backslash or control character, no empty part.
 */
export function revisionProblem(rev: string): string | undefined {
  if (rev.length === 0 || rev.length > 255) return 'it must hold 1 to 255 characters';
  // eslint-disable-next-line no-control-regex
  if (/[\\\x00-\x1f\x7f]/.test(rev)) return 'it holds a backslash or a control character';
  if (rev.startsWith('/')) return 'it is an absolute path';
  if (rev.split('/').some((part) => part === '' || part === '.' || part === '..')) return 'it has an empty, "." or ".." part';
  return undefined;
}

/** `rev` when it is a safe revision, else an Error naming it. */
export function checkRevision(rev: unknown, where: string): string {
  if (typeof rev !== 'string') throw new TypeError(`${at(where)}revision must be a string (a branch, tag or commit hash), got ${show(rev)}`);
  const problem = revisionProblem(rev);
  if (problem) throw new RangeError(`${at(where)}revision ${JSON.stringify(rev)} is refused: ${problem}`);
  return rev;
}

/**
 * Why a file name from a repo (the server's listing, an index's weight_map) cannot be a path
 * inside a snapshot folder, or undefined: no "..", no absolute, drive or UNC path, no backslash,
 * no empty part (huggingface_hub's _validate_relative_filename, and stricter).
 */
export function fileNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > 1024) return 'it must hold 1 to 1024 characters';
  // eslint-disable-next-line no-control-regex
  if (/[\\\x00-\x1f\x7f]/.test(name)) return 'it holds a backslash or a control character';
  if (name.startsWith('/') || /^[a-zA-Z]:/.test(name)) return 'it is an absolute path';
  if (name.split('/').some((part) => part === '' || part === '.' || part === '..')) return 'it has an empty, "." or ".." part';
  return undefined;
}

/** `name` when it is a safe file name of a repo, else an Error naming it and where it came from. */
export function checkFileName(name: string, source: string): string {
  const problem = fileNameProblem(name);
  if (problem) throw new Error(`${source} names the file ${JSON.stringify(name)}, which is refused: ${problem}`);
  return name;
}

/** Why an ETag (a blob's file name) is unsafe, or undefined: letters, digits, "-", "_", "." only. */
export function etagProblem(etag: string): string | undefined {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(etag)) return 'a blob name is 1 to 128 letters, digits, "-", "_" or "." (not first)';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The layout

/** `<cache>/models--<org>--<name>`. */
export function repoFolder(cacheDir: string, repoId: string): string {
  return path.join(cacheDir, `models--${repoId.split('/').join('--')}`);
}

export function snapshotFolder(repoDir: string, commit: string): string {
  return path.join(repoDir, 'snapshots', commit);
}

export function refFile(repoDir: string, revision: string): string {
  return path.join(repoDir, 'refs', ...revision.split('/'));
}

/**
 * The commit a revision stands for in the cache: the revision itself when it is a commit hash,
 * else what refs/<revision> holds (a commit hash, else an error naming the file), else undefined.
 */
export function cachedCommit(repoDir: string, revision: string): string | undefined {
  if (COMMIT_HASH.test(revision)) return revision;
  const ref = refFile(repoDir, revision);
  let text: string;
  try {
    const st = fs.statSync(ref);
    if (!st.isFile() || st.size > 256) throw new Error(`${ref} is not a ref file (one commit hash)`);
    text = fs.readFileSync(ref, 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
  if (!COMMIT_HASH.test(text)) throw new Error(`${ref} must hold a 40-digit commit hash, got ${show(text)}`);
  return text;
}

/** Whether `child` (absolute, normalized) is `parent` or inside it. */
function within(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith(`..${path.sep}`) && rel !== '..' && !path.isAbsolute(rel));
}

/**
 * The path of `file` in a snapshot folder when it is there, else undefined. A link that leads
 * anywhere but the repo's blobs/ (or a file that is not a regular file) is refused: a cache is
 * shared, and a snapshot entry pointing at /etc/passwd must not be read as a config.
 */
export function snapshotEntry(repoDir: string, snapshot: string, file: string): string | undefined {
  const p = path.join(snapshot, ...file.split('/'));
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return undefined;
  }
  if (st.isSymbolicLink()) {
    let real: string;
    try {
      real = fs.realpathSync(p);
    } catch {
      return undefined; // a dangling link: the blob is gone, as Python treats it
    }
    const blobs = path.join(fs.realpathSync(repoDir), 'blobs');
    if (!within(real, blobs)) throw new Error(`${p} is a link to ${real}, outside the cache's ${blobs}: refused`);
    st = fs.statSync(real);
  }
  if (!st.isFile()) throw new Error(`${p} is not a regular file: refused`);
  return p;
}

/**
 * Whether `file` is inside `dir` once links are resolved; in a cache snapshot
 * (`.../models--a--b/snapshots/<commit>`) a file named inside it whose link leads into that repo's
 * blobs/ counts as inside too (every file of a snapshot is such a link).
 */
export function isInsideFolder(file: string, dir: string): boolean {
  if (!fs.existsSync(file) || !fs.existsSync(dir)) return false;
  const real = fs.realpathSync(file);
  const realRoot = fs.realpathSync(dir);
  if (within(real, realRoot) && real !== realRoot) return true;
  const snapshots = path.dirname(realRoot);
  const repo = path.dirname(snapshots);
  const isSnapshot = path.basename(snapshots) === 'snapshots' && COMMIT_HASH.test(path.basename(realRoot)) && path.basename(repo).startsWith('models--');
  const named = path.resolve(file);
  return isSnapshot && within(named, path.resolve(dir)) && named !== path.resolve(dir) && within(real, path.join(repo, 'blobs'));
}

// ---------------------------------------------------------------------------------------------
// What a folder of each kind must hold

/** The tokenizer files rlora fetches with a model, an adapter or a tokenizer (those the repo has). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'] as const;
/** What a model download fetches besides its weights (those the repo has). */
export const MODEL_FILES = ['config.json', 'generation_config.json', ...TOKENIZER_FILES] as const;
/** What an adapter download fetches (those the repo has; the first two are required). */
export const ADAPTER_REPO_FILES = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, RLORA_CONFIG_FILE, ...TOKENIZER_FILES] as const;

/** The shard file names an index's weight_map lists, each checked (an index is a file from anyone). */
export function shardsOfIndex(indexFile: string, source: string): string[] {
  const json = readJsonFile(indexFile, { maxBytes: MAX_CONFIG_JSON_BYTES });
  const map = isPlainObject(json) ? json.weight_map : undefined;
  if (!isPlainObject(map)) throw new Error(`${source} has no weight_map (an object of tensor name -> file name)`);
  const files = new Set<string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string') throw new Error(`${source}: weight_map[${JSON.stringify(name)}] is not a file name`);
    files.add(checkFileName(file, `${source} (weight_map[${JSON.stringify(name)}])`));
  }
  return [...files];
}

/**
 * The first file a folder of `kind` needs and lacks in a snapshot, or undefined when it is
 * complete: a model needs config.json and its weights (model.safetensors, or the index and every
 * shard it lists), an adapter adapter_config.json and adapter_model.safetensors, a tokenizer
 * tokenizer.json.
 */
export function missingFile(repoDir: string, snapshot: string, kind: RepoKind): string | undefined {
  const has = (f: string): boolean => snapshotEntry(repoDir, snapshot, f) !== undefined;
  if (kind === 'tokenizer') return has('tokenizer.json') ? undefined : 'tokenizer.json';
  if (kind === 'adapter') return [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].find((f) => !has(f));
  if (!has('config.json')) return 'config.json';
  if (has('model.safetensors')) return undefined;
  const index = snapshotEntry(repoDir, snapshot, 'model.safetensors.index.json');
  if (index === undefined) return 'model.safetensors';
  return shardsOfIndex(index, index).find((f) => !has(f));
}

/** What the cache holds for a repo at a revision. */
export interface CacheLookup {
  /** `<cache>/models--<org>--<name>`. */
  repoDir: string;
  /** The commit the revision stands for, when the cache knows it. */
  commit?: string;
  /** The snapshot folder, when the commit is known. */
  snapshot?: string;
  /** The first file missing for the kind; undefined when the snapshot is complete. */
  missing?: string;
}

/** Looks a repo up in the cache, without any request. */
export function lookupCache(cacheDir: string, repoId: string, revision: string, kind: RepoKind): CacheLookup {
  const repoDir = repoFolder(cacheDir, repoId);
  const commit = cachedCommit(repoDir, revision);
  if (commit === undefined) return { repoDir, missing: `refs/${revision}` };
  const snapshot = snapshotFolder(repoDir, commit);
  if (!fs.existsSync(snapshot)) return { repoDir, commit, missing: `snapshots/${commit}` };
  return { repoDir, commit, snapshot, missing: missingFile(repoDir, snapshot, kind) };
}
