// The one resolver of every place that takes a model, an adapter or a tokenizer by name
// (Model.fromPretrained, Adapter.load, Tokenizer.fromFile/fromPretrained, run.json's model, the
// CLI's --model and --adapter, an adapter's base_model_name_or_path): a folder or file that exists
// here; else the Hugging Face cache (no request); else a download into that cache. The order is
// transformers'. The options and their checks are here too.
import * as fs from 'fs';
import * as path from 'path';

import { checkKeys, show } from '../util/options';
import {
  at, checkRepoId, checkRevision, COMMIT_HASH, hubCacheDir, hubEndpoint, hubToken, isOffline, lookupCache, repoFolder, RepoKind,
} from './cache';
import { downloadRepo, DownloadResult, HubNetworkError, HubRepoNotFoundError } from './download';
import { DownloadProgress } from './progress';

/** Options of everything that may load from the Hugging Face Hub. */
export interface HubOptions {
  /** A branch, tag or commit hash of the Hub repo. Default 'main'. Ignored for a local folder. */
  revision?: string;
  /**
   * An access token (hf_...) for gated and private repos. Default: HF_TOKEN, else the token file
   * `huggingface-cli login` writes (HF_TOKEN_PATH, else HF_HOME/token). Sent to HF_ENDPOINT only.
   */
  token?: string;
  /** The local folder or the cache only, never a request (as HF_HUB_OFFLINE=1). Default false. */
  localFilesOnly?: boolean;
}

/** The keys of HubOptions, for checkKeys. */
export const HUB_OPTION_NAMES = ['revision', 'token', 'localFilesOnly'] as const satisfies readonly (keyof HubOptions)[];

export interface ResolveOptions extends HubOptions {
  /** What the folder must hold. Default 'model'. */
  kind?: RepoKind;
}

/** Where a folder came from, when it came from the Hub. */
export interface HubSource {
  /** The repo id ("org/name"). */
  repo: string;
  /** The revision asked for. */
  revision: string;
  /** The commit it stood for. */
  commit: string;
}

export interface Resolved {
  /** The local folder (or file): as given, or a snapshot folder of the cache. */
  path: string;
  /** Set when it is a snapshot of a Hub repo. */
  hub?: HubSource;
}

/** Checks HubOptions' values (the keys are checked by the caller, with its own). */
export function checkHubOptions(options: HubOptions, where: string): void {
  if (options.revision !== undefined) checkRevision(options.revision, where);
  if (options.token !== undefined && (typeof options.token !== 'string' || options.token.trim() === '')) {
    throw new TypeError(`${at(where)}token must be a non-empty string (a Hugging Face access token, hf_...), got ${options.token === '' ? '""' : show(typeof options.token === 'string' ? '<blank>' : options.token)}`);
  }
  if (options.localFilesOnly !== undefined && typeof options.localFilesOnly !== 'boolean') {
    throw new TypeError(`${at(where)}localFilesOnly must be true or false, got ${show(options.localFilesOnly)}`);
  }
}

/**
 * Whether a name is meant as a path ("./x", "../x", "/x", "~/x", "a/b/c", a backslash): never a
 * repo id, so it is left to the caller, whose error says that no such folder or file exists.
 */
export function isPathLike(name: string): boolean {
  return /^[.~/]|\\|\/.*\//.test(name) || /^[a-zA-Z]:/.test(name);
}

/** The offline refusal: which file is missing from which cache folder. */
function offlineError(where: string, repo: string, revision: string, repoDir: string, missing: string, why: string): Error {
  const file = missing.startsWith('refs/') || missing.startsWith('snapshots/') ? `${repoDir}/${missing}` : missing;
  const what = missing.startsWith('refs/')
    ? `the cache has no ${repo} at revision ${revision} (no ${file})`
    : missing.startsWith('snapshots/')
      ? `the cache has no snapshot of ${repo} at revision ${revision} (no ${file})`
      : `the cache's snapshot of ${repo} at revision ${revision} lacks ${missing} (in ${repoDir})`;
  return new Error(`${at(where)}${why}: ${what}; run once online, or \`rlora download ${repo}${revision === 'main' ? '' : ` --revision ${revision}`}\``);
}

