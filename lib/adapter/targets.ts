// The modules an adapter covers: targetModules resolved to a model's linear modules (errors name
// what was asked and what exists), each module's seed, and how many values the adapter holds on
// them within the layer's bounds (native.loraLimits, which native/rlora/options.h checks).
import { createHash } from 'crypto';
import * as util from 'util';

import type { Model } from '../model';
import { native } from '../native';
import { short } from './folder';

/**
 * The linear modules `targets` names, in model order: a RegExp is tested against full names, a
 * string names a module by its full name or its last parts. Errors name what was asked and what exists.
 */
export function resolveTargets(model: Model, targets: string[] | RegExp): string[] {
  const linear = model.linearModuleNames();
  const all = model.moduleNames();
  const available = [...new Set(linear.map(short))].join(', ');
  if (targets instanceof RegExp) {
    const hit = linear.filter((n) => targets.test(n));
    if (hit.length === 0) {
      const nonLinear = all.filter((n) => targets.test(n));
      if (nonLinear.length) throw new Error(`targetModules ${targets} matches only modules that are not linear: ${nonLinear.slice(0, 5).join(', ')}`);
      throw new Error(`targetModules ${targets} matches no module; the linear modules are ${available} (e.g. ${linear[0]})`);
    }
    return hit;
  }
  if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === 'string')) {
    throw new TypeError(`targetModules must be a non-empty array of module names or a RegExp, got ${util.inspect(targets, { depth: 0 })}`);
  }
  const chosen = new Set<string>();
  const fusedInto: Record<string, string> = { q_proj: 'qkv_proj', k_proj: 'qkv_proj', v_proj: 'qkv_proj', gate_proj: 'gate_up_proj', up_proj: 'gate_up_proj' };
  for (const t of targets) {
    const named = all.filter((n) => n === t || n.endsWith(`.${t}`));
    const fused = fusedInto[t];
    if (named.length === 0 && fused && linear.some((n) => n.endsWith(`.${fused}`))) {
      throw new Error(
        `target module "${t}": ${model.resolvedConfig.architecture} fuses ${fused === 'qkv_proj' ? 'q_proj, k_proj and v_proj' : 'gate_proj and up_proj'} into one ${fused}; ` +
          `target "${fused}" (one adapter over the fused projection, as PEFT does); the linear modules are ${available}`,
      );
    }
    if (named.length === 0) throw new Error(`target module "${t}" matches no module of this model; the linear modules are ${available}`);
    const notLinear = named.filter((n) => !linear.includes(n));
    if (notLinear.length) throw new Error(`target module "${t}" is not a linear layer (${notLinear[0]}); the linear modules are ${available}`);
    for (const n of named) chosen.add(n);
  }
  return linear.filter((n) => chosen.has(n));
}

/**
 * The seed of one module's layer in an adapter of seed `seed`: the first 48 bits (big-endian) of
 * SHA-256 of the text `rlora/<seed>/<full module name>`, e.g. `rlora/0/model.layers.0.mlp.gate_proj`.
 * Hashing the name (rather than counting modules) keeps the streams of different seeds and
 * modules apart: seed 1's first module does not draw what seed 0's second drew.
 */
export function moduleSeed(seed: number, module: string): number {
  return hash48(`rlora/${seed}/${module}`);
}

/** @internal The first 48 bits (big-endian) of SHA-256 of `text`, as a number. */
export function hash48(text: string): number {
  return createHash('sha256').update(text).digest().readUIntBE(0, 6);
}

/**
 * @internal How many values an adapter of `heads` heads and rank `rankOf(module)` holds on
 * `modules` (A, the heads B_i, the router); undefined when a size is no integer within the layer's
 * bounds (native.loraLimits: maxHeads, maxRank), whose own check then names it.
 */
export function adapterValueCount(model: Model, modules: readonly string[], rankOf: (module: string) => unknown, heads: unknown): number | undefined {
  const { maxRank, maxHeads } = native.loraLimits;
  const ok = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && v <= max;
  if (!ok(heads, maxHeads)) return undefined;
  let n = 0;
  for (const name of modules) {
    const rank = rankOf(name);
    if (!ok(rank, maxRank)) return undefined;
    const [out, inp] = model.linearParameters(name).weight.shape;
    n += rank * inp + heads * rank * out + (heads > 1 ? heads * inp : 0);
  }
  return n;
}
