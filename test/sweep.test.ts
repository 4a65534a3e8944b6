// rlora sweep (lib/sweep/): the definition's checks (unknown keys with "did you mean", errors that
// name the file and the key), a sweep of 2 variants x 2 rates x 2 seeds in 2 workers on a tiny
// model through the CLI, killed (kill -9) after some jobs finished and run again (the finished jobs
// are not run again), the picked rate recomputed here from the job files, the paired interval
// recomputed by hand, and sweep() in code with records instead of files.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { HFConfig, Model, sweep } from '../lib';
import { resolveSweep, SweepConfigError, sweepConfigKeys } from '../lib/sweep/config';
import type { JobResult } from '../lib/sweep/types';
import type { SweepResult } from '../lib/sweep/run';
import { pickRate } from '../lib/sweep/run';
import { stats, t95 } from '../lib/sweep/stats';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

jest.setTimeout(120_000);

const REPO = path.resolve(__dirname, '..');
const CLI = path.join(REPO, 'lib', 'cli.ts');
const tmp = tempFolder('rlora-sweep-');
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) {
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

const CONFIG: HFConfig = TINY_BYTE_CONFIG;
const base = path.join(tmp, 'base');
Model.fromConfig(CONFIG, { seed: 0 }).save(base);

/** Two tasks with one answer each (y / n): a tiny model's greedy answers flip between them, so accuracies differ between rates and seeds. */
const WORDS = 'cat dog sun map pen cup box hat red top fig jam kit log mud nut oak pig rat sea tin van web yak zip ant bee cow elk fox gnu hen'.split(' ');
const records = (ws: string[]) => ws.flatMap((w) => [{ task: 'yes', prompt: w, response: 'y' }, { task: 'no', prompt: `${w}?`, response: 'n' }]);
const jsonl = (rs: object[]) => rs.map((r) => JSON.stringify(r)).join('\n') + '\n';
fs.writeFileSync(path.join(tmp, 'train.jsonl'), jsonl(records(WORDS.slice(0, 20))));
fs.writeFileSync(path.join(tmp, 'validation.jsonl'), jsonl(records(WORDS.slice(20, 26))));
fs.writeFileSync(path.join(tmp, 'test.jsonl'), jsonl(records(WORDS.slice(26))));

const DEFINITION = {
  model: 'base',
  tokenizer: 'byte',
  data: { train: 'train.jsonl', validation: 'validation.jsonl', test: 'test.jsonl', maxLength: 16 },
  adapter: { targetModules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'], rank: 2, heads: 3, alpha: 16 },
  variants: [
    { name: 'hydralora', adapter: { method: 'hydralora' } },
    { name: 'rlora', adapter: { method: 'rlora' } },
  ],
  learningRates: [0.05, 0.2],
  seeds: 2,
  steps: 40,
  batchSize: 8,
  workers: 2,
  compare: [['rlora', 'hydralora']],
  outputDir: 'out',
};

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `rlora sweep ...` in its own process group (so that a kill reaches its workers); `onStart` may kill it. */
function rlora(args: string[], onStart?: (child: ChildProcess) => void): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  onStart?.(child);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const writeDefinition = (name: string, o: object): string => {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, JSON.stringify(o, null, 2));
  return file;
};

/** Every job result file under dir/jobs, with its modification time and contents. */
function jobFiles(dir: string): Map<string, { mtimeMs: number; text: string }> {
  const out = new Map<string, { mtimeMs: number; text: string }>();
  const jobs = path.join(dir, 'jobs');
  if (!fs.existsSync(jobs)) return out;
  for (const v of fs.readdirSync(jobs)) {
    for (const f of fs.readdirSync(path.join(jobs, v))) {
      if (!/^(validation|test)-lr.*\.json$/.test(f)) continue;
      const file = path.join(jobs, v, f);
      out.set(path.join(v, f), { mtimeMs: fs.statSync(file).mtimeMs, text: fs.readFileSync(file, 'utf8') });
    }
  }
  return out;
}

describe('the definition', () => {
  const where = path.join(tmp, 'sweep.json');
  const problems = (o: object, file: string | null = where): string[] => {
    const f = file ?? undefined;
    try {
      resolveSweep(o, f);
    } catch (e) {
      expect(e).toBeInstanceOf(SweepConfigError);
      expect((e as Error).message.startsWith(`${f ?? 'sweep'}: `)).toBe(true);
      return (e as SweepConfigError).problems;
    }
    throw new Error('no error');
  };

  it('fills in the defaults and resolves paths relative to the file', () => {
    const r = resolveSweep(DEFINITION, where);
    expect(r.model).toBe(base);
    expect(r.data.train).toEqual({ file: path.join(tmp, 'train.jsonl') });
    expect(r.outputDir).toBe(path.join(tmp, 'out'));
    expect(r.seeds).toEqual([0, 1]);
    expect(r.pickBy).toBe('accuracy');
    expect(r.variants.map((v) => [v.name, v.learningRates, v.adapter])).toEqual([
      ['hydralora', [0.05, 0.2], { rank: 2, heads: 3, alpha: 16, method: 'hydralora' }],
      ['rlora', [0.05, 0.2], { rank: 2, heads: 3, alpha: 16, method: 'rlora' }],
    ]);
    expect(resolveSweep({ ...DEFINITION, seeds: [3, 7] }, where).seeds).toEqual([3, 7]);
    expect(resolveSweep({ ...DEFINITION, seeds: undefined, batchSize: undefined }, where)).toMatchObject({ seeds: [0, 1, 2], batchSize: 8 });
    // a variant's init merges over the shared one key by key
    const merged = resolveSweep({ ...DEFINITION, adapter: { ...DEFINITION.adapter, init: { gamma: 16 } }, variants: [{ name: 'x', adapter: { init: { scale: 'reference' } } }], compare: undefined }, where);
    expect(merged.variants[0].adapter.init).toEqual({ gamma: 16, scale: 'reference' });
  });

  it('refuses unknown keys with "did you mean", naming the file and the key', () => {
    expect(problems({ ...DEFINITION, learningRate: [1e-3] })[0]).toMatch(/^learningRate is not a known key \(did you mean learningRates\?\); known keys: model, /);
    expect(problems({ ...DEFINITION, variants: [{ name: 'a', adapter: { rnak: 4 } }] })).toEqual([expect.stringMatching(/^variants\[0\]\.adapter\.rnak is not a known key \(did you mean variants\[0\]\.adapter\.rank\?\)/)]);
    expect(problems({ ...DEFINITION, data: { ...DEFINITION.data, valdation: 'v.jsonl' } })).toContainEqual(expect.stringMatching(/^data\.valdation is not a known key \(did you mean data\.validation\?\)/));
    expect(problems({ ...DEFINITION, trainer: { learningRate: 1e-3 } })).toEqual(['trainer.learningRate cannot be given here: set by the sweep: give the grid as learningRates (top level or per variant)']);
    expect(problems({ ...DEFINITION, trainer: { schedule: 'cosin' } })).toEqual(['trainer.schedule must be one of "cosine", "linear", "constant", got "cosin" (did you mean "cosine"?)']);
    expect(problems({ ...DEFINITION, variants: [{ name: 'a', adapter: { method: 'rloar' } }] })[0]).toMatch(/did you mean "rlora"\?/);
    expect(problems({ ...DEFINITION, steps: '40' })).toEqual(['steps must be an integer >= 1, got "40" (a string: write 40 without quotes)']);
    expect(problems({ ...DEFINITION, log: null })[0]).toMatch(/^log is not a known key/); // functions only in code
    expect(problems({ ...DEFINITION, constructor: 1, toString: 2 })).toEqual([expect.stringMatching(/^constructor is not a known key; known keys: model, /), expect.stringMatching(/^toString is not a known key; /)]);
    expect(problems({ ...DEFINITION, seeds: [1, 1] })).toEqual(['seeds lists seed 1 twice']);
    expect(problems({ ...DEFINITION, seeds: 0, steps: 2 ** 60 })).toEqual([
      'seeds must be a count (an integer >= 1) or a non-empty array of seeds (integers >= 0), got 0',
      `steps must be an integer >= 1, got ${2 ** 60} (larger than ${Number.MAX_SAFE_INTEGER}, where integers are not exact)`,
    ]);
  });

  it('says what the key table cannot: names, rates, targets, compare, outputDir', () => {
    expect(problems({ ...DEFINITION, compare: [['rlora', 'hydra']] })).toEqual([
      'compare[0][1] names no variant: "hydra" (did you mean "hydralora"?); the variants: hydralora, rlora',
    ]);
    expect(problems({ ...DEFINITION, compare: undefined, variants: [{ name: 'a b' }, { name: 'c' }, { name: 'c' }] })).toEqual([
      'variants[0].name must start with a letter or digit and hold only letters, digits, ".", "_", "+" and "-" (it names files), got "a b"',
      'variants[2].name "c" is the name of variants[1] too',
    ]);
    expect(problems({ ...DEFINITION, compare: undefined, adapter: {}, learningRates: undefined, variants: [{ name: 'a' }] })).toEqual([
      'variants[0] (a) has no targetModules: give adapter.targetModules (for every variant) or variants[0].adapter.targetModules',
      'variants[0] (a) has no learning rates: give learningRates (for every variant) or variants[0].learningRates',
    ]);
    expect(problems({ ...DEFINITION, learningRates: [1e-3, 1e-3] })).toEqual(['learningRates lists 0.001 twice']);
    expect(problems({ ...DEFINITION, outputDir: '.' })[0]).toMatch(/^outputDir is the folder of this file/);
    expect(problems({ ...DEFINITION, steps: undefined, variants: undefined })).toEqual([
      'variants is required: the adapter variants to compare, each',
      'steps is required: optimizer steps of every job',
    ]);
  });

  it('in code: records and RegExps are allowed, errors start with "sweep"', () => {
    expect(problems({ ...DEFINITION, data: { train: [], validation: 'v.jsonl' } }, null)).toEqual(['data.train must be a non-empty array of records, got []']);
    const r = resolveSweep({ ...DEFINITION, adapter: { targetModules: /proj$/ }, data: { train: records(['cat']), validation: 'v.jsonl' } });
    expect(r.variants[0].targetModules).toEqual({ regex: 'proj$' });
    expect(r.data.train).toEqual({ examples: records(['cat']) });
    expect(r.outputDir).toBe(path.resolve('out'));
  });

  it('documents every key in rlora sweep --help', async () => {
    const keys = sweepConfigKeys();
    expect(keys).toEqual(expect.arrayContaining(['model', 'data.train', 'data.validation', 'data.test', 'variants', 'variants[].name', 'variants[].adapter', 'variants[].learningRates', 'learningRates', 'seeds', 'steps', 'batchSize', 'workers', 'threads', 'compare', 'pickBy', 'trainer.schedule', 'adapter.method', 'adapter.targetModules']));
    const help = await rlora(['sweep', '--help']);
    expect(help.code).toBe(0);
    for (const k of keys) expect(help.stdout).toContain(k.split(/[.[\]]+/).filter(Boolean).pop()!);
  });

  it('a bad sweep.json: rlora sweep exits 1 naming the file and the key', async () => {
    const file = writeDefinition('typo.json', { ...DEFINITION, sedes: 3 });
    const r = await rlora(['sweep', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`rlora sweep: ${file}: sedes is not a known key (did you mean seeds?)`);
    const bad = writeDefinition('bad-adapter.json', { ...DEFINITION, variants: [{ name: 'a', adapter: { method: 'rlora', router: 'x' } }] });
    expect((await rlora(['sweep', '--config', bad])).stderr).toContain(`${bad}: variants[0].adapter.router is not a known key`);
    // values only the layer can check: named by the variant
    const combo = writeDefinition('combo.json', { ...DEFINITION, compare: undefined, variants: [{ name: 'a', adapter: { method: 'hydralora', init: { offset: true } } }] });
    const c = await rlora(['sweep', '--config', combo]);
    expect(c.code).toBe(1);
    expect(c.stderr).toMatch(new RegExp(`${combo.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: variants\\[0\\] \\(a\\): adapter .*offset`));
    const missing = writeDefinition('missing.json', { ...DEFINITION, data: { ...DEFINITION.data, test: 'nope.jsonl' } });
    expect((await rlora(['sweep', '--config', missing])).stderr).toContain(`${missing}: data.test: file not found: ${path.join(tmp, 'nope.jsonl')}`);
  });
});

describe('rlora sweep: 2 variants x 2 rates x 2 seeds in 2 workers', () => {
  const file = writeDefinition('sweep.json', DEFINITION);
  const out = path.join(tmp, 'out');
  let killedWith: Map<string, { mtimeMs: number; text: string }>;
  let second: Run;
  let result: SweepResult;

  it('is killed (kill -9) after some jobs finished', async () => {
    let timer: NodeJS.Timeout | undefined;
    const r = await rlora(['sweep', '--config', file], (child) => {
      timer = setInterval(() => {
        if (jobFiles(out).size >= 3) {
          clearInterval(timer);
          process.kill(-child.pid!, 'SIGKILL'); // the sweep and its workers
        }
      }, 10);
    });
    clearInterval(timer);
    expect(r.signal).toBe('SIGKILL');
    killedWith = jobFiles(out);
    expect(killedWith.size).toBeGreaterThanOrEqual(3);
    expect(killedWith.size).toBeLessThan(12); // else the sweep ended before the kill: make its jobs longer
    expect(r.stderr).toMatch(/^\[ 1\/12\] \S+ lr \S+ seed \d on validation: accuracy \d+\.\d%, loss \d\.\d{3}, train loss \d\.\d{3} \(\d+ s\); ETA \d+ (s|min)$/m);
  });

  it('run again, it skips the finished jobs and runs the rest', async () => {
    second = await rlora(['sweep', '--config', file]);
    expect(second.code).toBe(0);
    const k = killedWith.size;
    expect(second.stderr).toContain(`resuming: ${k} of 12 jobs finished earlier (their results are in ${path.join(out, 'jobs')})`);
    const lines = second.stderr.split('\n').filter((l) => /^\[\s*\d+\/12\]/.test(l));
    expect(lines).toHaveLength(12 - k);
    expect(lines[0]).toMatch(new RegExp(`^\\[${String(k + 1).padStart(2)}/12\\]`));
    expect(lines[lines.length - 1]).toMatch(/; done$/);
    const now = jobFiles(out);
    expect(now.size).toBe(12);
    for (const [name, f] of killedWith) expect(now.get(name)).toEqual(f); // not run again, not rewritten
    // the ones that ran are the others
    const ran = lines.map((l) => /\] (\S+) lr (\S+) seed (\d) on (\w+):/.exec(l)!).map(([, v, lr, seed, split]) => path.join(v, `${split}-lr${lr}-seed${seed}.json`));
    expect(ran.sort()).toEqual([...now.keys()].filter((n) => !killedWith.has(n)).sort());
    result = JSON.parse(fs.readFileSync(path.join(out, 'sweep.json'), 'utf8'));
    expect(result.jobs).toEqual({ total: 12, run: 12 - k, reused: k });
    for (const f of ['table.md', 'figure.svg', 'figure.png']) expect(fs.existsSync(path.join(out, f))).toBe(true);
    expect(second.stdout).toContain('| variant | lr | trainable | no | yes | mean | loss | train loss | head cos | tok/s | peak MiB |');
  });

  it('picks each variant\'s rate by the best mean over seeds on validation (recomputed from the job files)', () => {
    for (const variant of ['hydralora', 'rlora']) {
      const means = [0.05, 0.2].map((lr) => {
        const runs = [0, 1].map((seed) => (JSON.parse(fs.readFileSync(path.join(out, 'jobs', variant, `validation-lr${lr}-seed${seed}.json`), 'utf8')) as { result: JobResult }).result);
        expect(runs.map((r) => [r.split, r.learningRate, r.seed, r.steps])).toEqual([['validation', lr, 0, 40], ['validation', lr, 1, 40]]);
        const acc = (runs[0].meanAccuracy + runs[1].meanAccuracy) / 2;
        const loss = (runs[0].meanLoss + runs[1].meanLoss) / 2;
        return { lr, acc, loss };
      });
      // the best mean accuracy; on a tie, the lower mean loss
      const [a, b] = means;
      const best = a.acc > b.acc || (a.acc === b.acc && a.loss <= b.loss) ? a.lr : b.lr;
      expect(result.picks[variant]).toEqual({ learningRate: best, tuned: true });
      expect(result.summary.find((s) => s.variant === variant)!.learningRate).toBe(best);
      const row = result.validation.find((v) => v.variant === variant && v.learningRate === best)!;
      expect(row.picked).toBe(true);
      expect(row.accuracy.mean).toBeCloseTo(means.find((m) => m.lr === best)!.acc, 12);
      // the test runs are the pick's adapters, scored on test without training again: their
      // training numbers are the validation jobs' own (the time of a training is never equal twice)
      for (const seed of [0, 1]) {
        const t = result.runs.find((r) => r.variant === variant && r.seed === seed)!;
        expect([t.split, t.learningRate]).toEqual(['test', best]);
        expect(t.tasks.yes.count).toBe(WORDS.length - 26);
        const v = (JSON.parse(fs.readFileSync(path.join(out, 'jobs', variant, `validation-lr${best}-seed${seed}.json`), 'utf8')) as { result: JobResult }).result;
        expect([t.seconds, t.losses, t.trainLoss, t.tokensPerSecond]).toEqual([v.seconds, v.losses, v.trainLoss, v.tokensPerSecond]);
      }
      // the variant's adapter: its best seed at the picked rate on validation, copied to adapters/<variant>
      const seeds = [0, 1].map((seed) => (JSON.parse(fs.readFileSync(path.join(out, 'jobs', variant, `validation-lr${best}-seed${seed}.json`), 'utf8')) as { result: JobResult }).result);
      const top = seeds[1].meanAccuracy > seeds[0].meanAccuracy || (seeds[1].meanAccuracy === seeds[0].meanAccuracy && seeds[1].meanLoss < seeds[0].meanLoss) ? 1 : 0;
      expect(result.adapters[variant]).toEqual({ dir: path.join(out, 'adapters', variant), learningRate: best, seed: top, chosenOn: 'validation' });
      const saved = path.join(out, 'jobs', variant, 'adapters', `lr${best}-seed${top}`, 'adapter_model.safetensors');
      expect(fs.readFileSync(path.join(out, 'adapters', variant, 'adapter_model.safetensors')).equals(fs.readFileSync(saved))).toBe(true);
    }
    expect(result.evaluatedOn).toBe('test');
    expect(result.runs.map((r) => `${r.seed} ${r.variant}`)).toEqual(['0 hydralora', '0 rlora', '1 hydralora', '1 rlora']);
  });

  it('pickRate: accuracy first, then loss, then the earlier rate; or loss first', () => {
    const row = (learningRate: number, acc: number, loss: number) => ({ learningRate, accuracy: stats([acc]), loss: stats([loss]) });
    expect(pickRate([row(1, 0.5, 2), row(2, 0.6, 3)], 'accuracy')).toBe(2);
    expect(pickRate([row(1, 0.5, 2), row(2, 0.5, 1)], 'accuracy')).toBe(2);
    expect(pickRate([row(1, 0.5, 1), row(2, 0.5, 1)], 'accuracy')).toBe(1);
    expect(pickRate([row(1, NaN, NaN), row(2, 0, 9)], 'accuracy')).toBe(2);
    expect(pickRate([row(1, 0.5, 2), row(2, 0.6, 3)], 'loss')).toBe(1);
  });

  it('the paired difference and its 95% interval, by hand (t quantile for 1 degree of freedom: 12.706)', () => {
    const acc = (variant: string, seed: number): number => {
      const lr = result.picks[variant].learningRate;
      return (JSON.parse(fs.readFileSync(path.join(out, 'jobs', variant, `test-lr${lr}-seed${seed}.json`), 'utf8')) as { result: JobResult }).result.meanAccuracy;
    };
    const d = [acc('rlora', 0) - acc('hydralora', 0), acc('rlora', 1) - acc('hydralora', 1)];
    const mean = (d[0] + d[1]) / 2;
    const sd = Math.sqrt(((d[0] - mean) ** 2 + (d[1] - mean) ** 2) / (2 - 1));
    const half = (12.706 * sd) / Math.sqrt(2);
    expect(t95(1)).toBe(12.706);
    const c = result.comparisons[0];
    expect([c.a, c.b, c.seeds]).toEqual(['rlora', 'hydralora', [0, 1]]);
    expect(c.perSeed[0]).toBeCloseTo(d[0], 12);
    expect(c.perSeed[1]).toBeCloseTo(d[1], 12);
    expect(c.mean).toBeCloseTo(mean, 12);
    expect(c.std).toBeCloseTo(sd, 12);
    expect(c.ci95![0]).toBeCloseTo(mean - half, 12);
    expect(c.ci95![1]).toBeCloseTo(mean + half, 12);
    expect(c.verdict).toBe(mean - half > 0 ? 'wins' : mean + half < 0 ? 'loses' : 'within noise');
    const pts = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;
    expect(second.stdout).toContain(`rlora − hydralora: ${pts(mean)} points (95% interval ${pts(mean - half)} to ${pts(mean + half)} over 2 paired seeds)`);
    // mean ± std per task over the seeds in the table
    const s = result.summary.find((x) => x.variant === 'rlora')!;
    const yes = result.runs.filter((r) => r.variant === 'rlora').map((r) => r.tasks.yes.accuracy);
    expect(s.accuracy.yes).toEqual(stats(yes));
  });

  it('run once more: every job is reused; a job file of a job defined otherwise runs again', async () => {
    const again = await rlora(['sweep', '--config', file]);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('resuming: 12 of 12 jobs finished earlier');
    expect(again.stderr).not.toMatch(/^\[/m);
    expect(again.stdout).toBe(second.stdout);
    // a job file whose job differs (here: its steps) is not taken for this sweep's
    const one = path.join(out, 'jobs', 'rlora', 'validation-lr0.05-seed1.json');
    const f = JSON.parse(fs.readFileSync(one, 'utf8'));
    f.job.steps = 39;
    fs.writeFileSync(one, JSON.stringify(f));
    const third = await rlora(['sweep', '--config', file, '--workers', '1']);
    expect(third.code).toBe(0);
    expect(third.stderr).toContain(`${path.join('jobs', 'rlora', 'validation-lr0.05-seed1.json')} holds a job defined otherwise (steps): running it again`);
    expect(third.stderr.split('\n').filter((l) => /^\[/.test(l))).toEqual([expect.stringMatching(/^\[12\/12\] rlora lr 0\.05 seed 1 on validation: .*; done$/)]);
    expect(JSON.parse(fs.readFileSync(one, 'utf8')).job.steps).toBe(40);
    expect(third.stdout).toBe(second.stdout);
  });
});

describe('sweep() in code', () => {
  it('takes records, writes them to outputDir/data, reports each job; one rate per variant runs no validation jobs', async () => {
    const outputDir = path.join(tmp, 'api');
    const progress: { done: number; total: number; line: string }[] = [];
    const lines: string[] = [];
    const r = await sweep({
      model: base,
      tokenizer: 'byte',
      data: { train: records(WORDS.slice(0, 10)), validation: records(WORDS.slice(20, 22)), maxLength: 16 },
      adapter: { targetModules: /\.(q|v)_proj$/ },
      variants: [
        { name: 'lora', adapter: { method: 'lora', rank: 2 } },
        { name: 'rlora', adapter: { method: 'rlora', rank: 2, heads: 2 }, what: 'R-LoRA, 2 heads' },
      ],
      learningRates: [0.01],
      seeds: 1,
      steps: 3,
      batchSize: 4,
      workers: 2,
      outputDir,
      figure: false,
      log: (l) => lines.push(l),
      onProgress: (p) => progress.push({ done: p.done, total: p.total, line: p.line }),
    });
    expect(progress.map((p) => [p.done, p.total])).toEqual([[1, 2], [2, 2]]);
    expect(progress[1].line).toMatch(/; done$/);
    expect(lines[0]).toBe(`sweep: 2 variants (lora, rlora) x 1 seed: 2 validation jobs; 2 workers x 1 thread, cpu; into ${outputDir}`);
    expect(r.evaluatedOn).toBe('validation');
    expect(r.validation).toEqual([]);
    expect(r.picks).toEqual({ lora: { learningRate: 0.01, tuned: false }, rlora: { learningRate: 0.01, tuned: false } });
    expect(r.summary.map((s) => [s.variant, s.what, s.meanAccuracy.n])).toEqual([['lora', 'lora, rank 2', 1], ['rlora', 'R-LoRA, 2 heads', 1]]);
    expect(r.summary[0].meanHeadCosine).toBeNull(); // one head
    expect(r.summary[1].headCosine).toEqual({ q_proj: expect.any(Object), v_proj: expect.any(Object) });
    expect(fs.readFileSync(path.join(outputDir, 'data', 'train.jsonl'), 'utf8')).toBe(jsonl(records(WORDS.slice(0, 10))));
    expect(r.files).toEqual(['table.md', 'sweep.json']);
    expect(JSON.parse(fs.readFileSync(path.join(outputDir, 'sweep.json'), 'utf8')).definition.data.train).toBe(path.join(outputDir, 'data', 'train.jsonl'));
  });

  it('refuses a bad definition before starting anything', async () => {
    await expect(sweep({ model: base, data: { train: 'x', validation: 'y' }, variants: [{ name: 'a' }], steps: 1, outputDir: tmp, learningRate: 1 } as never)).rejects.toThrow(
      /^sweep: learningRate is not a known key \(did you mean learningRates\?\)/,
    );
  });
});
