// benchmarks/distributed: what data parallelism (c10d/Gloo, lib/distributed.ts) buys on one machine,
// on the training benchmark's model (benchmarks/train-shape.ts: the 21M LLaMA shape, batch 4 x 128,
// R-LoRA r 4 N 5 on gate/up/down), in tokens per second of Trainer.fit:
//   (a) one process pinned to core 0 (taskset -c 0), 1 thread, batch 4;
//   (b) two processes, data parallel (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT as torchrun sets
//       them), pinned to cores 0 and 1, 1 thread each, batch 4 each (global 8);
//   (c) one process on both cores (taskset -c 0,1), 2 threads, batch 8;
//   (d) as (b), with the gradients summed in buckets while backward runs (distributed option
//       bucketCapMb 25, DDP's: 1 MiB, then 25 MiB; native/distributed/reducer.h) instead of in one
//       all-reduce after backward (Gloo's default).
// Targets: b / a >= 1.8 (two processes scale) and b / c >= 0.9 (as fast as threads). Also the time
// of one all-reduce of as many values as the adapter's trainable parameters between the two
// processes of (b) (distributed.allreduceSum of a Float32Array, after training), and for (d) what
// the bucketed exchange left to wait for after backward returned.
// Each variant runs alone (one after the other), each process in its own taskset. A human summary
// goes to stderr, the JSON document is printed last on stdout.
// Usage: npm run bench:distributed [-- --steps 5 --allreduces 50]
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, ByteTokenizer, distributed, Model, MultiTaskDataset, setNumThreads, Trainer } from '../lib';
import { native } from '../lib/native';
import { freePort } from '../test/helpers/ports';
import { TSX } from './processes';
import { TRAIN_SHAPE } from './train-shape';

/** What a child process is told (JSON, after --child). */
interface ChildArgs {
  modelDir: string;
  dataPath: string;
  batchSize: number;
  threads: number;
  warmup: number;
  timed: number;
  /** All-reduces to time after training (data parallel only). */
  allreduces: number;
  /** The distributed option bucketCapMb (default: the backend's, 0 for Gloo). */
  bucketCapMb?: number;
}

/** What rank 0 (or the only process) prints last. */
interface ChildResult {
  times: number[];
  tokens: number[];
  trainable: number;
  worldSize: number;
  threads: number;
  cpus: string;
  allreduce?: { values: number; calls: number; msPerCall: number; oneValueMsPerCall: number; oneRankMsPerCall: number };
  /** The bucketed exchange of the timed steps: buckets, how many started during backward, ms waited after it (mean). */
  reduce?: { buckets: number; startedInBackward: number; waitMsPerStep: number };
}

const WARMUP = TRAIN_SHAPE.warmup;
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : dflt;
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`--${name} must be an integer >= 1, got ${process.argv[i + 1]}`);
  return v;
};

/** This process's allowed cores, as the kernel reports them. */
function cpusAllowed(): string {
  return /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '?';
}

/** Milliseconds per call of `f`, over `calls` calls after 5 untimed ones; ranks start together. */
async function timeCalls(calls: number, f: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 5; i++) await f();
  await distributed.barrier();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) await f();
  return Number(process.hrtime.bigint() - t0) / 1e6 / calls;
}

