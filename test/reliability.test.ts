// The second adversarial audit (issue 24): each case here crashed, hung, lost data or answered
// wrongly or silently before its fix, and is now refused with an error that names what is wrong.
import * as fs from 'fs';
import * as path from 'path';

import { AdamW, Adapter, BatchSampler, ByteTokenizer, Model, MultiTaskDataset, Tensor, Tokenizer, Trainer, trainStep } from '../lib';
import { readRunConfig } from '../lib/cli/runconfig';
import { trimLog } from '../lib/trainer/checkpoint';
import { ensureFolder, writeAll } from '../lib/util/files';
import { byteBpe } from './helpers/byte-bpe';
import { SAVE_CONFIG, tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-reliability-');
const tok = new ByteTokenizer();
const rows = (tasks: string[], n = 4): { task: string; prompt: string; response: string }[] => tasks.flatMap((t) => Array.from({ length: n }, (_, i) => ({ task: t, prompt: `p${i}`, response: `r${i}` })));

describe('files that are not what they claim to be are refused unread', () => {
  const zero = (name: string): string => {
    const p = path.join(tmp, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.symlinkSync('/dev/zero', p);
    return p;
  };

  it('chat_template.jinja, run.json and a log linked to /dev/zero (each read 4 GB or more)', () => {
    const { json, config } = byteBpe();
    const dir = path.join(tmp, 'tok');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    fs.symlinkSync('/dev/zero', path.join(dir, 'chat_template.jinja'));
    expect(() => Tokenizer.fromFile(dir)).toThrow(`${path.join(dir, 'chat_template.jinja')} is not a regular file (a chat template file was expected)`);
    const run = zero('zero/run.json');
    expect(() => readRunConfig(run)).toThrow(`${run} is not a regular file (a run.json file was expected)`);
    const log = zero('zero/log.jsonl');
    expect(() => trimLog(log, 3)).toThrow(`${log} is not a regular file (a log file was expected)`);
  });
});

describe('options', () => {
  it('a template placeholder that is not a field is refused, with the closest one ("{promt}" dropped the prompt)', () => {
    expect(() => MultiTaskDataset.fromArray(rows(['a']), { tokenizer: tok, template: 'Q: {promt}\nA: {response}' })).toThrow(
      'MultiTaskDataset.fromArray: template "Q: {promt}\\nA: {response}" has the placeholder {promt} (did you mean {prompt}?); the placeholders are {task}, {prompt} and {response}',
    );
    // braces that are no placeholder stay text
    const ds = MultiTaskDataset.fromArray(rows(['a'], 1), { tokenizer: tok, template: '{"q": "{prompt}"} {response}' });
    expect(tok.decode(ds.get(0).inputIds)).toBe('{"q": "p0"} r0');
  });

  it('unknown options of datasets, forward and generate are refused (maxLen and maxTokens were ignored)', async () => {
    expect(() => MultiTaskDataset.fromArray(rows(['a']), { tokenizer: tok, maxLen: 3 } as never)).toThrow('MultiTaskDataset.fromArray: unknown option "maxLen" (did you mean "maxLength"?)');
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    await expect(m.generate([[1, 2]], { maxTokens: 3 } as never)).rejects.toThrow('Model.generate: unknown option "maxTokens"');
    await expect(m.forward([[1, 2]], { mask: [[1, 1]] } as never)).rejects.toThrow('Model.forward: unknown option "mask"');
  });

  it('Trainer options out of their table\'s range (evalEvery -1 or 1.5, keepCheckpoints NaN, evalExtraTokens 1e9)', () => {
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj'] });
    const make = (o: object) => () => new Trainer(m, a, o);
    expect(make({ evalEvery: -1 })).toThrow(new RangeError('evalEvery must be an integer >= 0, got -1'));
    expect(make({ evalEvery: 1.5 })).toThrow(new RangeError('evalEvery must be an integer >= 0, got 1.5'));
    expect(make({ keepCheckpoints: NaN })).toThrow(new RangeError('keepCheckpoints must be an integer >= 0, got NaN'));
    expect(make({ saveEvery: '2' })).toThrow(new TypeError('saveEvery must be an integer >= 0, got "2" (a string: write 2 without quotes)'));
    expect(make({ evalExtraTokens: 1e9 })).toThrow(new RangeError('evalExtraTokens must be an integer from 0 to 65536, got 1000000000'));
  });
});

describe('training', () => {
  it('fit refuses examples longer than the model\'s max_position_embeddings', async () => {
    const m = Model.fromConfig({ ...TINY_BYTE_CONFIG, max_position_embeddings: 16 }, { seed: 1 });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj'] });
    // bos + 30 prompt bytes + "\n" + 1 response byte + eos = 34 tokens
    const long = MultiTaskDataset.fromArray([{ task: 'a', prompt: 'x'.repeat(30), response: 'y' }], { tokenizer: tok, maxLength: 64 });
    await expect(new Trainer(m, a, { maxSteps: 1, progress: false }).fit(long)).rejects.toThrow(
      "Trainer.fit: the training set has examples of 34 tokens, more than the model's max_position_embeddings (16, in its config): encode it with maxLength <= 16",
    );
  });

  it('the adapter\'s internal reads and writes are refused while a step runs (values() gave torn snapshots)', async () => {
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj', 'v_proj'] });
    const ds = MultiTaskDataset.fromArray(rows(['a', 'b']), { tokenizer: tok, maxLength: 16 });
    const b = new BatchSampler(ds, { batchSize: 4 }, 0).next();
    const opt = new AdamW(m);
    const running = trainStep(m, [b], opt);
    const layer = [...a.layers.values()][0];
    expect(() => a.values()).toThrow('Adapter.values refused: the model is training (trainStep is running)');
    expect(() => a.write(path.join(tmp, 'never'))).toThrow('Adapter.write refused');
    expect(() => a.loadWeights(path.join(tmp, 'never', 'x.safetensors'))).toThrow('Adapter.loadWeights refused');
    expect(() => layer.loadValues({})).toThrow('MultiHeadLoraLinear.loadValues refused');
    await running;
    expect(Object.keys(a.values()).length).toBeGreaterThan(0); // after the step: allowed
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });

  it('a sampler state with no cycle yet for a task named "__proto__" restores (a checkpoint of such a run could not be resumed)', () => {
    const ds = MultiTaskDataset.fromArray(rows(['__proto__', 'normal']), { tokenizer: tok, maxLength: 16 });
    const s = new BatchSampler(ds, { batchSize: 2, sampling: 'uniform', seed: 3 }, 0);
    const state = JSON.parse(JSON.stringify(s.state())); // as trainer_state.json holds it
    const again = new BatchSampler(ds, { batchSize: 2, sampling: 'uniform', seed: 3 }, 0);
    again.setState(state);
    for (let k = 0; k < 6; k++) expect(again.next().indices).toEqual(s.next().indices);
  });
});

describe('folders', () => {
  it('Model.save through a link to a folder replaces the folder it names and keeps the link', async () => {
    const real = path.join(tmp, 'real');
    const link = path.join(tmp, 'current');
    Model.fromConfig(SAVE_CONFIG, { seed: 1 }).save(real);
    fs.symlinkSync(real, link);
    const two = Model.fromConfig(SAVE_CONFIG, { seed: 2 });
    two.save(link);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    const embedding = (mm: Model): number[] => Array.from(new Tensor(mm.native.parameter('model.embed_tokens.weight')).data() as Float32Array);
    expect(embedding(await Model.fromPretrained(real))).toEqual(embedding(two));
  });

  it('an outputDir under a folder nothing can be made in is refused at once (Node\'s mkdir looped under /proc)', () => {
    if (process.platform !== 'linux') return;
    const t0 = Date.now();
    expect(() => ensureFolder('/proc/1/rlora-x', 'outputDir')).toThrow('outputDir /proc/1/rlora-x cannot be created: /proc/1 is not writable');
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

describe('errors that name what is wrong', () => {
  it('a failed write names the file (EFBIG said only "file too large, write")', () => {
    const efbig = (): number => {
      const e = new Error('EFBIG: file too large, write') as NodeJS.ErrnoException;
      e.code = 'EFBIG';
      throw e;
    };
    expect(() => writeAll(0, new Uint8Array(10), '/x/model.safetensors', efbig)).toThrow('EFBIG: file too large, write (writing /x/model.safetensors, 0 of 10 bytes written)');
  });

  it('maxNewTokens that is no count, and a stream that would pass max_position_embeddings, fail before any token', async () => {
    const m = Model.fromConfig({ ...TINY_BYTE_CONFIG, max_position_embeddings: 16 }, { seed: 1 });
    await expect(m.generate([[1, 2]], { maxNewTokens: NaN })).rejects.toThrow(new RangeError('Model.generate: maxNewTokens must be an integer >= 0, got NaN'));
    const got: number[] = [];
    await expect((async () => {
      for await (const t of m.stream([[1, 2, 3]], { maxNewTokens: 20 })) got.push(t);
    })()).rejects.toThrow("Model.stream: 3 tokens plus 20 new ones are more than the model's max_position_embeddings (16, in its config)");
    expect(got).toEqual([]); // nothing was printed first
  });

  it('a value out of range in adapter_config.json names the file ("r": 0)', async () => {
    const dir = path.join(tmp, 'r0');
    Adapter.attach(Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }), { method: 'lora', rank: 2, targetModules: ['q_proj'] }).save(dir);
    const file = path.join(dir, 'adapter_config.json');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), r: 0 }));
    await expect(Adapter.load(Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }), dir)).rejects.toThrow(`${file} / rlora_config.json: rank must be an integer >= 1, got 0`);
  });
});

