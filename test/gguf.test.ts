// GGUF export (lib/gguf/): the file format byte for byte as the specification lays it out and
// read back; float16, bfloat16 and Q8_0 encodings, LLaMA's q/k row permutation and llama3's rope
// factors against Python references (torch, and the converter's own code); the tokenizer as
// tokenizer.ggml.* metadata; refusals. Then the exported files in node-llama-cpp (llama.cpp): from
// the same prompt ids it greedily generates the tokens Model.generate does and gives the same
// next-token distributions, for the demo base with a trained LoRA merged and for small LLaMA and
// Qwen2 models with BPE tokenizers; a GGUF LoRA adapter over the base file equals the merged file.
// Those skip, saying how to install node-llama-cpp, where it is absent or its binary cannot load.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, ByteTokenizer, exportGguf, exportGgufLora, HFConfig, Model, MultiTaskDataset, Tokenizer, Trainer } from '../lib';
import { decodeTensor, encodeTensor, fromFloat16Bits, GgufTensorInput, GgufValue, readGguf, readGgufTensor, toBfloat16Bits, toFloat16Bits, writeGguf } from '../lib/gguf/format';
import { permuteRows, ropeFreqs } from '../lib/gguf/llama';
import { tokenizerKind, tokenizerMetadata } from '../lib/gguf/tokenizer';
import { byteLevelBpe, sentencePieceBpe } from './helpers/bpe';
import { llamaCppProblem, LlamaCppResult, runLlamaCpp } from './helpers/llama-cpp';
import { randn } from './helpers/math';
import { requireTorchPython, runPython } from './helpers/python';
import { tempFolder } from './helpers/tiny-model';

const tmp = tempFolder('rlora-gguf-');
const CLI = path.join(__dirname, '..', 'lib', 'cli.ts');
const rlora = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8' });
const DEMO = path.join(__dirname, '..', 'examples', 'demo', 'base');

const problem = llamaCppProblem();
if (problem) console.warn(`test/gguf.test.ts: the tests that run exported files in node-llama-cpp are skipped: ${problem}`);
const withLlamaCpp = problem ? describe.skip : describe;

const meta = (file: string, key: string): unknown => readGguf(file).metadata.get(key)?.value;
const f32 = (a: ArrayLike<number>): Float32Array => Float32Array.from(a);

