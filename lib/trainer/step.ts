// One optimizer step and the evaluation loss, each one native call off the JS thread: the
// building blocks of Trainer.fit, public for custom loops.
import * as distributed from '../distributed';
import { assertNotTraining, beginTraining, endTraining } from '../activity';
import type { Batch } from '../data';
import { Model } from '../model';
import { native, NativeLmBatch, NativeLmStepOptions } from '../native';
import { AdamW } from '../optim';
import { Tensor } from '../tensor';
import { cuSeqlensTensor } from '../token-batch';
import { checkInstance } from '../util/options';
import { check, throwFirst } from '../util/spec';
import type { TrainStepResult } from './records';

/** An optional true/false option: undefined, or a TypeError naming it and the value. */
function optionalBool(v: unknown, name: string): void {
  if (v !== undefined) throwFirst(check(v, { kind: 'boolean' }, name));
}

/** The rows a step or a loss takes: a padded batch, or a packed one (packBatch) with its offsets. */
export type LmRows = Pick<Batch, 'inputIds' | 'attentionMask' | 'labels' | 'cuSeqlens'>;

function toLmBatch(b: LmRows): NativeLmBatch {
  const t = (rows: number[][]): Tensor => Tensor.from(rows, undefined, { dtype: 'int64' });
  const cu = b.cuSeqlens ? cuSeqlensTensor(b.cuSeqlens).native : null;
  return { ids: t(b.inputIds).native, mask: t(b.attentionMask).native, labels: t(b.labels).native, cuSeqlens: cu };
}

/**
 * Summed cross-entropy of each row's labelled tokens (labels -100 are ignored; each token predicts
 * the next, as in training) and the count of labelled tokens per row (per example of a packed
 * batch), computed natively without a gradient, off the JS thread. Refused while the model trains.
 */
export async function evalLoss(model: Model, batch: LmRows): Promise<{ lossSum: Float64Array; tokens: number[] }> {
  checkInstance(model, Model, 'evalLoss: the model');
  assertNotTraining(model, 'evalLoss');
  return rowLosses(model, batch);
}

export async function rowLosses(model: Model, batch: LmRows): Promise<{ lossSum: Float64Array; tokens: number[] }> {
  const l = await native.lmEvalLoss(model.native, toLmBatch(batch));
  return { lossSum: new Tensor(l.lossSum).data() as Float64Array, tokens: Array.from(new Tensor(l.tokens).data() as BigInt64Array, Number) };
}


/**
 * One optimizer step over one or more micro-batches (gradient accumulation): forward, masked
 * cross-entropy, backward, clipping, AdamW and the schedule, in one native call off the JS thread.
 * In a process group of several ranks (distributed.init) the step is data-parallel unless
 * `distributed: false`: each rank passes its own rows, the loss is normalised by every rank's
 * labelled tokens and the gradients are summed over the ranks, so all make the same update.
 * The building block of Trainer.fit, for custom loops (e.g. pretraining with an AdamW over a Model).
 * The model counts as training until the step resolves (README "Calls during training").
 */
export async function trainStep(
  model: Model,
  batches: LmRows[],
  optimizer: AdamW,
  options: { precision?: 'float32' | 'bfloat16'; distributed?: boolean; gradientCheckpointing?: boolean } = {},
): Promise<TrainStepResult> {
  checkInstance(model, Model, 'trainStep: the model');
  if (!(optimizer instanceof AdamW)) throw new TypeError('trainStep: optimizer must be an AdamW');
  optionalBool(options.distributed, 'trainStep: distributed');
  optionalBool(options.gradientCheckpointing, 'trainStep: gradientCheckpointing');
  const dataParallel = options.distributed ?? (distributed.worldSize() > 1);
  beginTraining(model, 'trainStep');
  try {
    return await step(model, batches, optimizer, { precision: options.precision ?? 'float32', distributed: dataParallel, gradientCheckpointing: options.gradientCheckpointing ?? false });
  } finally {
    endTraining(model);
  }
}

/** How a step runs, by name from the API's options to the addon (checked where the user gave them). */
export type StepSettings = Required<NativeLmStepOptions>;

/** One optimizer step, unchecked: trainStep's and Trainer.fit's. */
export async function step(model: Model, batches: LmRows[], optimizer: AdamW, settings: StepSettings): Promise<TrainStepResult> {
  const r = await native.lmTrainStep(model.native, batches.map(toLmBatch), optimizer.native, settings);
  return {
    loss: r.loss,
    finite: r.finite,
    lr: r.lr,
    gradNorm: r.gradNorm,
    paramNorm: r.paramNorm,
    paramsFinite: r.paramsFinite,
    rowLoss: new Tensor(r.rows.lossSum).data() as Float64Array,
    rowTokens: Array.from(new Tensor(r.rows.tokens).data() as BigInt64Array, Number),
  };
}
