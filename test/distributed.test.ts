// Data parallelism on c10d (Gloo): processes started here as torchrun would (MASTER_ADDR,
// MASTER_PORT, WORLD_SIZE, RANK), each running test/helpers/dp-child.ts. Two processes with batch 4
// must train the adapter one process trains with batch 8; evaluations split over the ranks must
// equal one process's; faults end every rank with an error naming what happened.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';

import { ByteTokenizer, distributed, loadSafetensors, Model, Trainer } from '../lib';
import { resolveOptions } from '../lib/distributed';
import { tempFolder } from './helpers/tiny-model';

const tmp = tempFolder('rlora-dp-');
const CHILD = path.join(__dirname, 'helpers', 'dp-child.ts');
const available = distributed.isAvailable();
const itDp = available ? it : it.skip;

interface ChildResult {
  code: number | null;
  stderr: string;
}
interface Out {
  state: Record<string, number[]>;
  losses: number[];
  tokens: number[];
  evals: { step: number; tasks: Record<string, { loss: number; accuracy: number; count: number }> }[];
  worldSize: number;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function runChild(args: object, env: Record<string, string>): Promise<ChildResult> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const k of ['WORLD_SIZE', 'RANK', 'MASTER_ADDR', 'MASTER_PORT']) if (!(k in env)) delete childEnv[k];
    const c = spawn(process.execPath, ['-r', 'tsx/cjs', CHILD, JSON.stringify(args)], { env: childEnv, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('exit', (code) => resolve({ code, stderr }));
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
    // the final evaluation, split over 2 ranks and gathered: the one process's numbers
    expect(b.evals).toHaveLength(1);
    for (const [task, t] of Object.entries(a.evals[0].tasks)) {
      expect(b.evals[0].tasks[task].count).toBe(t.count);
      expect(b.evals[0].tasks[task].accuracy).toBe(t.accuracy);
      expect(b.evals[0].tasks[task].loss).toBeCloseTo(t.loss, 4);
    }
  });

  itDp('with dropout, ranks draw different masks (the result differs from one process), reproducibly', async () => {
    const one = path.join(tmp, 'd1.json'), twoA = path.join(tmp, 'd2a.json'), twoB = path.join(tmp, 'd2b.json');
    expect((await runChild({ batchSize: 8, steps: 6, out: one, dropout: 0.3 }, {})).code).toBe(0);
    expect((await runWorld(2, () => ({ batchSize: 4, steps: 6, out: twoA, dropout: 0.3 }))).map((r) => r.code)).toEqual([0, 0]);
    expect((await runWorld(2, () => ({ batchSize: 4, steps: 6, out: twoB, dropout: 0.3 }))).map((r) => r.code)).toEqual([0, 0]);
    expect(maxRelDiff(read(twoA).state, read(twoB).state)).toBe(0);
    expect(maxRelDiff(read(twoA).state, read(one).state)).toBeGreaterThan(1e-4);
  });

  itDp('refuses ranks with different configurations, naming the rank', async () => {
    const out = path.join(tmp, 'bad.json');
    const r = await runWorld(2, (rank) => ({ batchSize: 4, steps: 3, out, lr: rank === 1 ? 5e-3 : 1e-2, timeoutMs: 20_000 }));
    for (const x of r) {
      expect(x.code).toBe(1);
      expect(x.stderr).toContain('data parallel: rank 1 of 2 has another model config, adapter, trainer options, training set or step than rank 0');
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
    expect(resolveOptions({}, { WORLD_SIZE: '4', RANK: '3', MASTER_ADDR: 'node0', MASTER_PORT: '1234' })).toEqual({ backend: 'gloo', timeoutMs: 600_000, masterAddr: 'node0', masterPort: 1234, rank: 3, worldSize: 4 });
    expect(resolveOptions({}, {})).toEqual({ backend: 'gloo', timeoutMs: 600_000, masterAddr: '127.0.0.1', masterPort: 29500, rank: 0, worldSize: 1 });
    expect(resolveOptions({ timeoutMs: 5, rank: 1, worldSize: 2 }, { RANK: '0', WORLD_SIZE: '9' })).toMatchObject({ timeoutMs: 5, rank: 1, worldSize: 2 });
    expect(() => resolveOptions({}, { WORLD_SIZE: '2' })).toThrow('distributed: WORLD_SIZE is 2 but RANK is not set (each process needs its rank, 0 to 1)');
    expect(() => resolveOptions({}, { WORLD_SIZE: 'two' })).toThrow('environment variable WORLD_SIZE must be an integer >= 1, got "two"');
    expect(() => resolveOptions({}, { WORLD_SIZE: '2', RANK: '2' })).toThrow('distributed: RANK 2 is not below WORLD_SIZE 2');
    expect(() => resolveOptions({}, { MASTER_PORT: '70000' })).toThrow('environment variable MASTER_PORT must be at most 65535, got 70000');
    expect(() => resolveOptions({ backend: 'mpi' as never })).toThrow("distributed: backend must be 'gloo' or 'nccl', got 'mpi'");
    expect(() => resolveOptions({ timeout: 5 } as never)).toThrow('distributed: unknown option "timeout"; known: backend, timeoutMs, masterAddr, masterPort, rank, worldSize');
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
    expect(() => new Trainer(model, adapter, { distributed: 'yes' as never })).toThrow("distributed must be 'auto', false or an object {backend?, timeoutMs?}, got 'yes'");
    expect(() => new Trainer(model, adapter, { distributed: { timeoutMs: 0 } })).toThrow('distributed: timeoutMs must be an integer from 1 to');
    expect(() => new Trainer(model, adapter, { distributed: { backend: 'gloo', timeoutMs: 1000 } })).not.toThrow();
  });

  // rlora train --nproc-per-node 2: the launcher starts two workers (torchrun's variables set), Ctrl-C
  // stops both at the same step with one checkpoint; resuming finishes the run; the adapter is the
  // one a single process trains with the global batch.
  itDp('rlora train --nproc-per-node 2: prefixed output, Ctrl-C with one checkpoint, resume, the single-process adapter', async () => {
    const dir = path.join(tmp, 'cli');
    fs.mkdirSync(dir, { recursive: true });
    const tok = new ByteTokenizer();
    Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 1 }).save(path.join(dir, 'model'));
    const rows = Array.from({ length: 16 }, (_, i) => JSON.stringify({ task: i % 2 ? 'a' : 'b', prompt: `w${i}:`, response: String(i * 3) })).join('\n') + '\n';
    fs.writeFileSync(path.join(dir, 'train.jsonl'), rows);
    const run = (name: string, batchSize: number): string => {
      const f = path.join(dir, `${name}.json`);
      fs.writeFileSync(f, JSON.stringify({
        model: 'model', tokenizer: 'byte', data: { train: 'train.jsonl', maxLength: 16 },
        adapter: { method: 'rlora', rank: 2, heads: 2, dropout: 0, targetModules: ['q_proj', 'up_proj'], seed: 1 },
        trainer: { batchSize, learningRate: 1e-2, schedule: 'constant', warmupSteps: 0, maxSteps: 400, keepCheckpoints: 1, progress: false },
        outputDir: `out-${name}`,
      }));
      return f;
    };
    const cli = (args: string[]) => {
      const env: NodeJS.ProcessEnv = { ...process.env };
      for (const k of ['WORLD_SIZE', 'RANK', 'MASTER_ADDR', 'MASTER_PORT']) delete env[k];
      const c = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '', stderr = '';
      c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => c.on('exit', (code) => resolve({ code, stdout, stderr })));
      return { c, done };
    };
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
    const a = loadSafetensors(path.join(dir, 'out-dp', 'adapter', 'adapter_model.safetensors'));
    const b = loadSafetensors(path.join(dir, 'out-one', 'adapter', 'adapter_model.safetensors'));
    const toArrays = (x: typeof a): Record<string, number[]> => Object.fromEntries(Object.entries(x).map(([k, t]) => [k, Array.from(t.data() as Float32Array)]));
    expect(maxRelDiff(toArrays(a), toArrays(b))).toBeLessThan(1e-5);
  });
});
