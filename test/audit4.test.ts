// The fourth adversarial audit (issue 33): each case here lost data, hung, answered wrongly or
// printed an unclear error before its fix, and is now refused with an error that names what is
// wrong (or handled).
import { execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as url from 'url';

import { Adapter, ByteTokenizer, Model, MultiTaskDataset, sweep, Tokenizer, Trainer } from '../lib';
import { evalText, stepLine } from '../lib/logging/text';
import { progressText } from '../lib/progress';
import { resolveSweep } from '../lib/sweep/config';
import { printable, shellQuote } from '../lib/util/printable';
import { byteBpe } from './helpers/byte-bpe';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-audit4-');
const tok = new ByteTokenizer();
const rows = (tasks: string[], n = 4): { task: string; prompt: string; response: string }[] => tasks.flatMap((t) => Array.from({ length: n }, (_, i) => ({ task: t, prompt: `p${i}`, response: `r${i}` })));

/** A folder holding one file, which a save through a link would have deleted. */
function victim(name: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'precious.txt'), 'keep me');
  return dir;
}

describe('data loss', () => {
  it('a link planted at checkpoint-<step> while a run trains is refused, naming it; the folder it names is untouched', async () => {
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj'] });
    const ds = MultiTaskDataset.fromArray(rows(['a']), { tokenizer: tok, maxLength: 16 });
    const out = path.join(tmp, 'run-link');
    const target = victim('victim-1');
    const link = path.join(out, 'checkpoint-1');
    const t = new Trainer(m, a, { maxSteps: 2, saveEvery: 1, batchSize: 2, outputDir: out, progress: false });
    await expect(t.fit(ds, { onStep: (r) => r.step === 1 && fs.symlinkSync(target, link) })).rejects.toThrow(`${link} is a link (to ${target}); rlora writes this name itself and never follows a link there: remove the link`);
    expect(fs.readdirSync(target)).toEqual(['precious.txt']);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
  });
});

describe('one run at a time in an outputDir (rlora.lock)', () => {
  const trainer = (out: string, seed: number): Trainer => {
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj'] });
    return new Trainer(m, a, { maxSteps: 3, batchSize: 2, outputDir: out, progress: false });
  };
  const ds = MultiTaskDataset.fromArray(rows(['a']), { tokenizer: tok, maxLength: 16 });

  it('two Trainers of one process: the second is refused, naming the first; the lock goes when the run ends', async () => {
    const out = path.join(tmp, 'shared-run');
    const results = await Promise.allSettled([trainer(out, 1).fit(ds), trainer(out, 2).fit(ds)]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(failed).toHaveLength(1);
    expect(failed[0].reason.message).toBe(
      `outputDir ${out} is in use by another run (a Trainer of this process; ${path.join(out, 'rlora.lock')}): two runs in one outputDir mix their logs and checkpoints: wait for it to end or choose another outputDir`,
    );
    expect(fs.readdirSync(out).sort()).toEqual(['checkpoint-3', 'log.jsonl']);
    expect(fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n')).toHaveLength(3); // one run's steps, not two
  });

  it('a lock of a process that runs is refused, naming its pid; a dead process\'s is taken over', async () => {
    const out = path.join(tmp, 'locked-run');
    fs.mkdirSync(out);
    const lock = path.join(out, 'rlora.lock');
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      fs.writeFileSync(lock, JSON.stringify({ pid: other.pid, hostname: os.hostname(), started: '2026-01-02T03:04:05.000Z' }));
      await expect(trainer(out, 1).fit(ds)).rejects.toThrow(`outputDir ${out} is in use by another run (process ${other.pid}, started 2026-01-02T03:04:05.000Z; ${lock})`);
    } finally {
      other.kill();
    }
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    fs.writeFileSync(lock, JSON.stringify({ pid: Number(dead.stdout.trim()), hostname: os.hostname(), started: '2026-01-02T03:04:05.000Z' }));
    const h = await trainer(out, 1).fit(ds);
    expect(h.steps).toHaveLength(3);
    expect(fs.existsSync(lock)).toBe(false);
  });
});

describe('rlora merge --out', () => {
  jest.setTimeout(60_000);
  const CLI = path.join(__dirname, '..', 'lib', 'cli.ts');
  // tsx by its absolute address: the command runs in a folder outside the repository
  const tsx = url.pathToFileURL(require.resolve('tsx')).href;
  const rlora = (args: string[], cwd?: string) => spawnSync(process.execPath, ['--import', tsx, CLI, ...args], { encoding: 'utf8', cwd });

  it('a link to the base model\'s folder is the base\'s folder: refused with or without --overwrite, never offering it; "." is refused in one line', async () => {
    const base = path.join(tmp, 'merge-base'), adapterDir = path.join(tmp, 'merge-lora'), link = path.join(tmp, 'merge-link');
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 2 });
    model.save(base);
    Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['q_proj'], init: { b: 'unit', offset: false }, seed: 5 }).save(adapterDir);
    fs.symlinkSync(base, link);
    const weights = fs.readFileSync(path.join(base, 'model.safetensors'));
    for (const extra of [[], ['--overwrite']]) {
      const r = rlora(['merge', '--model', base, '--adapter', adapterDir, '--out', link, ...extra]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(`--out ${link} is the base model's folder (${base}): write the merged model elsewhere`);
      expect(r.stderr).not.toContain('--overwrite');
    }
    expect(fs.readFileSync(path.join(base, 'model.safetensors')).equals(weights)).toBe(true);
    // the current folder ("EBUSY rename '.'")
    const here = path.join(tmp, 'merge-here');
    fs.mkdirSync(here);
    const dot = rlora(['merge', '--model', base, '--adapter', adapterDir, '--out', '.'], here);
    expect(dot.status).not.toBe(0);
    expect(dot.stderr.trim()).toBe('rlora merge: --out . is the current folder or holds it: rlora replaces the whole --out folder, so name a folder of its own (e.g. --out ./merged)');
  });
});

