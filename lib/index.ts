// rlora: R-LoRA multi-task fine-tuning of language models for Node.js.
import { MemoryStats, native } from './native';

export { threadPools } from './native';
export { describeThreadPools } from './threads';
export type { ThreadPools } from './threads';

export type { MemoryStats, CudaMemoryStats } from './native';

export { Tensor } from './tensor';
export type { Dtype, Device, TensorData, TensorOptions, TypedData, NestedNumbers } from './tensor';
export { loadSafetensors, saveSafetensors, readSafetensorsHeader, loadSafetensorsMetadata, MAX_HEADER_BYTES } from './safetensors';
export type { SafetensorsEntry, SafetensorsHeader } from './safetensors';
export { MultiHeadLoraLinear } from './layer';
export { Model, SUPPORTED_ARCHITECTURES, normalizeConfig } from './model';
export { Adapter, moduleSeed } from './adapter';
export type { AdapterSaveOptions } from './adapter';
export type { ModelCardInput } from './model-card';
export { Trainer, trainStep, evalLoss, BUILTIN_METRICS } from './trainer';
export * as distributed from './distributed';
export type { DistributedOptions, Backend as DistributedBackend } from './distributed';
export type { TrainerOptions, StepRecord, TaskEval, EvalRecord, History, FitOptions, TrainStepResult, LmRows, MetricFn, BuiltinMetric, EarlyStoppingOptions, Prediction, EvaluateOptions, TrainerCallback, CallbackResult, CallbackState, ReportTo } from './trainer';
export type { AdapterLoadOptions, AdapterOptions } from './adapter';
export type { Architecture, HFConfig, ModelOptions, ModelSaveOptions, TokenBatch, ForwardOptions, GenerateOptions } from './model';
export { applyPromptTemplate, completeText, generateChat, generateText } from './generate';
export { MIN_TEMPERATURE } from './generation';
export { BASE_MODEL_ID, serve } from './serve';
export type { RloraServer, ServeOptions } from './serve';
export type { SamplingOptions } from './generation';
export type { ChatMessage, ChatSpecialTokens } from './chat';
export type { GenerateTextOptions, TextCompletion } from './generate';
export type { StreamOptions } from './model';
export { AdamW, fitStep } from './optim';
export type { AdamWOptions, FitStepResult, Schedule } from './optim';
export type { LoraOptions, InitOptions, InitScheme, InitScale, Method, ResolvedLoraOptions, BaseLinear, VjpResult } from './layer';
export { resolveModel } from './hub/resolve';
export type { HubOptions, ResolveOptions, HubSource } from './hub/resolve';
export type { RepoKind } from './hub/cache';
export { Tokenizer, ByteTokenizer } from './tokenizer';
export type { TextTokenizer, EncodeOptions, DecodeOptions, TokenizerConfig, TokenizerFileOptions, SpecialTokenValue, ByteTokenizerOptions, TokenizerFiles } from './tokenizer';
export { exportGguf, exportGgufLora } from './gguf/export';
export type { GgufExportOptions, GgufLoraExportOptions, GgufExportResult, GgufBaseModel } from './gguf/export';
export type { GgufArchitecture, GgufDtype } from './gguf/llama';
export { MultiTaskDataset, BatchSampler, promptBatch, packBatch, DEFAULT_TEMPLATE, ALPACA_PROMPT, DEFAULT_TASK } from './data';
export type { Example, PromptResponseExample, MessagesExample, TextExample, PromptCompletionExample, AlpacaExample, RecordFormat, TemplateFields, DatasetOptions, DataSettings, DataSplit, EncodedExample, Sampling, SamplerOptions, Batch, SamplerState } from './data';

/**
 * Threads each native job uses for its matrix products: an integer from 1 to 1024, else a
 * RangeError naming the value. It sets libtorch's intra-op threads and OpenBLAS's own pool
 * (process-wide). The default, applied when rlora loads, is the cores this process may run on
 * (`os.availableParallelism()`, which follows the affinity mask), or OMP_NUM_THREADS where that is
 * set; OpenBLAS's pool keeps the size OPENBLAS_NUM_THREADS gave it where that is set. Processes
 * that run jobs side by side should share the cores: two processes with a pool of all cores each
 * ran 2.2 times slower than with 1 thread each on 2 cores (`rlora train --nproc-per-node` and the
 * demo's workers set their share). More threads than cores only slow jobs down.
 */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}
export function getNumThreads(): number {
  return native.getNumThreads();
}

/**
 * CPU memory: libtorch's CPU tensors of 1 MiB or more come from a caching allocator (freed blocks
 * are reused instead of being returned to the system and faulted in again). These read and
 * steer it; set RLORA_CPU_CACHING=0 in the environment to start without it. In a build against a
 * libtorch with CUDA, memoryStats().cuda also holds the CUDA caching allocator's counters per device
 * (torch.cuda.memory_allocated, max_memory_allocated, memory_reserved), and resetPeakMemory() and
 * emptyCache() act on it too.
 */
export function memoryStats(): MemoryStats {
  return native.memoryStats();
}
export function setCpuCaching(enabled: boolean): void {
  native.setCpuCaching(enabled);
}
/** The most bytes the cache keeps (default: a quarter of physical memory). */
export function setCpuCacheLimit(bytes: number): void {
  native.setCpuCacheLimit(bytes);
}
/** Returns every cached block to the system. */
export function emptyCache(): void {
  native.emptyCache();
}
export function resetPeakMemory(): void {
  native.resetPeakMemory();
}

/**
 * The BLAS libtorch's CPU products run on and the kernel it picked, e.g. "OpenBLAS 0.3.21
 * DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64 (core Haswell, 1 thread)". OpenBLAS picks kernels by CPU
 * (or OPENBLAS_CORETYPE), and float results differ slightly between kernels (and between thread
 * counts). Ends with the kernel and OpenBLAS's threads: "(core Haswell, 1 thread)".
 */
export function blasInfo(): string {
  return native.blasInfo();
}

/** What the loaded binary was built against: libtorch version and where it came from, CUDA. */
export const buildInfo = native.buildInfo;

export { sweep } from './sweep/run';
export type { SweepResult, SweepPick, ValidationRow } from './sweep/run';
export type { SweepOptions, SweepVariant, SweepData } from './sweep/config';
export type { SweepAdapterOptions, SweepTrainerOptions, SweepProgress, JobResult as SweepJobResult } from './sweep/types';
export type { VariantSummary } from './sweep/report';
export type { Stat, PairedDifference } from './sweep/stats';
