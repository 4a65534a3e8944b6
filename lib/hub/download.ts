// Downloading the files rlora needs from a Hugging Face Hub repo into the cache (cache.ts), with
// the official client `@huggingface/hub`: its modelInfo (the revision's commit), listFiles (the
// commit's files), fileDownloadInfo (size and ETag) and downloadFile (the bytes, with Range when a
// download resumes). Its snapshotDownload would fetch every file of a repo, and its
// downloadFileToCacheDir files a branch's snapshot under each file's last commit; so the calls
// are composed here: the revision is resolved to the repo's commit first, each needed file is
// fetched by that commit into blobs/<etag>.incomplete (resumed after an interruption, as Python
// does), checked (sha256 for LFS files, the git blob id for the others) and only then renamed to
// blobs/<etag> and linked into snapshots/<commit>/; refs/<revision> is written last.
//
// Every request goes through HubSession.fetch (the client's `fetch` option): the token goes to
// HF_ENDPOINT's origin only (a redirect to a CDN is followed without it), the Hub's X-Linked-*
// headers of a redirect are kept, a transfer idle for HF_HUB_DOWNLOAD_TIMEOUT seconds (default
// 10) is cut off, and an error keeps the Hub's X-Error-Code so that it can be explained.
import { createHash, Hash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

import type * as HubClient from '@huggingface/hub';

import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../adapter/files';
import { fsyncPath, writeAll, writeFileAtomically } from '../util/files';
import { show } from '../util/options';
import {
  ADAPTER_REPO_FILES, cachedCommit, checkFileName, COMMIT_HASH, etagProblem, MODEL_FILES, missingFile, refFile,
  repoFolder, RepoKind, shardsOfIndex, snapshotEntry, snapshotFolder, TOKENIZER_FILES,
} from './cache';
import { DownloadProgress, formatSize } from './progress';

/** What a download needs; resolve.ts fills it from the options and the environment. */
export interface DownloadRequest {
  repoId: string;
  revision: string;
  /** 'auto': an adapter when the repo has adapter_config.json, else a model. */
  kind: RepoKind | 'auto';
  token?: string;
  /** Where the token came from ("HF_TOKEN", "the token option", a file), for messages. */
  tokenSource?: string;
  endpoint: string;
  cacheDir: string;
  progress?: DownloadProgress;
}

export interface DownloadResult {
  /** snapshots/<commit>, complete for the kind. */
  snapshot: string;
  commit: string;
  /** Every file of the snapshot this download made sure of. */
  files: string[];
  /** Bytes that came over the network. */
  downloadedBytes: number;
  /** What the folder was fetched as. */
  kind: RepoKind;
}

/** The largest answer an API call (model info, a tree page) may send. */
const MAX_API_BYTES = 64 << 20;
/** Headers of the Hub's redirect to its CDN that say what the file is (the CDN's own differ). */
const LINKED_HEADERS = ['x-linked-etag', 'x-linked-size', 'x-repo-commit'];

/** The network could not be reached, or went silent. */
export class HubNetworkError extends Error {}

/** The Hub has no such repo (or will not say: a private one without a token). */
export class HubRepoNotFoundError extends Error {}

/** A failed request as the Hub answered it. */
interface Failure {
  url: string;
  status: number;
  code: string | null;
  message: string | null;
}

/** The seconds a transfer may stay idle: HF_HUB_DOWNLOAD_TIMEOUT (as Python), default 10. */
function idleTimeout(): number {
  const v = Number(process.env.HF_HUB_DOWNLOAD_TIMEOUT);
  return Number.isFinite(v) && v > 0 ? v : 10;
}

/** The fetch given to the client, and what it saw. */
export class HubSession {
  readonly origin: string;
  /** The last answer that was not a success. */
  lastFailure?: Failure;
  /** Set when a server answered a Range request with the whole file. */
  rangeIgnored = false;
  readonly #timeoutMs: number;

  constructor(readonly endpoint: string) {
    this.origin = new URL(endpoint).origin;
    this.#timeoutMs = idleTimeout() * 1000;
  }

  readonly fetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    let url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    const headers = new Headers(init.headers);
    if (url.origin !== this.origin) headers.delete('authorization'); // the token is for HF_ENDPOINT only
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const seconds = this.#timeoutMs / 1000;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new HubNetworkError(`no data from ${url.origin} for ${seconds} s (HF_HUB_DOWNLOAD_TIMEOUT)`)), this.#timeoutMs);
      timer.unref();
    };
    arm();
    const linked = new Map<string, string>();
    let method = init.method ?? 'GET';
    let body = init.body;
    let res: Response;
    for (let hop = 0; ; hop++) {
      try {
        res = await fetch(url, { ...init, method, body, headers, redirect: 'manual', signal: controller.signal });
      } catch (e) {
        clearTimeout(timer);
        throw networkError(url, e, controller.signal);
      }
      const location = res.headers.get('location');
      if (![301, 302, 303, 307, 308].includes(res.status) || location === null) break;
      if (url.origin === this.origin) for (const h of LINKED_HEADERS) if (res.headers.has(h)) linked.set(h, res.headers.get(h)!);
      await res.body?.cancel();
      if (hop === 10) throw new HubNetworkError(`more than 10 redirects from ${url.href}`);
      const next = new URL(location, url);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new HubNetworkError(`${url.href} redirects to ${next.protocol} (not http or https): refused`);
      if (next.origin !== this.origin) headers.delete('authorization');
      if (res.status === 303) {
        method = 'GET';
        body = undefined;
      }
      url = next;
    }
    arm();
    if (!res.ok) this.lastFailure = { url: url.href, status: res.status, code: res.headers.get('x-error-code'), message: res.headers.get('x-error-message') };
    const asked = /^bytes=(\d+)-/.exec(headers.get('range') ?? '');
    if (asked && Number(asked[1]) > 0 && res.status === 200) {
      clearTimeout(timer);
      await res.body?.cancel();
      this.rangeIgnored = true;
      throw new HubNetworkError(`${url.origin} answered a request for the bytes from ${asked[1]} on with the whole file`);
    }
    const out = new Headers(res.headers);
    for (const [k, v] of linked) if (!out.has(k)) out.set(k, v);
    const limit = url.pathname.startsWith('/api/') ? MAX_API_BYTES : Infinity;
    const where = url.href;
    let seen = 0;
    const noBody = res.body === null || [204, 205, 304].includes(res.status);
    if (noBody) clearTimeout(timer);
    const stream = noBody
      ? null
      : res.body!.pipeThrough(
          new TransformStream<Uint8Array, Uint8Array>({
            transform(chunk, c) {
              seen += chunk.byteLength;
              if (seen > limit) throw new HubNetworkError(`${where} sent more than ${limit} bytes: cut off`);
              arm();
              c.enqueue(chunk);
            },
            flush() {
              clearTimeout(timer);
            },
          }),
        );
    const wrapped = new Response(stream, { status: res.status, statusText: res.statusText, headers: out });
    Object.defineProperty(wrapped, 'url', { value: url.href });
    return wrapped;
  };
}