describe('special files are refused unread', () => {
  jest.setTimeout(60_000);
  /** Runs `code` (TypeScript, with `lib` the library) in a child that is killed after 20 s: a read that blocks cannot hang the suite. */
  const child = (code: string) =>
    spawnSync(process.execPath, ['--import', url.pathToFileURL(require.resolve('tsx')).href, '-e', `const lib = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});\n(async () => {${code}})().catch((e) => { console.log(e.message); });`], {
      encoding: 'utf8',
      timeout: 20_000,
    });

  it('model.safetensors or adapter_model.safetensors that is a link to a FIFO (open() blocked for ever)', async () => {
    if (process.platform !== 'linux') return;
    const fifo = path.join(tmp, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const modelDir = path.join(tmp, 'fifo-model');
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    model.save(modelDir);
    const adapterDir = path.join(tmp, 'fifo-adapter');
    Adapter.attach(model, { rank: 2, heads: 2, targetModules: ['q_proj'] }).save(adapterDir);
    const goodModel = path.join(tmp, 'good-model');
    model.save(goodModel);
    for (const f of [path.join(modelDir, 'model.safetensors'), path.join(adapterDir, 'adapter_model.safetensors')]) {
      fs.rmSync(f);
      fs.symlinkSync(fifo, f);
    }
    const r = child(`
      await lib.Model.fromPretrained(${JSON.stringify(modelDir)}).catch((e) => console.log(e.message));
      const m = await lib.Model.fromPretrained(${JSON.stringify(goodModel)});
      await lib.Adapter.load(m, ${JSON.stringify(adapterDir)}).catch((e) => console.log(e.message));
      try { lib.loadSafetensors(${JSON.stringify(fifo)}); } catch (e) { console.log(e.message); }`);
    expect(r.signal).toBeNull(); // not killed after 20 s
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toContain(`safetensors file ${path.join(modelDir, 'model.safetensors')}: not a regular file (a FIFO)`);
    expect(lines[1]).toContain(`safetensors file ${path.join(adapterDir, 'adapter_model.safetensors')}: not a regular file (a FIFO)`);
    expect(lines[2]).toBe(`safetensors file ${fifo}: not a regular file (a FIFO)`);
  });
});

describe('sweeps', () => {
  jest.setTimeout(120_000);
  const baseDir = path.join(tmp, 'sweep-base');
  const examples = rows(['a', 'b'], 3);
  const definition = (extra: object = {}) => ({
    model: baseDir,
    data: { train: examples, validation: examples, maxLength: 16 },
    adapter: { targetModules: ['q_proj'], rank: 2, heads: 2 },
    variants: [{ name: 'v' }],
    learningRates: [1e-3],
    seeds: 1,
    steps: 1,
    batchSize: 2,
    workers: 1,
    figure: false,
    log: null,
    outputDir: path.join(tmp, 'sweep-out'),
    ...extra,
  });
  beforeAll(() => {
    Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }).save(baseDir);
    const { json, config } = byteBpe();
    fs.writeFileSync(path.join(baseDir, 'tokenizer.json'), JSON.stringify(json));
    fs.writeFileSync(path.join(baseDir, 'tokenizer_config.json'), JSON.stringify(config));
  });

  it('seeds 1e8 (3.8 GB before any job) and grids over 10,000 jobs are refused with the count', () => {
    expect(() => resolveSweep(definition({ seeds: 1e8 }))).toThrow('sweep: seeds is 100000000 seeds, more than the 10,000 jobs a sweep may hold');
    const rates = Array.from({ length: 100 }, (_, i) => (i + 1) * 1e-4);
    expect(() => resolveSweep(definition({ seeds: 100, learningRates: rates, variants: [{ name: 'a' }, { name: 'b' }] }))).toThrow(
      'sweep: the sweep holds 20,200 jobs (2 variants, 200 learning rates in all, 100 seeds), more than the 10,000 a sweep may hold: fewer seeds, rates or variants',
    );
  });

  it('data.train = /dev/zero is refused unread (it was read without end while hashing)', async () => {
    if (process.platform !== 'linux') return;
    await expect(sweep(definition({ data: { train: '/dev/zero', validation: examples } }) as never)).rejects.toThrow('sweep: data.train: /dev/zero is not a regular file (a device); a JSON lines file was expected');
  });

  it('a rerun after tokenizer.json or the chat template changed runs the jobs again (it reused the old results)', async () => {
    const first = await sweep(definition() as never);
    expect(first.jobs).toMatchObject({ run: 1, reused: 0 });
    expect((await sweep(definition() as never)).jobs).toMatchObject({ run: 0, reused: 1 });
    const { json, config } = byteBpe();
    fs.writeFileSync(path.join(baseDir, 'tokenizer.json'), JSON.stringify(json, null, 1));
    expect((await sweep(definition() as never)).jobs).toMatchObject({ run: 1, reused: 0 });
    fs.writeFileSync(path.join(baseDir, 'chat_template.jinja'), '{{ messages[0].content }}');
    expect((await sweep(definition() as never)).jobs).toMatchObject({ run: 1, reused: 0 });
    fs.writeFileSync(path.join(baseDir, 'tokenizer_config.json'), JSON.stringify({ ...config, model_max_length: 99 }));
    expect((await sweep(definition() as never)).jobs).toMatchObject({ run: 1, reused: 0 });
  });
});

