// Model options are checked before anything is read or allocated: unknown keys with "did you mean",
// dtypes by name (common spellings suggested, never blamed on config.json), and dtypes the CPU
// cannot compute in refused at load with what to use instead (they used to load, then fail in
// forward with libtorch's raw message).
import { spawnSync } from 'child_process';
import * as path from 'path';

import { Adapter, Model, Trainer, trainStep } from '../lib';
import { native } from '../lib/native';
import { IDS, MASK, TINY_CONFIG, tinyModelFolder } from './helpers/tiny-model';

const { baseDir } = tinyModelFolder('rlora-model-options-', 1);

describe('Model options', () => {
  it('an unknown key is refused with "did you mean", in fromConfig and fromPretrained', async () => {
    expect(() => Model.fromConfig(TINY_CONFIG, { dtpye: 'bfloat16' } as never)).toThrow(
      'Model.fromConfig: unknown option "dtpye" (did you mean "dtype"?); known: dtype, device, quantize, seed',
    );
    await expect(Model.fromPretrained(baseDir, { devcie: 'cpu' } as never)).rejects.toThrow(
      `Model.fromPretrained(${JSON.stringify(baseDir)}): unknown option "devcie" (did you mean "device"?); known: dtype, device, quantize`,
    );
    // seed belongs to fromConfig only
    await expect(Model.fromPretrained(baseDir, { seed: 1 } as never)).rejects.toThrow(/unknown option "seed"/);
    expect(() => Model.fromConfig(TINY_CONFIG, 'bfloat16' as never)).toThrow(TypeError);
  });

  it('a dtype is named among the float dtypes, with the usual spellings suggested, and config.json is not blamed', async () => {
    const choices = '"float32", "bfloat16", "float16", "float64"';
    await expect(Model.fromPretrained(baseDir, { dtype: 'fp16' as never })).rejects.toThrow(
      `Model.fromPretrained(${JSON.stringify(baseDir)}): dtype must be one of ${choices}, got "fp16" (did you mean "float16"?)`,
    );
    expect(() => Model.fromConfig(TINY_CONFIG, { dtype: 'bf16' as never })).toThrow(`got "bf16" (did you mean "bfloat16"?)`);
    expect(() => Model.fromConfig(TINY_CONFIG, { dtype: 'int32' })).toThrow(RangeError);
    expect(() => Model.fromConfig(TINY_CONFIG, { dtype: 32 as never })).toThrow(TypeError);
    expect(() => Model.fromConfig(TINY_CONFIG, { device: 'gpu' as never })).toThrow("Model.fromConfig: device must be 'cpu', 'cuda' or 'cuda:N', got \"gpu\"");
  });

  it('float16 on the CPU: refused at load where libtorch cannot compute in it (1.13), else it runs', async () => {
    const problem = native.cpuDtypeProblem('float16');
    if (native.buildInfo.torchVersion.startsWith('1.')) expect(problem).toMatch(/not implemented for 'Half'/);
    if (problem) {
      expect(() => Model.fromConfig(TINY_CONFIG, { dtype: 'float16' })).toThrow(
        /^Model\.fromConfig: dtype 'float16' cannot compute on the CPU with libtorch [\d.]+ \(libtorch: .*Half.*\): use 'bfloat16' \(the same 2 bytes a value\) or 'float32' on the CPU; 'float16' runs on CUDA$/,
      );
    } else {
      const m = Model.fromConfig(TINY_CONFIG, { dtype: 'float16', seed: 1 });
      const f32 = Model.fromConfig(TINY_CONFIG, { seed: 1 });
      const a = (await m.forward(IDS, { attentionMask: MASK })).to('float32').data() as Float32Array;
      const b = (await f32.forward(IDS, { attentionMask: MASK })).data() as Float32Array;
      expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeLessThan(0.05 * Math.max(...b.map(Math.abs)));
    }
  });
});

