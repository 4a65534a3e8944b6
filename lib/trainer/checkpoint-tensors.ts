// The two tensor files of a checkpoint (names in checkpoint.ts): optimizer.safetensors (AdamW's
// moments and step counts) and rng.safetensors (every adapter layer's dropout generator, and other
// ranks' as rank<R>/<module>).
import * as path from 'path';
import * as util from 'util';

import type { NativeAdamWState } from '../native';
import { forEachSafetensor, saveSafetensors } from '../safetensors';
import { Tensor } from '../tensor';
import { naming } from '../util/files';
import { OPTIMIZER_FILE, RNG_FILE } from './checkpoint';

/** Writes AdamW's state as optimizer.safetensors into the checkpoint folder being written. */
export function writeOptimizerState(dir: string, opt: NativeAdamWState): void {
  const tensors: Record<string, Tensor> = {};
  opt.params.forEach((p, i) => {
    tensors[`${i}.exp_avg`] = new Tensor(p.expAvg);
    tensors[`${i}.exp_avg_sq`] = new Tensor(p.expAvgSq);
  });
  saveSafetensors(path.join(dir, OPTIMIZER_FILE), tensors, { steps: String(opt.steps), param_steps: JSON.stringify(opt.params.map((p) => p.step)) });
}

/** Writes the dropout generators' states as rng.safetensors into the checkpoint folder being written. */
export function writeRngStates(dir: string, states: Record<string, Tensor>): void {
  saveSafetensors(path.join(dir, RNG_FILE), states);
}

/** rng.safetensors of a checkpoint: generator state by name; errors name the file. */
export function readRngStates(dir: string): Map<string, Tensor> {
  const file = path.join(dir, RNG_FILE);
  const rng = new Map<string, Tensor>();
  naming(file, () => forEachSafetensor(file, (e, t) => rng.set(e.name, t)));
  return rng;
}


/** Reads optimizer.safetensors (the AdamW state saveCheckpoint writes); errors name the file. */
export function readOptimizerState(file: string): NativeAdamWState {
  return naming(file, () => {
    const params: { expAvg?: Tensor; expAvgSq?: Tensor }[] = [];
    const header = forEachSafetensor(file, (e, t) => {
      const m = /^(\d+)\.(exp_avg|exp_avg_sq)$/.exec(e.name);
      if (!m) throw new Error(`unexpected tensor ${JSON.stringify(e.name)} (expected <i>.exp_avg, <i>.exp_avg_sq)`);
      const p = (params[Number(m[1])] ??= {});
      if (m[2] === 'exp_avg') p.expAvg = t;
      else p.expAvgSq = t;
    });
    const steps = Number(header.metadata.steps);
    if (!Number.isInteger(steps) || steps < 0) throw new Error(`metadata "steps" must be a non-negative integer, got ${util.inspect(header.metadata.steps)}`);
    let paramSteps: unknown;
    try {
      paramSteps = JSON.parse(header.metadata.param_steps ?? '');
    } catch {
      throw new Error(`metadata "param_steps" must be a JSON array of step counts, got ${util.inspect(header.metadata.param_steps)}`);
    }
    if (!Array.isArray(paramSteps) || paramSteps.length !== params.length || !paramSteps.every((n) => Number.isInteger(n) && n >= 0)) {
      throw new Error(`metadata "param_steps" must hold one step count for each of the ${params.length} parameters, got ${util.inspect(header.metadata.param_steps)}`);
    }
    return {
      steps,
      params: Array.from(params, (p, i) => {
        if (!p?.expAvg || !p.expAvgSq) throw new Error(`parameter ${i} lacks exp_avg or exp_avg_sq`);
        return { step: paramSteps[i] as number, expAvg: p.expAvg.native, expAvgSq: p.expAvgSq.native };
      }),
    };
  });
}
