// Data parallelism on c10d (Gloo): processes started here as torchrun would (MASTER_ADDR,
// MASTER_PORT, WORLD_SIZE, RANK), each running test/helpers/dp-child.ts. Two processes with batch 4
// must train the adapter one process trains with batch 8; evaluations split over the ranks must
// equal one process's; faults end every rank with an error naming what happened.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';

import { Adapter, ByteTokenizer, distributed, loadSafetensors, Model, Trainer } from '../lib';
import { resolveOptions, storeOptions } from '../lib/distributed';
import { native } from '../lib/native';
import { maxAbs, maxAbsDiff } from './helpers/math';
import { freePort } from './helpers/ports';
import { PYTHON, requireTorchPython } from './helpers/python';
import { tempFolder } from './helpers/tiny-model';

const tmp = tempFolder('rlora-dp-');
const CHILD = path.join(__dirname, 'helpers', 'dp-child.ts');
const available = distributed.isAvailable();
const itDp = available ? it : it.skip;

interface ChildResult {
  code: number | null;
  stderr: string;
  /** The signal that ended the child (absent when it exited). */
  signal?: NodeJS.Signals;
}
interface Out {
  state: Record<string, number[]>;
  losses: number[];
  stepNumbers: number[];
  tokens: number[];
  evals: { step: number; tasks: Record<string, { loss: number; accuracy: number; count: number }> }[];
  worldSize: number;
  typedSums: { f32: (string | number)[]; f64: (string | number)[] };
  /** The last step's gradient exchange (native distLastReduce). */
  reduce: { buckets: number; startedInBackward: number; fallback: boolean; waitMs: number };
}

function runChild(args: object, env: Record<string, string>): Promise<ChildResult> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: '1', ...env };
    for (const k of ['WORLD_SIZE', 'RANK', 'MASTER_ADDR', 'MASTER_PORT', 'USE_LIBUV', 'TORCHELASTIC_USE_AGENT_STORE', 'TORCHELASTIC_RESTART_COUNT']) if (!(k in env)) delete childEnv[k];
    const c = spawn(process.execPath, ['-r', 'tsx/cjs', CHILD, JSON.stringify(args)], { env: childEnv, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('exit', (code, signal) => resolve(signal ? { code, stderr, signal } : { code, stderr }));
  });
}

/** Runs `world` ranks of the child (per-rank arguments allowed) on a fresh port. */
async function runWorld(world: number, args: (rank: number) => object): Promise<ChildResult[]> {
  const port = await freePort();
  return Promise.all(
    Array.from({ length: world }, (_, r) => runChild(args(r), { WORLD_SIZE: String(world), RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) })),
  );
}

const read = (f: string): Out => JSON.parse(fs.readFileSync(f, 'utf8')) as Out;

function maxRelDiff(a: Record<string, number[]>, b: Record<string, number[]>): number {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  let worst = 0;
  for (const k of Object.keys(a)) {
    const scale = Math.max(...b[k].map(Math.abs));
    a[k].forEach((v, i) => (worst = Math.max(worst, Math.abs(v - b[k][i]) / scale)));
  }
  return worst;
}

/** `rlora train ...` (lib/cli.ts) in a child without torchrun's variables; its output collected. */
function cli(args: string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['WORLD_SIZE', 'RANK', 'MASTER_ADDR', 'MASTER_PORT']) delete env[k];
  const c = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => c.on('exit', (code) => resolve({ code, stdout, stderr })));
  return { c, done };
}

/**
 * A folder for the CLI tests: a tiny byte-level model in model/, 16 rows in train.jsonl, and a
 * function writing run.json files (`<name>.json`, outputDir `out-<name>`) with a batch size.
 */
function cliFolder(dir: string, maxSteps: number): (name: string, batchSize: number) => string {
  fs.mkdirSync(dir, { recursive: true });
  const tok = new ByteTokenizer();
  Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 1 }).save(path.join(dir, 'model'));
  const rows = Array.from({ length: 16 }, (_, i) => JSON.stringify({ task: i % 2 ? 'a' : 'b', prompt: `w${i}:`, response: String(i * 3) })).join('\n') + '\n';
  fs.writeFileSync(path.join(dir, 'train.jsonl'), rows);
  return (name, batchSize) => {
    const f = path.join(dir, `${name}.json`);
    fs.writeFileSync(f, JSON.stringify({
      model: 'model', tokenizer: 'byte', data: { train: 'train.jsonl', maxLength: 16 },
      adapter: { method: 'rlora', rank: 2, heads: 2, dropout: 0, targetModules: ['q_proj', 'up_proj'], seed: 1 },
      trainer: { batchSize, learningRate: 1e-2, schedule: 'constant', warmupSteps: 0, maxSteps, keepCheckpoints: 1, progress: false },
      outputDir: `out-${name}`,
    }));
    return f;
  };
}

/** A saved adapter's tensors as arrays. */
function adapterArrays(dir: string): Record<string, number[]> {
  return Object.fromEntries(Object.entries(loadSafetensors(path.join(dir, 'adapter_model.safetensors'))).map(([k, t]) => [k, Array.from(t.data() as Float32Array)]));
}

