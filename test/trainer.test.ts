// Trainer: AdamW, clipping, the schedule and gradient accumulation against PyTorch step by step;
// exact resume; the event loop; loss on response tokens only; NaN, abort, atomic checkpoints.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { AdamW, Adapter, BatchSampler, ByteTokenizer, HFConfig, loadSafetensors, Model, MultiTaskDataset, Tensor, Trainer, trainStep } from '../lib';
import { maxAbs, maxAbsDiff } from './helpers/math';
import { PY_REFERENCE } from './helpers/pymodel';
import { requireTorchPython, runPython } from './helpers/python';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-trainer-');

const tok = new ByteTokenizer();
const CFG: HFConfig = TINY_BYTE_CONFIG;
const EXAMPLES = [
  ...['cat', 'dog', 'fish', 'bird', 'cow', 'ant', 'bee'].map((w) => ({ task: 'upper', prompt: `up ${w}:`, response: w.toUpperCase() })),
  ...['12', '7', '345', '9', '60'].map((n) => ({ task: 'reverse', prompt: `rev ${n}:`, response: [...n].reverse().join('') })),
];
const dataset = (): MultiTaskDataset => MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 24 });
const stateBytes = (a: Adapter): Record<string, Buffer> =>
  Object.fromEntries(Object.entries(a.stateDict()).map(([k, v]) => [k, Buffer.from(v.native.bytes())]));

