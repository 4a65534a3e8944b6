// The data package: records to tokens (encode), the JSON-lines reader, MultiTaskDataset and the
// batch sampler.
export { DEFAULT_TEMPLATE, encodePrompt, encodeRendered, IGNORE_INDEX } from './encode';
export type { Example, DatasetOptions, EncodedExample } from './encode';
export { MultiTaskDataset } from './dataset';
export type { DataSettings } from './dataset';
export { BatchSampler, promptBatch } from './sampler';
export type { Sampling, SamplerOptions, Batch, SamplerState } from './sampler';
