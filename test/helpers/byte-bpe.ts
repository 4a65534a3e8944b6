// A tokenizer.json for tests that must read any text: byte-level BPE (as GPT-2, Qwen2, Llama 3)
// with one token per byte (ids 0..255, no merges) and three special tokens (256..258).
/** GPT-2's printable stand-in character for each byte. */
function byteChars(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => (out[b] = String.fromCodePoint(cs[i])));
  return out;
}

const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** tokenizer.json and tokenizer_config.json (with `chatTemplate` when given) of a byte-level BPE of 259 tokens. */
export function byteBpe(chatTemplate?: string): { json: object; config: Record<string, unknown> } {
  const vocab = Object.fromEntries(byteChars().map((c, b) => [c, b]));
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(256, '<|bos|>'), special(257, '<|eos|>'), special(258, '<|pad|>')],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] },
  };
  const config: Record<string, unknown> = { bos_token: '<|bos|>', eos_token: '<|eos|>', pad_token: '<|pad|>', clean_up_tokenization_spaces: false };
  if (chatTemplate !== undefined) config.chat_template = chatTemplate;
  return { json, config };
}
