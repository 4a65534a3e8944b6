// Logging as report_to does: CSV rows and TensorBoard event files (TFRecord framing with masked
// CRC-32C around hand-encoded Event protos), checked against RFC 3720's CRC-32C test vectors,
// against protobuf bytes written out by hand, and read back by an independent Python reader;
// and a run whose stderr is not a terminal prints step lines and evaluations.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { crc32c, maskedCrc32c } from '../lib/logging/crc32c';
import { scalarEvent, tfRecord, versionEvent } from '../lib/logging/tensorboard';
import { csvField } from '../lib/logging/csv';
import { PYTHON } from './helpers/python';
import { tempFolder } from './helpers/tiny-model';

const tmp = tempFolder('rlora-logging-');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const readEvents = (file: string): { step?: number; file_version?: string; values?: Record<string, number> }[] =>
  JSON.parse(execFileSync(PYTHON, [path.join(__dirname, 'helpers', 'read_tfevents.py'), file], { encoding: 'utf8' }));

describe('CRC-32C', () => {
  it('matches RFC 3720 (B.4) and the check value of "123456789"', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('masks as TensorFlow does: rotated right by 15, plus 0xa282ead8', () => {
    // "123456789": 0xe3069283 rotated right by 15 is 0x2507c60d (bits 15.. down, bits 0..14 up: written out by hand), + 0xa282ead8
    expect(maskedCrc32c(Buffer.from('123456789'))).toBe((0x2507c60d + 0xa282ead8) % 2 ** 32);
  });
});

describe('TensorBoard events', () => {
  it('encodes Event protos byte for byte', () => {
    // wall_time (1, fixed64) 1.5; file_version (3, bytes) "brain.Event:2"
    expect(hex(versionEvent(1.5))).toBe('09' + '000000000000f83f' + '1a0d' + hex(Buffer.from('brain.Event:2')));
    // wall_time 1.5; step (2, varint) 300; summary (5) { value (1) { tag (1) "a", simple_value (2, fixed32) 0.5 } }
    expect(hex(scalarEvent(1.5, 300, { a: 0.5 }))).toBe('09000000000000f83f' + '10ac02' + '2a0a' + '0a08' + '0a0161' + '150000003f');
  });

  it('frames records as TFRecord: length, its masked CRC, the data, its masked CRC', () => {
    const data = Buffer.from('hello');
    const r = Buffer.from(tfRecord(data));
    expect(r.length).toBe(8 + 4 + 5 + 4);
    expect(r.readBigUInt64LE(0)).toBe(5n);
    expect(r.readUInt32LE(8)).toBe(maskedCrc32c(r.subarray(0, 8)));
    expect(r.subarray(12, 17).toString()).toBe('hello');
    expect(r.readUInt32LE(17)).toBe(maskedCrc32c(data));
  });
});

describe('CSV', () => {
  it('quotes a field only where it must', () => {
    expect(csvField('eval/a/loss')).toBe('eval/a/loss');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
  });
});

describe('a run with reportTo csv and tensorboard, stderr not a terminal', () => {
  it('writes metrics.csv and event files that agree with log.jsonl, and prints lines and evaluations', () => {
    const out = path.join(tmp, 'run');
    const script = `
      const r = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
      const { TINY_BYTE_CONFIG } = require(${JSON.stringify(path.join(__dirname, 'helpers', 'tiny-model'))});
      (async () => {
        const tok = new r.ByteTokenizer();
        const rows = ['cat', 'dog', 'owl', 'yak'].map((w, i) => ({ task: i % 2 ? 'up,per' : 'first', prompt: w, response: i % 2 ? w.toUpperCase() : w[0] }));
        const data = r.MultiTaskDataset.fromArray(rows, { tokenizer: tok, maxLength: 16 });
        const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
        const adapter = r.Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], seed: 1 });
        const t = new r.Trainer(model, adapter, { maxSteps: 4, batchSize: 4, evalEvery: 2, loggingSteps: 2, outputDir: ${JSON.stringify(out)}, reportTo: ['csv', 'tensorboard'] });
        await t.fit(data, { evalDataset: data });
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const r = spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', script], { cwd: path.join(__dirname, '..'), encoding: 'utf8', timeout: 120_000 });
    expect(r.status).toBe(0);
    // lines: the first step, every 2nd, the last; each evaluation's table
    expect(r.stderr.split('\n').filter((l) => l.startsWith('step ')).map((l) => l.split(' ')[1])).toEqual(['1/4', '2/4', '4/4']);
    expect(r.stderr).toMatch(/^eval at step 2:\n {2}task\s+loss\s+accuracy\s+count$/m);
    const log = fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const steps = log.filter((l) => l.type === undefined), evals = log.filter((l) => l.type === 'eval');
    // CSV: long form, one row a number
    const csv = fs.readFileSync(path.join(out, 'metrics.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('step,name,value');
    const cell = (step: number, name: string): number => Number(csv.find((l) => l.startsWith(`${step},${name},`))!.split(',').pop());
    for (const s of steps) expect(cell(s.step, 'train/loss')).toBe(s.loss);
    expect(csv.some((l) => l.startsWith('2,"eval/up,per/accuracy",'))).toBe(true);
    // TensorBoard: read back independently; float32 values of the same numbers
    const dir = path.join(out, 'tensorboard');
    const files = fs.readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^events\.out\.tfevents\.\d+\./);
    const events = readEvents(path.join(dir, files[0]));
    expect(events[0].file_version).toBe('brain.Event:2');
    for (const s of steps) {
      const ev = events.find((e) => e.step === s.step && e.values?.['train/loss'] !== undefined)!;
      expect(ev.values!['train/loss']).toBe(Math.fround(s.loss));
      expect(ev.values!['train/learning_rate']).toBe(Math.fround(s.lr));
    }
    for (const e of evals) {
      const ev = events.find((x) => x.step === e.step && x.values?.['eval/loss'] !== undefined)!;
      expect(ev.values!['eval/first/accuracy']).toBe(Math.fround(e.tasks.first.accuracy));
    }
  });

  it('refuses an unknown destination, and reportTo without outputDir', () => {
    const r = require('../lib') as typeof import('../lib');
    const { TINY_BYTE_CONFIG } = require('./helpers/tiny-model') as typeof import('./helpers/tiny-model');
    const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const adapter = r.Adapter.attach(model, { targetModules: ['q_proj'] });
    expect(() => new r.Trainer(model, adapter, { reportTo: ['wandb'] as never, outputDir: tmp })).toThrow('reportTo[0] must be one of "csv", "tensorboard", got "wandb"');
    expect(() => new r.Trainer(model, adapter, { reportTo: ['csv'] })).toThrow('reportTo ["csv"] needs outputDir');
  });
});

// Hooks in the shape of Hugging Face's TrainerCallback; returning {stop: true} ends the fit.
describe('TrainerCallback', () => {
  const r = require('../lib') as typeof import('../lib');
  const { TINY_BYTE_CONFIG } = require('./helpers/tiny-model') as typeof import('./helpers/tiny-model');
  const setup = (outputDir?: string) => {
    const tok = new r.ByteTokenizer();
    const data = r.MultiTaskDataset.fromArray(['cat', 'dog', 'owl', 'yak'].map((w, i) => ({ task: i % 2 ? 'b' : 'a', prompt: w, response: w[0] })), { tokenizer: tok, maxLength: 16 });
    const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const adapter = r.Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], seed: 1 });
    return { data, trainer: new r.Trainer(model, adapter, { maxSteps: 6, batchSize: 4, evalEvery: 2, progress: false, ...(outputDir ? { outputDir, saveEvery: 2 } : {}) }) };
  };

  it('calls every hook in order with the step, and {stop: true} from onStepEnd ends the fit after that step with a checkpoint', async () => {
    const out = path.join(tmp, 'callbacks');
    const { data, trainer } = setup(out);
    const calls: string[] = [];
    const cb: import('../lib').TrainerCallback = {
      onTrainBegin: (s) => void calls.push(`begin ${s.step}/${s.totalSteps}`),
      onStepEnd: (rec) => {
        calls.push(`step ${rec.step}`);
        return rec.step === 3 ? { stop: true } : undefined;
      },
      onLog: (step, scalars) => void calls.push(`log ${step} ${'train/loss' in scalars ? 'train' : 'eval'}`),
      onEvaluate: (rec) => void calls.push(`eval ${rec.step}`),
      onSave: (dir) => void calls.push(`save ${path.basename(dir)}`),
      onTrainEnd: (h) => void calls.push(`end ${h.stopped}`),
    };
    const h = await trainer.fit(data, { evalDataset: data, callbacks: [cb] });
    expect(h.stopped).toBe('callback');
    expect(h.steps.map((s) => s.step)).toEqual([1, 2, 3]);
    expect(calls).toEqual([
      'begin 0/6', 'step 1', 'log 1 train', 'step 2', 'log 2 train', 'eval 2', 'log 2 eval', 'save checkpoint-2', 'step 3', 'log 3 train', 'save checkpoint-3', 'end callback',
    ]);
    expect(fs.existsSync(path.join(out, 'checkpoint-3', 'trainer_state.json'))).toBe(true);
  });

  it('an async hook is awaited, and {stop: true} from onEvaluate stops too; a misspelt hook is refused', async () => {
    const { data, trainer } = setup();
    let waited = 0;
    const h = await trainer.fit(data, {
      evalDataset: data,
      callbacks: [{ onStepEnd: async () => { await new Promise((res) => setTimeout(res, 5)); waited++; } }, { onEvaluate: (rec) => (rec.step === 4 ? { stop: true } : undefined) }],
    });
    expect(h.stopped).toBe('callback');
    expect(h.steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    expect(waited).toBe(4);
    const again = setup();
    await expect(again.trainer.fit(again.data, { callbacks: [{ onStepend: () => undefined } as never] })).rejects.toThrow('fit: callbacks[0]: unknown option "onStepend" (did you mean "onStepEnd"?)');
  });
});

// stopOnSigint: Ctrl-C in a script finishes the step, writes a checkpoint and returns (a script
// used to die without one).
describe('fit with stopOnSigint', () => {
  it.each([
    ['SIGINT', [0]],
    // npx tsx passes one Ctrl-C on as a second signal: the fit used to quit without a checkpoint
    ['two SIGINTs 100 ms apart (one Ctrl-C under npx tsx)', [0, 100]],
  ])('%s finishes the current step, checkpoints, and fit returns stopped "aborted"', async (_what, delays) => {
    const out = path.join(tmp, `sigint-${delays.length}`);
    const script = `
      const r = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
      const { TINY_BYTE_CONFIG } = require(${JSON.stringify(path.join(__dirname, 'helpers', 'tiny-model'))});
      (async () => {
        const tok = new r.ByteTokenizer();
        const data = r.MultiTaskDataset.fromArray(['cat', 'dog'].map((w) => ({ task: 'a', prompt: w, response: w })), { tokenizer: tok, maxLength: 16 });
        const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
        const adapter = r.Adapter.attach(model, { targetModules: ['q_proj'] });
        const t = new r.Trainer(model, adapter, { maxSteps: 100000, batchSize: 2, progress: false, outputDir: ${JSON.stringify(out)} });
        const h = await t.fit(data, { stopOnSigint: true, onStep: (rec) => { if (rec.step === 3) console.log('ready'); } });
        console.log(JSON.stringify({ stopped: h.stopped, last: h.steps[h.steps.length - 1].step, checkpoint: h.lastCheckpoint }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const { spawn } = require('child_process') as typeof import('child_process');
    const child = spawn(process.execPath, ['-r', 'tsx/cjs', '-e', script], { cwd: path.join(__dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('ready')) resolve();
    }));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    for (const d of delays) setTimeout(() => child.kill('SIGINT'), d);
    const code = await exited;
    expect({ code, stderr: stderr.replace(/\nrlora: Ctrl-C: stopping after step \d+ and writing a checkpoint \(Ctrl-C again to quit at once\)\n/, '') }).toEqual({ code: 0, stderr: '' });
    const res = JSON.parse(stdout.trim().split('\n').pop()!);
    expect(res.stopped).toBe('aborted');
    expect(res.last).toBeGreaterThanOrEqual(3);
    expect(res.checkpoint).toBe(path.join(out, `checkpoint-${res.last}`));
    expect(fs.existsSync(path.join(res.checkpoint, 'trainer_state.json'))).toBe(true);
  });

  it('refuses an unknown fit option', async () => {
    const r = require('../lib') as typeof import('../lib');
    const { TINY_BYTE_CONFIG } = require('./helpers/tiny-model') as typeof import('./helpers/tiny-model');
    const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const t = new r.Trainer(model, r.Adapter.attach(model, { targetModules: ['q_proj'] }), { maxSteps: 1, progress: false });
    const data = r.MultiTaskDataset.fromArray([{ task: 'a', prompt: 'x', response: 'y' }], { tokenizer: new r.ByteTokenizer(), maxLength: 8 });
    await expect(t.fit(data, { evalDatset: data } as never)).rejects.toThrow('fit: unknown option "evalDatset" (did you mean "evalDataset"?)');
  });
});

// An evaluation shows its progress on a terminal (a large set used to mean silence for its whole
// length): a line "eval <done>/<total> examples |...| ETA", erased when done; nothing more off a
// terminal. The child's stderr is a pipe told it is a terminal (isTTY), so what a terminal would
// receive is what the pipe carries.
describe('evaluation progress', () => {
  const run = (tty: boolean, fit: boolean): { status: number | null; stderr: string } => {
    const script = `
      ${tty ? "Object.defineProperty(process.stderr, 'isTTY', { value: true }); Object.defineProperty(process.stderr, 'columns', { value: 80 });" : ''}
      const r = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
      const { TINY_BYTE_CONFIG } = require(${JSON.stringify(path.join(__dirname, 'helpers', 'tiny-model'))});
      (async () => {
        const rows = ['cat', 'dog', 'owl', 'yak', 'emu'].map((w) => ({ task: 'a', prompt: w, response: w.toUpperCase() }));
        const data = r.MultiTaskDataset.fromArray(rows, { tokenizer: new r.ByteTokenizer(), maxLength: 16 });
        const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
        const t = new r.Trainer(model, r.Adapter.attach(model, { targetModules: ['q_proj'] }), { maxSteps: 2, batchSize: 2, evalBatchSize: 2 });
        if (${fit}) await t.fit(data, { evalDataset: data });
        else await t.evaluate(data);
      })().catch((e) => { console.error(e); process.exit(1); });`;
    return spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', script], { cwd: path.join(__dirname, '..'), encoding: 'utf8', timeout: 120_000 });
  };

  it('Trainer.evaluate: a line on a terminal, erased at the end; nothing off one', () => {
    const onTty = run(true, false);
    expect(onTty.status).toBe(0);
    // batches of 2 of 5 examples: the first batch's line (the line is redrawn at most every 100 ms) and the last
    const drawn = onTty.stderr.split('\r\x1b[K').filter(Boolean);
    expect(drawn[0]).toMatch(/^eval 2\/5 examples \|={8}-{11}\| ETA \d+s$/); // 80 columns: a bar of 80 - 60 - 1 = 19, round(19 * 2 / 5) = 8 filled
    expect(drawn[drawn.length - 1]).toBe('eval 5/5 examples |===================| ETA 0s');
    expect(onTty.stderr.endsWith('\r\x1b[K')).toBe(true); // erased: the next output starts on a clean line
    const offTty = run(false, false);
    expect(offTty).toMatchObject({ status: 0, stderr: '' });
  });

  it('during fit on a terminal: the evaluation line in place of the bar, then the table above the bar', () => {
    const r = run(true, true);
    expect(r.status).toBe(0);
    const i = r.stderr.indexOf('eval 5/5 examples |');
    expect(i).toBeGreaterThan(r.stderr.indexOf('step 2/2 |'));
    expect(r.stderr.indexOf('\r\x1b[Keval at step 2:\n  task')).toBeGreaterThan(i);
  });
});