/** A failed fetch as an error that says what could not be reached and why. */
function networkError(url: URL, e: unknown, signal: AbortSignal): Error {
  if (signal.aborted && signal.reason instanceof Error) return signal.reason;
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (e as Error).message;
  return new HubNetworkError(`cannot reach ${url.origin} (${why})`);
}

/** An ETag as Python normalizes it: without W/ and quotes. */
export function normalizeEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

/** The client, loaded when a download starts (12 MB; loading rlora does not need it). */
function client(): typeof HubClient {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('@huggingface/hub') as typeof HubClient;
}

/** A file of the repo's listing at the commit. */
interface TreeFile {
  path: string;
  size: number;
  /** The git blob id (sha1). */
  oid?: string;
  /** sha256 and size of an LFS file. */
  lfs?: { oid: string; size: number };
}

/** The Error the client threw, explained in the terms a user can act on. */
export function explainHubError(e: unknown, session: HubSession, req: DownloadRequest, doing: string): Error {
  if (e instanceof HubNetworkError) return e;
  const status = (e as { statusCode?: unknown }).statusCode;
  if (typeof status !== 'number') {
    const msg = typeof e === 'string' ? e : (e as Error)?.message ?? String(e);
    if (/access token must start with 'hf_'/.test(msg)) return new Error(`the token (${req.tokenSource ?? 'token'}) must start with "hf_": a Hugging Face access token (https://huggingface.co/settings/tokens)`);
    return new Error(`${doing}: ${msg}`);
  }
  const f = session.lastFailure;
  const code = f && f.status === status ? f.code : null;
  const said = (e as Error).message.replace(/\. URL: .*$/s, '');
  const repoUrl = `${req.endpoint}/${req.repoId}`;
  const token = req.token ? `the token (${req.tokenSource ?? 'token'})` : undefined;
  if (code === 'GatedRepo' || ((status === 401 || status === 403) && code === null && doing.startsWith('downloading'))) {
    return token
      ? new Error(`${req.repoId} is a gated repo and ${token} has no access to it (${status}: ${said}): accept its conditions at ${repoUrl} with the account of that token, or use a token of an account that has`)
      : new Error(`${req.repoId} is a gated repo (${status}: ${said}): accept its conditions at ${repoUrl}, then set HF_TOKEN to an access token of that account (or pass the token option)`);
  }
  if (code === 'RepoNotFound' || (status === 404 && code === null && doing.startsWith('asking'))) {
    return new HubRepoNotFoundError(
      `repo ${JSON.stringify(req.repoId)} was not found on ${req.endpoint} (${status})` +
        (token ? ` with ${token}` : ': if it is private, set HF_TOKEN to an access token that can read it (or pass the token option)'),
    );
  }
  if (code === 'RevisionNotFound') return new Error(`revision ${JSON.stringify(req.revision)} of ${req.repoId} was not found on ${req.endpoint} (a branch, tag or commit hash is expected): ${said}`);
  if (code === 'EntryNotFound') return new Error(`${doing}: the file is not in ${req.repoId} at that commit (${status})`);
  if (status === 401 || status === 403) {
    return new Error(`${doing}: ${req.endpoint} refused access (${status}: ${said})${token ? `; ${token} may be invalid or lack access` : ': set HF_TOKEN to an access token that can read the repo'}`);
  }
  return new Error(`${doing}: ${req.endpoint} answered ${status}: ${said}`);
}