describe('one step at a time against PyTorch (float64, dropout 0)', () => {
  // packing: the trainer lays each micro-batch's examples end to end in one row; Python runs the
  // padded rows, so the same numbers show that packing changes nothing but the layout
  it.each([['padded', false], ['packed', true]])('losses and adapter weights agree for 10 steps with accumulation, clipping, decay and warm-up cosine (1e-8; packed 1e-7: %s batches)', async (_how, packing) => {
    requireTorchPython();
    const model = Model.fromConfig(CFG, { seed: 1, dtype: 'float64' });
    const baseDir = path.join(tmp, `py-base-${packing}`);
    model.save(baseDir);
    const adapter = Adapter.attach(model, { method: 'rlora', heads: 3, rank: 2, dropout: 0, targetModules: ['gate_proj', 'up_proj', 'down_proj'], seed: 5 });
    const initDir = path.join(tmp, `py-init-${packing}`);
    adapter.save(initDir);
    const ds = dataset();
    const opts = { learningRate: 1e-2, maxSteps: 10, batchSize: 3, gradientAccumulation: 2, schedule: 'cosine' as const, warmupSteps: 2, weightDecay: 0.1, maxGradNorm: 0.02, seed: 3, progress: false, packing };
    // the same batches the trainer will draw
    const sampler = new BatchSampler(ds, { batchSize: 3, sampling: 'proportional', seed: 3 }, tok.padTokenId!);
    const batches = Array.from({ length: 20 }, () => sampler.next());
    const history = await new Trainer(model, adapter, opts).fit(ds);
    expect(history.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const finalDir = path.join(tmp, `py-final-${packing}`);
    adapter.save(finalDir);

    const py = runPython<{ losses: number[]; lrs: number[]; norms: number[]; final: Record<string, number[]> }>(
      `${PY_REFERENCE}
torch.set_default_dtype(torch.float64)
W = load_safetensors(INP['base'] + '/model.safetensors')
cfg = json.load(open(INP['base'] + '/config.json'))
A = load_safetensors(INP['init'] + '/adapter_model.safetensors')
acfg = json.load(open(INP['init'] + '/adapter_config.json'))
s = acfg['lora_alpha'] / math.sqrt(acfg['r'])
rcfg = json.load(open(INP['init'] + '/rlora_config.json'))
N = rcfg['heads']
P = {k: v.clone().requires_grad_(not ('offset' in k)) for k, v in A.items()}
params = [v for k, v in P.items() if 'offset' not in k]
def make(m):
    g = lambda n: P['base_model.model.' + m + '.' + n + '.weight']
    def f(x):   # the published per-head loop, plus the offset
        w = torch.softmax(x @ g('lora_route').T, -1)
        y = -s * (x @ g('lora_offset_A').T) @ g('lora_offset_B').T
        for h in range(N):
            y = y + s * w[..., h:h+1] * ((x @ g('lora_A').T) @ g('lora_B%d' % h).T)
        return y
    return f
lora = {m: make(m) for m in rcfg['modules']}
o = INP['opts']
opt = torch.optim.AdamW(params, lr=o['learningRate'], weight_decay=o['weightDecay'])
def lam(step):
    if step < o['warmupSteps']:
        return step / max(1, o['warmupSteps'])
    prog = (step - o['warmupSteps']) / max(1, o['maxSteps'] - o['warmupSteps'])
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
losses, lrs, norms = [], [], []
B = INP['batches']
for step in range(o['maxSteps']):
    micro = B[2 * step: 2 * step + 2]
    total = sum((torch.tensor(b['labels'])[:, 1:] != -100).sum().item() for b in micro)
    opt.zero_grad()
    loss_sum = 0.0
    for b in micro:
        ids, mask, labels = torch.tensor(b['inputIds']), torch.tensor(b['attentionMask']), torch.tensor(b['labels'])
        logits = decoder_forward(W, cfg, ids, mask, lora)
        l = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction='sum')
        (l / total).backward()
        loss_sum += l.item()
    losses.append(loss_sum / total)
    lrs.append(opt.param_groups[0]['lr'])
    norms.append(torch.nn.utils.clip_grad_norm_(params, o['maxGradNorm']).item())
    opt.step()
    sched.step()
print(json.dumps({'losses': losses, 'lrs': lrs, 'norms': norms, 'final': {k: v.detach().flatten().tolist() for k, v in P.items()}}))`,
      { base: baseDir, init: initDir, opts, batches },
    );
    // the attention's softmax runs in float32, as transformers' eager attention does (the
    // reference too): a packed row sums it over other keys, so its rounding differs (gradient norms
    // 1.7e-8 apart measured on libtorch 2.6, and the weights after 10 steps more than 1e-8)
    const tol = packing ? 1e-7 : 1e-8;
    history.steps.forEach((s, i) => {
      expect(Math.abs(s.loss - py.losses[i])).toBeLessThan(tol * py.losses[i]);
      expect(Math.abs(s.lr - py.lrs[i])).toBeLessThan(1e-15);
      expect(Math.abs(s.gradNorm - py.norms[i])).toBeLessThan(tol * py.norms[i]);
    });
    expect(py.losses[9]).toBeLessThan(py.losses[0]); // it learned something
    expect(history.steps.some((s) => s.gradNorm > 0.02)).toBe(true); // clipping was active
    const final = loadSafetensors(path.join(finalDir, 'adapter_model.safetensors'));
    for (const [k, v] of Object.entries(py.final)) {
      const got = final[k].data() as Float64Array;
      expect({ k, ok: maxAbsDiff(got, v) <= tol * Math.max(1, maxAbs(v)) }).toEqual({ k, ok: true });
    }
  });
});

describe('full training (an AdamW over a Model)', () => {
  it('trains every base parameter as PyTorch does (float64, 4 steps, 1e-8)', async () => {
    requireTorchPython();
    const model = Model.fromConfig(CFG, { seed: 9, dtype: 'float64' });
    const dir = path.join(tmp, 'full-base');
    model.save(dir);
    const ds = dataset();
    const sampler = new BatchSampler(ds, { batchSize: 4, seed: 2 }, tok.padTokenId!);
    const batches = Array.from({ length: 4 }, () => sampler.next());
    const opt = new AdamW(model, { lr: 1e-2, weightDecay: 0.01 });
    const losses: number[] = [];
    for (const b of batches) losses.push((await trainStep(model, [b], opt)).loss);
    const after = path.join(tmp, 'full-after');
    model.save(after);
    const py = runPython<{ losses: number[]; final: Record<string, number[]> }>(
      `${PY_REFERENCE}
torch.set_default_dtype(torch.float64)
W = {k: v.requires_grad_(True) for k, v in load_safetensors(INP['dir'] + '/model.safetensors').items()}
cfg = json.load(open(INP['dir'] + '/config.json'))
opt = torch.optim.AdamW(list(W.values()), lr=1e-2, weight_decay=0.01)
losses = []
for b in INP['batches']:
    ids, mask, labels = torch.tensor(b['inputIds']), torch.tensor(b['attentionMask']), torch.tensor(b['labels'])
    logits = decoder_forward(W, cfg, ids, mask)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
print(json.dumps({'losses': losses, 'final': {k: v.detach().flatten().tolist() for k, v in W.items()}}))`,
      { dir, batches },
    );
    losses.forEach((l, i) => expect(Math.abs(l - py.losses[i])).toBeLessThan(1e-8 * l));
    expect(losses[3]).toBeLessThan(losses[0]);
    const ours = loadSafetensors(path.join(after, 'model.safetensors'));
    for (const [k, v] of Object.entries(py.final)) {
      expect({ k, ok: maxAbsDiff(ours[k].data() as Float64Array, v) <= 1e-8 * Math.max(1, maxAbs(v)) }).toEqual({ k, ok: true });
    }
  });
});

// A checkpoint written before the run's state became one TrainerState (by commit 703d84e, the
// script in the fixture's README) resumes: trainer_state.json's format is unchanged. Its steps 3
// and 4 equal those of a run of 4 steps from scratch, and a new checkpoint has the same keys and
// data position as the old one.
describe('a checkpoint written by the code before TrainerState', () => {
  const FIXTURE = path.join(__dirname, 'fixtures', 'checkpoint-703d84e', 'checkpoint-2');
  const setup = () => {
    const rows = ['cat', 'dog', 'owl', 'yak', 'emu', 'bee'].map((w, i) => ({ task: i % 2 ? 'upper' : 'first', prompt: w, response: i % 2 ? w.toUpperCase() : w[0] }));
    return { data: MultiTaskDataset.fromArray(rows, { tokenizer: new ByteTokenizer(), maxLength: 16 }), model: Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }) };
  };
  const keys = (v: unknown): unknown => (typeof v === 'object' && v !== null && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, keys(x)])) : typeof v);

  it('resumes, and continues as a run from scratch does', async () => {
    const fresh = setup();
    const out = path.join(tmp, 'old-format-fresh');
    const adapter = Adapter.attach(fresh.model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj', 'v_proj'], seed: 1 });
    const full = await new Trainer(fresh.model, adapter, { maxSteps: 4, batchSize: 2, saveEvery: 2, learningRate: 1e-2, progress: false, outputDir: out, saveBest: 'loss', evalEvery: 2 }).fit(fresh.data, { evalDataset: fresh.data });
    const old = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'trainer_state.json'), 'utf8'));
    const now = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint-2', 'trainer_state.json'), 'utf8'));
    expect(keys(now)).toEqual(keys({ ...old, options: { ...old.options } }));
    expect([now.step, now.totalSteps, now.sampler, now.dataset]).toEqual([old.step, old.totalSteps, old.sampler, old.dataset]);

    const resumed = setup();
    const trainer = await Trainer.resume(FIXTURE, resumed.model, { outputDir: path.join(tmp, 'old-format-resumed') });
    expect(trainer.step).toBe(2);
    const rest = await trainer.fit(resumed.data, { evalDataset: resumed.data });
    expect(rest.steps.map((r) => r.step)).toEqual([3, 4]);
    rest.steps.forEach((r, i) => expect(Math.abs(r.loss - full.steps[i + 2].loss)).toBeLessThan(1e-5 * Math.abs(full.steps[i + 2].loss)));
    expect(rest.evals.map((e) => e.step)).toEqual([4]);
  });
});