describe('data parallel (gloo)', () => {
  jest.setTimeout(120_000);

  itDp('two processes with batch 4 train the adapter one process trains with batch 8 (20 steps, dropout 0); evaluations split over the ranks are the same', async () => {
    const one = path.join(tmp, 'one.json'), two = path.join(tmp, 'two.json');
    const single = await runChild({ batchSize: 8, steps: 20, out: one, evaluate: true }, {});
    expect(single).toEqual({ code: 0, stderr: '' });
    const ranks = await runWorld(2, () => ({ batchSize: 4, steps: 20, out: two, evaluate: true }));
    expect(ranks.map((r) => r.code)).toEqual([0, 0]);
    expect(ranks[0].stderr).toContain('data parallel over 2 processes (gloo): global batch 4 x 1 accumulated x 2 = 8 rows per step');
    const a = read(one), b = read(two);
    expect(b.worldSize).toBe(2);
    expect(a.worldSize).toBe(1);
    expect(maxRelDiff(b.state, a.state)).toBeLessThan(1e-5);
    // the adapter moved: the comparison is not of two untouched adapters
    expect(a.losses[19]).toBeLessThan(a.losses[0]);
    b.losses.forEach((l, i) => expect(Math.abs(l - a.losses[i])).toBeLessThan(1e-5 * Math.abs(a.losses[i])));
    expect(b.tokens).toEqual(a.tokens); // tokens of the global batch, summed over the ranks
    // allreduceSum of typed arrays: summed in their own precision, the same kind of array back
    expect(a.typedSums).toEqual({ f32: ['Float32Array', 1, 0.25, 2 ** -20], f64: ['Float64Array', 0.5] });
    expect(b.typedSums).toEqual({ f32: ['Float32Array', 3, 0.5, 2 ** -19], f64: ['Float64Array', 2] });
    // the final evaluation, split over 2 ranks and gathered: the one process's numbers
    expect(b.evals).toHaveLength(1);
    for (const [task, t] of Object.entries(a.evals[0].tasks)) {
      expect(b.evals[0].tasks[task].count).toBe(t.count);
      expect(b.evals[0].tasks[task].accuracy).toBe(t.accuracy);
      expect(b.evals[0].tasks[task].loss).toBeCloseTo(t.loss, 4);
    }
  });

  itDp('packed: two processes, each packing its slice, train what one process trains with padded batches twice the size', async () => {
    const one = path.join(tmp, 'packed-one.json'), two = path.join(tmp, 'packed-two.json');
    expect(await runChild({ batchSize: 8, steps: 6, out: one, evaluate: true }, {})).toEqual({ code: 0, stderr: '' });
    const ranks = await runWorld(2, () => ({ batchSize: 4, steps: 6, out: two, evaluate: true, packing: true }));
    expect(ranks.map((r) => r.code)).toEqual([0, 0]);
    const a = read(one), b = read(two);
    expect(maxRelDiff(b.state, a.state)).toBeLessThan(1e-5);
    expect(a.losses[5]).toBeLessThan(a.losses[0]);
    b.losses.forEach((l, i) => expect(Math.abs(l - a.losses[i])).toBeLessThan(1e-5 * Math.abs(a.losses[i])));
    expect(b.tokens).toEqual(a.tokens);
    for (const [task, t] of Object.entries(a.evals[0].tasks)) expect(b.evals[0].tasks[task].loss).toBeCloseTo(t.loss, 5);
  });

  // torchrun 2.x hosts the store in its agent and tells the workers (TORCHELASTIC_USE_AGENT_STORE):
  // rank 0 must connect to it as a client (hosting its own on MASTER_PORT would fail: the port is
  // the agent's), and keys live under /worker/attempt_<TORCHELASTIC_RESTART_COUNT>.
  itDp('with the agent\'s store (torchrun 2.x), two processes still train what one trains with twice the batch', async () => {
    requireTorchPython();
    const port = await freePort();
    const host = spawn(PYTHON, [path.join(__dirname, 'helpers', 'store-host.py'), String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      let hostErr = '';
      host.stderr.on('data', (d: Buffer) => (hostErr += d.toString()));
      await new Promise<void>((resolve, reject) => {
        host.stdout.once('data', () => resolve());
        host.once('exit', (code) => reject(new Error(`store host exited with ${code}: ${hostErr}`)));
      });
      const one = path.join(tmp, 'agent-one.json'), two = path.join(tmp, 'agent-two.json');
      expect(await runChild({ batchSize: 8, steps: 5, out: one }, {})).toEqual({ code: 0, stderr: '' });
      const env = (r: number) => ({ WORLD_SIZE: '2', RANK: String(r), LOCAL_RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TORCHELASTIC_USE_AGENT_STORE: 'True', TORCHELASTIC_RESTART_COUNT: '0' });
      const ranks = await Promise.all([0, 1].map((r) => runChild({ batchSize: 4, steps: 5, out: two }, env(r))));
      expect(ranks.map((r) => [r.code, r.stderr.replace(/^rlora: data parallel.*\n/m, '')])).toEqual([[0, ''], [0, '']]);
      const a = read(one), b = read(two);
      expect(b.worldSize).toBe(2);
      expect(maxRelDiff(b.state, a.state)).toBeLessThan(1e-5);
      expect(a.losses[4]).toBeLessThan(a.losses[0]);
    } finally {
      host.stdin.end();
      host.kill();
    }
  });

  it('reads USE_LIBUV and torchrun\'s agent-store variables as torch does', () => {
    expect(storeOptions({})).toEqual({ useLibuv: true, agentStore: false, restartCount: 0 });
    expect(storeOptions({ USE_LIBUV: '0', TORCHELASTIC_USE_AGENT_STORE: 'True', TORCHELASTIC_RESTART_COUNT: '3' })).toEqual({ useLibuv: false, agentStore: true, restartCount: 3 });
    expect(storeOptions({ TORCHELASTIC_USE_AGENT_STORE: 'False' }).agentStore).toBe(false);
    expect(() => storeOptions({ TORCHELASTIC_RESTART_COUNT: 'x' })).toThrow(/TORCHELASTIC_RESTART_COUNT must be an integer >= 0, got "x"/);
  });

  // USE_LIBUV=0 makes the store without libuv; unset, rlora asks for libuv and falls back where the
  // libtorch has none (Debian's 2.6, whose own torchrun fails there): both start a group.
  itDp('starts a group with USE_LIBUV=0 and with it unset', async () => {
    for (const useLibuv of ['0', undefined]) {
      const port = await freePort();
      const env = (r: number) => ({ WORLD_SIZE: '2', RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), ...(useLibuv ? { USE_LIBUV: useLibuv } : {}) });
      const out = path.join(tmp, `libuv-${useLibuv ?? 'unset'}.json`);
      const ranks = await Promise.all([0, 1].map((r) => runChild({ batchSize: 2, steps: 1, out }, env(r))));
      expect(ranks.map((r) => r.code)).toEqual([0, 0]);
    }
  });

  // The sampler draws one stream of global micro-batches (batchSize x worldSize rows each) and
  // each rank takes its slice: 2 processes x batch 2 x 2 accumulated see, per step, the two
  // micro-batches of 4 rows that one process with batch 4 x 2 accumulated sees.
  itDp('two processes with batch 2 and 2 accumulated train the adapter one process trains with batch 4 and 2 accumulated (12 steps, dropout 0)', async () => {
    const one = path.join(tmp, 'acc1.json'), two = path.join(tmp, 'acc2.json'), eight = path.join(tmp, 'acc8.json'), four = path.join(tmp, 'acc4.json');
    // one process: batch 4 x 2 accumulated; batch 8; batch 4 alone
    const singles = await Promise.all([
      runChild({ batchSize: 4, gradientAccumulation: 2, steps: 12, out: one }, {}),
      runChild({ batchSize: 8, steps: 12, out: eight }, {}),
      runChild({ batchSize: 4, steps: 12, out: four }, {}),
    ]);
    expect(singles).toEqual([{ code: 0, stderr: '' }, { code: 0, stderr: '' }, { code: 0, stderr: '' }]);
    const ranks = await runWorld(2, () => ({ batchSize: 2, gradientAccumulation: 2, steps: 12, out: two }));
    expect(ranks.map((r) => r.code)).toEqual([0, 0]);
    expect(ranks[0].stderr).toBe('rlora: data parallel over 2 processes (gloo): global batch 2 x 2 accumulated x 2 = 8 rows per step\n');
    const a = read(one), b = read(two);
    expect([a.worldSize, b.worldSize]).toEqual([1, 2]);
    expect(b.stepNumbers).toEqual(a.stepNumbers);
    expect(a.stepNumbers).toHaveLength(12);
    expect(a.losses[11]).toBeLessThan(a.losses[0]); // the adapter moved
    expect(maxRelDiff(b.state, a.state)).toBeLessThan(1e-5);
    b.losses.forEach((l, i) => expect(Math.abs(l - a.losses[i])).toBeLessThan(1e-5 * Math.abs(a.losses[i])));
    expect(b.tokens).toEqual(a.tokens); // both micro-batches of every rank, summed over the ranks
    // the loss is normalised over all of a step's micro-batches: one batch of 8 is the same step
    expect(maxRelDiff(b.state, read(eight).state)).toBeLessThan(1e-5);
    // and accumulation is not ignored: one process with batch 4 alone (half the rows) trains another adapter
    expect(maxRelDiff(read(four).state, a.state)).toBeGreaterThan(1e-2);
  });

  itDp('with dropout, ranks draw different masks (the result differs from one process), reproducibly', async () => {
    const one = path.join(tmp, 'd1.json'), twoA = path.join(tmp, 'd2a.json'), twoB = path.join(tmp, 'd2b.json');
    expect((await runChild({ batchSize: 8, steps: 6, out: one, dropout: 0.3 }, {})).code).toBe(0);
    expect((await runWorld(2, () => ({ batchSize: 4, steps: 6, out: twoA, dropout: 0.3 }))).map((r) => r.code)).toEqual([0, 0]);
    expect((await runWorld(2, () => ({ batchSize: 4, steps: 6, out: twoB, dropout: 0.3 }))).map((r) => r.code)).toEqual([0, 0]);
    expect(maxRelDiff(read(twoA).state, read(twoB).state)).toBe(0);
    expect(maxRelDiff(read(twoA).state, read(one).state)).toBeGreaterThan(1e-4);
  });

  // Issue 33 item 14: job B's rank 1 joined job A (and exited 0); A's own rank 1 then hung
  itDp('two jobs on one MASTER_PORT: the other job\'s rank is refused and never counted; this job trains', async () => {
    const port = String(await freePort());
    const env = (r: number) => ({ WORLD_SIZE: '2', RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: port });
    const a = path.join(tmp, 'job-a.json'), b = path.join(tmp, 'job-b.json');
    const a0 = runChild({ batchSize: 4, steps: 3, out: a, timeoutMs: 30_000 }, env(0));
    await new Promise((r) => setTimeout(r, 1500)); // A's rank 0 hosts the store
    const b1 = await runChild({ batchSize: 4, steps: 3, out: b, timeoutMs: 30_000, otherData: true }, env(1));
    expect(b1.code).toBe(1);
    expect(b1.stderr).toContain('data parallel over 2 processes: rank 1 has other training data than rank 0 (or a process of another job on this MASTER_PORT: give each job its own port)');
    const a1 = await runChild({ batchSize: 4, steps: 3, out: a, timeoutMs: 30_000 }, env(1));
    expect([a1.code, (await a0).code]).toEqual([0, 0]);
    expect(read(a).worldSize).toBe(2);
    expect(fs.existsSync(b)).toBe(false);
  });

  itDp('refuses ranks with different configurations, naming the rank', async () => {
    const out = path.join(tmp, 'bad.json');
    // rank 1 refuses at the rendezvous; rank 0 names it when its rank 1 never comes (timeoutMs)
    const r = await runWorld(2, (rank) => ({ batchSize: 4, steps: 3, out, lr: rank === 1 ? 5e-3 : 1e-2, timeoutMs: 5_000 }));
    for (const x of r) {
      expect(x.code).toBe(1);
      expect(x.stderr).toContain('data parallel over 2 processes: rank 1 has other model config, adapter, trainer options, training set size or step than rank 0');
    }
    // other modules of the same shapes (k_proj for v_proj): their gradients were summed together
    const r3 = await runWorld(2, (rank) => ({ batchSize: 4, steps: 3, out, timeoutMs: 5_000, ...(rank === 1 ? { targets: ['q_proj', 'k_proj', 'up_proj'] } : {}) }));
    for (const x of r3) {
      expect(x.code).toBe(1);
      expect(x.stderr).toContain('data parallel over 2 processes: rank 1 has other model config, adapter, trainer options, training set size or step than rank 0');
    }
    // the same sizes with other contents: data of the same shape, base weights of another seed
    for (const [args, what] of [[{ otherData: true }, 'training data'], [{ modelSeed: 5 }, 'base weights']] as const) {
      const r2 = await runWorld(2, (rank) => ({ batchSize: 4, steps: 3, out, timeoutMs: 5_000, ...(rank === 1 ? args : {}) }));
      for (const x of r2) {
        expect(x.code).toBe(1);
        expect(x.stderr).toContain(`data parallel over 2 processes: rank 1 has other ${what} than rank 0`);
      }
    }
  });

  itDp('when a rank dies, the other stops with an error naming itself and the operation (never hangs)', async () => {
    const out = path.join(tmp, 'dead.json');
    const t0 = Date.now();
    const r = await runWorld(2, () => ({ batchSize: 4, steps: 50, out, dieAfter: 3, timeoutMs: 5000 }));
    expect(r[1].code).toBe(3);
    expect(r[0].code).toBe(1);
    expect(r[0].stderr).toMatch(/distributed \w+ failed on rank 0 of 2 \(gloo, timeout 5000 ms\): /);
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(fs.existsSync(out)).toBe(false);
  });

  // SIGKILL: no exit handler runs, the sockets just close. The survivor must say so within
  // seconds, and what is on disk must be usable: the newest checkpoint folder is complete (written
  // to a hidden folder and renamed) and trains on in one process. Rank 1 dies, or rank 0 (the
  // writer, and the host of the rendezvous store).
  itDp.each([1, 0])('rank %i killed by SIGKILL mid-run: the other stops within seconds naming itself and the operation; the newest checkpoint resumes in one process', async (dead) => {
    const survivor = 1 - dead;
    const out = path.join(tmp, `killed${dead}`), result = path.join(tmp, `killed${dead}.json`);
    const t0 = Date.now();
    const r = await runWorld(2, () => ({ batchSize: 2, steps: 50, out: result, outputDir: out, saveEvery: 2, dieAfter: 5, dieRank: dead, dieBy: 'SIGKILL', timeoutMs: 5000 }));
    const seconds = (Date.now() - t0) / 1000;
    expect(r[dead]).toMatchObject({ code: null, signal: 'SIGKILL' });
    expect(r[survivor].code).toBe(1);
    const failure = new RegExp(`^distributed \\w+ failed on rank ${survivor} of 2 \\(gloo, timeout 5000 ms\\): .+\\n$`, 'm');
    expect(r[survivor].stderr).toMatch(failure);
    // nothing else on the survivor's stderr than rank 0's banner and the error
    expect(r[survivor].stderr.split('\n').filter((l) => l && !l.startsWith('rlora: data parallel over 2 processes')).length).toBe(1);
    expect(seconds).toBeLessThan(20);
    expect(fs.existsSync(result)).toBe(false);
    // checkpoints at steps 2 and 4 (the rank died after step 5), nothing half-written beside them
    const entries = fs.readdirSync(out).sort();
    expect(entries.filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-2', 'checkpoint-4']);
    expect(entries.filter((f) => f.startsWith('.'))).toEqual([]);
    const ckpt = path.join(out, 'checkpoint-4');
    const state = JSON.parse(fs.readFileSync(path.join(ckpt, 'trainer_state.json'), 'utf8')) as { step: number };
    expect(state.step).toBe(4);
    const rngKeys = Object.keys(loadSafetensors(path.join(ckpt, 'rng.safetensors')));
    expect(rngKeys.filter((k) => k.startsWith('rank1/')).length).toBe(rngKeys.length / 2);
    // it goes on in one process, at step 4, to the end
    const resumed = path.join(tmp, `killed${dead}-resumed.json`);
    // (the checkpoint's distributed option is an object, {timeoutMs}; one process makes no group
    // with it either, so a MASTER_PORT held by another job does not matter)
    const held = net.createServer();
    await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve));
    const one = await runChild({ batchSize: 2, steps: 8, out: resumed, resumeFrom: ckpt, outputDir: path.join(tmp, `killed${dead}-1`) }, { MASTER_PORT: String((held.address() as net.AddressInfo).port) });
    held.close();
    expect(one.code).toBe(0);
    expect(one.stderr).toContain('rlora: the checkpoint was trained with a global batch of 4 rows (2 process(es)); this run has 2 (1 process(es)): continuing at step 4');
    const b = read(resumed);
    expect(b.stepNumbers).toEqual([5, 6, 7, 8]);
    expect(b.losses.every((l) => Number.isFinite(l) && l > 0)).toBe(true);
  }, 30_000);

  // torch's own store server listens on every address; on libtorch >= 2.2 rank 0 binds the socket
  // itself, to the address MASTER_ADDR resolves to, and hands it to the store (1.13 cannot take one:
  // there it listens on every address, as the README says).
  itDp('rank 0 listens on MASTER_ADDR alone (libtorch >= 2.2), not on every address', async () => {
    const port = await freePort();
    const env = { WORLD_SIZE: '2', RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) };
    const childEnv: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: '1', ...env };
    const rank0 = spawn(process.execPath, ['-r', 'tsx/cjs', CHILD, JSON.stringify({ batchSize: 2, steps: 1, out: path.join(tmp, 'listen.json'), timeoutMs: 60_000 })], { env: childEnv, stdio: 'ignore' });
    try {
      const hex = port.toString(16).toUpperCase().padStart(4, '0');
      const listening = (): string[] =>
        ['/proc/net/tcp', '/proc/net/tcp6'].flatMap((f) =>
          fs.readFileSync(f, 'utf8').split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((c) => c.length > 3 && c[3] === '0A' && c[1].endsWith(`:${hex}`)).map((c) => c[1].split(':')[0]),
        );
      let addrs: string[] = [];
      for (let i = 0; i < 200 && addrs.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        addrs = listening();
      }
      const [major, minor] = native.buildInfo.torchVersion.split('.').map(Number);
      if (major > 2 || (major === 2 && minor >= 2)) expect(addrs).toEqual(['0100007F']); // 127.0.0.1 only
      else expect(addrs.every((a) => /^0+$/.test(a))).toBe(true); // 1.13: every address (documented)
    } finally {
      rank0.kill('SIGKILL');
    }
  });

  itDp('when a rank hangs, the other stops after timeoutMs with an error naming itself', async () => {
    const port = await freePort();
    const env = (r: number) => ({ WORLD_SIZE: '2', RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
    const args = { batchSize: 4, steps: 50, out: path.join(tmp, 'hung.json'), hangAfter: 2, timeoutMs: 3000 };
    const t0 = Date.now();
    const rank1 = spawn(process.execPath, ['-r', 'tsx/cjs', CHILD, JSON.stringify(args)], { env: { ...process.env, ...env(1) }, stdio: 'ignore' });
    try {
      const r0 = await runChild(args, env(0));
      expect(r0.code).toBe(1);
      expect(r0.stderr).toMatch(/distributed \w+ failed on rank 0 of 2 \(gloo, timeout 3000 ms\): /);
      expect(Date.now() - t0).toBeLessThan(40_000);
    } finally {
      rank1.kill('SIGKILL');
    }
  });

  itDp('resuming on the same number of processes is exact, dropout included (each rank gets its own stream back)', async () => {
    const out = path.join(tmp, 'exact');
    const full = path.join(tmp, 'exact-full.json'), resumed = path.join(tmp, 'exact-resumed.json');
    expect((await runWorld(2, () => ({ batchSize: 2, steps: 6, out: full, dropout: 0.3, outputDir: out, saveEvery: 3 }))).map((x) => x.code)).toEqual([0, 0]);
    const r = await runWorld(2, () => ({ batchSize: 2, steps: 6, out: resumed, resumeFrom: path.join(out, 'checkpoint-3'), outputDir: path.join(tmp, 'exact-2') }));
    expect(r.map((x) => x.code)).toEqual([0, 0]);
    const a = read(full), b = read(resumed);
    expect(b.losses).toEqual(a.losses.slice(3));
    expect(maxRelDiff(b.state, a.state)).toBe(0);
  });

  itDp('resuming on another number of processes continues at the same step, with a note', async () => {
    const out = path.join(tmp, 'ws');
    // one process, global batch 4, a checkpoint at step 3
    expect(await runChild({ batchSize: 4, steps: 6, out: path.join(tmp, 'ws1.json'), outputDir: out, saveEvery: 3 }, {})).toEqual({ code: 0, stderr: '' });
    const ckpt = path.join(out, 'checkpoint-3');
    expect(fs.existsSync(path.join(ckpt, 'trainer_state.json'))).toBe(true);
    // two processes of 4: global batch 8
    const two = path.join(tmp, 'ws2.json');
    const r = await runWorld(2, () => ({ batchSize: 4, steps: 6, out: two, resumeFrom: ckpt, outputDir: path.join(tmp, 'ws-2') }));
    expect(r.map((x) => x.code)).toEqual([0, 0]);
    expect(r[0].stderr).toContain('rlora: the checkpoint was trained with a global batch of 4 rows (1 process(es)); this run has 8 (2 process(es)): continuing at step 3 with the data order of the new batch, from about example 8 of the run');
    expect(r[1].stderr).toBe('');
    const b = read(two);
    expect(b.losses).toHaveLength(3); // steps 4 to 6
    expect(b.tokens.every((t) => t > 0)).toBe(true);
  });

  itDp('a checkpoint of two processes resumes in one (world size 2 -> 1) at the same step, with a note', async () => {
    const out = path.join(tmp, 'ws21');
    // two processes of 4: global batch 8, a checkpoint at step 3
    const full = path.join(tmp, 'ws21-2.json');
    expect((await runWorld(2, () => ({ batchSize: 4, steps: 6, out: full, outputDir: out, saveEvery: 3 }))).map((x) => x.code)).toEqual([0, 0]);
    const ckpt = path.join(out, 'checkpoint-3');
    expect(fs.existsSync(path.join(ckpt, 'trainer_state.json'))).toBe(true);
    // one process of 4: global batch 4
    const one = path.join(tmp, 'ws21-1.json');
    const r = await runChild({ batchSize: 4, steps: 6, out: one, resumeFrom: ckpt, outputDir: path.join(tmp, 'ws21-1') }, {});
    expect(r).toEqual({
      code: 0,
      stderr: 'rlora: the checkpoint was trained with a global batch of 8 rows (2 process(es)); this run has 4 (1 process(es)): continuing at step 3 with the data order of the new batch, from about example 24 of the run (not the order an unchanged run would take)\n',
    });
    const a = read(full), b = read(one);
    expect(b.worldSize).toBe(1);
    expect(b.stepNumbers).toEqual([4, 5, 6]);
    expect(b.tokens.every((t) => t > 0)).toBe(true);
    // it goes on from the trained adapter, not a fresh one: below the first step's loss
    expect(b.losses[0]).toBeLessThan(a.losses[0]);
    expect(maxRelDiff(b.state, a.state)).toBeGreaterThan(0); // and it trained (other rows than the 2-process run)
  });

  itDp('gradients exchanged in small buckets while backward runs (accumulation 2): the adapter one process trains; buckets start before backward returns', async () => {
    const one = path.join(tmp, 'bk-one.json'), two = path.join(tmp, 'bk-two.json');
    expect(await runChild({ batchSize: 4, gradientAccumulation: 2, steps: 8, out: one }, {})).toEqual({ code: 0, stderr: '' });
    // the adapter's 24 trainable tensors (3 KB) in buckets of 1 KB (2^-10 MiB): at least 3
    const ranks = await runWorld(2, () => ({ batchSize: 2, gradientAccumulation: 2, steps: 8, out: two, bucketCapMb: 2 ** -10 }));
    expect(ranks.map((r) => r.code)).toEqual([0, 0]);
    const a = read(one), b = read(two);
    expect(maxRelDiff(b.state, a.state)).toBeLessThan(1e-5);
    b.losses.forEach((l, i) => expect(Math.abs(l - a.losses[i])).toBeLessThan(1e-5 * Math.abs(a.losses[i])));
    expect(a.losses[7]).toBeLessThan(a.losses[0]);
    expect(b.reduce.buckets).toBeGreaterThanOrEqual(3);
    expect(b.reduce.startedInBackward).toBeGreaterThanOrEqual(b.reduce.buckets - 1); // the last may wait for finish()
    expect(b.reduce.fallback).toBe(false);
  });

  itDp('a group of one: the bucketed step equals the step without a group, also when a second backward pass reaches a gradient after its bucket started; weights without a gradient keep none (AdamW skips them, as without a group)', async () => {
    const { AdamW, trainStep } = await import('../lib');
    const { TINY_BYTE_CONFIG } = await import('./helpers/tiny-model');
    const batch = (seed: number, rows = 3, len = 10) => {
      const ids = Array.from({ length: rows }, (_, b) => Array.from({ length: len }, (_, t) => 3 + ((seed * 31 + b * 7 + t * 13) % 200)));
      return { inputIds: ids, attentionMask: ids.map((r) => r.map(() => 1)), labels: ids.map((r) => r.map((x, t) => (t < 3 ? -100 : x))) };
    };
    // adapter: only the adapter trains; full: every weight of the model trains, with checkpointing and
    // the head in one-row chunks, so the final norm's gradient comes in three backward passes
    const run = async (dp: boolean, what: 'adapter' | 'full') => {
      const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
      const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj', 'up_proj'], seed: 2 });
      if (what === 'full') model.native.setHeadChunkElements(1);
      const opt = what === 'full' ? new AdamW(model, { lr: 1e-3 }) : new AdamW([...adapter.layers.values()], { lr: 1e-2 });
      const losses: number[] = [];
      for (let s = 0; s < 3; s++) losses.push((await trainStep(model, [batch(s), batch(s + 50, 2)], opt, { distributed: dp, gradientCheckpointing: what === 'full' })).loss);
      const stats = native.distLastReduce();
      const flat = what === 'full'
        ? model.native.parameterSpecs().flatMap(({ name }) => Array.from(model.native.parameter(name).data() as Float32Array))
        : Object.entries(adapter.stateDict()).sort(([x], [y]) => (x < y ? -1 : 1)).flatMap(([, t]) => Array.from(t.data() as Float32Array));
      model.dispose();
      return { losses, flat, stats };
    };
    // buckets of 256 bytes, and one all-reduce after backward
    for (const bucketCapMb of [2 ** -12, 0]) {
      await distributed.init({ worldSize: 1, rank: 0, masterPort: await freePort(), bucketCapMb });
      try {
        for (const what of ['adapter', 'full'] as const) {
          const without = await run(false, what);
          const withGroup = await run(true, what);
          expect(withGroup.losses).toEqual(without.losses);
          expect(maxAbsDiff(withGroup.flat, without.flat)).toBeLessThan(1e-7 * maxAbs(without.flat));
          if (bucketCapMb > 0) {
            expect(withGroup.stats.buckets).toBeGreaterThan(3);
            expect(withGroup.stats.fallback).toBe(what === 'full');
            if (what === 'adapter') expect(withGroup.stats.startedInBackward).toBe(withGroup.stats.buckets);
          }
        }
      } finally {
        distributed.destroy();
      }
    }
  });

  // WORLD_SIZE 2 and one process: it waited twice the timeout (the store's, then Gloo's: 11.2 s
  // for timeoutMs 5000; 1,204 s by default) and said "Socket Timeout" without naming anyone
  itDp('a rank that never comes: rank 0 stops after timeoutMs, naming it', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const r = await runChild({ batchSize: 4, steps: 1, out: path.join(tmp, 'alone.json'), timeoutMs: 3000 }, { WORLD_SIZE: '3', RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
    const seconds = (Date.now() - t0) / 1000;
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`distributed init (rank 0 of 3): ranks 1, 2 never arrived at 127.0.0.1:${port} within 3000 ms`);
    expect(seconds).toBeLessThan(3 + 5); // the timeout given, plus the process's start (not twice the timeout)
    expect(seconds).toBeGreaterThan(2.9);
  });

  itDp('a port in use: rank 0 says so', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const r = await runChild({ batchSize: 4, steps: 1, out: path.join(tmp, 'port.json'), timeoutMs: 3000 }, { WORLD_SIZE: '2', RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`MASTER_PORT ${port} is in use on 127.0.0.1`);
    } finally {
      server.close();
    }
  });

  it('reads torchrun\'s environment, and names a bad or missing variable', () => {
    expect(resolveOptions({}, { WORLD_SIZE: '4', RANK: '3', LOCAL_RANK: '1', MASTER_ADDR: 'node0', MASTER_PORT: '1234' })).toEqual({ backend: 'gloo', timeoutMs: 600_000, masterAddr: 'node0', masterPort: 1234, rank: 3, worldSize: 4, localRank: 1, bucketCapMb: 0, runId: '' });
    expect(resolveOptions({}, {})).toEqual({ backend: 'gloo', timeoutMs: 600_000, masterAddr: '127.0.0.1', masterPort: 29500, rank: 0, worldSize: 1, localRank: 0, bucketCapMb: 0, runId: '' });
    // the run's id: given, else RLORA_RUN_ID, else torchrun's TORCHELASTIC_RUN_ID
    expect([resolveOptions({ runId: 'x' }, { RLORA_RUN_ID: 'y' }).runId, resolveOptions({}, { RLORA_RUN_ID: 'y', TORCHELASTIC_RUN_ID: 'z' }).runId, resolveOptions({}, { TORCHELASTIC_RUN_ID: 'z' }).runId]).toEqual(['x', 'y', 'z']);
    expect(resolveOptions({ backend: 'nccl' }, {}).bucketCapMb).toBe(25); // DDP's bucket_cap_mb
    expect(resolveOptions({ bucketCapMb: 0.5 }, {}).bucketCapMb).toBe(0.5);
    expect(() => resolveOptions({ bucketCapMb: -1 })).toThrow('distributed: bucketCapMb must be a number from 0 to 1048576 (MiB), got -1');
    expect(resolveOptions({ localRank: 2 }, { LOCAL_RANK: '1' }).localRank).toBe(2);
    expect(() => resolveOptions({}, { LOCAL_RANK: '-1' })).toThrow('environment variable LOCAL_RANK must be an integer >= 0, got "-1"');
    expect(() => resolveOptions({ localRank: 0.5 })).toThrow('distributed: localRank must be an integer from 0 to');
    expect(resolveOptions({ timeoutMs: 5, rank: 1, worldSize: 2 }, { RANK: '0', WORLD_SIZE: '9' })).toMatchObject({ timeoutMs: 5, rank: 1, worldSize: 2 });
    expect(() => resolveOptions({}, { WORLD_SIZE: '2' })).toThrow('distributed: WORLD_SIZE is 2 but RANK is not set (each process needs its rank, 0 to 1)');
    expect(() => resolveOptions({}, { WORLD_SIZE: 'two' })).toThrow('environment variable WORLD_SIZE must be an integer >= 1, got "two"');
    expect(() => resolveOptions({}, { WORLD_SIZE: '2', RANK: '2' })).toThrow('distributed: RANK 2 is not below WORLD_SIZE 2');
    expect(() => resolveOptions({}, { MASTER_PORT: '70000' })).toThrow('environment variable MASTER_PORT must be at most 65535, got 70000');
    expect(() => resolveOptions({ backend: 'mpi' as never })).toThrow("distributed: backend must be 'gloo' or 'nccl', got 'mpi'");
    expect(() => resolveOptions({ timeout: 5 } as never)).toThrow('distributed: unknown option "timeout"; known: backend, timeoutMs, masterAddr, masterPort, rank, worldSize, localRank, bucketCapMb, runId');
  });

  itDp('backends: NCCL only where the build has it, chosen for CUDA models; a Gloo group works on the CPU', async () => {
    expect(() => distributed.isAvailable('mpi' as never)).toThrow("distributed: backend must be 'gloo' or 'nccl', got 'mpi'");
    expect(distributed.defaultBackend('cpu')).toBe('gloo');
    expect(distributed.defaultBackend('cuda:1')).toBe(distributed.isAvailable('nccl') ? 'nccl' : 'gloo');
    expect(distributed.device()).toBeUndefined();
    const port = await freePort();
    if (!distributed.isAvailable('nccl')) {
      // this CPU build: refused before any rendezvous, saying what it needs
      await expect(distributed.init({ backend: 'nccl', worldSize: 1, rank: 0, masterPort: port })).rejects.toThrow(
        'backend "nccl" is not in this build of rlora: it needs a libtorch with CUDA and NCCL, and nccl.h when it is built',
      );
      expect(distributed.isInitialized()).toBe(false);
    }
    // an explicit group of one: its collectives run on the CPU, whatever LOCAL_RANK says
    await distributed.init({ backend: 'gloo', worldSize: 1, rank: 0, masterPort: port, localRank: 3 });
    try {
      expect([distributed.backendName(), distributed.device(), distributed.rank(), distributed.worldSize()]).toEqual(['gloo', 'cpu', 0, 1]);
      expect(Array.from(await distributed.allreduceSum(new Float32Array([1.5, -2])))).toEqual([1.5, -2]);
      expect(await distributed.allgather(7)).toEqual([7]);
      await expect(distributed.init({ worldSize: 1, rank: 0, masterPort: port })).rejects.toThrow('distributed init: this process is already rank 0 of 1 (call destroy first)');
    } finally {
      distributed.destroy();
    }
    expect(distributed.isInitialized()).toBe(false);
  });

  it('one process: rank 0 of 1, collectives are identities; Trainer checks its distributed option', async () => {
    expect(distributed.isInitialized()).toBe(false);
    expect([distributed.rank(), distributed.worldSize()]).toEqual([0, 1]);
    expect(await distributed.allreduceSum([1, 2.5])).toEqual([1, 2.5]);
    expect(await distributed.gatherJson({ a: 'é' })).toEqual([{ a: 'é' }]);
    await distributed.barrier();
    const { Model, Adapter } = await import('../lib');
    const { TINY_BYTE_CONFIG } = await import('./helpers/tiny-model');
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const adapter = Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['q_proj'] });
    expect(() => new Trainer(model, adapter, { distributed: 'yes' as never })).toThrow('distributed must be "auto", false or an object, got "yes"');
    expect(() => new Trainer(model, adapter, { distributed: { timeoutMs: 0 } })).toThrow('distributed.timeoutMs must be an integer >= 1, got 0');
    expect(() => new Trainer(model, adapter, { distributed: { backend: 'gloo', timeoutMs: 1000 } })).not.toThrow();
  });

  // rlora train --nproc-per-node 2: the launcher starts two workers (torchrun's variables set), Ctrl-C
  // stops both at the same step with one checkpoint; resuming finishes the run; the adapter is the
  // one a single process trains with the global batch.
  itDp('rlora train --nproc-per-node 2: prefixed output, Ctrl-C with one checkpoint, resume, the single-process adapter', async () => {
    const dir = path.join(tmp, 'cli');
    const run = cliFolder(dir, 400);
    const dpRun = run('dp', 2), oneRun = run('one', 4);
    const log = path.join(dir, 'out-dp', 'log.jsonl');
    const port = String(await freePort());
    const first = cli(['train', '--config', dpRun, '--nproc-per-node', '2', '--master-port', port]);
    const deadline = Date.now() + 60_000;
    while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length >= 3)) {
      if (Date.now() > deadline) throw new Error('no step lines within 60 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    first.c.kill('SIGINT');
    const r1 = await first.done;
    expect(r1.code).toBe(130);
    expect(r1.stderr).toContain('[rank 0] rlora: data parallel over 2 processes (gloo): global batch 2 x 1 accumulated x 2 = 4 rows per step');
    expect(r1.stderr).not.toContain('[rank 1] model'); // rank 0 alone reports
    const m = /\[rank 0\] rlora train: interrupted at step (\d+) of 400; checkpoint written to (\S+)/.exec(r1.stderr);
    if (!m) throw new Error(r1.stderr);
    const step = Number(m[1]);
    expect(fs.readdirSync(path.join(dir, 'out-dp')).filter((f) => f.startsWith('checkpoint-'))).toEqual([`checkpoint-${step}`]);
    // the checkpoint keeps rank 1's dropout stream beside rank 0's
    const rngKeys = Object.keys(loadSafetensors(path.join(m[2], 'rng.safetensors')));
    expect(rngKeys.filter((k) => k.startsWith('rank1/')).length).toBe(rngKeys.length / 2);

    const second = cli(['train', '--config', dpRun, '--nproc-per-node', '2', '--master-port', String(await freePort()), '--resume', m[2], '--max-steps', String(step + 5)]);
    const r2 = await second.done;
    expect(r2.code).toBe(0);
    expect(r2.stdout).toContain(`[rank 0] trained ${step + 5} steps`);
    expect(r2.stdout).not.toContain('[rank 1] trained');

    const single = cli(['train', '--config', oneRun, '--max-steps', String(step + 5), '--threads', '1']);
    expect((await single.done).code).toBe(0);
    expect(maxRelDiff(adapterArrays(path.join(dir, 'out-dp', 'adapter')), adapterArrays(path.join(dir, 'out-one', 'adapter')))).toBeLessThan(1e-5);
  });

  // With few file descriptors left (EMFILE while making a worker's pipes) the launcher read the
  // stdout of a child that had none ("Cannot read properties of undefined (reading 'setEncoding')")
  // and then died of an unhandled 'error' event, leaving rank 0 alone.
  itDp('a worker that cannot be started (EMFILE) stops the launch with a message, no crash', async () => {
    const dir = path.join(tmp, 'emfile');
    const run = cliFolder(dir, 3)('dp', 2);
    const cliTs = path.join(__dirname, '..', 'lib', 'cli.ts');
    let reached = 0;
    for (let n = 24; n <= 40 && reached < 2; n++) {
      const r = spawnSync('bash', ['-c', `ulimit -n ${n}; exec "${process.execPath}" --import tsx "${cliTs}" train --config "${run}" --nproc-per-node 2 --overwrite --master-port ${await freePort()}`], { encoding: 'utf8', timeout: 60_000 });
      expect(r.stderr).not.toMatch(/TypeError|Unhandled 'error' event/);
      if (/could not start rank \d/.test(r.stderr)) {
        reached++;
        expect(r.status).toBe(1);
      }
    }
    expect(reached).toBeGreaterThan(0); // some limit made spawning fail: the path was exercised
  }, 240_000);

  // The workers were spawned detached and kept training after kill -9 (or SIGHUP) of their
  // launcher; now each asks the kernel for SIGTERM when its parent dies.
  itDp('kill -9 of the launcher ends its workers; more workers than cores is refused', async () => {
    const dir = path.join(tmp, 'orphans');
    const run = cliFolder(dir, 100000);
    const dpRun = run('dp', 2);
    const log = path.join(dir, 'out-dp', 'log.jsonl');
    const launcher = cli(['train', '--config', dpRun, '--nproc-per-node', '2', '--master-port', String(await freePort())]);
    const deadline = Date.now() + 60_000;
    while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length >= 2)) {
      if (Date.now() > deadline) throw new Error('no step lines within 60 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    const children = (pid: number): number[] =>
      fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((p) => {
        try {
          return Number(fs.readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1]) === pid;
        } catch {
          return false;
        }
      });
    // the workers (tsx may have a helper process of its own beside them)
    const workers = children(launcher.c.pid!).filter((p) => fs.readFileSync(`/proc/${p}/environ`, 'latin1').includes('RLORA_LAUNCHER_PID='));
    expect(workers).toHaveLength(2);
    launcher.c.kill('SIGKILL');
    await launcher.done;
    const alive = (p: number): boolean => {
      try {
        process.kill(p, 0);
        return !/^\S+ \(.*\) Z/.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8')); // a zombie is dead
      } catch {
        return false;
      }
    };
    const until = Date.now() + 15_000;
    while (workers.some(alive) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(workers.filter(alive)).toEqual([]);
    // more workers than the usable cores, unless asked for
    const many = cli(['train', '--config', dpRun, '--nproc-per-node', '1000']);
    const r = await many.done;
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--nproc-per-node 1000 is more than the ${os.availableParallelism()} cores this process may use: each worker needs one (add --oversubscribe to start them anyway)`);
  });

  // Two "machines" on one host: a launcher per node rank, one worker each, meeting at the master's
  // port; rank 0's node writes the adapter, which is the one a single process trains with the
  // global batch.
  itDp('rlora train --nnodes 2 --node-rank 0|1: both launchers exit 0 with the single-process adapter', async () => {
    const dir = path.join(tmp, 'nodes');
    const run = cliFolder(dir, 8);
    const dpRun = run('dp', 2), oneRun = run('one', 4);
    const port = String(await freePort());
    const node = (k: number) => cli(['train', '--config', dpRun, '--nproc-per-node', '1', '--nnodes', '2', '--node-rank', String(k), '--master-addr', '127.0.0.1', '--master-port', port, '--threads', '1']);
    const [r0, r1] = await Promise.all([node(0).done, node(1).done]);
    expect([r0.code, r1.code]).toEqual([0, 0]);
    expect(r0.stderr).toContain(`rlora: starting 1 worker process (ranks 0 to 0 of 2), master 127.0.0.1:${port}, 1 thread(s) each`);
    expect(r0.stderr).toContain('[rank 0] rlora: data parallel over 2 processes (gloo): global batch 2 x 1 accumulated x 2 = 4 rows per step');
    expect(r0.stdout).toContain('[rank 0] trained 8 steps');
    expect(r1.stdout).toBe(''); // rank 0 alone reports; rank 1's launcher says only what it started
    expect(r1.stderr).toBe(`rlora: starting 1 worker process (ranks 1 to 1 of 2), master 127.0.0.1:${port}, 1 thread(s) each\n`);

    const single = cli(['train', '--config', oneRun, '--threads', '1']);
    expect((await single.done).code).toBe(0);
    const a = adapterArrays(path.join(dir, 'out-dp', 'adapter')), b = adapterArrays(path.join(dir, 'out-one', 'adapter'));
    expect(maxRelDiff(a, b)).toBeLessThan(1e-5);
    expect(fs.readFileSync(path.join(dir, 'out-dp', 'log.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { step: number }).step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // they trained: the adapter is not the one attached before the first step
    Adapter.attach(await Model.fromPretrained(path.join(dir, 'model')), { method: 'rlora', rank: 2, heads: 2, dropout: 0, targetModules: ['q_proj', 'up_proj'], seed: 1 }).save(path.join(dir, 'untrained'));
    expect(maxRelDiff(a, adapterArrays(path.join(dir, 'untrained')))).toBeGreaterThan(1e-3);
  });
});
