// The record formats besides {task, prompt, response}: {text}, TRL's {prompt, completion} (strings
// or message lists), Alpaca's {instruction, input, output}, {messages} without a task; the task of a
// record without one; MultiTaskDataset.split; the errors for a record that fits no format.
// ByteTokenizer ids are UTF-8 bytes, bos 256, eos 257, pad 258: expected ids and labels are worked
// out by hand from the text each format writes (the Alpaca prompt is written out here, not taken
// from the library). Then run.json's data.train with several files and data.validationSplit, through
// `rlora train`.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { BatchSampler, ByteTokenizer, Example, HFConfig, Model, MultiTaskDataset, TextTokenizer } from '../lib';
import { parseRunConfig } from '../lib/cli/runconfig';

const BOS = 256, EOS = 257, PAD = 258;
const tokenizer = new ByteTokenizer();
const bytes = (s: string): number[] => [...Buffer.from(s, 'utf8')];
/** The labels a batch of one example gets (the sampler's collation). */
const labelsOf = (ds: MultiTaskDataset, i = 0): { labels: number[]; lossTokens: number } => {
  const b = new BatchSampler(ds.subset([i]), { batchSize: 1, seed: 0 }, PAD).next();
  return { labels: b.labels[0], lossTokens: b.lossTokens };
};
const I = -100;
// a ChatML-like template (as test/chat.test.ts): bos first, each turn "<|role|>content<eos>\n"
const CHATML = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
const chatTok = {
  vocabSize: tokenizer.vocabSize, bosTokenId: BOS, eosTokenId: EOS, padTokenId: PAD,
  bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken, padToken: tokenizer.padToken, chatTemplate: CHATML,
  encode: (t: string, o?: object) => tokenizer.encode(t, o), decode: (ids: ArrayLike<number>, o?: object) => tokenizer.decode(ids, o),
  tokenToId: (t: string) => tokenizer.tokenToId(t), idToToken: (i: number) => tokenizer.idToToken(i),
} as TextTokenizer;
/** Bytes of a text, with <bos> and <eos> as their ids. */
const text = (s: string): number[] => s.split(/(<bos>|<eos>)/).flatMap((p) => (p === '<bos>' ? [BOS] : p === '<eos>' ? [EOS] : bytes(p)));

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-formats-test-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});
function writeFile(name: string, lines: unknown[]): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

describe('{text}: plain language modelling', () => {
  it('bos + text + eos, loss on every token after the first; no template; task "default"', () => {
    const ds = MultiTaskDataset.fromArray([{ text: 'ab' }], { tokenizer, template: 'Q: {prompt}\nA: {response}' });
    const e = ds.get(0);
    expect(e.inputIds).toEqual([BOS, 97, 98, EOS]);
    expect(e).toMatchObject({ task: 'default', format: 'text', prompt: '', response: 'ab', promptLength: 1, truncated: false });
    expect(labelsOf(ds)).toEqual({ labels: [I, 97, 98, EOS], lossTokens: 3 });
  });

  it('without bos the first token has nothing before it: 2 of 3 tokens learnt', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 'lm', text: 'ab' }], { tokenizer, addBos: false });
    expect(ds.get(0).inputIds).toEqual([97, 98, EOS]);
    expect(ds.get(0).promptLength).toBe(0);
    const { labels, lossTokens } = labelsOf(ds);
    // the label at position 0 is never used (no logits before it); 98 and eos are learnt
    expect(labels.slice(1)).toEqual([98, EOS]);
    expect(lossTokens).toBe(2);
  });

  it('a long text is cut at the end', () => {
    const e = MultiTaskDataset.fromArray([{ text: 'abcdef' }], { tokenizer, maxLength: 4 }).get(0);
    expect(e.inputIds).toEqual([BOS, 97, 98, 99]);
    expect(e.truncated).toBe(true);
  });
});

