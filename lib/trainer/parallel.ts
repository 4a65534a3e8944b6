// Data parallelism in the Trainer: joining the process group and checking that every rank runs the
// same thing, each rank's slice of a global batch, and the dropout streams of ranks > 0.
import { createHash } from 'crypto';

import * as distributed from '../distributed';
import { Adapter, hash48, moduleSeed } from '../adapter';
import type { Batch, MultiTaskDataset } from '../data';
import { IGNORE_INDEX } from '../data';
import type { Model } from '../model';
import { sameDevice, Tensor } from '../tensor';
import type { TrainerOptions } from './options';

/** This process's place in a data-parallel run. */
export interface Place {
  rank: number;
  worldSize: number;
}

/** A hash of a dataset's tokens, tasks and prompt lengths, in order. */
export function datasetHash(ds: MultiTaskDataset): number {
  const h = createHash('sha256');
  for (let i = 0; i < ds.size; i++) {
    const e = ds.get(i);
    h.update(`${e.task}\u0000${e.promptLength}\u0000`);
    h.update(Buffer.from(Int32Array.from(e.inputIds).buffer));
  }
  return h.digest().readUIntBE(0, 6);
}


/**
 * Rank `rank`'s share of a global batch: rows floor(rank n / W) to floor((rank + 1) n / W). A rank
 * whose share is empty (fewer rows than ranks) gets one row without labels and no tasks: it still
 * takes part in the step's collectives and adds nothing to the loss or the gradients.
 */
export function rankSlice(b: Batch, rank: number, worldSize: number): Batch {
  const n = b.inputIds.length;
  const lo = Math.floor((rank * n) / worldSize), hi = Math.floor(((rank + 1) * n) / worldSize);
  if (hi > lo) {
    const labels = b.labels.slice(lo, hi);
    return {
      inputIds: b.inputIds.slice(lo, hi),
      attentionMask: b.attentionMask.slice(lo, hi),
      labels,
      tasks: b.tasks.slice(lo, hi),
      indices: b.indices.slice(lo, hi),
      lossTokens: labels.reduce((a, row) => a + row.filter((v, i) => i > 0 && v !== IGNORE_INDEX).length, 0),
    };
  }
  return { inputIds: [b.inputIds[0]], attentionMask: [b.attentionMask[0]], labels: [b.labels[0].map(() => IGNORE_INDEX)], tasks: [], indices: [], lossTokens: 0 };
}

/**
 * The rendezvous' refusal of a rank of another run, said as the parts that differ ("rank 1 has
 * other training data than rank 0"); other errors unchanged. The message keeps the native one's
 * hint about another job on the same port.
 */
function runMismatch(err: unknown, parts: Record<string, number>, what: (name: string) => string): unknown {
  const m = err instanceof Error ? /^distributed init \(rank (\d+) of (\d+)\): .*?(?:rank 0 at \S+|a process that came as rank (\d+)) runs another run \[(.*?)\] than this rank \[(.*?)\]/.exec(err.message) : null;
  if (!m) return err;
  const parse = (id: string): Record<string, string> => Object.fromEntries([...id.matchAll(/(configuration|training data|base weights|run)=(\S+)/g)].map((x) => [x[1], x[2]]));
  const [, rank, world, other, theirs, mine] = m;
  const them = parse(theirs), us = parse(mine);
  const differ = Object.keys(parts).filter((k) => them[k] !== us[k]).map(what);
  const who = other !== undefined ? `rank ${other}` : `rank ${rank}`;
  const runs = them.run !== us.run ? 'another run id (RLORA_RUN_ID or torchrun\'s)' : differ.length ? `other ${differ.join(', other ')}` : 'another run';
  const job = ` (or a process of another job on this MASTER_PORT: give each job its own port)`;
  return new Error(`data parallel over ${world} processes: ${who} has ${runs} than rank 0${job}: every rank must run the same configuration on the same data and base model`);
}

/**
 * Joins (or finds) the process group when data parallelism is on and checks that every rank runs
 * the same configuration (model config, adapter, `options`, data and base weights, by hashes).
 * Undefined: one process. `globalBatch`: the global batch an earlier fit of this Trainer used.
 */
