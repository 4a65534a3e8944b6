// MultiHeadLoraLinear: a frozen linear layer wrapped by multi-head LoRA (LoRA, HydraLoRA, R-LoRA).
import * as util from 'util';

import { assertNotTraining } from './activity';
import { native, NativeLoraLinear, NativeTensor } from './native';
import { Tensor } from './tensor';
import { inspectSymbol } from './util/options';


export type Method = 'lora' | 'hydralora' | 'rlora';
export type InitScheme = 'kaiming' | 'gaussian' | 'unit' | 'zeros' | 'orthogonal';
export type InitScale = 'none' | 'stable' | 'reference';

/**
 * How the LoRA matrices start. Defaults come from the method's preset:
 *
 * | field      | lora      | hydralora | rlora     |
 * |------------|-----------|-----------|-----------|
 * | a          | kaiming   | kaiming   | unit      |
 * | b          | zeros     | zeros     | unit      |
 * | router     | kaiming   | kaiming   | zeros     |
 * | scale      | none      | none      | stable    |
 * | offset     | false     | false     | true      |
 *
 * Schemes: `kaiming` is Kaiming-uniform with a = sqrt(5) (bound 1/sqrt(fan_in), as LoRA);
 * `gaussian` is N(0, 1/rank^2) (PEFT's "gaussian"); `unit` is N(0, 1/in) for A and the router and
 * N(0, 1/out) for each B_i; `orthogonal` is as torch.nn.init.orthogonal_; `zeros`.
 */
export interface InitOptions {
  a?: InitScheme;
  b?: InitScheme;
  router?: InitScheme;
  /**
   * `stable` multiplies A and each B_i once by c / sqrt(gamma); `reference` reproduces the published
   * R-LoRA code, whose scale sits inside its per-head loop: A is multiplied N times and B_i
   * (0-based) N - i times; `none` leaves them.
   */
  scale?: InitScale;
  /** gamma of the stable scale. Default 64. */
  gamma?: number;
  /** c of the stable scale: `rank` gives r^(1/4) (the published code, default), `out` gives out^(1/4) (the paper's table). */
  stableBase?: 'rank' | 'out';
  /**
   * Subtract the initial product s * mean_i B_i(0) A(0) so the layer starts where the base layer
   * was (with a uniform router). Kept as a low-rank pair (`lora_offset_A/B.weight`); the frozen
   * weight itself is never modified. Exact only with a uniform router, so it needs
   * `router: 'zeros'` (the `rlora` preset) when there are several heads; `scale: 'reference'`
   * alone may combine it with another router, as the published code does.
   */
  offset?: boolean;
}

export interface LoraOptions {
  /** Preset that fills every field not given. Default `rlora`. */
  method?: Method;
  /** Rank r of the shared down-projection A. Default 8. */
  rank?: number;
  /** Number of heads N (B_0 .. B_{N-1}, mixed by a softmax router when N > 1). Default 1 for `lora`, 5 otherwise. */
  heads?: number;
  /** alpha of the scaling s = alpha / r (or alpha / sqrt(r) with rankStabilization). Default 16. */
  alpha?: number;
  /** Dropout probability p in [0, 1), applied in training mode only. Default 0.1. */
  dropout?: number;
  /** Where dropout stands: `input` (on x before A; LoRA, HydraLoRA) or `rank` (on A x; R-LoRA). */
  dropoutOn?: 'input' | 'rank';
  /** Each head draws its own dropout mask (R-LoRA: true) or all share one (HydraLoRA: false). */
  multiHeadDropout?: boolean;
  /** rsLoRA: s = alpha / sqrt(r). Default true for `rlora`, false otherwise. */
  rankStabilization?: boolean;
  init?: InitOptions;
  /** Seed of the initial values and of the dropout masks. Default 0. */
  seed?: number;
}

/** Every option resolved: the preset with the given fields on top, plus the scaling s. */
export interface ResolvedLoraOptions {
  method: Method;
  rank: number;
  heads: number;
  alpha: number;
  dropout: number;
  dropoutOn: 'input' | 'rank';
  multiHeadDropout: boolean;
  rankStabilization: boolean;
  init: Required<InitOptions>;
  seed: number;
  scaling: number;
}

export interface BaseLinear {
  /** Frozen weight W0, [out, in]. */
  weight: Tensor;
  /** Frozen bias b, [out]. */
  bias?: Tensor | null;
}

export interface VjpResult {
  output: Tensor;
  gradInput: Tensor;
  /** Gradient of each trainable parameter, by state-dict name. */
  grads: Record<string, Tensor>;
}

function wrapAll(tensors: Record<string, NativeTensor>): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, new Tensor(v)]));
}

function requireTensor(value: unknown, what: string): Tensor {
  if (!(value instanceof Tensor)) throw new TypeError(`${what} must be a Tensor, got ${util.inspect(value, { depth: 0 })}`);
  return value;
}