/**
 * Resolves without a request: a path that exists, or a complete snapshot in the cache. Returns
 * `{ download }` when only a download can give it (with the reason when it may not: offline).
 */
export function resolveLocal(
  idOrPath: string,
  options: ResolveOptions,
  where: string,
): Resolved | { download: { repo: string; revision: string; cacheDir: string; offline?: string; repoDir: string; missing: string } } {
  if (typeof idOrPath !== 'string' || idOrPath === '') throw new TypeError(`${at(where)}expected a folder or a Hugging Face repo id ("org/name"), got ${show(idOrPath)}`);
  if (fs.existsSync(idOrPath) || isPathLike(idOrPath)) return { path: idOrPath };
  const kind = options.kind ?? 'model';
  const repo = checkRepoId(idOrPath, where, true);
  const revision = options.revision ?? 'main';
  const cacheDir = hubCacheDir();
  const found = lookupCache(cacheDir, repo, revision, kind);
  if (found.snapshot && found.missing === undefined) return { path: found.snapshot, hub: { repo, revision, commit: found.commit! } };
  const offline = options.localFilesOnly ? 'localFilesOnly' : isOffline() ? `offline (HF_HUB_OFFLINE=${process.env.HF_HUB_OFFLINE})` : undefined;
  return { download: { repo, revision, cacheDir, offline, repoDir: found.repoDir, missing: found.missing! } };
}

/**
 * A local folder for `idOrPath`: the path itself when it exists; else the snapshot of the Hub repo
 * of that id in the Hugging Face cache, complete for `kind`; else (unless offline) a download of
 * the files `kind` needs into that cache. Errors say what to do: a repo that does not exist, a
 * gated repo without a token, a revision not found, offline with a file missing from the cache, no
 * network, a full disk.
 */
export async function resolveRepo(idOrPath: string, options: ResolveOptions = {}, where = 'resolveModel'): Promise<Resolved> {
  checkKeys(options as unknown, [...HUB_OPTION_NAMES, 'kind'], where);
  checkHubOptions(options, where);
  const local = resolveLocal(idOrPath, options, where);
  if (!('download' in local)) return local;
  const d = local.download;
  if (d.offline) throw offlineError(where, d.repo, d.revision, d.repoDir, d.missing, d.offline);
  const r = await fetchIntoCache(d.repo, d.revision, options.kind ?? 'model', options.token, where, idOrPath);
  return { path: r.snapshot, hub: { repo: d.repo, revision: d.revision, commit: r.commit } };
}

/** The complete snapshots of a repo in the cache for `kind`, newest first (for advice when offline would do). */
function cachedSnapshots(cacheDir: string, repo: string, kind: RepoKind): string[] {
  const dir = path.join(repoFolder(cacheDir, repo), 'snapshots');
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => COMMIT_HASH.test(n));
  } catch {
    return [];
  }
  const complete = names.filter((n) => {
    try {
      return lookupCache(cacheDir, repo, n, kind).missing === undefined;
    } catch {
      return false;
    }
  });
  return complete.sort((a, b) => fs.statSync(path.join(dir, b)).mtimeMs - fs.statSync(path.join(dir, a)).mtimeMs);
}

