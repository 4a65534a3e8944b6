#!/usr/bin/env node
// Device checks of rlora (plain CommonJS over the compiled dist/: no TypeScript at run time), as
// scripts/gpu-check.sh runs them on the device machine (scripts/GPU.md):
//   1. layer:     forward and vjp on the device against CPU float64 (lora, hydralora, rlora; dropout on
//                 the input and on the rank; dropout 0), plus dropout masks that match across devices
//   2. trainer:   20 steps on the device against CPU float32; bfloat16 autocast learns; a checkpoint
//                 written on one device resumes on the other
//   3. generate:  greedy generation with the key/value cache on the device gives the CPU's tokens
//   4. distributed: a process group of one on the device's backend (NCCL on CUDA): the training
//                 step through its collectives equals the step without a group
// Each result is one entry {name, passed, ...figures, error?} of the JSON report; a failure does not
// stop the others. One line per entry goes to stderr. Exit status 1 when any entry failed.
//
//   node scripts/gpu-checks.cjs --device cuda --out gpu-out/report.json [--dist .gpu/dist]
// With --device cpu every check runs here (the device side is then CPU float32, the reference CPU
// float64 or CPU float32), which is how the script itself is tested without a GPU.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

function parseArgs(argv) {
  const a = { device: 'cuda', out: null, dist: path.join(__dirname, '..', 'dist'), helpers: path.join(__dirname, '..', '.gpu', 'helpers', 'math.js') };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--device') a.device = v();
    else if (k === '--out') a.out = v();
    else if (k === '--dist') a.dist = path.resolve(v());
    else if (k === '--helpers') a.helpers = path.resolve(v());
    else if (k === '--help' || k === '-h') {
      console.log('usage: node scripts/gpu-checks.cjs --device cuda|cuda:N|cpu --out report.json [--dist DIR] [--helpers .gpu/helpers/math.js]');
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  if (!/^(cpu|cuda(:\d+)?)$/.test(a.device)) throw new Error(`--device must be cpu, cuda or cuda:N, got ${a.device}`);
  return a;
}

const args = parseArgs(process.argv.slice(2));
const rlora = require(args.dist);
const { Adapter, ByteTokenizer, Model, MultiHeadLoraLinear, MultiTaskDataset, Tensor, Trainer } = rlora;
const DEV = args.device;

// ---------------------------------------------------------------------------------------------
// Arithmetic helpers: test/helpers/math.ts, compiled into .gpu/helpers by scripts/gpu-prepare.sh

const { rng, randn, maxAbs, maxAbsDiff, mean } = require(args.helpers);
// a free TCP port for the rendezvous: test/helpers/ports.ts, compiled beside math.ts
const { freePort } = require(path.join(path.dirname(args.helpers), 'ports.js'));
/** max |a - b| / max |b| (b the reference). */
const relErr = (a, b) => maxAbsDiff(a, b) / Math.max(maxAbs(b), 1e-30);
const sig = (x) => (typeof x === 'number' && Number.isFinite(x) ? Number(x.toPrecision(3)) : x);
/** Every tensor of a state dict, flattened in name order, as numbers. */
function flatState(state) {
  return Object.keys(state).sort().flatMap((k) => Array.from(state[k].data(), Number));
}

// ---------------------------------------------------------------------------------------------
// Report

const report = {
  device: DEV,
  startedAt: new Date().toISOString(),
  host: os.hostname(),
  node: process.version,
  dist: args.dist,
  buildInfo: null,
  blasInfo: null,
  tolerance: { layer: 1e-4, trainer: 1e-4 },
  checks: [],
  /** What the API offers for devices, as read in lib/ (no option was invented). */
  api: [
    'Tensor.from(data, shape, {dtype, device}) and tensor.to(device) take a device (lib/tensor.ts).',
    'MultiHeadLoraLinear has no device option: its parameters take the base weight\'s dtype and device; loadStateDict copies tensors to that device (lib/layer.ts, native/rlora/multihead_lora.cpp).',
    'Model.fromConfig / Model.fromPretrained take {device}; fromConfig draws on a CPU generator, so a seed gives the same weights on every device (lib/model.ts, native/model/decoder.cpp init_random).',
    'Adapter.attach / Adapter.load have no device option: layers follow the model\'s linear weights.',
    'Model.generate / forward have no device option: inputs go to the model\'s device, results come back as CPU data (generate returns number[][]).',
    'Trainer takes options.device only as a check (it must equal the model\'s device); Trainer.resume(dir, model) continues on the model\'s device, whichever device wrote the checkpoint.',
    'Dropout masks come from each layer\'s CPU generator (native/rlora/multihead_lora.cpp), so a seed gives the same masks on every device.',
  ],
  findings: [],
  passed: false,
};

function summarize(entry) {
  const skip = new Set(['name', 'passed', 'error', 'seconds']);
  const figs = Object.entries(entry)
    .filter(([k, v]) => !skip.has(k) && (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string'))
    .map(([k, v]) => `${k}=${typeof v === 'number' ? sig(v) : v}`)
    .slice(0, 8);
  const head = `${entry.passed ? 'PASS' : 'FAIL'} ${entry.name}`;
  return `${head}${figs.length ? ' ' + figs.join(' ') : ''}${entry.error ? ` error: ${entry.error}` : ''} (${entry.seconds}s)`;
}

/** Runs one check; fn returns figures and sets `passed`. An exception fails the entry, not the script. */
async function check(name, fn) {
  const t0 = Date.now();
  const entry = { name, passed: false };
  try {
    const figures = await fn();
    Object.assign(entry, figures);
    entry.passed = Boolean(figures && figures.passed);
  } catch (e) {
    entry.passed = false;
    entry.error = e && e.stack ? String(e.stack).split('\n').slice(0, 4).join(' | ') : String(e);
  }
  entry.seconds = Number(((Date.now() - t0) / 1000).toFixed(2));
  report.checks.push(entry);
  console.error(summarize(entry));
  writeReport(); // partial reports survive a timeout
  return entry;
}

function writeReport() {
  if (!args.out) return;
  fs.mkdirSync(path.dirname(path.resolve(args.out)), { recursive: true });
  fs.writeFileSync(args.out, JSON.stringify(report, null, 2) + '\n');
}

// ---------------------------------------------------------------------------------------------
// 1. The layer: forward and vjp on the device against CPU float64

const bName = (N, i) => (N === 1 ? 'lora_B.weight' : `lora_B${i}.weight`);

/**
 * One layer built twice from the same float64 values: CPU float64 (the reference) and `dtype` on
 * `device`. Random values everywhere (B = 0 at init would hide most of the math).
 */
function layerPair(method, dropoutOn, { dropout = 0, seed, device, dtype = 'float32' }) {
  const inF = 64, outF = 48, r = 8, lead = [3, 7];
  const N = method === 'lora' ? 1 : 4;
  const T = lead.reduce((a, b) => a * b, 1);
  const W0 = randn(outF * inF, seed, 0.2);
  const b = randn(outF, seed + 1);
  const opts = { method, rank: r, dropout, dropoutOn, seed, ...(method === 'lora' ? {} : { heads: N }) };
  const A = randn(r * inF, seed + 2, 0.3);
  const B = Array.from({ length: N }, (_, i) => randn(outF * r, seed + 10 + i, 0.3));
  const G = N > 1 ? randn(N * inF, seed + 3, 0.3) : null;
  const offA = randn(r * inF, seed + 4, 0.3);
  const offB = randn(outF * r, seed + 5, 0.3);
  const make = (dt, dev) => {
    const o = { dtype: dt, device: dev };
    const layer = new MultiHeadLoraLinear({ weight: Tensor.from(W0, [outF, inF], o), bias: Tensor.from(b, [outF], o) }, opts);
    const state = { 'lora_A.weight': Tensor.from(A, [r, inF], o) };
    B.forEach((Bi, i) => (state[bName(N, i)] = Tensor.from(Bi, [outF, r], o)));
    if (G) state['lora_route.weight'] = Tensor.from(G, [N, inF], o);
    if (layer.options.init.offset) {
      state['lora_offset_A.weight'] = Tensor.from(offA, [r, inF], o);
      state['lora_offset_B.weight'] = Tensor.from(offB, [outF, r], o);
    }
    layer.loadStateDict(state);
    return layer;
  };
  const x = randn(T * inF, seed + 6);
  const g = randn(T * outF, seed + 7);
  return {
    shape: { inF, outF, rank: r, heads: N, lead },
    ref: make('float64', 'cpu'),
    dut: make(dtype, device),
    x64: Tensor.from(x, [...lead, inF], { dtype: 'float64' }),
    g64: Tensor.from(g, [...lead, outF], { dtype: 'float64' }),
    xd: Tensor.from(x, [...lead, inF], { dtype, device }),
    gd: Tensor.from(g, [...lead, outF], { dtype, device }),
  };
}

/** Relative errors of output, gradInput and every gradient, device result against the reference. */
function compareVjp(got, want) {
  const errs = { output: relErr(got.output.data(), want.output.data()), gradInput: relErr(got.gradInput.data(), want.gradInput.data()) };
  const gotKeys = Object.keys(got.grads).sort(), wantKeys = Object.keys(want.grads).sort();
  if (gotKeys.join() !== wantKeys.join()) throw new Error(`gradient names differ: device [${gotKeys}] vs CPU [${wantKeys}]`);
  for (const k of wantKeys) errs[k] = relErr(got.grads[k].data(), want.grads[k].data());
  return errs;
}

async function layerChecks() {
  let seed = 1000;
  for (const method of ['lora', 'hydralora', 'rlora']) {
    for (const dropoutOn of ['input', 'rank']) {
      await check(`layer/${method}/dropout-on-${dropoutOn}`, async () => {
        const p = layerPair(method, dropoutOn, { seed: (seed += 100), device: DEV });
        const want = await p.ref.vjp(p.x64, p.g64);
        const got = await p.dut.vjp(p.xd, p.gd);
        const errs = compareVjp(got, want);
        // forward alone (no graph kept) gives the vjp's output
        const fwd = await p.dut.forward(p.xd);
        const forwardVsVjp = relErr(fwd.data(), got.output.data());
        const devices = [got.output.device, got.gradInput.device, ...Object.values(got.grads).map((t) => t.device), ...Object.values(p.dut.stateDict()).map((t) => t.device)];
        const onDevice = devices.every((d) => d.startsWith(DEV.split(':')[0]));
        const maxRelErr = Math.max(...Object.values(errs), forwardVsVjp);
        return {
          passed: maxRelErr < report.tolerance.layer && onDevice,
          maxRelErr,
          outputRelErr: errs.output,
          gradInputRelErr: errs.gradInput,
          forwardVsVjp,
          onDevice,
          resultDevice: got.output.device,
          dtype: got.output.dtype,
          options: { method, dropoutOn, dropout: 0, heads: p.shape.heads, rank: p.shape.rank, offset: p.dut.options.init.offset },
          shape: p.shape,
          relErrs: Object.fromEntries(Object.entries(errs).map(([k, v]) => [k, sig(v)])),
        };
      });
    }
  }
  // Beyond the brief's dropout 0: masks come from the layer's CPU generator, so with dropout on the
  // device draws the masks the CPU does and the results still agree.
  for (const dropoutOn of ['input', 'rank']) {
    await check(`layer/rlora/dropout-0.25-on-${dropoutOn}-same-masks`, async () => {
      const p = layerPair('rlora', dropoutOn, { seed: 5000 + (dropoutOn === 'rank' ? 1 : 0), device: DEV, dropout: 0.25 });
      const want = await p.ref.vjp(p.x64, p.g64);
      const got = await p.dut.vjp(p.xd, p.gd);
      const errs = compareVjp(got, want);
      // the masks really dropped something: eval mode gives another output
      const evalOut = await p.ref.eval().forward(p.x64);
      const dropped = relErr(want.output.data(), evalOut.data());
      const maxRelErr = Math.max(...Object.values(errs));
      return { passed: maxRelErr < report.tolerance.layer && dropped > 1e-3, maxRelErr, dropoutChangesOutput: dropped, relErrs: Object.fromEntries(Object.entries(errs).map(([k, v]) => [k, sig(v)])) };
    });
  }
}

// ---------------------------------------------------------------------------------------------
// 2. The trainer

// test/helpers/tiny-model.ts, TINY_BYTE_CONFIG (the trainer tests' model), literally
const tok = new ByteTokenizer();
const TINY_BYTE_CONFIG = {
  architectures: ['LlamaForCausalLM'], vocab_size: new ByteTokenizer().vocabSize, hidden_size: 16, intermediate_size: 24,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1,
};
// test/helpers/tiny-model.ts, TINY_CONFIG and its left-padded batch, literally
const TINY_CONFIG = {
  architectures: ['LlamaForCausalLM'], vocab_size: 53, hidden_size: 32, intermediate_size: 40,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
};
const IDS = [[3, 14, 15, 9, 26, 5], [0, 0, 35, 8, 9, 7]];
const MASK = [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]];

// test/trainer.test.ts's learnable tasks
const EXAMPLES = [
  ...['cat', 'dog', 'fish', 'bird', 'cow', 'ant', 'bee'].map((w) => ({ task: 'upper', prompt: `up ${w}:`, response: w.toUpperCase() })),
  ...['12', '7', '345', '9', '60'].map((n) => ({ task: 'reverse', prompt: `rev ${n}:`, response: [...n].reverse().join('') })),
];
const dataset = () => MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 24 });
const TARGETS = ['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const TRAIN = { learningRate: 5e-3, maxSteps: 20, batchSize: 4, seed: 7, progress: false };

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-gpu-checks-'));

/** A fresh tiny model with an R-LoRA adapter on `device`. */
function tinyRun(device, { dropout = 0 } = {}) {
  const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1, device });
  const adapter = Adapter.attach(model, { method: 'rlora', heads: 3, rank: 4, dropout, targetModules: TARGETS, seed: 5 });
  return { model, adapter };
}

