// Evaluation metrics and predictions, eval-<step>.jsonl, early stopping, saveBest and
// loadBestAtEnd, and their run.json keys. Expected numbers are computed here, independently.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, ByteTokenizer, HFConfig, loadSafetensors, Model, MultiTaskDataset } from '../lib';
import { parseRunConfig } from '../lib/cli/runconfig';
import { runJsonTrainerKeys } from '../lib/trainer/options';
import { BUILTIN_METRICS, EvalRecord, Prediction, Trainer, TrainerOptions } from '../lib/trainer';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-eval-');

const tok = new ByteTokenizer();
const CFG: HFConfig = { ...TINY_BYTE_CONFIG, num_hidden_layers: 1 };
const TRAIN = [
  ...['cat', 'dog', 'fish', 'bird'].map((w) => ({ task: 'upper', prompt: `up ${w}:`, response: w.toUpperCase() })),
  ...['12', '7', '345'].map((n) => ({ task: 'reverse', prompt: `rev ${n}:`, response: [...n].reverse().join('') })),
];
const EVAL = [
  { task: 'upper', prompt: 'up cow:', response: 'COW' },
  { task: 'upper', prompt: 'up ant:', response: 'ANT' },
  { task: 'reverse', prompt: 'rev 60:', response: '06' },
];
const data = (rows: typeof TRAIN): MultiTaskDataset => MultiTaskDataset.fromArray(rows, { tokenizer: tok, maxLength: 20 });
const setup = (seed = 1): { model: Model; adapter: Adapter } => {
  const model = Model.fromConfig(CFG, { seed });
  return { model, adapter: Adapter.attach(model, { method: 'rlora', heads: 2, rank: 2, dropout: 0, targetModules: ['up_proj'], seed: 3 }) };
};
const base = { batchSize: 4, learningRate: 1e-2, seed: 1, progress: false, evalExtraTokens: 2 } satisfies TrainerOptions;
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Character F1 written out here, independently of BUILTIN_METRICS.charF1. */
function charF1(p: string, r: string): number {
  const a = [...p], b = [...r];
  if (a.length === 0 && b.length === 0) return 1;
  const left = [...b];
  let common = 0;
  for (const c of a) {
    const i = left.indexOf(c);
    if (i >= 0) {
      common++;
      left.splice(i, 1);
    }
  }
  return common === 0 ? 0 : (2 * common) / (a.length + b.length); // 2PR/(P+R) with P = c/|a|, R = c/|b|
}

describe('built-in metrics', () => {
  it('exactMatch and charF1 on strings worked out by hand', () => {
    expect(BUILTIN_METRICS.exactMatch(' COW\n', 'COW')).toBe(1);
    expect(BUILTIN_METRICS.exactMatch('CO', 'COW')).toBe(0);
    expect(BUILTIN_METRICS.charF1('abc', 'abd')).toBeCloseTo(2 / 3, 15); // 2 shared: P = R = 2/3
    expect(BUILTIN_METRICS.charF1('aab', 'ab')).toBeCloseTo(0.8, 15); // P = 2/3, R = 1
    expect(BUILTIN_METRICS.charF1('', '')).toBe(1);
    expect(BUILTIN_METRICS.charF1('', 'x')).toBe(0);
    expect(BUILTIN_METRICS.charF1('xyz', 'abc')).toBe(0);
    expect(BUILTIN_METRICS.charF1('é€', '€')).toBeCloseTo((2 * 0.5 * 1) / 1.5, 15); // code points, not bytes
    expect((runJsonTrainerKeys().metrics.spec as unknown as { values: string[] }).values).toEqual(Object.keys(BUILTIN_METRICS)); // run.json's list is made from it
  });
});

