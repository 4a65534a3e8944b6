// A stand-in for the Hugging Face Hub on 127.0.0.1, for the download tests: it answers the
// requests @huggingface/hub makes (model info with `sha`, the tree of a commit, paths-info, and
// `resolve` with Range, ETag, X-Repo-Commit, X-Linked-Etag/Size, X-Error-Code) for repos served
// from folders, and a second server on another port stands for the CDN the Hub redirects LFS
// files to. Switches make the error cases: gated and private repos, a corrupted file, a server
// that sends more bytes than it announced, slow transfers, a server that ignores Range. Every
// request is recorded (with its Authorization header) so that tests can count them.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import * as path from 'path';

export interface ServedRepo {
  /** "org/name" (or "name"). */
  id: string;
  /** The files of the main branch: a folder's (read once) or given. */
  files: Record<string, Buffer>;
  /** Other branches or tags, each with its own files. */
  branches?: Record<string, Record<string, Buffer>>;
  /** Files need a token of `tokens` (401 without one, 403 with another), as a gated repo's. */
  gated?: { tokens: string[] };
  /** Everything needs a token of `tokens`: without one, 401 RepoNotFound (as the Hub answers). */
  private?: { tokens: string[] };
  /** Entries the tree lists as they are given (names the files do not have: a hostile listing). */
  treeOverride?: (entries: TreeEntry[]) => TreeEntry[];
}

export interface TreeEntry {
  type: 'file';
  path: string;
  size: number;
  oid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

export interface RecordedRequest {
  server: 'hub' | 'cdn';
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

/** The files of a folder (its top level), for a ServedRepo. */
export function filesOf(dir: string, skip: (name: string) => boolean = () => false): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const name of fs.readdirSync(dir).sort()) {
    const full = path.join(dir, name);
    if (!skip(name) && fs.statSync(full).isFile()) out[name] = fs.readFileSync(full);
  }
  return out;
}

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
/** git's blob id: sha1 of "blob <size>\0" and the bytes. */
export const gitBlobId = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const isLfs = (name: string, b: Buffer): boolean => /\.(safetensors|bin|gguf|pt)$/.test(name) || b.length > 1_000_000;

/** A commit hash for a set of files (stable, so a test can compute it too). */
export function commitOf(id: string, files: Record<string, Buffer>): string {
  const h = createHash('sha1').update(id);
  for (const name of Object.keys(files).sort()) h.update(`\0${name}\0${gitBlobId(files[name])}`);
  return h.digest('hex');
}

