// Loads the native addon (native/ math + binding/ glue) and types what it exports.
import * as os from 'os';

import { addressSpaceLimit, describeLimit, loadAddon, mappedBytes } from './loader';
import { defaultThreads, ThreadPools } from './threads';

// libgomp reads this when it loads: without it the first multi-threaded job stalled for 1 to 10 s
// on a 2-core machine (measured with libtorch 1.13). Users may set their own.
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';

export type DtypeName = 'float32' | 'float64' | 'bfloat16' | 'float16' | 'int32' | 'int64' | 'uint8' | 'bool';

export interface NativeTensor {
  /** Releases the native object now; using it afterwards throws "this ... was disposed". */
  dispose(): void;
  readonly shape: number[];
  readonly dtype: DtypeName;
  readonly device: string;
  data(): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
  bytes(): Uint8Array;
  to(dtype: DtypeName | null, device: string | null): NativeTensor;
}

export interface NativeTensorStatic {
  fromTypedArray(
    data: Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array,
    shape: number[],
    dtype: DtypeName,
    device: string,
  ): NativeTensor;
  fromBytes(bytes: Uint8Array, dtype: DtypeName, shape: number[]): NativeTensor;
}

export interface NativeVjp {
  output: NativeTensor;
  gradInput: NativeTensor;
  grads: Record<string, NativeTensor>;
}

export interface NativeLoraLinear {
  /** Releases the native object now; using it afterwards throws "this ... was disposed". */
  dispose(): void;
  forward(x: NativeTensor): Promise<NativeTensor>;
  vjp(x: NativeTensor, gradOutput: NativeTensor): Promise<NativeVjp>;
  setTraining(on: boolean): void;
  readonly training: boolean;
  readonly options: unknown;
  stateDict(): Record<string, NativeTensor>;
  loadStateDict(tensors: Record<string, NativeTensor>): void;
  headSimilarity(): NativeTensor;
  baseWeight(): NativeTensor;
  mergedWeight(): NativeTensor;
  generatorState(): NativeTensor;
  setGeneratorState(state: NativeTensor): void;
  reseed(seed: number): void;
  parameterCount(): number;
}

/** The config lib/model.ts normalises from config.json: every field present. */
export interface NativeModelConfig {
  architecture: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number } | null;
  qkvBias: boolean;
  /** Qwen3: RMSNorm over head_dim on each query and key head (q_norm, k_norm), before rotary. */
  qkNorm: boolean;
  /** Phi3: one qkv_proj (q, k, v rows) and one gate_up_proj (gate, then up) per layer. */
  fused: boolean;
  /** Gemma2's differences (norms times 1 + weight, embedding scale, sandwich norms, GeGLU tanh, sliding window on even layers). */
  gemma2: boolean;
  /** scores = cap tanh(scores / cap) before the mask; 0: none. */
  attnLogitSoftcapping: number;
  /** The same on the logits; 0: none. */
  finalLogitSoftcapping: number;
  /** Attention scale queryPreAttnScalar^-1/2; 0: headDim. */
  queryPreAttnScalar: number;
  attentionBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  initializerRange: number;
  slidingWindow: number;
}

export interface NativeGenerateOptions {
  maxNewTokens: number;
  minNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  eosTokenIds: number[];
  padTokenId: number;
  seed: number;
}

/** A generation in progress (native/model/generate.h): its key/value cache, sampler and ended rows. */
export interface NativeGeneration {
  /** Up to n more tokens of every row, [B, k] int64 (k = 0 once finished). */
  step(n: number): Promise<NativeTensor>;
  /** Ends the rows flagged (a [B] tensor of 0/1) now. */
  endRows(rows: NativeTensor): void;
  readonly finished: boolean;
  readonly produced: number;
  dispose(): void;
}

export interface NativeModel {
  /** Releases the native object now; using it afterwards throws "this ... was disposed". */
  dispose(): void;
  parameterSpecs(): { name: string; shape: number[] }[];
  setParameter(name: string, value: NativeTensor): void;
  parameter(name: string): NativeTensor;
  quantize(kind: string): void;
  quantizeModule(module: string, kind: string): void;
  quantization(): string;
  linearWeight(module: string): NativeTensor;
  initRandom(options: { seed: number; quantize?: 'int8' | 'nf4' }): void;
  /** Checkpointed steps run the head and loss over chunks of at most this many logits (default 2^25). */
  setHeadChunkElements(n: number): void;
  parameterCount(): number;
  /** A number that differs between models whose weights differ (data-parallel ranks compare it). */
  fingerprint(): number;
  linearNames(): string[];
  setAdapter(module: string, layer: NativeLoraLinear | null): void;
  forward(ids: NativeTensor, mask: NativeTensor | null, cuSeqlens?: NativeTensor | null): Promise<NativeTensor>;
  generate(ids: NativeTensor, mask: NativeTensor | null, options: NativeGenerateOptions): Promise<NativeTensor>;
  readonly dtype: DtypeName;
  readonly device: string;
}

