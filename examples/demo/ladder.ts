// The R-LoRA ladder (`npm run demo -- --ladder`): from HydraLoRA to R-LoRA one of R-LoRA's choices
// at a time, plus the published code's init scale as its own row, on the demo's tasks. Each rung's
// learning rate is picked on the validation split by the mean over the seeds (LADDER_GRID), the
// picks are trained again and scored on the test split, and each rung is compared with HydraLoRA
// seed by seed (95% interval). `--budget K` trains the picks for K times the steps, reusing the
// rates picked at the default budget (nothing is tuned at K), to see whether the ordering holds.
import * as fs from 'fs';
import * as path from 'path';

import { AdapterOptions, PairedDifference, Stat, sweep, SweepResult } from '../../lib';
import { buildTasks, majorityRates, TASKS } from './data';
import { baseInfo, DemoOptions, demoSweep, Settings, settingsOf, workersOf } from './run';

/** The learning rates each rung tries on validation. */
export const LADDER_GRID = [5e-4, 7e-4, 1e-3, 1.5e-3, 2e-3, 3e-3];

export interface Rung {
  name: string;
  /** What this rung changes from the one before it (for the last: from R-LoRA). */
  change: string;
  options: Omit<AdapterOptions, 'targetModules' | 'seed'>;
}

/**
 * The ladder. HydraLoRA and R-LoRA differ in five choices (lib/layer.ts's presets): where dropout
 * stands (on x, or on A x), one dropout mask or one per head, rsLoRA's scaling alpha / sqrt(r),
 * the initialisation (HydraLoRA: Kaiming A, zero heads, Kaiming router; R-LoRA: unit-variance A and
 * heads, zero router, and the offset that makes the layer start at the base), and R-LoRA's stable
 * scale c / sqrt(gamma) of A and the heads. Each rung adds one to the rung before; the last adds
 * the stable scale and is the R-LoRA preset itself. The published code's init
 * (`init.scale: 'reference'`: its scale sits inside its per-head loop) follows as its own row.
 */
export function ladder(s: Settings): Rung[] {
  const common = { rank: s.rank, heads: s.heads, alpha: s.alpha, dropout: s.dropout };
  const hydra = { method: 'hydralora', ...common } as const;
  const onRank = { ...hydra, dropoutOn: 'rank' } as const;
  const perHead = { ...onRank, multiHeadDropout: true };
  const rs = { ...perHead, rankStabilization: true };
  const random = { ...rs, init: { a: 'unit', b: 'unit', router: 'zeros', offset: true } } as const;
  const rlora = { method: 'rlora', ...common } as const;
  return [
    { name: 'hydralora', change: `HydraLoRA (r ${s.rank}, N ${s.heads})`, options: hydra },
    { name: 'hydra+rank-dropout', change: '+ dropout on A x instead of x (one mask for all heads)', options: onRank },
    { name: 'hydra+head-masks', change: '+ a dropout mask per head', options: perHead },
    { name: 'hydra+rslora', change: '+ rsLoRA scaling alpha / sqrt(r)', options: rs },
    { name: 'hydra+random-init', change: "+ R-LoRA's init: unit-variance A and heads, zero router, offset (no init scale)", options: random },
    { name: 'rlora', change: '+ the stable init scale c / sqrt(gamma): the R-LoRA preset', options: rlora },
    { name: 'rlora-reference-init', change: "R-LoRA with the published code's init scale (init.scale 'reference')", options: { ...rlora, init: { scale: 'reference' } } },
  ];
}

export interface LadderRow {
  variant: string;
  change: string;
  learningRate: number;
  /** Mean accuracy over the tasks on validation at the pick (where it was picked: the 1x budget), over seeds. */
  validation: Stat | null;
  /** Mean accuracy over the tasks on test, over seeds. */
  test: Stat;
  trainLoss: Stat;
  /** This rung − HydraLoRA on test, per seed, with its 95% interval (null for HydraLoRA). */
  vsHydralora: PairedDifference | null;
}

export interface LadderResults {
  command: string;
  settings: Settings;
  budget: number;
  steps: number;
  grid: number[];
  seeds: number[];
  rows: LadderRow[];
  /** Rungs by mean test accuracy, best first; with --budget, also at the 1x budget. */
  ordering: string[];
  orderingAt1x?: string[];
  sweep: string;
  totalSeconds: number;
}

const pct = (v: Stat): string => `${(100 * v.mean).toFixed(1)}${v.n > 1 ? ` ± ${(100 * v.std).toFixed(1)}` : ''}`;
const pts = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;

/** The ladder's table (markdown). */
export function ladderTable(rows: LadderRow[], o: { budget: number; steps: number; batchSize: number; seeds: number }): string {
  const lines = [
    `| rung | change | lr | validation acc | test acc | train loss | − HydraLoRA on test (95% interval) |`,
    `| --- | --- | ---: | ---: | ---: | ---: | --- |`,
    ...rows.map((r) => {
      const d = r.vsHydralora;
      const diff = !d ? '' : d.ci95 ? `${pts(d.mean)} (${pts(d.ci95[0])} to ${pts(d.ci95[1])}): ${d.verdict}` : `${pts(d.mean)} (one seed)`;
      return `| ${r.variant} | ${r.change} | ${r.learningRate} | ${r.validation ? pct(r.validation) : '-'} | ${pct(r.test)} | ${r.trainLoss.mean.toFixed(3)} | ${diff} |`;
    }),
  ];
  const head =
    `R-LoRA ladder: ${o.steps} steps of ${o.batchSize}${o.budget > 1 ? ` (${o.budget} times the default budget, at the rates picked there)` : ''}; ` +
    `exact-match accuracy (%) averaged over the tasks, mean ± std over ${o.seeds} seed${o.seeds === 1 ? '' : 's'}; lr picked on validation by the mean over seeds; train loss: the last 10 steps.`;
  return `${head}\n\n${lines.join('\n')}\n`;
}

