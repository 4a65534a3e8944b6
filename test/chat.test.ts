// Chat data: {task, messages} records rendered with the tokenizer's chat_template (Hugging Face's
// format), loss on the assistant turns only. The expected tokens and labels are written out here
// from the template's text by hand, independently of the renderer.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, BatchSampler, ByteTokenizer, generateChat, Model, MultiTaskDataset, TextTokenizer, Tokenizer, Trainer } from '../lib';
import { byteBpe } from './helpers/byte-bpe';
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

// An adapter trained on chat records records it (rlora_config.json data.chat), and answers are
// generated from the tokens evaluation generates from: generateChat, Tokenizer.applyChatTemplate
// and `rlora generate` (which used to claim a "{prompt}\n{response}" template for such an adapter
// and print garbage).
describe('generating for an adapter trained on chat records', () => {
  const CHATML_BPE = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

  it('Tokenizer.applyChatTemplate renders as transformers does, with and without the generation prompt', () => {
    const { json, config } = byteBpe(CHATML_BPE);
    const t = Tokenizer.fromJSON(json, config as never);
    const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }];
    expect(t.applyChatTemplate(msgs)).toBe('<bos><|system|>Be brief.<eos>\n<|user|>hi<eos>\n');
    expect(t.applyChatTemplate(msgs, { addGenerationPrompt: true })).toBe('<bos><|system|>Be brief.<eos>\n<|user|>hi<eos>\n<|assistant|>');
    expect(() => t.applyChatTemplate(msgs, { addGenerationPromt: true } as never)).toThrow(/unknown option/);
    const { json: j2, config: c2 } = byteBpe();
    expect(() => Tokenizer.fromJSON(j2, c2 as never).applyChatTemplate(msgs)).toThrow(/has no chat_template/);
  });

  it('generateChat gives the evaluation\'s prediction for every example; the adapter records chat; rlora generate uses it', async () => {
    const { json, config } = byteBpe(CHATML_BPE);
    const bpe = Tokenizer.fromJSON(json, config as never);
    const words = ['cat', 'dog', 'owl', 'emu', 'yak', 'elk'];
    const records = words.map((w, i) => ({ task: i % 2 ? 'upper' : 'first', messages: [{ role: 'user', content: w }, { role: 'assistant', content: i % 2 ? w.toUpperCase() : w[0] }] }));
    const data = MultiTaskDataset.fromArray(records as never, { tokenizer: bpe, maxLength: 40 });
    expect(data.settings().chat).toBe(true);
    expect(MultiTaskDataset.fromArray([{ task: 't', prompt: 'a', response: 'b' }], { tokenizer: bpe, maxLength: 40 }).settings().chat).toBeUndefined();
    const cfg = { ...TINY_BYTE_CONFIG, vocab_size: 259, bos_token_id: 256, eos_token_id: 257 };
    const model = Model.fromConfig(cfg, { seed: 3 });
    const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, dropout: 0, targetModules: ['q_proj', 'up_proj'], seed: 1 });
    const trainer = new Trainer(model, adapter, { maxSteps: 20, batchSize: 6, learningRate: 3e-2, evalBatchSize: 1, evalExtraTokens: 2, progress: false });
    await trainer.fit(data);
    const { predictions } = await trainer.evaluate(data, { returnPredictions: true });
    const maxNew = (i: number): number => {
      const e = data.get(i);
      const r = e.inputIds.slice(e.promptLength);
      const at = r.indexOf(bpe.eosTokenId!);
      return (at < 0 ? r.length : at) + 2;
    };
    const generated: string[] = [];
    for (let i = 0; i < words.length; i++) generated.push(await generateChat(model, bpe, records[i].messages.slice(0, 1), { maxNewTokens: maxNew(i) }));
    expect(generated).toEqual(predictions.map((p) => p.prediction));

    // saved and loaded: the adapter says it was trained on chat
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-chat-gen-'));
    try {
      const modelDir = path.join(dir, 'model'), adapterDir = path.join(dir, 'adapter');
      Model.fromConfig(cfg, { seed: 3 }).save(modelDir);
      fs.writeFileSync(path.join(modelDir, 'tokenizer.json'), JSON.stringify(json));
      fs.writeFileSync(path.join(modelDir, 'tokenizer_config.json'), JSON.stringify(config));
      adapter.save(adapterDir);
      expect(JSON.parse(fs.readFileSync(path.join(adapterDir, 'rlora_config.json'), 'utf8')).data.chat).toBe(true);
      expect((await Adapter.load(Model.fromConfig(cfg, { seed: 3 }), adapterDir)).trainingData?.chat).toBe(true);
      const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'lib', 'cli.ts'), 'generate', '--model', modelDir, '--adapter', adapterDir, ...args], { cwd: path.join(__dirname, '..'), encoding: 'utf8', timeout: 60_000 });
      const r = cli(['--prompt', words[1], '--max-new-tokens', String(maxNew(1))]);
      expect(r.stderr).toContain('the adapter was trained on chat records');
      expect(r.stderr).not.toMatch(/template the adapter was trained with/);
      expect(r.stdout).toBe(`${predictions[1].prediction}\n`);
      // --system adds a system turn; --template and --chat exclude each other
      const withSystem = cli(['--prompt', words[1], '--system', 'Be brief.', '--max-new-tokens', '3']);
      expect(withSystem.stdout).toBe(`${await generateChat(model, bpe, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: words[1] }], { maxNewTokens: 3 })}\n`);
      expect(cli(['--prompt', 'x', '--chat', '--template', '{prompt}']).status).toBe(2);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a chat template runs under a time budget', () => {
  // a template is a program in a downloaded file: these would hold the process for hours or exhaust V8's heap
  it.each([
    ['a loop over range(1e9)', '{% for i in range(1000000000) %}{% endfor %}{{ messages[0].content }}'],
    ['nested loops', '{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}'],
  ])('%s is stopped with an error, within seconds', (_, template) => {
    const t0 = Date.now();
    const { json, config } = byteBpe(template);
    expect(() => Tokenizer.fromJSON(json, config as never).applyChatTemplate(CONVO)).toThrow(/the chat template ran too long \(a loop that does not end soon\?\): stopped after 1\d\d\d ms/);
    // the datasets render chat records with the same renderer
    expect(() => MultiTaskDataset.fromArray([{ task: 'chat', messages: CONVO }] as never, { tokenizer: withTemplate(template), maxLength: 200 })).toThrow(/the chat template ran too long/);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });
});