async function child(a: ChildArgs): Promise<void> {
  setNumThreads(a.threads);
  const examples = JSON.parse(fs.readFileSync(a.dataPath, 'utf8')) as { task: string; prompt: string; response: string }[];
  const model = await Model.fromPretrained(a.modelDir);
  const adapter = Adapter.attach(model, { method: 'rlora', ...TRAIN_SHAPE.adapter, seed: 1 });
  const data = MultiTaskDataset.fromArray(examples, { tokenizer: new ByteTokenizer(), maxLength: TRAIN_SHAPE.sequence });
  const trainer = new Trainer(model, adapter, {
    learningRate: TRAIN_SHAPE.learningRate,
    batchSize: a.batchSize,
    maxSteps: a.warmup + a.timed,
    schedule: 'constant',
    warmupSteps: 0,
    seed: 3,
    progress: false,
    distributed: a.bucketCapMb !== undefined ? { bucketCapMb: a.bucketCapMb } : 'auto', // data parallel when WORLD_SIZE > 1
  });
  const times: number[] = [], tokens: number[] = [], waits: number[] = [];
  let reduce = { buckets: 0, startedInBackward: 0 };
  let last = process.hrtime.bigint();
  await trainer.fit(data, {
    onStep: (s) => {
      const now = process.hrtime.bigint();
      if (s.step > a.warmup) {
        times.push(Number(now - last) / 1e9);
        tokens.push(s.tokens); // the global batch's tokens (summed over the ranks)
        if (distributed.worldSize() > 1 && (a.bucketCapMb ?? 0) > 0) {
          const r = native.distLastReduce();
          waits.push(r.waitMs);
          reduce = { buckets: r.buckets, startedInBackward: r.startedInBackward };
        }
      }
      last = process.hrtime.bigint();
    },
  });
  const trainable = adapter.trainableParameterCount();
  let allreduce: ChildResult['allreduce'];
  if (distributed.worldSize() > 1) {
    // as many float32 values as the gradients Trainer sums every step (one float32 bucket, as the
    // step's own all-reduce; a Float32Array is copied in one piece, not converted value by value)
    const values = Float32Array.from({ length: trainable }, (_, i) => ((i % 97) - 48) * 1e-3);
    const msPerCall = await timeCalls(a.allreduces, () => distributed.allreduceSum(values));
    const oneValueMsPerCall = await timeCalls(a.allreduces, () => distributed.allreduceSum([1]));
    // the same call in a group of one (rank 0 alone, on its core): what is not the exchange between
    // the processes (the copies in and out, and Gloo's local work)
    const [rank, world] = [distributed.rank(), distributed.worldSize()];
    distributed.destroy();
    let oneRankMsPerCall = NaN;
    if (rank === 0) {
      await distributed.init({ worldSize: 1, rank: 0, masterAddr: '127.0.0.1', masterPort: await freePort() });
      oneRankMsPerCall = await timeCalls(a.allreduces, () => distributed.allreduceSum(values));
      distributed.destroy();
    }
    allreduce = { values: trainable, calls: a.allreduces, msPerCall, oneValueMsPerCall, oneRankMsPerCall };
    const rd = waits.length ? { ...reduce, waitMsPerStep: waits.reduce((x, y) => x + y, 0) / waits.length } : undefined;
    if (rank === 0) console.log(JSON.stringify({ times, tokens, trainable, worldSize: world, threads: a.threads, cpus: cpusAllowed(), allreduce, reduce: rd } satisfies ChildResult));
    return;
  }
  const result: ChildResult = { times, tokens, trainable, worldSize: distributed.worldSize(), threads: a.threads, cpus: cpusAllowed() };
  console.log(JSON.stringify(result));
}

