// Where a training run's numbers go besides log.jsonl (the Trainer option `reportTo`, as the
// Hugging Face Trainer's report_to): one small protocol, so formats are swappable.

/** Named numbers at one step: `train/loss`, `train/loss/<task>`, `eval/<task>/accuracy`, ... */
export type Scalars = Record<string, number>;

export interface MetricSink {
  /** Records `scalars` at `step` (finite numbers only; the Trainer leaves NaN out). */
  log(step: number, scalars: Scalars): void;
}