describe('JSON lines', () => {
  it('a line that is not UTF-8 (Latin-1 "café") is refused, naming the line and byte (it became U+FFFD)', async () => {
    const file = path.join(tmp, 'latin1.jsonl');
    fs.writeFileSync(file, Buffer.concat([Buffer.from('{"task":"a","prompt":"p","response":"r"}\n{"task":"a","prompt":"caf'), Buffer.from([0xe9]), Buffer.from('","response":"r"}\n')]));
    await expect(MultiTaskDataset.fromJsonl(file, { tokenizer: tok })).rejects.toThrow(
      `${file}:2: the line is not valid UTF-8 (at byte 26 of the line; a file in Latin-1 or another encoding must be converted to UTF-8 first)`,
    );
    // the same text in UTF-8 reads
    fs.writeFileSync(file, '{"task":"a","prompt":"café","response":"r"}\n');
    expect((await MultiTaskDataset.fromJsonl(file, { tokenizer: tok })).size).toBe(1);
  });
});

describe('what is printed: control characters escaped, commands quoted', () => {
  jest.setTimeout(60_000);
  const CLI = path.join(__dirname, '..', 'lib', 'cli.ts');
  const rlora = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', cwd: path.join(__dirname, '..') });
  /** A task name that retitles the terminal and paints it red, and one that reverses what follows. */
  const EVIL = 'a\x1b]0;pwned\x07\x1b[31mb\u202ec';
  const SHOWN = 'a\\x1b]0;pwned\\x07\\x1b[31mb\\u202ec';

  it('the step line, the progress line, evaluation tables and metric lines escape them', () => {
    expect(stepLine({ step: 1, loss: 1, taskLoss: { [EVIL]: 1 }, lr: 1e-3, gradNorm: 1, tokensPerSecond: 10 }, 5)).toContain(`(${SHOWN} 1.0000)`);
    expect(progressText(1, 5, '1.0\x1b[2J', '10', 1, 10)).toBe('step 1/5 |==--------| loss 1.0\\x1b[2J | 10 tok/s | ETA 1s');
    const text = evalText({ [EVIL]: { loss: 1, accuracy: 0.5, count: 2, metrics: { ['m\x1b']: 1 } } });
    expect(text).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]/);
    expect(text.split('\n')[1].startsWith(SHOWN)).toBe(true);
    expect(text.split('\n')[2]).toBe(`${SHOWN}: m\\x1b 1.0000`);
    expect(printable('line one\nline two\tend')).toBe('line one\nline two\tend'); // what lays text out stays
  });

  it('CLI errors escape them (a path holding an escape sequence)', () => {
    const r = rlora(['plot', path.join(tmp, 'no\x1b[2Jsuch.jsonl')]);
    expect(r.status).toBe(1);
    expect(r.stderr).not.toContain('\x1b');
    expect(r.stderr).toContain('no\\x1b[2Jsuch.jsonl');
  });

  it('rlora plot: task names with control characters give a well-formed SVG', () => {
    const log = path.join(tmp, 'plot-evil', 'log.jsonl');
    fs.mkdirSync(path.dirname(log), { recursive: true });
    const lines = [1, 2, 3].map((step) => JSON.stringify({ step, epoch: 0, loss: 3 / step, taskLoss: { [EVIL]: 3 / step, plain: 2 / step }, lr: 1e-3, gradNorm: 1, tokens: 10, tokensPerSecond: 100 }));
    fs.writeFileSync(log, lines.join('\n') + '\n');
    const svg = path.join(tmp, 'plot-evil', 'loss.svg');
    const r = rlora(['plot', log, '--out', svg]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // an XML parser of its own (Python's) reads it
    const parsed = spawnSync('/usr/bin/python3', ['-c', 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); print(len(d.getElementsByTagName("text")))', svg], { encoding: 'utf8' });
    expect(parsed.stderr).toBe('');
    expect(Number(parsed.stdout)).toBeGreaterThan(3);
    expect(fs.readFileSync(svg, 'utf8')).toContain('a\\x1b]0;pwned\\x07');
  });

  it('the printed resume command is one shell word per argument ($(...) in a path ran when pasted)', () => {
    const words = ['runs/a/checkpoint-4', "/tmp/$(touch pwned)/it's here/run.json", 'a b', '', '-x', '\\'];
    const quoted = words.map(shellQuote);
    expect(quoted[0]).toBe('runs/a/checkpoint-4');
    // a shell reads each back as the one word it was
    const r = spawnSync('/bin/sh', ['-c', `for w in ${quoted.join(' ')}; do printf '%s\\0' "$w"; done`], { encoding: 'utf8', cwd: tmp });
    expect(r.stdout.split('\0').slice(0, -1)).toEqual(words);
    expect(fs.existsSync(path.join(tmp, 'pwned'))).toBe(false);
  });
});

