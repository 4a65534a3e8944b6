// AdamW with its learning-rate schedule and gradient clipping, stepped natively in one call.
import * as util from 'util';

import { beginTraining, endTraining } from './activity';
import { MultiHeadLoraLinear } from './layer';
import { Model } from './model';
import { native, NativeAdamW } from './native';
import { Tensor } from './tensor';
import { checkInstance } from './util/options';

export type Schedule = 'constant' | 'linear' | 'cosine';

export interface AdamWOptions {
  /** Base learning rate. Default 1e-3. */
  lr?: number;
  /** Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay (PyTorch's AdamW). Default 0.01. */
  weightDecay?: number;
  /** Clip the global gradient L2 norm to this before each step; 0 turns clipping off. Default 0. */
  maxGradNorm?: number;
  /** Learning-rate schedule after warm-up (as transformers' schedules). Default 'constant'. */
  schedule?: Schedule;
  /** Steps of linear warm-up from 0. Default 0. */
  warmupSteps?: number;
  /** Step at which 'linear' and 'cosine' reach 0 (required for them). */
  totalSteps?: number;
}

export interface FitStepResult {
  /** Mean squared error over every element, before this step's update. */
  loss: number;
  /** Mean squared error of each row (token), float64. */
  rowLoss: Tensor;
  /** The learning rate this step used. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** L2 norm of the trainable parameters after the update (as TrainStepResult.paramNorm). */
  paramNorm: number;
  /** false: the update left a parameter NaN, infinite or too large for its dtype. */
  paramsFinite: boolean;
}

/**
 * AdamW over the trainable parameters of the given layers, or over every parameter of a Model
 * (full training, e.g. pretraining a small model: this makes the model's parameters trainable).
 */
export class AdamW {
  /** @internal */
  readonly native: NativeAdamW;

  /** Frees the optimizer state (two moments per parameter) now; using it afterwards throws. */
  dispose(): void {
    this.native.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  constructor(modules: MultiHeadLoraLinear[] | Model, options: AdamWOptions = {}) {
    if (modules instanceof Model) {
      this.native = new native.NativeAdamW(modules.native, options);
      return;
    }
    if (!Array.isArray(modules)) throw new TypeError(`AdamW: modules must be an array of MultiHeadLoraLinear or a Model, got ${util.inspect(modules, { depth: 0 })}`);
    this.native = new native.NativeAdamW(
      modules.map((m, i) => {
        if (!(m instanceof MultiHeadLoraLinear)) throw new TypeError(`AdamW: modules[${i}] must be a MultiHeadLoraLinear`);
        return m.native;
      }),
      options,
    );
  }

  /** Optimizer steps taken so far. */
  get stepsTaken(): number {
    return this.native.stepsTaken;
  }

  /** The scheduled learning rate at a (0-based) step. */
  lrAt(step: number): number {
    return this.native.lrAt(step);
  }
}

/**
 * One training step of a single layer toward `target` (mean squared error): forward in the
 * layer's mode (dropout in training mode), backward, clipping, AdamW. Runs off the JS thread.
 */
export async function fitStep(layer: MultiHeadLoraLinear, x: Tensor, target: Tensor, optimizer: AdamW): Promise<FitStepResult> {
  checkInstance(layer, MultiHeadLoraLinear, 'fitStep: the layer');
  checkInstance(x, Tensor, 'fitStep: the input');
  checkInstance(target, Tensor, 'fitStep: the target');
  if (!(optimizer instanceof AdamW)) throw new TypeError('fitStep: optimizer must be an AdamW');
  beginTraining(layer, 'fitStep');
  let r: Awaited<ReturnType<typeof native.fitLayerStep>>;
  try {
    r = await native.fitLayerStep(layer.native, x.native, target.native, optimizer.native);
  } finally {
    endTraining(layer);
  }
  return { loss: r.loss, rowLoss: new Tensor(r.rowLoss), lr: r.lr, gradNorm: r.gradNorm, paramNorm: r.paramNorm, paramsFinite: r.paramsFinite };
}