// bfloat16 on CPUs without AVX-512: libtorch 1.13 sends bfloat16 products to oneDNN when CPUID
// reports AVX-512. Capping oneDNN below that (ONEDNN_MAX_CPU_ISA=AVX2) on such a CPU makes oneDNN
// refuse them: that is refused at load, with the cause. A real AVX2 CPU takes libtorch's own kernels
// (tried below under QEMU's Haswell model, where QEMU is installed).
describe('bfloat16 and the CPU', () => {
  const child = (code: string, env: Record<string, string>, prefix: string[] = []) => {
    const argv = [...prefix, process.execPath, '-r', 'tsx/cjs', '-e', code];
    return spawnSync(argv[0], argv.slice(1), { env: { ...process.env, ...env }, encoding: 'utf8', cwd: path.join(__dirname, '..'), timeout: 300_000 });
  };
  const lib = JSON.stringify(path.join(__dirname, '..', 'lib'));
  const cfg = JSON.stringify({ ...TINY_CONFIG, hidden_size: 64, intermediate_size: 256 });
  // three steps of a bfloat16 base with a float32 R-LoRA adapter; prints the losses
  const train = `const r = require(${lib});
    (async () => {
      let model;
      try { model = r.Model.fromConfig(${cfg}, { seed: 3, dtype: 'bfloat16' }); } catch (e) { console.log(JSON.stringify({ refused: e.message })); return; }
      const adapter = r.Adapter.attach(model, { method: 'rlora', rank: 2, heads: 3, seed: 2, targetModules: ['q_proj', 'gate_proj', 'down_proj'] });
      const opt = new r.AdamW([...adapter.layers.values()], { lr: 3e-2 });
      const batch = { inputIds: ${JSON.stringify(IDS)}, attentionMask: ${JSON.stringify(MASK)}, labels: ${JSON.stringify(IDS)} };
      const losses = [];
      for (let s = 0; s < 3; s++) losses.push((await r.trainStep(model, [batch], opt)).loss);
      console.log(JSON.stringify({ losses }));
    })();`;

  it('with oneDNN capped to AVX2: trains, or is refused at load naming the cap (never oneDNN\'s raw error later)', () => {
    const r = child(train, { ONEDNN_MAX_CPU_ISA: 'AVX2' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { refused?: string; losses?: number[] };
    if (out.refused !== undefined) {
      expect(out.refused).toMatch(/^Model\.fromConfig: dtype 'bfloat16' cannot compute on this CPU with libtorch [\d.]+ \(libtorch: could not create a primitive descriptor iterator\); ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below the AVX-512 that libtorch sees on this CPU and sends bfloat16 products to: unset it, or use dtype 'float32'$/);
    } else {
      expect(out.losses![2]).toBeLessThan(out.losses![0]);
    }
  });

  const qemu = spawnSync('qemu-x86_64', ['-version']).status === 0;
  if (!qemu) console.log('skipping the bfloat16 run on an emulated AVX2 CPU: qemu-x86_64 is not installed (apt-get install -y qemu-user)');
  (qemu ? it : it.skip)('trains on a CPU without AVX-512 (QEMU\'s Haswell model: AVX2, FMA, no AVX-512)', () => {
    const r = child(train, {}, ['qemu-x86_64', '-cpu', 'Haswell']);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { refused?: string; losses?: number[] };
    expect(out.refused).toBeUndefined();
    expect(out.losses).toHaveLength(3);
    expect(out.losses![2]).toBeLessThan(out.losses![0]);
    // the same losses as this CPU's, within bfloat16's precision
    const here = JSON.parse(child(train, {}).stdout) as { losses: number[] };
    out.losses!.forEach((l, i) => expect(Math.abs(l - here.losses[i])).toBeLessThan(0.02 * here.losses[i]));
  }, 300_000);
});

// A Promise passed where its value belongs (an await forgotten) is named as such.
describe('a Promise where its value belongs', () => {
  it('says "did you forget await?"', async () => {
    const pending = Model.fromPretrained(baseDir);
    expect(() => Adapter.attach(pending as never, { targetModules: ['q_proj'] })).toThrow('Adapter.attach: the model must be a Model, got a Promise (did you forget await?)');
    const model = await pending;
    const adapter = Adapter.attach(model, { targetModules: ['q_proj'] });
    expect(() => new Trainer(model, Promise.resolve(adapter) as never)).toThrow('Trainer: the adapter (second argument) must be an Adapter, got a Promise (did you forget await?)');
    const trainer = new Trainer(model, adapter, { maxSteps: 1, progress: false });
    await expect(trainer.fit(Promise.resolve() as never)).rejects.toThrow('fit: the training set must be a MultiTaskDataset, got a Promise (did you forget await?)');
    await expect(trainer.evaluate(Promise.resolve() as never)).rejects.toThrow('evaluate: the dataset must be a MultiTaskDataset, got a Promise (did you forget await?)');
    await expect(trainStep(model as never, [], undefined as never).catch((e) => Promise.reject(e))).rejects.toThrow(/./);
    expect(() => new Trainer({} as never, adapter)).toThrow('Trainer: the model (first argument) must be a Model, got {}');
  });
});

// Trainer numbers are checked when the Trainer is made, not at fit ("lr must be a number").
describe('Trainer numeric options', () => {
  it('names a string, an infinity or an unbounded accumulation at construction', async () => {
    const model = await Model.fromPretrained(baseDir);
    const adapter = Adapter.attach(model, { targetModules: ['q_proj'] });
    const make = (o: object) => () => new Trainer(model, adapter, o as never);
    expect(make({ learningRate: '1e-3' })).toThrow('learningRate must be a number > 0 and <= 3.4028234663852886e+38, got "1e-3" (a string: write 0.001 without quotes)');
    expect(make({ learningRate: 1e400 })).toThrow('learningRate must be a finite number > 0 and <= 3.4028234663852886e+38, got Infinity');
    expect(make({ learningRate: 0 })).toThrow(RangeError);
    expect(make({ weightDecay: -1 })).toThrow('weightDecay must be a finite number >= 0 and <= 3.4028234663852886e+38, got -1');
    expect(make({ gradientAccumulation: 1e9 })).toThrow('gradientAccumulation must be an integer from 1 to 65536, got 1000000000');
    expect(make({ batchSize: '8' })).toThrow(TypeError);
    expect(make({ learningRate: 3e-4, weightDecay: 0.01, gradientAccumulation: 4 })).not.toThrow();
  });
});

// A prompt longer than the model is made for is refused before any memory is taken.
describe('max_position_embeddings', () => {
  it('forward and generate refuse longer sequences, naming the limit', async () => {
    const model = Model.fromConfig({ ...TINY_CONFIG, max_position_embeddings: 16 }, { seed: 1 });
    const long = [Array.from({ length: 17 }, (_, i) => i % 50)];
    await expect(model.forward(long)).rejects.toThrow("Model.forward: 17 tokens are more than the model's max_position_embeddings (16, in its config): shorten the input");
    await expect(model.generate([long[0].slice(0, 10)], { maxNewTokens: 7 })).rejects.toThrow("Model.generate: 10 tokens plus 7 new ones are more than the model's max_position_embeddings (16, in its config)");
    expect((await model.forward([long[0].slice(0, 16)])).shape).toEqual([1, 16, TINY_CONFIG.vocab_size]);
    expect((await model.generate([long[0].slice(0, 10)], { maxNewTokens: 6 }))[0]).toHaveLength(16);
  });
});
