// Padding-free packing: several examples in one row with their offsets (cuSeqlens). Each
// architecture's logits of a packed row equal those of each example run alone (long enough that the
// block-wise attention runs and skips the blocks before an example); the Trainer with packing gives
// the per-task losses, gradient norms and adapter weights of padded batches, with gradient
// checkpointing and bf16 autocast too; the evaluation loss is the same; bad offsets are refused.
import { Adapter, ByteTokenizer, Model, MultiTaskDataset, packBatch, Trainer, trainStep, AdamW } from '../lib';
import { ARCHITECTURES } from './helpers/architectures';
import { maxAbs, maxAbsDiff } from './helpers/math';
import { TINY_BYTE_CONFIG } from './helpers/tiny-model';

jest.setTimeout(120_000);

function tokens(n: number, seed: number, vocab: number): number[] {
  let x = seed >>> 0;
  return Array.from({ length: n }, () => {
    x = (x * 1664525 + 1013904223) >>> 0;
    return x % vocab;
  });
}

describe('a packed row gives each example the logits it has alone', () => {
  // 7 + 1 + 30 + 300 tokens: the row (338) takes the block-wise path, its 300-token example too
  const LENGTHS = [7, 1, 30, 300];
  it.each(Object.keys(ARCHITECTURES))('%s', async (name) => {
    const cfg = { ...ARCHITECTURES[name], max_position_embeddings: 512 };
    const model = Model.fromConfig(cfg, { seed: 11 });
    const examples = LENGTHS.map((n, i) => tokens(n, 100 + i, cfg.vocab_size as number));
    const cu = [0];
    for (const e of examples) cu.push(cu[cu.length - 1] + e.length);
    const packed = (await model.forward([examples.flat()], { cuSeqlens: cu })).data() as Float32Array;
    const V = cfg.vocab_size as number;
    for (const [i, e] of examples.entries()) {
      const alone = (await model.forward([e])).data() as Float32Array;
      const part = packed.subarray(cu[i] * V, cu[i + 1] * V);
      // float32; the blocks fall elsewhere in the packed row (another summation order)
      expect({ example: i, diff: maxAbsDiff(part, alone) <= 2e-5 * Math.max(1, maxAbs(alone)) }).toEqual({ example: i, diff: true });
    }
    // without the offsets the row is one sequence: the later examples' logits differ
    const unpacked = (await model.forward([examples.flat()])).data() as Float32Array;
    expect(maxAbsDiff(unpacked.subarray(cu[2] * V, cu[3] * V), packed.subarray(cu[2] * V, cu[3] * V))).toBeGreaterThan(1e-3);
  });
});

const tok = new ByteTokenizer();
const WORDS = ['cat', 'elephant', 'ox', 'hippopotamus', 'bee', 'giraffe', 'eel', 'crocodile', 'ant', 'kangaroo'];
const EXAMPLES = [
  ...WORDS.map((w) => ({ task: 'upper', prompt: `up ${w}:`, response: w.toUpperCase() })),
  ...['12', '7', '34567', '9', '6012', '888'].map((n) => ({ task: 'reverse', prompt: `reverse the digits ${n}:`, response: [...n].reverse().join('') })),
];
const dataset = (): MultiTaskDataset => MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 48 });

async function fit(packing: boolean, extra: Record<string, unknown> = {}) {
  const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 3 });
  const adapter = Adapter.attach(model, { method: 'rlora', heads: 2, rank: 4, dropout: 0, targetModules: ['q_proj', 'v_proj', 'up_proj'], seed: 7 });
  const history = await new Trainer(model, adapter, { learningRate: 5e-3, maxSteps: 4, batchSize: 5, gradientAccumulation: 2, seed: 1, progress: false, packing, ...extra }).fit(dataset(), { evalDataset: dataset() });
  return { history, weights: adapter.stateDict() };
}

