// The Trainer's options: their type and documentation (TrainerOptions' JSDoc, which
// scripts/option-docs.cjs copies into lib/trainer/option-docs.ts for help texts), and ONE table that
// gives each option's rule and default. The Trainer's constructor checks its options with the
// table, and run.json's `trainer` section (lib/cli/runconfig.ts) is checked and documented from the
// same rows, so a new option is a documented member of TrainerOptions plus one row here plus its
// use. Nothing here loads the native addon.
import type { DistributedOptions } from '../distributed';
import type { Sampling } from '../data';
import type { Schedule } from '../optim';
import { show } from '../util/options';
import { bool, check, int, Key, num, oneOf, Problem, safeInt, Spec, str } from '../util/spec';
import { DISTRIBUTED_DOCS, EARLY_STOPPING_DOCS, TRAINER_OPTION_DOCS } from './option-docs';
import { BUILTIN_METRICS, BuiltinMetric, BestRule, MetricFn, RESERVED_METRICS, StopRule } from './metrics';

/** The largest float32: the optimizer computes in float32, so a larger rate cannot be represented (1e39 failed inside libtorch). */
const FLOAT32_MAX = 3.4028234663852886e38;

export interface TrainerOptions {
  /** AdamW's base learning rate. Default 2e-4 (the published R-LoRA run). */
  learningRate?: number;
  /** Passes over the training set, unless maxSteps is given. Default 1. */
  epochs?: number;
  /** Optimizer steps; overrides epochs. */
  maxSteps?: number;
  /** Rows (examples) per micro-batch. Default 8. */
  batchSize?: number;
  /** Micro-batches per optimizer step, at most 65536 (MAX_GRADIENT_ACCUMULATION). Default 1. */
  gradientAccumulation?: number;
  /** The learning-rate schedule after warm-up: 'cosine', 'linear' or 'constant'. Default 'cosine'. */
  schedule?: Schedule;
  /** Warm-up as a fraction of all steps, unless warmupSteps is given. Default 0.03. */
  warmupRatio?: number;
  /** Warm-up steps; overrides warmupRatio. */
  warmupSteps?: number;
  /** Decoupled weight decay (AdamW's). Default 0. */
  weightDecay?: number;
  /** Clip the global gradient norm to this; 0 turns clipping off. Default 1. */
  maxGradNorm?: number;
  /** Seed of the data order (the adapter has its own). Default 0. */
  seed?: number;
  /** How tasks mix in a batch: 'proportional', 'uniform' or 'temperature'. Default 'proportional'. */
  sampling?: Sampling;
  /** T of 'temperature' sampling. Default 2. */
  samplingTemperature?: number;
  /** Batches of similar lengths (less padding). Default false. */
  groupByLength?: boolean;
  /**
   * Padding-free training: each micro-batch's examples laid end to end in one row, positions
   * restarting and attention never crossing an example (the same losses and gradients, no compute
   * on padding). batchSize still counts examples. Default false.
   */
  packing?: boolean;
  /** Evaluate the evalDataset every this many steps (and at the end); 0: only at the end. Default 0. */
  evalEvery?: number;
  /** Write a checkpoint every this many steps (and at the end); 0: only at the end. Needs outputDir. Default 0. */
  saveEvery?: number;
  /**
   * Where log.jsonl and checkpoint-<step>/ go. No files when absent. Trainer.resume defaults it to
   * the checkpoint's parent folder.
   */
  outputDir?: string;
  /**
   * Start over in an outputDir that holds an earlier run: fit removes its log.jsonl, checkpoint-N/
   * and eval-N.jsonl before writing (other files stay). Default false: such a folder is refused,
   * since appending would mix two runs in one log (Trainer.resume continues a run instead).
   */
  overwriteOutputDir?: boolean;
  /** Keep only the newest this many checkpoints (older ones are deleted after a new one is complete); 0 keeps all. Default 0. */
  keepCheckpoints?: number;
  /**
   * A progress bar on stderr (each evaluation's table printed above it; during an evaluation, its
   * own line). Default: on when stderr is a terminal; where it is not (a log file, a pipe, CI), a
   * line every `loggingSteps` steps and each evaluation's table instead. false: nothing on stderr
   * (but the Ctrl-C notices of stopOnSigint). Trainer.evaluate shows its line where the bar would
   * be drawn.
   */
  progress?: boolean;
  /** Where no progress bar is drawn (progress unset and stderr not a terminal): a step line every this many steps (and the first and last). Default 50. */
  loggingSteps?: number;
  /**
   * Where the numbers also go, besides log.jsonl (Hugging Face's report_to): 'csv' writes
   * outputDir/metrics.csv (step,name,value), 'tensorboard' writes TensorBoard event files into
   * outputDir/tensorboard/ (`tensorboard --logdir <outputDir>/tensorboard`). Needs outputDir.
   * Default none.
   */
  reportTo?: ReportTo[];
  /**
   * 'float32', or 'bfloat16': forward and backward under bfloat16 autocast on the model's device
   * (CPU or CUDA), as torch.autocast does; parameters, gradients and optimizer state stay in the
   * model's dtype. Evaluation runs without autocast. Default 'float32'.
   */
  precision?: 'float32' | 'bfloat16';
  /** Where training runs: the model's device (load the model there); given, it must match. */
  device?: string;
  /**
   * Skip a step whose loss is NaN or infinite (no update) instead of stopping. fit() counts the
   * skipped steps (History.skippedSteps, and a warning), and stops with `stopped: 'nonFinite'` as
   * soon as more than half of its steps were skipped. An update that leaves the parameters
   * non-finite cannot be skipped (it is made): fit() always stops with an error then. Default false.
   */
  skipNonFinite?: boolean;
  /**
   * Greedy generation in evaluate() stops at eos or after this many tokens beyond the example's
   * own response length (per row: the batch size never changes a prediction), at most 65536
   * (MAX_EVAL_EXTRA_TOKENS). Default 4.
   */
  evalExtraTokens?: number;
  /**
   * Rows per batch in evaluate() and in the evaluations during fit (loss and greedy generation
   * batched together). Evaluation keeps no activations for backward, so it can take larger batches
   * than training; larger ones are faster. Default: batchSize.
   */
  evalBatchSize?: number;
  /**
   * Data parallelism over processes (README "Data parallel"). 'auto' (default): on when the
   * environment's WORLD_SIZE is above 1 (torchrun's contract: MASTER_ADDR, MASTER_PORT, WORLD_SIZE,
   * RANK), or when distributed.init() made a group of several ranks. An object: as 'auto', with
   * these options for distributed.init (backend, timeoutMs); one process still makes no group.
   * The backend, unless named: 'nccl' for a CUDA model where the build has NCCL (each rank's model
   * must then be on cuda:LOCAL_RANK), else 'gloo'. bucketCapMb: gradients exchanged in buckets
   * while backward runs (default 25 with NCCL, 0 with Gloo). false: off. batchSize is per process; the
   * global batch is batchSize x gradientAccumulation x worldSize. Rank 0 alone writes checkpoints,
   * logs, evaluation files and the progress bar.
   */
  distributed?: 'auto' | false | DistributedOptions;
  /**
   * Activation checkpointing: the forward keeps only each decoder layer's input, and backward runs
   * each layer again (dropout draws the same masks), so the step's memory for activations falls
   * from all layers' to about one layer's, for about one more forward of compute. Same losses and
   * gradients as without. Default false.
   */
  gradientCheckpointing?: boolean;
  /**
   * Extra evaluation metrics, by name: a function of (prediction, reference, task), where the
   * prediction is the greedy generation decoded by the dataset's tokenizer (up to eos, special
   * tokens skipped) and the reference is the example's response text; or the name of a built-in
   * metric (BUILTIN_METRICS: 'exactMatch', 'charF1'). Averaged over the examples of each task and
   * reported in TaskEval.metrics. Functions are not saved in checkpoints (their names are):
   * Trainer.resume refuses until they are passed again. Names 'loss', 'accuracy' and 'count' are
   * taken. Default none.
   */
  metrics?: Record<string, MetricFn | BuiltinMetric>;
  /**
   * Stop fit when the evaluation `metric` (averaged over the tasks: 'loss', 'accuracy' or a name of
   * `metrics`) has not improved by more than `minDelta` (default 0) for `patience` (default 1)
   * evaluations in a row; History.stopped is then 'earlyStopping'. `mode`: 'min' (lower is better;
   * the default for 'loss') or 'max' (the default for any other metric). Needs evalEvery > 0 and
   * an evalDataset. Default: off.
   */
  earlyStopping?: EarlyStoppingOptions;
  /**
   * Keep the checkpoint of the best evaluation by this metric (as earlyStopping.metric; the mode
   * defaults as there, or is given as {metric, mode}): it is written when an evaluation improves
   * on every earlier one, named in History.bestCheckpoint, and never deleted by keepCheckpoints
   * (kept besides the newest keepCheckpoints). Needs outputDir, evalEvery > 0 and an evalDataset.
   * Default: off.
   */
  saveBest?: string | { metric: string; mode?: 'min' | 'max' };
  /**
   * At the end of fit (completed or early-stopped), load the adapter weights of the best
   * checkpoint (saveBest) back into the adapter; the last checkpoint still holds the last state.
   * Needs saveBest and outputDir. Default false.
   */
  loadBestAtEnd?: boolean;
}