describe('checkpoints and resume', () => {
  const baseDir = path.join(tmp, 'f32-base');
  beforeAll(() => Model.fromConfig(CFG, { seed: 2 }).save(baseDir));
  const attach = (m: Model): Adapter => Adapter.attach(m, { method: 'rlora', heads: 3, rank: 4, dropout: 0.1, targetModules: ['gate_proj', 'up_proj', 'down_proj', 'q_proj'], seed: 4 });
  const opts = { learningRate: 5e-3, maxSteps: 12, batchSize: 2, seed: 7, progress: false, sampling: 'temperature' as const };

  it('stopping at step 5 and resuming gives the same adapter bytes as never stopping (float32, dropout on)', async () => {
    const a = await Model.fromPretrained(baseDir);
    const adapterA = attach(a);
    const dirA = path.join(tmp, 'run-a');
    const histA = await new Trainer(a, adapterA, { ...opts, saveEvery: 5, outputDir: dirA }).fit(dataset());
    expect(fs.readdirSync(dirA).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-10', 'checkpoint-12', 'checkpoint-5']);
    const b = await Model.fromPretrained(baseDir);
    const trainerB = await Trainer.resume(path.join(dirA, 'checkpoint-5'), b, { outputDir: path.join(tmp, 'run-b') });
    expect(trainerB.step).toBe(5);
    const histB = await trainerB.fit(dataset());
    expect(histB.steps.map((s) => s.step)).toEqual([6, 7, 8, 9, 10, 11, 12]);
    expect(histB.steps.map((s) => s.loss)).toEqual(histA.steps.slice(5).map((s) => s.loss));
    expect(stateBytes(Adapter.of(b)!)).toEqual(stateBytes(adapterA));
    // resuming into the same folder logs each step once
    const c = await Model.fromPretrained(baseDir);
    await (await Trainer.resume(path.join(dirA, 'checkpoint-5'), c, { outputDir: dirA })).fit(dataset());
    const relog = fs.readFileSync(path.join(dirA, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
    expect(relog).toEqual([...Array(12).keys()].map((i) => i + 1));
    // the log has one line per step and the checkpoint files are all there
    const log = fs.readFileSync(path.join(dirA, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(log.filter((r) => r.type !== 'eval').map((r) => r.step)).toEqual([...Array(12).keys()].map((i) => i + 1));
    expect(Object.keys(log[0]).sort()).toEqual(['epoch', 'gradNorm', 'loss', 'lr', 'step', 'taskLoss', 'tokens', 'tokensPerSecond']);
    expect(fs.readdirSync(path.join(dirA, 'checkpoint-5')).sort()).toEqual(
      ['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'rlora_config.json', 'rng.safetensors', 'trainer_state.json'],
    );
  });

  it("resumes into the checkpoint's parent folder wherever it now lies, and says so", async () => {
    const dir = path.join(tmp, 'moved-from');
    const m = await Model.fromPretrained(baseDir);
    await new Trainer(m, attach(m), { ...opts, maxSteps: 4, saveEvery: 2, outputDir: dir }).fit(dataset());
    const moved = path.join(tmp, 'moved-to');
    fs.cpSync(path.join(dir, 'checkpoint-2'), path.join(moved, 'checkpoint-2'), { recursive: true });
    const listing = (d: string): string[] => fs.readdirSync(d).sort();
    const before = { files: listing(dir), log: fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8') };
    const m2 = await Model.fromPretrained(baseDir);
    const t = await Trainer.resume(path.join(moved, 'checkpoint-2'), m2);
    expect(t.options.outputDir).toBe(moved);
    const h = await t.fit(dataset());
    expect(h.outputDir).toBe(moved);
    expect(h.lastCheckpoint).toBe(path.join(moved, 'checkpoint-4'));
    expect(listing(moved)).toEqual(['checkpoint-2', 'checkpoint-4', 'log.jsonl']);
    expect(fs.readFileSync(path.join(moved, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step)).toEqual([3, 4]);
    expect({ files: listing(dir), log: fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8') }).toEqual(before); // the original run is untouched
    // an explicit outputDir still wins
    const m3 = await Model.fromPretrained(baseDir);
    expect((await Trainer.resume(path.join(moved, 'checkpoint-2'), m3, { outputDir: path.join(tmp, 'elsewhere') })).options.outputDir).toBe(path.join(tmp, 'elsewhere'));
  });

  it('rewrites log.jsonl on resume by renaming a new file over it, dropping a half-written last line with a warning', async () => {
    const dir = path.join(tmp, 'relog');
    const m = await Model.fromPretrained(baseDir);
    await new Trainer(m, attach(m), { ...opts, maxSteps: 4, saveEvery: 2, outputDir: dir }).fit(dataset());
    const log = path.join(dir, 'log.jsonl');
    fs.appendFileSync(log, '{"step":5,"epoch":0,"lo'); // a process killed while appending
    const old = fs.readFileSync(log, 'utf8');
    const inode = fs.statSync(log).ino;
    fs.linkSync(log, path.join(tmp, 'relog-old.jsonl')); // the old file itself, to see it is never written
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      const m2 = await Model.fromPretrained(baseDir);
      await (await Trainer.resume(path.join(dir, 'checkpoint-2'), m2)).fit(dataset());
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([`rlora: ${log}:5: dropped a half-written last line (23 characters)`]);
    } finally {
      warn.mockRestore();
    }
    expect(fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l).step)).toEqual([1, 2, 3, 4]);
    expect(fs.statSync(log).ino).not.toBe(inode);
    expect(fs.readFileSync(path.join(tmp, 'relog-old.jsonl'), 'utf8')).toBe(old);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]);
    // a damaged line before the last is an error naming the file and line; the log stays as it was
    const lines = fs.readFileSync(log, 'utf8').split('\n');
    lines[1] = lines[1].slice(0, 10);
    fs.writeFileSync(log, lines.join('\n'));
    const m3 = await Model.fromPretrained(baseDir);
    await expect((await Trainer.resume(path.join(dir, 'checkpoint-2'), m3)).fit(dataset())).rejects.toThrow(`${log}:2: invalid JSON`);
    expect(fs.readFileSync(log, 'utf8')).toBe(lines.join('\n'));
  });

  it('treats an explicit undefined option as the default', () => {
    const m = Model.fromConfig(CFG, { seed: 1 });
    const t = new Trainer(m, Adapter.attach(m, { targetModules: ['up_proj'] }), { batchSize: undefined, learningRate: undefined });
    expect(t.options.batchSize).toBe(8);
    expect(t.options.learningRate).toBe(2e-4);
  });

  it('refuses to resume on different data', async () => {
    const m = await Model.fromPretrained(baseDir);
    const t = await Trainer.resume(path.join(tmp, 'run-a', 'checkpoint-5'), m, {});
    const other = MultiTaskDataset.fromArray(EXAMPLES.slice(0, 9), { tokenizer: tok, maxLength: 24 });
    await expect(t.fit(other)).rejects.toThrow(/trained on 12 examples of tasks reverse, upper; this training set has 9/);
  });

  it('an abort signal stops after the current step and writes a checkpoint', async () => {
    const m = await Model.fromPretrained(baseDir);
    const ctl = new AbortController();
    const dir = path.join(tmp, 'abort');
    const h = await new Trainer(m, attach(m), { ...opts, outputDir: dir }).fit(dataset(), { signal: ctl.signal, onStep: (s) => s.step === 3 && ctl.abort() });
    expect(h.stopped).toBe('aborted');
    expect([...Adapter.of(m)!.layers.values()].every((l) => !l.training)).toBe(true); // back in evaluation mode
    expect(h.steps).toHaveLength(3);
    expect(h.lastCheckpoint).toBe(path.join(dir, 'checkpoint-3'));
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint-3', 'trainer_state.json'), 'utf8')).step).toBe(3);
  });

  it('a checkpoint folder is complete or absent after the process is killed while saving', async () => {
    const dir = path.join(tmp, 'killed');
    const script = path.join(tmp, 'saver.ts');
    fs.writeFileSync(script, `
import { Adapter, ByteTokenizer, Model, MultiTaskDataset, Trainer } from ${JSON.stringify(path.resolve(__dirname, '..', 'lib'))};
const tok = new ByteTokenizer();
const m = Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: 259, hidden_size: 128, intermediate_size: 256, num_hidden_layers: 2, num_attention_heads: 4 }, { seed: 1 });
const a = Adapter.attach(m, { targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], rank: 64, heads: 5 });
const ds = MultiTaskDataset.fromArray([{ task: 't', prompt: 'a', response: 'b' }], { tokenizer: tok });
const t = new Trainer(m, a, { maxSteps: 300, batchSize: 1, saveEvery: 1, keepCheckpoints: 2, outputDir: ${JSON.stringify(dir)}, progress: false });
t.fit(ds, { onStep: (s) => s.step === 2 && console.log('saving') });
`);
    // node itself (not the tsx launcher) so that the kill reaches the process that writes
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: path.resolve(__dirname, '..'), stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((r) => child.on('exit', r));
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('the saving process did not start within 30 s')), 30000);
        child.stdout!.on('data', () => (clearTimeout(t), resolve()));
        child.on('exit', (code) => (clearTimeout(t), reject(new Error(`the saving process exited early (${code})`))));
      });
      await new Promise((r) => setTimeout(r, 700 + Math.random() * 300));
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    // hidden leftovers: at most the folder being written and the one being removed
    const hidden = fs.readdirSync(dir).filter((f) => f.startsWith('.checkpoint-'));
    expect(hidden.length).toBeLessThanOrEqual(2);
    const done = fs.readdirSync(dir).filter((f) => f.startsWith('checkpoint-'));
    expect(done.length).toBeGreaterThan(0);
    expect(done.length).toBeLessThanOrEqual(3); // keepCheckpoints: 2, plus one complete before the old ones are removed
    for (const c of done) {
      const files = fs.readdirSync(path.join(dir, c)).sort();
      expect(files).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'rlora_config.json', 'rng.safetensors', 'trainer_state.json']);
      JSON.parse(fs.readFileSync(path.join(dir, c, 'trainer_state.json'), 'utf8'));
      expect(Object.keys(loadSafetensors(path.join(dir, c, 'adapter_model.safetensors'))).length).toBeGreaterThan(0);
      expect(Object.keys(loadSafetensors(path.join(dir, c, 'optimizer.safetensors'))).length).toBeGreaterThan(0);
    }
    // the next run in that folder (starting over there) clears the leftovers
    const m = Model.fromConfig(CFG, { seed: 1 });
    await new Trainer(m, Adapter.attach(m, { targetModules: ['up_proj'] }), { maxSteps: 1, batchSize: 1, outputDir: dir, progress: false, overwriteOutputDir: true }).fit(dataset());
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('.checkpoint-'))).toEqual([]);
  }, 60000);
});