async function fitRun(device, { dropout = 0, precision, outputDir, saveEvery, trainerDevice, maxSteps = TRAIN.maxSteps, learningRate = TRAIN.learningRate } = {}) {
  const { model, adapter } = tinyRun(device, { dropout });
  const opts = { ...TRAIN, maxSteps, learningRate };
  if (precision) opts.precision = precision;
  if (outputDir) Object.assign(opts, { outputDir, saveEvery });
  if (trainerDevice) opts.device = trainerDevice;
  const h = await new Trainer(model, adapter, opts).fit(dataset());
  const state = adapter.stateDict();
  return { model, adapter, losses: h.steps.map((s) => s.loss), steps: h.steps, state, flat: flatState(state), history: h };
}

/** Largest relative difference of two loss curves, step by step. */
const lossRelErr = (a, b) => {
  if (a.length !== b.length) throw new Error(`${a.length} vs ${b.length} losses`);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));
};

async function trainerChecks() {
  let cpuF32, devF32;
  await check('trainer/float32-device-vs-cpu-20-steps', async () => {
    // same seed, same base weights on both devices (CPU generator)
    const mc = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const md = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1, device: DEV });
    const ids = [[72, 105, 33, 10, 200]];
    const initialLogitsRelErr = relErr((await md.forward(ids)).data(), (await mc.forward(ids)).data());
    mc.dispose();
    md.dispose();
    cpuF32 = await fitRun('cpu');
    // the Trainer's device option as a user gives it; it must equal the model's device string
    let deviceOptionError;
    try {
      devF32 = await fitRun(DEV, { trainerDevice: DEV });
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      deviceOptionError = e.message;
      devF32 = await fitRun(DEV);
    }
    const lossErr = lossRelErr(devF32.losses, cpuF32.losses);
    const stateErr = relErr(devF32.flat, cpuF32.flat);
    const adapterDevices = [...new Set(Object.values(devF32.state).map((t) => t.device))];
    const learned = mean(cpuF32.losses.slice(-5)) < mean(cpuF32.losses.slice(0, 5));
    return {
      passed: lossErr < report.tolerance.trainer && stateErr < report.tolerance.trainer && initialLogitsRelErr < 1e-4 && learned,
      lossRelErr: lossErr,
      stateRelErr: stateErr,
      initialLogitsRelErr,
      modelDevice: devF32.model.device,
      ...(deviceOptionError ? { deviceOptionError } : {}),
      adapterDevices: adapterDevices.join(','),
      firstLoss: cpuF32.losses[0],
      lastLoss: cpuF32.losses[cpuF32.losses.length - 1],
      lossesCpu: cpuF32.losses.map(sig),
      lossesDevice: devF32.losses.map(sig),
      options: { ...TRAIN, dropout: 0, method: 'rlora', heads: 3, rank: 4, targetModules: TARGETS, config: TINY_BYTE_CONFIG },
    };
  });

  await check('trainer/bfloat16-autocast-learns-on-device', async () => {
    const steps = 30;
    const bf = await fitRun(DEV, { precision: 'bfloat16', maxSteps: steps, learningRate: 1e-2 });
    const f32 = await fitRun(DEV, { maxSteps: steps, learningRate: 1e-2 });
    const first = mean(bf.losses.slice(0, 5)), last = mean(bf.losses.slice(-5));
    const differsFromFloat32 = bf.losses.some((l, i) => l !== f32.losses[i]);
    const dtypes = [...new Set(Object.values(bf.state).map((t) => t.dtype))];
    const finite = bf.losses.every(Number.isFinite);
    const relToFloat32 = lossRelErr(bf.losses, f32.losses);
    // evaluation and plain forward run without autocast
    const fwdDtype = (await bf.model.forward([[1, 2, 3]])).dtype;
    return {
      passed: finite && last < first && differsFromFloat32 && dtypes.join() === 'float32' && fwdDtype === 'float32',
      meanFirst5: first,
      meanLast5: last,
      differsFromFloat32,
      maxRelDiffVsFloat32: relToFloat32,
      parameterDtypes: dtypes.join(','),
      forwardDtype: fwdDtype,
      losses: bf.losses.map(sig),
      options: { precision: 'bfloat16', maxSteps: steps, learningRate: 1e-2 },
    };
  });

  // Checkpoints across devices, with dropout on (the generators' states travel in rng.safetensors)
  const runs = {};
  const full = async (device) => {
    const dir = path.join(tmpRoot, `full-${device.replace(':', '')}`);
    runs[device] ??= await fitRun(device, { dropout: 0.1, outputDir: dir, saveEvery: 10 });
    return { ...runs[device], dir };
  };
  const across = async (from, to) => {
    const src = await full(from);
    const ref = await full(to);
    const ckpt = path.join(src.dir, 'checkpoint-10');
    if (!fs.existsSync(path.join(ckpt, 'trainer_state.json'))) throw new Error(`${ckpt} was not written`);
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1, device: to });
    const trainer = await Trainer.resume(ckpt, model, { outputDir: path.join(tmpRoot, `resumed-${from}-to-${to}`.replace(/:/g, '')), progress: false });
    const h = await trainer.fit(dataset());
    const losses = h.steps.map((s) => s.loss);
    const flat = flatState(Adapter.of(model).stateDict());
    const vsTarget = { loss: lossRelErr(losses, ref.losses.slice(10)), state: relErr(flat, ref.flat) };
    const vsSource = { loss: lossRelErr(losses, src.losses.slice(10)), state: relErr(flat, src.flat) };
    const tol = report.tolerance.trainer;
    return {
      passed: h.steps.map((s) => s.step).join() === '11,12,13,14,15,16,17,18,19,20' && Math.max(vsTarget.loss, vsTarget.state, vsSource.loss, vsSource.state) < tol,
      writtenOn: from,
      resumedOn: to,
      resumedSteps: `${h.steps[0].step}-${h.steps[h.steps.length - 1].step}`,
      lossRelErrVsUninterruptedOnTarget: vsTarget.loss,
      stateRelErrVsUninterruptedOnTarget: vsTarget.state,
      lossRelErrVsUninterruptedOnSource: vsSource.loss,
      stateRelErrVsUninterruptedOnSource: vsSource.state,
      adapterDevice: Object.values(Adapter.of(model).stateDict())[0].device,
      options: { dropout: 0.1, saveEvery: 10, maxSteps: 20 },
    };
  };
  await check('trainer/checkpoint-of-device-resumes-on-cpu', () => across(DEV, 'cpu'));
  await check('trainer/checkpoint-of-cpu-resumes-on-device', () => across('cpu', DEV));

  // A run given {device} saves it in its options; Trainer.resume continues on the model's device
  // anyway (lib/trainer.ts), so such a checkpoint resumes on the other device too.
  await check('trainer/resume-of-a-run-given-options.device-on-the-other-device', async () => {
    const dir = path.join(tmpRoot, 'with-device-option');
    await fitRun(DEV, { outputDir: dir, saveEvery: 2, maxSteps: 2, trainerDevice: DEV });
    const saved = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint-2', 'trainer_state.json'), 'utf8')).options.device;
    const other = 'cpu'; // a CUDA run's checkpoint resumes on the CPU (with --device cpu: CPU to CPU)
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1, device: other });
    const trainer = await Trainer.resume(path.join(dir, 'checkpoint-2'), m, { progress: false, maxSteps: 3, outputDir: path.join(tmpRoot, 'with-device-option-resumed') });
    const h = await trainer.fit(dataset());
    const passed = trainer.options.device === m.device && h.steps.length === 1 && Number.isFinite(h.steps[0].loss);
    return { passed, savedDevice: saved, resumedOn: trainer.options.device, steps: h.steps.map((x) => x.step) };
  });
}

