// Multi-task data: encoding (loss on response tokens only, templates, truncation), JSON lines
// reading, and the batch sampler (mixing ratios, epochs, determinism, resume, length grouping).
// ByteTokenizer ids are UTF-8 bytes, bos 256, eos 257, pad 258: expected ids are worked out by hand.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Batch, BatchSampler, ByteTokenizer, DEFAULT_TEMPLATE, Example, MultiTaskDataset, promptBatch, SamplerOptions } from '../lib';
import { IGNORE_INDEX } from '../lib/data';
import { native } from '../lib/native';

const BOS = 256, EOS = 257, PAD = 258;
const tokenizer = new ByteTokenizer();
/** Prompt and response joined as they are: the encoding tests below count tokens by hand without a separator. */
const PLAIN = '{prompt}{response}';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-data-test-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function writeFile(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** `counts[task]` examples per task, prompt/response of varied lengths (deterministic). */
function makeExamples(counts: Record<string, number>): Example[] {
  const out: Example[] = [];
  for (const [task, n] of Object.entries(counts)) {
    for (let i = 0; i < n; i++) out.push({ task, prompt: `${task} ${i} `.padEnd(5 + ((i * 7) % 23), 'p'), response: 'r'.repeat(1 + ((i * 5) % 11)) });
  }
  return out;
}

function take(sampler: BatchSampler, n: number): Batch[] {
  return Array.from({ length: n }, () => sampler.next());
}

test('the labels datasets ignore are the ones the native loss ignores', () => {
  expect(IGNORE_INDEX).toBe(-100);
  expect(native.ignoreLabel).toBe(IGNORE_INDEX);
});

describe('MultiTaskDataset encoding', () => {
  it('puts bos + prompt + response + eos, and labels only response and eos', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 't', prompt: 'ab', response: 'c' }], { tokenizer, template: PLAIN });
    const e = ds.get(0);
    // 'a' 97, 'b' 98, 'c' 99
    expect(e.inputIds).toEqual([BOS, 97, 98, 99, EOS]);
    expect(e.promptLength).toBe(3);
    expect(e).toMatchObject({ index: 0, task: 't', prompt: 'ab', response: 'c', truncated: false });
    const b = new BatchSampler(ds, { batchSize: 1 }, PAD).next();
    expect(b.inputIds).toEqual([[BOS, 97, 98, 99, EOS]]);
    expect(b.labels).toEqual([[-100, -100, -100, 99, EOS]]);
    expect(b.attentionMask).toEqual([[1, 1, 1, 1, 1]]);
    expect(b.lossTokens).toBe(2);
    expect(b.tasks).toEqual(['t']);
    expect(b.indices).toEqual([0]);
  });

  it('by default puts a newline between prompt and response (DEFAULT_TEMPLATE); the newline is prompt', () => {
    expect(DEFAULT_TEMPLATE).toBe('{prompt}\n{response}');
    const e = MultiTaskDataset.fromArray([{ task: 't', prompt: 'ab', response: 'c' }], { tokenizer }).get(0);
    expect(e.inputIds).toEqual([BOS, 97, 98, 10, 99, EOS]); // '\n' is 10
    expect(e.promptLength).toBe(4);
  });

  it('leaves out bos / eos when asked', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 't', prompt: 'ab', response: 'c' }], { tokenizer, template: PLAIN, addBos: false, addEos: false });
    expect(ds.get(0).inputIds).toEqual([97, 98, 99]);
    expect(ds.get(0).promptLength).toBe(2);
    const b = new BatchSampler(ds, { batchSize: 1 }, PAD).next();
    expect(b.labels).toEqual([[-100, -100, 99]]);
    expect(b.lossTokens).toBe(1);
  });

  it('applies a string template, splitting prompt and response at {response}', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 'add', prompt: '1+1', response: '2' }], { tokenizer, template: 'Q: {prompt}\nA: {response}' });
    const e = ds.get(0);
    // "Q: 1+1\nA: " = Q 81, : 58, ' ' 32, 1 49, + 43, 1 49, \n 10, A 65, : 58, ' ' 32; then "2" = 50
    expect(e.inputIds).toEqual([BOS, 81, 58, 32, 49, 43, 49, 10, 65, 58, 32, 50, EOS]);
    expect(e.promptLength).toBe(11);
    expect(e.prompt).toBe('1+1');
    expect(e.response).toBe('2');
    // Text after {response} belongs to the response; {task} is filled too; placeholders inside values stay.
    const ds2 = MultiTaskDataset.fromArray([{ task: 'x', prompt: '{response}', response: 'y' }], { tokenizer, template: '{task}:{prompt}={response};' });
    // "x:{response}=" then "y;"
    expect(ds2.get(0).inputIds).toEqual([BOS, ...Buffer.from('x:{response}='), 121, 59, EOS]);
    expect(ds2.get(0).promptLength).toBe(1 + 'x:{response}='.length);
    expect(() => MultiTaskDataset.fromArray([{ task: 'x', prompt: 'a', response: 'b' }], { tokenizer, template: 'Q: {prompt}' })).toThrow(/no \{response\} placeholder/);
  });

  it('applies a function template', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 'up', prompt: 'ab', response: 'AB' }], {
      tokenizer,
      template: (e) => ({ prompt: `${e.task}>${e.prompt}|`, response: e.response.toLowerCase() }),
    });
    // "up>ab|" = u 117, p 112, > 62, a 97, b 98, | 124; "ab" = 97 98
    expect(ds.get(0).inputIds).toEqual([BOS, 117, 112, 62, 97, 98, 124, 97, 98, EOS]);
    expect(ds.get(0).promptLength).toBe(7);
    expect(() => MultiTaskDataset.fromArray([{ task: 'x', prompt: 'a', response: 'b' }], { tokenizer, template: (() => ({ prompt: 1 })) as never })).toThrow(
      /examples\[0\].*\{prompt, response\} strings/,
    );
  });

  it('cuts long sequences at the end and counts them', () => {
    const ds = MultiTaskDataset.fromArray(
      [
        { task: 't', prompt: 'ab', response: 'cde' }, // 7 tokens -> 4
        { task: 't', prompt: 'a', response: 'b' }, // 4 tokens, fits
        { task: 'u', prompt: 'a', response: 'bc' }, // 5 tokens -> 4 (eos cut)
      ],
      { tokenizer, template: PLAIN, maxLength: 4 },
    );
    expect(ds.truncated).toBe(2);
    expect(ds.get(0).inputIds).toEqual([BOS, 97, 98, 99]);
    expect(ds.get(0).promptLength).toBe(3);
    expect(ds.get(0).truncated).toBe(true);
    expect(ds.get(1).inputIds).toEqual([BOS, 97, 98, EOS]);
    expect(ds.get(1).truncated).toBe(false);
    expect(ds.get(2).inputIds).toEqual([BOS, 97, 98, 99]);
    expect(ds.subset([0, 1]).truncated).toBe(1);
  });

  it('cuts a prompt that fills maxLength from the left, keeping bos and one response token', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 't', prompt: 'abcdef', response: 'xy' }], { tokenizer, template: PLAIN, maxLength: 4 });
    // bos + the last 2 prompt tokens ('e' 101, 'f' 102) + the first response token ('x' 120)
    expect(ds.get(0).inputIds).toEqual([BOS, 101, 102, 120]);
    expect(ds.get(0).promptLength).toBe(3);
    expect(ds.truncated).toBe(1);
    // A prompt of exactly maxLength - 1 tokens (with bos) leaves one response token and is cut at the end.
    const ds2 = MultiTaskDataset.fromArray([{ task: 't', prompt: 'ab', response: 'xy' }], { tokenizer, template: PLAIN, maxLength: 4 });
    expect(ds2.get(0).inputIds).toEqual([BOS, 97, 98, 120]);
    expect(ds2.get(0).promptLength).toBe(3);
    expect(ds2.truncated).toBe(1);
    // maxLength 2: bos and one response token.
    const ds3 = MultiTaskDataset.fromArray([{ task: 't', prompt: 'abc', response: 'x' }], { tokenizer, template: PLAIN, maxLength: 2 });
    expect(ds3.get(0).inputIds).toEqual([BOS, 120]);
    expect(ds3.get(0).promptLength).toBe(1);
  });

  it('rejects an example with nothing to learn', () => {
    expect(() => MultiTaskDataset.fromArray([{ task: 't', prompt: 'a', response: '' }], { tokenizer, template: PLAIN, addEos: false })).toThrow(/examples\[0\].*no token to learn/);
    // With eos, an empty response still teaches the model to stop.
    const ds = MultiTaskDataset.fromArray([{ task: 't', prompt: 'a', response: '' }], { tokenizer, template: PLAIN });
    expect(ds.get(0).inputIds).toEqual([BOS, 97, EOS]);
  });

  it('reports tasks, counts, indices and subsets', () => {
    const ds = MultiTaskDataset.fromArray(makeExamples({ zeta: 3, alpha: 2, mid: 1 }), { tokenizer, template: PLAIN });
    expect(ds.size).toBe(6);
    expect(ds.tasks).toEqual(['alpha', 'mid', 'zeta']);
    expect(ds.countByTask).toEqual({ alpha: 2, mid: 1, zeta: 3 });
    expect(ds.indicesOf('zeta')).toEqual([0, 1, 2]);
    expect(ds.indicesOf('alpha')).toEqual([3, 4]);
    expect(() => ds.indicesOf('beta')).toThrow(/unknown task string 'beta'.*"alpha", "mid", "zeta"/);
    const sub = ds.subset([4, 0, 5]);
    expect(sub.size).toBe(3);
    expect(sub.tasks).toEqual(['alpha', 'mid', 'zeta']);
    expect(sub.get(0)).toMatchObject({ index: 0, task: 'alpha', prompt: ds.get(4).prompt });
    expect(sub.get(2).inputIds).toEqual(ds.get(5).inputIds);
    expect(sub.indicesOf('zeta')).toEqual([1]);
    expect(() => ds.get(6)).toThrow(/index number 6 is out of range \(size 6/);
    expect(() => ds.subset([0, 9])).toThrow(/indices\[1\] is number 9/);
    expect(() => ds.subset([])).toThrow(/no examples/);
  });

  it('validates options and records', () => {
    const rec = [{ task: 't', prompt: 'a', response: 'b' }];
    expect(() => MultiTaskDataset.fromArray(rec, { tokenizer, template: PLAIN, maxLength: 1 })).toThrow(/maxLength must be an integer >= 2.*number 1/);
    expect(() => MultiTaskDataset.fromArray(rec, { tokenizer, template: PLAIN, maxLength: 2.5 })).toThrow(/maxLength.*2\.5/);
    expect(() => MultiTaskDataset.fromArray(rec, { tokenizer: {} as never })).toThrow(/options.tokenizer must be a tokenizer/);
    expect(() => MultiTaskDataset.fromArray(rec, { tokenizer, template: PLAIN, fields: { text: 'x' } as never })).toThrow(/unknown key "text"/);
    expect(() => MultiTaskDataset.fromArray([], { tokenizer, template: PLAIN })).toThrow(/no examples/);
    expect(() => MultiTaskDataset.fromArray([{ task: 't', prompt: 'a' }], { tokenizer, template: PLAIN })).toThrow(/examples\[0\]: missing field "response"/);
    expect(() => MultiTaskDataset.fromArray([{ task: 't', prompt: 'a', response: 4 }], { tokenizer, template: PLAIN })).toThrow(/field "response" \(the response\) must be a string, got number 4/);
  });
});