describe('losses, NaN, the event loop', () => {
  it('the loss counts response tokens only (checked against logits by hand)', async () => {
    const m = Model.fromConfig(CFG, { seed: 3, dtype: 'float64' });
    const a = Adapter.attach(m, { targetModules: ['up_proj'], rank: 2 });
    const ds = dataset();
    const t = new Trainer(m, a, { batchSize: 5, progress: false });
    const ev = await t.evaluate(ds);
    expect(Object.keys(ev)).toEqual(['reverse', 'upper']);
    const sum: Record<string, number> = {}, count: Record<string, number> = {};
    for (let i = 0; i < ds.size; i++) {
      const e = ds.get(i);
      const logits = (await m.forward([e.inputIds])).data() as Float64Array;
      const V = tok.vocabSize;
      for (let p = e.promptLength; p < e.inputIds.length; p++) {
        const row = logits.subarray((p - 1) * V, p * V); // position p - 1 predicts token p
        const mx = Math.max(...row);
        const lse = mx + Math.log(row.reduce((acc, v) => acc + Math.exp(v - mx), 0));
        sum[e.task] = (sum[e.task] ?? 0) + lse - row[e.inputIds[p]];
        count[e.task] = (count[e.task] ?? 0) + 1;
      }
    }
    for (const task of ['reverse', 'upper']) {
      expect(Math.abs(ev[task].loss - sum[task] / count[task])).toBeLessThan(1e-10);
      expect(ev[task].count).toBe(ds.countByTask[task]);
      expect(ev[task].accuracy).toBe(0); // an untrained model
    }
  });

  it('stops with an error naming the step on a NaN loss, or skips such steps when asked', async () => {
    const m = Model.fromConfig(CFG, { seed: 4 });
    const a = Adapter.attach(m, { targetModules: ['down_proj'], rank: 2, heads: 2 });
    const layer = a.layers.get('model.layers.0.mlp.down_proj')!;
    const st = layer.stateDict();
    const bad = new Float32Array(st['lora_B0.weight'].numel).fill(NaN);
    layer.loadStateDict({ ...st, 'lora_B0.weight': Tensor.from(bad, st['lora_B0.weight'].shape) });
    const before = stateBytes(a);
    await expect(new Trainer(m, a, { maxSteps: 3, batchSize: 2, progress: false }).fit(dataset())).rejects.toThrow(
      /the loss became NaN at step 1; no update was made. Last good checkpoint: none/,
    );
    expect(stateBytes(a)).toEqual(before);
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      // every step skipped: stops once more than half of the 3 are
      const h = await new Trainer(m, a, { maxSteps: 3, batchSize: 2, progress: false, skipNonFinite: true }).fit(dataset());
      expect(h.steps.map((s) => s.skipped)).toEqual([true, true]);
      expect(h.stopped).toBe('nonFinite');
      expect(h.skippedSteps).toBe(2);
      expect(stateBytes(a)).toEqual(before);
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
        expect.stringMatching(/^rlora: skipped 2 of 2 steps \(1\.\.2\) for a non-finite loss; stopped, as more than half of the 3 steps planned were skipped/),
      ]);
      // one of four skipped (the weights repaired after it): completes, and says so
      warn.mockClear();
      const h2 = await new Trainer(m, a, { maxSteps: 4, batchSize: 2, progress: false, skipNonFinite: true }).fit(dataset(), {
        onStep: (r) => r.step === 1 && layer.loadStateDict(st),
      });
      expect(h2.steps.map((s) => s.skipped ?? false)).toEqual([true, false, false, false]);
      expect(h2.stopped).toBe('completed');
      expect(h2.skippedSteps).toBe(1);
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([expect.stringMatching(/^rlora: skipped 1 of 4 steps \(1\.\.4\) for a non-finite loss \(/)]);
    } finally {
      warn.mockRestore();
    }
  });

  it('checks the parameters after each update: their norm is reported, and an update that breaks them stops fit with the last good checkpoint', async () => {
    const m = Model.fromConfig(CFG, { seed: 4 });
    const a = Adapter.attach(m, { method: 'rlora', targetModules: ['up_proj'], rank: 2, heads: 2 });
    // the norm of the updated parameters, as the native step computes it
    const opt = new AdamW([...a.layers.values()], { lr: 1e-2 });
    const r = await trainStep(m, [new BatchSampler(dataset(), { batchSize: 4 }, tok.padTokenId!).next()], opt);
    expect(r.paramsFinite).toBe(true);
    let sq = 0;
    for (const [k, t] of Object.entries(a.stateDict())) if (!k.includes('offset')) for (const v of t.data() as Float32Array) sq += v * v;
    expect(Math.abs(r.paramNorm - Math.sqrt(sq))).toBeLessThan(1e-5 * Math.sqrt(sq));
    // learning rate 0 at step 1 (warm-up), then 1e30: weights of about 1e30 are finite, their squares are not
    const dir = path.join(tmp, 'broken');
    const t = new Trainer(m, a, { learningRate: 1e30, schedule: 'constant', warmupSteps: 1, maxSteps: 4, batchSize: 2, saveEvery: 1, outputDir: dir, progress: false });
    const broken = new RegExp(
      `^the update of step 2 left the trainable parameters non-finite or too large \\(L2 norm [^)]+\\); .* Last good checkpoint: ${path.join(dir, 'checkpoint-1').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} `,
    );
    await expect(t.fit(dataset())).rejects.toThrow(broken);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-1']);
    const saved = loadSafetensors(path.join(dir, 'checkpoint-1', 'adapter_model.safetensors'));
    for (const v of Object.values(saved)) expect((v.data() as Float32Array).every((x) => Math.abs(x) < 10)).toBe(true);
    // nothing is written or trained from the broken weights
    expect(() => t.saveCheckpoint()).toThrow(broken);
    await expect(t.fit(dataset())).rejects.toThrow(broken);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-1']);
  });

  it('the event loop keeps serving timers during fit', async () => {
    const m = Model.fromConfig({ ...CFG, hidden_size: 64, intermediate_size: 128 }, { seed: 5 });
    const a = Adapter.attach(m, { targetModules: ['gate_proj', 'up_proj', 'down_proj'], rank: 8 });
    let ticks = 0, last = Date.now(), gap = 0;
    const timer = setInterval(() => {
      const now = Date.now();
      gap = Math.max(gap, now - last);
      last = now;
      ticks++;
    }, 5);
    const t0 = Date.now();
    await new Trainer(m, a, { maxSteps: 30, batchSize: 8, progress: false }).fit(dataset());
    clearInterval(timer);
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThan(100);
    expect(ticks).toBeGreaterThan(elapsed / 5 / 4);
    expect(gap).toBeLessThan(250);
  });
});