// ---------------------------------------------------------------------------------------------
// 3. generate with the key/value cache

/** Greedy continuation by full forward passes (no cache), with the smallest top-1/top-2 logit gap seen. */
async function greedyNoCache(model, ids, mask, n) {
  const rows = ids.map((r) => r.slice()), masks = mask.map((r) => r.slice());
  let minGap = Infinity;
  for (let s = 0; s < n; s++) {
    const logits = await model.forward(rows, { attentionMask: masks });
    const [B, S, V] = logits.shape;
    const d = logits.data();
    for (let b = 0; b < B; b++) {
      const off = (b * S + (S - 1)) * V;
      let best = 0, top = -Infinity, second = -Infinity;
      for (let v = 0; v < V; v++) {
        const x = d[off + v];
        if (x > top) {
          second = top;
          top = x;
          best = v;
        } else if (x > second) second = x;
      }
      minGap = Math.min(minGap, top - second);
      rows[b].push(best);
      masks[b].push(1);
    }
  }
  return { rows, minGap };
}

// TINY_CONFIG as it is gives almost uniform logits: greedy decoding repeats one token (50) for ever,
// which would hide a wrong cache. A larger initializer_range makes every step's choice differ.
const GEN_CONFIG = { ...TINY_CONFIG, initializer_range: 0.5 };
const genModel = (device) => {
  const m = Model.fromConfig(GEN_CONFIG, { seed: 3, device });
  // an adapter whose heads are not zero, so generation runs through it (same init on every device)
  Adapter.attach(m, { method: 'hydralora', heads: 3, rank: 4, init: { b: 'gaussian' }, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 9 });
  return m;
};

