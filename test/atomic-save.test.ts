// Nothing lost: Model.save and Adapter.save over an existing folder write a sibling and swap it in,
// so after kill -9 at any moment, or a full disk, the folder loads as the old or the new version
// (Model.save used to delete the old weights first; Adapter.save wrote its three files in place;
// saveSafetensors ignored short writes). Files rlora did not write stay.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, Model, saveSafetensors, Tensor, Trainer } from '../lib';
import { native } from '../lib/native';
import { writeAll } from '../lib/util/files';
import { replaceFolder } from '../lib/replace-folder';
import { SAVE_CONFIG, TINY_BYTE_CONFIG, tempFolder } from './helpers/tiny-model';

const tmp = tempFolder('rlora-atomic-');
const CHILD = path.join(__dirname, 'helpers', 'save-child.ts');

/** A fingerprint of a model's weights: the sum of its embedding. */
const fingerprint = (m: Model): number => (new Tensor(m.native.parameter('model.embed_tokens.weight')).data() as Float32Array).reduce((a, b) => a + b, 0);
const entries = (dir: string): string[] => fs.readdirSync(dir).sort();
const leftovers = (parent: string): string[] => fs.readdirSync(parent).filter((n) => /\.(tmp|old|deleting)-\d+/.test(n));

describe('replaceFolder', () => {
  it('swaps a complete folder in, keeps the user\'s files, and leaves the old one untouched when filling fails', () => {
    const dir = path.join(tmp, 'plain');
    replaceFolder(dir, (t) => fs.writeFileSync(path.join(t, 'a.txt'), 'one'), { owns: (n) => n === 'a.txt' });
    fs.writeFileSync(path.join(dir, 'README.md'), 'mine');
    expect(() => replaceFolder(dir, (t) => {
      fs.writeFileSync(path.join(t, 'a.txt'), 'two');
      throw new Error('disk on fire');
    }, { owns: (n) => n === 'a.txt' })).toThrow('disk on fire');
    expect(fs.readFileSync(path.join(dir, 'a.txt'), 'utf8')).toBe('one');
    expect(() => replaceFolder(dir, (t) => fs.writeFileSync(path.join(t, 'a.txt'), 'three'), { verify: () => { throw new Error('does not read back'); } })).toThrow('does not read back');
    expect(fs.readFileSync(path.join(dir, 'a.txt'), 'utf8')).toBe('one');
    replaceFolder(dir, (t) => fs.writeFileSync(path.join(t, 'a.txt'), 'four'), { owns: (n) => n === 'a.txt' });
    expect(entries(dir)).toEqual(['README.md', 'a.txt']);
    expect(fs.readFileSync(path.join(dir, 'README.md'), 'utf8')).toBe('mine');
    expect(fs.readFileSync(path.join(dir, 'a.txt'), 'utf8')).toBe('four');
    expect(leftovers(tmp)).toEqual([]);
    fs.writeFileSync(path.join(tmp, 'file'), 'x');
    expect(() => replaceFolder(path.join(tmp, 'file'), () => undefined)).toThrow(`${path.join(tmp, 'file')} exists and is not a folder`);
  });

  it('swaps two folders in one step where the system can (renameat2 RENAME_EXCHANGE)', () => {
    const a = path.join(tmp, 'swap-a'), b = path.join(tmp, 'swap-b');
    fs.mkdirSync(a);
    fs.mkdirSync(b);
    fs.writeFileSync(path.join(a, 'x'), 'A');
    fs.writeFileSync(path.join(b, 'x'), 'B');
    const r = native.exchangePaths(a, b);
    if (r === 0) {
      expect([fs.readFileSync(path.join(a, 'x'), 'utf8'), fs.readFileSync(path.join(b, 'x'), 'utf8')]).toEqual(['B', 'A']);
    } else {
      // a kernel or file system without it (EINVAL, ENOSYS): replaceFolder renames in two steps
      expect([22, 38, 95]).toContain(r);
    }
    expect(native.exchangePaths(a, path.join(tmp, 'swap-none'))).toBe(2); // ENOENT: both must exist
  });

  it('writeAll keeps writing after a short count and refuses a write that makes no progress', () => {
    const calls: number[] = [];
    const short = (fd: number, buf: Uint8Array, off: number, len: number): number => {
      calls.push(len);
      return fs.writeSync(fd, buf, off, calls.length === 1 ? Math.min(3, len) : len);
    };
    const f = path.join(tmp, 'short.bin');
    const fd = fs.openSync(f, 'w');
    try {
      writeAll(fd, Buffer.from('0123456789'), f, short);
    } finally {
      fs.closeSync(fd);
    }
    expect(calls).toEqual([10, 7]);
    expect(fs.readFileSync(f, 'utf8')).toBe('0123456789');
    expect(() => writeAll(0, Buffer.from('x'), 'f', () => 0)).toThrow('ENOSPC: no space left on device, write f (0 of 1 bytes written)');
  });
});