describe('bfloat16 autocast', () => {
  it('trains under autocast: losses follow float32 closely but not bit for bit, parameters stay float32', async () => {
    const run = async (precision: 'float32' | 'bfloat16'): Promise<{ losses: number[]; a: Adapter }> => {
      const m = Model.fromConfig({ ...CFG, hidden_size: 64, intermediate_size: 96 }, { seed: 12 });
      const a = Adapter.attach(m, { method: 'rlora', targetModules: ['gate_proj', 'up_proj', 'down_proj', 'q_proj', 'v_proj'], rank: 4, dropout: 0.1, seed: 3 });
      const h = await new Trainer(m, a, { maxSteps: 6, batchSize: 4, learningRate: 5e-3, precision, progress: false }).fit(dataset());
      return { losses: h.steps.map((s) => s.loss), a };
    };
    const f32 = await run('float32');
    const bf16 = await run('bfloat16');
    bf16.losses.forEach((l, i) => expect(Math.abs(l - f32.losses[i])).toBeLessThan(0.03 * f32.losses[i]));
    expect(bf16.losses).not.toEqual(f32.losses); // the products really ran in bfloat16
    expect(bf16.losses[5]).toBeLessThan(bf16.losses[0]);
    for (const t of Object.values(bf16.a.stateDict())) expect(t.dtype).toBe('float32');
    // evaluation and plain forward are unaffected: no autocast outside the training step
    const m = bf16.a.model;
    expect((await m.forward([[1, 2, 3]])).dtype).toBe('float32');
    expect(() => new Trainer(m, bf16.a, { precision: 'float16' as never })).toThrow('precision must be one of "float32", "bfloat16", got "float16" (did you mean "bfloat16"?)');
  });
});

