// Fuzzing the file readers: seeded mutations (byte flips, truncations, inserted garbage, deleted or
// repeated ranges, changed numbers, changed strings and keys) of a small valid safetensors file,
// a model folder's model.safetensors and config.json, and a tokenizer.json, all loaded in this one
// process. Each load succeeds or throws a JS Error that names the file: never a crash, never a hang.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as util from 'util';

import { HFConfig, loadSafetensors, Model, saveSafetensors, Tensor, Tokenizer } from '../lib';
import { rng } from './helpers/math';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-fuzz-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

type Rand = () => number;
const below = (r: Rand, n: number): number => Math.floor(r() * n);
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[below(r, xs.length)];

// Replacements: JSON tokens that are wrong in interesting ways (floats for integers, overflow,
// negative zero, other types), and strings that name other dtypes, reserved or prototype keys,
// keys of the other files, escapes of a NUL and a lone surrogate.
const NUMBERS = ['0', '-1', '1', '2', '3', '7', '64', '4.0', '1e2', '-0', '1e-300', '1e400', '2.5', '65504', '4294967296', '9007199254740993', '99999999999', 'null', 'true', '"8"', '[]', '{}'];
const STRINGS = [
  '""', '"F32"', '"BF16"', '"U32"', '"U64"', '"F8_E4M3"', '"F8_E5M2"', '"I64"', '"X"', '"__metadata__"', '"__proto__"', '"constructor"',
  '"shape"', '"dtype"', '"data_offsets"', '"llama3"', '"yarn"', '"model"', '"vocab"', '"merges"', '"BPE"', '"WordLevel"', '"type"',
  '"rope_type"', '"hidden_size"', '"num_key_value_heads"', '"eos_token_id"', '"<s>"', '"\\u0000"', '"\\ud800"', '"é"', '0', 'null', '[]',
];
const GARBAGE = Buffer.from('{}[]":,-.eE0123456789 \\nul');

/** A token of the text (bytes as latin1, so indices are byte positions) replaced by `make()`. */
function replaceToken(b: Buffer, r: Rand, re: RegExp, make: () => string): Buffer {
  const hits = [...b.toString('latin1').matchAll(re)];
  if (hits.length === 0) return b;
  const h = pick(r, hits);
  return Buffer.concat([b.subarray(0, h.index), Buffer.from(make(), 'utf8'), b.subarray(h.index! + h[0].length)]);
}

const MUTATIONS: Record<string, (b: Buffer, r: Rand) => Buffer> = {
  flipBits: (b, r) => {
    const c = Buffer.from(b);
    for (let k = 1 + below(r, 4); k > 0 && c.length; k--) c[below(r, c.length)] ^= 1 << below(r, 8);
    return c;
  },
  truncate: (b, r) => b.subarray(0, below(r, b.length)),
  insertGarbage: (b, r) => {
    const at = below(r, b.length + 1);
    const junk = Buffer.from(Array.from({ length: 1 + below(r, 12) }, () => (r() < 0.6 ? pick(r, [...GARBAGE]) : below(r, 256))));
    return Buffer.concat([b.subarray(0, at), junk, b.subarray(at)]);
  },
  deleteRange: (b, r) => {
    const at = below(r, b.length);
    return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + below(r, 16))]);
  },
  repeatRange: (b, r) => {
    const at = below(r, b.length);
    const end = at + 1 + below(r, 32);
    return Buffer.concat([b.subarray(0, end), b.subarray(at, end), b.subarray(end)]);
  },
  changeNumber: (b, r) => replaceToken(b, r, /-?\d+(\.\d+)?([eE][+-]?\d+)?/g, () => pick(r, NUMBERS)),
  changeString: (b, r) => replaceToken(b, r, /"(?:[^"\\]|\\.)*"/g, () => pick(r, STRINGS)),
};
// Changed numbers and strings keep the JSON valid more often, so they reach the checks behind the parser.
const KINDS = [...Object.keys(MUTATIONS), ...Array(3).fill('changeNumber'), ...Array(3).fill('changeString')];

/** 1 to 3 mutations of `b`, and their names. */
function mutate(b: Buffer, r: Rand): [Buffer, string] {
  const names: string[] = [];
  for (let k = 1 + below(r, 3); k > 0; k--) {
    const kind = pick(r, KINDS);
    b = MUTATIONS[kind](b, r);
    names.push(kind);
  }
  return [b, names.join('+')];
}

/** A safetensors file mutated as raw bytes, or in its header text with the length prefix kept right. */
function mutateSafetensors(file: Buffer, r: Rand): [Buffer, string] {
  if (r() < 0.3) return mutate(file, r);
  const n = Number(file.readBigUInt64LE(0));
  const [header, how] = mutate(file.subarray(8, 8 + n), r);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  return [Buffer.concat([len, header, file.subarray(8 + n)]), `header ${how}`];
}

interface Outcome {
  loaded: number;
  refused: number;
  slowestMs: number;
  problems: string[];
}

/**
 * Runs `cases` mutations through `load`; a problem is anything thrown that is not an Error, or an
 * Error that does not name `mustName` (the file or folder).
 */
async function fuzz(
  seed: number,
  cases: number,
  make: (r: Rand) => [Buffer, string],
  write: (bytes: Buffer) => void,
  load: () => unknown,
  mustName: string,
): Promise<Outcome> {
  const r = rng(seed);
  const out: Outcome = { loaded: 0, refused: 0, slowestMs: 0, problems: [] };
  for (let i = 0; i < cases; i++) {
    const [bytes, how] = make(r);
    write(bytes);
    const start = Date.now();
    try {
      await load();
      out.loaded++;
    } catch (e) {
      out.refused++;
      if (!util.types.isNativeError(e)) out.problems.push(`case ${i} (${how}): threw ${util.inspect(e)}`);
      else if (!e.message.includes(mustName)) out.problems.push(`case ${i} (${how}): the error does not name ${mustName}: ${e.message}`);
    }
    out.slowestMs = Math.max(out.slowestMs, Date.now() - start);
  }
  return out;
}

