// rlora: R-LoRA multi-task fine-tuning of language models for Node.js.
import { native } from './native';

export { Tensor } from './tensor';
export type { Dtype, Device, TensorData, TensorOptions, TypedData, NestedNumbers } from './tensor';
export { loadSafetensors, saveSafetensors, readSafetensorsHeader, loadSafetensorsMetadata, MAX_HEADER_BYTES } from './safetensors';
export type { SafetensorsEntry, SafetensorsHeader } from './safetensors';
export { MultiHeadLoraLinear } from './layer';
export { AdamW, fitStep } from './optim';
export type { AdamWOptions, FitStepResult, Schedule } from './optim';
export type { LoraOptions, InitOptions, InitScheme, InitScale, Method, ResolvedLoraOptions, BaseLinear, VjpResult } from './layer';

/** Threads each native job uses for its matrix products (default 1). */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}
export function getNumThreads(): number {
  return native.getNumThreads();
}

/** What the loaded binary was built against: libtorch version and where it came from, CUDA. */
export const buildInfo = native.buildInfo;
