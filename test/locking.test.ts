// The locking rule (binding/locks.h): while a training step runs, a call on the model's adapter
// layers is refused at once by lib/activity.ts (the JS thread never waits for the step), and the
// step's result is that of a step nobody interfered with (the refused call drew no dropout mask
// and read nothing half-way). Past lib/ (the native layer directly), the same forward waits for
// the step's locks off the JS thread and sees the weights after the update.
import { AdamW, Adapter, ByteTokenizer, HFConfig, Model, MultiTaskDataset, Tensor, Trainer, trainStep } from '../lib';
import { TINY_BYTE_CONFIG } from './helpers/tiny-model';

const CFG: HFConfig = { ...TINY_BYTE_CONFIG, hidden_size: 32, intermediate_size: 48 };
const TARGETS = ['q_proj', 'v_proj', 'up_proj', 'down_proj'];
const REFUSED = /^MultiHeadLoraLinear\.forward refused: the model is training \((trainStep|Trainer\.fit) is running\)/;

/** A model with an adapter in training mode (dropout on) and its optimizer, the same on every call. */
function setup(): { model: Model; adapter: Adapter; opt: AdamW } {
  const model = Model.fromConfig(CFG, { seed: 11 });
  const adapter = Adapter.attach(model, { method: 'rlora', rank: 4, heads: 3, dropout: 0.2, targetModules: TARGETS, seed: 5 }).train();
  return { model, adapter, opt: new AdamW([...adapter.layers.values()], { lr: 1e-2 }) };
}

/** `n` micro-batches of `rows` rows of `len` tokens, the first quarter of each row unlabelled. */
function batches(n: number, rows: number, len: number): { inputIds: number[][]; attentionMask: number[][]; labels: number[][] }[] {
  return Array.from({ length: n }, (_, b) => {
    const ids = Array.from({ length: rows }, (_, r) => Array.from({ length: len }, (_, t) => (7 * b + 13 * r + 3 * t) % 250));
    return { inputIds: ids, attentionMask: ids.map((row) => row.map(() => 1)), labels: ids.map((row) => row.map((id, t) => (t < len / 4 ? -100 : id))) };
  });
}

const stateBytes = (a: Adapter): Record<string, Buffer> =>
  Object.fromEntries(Object.entries(a.stateDict()).map(([k, v]) => [k, Buffer.from(v.native.bytes())]));
const input = (): Tensor => Tensor.from(Float32Array.from({ length: 2 * CFG.hidden_size }, (_, i) => Math.sin(i)), [2, CFG.hidden_size]);

describe('a layer forward while a training step runs', () => {
  it('trainStep: refused at once with the activity error; the step equals one run without the call', async () => {
    const data = batches(2, 4, 24);
    const a = setup();
    const layer = [...a.adapter.layers.values()][0];
    let stepDone = false;
    const step = trainStep(a.model, data, a.opt).then((r) => {
      stepDone = true;
      return r;
    });
    await expect(layer.forward(input())).rejects.toThrow(REFUSED);
    expect(stepDone).toBe(false); // refused before the step ended: it did not wait for it
    const withCall = await step;

    const b = setup();
    const without = await trainStep(b.model, data, b.opt);
    expect(withCall).toEqual(without);
    expect(stateBytes(a.adapter)).toEqual(stateBytes(b.adapter));
    // and the layer works again once the step is over
    expect((await layer.forward(input())).shape).toEqual([2, 32]);
  });

  it('Trainer.fit: refused at once; the history and weights equal those of a fit without the call', async () => {
    const tok = new ByteTokenizer();
    const rows = ['cat', 'dog', 'owl', 'yak', 'emu', 'elk'].map((w, i) => ({ task: i % 2 ? 'b' : 'a', prompt: `${w}:`, response: w.toUpperCase() }));
    const fit = async (interfere: boolean) => {
      const s = setup();
      const trainer = new Trainer(s.model, s.adapter, { learningRate: 1e-2, maxSteps: 3, batchSize: 2, seed: 4, progress: false });
      const running = trainer.fit(MultiTaskDataset.fromArray(rows, { tokenizer: tok, maxLength: 16 }));
      if (interfere) {
        for (const layer of s.adapter.layers.values()) await expect(layer.forward(input())).rejects.toThrow(/\(Trainer\.fit is running\)/);
      }
      const history = await running;
      return { steps: history.steps.map((r) => [r.step, r.loss, r.lr, r.gradNorm, r.tokens]), state: stateBytes(s.adapter) };
    };
    const withCalls = await fit(true);
    expect(withCalls).toEqual(await fit(false));
  });

  it('past lib/, the native forward waits for the step on the libuv pool and sees the updated weights', async () => {
    const a = setup();
    a.adapter.eval(); // no dropout: a forward is a function of the weights alone
    const layer = [...a.adapter.layers.values()][0];
    const x = input();
    const before = (await layer.forward(x)).data();
    let stepDone = false;
    const step = trainStep(a.model, batches(24, 8, 64), a.opt).then(() => {
      stepDone = true;
    });
    await new Promise((r) => setTimeout(r, 30)); // the step's job holds its locks by now
    expect(stepDone).toBe(false); // (the step takes far longer than that)
    const direct = layer.native.forward(x.native).then((y) => new Tensor(y).data());
    const [y] = await Promise.all([direct, step]);
    // the update is the step's last act: a forward that ran beside the step would see the old weights
    const after = (await layer.forward(x)).data();
    expect(y).toEqual(after);
    expect(y).not.toEqual(before);
  });
});