/** downloadRepo with the token and endpoint of the environment; a network failure says what the cache holds. */
async function fetchIntoCache(repo: string, revision: string, kind: RepoKind | 'auto', token: string | undefined, where: string, localName?: string): Promise<DownloadResult> {
  const found = token !== undefined ? { token, source: 'the token option' } : hubToken();
  const cacheDir = hubCacheDir();
  try {
    return await downloadRepo({
      repoId: repo, revision, kind, token: found?.token, tokenSource: found?.source, endpoint: hubEndpoint(), cacheDir, progress: new DownloadProgress(),
    });
  } catch (e) {
    const msg = (e as Error).message;
    if (e instanceof HubRepoNotFoundError && localName !== undefined) throw new Error(`${at(where)}${msg}; nor is there a folder ${path.resolve(localName)}`);
    if (!(e instanceof HubNetworkError)) throw new Error(`${at(where)}${msg}`);
    const kinds: RepoKind[] = kind === 'auto' ? ['model', 'adapter'] : [kind];
    const cached = kinds.map((k) => lookupCache(cacheDir, repo, revision, k)).find((l) => l.missing === undefined);
    const local = localName === undefined ? '' : ` (and there is no folder ${localName} here)`;
    if (cached) {
      throw new Error(`${at(where)}${msg}; the cache ${cacheDir} holds ${repo} at revision ${revision} (${cached.snapshot}): set HF_HUB_OFFLINE=1 to use it without the network`);
    }
    const others = kinds.flatMap((k) => cachedSnapshots(cacheDir, repo, k));
    if (others.length) {
      throw new Error(
        `${at(where)}${msg}${local}; the cache ${cacheDir} does not hold ${repo} at revision ${revision}, but it holds other snapshots of it (commit ${others[0]}${others.length > 1 ? `, and ${others.length - 1} more` : ''}): ` +
          `set HF_HUB_OFFLINE=1 and ask for revision ${others[0]} to use one`,
      );
    }
    throw new Error(`${at(where)}${msg}${local}, and the cache ${cacheDir} does not hold ${repo}; connect, or set HF_ENDPOINT to a mirror`);
  }
}

/** What `rlora download` made sure of. */
export interface DownloadedRepo extends Resolved {
  hub: HubSource;
  kind: RepoKind;
  /** The files of the snapshot rlora needs. */
  files: string[];
  /** Bytes that came over the network (0: all were in the cache). */
  downloadedBytes: number;
}

/**
 * Brings a repo's files into the cache, asking the server which commit the revision is now
 * (unless offline: then the cache's snapshot), as `huggingface-cli download` does. `kind` 'auto'
 * takes an adapter repo (adapter_config.json) as an adapter, any other as a model.
 */
export async function downloadToCache(repo: string, options: HubOptions & { kind?: RepoKind | 'auto' } = {}, where = 'download'): Promise<DownloadedRepo> {
  checkKeys(options as unknown, [...HUB_OPTION_NAMES, 'kind'], where);
  checkHubOptions(options, where);
  checkRepoId(repo, where);
  const revision = options.revision ?? 'main';
  const kind = options.kind ?? 'auto';
  const why = options.localFilesOnly ? 'localFilesOnly' : isOffline() ? `offline (HF_HUB_OFFLINE=${process.env.HF_HUB_OFFLINE})` : undefined;
  if (why) {
    const cacheDir = hubCacheDir();
    const kinds: RepoKind[] = kind === 'auto' ? ['model', 'adapter'] : [kind];
    const looks = kinds.map((k) => ({ k, l: lookupCache(cacheDir, repo, revision, k) }));
    const hit = looks.find((x) => x.l.missing === undefined);
    if (!hit) throw offlineError(where, repo, revision, looks[0].l.repoDir, looks[0].l.missing!, why);
    return { path: hit.l.snapshot!, hub: { repo, revision, commit: hit.l.commit! }, kind: hit.k, files: [], downloadedBytes: 0 };
  }
  const r = await fetchIntoCache(repo, revision, kind, options.token, where);
  return { path: r.snapshot, hub: { repo, revision, commit: r.commit }, kind: r.kind, files: r.files, downloadedBytes: r.downloadedBytes };
}

/** The local folder for a model, adapter or tokenizer given as a folder or a Hub repo id (resolveRepo's path). */
export async function resolveModel(idOrPath: string, options: ResolveOptions = {}): Promise<string> {
  return (await resolveRepo(idOrPath, options, 'resolveModel')).path;
}