describe('TRL {prompt, completion}', () => {
  it('strings: joined as they are (no template, no newline), loss on the completion and eos', () => {
    const ds = MultiTaskDataset.fromArray([{ prompt: 'ab', completion: ' c' }], { tokenizer });
    const e = ds.get(0);
    expect(e.inputIds).toEqual([BOS, 97, 98, 32, 99, EOS]);
    expect(e).toMatchObject({ task: 'default', format: 'prompt-completion', prompt: 'ab', response: ' c', promptLength: 3 });
    expect(labelsOf(ds)).toEqual({ labels: [I, I, I, 32, 99, EOS], lossTokens: 3 });
  });

  it('message lists: rendered with the chat template, loss on the completion only (not on the prompt\'s assistant turn)', () => {
    const prompt = [
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'yo' },
      { role: 'user', content: '2+2?' },
    ];
    const ds = MultiTaskDataset.fromArray([{ task: 'math', prompt, completion: [{ role: 'assistant', content: '4' }] }], { tokenizer: chatTok });
    const e = ds.get(0);
    const head = '<bos><|user|>hi<eos>\n<|assistant|>yo<eos>\n<|user|>2+2?<eos>\n<|assistant|>';
    const answer = '4<eos>\n';
    expect(e.inputIds).toEqual(text(head + answer));
    expect(e.promptLength).toBe(text(head).length);
    expect(e.lossSpans).toBeUndefined();
    expect(e).toMatchObject({ task: 'math', format: 'prompt-completion', chat: true, prompt: '2+2?', response: '4' });
    const { labels, lossTokens } = labelsOf(ds);
    expect(labels).toEqual([...text(head).map(() => I), ...text(answer)]);
    expect(lossTokens).toBe(text(answer).length);
    // the same conversation as {messages} learns the earlier assistant turn too
    const m = MultiTaskDataset.fromArray([{ messages: [...prompt, { role: 'assistant', content: '4' }] }], { tokenizer: chatTok });
    expect(m.get(0).inputIds).toEqual(e.inputIds);
    expect(m.get(0).lossSpans?.length).toBe(1);
    expect(m.get(0).task).toBe('default');
  });
});

describe("Alpaca's {instruction, input, output}", () => {
  // Stanford Alpaca's train.py PROMPT_DICT, written out by hand
  const withInput = (i: string, x: string): string =>
    `Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n${i}\n\n### Input:\n${x}\n\n### Response:`;
  const noInput = (i: string): string => `Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n${i}\n\n### Response:`;

  it('with an input, with an empty one and without one; loss on the output and eos; the template option does not apply', () => {
    const ds = MultiTaskDataset.fromArray(
      [
        { instruction: 'Add.', input: '2+2', output: '4' },
        { instruction: 'Say hi.', input: '', output: 'hi' },
        { task: 'x', instruction: 'Say {input}.', output: 'ok' },
      ],
      { tokenizer, template: 'Q: {prompt}\nA: {response}' },
    );
    const cases: [string, string][] = [[withInput('Add.', '2+2'), '4'], [noInput('Say hi.'), 'hi'], [noInput('Say {input}.'), 'ok']];
    cases.forEach(([prompt, output], i) => {
      const e = ds.get(i);
      expect(e.inputIds).toEqual([BOS, ...bytes(prompt), ...bytes(output), EOS]);
      expect(e.promptLength).toBe(1 + bytes(prompt).length);
      expect(e).toMatchObject({ format: 'alpaca', prompt, response: output });
      const { labels, lossTokens } = labelsOf(ds, i);
      expect(labels).toEqual([I, ...bytes(prompt).map(() => I), ...bytes(output), EOS]);
      expect(lossTokens).toBe(bytes(output).length + 1);
    });
    expect(ds.countByTask).toEqual({ default: 2, x: 1 });
  });
});

describe('the task of a record without one', () => {
  it('{prompt, response} and every format: "default" from an array or one file; the record\'s own task wins', async () => {
    const ds = MultiTaskDataset.fromArray([{ prompt: 'a', response: 'b' }, { task: 't', text: 'x' }], { tokenizer });
    expect(ds.countByTask).toEqual({ default: 1, t: 1 });
    const one = writeFile('one.jsonl', [{ text: 'a' }]);
    expect((await MultiTaskDataset.fromJsonl(one, { tokenizer })).tasks).toEqual(['default']);
    expect((await MultiTaskDataset.fromJsonl([one], { tokenizer })).tasks).toEqual(['default']);
  });

  it('several files: the file\'s name without its extension, in file order', async () => {
    const math = writeFile('math.jsonl', [{ prompt: '1+1', response: '2' }, { task: 'sum', prompt: '2+2', response: '4' }]);
    const poems = writeFile('poems.v2.jsonl', [{ text: 'roses' }, { instruction: 'Rhyme.', output: 'cat hat' }]);
    const ds = await MultiTaskDataset.fromJsonl([math, poems], { tokenizer });
    expect([0, 1, 2, 3].map((i) => ds.get(i).task)).toEqual(['math', 'sum', 'poems.v2', 'poems.v2']);
    expect([0, 1, 2, 3].map((i) => ds.get(i).index)).toEqual([0, 1, 2, 3]);
    expect(ds.countByTask).toEqual({ math: 1, 'poems.v2': 2, sum: 1 });
    // an error in the second file names that file and its line
    const bad = writeFile('bad.jsonl', [{ text: 'ok' }, { foo: 1 }]);
    await expect(MultiTaskDataset.fromJsonl([math, bad], { tokenizer })).rejects.toThrow(`${bad}:2: the record fits none of the formats`);
    await expect(MultiTaskDataset.fromJsonl([] as never, { tokenizer })).rejects.toThrow(/path must be a string or a non-empty array of strings/);
  });
});

