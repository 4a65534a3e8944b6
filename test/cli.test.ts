// The rlora CLI: --help of each command; inspect (head similarity printed from the adapter file
// against the layer's own); plot (SVG and PNG); train from a run.json (files, log, checkpoints);
// run.json errors; eval against Trainer.evaluate; Ctrl-C stopping with a checkpoint, and resuming.
//
// Every child is the real node process (process.execPath --import tsx, never the tsx launcher,
// whose kill does not reach its child), does bounded work (small maxSteps, keepCheckpoints) and is
// killed in a finally block.
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, ByteTokenizer, getNumThreads, HFConfig, Model, MultiTaskDataset, setNumThreads, Trainer } from '../lib';
import { heatmap } from '../lib/cli/inspect';
import { parseRunConfig, RunConfigError, runConfigKeys } from '../lib/cli/runconfig';
import { CLI, REPO, Result, runCli, runNode, startNode } from './helpers/run-cli';

jest.setTimeout(60_000);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const childEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env.FORCE_COLOR;
  delete env.NODE_OPTIONS;
  return env;
};

/** Starts `node --import tsx lib/cli.ts ...args` in the repository root. */
function start(args: string[]): { child: ChildProcess; done: Promise<Result> } {
  return startNode(['--import', 'tsx', CLI, ...args], childEnv());
}

/** Runs the CLI to its end (killed after `timeoutMs`). */
function rlora(args: string[], timeoutMs = 30_000): Promise<Result> {
  return runCli(args, childEnv(), timeoutMs);
}