describe('resume with a new maxSteps', () => {
  it('a 6-step run resumed with maxSteps 10 runs 4 more steps on the cosine schedule for 10, with a warning', async () => {
    const lr = 1e-2, warmup = 2;
    // transformers' cosine with warm-up: the lr of (1-based) step k is lr * f(k - 1)
    const cosine = (total: number) => (s: number): number =>
      s < warmup ? (lr * s) / warmup : lr * 0.5 * (1 + Math.cos((Math.PI * (s - warmup)) / (total - warmup)));
    const m = Model.fromConfig(CFG, { seed: 4 });
    const dir = path.join(tmp, 'extend');
    const opts = { learningRate: lr, warmupSteps: warmup, maxSteps: 6, batchSize: 2, seed: 1, progress: false, outputDir: dir };
    const h1 = await new Trainer(m, Adapter.attach(m, { targetModules: ['up_proj'], dropout: 0, seed: 2 }), opts).fit(dataset());
    h1.steps.forEach((s) => expect(Math.abs(s.lr - cosine(6)(s.step - 1))).toBeLessThan(1e-15));
    const m2 = Model.fromConfig(CFG, { seed: 4 });
    await expect(Trainer.resume(path.join(dir, 'checkpoint-6'), m2, { maxSteps: 6 - 1 })).rejects.toThrow("maxSteps 5 must be above the checkpoint's step (6)");
    expect(Adapter.of(m2)).toBeUndefined(); // nothing stays attached
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    let t: Trainer;
    try {
      t = await Trainer.resume(path.join(dir, 'checkpoint-6'), m2, { maxSteps: 10 });
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
        `rlora: resuming ${path.join(dir, 'checkpoint-6')} with maxSteps 10 instead of its 6: the cosine learning-rate schedule is recomputed for 10 steps in all (4 more)`,
      ]);
    } finally {
      warn.mockRestore();
    }
    expect(t.options.maxSteps).toBe(10);
    const h2 = await t.fit(dataset());
    expect(h2.steps.map((s) => s.step)).toEqual([7, 8, 9, 10]);
    const want = [7, 8, 9, 10].map((k) => cosine(10)(k - 1));
    h2.steps.forEach((s, i) => expect(Math.abs(s.lr - want[i])).toBeLessThan(1e-15));
    expect(want[3]).toBeGreaterThan(0); // not the schedule for 6 steps, which had reached 0
    // the new total is saved: resuming checkpoint-10 has nothing left to do
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint-10', 'trainer_state.json'), 'utf8'));
    expect([state.step, state.totalSteps, state.options.maxSteps]).toEqual([10, 10, 10]);
  });
});