/** Runs a client call; its error comes out explained. */
async function call<T>(session: HubSession, req: DownloadRequest, doing: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw explainHubError(e, session, req, doing);
  }
}

/** The files of `kind` to fetch, from the listing; refuses a repo without what rlora can read. */
function plan(kind: RepoKind, tree: Map<string, TreeFile>, repo: string): { required: string[]; optional: string[]; index?: string } {
  const has = (f: string): boolean => tree.has(f);
  const present = (names: readonly string[]): string[] => names.filter(has);
  const pickles = [...tree.keys()].filter((f) => /\.(bin|pt|pth|ckpt|pkl)$/.test(f));
  const others = [...tree.keys()].filter((f) => /\.(gguf|onnx|h5|msgpack)$/.test(f));
  const noSafetensors = (want: string): Error =>
    new Error(
      `${repo} has no ${want}` +
        (pickles.length
          ? `: its weights are PyTorch pickle files (${pickles.slice(0, 3).join(', ')}${pickles.length > 3 ? ', ...' : ''}), which rlora does not load (a pickle can run code when it is read); use a repo or revision with safetensors weights, or convert them (transformers: save_pretrained(dir, safe_serialization=True))`
          : others.length
            ? `: it holds ${others.slice(0, 3).join(', ')}, formats rlora does not load`
            : ''),
    );
  if (kind === 'tokenizer') {
    if (!has('tokenizer.json')) {
      const slow = present(['tokenizer.model', 'vocab.json', 'vocab.txt']);
      throw new Error(`${repo} has no tokenizer.json${slow.length ? ` (it has ${slow.join(', ')}: rlora reads the fast tokenizer's tokenizer.json only)` : ''}`);
    }
    return { required: ['tokenizer.json'], optional: present(TOKENIZER_FILES).filter((f) => f !== 'tokenizer.json') };
  }
  if (kind === 'adapter') {
    if (!has(ADAPTER_CONFIG_FILE)) throw new Error(`${repo} has no ${ADAPTER_CONFIG_FILE}: not a PEFT or rlora adapter repo`);
    if (!has(ADAPTER_WEIGHTS_FILE)) throw noSafetensors(ADAPTER_WEIGHTS_FILE);
    return { required: [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE], optional: present(ADAPTER_REPO_FILES.slice(2)) };
  }
  if (!has('config.json')) throw new Error(`${repo} has no config.json: not a transformers model repo`);
  const optional = present(MODEL_FILES).filter((f) => f !== 'config.json');
  if (has('model.safetensors')) return { required: ['config.json', 'model.safetensors'], optional };
  if (has('model.safetensors.index.json')) return { required: ['config.json'], optional, index: 'model.safetensors.index.json' };
  throw noSafetensors('model.safetensors (nor model.safetensors.index.json)');
}

/** The path of `target` relative to the folder of `link` (Python's relative links: ../../blobs/<etag>). */
function relativeLink(link: string, target: string): string {
  return path.relative(path.dirname(link), target);
}

/** Links snapshot/<file> to the blob, replacing what is there in one rename. */
function linkIntoSnapshot(pointer: string, blob: string): void {
  fs.mkdirSync(path.dirname(pointer), { recursive: true });
  const tmp = path.join(path.dirname(pointer), `.${path.basename(pointer)}.tmp-${process.pid}-${Date.now()}`);
  try {
    fs.symlinkSync(relativeLink(pointer, blob), tmp);
    fs.renameSync(tmp, pointer);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Hashes the first bytes of a file into `hash` (a resumed download's prefix). */
async function hashPrefix(file: string, hash: Hash): Promise<void> {
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
}

/** The digest a file must have, and how to compute it: sha256 for LFS, git's blob sha1 otherwise. */
function checksumOf(entry: TreeFile): { hash: () => Hash; expected: string; what: string } | undefined {
  if (entry.lfs) return { hash: () => createHash('sha256'), expected: entry.lfs.oid, what: 'sha256' };
  if (entry.oid && COMMIT_HASH.test(entry.oid)) {
    return { hash: () => createHash('sha1').update(`blob ${entry.size}\0`), expected: entry.oid, what: 'git blob id' };
  }
  return undefined;
}

/** Hashes a whole file (a blob already in the cache, before it is linked). */
async function digestOf(file: string, make: () => Hash): Promise<string> {
  const h = make();
  await hashPrefix(file, h);
  return h.digest('hex');
}

/**
 * Makes sure snapshots/<commit>/ holds every file rlora needs of a repo (kind): resolves the
 * revision to its commit, lists the commit's files, fetches what is missing, verifies each file
 * and links it in, then writes refs/<revision>.
 */
export async function downloadRepo(req: DownloadRequest): Promise<DownloadResult> {
  const hub = client();
  const session = new HubSession(req.endpoint);
  const common = { hubUrl: req.endpoint, accessToken: req.token, fetch: session.fetch as typeof fetch };
  const progress = req.progress ?? new DownloadProgress();
  const repoDir = repoFolder(req.cacheDir, req.repoId);

  const info = await call(session, req, `asking ${req.endpoint} for ${req.repoId} at revision ${req.revision}`, () =>
    hub.modelInfo({ name: req.repoId, revision: req.revision, additionalFields: ['sha'], ...common }),
  );
  const commit = (info as { sha?: unknown }).sha;
  if (typeof commit !== 'string' || !COMMIT_HASH.test(commit)) throw new Error(`${req.endpoint} gave ${show(commit)} as the commit of ${req.repoId} at ${req.revision}, not a 40-digit commit hash`);
  const tree = new Map<string, TreeFile>();
  await call(session, req, `listing the files of ${req.repoId} at ${commit}`, async () => {
    for await (const e of hub.listFiles({ repo: req.repoId, revision: commit, recursive: false, ...common })) {
      if (e.type === 'file') tree.set(e.path, { path: e.path, size: e.size, oid: e.oid, lfs: e.lfs });
    }
  });
  const snapshot = snapshotFolder(repoDir, commit);
  const what = `${req.repoId}${req.revision === commit || req.revision === 'main' ? '' : ` (${req.revision})`} at ${commit.slice(0, 12)}`;
  const kind: RepoKind = req.kind === 'auto' ? (tree.has(ADAPTER_CONFIG_FILE) ? 'adapter' : 'model') : req.kind;
  const files = plan(kind, tree, what);
  const queue = [...files.required, ...(files.index ? [files.index] : []), ...files.optional];
  let downloaded = 0;
  let announced = false;
  const fetchOne = async (file: string): Promise<void> => {
    checkFileName(file, `the listing of ${what}`);
    const entry = tree.get(file);
    if (!entry) throw new Error(`${what} does not have ${file}`);
    if (snapshotEntry(repoDir, snapshot, file) !== undefined) return;
    if (!announced) {
      progress.say(`downloading ${what} into ${repoDir}`);
      announced = true;
    }
    downloaded += await fetchFile(hub, session, req, common, { repoDir, snapshot, commit, entry, what, progress });
  };
  for (const f of queue) await fetchOne(f);
  if (files.index) {
    const index = snapshotEntry(repoDir, snapshot, files.index)!;
    for (const shard of shardsOfIndex(index, `${files.index} of ${what}`)) await fetchOne(shard);
  }
  const missing = missingFile(repoDir, snapshot, kind);
  if (missing !== undefined) throw new Error(`${what}: ${missing} is missing from ${snapshot} after the download`);
  if (req.revision !== commit && cachedCommit(repoDir, req.revision) !== commit) {
    const ref = refFile(repoDir, req.revision);
    fs.mkdirSync(path.dirname(ref), { recursive: true });
    writeFileAtomically(ref, commit); // as Python writes it: the hash, no newline
  }
  const shards = files.index ? shardsOfIndex(snapshotEntry(repoDir, snapshot, files.index)!, files.index) : [];
  return { snapshot, commit, files: [...queue, ...shards], downloadedBytes: downloaded, kind };
}

interface FileJob {
  repoDir: string;
  snapshot: string;
  commit: string;
  entry: TreeFile;
  what: string;
  progress: DownloadProgress;
}

/** Fetches one file into blobs/ (resuming its .incomplete), verifies it, links it; returns the bytes fetched. */
async function fetchFile(
  hub: typeof HubClient,
  session: HubSession,
  req: DownloadRequest,
  common: { hubUrl: string; accessToken?: string; fetch: typeof fetch },
  job: FileJob,
): Promise<number> {
  const { entry, repoDir, snapshot, what, progress } = job;
  const file = entry.path;
  const size = entry.lfs?.size ?? entry.size;
  const check = checksumOf(entry);
  const pointer = path.join(snapshot, ...file.split('/'));
  const blobs = path.join(repoDir, 'blobs');
  const doing = `downloading ${file} of ${what}`;

  const dl = await call(session, req, doing, () => hub.fileDownloadInfo({ repo: req.repoId, path: file, revision: job.commit, ...common }));
  if (!dl) throw new Error(`${doing}: ${req.endpoint} has no such file at that commit`);
  if (dl.size !== size) throw new Error(`${doing}: the server announces ${dl.size} bytes, the repo's listing ${size}: refused`);
  // the blob's name: the id the listing gives (sha256 for LFS files, the git blob id for others:
  // what the Hub sends as the ETag, and Python's name), else the ETag
  const etag = entry.lfs?.oid ?? entry.oid ?? normalizeEtag(dl.etag);
  const problem = etagProblem(etag);
  if (problem) throw new Error(`${doing}: the server names its blob ${JSON.stringify(etag)}, which cannot be a file name in ${blobs} (${problem}): refused`);
  const blob = path.join(blobs, etag);
  fs.mkdirSync(blobs, { recursive: true });

  // a blob another revision brought: checked like a download before it is linked
  if (fs.statSync(blob, { throwIfNoEntry: false })?.isFile()) {
    if (!check || (await digestOf(blob, check.hash)) === check.expected) {
      linkIntoSnapshot(pointer, blob);
      return 0;
    }
    fs.rmSync(blob); // a damaged blob: fetched again
  }

  const incomplete = `${blob}.incomplete`;
  let have = 0;
  let got = 0;
  let hash: Hash | undefined;
  for (let attempt = 0; ; attempt++) {
    have = fs.statSync(incomplete, { throwIfNoEntry: false })?.size ?? 0;
    if (have > size) {
      fs.rmSync(incomplete);
      have = 0;
    }
    hash = check?.hash();
    if (hash && have > 0) await hashPrefix(incomplete, hash);
    try {
      got = await receive(hub, session, req, common, job, dl, incomplete, have, hash);
      break;
    } catch (e) {
      progress.abort();
      if (!session.rangeIgnored || attempt > 0) throw e;
      // a server that ignores Range: start over from the first byte, once
      session.rangeIgnored = false;
      fs.rmSync(incomplete, { force: true });
    }
  }
  if (hash && check) {
    const digest = hash.digest('hex');
    if (digest !== check.expected) {
      fs.rmSync(incomplete, { force: true });
      throw new Error(`${doing}: the bytes received do not match the file's ${check.what} (expected ${check.expected}, got ${digest}): removed; nothing was linked into ${snapshot}`);
    }
  }
  fs.renameSync(incomplete, blob);
  fsyncPath(blobs);
  linkIntoSnapshot(pointer, blob);
  progress.end();
  return got - have;
}

/**
 * Appends the bytes from `have` on to `incomplete`, hashing them; returns the size reached (the
 * file's). A server sending more than it announced is cut off; a full disk says so.
 */
async function receive(
  hub: typeof HubClient,
  session: HubSession,
  req: DownloadRequest,
  common: { hubUrl: string; accessToken?: string; fetch: typeof fetch },
  job: FileJob,
  dl: HubClient.FileDownloadInfoOutput,
  incomplete: string,
  have: number,
  hash: Hash | undefined,
): Promise<number> {
  const file = job.entry.path;
  const size = dl.size;
  const doing = `downloading ${file} of ${job.what}`;
  job.progress.start(file, size, have);
  if (have === size) return size;
  const body = await call(session, req, doing, () => hub.downloadFile({ repo: req.repoId, path: file, revision: job.commit, ...common, downloadInfo: dl, xet: false }));
  if (!body) throw new Error(`${doing}: ${req.endpoint} has no such file at that commit`);
  const fd = fs.openSync(incomplete, 'a');
  let got = have;
  const reader = (have > 0 ? body.slice(have) : body).stream().getReader();
  try {
    for (;;) {
      let next: Awaited<ReturnType<typeof reader.read>>;
      try {
        next = await reader.read();
      } catch (e) {
        // the client's stream reports an error as its message alone
        const msg = typeof e === 'string' ? e : (e as Error).message;
        throw new HubNetworkError(`${doing}: the transfer failed after ${got} of ${size} bytes (${msg}); run again to resume from ${incomplete}`);
      }
      if (next.done) break;
      const chunk = next.value;
      if (got + chunk.byteLength > size) {
        throw new Error(`${doing}: the server sent more than the ${size} bytes it announced: cut off (nothing was linked into ${job.snapshot})`);
      }
      try {
        writeAll(fd, chunk, incomplete);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'ENOSPC' || err.code === 'EDQUOT' || err.code === 'EFBIG') {
          throw new Error(
            `${doing}: no space left on the device of ${req.cacheDir} (${err.code}) after ${got} of ${size} bytes: free ${formatSize(size - got)} or more and run again ` +
              `(the download resumes from ${incomplete}; nothing was linked into ${job.snapshot})`,
          );
        }
        throw err;
      }
      hash?.update(chunk);
      got += chunk.byteLength;
      job.progress.add(chunk.byteLength);
    }
    if (got < size) throw new HubNetworkError(`${doing}: the transfer ended after ${got} of ${size} bytes; run again to resume from ${incomplete}`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
    await reader.cancel().catch(() => undefined);
  }
  return got;
}