export interface EarlyStoppingOptions {
  /** 'loss', 'accuracy' or a name of TrainerOptions.metrics, averaged over the tasks. */
  metric: string;
  /** Evaluations without improvement before fit stops. Default 1. */
  patience?: number;
  /** An improvement must exceed this. Default 0. */
  minDelta?: number;
  /** Whether lower ('min') or higher ('max') is better. Default 'min' for 'loss', 'max' otherwise. */
  mode?: 'min' | 'max';
}


/** Where a run's numbers can go besides log.jsonl (TrainerOptions.reportTo). */
export const REPORT_TO = ['csv', 'tensorboard'] as const;
export type ReportTo = (typeof REPORT_TO)[number];

/** The most micro-batches one optimizer step may accumulate (each is a native call; 1e9 ran the JS heap out of memory). */
export const MAX_GRADIENT_ACCUMULATION = 65536;
/** The most tokens evaluation generates past a response (1e9 generated until the process was killed). */
export const MAX_EVAL_EXTRA_TOKENS = 65536;

/**
 * One option: its rule (`spec`), its default, and how run.json writes it: the same spec (`runJson`
 * absent), another one, or not at all (false). Its documentation is its JSDoc in TrainerOptions
 * (lib/trainer/option-docs.ts, generated from it), of which `rlora train --help` shows the summary;
 * `runJsonDoc` only where run.json's form of the option differs from the API's.
 */
