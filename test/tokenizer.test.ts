// Tokenizers: small tokenizer.json files built by hand here (a byte-level BPE like Qwen2 and
// Llama 3, a SentencePiece-style BPE with byte fallback like Llama 2 and Mistral, a WordLevel),
// with every id worked out by hand from their merges; and the ByteTokenizer.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as util from 'util';

import { ByteTokenizer, TextTokenizer, Tokenizer, TokenizerConfig } from '../lib/tokenizer';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-tokenizer-test-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Writes `files` (name -> JSON value, or raw text) into a new folder under the temp dir. */
function folder(name: string, files: Record<string, unknown>): string {
  const d = path.join(dir, name);
  fs.mkdirSync(d, { recursive: true });
  for (const [file, content] of Object.entries(files)) {
    fs.writeFileSync(path.join(d, file), typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  }
  return d;
}

const added = (id: number, content: string): object => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});

const bosTemplate = (bos: string, id: number): object => ({
  type: 'TemplateProcessing',
  single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
  pair: [
    { SpecialToken: { id: bos, type_id: 0 } },
    { Sequence: { id: 'A', type_id: 0 } },
    { SpecialToken: { id: bos, type_id: 1 } },
    { Sequence: { id: 'B', type_id: 1 } },
  ],
  special_tokens: { [bos]: { id: bos, ids: [id], tokens: [bos] } },
});

// Byte-level BPE (GPT-2, Qwen2, Llama 3): the pre-tokenizer splits words with their leading space
// and maps bytes to printable characters (space -> 'Ġ'); merges apply in rank order.
const BYTE_LEVEL = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [added(17, '<|bos|>'), added(18, '<|eos|>'), added(19, '<|pad|>')],
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: bosTemplate('<|bos|>', 17),
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    // prettier-ignore
    vocab: { '!': 0, d: 1, e: 2, h: 3, l: 4, o: 5, r: 6, w: 7, 'Ġ': 8, he: 9, ll: 10, hell: 11, hello: 12, 'Ġw': 13, or: 14, 'Ġwor': 15, ld: 16 },
    // ranks 0..7
    merges: [['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['l', 'd']],
  },
};
const BYTE_LEVEL_CONFIG = { bos_token: '<|bos|>', eos_token: '<|eos|>', pad_token: '<|pad|>', clean_up_tokenization_spaces: false };

// SentencePiece-style BPE (Llama 2, Mistral): '▁' marks spaces (and is put in front of the text),
// characters missing from the vocabulary fall back to their UTF-8 bytes <0x00>..<0xFF> (ids 3..258).
const spVocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
for (let b = 0; b < 256; b++) spVocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
['▁', 'h', 'e', 'l', 'o', 'w', 'r', 'd', '▁h', 'll', '▁he', '▁hell', '▁hello', '▁w'].forEach((p, i) => (spVocab[p] = 259 + i));
const SENTENCEPIECE = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [added(0, '<unk>'), added(1, '<s>'), added(2, '</s>')],
  normalizer: {
    type: 'Sequence',
    normalizers: [
      { type: 'Prepend', prepend: '▁' },
      { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
    ],
  },
  pre_tokenizer: null,
  post_processor: bosTemplate('<s>', 1),
  decoder: {
    type: 'Sequence',
    decoders: [
      { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
      { type: 'Strip', content: ' ', start: 1, stop: 0 },
    ],
  },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: '<unk>',
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: true,
    ignore_merges: false,
    vocab: spVocab,
    merges: ['▁ h', 'l l', '▁h e', '▁he ll', '▁hell o', '▁ w'], // old "a b" format
  },
};
// As Llama 2 writes it: special tokens as serialized AddedTokens, add_bos_token set.
const SENTENCEPIECE_CONFIG = {
  add_bos_token: true,
  add_eos_token: false,
  bos_token: { __type: 'AddedToken', content: '<s>', lstrip: false, normalized: false, rstrip: false, single_word: false },
  eos_token: { __type: 'AddedToken', content: '</s>', lstrip: false, normalized: false, rstrip: false, single_word: false },
  pad_token: null,
  unk_token: { __type: 'AddedToken', content: '<unk>', lstrip: false, normalized: false, rstrip: false, single_word: false },
  clean_up_tokenization_spaces: false,
  legacy: false,
  model_max_length: 1000000000000000019884624838656,
  tokenizer_class: 'LlamaTokenizer',
};