describe('MultiTaskDataset.split', () => {
  const records = (counts: Record<string, number>): Example[] =>
    Object.entries(counts).flatMap(([task, n]) => Array.from({ length: n }, (_, i) => ({ task, prompt: `${task}${i}`, response: 'r' })));
  const prompts = (ds: MultiTaskDataset): string[] => Array.from({ length: ds.size }, (_, i) => ds.get(i).prompt);

  it('per task: ceil(fraction x count), at most all but one; disjoint, together the whole set, in dataset order', () => {
    const ds = MultiTaskDataset.fromArray(records({ a: 10, b: 5, c: 1, d: 2 }), { tokenizer });
    const { train, validation } = ds.split(0.2, 7);
    // a: ceil(2) = 2; b: ceil(1) = 1; c: 1 example stays in train; d: ceil(0.4) = 1
    expect(validation.countByTask).toEqual({ a: 2, b: 1, d: 1 });
    expect(train.countByTask).toEqual({ a: 8, b: 4, c: 1, d: 1 });
    const t = prompts(train), v = prompts(validation);
    expect(t.filter((p) => v.includes(p))).toEqual([]);
    expect([...t, ...v].sort()).toEqual(prompts(ds).sort());
    const order = prompts(ds);
    for (const part of [t, v]) expect(part.map((p) => order.indexOf(p))).toEqual(part.map((p) => order.indexOf(p)).sort((x, y) => x - y));
    expect(ds.split(0.5, 7).validation.countByTask).toEqual({ a: 5, b: 3, d: 1 });
  });

  it('seeded and stable: the same seed the same split, another seed another; a task\'s split does not depend on the other tasks', () => {
    const ds = MultiTaskDataset.fromArray(records({ a: 40, b: 40 }), { tokenizer });
    const v = (d: MultiTaskDataset, seed: number, task: string): string[] => prompts(d.split(0.25, seed).validation).filter((p) => p.startsWith(task));
    expect(v(ds, 3, 'a')).toEqual(v(ds, 3, 'a'));
    expect(v(ds, 3, 'a')).toHaveLength(10);
    expect(v(ds, 4, 'a')).not.toEqual(v(ds, 3, 'a'));
    expect(v(ds, 3, 'b').map((p) => p.slice(1))).not.toEqual(v(ds, 3, 'a').map((p) => p.slice(1))); // each task draws its own
    const onlyA = MultiTaskDataset.fromArray(records({ a: 40 }), { tokenizer });
    const withC = MultiTaskDataset.fromArray([...records({ c: 9 }), ...records({ a: 40, b: 40 })], { tokenizer });
    expect(v(onlyA, 3, 'a')).toEqual(v(ds, 3, 'a'));
    expect(v(withC, 3, 'a')).toEqual(v(ds, 3, 'a'));
  });

  it('refuses a fraction outside (0, 1), a bad seed, and a set with nothing to validate on', () => {
    const ds = MultiTaskDataset.fromArray(records({ a: 3 }), { tokenizer });
    for (const f of [0, 1, -0.1, NaN]) expect(() => ds.split(f)).toThrow(RangeError);
    expect(() => ds.split('0.1' as never)).toThrow(/fraction must be a number > 0 and < 1, got string/);
    expect(() => ds.split(0.1, -1)).toThrow(/seed must be an integer >= 0, got number -1/);
    const ones = MultiTaskDataset.fromArray(records({ a: 1, b: 1 }), { tokenizer });
    expect(() => ones.split(0.5)).toThrow(/no task has two examples/);
  });
});