async function generateChecks() {
  await check('generate/greedy-kv-cache-device-vs-cpu', async () => {
    const n = 24;
    const cpu = genModel('cpu');
    const dev = genModel(DEV);
    const opts = { attentionMask: MASK, maxNewTokens: n, temperature: 0, eosTokenId: [] };
    const cpuTokens = await cpu.generate(IDS, opts);
    const devTokens = await dev.generate(IDS, opts);
    const noCache = await greedyNoCache(dev, IDS, MASK, n);
    const cpuNoCache = await greedyNoCache(cpu, IDS, MASK, n);
    const same = JSON.stringify(devTokens) === JSON.stringify(cpuTokens);
    const cacheMatchesNoCache = JSON.stringify(devTokens) === JSON.stringify(noCache.rows);
    const logitsRelErr = relErr((await dev.forward(IDS, { attentionMask: MASK })).data(), (await cpu.forward(IDS, { attentionMask: MASK })).data());
    return {
      passed: same && cacheMatchesNoCache,
      sameTokensAsCpu: same,
      deviceCacheMatchesDeviceNoCache: cacheMatchesNoCache,
      cpuCacheMatchesCpuNoCache: JSON.stringify(cpuTokens) === JSON.stringify(cpuNoCache.rows),
      logitsRelErr,
      minTop1Top2Gap: cpuNoCache.minGap,
      newTokens: n,
      distinctNewTokens: new Set(cpuTokens.flatMap((r) => r.slice(IDS[0].length))).size,
      config: GEN_CONFIG,
      cpuTokens: JSON.stringify(cpuTokens.map((r) => r.slice(IDS[0].length))),
      deviceTokens: JSON.stringify(devTokens.map((r) => r.slice(IDS[0].length))),
    };
  });
  // Sampling draws from a CPU generator seeded by options.seed: the device should draw the CPU's tokens
  await check('generate/sampled-same-seed-device-vs-cpu', async () => {
    const opts = { attentionMask: MASK, maxNewTokens: 24, temperature: 0.8, topK: 20, topP: 0.95, seed: 4, eosTokenId: [] };
    const cpuTokens = await genModel('cpu').generate(IDS, opts);
    const devTokens = await genModel(DEV).generate(IDS, opts);
    const same = JSON.stringify(devTokens) === JSON.stringify(cpuTokens);
    return {
      passed: same,
      sameTokensAsCpu: same,
      options: { temperature: 0.8, topK: 20, topP: 0.95, seed: 4 },
      cpuTokens: JSON.stringify(cpuTokens.map((r) => r.slice(IDS[0].length))),
      deviceTokens: JSON.stringify(devTokens.map((r) => r.slice(IDS[0].length))),
    };
  });
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// 4. data parallelism on the device's backend (NCCL on CUDA; Gloo with --device cpu)
//
// One GPU cannot hold two NCCL ranks (NCCL refuses two ranks on one device), so the check is a
// group of one: every collective of the training step runs through NCCL on cuda:<index>, and the
// result must equal the step without a group.

/** Rows of token ids (all labelled but the padding) for trainStep, drawn from a seeded stream. */
function stepBatch(seed, rows = 4, len = 12) {
  const r = rng(seed);
  const inputIds = [], attentionMask = [], labels = [];
  for (let b = 0; b < rows; b++) {
    const n = len - b; // right padding of b tokens
    const ids = Array.from({ length: len }, (_, t) => (t < n ? 3 + Math.floor(r() * 200) : 0));
    inputIds.push(ids);
    attentionMask.push(ids.map((_, t) => (t < n ? 1 : 0)));
    labels.push(ids.map((id, t) => (t < n ? id : -100)));
  }
  return { inputIds, attentionMask, labels };
}

async function distributedChecks() {
  const { distributed, trainStep, AdamW } = rlora;
  const backend = DEV.startsWith('cuda') ? 'nccl' : 'gloo';
  const index = DEV === 'cuda' ? 0 : DEV.startsWith('cuda:') ? Number(DEV.slice(5)) : 0;
  await check(`distributed/${backend}-group-of-one-trainStep-equals-no-group`, async () => {
    const built = { gloo: distributed.isAvailable('gloo'), nccl: distributed.isAvailable('nccl') };
    if (!built[backend]) return { passed: false, built, reason: `this build has no ${backend}` };
    const masterPort = await freePort();
    // 256-byte gradient buckets: several allreduces start while backward runs (native/distributed/reducer.h)
    await distributed.init({ backend, worldSize: 1, rank: 0, masterPort, localRank: index, timeoutMs: 60_000, bucketCapMb: 2 ** -12 });
    try {
      const groupDevice = distributed.device();
      const sums = Array.from(await distributed.allreduceSum(new Float32Array([1.5, -2, 3])));
      const gathered = await distributed.allgather(7);
      await distributed.barrier();
      const steps = 5;
      const run = async (dp) => {
        const { model, adapter } = tinyRun(DEV);
        const opt = new AdamW([...adapter.layers.values()], { lr: 1e-2 });
        const losses = [];
        for (let s = 0; s < steps; s++) losses.push((await trainStep(model, [stepBatch(s), stepBatch(s + 100, 2)], opt, { distributed: dp })).loss);
        const flat = flatState(adapter.stateDict());
        model.dispose();
        return { losses, flat };
      };
      const withGroup = await run(true);
      const reduce = require(path.join(args.dist, 'native.js')).native.distLastReduce();
      const without = await run(false);
      const lossErr = lossRelErr(withGroup.losses, without.losses);
      const stateErr = relErr(withGroup.flat, without.flat);
      const wantDevice = backend === 'nccl' ? `cuda:${index}` : 'cpu';
      return {
        passed: groupDevice === wantDevice && JSON.stringify(sums) === '[1.5,-2,3]' && JSON.stringify(gathered) === '[7]' && lossErr < 1e-6 && stateErr < 1e-6 && reduce.buckets > 1 && reduce.startedInBackward === reduce.buckets,
        backend: distributed.backendName(),
        groupDevice,
        built,
        allreduceIdentity: JSON.stringify(sums),
        allgather: JSON.stringify(gathered),
        steps,
        lossRelErrGroupVsNone: lossErr,
        stateRelErrGroupVsNone: stateErr,
        losses: JSON.stringify(withGroup.losses.map(sig)),
        buckets: reduce.buckets,
        bucketsStartedInBackward: reduce.startedInBackward,
      };
    } finally {
      distributed.destroy();
    }
  });
  if (DEV.startsWith('cuda')) {
    // memoryStats().cuda: the CUDA caching allocator's counters (native/common/cuda_memory.cpp)
    await check('memory/cuda-allocator-counters', async () => {
      const mine = (s) => s.cuda.find((d) => d.device === (DEV === 'cuda' ? 'cuda:0' : DEV));
      Tensor.from([0], undefined, { device: DEV }); // sets the allocator up on the device
      rlora.emptyCache();
      rlora.resetPeakMemory();
      const before = mine(rlora.memoryStats());
      const bytes = 64 * 2 ** 20;
      const t = Tensor.from(new Float32Array(bytes / 4), [bytes / 4], { device: DEV });
      const held = mine(rlora.memoryStats());
      t.dispose();
      const freed = mine(rlora.memoryStats());
      rlora.emptyCache();
      const emptied = mine(rlora.memoryStats());
      const s = rlora.memoryStats();
      const grew = held && before ? held.allocatedBytes - before.allocatedBytes : NaN;
      return {
        passed: s.cudaMemoryStats && grew >= bytes && held.peakAllocatedBytes >= held.allocatedBytes && freed.allocatedBytes <= before.allocatedBytes && emptied.reservedBytes < held.reservedBytes,
        built: s.cudaMemoryStats,
        allocatedGrowthBytes: grew,
        peakAllocatedBytes: held ? held.peakAllocatedBytes : NaN,
        reservedHeldBytes: held ? held.reservedBytes : NaN,
        reservedAfterEmptyCacheBytes: emptied ? emptied.reservedBytes : NaN,
        devices: s.cuda.map((d) => d.device).join(','),
      };
    });
  }
  // the Trainer's device option: 'cuda' and 'cuda:0' name one device (lib/tensor.ts sameDevice)
  if (DEV.startsWith('cuda')) {
    await check('trainer/device-option-cuda-is-cuda:0', async () => {
      const { model, adapter } = tinyRun(DEV);
      const names = DEV === 'cuda' || DEV === 'cuda:0' ? ['cuda', 'cuda:0'] : [DEV];
      const accepted = names.filter((d) => {
        try {
          new Trainer(model, adapter, { device: d, progress: false });
          return true;
        } catch {
          return false;
        }
      });
      const modelDevice = model.device;
      model.dispose();
      return { passed: accepted.length === names.length, modelDevice, accepted: accepted.join(',') };
    });
  }
}

async function main() {
  const t0 = Date.now();
  report.buildInfo = { ...rlora.buildInfo };
  try {
    report.blasInfo = rlora.blasInfo();
  } catch (e) {
    report.blasInfo = `unavailable: ${e.message}`;
  }
  try {
    const { loadReport } = require(path.join(args.dist, 'loader.js'));
    const r = loadReport();
    report.binary = r && r.loaded ? r.loaded.file : null;
  } catch {
    report.binary = null;
  }
  console.error(`gpu-checks: device ${DEV}; rlora ${report.binary ?? '?'} built against libtorch ${report.buildInfo.torchVersion} (${report.buildInfo.torchSource}); CUDA available: ${report.buildInfo.cudaAvailable} (${report.buildInfo.cudaDeviceCount} devices)`);
  if (DEV !== 'cpu') {
    await check('cuda/available', async () => {
      const t = Tensor.from([1, 2, 3], undefined, { device: DEV });
      return { passed: report.buildInfo.cudaAvailable && t.device.startsWith('cuda'), cudaDeviceCount: report.buildInfo.cudaDeviceCount, tensorDevice: t.device };
    });
  }
  await layerChecks();
  await trainerChecks();
  await generateChecks();
  await distributedChecks();
  report.seconds = Number(((Date.now() - t0) / 1000).toFixed(1));
  report.passed = report.checks.every((c) => c.passed);
  writeReport();
  fs.rmSync(tmpRoot, { recursive: true, force: true });
  const failed = report.checks.filter((c) => !c.passed).map((c) => c.name);
  console.error(`gpu-checks: ${report.checks.length - failed.length}/${report.checks.length} passed on ${DEV} in ${report.seconds}s${failed.length ? `; failed: ${failed.join(', ')}` : ''}${args.out ? `; report ${args.out}` : ''}`);
  process.exitCode = report.passed ? 0 : 1;
}

main().catch((e) => {
  console.error(`gpu-checks: ${e && e.stack ? e.stack : e}`);
  report.error = String(e && e.message ? e.message : e);
  writeReport();
  process.exitCode = 2;
});
