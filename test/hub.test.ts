// Models, adapters and tokenizers by Hugging Face Hub id (lib/hub/), against a stand-in Hub on
// 127.0.0.1 (test/helpers/hub-server.ts) that serves the shipped demo base and a sharded model made
// here: the first load downloads into a cache laid out as Python's huggingface_hub lays it out, the
// second makes no request, the cache alone serves it offline, logits equal those of the folder, a
// cache laid out by hand loads, a download killed with SIGKILL resumes and verifies, a corrupted
// file or a server sending more than it announced is refused with nothing in the snapshot, the
// token goes to HF_ENDPOINT only (not to the CDN a redirect leads to), unsafe names are refused,
// and each error says what to do. Every test has a cache of its own in a temporary folder.
import { createHash } from 'crypto';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, HFConfig, Model, resolveModel, Tokenizer } from '../lib';
import { isInsideFolder } from '../lib/hub/cache';
import { DownloadProgress, formatRate, formatSize } from '../lib/hub/progress';
import { downloadToCache } from '../lib/hub/resolve';
import { commitOf, filesOf, gitBlobId, HubServer, startHubServer } from './helpers/hub-server';
import { freePort } from './helpers/ports';
import { IDS, MASK, TINY_BYTE_CONFIG, tempFolder } from './helpers/tiny-model';

jest.setTimeout(60_000);

const tmp = tempFolder('rlora-hub-');
const DEMO = path.join(__dirname, '..', 'examples', 'demo', 'base');
const CHILD = path.join(__dirname, 'helpers', 'hub-child.ts');
/** A byte-level model of several shards (maxShardSize 20 kB), and a second one for the branch v2. */
const SHARDED_CONFIG: HFConfig = { ...TINY_BYTE_CONFIG, hidden_size: 32, intermediate_size: 48 };
const sharded = path.join(tmp, 'sharded');
const shardedV2 = path.join(tmp, 'sharded-v2');
const adapterDir = path.join(tmp, 'adapter');

