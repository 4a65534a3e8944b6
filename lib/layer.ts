// MultiHeadLoraLinear: a frozen linear layer wrapped by multi-head LoRA (LoRA, HydraLoRA, R-LoRA).
import * as util from 'util';

import { assertNotTraining } from './activity';
import type { LoraOptions, ResolvedLoraOptions } from './lora-options';
import { native, NativeLoraLinear, NativeTensor } from './native';
import { Tensor } from './tensor';
import { inspectSymbol } from './util/options';


// The options are declared in lora-options.ts (once, for the layer and for the config files' key tables).
export type { InitOptions, InitScale, InitScheme, LoraOptions, Method, ResolvedLoraOptions } from './lora-options';

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