function ordering(rows: { variant: string; test: Stat }[]): string[] {
  return [...rows].sort((a, b) => b.test.mean - a.test.mean).map((r) => r.variant);
}

export async function runLadder(o: DemoOptions = {}): Promise<LadderResults> {
  const log = o.log ?? ((line: string) => console.log(line));
  const T0 = performance.now();
  const s = settingsOf(o);
  const budget = o.budget ?? 1;
  const grid = o.rates ?? LADDER_GRID;
  const { device, threads, workers } = workersOf(o);
  const base = baseInfo(o.baseDir);
  const root = path.resolve(o.out ?? 'demo-out', 'ladder');
  const outputDir = budget === 1 ? root : path.join(root, `budget-${budget}`);
  const rungs = ladder(s);
  const seeds = Array.from({ length: Math.max(1, s.seeds) }, (_, i) => i);

  // --budget K: the rates the ladder picked at the default budget
  let at1x: SweepResult | undefined;
  if (budget > 1) {
    const file = path.join(root, 'sweep.json');
    if (!fs.existsSync(file)) throw new Error(`--budget ${budget} reuses the learning rates the ladder picked at the default budget, in ${file}: run \`npm run demo -- --ladder\` (with the same options, without --budget) first`);
    at1x = JSON.parse(fs.readFileSync(file, 'utf8')) as SweepResult;
    const missing = rungs.filter((r) => !at1x!.picks[r.name]);
    if (missing.length) throw new Error(`${file} has no learning rate for ${missing.map((r) => r.name).join(', ')}: it is not this ladder's; run \`npm run demo -- --ladder\` again`);
    if (at1x.definition.steps !== s.steps) throw new Error(`${file} was run with ${at1x.definition.steps} steps, not ${s.steps}: give the same --quick/--steps as there`);
  }

  const split = buildTasks(s.sizes, 0, TASKS);
  const majority = majorityRates(split.test);
  log(
    `rlora demo, R-LoRA ladder (${s.name}${budget > 1 ? `, ${budget}x budget: ${budget * s.steps} steps at the rates picked at ${s.steps}` : `, rates ${grid.join(', ')} picked on validation`}): ` +
      `${rungs.length} rungs x ${seeds.length} seed${seeds.length === 1 ? '' : 's'} on ${TASKS.length} tasks; ${device}, ${workers} worker process(es) x ${threads} thread(s)`,
  );
  log(`data: ${split.train.length} train, ${split.validation.length} validation, ${split.test.length} test examples; majority answer rates ${TASKS.map((t) => `${t} ${(100 * majority[t].rate).toFixed(0)}%`).join(', ')}`);
  const res = await sweep({
    ...demoSweep({ settings: { ...s, steps: budget * s.steps }, split, withTest: true, seeds, device, threads, workers, baseDir: base.dir, outputDir }),
    variants: rungs.map((r) => ({ name: r.name, what: r.change, adapter: r.options, learningRates: at1x ? [at1x.picks[r.name].learningRate] : grid })),
    compare: rungs.slice(1).map((r) => [r.name, 'hydralora'] as [string, string]),
    title: `rlora demo, R-LoRA ladder (${s.name}, ${budget * s.steps} steps): ${TASKS.length} tasks`,
    log,
  });

  const validationOf = (r: SweepResult, name: string): Stat | null => r.validation.find((v) => v.variant === name && v.picked)?.accuracy ?? null;
  const rows: LadderRow[] = rungs.map((rung) => {
    const sum = res.summary.find((x) => x.variant === rung.name)!;
    return {
      variant: rung.name,
      change: rung.change,
      learningRate: sum.learningRate,
      validation: validationOf(at1x ?? res, rung.name),
      test: sum.meanAccuracy,
      trainLoss: sum.trainLoss,
      vsHydralora: res.comparisons.find((c) => c.a === rung.name) ?? null,
    };
  });
  const table = ladderTable(rows, { budget, steps: budget * s.steps, batchSize: s.batchSize, seeds: seeds.length });
  const result: LadderResults = {
    command: `npm run demo --${process.argv.slice(2).length ? ' ' + process.argv.slice(2).join(' ') : ''}`,
    settings: s,
    budget,
    steps: budget * s.steps,
    grid: at1x ? [] : grid,
    seeds,
    rows,
    ordering: ordering(rows),
    ...(at1x ? { orderingAt1x: ordering(rungs.map((r) => ({ variant: r.name, test: at1x!.summary.find((x) => x.variant === r.name)!.meanAccuracy }))) } : {}),
    sweep: path.join(outputDir, 'sweep.json'),
    totalSeconds: (performance.now() - T0) / 1000,
  };
  fs.writeFileSync(path.join(outputDir, 'ladder.md'), table);
  fs.writeFileSync(path.join(outputDir, 'ladder.json'), JSON.stringify(result, null, 2) + '\n');
  log(`\n${table}`);
  log(`by mean test accuracy at ${budget * s.steps} steps: ${result.ordering.join(' > ')}`);
  if (result.orderingAt1x) {
    const same = result.orderingAt1x.join() === result.ordering.join();
    log(`by mean test accuracy at ${s.steps} steps: ${result.orderingAt1x.join(' > ')} (${same ? 'the same order' : 'the order changes'})`);
  }
  log(`wrote ${path.join(outputDir, 'ladder.md')}, ${path.join(outputDir, 'ladder.json')} and the sweep's files (table.md with every task, sweep.json, figure.svg/png) in ${outputDir}`);
  return result;
}