describe('the GGUF format (lib/gguf/format.ts)', () => {
  it('lays out header, metadata, tensor infos and aligned data byte for byte as the specification says', () => {
    const file = path.join(tmp, 'tiny.gguf');
    writeGguf(file, [['a', { type: 'uint32', value: 7 }]], [{ name: 't', shape: [2], type: 'F32', data: () => f32([1, 2]) }]);
    const u64 = (n: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); return b; };
    const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
    const str = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);
    const head = Buffer.concat([
      Buffer.from('GGUF'), u32(3), u64(1), u64(1), // magic, version, tensors, metadata entries
      str('a'), u32(4), u32(7), // key, type uint32 (4), value
      str('t'), u32(1), u64(2), u32(0), u64(0), // name, dimensions, ne[0], type F32 (0), offset
    ]);
    const data = Buffer.alloc(8);
    data.writeFloatLE(1, 0);
    data.writeFloatLE(2, 4);
    const want = Buffer.concat([head, Buffer.alloc(32 - (head.length % 32)), data, Buffer.alloc(24)]);
    expect(fs.readFileSync(file)).toEqual(want);
  });

  it('reads back every metadata type, arrays, dimensions in PyTorch order, each tensor type, and a custom alignment', () => {
    const md: [string, GgufValue][] = [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['u8', { type: 'uint8', value: 255 }], ['i8', { type: 'int8', value: -128 }], ['u16', { type: 'uint16', value: 65535 }],
      ['i16', { type: 'int16', value: -32768 }], ['u32', { type: 'uint32', value: 4294967295 }], ['i32', { type: 'int32', value: -2147483648 }],
      ['f32', { type: 'float32', value: 0.5 }], ['f64', { type: 'float64', value: Math.PI }], ['b', { type: 'bool', value: true }],
      ['u64', { type: 'uint64', value: 2n ** 64n - 1n }], ['i64', { type: 'int64', value: -(2n ** 63n) }],
      ['strings', { type: 'array', itemType: 'string', value: ['a', 'ü ▁', ''] }], ['ints', { type: 'array', itemType: 'int32', value: [1, -2] }],
      ['none', { type: 'array', itemType: 'string', value: [] }], ['floats', { type: 'array', itemType: 'float32', value: [0.25, -1] }],
    ];
    const vals = (n: number, seed: number) => f32(randn(n, seed));
    const w = { f: vals(15, 1), h: vals(64, 2), b: vals(4, 3), q: vals(128, 4) };
    const tensors: GgufTensorInput[] = [
      { name: 'f', shape: [3, 5], type: 'F32', data: () => w.f },
      { name: 'h', shape: [2, 32], type: 'F16', data: () => w.h },
      { name: 'b', shape: [4], type: 'BF16', data: () => w.b },
      { name: 'q', shape: [2, 2, 32], type: 'Q8_0', data: () => w.q },
    ];
    for (const alignment of [32, 64]) {
      const file = path.join(tmp, `all-${alignment}.gguf`);
      writeGguf(file, md, tensors, { alignment });
      const g = readGguf(file);
      expect(g.version).toBe(3);
      expect(g.alignment).toBe(alignment);
      expect(new Map([...g.metadata].filter(([k]) => k !== 'general.alignment'))).toEqual(new Map(md));
      expect(g.metadata.get('general.alignment')).toEqual(alignment === 32 ? undefined : { type: 'uint32', value: 64 });
      expect(g.tensors.map((t) => [t.name, t.shape, t.type])).toEqual(tensors.map((t) => [t.name, t.shape, t.type]));
      expect(g.dataOffset % alignment).toBe(0);
      for (const t of g.tensors) expect(t.offset % alignment).toBe(0);
      expect(readGgufTensor(g, 'f')).toEqual(w.f);
      expect(readGgufTensor(g, 'h')).toEqual(f32(Array.from(w.h, (v) => fromFloat16Bits(toFloat16Bits(v)))));
      expect(readGgufTensor(g, 'b')).toEqual(decodeTensor('BF16', encodeTensor('BF16', w.b, 4), 4));
      // Q8_0 keeps each value within half a step (its block's max / 127), plus the rounding of the scale to float16
      const q = readGgufTensor(g, 'q');
      for (let blk = 0; blk < 4; blk++) {
        const x = w.q.subarray(blk * 32, blk * 32 + 32);
        const step = Math.max(...Array.from(x, Math.abs)) / 127;
        x.forEach((v, j) => expect(Math.abs(q[blk * 32 + j] - v)).toBeLessThanOrEqual(step * (0.5 + 127 * 2 ** -11)));
      }
      expect(fs.statSync(file).size).toBe(g.tensors[3].offset + Math.ceil(4 * 34 / alignment) * alignment);
    }
  });

  it('float16, bfloat16 and Q8_0 encode as torch and ggml (Python reference: torch casts; quantize_row_q8_0_ref in float32)', () => {
    requireTorchPython();
    // ordinary values, rounding ties, float16's subnormals and overflow, zeros and infinities
    const special = [0, -0, 1, -1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519, 65520, -70000, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 2 ** -14 - 2 ** -25, 1e-8, 1.00390625, 1.01171875, 3.4e38, Infinity, -Infinity];
    const values = f32([...special, ...randn(256, 7, 3), ...randn(64, 8, 1e-5)]);
    const bits = Array.from(new Uint32Array(values.buffer));
    const ours = {
      f16: Array.from(values, toFloat16Bits),
      bf16: Array.from(values, toBfloat16Bits),
      q8: Array.from(encodeTensor('Q8_0', values.subarray(0, 320), 320)),
    };
    const ref = runPython<{ f16: number[]; bf16: number[]; q8: number[] }>(
      `
import numpy as np, torch
v = torch.from_numpy(np.array(INP['bits'], dtype=np.uint32).view(np.float32).copy())
f16 = (v.half().view(torch.int16).long() & 0xffff).tolist()
bf16 = (v.bfloat16().view(torch.int16).long() & 0xffff).tolist()
# ggml's quantize_row_q8_0_ref: d = amax / 127 (float32), id = 1/d, q = roundf(x * id), d stored as float16
blocks = v[:320].reshape(-1, 32)
d = blocks.abs().max(dim=1).values / 127
idv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
x = (blocks * idv[:, None]).double()
q = torch.where(x >= 0, torch.floor(x + 0.5), -torch.floor(-x + 0.5)).to(torch.int8)
out = []
for b in range(blocks.shape[0]):
    out += list(d[b:b+1].half().numpy().tobytes()) + list(q[b].numpy().tobytes())
print(json.dumps({'f16': f16, 'bf16': bf16, 'q8': out}))
`,
      { bits },
    );
    expect(ours.f16).toEqual(ref.f16);
    expect(ours.bf16).toEqual(ref.bf16);
    expect(ours.q8).toEqual(ref.q8);
  });

  it('refuses what llama.cpp would not read, and a failed write leaves no file behind', () => {
    const file = path.join(tmp, 'refused.gguf');
    const t = (o: Partial<GgufTensorInput>): GgufTensorInput => ({ name: 'w', shape: [2, 32], type: 'F32', data: () => new Float32Array(64), ...o });
    expect(() => writeGguf(file, [], [t({ type: 'Q8_0', shape: [2, 48] })])).toThrow('GGUF tensor w: Q8_0 needs rows whose length is a multiple of 32, got 48');
    expect(() => writeGguf(file, [], [t({}), t({})])).toThrow('GGUF tensor w is given twice');
    expect(() => writeGguf(file, [], [t({ name: 'x'.repeat(64) })])).toThrow(/must be 1 to 63 bytes/);
    expect(() => writeGguf(file, [['k', { type: 'uint8', value: 256 }]], [])).toThrow('GGUF metadata k: 256 is not a uint8 (0..255)');
    expect(() => writeGguf(file, [['k', { type: 'string', value: 'a' }], ['k', { type: 'string', value: 'b' }]], [])).toThrow('GGUF metadata key k is given twice');
    expect(() => writeGguf(file, [], [], { alignment: 48 })).toThrow('GGUF alignment must be a power of 2, got 48');
    expect(fs.existsSync(file)).toBe(false);
    // a file already there stays whole when a write fails halfway (a tensor's values cannot be had)
    writeGguf(file, [['k', { type: 'string', value: 'old' }]], []);
    const before = fs.readFileSync(file);
    expect(() => writeGguf(file, [], [t({}), t({ name: 'v', data: () => { throw new Error('no values'); } })])).toThrow('no values');
    expect(() => writeGguf(file, [], [t({ data: () => new Float32Array(3) })])).toThrow('GGUF tensor w: expected 64 float32 values for shape [2,32], got 3');
    expect(fs.readFileSync(file)).toEqual(before);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('refused.gguf.tmp'))).toEqual([]);
  });

  it('refuses a file that is not GGUF, or cut short, naming the file', () => {
    const bad = path.join(tmp, 'bad.gguf');
    fs.writeFileSync(bad, 'PK\u0003\u0004 not gguf at all');
    expect(() => readGguf(bad)).toThrow(`${bad} is not a valid GGUF file: it starts with 0x04034b50, not "GGUF"`);
    const whole = fs.readFileSync(path.join(tmp, 'all-32.gguf'));
    fs.writeFileSync(bad, whole.subarray(0, 300));
    expect(() => readGguf(bad)).toThrow(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not a valid GGUF file: .*runs past the end of the file`));
    fs.writeFileSync(bad, whole.subarray(0, whole.length - 40));
    expect(() => readGguf(bad)).toThrow(/tensor q's data \(136 bytes at \d+\) runs past the end of the file/);
  });
});

describe('names and layouts (lib/gguf/llama.ts) against convert_hf_to_gguf.py', () => {
  it("permutes q/k rows (weights, biases, lora_B) and computes llama3's rope factors as the converter's Python does", () => {
    requireTorchPython();
    const cases = [{ rows: 64, cols: 6, heads: 4 }, { rows: 32, cols: 3, heads: 2 }, { rows: 32, cols: 1, heads: 2 }];
    const inputs = cases.map((c, i) => Array.from(randn(c.rows * c.cols, 20 + i)));
    const rope = { ropeTheta: 500000, headDim: 64, ropeScaling: { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } };
    const ref = runPython<{ permuted: number[][]; freqs: number[] }>(
      `
import math, torch
def permute(weights, n_head, n_head_kv):  # convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape))
permuted = []
for c, x in zip(INP['cases'], INP['inputs']):
    w = torch.tensor(x, dtype=torch.float32).reshape(c['rows'], c['cols'])
    if c['cols'] == 1: w = w.reshape(c['rows'])
    permuted.append(permute(w, 99, c['heads']).reshape(-1).tolist())
# LlamaModel.generate_extra_tensors
base, dim, s = 500000.0, 64, INP['rope']
freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
factor, low_freq_factor, high_freq_factor, old_context_len = s['factor'], s['lowFreqFactor'], s['highFreqFactor'], s['originalMaxPositionEmbeddings']
low_freq_wavelen = old_context_len / low_freq_factor
high_freq_wavelen = old_context_len / high_freq_factor
rope_factors = []
for freq in freqs:
    wavelen = 2 * math.pi / freq
    if wavelen < high_freq_wavelen:
        rope_factors.append(1)
    elif wavelen > low_freq_wavelen:
        rope_factors.append(factor)
    else:
        smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        rope_factors.append(1 / ((1 - smooth) / factor + smooth))
print(json.dumps({'permuted': permuted, 'freqs': torch.tensor(rope_factors, dtype=torch.float32).tolist()}))
`,
      { cases, inputs, rope: rope.ropeScaling },
    );
    cases.forEach((c, i) => expect(Array.from(permuteRows(f32(inputs[i]), c.rows, c.cols, c.heads))).toEqual(Array.from(f32(ref.permuted[i]))));
    const ours = ropeFreqs(rope as never)!;
    expect(ours.length).toBe(32);
    ours.forEach((v, k) => expect(Math.abs(v - ref.freqs[k])).toBeLessThanOrEqual(1e-6 * Math.abs(ref.freqs[k])));
    expect(new Set(ours).size).toBeGreaterThan(3); // ones, the factor, and smoothed values between
  });
});

describe('the tokenizer as GGUF metadata (lib/gguf/tokenizer.ts)', () => {
  const kv = (entries: [string, GgufValue][]): Map<string, unknown> => new Map(entries.map(([k, v]) => [k, v.value]));

  it('the byte tokenizer: a gpt2 vocabulary of 256 byte characters without merges, its three specials as control tokens', () => {
    const m = kv(tokenizerMetadata(new ByteTokenizer(), 259));
    expect(m.get('tokenizer.ggml.model')).toBe('gpt2');
    expect(m.get('tokenizer.ggml.pre')).toBe('gpt-2');
    const tokens = m.get('tokenizer.ggml.tokens') as string[];
    expect(tokens.slice(256)).toEqual(['<bos>', '<eos>', '<pad>']);
    expect([tokens[32], tokens[65], tokens[10]]).toEqual(['Ġ', 'A', 'Ċ']); // GPT-2's characters for space, A, newline
    expect(m.get('tokenizer.ggml.token_type')).toEqual([...new Array(256).fill(1), 3, 3, 3]);
    expect(m.get('tokenizer.ggml.merges')).toEqual([]);
    expect([m.get('tokenizer.ggml.bos_token_id'), m.get('tokenizer.ggml.eos_token_id'), m.get('tokenizer.ggml.padding_token_id')]).toEqual([256, 257, 258]);
    expect([m.get('tokenizer.ggml.add_bos_token'), m.get('tokenizer.ggml.add_eos_token')]).toEqual([false, false]);
    expect(kv(tokenizerMetadata(new ByteTokenizer({ addBos: true }), 300)).get('tokenizer.ggml.add_bos_token')).toBe(true);
    // ids the model has beyond the tokenizer's are unused placeholders, as the converter writes them
    expect((kv(tokenizerMetadata(new ByteTokenizer(), 261)).get('tokenizer.ggml.tokens') as string[]).slice(259)).toEqual(['[PAD259]', '[PAD260]']);
    expect(() => tokenizerMetadata(new ByteTokenizer(), 200)).toThrow(`ByteTokenizer: token "È" has id 200, beyond the model's vocab_size 200: the tokenizer does not belong to this model`);
  });

  it('SentencePiece-style BPE as a llama vocabulary: byte tokens, scores in merge order, the space prefix; byte-level BPE with its pre-tokenizer', () => {
    const spm = sentencePieceBpe(120);
    const tok = Tokenizer.fromJSON(spm.json, spm.config as never);
    const m = kv(tokenizerMetadata(tok, tok.vocabSize));
    expect(m.get('tokenizer.ggml.model')).toBe('llama');
    const tokens = m.get('tokenizer.ggml.tokens') as string[];
    const types = m.get('tokenizer.ggml.token_type') as number[];
    const scores = m.get('tokenizer.ggml.scores') as number[];
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(types.slice(0, 5)).toEqual([2, 3, 3, 6, 6]);
    expect(types.filter((t) => t === 6).length).toBe(256);
    expect(m.get('tokenizer.ggml.merges')).toBeUndefined();
    // a piece's score is minus the rank of its first merge: the first merge's piece scores 0, later ones less
    const merges = (spm.json.model as { merges: string[] }).merges;
    const firstPiece = merges[0].replace(' ', '');
    expect(scores[tokens.indexOf(firstPiece)]).toBe(0);
    const lastPiece = merges[merges.length - 1].replace(' ', '');
    expect(scores[tokens.indexOf(lastPiece)]).toBe(-merges.findIndex((x) => x.replace(' ', '') === lastPiece));
    expect(m.get('tokenizer.ggml.add_space_prefix')).toBe(true);
    expect([m.get('tokenizer.ggml.add_bos_token'), m.get('tokenizer.ggml.bos_token_id'), m.get('tokenizer.ggml.unknown_token_id')]).toEqual([true, 1, 0]);
    expect(m.get('tokenizer.chat_template')).toBe(spm.config.chat_template);

    const bpe = byteLevelBpe(50);
    const b = kv(tokenizerMetadata(Tokenizer.fromJSON(bpe.json, bpe.config as never), 400));
    expect([b.get('tokenizer.ggml.model'), b.get('tokenizer.ggml.pre')]).toEqual(['gpt2', 'qwen2']);
    expect(b.get('tokenizer.ggml.merges')).toEqual((bpe.json.model as { merges: string[] }).merges);
    expect([b.get('tokenizer.ggml.eos_token_id'), b.get('tokenizer.ggml.bos_token_id'), b.get('tokenizer.ggml.add_bos_token')]).toEqual([308, undefined, false]);
  });

  it('refuses tokenizers llama.cpp would split differently, saying why', () => {
    const bpe = byteLevelBpe(20).json as Record<string, unknown>;
    const w = 'T';
    const withPre = (pre: unknown) => ({ ...bpe, pre_tokenizer: pre });
    expect(() => tokenizerKind({ ...bpe, model: { type: 'Unigram', vocab: [] } }, w)).toThrow('T: a Unigram tokenizer cannot be exported to GGUF yet');
    expect(() => tokenizerKind(withPre({ type: 'ByteLevel', add_prefix_space: true, use_regex: true }), w)).toThrow('T: its ByteLevel pre-tokenizer adds a space before the text (add_prefix_space)');
    expect(() => tokenizerKind(withPre({ type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '\\w+' } }, { type: 'ByteLevel', use_regex: false }] }), w)).toThrow('T: its pre-tokenizer regex "\\\\w+" is none that llama.cpp implements');
    expect(() => tokenizerKind({ ...bpe, normalizer: { type: 'Lowercase' } }, w)).toThrow('T: its normalizer Lowercase has no counterpart');
    expect(() => tokenizerKind({ ...bpe, pre_tokenizer: { type: 'Whitespace' } }, w)).toThrow('T: its tokenizer.json is neither byte-level BPE');
    // GPT-2's regex alone is the ByteLevel pre-tokenizer's own
    expect(tokenizerKind(withPre({ type: 'ByteLevel', add_prefix_space: false, use_regex: true }), w)).toEqual({ model: 'gpt2', pre: 'gpt-2' });
  });
});

