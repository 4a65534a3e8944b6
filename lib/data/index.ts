// The data package: the record formats (formats), records to tokens (encode), the JSON-lines
// reader, MultiTaskDataset, the batch sampler and packing.
export { DEFAULT_TEMPLATE, encodePrompt, encodeRendered, IGNORE_INDEX } from './encode';
export type { DatasetOptions, EncodedExample } from './encode';
export { ALPACA_PROMPT, DEFAULT_TASK } from './formats';
export type { Example, PromptResponseExample, MessagesExample, TextExample, PromptCompletionExample, AlpacaExample, RecordFormat, TemplateFields } from './formats';
export { MultiTaskDataset } from './dataset';
export type { DataSettings, DataSplit } from './dataset';
export { BatchSampler, promptBatch } from './sampler';
export { packBatch } from './pack';
export type { Sampling, SamplerOptions, Batch, SamplerState } from './sampler';