describe('evaluate: metrics and predictions', () => {
  it('returns every prediction; custom and built-in metrics are their per-task means', async () => {
    const { model, adapter } = setup();
    const calls: [string, string, string][] = [];
    const t = new Trainer(model, adapter, {
      ...base,
      metrics: {
        chars: (p, r, task) => {
          calls.push([p, r, task]);
          return [...p].length;
        },
        refChars: (_p, r) => r.length,
        charF1: 'charF1',
        exactMatch: 'exactMatch',
      },
    });
    const ds = data(EVAL);
    const { tasks, predictions } = await t.evaluate(ds, { returnPredictions: true });
    expect(predictions.map((p) => [p.task, p.prompt, p.reference])).toEqual(EVAL.map((e) => [e.task, e.prompt, e.response]));
    // the metric saw exactly the predictions and references returned
    expect(calls).toEqual(predictions.map((p) => [p.prediction, p.reference, p.task]));
    // predictions are the greedy generations, decoded: generate independently and compare
    for (const [i, p] of predictions.entries()) {
      const e = ds.get(i);
      const prompt = e.inputIds.slice(0, e.promptLength);
      // each row generates up to its own response length + evalExtraTokens (2)
      const want = tok.encode(p.reference).length;
      const out = (await model.generate([prompt], { maxNewTokens: want + 2, eosTokenId: [tok.eosTokenId!] }))[0].slice(prompt.length);
      const stop = out.indexOf(tok.eosTokenId!);
      expect(p.prediction).toBe(tok.decode(stop < 0 ? out : out.slice(0, stop), { skipSpecialTokens: true }));
    }
    for (const task of ['reverse', 'upper']) {
      const mine = predictions.filter((p) => p.task === task);
      expect(tasks[task].count).toBe(mine.length);
      expect(tasks[task].accuracy).toBe(mean(mine.map((p) => (p.correct ? 1 : 0))));
      expect(tasks[task].metrics!.chars).toBeCloseTo(mean(mine.map((p) => [...p.prediction].length)), 12);
      expect(tasks[task].metrics!.refChars).toBe(mean(mine.map((p) => p.reference.length)));
      expect(tasks[task].metrics!.charF1).toBeCloseTo(mean(mine.map((p) => charF1(p.prediction, p.reference))), 12);
      expect(tasks[task].metrics!.exactMatch).toBe(mean(mine.map((p) => (p.prediction.trim() === p.reference.trim() ? 1 : 0))));
    }
    expect(tasks.reverse.metrics!.refChars).toBe(2);
    expect(tasks.upper.metrics!.refChars).toBe(3);
    // without returnPredictions: the same per-task record
    calls.length = 0;
    expect(await t.evaluate(ds)).toEqual(tasks);
    // no metrics: no metrics key (the record is as before)
    const t2 = new Trainer(model, adapter, base);
    expect(Object.keys((await t2.evaluate(ds)).upper).sort()).toEqual(['accuracy', 'count', 'loss']);
    await expect(t2.evaluate(ds, { returnPrediction: true } as never)).rejects.toThrow('unknown option "returnPrediction"');
  });

  it('evalBatchSize batches evaluation: every batch size gives the same predictions and per-task loss', async () => {
    const { model, adapter } = setup();
    const ds = data([...EVAL, ...TRAIN]);
    const one = await new Trainer(model, adapter, { ...base, evalBatchSize: 1 }).evaluate(ds, { returnPredictions: true });
    for (const evalBatchSize of [2, 10]) {
      const r = await new Trainer(model, adapter, { ...base, evalBatchSize }).evaluate(ds, { returnPredictions: true });
      // one row at a time pads nothing, so a wider batch only adds padding the mask hides
      expect(r.predictions).toEqual(one.predictions);
      for (const task of Object.keys(one.tasks)) {
        expect(r.tasks[task].accuracy).toBe(one.tasks[task].accuracy);
        expect(r.tasks[task].loss).toBeCloseTo(one.tasks[task].loss, 5);
      }
    }
    expect(() => new Trainer(model, adapter, { evalBatchSize: 0 })).toThrow('evalBatchSize must be an integer >= 1');
  });

  it('refuses an unknown option, naming it and the closest known one', () => {
    const { model, adapter } = setup();
    expect(() => new Trainer(model, adapter, { learningrate: 1e-3 } as never)).toThrow(/Trainer: unknown option "learningrate" \(did you mean "learningRate"\?\); known: learningRate, epochs/);
    expect(() => new Trainer(model, adapter, { zzz: 1 } as never)).toThrow(/^Trainer: unknown option "zzz"; known: /);
    expect(() => new Trainer(model, adapter, 3 as never)).toThrow('Trainer: options must be an object, got 3');
  });

  it('refuses bad metrics, naming them', () => {
    const { model, adapter } = setup();
    const make = (o: TrainerOptions): Trainer => new Trainer(model, adapter, o);
    expect(() => make({ metrics: { f1: 'f1' as never } })).toThrow(/metrics\.f1 must be a function .* or one of "exactMatch", "charF1", got "f1"/);
    expect(() => make({ metrics: { loss: () => 0 } })).toThrow('metrics.loss: the name "loss" is taken');
    expect(() => make({ metrics: [] as never })).toThrow('metrics must be an object');
  });
});

