// What a training run reports: a step's record, an evaluation's, the history fit returns, and a
// prediction of evaluation. Plain data (JSON in log.jsonl), no behaviour.

/** One evaluated example (evaluate(..., {returnPredictions: true}), and outputDir/eval-<step>.jsonl). */
export interface Prediction {
  task: string;
  prompt: string;
  reference: string;
  prediction: string;
  /** Exact match of the generated tokens with the response's (as TaskEval.accuracy counts). */
  correct: boolean;
}

export interface EvaluateOptions {
  /** Also return every example's prediction. Default false. */
  returnPredictions?: boolean;
}

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  /** Mean loss per labelled token of each task present in the step. */
  taskLoss: Record<string, number>;
  lr: number;
  gradNorm: number;
  tokens: number;
  tokensPerSecond: number;
  skipped?: boolean;
}

export interface TaskEval {
  /** Mean cross-entropy per response token. */
  loss: number;
  /** Exact match of greedy generation against the response. */
  accuracy: number;
  count: number;
  /** The mean of each of TrainerOptions.metrics over the task's examples; absent without metrics. */
  metrics?: Record<string, number>;
}

export interface EvalRecord {
  step: number;
  tasks: Record<string, TaskEval>;
}

export interface History {
  steps: StepRecord[];
  evals: EvalRecord[];
  /**
   * Why fit returned: 'completed'; 'aborted' (the signal); or 'nonFinite': with skipNonFinite,
   * more than half of this fit's steps had a non-finite loss and were skipped (fit stops as soon as
   * that is so; a checkpoint is written, no final evaluation is made); 'earlyStopping': the
   * earlyStopping metric stopped improving (a checkpoint is written, no further evaluation);
   * 'callback': a TrainerCallback returned {stop: true} (a checkpoint is written, as for the signal).
   */
  stopped: 'completed' | 'aborted' | 'nonFinite' | 'earlyStopping' | 'callback';
  /** Steps of this fit skipped for a non-finite loss (skipNonFinite). */
  skippedSteps: number;
  /** The folder log.jsonl and the checkpoints went to (options.outputDir); absent when none. */
  outputDir?: string;
  /** The last checkpoint written (or resumed from), if any; its values are finite. */
  lastCheckpoint?: string;
  /** saveBest: the checkpoint of the best evaluation so far, and its metric value. */
  bestCheckpoint?: string;
  bestMetric?: number;
}

export interface TrainStepResult {
  /** Mean cross-entropy per labelled token over all the micro-batches. */
  loss: number;
  /** false: the loss was NaN or infinite and no update was made. */
  finite: boolean;
  lr: number;
  gradNorm: number;
  /** L2 norm of the parameters the update changed (0 when no update was made). */
  paramNorm: number;
  /**
   * false: the update left a parameter NaN, infinite, or so large that its squared L2 norm overflows
   * its dtype (float32: a norm above about 1.8e19); such weights are unusable.
   */
  paramsFinite: boolean;
  /** Summed loss and labelled tokens of each row, micro-batches in order. */
  rowLoss: Float64Array;
  rowTokens: number[];
}

/**
 * One optimizer step over one or more micro-batches (gradient accumulation): forward, masked

/** An object keyed by task name with no prototype: a task named "__proto__" or "constructor" is a key like any other. */
export function byTask<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}
