// Activation checkpointing (gradientCheckpointing): the step gives the same losses and updates as
// without it (float64, dropout on, so the recomputation must draw the same masks and leave the
// generators where an ordinary step leaves them), for an adapter and for full training (the
// embedding's gradient), and its peak memory falls.
import { Adapter, AdamW, HFConfig, memoryStats, Model, resetPeakMemory, trainStep } from '../lib';
import { maxAbs, maxAbsDiff } from './helpers/math';
import { TINY_BYTE_CONFIG } from './helpers/tiny-model';

const CFG: HFConfig = { ...TINY_BYTE_CONFIG, num_hidden_layers: 3 };
const TARGETS = ['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** A seeded batch of byte ids with some right padding and labels on the second half. */
function batch(seed: number, rows = 3, len = 12) {
  let a = seed + 1;
  const rnd = () => ((a = (a * 1103515245 + 12345) % 2147483648) / 2147483648);
  const inputIds: number[][] = [], attentionMask: number[][] = [], labels: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const n = len - r; // row r has r padding positions at the end
    const ids = Array.from({ length: len }, (_, t) => (t < n ? 32 + Math.floor(rnd() * 90) : 258));
    inputIds.push(ids);
    attentionMask.push(ids.map((_, t) => (t < n ? 1 : 0)));
    labels.push(ids.map((id, t) => (t < n && t >= len / 2 ? id : -100)));
  }
  return { inputIds, attentionMask, labels };
}

const flat = (t: Record<string, { data(): ArrayLike<number | bigint> }>): number[] =>
  Object.keys(t).sort().flatMap((k) => Array.from(t[k].data(), Number));

/** Largest difference relative to b's largest magnitude. */
const maxRel = (a: number[], b: number[]): number => maxAbsDiff(a, b) / maxAbs(b);

describe('gradientCheckpointing', () => {
  it('an adapter with dropout: the same losses and parameters as without, step after step (float64)', async () => {
    const run = async (checkpointing: boolean, headChunk?: number) => {
      const model = Model.fromConfig(CFG, { seed: 1, dtype: 'float64' });
      if (headChunk !== undefined) model.native.setHeadChunkElements(headChunk);
      const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 3, dropout: 0.2, targetModules: TARGETS, seed: 4 });
      adapter.train();
      const opt = new AdamW([...adapter.layers.values()], { lr: 1e-2 });
      const losses: number[] = [];
      for (let s = 0; s < 4; s++) losses.push((await trainStep(model, [batch(s), batch(s + 10, 2, 9)], opt, { gradientCheckpointing: checkpointing })).loss);
      return { losses, params: flat(adapter.stateDict()) };
    };
    // and with the head and loss run one batch row at a time (a large vocabulary's chunks)
    const [plain, ckpt, chunked] = [await run(false), await run(true), await run(true, 1)];
    for (const other of [ckpt, chunked]) {
      other.losses.forEach((l, i) => expect(l).toBeCloseTo(plain.losses[i], 12));
      expect(maxRel(other.params, plain.params)).toBeLessThan(1e-12);
    }
    expect(new Set(plain.losses).size).toBe(4); // the adapter moves: the steps differ
  });

  it('full training: the embedding and every base weight get the same updates (float64)', async () => {
    const run = async (checkpointing: boolean) => {
      const model = Model.fromConfig(CFG, { seed: 2, dtype: 'float64' });
      const opt = new AdamW(model, { lr: 1e-3 });
      for (let s = 0; s < 3; s++) await trainStep(model, [batch(s)], opt, { gradientCheckpointing: checkpointing });
      return flat(Object.fromEntries(model.native.parameterSpecs().map(({ name }) => [name, { data: () => model.native.parameter(name).data() }])));
    };
    const [plain, ckpt] = [await run(false), await run(true)];
    expect(maxRel(ckpt, plain)).toBeLessThan(1e-12);
  });

  it('the step peaks at less memory (8 layers, batch 8 x 256)', async () => {
    const cfg: HFConfig = { ...TINY_BYTE_CONFIG, hidden_size: 128, intermediate_size: 512, num_hidden_layers: 8, num_attention_heads: 4, num_key_value_heads: 4 };
    const model = Model.fromConfig(cfg, { seed: 3 });
    const adapter = Adapter.attach(model, { method: 'rlora', rank: 4, heads: 5, targetModules: ['gate_proj', 'up_proj', 'down_proj'] });
    adapter.train();
    const opt = new AdamW([...adapter.layers.values()], { lr: 1e-3 });
    const b = batch(1, 8, 256);
    const peak = async (checkpointing: boolean): Promise<number> => {
      await trainStep(model, [b], opt, { gradientCheckpointing: checkpointing }); // warm the allocator's cache
      resetPeakMemory();
      await trainStep(model, [b], opt, { gradientCheckpointing: checkpointing });
      return memoryStats().peakAllocatedBytes;
    };
    const without = await peak(false), withCkpt = await peak(true);
    // measured here: about 3 times less
    expect(withCkpt).toBeLessThan(0.5 * without);
    await expect(trainStep(model, [b], opt, { gradientCheckpointing: 'yes' as never })).rejects.toThrow('trainStep: gradientCheckpointing must be true or false, got "yes"');
  });
});