/** The softmax of each row of `logits` ([rows, vocab] flat) from row `from` on. */
function softmaxRows(logits: Float32Array, vocab: number, from: number, rows: number): number[][] {
  const out: number[][] = [];
  for (let i = from; i < rows; i++) {
    const row = logits.subarray(i * vocab, (i + 1) * vocab);
    let mx = -Infinity;
    for (const v of row) mx = Math.max(mx, v);
    let z = 0;
    for (const v of row) z += Math.exp(v - mx);
    out.push(Array.from(row, (v) => Math.exp(v - mx) / z));
  }
  return out;
}
const maxDiff = (a: number[][], b: number[][]): number => a.reduce((m, row, i) => row.reduce((mm, v, k) => Math.max(mm, Math.abs(v - b[i][k])), m), 0);

/** What rlora computes for a prompt: 16 greedy tokens and the next-token distributions along prompt + tokens. */
async function reference(model: Model, prompt: number[]): Promise<{ tokens: number[]; all: number[]; probs: number[][] }> {
  const [row] = await model.generate([prompt], { maxNewTokens: 16, eosTokenId: model.resolvedConfig.vocabSize + 1 });
  const logits = (await model.forward([row])).data() as Float32Array;
  return { tokens: row.slice(prompt.length), all: row, probs: softmaxRows(logits, model.resolvedConfig.vocabSize, prompt.length - 1, row.length) };
}

