// Chat data: {task, messages} records rendered with the tokenizer's chat_template (Hugging Face's
// format), loss on the assistant turns only. The expected tokens and labels are written out here
// from the template's text by hand, independently of the renderer.
import { BatchSampler, ByteTokenizer, Model, MultiTaskDataset, TextTokenizer, Trainer, Adapter } from '../lib';
import { TINY_BYTE_CONFIG } from './helpers/tiny-model';

const byte = new ByteTokenizer();
// a ChatML-like template, as Qwen's: bos first, each turn "<|role|>content<eos>\n"
const CHATML = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
const withTemplate = (chatTemplate: string | undefined): TextTokenizer =>
  ({
    vocabSize: byte.vocabSize, bosTokenId: byte.bosTokenId, eosTokenId: byte.eosTokenId, padTokenId: byte.padTokenId,
    bosToken: byte.bosToken, eosToken: byte.eosToken, padToken: byte.padToken, chatTemplate,
    encode: (t: string, o?: object) => byte.encode(t, o), decode: (ids: ArrayLike<number>, o?: object) => byte.decode(ids, o),
    tokenToId: (t: string) => byte.tokenToId(t), idToToken: (i: number) => byte.idToToken(i),
  }) as TextTokenizer;
const tok = withTemplate(CHATML);
const CONVO = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'hi' },
  { role: 'assistant', content: 'yo' },
  { role: 'user', content: '2+2?' },
  { role: 'assistant', content: '4' },
];

/** Bytes of a text, with ByteTokenizer's special tokens where the text names them. */
function bytes(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(/(<bos>|<eos>)/)) {
    if (part === '<bos>') out.push(byte.bosTokenId!);
    else if (part === '<eos>') out.push(byte.eosTokenId!);
    else out.push(...Buffer.from(part, 'utf8'));
  }
  return out;
}

describe('messages records', () => {
  it('render with the chat template; loss on every assistant turn (content, eos and newline), nothing else', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 'chat', messages: CONVO }] as never, { tokenizer: tok, maxLength: 200 });
    const e = ds.get(0);
    // the text the template writes, by hand
    const prefix1 = '<bos><|system|>Be brief.<eos>\n<|user|>hi<eos>\n<|assistant|>';
    const turn1 = 'yo<eos>\n';
    const prefix2 = '<|user|>2+2?<eos>\n<|assistant|>';
    const turn2 = '4<eos>\n';
    // the template's prefix for turn 1 ends in "<|assistant|>", and "<|assistant|>yo" is how it writes the turn
    const want = [...bytes(prefix1), ...bytes(turn1), ...bytes(prefix2), ...bytes(turn2)];
    // with add_generation_prompt the template writes "<|assistant|>" after the turns; without it,
    // the turn itself starts "<|assistant|>": the turn's tokens are what follows the generation prompt
    expect(e.inputIds).toEqual(want);
    const s1 = bytes(prefix1).length, e1 = s1 + bytes(turn1).length;
    const s2 = e1 + bytes(prefix2).length;
    expect(e.promptLength).toBe(s2);
    expect(e.lossSpans).toEqual([[s1, e1]]);
    expect([e.prompt, e.response]).toEqual(['2+2?', '4']);
    const batch = new BatchSampler(ds, { batchSize: 1, seed: 0 }, byte.padTokenId!).next();
    const labelled = batch.labels[0].flatMap((l, t) => (l === -100 ? [] : [t]));
    expect(labelled).toEqual([...Array.from({ length: e1 - s1 }, (_, k) => s1 + k), ...Array.from({ length: want.length - s2 }, (_, k) => s2 + k)]);
    expect(batch.lossTokens).toBe(labelled.length);
  });

  it('a template option wins: the earlier turns (one per line) are the prompt, the last answer the response', () => {
    const ds = MultiTaskDataset.fromArray([{ task: 'chat', messages: CONVO }] as never, { tokenizer: tok, maxLength: 200, template: 'Q: {prompt}\nA: {response}' });
    const e = ds.get(0);
    const prompt = 'Q: Be brief.\nhi\nyo\n2+2?\nA: ';
    expect(e.inputIds).toEqual([byte.bosTokenId, ...Buffer.from(prompt), ...Buffer.from('4'), byte.eosTokenId]);
    expect(e.promptLength).toBe(1 + prompt.length);
    expect(e.lossSpans).toBeUndefined();
  });

  it('a long conversation loses its start, never the answer', () => {
    const e = MultiTaskDataset.fromArray([{ task: 'chat', messages: CONVO }] as never, { tokenizer: tok, maxLength: 12 }).get(0);
    expect(e.truncated).toBe(true);
    expect(e.inputIds.length).toBe(12);
    expect(e.inputIds.slice(e.promptLength)).toEqual(bytes('4<eos>\n').slice(0, 12 - e.promptLength));
    expect(e.promptLength).toBe(11);
  });

  it('names what is wrong: no chat template, the last turn not the assistant\'s, bad turns, a template that is not turn by turn', () => {
    const rec = (messages: unknown) => [{ task: 't', messages }] as never;
    expect(() => MultiTaskDataset.fromArray(rec(CONVO), { tokenizer: byte })).toThrow('examples[0]: the record has messages, but the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja): give options.template, or a tokenizer that has one');
    expect(() => MultiTaskDataset.fromArray(rec(CONVO.slice(0, 4)), { tokenizer: tok })).toThrow('examples[0]: the last message must be the assistant\'s (the answer to learn and to generate), got role "user"');
    expect(() => MultiTaskDataset.fromArray(rec([{ role: 'user' }]), { tokenizer: tok })).toThrow('examples[0]: messages[0] must be {role, content} with string values');
    expect(() => MultiTaskDataset.fromArray(rec([]), { tokenizer: tok })).toThrow('field "messages" must be a non-empty array of {role, content}');
    // a template that writes the turn count first cannot be split turn by turn
    const counting = withTemplate('{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}');
    expect(() => MultiTaskDataset.fromArray(rec(CONVO), { tokenizer: counting })).toThrow('the chat template does not render the conversation turn by turn');
  });

  it('evaluation generates the last answer: the reference stops at eos (the newline after it is never generated)', async () => {
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 3 });
    const adapter = Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['q_proj'] });
    const ds = MultiTaskDataset.fromArray([{ task: 'chat', messages: CONVO }] as never, { tokenizer: tok, maxLength: 200 });
    const r = await new Trainer(model, adapter, { progress: false, evalExtraTokens: 1 }).evaluate(ds, { returnPredictions: true });
    expect(r.predictions[0].reference).toBe('4');
    // what greedy decoding gives, independently: at most 1 (the answer "4") + 1 extra token
    const e = ds.get(0);
    const out = (await model.generate([e.inputIds.slice(0, e.promptLength)], { maxNewTokens: 2, eosTokenId: [byte.eosTokenId!] }))[0].slice(e.promptLength);
    const stop = out.indexOf(byte.eosTokenId!);
    const produced = stop < 0 ? out : out.slice(0, stop);
    expect(r.predictions[0].correct).toBe(produced.length === 1 && produced[0] === '4'.charCodeAt(0));
    expect(r.tasks.chat.count).toBe(1);
  });
});