// Task names are data: "__proto__" or "constructor" is a task like any other (a task named
// "__proto__" used to vanish from taskLoss and from evaluate's results).
describe('task names that are also Object.prototype names', () => {
  it('"__proto__" and "constructor" appear in taskLoss and in the evaluation', async () => {
    const tok = new ByteTokenizer();
    const rows = ['__proto__', 'constructor', 'plain'].flatMap((task) => ['ab', 'cd'].map((w) => ({ task, prompt: `${w}:`, response: w.toUpperCase() })));
    const data = MultiTaskDataset.fromArray(rows, { tokenizer: tok, maxLength: 16 });
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], seed: 1 });
    const trainer = new Trainer(model, adapter, { maxSteps: 2, batchSize: 6, progress: false });
    const h = await trainer.fit(data);
    expect(Object.keys(h.steps[0].taskLoss).sort()).toEqual(['__proto__', 'constructor', 'plain']);
    expect(Object.values(h.steps[0].taskLoss).every((l) => typeof l === 'number' && l > 0)).toBe(true);
    const ev = await trainer.evaluate(data);
    expect(Object.keys(ev).sort()).toEqual(['__proto__', 'constructor', 'plain']);
    expect(Object.getOwnPropertyDescriptor(ev, '__proto__')?.value.count).toBe(2);
    expect((ev as Record<string, { count: number }>)["constructor"].count).toBe(2);
  });
});
