// A tokenizer as GGUF metadata (tokenizer.ggml.* and tokenizer.chat_template), from rlora's
// Tokenizer (a Hugging Face tokenizer.json) or ByteTokenizer (whose files are a byte-level BPE):
// byte-level BPE becomes llama.cpp's `gpt2` vocabulary (tokens, types, merges and the
// pre-tokenizer's name), SentencePiece-style BPE (byte fallback, spaces as "▁") its `llama`
// vocabulary (tokens, types, scores from the merge ranks). Anything else is refused, saying why:
// llama.cpp would turn text into other ids than the model was trained on.
import { ByteTokenizer, TextTokenizer, Tokenizer } from '../tokenizer';
import { isRecord } from '../util/options';
import type { GgufValue } from './format';

/** llama.cpp's token types (llama_token_type). */
export const TOKEN_TYPES = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/**
 * The pre-tokenizer regexes of tokenizer.json files that llama.cpp implements, by its name for
 * them (tokenizer.ggml.pre): Qwen2's and LLaMA 3's Split patterns. GPT-2's is the ByteLevel
 * pre-tokenizer's own (use_regex), named "gpt-2".
 */
export const PRE_TOKENIZER_REGEXES: Record<string, string> = {
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  'llama-bpe': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
/** llama.cpp ignores the merges for a word already in the vocabulary with these pre-tokenizers (as tokenizer.json's ignore_merges). */
const IGNORES_MERGES = new Set(['llama-bpe']);

/** What a tokenizer exports as: the vocabulary kind and, for `gpt2`, the pre-tokenizer's name. */
export interface GgufTokenizerKind {
  model: 'gpt2' | 'llama';
  pre: string;
}

type Json = Record<string, unknown>;

/** The pre-tokenizers of tokenizer.json, a Sequence flattened. */
function parts(v: unknown, key: 'pretokenizers' | 'normalizers'): Json[] {
  if (!isRecord(v)) return [];
  if (v.type === 'Sequence' && Array.isArray(v[key])) return (v[key] as unknown[]).filter(isRecord);
  return [v];
}

/** One merge as "left right" (tokenizer.json writes "a b" or ["a", "b"]). */
function mergeText(m: unknown, i: number, where: string): [string, string] {
  if (typeof m === 'string') {
    const at = m.indexOf(' ', 1);
    if (at < 0) throw new Error(`${where}: merges[${i}] ${JSON.stringify(m)} is not "left right"`);
    return [m.slice(0, at), m.slice(at + 1)];
  }
  if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
  throw new Error(`${where}: merges[${i}] must be "left right" or ["left", "right"], got ${JSON.stringify(m)}`);
}

/**
 * Which llama.cpp vocabulary a tokenizer.json becomes, or an Error saying why it has none that
 * gives the same ids.
 */
export function tokenizerKind(json: Json, where: string): GgufTokenizerKind {
  const model = isRecord(json.model) ? json.model : {};
  const type = model.type ?? 'BPE';
  if (type !== 'BPE') throw new Error(`${where}: a ${String(type)} tokenizer cannot be exported to GGUF yet (rlora exports BPE tokenizers: byte-level as llama.cpp's gpt2, SentencePiece-style as its llama)`);
  const pres = parts(json.pre_tokenizer, 'pretokenizers');
  const norms = parts(json.normalizer, 'normalizers');
  const byteLevel = pres.find((p) => p.type === 'ByteLevel');
  const merges = Array.isArray(model.merges) ? model.merges : [];
  if (byteLevel) {
    if (byteLevel.add_prefix_space === true) throw new Error(`${where}: its ByteLevel pre-tokenizer adds a space before the text (add_prefix_space), which llama.cpp's gpt2 vocabulary does not`);
    const other = norms.filter((n) => n.type !== 'NFC');
    if (other.length) throw new Error(`${where}: its normalizer ${String(other[0].type)} has no counterpart in llama.cpp's gpt2 vocabulary`);
    const splits = pres.filter((p) => p !== byteLevel);
    let pre: string;
    if (splits.length === 0 && byteLevel.use_regex !== false) pre = 'gpt-2';
    else if (splits.length === 1 && splits[0].type === 'Split' && isRecord(splits[0].pattern) && typeof splits[0].pattern.Regex === 'string' && byteLevel.use_regex === false) {
      const regex = splits[0].pattern.Regex;
      const named = Object.keys(PRE_TOKENIZER_REGEXES).find((k) => PRE_TOKENIZER_REGEXES[k] === regex);
      if (named === undefined && merges.length > 0) throw new Error(`${where}: its pre-tokenizer regex ${JSON.stringify(regex)} is none that llama.cpp implements (rlora recognises ${Object.keys(PRE_TOKENIZER_REGEXES).join(', ')} and GPT-2's)`);
      pre = named ?? 'gpt-2';
    } else if (merges.length === 0) pre = 'gpt-2';
    else throw new Error(`${where}: its pre-tokenizer (${pres.map((p) => String(p.type)).join(', ')}) is none that llama.cpp implements`);
    // without merges every byte is its own token, whatever splits the text first
    if (merges.length > 0 && IGNORES_MERGES.has(pre) !== (model.ignore_merges === true)) {
      throw new Error(`${where}: llama.cpp's "${pre}" pre-tokenizer ${IGNORES_MERGES.has(pre) ? 'ignores' : 'applies'} the merges for words in the vocabulary, but tokenizer.json says ignore_merges ${String(model.ignore_merges ?? false)}`);
    }
    return { model: 'gpt2', pre };
  }
  const metaspace = pres.find((p) => p.type === 'Metaspace');
  const replaces = norms.some((n) => n.type === 'Replace' && isRecord(n.pattern) && n.pattern.String === ' ' && n.content === '▁');
  if ((metaspace || replaces) && model.byte_fallback === true) return { model: 'llama', pre: 'default' };
  throw new Error(
    `${where}: its tokenizer.json is neither byte-level BPE (a ByteLevel pre-tokenizer) nor SentencePiece-style BPE (byte_fallback with "▁" for spaces), the two that rlora exports to GGUF`,
  );
}

/** Whether llama.cpp's SentencePiece tokenizer puts a space before the text, as the tokenizer.json does. */
function addsSpacePrefix(json: Json): boolean {
  if (parts(json.normalizer, 'normalizers').some((n) => n.type === 'Prepend' && n.prepend === '▁')) return true;
  const m = parts(json.pre_tokenizer, 'pretokenizers').find((p) => p.type === 'Metaspace');
  if (!m) return false;
  if (typeof m.prepend_scheme === 'string') return m.prepend_scheme !== 'never';
  return m.add_prefix_space !== false;
}

/**
 * The tokenizer.ggml.* keys (and tokenizer.chat_template) of a tokenizer for a model of
 * `vocabSize` embedding rows: ids the tokenizer lacks become unused `[PAD<id>]` tokens, as
 * convert_hf_to_gguf.py writes them; a token id at or beyond vocabSize is refused.
 */
export function tokenizerMetadata(tokenizer: Tokenizer | ByteTokenizer, vocabSize: number): [string, GgufValue][] {
  const where = tokenizer instanceof Tokenizer ? `tokenizer ${tokenizer.source}` : 'ByteTokenizer';
  const files = tokenizer.files();
  const json = files['tokenizer.json'] as Json;
  const config = files['tokenizer_config.json'];
  const kind = tokenizerKind(json, where);
  const model = isRecord(json.model) ? json.model : {};

  const tokens: (string | undefined)[] = new Array(vocabSize).fill(undefined);
  const types: number[] = new Array(vocabSize).fill(TOKEN_TYPES.normal);
  const put = (text: string, id: unknown, type: number): void => {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new Error(`${where}: token ${JSON.stringify(text)} has id ${String(id)}, not a token id`);
    if ((id as number) >= vocabSize) throw new Error(`${where}: token ${JSON.stringify(text)} has id ${String(id)}, beyond the model's vocab_size ${vocabSize}: the tokenizer does not belong to this model`);
    tokens[id as number] = text;
    types[id as number] = type;
  };
  const vocab = model.vocab;
  if (isRecord(vocab)) for (const [text, id] of Object.entries(vocab)) put(text, id, TOKEN_TYPES.normal);
  const unk = typeof config.unk_token === 'string' ? config.unk_token : isRecord(config.unk_token) && typeof config.unk_token.content === 'string' ? config.unk_token.content : typeof model.unk_token === 'string' ? model.unk_token : undefined;
  for (const t of Array.isArray(json.added_tokens) ? json.added_tokens : []) {
    if (!isRecord(t) || typeof t.content !== 'string') continue;
    put(t.content, t.id, t.special === true ? TOKEN_TYPES.control : TOKEN_TYPES.userDefined);
  }
  if (kind.model === 'llama') {
    tokens.forEach((t, id) => {
      if (t !== undefined && /^<0x[0-9A-Fa-f]{2}>$/.test(t)) types[id] = TOKEN_TYPES.byte;
      else if (t !== undefined && types[id] === TOKEN_TYPES.userDefined) tokens[id] = t.replaceAll('▁', ' '); // user-defined tokens are matched on the text before escaping (as the converter)
    });
  }
  if (unk !== undefined) {
    const id = tokens.indexOf(unk);
    if (id >= 0) types[id] = TOKEN_TYPES.unknown;
  }
  const seen = new Map<string, number>();
  const list = tokens.map((t, id) => {
    if (t === undefined) {
      types[id] = TOKEN_TYPES.unused;
      t = `[PAD${id}]`;
    }
    const other = seen.get(t);
    // llama.cpp's loader asserts that no two ids share a text
    if (other !== undefined) throw new Error(`${where}: ids ${other} and ${id} have the same token ${JSON.stringify(t)}, which a GGUF vocabulary cannot hold`);
    seen.set(t, id);
    return t;
  });

  const kv: [string, GgufValue][] = [
    ['tokenizer.ggml.model', { type: 'string', value: kind.model }],
    ['tokenizer.ggml.pre', { type: 'string', value: kind.pre }],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: list }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'int32', value: types }],
  ];
  const rawMerges = Array.isArray(model.merges) ? model.merges : [];
  const merges = rawMerges.map((m, i) => mergeText(m, i, `${where}: tokenizer.json model`));
  if (kind.model === 'gpt2') {
    merges.forEach(([a, b], i) => {
      if (a.includes(' ') || b.includes(' ')) throw new Error(`${where}: merges[${i}] joins tokens with a space in them, which GGUF's "left right" merges cannot write`);
    });
    kv.push(['tokenizer.ggml.merges', { type: 'array', itemType: 'string', value: merges.map(([a, b]) => `${a} ${b}`) }]);
  } else {
    // llama.cpp's SentencePiece tokenizer joins the adjacent pair whose joined token scores highest:
    // a token's score is minus the rank of the first merge that makes it, so pairs join in merge
    // order; a token no merge makes scores below them all (only tokens of two characters or more
    // are ever joined, so single characters, bytes and specials are not affected)
    const scores = new Array<number>(vocabSize).fill(merges.length ? -merges.length : 0);
    const scored = new Set<number>();
    merges.forEach(([a, b], rank) => {
      const id = seen.get(a + b);
      if (id !== undefined && !scored.has(id)) {
        scores[id] = rank === 0 ? 0 : -rank;
        scored.add(id);
      }
    });
    kv.push(['tokenizer.ggml.scores', { type: 'array', itemType: 'float32', value: scores }]);
    kv.push(['tokenizer.ggml.add_space_prefix', { type: 'bool', value: addsSpacePrefix(json) }]);
  }
  const id = (key: string, v: number | undefined): void => {
    if (v !== undefined) kv.push([key, { type: 'uint32', value: v }]);
  };
  id('tokenizer.ggml.bos_token_id', tokenizer.bosTokenId);
  id('tokenizer.ggml.eos_token_id', tokenizer.eosTokenId);
  id('tokenizer.ggml.unknown_token_id', unk === undefined ? undefined : seen.get(unk));
  id('tokenizer.ggml.padding_token_id', tokenizer.padTokenId);
  // what encode adds around a text, by the tokenizer's own rules (tokenizer_config.json or the post-processor)
  const probe = tokenizer.encode('');
  const addBos = tokenizer.bosTokenId !== undefined && probe[0] === tokenizer.bosTokenId;
  const addEos = tokenizer.eosTokenId !== undefined && probe.length > (addBos ? 1 : 0) && probe[probe.length - 1] === tokenizer.eosTokenId;
  kv.push(['tokenizer.ggml.add_bos_token', { type: 'bool', value: addBos }], ['tokenizer.ggml.add_eos_token', { type: 'bool', value: addEos }]);
  const template = (tokenizer as TextTokenizer).chatTemplate;
  if (template !== undefined) kv.push(['tokenizer.chat_template', { type: 'string', value: template }]);
  return kv;
}