export function treeEntry(name: string, b: Buffer): TreeEntry {
  if (!isLfs(name, b)) return { type: 'file', path: name, size: b.length, oid: gitBlobId(b) };
  const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(b)}\nsize ${b.length}\n`);
  return { type: 'file', path: name, size: b.length, oid: gitBlobId(pointer), lfs: { oid: sha256(b), size: b.length, pointerSize: pointer.length } };
}

interface Revision {
  commit: string;
  files: Record<string, Buffer>;
}

export class HubServer {
  readonly requests: RecordedRequest[] = [];
  /** LFS files are answered with a redirect to the CDN server (as the Hub does). */
  redirectToCdn = false;
  /** "<repo>/<file>": served with one byte changed (the listing's sha256 stays the true one). */
  readonly corrupt = new Set<string>();
  /** "<repo>/<file>": the body goes on past the size announced, until the client hangs up. */
  readonly overflow = new Set<string>();
  /** Bodies are sent `bytes` at a time every `ms` milliseconds. */
  slow: { bytes: number; ms: number } | null = null;
  /** Range requests that start past the first byte (a resumed download) are answered with the whole file (200). */
  ignoreRange = false;
  /** Bytes of file bodies sent (by either server). */
  bodyBytes = 0;
  url = '';
  cdnUrl = '';
  readonly #hub: http.Server;
  readonly #cdn: http.Server;
  readonly #sockets = new Set<net.Socket>();
  readonly #repos: ServedRepo[];
  /** sha256 -> bytes, for the CDN. */
  readonly #blobs = new Map<string, { name: string; repo: string; bytes: Buffer }>();

  constructor(repos: ServedRepo[]) {
    this.#repos = repos;
    for (const r of repos) {
      for (const files of [r.files, ...Object.values(r.branches ?? {})]) {
        for (const [name, b] of Object.entries(files)) this.#blobs.set(sha256(b), { name, repo: r.id, bytes: b });
      }
    }
    const track = (s: http.Server): void => {
      s.on('connection', (sock) => {
        this.#sockets.add(sock);
        sock.on('close', () => this.#sockets.delete(sock));
      });
    };
    this.#hub = http.createServer((q, r) => this.#answer('hub', q, r));
    this.#cdn = http.createServer((q, r) => this.#answer('cdn', q, r));
    track(this.#hub);
    track(this.#cdn);
  }

  async listen(): Promise<this> {
    const on = (s: http.Server): Promise<string> =>
      new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(s.address() as net.AddressInfo).port}`));
      });
    this.url = await on(this.#hub);
    this.cdnUrl = await on(this.#cdn);
    return this;
  }

  /** Stops both servers and drops every connection. */
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await Promise.all([this.#hub, this.#cdn].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  /** The commit a repo's branch stands for. */
  commit(id: string, branch = 'main'): string {
    const repo = this.#repos.find((r) => r.id === id)!;
    return commitOf(id, branch === 'main' ? repo.files : repo.branches![branch]);
  }

  /** Requests to either server since `from` (an index into requests). */
  since(from: number): RecordedRequest[] {
    return this.requests.slice(from);
  }

  #revisions(repo: ServedRepo): Map<string, Revision> {
    const m = new Map<string, Revision>();
    m.set('main', { commit: commitOf(repo.id, repo.files), files: repo.files });
    for (const [name, files] of Object.entries(repo.branches ?? {})) m.set(name, { commit: commitOf(repo.id, files), files });
    return m;
  }

  #revision(repo: ServedRepo, rev: string): Revision | undefined {
    const revs = this.#revisions(repo);
    return revs.get(rev) ?? [...revs.values()].find((r) => r.commit === rev);
  }

  #answer(server: 'hub' | 'cdn', q: http.IncomingMessage, res: http.ServerResponse): void {
    this.requests.push({ server, method: q.method ?? '', url: q.url ?? '', range: q.headers.range, authorization: q.headers.authorization });
    const url = new URL(q.url ?? '/', 'http://x');
    const fail = (status: number, code: string | null, message: string): void => {
      res.writeHead(status, { 'Content-Type': 'application/json', ...(code ? { 'X-Error-Code': code, 'X-Error-Message': message } : {}) });
      res.end(JSON.stringify({ error: message }));
    };
    if (server === 'cdn') {
      const blob = this.#blobs.get(url.pathname.replace(/^\/blobs\//, ''));
      if (!blob) return fail(404, null, 'no such blob');
      // the CDN's own ETag: not the file's sha256 (the Hub's redirect carries that)
      return this.#send(q, res, `${blob.repo}/${blob.name}`, blob.bytes, { ETag: `"cdn-${sha256(blob.bytes).slice(0, 8)}"` });
    }
    const token = /^Bearer (.+)$/.exec(q.headers.authorization ?? '')?.[1];
    const p = decodeURIComponent(url.pathname);
    const api = /^\/api\/models\/(.+?)\/(revision|tree|paths-info)\/([^/]+)(?:\/(.*))?$/.exec(p);
    const resolve = api ? null : /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(p);
    const id = api?.[1] ?? resolve?.[1];
    const repo = this.#repos.find((r) => r.id === id);
    if (!id || (!api && !resolve)) return fail(404, null, 'Not Found');
    if (!repo || (repo.private && !repo.private.tokens.includes(token ?? ''))) {
      // the Hub does not tell a missing repo from a private one: 401 without a token, 404 with one
      return fail(token ? 404 : 401, 'RepoNotFound', `Repository not found`);
    }
    const rev = this.#revision(repo, decodeURIComponent(api?.[3] ?? resolve![2]));
    if (!rev) return fail(404, 'RevisionNotFound', `Invalid rev id: ${api?.[3] ?? resolve![2]}`);
    const entries = (): TreeEntry[] => {
      const list = Object.entries(rev.files).map(([name, b]) => treeEntry(name, b));
      return repo.treeOverride ? repo.treeOverride(list) : list;
    };
    if (api?.[2] === 'revision') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({
        _id: `id-${repo.id}`, id: repo.id, sha: rev.commit, private: Boolean(repo.private), gated: repo.gated ? 'manual' : false,
        downloads: 0, likes: 0, lastModified: '2026-12-07T00:00:00.000Z', pipeline_tag: 'text-generation',
        siblings: Object.keys(rev.files).map((rfilename) => ({ rfilename })),
      }));
      return;
    }
    if (api?.[2] === 'tree') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(entries()));
      return;
    }
    if (api?.[2] === 'paths-info') {
      let body = '';
      q.on('data', (c) => (body += c));
      q.on('end', () => {
        const wanted = (JSON.parse(body || '{}').paths ?? []) as string[];
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(entries().filter((e) => wanted.includes(e.path)).map((e) => ({ ...e, lastCommit: { id: rev.commit, title: 'c', date: '2026-12-07T00:00:00.000Z' } }))));
      });
      return;
    }
    // resolve
    if (repo.gated && !repo.gated.tokens.includes(token ?? '')) {
      return token
        ? fail(403, 'GatedRepo', `Access to model ${repo.id} is restricted and you are not in the authorized list. Visit https://huggingface.co/${repo.id} to ask for access.`)
        : fail(401, 'GatedRepo', `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
    }
    const name = resolve![3];
    const bytes = rev.files[name];
    if (!bytes) return fail(404, 'EntryNotFound', `Entry not found`);
    const entry = treeEntry(name, bytes);
    const common = { 'X-Repo-Commit': rev.commit, ...(entry.lfs ? { 'X-Linked-Etag': `"${entry.lfs.oid}"`, 'X-Linked-Size': String(entry.lfs.size) } : {}) };
    if (entry.lfs && this.redirectToCdn) {
      res.writeHead(302, { ...common, ETag: `"${entry.oid}"`, Location: `${this.cdnUrl}/blobs/${entry.lfs.oid}?expires=1` });
      res.end();
      return;
    }
    this.#send(q, res, `${repo.id}/${name}`, bytes, { ...common, ETag: `"${entry.lfs?.oid ?? entry.oid}"` });
  }

  /** A file's bytes, whole or the Range asked for, with the switches applied. */
  #send(q: http.IncomingMessage, res: http.ServerResponse, key: string, file: Buffer, headers: Record<string, string>): void {
    let bytes = file;
    if (this.corrupt.has(key)) {
      bytes = Buffer.from(file);
      bytes[bytes.length >> 1] ^= 0xff;
    }
    const asked = /^bytes=(\d+)-(\d*)$/.exec(q.headers.range ?? '');
    const m = this.ignoreRange && asked && Number(asked[1]) > 0 ? null : asked;
    let start = 0;
    let end = bytes.length - 1;
    let status = 200;
    const h: Record<string, string> = { ...headers, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
    if (m) {
      start = Number(m[1]);
      end = m[2] === '' ? bytes.length - 1 : Math.min(Number(m[2]), bytes.length - 1);
      if (start >= bytes.length && bytes.length > 0) {
        res.writeHead(416, { 'Content-Range': `bytes */${bytes.length}` });
        res.end();
        return;
      }
      status = 206;
      h['Content-Range'] = `bytes ${start}-${end}/${bytes.length}`;
    }
    const body = bytes.subarray(start, end + 1);
    const overflow = this.overflow.has(key) && body.length > 1;
    if (!overflow) h['Content-Length'] = String(body.length); // else chunked, with no end
    res.writeHead(status, h);
    if (q.method === 'HEAD') return void res.end();
    let closed = false;
    res.on('close', () => (closed = true));
    const slow = this.slow;
    let at = 0;
    const step = (): void => {
      if (closed) return;
      if (at >= body.length && !overflow) return void res.end();
      const n = slow ? slow.bytes : 1 << 16;
      const chunk = at < body.length ? body.subarray(at, at + n) : Buffer.alloc(n, 0x41);
      at += chunk.length;
      this.bodyBytes += chunk.length;
      const more = res.write(chunk);
      if (slow) setTimeout(step, slow.ms);
      else if (more) setImmediate(step);
      else res.once('drain', step);
    };
    step();
  }
}

/** A started HubServer (close it in afterAll). */
export async function startHubServer(repos: ServedRepo[]): Promise<HubServer> {
  return new HubServer(repos).listen();
}