/** Runs a child under `taskset -c cpus`; resolves with its stdout, rejects naming it on failure. */
function runPinned(cpus: string, args: ChildArgs, env: Record<string, string>): Promise<string> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(args.threads), OMP_NUM_THREADS: String(args.threads), ...env };
  for (const k of ['WORLD_SIZE', 'RANK', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK']) if (!(k in env)) delete childEnv[k];
  return new Promise((resolve, reject) => {
    const c = spawn('taskset', ['-c', cpus, TSX, __filename, '--child', JSON.stringify(args)], { env: childEnv, cwd: path.resolve(__dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('exit', (code, signal) => (code === 0 ? resolve(out) : reject(new Error(`taskset -c ${cpus} (${JSON.stringify(env)}) exited with ${signal ?? `code ${code}`}:\n${err}`))));
  });
}

const lastJson = (out: string): ChildResult => JSON.parse(out.trim().split('\n').pop()!) as ChildResult;

/** Summary of a variant: tokens per second over the timed steps. */
function summary(r: ChildResult, v: { cores: string; processes: number; threadsPerProcess: number; batchPerProcess: number }) {
  const seconds = r.times.reduce((x, y) => x + y, 0), tokens = r.tokens.reduce((x, y) => x + y, 0);
  return {
    ...v,
    globalBatch: v.batchPerProcess * v.processes,
    cpusAllowed: r.cpus,
    timedSteps: r.times.length,
    tokensPerStep: tokens / r.tokens.length,
    secondsPerStep: seconds / r.times.length,
    tokensPerSecond: tokens / seconds,
  };
}

async function main(): Promise<void> {
  if (!distributed.isAvailable()) throw new Error('this build of rlora has no Gloo backend (distributed.isAvailable() is false): nothing to measure');
  if (os.availableParallelism() < 2) throw new Error(`this benchmark needs 2 cores; this machine gives ${os.availableParallelism()}`);
  const timed = arg('steps', 5), allreduces = arg('allreduces', 50);
  const loadBefore = os.loadavg();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-bench-dp-'));
  try {
    const model = Model.fromConfig(TRAIN_SHAPE.config, { seed: 1 });
    model.save(path.join(dir, 'model'));
    let s = 12345;
    const rng = (): number => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
    const text = (n: number): string => Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(rng() * 26))).join('');
    // as benchmarks/train.ts: two tasks, 64 prompt and 62 response bytes (bos + 126 + eos = 128 tokens)
    const examples = Array.from({ length: 128 }, (_, i) => ({ task: i % 2 ? 'odd' : 'even', prompt: text(64), response: text(62) }));
    const dataPath = path.join(dir, 'data.json');
    fs.writeFileSync(dataPath, JSON.stringify(examples));
    const base = { modelDir: path.join(dir, 'model'), dataPath, warmup: WARMUP, timed, allreduces };
    const B = TRAIN_SHAPE.batchSize;
    const say = (t: string): void => void process.stderr.write(t + '\n');

    say(`(a) one process on core 0, 1 thread, batch ${B} ...`);
    const a = lastJson(await runPinned('0', { ...base, batchSize: B, threads: 1 }, {}));
    say(`(b) two processes (data parallel, gloo) on cores 0 and 1, 1 thread each, batch ${B} each ...`);
    const twoProcesses = async (extra: Partial<ChildArgs>): Promise<ChildResult | undefined> => {
      const port = String(await freePort());
      const outs = await Promise.all([0, 1].map((r) => runPinned(String(r), { ...base, batchSize: B, threads: 1, ...extra }, { WORLD_SIZE: '2', RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: port })));
      return lastJson(outs[0]);
    };
    const b = await twoProcesses({});
    say(`(c) one process on cores 0 and 1, 2 threads, batch ${2 * B} ...`);
    const c = lastJson(await runPinned('0,1', { ...base, batchSize: 2 * B, threads: 2 }, {}));
    say('(d) as (b), gradients summed in buckets while backward runs (bucketCapMb 25, as DDP) ...');
    const d = await twoProcesses({ bucketCapMb: 25 });
    if (!b || b.worldSize !== 2 || !b.allreduce) throw new Error(`(b) did not run as 2 processes: ${JSON.stringify(b)}`);
    if (!d || d.worldSize !== 2 || !d.reduce) throw new Error(`(d) did not run as 2 processes with buckets: ${JSON.stringify(d)}`);

    const va = summary(a, { cores: '0', processes: 1, threadsPerProcess: 1, batchPerProcess: B });
    const vb = summary(b, { cores: '0 | 1', processes: 2, threadsPerProcess: 1, batchPerProcess: B });
    const vc = summary(c, { cores: '0,1', processes: 1, threadsPerProcess: 2, batchPerProcess: 2 * B });
    const vd = summary(d, { cores: '0 | 1', processes: 2, threadsPerProcess: 1, batchPerProcess: B });
    const ba = vb.tokensPerSecond / va.tokensPerSecond, bc = vb.tokensPerSecond / vc.tokensPerSecond, db = vd.tokensPerSecond / vb.tokensPerSecond;
    const ar = b.allreduce;
    const doc = {
      benchmark: 'distributed',
      model: { ...TRAIN_SHAPE.config, parameters: model.parameterCount() },
      adapter: { method: 'rlora', ...TRAIN_SHAPE.adapter, trainable: a.trainable },
      sequence: TRAIN_SHAPE.sequence,
      steps: { warmup: WARMUP, timed },
      variants: { a_oneCore: va, b_dataParallel: vb, c_twoThreads: vc, d_dataParallelBucketsDuringBackward: vd },
      ratios: {
        b_over_a: { value: ba, target: 1.8, met: ba >= 1.8 },
        b_over_c: { value: bc, target: 0.9, met: bc >= 0.9 },
        d_over_b: { value: db, what: 'buckets during backward against one all-reduce after it (no target)' },
      },
      overlap: { ...d.reduce, how: 'native distLastReduce() of each timed step of (d), rank 0: buckets, how many started before backward returned, and the ms waited for the exchange after backward (mean)' },
      allreduce: {
        how:
          'distributed.allreduceSum(Float32Array) between the 2 processes of (b), after training: one float32 array as long as ' +
          "the adapter's gradients, as the step's own all-reduce sums them. oneRankMsPerCall: the same call in a group of one " +
          '(the copies in and out); exchangeMsPerCall: the difference',
        values: ar.values,
        bytes: ar.values * 4,
        calls: ar.calls,
        msPerCall: ar.msPerCall,
        oneRankMsPerCall: ar.oneRankMsPerCall,
        exchangeMsPerCall: ar.msPerCall - ar.oneRankMsPerCall,
        oneValueMsPerCall: ar.oneValueMsPerCall,
        exchangeFractionOfStep: (ar.msPerCall - ar.oneRankMsPerCall) / 1000 / vb.secondsPerStep,
      },
      loadAverage: { before: loadBefore, after: os.loadavg() },
      cores: os.availableParallelism(),
    };
    const f = (x: number, d = 0): string => x.toFixed(d);
    say('');
    say(
      `data parallel on one machine: ${TRAIN_SHAPE.config.num_hidden_layers}-layer LLaMA shape (${model.parameterCount().toLocaleString('en-US')} parameters), ` +
        `R-LoRA r=${TRAIN_SHAPE.adapter.rank} N=${TRAIN_SHAPE.adapter.heads} on ${TRAIN_SHAPE.adapter.targetModules.join('/')} (${a.trainable.toLocaleString('en-US')} trainable), ` +
        `sequence ${TRAIN_SHAPE.sequence}, float32 CPU, ${timed} timed steps after ${WARMUP}`,
    );
    say('variant                                   global batch   s/step   tokens/s');
    for (const [name, v] of [['(a) 1 process, core 0, 1 thread', va], ['(b) 2 processes (gloo), 1 core each', vb], ['(c) 1 process, 2 cores, 2 threads', vc], ['(d) as (b), buckets during backward', vd]] as const) {
      say(`${name.padEnd(42)}${String(v.globalBatch).padStart(12)}${f(v.secondsPerStep, 3).padStart(9)}${f(v.tokensPerSecond).padStart(11)}`);
    }
    say(`b / a = ${f(ba, 2)} (target >= 1.8: ${ba >= 1.8 ? 'met' : 'not met'}); b / c = ${f(bc, 2)} (target >= 0.9: ${bc >= 0.9 ? 'met' : 'not met'}); d / b = ${f(db, 3)}`);
    say(`(d) exchanged ${d.reduce.buckets} buckets, ${d.reduce.startedInBackward} started before backward returned; it then waited ${f(d.reduce.waitMsPerStep, 2)} ms per step for the exchange`);
    say(
      `all-reduce of ${ar.values.toLocaleString('en-US')} values (the adapter's trainable parameters; float32, ${f((ar.values * 4) / 2 ** 20, 1)} MB) between the 2 processes: ` +
        `${f(ar.msPerCall, 2)} ms per call (mean of ${ar.calls}), of which ${f(ar.oneRankMsPerCall, 2)} ms is the same call in a group of one (copies in and out): ` +
        `about ${f(doc.allreduce.exchangeMsPerCall, 2)} ms of exchange (${f(100 * doc.allreduce.exchangeFractionOfStep, 1)}% of a step of (b)); one value: ${f(ar.oneValueMsPerCall, 3)} ms`,
    );
    say(`load average before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${doc.loadAverage.after.map((x) => x.toFixed(2)).join(' ')} (another job running skews every figure)`);
    console.log(JSON.stringify(doc, null, 2));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const childAt = process.argv.indexOf('--child');
(childAt >= 0 ? child(JSON.parse(process.argv[childAt + 1]) as ChildArgs) : main()).catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : String(e));
  process.exit(1);
});