const WORD_LEVEL = {
  version: '1.0',
  added_tokens: [added(4, '[PAD]')],
  normalizer: null,
  pre_tokenizer: { type: 'Whitespace' },
  post_processor: null,
  decoder: null,
  model: { type: 'WordLevel', vocab: { '[UNK]': 0, hello: 1, world: 2, '!': 3 }, unk_token: '[UNK]' },
};

describe('Tokenizer: byte-level BPE', () => {
  let tok: Tokenizer;
  let tokDir: string;
  beforeAll(() => {
    tokDir = folder('byte-level', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': BYTE_LEVEL_CONFIG });
    tok = Tokenizer.fromFile(path.join(tokDir, 'tokenizer.json'));
  });

  test('vocabulary and special tokens from tokenizer_config.json', () => {
    expect(tok.vocabSize).toBe(20);
    expect(tok.modelType).toBe('BPE');
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([17, 18, 19]);
    expect([tok.bosToken, tok.eosToken, tok.padToken]).toEqual(['<|bos|>', '<|eos|>', '<|pad|>']);
    expect(tok.tokenToId('Ġwor')).toBe(15);
    expect(tok.tokenToId('<|eos|>')).toBe(18);
    expect(tok.tokenToId('nope')).toBeUndefined();
    expect(tok.idToToken(16)).toBe('ld');
    expect(tok.idToToken(19)).toBe('<|pad|>');
    expect(tok.idToToken(20)).toBeUndefined();
    expect(tok.idToToken(-1)).toBeUndefined();
    expect(tok.idToToken(1.5)).toBeUndefined();
  });

  test('encode follows the merges, worked out by hand', () => {
    const raw = (s: string): number[] => tok.encode(s, { addSpecialTokens: false });
    // "hello": h e l l o -> he l l o (rank 0) -> he ll o (1) -> hell o (2) -> hello (3)
    // " world" -> Ġworld: Ġw (4), or (5), Ġwor (6), ld (7) -> Ġwor ld
    expect(raw('hello world')).toEqual([12, 15, 16]);
    expect(raw('hello!')).toEqual([12, 0]);
    expect(raw('held')).toEqual([9, 16]); // he ld
    expect(raw('world')).toEqual([7, 14, 16]); // w or ld: no leading space, so no Ġw
    expect(raw(' hello')).toEqual([8, 12]); // Ġ hello: no merge of Ġ with h
    expect(raw('hello !')).toEqual([12, 8, 0]);
    expect(raw('')).toEqual([]);
    // special tokens written in the text are recognized
    expect(raw('<|bos|>hello')).toEqual([17, 12]);
    expect(raw('hello world<|eos|>')).toEqual([12, 15, 16, 18]);
  });

  test('special tokens: the post-processor adds bos; addBos/addEos override', () => {
    expect(tok.encode('hello world')).toEqual([17, 12, 15, 16]);
    expect(tok.encode('')).toEqual([17]);
    expect(tok.encode('hello world', { addEos: true })).toEqual([17, 12, 15, 16, 18]);
    expect(tok.encode('hello world', { addBos: false })).toEqual([12, 15, 16]);
    expect(tok.encode('hello world', { addBos: false, addEos: true })).toEqual([12, 15, 16, 18]);
    expect(tok.encode('hello world', { addSpecialTokens: false, addEos: true })).toEqual([12, 15, 16, 18]);
    expect(tok.encode('hello', { addSpecialTokens: false, addBos: true })).toEqual([17, 12]);
  });

  test('decode, with and without special tokens', () => {
    expect(tok.decode([17, 12, 15, 16, 18])).toBe('<|bos|>hello world<|eos|>');
    expect(tok.decode([17, 12, 15, 16, 18], { skipSpecialTokens: true })).toBe('hello world');
    expect(tok.decode([19, 19, 12], { skipSpecialTokens: true })).toBe('hello');
    expect(tok.decode([9, 16])).toBe('held');
    expect(tok.decode(Int32Array.from([12, 0, 8, 12]))).toBe('hello! hello');
    expect(tok.decode([])).toBe('');
    expect(tok.decode([17], { skipSpecialTokens: true })).toBe('');
  });

  test('round trips', () => {
    for (const s of ['hello world', 'hello! held', ' hello hello', 'world', 'hello !', 'held world!!', '']) {
      expect(tok.decode(tok.encode(s, { addSpecialTokens: false }))).toBe(s);
      expect(tok.decode(tok.encode(s, { addEos: true }), { skipSpecialTokens: true })).toBe(s);
    }
  });

  test('clean_up_tokenization_spaces is off unless the config turns it on', () => {
    expect(tok.decode([12, 8, 0])).toBe('hello !');
    const cleaning = Tokenizer.fromJSON(BYTE_LEVEL, { ...BYTE_LEVEL_CONFIG, clean_up_tokenization_spaces: true });
    expect(cleaning.decode([12, 8, 0])).toBe('hello!');
    expect(Tokenizer.fromJSON(BYTE_LEVEL).decode([12, 8, 0])).toBe('hello !'); // no config at all
  });

  test('a directory, fromJSON (object or string), and options.config / configFile', () => {
    expect(Tokenizer.fromFile(tokDir).encode('held')).toEqual([17, 9, 16]);
    const fromJson = Tokenizer.fromJSON(JSON.stringify(BYTE_LEVEL), BYTE_LEVEL_CONFIG);
    expect(fromJson.encode('hello world')).toEqual([17, 12, 15, 16]);
    expect(fromJson.source).toBe('Tokenizer.fromJSON');
    // without a config there are no special-token ids, but the post-processor still adds bos
    const bare = Tokenizer.fromJSON(BYTE_LEVEL);
    expect([bare.bosTokenId, bare.eosTokenId, bare.padTokenId]).toEqual([undefined, undefined, undefined]);
    expect(bare.encode('hello')).toEqual([17, 12]);
    expect(() => bare.encode('hello', { addEos: true })).toThrow(/addEos, but this tokenizer has no eos token/);
    const noConfig = Tokenizer.fromFile(path.join(tokDir, 'tokenizer.json'), { configFile: null });
    expect(noConfig.padTokenId).toBeUndefined();
    const override = Tokenizer.fromFile(tokDir, { config: { pad_token: '<|eos|>', add_eos_token: true } });
    expect(override.padTokenId).toBe(18);
    expect(override.encode('hello')).toEqual([17, 12, 18]); // add_eos_token set, bos from the post-processor
    const other = folder('config-elsewhere', { 'my_config.json': { eos_token: '<|pad|>' } });
    const elsewhere = Tokenizer.fromFile(tokDir, { configFile: path.join(other, 'my_config.json') });
    expect([elsewhere.bosTokenId, elsewhere.eosTokenId]).toEqual([undefined, 19]);
  });

  test('util.inspect shows class, model, vocabulary size and special tokens', () => {
    const s = util.inspect(tok);
    expect(s).toBe(
      `Tokenizer(model=BPE, vocabSize=20, bos="<|bos|>" (17), eos="<|eos|>" (18), pad="<|pad|>" (19), source=${path.join(tokDir, 'tokenizer.json')})`,
    );
    expect(util.inspect(Tokenizer.fromJSON(BYTE_LEVEL))).toBe(
      'Tokenizer(model=BPE, vocabSize=20, bos=none, eos=none, pad=none, source=Tokenizer.fromJSON)',
    );
  });
});

describe('Tokenizer: SentencePiece-style BPE with byte fallback', () => {
  let tok: Tokenizer;
  let tokDir: string;
  beforeAll(() => {
    tokDir = folder('sentencepiece', { 'tokenizer.json': SENTENCEPIECE, 'tokenizer_config.json': SENTENCEPIECE_CONFIG });
    tok = Tokenizer.fromFile(path.join(tokDir, 'tokenizer.json'));
  });

  test('special tokens given as AddedToken objects; pad_token null', () => {
    expect(tok.vocabSize).toBe(273);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([1, 2, undefined]);
    expect([tok.bosToken, tok.eosToken, tok.padToken]).toEqual(['<s>', '</s>', undefined]);
    expect(tok.idToToken(3 + 0xa9)).toBe('<0xA9>');
  });

  test('encode: merges, then byte fallback for characters not in the vocabulary', () => {
    // "▁hello▁world": ▁h (0), ll (1), ▁he (2), ▁hell (3), ▁hello (4), ▁w (5); o r l d stay
    expect(tok.encode('hello world')).toEqual([1, 271, 272, 263, 265, 262, 266]);
    // "▁héllo": ▁h é ll o; é is C3 A9 -> <0xC3> <0xA9> = 3 + 0xC3, 3 + 0xA9
    expect(tok.encode('héllo')).toEqual([1, 267, 3 + 0xc3, 3 + 0xa9, 268, 263]);
    // 🌍 is F0 9F 8C 8D
    expect(tok.encode('hello 🌍')).toEqual([1, 271, 259, 3 + 0xf0, 3 + 0x9f, 3 + 0x8c, 3 + 0x8d]);
    expect(tok.encode('world.', { addSpecialTokens: false })).toEqual([272, 263, 265, 262, 266, 3 + 0x2e]);
    expect(tok.encode('hello</s>')).toEqual([1, 271, 2]);
  });

  test('add_bos_token / add_eos_token of the config, and per call', () => {
    expect(tok.encode('hello', { addEos: true })).toEqual([1, 271, 2]);
    expect(tok.encode('hello', { addBos: false })).toEqual([271]);
    expect(tok.encode('hello', { addSpecialTokens: false })).toEqual([271]);
    const eos = Tokenizer.fromFile(tokDir, { config: { add_eos_token: true } });
    expect(eos.encode('hello')).toEqual([1, 271, 2]);
    // add_bos_token: false wins over the post-processor, which adds <s>
    const noBos = Tokenizer.fromFile(tokDir, { config: { add_bos_token: false } });
    expect(noBos.encode('hello')).toEqual([271]);
  });

  test('decode and round trips', () => {
    expect(tok.decode([1, 271, 272, 263, 265, 262, 266])).toBe('<s> hello world');
    expect(tok.decode([1, 271, 272, 263, 265, 262, 266, 2], { skipSpecialTokens: true })).toBe('hello world');
    expect(tok.decode([267, 3 + 0xc3, 3 + 0xa9, 268, 263])).toBe('héllo');
    for (const s of ['hello world', 'héllo 🌍', 'Ünïcödé: 日本語 ✓', 'hello  world', 'a\nb\tc']) {
      expect(tok.decode(tok.encode(s), { skipSpecialTokens: true })).toBe(s);
    }
  });
});

describe('Tokenizer: WordLevel', () => {
  test('unknown words map to the unk token of the model', () => {
    const tok = Tokenizer.fromJSON(WORD_LEVEL);
    expect(tok.modelType).toBe('WordLevel');
    expect(tok.vocabSize).toBe(5);
    expect(tok.encode('hello world!')).toEqual([1, 2, 3]);
    expect(tok.encode('hello there world')).toEqual([1, 0, 2]);
    expect(tok.decode([1, 2, 3])).toBe('hello world !');
    expect(tok.decode([1, 4, 2], { skipSpecialTokens: true })).toBe('hello world');
  });

  test('without an unk token, an unknown word is an error (not an undefined id)', () => {
    const noUnk = { ...WORD_LEVEL, model: { type: 'WordLevel', vocab: WORD_LEVEL.model.vocab } };
    const tok = Tokenizer.fromJSON(noUnk);
    expect(tok.encode('hello')).toEqual([1]);
    expect(() => tok.encode('hello there')).toThrow(/token "there" has no id in the vocabulary and the tokenizer has no unk token/);
  });
});

describe('Tokenizer: regexes of tokenizer.json run under a time budget', () => {
  const split = (pattern: string): object => ({ ...WORD_LEVEL, pre_tokenizer: { type: 'Split', pattern: { Regex: pattern }, behavior: 'Removed', invert: false } });

  test('a Split regex of its own encodes as before', () => {
    const tok = Tokenizer.fromJSON(split('[ ,]+'));
    expect(tok.encode('hello, world ,!')).toEqual([1, 2, 3]);
    expect(tok.encode('hello there')).toEqual([1, 0]);
  });

  test('a pattern that backtracks ("(a+)+$") is stopped with an error naming the tokenizer, within seconds', () => {
    const tok = Tokenizer.fromJSON(split('(a+)+$'));
    const t0 = Date.now();
    // 2^40 ways to split the a's before the final "b" fails the match: minutes without a budget
    expect(() => tok.encode('a'.repeat(40) + 'b')).toThrow(
      /Tokenizer\.encode: Tokenizer\.fromJSON's regexes ran too long \(a pattern that backtracks, such as "\(a\+\)\+\$"\?\): stopped after 1001 ms/,
    );
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(tok.encode('hello')).toEqual([1]); // still usable
  });
});

describe('Tokenizer: errors', () => {
  let good: string;
  beforeAll(() => {
    good = folder('good', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': BYTE_LEVEL_CONFIG });
  });

  test('missing file, directory without tokenizer.json', () => {
    const missing = path.join(dir, 'nowhere', 'tokenizer.json');
    expect(() => Tokenizer.fromFile(missing)).toThrow(`Tokenizer.fromFile: tokenizer file not found: ${missing}`);
    const empty = folder('empty', {});
    expect(() => Tokenizer.fromFile(empty)).toThrow(`Tokenizer.fromFile: ${empty} is a directory without a tokenizer.json`);
    const cfg = path.join(dir, 'nowhere', 'tokenizer_config.json');
    expect(() => Tokenizer.fromFile(good, { configFile: cfg })).toThrow(`tokenizer config file not found: ${cfg}`);
    expect(() => Tokenizer.fromFile(42 as unknown as string)).toThrow(/path must be a string, got number 42/);
  });

  test('a file that is not JSON', () => {
    const d = folder('not-json', { 'tokenizer.json': '{ "model": { oops' });
    const file = path.join(d, 'tokenizer.json');
    expect(() => Tokenizer.fromFile(file)).toThrow(new RegExp(`^Tokenizer\\.fromFile: ${escape(file)} is not valid JSON \\(`));
    const badConfig = folder('bad-config', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': 'bos_token: <s>' });
    const cfg = path.join(badConfig, 'tokenizer_config.json');
    expect(() => Tokenizer.fromFile(badConfig)).toThrow(new RegExp(`${escape(cfg)} is not valid JSON`));
    expect(() => Tokenizer.fromJSON('{nope')).toThrow(/Tokenizer\.fromJSON: the string is not valid JSON/);
  });

  test('JSON that is not a tokenizer.json', () => {
    const cases: [unknown, RegExp][] = [
      [[1, 2, 3], /is not a Hugging Face tokenizer\.json: expected a JSON object, got an array/],
      [BYTE_LEVEL_CONFIG, /is not a Hugging Face tokenizer\.json: it has no "model" \(top-level keys: bos_token, eos_token, pad_token, clean_up_tokenization_spaces\)/],
      [{ ...BYTE_LEVEL, model: 'BPE' }, /"model" must be an object, got string 'BPE'/],
      [{ ...BYTE_LEVEL, model: { ...BYTE_LEVEL.model, type: 'Magic' } }, /model type 'Magic' is not supported; supported: BPE, WordPiece, Unigram, WordLevel/],
      [{ ...BYTE_LEVEL, model: { type: 'BPE', merges: [] } }, /its model has no "vocab"/],
      [{ ...BYTE_LEVEL, model: { ...BYTE_LEVEL.model, merges: undefined } }, /a BPE model needs a "merges" array, got undefined/],
      [{ ...BYTE_LEVEL, added_tokens: { '<s>': 1 } }, /"added_tokens" must be an array, got an object/],
      [{ ...BYTE_LEVEL, added_tokens: [{ content: '<s>' }] }, /added_tokens\[0\] must be an object with a string "content" and a non-negative integer "id"/],
    ];
    for (const [json, message] of cases) {
      const d = folder(`not-tokenizer-${cases.findIndex((c) => c[0] === json)}`, { 'tokenizer.json': json as object });
      const file = path.join(d, 'tokenizer.json');
      expect(() => Tokenizer.fromFile(file)).toThrow(message);
      expect(() => Tokenizer.fromFile(file)).toThrow(file); // names the file
      expect(() => Tokenizer.fromJSON(json as object)).toThrow(message);
    }
  });

  test('a special token of the config that is not in the vocabulary', () => {
    const d = folder('bad-special', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': { eos_token: '</s>' } });
    expect(() => Tokenizer.fromFile(d)).toThrow(/eos_token "<\/s>" of the tokenizer config is not in the vocabulary/);
    expect(() => Tokenizer.fromJSON(BYTE_LEVEL, { bos_token: 7 } as unknown as TokenizerConfig)).toThrow(
      /bos_token must be a string, an object with a string "content", or null; got number 7/,
    );
    expect(() => Tokenizer.fromJSON(BYTE_LEVEL, { add_bos_token: 'yes' } as unknown as TokenizerConfig)).toThrow(
      /add_bos_token must be a boolean, got string 'yes'/,
    );
  });

  test('token ids outside the vocabulary, and bad ids', () => {
    const tok = Tokenizer.fromFile(good);
    expect(() => tok.decode([12, 20])).toThrow(new RangeError('Tokenizer.decode: token id 20 (ids[1]) is outside the vocabulary (size 20, ids 0..19)'));
    expect(() => tok.decode([-1])).toThrow(/token id -1 \(ids\[0\]\) is outside the vocabulary \(size 20/);
    expect(() => tok.decode([100000])).toThrow(/token id 100000 \(ids\[0\]\) is outside the vocabulary \(size 20, ids 0..19\)/);
    expect(() => tok.decode([1.5])).toThrow(new TypeError('Tokenizer.decode: ids[0] is number 1.5, not an integer token id'));
    expect(() => tok.decode([NaN])).toThrow(/ids\[0\] is number NaN, not an integer token id/);
    expect(() => tok.decode('hello' as unknown as number[])).toThrow(/ids must be an array of token ids, got string 'hello'/);
    // an id with no token (a hole between the model's vocabulary and the added tokens)
    const holes = Tokenizer.fromJSON({ ...WORD_LEVEL, added_tokens: [added(9, '[PAD]')] });
    expect(holes.vocabSize).toBe(10);
    expect(() => holes.decode([1, 6])).toThrow(/token id 6 \(ids\[1\]\) has no token in the vocabulary \(size 10\)/);
  });

  test('text that is not a string, and bad options', () => {
    const tok = Tokenizer.fromFile(good);
    expect(() => tok.encode(42 as unknown as string)).toThrow(new TypeError('Tokenizer.encode: text must be a string, got number 42'));
    expect(() => tok.encode(null as unknown as string)).toThrow(/text must be a string, got null/);
    expect(() => tok.encode(['hello'] as unknown as string)).toThrow(/text must be a string, got an array/);
    expect(() => tok.encode('hello', { addBos: 1 } as unknown as { addBos: boolean })).toThrow(/option addBos must be a boolean, got number 1/);
    expect(() => tok.tokenToId(3 as unknown as string)).toThrow(/token must be a string/);
  });
});

describe('ByteTokenizer', () => {
  const tok = new ByteTokenizer();

  test('ids are the UTF-8 bytes', () => {
    expect(tok.encode('hello')).toEqual([104, 101, 108, 108, 111]);
    expect(tok.encode('héllo 🌍')).toEqual([104, 0xc3, 0xa9, 108, 108, 111, 32, 0xf0, 0x9f, 0x8c, 0x8d]);
    for (const s of ['', 'hello world', 'héllo 🌍', 'Ünïcödé: 日本語 ✓', '\u0000\n\t', '\uFEFFbom']) {
      expect(tok.encode(s)).toEqual(Array.from(Buffer.from(s, 'utf8')));
      expect(tok.decode(tok.encode(s))).toBe(s);
    }
    expect(tok.encode('\uD800x')).toEqual([0xef, 0xbf, 0xbd, 0x78]); // a lone surrogate: U+FFFD
  });

  test('vocabulary and special tokens', () => {
    expect([tok.vocabSize, tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([259, 256, 257, 258]);
    expect([ByteTokenizer.BOS, ByteTokenizer.EOS, ByteTokenizer.PAD]).toEqual([256, 257, 258]);
    expect([tok.bosToken, tok.eosToken, tok.padToken]).toEqual(['<bos>', '<eos>', '<pad>']);
    expect([tok.idToToken(0), tok.idToToken(0x41), tok.idToToken(255), tok.idToToken(257)]).toEqual(['<0x00>', '<0x41>', '<0xFF>', '<eos>']);
    expect([tok.idToToken(259), tok.idToToken(-1), tok.idToToken(0.5)]).toEqual([undefined, undefined, undefined]);
    expect([tok.tokenToId('<0x41>'), tok.tokenToId('<0xff>'), tok.tokenToId('<pad>'), tok.tokenToId('A')]).toEqual([65, 255, 258, undefined]);
  });

  test('bos and eos', () => {
    expect(tok.encode('hi', { addBos: true })).toEqual([256, 104, 105]);
    expect(tok.encode('hi', { addEos: true })).toEqual([104, 105, 257]);
    expect(tok.encode('hi', { addBos: true, addEos: true })).toEqual([256, 104, 105, 257]);
    expect(tok.encode('', { addBos: true, addEos: true })).toEqual([256, 257]);
    const both = new ByteTokenizer({ addBos: true, addEos: true });
    expect(both.encode('hi')).toEqual([256, 104, 105, 257]);
    expect(both.encode('hi', { addSpecialTokens: false })).toEqual([104, 105]);
    expect(both.encode('hi', { addEos: false })).toEqual([256, 104, 105]);
    expect(() => new ByteTokenizer({ addBos: 'yes' } as unknown as { addBos: boolean })).toThrow(/option addBos must be a boolean, got string 'yes'/);
  });

  test('decode: special tokens skipped by default, or shown', () => {
    const ids = [256, ...tok.encode('héllo'), 257, 258, 258];
    expect(tok.decode(ids)).toBe('héllo');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('héllo');
    expect(tok.decode(ids, { skipSpecialTokens: false })).toBe('<bos>héllo<eos><pad><pad>');
    // a skipped token between the two bytes of é: the bytes join
    expect(tok.decode([0xc3, 258, 0xa9])).toBe('é');
    expect(tok.decode([0xc3, 258, 0xa9], { skipSpecialTokens: false })).toBe('\uFFFD<pad>\uFFFD');
    expect(tok.decode(Uint8Array.from([104, 105]))).toBe('hi');
    expect(tok.decode([])).toBe('');
  });

  test('invalid UTF-8 decodes with U+FFFD, as TextDecoder does', () => {
    const cases = [[0xff, 0x41], [0xf0, 0x9f], [0xc3], [0x80, 0x80, 0x41], [0xed, 0xa0, 0x80], [0xf0, 0x9f, 0x8c, 0x41]];
    for (const bytes of cases) {
      expect(tok.decode(bytes)).toBe(new TextDecoder().decode(Uint8Array.from(bytes)));
    }
    expect(tok.decode([0xff, 0x41])).toBe('\uFFFDA');
    expect(tok.decode([0xf0, 0x9f, 0x8c, 0x41])).toBe('\uFFFDA'); // a truncated 4-byte sequence: one U+FFFD
  });

  test('errors: ids outside the vocabulary, non-integer ids, non-string text', () => {
    expect(() => tok.decode([104, 259])).toThrow(new RangeError('ByteTokenizer.decode: token id 259 (ids[1]) is outside the vocabulary (size 259, ids 0..258)'));
    expect(() => tok.decode([-3])).toThrow(/token id -3 \(ids\[0\]\) is outside the vocabulary \(size 259/);
    expect(() => tok.decode([2.5])).toThrow(new TypeError('ByteTokenizer.decode: ids[0] is number 2.5, not an integer token id'));
    expect(() => tok.decode(['a'] as unknown as number[])).toThrow(/ids\[0\] is string 'a', not an integer token id/);
    expect(() => tok.decode({ length: 1 } as unknown as number[])).toThrow(/ids must be an array of token ids, got an object/);
    expect(() => tok.encode(undefined as unknown as string)).toThrow(new TypeError('ByteTokenizer.encode: text must be a string, got undefined'));
    expect(() => tok.encode(Buffer.from('hi') as unknown as string)).toThrow(/text must be a string, got an object/);
  });

  test('util.inspect', () => {
    expect(util.inspect(tok)).toBe('ByteTokenizer(vocabSize=259, bytes=0..255, bos="<bos>" (256), eos="<eos>" (257), pad="<pad>" (258))');
  });
});

test('code written against TextTokenizer takes either', () => {
  const frame = (t: TextTokenizer, text: string): number[] => {
    const ids = t.encode(text, { addBos: true, addEos: true });
    expect(t.decode(ids, { skipSpecialTokens: true })).toBe(text);
    return ids;
  };
  expect(frame(new ByteTokenizer(), 'hello')).toEqual([256, 104, 101, 108, 108, 111, 257]);
  expect(frame(Tokenizer.fromJSON(BYTE_LEVEL, BYTE_LEVEL_CONFIG), 'hello world')).toEqual([17, 12, 15, 16, 18]);
  expect(frame(Tokenizer.fromJSON(SENTENCEPIECE, SENTENCEPIECE_CONFIG), 'hello')).toEqual([1, 271, 2]);
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('Tokenizer: chat_template', () => {
  const T = '{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}';
  it('from tokenizer_config.json (a string, or the default of named templates), else chat_template.jinja', () => {
    const a = folder('chat-a', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': { ...BYTE_LEVEL_CONFIG, chat_template: T } });
    expect(Tokenizer.fromFile(a).chatTemplate).toBe(T);
    const b = folder('chat-b', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': { ...BYTE_LEVEL_CONFIG, chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'default', template: T }] } });
    expect(Tokenizer.fromFile(b).chatTemplate).toBe(T);
    const c = folder('chat-c', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': BYTE_LEVEL_CONFIG, 'chat_template.jinja': T });
    expect(Tokenizer.fromFile(c).chatTemplate).toBe(T);
    const d = folder('chat-d', { 'tokenizer.json': BYTE_LEVEL, 'tokenizer_config.json': BYTE_LEVEL_CONFIG });
    expect(Tokenizer.fromFile(d).chatTemplate).toBeUndefined();
    expect(() => Tokenizer.fromJSON(BYTE_LEVEL, { ...BYTE_LEVEL_CONFIG, chat_template: 7 as never })).toThrow('chat_template must be a string or a list of {name, template}, got number 7');
  });
});