describe('MultiTaskDataset.fromJsonl', () => {
  it('streams records, skipping blank lines', async () => {
    const file = writeFile('plain.jsonl', '{"task":"a","prompt":"x","response":"y"}\n\n  \r\n{"task":"b","prompt":"p","response":"q","extra":1}\r\n');
    const ds = await MultiTaskDataset.fromJsonl(file, { tokenizer, template: PLAIN });
    expect(ds.size).toBe(2);
    expect(ds.tasks).toEqual(['a', 'b']);
    expect(ds.get(0).inputIds).toEqual([BOS, 120, 121, EOS]);
    expect(ds.get(1)).toMatchObject({ index: 1, task: 'b', prompt: 'p', response: 'q', inputIds: [BOS, 112, 113, EOS] });
  });

  it('reads a file larger than one read chunk, and names a broken line deep inside it', async () => {
    const lines = Array.from({ length: 6000 }, (_, i) => JSON.stringify({ task: `t${i % 4}`, prompt: `question number ${i} ${'.'.repeat(i % 40)}`, response: `${i}` }));
    const file = writeFile('big.jsonl', lines.join('\n') + '\n');
    expect(fs.statSync(file).size).toBeGreaterThan(256 * 1024);
    const ds = await MultiTaskDataset.fromJsonl(file, { tokenizer, template: PLAIN });
    expect(ds.size).toBe(6000);
    expect(ds.countByTask).toEqual({ t0: 1500, t1: 1500, t2: 1500, t3: 1500 });
    // "5999" = 53 57 57 57
    expect(ds.get(5999).inputIds.slice(-5)).toEqual([53, 57, 57, 57, EOS]);
    lines[4321] = lines[4321].slice(0, -1);
    const broken = writeFile('big-broken.jsonl', lines.join('\n'));
    await expect(MultiTaskDataset.fromJsonl(broken, { tokenizer, template: PLAIN })).rejects.toThrow(`${broken}:4322: invalid JSON`);
  });

  it('reads custom field names', async () => {
    const lines = [
      { kind: 'sum', question: '2+2', answer: '4' },
      { kind: 'echo', question: 'hi', answer: 'hi' },
    ];
    const file = writeFile('fields.jsonl', lines.map((l) => JSON.stringify(l)).join('\n'));
    const ds = await MultiTaskDataset.fromJsonl(file, { tokenizer, fields: { task: 'kind', prompt: 'question', response: 'answer' }, template: '{prompt}={response}' });
    expect(ds.countByTask).toEqual({ echo: 1, sum: 1 });
    // "2+2=" = 50 43 50 61; "4" = 52
    expect(ds.get(0).inputIds).toEqual([BOS, 50, 43, 50, 61, 52, EOS]);
    expect(ds.get(0).promptLength).toBe(5);
    expect(ds.get(1).prompt).toBe('hi');
  });

  it('names the file and line of a broken JSON line', async () => {
    const file = writeFile('broken.jsonl', '{"task":"a","prompt":"x","response":"y"}\n\n{"task":"a","prompt":"x",\n');
    await expect(MultiTaskDataset.fromJsonl(file, { tokenizer, template: PLAIN })).rejects.toThrow(`${file}:3: invalid JSON`);
  });

  it('names the missing field and its line', async () => {
    const file = writeFile('missing.jsonl', '{"task":"a","prompt":"x","response":"y"}\n{"task":"a","response":"y"}\n');
    await expect(MultiTaskDataset.fromJsonl(file, { tokenizer, template: PLAIN })).rejects.toThrow(`${file}:2: missing field "prompt"`);
    const file2 = writeFile('missing2.jsonl', '{"q":"x","a":"y"}\n');
    // a record without its task field belongs to task "default" (test/data-formats.test.ts)
    await expect(MultiTaskDataset.fromJsonl(file2, { tokenizer, template: PLAIN, fields: { prompt: 'q', response: 'a' } })).resolves.toMatchObject({ tasks: ['default'] });
    const file3 = writeFile('array.jsonl', '[1, 2]\n');
    await expect(MultiTaskDataset.fromJsonl(file3, { tokenizer, template: PLAIN })).rejects.toThrow(`${file3}:1: a record must be a JSON object, got an array`);
  });

  it('reads a line of exactly maxLineBytes (with \\n or \\r\\n) and rejects one byte more, naming the file, line and limit', async () => {
    const exact = JSON.stringify({ task: 'a', prompt: '', response: 'y' });
    // a record of exactly n bytes
    const pad = (n: number): string => JSON.stringify({ task: 'a', prompt: 'x'.repeat(n - exact.length), response: 'y' });
    expect(Buffer.byteLength(pad(1000))).toBe(1000);
    const ok = writeFile('limit-ok.jsonl', `${pad(50)}\n${pad(1000)}\r\n${pad(1000)}\n${pad(1000)}`);
    const ds = await MultiTaskDataset.fromJsonl(ok, { tokenizer, template: PLAIN, maxLineBytes: 1000 });
    expect(ds.size).toBe(4);
    expect(ds.get(3).prompt).toBe('x'.repeat(1000 - exact.length));
    for (const [name, text, line] of [
      ['limit-over.jsonl', `${pad(50)}\n\n${pad(1001)}\n${pad(50)}\n`, 3],
      ['limit-over-crlf.jsonl', `${pad(1001)}\r\n`, 1],
      ['limit-over-last.jsonl', `${pad(50)}\n${pad(1001)}`, 2],
      ['limit-far-over.jsonl', `${pad(50)}\n${pad(300000)}\n`, 2], // spans chunks: rejected before it is whole
    ] as const) {
      const file = writeFile(name, text);
      await expect(MultiTaskDataset.fromJsonl(file, { tokenizer, template: PLAIN, maxLineBytes: 1000 })).rejects.toThrow(
        `${file}:${line}: the line is longer than maxLineBytes (1000 bytes)`,
      );
    }
    for (const bad of [0, 1.5, -1, '1000', 2 ** 40]) {
      await expect(MultiTaskDataset.fromJsonl(ok, { tokenizer, template: PLAIN, maxLineBytes: bad as number })).rejects.toThrow(/options.maxLineBytes must be an integer from 1 to \d+, got/);
    }
  });

  it('decodes UTF-8 characters split across read chunks', async () => {
    // 2-, 3- and 4-byte characters back to back over several 64 KiB chunks: chunk ends fall inside characters
    const text = 'é€😀'.repeat(12000); // 108 kB a line
    const lines = [0, 1, 2].map((i) => JSON.stringify({ task: 't', prompt: text.slice(i), response: `${i}ü` }));
    const file = writeFile('utf8.jsonl', lines.join('\n') + '\n');
    const bytes = fs.readFileSync(file);
    for (const k of [1, 2, 3, 4]) expect(bytes[k * 65536] & 0xc0).toBe(0x80); // a continuation byte starts the chunk
    const ds = await MultiTaskDataset.fromJsonl(file, { tokenizer, template: PLAIN, maxLength: 1 << 20 });
    expect([0, 1, 2].map((i) => ds.get(i).prompt)).toEqual([0, 1, 2].map((i) => text.slice(i)));
    expect([0, 1, 2].map((i) => ds.get(i).response)).toEqual(['0ü', '1ü', '2ü']);
  });

  it("names the file and line of a tokenizer's own error", async () => {
    const file = writeFile('tok-error.jsonl', '{"task":"a","prompt":"x","response":"y"}\n{"task":"a","prompt":"boom","response":"y"}\n');
    const failing = Object.assign(Object.create(tokenizer) as ByteTokenizer, {
      encode: (text: string, o?: Parameters<ByteTokenizer['encode']>[1]) => {
        if (text === 'boom') throw new RangeError('Invalid array length');
        return tokenizer.encode(text, o);
      },
    });
    await expect(MultiTaskDataset.fromJsonl(file, { tokenizer: failing, template: PLAIN })).rejects.toThrow(`${file}:2: Invalid array length`);
  });

  it('fails clearly on a missing or empty file', async () => {
    await expect(MultiTaskDataset.fromJsonl(path.join(dir, 'nope.jsonl'), { tokenizer, template: PLAIN })).rejects.toThrow(/file not found: .*nope\.jsonl/);
    await expect(MultiTaskDataset.fromJsonl(dir, { tokenizer, template: PLAIN })).rejects.toThrow(/is a directory/);
    const empty = writeFile('empty.jsonl', '\n\n');
    await expect(MultiTaskDataset.fromJsonl(empty, { tokenizer, template: PLAIN })).rejects.toThrow(/no examples/);
  });
});