const HF_VARS = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME', 'HF_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_OFFLINE', 'HF_HUB_DISABLE_PROGRESS_BARS', 'HF_HUB_DOWNLOAD_TIMEOUT'];
const saved = Object.fromEntries(HF_VARS.map((k) => [k, process.env[k]]));
afterAll(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

let server: HubServer;
let n = 0;
/** A fresh, empty cache for one test (and HF_HOME beside it: no token file of the machine is read). */
function freshCache(): string {
  const dir = path.join(tmp, `cache-${++n}`);
  fs.mkdirSync(dir);
  process.env.HF_HUB_CACHE = dir;
  process.env.HF_HOME = path.join(tmp, `home-${n}`);
  return dir;
}

beforeAll(async () => {
  for (const k of HF_VARS) delete process.env[k];
  process.env.HF_HUB_DISABLE_PROGRESS_BARS = '1';
  Model.fromConfig(SHARDED_CONFIG, { seed: 3 }).save(sharded, { maxShardSize: 20_000 });
  Model.fromConfig(SHARDED_CONFIG, { seed: 4 }).save(shardedV2, { maxShardSize: 20_000 });
  const base = await Model.fromPretrained(sharded);
  Adapter.attach(base, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj', 'v_proj'], seed: 5 }).save(adapterDir);
  const demo = filesOf(DEMO);
  const demoModel = { 'config.json': demo['config.json'], 'model.safetensors': demo['model.safetensors'] };
  server = await startHubServer([
    { id: 'rlora/demo-base', files: demo },
    { id: 'rlora/sharded', files: filesOf(sharded), branches: { v2: filesOf(shardedV2) } },
    { id: 'rlora/adapter', files: filesOf(adapterDir) },
    { id: 'rlora/gated', files: demoModel, gated: { tokens: ['hf_good'] } },
    { id: 'rlora/private', files: demoModel, private: { tokens: ['hf_good'] } },
    { id: 'rlora/pickles', files: { 'config.json': demo['config.json'], 'pytorch_model.bin': Buffer.alloc(1000, 7) } },
    {
      id: 'rlora/evil-index',
      files: {
        'config.json': filesOf(sharded)['config.json'],
        'model.safetensors.index.json': Buffer.from(JSON.stringify({ weight_map: { 'model.embed_tokens.weight': '../../../../evil.safetensors' } })),
      },
    },
    { id: 'rlora/evil-oid', files: demoModel, treeOverride: (list) => list.map((e) => (e.lfs ? { ...e, lfs: { ...e.lfs, oid: '../../../evil' } } : e)) },
  ]);
  process.env.HF_ENDPOINT = server.url;
});
afterAll(() => server?.close());

const logits = async (m: Model): Promise<Float32Array> => (await m.forward(IDS, { attentionMask: MASK })).data() as Float32Array;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** The files a request list fetched from `resolve` (bodies, not the Range 0-0 probes). */
const fetched = (reqs: { url: string; range?: string }[]): string[] =>
  reqs.filter((r) => r.url.includes('/resolve/') && r.range !== 'bytes=0-0').map((r) => r.url.replace(/^.*\/resolve\/[^/]+\//, '')).sort();
/** Entries of a folder tree that are downloads in progress or temporary names. */
const leftovers = (dir: string): string[] => (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => /\.incomplete$|\.tmp-\d+/.test(f));
/** An error a promise rejects with (its message), failing when it resolves. */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected a rejection');
}

describe('a model by Hub id', () => {
  it('downloads only the files rlora reads into a cache laid out as Python lays it out; the second load makes no request; logits equal the folder\'s', async () => {
    const cache = freshCache();
    const from = server.requests.length;
    const m = await Model.fromPretrained('rlora/sharded');
    const commit = commitOf('rlora/sharded', filesOf(sharded));
    expect(m.hub).toEqual({ repo: 'rlora/sharded', revision: 'main', commit });
    const repoDir = path.join(cache, 'models--rlora--sharded');
    const snapshot = path.join(repoDir, 'snapshots', commit);
    expect(m.source).toBe(snapshot);
    // refs/main holds the commit (no newline, as Python writes it)
    expect(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe(commit);
    // every snapshot file is a relative link ../../blobs/<id>: sha256 for LFS files, the git blob id for others
    const local = filesOf(sharded);
    const shards = Object.keys(local).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    expect(shards.length).toBeGreaterThan(3);
    expect(fs.readdirSync(snapshot).sort()).toEqual(Object.keys(local).sort());
    for (const [name, bytes] of Object.entries(local)) {
      const link = fs.readlinkSync(path.join(snapshot, name));
      expect(link).toBe(`../../blobs/${name.endsWith('.safetensors') ? sha256(bytes) : gitBlobId(bytes)}`);
      expect(fs.readFileSync(path.join(snapshot, name)).equals(bytes)).toBe(true);
    }
    expect(leftovers(cache)).toEqual([]);
    const requests = server.since(from);
    expect(fetched(requests)).toEqual(Object.keys(local).sort());
    expect(requests.every((r) => r.authorization === undefined)).toBe(true); // no token set: none sent
    expect(Array.from(await logits(m))).toEqual(Array.from(await logits(await Model.fromPretrained(sharded))));

    const before = server.requests.length;
    const again = await Model.fromPretrained('rlora/sharded');
    expect(server.requests.length).toBe(before);
    expect(again.source).toBe(snapshot);
  });

  it('fetches config, weights and tokenizer files, never README.md or other files, and the tokenizer then loads synchronously from the cache', async () => {
    freshCache();
    const from = server.requests.length;
    const m = await Model.fromPretrained('rlora/demo-base');
    expect(fetched(server.since(from))).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(Array.from(await logits(m))).toEqual(Array.from(await logits(await Model.fromPretrained(DEMO))));
    const before = server.requests.length;
    const t = Tokenizer.fromFile('rlora/demo-base');
    expect(t.encode('hello R-LoRA')).toEqual(Tokenizer.fromFile(DEMO).encode('hello R-LoRA'));
    expect(server.requests.length).toBe(before);
  });

  it('a revision (branch or commit) is its own snapshot; refs/<branch> holds its commit, a commit hash writes no ref', async () => {
    const cache = freshCache();
    const v2 = await Model.fromPretrained('rlora/sharded', { revision: 'v2' });
    const commit2 = commitOf('rlora/sharded', filesOf(shardedV2));
    expect(v2.hub).toEqual({ repo: 'rlora/sharded', revision: 'v2', commit: commit2 });
    expect(fs.readFileSync(path.join(cache, 'models--rlora--sharded', 'refs', 'v2'), 'utf8')).toBe(commit2);
    expect(Array.from(await logits(v2))).toEqual(Array.from(await logits(await Model.fromPretrained(shardedV2))));
    const commit1 = commitOf('rlora/sharded', filesOf(sharded));
    const byHash = await Model.fromPretrained('rlora/sharded', { revision: commit1 });
    expect(byHash.source).toBe(path.join(cache, 'models--rlora--sharded', 'snapshots', commit1));
    expect(fs.readdirSync(path.join(cache, 'models--rlora--sharded', 'refs')).sort()).toEqual(['v2']);
    expect(Array.from(await logits(byHash))).not.toEqual(Array.from(await logits(v2)));
  });

  it('with the server stopped and HF_HUB_OFFLINE=1 it loads from the cache; a file missing from the cache is named with the cache folder', async () => {
    const cache = freshCache();
    const own = await startHubServer([{ id: 'rlora/sharded', files: filesOf(sharded) }]);
    process.env.HF_ENDPOINT = own.url;
    try {
      const first = await logits(await Model.fromPretrained('rlora/sharded'));
      await own.close();
      process.env.HF_HUB_OFFLINE = '1';
      const m = await Model.fromPretrained('rlora/sharded');
      expect(Array.from(await logits(m))).toEqual(Array.from(first));
      // a shard gone from the snapshot: offline names it and the folder
      const repoDir = path.join(cache, 'models--rlora--sharded');
      const shard = Object.keys(filesOf(sharded)).filter((f) => f.startsWith('model-'))[1];
      fs.rmSync(path.join(m.source!, shard));
      expect(await failure(Model.fromPretrained('rlora/sharded'))).toBe(
        `Model.fromPretrained("rlora/sharded"): offline (HF_HUB_OFFLINE=1): the cache's snapshot of rlora/sharded at revision main lacks ${shard} (in ${repoDir}); run once online, or \`rlora download rlora/sharded\``,
      );
      expect(await failure(Model.fromPretrained('rlora/other'))).toBe(
        `Model.fromPretrained("rlora/other"): offline (HF_HUB_OFFLINE=1): the cache has no rlora/other at revision main (no ${path.join(cache, 'models--rlora--other')}/refs/main); run once online, or \`rlora download rlora/other\``,
      );
      delete process.env.HF_HUB_OFFLINE;
      expect(await failure(Model.fromPretrained('rlora/other', { localFilesOnly: true }))).toMatch(/^Model\.fromPretrained\("rlora\/other"\): localFilesOnly: the cache has no rlora\/other at revision main/);
    } finally {
      delete process.env.HF_HUB_OFFLINE;
      process.env.HF_ENDPOINT = server.url;
      await own.close();
    }
  });

  it('no network: the error says the server cannot be reached and what the cache holds (HF_HUB_OFFLINE=1 when it has the repo)', async () => {
    const cache = freshCache();
    await Model.fromPretrained('rlora/demo-base');
    process.env.HF_ENDPOINT = `http://127.0.0.1:${await freePort()}`;
    try {
      expect(await failure(Model.fromPretrained('rlora/sharded'))).toBe(
        `Model.fromPretrained("rlora/sharded"): cannot reach ${process.env.HF_ENDPOINT} (ECONNREFUSED) (and there is no folder rlora/sharded here), and the cache ${cache} does not hold rlora/sharded; connect, or set HF_ENDPOINT to a mirror`,
      );
      // `rlora download` always asks the server; the cache has the repo: use it offline
      expect(await failure(downloadToCache('rlora/demo-base', {}, 'download'))).toMatch(
        new RegExp(`^download: cannot reach .* \\(ECONNREFUSED\\); the cache ${cache} holds rlora/demo-base at revision main \\(.*\\): set HF_HUB_OFFLINE=1 to use it without the network$`),
      );
      // a revision not in the cache, another one is: ask for that one offline
      expect(await failure(Model.fromPretrained('rlora/demo-base', { revision: 'v9' }))).toMatch(/but it holds other snapshots of it \(commit [0-9a-f]{40}\): set HF_HUB_OFFLINE=1 and ask for revision [0-9a-f]{40} to use one$/);
      // cache first: the cached repo loads without the server
      await Model.fromPretrained('rlora/demo-base');
    } finally {
      process.env.HF_ENDPOINT = server.url;
    }
  });
});

describe('a cache laid out by hand as Python lays it out', () => {
  /** models--<org>--<name>/{refs/main, blobs/<id>, snapshots/<commit>/<file> -> ../../blobs/<id>}, as huggingface_hub writes it. */
  function layOut(cache: string, id: string, files: Record<string, Buffer>, commit: string): string {
    const repoDir = path.join(cache, `models--${id.replace('/', '--')}`);
    fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), commit);
    fs.mkdirSync(path.join(repoDir, 'blobs'));
    const snapshot = path.join(repoDir, 'snapshots', commit);
    fs.mkdirSync(snapshot, { recursive: true });
    for (const [name, bytes] of Object.entries(files)) {
      const blob = name.endsWith('.safetensors') ? sha256(bytes) : gitBlobId(bytes);
      fs.writeFileSync(path.join(repoDir, 'blobs', blob), bytes);
      fs.symlinkSync(`../../blobs/${blob}`, path.join(snapshot, name));
    }
    return snapshot;
  }

  it('loads offline and with no server, model and tokenizer, and equals the folder', async () => {
    const cache = freshCache();
    const files = filesOf(DEMO, (f) => f === 'README.md' || f === 'pretrain.json');
    const commit = 'c0ffee' + '0'.repeat(34);
    const snapshot = layOut(cache, 'someone/demo', files, commit);
    process.env.HF_ENDPOINT = `http://127.0.0.1:${await freePort()}`; // nothing listens there
    try {
      const m = await Model.fromPretrained('someone/demo');
      expect(m.source).toBe(snapshot);
      expect(m.hub).toEqual({ repo: 'someone/demo', revision: 'main', commit });
      expect(Array.from(await logits(m))).toEqual(Array.from(await logits(await Model.fromPretrained(DEMO))));
      process.env.HF_HUB_OFFLINE = '1';
      expect((await Tokenizer.fromPretrained('someone/demo')).encode('abc')).toEqual(Tokenizer.fromFile(DEMO).encode('abc'));
      expect(await resolveModel('someone/demo', { revision: commit })).toBe(snapshot);
    } finally {
      delete process.env.HF_HUB_OFFLINE;
      process.env.HF_ENDPOINT = server.url;
    }
  });

  it('refuses a snapshot entry that links outside the cache, and a ref that is not a commit hash', async () => {
    const cache = freshCache();
    const files = { 'config.json': fs.readFileSync(path.join(DEMO, 'config.json')), 'model.safetensors': fs.readFileSync(path.join(DEMO, 'model.safetensors')) };
    const commit = 'ab'.repeat(20);
    const snapshot = layOut(cache, 'someone/evil', files, commit);
    const outside = path.join(tmp, 'outside-config.json');
    fs.writeFileSync(outside, '{}');
    fs.rmSync(path.join(snapshot, 'config.json'));
    fs.symlinkSync(outside, path.join(snapshot, 'config.json'));
    const before = server.requests.length;
    expect(await failure(Model.fromPretrained('someone/evil'))).toBe(
      `${path.join(snapshot, 'config.json')} is a link to ${outside}, outside the cache's ${path.join(fs.realpathSync(cache), 'models--someone--evil', 'blobs')}: refused`,
    );
    fs.writeFileSync(path.join(cache, 'models--someone--evil', 'refs', 'main'), '../../../etc');
    expect(await failure(Model.fromPretrained('someone/evil'))).toBe(`${path.join(cache, 'models--someone--evil', 'refs', 'main')} must hold a 40-digit commit hash, got "../../../etc"`);
    expect(server.requests.length).toBe(before);
  });

  it('a file of a snapshot counts as inside it for the adapter tokenizer rule (its link leads to blobs/)', async () => {
    freshCache();
    const m = await Model.fromPretrained('rlora/demo-base');
    expect(isInsideFolder(path.join(m.source!, 'tokenizer.json'), m.source!)).toBe(true);
    expect(isInsideFolder(path.join(tmp, 'outside-config.json'), m.source!)).toBe(false);
  });
});

describe('downloads that go wrong', () => {
  it('kill -9 during a download, then a rerun: it resumes from the partial file (Range) and verifies', async () => {
    const cache = freshCache();
    const size = fs.statSync(path.join(DEMO, 'model.safetensors')).size;
    const blob = path.join(cache, 'models--rlora--demo-base', 'blobs', sha256(fs.readFileSync(path.join(DEMO, 'model.safetensors'))));
    server.slow = { bytes: 1 << 16, ms: 15 }; // about 4 MB/s: a 10.8 MB file takes about 3 s
    const child = spawn(process.execPath, ['-r', 'tsx/cjs', CHILD, 'rlora/demo-base'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const dead = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      // kill it once a quarter of the weights is on disk
      for (let i = 0; i < 600 && (fs.statSync(`${blob}.incomplete`, { throwIfNoEntry: false })?.size ?? 0) < size / 4; i++) await new Promise((r) => setTimeout(r, 50));
      child.kill('SIGKILL');
      await dead;
    } finally {
      server.slow = null;
      child.kill('SIGKILL');
    }
    const partial = fs.statSync(`${blob}.incomplete`).size;
    expect(partial).toBeGreaterThanOrEqual(size / 4);
    expect(partial).toBeLessThan(size);
    const snapshot = path.join(cache, 'models--rlora--demo-base', 'snapshots', server.commit('rlora/demo-base'));
    expect(fs.existsSync(path.join(snapshot, 'model.safetensors'))).toBe(false); // nothing half-written in the snapshot
    expect(fs.existsSync(blob)).toBe(false);
    const from = server.requests.length;
    const m = await Model.fromPretrained('rlora/demo-base');
    const ranges = server.since(from).filter((r) => r.url.endsWith('/model.safetensors')).map((r) => r.range);
    expect(ranges).toEqual(['bytes=0-0', `bytes=${partial}-${size - 1}`]);
    expect(fs.existsSync(`${blob}.incomplete`)).toBe(false);
    expect(fs.readFileSync(blob).equals(fs.readFileSync(path.join(DEMO, 'model.safetensors')))).toBe(true);
    expect(Array.from(await logits(m))).toEqual(Array.from(await logits(await Model.fromPretrained(DEMO))));
  });

  it('a server that ignores Range when a download resumes: it starts over from the first byte', async () => {
    const cache = freshCache();
    const bytes = fs.readFileSync(path.join(DEMO, 'model.safetensors'));
    const blobs = path.join(cache, 'models--rlora--demo-base', 'blobs');
    fs.mkdirSync(blobs, { recursive: true });
    fs.writeFileSync(path.join(blobs, `${sha256(bytes)}.incomplete`), bytes.subarray(0, 1000));
    server.ignoreRange = true;
    const from = server.requests.length;
    try {
      const m = await Model.fromPretrained('rlora/demo-base');
      expect(fs.readFileSync(path.join(m.source!, 'model.safetensors')).equals(bytes)).toBe(true);
      // asked from byte 1000, got the whole file, asked again for all of it
      expect(server.since(from).filter((r) => r.url.endsWith('/model.safetensors')).map((r) => r.range)).toEqual(['bytes=0-0', `bytes=1000-${bytes.length - 1}`, undefined]);
    } finally {
      server.ignoreRange = false;
    }
  });

  it('a corrupted file (sha256 mismatch) is refused: nothing in the snapshot, no blob, no partial file', async () => {
    const cache = freshCache();
    const local = filesOf(sharded);
    const shard = Object.keys(local).filter((f) => f.startsWith('model-'))[2];
    server.corrupt.add(`rlora/sharded/${shard}`);
    try {
      const msg = await failure(Model.fromPretrained('rlora/sharded'));
      const snapshot = path.join(cache, 'models--rlora--sharded', 'snapshots', commitOf('rlora/sharded', local));
      expect(msg).toMatch(new RegExp(`^Model\\.fromPretrained\\("rlora/sharded"\\): downloading ${shard} of rlora/sharded at [0-9a-f]{12}: the bytes received do not match the file's sha256 \\(expected ${sha256(local[shard])}, got [0-9a-f]{64}\\): removed; nothing was linked into ${snapshot.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
      expect(fs.existsSync(path.join(snapshot, shard))).toBe(false);
      expect(fs.readdirSync(path.join(cache, 'models--rlora--sharded', 'blobs')).some((b) => b.startsWith(sha256(local[shard])))).toBe(false);
      expect(fs.existsSync(path.join(cache, 'models--rlora--sharded', 'refs', 'main'))).toBe(false);
    } finally {
      server.corrupt.clear();
    }
    // the server mended: the same cache completes
    expect(Array.from(await logits(await Model.fromPretrained('rlora/sharded')))).toEqual(Array.from(await logits(await Model.fromPretrained(sharded))));
  });

  it('a server that sends more bytes than it announced is cut off', async () => {
    const cache = freshCache();
    const size = fs.statSync(path.join(DEMO, 'model.safetensors')).size;
    server.overflow.add('rlora/demo-base/model.safetensors');
    const sentBefore = server.bodyBytes;
    try {
      const msg = await failure(Model.fromPretrained('rlora/demo-base'));
      expect(msg).toMatch(new RegExp(`downloading model\\.safetensors of rlora/demo-base at [0-9a-f]{12}: the server sent more than the ${size} bytes it announced: cut off \\(nothing was linked into `));
      const snapshot = path.join(cache, 'models--rlora--demo-base', 'snapshots', server.commit('rlora/demo-base'));
      expect(fs.existsSync(path.join(snapshot, 'model.safetensors'))).toBe(false);
      // the endless body stopped soon after the announced size (socket buffers aside)
      await new Promise((r) => setTimeout(r, 200));
      expect(server.bodyBytes - sentBefore).toBeLessThan(size + (16 << 20));
      const partial = fs.readdirSync(path.join(cache, 'models--rlora--demo-base', 'blobs')).filter((f) => f.endsWith('.incomplete'));
      for (const f of partial) expect(fs.statSync(path.join(cache, 'models--rlora--demo-base', 'blobs', f)).size).toBeLessThanOrEqual(size);
    } finally {
      server.overflow.clear();
    }
  });

  it('a resolve answered by a redirect to another origin (a CDN) is followed without the token; the token goes to HF_ENDPOINT only', async () => {
    freshCache();
    server.redirectToCdn = true;
    process.env.HF_TOKEN = 'hf_secret_token';
    const from = server.requests.length;
    try {
      const m = await Model.fromPretrained('rlora/demo-base');
      expect(Array.from(await logits(m))).toEqual(Array.from(await logits(await Model.fromPretrained(DEMO))));
    } finally {
      server.redirectToCdn = false;
      delete process.env.HF_TOKEN;
    }
    const reqs = server.since(from);
    const cdn = reqs.filter((r) => r.server === 'cdn');
    expect(cdn.length).toBeGreaterThanOrEqual(2); // the size probe and the body of model.safetensors
    expect(cdn.every((r) => r.authorization === undefined)).toBe(true);
    expect(reqs.filter((r) => r.server === 'hub').every((r) => r.authorization === 'Bearer hf_secret_token')).toBe(true);
  });

  // A full disk: a tmpfs of 1 MiB (root and mount needed; skipped with a message elsewhere).
  const canMount = process.platform === 'linux' && os.userInfo().uid === 0 && spawnSync('mount', ['--version']).status === 0;
  (canMount ? it : it.skip)('a disk that fills during a download: an error that says so, nothing half-written in the snapshot', async () => {
    const mnt = path.join(tmp, 'small');
    fs.mkdirSync(mnt);
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'rw,size=1m', 'tmpfs', mnt], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
    try {
      process.env.HF_HUB_CACHE = mnt;
      const msg = await failure(Model.fromPretrained('rlora/demo-base'));
      const snapshot = path.join(mnt, 'models--rlora--demo-base', 'snapshots', server.commit('rlora/demo-base'));
      expect(msg).toMatch(new RegExp(`^Model\\.fromPretrained\\("rlora/demo-base"\\): downloading model\\.safetensors of rlora/demo-base at [0-9a-f]{12}: no space left on the device of ${mnt} \\(ENOSPC\\) after \\d+ of \\d+ bytes: free .* or more and run again \\(the download resumes from .*\\.incomplete; nothing was linked into ${snapshot}\\)$`));
      expect(fs.readdirSync(snapshot)).toEqual(['config.json']); // fetched before the weights, complete
      expect(fs.existsSync(path.join(mnt, 'models--rlora--demo-base', 'refs', 'main'))).toBe(false);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});

describe('errors a user can act on', () => {
  it('a repo that does not exist, a private one, a gated one without a token or with the wrong one, a revision not found', async () => {
    freshCache();
    const at = server.url;
    expect(await failure(Model.fromPretrained('rlora/nope'))).toBe(
      `Model.fromPretrained("rlora/nope"): repo "rlora/nope" was not found on ${at} (401): if it is private, set HF_TOKEN to an access token that can read it (or pass the token option); nor is there a folder ${path.resolve('rlora/nope')}`,
    );
    expect(await failure(Model.fromPretrained('rlora/private'))).toBe(
      `Model.fromPretrained("rlora/private"): repo "rlora/private" was not found on ${at} (401): if it is private, set HF_TOKEN to an access token that can read it (or pass the token option); nor is there a folder ${path.resolve('rlora/private')}`,
    );
    expect(await failure(Model.fromPretrained('rlora/nope', { token: 'hf_good' }))).toBe(`Model.fromPretrained("rlora/nope"): repo "rlora/nope" was not found on ${at} (404) with the token (the token option); nor is there a folder ${path.resolve('rlora/nope')}`);
    expect(await failure(Model.fromPretrained('rlora/gated'))).toBe(
      `Model.fromPretrained("rlora/gated"): rlora/gated is a gated repo (401: Access to model rlora/gated is restricted. You must have access to it and be authenticated to access it. Please log in.): accept its conditions at ${at}/rlora/gated, then set HF_TOKEN to an access token of that account (or pass the token option)`,
    );
    process.env.HF_TOKEN = 'hf_wrong';
    try {
      expect(await failure(Model.fromPretrained('rlora/gated'))).toBe(
        `Model.fromPretrained("rlora/gated"): rlora/gated is a gated repo and the token (HF_TOKEN) has no access to it (403: Access to model rlora/gated is restricted and you are not in the authorized list. Visit https://huggingface.co/rlora/gated to ask for access.): accept its conditions at ${at}/rlora/gated with the account of that token, or use a token of an account that has`,
      );
    } finally {
      delete process.env.HF_TOKEN;
    }
    expect((await Model.fromPretrained('rlora/gated', { token: 'hf_good' })).hub?.repo).toBe('rlora/gated');
    expect((await Model.fromPretrained('rlora/private', { token: 'hf_good' })).hub?.repo).toBe('rlora/private');
    expect(await failure(Model.fromPretrained('rlora/sharded', { revision: 'v9' }))).toBe(
      `Model.fromPretrained("rlora/sharded"): revision "v9" of rlora/sharded was not found on ${at} (a branch, tag or commit hash is expected): Invalid rev id: v9`,
    );
    expect(await failure(Model.fromPretrained('rlora/nope', { token: 'secret' }))).toBe('Model.fromPretrained("rlora/nope"): the token (the token option) must start with "hf_": a Hugging Face access token (https://huggingface.co/settings/tokens)');
  });

  it('the token file of `huggingface-cli login` (HF_HOME/token) is used when HF_TOKEN is not set', async () => {
    freshCache();
    fs.mkdirSync(process.env.HF_HOME!, { recursive: true });
    fs.writeFileSync(path.join(process.env.HF_HOME!, 'token'), 'hf_good\n');
    const from = server.requests.length;
    expect((await Model.fromPretrained('rlora/gated')).hub?.repo).toBe('rlora/gated');
    expect(server.since(from).every((r) => r.authorization === 'Bearer hf_good')).toBe(true);
  });

  it('a repo with only pickle weights, a repo that is no model, a tokenizer repo without tokenizer.json', async () => {
    freshCache();
    expect(await failure(Model.fromPretrained('rlora/pickles'))).toMatch(
      /^Model\.fromPretrained\("rlora\/pickles"\): rlora\/pickles at [0-9a-f]{12} has no model\.safetensors \(nor model\.safetensors\.index\.json\): its weights are PyTorch pickle files \(pytorch_model\.bin\), which rlora does not load \(a pickle can run code when it is read\); use a repo or revision with safetensors weights, or convert them \(transformers: save_pretrained\(dir, safe_serialization=True\)\)$/,
    );
    expect(await failure(Model.fromPretrained('rlora/adapter'))).toMatch(/rlora\/adapter at [0-9a-f]{12} has no config\.json: not a transformers model repo$/);
    expect(await failure(Tokenizer.fromPretrained('rlora/sharded'))).toMatch(/rlora\/sharded at [0-9a-f]{12} has no tokenizer\.json$/);
    // nothing was fetched for them
    expect(server.requests.filter((r) => /\/resolve\/.*(pytorch_model\.bin)$/.test(r.url))).toEqual([]);
  });

  it('Tokenizer.fromFile of a repo not in the cache says to use fromPretrained; fromPretrained fetches the tokenizer files only', async () => {
    freshCache();
    expect(() => Tokenizer.fromFile('rlora/demo-base')).toThrow(/^Tokenizer\.fromFile: rlora\/demo-base is no file or folder here, and the Hugging Face cache .* has no tokenizer\.json of the repo rlora\/demo-base \(refs\/main is missing in .*\): `await Tokenizer\.fromPretrained\("rlora\/demo-base"\)` downloads it \(or `rlora download rlora\/demo-base` beforehand\)$/);
    const from = server.requests.length;
    const t = await Tokenizer.fromPretrained('rlora/demo-base');
    expect(fetched(server.since(from))).toEqual(['tokenizer.json', 'tokenizer_config.json']);
    expect(t.encode('abc')).toEqual(Tokenizer.fromFile(DEMO).encode('abc'));
  });

  it('options are checked: unknown keys with "did you mean", wrong types, unsafe revisions, before any request', async () => {
    freshCache();
    const before = server.requests.length;
    await expect(Model.fromPretrained('rlora/sharded', { revison: 'v2' } as never)).rejects.toThrow(
      'Model.fromPretrained("rlora/sharded"): unknown option "revison" (did you mean "revision"?); known: dtype, device, quantize, revision, token, localFilesOnly',
    );
    await expect(Model.fromPretrained('rlora/sharded', { localFilesOnly: 'yes' } as never)).rejects.toThrow('Model.fromPretrained("rlora/sharded"): localFilesOnly must be true or false, got "yes"');
    await expect(Model.fromPretrained('rlora/sharded', { token: 7 } as never)).rejects.toThrow(TypeError);
    await expect(Model.fromPretrained('rlora/sharded', { revision: '../../../etc' })).rejects.toThrow('Model.fromPretrained("rlora/sharded"): revision "../../../etc" is refused: it has an empty, "." or ".." part');
    await expect(Model.fromPretrained('rlora/sharded', { revision: '/etc' })).rejects.toThrow(RangeError);
    const model = Model.fromConfig(SHARDED_CONFIG);
    await expect(Adapter.load(model, 'rlora/adapter', { toekn: 'x' } as never)).rejects.toThrow('(did you mean "token"?)');
    await expect(Tokenizer.fromPretrained('rlora/demo-base', { localFilesOnly: 1 } as never)).rejects.toThrow(TypeError);
    expect(server.requests.length).toBe(before);
  });
});

describe('unsafe names', () => {
  it('repo ids with "..", "--" or an absolute path never become cache paths', async () => {
    const cache = freshCache();
    const before = server.requests.length;
    expect(await failure(resolveModel('org/..'))).toBe('resolveModel: there is no folder org/.. here, and "org/.." is not a Hugging Face repo id: a repo id holds no "--" and no ".."');
    expect(await failure(resolveModel('a--b/c'))).toBe('resolveModel: there is no folder a--b/c here, and "a--b/c" is not a Hugging Face repo id: a repo id holds no "--" and no ".."');
    expect(await failure(downloadToCache('../../etc', {}, 'download'))).toBe('download: "../../etc" is not a Hugging Face repo id: a repo id is "name" or "org/name": letters, digits, "-", "_" and "." (at most 96 a part)');
    // a path-like name is a path: the loader's own error, nothing from the Hub
    expect(await failure(Model.fromPretrained('/nonexistent/model'))).toBe('no config.json in /nonexistent/model: expected a Hugging Face model folder');
    expect(server.requests.length).toBe(before);
    expect(fs.readdirSync(cache)).toEqual([]);
  });

  it('a shard name with ".." in an index, or a blob name with ".." from the server, is refused; nothing is written outside the cache', async () => {
    const cache = freshCache();
    expect(await failure(Model.fromPretrained('rlora/evil-index'))).toMatch(
      /^Model\.fromPretrained\("rlora\/evil-index"\): model\.safetensors\.index\.json of rlora\/evil-index at [0-9a-f]{12} \(weight_map\["model\.embed_tokens\.weight"\]\) names the file "\.\.\/\.\.\/\.\.\/\.\.\/evil\.safetensors", which is refused: it has an empty, "\." or "\.\." part$/,
    );
    expect(await failure(Model.fromPretrained('rlora/evil-oid'))).toMatch(
      /^Model\.fromPretrained\("rlora\/evil-oid"\): downloading model\.safetensors of rlora\/evil-oid at [0-9a-f]{12}: the server names its blob "\.\.\/\.\.\/\.\.\/evil", which cannot be a file name in .*: refused$/,
    );
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('evil'))).toEqual([]);
    expect(fs.readdirSync(path.dirname(tmp)).filter((f) => f.startsWith('evil'))).toEqual([]);
    expect(fs.readdirSync(cache).sort()).toEqual(['models--rlora--evil-index', 'models--rlora--evil-oid']);
  });
});

describe('adapters by Hub id', () => {
  it('Adapter.load downloads the adapter; an adapter saved on a Hub model names the repo as its base_model_name_or_path', async () => {
    const cache = freshCache();
    const base = await Model.fromPretrained('rlora/sharded');
    const adapter = await Adapter.load(base, 'rlora/adapter');
    expect(adapter.layers.size).toBe(4);
    const viaHub = await logits(base);
    adapter.detach();
    await Adapter.load(base, adapterDir);
    expect(Array.from(await logits(base))).toEqual(Array.from(viaHub));
    expect(fs.readdirSync(path.join(cache, 'models--rlora--adapter', 'snapshots', server.commit('rlora/adapter'))).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'rlora_config.json']);
    // saved from a Hub model: PEFT's base_model_name_or_path is the repo id (and revision when not main)
    const out = path.join(tmp, 'saved-adapter');
    Adapter.of(base)!.save(out);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ base_model_name_or_path: 'rlora/sharded', revision: null });
    const v2 = await Model.fromPretrained('rlora/sharded', { revision: 'v2' });
    Adapter.attach(v2, { method: 'lora', rank: 2, targetModules: ['q_proj'] }).save(out);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ base_model_name_or_path: 'rlora/sharded', revision: 'v2' });
  });
});

