// The Trainer package: the class and what its users name (options, records, callbacks, metrics,
// the step functions for custom loops).
export { Trainer } from './trainer';
export { trainStep, evalLoss } from './step';
export type { LmRows } from './step';
export { BUILTIN_METRICS } from './metrics';
export type { MetricFn, BuiltinMetric } from './metrics';
export type { TrainerOptions, EarlyStoppingOptions, ReportTo } from './options';
export { MAX_GRADIENT_ACCUMULATION, REPORT_TO, TRAINER_OPTION_NAMES } from './options';
export type { StepRecord, TaskEval, EvalRecord, History, Prediction, EvaluateOptions, TrainStepResult } from './records';
export type { FitOptions, TrainerCallback, CallbackResult, CallbackState } from './callbacks';
export { trimLog } from './checkpoint';
