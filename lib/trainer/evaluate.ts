// Evaluation of an adapter on a dataset, per task: mean cross-entropy per response token and
// exact-match accuracy of greedy generation, plus the run's metrics; under data parallelism each
// rank evaluates its share and the results are gathered.
import * as util from 'util';

import * as distributed from '../distributed';
import type { Adapter } from '../adapter';
import { IGNORE_INDEX, MultiTaskDataset, packBatch, promptBatch } from '../data';
import type { Model } from '../model';
import { BUILTIN_METRICS, BuiltinMetric, MetricFn } from './metrics';
import type { Place } from './parallel';
import { byTask, Prediction, TaskEval } from './records';
import { rowLosses } from './step';

/** What evaluation takes from the Trainer's options. */
export interface EvaluationSettings {
  metrics?: Record<string, MetricFn | BuiltinMetric>;
  batchSize: number;
  evalBatchSize?: number;
  evalExtraTokens: number;
  /** The loss of packed batches (packBatch): the same numbers without padding. */
  packing?: boolean;
}

/**
 * dp: data parallelism: this rank evaluates every worldSize-th example (from its rank on), and the
 * ranks' sums and predictions are gathered, so every rank returns the same whole evaluation.
 * onProgress: after each batch, the examples of this rank's share done so far and its size.
 */
export async function evaluate(
  model: Model,
  adapter: Adapter,
  dataset: MultiTaskDataset,
  o: EvaluationSettings,
  keepPredictions: boolean,
  dp?: Place,
  onProgress?: (done: number, total: number) => void,
): Promise<{ tasks: Record<string, TaskEval>; predictions: Prediction[] }> {
  const metrics = Object.entries(o.metrics ?? {}).map(([name, m]) => [name, typeof m === 'string' ? BUILTIN_METRICS[m] : m] as [string, MetricFn]);
  const metricSum: Record<string, Record<string, number>> = byTask();
  const predictions: Prediction[] = [];
  const tok = dataset.tokenizer;
  const padId = tok.padTokenId ?? tok.eosTokenId ?? 0;
  const eos = tok.eosTokenId;
  adapter.setMode(false);
  const sum: Record<string, number> = byTask(), count: Record<string, number> = byTask(), right: Record<string, number> = byTask(), n: Record<string, number> = byTask();
  const rows = o.evalBatchSize ?? o.batchSize;
  const mine = Array.from({ length: dataset.size }, (_, i) => i).filter((i) => !dp || i % dp.worldSize === dp.rank);
  const order: number[] = []; // dataset index of each prediction
  for (let start = 0; start < mine.length; start += rows) {
    const exs = mine.slice(start, start + rows).map((i) => dataset.get(i));
    const width = Math.max(...exs.map((e) => e.inputIds.length));
    const pad = (row: number[], v: number): number[] => [...row, ...new Array(width - row.length).fill(v)];
    const batch = {
      inputIds: exs.map((e) => pad(e.inputIds, padId)),
      attentionMask: exs.map((e) => pad(e.inputIds.map(() => 1), 0)),
      labels: exs.map((e) => pad(e.inputIds.map((id, i) => (i < e.promptLength ? IGNORE_INDEX : id)), IGNORE_INDEX)),
    };
    const { lossSum: sums, tokens: toks } = await rowLosses(model, o.packing ? packBatch(batch) : batch);
    // greedy generation from the prompt
    // the answer generation must give: the response's tokens up to its (first) eos; a chat
    // template may write more after it (e.g. a newline), which generation never reaches
    const responses = exs.map((e) => {
      const r = e.inputIds.slice(e.promptLength);
      const stop = eos === undefined ? -1 : r.indexOf(eos);
      return stop < 0 ? r : r.slice(0, stop);
    });
    const prompts = promptBatch(exs, padId);
    // never past the model's positions (evalExtraTokens 300 generated on past a 256-position model)
    const limit = model.config.max_position_embeddings;
    const room = typeof limit === 'number' && Number.isSafeInteger(limit) && limit > 0 ? Math.max(0, limit - prompts.inputIds[0].length) : Infinity;
    const maxNew = Math.min(room, Math.max(...responses.map((r) => r.length)) + o.evalExtraTokens);
    const gen = await model.generateUnchecked(prompts.inputIds, {
      attentionMask: prompts.attentionMask,
      maxNewTokens: maxNew,
      eosTokenId: eos === undefined ? [] : [eos],
      padTokenId: padId,
    });
    exs.forEach((e, i) => {
      // each row up to its own response length + evalExtraTokens, so batching changes nothing
      const width = prompts.inputIds[i].length;
      const out = gen[i].slice(width, width + responses[i].length + o.evalExtraTokens);
      const stop = eos === undefined ? -1 : out.indexOf(eos);
      const produced = stop < 0 ? out : out.slice(0, stop);
      const ok = produced.length === responses[i].length && produced.every((t, k) => t === responses[i][k]);
      if (metrics.length || keepPredictions) {
        const prediction = tok.decode(produced, { skipSpecialTokens: true });
        if (keepPredictions) {
          predictions.push({ task: e.task, prompt: e.prompt, reference: e.response, prediction, correct: ok });
          order.push(e.index);
        }
        const ms = (metricSum[e.task] ??= {});
        for (const [name, fn] of metrics) {
          const v = fn(prediction, e.response, e.task);
          if (typeof v !== 'number') throw new TypeError(`metrics.${name} returned ${util.inspect(v)} for example ${e.index} (task ${e.task}): expected a number`);
          ms[name] = (ms[name] ?? 0) + v;
        }
      }
      sum[e.task] = (sum[e.task] ?? 0) + sums[i];
      count[e.task] = (count[e.task] ?? 0) + toks[i];
      right[e.task] = (right[e.task] ?? 0) + (ok ? 1 : 0);
      n[e.task] = (n[e.task] ?? 0) + 1;
    });
    onProgress?.(start + exs.length, mine.length);
  }
  if (dp) {
    // every rank's share, merged in rank order (sums) and dataset order (predictions)
    const shares = await distributed.gatherJson({ sum, count, right, n, metricSum, predictions, order });
    for (const x of [sum, count, right, n, metricSum]) for (const k of Object.keys(x)) delete x[k];
    const add = (into: Record<string, number>, from: Record<string, number>): void => {
      for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
    };
    const all: [number, Prediction][] = [];
    for (const sh of shares) {
      add(sum, sh.sum), add(count, sh.count), add(right, sh.right), add(n, sh.n);
      for (const [t, ms] of Object.entries(sh.metricSum)) add((metricSum[t] ??= {}), ms);
      sh.predictions.forEach((p, i) => all.push([sh.order[i], p]));
    }
    predictions.splice(0, predictions.length, ...all.sort((a, b) => a[0] - b[0]).map(([, p]) => p));
  }
  const tasks: Record<string, TaskEval> = Object.fromEntries(
    Object.keys(n).sort().map((t) => {
      const r: TaskEval = { loss: count[t] > 0 ? sum[t] / count[t] : NaN, accuracy: right[t] / n[t], count: n[t] };
      if (metrics.length) r.metrics = Object.fromEntries(metrics.map(([name]) => [name, metricSum[t][name] / n[t]]));
      return [t, r];
    }),
  );
  return { tasks, predictions };
}