/**
 * y = W0 x + b + s * sum_i w_i(x) B_i A D_i(x), with w(x) = softmax(W_g x) (docs/ARCHITECTURE.md section 2).
 * Parameters take the base weight's dtype and device. New layers are in training mode.
 */
export class MultiHeadLoraLinear {
  /** @internal */
  readonly native: NativeLoraLinear;

  constructor(base: BaseLinear, options: LoraOptions = {}) {
    if (typeof base !== 'object' || base === null) throw new TypeError('MultiHeadLoraLinear: first argument must be {weight, bias?}');
    const weight = requireTensor(base.weight, 'weight');
    const bias = base.bias == null ? null : requireTensor(base.bias, 'bias');
    this.native = new native.NativeLoraLinear(weight.native, bias?.native ?? null, options);
  }

  /**
   * Frees the native memory now instead of when the collector gets to it (rlora tells V8 how much
   * native memory each object holds, so dropped objects are collected in time anyway). Using the
   * MultiHeadLoraLinear afterwards throws "this MultiHeadLoraLinear was disposed". `using x = ...` calls it at the end of the block.
   */
  dispose(): void {
    assertNotTraining(this, 'MultiHeadLoraLinear.dispose');
    this.native.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Options in force (preset plus overrides) and the scaling s. */
  get options(): ResolvedLoraOptions {
    return this.native.options as ResolvedLoraOptions;
  }

  /** Output for x [..., in]: Promise of [..., out]. Runs off the JS thread; no gradients are kept. */
  async forward(x: Tensor): Promise<Tensor> {
    assertNotTraining(this, 'MultiHeadLoraLinear.forward');
    return new Tensor(await this.native.forward(requireTensor(x, 'input').native));
  }

  /** Forward, then the vector-Jacobian product with gradOutput: d(x) and d(each parameter). */
  async vjp(x: Tensor, gradOutput: Tensor): Promise<VjpResult> {
    assertNotTraining(this, 'MultiHeadLoraLinear.vjp');
    const r = await this.native.vjp(requireTensor(x, 'input').native, requireTensor(gradOutput, 'gradOutput').native);
    return { output: new Tensor(r.output), gradInput: new Tensor(r.gradInput), grads: wrapAll(r.grads) };
  }

  /** Training mode: dropout on. */
  train(on = true): this {
    assertNotTraining(this, on ? 'MultiHeadLoraLinear.train' : 'MultiHeadLoraLinear.eval', true);
    this.native.setTraining(on);
    return this;
  }
  /** Evaluation mode: no dropout. */
  eval(): this {
    return this.train(false);
  }
  get training(): boolean {
    return this.native.training;
  }

  /**
   * Copies of the adapter tensors: `lora_A.weight`, `lora_B.weight` (N = 1) or `lora_B0.weight` ..
   * `lora_B{N-1}.weight`, `lora_route.weight` (N > 1), `lora_offset_A.weight` and
   * `lora_offset_B.weight` (with init.offset).
   */
  stateDict(): Record<string, Tensor> {
    assertNotTraining(this, 'MultiHeadLoraLinear.stateDict', true);
    return wrapAll(this.native.stateDict());
  }

  /** Loads tensors by the names of stateDict(); strict about names and shapes; all or nothing. */
  loadStateDict(tensors: Record<string, Tensor>): void {
    if (typeof tensors !== 'object' || tensors === null) throw new TypeError('loadStateDict: expected an object of Tensors');
    assertNotTraining(this, 'MultiHeadLoraLinear.loadStateDict', true);
    this.loadValues(tensors);
  }

  /** @internal loadStateDict() without its argument check: Adapter.loadWeights (refused during a step, as loadStateDict is). */
  loadValues(tensors: Record<string, Tensor>): void {
    assertNotTraining(this, 'MultiHeadLoraLinear.loadValues', true);
    const natives = Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, requireTensor(v, `stateDict["${k}"]`).native]));
    this.native.loadStateDict(natives);
  }

  /** N x N cosine similarities of the flattened B_i (float64; two zero heads count as identical). */
  headSimilarity(): Tensor {
    assertNotTraining(this, 'MultiHeadLoraLinear.headSimilarity', true);
    return new Tensor(this.native.headSimilarity());
  }

  /** The frozen weight as the layer uses it: W0 minus the R-LoRA offset. */
  baseWeight(): Tensor {
    assertNotTraining(this, 'MultiHeadLoraLinear.baseWeight', true);
    return new Tensor(this.native.baseWeight());
  }

  /** Number of trainable values (A, every B_i, the router). */
  parameterCount(): number {
    return this.native.parameterCount();
  }

  [inspectSymbol](): string {
    const o = this.options;
    return `MultiHeadLoraLinear(method=${o.method}, rank=${o.rank}, heads=${o.heads}, alpha=${o.alpha}, dropout=${o.dropout} on ${o.dropoutOn}, trainable=${this.parameterCount()}, ${this.training ? 'train' : 'eval'})`;
  }
}