const explain = (r: Result): string => `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
function ok(r: Result): Result {
  if (r.code !== 0) throw new Error(explain(r));
  return r;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const stepLines = (log: string): { step: number; type?: string }[] =>
  fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];

// ---------------------------------------------------------------------------------------------
// A tiny model folder, data of two tasks, a run.json

const tok = new ByteTokenizer();
const CFG: HFConfig = {
  architectures: ['LlamaForCausalLM'], vocab_size: tok.vocabSize, hidden_size: 32, intermediate_size: 64,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1,
};
const modelDir = path.join(tmp, 'model');
const trainFile = path.join(tmp, 'train.jsonl');
const evalFile = path.join(tmp, 'eval.jsonl');
const WORDS = ['cat', 'dog', 'fish', 'bird', 'cow', 'ant', 'bee', 'owl'];
const NUMBERS = ['12', '7', '345', '9', '60', '81'];
const EXAMPLES = [
  ...WORDS.map((w) => ({ task: 'upper', prompt: `up ${w}:`, response: w.toUpperCase() })),
  ...NUMBERS.map((n) => ({ task: 'reverse', prompt: `rev ${n}:`, response: [...n].reverse().join('') })),
];
const EVAL = [EXAMPLES[0], EXAMPLES[1], EXAMPLES[2], EXAMPLES[9], EXAMPLES[10]];
const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

/** Writes dir/run.json (relative paths, resolved against dir) and returns its path. */
function writeRun(name: string, trainer: object, extra: object = {}): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const run = {
    model: path.relative(dir, modelDir),
    tokenizer: 'byte',
    data: { train: path.relative(dir, trainFile), eval: path.relative(dir, evalFile), maxLength: 32 },
    adapter: { method: 'rlora', rank: 2, heads: 3, targetModules: ['gate_proj', 'up_proj', 'down_proj'] },
    trainer: { batchSize: 4, learningRate: 1e-2, ...trainer },
    outputDir: 'out',
    ...extra,
  };
  const file = path.join(dir, 'run.json');
  fs.writeFileSync(file, JSON.stringify(run, null, 2));
  return file;
}

beforeAll(() => {
  Model.fromConfig(CFG, { seed: 1 }).save(modelDir);
  fs.writeFileSync(trainFile, jsonl(EXAMPLES));
  fs.writeFileSync(evalFile, jsonl(EVAL));
});

// ---------------------------------------------------------------------------------------------

describe('--help', () => {
  it('rlora --help lists every command; each command has usage, options and examples', async () => {
    const names = ['train', 'eval', 'inspect', 'plot', 'build', 'doctor'];
    const [top, ...each] = await Promise.all([rlora(['--help']), ...names.map((n) => rlora([n, '--help']))]);
    ok(top);
    for (const n of names) expect(top.stdout).toMatch(new RegExp(`^\\s+${n}\\s`, 'm'));
    each.forEach((r, i) => {
      ok(r);
      expect(r.stdout.startsWith(`rlora ${names[i]}`)).toBe(true);
      if (i < 4) expect(r.stdout).toContain('Examples:');
    });
    // train documents every key of run.json, from the table validation uses
    const train = each[0].stdout;
    for (const key of runConfigKeys()) expect(train).toMatch(new RegExp(`^\\s+${key.split('.').pop()}\\*?\\s`, 'm'));
    expect(runConfigKeys()).toEqual(expect.arrayContaining(['model.config', 'data.template', 'adapter.targetModules', 'trainer.learningRate', 'trainer.keepCheckpoints', 'outputDir', 'resume']));
  });

  it('a wrong option is a usage error (exit 2) naming it', async () => {
    const r = await rlora(['plot', 'x.jsonl', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown option --bogus');
    expect(r.stderr).toContain('rlora plot --help');
  });
});

describe('inspect', () => {
  const dirs: Record<string, string> = {};
  const native: Record<string, Record<string, number[][]>> = {};
  const counts: Record<string, number> = {};

  beforeAll(() => {
    const model = Model.fromConfig(CFG, { seed: 1 });
    for (const method of ['hydralora', 'rlora'] as const) {
      const adapter = Adapter.attach(model, { method, rank: 4, heads: 4, targetModules: ['q_proj', 'up_proj', 'down_proj'], seed: 7 });
      dirs[method] = path.join(tmp, `adapter-${method}`);
      adapter.save(dirs[method]);
      native[method] = Object.fromEntries(
        Object.entries(adapter.headSimilarity()).map(([name, t]) => {
          const d = t.data() as Float64Array;
          const n = t.shape[0];
          return [name, Array.from({ length: n }, (_, i) => Array.from(d.subarray(i * n, (i + 1) * n)))];
        }),
      );
      counts[method] = adapter.trainableParameterCount();
      adapter.detach();
    }
  });

  /** module name -> the printed matrix */
  function printedMatrices(out: string): Record<string, number[][]> {
    const blocks: Record<string, number[][]> = {};
    let current: number[][] | undefined;
    for (const line of out.split('\n')) {
      const head = /^(model\.\S+)\s+\(\d+ heads;/.exec(line);
      if (head) blocks[head[1]] = current = [];
      else if (current && /^\s+B\d+(\s+B\d+)*\s*$/.test(line)) continue; // the header row
      else if (current && /^\s+B\d+\s/.test(line)) current.push([...line.replace(/^\s+B\d+/, '').matchAll(/-?\d+\.\d+/g)].map((m) => Number(m[0])));
      else current = undefined;
    }
    return blocks;
  }

  it('hydralora at init (--all): every pair of heads has similarity 1, and the sizes are printed', async () => {
    const r = ok(await rlora(['inspect', dirs.hydralora, '--all']));
    const m = printedMatrices(r.stdout);
    expect(Object.keys(m)).toEqual(Object.keys(native.hydralora));
    for (const rows of Object.values(m)) {
      expect(rows).toHaveLength(4);
      for (const row of rows) expect(row).toEqual([1, 1, 1, 1]);
    }
    expect(r.stdout).toMatch(/^modules\s+6 \(q_proj, up_proj, down_proj\)/m);
    expect(r.stdout).toContain(`${counts.hydralora.toLocaleString('en-US')} parameters`);
    expect(r.stdout).toMatch(/^method\s+hydralora/m);
    const kb = (fs.statSync(path.join(dirs.hydralora, 'adapter_model.safetensors')).size / 1024).toFixed(1);
    expect(r.stdout).toContain(`${kb} kB`);
    expect(r.stdout).not.toContain('\x1b['); // not a terminal, and NO_COLOR
  });

  it('rlora at init (--all): near 0 off the diagonal; the numbers are the layer\'s own headSimilarity', async () => {
    const [text, json] = await Promise.all([rlora(['inspect', dirs.rlora, '--all']), rlora(['inspect', dirs.rlora, '--json'])]);
    const m = printedMatrices(ok(text).stdout);
    expect(Object.keys(m)).toEqual(Object.keys(native.rlora));
    for (const [name, rows] of Object.entries(m)) {
      rows.forEach((row, i) =>
        row.forEach((v, j) => {
          expect(Math.abs(v - native.rlora[name][i][j])).toBeLessThanOrEqual(0.005 + 1e-12);
          if (i === j) expect(v).toBe(1);
          else expect(Math.abs(v)).toBeLessThan(0.4); // independent N(0, 1/out) heads: |cos| ~ 1/sqrt(out r)
        }),
      );
    }
    const info = JSON.parse(ok(json).stdout) as { modules: { name: string; similarity: number[][]; parameters: number }[]; trainableParameters: number };
    expect(info.trainableParameters).toBe(counts.rlora);
    for (const mod of info.modules) {
      mod.similarity.forEach((row, i) => row.forEach((v, j) => expect(Math.abs(v - native.rlora[mod.name][i][j])).toBeLessThan(1e-12)));
    }
  });

  it('by default one heatmap per kind of module: the mean of its modules\' matrices, and how to see each', async () => {
    const r = ok(await rlora(['inspect', dirs.rlora]));
    const blocks: Record<string, number[][]> = {};
    let current: number[][] | undefined;
    for (const line of r.stdout.split('\n')) {
      const head = /^(\w+)\s+\(mean of (\d+) modules?, 4 heads;/.exec(line);
      if (head) blocks[head[1]] = current = [];
      else if (current && /^\s+B\d+(\s+B\d+)*\s*$/.test(line)) continue;
      else if (current && /^\s+B\d+\s/.test(line)) current.push([...line.replace(/^\s+B\d+/, '').matchAll(/-?\d+\.\d+/g)].map((m) => Number(m[0])));
      else current = undefined;
    }
    expect(Object.keys(blocks)).toEqual(['q_proj', 'up_proj', 'down_proj']);
    expect(printedMatrices(r.stdout)).toEqual({}); // no module's own
    for (const [kind, rows] of Object.entries(blocks)) {
      const mods = Object.entries(native.rlora).filter(([n]) => n.endsWith(`.${kind}`)).map(([, m]) => m);
      expect(mods).toHaveLength(2);
      rows.forEach((row, i) => row.forEach((v, j) => expect(Math.abs(v - (mods[0][i][j] + mods[1][i][j]) / 2)).toBeLessThanOrEqual(0.005 + 1e-12)));
    }
    expect(r.stdout).toContain(`each module's own heatmap: rlora inspect ${dirs.rlora} --all`);
  });

  it('--module filters; colors are 256-color backgrounds on a terminal', async () => {
    const r = ok(await rlora(['inspect', dirs.rlora, '--module', 'layers\\.1\\.mlp\\.down_proj']));
    expect(Object.keys(printedMatrices(r.stdout))).toEqual(['model.layers.1.mlp.down_proj']);
    const colored = heatmap([[1, -0.5], [-0.5, 1]], true);
    expect(colored).toContain('\x1b[48;5;196m'); // 1: red
    expect(colored).toContain('\x1b[48;5;19m'); // -0.5: blue
    expect(heatmap([[1, 0.5], [0.5, 1]], false)).toContain('▒  0.50');
  });

  it('a folder without an adapter: a clear message, exit 1', async () => {
    const r = await rlora(['inspect', modelDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('not an adapter folder: no adapter_config.json');
  });
});