describe('Model.save and Adapter.save over an existing folder', () => {
  it('keep the files rlora did not write, and drop the old layout\'s shards', async () => {
    const dir = path.join(tmp, 'kept');
    const a = Model.fromConfig(SAVE_CONFIG, { seed: 1 });
    a.save(dir, { maxShardSize: 20_000 });
    expect(entries(dir).filter((n) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n)).length).toBeGreaterThan(3);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
    fs.mkdirSync(path.join(dir, 'notes'));
    fs.writeFileSync(path.join(dir, 'notes', 'n.txt'), 'n');
    Model.fromConfig(SAVE_CONFIG, { seed: 2 }).save(dir);
    expect(entries(dir)).toEqual(['config.json', 'model.safetensors', 'notes', 'tokenizer.json']);
    expect(fingerprint(await Model.fromPretrained(dir))).toBe(fingerprint(Model.fromConfig(SAVE_CONFIG, { seed: 2 })));
    const adapterDir = path.join(tmp, 'kept-adapter');
    const adapter = Adapter.attach(a, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], seed: 1 });
    adapter.save(adapterDir);
    fs.writeFileSync(path.join(adapterDir, 'README.md'), 'card');
    adapter.save(adapterDir);
    expect(entries(adapterDir)).toEqual(['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'rlora_config.json']);
    expect(leftovers(tmp)).toEqual([]);
  });
});

/** Starts the child that saves forever into `dir`, waits for its first save, kills it with SIGKILL after a random delay, and waits for it to die. */
async function saveThenKill(dir: string, kind: 'model' | 'merged' | 'adapter' | 'checkpoint', maxDelayMs: number): Promise<void> {
  const child = spawn(process.execPath, ['-r', 'tsx/cjs', CHILD, dir, kind], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OMP_NUM_THREADS: '1' } });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const dead = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`save-child exited with ${code} before it was ready: ${err}`)));
  });
  await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * maxDelayMs)));
  child.kill('SIGKILL');
  await dead;
}

describe('leftovers of killed saves', () => {
  it('are removed by the next save of the same folder when their process is gone; a running one\'s stay', () => {
    const dir = path.join(tmp, 'stale');
    Model.fromConfig(SAVE_CONFIG, { seed: 1 }).save(dir);
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout; // a pid that has exited
    const stale = path.join(tmp, `.stale.tmp-${gone}-1`), live = path.join(tmp, `.stale.tmp-${process.pid}-2`), other = path.join(tmp, `.other.tmp-${gone}-3`);
    for (const d of [stale, live, other]) fs.mkdirSync(d);
    Model.fromConfig(SAVE_CONFIG, { seed: 2 }).save(dir);
    expect([stale, live, other].map((d) => fs.existsSync(d))).toEqual([false, true, true]);
    for (const d of [live, other]) fs.rmSync(d, { recursive: true });
  });
});

describe('kill -9 at random moments', () => {
  jest.setTimeout(180_000);
  const KILLS = 8;

  it('a model folder always loads, as one of the two models being saved', async () => {
    const dir = path.join(tmp, 'killed-model');
    const want = [1, 2].map((seed) => fingerprint(Model.fromConfig(SAVE_CONFIG, { seed })));
    for (let k = 0; k < KILLS; k++) {
      await saveThenKill(dir, 'model', 400);
      expect(want).toContain(fingerprint(await Model.fromPretrained(dir)));
      // a killed save's sibling is hidden beside the folder, never inside it
      expect(entries(dir).every((n) => !n.startsWith('.'))).toBe(true);
    }
  });

  it('a merged model\'s folder always holds one model with its own tokenizer file (rlora merge --overwrite)', async () => {
    const dir = path.join(tmp, 'killed-merged', 'out');
    const want = [1, 2].map((seed) => fingerprint(Model.fromConfig(SAVE_CONFIG, { seed })));
    for (let k = 0; k < KILLS; k++) {
      await saveThenKill(dir, 'merged', 400);
      const seed = (JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')) as { seed: number }).seed; // a torn copy would not parse
      expect(fingerprint(await Model.fromPretrained(dir))).toBe(want[seed - 1]); // never new weights beside the other tokenizer
    }
  });

  it('every checkpoint a killed run leaves resumes (a checkpoint every step, the newest two kept)', async () => {
    const dir = path.join(tmp, 'killed-run');
    for (let k = 0; k < KILLS / 2; k++) {
      await saveThenKill(dir, 'checkpoint', 400);
      const checkpoints = entries(dir).filter((n) => /^checkpoint-\d+$/.test(n));
      expect(checkpoints.length).toBeGreaterThanOrEqual(1);
      for (const c of checkpoints) {
        const trainer = await Trainer.resume(path.join(dir, c), Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }), { progress: false });
        expect(trainer.step).toBe(Number(c.split('-')[1]));
      }
    }
  });

  it('an adapter folder always loads, as one of the two adapters being saved', async () => {
    const dir = path.join(tmp, 'killed-adapter');
    for (let k = 0; k < KILLS; k++) {
      await saveThenKill(dir, 'adapter', 300);
      const adapter = await Adapter.load(Model.fromConfig(SAVE_CONFIG, { seed: 1 }), dir); // new weights beside an old config would throw here
      expect([['rlora', 8], ['lora', 2]]).toContainEqual([adapter.options.method, adapter.layers.size]);
    }
  });
});