export interface NativeAdamWState {
  steps: number;
  params: { step: number; expAvg: NativeTensor; expAvgSq: NativeTensor }[];
}

export interface NativeAdamW {
  /** Releases the native object now; using it afterwards throws "this ... was disposed". */
  dispose(): void;
  readonly stepsTaken: number;
  lrAt(step: number): number;
  state(): NativeAdamWState;
  setState(state: NativeAdamWState): void;
}

export interface NativeLmBatch {
  ids: NativeTensor;
  mask: NativeTensor;
  labels: NativeTensor;
  /** Packing: int32 offsets of the examples in the one row (native/model/decoder.h forward). */
  cuSeqlens?: NativeTensor | null;
}

export interface NativeLmLoss {
  /** [rows] float64 summed cross-entropy of each row's labelled tokens. */
  lossSum: NativeTensor;
  /** [rows] int64 labelled tokens of each row. */
  tokens: NativeTensor;
}

export interface NativeLmStepOptions {
  /** Default 'float32'; 'bfloat16' runs the forward and backward under autocast. */
  precision?: 'float32' | 'bfloat16';
  /** Sum the step over the process group's ranks (the group must exist). Default false. */
  distributed?: boolean;
  /** Activation checkpointing: the same loss and gradients, less memory. Default false. */
  gradientCheckpointing?: boolean;
}

export interface NativeLmStep {
  loss: number;
  /** false: the loss was NaN or infinite and no update was made. */
  finite: boolean;
  rows: NativeLmLoss;
  lr: number;
  gradNorm: number;
  /** L2 norm of the parameters the update changed (0 when none were). */
  paramNorm: number;
  /** Whether each updated parameter's squared L2 norm is finite in its dtype (true when none were updated). */
  paramsFinite: boolean;
}

export interface NativeFitResult {
  loss: number;
  rowLoss: NativeTensor;
  lr: number;
  gradNorm: number;
  paramNorm: number;
  paramsFinite: boolean;
}

export interface MemoryStats {
  /** Whether the CPU caching allocator is installed (default; RLORA_CPU_CACHING=0 turns it off). */
  cpuCaching: boolean;
  /** Live CPU tensor blocks of 1 MiB or more, in bytes (size classes). */
  allocatedBytes: number;
  /** Highest allocatedBytes since the last resetPeakMemory(). */
  peakAllocatedBytes: number;
  /** Freed blocks kept for reuse. */
  cachedBytes: number;
  cacheLimitBytes: number;
  cacheHits: number;
  cacheMisses: number;
  /** Whether this build reads the CUDA caching allocator (a libtorch with CUDA). */
  cudaMemoryStats: boolean;
  /** The CUDA caching allocator's counters, per device it has set up (none before the first CUDA tensor). */
  cuda: CudaMemoryStats[];
}

export interface CudaMemoryStats {
  device: string;
  /** Live tensor blocks, in bytes (torch.cuda.memory_allocated). */
  allocatedBytes: number;
  /** Highest allocatedBytes since the last resetPeakMemory() (torch.cuda.max_memory_allocated). */
  peakAllocatedBytes: number;
  /** Held by the allocator, live and cached (torch.cuda.memory_reserved). */
  reservedBytes: number;
  peakReservedBytes: number;
}