describe('the Trainer with packing: the numbers of padded batches', () => {
  it.each([
    ['float32', {}, 1e-5],
    ['gradient checkpointing', { gradientCheckpointing: true }, 1e-5],
    // bfloat16 rounds the products; packing changes the rows they are rounded in
    ['bfloat16 autocast', { precision: 'bfloat16' }, 3e-2],
  ] as [string, Record<string, unknown>, number][])('%s: per-task losses, gradient norms, evaluation and adapter weights', async (_name, extra, tol) => {
    const padded = await fit(false, extra);
    const packed = await fit(true, extra);
    packed.history.steps.forEach((s, i) => {
      const p = padded.history.steps[i];
      expect(Math.abs(s.loss - p.loss)).toBeLessThanOrEqual(tol * p.loss);
      expect(Math.abs(s.gradNorm - p.gradNorm)).toBeLessThanOrEqual(tol * p.gradNorm);
      expect(Object.keys(s.taskLoss)).toEqual(Object.keys(p.taskLoss));
      for (const t of Object.keys(p.taskLoss)) expect(Math.abs(s.taskLoss[t] - p.taskLoss[t])).toBeLessThanOrEqual(tol * p.taskLoss[t]);
      expect(s.tokens).toBe(p.tokens); // the same real tokens
    });
    const evalOf = (h: typeof padded.history) => h.evals[h.evals.length - 1].tasks;
    for (const [t, e] of Object.entries(evalOf(padded.history))) expect(Math.abs(evalOf(packed.history)[t].loss - e.loss)).toBeLessThanOrEqual(tol * e.loss);
    for (const [k, v] of Object.entries(padded.weights)) {
      const a = v.data() as Float32Array, b = packed.weights[k].data() as Float32Array;
      expect({ k, ok: maxAbsDiff(a, b) <= (tol === 1e-5 ? 1e-6 : 1e-3) * Math.max(1, maxAbs(a)) }).toEqual({ k, ok: true });
    }
  });
});

describe('packBatch and bad offsets', () => {
  it('lays right-padded rows end to end, each first label ignored, tasks kept', () => {
    const b = { inputIds: [[5, 6, 7, 0], [8, 9, 0, 0]], attentionMask: [[1, 1, 1, 0], [1, 1, 0, 0]], labels: [[-100, 6, 7, -100], [9, 9, -100, -100]], tasks: ['a', 'b'], indices: [3, 1], lossTokens: 3 };
    expect(packBatch(b)).toEqual({ ...b, inputIds: [[5, 6, 7, 8, 9]], attentionMask: [[1, 1, 1, 1, 1]], labels: [[-100, 6, 7, -100, 9]], cuSeqlens: [0, 3, 5] });
    expect(() => packBatch({ ...b, attentionMask: [[0, 1, 1, 0], [1, 1, 0, 0]] })).toThrow('packBatch: row 0 has padding before its last token; packing takes right-padded rows');
  });

  it('refuses offsets that do not describe the row, naming the value', async () => {
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 3 });
    const ids = [[5, 6, 7, 8, 9]];
    await expect(model.forward(ids, { cuSeqlens: [0, 3, 4] })).rejects.toThrow('cu_seqlens ends at 4, the packed row holds 5 tokens');
    await expect(model.forward(ids, { cuSeqlens: [0, 3, 3, 5] })).rejects.toThrow('cu_seqlens must increase (every example holds a token): cu_seqlens[2] = 3 after 3');
    await expect(model.forward(ids, { cuSeqlens: [1, 5] })).rejects.toThrow('cu_seqlens[0] must be 0, got 1');
    await expect(model.forward(ids, { cuSeqlens: [0, 2.5, 5] })).rejects.toThrow('Model.forward: cuSeqlens[1] must be an integer offset from 0 to 2147483647, got 2.5');
    await expect(model.forward([[5, 6], [7, 8]], { cuSeqlens: [0, 2] })).rejects.toThrow('a packed batch (cu_seqlens) is one row of examples, got 2 rows');
    await expect(model.forward(ids, { cuSeqlens: [0, 5], attentionMask: [[1, 1, 1, 1, 0]] })).rejects.toThrow('a packed batch (cu_seqlens) has no padding');
    const adapter = Adapter.attach(model, { rank: 2, targetModules: ['q_proj'] });
    const opt = new AdamW([...adapter.layers.values()]);
    await expect(trainStep(model, [{ inputIds: ids, attentionMask: [[1, 1, 1, 1, 1]], labels: [[-100, 6, 7, 8, 9]], cuSeqlens: [0, 2, 6] }], opt)).rejects.toThrow('micro-batch 0: cu_seqlens ends at 6, the packed row holds 5 tokens');
    // an example's first label is never a target: the step counts 3 labelled tokens, not 4
    const r = await trainStep(model, [{ inputIds: ids, attentionMask: [[1, 1, 1, 1, 1]], labels: [[-100, 6, 7, 8, 9]], cuSeqlens: [0, 3, 5] }], opt);
    expect(r.rowTokens).toEqual([2, 1]);
  });
});