const CONFIG: HFConfig = {
  architectures: ['LlamaForCausalLM'], vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1,
  num_attention_heads: 2, num_key_value_heads: 1, rms_norm_eps: 1e-5, rope_theta: 500000, max_position_embeddings: 64,
  rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  bos_token_id: 0, eos_token_id: [1, 2], tie_word_embeddings: false,
};
const modelDir = path.join(tmp, 'model');
Model.fromConfig(CONFIG, { seed: 4 }).save(modelDir);
const configText = Buffer.from(JSON.stringify(CONFIG, null, 2));
const weightsBytes = fs.readFileSync(path.join(modelDir, 'model.safetensors'));
afterEach(() => {
  fs.writeFileSync(path.join(modelDir, 'config.json'), configText);
  fs.writeFileSync(path.join(modelDir, 'model.safetensors'), weightsBytes);
});

/** No problems, every case ran, enough of them broke the file, none took long. */
function expectClean(o: Outcome, cases: number): void {
  expect(o.problems).toEqual([]);
  expect(o.loaded + o.refused).toBe(cases);
  expect(o.refused).toBeGreaterThan(cases / 4); // the mutations do break things
  expect(o.slowestMs).toBeLessThan(5000);
}

test('safetensors: 300 mutations of a file with several dtypes and metadata', async () => {
  const file = path.join(tmp, 'mixed.safetensors');
  saveSafetensors(
    file,
    {
      w: Tensor.from([[1, -2, 3], [0.5, 1e-3, -0]]),
      b: Tensor.from([1, 2, 3, 4], undefined, { dtype: 'bfloat16' }),
      i: Tensor.from([-(2n ** 63n), 5n]),
      u: Tensor.from(Uint8Array.from([0, 7, 255]), [3]),
      f: Tensor.from([1, 0], undefined, { dtype: 'bool' }),
      'model.layers.0.mlp.up_proj.weight': Tensor.from([2.5], [], { dtype: 'float64' }),
    },
    { format: 'pt', note: 'fuzz' },
  );
  const bytes = fs.readFileSync(file);
  const o = await fuzz(1, 300, (r) => mutateSafetensors(bytes, r), (b) => fs.writeFileSync(file, b), () => loadSafetensors(file), file);
  expectClean(o, 300);
});

test('model.safetensors: 120 mutations loaded by Model.fromPretrained', async () => {
  const file = path.join(modelDir, 'model.safetensors');
  const o = await fuzz(2, 120, (r) => mutateSafetensors(weightsBytes, r), (b) => fs.writeFileSync(file, b), () => Model.fromPretrained(modelDir), modelDir);
  expectClean(o, 120);
});

test('config.json: 200 mutations; a config that loads gives finite logits', async () => {
  const file = path.join(modelDir, 'config.json');
  const nonFinite: string[] = [];
  const o = await fuzz(
    3,
    200,
    (r) => mutate(configText, r),
    (b) => fs.writeFileSync(file, b),
    async () => {
      const m = await Model.fromPretrained(modelDir);
      const logits = (await m.forward([[0, 5, 9, 31]])).data() as Float32Array;
      if (!logits.every(Number.isFinite)) nonFinite.push(fs.readFileSync(file, 'utf8'));
    },
    modelDir,
  );
  expectClean(o, 200);
  expect(nonFinite).toEqual([]);
});

// A byte-level BPE (as Qwen2 and Llama 3) with a normalizer, added tokens and a template.
const special = (id: number, content: string): object => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
const TOKENIZER = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [special(18, '<s>'), special(19, '</s>')],
  normalizer: { type: 'NFC' },
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [18], tokens: ['<s>'] } },
  },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false,
    vocab: { '!': 0, d: 1, e: 2, h: 3, l: 4, o: 5, r: 6, w: 7, 'Ġ': 8, he: 9, ll: 10, hell: 11, hello: 12, 'Ġw': 13, or: 14, 'Ġwor': 15, ld: 16, 'Ġworld': 17 },
    merges: [['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['l', 'd'], ['Ġwor', 'ld']],
  },
};

test('tokenizer.json: 200 mutations, each loaded tokenizer also encodes and decodes', async () => {
  const dir = path.join(tmp, 'tokenizer');
  fs.mkdirSync(dir);
  const file = path.join(dir, 'tokenizer.json');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }));
  const text = Buffer.from(JSON.stringify(TOKENIZER, null, 1));
  fs.writeFileSync(file, text);
  expect(Tokenizer.fromFile(file).encode('hello world!')).toEqual([18, 12, 17, 0]);
  let used = 0;
  const o = await fuzz(4, 200, (r) => mutate(text, r), (b) => fs.writeFileSync(file, b), () => Tokenizer.fromFile(file), file);
  expectClean(o, 200);
  // What loads also works, or refuses with an Error (encode needs ids for what it meets).
  const r = rng(5);
  for (let i = 0; i < 60; i++) {
    fs.writeFileSync(file, mutate(text, r)[0]);
    let tok: Tokenizer;
    try {
      tok = Tokenizer.fromFile(file);
    } catch {
      continue;
    }
    used++;
    try {
      tok.decode(tok.encode('hello world! é'));
    } catch (e) {
      expect(util.types.isNativeError(e)).toBe(true);
    }
  }
  expect(used).toBeGreaterThan(0);
});