describe('unclear errors, now one line naming the value', () => {
  jest.setTimeout(60_000);
  it('WORLD_SIZE=0 or abc: rlora train names the variable (it printed a stack trace)', () => {
    const run = path.join(tmp, 'world-run.json');
    fs.writeFileSync(run, JSON.stringify({ model: { config: {} }, adapter: { targetModules: ['q_proj'] }, data: { train: 'x.jsonl' }, outputDir: path.join(tmp, 'world-out') }));
    for (const v of ['0', 'abc']) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), 'train', '--config', run], {
        encoding: 'utf8',
        cwd: path.join(__dirname, '..'),
        env: { ...process.env, WORLD_SIZE: v },
      });
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(`rlora train: environment variable WORLD_SIZE must be an integer >= 1, got "${v}"\n`);
    }
  });
});

// Items 4 and 16: a tokenizer.json whose Replace steps double the text 30 times ran out of V8's
// heap after 2 minutes; one nested 10,000 deep failed with a bare "Maximum call stack size exceeded".
describe('tokenizer.json that would exhaust memory or the stack', () => {
  const replace = (from: string, to: string) => ({ type: 'Replace', pattern: { String: from }, content: to });
  it('Replace steps that grow a text beyond 65536 times are refused at load, naming the step kind; real ones load', () => {
    const { json, config } = byteBpe();
    const doubling = { ...json, normalizer: { type: 'Sequence', normalizers: Array.from({ length: 30 }, () => replace('a', 'aa')) } };
    expect(() => Tokenizer.fromJSON(doubling, config)).toThrow(/^Tokenizer\.fromJSON is not a Hugging Face tokenizer\.json: its normalizer's Replace steps can make a text up to 1\.1e\+9 times longer .* encoding would exhaust memory$/);
    // SentencePiece-style: a space to one character, and back in the decoder
    const real = { ...json, normalizer: { type: 'Sequence', normalizers: [replace(' ', '\u2581'), { type: 'Prepend', prepend: '\u2581' }] }, decoder: { type: 'Sequence', decoders: [replace('\u2581', ' ')] } };
    expect(Tokenizer.fromJSON(real, config).encode('a b').length).toBeGreaterThan(0);
  });

  it('nesting deeper than 100 levels is refused in one line naming the file and where', () => {
    const { json, config } = byteBpe();
    // written as text: JSON.stringify itself overflows on such a value
    const deep = '{"type":"Sequence","normalizers":['.repeat(10_000) + JSON.stringify(replace(' ', ' ')) + ']}'.repeat(10_000);
    const text = JSON.stringify(json).replace(/\}$/, `,"normalizer":${deep}}`); // the last key of a name wins
    const dir = path.join(tmp, 'deep-tokenizer');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), text);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    expect(() => Tokenizer.fromFile(dir)).toThrow(`${path.join(dir, 'tokenizer.json')} nests more than 100 levels deep (at normalizer.normalizers[0].normalizers[0]`);
    expect(() => Tokenizer.fromJSON(text, config)).toThrow('Tokenizer.fromJSON nests more than 100 levels deep');
  });
});