export async function joinProcessGroup(run: { model: Model; adapter: Adapter; options: TrainerOptions; train: MultiTaskDataset; step: number; globalBatch?: number }): Promise<Place | undefined> {
  const { model, adapter, options, train } = run;
  const want = options.distributed ?? 'auto';
  if (want === false) return undefined;
  // one process (no WORLD_SIZE, or 1): no group, whatever the option says (a group of one would
  // listen on MASTER_PORT for nothing, and fail when another job holds that port)
  if (!distributed.isInitialized() && distributed.worldSizeFromEnv() <= 1) return undefined;
  if (distributed.isInitialized() && distributed.worldSize() <= 1) return undefined;
  // every rank must train the same thing: a hash of model, adapter, options and data ...
  const same = { ...options, progress: undefined, outputDir: undefined, distributed: undefined, device: undefined }; // each rank has its own GPU
  // ... and of the data's tokens and the base weights themselves, not only their sizes
  const parts: Record<string, number> = {
    configuration: hash48(JSON.stringify({ model: model.config, adapter: adapter.options, modules: [...adapter.layers.keys()], trainer: same, data: { size: train.size, tasks: train.tasks }, step: run.step })),
    'training data': datasetHash(train),
    'base weights': hash48(String(model.native.fingerprint())),
  };
  const what = (name: string): string => (name === 'configuration' ? 'model config, adapter, trainer options, training set size or step' : name);
  let W: number;
  if (!distributed.isInitialized()) {
    const given = typeof want === 'object' ? want : {};
    // the rendezvous takes only ranks of this run: the parts' hashes are the run's id (after any
    // id the launcher gave), so a rank of another job on the same port is refused, not counted
    const base = distributed.resolveOptions({ ...given }).runId;
    const runId = [...(base ? [`run=${base}`] : []), ...Object.entries(parts).map(([k, v]) => `${k}=${v}`)].join(' ');
    try {
      await distributed.init({ ...given, runId, backend: given.backend ?? distributed.defaultBackend(model.device) });
    } catch (err) {
      throw runMismatch(err, parts, what);
    }
    W = distributed.worldSize();
    if (W <= 1) return undefined;
  } else {
    W = distributed.worldSize();
    // a group made before (distributed.init): compare the parts over it, one collective after the other
    const gathered: number[][] = [];
    for (const v of Object.values(parts)) gathered.push(await distributed.allgather(v));
    const names = Object.keys(parts);
    const problems = gathered.flatMap((all, k) => {
      const differ = all.flatMap((v, i) => (v !== all[0] ? [i] : []));
      return differ.length ? [`rank${differ.length > 1 ? 's' : ''} ${differ.join(', ')} ${differ.length > 1 ? 'have' : 'has'} other ${what(names[k])}`] : [];
    });
    if (problems.length) {
      throw new Error(`data parallel over ${W} processes: ${problems.join('; ')} than rank 0: every rank must run the same configuration on the same data and base model`);
    }
  }
  const R = distributed.rank();
  const commDevice = distributed.device() ?? 'cpu';
  if (commDevice !== 'cpu' && !sameDevice(commDevice, model.device)) {
    throw new Error(`data parallel: rank ${R}'s ${distributed.backendName()} group works on ${commDevice} (its LOCAL_RANK), but the model is on ${model.device}: load the model with {device: '${commDevice}'}`);
  }
  const batchSize = options.batchSize ?? 0;
  if (run.globalBatch !== undefined && run.globalBatch !== batchSize * W) {
    throw new Error(`this Trainer already trained with a global batch of ${run.globalBatch} rows; with ${W} processes it would be ${batchSize * W}: make a new Trainer (or resume from a checkpoint)`);
  }
  return { rank: R, worldSize: W };
}

/**
 * Gives rank R > 0 dropout streams of its own (rank 0 keeps the adapter's, as one process is rank 0
 * of 1): a checkpoint's (`saved`, keyed rank<R>/<module>) or new ones seeded from the adapter's
 * seed, the module, the rank and the step.
 */
export function seedRankGenerators(adapter: Adapter, rank: number, step: number, saved: ReadonlyMap<string, Tensor>): void {
  if (rank === 0) return;
  const seed = adapter.options.seed ?? 0;
  for (const [name, layer] of adapter.layers) {
    const state = saved.get(`rank${rank}/${name}`);
    if (state) layer.native.setGeneratorState(state.native);
    else layer.native.reseed(moduleSeed(seed, `${name}/rank${rank}/step${step}`));
  }
}

/** Every rank's dropout generator states, keyed as rng.safetensors stores them (rank 0: the module name). */
export async function gatherGeneratorStates(adapter: Adapter): Promise<Record<string, Tensor>> {
  const mine: Record<string, string> = {};
  for (const [name, layer] of adapter.layers) mine[name] = Buffer.from(new Tensor(layer.native.generatorState()).data() as Uint8Array).toString('base64');
  const all = await distributed.gatherJson(mine);
  const out: Record<string, Tensor> = {};
  all.forEach((states, r) => {
    for (const [name, b64] of Object.entries(states)) {
      const bytes = new Uint8Array(Buffer.from(b64, 'base64'));
      out[r === 0 ? name : `rank${r}/${name}`] = Tensor.fromBytes(bytes, 'uint8', [bytes.length]);
    }
  });
  return out;
}