interface OptionRow {
  spec: Spec;
  default?: unknown;
  /** How the value looks in help texts (default: made from the spec). */
  type?: string;
  runJson?: Spec | false;
  runJsonDoc?: string;
}

/**
 * The help line of an option from its JSDoc: the first sentence, and the sentence that states the
 * default when that is another one.
 */
export function docSummary(doc: string): string {
  const sentences = doc.split(/(?<=[.!?])\s+(?=[A-Z'"`(])/);
  const byDefault = sentences.slice(1).find((x) => /^Default\b/.test(x));
  return [sentences[0], byDefault].filter(Boolean).join(' ');
}

const BUILTIN_NAMES = Object.keys(BUILTIN_METRICS);
const DISTRIBUTED_KEYS: Record<string, Key> = {
  // The Trainer picks the backend by the model's device (distributed.init's default is gloo).
  backend: { spec: oneOf('gloo', 'nccl'), doc: '"gloo" (CPU) or "nccl" (CUDA, where the build has it). Default: nccl for a CUDA model where available, else gloo.' },
  timeoutMs: { spec: int(1), doc: docSummary(DISTRIBUTED_DOCS.timeoutMs) },
  bucketCapMb: { spec: num(0, false, 1 << 20), doc: docSummary(DISTRIBUTED_DOCS.bucketCapMb) },
};
const METRIC_MODE = { spec: oneOf('min', 'max'), doc: docSummary(EARLY_STOPPING_DOCS.mode) };

/** Every Trainer option (others are refused, naming the closest). */
export const TRAINER_OPTIONS = {
  learningRate: { spec: num(0, true, FLOAT32_MAX), default: 2e-4 },
  epochs: { spec: num(0, true), default: 1 },
  maxSteps: { spec: int(1) },
  batchSize: { spec: int(1), default: 8 },
  gradientAccumulation: { spec: int(1, MAX_GRADIENT_ACCUMULATION), default: 1 },
  schedule: { spec: oneOf('cosine', 'linear', 'constant'), default: 'cosine' },
  warmupRatio: { spec: num(0, false, 1, true), default: 0.03 },
  warmupSteps: { spec: int(0) },
  weightDecay: { spec: num(0, false, FLOAT32_MAX), default: 0 },
  maxGradNorm: { spec: num(0, false, FLOAT32_MAX), default: 1 },
  seed: { spec: safeInt(0), default: 0 },
  sampling: { spec: oneOf('proportional', 'uniform', 'temperature'), default: 'proportional' },
  samplingTemperature: { spec: num(0, true), default: 2 },
  groupByLength: { spec: bool, default: false },
  packing: { spec: bool, default: false },
  evalEvery: { spec: int(0), default: 0 },
  saveEvery: { spec: int(0), default: 0 },
  outputDir: { spec: { kind: 'path' }, runJson: false },
  overwriteOutputDir: { spec: bool, default: false, runJson: false },
  keepCheckpoints: { spec: int(0), default: 0 },
  progress: { spec: bool },
  loggingSteps: { spec: int(1), default: 50 },
  reportTo: { spec: { kind: 'string-array', values: ['csv', 'tensorboard'], allowEmpty: true }, default: [] },
  precision: { spec: oneOf('float32', 'bfloat16') },
  device: {
    spec: {
      kind: 'custom',
      type: 'string',
      check: (v, where) => (typeof v === 'string' && /^(cpu|cuda(:\d+)?)$/.test(v) ? [] : [{ kind: typeof v === 'string' ? 'range' : 'type', message: `${where} must be "cpu", "cuda" or "cuda:N", got ${show(v)}` }]),
    },
    runJsonDoc: 'Where training runs: "cpu", "cuda" or "cuda:N"; the model is loaded there unless model.device says otherwise.',
  },
  skipNonFinite: { spec: bool, default: false },
  evalExtraTokens: { spec: int(0, MAX_EVAL_EXTRA_TOKENS), default: 4 },
  evalBatchSize: { spec: int(1) },
  metrics: {
    spec: { kind: 'any' },
    runJson: { kind: 'string-array', values: BUILTIN_NAMES },
    runJsonDoc: 'Built-in metrics evaluated beside loss and accuracy, averaged per task: exactMatch (prediction equals response, trimmed), charF1 (F1 of the characters as multisets).',
    type: `[${BUILTIN_NAMES.map((n) => JSON.stringify(n)).join(', ')}]`,
  },
  earlyStopping: {
    spec: {
      kind: 'object',
      keys: {
        metric: { spec: str, required: true, doc: docSummary(EARLY_STOPPING_DOCS.metric) },
        patience: { spec: int(1), doc: docSummary(EARLY_STOPPING_DOCS.patience) },
        minDelta: { spec: num(0), doc: docSummary(EARLY_STOPPING_DOCS.minDelta) },
        mode: METRIC_MODE,
      },
    },
    type: '{metric, patience?, minDelta?, mode?}',
  },
  saveBest: {
    spec: { kind: 'one-of', options: [str, { kind: 'object', keys: { metric: { spec: str, required: true, doc: '' }, mode: { ...METRIC_MODE, doc: '' } } }] },
    type: '"<metric>" | {metric, mode}',
  },
  loadBestAtEnd: { spec: bool, default: false },
  distributed: {
    spec: { kind: 'one-of', options: [oneOf('auto', false), { kind: 'object', keys: DISTRIBUTED_KEYS }] },
    runJson: { kind: 'object', keys: DISTRIBUTED_KEYS },
    runJsonDoc: "Data parallelism under --nproc-per-node or torchrun's variables (on when WORLD_SIZE > 1):",
    type: '{backend?, timeoutMs?, bucketCapMb?}',
  },
  gradientCheckpointing: { spec: bool },
} satisfies Record<keyof TrainerOptions, OptionRow>;

/** Every option the Trainer takes, in the table's order. */
export const TRAINER_OPTION_NAMES = Object.keys(TRAINER_OPTIONS) as (keyof TrainerOptions)[];

type WithDefault = { [K in keyof typeof TRAINER_OPTIONS]: (typeof TRAINER_OPTIONS)[K] extends { default: unknown } ? K : never }[keyof typeof TRAINER_OPTIONS];
/** The options that have a default, with it (the table's `default` column). */
export type TrainerDefaults = Required<Pick<TrainerOptions, WithDefault>>;
export const DEFAULTS = Object.fromEntries(
  Object.entries(TRAINER_OPTIONS).flatMap(([k, row]) => ('default' in row ? [[k, Array.isArray(row.default) ? [] : row.default]] : [])),
) as unknown as TrainerDefaults;

/** The options with their defaults, as a Trainer holds them. */
export type ResolvedTrainerOptions = TrainerDefaults & TrainerOptions;

/** run.json's `trainer` keys, made from the table (its rows that run.json writes, with their run.json spec). */
export function runJsonTrainerKeys(): Record<string, Key> {
  return Object.fromEntries(
    Object.entries(TRAINER_OPTIONS as Record<string, OptionRow>).flatMap(([k, row]) =>
      row.runJson === false ? [] : [[k, { spec: row.runJson ?? row.spec, doc: row.runJsonDoc ?? docSummary(TRAINER_OPTION_DOCS[k as keyof TrainerOptions]), ...(row.type ? { type: row.type } : {}) }]],
    ),
  );
}

/** A rule across options (a Problem of kind 'rule' is thrown as a plain Error). */
export type OptionProblem = Problem | { kind: 'rule'; message: string };

/**
 * Problems of a Trainer's options (defaults filled in): each value against its row, then the
 * rules across options. `prefix` is how keys are named in messages ('' for the API, 'trainer.'
 * for run.json, whose `metrics` is a list of built-in names and whose outputDir is always set).
 */
export function trainerOptionProblems(o: ResolvedTrainerOptions, prefix = '', runJson = false): OptionProblem[] {
  const rows = TRAINER_OPTIONS as Record<string, OptionRow>;
  const problems: OptionProblem[] = [];
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined || !Object.hasOwn(rows, k)) continue;
    const spec = runJson ? rows[k].runJson : rows[k].spec;
    if (spec) problems.push(...check(v, spec, prefix + k));
  }
  if (problems.length) return problems;
  const rule = (message: string): void => void problems.push({ kind: 'rule', message });
  const named = (k: string): string => prefix + k;
  if (!runJson) {
    if (o.reportTo.length && !o.outputDir) rule(`reportTo ${JSON.stringify(o.reportTo)} needs outputDir (the files are written there)`);
    if (o.saveEvery > 0 && !o.outputDir) rule('saveEvery needs outputDir');
    if (o.metrics !== undefined) {
      if (typeof o.metrics !== 'object' || o.metrics === null || Array.isArray(o.metrics)) {
        problems.push({ kind: 'type', message: `metrics must be an object of name -> function or built-in metric name, got ${JSON.stringify(o.metrics)}` });
        return problems;
      }
      for (const [name, m] of Object.entries(o.metrics)) {
        if (RESERVED_METRICS.includes(name)) problems.push({ kind: 'range', message: `metrics.${name}: the name ${JSON.stringify(name)} is taken (${RESERVED_METRICS.join(', ')} are reported anyway)` });
        else if (typeof m === 'string' ? !Object.hasOwn(BUILTIN_METRICS, m) : typeof m !== 'function') {
          problems.push({ kind: 'type', message: `metrics.${name} must be a function (prediction, reference, task) => number or one of ${BUILTIN_NAMES.map((n) => JSON.stringify(n)).join(', ')}, got ${typeof m === 'string' ? JSON.stringify(m) : String(m)}` });
        }
      }
    }
  }
  const metricNames = runJson ? ((o.metrics ?? []) as unknown as string[]) : Object.keys(o.metrics ?? {});
  const known = ['loss', 'accuracy', ...metricNames];
  const metricOk = (metric: unknown, where: string): void => {
    if (typeof metric !== 'string' || !known.includes(metric)) {
      problems.push({ kind: 'range', message: `${where} must be one of ${known.map((n) => JSON.stringify(n)).join(', ')} ("loss", "accuracy" or a name of ${named('metrics')}), got ${JSON.stringify(metric)}` });
    }
  };
  const needsEval = (what: string): void => {
    if (!(o.evalEvery > 0)) rule(`${named(what)} needs ${named('evalEvery')} > 0 (evaluations during training)${runJson ? '' : ' and an evalDataset in fit()'}; ${named('evalEvery')} is ${o.evalEvery}`);
  };
  const es = o.earlyStopping;
  if (es !== undefined) {
    metricOk(es.metric, named('earlyStopping.metric'));
    needsEval('earlyStopping');
  }
  const sb = o.saveBest;
  if (sb !== undefined) {
    metricOk(typeof sb === 'string' ? sb : sb.metric, named(typeof sb === 'string' ? 'saveBest' : 'saveBest.metric'));
    if (!runJson && !o.outputDir) rule('saveBest needs outputDir (the best checkpoint is written there)');
    needsEval('saveBest');
  }
  if (o.loadBestAtEnd) {
    if (sb === undefined) rule(`${named('loadBestAtEnd')} needs ${named('saveBest')} (the metric that picks the best checkpoint)`);
    else if (!runJson && !o.outputDir) rule('loadBestAtEnd needs outputDir');
  }
  return problems;
}

/** earlyStopping's settings with defaults, or undefined. */
export function stopRuleOf(o: TrainerOptions): StopRule | undefined {
  const es = o.earlyStopping;
  if (!es) return undefined;
  return { metric: es.metric, patience: es.patience ?? 1, minDelta: es.minDelta ?? 0, mode: es.mode ?? (es.metric === 'loss' ? 'min' : 'max') };
}

/** saveBest's metric and mode, or undefined. */
export function bestRuleOf(o: TrainerOptions): BestRule | undefined {
  const sb = o.saveBest;
  if (sb === undefined) return undefined;
  const metric = typeof sb === 'string' ? sb : sb.metric;
  const mode = typeof sb === 'string' ? undefined : sb.mode;
  return { metric, mode: mode ?? (metric === 'loss' ? 'min' : 'max') };
}