// Item 25: indent(5e8) in a chat template: one built-in call the time budget could not stop (5.9 s against 1 s).
describe('a chat template asking for a huge indent', () => {
  it('is refused before it runs; small widths render', () => {
    const tmpl = (w: string) => `{% for m in messages %}{{ m.content | indent(${w}) }}{% endfor %}`;
    for (const w of ['500000000', '50000 * 10000', 'messages | length']) {
      const { json, config } = byteBpe(tmpl(w));
      expect(() => Tokenizer.fromJSON(json, config).applyChatTemplate([{ role: 'user', content: 'a\nb' }])).toThrow("the chat template's indent(...) takes a width that is not a number up to 1000");
    }
    const { json, config } = byteBpe(tmpl('2'));
    expect(Tokenizer.fromJSON(json, config).applyChatTemplate([{ role: 'user', content: 'a\nb' }])).toBe('a\n  b');
  });
});

// Items 8 and 23: under an address-space limit (ulimit -v, prlimit --as) loading advised
// `npx rlora build` and then aborted inside libtorch, and an out-of-memory error could leave the next
// call spinning inside OpenBLAS: the limit is named at load.
describe('an address-space limit', () => {
  const prlimit = ['/usr/bin/prlimit', '/bin/prlimit'].find((f) => fs.existsSync(f));
  (prlimit ? it : it.skip)('is named: the load fails saying so, or loads with a warning naming it', () => {
    for (const mb of [2000, 6000]) {
      const r = spawnSync(prlimit!, [`--as=${mb * 2 ** 20}`, process.execPath, '-r', 'tsx/cjs', '-e', "require('./lib'); console.log('loaded')"], { cwd: path.join(__dirname, '..'), encoding: 'utf8', timeout: 60_000, env: { ...process.env, RLORA_QUIET_LIMITS: '' } });
      if (r.stdout.includes('loaded')) {
        expect(r.stderr).toContain(`rlora: this process may map at most ${mb} MB (an address-space limit: ulimit -v or prlimit --as)`);
      } else {
        expect(r.stderr).toContain(`rlora: libtorch could not be loaded: this process may map at most ${mb} MB (an address-space limit`);
        expect(r.stderr).not.toContain('npx rlora build');
      }
    }
    // without a limit: nothing said
    const free = spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', "require('./lib'); console.log('loaded')"], { cwd: path.join(__dirname, '..'), encoding: 'utf8', timeout: 60_000 });
    expect(free.stderr).not.toContain('address-space limit');
  });

  // The process loads without a limit, then limits itself to what it has mapped plus `room`, runs
  // a generate too large for that, then a small one. With 1,376 MB, OpenBLAS spun in the large
  // call's products before; with 352 MB (a 2 GB limit here), in the small call after the error.
  const underLimit = (room: number, rows: number) => {
    const child = `
      const { execFileSync } = require('child_process');
      const fs = require('fs');
      const { Model } = require('./lib');
      const mapped = () => Number(/VmSize:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
      (async () => {
        const m = await Model.fromPretrained('examples/demo/base');
        await m.generate([[97, 98]], { maxNewTokens: 2 });
        await new Promise((r) => setTimeout(r, 1000)); // tsx instantiates its WebAssembly lexer meanwhile (it cannot under the limit)
        execFileSync(${JSON.stringify(prlimit)}, ['--pid', String(process.pid), '--as=' + (mapped() + ${room} * 2 ** 20)]);
        const big = Array.from({ length: ${rows} }, () => Array.from({ length: 400 }, (_, i) => 97 + (i % 26)));
        try { await m.generate(big, { maxNewTokens: 50 }); console.log('no error'); } catch (e) { console.log('large: ' + e.message); }
        try { const out = await m.generate([[97, 98, 99]], { maxNewTokens: 5 }); console.log('small: ' + out[0].length + ' tokens'); } catch (e) { console.log('small: ' + e.message); }
      })();`;
    return spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', child], { cwd: path.join(__dirname, '..'), encoding: 'utf8', timeout: 90_000, env: { ...process.env, RLORA_QUIET_LIMITS: '1' } });
  };
  const limitMessage = /this process may map at most \d+ MB \(an address-space limit: ulimit -v or prlimit --as\), has mapped \d+ MB and needs \d+ MB more \(OpenBLAS hangs when it cannot map its 128 MB buffers, so rlora keeps 512 MB of the limit free for them\): use smaller batches, or raise or remove the limit$/m;
  (prlimit ? it : it.skip)('an out-of-memory error leaves no hang: the large call fails naming the limit, a small one after it runs or fails the same way', () => {
    const roomy = underLimit(1376, 1024);
    expect([roomy.signal, roomy.stderr]).toEqual([null, '']); // before: killed by the timeout
    expect(roomy.stdout).toMatch(/^large: rlora: out of CPU memory allocating \d+ bytes: /m);
    expect(roomy.stdout).toMatch(limitMessage);
    expect(roomy.stdout).toContain('small: 8 tokens');
    const tight = underLimit(352, 256);
    expect([tight.signal, tight.stderr]).toEqual([null, '']); // before: killed by the timeout
    expect(tight.stdout).toMatch(/^large: rlora: out of CPU memory allocating \d+ bytes: /m);
    expect(tight.stdout).toMatch(/^small: (8 tokens|rlora: out of CPU memory before a job: this process may map)/m);
  }, 200_000);
});