describe('a record that fits no format', () => {
  it('names the file and line (jsonl), the keys it had and the formats', async () => {
    const file = writeFile('none.jsonl', [{ text: 'fine' }, '', { question: 'q', answer: 'a' }]);
    await expect(MultiTaskDataset.fromJsonl(file, { tokenizer })).rejects.toThrow(
      `${file}:3: the record fits none of the formats (it has "question", "answer"); the formats are {"task"?, "prompt", "response"}, {"task"?, "messages"}, ` +
        '{"task"?, "prompt", "completion"} (strings or message lists), {"task"?, "instruction", "input"?, "output"} (Alpaca), {"task"?, "text"}',
    );
  });

  it('names the index (arrays), and what is wrong with a record that starts a format', () => {
    const bad = (record: unknown): (() => MultiTaskDataset) => () => MultiTaskDataset.fromArray([{ text: 'ok' }, record as Example], { tokenizer });
    expect(bad({})).toThrow(/^MultiTaskDataset.fromArray: examples\[1\]: the record fits none of the formats \(it has no fields\)/);
    expect(bad({ task: 'x' })).toThrow(/examples\[1\]: the record fits none of the formats \(it has "task"\)/);
    expect(bad({ prompt: 'a' })).toThrow(/examples\[1\]: missing field "response" \(the response\); the record has "prompt"/);
    expect(bad({ completion: 'a' })).toThrow(/examples\[1\]: missing field "prompt"/);
    expect(bad({ prompt: 'a', completion: [{ role: 'assistant', content: 'b' }] })).toThrow(TypeError);
    expect(bad({ prompt: 'a', completion: [{ role: 'assistant', content: 'b' }] })).toThrow(/"prompt" and "completion" must both be strings or both be lists/);
    expect(bad({ prompt: [], completion: [{ role: 'user', content: 'b' }] })).toThrow(/the last message of "completion" must be the assistant's/);
    expect(bad({ instruction: 'a' })).toThrow(/missing field "output" \(the Alpaca record's output\); the record has "instruction"/);
    expect(bad({ instruction: 'a', input: 3, output: 'b' })).toThrow(/field "input" \(the Alpaca record's input\) must be a string, got number 3/);
    expect(bad({ text: 5 })).toThrow(/field "text" \(the text\) must be a string, got number 5/);
    expect(bad({ task: 7, text: 'a' })).toThrow(/field "task" \(the task\) must be a string, got number 7/);
    expect(bad({ task: '', text: 'a' })).toThrow(/field "task" \(the task\) is empty/);
    expect(bad({ text: '' })).not.toThrow(); // eos is learnt
    expect(() => MultiTaskDataset.fromArray([{ text: '' }], { tokenizer, addEos: false })).toThrow(/examples\[0\]: the example has no token to learn \(text ""/);
  });
});

test('the Example type takes every format without prompt and response', () => {
  // a type check (npx tsc) as much as a run: each literal below is an Example
  const records: Example[] = [
    { task: 't', prompt: 'p', response: 'r' },
    { messages: [{ role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] },
    { text: 'plain' },
    { prompt: 'p', completion: 'c' },
    { prompt: [{ role: 'user', content: 'u' }], completion: [{ role: 'assistant', content: 'a' }] },
    { instruction: 'i', input: '', output: 'o' },
    { task: 'alpaca', instruction: 'i', output: 'o' },
  ];
  const ds = MultiTaskDataset.fromArray(records, { tokenizer: chatTok });
  expect(Array.from({ length: ds.size }, (_, i) => ds.get(i).format ?? 'prompt-response')).toEqual(['prompt-response', 'messages', 'text', 'prompt-completion', 'prompt-completion', 'alpaca', 'alpaca']);
});

describe("run.json: several data.train files, data.validationSplit", () => {
  const run = (data: object): object => ({ model: 'm', tokenizer: 'byte', data, adapter: { targetModules: ['q_proj'] }, outputDir: 'o' });

  it('parses them, paths relative to run.json; refuses what does not fit', () => {
    const cfg = parseRunConfig(run({ train: ['a.jsonl', 'sub/b.jsonl'], validationSplit: 0.1, splitSeed: 3 }), '/x/run.json');
    expect(cfg.data).toMatchObject({ train: ['/x/a.jsonl', '/x/sub/b.jsonl'], validationSplit: 0.1, splitSeed: 3 });
    expect(parseRunConfig(run({ train: 'a.jsonl' }), '/x/run.json').data).toMatchObject({ train: '/x/a.jsonl', splitSeed: 0 });
    expect(() => parseRunConfig(run({ train: [] }), '/x/run.json')).toThrow(/data.train/);
    expect(() => parseRunConfig(run({ train: ['a.jsonl', 3] }), '/x/run.json')).toThrow(/data.train/);
    expect(() => parseRunConfig(run({ train: 'a.jsonl', validationSplit: 1 }), '/x/run.json')).toThrow(/data.validationSplit must be a finite number > 0 and < 1, got 1/);
    expect(() => parseRunConfig(run({ train: 'a.jsonl', validationSplit: 0.1, eval: 'e.jsonl' }), '/x/run.json')).toThrow(/data.validationSplit and data.eval exclude each other/);
    expect(() => parseRunConfig(run({ train: 'a.jsonl', splitSeed: 1 }), '/x/run.json')).toThrow(/data.splitSeed applies to data.validationSplit only/);
    expect(() => parseRunConfig(run({ train: 'a.jsonl', validationSplt: 0.1 }), '/x/run.json')).toThrow(/did you mean data\.validationSplit\?/);
  });

  it('rlora train: records without a task take their file\'s name, and the run evaluates on the held-out split', () => {
    const work = path.join(dir, 'run');
    fs.mkdirSync(work, { recursive: true });
    const tok = new ByteTokenizer();
    const config: HFConfig = { architectures: ['LlamaForCausalLM'], vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 };
    Model.fromConfig(config, { seed: 1 }).save(path.join(work, 'model'));
    const words = ['cat', 'dog', 'fish', 'bird', 'cow', 'ant', 'bee', 'owl', 'elk', 'yak'];
    fs.writeFileSync(path.join(work, 'upper.jsonl'), words.map((w) => JSON.stringify({ prompt: `${w}:`, completion: w.toUpperCase() })).join('\n') + '\n');
    fs.writeFileSync(path.join(work, 'story.jsonl'), words.map((w) => JSON.stringify({ text: `the ${w} sat.` })).join('\n') + '\n');
    fs.writeFileSync(
      path.join(work, 'run.json'),
      JSON.stringify({
        model: 'model', tokenizer: 'byte',
        data: { train: ['upper.jsonl', 'story.jsonl'], validationSplit: 0.2, maxLength: 32 },
        adapter: { method: 'lora', rank: 2, targetModules: ['q_proj'] },
        trainer: { batchSize: 2, maxSteps: 2, learningRate: 1e-3 },
        outputDir: 'out',
      }),
    );
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete env.NODE_OPTIONS;
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), 'train', '--config', path.join(work, 'run.json'), '--threads', '1'], { cwd: path.join(__dirname, '..'), env, encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`exit ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`);
    // 10 a task, 2 of each held out (ceil(0.2 x 10))
    expect(r.stderr).toMatch(/^train .*upper\.jsonl, .*story\.jsonl: 16 examples \(story 8, upper 8\)$/m);
    expect(r.stderr).toMatch(/^eval {7}data\.validationSplit 0\.2 of data\.train \(splitSeed 0\): 4 examples \(story 2, upper 2\)$/m);
    const evals = fs.readFileSync(path.join(work, 'out', 'log.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((l) => l.type === 'eval');
    expect(evals).toHaveLength(1);
    expect(Object.fromEntries(Object.entries(evals[0].tasks as Record<string, { count: number; loss: number }>).map(([t, e]) => [t, e.count]))).toEqual({ story: 2, upper: 2 });
    for (const e of Object.values(evals[0].tasks as Record<string, { loss: number }>)) expect(Number.isFinite(e.loss)).toBe(true);
    // rlora eval --config evaluates the same held-out examples: the numbers of the training's final evaluation
    const ev = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), 'eval', '--config', path.join(work, 'run.json'), '--json', '--threads', '1'], { cwd: path.join(__dirname, '..'), env, encoding: 'utf8', timeout: 60_000 });
    if (ev.status !== 0) throw new Error(`exit ${ev.status ?? ev.signal}\n${ev.stdout}\n${ev.stderr}`);
    expect(ev.stderr).toContain('rlora eval: evaluating data.validationSplit 0.2 of data.train (splitSeed 0, 4 examples), as rlora train held it out');
    const out = JSON.parse(ev.stdout) as { examples: number; tasks: Record<string, { loss: number; count: number }> };
    expect(out.examples).toBe(4);
    for (const [t, e] of Object.entries(evals[0].tasks as Record<string, { loss: number; count: number }>)) {
      expect(out.tasks[t].count).toBe(e.count);
      expect(Math.abs(out.tasks[t].loss - e.loss)).toBeLessThanOrEqual(1e-6 * e.loss);
    }
    // the copy of run.json in outputDir names the files by absolute paths
    expect(JSON.parse(fs.readFileSync(path.join(work, 'out', 'run.json'), 'utf8')).data.train).toEqual([path.join(work, 'upper.jsonl'), path.join(work, 'story.jsonl')]);
  }, 90_000);
});