describe('the progress line', () => {
  it('on a terminal: one line redrawn with the bytes, the total and the rate; elsewhere a line per file; HF_HUB_DISABLE_PROGRESS_BARS=1: nothing', () => {
    expect([formatSize(390), formatSize(10_831_712), formatSize(2_500_000_000), formatRate(3_100_000, 1), formatRate(5, 0), formatRate(0, 2)]).toEqual(['390 B', '10.8 MB', '2.50 GB', '3.10 MB/s', '-', '-']);
    const writes = (tty: boolean): string[] => {
      const out: string[] = [];
      const p = new DownloadProgress({ write: (s: string) => out.push(s), isTTY: tty, columns: 80 });
      p.start('model.safetensors', 10_000_000, 2_000_000);
      p.add(3_000_000);
      p.end();
      return out;
    };
    delete process.env.HF_HUB_DISABLE_PROGRESS_BARS;
    try {
      const tty = writes(true);
      // redrawn in place: carriage return and erase line, a bar of 19 columns (80 - 60 - 1)
      expect(tty[0]).toBe('\r\x1b[Kmodel.safetensors |====---------------| 2.00 MB / 10.0 MB | -');
      expect(tty[tty.length - 1]).toMatch(/^\r\x1b\[Kmodel\.safetensors: 10\.0 MB in \d+\.\d s \((.+\/s|-), resumed at 2\.00 MB\)\n$/);
      const log = writes(false);
      expect(log).toEqual([expect.stringMatching(/^model\.safetensors: 10\.0 MB in \d+\.\d s \((.+\/s|-), resumed at 2\.00 MB\)\n$/)]);
      process.env.HF_HUB_DISABLE_PROGRESS_BARS = '1';
      expect(writes(true)).toEqual([]);
    } finally {
      process.env.HF_HUB_DISABLE_PROGRESS_BARS = '1';
    }
  });
});