// A new user's friction: a wrong data path was reported only after the model had loaded.
describe('data paths are checked before anything loads', () => {
  it('rlora train and rlora eval name the missing file first (the model and adapter named here do not exist either)', () => {
    const run = path.join(tmp, 'data-first.json');
    fs.writeFileSync(run, JSON.stringify({ model: 'no-such-model', adapter: { targetModules: ['q_proj'] }, data: { train: 'missing.jsonl' }, outputDir: path.join(tmp, 'data-first-out') }));
    const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), ...args], { encoding: 'utf8', cwd: path.join(__dirname, '..') });
    const t = cli(['train', '--config', run]);
    expect([t.status, t.stderr]).toEqual([1, `rlora train: ${run}: data.train: file not found: ${path.join(tmp, 'missing.jsonl')}\n`]);
    const e = cli(['eval', '--adapter', path.join(tmp, 'no-such-adapter'), '--data', path.join(tmp, 'missing.jsonl')]);
    expect([e.status, e.stderr]).toEqual([1, `rlora eval: --data: file not found: ${path.join(tmp, 'missing.jsonl')}\n`]);
    const d = cli(['eval', '--adapter', path.join(tmp, 'no-such-adapter'), '--data', tmp]);
    expect(d.stderr).toBe(`rlora eval: --data: ${tmp} is a folder, not a JSON lines file\n`);
  });
});