describe('BatchSampler', () => {
  // 84 examples: a 64, b 16, c 4.
  const mixed = MultiTaskDataset.fromArray(makeExamples({ a: 64, b: 16, c: 4 }), { tokenizer, template: PLAIN });

  function fractions(sampler: BatchSampler, batches: number): Record<string, number> {
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
    let rows = 0;
    for (const b of take(sampler, batches)) {
      for (const t of b.tasks) counts[t]++;
      rows += b.tasks.length;
    }
    return Object.fromEntries(Object.entries(counts).map(([t, c]) => [t, c / rows]));
  }

  function expectClose(got: Record<string, number>, want: Record<string, number>, tol: number): void {
    for (const t of Object.keys(want)) expect(Math.abs(got[t] - want[t])).toBeLessThan(tol);
  }

  it('mixes tasks in proportion to their sizes (proportional)', () => {
    const s = new BatchSampler(mixed, { batchSize: 8, seed: 1 }, PAD);
    // n_k / N = 64/84, 16/84, 4/84 = 16/21, 4/21, 1/21
    const want = { a: 16 / 21, b: 4 / 21, c: 1 / 21 };
    expectClose(s.taskProbabilities, want, 1e-12);
    // Whole epochs (11 batches each: 10 of 8, one of 4): exact.
    expect(s.stepsPerEpoch).toBe(11);
    expectClose(fractions(s, 11 * 20), want, 1e-12);
    // Any stretch of batches: close.
    expectClose(fractions(s, 105), want, 0.02);
  });

  it('picks tasks uniformly (uniform)', () => {
    const s = new BatchSampler(mixed, { batchSize: 8, sampling: 'uniform', seed: 1 }, PAD);
    const want = { a: 1 / 3, b: 1 / 3, c: 1 / 3 };
    expectClose(s.taskProbabilities, want, 1e-12);
    expectClose(fractions(s, 1000), want, 0.02); // 8000 rows: sd 0.0053
  });

  it('picks tasks with probability n^(1/T) / sum (temperature)', () => {
    // T = 2: sqrt(64), sqrt(16), sqrt(4) = 8, 4, 2 -> 8/14, 4/14, 2/14
    const s = new BatchSampler(mixed, { batchSize: 8, sampling: 'temperature', temperature: 2, seed: 1 }, PAD);
    const want = { a: 4 / 7, b: 2 / 7, c: 1 / 7 };
    expectClose(s.taskProbabilities, want, 1e-12);
    expectClose(fractions(s, 1000), want, 0.02);
    // T = 0.5: 64^2, 16^2, 4^2 = 4096, 256, 16 -> /4368
    const cold = new BatchSampler(mixed, { batchSize: 8, sampling: 'temperature', temperature: 0.5, seed: 3 }, PAD);
    const wantCold = { a: 4096 / 4368, b: 256 / 4368, c: 16 / 4368 };
    expectClose(cold.taskProbabilities, wantCold, 1e-12);
    expectClose(fractions(cold, 1000), wantCold, 0.015);
    // Default T is 2.
    expectClose(new BatchSampler(mixed, { batchSize: 8, sampling: 'temperature' }, PAD).taskProbabilities, want, 1e-12);
  });

  it('cycles through each task before repeating an example (uniform)', () => {
    const s = new BatchSampler(mixed, { batchSize: 4, sampling: 'uniform', seed: 5 }, PAD);
    const seen: Record<string, number[]> = { a: [], b: [], c: [] };
    for (const b of take(s, 200)) b.indices.forEach((i, r) => seen[b.tasks[r]].push(i));
    for (const task of ['a', 'b', 'c']) {
      const all = mixed.indicesOf(task);
      const rows = seen[task];
      for (let start = 0; start + all.length <= rows.length; start += all.length) {
        expect(rows.slice(start, start + all.length).sort((x, y) => x - y)).toEqual(all);
      }
    }
  });

  it('covers every example exactly once per epoch (proportional)', () => {
    for (const groupByLength of [false, true]) {
      const s = new BatchSampler(mixed, { batchSize: 5, seed: 2, groupByLength }, PAD);
      expect(s.stepsPerEpoch).toBe(17); // ceil(84 / 5)
      for (let epoch = 0; epoch < 3; epoch++) {
        expect(s.epoch).toBe(epoch);
        const batches = take(s, s.stepsPerEpoch);
        const seen = batches.flatMap((b) => b.indices).sort((x, y) => x - y);
        expect(seen).toEqual(Array.from({ length: 84 }, (_, i) => i));
        expect(batches.filter((b) => b.indices.length === 4)).toHaveLength(1);
      }
      expect(s.epoch).toBe(3);
    }
  });

  it('reshuffles each epoch, is deterministic for a seed and differs across seeds', () => {
    for (const sampling of ['proportional', 'uniform', 'temperature'] as const) {
      const run = (seed: number): number[][] => take(new BatchSampler(mixed, { batchSize: 6, sampling, seed }, PAD), 30).map((b) => b.indices);
      expect(run(7)).toEqual(run(7));
      expect(run(7)).not.toEqual(run(8));
    }
    const s = new BatchSampler(mixed, { batchSize: 84, seed: 0 }, PAD);
    expect(s.next().indices).not.toEqual(s.next().indices);
  });

  it('resumes from state() exactly, through a JSON round trip', () => {
    const configs: SamplerOptions[] = [
      { batchSize: 8, seed: 11 },
      { batchSize: 8, seed: 11, groupByLength: true },
      { batchSize: 3, sampling: 'uniform', seed: 12 },
      { batchSize: 3, sampling: 'uniform', seed: 12, groupByLength: true },
      { batchSize: 5, sampling: 'temperature', temperature: 3, seed: 13 },
    ];
    for (const options of configs) {
      for (const k of [1, 7, 16]) {
        const original = new BatchSampler(mixed, options, PAD);
        take(original, k);
        const saved = JSON.parse(JSON.stringify(original.state()));
        const expected = take(original, k);
        const restored = new BatchSampler(mixed, { ...options, seed: 999 }, PAD);
        restored.setState(saved);
        expect(restored.epoch).toBe(Math.floor(k / restored.stepsPerEpoch));
        expect(take(restored, k)).toEqual(expected);
        expect(restored.epoch).toBe(original.epoch);
        expect(restored.state()).toEqual(original.state());
      }
    }
  });

  it('state() is a copy, and setState rejects a state of another configuration', () => {
    const s = new BatchSampler(mixed, { batchSize: 4, sampling: 'uniform' }, PAD);
    take(s, 3);
    const st = s.state();
    st.pending.push([0]);
    st.rng[0] ^= 1;
    expect(s.state()).not.toEqual(st);
    const other = new BatchSampler(mixed, { batchSize: 4 }, PAD);
    expect(() => other.setState(s.state())).toThrow(/sampling 'uniform', this sampler has 'proportional'/);
    expect(() => new BatchSampler(mixed, { batchSize: 5, sampling: 'uniform' }, PAD).setState(s.state())).toThrow(/batchSize 4, this sampler has 5/);
    const small = MultiTaskDataset.fromArray(makeExamples({ a: 3 }), { tokenizer, template: PLAIN });
    expect(() => new BatchSampler(small, { batchSize: 4, sampling: 'uniform' }, PAD).setState(s.state())).toThrow(/dataset of size 84, this sampler has 3/);
  });

  it('pads each batch to its longest sequence', () => {
    const ds = MultiTaskDataset.fromArray(
      [
        { task: 't', prompt: 'a', response: 'bc' }, // bos a b c eos
        { task: 't', prompt: 'xy', response: 'z' }, // bos x y z eos
        { task: 'u', prompt: '', response: 'q' }, // bos q eos
      ],
      { tokenizer, template: PLAIN },
    );
    const b = new BatchSampler(ds, { batchSize: 3 }, PAD).next();
    const byIndex = (i: number): number => b.indices.indexOf(i);
    expect([...b.indices].sort()).toEqual([0, 1, 2]);
    expect(b.inputIds[byIndex(0)]).toEqual([BOS, 97, 98, 99, EOS]);
    expect(b.inputIds[byIndex(2)]).toEqual([BOS, 113, EOS, PAD, PAD]);
    expect(b.attentionMask[byIndex(2)]).toEqual([1, 1, 1, 0, 0]);
    expect(b.labels[byIndex(2)]).toEqual([-100, 113, EOS, -100, -100]);
    expect(b.labels[byIndex(1)]).toEqual([-100, -100, -100, 122, EOS]);
    expect(b.labels[byIndex(0)]).toEqual([-100, -100, 98, 99, EOS]);
    expect(b.tasks[byIndex(2)]).toBe('u');
    expect(b.lossTokens).toBe(3 + 2 + 2);
    for (const row of b.inputIds) expect(row).toHaveLength(5);
  });

  it('groups by length: less padding than without', () => {
    // Lengths spread widely: 1 + prompt (0..199 bytes) + response (1..9 bytes) + 1.
    const records = Array.from({ length: 600 }, (_, i) => ({ task: i % 3 ? 'x' : 'y', prompt: 'p'.repeat((i * 37) % 200), response: 'r'.repeat(1 + (i % 9)) }));
    const ds = MultiTaskDataset.fromArray(records, { tokenizer, template: PLAIN });
    const padding = (options: SamplerOptions, batches: number): number => {
      const s = new BatchSampler(ds, options, PAD);
      let pads = 0;
      for (const b of take(s, batches)) for (const row of b.attentionMask) pads += row.filter((m) => m === 0).length;
      return pads;
    };
    for (const sampling of ['proportional', 'uniform'] as const) {
      const plain = padding({ batchSize: 8, sampling }, 150);
      const grouped = padding({ batchSize: 8, sampling, groupByLength: true }, 150);
      expect(grouped).toBeLessThan(plain / 5);
    }
    // Grouped batches come in shuffled order, not longest first.
    const s = new BatchSampler(ds, { batchSize: 8, groupByLength: true, seed: 4 }, PAD);
    const widths = take(s, 20).map((b) => b.inputIds[0].length);
    expect(widths).not.toEqual([...widths].sort((x, y) => y - x));
  });

  it('validates its options', () => {
    expect(() => new BatchSampler(mixed, { batchSize: 0 }, PAD)).toThrow(/batchSize must be an integer >= 1, got number 0/);
    expect(() => new BatchSampler(mixed, { batchSize: 1.5 }, PAD)).toThrow(/batchSize.*1\.5/);
    expect(() => new BatchSampler(mixed, { batchSize: 2, sampling: 'random' as never }, PAD)).toThrow(/unknown sampling string 'random'/);
    expect(() => new BatchSampler(mixed, { batchSize: 2, sampling: 'temperature', temperature: 0 }, PAD)).toThrow(/temperature must be a finite number > 0, got number 0/);
    expect(() => new BatchSampler(mixed, { batchSize: 2, seed: 0.5 }, PAD)).toThrow(/seed must be an integer/);
    expect(() => new BatchSampler(mixed, { batchSize: 2 }, -1)).toThrow(/padId must be a non-negative integer/);
  });
});

describe('promptBatch', () => {
  it('left-pads bos + prompt tokens, with the mask', () => {
    const ds = MultiTaskDataset.fromArray(
      [
        { task: 't', prompt: 'abc', response: 'x' },
        { task: 't', prompt: 'd', response: 'yy' },
      ],
      { tokenizer, template: '{prompt}:{response}' },
    );
    const p = promptBatch([ds.get(0), ds.get(1)], PAD);
    // "abc:" = 97 98 99 58; "d:" = 100 58
    expect(p.inputIds).toEqual([
      [BOS, 97, 98, 99, 58],
      [PAD, PAD, BOS, 100, 58],
    ]);
    expect(p.attentionMask).toEqual([
      [1, 1, 1, 1, 1],
      [0, 0, 1, 1, 1],
    ]);
    expect(() => promptBatch([], PAD)).toThrow(/non-empty array/);
    const bare = MultiTaskDataset.fromArray([{ task: 't', prompt: '', response: 'x' }], { tokenizer, template: PLAIN, addBos: false });
    expect(() => promptBatch([bare.get(0)], PAD)).toThrow(/no prompt token/);
  });
});