describe('fit: eval files, early stopping, the best checkpoint', () => {
  /** A metric whose value at the k-th evaluation is seq[k] (advanced by onEval). */
  const scripted = (seq: number[]): { metric: () => number; onEval: (r: EvalRecord) => void } => {
    let k = 0;
    return { metric: () => seq[k], onEval: () => void k++ };
  };

  it('writes outputDir/eval-<step>.jsonl at each evaluation, atomically, matching the record', async () => {
    const { model, adapter } = setup();
    const dir = path.join(tmp, 'eval-files');
    const t = new Trainer(model, adapter, { ...base, maxSteps: 4, evalEvery: 2, outputDir: dir, metrics: { chars: (p) => [...p].length } });
    const h = await t.fit(data(TRAIN), { evalDataset: data(EVAL) });
    expect(h.evals.map((e) => e.step)).toEqual([2, 4]);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('eval-')).sort()).toEqual(['eval-2.jsonl', 'eval-4.jsonl']);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]); // no temporary files left
    for (const rec of h.evals) {
      const lines = fs.readFileSync(path.join(dir, `eval-${rec.step}.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Prediction);
      expect(lines.map((p) => Object.keys(p).sort())).toEqual(EVAL.map(() => ['correct', 'prediction', 'prompt', 'reference', 'task']));
      expect(lines.map((p) => p.reference)).toEqual(EVAL.map((e) => e.response));
      for (const task of ['reverse', 'upper']) {
        const mine = lines.filter((p) => p.task === task);
        expect(rec.tasks[task].metrics!.chars).toBeCloseTo(mean(mine.map((p) => [...p.prediction].length)), 12);
        expect(rec.tasks[task].accuracy).toBe(mean(mine.map((p) => (p.correct ? 1 : 0))));
      }
    }
    // the log carries the metrics too
    const logged = fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.type === 'eval');
    expect(logged.map((r) => r.tasks.upper.metrics.chars)).toEqual(h.evals.map((e) => e.tasks.upper.metrics!.chars));
  });

  it('stops when the metric has not improved by more than minDelta for patience evaluations (scripted values)', async () => {
    // reference rule, written out here: count evaluations since the last improvement > minDelta
    const expectStop = (seq: number[], patience: number, minDelta: number, mode: 'min' | 'max'): number => {
      let best: number | undefined, bad = 0;
      for (let i = 0; i < seq.length; i++) {
        const better = best === undefined || (mode === 'max' ? seq[i] - best > minDelta : best - seq[i] > minDelta);
        if (better) [best, bad] = [seq[i], 0];
        else if (++bad >= patience) return i + 1;
      }
      return -1;
    };
    const cases: [number[], number, number, 'min' | 'max' | undefined][] = [
      [[0.5, 0.6, 0.62, 0.64, 0.9, 0.9, 0.9, 0.9], 2, 0.05, undefined], // max by default: 0.62 and 0.64 are within 0.05 of 0.6
      [[3, 2, 2.5, 1.99, 1.5, 1.6, 1.7, 1.8], 2, 0, 'min'],
    ];
    for (const [seq, patience, minDelta, mode] of cases) {
      const stopAt = expectStop(seq, patience, minDelta, mode ?? 'max');
      expect(stopAt).toBeGreaterThan(0);
      const { model, adapter } = setup();
      const s = scripted(seq);
      const t = new Trainer(model, adapter, { ...base, maxSteps: 8, evalEvery: 1, metrics: { score: s.metric }, earlyStopping: { metric: 'score', patience, minDelta, ...(mode ? { mode } : {}) } });
      const h = await t.fit(data(TRAIN), { evalDataset: data(EVAL), onEval: s.onEval });
      expect(h.stopped).toBe('earlyStopping');
      expect(h.steps.length).toBe(stopAt);
      expect(h.evals.map((e) => e.tasks.upper.metrics!.score)).toEqual(seq.slice(0, stopAt));
    }
    expect(expectStop([0.5, 0.6, 0.62, 0.64], 2, 0.05, 'max')).toBe(4);
    expect(expectStop([3, 2, 2.5, 1.99, 1.5, 1.6, 1.7], 2, 0, 'min')).toBe(7);
  });

  it('saveBest keeps the best checkpoint through keepCheckpoints; loadBestAtEnd loads its weights back', async () => {
    const { model, adapter } = setup();
    const dir = path.join(tmp, 'best');
    const s = scripted([0.3, 0.9, 0.5, 0.4, 0.2]); // best at the 2nd evaluation: step 2
    const t = new Trainer(model, adapter, {
      ...base, maxSteps: 5, evalEvery: 1, saveEvery: 1, keepCheckpoints: 1, outputDir: dir,
      metrics: { score: s.metric }, saveBest: 'score', loadBestAtEnd: true,
    });
    const h = await t.fit(data(TRAIN), { evalDataset: data(EVAL), onEval: s.onEval });
    expect(h.stopped).toBe('completed');
    expect(h.bestCheckpoint).toBe(path.join(dir, 'checkpoint-2'));
    expect(h.bestMetric).toBe(0.9);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-2', 'checkpoint-5']);
    const weights = (d: string): Record<string, number[]> =>
      Object.fromEntries(Object.entries(loadSafetensors(path.join(d, 'adapter_model.safetensors'))).map(([k, v]) => [k, Array.from(v.data() as Float32Array)]));
    const now = Object.fromEntries(Object.entries(adapter.stateDict()).map(([k, v]) => [k, Array.from(v.data() as Float32Array)]));
    const best = weights(path.join(dir, 'checkpoint-2'));
    const last = weights(path.join(dir, 'checkpoint-5'));
    expect(Object.fromEntries(Object.entries(now).map(([k, v]) => [k.replace(/^base_model\.model\./, ''), v]))).toEqual(
      Object.fromEntries(Object.entries(best).map(([k, v]) => [k.replace(/^base_model\.model\./, ''), v])),
    );
    expect(last).not.toEqual(best); // training went on after step 2
    // the best checkpoint records itself as the best
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint-5', 'trainer_state.json'), 'utf8'));
    expect(state.best.save).toEqual({ value: 0.9, checkpoint: path.join(dir, 'checkpoint-2') });
  });

  it('refuses early stopping and saveBest without evaluations, with errors that say what is needed', async () => {
    const { model, adapter } = setup();
    const make = (o: TrainerOptions): Trainer => new Trainer(model, adapter, { ...base, ...o });
    expect(() => make({ earlyStopping: { metric: 'loss' } })).toThrow('earlyStopping needs evalEvery > 0 (evaluations during training) and an evalDataset in fit(); evalEvery is 0');
    expect(() => make({ evalEvery: 1, earlyStopping: { metric: 'f1' } })).toThrow('earlyStopping.metric must be one of "loss", "accuracy" ("loss", "accuracy" or a name of metrics), got "f1"');
    expect(() => make({ evalEvery: 1, earlyStopping: { metric: 'loss', patience: 0 } })).toThrow('earlyStopping.patience must be an integer >= 1, got 0');
    expect(() => make({ evalEvery: 1, earlyStopping: { metric: 'loss', minDelta: -1 } })).toThrow('earlyStopping.minDelta must be a finite number >= 0, got -1');
    expect(() => make({ evalEvery: 1, earlyStopping: { metric: 'loss', mode: 'down' as never } })).toThrow('earlyStopping.mode must be one of "min", "max", got "down"');
    expect(() => make({ evalEvery: 1, earlyStopping: { metric: 'loss', patiance: 2 } as never })).toThrow('earlyStopping.patiance is not a known key (did you mean earlyStopping.patience?); known keys of earlyStopping: metric, patience, minDelta, mode');
    expect(() => make({ evalEvery: 1, saveBest: 'loss' })).toThrow('saveBest needs outputDir');
    expect(() => make({ outputDir: tmp, saveBest: 'loss' })).toThrow('saveBest needs evalEvery > 0');
    expect(() => make({ outputDir: tmp, loadBestAtEnd: true })).toThrow('loadBestAtEnd needs saveBest');
    const t = make({ evalEvery: 1, maxSteps: 1, earlyStopping: { metric: 'accuracy' } });
    await expect(t.fit(data(TRAIN))).rejects.toThrow('earlyStopping needs an evalDataset: pass fit(train, {evalDataset})');
  });
});

// Metric functions cannot be saved in a checkpoint: resume used to drop them silently.
describe('Trainer.resume and metric functions', () => {
  it('refuses until the run\'s metric functions are passed again, then evaluates them', async () => {
    const dir = path.join(tmp, 'custom-metrics');
    const lengthRatio = (p: string, r: string): number => p.length / Math.max(1, r.length);
    const { model, adapter } = setup();
    await new Trainer(model, adapter, { ...base, maxSteps: 2, outputDir: dir, metrics: { lengthRatio, exactMatch: 'exactMatch' } }).fit(data(TRAIN));
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint-2', 'trainer_state.json'), 'utf8'));
    expect(state.customMetrics).toEqual(['lengthRatio']);
    const again = () => Model.fromConfig(CFG, { seed: 1 });
    await expect(Trainer.resume(path.join(dir, 'checkpoint-2'), again(), { maxSteps: 3 })).rejects.toThrow(
      `${path.join(dir, 'checkpoint-2', 'trainer_state.json')}: the run evaluated the metric function lengthRatio, which a checkpoint cannot hold: pass it again, Trainer.resume(dir, model, {metrics: {lengthRatio}})`,
    );
    const resumed = await Trainer.resume(path.join(dir, 'checkpoint-2'), again(), { maxSteps: 3, metrics: { lengthRatio, exactMatch: 'exactMatch' } });
    const ev = await resumed.evaluate(data(EVAL));
    for (const t of Object.values(ev)) expect(Object.keys(t.metrics ?? {}).sort()).toEqual(['exactMatch', 'lengthRatio']);
  });
});

describe('run.json keys', () => {
  const cfg = (trainer: Record<string, unknown>, withEval = true): unknown => ({
    model: 'm', data: { train: 't.jsonl', ...(withEval ? { eval: 'e.jsonl' } : {}) }, adapter: { targetModules: ['q_proj'] }, outputDir: 'out', trainer,
  });
  it('maps built-in metric names and checks earlyStopping, saveBest and loadBestAtEnd', () => {
    const c = parseRunConfig(cfg({ metrics: ['charF1'], evalEvery: 5, earlyStopping: { metric: 'charF1', patience: 3 }, saveBest: { metric: 'loss', mode: 'min' }, loadBestAtEnd: true }), 'run.json');
    expect(c.trainer.metrics).toEqual({ charF1: 'charF1' });
    expect(c.trainer.earlyStopping).toEqual({ metric: 'charF1', patience: 3 });
    const problems = (t: Record<string, unknown>, withEval = true): string => {
      try {
        parseRunConfig(cfg(t, withEval), 'run.json');
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    };
    expect(problems({ metrics: ['bleu'] })).toContain('trainer.metrics[0] must be one of "exactMatch", "charF1", got "bleu"');
    expect(problems({ evalEvery: 1, earlyStopping: { metric: 'charF1' } })).toContain('trainer.earlyStopping.metric must be one of "loss", "accuracy"');
    expect(problems({ earlyStopping: { metric: 'loss' } })).toContain('trainer.earlyStopping needs trainer.evalEvery > 0');
    expect(problems({ evalEvery: 1, saveBest: 'accuracy' }, false)).toContain('trainer.saveBest needs data.eval');
    expect(problems({ evalEvery: 1, earlyStopping: { metric: 'loss', patience: 0 } })).toContain('trainer.earlyStopping.patience must be an integer >= 1, got 0');
    expect(problems({ evalEvery: 1, earlyStopping: { metric: 'loss', patients: 2 } })).toContain('trainer.earlyStopping.patients is not a known key');
    expect(problems({ loadBestAtEnd: true })).toContain('trainer.loadBestAtEnd needs trainer.saveBest');
    expect(problems({ evalEvery: 1, saveBest: 3 })).toContain('trainer.saveBest must be string or an object, got 3');
  });
});

describe('rlora train: built-in metrics, saveBest, --max-steps on resume', () => {
  /** A folder with the model (seed 5), train.jsonl and eval.jsonl for a run.json. */
  const runFolder = (name: string): string => {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    Model.fromConfig(CFG, { seed: 5 }).save(path.join(dir, 'model'));
    const jsonl = (rows: typeof TRAIN): string => rows.map((r) => JSON.stringify(r) + '\n').join('');
    fs.writeFileSync(path.join(dir, 'train.jsonl'), jsonl(TRAIN));
    fs.writeFileSync(path.join(dir, 'eval.jsonl'), jsonl(EVAL));
    return dir;
  };
  const cli = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete env.NODE_OPTIONS;
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), ...args], { cwd: path.join(__dirname, '..'), env, encoding: 'utf8', timeout: 60_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('trains 2 steps, resumes with --max-steps 4 (a note, the schedule for 4), writes eval files and the best checkpoint', () => {
    const dir = runFolder('cli');
    const run = {
      model: 'model', tokenizer: 'byte', data: { train: 'train.jsonl', eval: 'eval.jsonl', maxLength: 20 },
      adapter: { targetModules: ['up_proj'], rank: 2, heads: 2, dropout: 0 },
      trainer: { maxSteps: 2, batchSize: 4, learningRate: 1e-2, warmupSteps: 0, evalEvery: 1, evalExtraTokens: 1, metrics: ['charF1', 'exactMatch'], saveBest: 'loss', progress: false },
      outputDir: 'out',
    };
    fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify(run));
    const out = path.join(dir, 'out');
    const r1 = cli(['train', '--config', path.join(dir, 'run.json'), '--threads', '1']);
    expect({ code: r1.code, stderr: r1.code === 0 ? '' : r1.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r1.stdout).toMatch(/^upper: charF1 \d\.\d{4}, exactMatch \d\.\d{4}$/m);
    expect(r1.stderr).toMatch(/^best checkpoint .*checkpoint-\d \(eval loss /m);
    const r2 = cli(['train', '--config', path.join(dir, 'run.json'), '--threads', '1', '--resume', path.join(out, 'checkpoint-2'), '--max-steps', '4']);
    expect({ code: r2.code, stderr: r2.code === 0 ? '' : r2.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r2.stderr).toContain(`with maxSteps 4 instead of its 2: the cosine learning-rate schedule is recomputed for 4 steps in all (2 more)`);
    expect(r2.stderr).toContain('resume     ' + path.join(out, 'checkpoint-2') + ': step 2 of 4');
    const steps = fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === undefined);
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    // steps 3 and 4 follow cosine for 4 steps (no warm-up): lr * 0.5 * (1 + cos(pi * s / 4)), s = step - 1
    for (const s of steps.slice(2)) expect(Math.abs(s.lr - 1e-2 * 0.5 * (1 + Math.cos((Math.PI * (s.step - 1)) / 4)))).toBeLessThan(1e-15);
    expect(fs.readdirSync(out).filter((f) => /^eval-\d+\.jsonl$/.test(f)).sort()).toEqual(['eval-1.jsonl', 'eval-2.jsonl', 'eval-3.jsonl', 'eval-4.jsonl']);
  });

  // with loadBestAtEnd, adapter/ holds the best checkpoint's weights: the table printed is that
  // checkpoint's evaluation (it used to be the last one)
  it('with loadBestAtEnd, the final table is the evaluation of the adapter written', () => {
    const dir = runFolder('cli-best');
    // "best" is the highest evaluation loss here (mode max), so that the best is an early step
    const run = {
      model: 'model', tokenizer: 'byte', data: { train: 'train.jsonl', eval: 'eval.jsonl', maxLength: 20 },
      adapter: { targetModules: ['up_proj', 'down_proj'], rank: 2, heads: 2, dropout: 0 },
      trainer: { maxSteps: 5, batchSize: 4, learningRate: 5e-2, schedule: 'constant', warmupSteps: 0, evalEvery: 1, evalExtraTokens: 1, saveBest: { metric: 'loss', mode: 'max' }, loadBestAtEnd: true, progress: false },
      outputDir: 'out',
    };
    fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify(run));
    const r = cli(['train', '--config', path.join(dir, 'run.json'), '--threads', '1']);
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    const evals = fs.readFileSync(path.join(dir, 'out', 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === 'eval');
    const meanLoss = (e: { tasks: Record<string, { loss: number }> }): number => mean(Object.values(e.tasks).map((t) => t.loss));
    const best = evals.reduce((a, b) => (meanLoss(b) > meanLoss(a) ? b : a));
    expect(best.step).toBeLessThan(5); // the case this test is about: the best is not the last
    expect(r.stdout).toContain(`(the best checkpoint's, step ${best.step})`);
    expect(r.stdout).toContain(`eval at step ${best.step}, the adapter written (`);
    for (const [task, t] of Object.entries(best.tasks as Record<string, { loss: number }>)) expect(r.stdout).toMatch(new RegExp(`^${task}\\s+${t.loss.toFixed(4)}\\s`, 'm'));
  });
});