// Item 19: a learning rate beyond float32 failed inside libtorch ("cannot be converted to type float").
describe('float32 bounds of the optimizer options', () => {
  it('learningRate 1e39 is refused naming the key and the float32 bound', () => {
    const r = require('../lib') as typeof import('../lib');
    const { TINY_BYTE_CONFIG } = require('./helpers/tiny-model') as typeof import('./helpers/tiny-model');
    const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const adapter = r.Adapter.attach(model, { targetModules: ['q_proj'] });
    expect(() => new r.Trainer(model, adapter, { learningRate: 1e39 })).toThrow(/learningRate must be a finite number > 0 and <= 3\.4028234663852886e\+38, got 1e\+39/);
    expect(() => new r.Trainer(model, adapter, { weightDecay: 1e39 })).toThrow(/weightDecay must be .*<= 3\.4028234663852886e\+38/);
    expect(() => new r.Trainer(model, adapter, { learningRate: 3e38, progress: false })).not.toThrow();
  });
});

// Item 24: Tensor.from over a view of a SharedArrayBuffer failed with a bare "Invalid argument".
describe('Tensor.from over shared memory', () => {
  it('copies a SharedArrayBuffer view', () => {
    const r = require('../lib') as typeof import('../lib');
    const shared = new Float32Array(new SharedArrayBuffer(4 * 6));
    shared.set([1, 2, 3, 4, 5, 6]);
    const t = r.Tensor.from(shared, [2, 3]);
    shared[0] = 100; // the tensor holds its own copy
    expect(Array.from(t.data() as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
    const ints = new Int32Array(new SharedArrayBuffer(8));
    ints.set([7, 8]);
    expect(Array.from(r.Tensor.from(ints, [2]).data() as Int32Array)).toEqual([7, 8]);
  });
});