// A full disk: a tmpfs of 1 MiB (root and mount needed; skipped with a message elsewhere).
const canMount = process.platform === 'linux' && os.userInfo().uid === 0 && spawnSync('mount', ['--version']).status === 0;
if (!canMount) console.log('skipping the full-disk and read-only tests: they mount a small tmpfs, which needs root');

/** A tmpfs of 1 MiB mounted at tmp/<name> with `options` for the calling describe block; its path. */
function tmpfsFor(name: string, options: string): string {
  const mnt = path.join(tmp, name);
  beforeAll(() => {
    fs.mkdirSync(mnt);
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `${options},size=1m`, 'tmpfs', mnt], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
  });
  afterAll(() => {
    spawnSync('umount', [mnt]);
  });
  return mnt;
}

(canMount ? describe : describe.skip)('a full disk (tmpfs of 1 MiB)', () => {
  const mnt = tmpfsFor('small', 'rw');

  it('a save that does not fit fails with ENOSPC and leaves the old model loadable', async () => {
    const dir = path.join(mnt, 'model');
    const small = Model.fromConfig(SAVE_CONFIG, { seed: 1 });
    small.save(dir);
    const big = Model.fromConfig({ ...SAVE_CONFIG, hidden_size: 128, intermediate_size: 512 }, { seed: 2 });
    expect(() => big.save(dir)).toThrow(/ENOSPC/);
    expect(fingerprint(await Model.fromPretrained(dir))).toBe(fingerprint(small));
    expect(leftovers(mnt)).toEqual([]);
    // saveSafetensors alone: the file is not replaced by a truncated one
    const file = path.join(mnt, 'one.safetensors');
    saveSafetensors(file, { x: Tensor.from(new Float32Array(16), [16]) });
    expect(() => saveSafetensors(file, { x: Tensor.from(new Float32Array(1 << 20), [1 << 20]) })).toThrow(/ENOSPC/);
    expect(fs.statSync(file).size).toBeLessThan(1000);
  });
});

// A read-only mount: the error says which folder is not writable (fit said "ENOENT ... mkdir").
(canMount ? describe : describe.skip)('a read-only file system', () => {
  const ro = tmpfsFor('readonly', 'ro');

  it('fit, Adapter.save and Model.save name the folder that is not writable', async () => {
    const { Trainer, MultiTaskDataset, ByteTokenizer } = await import('../lib');
    const model = Model.fromConfig(SAVE_CONFIG, { seed: 1 });
    const adapter = Adapter.attach(model, { targetModules: ['q_proj'] });
    const data = MultiTaskDataset.fromArray([{ task: 'a', prompt: 'x', response: 'y' }], { tokenizer: new ByteTokenizer(), maxLength: 8 });
    await expect(new Trainer(model, adapter, { maxSteps: 1, progress: false, outputDir: path.join(ro, 'run') }).fit(data)).rejects.toThrow(
      `outputDir ${path.join(ro, 'run')} cannot be created: ${ro} is not writable (EROFS)`,
    );
    expect(() => adapter.save(path.join(ro, 'adapter'))).toThrow(`${path.join(ro, 'adapter')} cannot be written: nothing can be created beside it (EROFS)`);
    expect(() => model.save(path.join(ro, 'deep', 'model'))).toThrow(`the folder of ${path.join(ro, 'deep')} cannot be created: ${ro} is not writable (EROFS)`);
  });
});