describe('third look (after the re-audit)', () => {
  it('a value of rlora_config.json out of range names that file too; r 2.5 is an integer problem, not a size mismatch', async () => {
    const dir = path.join(tmp, 'rc-heads');
    Adapter.attach(Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }), { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'] }).save(dir);
    const rc = path.join(dir, 'rlora_config.json');
    fs.writeFileSync(rc, JSON.stringify({ ...JSON.parse(fs.readFileSync(rc, 'utf8')), heads: 1e9 }));
    await expect(Adapter.load(Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }), dir)).rejects.toThrow(`${path.join(dir, 'adapter_config.json')} / rlora_config.json: heads must be at most 1024, got 1000000000`);
    const dir2 = path.join(tmp, 'r-frac');
    Adapter.attach(Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }), { method: 'lora', rank: 2, targetModules: ['q_proj'] }).save(dir2);
    const ac = path.join(dir2, 'adapter_config.json');
    fs.writeFileSync(ac, JSON.stringify({ ...JSON.parse(fs.readFileSync(ac, 'utf8')), r: 2.5 }));
    await expect(Adapter.load(Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }), dir2)).rejects.toThrow(/rank must be an integer/);
  });

  it('Adapter.attach refuses sizes whose values alone exceed this machine\'s memory, before allocating', () => {
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const t0 = Date.now();
    expect(() => Adapter.attach(m, { method: 'rlora', rank: 65536, heads: 1024, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] })).toThrow(/adapter values \([\d.]+ GiB as float32\), more than this machine's memory/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('Trainer: a seed beyond exact integers, a device that does not exist, a disposed model', async () => {
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj'] });
    expect(() => new Trainer(m, a, { seed: 2 ** 53 })).toThrow(/seed must be an integer >= 0, got 9007199254740992/);
    expect(() => new Trainer(m, a, { device: 'tpu' })).toThrow(new RangeError('device must be "cpu", "cuda" or "cuda:N", got "tpu"'));
    const t = new Trainer(m, a, { maxSteps: 1, progress: false });
    m.dispose();
    const ds = MultiTaskDataset.fromArray(rows(['a']), { tokenizer: tok, maxLength: 16 });
    await expect(t.fit(ds)).rejects.toThrow("this Trainer's model cannot be used: this Model was disposed");
    await expect(t.evaluate(ds)).rejects.toThrow("this Trainer's model cannot be used: this Model was disposed");
  });

  it('evaluation never generates past max_position_embeddings (evalExtraTokens 300 went on past a 64-position model)', async () => {
    const m = Model.fromConfig({ ...TINY_BYTE_CONFIG, max_position_embeddings: 24 }, { seed: 1 });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj'] });
    const ds = MultiTaskDataset.fromArray([{ task: 'a', prompt: 'abcdefgh', response: 'xyz' }], { tokenizer: tok, maxLength: 24 });
    const r = await new Trainer(m, a, { evalExtraTokens: 300, progress: false }).evaluate(ds, { returnPredictions: true });
    // the prompt is bos + 8 bytes + "\n": 14 of the 24 positions are left for generation
    expect([...r.predictions[0].prediction].length).toBeLessThanOrEqual(24 - 10); // a byte decodes to at most one character
  });
});