describe('plot', () => {
  it('writes an SVG (Vega-Lite) naming every task, and a PNG', async () => {
    const log = path.join(tmp, 'plot', 'log.jsonl');
    fs.mkdirSync(path.dirname(log), { recursive: true });
    const lines: object[] = [];
    for (let step = 1; step <= 12; step++) {
      lines.push({ step, epoch: 0, loss: 3 / step, taskLoss: { 'task-alpha': 3.2 / step, 'task-beta': 2.8 / step }, lr: 1e-3, gradNorm: 1, tokens: 10, tokensPerSecond: 100 });
      if (step % 6 === 0) lines.push({ type: 'eval', step, tasks: { 'task-alpha': { loss: 2 / step, accuracy: 0.5, count: 2 }, 'task-beta': { loss: 1 / step, accuracy: 1, count: 3 } } });
    }
    lines.push({ ...lines[3] }); // a step logged twice (a resumed run)
    fs.writeFileSync(log, jsonl(lines));
    const svg = path.join(tmp, 'plot', 'loss.svg');
    const png = path.join(tmp, 'plot', 'loss.png');
    const r = ok(await rlora(['plot', log, '--out', svg, '--png', png, '--title', 'my run']));
    expect(r.stdout).toContain('12 steps (1..12), 2 tasks, 2 evaluations');
    const text = fs.readFileSync(svg, 'utf8');
    expect(text.startsWith('<svg')).toBe(true);
    expect(text.trimEnd().endsWith('</svg>')).toBe(true);
    for (const s of ['task-alpha', 'task-beta', 'all tasks', 'my run', 'training loss', 'evaluation accuracy']) expect(text).toContain(s);
    expect((text.match(/<path/g) ?? []).length).toBeGreaterThan(4);
    const bytes = fs.readFileSync(png);
    expect(bytes.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    const [w, h] = [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
    const m = /width="(\d+)" height="(\d+)"/.exec(text)!;
    expect([w, h]).toEqual([2 * Number(m[1]), 2 * Number(m[2])]);
  });

  it('a broken line is named with its line number', async () => {
    const log = path.join(tmp, 'plot', 'broken.jsonl');
    fs.writeFileSync(log, '{"step": 1, "loss": 1, "taskLoss": {}}\n{oops\n{"step": 2, "loss": 1, "taskLoss": {}}\n');
    const r = await rlora(['plot', log, '--out', path.join(tmp, 'plot', 'b.svg')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${log}:2: invalid JSON`);
  });
});

describe('run.json', () => {
  it('a bad key fails before anything loads, naming the key (exit 1)', async () => {
    const file = writeRun('bad', { learningRat: 1e-3, batchSize: 0 }, { outputDirr: 'x' });
    const r = await rlora(['train', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('trainer.learningRat is not a known key (did you mean trainer.learningRate?)');
    expect(r.stderr).toContain('trainer.batchSize must be an integer >= 1, got 0');
    expect(r.stderr).toContain('outputDirr is not a known key (did you mean outputDir?)');
    expect(fs.existsSync(path.join(tmp, 'bad', 'out'))).toBe(false);
  });

  it('checks types, required keys and alternatives; resolves paths against the file', () => {
    const base = { model: 'm', tokenizer: 'byte', data: { train: 't.jsonl' }, adapter: { targetModules: ['q_proj'] }, outputDir: 'o' };
    const problems = (json: unknown): string[] => {
      try {
        parseRunConfig(json, '/x/run.json');
      } catch (e) {
        if (e instanceof RunConfigError) return e.problems;
        throw e;
      }
      return [];
    };
    expect(problems(base)).toEqual([]);
    expect(problems({ ...base, data: {} })).toEqual([expect.stringContaining('data.train is required')]);
    expect(problems({ ...base, adapter: { targetModules: 'q_proj' } })).toEqual([expect.stringMatching(/^adapter\.targetModules must be/)]);
    expect(problems({ ...base, adapter: { targetModules: { regex: 'proj$' }, method: 'qlora' } })).toEqual([expect.stringContaining('adapter.method must be one of "lora", "hydralora", "rlora"')]);
    expect(problems({ ...base, trainer: { warmupRatio: 1, schedule: 'cosine', maxSteps: 2.5 } })).toEqual([
      'trainer.warmupRatio must be a finite number >= 0 and < 1, got 1',
      'trainer.maxSteps must be an integer >= 1, got 2.5',
    ]);
    expect(problems({ ...base, model: { path: 'm', config: {} } })).toEqual([expect.stringContaining('exactly one of model.path')]);
    expect(problems({ ...base, model: { config: { hidden_size: 8 }, sed: 1 } })).toEqual([expect.stringContaining('model.sed is not a known key (did you mean model.seed?)')]);
    expect(problems([])).toEqual(['run.json must be a JSON object, got []']);
    expect(problems({ ...base, trainer: { distributed: { backend: 'mpi', bucketCapMb: -1, timeout: 5 } } })).toEqual([
      expect.stringContaining('trainer.distributed.backend must be one of "gloo", "nccl"'),
      expect.stringContaining('trainer.distributed.bucketCapMb must be a finite number >= 0 and <= 1048576, got -1'),
      expect.stringContaining('trainer.distributed.timeout is not a known key (did you mean trainer.distributed.timeoutMs?)'),
    ]);
    expect(parseRunConfig({ ...base, trainer: { distributed: { backend: 'gloo', timeoutMs: 5000, bucketCapMb: 1 } } }, '/x/run.json').trainer.distributed).toEqual({ backend: 'gloo', timeoutMs: 5000, bucketCapMb: 1 });
    const cfg = parseRunConfig({ ...base, tokenizer: '../tok/tokenizer.json', resume: 'o/checkpoint-3', adapter: { targetModules: { regex: 'layers\\.0\\.' } } }, '/x/y/run.json');
    expect([cfg.model.path, cfg.tokenizer, cfg.data.train, cfg.outputDir, cfg.resume]).toEqual(['/x/y/m', '/x/tok/tokenizer.json', '/x/y/t.jsonl', '/x/y/o', '/x/y/o/checkpoint-3']);
    expect(cfg.adapter.targetModules).toEqual(/layers\.0\./);
  });
});

describe('train and eval', () => {
  it('train --config: 6 steps, checkpoints every 3, the adapter, the log, the evaluation', async () => {
    const file = writeRun('tiny', { maxSteps: 6, saveEvery: 3, keepCheckpoints: 3 });
    const out = path.join(tmp, 'tiny', 'out');
    const r = ok(await rlora(['train', '--config', file, '--threads', '1']));
    for (const f of ['adapter/adapter_config.json', 'adapter/adapter_model.safetensors', 'checkpoint-3/trainer_state.json', 'checkpoint-6/trainer_state.json', 'run.json']) {
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    }
    const log = stepLines(path.join(out, 'log.jsonl'));
    const steps = log.filter((l) => l.type === undefined) as unknown as { step: number; loss: number; taskLoss: Record<string, number> }[];
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const s of steps) expect(Number.isFinite(s.loss)).toBe(true);
    const evals = log.filter((l) => l.type === 'eval') as unknown as { step: number; tasks: Record<string, { loss: number; accuracy: number; count: number }> }[];
    expect(evals.map((e) => e.step)).toEqual([6]);
    // the evaluation printed at the end is the logged one
    for (const [task, e] of Object.entries(evals[0].tasks)) {
      expect(r.stdout).toMatch(new RegExp(`^${task}\\s+${e.loss.toFixed(4)}\\s+${(100 * e.accuracy).toFixed(1)}%\\s+${e.count}$`, 'm'));
    }
    expect(Object.keys(evals[0].tasks)).toEqual(['reverse', 'upper']);
    expect(r.stderr).toMatch(/^step 1\/6 /m);
    expect(r.stderr).toMatch(/^step 6\/6 /m);
    // run.json again in the same outputDir: refused, nothing deleted
    const again = await rlora(['train', '--config', file]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`outputDir ${out} holds an earlier run (`);
    expect(again.stderr).toContain(`continue it with --resume ${path.join(out, 'checkpoint-6')} (or --resume latest)`);
    expect(fs.existsSync(path.join(out, 'checkpoint-6'))).toBe(true);
  });

  it('eval prints per-task numbers equal to Trainer.evaluate on the same data', async () => {
    const adapterDir = path.join(tmp, 'adapter-rlora-eval');
    {
      const model = Model.fromConfig(CFG, { seed: 1 });
      const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 3, targetModules: ['gate_proj', 'up_proj', 'down_proj'], seed: 3 });
      const train = MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 32 });
      await new Trainer(model, adapter, { maxSteps: 4, batchSize: 4, learningRate: 2e-2, progress: false }).fit(train);
      adapter.save(adapterDir);
    }
    const args = ['eval', '--model', modelDir, '--adapter', adapterDir, '--data', evalFile, '--tokenizer', 'byte', '--batch-size', '4', '--max-length', '32', '--threads', '1'];
    const [json, text] = await Promise.all([rlora([...args, '--json']), rlora(args)]);
    const printed = JSON.parse(ok(json).stdout) as { tasks: Record<string, { loss: number; accuracy: number; count: number }> };

    const model = await Model.fromPretrained(modelDir);
    const adapter = await Adapter.load(model, adapterDir);
    const ds = await MultiTaskDataset.fromJsonl(evalFile, { tokenizer: tok, maxLength: 32 });
    const want = await new Trainer(model, adapter, { batchSize: 4, progress: false }).evaluate(ds);
    expect(printed.tasks).toEqual(want);
    expect(Object.keys(want)).toEqual(['reverse', 'upper']);
    expect(want.upper.count).toBe(3);
    for (const [task, e] of Object.entries(want)) {
      expect(ok(text).stdout).toMatch(new RegExp(`^${task}\\s+${e.loss.toFixed(4)}\\s+${(100 * e.accuracy).toFixed(1)}%\\s+${e.count}$`, 'm'));
    }
  });

  it('eval encodes the data as the adapter was trained: the template and maxLength recorded in rlora_config.json', async () => {
    const adapterDir = path.join(tmp, 'adapter-templated');
    const template = 'Q: {prompt}\nA: {response}';
    {
      const model = Model.fromConfig(CFG, { seed: 1 });
      const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['up_proj'], seed: 3 });
      const train = MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 30, template });
      await new Trainer(model, adapter, { maxSteps: 3, batchSize: 4, learningRate: 2e-2, progress: false }).fit(train);
      adapter.save(adapterDir);
    }
    const rc = JSON.parse(fs.readFileSync(path.join(adapterDir, 'rlora_config.json'), 'utf8'));
    expect(rc.data).toEqual({ template, maxLength: 30, fields: { task: 'task', prompt: 'prompt', response: 'response' }, addBos: true, addEos: true, tokenizer: 'byte' });
    const r = ok(await rlora(['eval', '--model', modelDir, '--adapter', adapterDir, '--data', evalFile, '--batch-size', '4', '--threads', '1', '--json']));
    expect(r.stderr).toContain(`rlora eval: encoding the data as the adapter was trained (${path.join(adapterDir, 'rlora_config.json')}): template ${JSON.stringify(template)}, maxLength 30, tokenizer byte`);
    const printed = JSON.parse(r.stdout) as { tasks: Record<string, unknown> };
    const model = await Model.fromPretrained(modelDir);
    const adapter = await Adapter.load(model, adapterDir);
    expect(adapter.trainingData?.template).toBe(template);
    const evaluate = async (o: { template?: string }) => new Trainer(model, adapter, { batchSize: 4, progress: false }).evaluate(await MultiTaskDataset.fromJsonl(evalFile, { tokenizer: tok, maxLength: 30, ...o }));
    // the same computation as the CLI's (--threads 1): sums split over threads round differently
    const threads = getNumThreads();
    setNumThreads(1);
    const withTemplate = await evaluate({ template }).finally(() => setNumThreads(threads));
    expect(printed.tasks).toEqual(withTemplate);
    // without the template the numbers differ: what eval silently reported before
    expect((await evaluate({})).upper.loss).not.toBeCloseTo(withTemplate.upper.loss, 3);
    // an explicit --template still wins
    const r2 = ok(await rlora(['eval', '--model', modelDir, '--adapter', adapterDir, '--data', evalFile, '--batch-size', '4', '--threads', '1', '--json', '--template', '{prompt}{response}']));
    expect(r2.stderr).not.toContain('template "Q:');
    expect((JSON.parse(r2.stdout) as { tasks: unknown }).tasks).toEqual(await evaluate({ template: '{prompt}{response}' }));
  });
});

// An adapter folder is untrusted input (people download them): a tokenizer path it names must lie
// inside it or the model folder given, and nothing read is echoed (rlora eval used to print the
// first bytes of any file an adapter named, e.g. a line of the password file).
describe('eval and a hostile adapter folder', () => {
  it('refuses a tokenizer path outside the adapter and model folders, and never prints file contents', async () => {
    const adapterDir = path.join(tmp, 'adapter-hostile');
    {
      const model = Model.fromConfig(CFG, { seed: 1 });
      const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['up_proj'], seed: 3 });
      await new Trainer(model, adapter, { maxSteps: 1, batchSize: 4, progress: false }).fit(MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 30 }));
      adapter.save(adapterDir);
    }
    const secret = path.join(tmp, 'secret.txt');
    fs.writeFileSync(secret, 'root:SECRET-LINE:0:0:root:/root:/bin/bash\n');
    const rcFile = path.join(adapterDir, 'rlora_config.json');
    const rc = JSON.parse(fs.readFileSync(rcFile, 'utf8'));
    const evalWith = async (named: string) => {
      fs.writeFileSync(rcFile, JSON.stringify({ ...rc, data: { ...rc.data, tokenizer: named } }));
      return rlora(['eval', '--model', modelDir, '--adapter', adapterDir, '--data', evalFile, '--threads', '1']);
    };
    for (const named of [secret, '../secret.txt']) {
      const r = await evalWith(named);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`${rcFile}: data.tokenizer names ${JSON.stringify(named)}, which is outside the adapter folder and the model folder: refused`);
      expect(r.stdout + r.stderr).not.toContain('SECRET');
    }
    // a file inside the adapter folder is read; a parse error names it without quoting it
    fs.copyFileSync(secret, path.join(adapterDir, 'tokenizer.json'));
    const inside = await evalWith('tokenizer.json');
    expect(inside.code).not.toBe(0);
    expect(inside.stderr).toContain(`${path.join(adapterDir, 'tokenizer.json')} is not valid JSON (an unexpected character)`);
    expect(inside.stdout + inside.stderr).not.toContain('SECRET');
    // --tokenizer chooses, and the recorded path is not looked at
    fs.writeFileSync(rcFile, JSON.stringify({ ...rc, data: { ...rc.data, tokenizer: secret } }));
    ok(await rlora(['eval', '--model', modelDir, '--adapter', adapterDir, '--data', evalFile, '--tokenizer', 'byte', '--threads', '1']));
  });
});

describe('run.json and outputDir (issue 33)', () => {
  it('run.json takes trainer.reportTo and trainer.loggingSteps: metrics.csv and event files agree with log.jsonl, a line every 2 steps', async () => {
    const file = writeRun('report', { maxSteps: 4, loggingSteps: 2, reportTo: ['csv', 'tensorboard'] });
    const out = path.join(tmp, 'report', 'out');
    const r = ok(await rlora(['train', '--config', file, '--threads', '1']));
    const steps = stepLines(path.join(out, 'log.jsonl')).filter((l) => l.type === undefined) as unknown as { step: number; loss: number }[];
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    const csv = fs.readFileSync(path.join(out, 'metrics.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('step,name,value');
    for (const s of steps) expect(Number(csv.find((l) => l.startsWith(`${s.step},train/loss,`))!.split(',').pop())).toBe(s.loss);
    expect(fs.readdirSync(path.join(out, 'tensorboard')).filter((f) => f.startsWith('events.out.tfevents.'))).toHaveLength(1);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('step ')).map((l) => l.split(' ')[1])).toEqual(['1/4', '2/4', '4/4']);
  });

  it('--resume latest continues from the newest complete checkpoint (an incomplete newer one is passed over)', async () => {
    const file = writeRun('latest', { maxSteps: 4, saveEvery: 2 });
    const out = path.join(tmp, 'latest', 'out');
    const none = await rlora(['train', '--config', file, '--resume', 'latest']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`--resume latest: outputDir ${out} holds no complete checkpoint`);
    ok(await rlora(['train', '--config', file, '--threads', '1']));
    fs.mkdirSync(path.join(out, 'checkpoint-9'));
    fs.copyFileSync(path.join(out, 'checkpoint-4', 'trainer_state.json'), path.join(out, 'checkpoint-9', 'trainer_state.json')); // no optimizer, no adapter
    const r = ok(await rlora(['train', '--config', file, '--threads', '1', '--resume', 'latest', '--max-steps', '6']));
    expect(r.stderr).toContain(`resume     ${path.join(out, 'checkpoint-4')}: step 4 of 6`);
    expect(stepLines(path.join(out, 'log.jsonl')).filter((l) => l.type === undefined).map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'checkpoint-6', 'trainer_state.json'), 'utf8')).step).toBe(6);
  });

  it('an outputDir whose run wrote no checkpoint: says so and offers --overwrite, not --resume; --overwrite starts fresh', async () => {
    const file = writeRun('nockpt', { maxSteps: 2 });
    const out = path.join(tmp, 'nockpt', 'out');
    fs.mkdirSync(out, { recursive: true });
    // what a run that failed before its first checkpoint leaves: its run.json and the first step's record
    fs.writeFileSync(path.join(out, 'log.jsonl'), JSON.stringify({ step: 1, epoch: 0, loss: 5, taskLoss: {}, lr: 0.01, gradNorm: 1, tokens: 10, tokensPerSecond: 10 }) + '\n');
    fs.writeFileSync(path.join(out, 'run.json'), '{}\n');
    const r = await rlora(['train', '--config', file, '--threads', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe( // one line, before a model is loaded
      `rlora train: outputDir ${out} holds log.jsonl of an earlier run that wrote no checkpoint (it stopped or failed before its first), so there is nothing to resume: ` +
        'pass --overwrite to delete it and start fresh there, or choose another outputDir',
    );
    expect(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).toBe('{}\n'); // nothing written
    ok(await rlora(['train', '--config', file, '--threads', '1', '--overwrite']));
    expect(stepLines(path.join(out, 'log.jsonl')).filter((l) => l.type === undefined).map((l) => [l.step, (l as unknown as { loss: number }).loss === 5])).toEqual([[1, false], [2, false]]);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).outputDir).toBe(out);
    // the library says the same with its option
    const model = Model.fromConfig(CFG, { seed: 1 });
    fs.rmSync(path.join(out, 'checkpoint-2'), { recursive: true });
    fs.rmSync(path.join(out, 'eval-2.jsonl'));
    const trainer = new Trainer(model, Adapter.attach(model, { targetModules: ['q_proj'] }), { maxSteps: 1, progress: false, outputDir: out });
    await expect(trainer.fit(MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 32 }))).rejects.toThrow(
      `Trainer.fit refused: outputDir ${out} holds log.jsonl of an earlier run that wrote no checkpoint (it stopped or failed before its first), so there is nothing to resume: set overwriteOutputDir: true to delete it`,
    );
  });

  it('an outputDir on a read-only mount: one line naming it and the reason, before a model is loaded', async () => {
    const ro = path.join(tmp, 'readonly');
    fs.mkdirSync(ro);
    let mounted = false;
    try {
      if (process.getuid?.() === 0) {
        try {
          execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro', 'tmpfs', ro], { stdio: 'ignore' });
          mounted = true;
        } catch {
          console.warn(`skipped: running as root, and a read-only tmpfs cannot be mounted on ${ro} (no CAP_SYS_ADMIN?): root writes into any folder, so there is no read-only outputDir to try`);
          return;
        }
      } else fs.chmodSync(ro, 0o555);
      const reason = mounted ? 'EROFS: a read-only file system' : 'EACCES';
      const file = writeRun('ro', { maxSteps: 2 }, { outputDir: ro });
      const r = await rlora(['train', '--config', file, '--threads', '1']);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim()).toBe(`rlora train: ${file}: outputDir ${ro} is not writable (${reason})`); // one line: no model line before it, no stack
      // the library: refused before the first step, naming outputDir
      const model = Model.fromConfig(CFG, { seed: 1 });
      const trainer = new Trainer(model, Adapter.attach(model, { targetModules: ['q_proj'] }), { maxSteps: 1, progress: false, outputDir: ro });
      await expect(trainer.fit(MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 32 }))).rejects.toThrow(`outputDir ${ro} is not writable (${reason})`);
      expect(trainer.step).toBe(0);
    } finally {
      if (mounted) execFileSync('umount', [ro]);
      else fs.chmodSync(ro, 0o755);
    }
  });
});

describe('Ctrl-C', () => {
  /** Starts train, sends SIGINT once log.jsonl has more than `after` step lines, waits for the exit. */
  async function interrupt(args: string[], log: string, after: number): Promise<Result> {
    const { child, done } = start(args);
    try {
      const deadline = Date.now() + 30_000;
      let exited = false;
      void done.then(() => (exited = true));
      while (!exited && stepLines(log).filter((l) => l.type === undefined).length <= after) {
        if (Date.now() > deadline) throw new Error('no step line within 30 s');
        await sleep(20);
      }
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const r = await done;
      clearTimeout(timer);
      return r;
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }

  it('stops after the current step with a checkpoint and says how to resume; resuming continues the log', async () => {
    // bounded: at most 1000 tiny steps (about 10 s) and one checkpoint kept, should the signal be missed
    const file = writeRun('sigint', { maxSteps: 1000, keepCheckpoints: 1 });
    const out = path.join(tmp, 'sigint', 'out');
    const log = path.join(out, 'log.jsonl');
    const r = await interrupt(['train', '--config', file, '--threads', '1'], log, 0);
    expect(r.code).toBe(130);
    const m = /interrupted at step (\d+) of 1000; checkpoint written to (\S+)/.exec(r.stderr);
    if (!m) throw new Error(explain(r));
    const [step, ckpt] = [Number(m[1]), m[2]];
    expect(ckpt).toBe(path.join(out, `checkpoint-${step}`));
    expect(r.stderr).toContain(`resume with: rlora train --config ${file} --resume ${ckpt}`);
    expect(JSON.parse(fs.readFileSync(path.join(ckpt, 'trainer_state.json'), 'utf8')).step).toBe(step);
    expect(stepLines(log).map((l) => l.step)).toEqual(Array.from({ length: step }, (_, i) => i + 1));
    expect(fs.existsSync(path.join(out, 'adapter'))).toBe(false); // not finished: no final adapter

    // resume, and stop again
    const r2 = await interrupt(['train', '--config', file, '--threads', '1', '--resume', ckpt], log, step);
    expect(r2.code).toBe(130);
    expect(r2.stderr).toContain(`resume     ${ckpt}: step ${step} of 1000`);
    const m2 = /interrupted at step (\d+) of 1000; checkpoint written to (\S+)/.exec(r2.stderr);
    if (!m2) throw new Error(explain(r2));
    const step2 = Number(m2[1]);
    expect(step2).toBeGreaterThan(step);
    expect(stepLines(log).map((l) => l.step)).toEqual(Array.from({ length: step2 }, (_, i) => i + 1));
    expect(fs.readdirSync(out).filter((f) => f.startsWith('checkpoint-'))).toEqual([`checkpoint-${step2}`]);
  });

  /** What a terminal shows of each line: the text after the last carriage return or erase-line. */
  const screenLines = (raw: string): string[] =>
    raw
      .replace(/\x1b\[\?(25|7)[lh]|\x1b[78]/g, '') // cursor hide/show, line wrap, cursor save/restore (none expected)
      .split(/\r?\n/)
      .map((line) => {
        let shown = '';
        for (const part of line.split(/(\r|\x1b\[[0-9]*[GK])/)) {
          if (part === '\r' || /^\x1b\[[0-9]*G$/.test(part)) shown = '';
          else if (/^\x1b\[[0-9]*K$/.test(part)) continue;
          else if (part !== undefined) shown += part;
        }
        return shown;
      });

  (fs.existsSync('/usr/bin/script') ? it : it.skip)('on an 80-column terminal: the bar fits, evaluations print above it, Ctrl-C leaves clean lines', async () => {
    const file = writeRun('tty', { maxSteps: 100000, keepCheckpoints: 1, evalEvery: 3 });
    const log = path.join(tmp, 'tty', 'out', 'log.jsonl');
    const cmd = `stty cols 80; exec ${process.execPath} --import tsx ${CLI} train --config ${file} --threads 1`;
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } });
    let raw = '';
    child.stdout!.on('data', (d: Buffer) => (raw += d.toString()));
    const done = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 30_000;
      while (stepLines(log).filter((l) => l.type === 'eval').length < 2) {
        if (Date.now() > deadline) throw new Error(`no evaluation within 30 s:\n${raw}`);
        await sleep(20);
      }
      child.stdin!.write('\x03'); // Ctrl-C, as typed
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await done;
      clearTimeout(timer);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    expect(raw).not.toContain('\x1b8'); // no cursor restore: it would jump back over the lines printed meanwhile
    const lines = screenLines(raw);
    // the bar fits in 80 columns
    for (const l of lines.filter((x) => x.startsWith('step '))) expect([l, l.length]).toEqual([l, Math.min(l.length, 80)]);
    expect(lines.some((l) => /^step \d+\/100000 \|.*\| loss [\d.]+ \| \d+ tok\/s \| ETA /.test(l))).toBe(true);
    // evaluations print with the bar on
    expect(lines.filter((l) => /^eval at step \d+:$/.test(l)).length).toBeGreaterThanOrEqual(1);
    // the notice and the final lines are whole: nothing of the bar left in them
    expect(lines.filter((l) => /^rlora: Ctrl-C: stopping after step \d+ and writing a checkpoint \(Ctrl-C again to quit at once\)$/.test(l))).toHaveLength(1);
    const end = lines.find((l) => l.startsWith('rlora train: interrupted at step'));
    expect(end).toMatch(new RegExp(`^rlora train: interrupted at step \\d+ of 100000; checkpoint written to ${path.join(tmp, 'tty', 'out')}/checkpoint-\\d+$`));
  });
});

// ---------------------------------------------------------------------------------------------
// Small items: "did you mean", a wrong LIBTORCH or Torch_DIR, Trainer in the REPL, the plot's layers

/* eslint-disable import/first */
import * as util from 'util';

import { commands } from '../lib/cli';
import { closest, editDistance } from '../lib/cli/args';
import { rankDevice } from '../lib/distributed';
import { lossSpec, readLog } from '../lib/cli/plot';

/** Runs the CLI (or `node --import tsx -e code` when args[0] is '-e') with extra environment variables. */
async function withEnv(args: string[], extra: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<Result> {
  const env = { ...childEnv(), ...extra };
  for (const k of ['LIBTORCH', 'Torch_DIR', 'RLORA_BINARY']) if (!(k in extra)) delete env[k];
  return runNode(args[0] === '-e' ? ['--import', 'tsx', ...args] : ['--import', 'tsx', CLI, ...args], env, timeoutMs);
}

describe('did you mean', () => {
  it('an unknown command close to a known one names it; a far one lists the commands', async () => {
    const [typo, swapped, far] = await Promise.all([rlora(['trian']), rlora(['doctro']), rlora(['frobnicate'])]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('unknown command trian; did you mean train?');
    expect(swapped.stderr).toContain('did you mean doctor?');
    expect(far.code).toBe(2);
    expect(far.stderr).toContain('unknown command "frobnicate"');
    expect(far.stderr).not.toContain('did you mean');
    expect(far.stderr).toContain('Commands:');
  });

  // --threads 1e6 used to print a stack trace (the library's RangeError)
  it('--threads out of range is a usage error, not a stack trace', async () => {
    const [train, ev] = await Promise.all([rlora(['train', '--config', 'x.json', '--threads', '1000000']), rlora(['eval', '--adapter', 'x', '--data', 'y', '--threads', '0'])]);
    for (const [r, v] of [[train, '1000000'], [ev, '0']] as const) {
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--threads must be an integer from 1 to 1024, got "${v}"`);
      expect(r.stderr).not.toMatch(/^\s+at /m);
    }
  });

  it('an unknown option close to one of the command names it', async () => {
    const [near, far] = await Promise.all([rlora(['plot', 'x.jsonl', '--ot', 'y.svg']), rlora(['plot', 'x.jsonl', '--zzzzzz'])]);
    expect(near.code).toBe(2);
    expect(near.stderr).toContain('unknown option --ot; did you mean --out?');
    expect(far.stderr).toContain('unknown option --zzzzzz');
    expect(far.stderr).not.toContain('did you mean');
  });

  it('Damerau-Levenshtein: a swap is one edit; suggestions are at most 2 edits away', () => {
    expect(editDistance('trian', 'train')).toBe(1);
    expect(editDistance('plto', 'plot')).toBe(1);
    expect(editDistance('evl', 'eval')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(closest('trian', Object.keys(commands), 2)).toBe('train');
    expect(closest('inspcet', Object.keys(commands), 2)).toBe('inspect');
    expect(closest('xyz', Object.keys(commands), 2)).toBeUndefined();
    expect(closest('l', ['log-y', 'png'], 2)).toBeUndefined(); // no one-letter guesses
  });
});

describe('LIBTORCH or Torch_DIR naming no libtorch', () => {
  const empty = path.join(tmp, 'empty-libtorch');
  beforeAll(() => fs.mkdirSync(empty, { recursive: true }));

  it('doctor says the variable is set and what is wrong with it', async () => {
    const [missing, noLib, json, torchDir] = await Promise.all([
      withEnv(['doctor'], { LIBTORCH: '/nonexistent' }),
      withEnv(['doctor'], { LIBTORCH: empty }),
      withEnv(['doctor', '--json'], { LIBTORCH: '/nonexistent' }),
      withEnv(['doctor'], { Torch_DIR: '/nonexistent/share/cmake/Torch' }),
    ]);
    expect(missing.stdout).toMatch(/^libtorch\s+LIBTORCH=\/nonexistent: no such folder$/m);
    expect(missing.stdout).toContain('LIBTORCH is set, so neither rlora nor `rlora build` looks for libtorch anywhere else');
    expect(noLib.stdout).toContain(`LIBTORCH=${empty}: holds no lib/libtorch_cpu.so`);
    const info = JSON.parse(json.stdout) as { libtorch: { source: string; where: string; problem: string; advice?: string }[] };
    expect(info.libtorch).toEqual([expect.objectContaining({ source: 'LIBTORCH', where: 'LIBTORCH=/nonexistent', problem: 'no such folder', advice: expect.stringContaining('LIBTORCH is set') })]);
    expect(torchDir.stdout).toContain('Torch_DIR=/nonexistent/share/cmake/Torch: no such folder');
    expect(torchDir.stdout).toContain('Torch_DIR is set');
  });

  it("the loader's error says it first", async () => {
    const r = await withEnv(['-e', "require('./lib')"], { LIBTORCH: '/nonexistent', RLORA_BINARY: path.join(tmp, 'none.node') });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('rlora: no native binary could be loaded');
    expect(r.stderr).toMatch(/^ {2}LIBTORCH=\/nonexistent: no such folder\n {4}LIBTORCH is set/m);
    expect(r.stderr).toContain('libtorch found: none');
  });
});

describe('Trainer in the REPL', () => {
  it('util.inspect shows a one-line summary, not the private fields', () => {
    const model = Model.fromConfig(CFG, { seed: 1 });
    const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 3, targetModules: ['gate_proj', 'up_proj', 'down_proj'] });
    try {
      const t = new Trainer(model, adapter, { maxSteps: 100, outputDir: 'runs/x', progress: false });
      expect(util.inspect(t)).toBe('Trainer(step 0 of 100, lr 0.0002, batch 8, method rlora, 6 modules, outputDir runs/x)');
      expect(util.inspect({ trainer: t })).toBe('{\n  trainer: Trainer(step 0 of 100, lr 0.0002, batch 8, method rlora, 6 modules, outputDir runs/x)\n}');
      const byEpochs = new Trainer(model, adapter, { epochs: 2, learningRate: 1e-3, batchSize: 4, gradientAccumulation: 2, progress: false });
      expect(util.inspect(byEpochs)).toBe('Trainer(step 0, 2 epochs, lr 0.001, batch 4 x 2 accumulated, method rlora, 6 modules)');
      byEpochs.dispose();
      expect(util.inspect(byEpochs)).toMatch(/, disposed\)$/);
      expect(util.inspect(t)).not.toMatch(/pendingSampler|optimizer|DEFAULTS/);
    } finally {
      adapter.detach();
    }
  });
});

describe('plot: the all-tasks line', () => {
  it('is drawn beneath the per-task lines, thinner and dashed, in its own colour', async () => {
    const log = path.join(tmp, 'plot-layers', 'log.jsonl');
    fs.mkdirSync(path.dirname(log), { recursive: true });
    const rows = Array.from({ length: 6 }, (_, i) => ({ step: i + 1, loss: 2 / (i + 1), taskLoss: { a: 2 / (i + 1), b: 2 / (i + 1) } }));
    fs.writeFileSync(log, jsonl(rows));
    // the spec: the overall layer comes first (Vega-Lite draws later layers on top)
    const spec = lossSpec(readLog(log)) as { vconcat: { layer: { transform: { filter: string }[]; mark: { strokeWidth: number; strokeDash?: number[] } }[] }[] };
    const layers = spec.vconcat[0].layer;
    const overall = layers.findIndex((l) => l.transform[0].filter.includes("=== 'all tasks'"));
    const perTask = layers.findIndex((l) => l.transform[0].filter.includes("!== 'all tasks'"));
    expect(overall).toBeGreaterThanOrEqual(0);
    expect(perTask).toBeGreaterThan(overall);
    expect(layers[overall].mark.strokeWidth).toBeLessThan(layers[perTask].mark.strokeWidth);
    expect(layers[overall].mark.strokeDash).toBeDefined();
    // the SVG: the paths in drawing order; here the tasks' lines lie exactly on the overall one
    const svg = path.join(tmp, 'plot-layers', 'loss.svg');
    ok(await rlora(['plot', log, '--out', svg]));
    const lines = [...fs.readFileSync(svg, 'utf8').matchAll(/<path aria-label="[^"]*series: ([^"]+)"[^>]*stroke="([^"]+)" stroke-width="([\d.]+)"/g)].map((m) => ({ series: m[1], stroke: m[2], width: Number(m[3]) }));
    expect(lines.map((l) => l.series)).toEqual(['all tasks', 'a', 'b']);
    expect(new Set(lines.map((l) => l.stroke)).size).toBe(3);
    expect(lines[0].width).toBeLessThan(Math.min(lines[1].width, lines[2].width));
  });
});

describe('progress line', () => {
  it('fits the terminal at its longest from 71 columns on; the ETA reads as time', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { formatEta, progressBarSize, progressText } = require('../lib/progress') as typeof import('../lib/progress');
    for (let columns = 71; columns <= 200; columns++) {
      const line = progressText(99999, 99999, '12.3456', '999999', 99 * 3600 + 59 * 60, progressBarSize(columns));
      expect(line.length).toBeLessThan(columns);
    }
    expect(progressBarSize(undefined)).toBe(progressBarSize(80));
    expect(progressText(5, 10, '1.0000', '10', 5, 10)).toBe('step 5/10 |=====-----| loss 1.0000 | 10 tok/s | ETA 5s');
    expect([formatEta(45), formatEta(245), formatEta(2 * 3600 + 7 * 60 + 30), formatEta(NaN)]).toEqual(['45s', '4m05s', '2h07m', '-']);
  });
});

describe('rlora train: the device of a data-parallel worker', () => {
  it('"cuda" is cuda:LOCAL_RANK when WORLD_SIZE > 1; other names, and one process, keep theirs', () => {
    const saved = { ...process.env };
    try {
      process.env.WORLD_SIZE = '2';
      process.env.LOCAL_RANK = '1';
      expect(rankDevice('cuda')).toBe('cuda:1');
      expect(rankDevice('cuda:0')).toBe('cuda:0');
      expect(rankDevice('cpu')).toBe('cpu');
      expect(rankDevice(undefined)).toBeUndefined();
      process.env.WORLD_SIZE = '1';
      expect(rankDevice('cuda')).toBe('cuda');
    } finally {
      for (const k of ['WORLD_SIZE', 'LOCAL_RANK']) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  });
});
