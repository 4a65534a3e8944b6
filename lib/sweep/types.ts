// The types a sweep's modules share: the options a sweep passes to adapters and trainers, one job
// and its result (as a result file holds it), and the progress callback's argument.
import type { AdapterOptions } from '../adapter';
import type { History, TaskEval, TrainerOptions } from '../trainer';

/** Adapter options of a sweep or a variant: AdapterOptions without `seed` (the sweep's seeds set it), each optional. */
export type SweepAdapterOptions = Partial<Omit<AdapterOptions, 'seed'>>;

/** Trainer options a sweep passes on to every job (the sweep sets learningRate, maxSteps, batchSize, seed itself). */
export type SweepTrainerOptions = Pick<
  TrainerOptions,
  | 'schedule'
  | 'warmupRatio'
  | 'warmupSteps'
  | 'weightDecay'
  | 'maxGradNorm'
  | 'gradientAccumulation'
  | 'sampling'
  | 'samplingTemperature'
  | 'groupByLength'
  | 'packing'
  | 'evalBatchSize'
  | 'evalExtraTokens'
  | 'precision'
  | 'gradientCheckpointing'
  | 'skipNonFinite'
>;

/** A file a job reads, with what identifies its contents. */
export interface FileRef {
  file: string;
  sha256: string;
}

/** Everything that makes a job's result: two jobs alike in all of it give the same numbers (on the same BLAS kernels). */
export interface Job {
  variant: string;
  adapter: Omit<SweepAdapterOptions, 'targetModules'>;
  targetModules: string[] | { regex: string };
  learningRate: number;
  seed: number;
  /** The split it is evaluated on. */
  split: 'validation' | 'test';
  steps: number;
  batchSize: number;
  trainer: SweepTrainerOptions;
  /** The base model folder, its dtype and device, and the size and time of its files. */
  model: { path: string; dtype?: string; device: string; files: { name: string; size: number; mtimeMs: number }[] };
  /** 'byte', a tokenizer file or folder, or undefined (the model folder's tokenizer.json). */
  tokenizer?: string;
  /** The tokenizer's files (tokenizer.json, tokenizer_config.json, chat_template.jinja) and their hashes; none for 'byte'. */
  tokenizerFiles: FileRef[];
  data: { train: FileRef; evaluate: FileRef; options: { template?: string; maxLength?: number; fields?: { task?: string; prompt?: string; response?: string }; addBos?: boolean; addEos?: boolean } };
  threads: number;
  /** The folder the trained adapter is saved to (outputDir/jobs/<variant>/adapters/lr<rate>-seed<seed>), shared by the validation and test job of one training. */
  adapterDir: string;
  /**
   * Set when the same training ran already (the validation job of this rate and seed): the job
   * loads its adapter from adapterDir and evaluates it, instead of training again; the training's
   * numbers are that job's.
   */
  trainedBy?: TrainingNumbers;
}

/** What a job's training measured, carried over to a test job that evaluates the same adapter. */
export type TrainingNumbers = Pick<JobResult, 'trainLoss' | 'seconds' | 'tokensPerSecond' | 'peakAllocatedBytes' | 'losses' | 'stopped' | 'skippedSteps'>;

export interface JobResult {
  variant: string;
  /** The variant's description. */
  what: string;
  seed: number;
  learningRate: number;
  split: 'validation' | 'test';
  steps: number;
  /** Trainable values of the adapter. */
  trainable: number;
  /** Loss and exact-match accuracy per task on `split`. */
  tasks: Record<string, TaskEval>;
  /** Means over the tasks. */
  meanAccuracy: number;
  meanLoss: number;
  /** Mean training loss of the last 10 steps (fewer when the job ran fewer). */
  trainLoss: number;
  /** Training alone, and training plus evaluation (and loading, for a worker's first job). */
  seconds: number;
  totalSeconds: number;
  /** Tokens of the training batches per second of training. */
  tokensPerSecond: number;
  /** Peak of libtorch's allocator during training (CPU: blocks of 1 MiB or more through its cache; see memoryStats). */
  peakAllocatedBytes: number;
  /** Mean off-diagonal cosine similarity of the heads B_i per module kind ("q_proj", ...); null for one head. */
  headCosine: Record<string, number | null>;
  /** Mean N x N head similarity over the modules of each kind. */
  headSimilarity: Record<string, number[][]>;
  /** Training loss of every step. */
  losses: number[];
  /** Why training ended ('completed'; 'nonFinite' with trainer.skipNonFinite) and the steps skipped for a non-finite loss. */
  stopped: History['stopped'];
  skippedSteps: number;
  /** The BLAS kernels it ran on (blasInfo()). */
  blas: string;
}

/** One finished job as the progress callback sees it. */
export interface SweepProgress {
  /** The job's result. */
  result: JobResult;
  /** Jobs finished (this run and earlier ones) and all jobs of the sweep. */
  done: number;
  total: number;
  /** Seconds until the sweep is done at this run's pace so far. */
  etaSeconds: number;
  /** The line the sweep prints for it by default. */
  line: string;
}