const job = (model: string, prompt: number[], ref: { all: number[] }, vocab: number, extra: { lora?: string; tokenize?: string[] } = {}) => ({
  model, ...extra, generate: { prompt, count: 16 }, probabilities: { tokens: ref.all, from: prompt.length - 1, vocab },
});

const TEXTS = [
  'Call me Ishmael.', 'Some years ago—never mind how long precisely—having little or no money in my purse,',
  "It's a way I have of driving off the spleen. I'll go!", 'numbers 1234 and 3.14;  two  spaces\nnew line\n\nend', 'Café naïve 🐳 whale, 鯨', '  leading and trailing  ',
];

withLlamaCpp('exported files in node-llama-cpp (llama.cpp)', () => {
  jest.setTimeout(300_000);

  it('the demo base with a trained LoRA merged: f32 16 of 16 greedy tokens, f16/bf16/q8_0 within stated tolerances, the same ids for text; the LoRA file over the base file equals the merged file', async () => {
    const tok = Tokenizer.fromFile(DEMO);
    const base = await Model.fromPretrained(DEMO);
    const adapter = Adapter.attach(base, { method: 'lora', rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 1 });
    const words = ['whale', 'sea', 'ship', 'harpoon', 'captain', 'sailor', 'boat', 'wind'];
    const ds = MultiTaskDataset.fromArray(words.map((w) => ({ task: 'upper', prompt: `up ${w}:`, response: ` ${w.toUpperCase()}` })), { tokenizer: tok, maxLength: 32 });
    await new Trainer(base, adapter, { learningRate: 1e-2, maxSteps: 30, batchSize: 4, seed: 1, progress: false }).fit(ds);
    const adapterDir = path.join(tmp, 'demo-lora');
    adapter.save(adapterDir);
    const loraFile = path.join(tmp, 'demo-lora.gguf');
    expect(exportGgufLora(adapter, loraFile)).toMatchObject({ architecture: 'llama', alpha: 8, ranks: new Array(42).fill(4), types: { F32: 84 } });
    adapter.merge();
    const files = Object.fromEntries((['f32', 'f16', 'bf16', 'q8_0'] as const).map((d) => [d, path.join(tmp, `demo-merged-${d}.gguf`)]));
    for (const [d, f] of Object.entries(files)) exportGguf(base, f, { tokenizer: tok, dtype: d as never, name: 'demo-upper', baseModel: { name: 'demo-base' } });
    const plain = await Model.fromPretrained(DEMO);
    const baseFile = path.join(tmp, 'demo-base.gguf');
    exportGguf(plain, baseFile, { tokenizer: tok });

    const prompt = tok.encode('up ocean:');
    const ref = await reference(base, prompt);
    const before = await reference(plain, prompt);
    // the training changed what the model says: a test that ignored the LoRA would fail
    expect(maxDiff(ref.probs, before.probs)).toBeGreaterThan(0.05);
    const r = await runLlamaCpp([
      job(files.f32, prompt, ref, 259, { tokenize: TEXTS }),
      job(files.f16, prompt, ref, 259), job(files.bf16, prompt, ref, 259), job(files.q8_0, prompt, ref, 259),
      job(baseFile, prompt, ref, 259, { lora: loraFile }),
    ]);
    const [f32r, f16r, bf16r, q8r, lorar] = r;
    expect(f32r.vocabulary).toEqual({ type: 'bpe', bos: 256, eos: 257 });
    expect(f32r.tokenize).toEqual(TEXTS.map((t) => tok.encode(t)));
    expect(f32r.generate).toEqual(ref.tokens);
    expect(maxDiff(f32r.probabilities!, ref.probs)).toBeLessThan(1e-4);
    expect(f16r.generate!.slice(0, 8)).toEqual(ref.tokens.slice(0, 8));
    expect(q8r.generate!.slice(0, 8)).toEqual(ref.tokens.slice(0, 8));
    // the stated tolerances: the largest difference in any next-token probability along the 16 tokens
    // (measured: f32 1.7e-6, f16 1.1e-3, bf16 9.1e-3, q8_0 2.2e-2; llama.cpp's q8_0 products also round the activations to 8 bits)
    expect(maxDiff(f16r.probabilities!, ref.probs)).toBeLessThan(5e-3);
    expect(maxDiff(bf16r.probabilities!, ref.probs)).toBeLessThan(2e-2);
    expect(maxDiff(q8r.probabilities!, ref.probs)).toBeLessThan(5e-2);
    expect(lorar.generate).toEqual(ref.tokens);
    expect(maxDiff(lorar.probabilities!, ref.probs)).toBeLessThan(1e-4);
    expect([meta(files.q8_0, 'general.name'), meta(files.q8_0, 'general.base_model.0.name'), meta(files.q8_0, 'general.file_type')]).toEqual(['demo-upper', 'demo-base', 7]);
    expect(readGguf(files.q8_0).tensors.find((t) => t.name === 'blk.0.ffn_down.weight')?.type).toBe('Q8_0');
    expect(readGguf(files.q8_0).tensors.find((t) => t.name === 'blk.0.ffn_norm.weight')?.type).toBe('F32');
    console.log(`demo base + LoRA: max |p - p_rlora| f32 ${maxDiff(f32r.probabilities!, ref.probs).toExponential(2)}, f16 ${maxDiff(f16r.probabilities!, ref.probs).toExponential(2)}, bf16 ${maxDiff(bf16r.probabilities!, ref.probs).toExponential(2)}, q8_0 ${maxDiff(q8r.probabilities!, ref.probs).toExponential(2)}, LoRA file ${maxDiff(lorar.probabilities!, ref.probs).toExponential(2)}; greedy tokens equal: f16 ${f16r.generate!.filter((t, i) => t === ref.tokens[i]).length}/16, bf16 ${bf16r.generate!.filter((t, i) => t === ref.tokens[i]).length}/16, q8_0 ${q8r.generate!.filter((t, i) => t === ref.tokens[i]).length}/16`);
  });

  const LLAMA: HFConfig = {
    architectures: ['LlamaForCausalLM'], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
    attention_bias: true, mlp_bias: true, max_position_embeddings: 512, rms_norm_eps: 1e-5, initializer_range: 0.3, vocab_size: 0,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
  };
  const QWEN2: HFConfig = {
    architectures: ['Qwen2ForCausalLM'], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
    tie_word_embeddings: true, max_position_embeddings: 512, rope_theta: 1e6, initializer_range: 0.3, vocab_size: 0,
  };

  for (const [arch, cfg, make] of [['LLaMA (SentencePiece-style tokenizer, GQA, biases, llama3 rope)', LLAMA, sentencePieceBpe], ['Qwen2 (byte-level BPE, tied embeddings)', QWEN2, byteLevelBpe]] as const) {
    it(`${arch}: f32 16 of 16 greedy tokens and the same ids for text; LoRA files (rsLoRA; an initial product removed) over the base file equal the merged files`, async () => {
      const { json, config } = make();
      const tok = Tokenizer.fromJSON(json, config as never);
      const V = tok.vocabSize;
      const base = Model.fromConfig({ ...cfg, vocab_size: V }, { seed: 3 });
      const key = cfg.architectures![0];
      const baseFile = path.join(tmp, `${key}.gguf`);
      exportGguf(base, baseFile, { tokenizer: tok });
      const prompt = tok.encode('Call me Ishmael. Some years ago', { addSpecialTokens: false });
      const ref = await reference(base, prompt);
      const jobs = [job(baseFile, prompt, ref, V, { tokenize: TEXTS })];
      const refs = [ref];
      // a LoRA with random B and rsLoRA; an R-LoRA single head, whose initial product the base loses (rank 2r in the file)
      const variants = [
        { method: 'lora' as const, rank: 4, alpha: 16, rankStabilization: true, init: { b: 'unit' as const, offset: false }, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', ...(cfg.tie_word_embeddings ? [] : ['lm_head'])], seed: 4 },
        { method: 'rlora' as const, heads: 1, rank: 2, alpha: 4, targetModules: ['q_proj', 'k_proj', 'down_proj'], seed: 5 },
      ];
      for (const [i, v] of variants.entries()) {
        const m = Model.fromConfig({ ...cfg, vocab_size: V }, { seed: 3 });
        const a = Adapter.attach(m, v);
        if (v.method === 'rlora') {
          // train it away from its start, so that B differs from the removed product's
          const words = ['whale', 'sea', 'ship', 'harpoon'];
          const ds = MultiTaskDataset.fromArray(words.map((w) => ({ task: 't', prompt: w, response: ` ${w}` })), { tokenizer: tok, maxLength: 32 });
          await new Trainer(m, a, { learningRate: 5e-2, maxSteps: 5, batchSize: 2, seed: 1, progress: false }).fit(ds);
        }
        const loraFile = path.join(tmp, `${key}-lora${i}.gguf`);
        const written = exportGgufLora(a, loraFile);
        expect(written.ranks!.every((r) => r === (v.method === 'rlora' ? 2 * v.rank : v.rank))).toBe(true);
        expect(written.alpha).toBeCloseTo(v.method === 'rlora' ? (v.alpha / Math.sqrt(v.rank)) * 2 * v.rank : (v.alpha / Math.sqrt(v.rank)) * v.rank, 5);
        a.merge();
        const merged = await reference(m, prompt);
        expect(maxDiff(merged.probs, ref.probs)).toBeGreaterThan(1e-3); // the adapter changes the model
        const mergedFile = path.join(tmp, `${key}-merged${i}.gguf`);
        exportGguf(m, mergedFile, { tokenizer: tok });
        jobs.push(job(mergedFile, prompt, merged, V), job(baseFile, prompt, merged, V, { lora: loraFile }));
        refs.push(merged, merged);
      }
      const results: LlamaCppResult[] = await runLlamaCpp(jobs);
      expect(results[0].tokenize).toEqual(TEXTS.map((t) => tok.encode(t, { addSpecialTokens: false })));
      results.forEach((r, i) => {
        expect({ job: i, tokens: r.generate }).toEqual({ job: i, tokens: refs[i].tokens });
        expect(maxDiff(r.probabilities!, refs[i].probs)).toBeLessThan(1e-4);
      });
      console.log(`${arch}: max |p - p_rlora| ${results.map((r, i) => maxDiff(r.probabilities!, refs[i].probs).toExponential(1)).join(', ')} (base, LoRA merged, LoRA file, R-LoRA merged, R-LoRA file)`);
    });
  }
});

describe('exportGguf and exportGgufLora refuse what they cannot write, saying why', () => {
  const TINY: HFConfig = { architectures: ['LlamaForCausalLM'], vocab_size: 259, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2 };
  const tok = new ByteTokenizer();
  const file = path.join(tmp, 'refused-model.gguf');

  it('an architecture no test model has checked, options, an attached adapter, a multi-head adapter', () => {
    const qwen3 = Model.fromConfig({ ...TINY, architectures: ['Qwen3ForCausalLM'], head_dim: 16 });
    expect(() => exportGguf(qwen3, file, { tokenizer: tok })).toThrow('GGUF export of Qwen3ForCausalLM is not supported yet: rlora exports LlamaForCausalLM and Qwen2ForCausalLM');
    const m = Model.fromConfig(TINY);
    expect(() => exportGguf(m, file, { tokenizer: tok, dtype: 'fp16' as never })).toThrow('exportGguf: dtype must be one of "f32", "f16", "bf16", "q8_0", got "fp16" (did you mean "f16"?)');
    expect(() => exportGguf(m, file, { tokenizer: tok, dtyp: 'f16' } as never)).toThrow('exportGguf: unknown option "dtyp" (did you mean "dtype"?)');
    expect(() => exportGguf(m, file, {} as never)).toThrow('exportGguf: tokenizer must be a Tokenizer or a ByteTokenizer, got undefined');
    const hydra = Adapter.attach(m, { method: 'hydralora', heads: 3, rank: 2, targetModules: ['q_proj'] });
    expect(() => exportGguf(m, file, { tokenizer: tok })).toThrow('exportGguf: the model has an adapter attached, which the file would leave out');
    expect(() => exportGgufLora(hydra, file)).toThrow('exportGgufLora: a hydralora adapter with 3 heads cannot be written as a LoRA: its router mixes the heads differently for every token');
    hydra.detach();
    expect(() => exportGgufLora(hydra, file)).toThrow('exportGgufLora: the adapter has been detached or merged');
    expect(fs.existsSync(file)).toBe(false);
  });
});

describe('rlora export', () => {
  jest.setTimeout(120_000);

  it('--format gguf with --adapter merges and writes what exportGguf writes; --format gguf-lora; refusals', async () => {
    const base = path.join(tmp, 'cli-base');
    const model = Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: 259, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 2 });
    model.save(base);
    const t = new ByteTokenizer().files();
    fs.writeFileSync(path.join(base, 'tokenizer.json'), JSON.stringify(t['tokenizer.json']));
    fs.writeFileSync(path.join(base, 'tokenizer_config.json'), JSON.stringify(t['tokenizer_config.json']));
    const lora = path.join(tmp, 'cli-lora'), hydra = path.join(tmp, 'cli-hydra');
    const a = Adapter.attach(model, { method: 'lora', rank: 2, alpha: 4, targetModules: ['q_proj', 'k_proj', 'up_proj'], init: { b: 'unit', offset: false }, seed: 3 });
    a.save(lora);
    a.merge();
    const want = path.join(tmp, 'cli-want.gguf');
    exportGguf(model, want, { tokenizer: Tokenizer.fromFile(base), dtype: 'f16' });
    const h = Adapter.attach(await Model.fromPretrained(base), { method: 'hydralora', heads: 2, rank: 2, targetModules: ['q_proj'] });
    h.save(hydra);

    const out = path.join(tmp, 'cli-out.gguf');
    const r = rlora(['export', '--format', 'gguf', '--model', base, '--adapter', lora, '--out', out, '--dtype', 'f16']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^wrote ${out}: llama model with ${lora} merged, 9 F16, 3 F32 tensors, \\d+\\.\\d+ kB\\n$`));
    const got = readGguf(out), exp = readGguf(want);
    expect([got.metadata.get('general.name')?.value, got.metadata.get('general.base_model.0.name')?.value]).toEqual(['cli-out', 'cli-base']);
    expect(got.tensors.map((x) => [x.name, x.shape, x.type])).toEqual(exp.tensors.map((x) => [x.name, x.shape, x.type]));
    for (const x of exp.tensors) expect(readGgufTensor(got, x.name)).toEqual(readGgufTensor(exp, x.name));

    const again = rlora(['export', '--format', 'gguf', '--model', base, '--out', out]);
    expect(again.status).toBe(1);
    expect(again.stderr).toBe(`rlora export: ${out} exists: pass --overwrite to replace it\n`);
    const refused = rlora(['export', '--format', 'gguf', '--model', base, '--adapter', hydra, '--out', path.join(tmp, 'hydra.gguf')]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^rlora export: .*cli-hydra is a hydralora adapter with 2 heads: it cannot be merged, because its router mixes the heads differently for every token/);
    expect(fs.existsSync(path.join(tmp, 'hydra.gguf'))).toBe(false);
    const usage = rlora(['export', '--format', 'ggml', '--model', base, '--out', out]);
    expect([usage.status, usage.stderr.split('\n')[0]]).toEqual([2, 'rlora export: --format must be gguf or gguf-lora, got "ggml"']);

    const loraOut = path.join(tmp, 'cli-lora.gguf');
    const l = rlora(['export', '--format', 'gguf-lora', '--model', base, '--adapter', lora, '--out', loraOut]);
    expect(l.stderr).toBe('');
    expect(l.stdout).toBe(`wrote ${loraOut}: llama LoRA adapter (alpha 4, rank 2), 6 F32 tensors, ${(fs.statSync(loraOut).size / 1024).toFixed(2)} kB\n`);
    const g = readGguf(loraOut);
    expect([...g.metadata].filter(([k]) => /^(general\.(type|architecture|base_model\.0\.name)|adapter\.)/.test(k)).map(([k, v]) => [k, v.value])).toEqual([
      ['general.architecture', 'llama'], ['general.type', 'adapter'], ['general.base_model.0.name', 'cli-base'], ['adapter.type', 'lora'], ['adapter.lora.alpha', 4],
    ]);
    expect(g.tensors.map((x) => [x.name, x.shape])).toEqual([
      ['blk.0.attn_q.weight.lora_a', [2, 32]], ['blk.0.attn_q.weight.lora_b', [32, 2]], ['blk.0.attn_k.weight.lora_a', [2, 32]], ['blk.0.attn_k.weight.lora_b', [32, 2]],
      ['blk.0.ffn_up.weight.lora_a', [2, 32]], ['blk.0.ffn_up.weight.lora_b', [64, 2]],
    ]);
  });
});