export interface NativeAddon {
  NativeModel: new (config: NativeModelConfig, dtype: DtypeName, device: string) => NativeModel;
  NativeGeneration: new (model: NativeModel, ids: NativeTensor, mask: NativeTensor | null, options: NativeGenerateOptions) => NativeGeneration;
  /**
   * The attention of native/model/attention.h (block-wise, or eager) with its gradients for dOut:
   * for tests. q [B, H, S, D], k and v [B, H, T, D], keyMask [B, T] or null.
   */
  attentionVjp(q: NativeTensor, k: NativeTensor, v: NativeTensor, dOut: NativeTensor, options: { past: number; window: number; keyMask: NativeTensor | null; scale: number; softcap: number; block: number; eager: boolean; cuSeqlens?: NativeTensor | null }): Promise<{ out: NativeTensor; dq: NativeTensor; dk: NativeTensor; dv: NativeTensor }>;
  /** The bounds of the LoRA options that native/rlora/options.h checks (kMaxRank, ...). */
  readonly loraLimits: { maxRank: number; maxHeads: number; maxAlpha: number; minGamma: number; maxGamma: number };
  /** The smallest temperature that samples (native/model/generate.h kMinTemperature). */
  readonly minTemperature: number;
  NativeAdamW: new (modules: NativeLoraLinear[] | NativeModel, options: object) => NativeAdamW;
  fitLayerStep(layer: NativeLoraLinear, x: NativeTensor, target: NativeTensor, optimizer: NativeAdamW): Promise<NativeFitResult>;
  lmTrainStep(model: NativeModel, microBatches: NativeLmBatch[], optimizer: NativeAdamW, options?: NativeLmStepOptions): Promise<NativeLmStep>;
  lmEvalLoss(model: NativeModel, batch: NativeLmBatch): Promise<NativeLmLoss>;
  /** The label of a position without loss (-100, Hugging Face's ignore_index): native/train/lm_step.h kIgnoreLabel. */
  readonly ignoreLabel: number;
  NativeTensor: NativeTensorStatic & (new (...args: never[]) => NativeTensor);
  NativeLoraLinear: new (weight: NativeTensor, bias: NativeTensor | null, options: object) => NativeLoraLinear;
  /** Sets libtorch's intra-op threads for every job, and OpenBLAS's pool too unless `blas` is false. */
  setNumThreads(n: number, options?: { blas?: boolean }): void;
  getNumThreads(): number;
  /** OpenBLAS's pool size, or 0 where the process has no OpenBLAS. */
  blasThreads(): number;
  memoryStats(): MemoryStats;
  setCpuCaching(enabled: boolean): void;
  setCpuCacheLimit(bytes: number): void;
  emptyCache(): void;
  resetPeakMemory(): void;
  blasInfo(): string;
  /** "" when a model's products run on the CPU in `dtype`, else libtorch's message (tried once per dtype). */
  cpuDtypeProblem(dtype: DtypeName): string;
  /** Swaps two existing paths in one atomic step (renameat2 RENAME_EXCHANGE); 0, or the errno where the system cannot. */
  exchangePaths(a: string, b: string): number;
  /** Linux PR_SET_PDEATHSIG: `signal` when the parent dies; 0, ESRCH when parentPid is no longer the parent, or the errno. */
  setParentDeathSignal(signal: number, parentPid: number): number;
  distInit(options: { masterAddr: string; masterPort: number; rank: number; worldSize: number; backend: string; timeoutMs: number; localRank: number; bucketCapBytes: number; useLibuv: boolean; agentStore: boolean; restartCount: number; runId: string }): Promise<void>;
  distInfo(): { rank: number; worldSize: number; backend: string; device: string } | null;
  /** The last step with buckets during backward: buckets, how many started before backward returned, whether it summed again after backward, and ms waited after backward. Tests and benchmarks. */
  distLastReduce(): { buckets: number; startedInBackward: number; fallback: boolean; waitMs: number };
  distBarrier(): Promise<void>;
  distAllreduceSum<T extends number[] | Float32Array | Float64Array>(values: T): Promise<T>;
  distAllgather(value: number): Promise<number[]>;
  distDestroy(): void;
  hasGloo: boolean;
  hasNccl: boolean;
  buildInfo: { torchVersion: string; torchSource: string; cudaAvailable: boolean; cudaDeviceCount: number };
}

// Which binary: a prebuild matching the libtorch found at run time, else a local build, else an
// error saying what to install or run (loader.ts).
export const native: NativeAddon = loadAddon() as NativeAddon;

// Under an address-space limit OpenBLAS hangs when it cannot map a buffer (128 MB for each thread
// that multiplies matrices). The native side keeps room for them (native/common/cpu_allocator.h:
// tensors leave 512 MB of the limit free, a job starts only with 256 MB free, else each fails with
// an out-of-memory error naming the limit). Say once, at load, what the limit leaves.
// RLORA_QUIET_LIMITS=1 silences it.
{
  const limit = addressSpaceLimit();
  if (limit !== null && process.env.RLORA_QUIET_LIMITS !== '1') {
    const mapped = mappedBytes();
    const left = mapped === null ? '' : ` Loading rlora mapped ${describeLimit(mapped)}, which leaves ${describeLimit(Math.max(0, limit - mapped))}, of which rlora keeps 512 MB free for OpenBLAS's buffers (OpenBLAS hangs when it cannot map them): tensors get the rest.`;
    process.stderr.write(
      `rlora: this process may map at most ${describeLimit(limit)} (an address-space limit: ulimit -v or prlimit --as).${left} A model or batch that needs more fails with an out-of-memory error: raise or remove the limit (ulimit -v unlimited) for more.\n`,
    );
  }
}

// Threads: the usable cores (or OMP_NUM_THREADS) for libtorch's pool and for OpenBLAS's, which keeps
// the size OPENBLAS_NUM_THREADS gave it where that is set (threads.ts).
const threads = defaultThreads();
if (threads.ignored) {
  process.emitWarning(`rlora: ${threads.ignored.name}=${JSON.stringify(threads.ignored.value)} is not a positive integer; using the ${threads.intraOp} usable cores`);
}
native.setNumThreads(threads.intraOp, { blas: threads.blasFollows });

/** How many threads each pool has now, and the usable cores (what `rlora doctor` prints). */
export function threadPools(): ThreadPools {
  const blas = native.blasThreads();
  return { intraOp: native.getNumThreads(), blas: blas > 0 ? blas : null, cores: os.availableParallelism() };
}
