// A folder complete for sharing: Adapter.save(dir, {tokenizer, modelCard}) writes the tokenizer's
// files (read back by Tokenizer.fromFile with the same ids) and a README.md model card; the demo's
// base model ships its tokenizer the same way.
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, ByteTokenizer, Model, MultiTaskDataset, Tokenizer, Trainer } from '../lib';
import { byteBpe } from './helpers/byte-bpe';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-card-');
const TEXTS = ['Call me Ishmael.', 'naïve — ünïcödé 🐳', '  two  spaces\n\ttab', ''];

describe('tokenizer files', () => {
  it('ByteTokenizer.files() is a tokenizer.json giving the same ids and text for any input', () => {
    const byte = new ByteTokenizer();
    const f = byte.files();
    const hf = Tokenizer.fromJSON(f['tokenizer.json'], f['tokenizer_config.json'] as never);
    for (const t of TEXTS) {
      expect(hf.encode(t)).toEqual(byte.encode(t));
      expect(hf.decode(byte.encode(t))).toBe(t);
    }
    expect([hf.bosTokenId, hf.eosTokenId, hf.padTokenId, hf.vocabSize]).toEqual([256, 257, 258, 259]);
    const withBos = new ByteTokenizer({ addBos: true }).files();
    expect(Tokenizer.fromJSON(withBos['tokenizer.json'], withBos['tokenizer_config.json'] as never).encode('a')).toEqual([256, 97]);
  });

  it('the demo base folder ships the byte tokenizer as files', () => {
    const base = path.join(__dirname, '..', 'examples', 'demo', 'base');
    const t = Tokenizer.fromFile(base);
    for (const s of TEXTS) expect(t.encode(s)).toEqual(new ByteTokenizer().encode(s));
  });
});

describe('Adapter.save(dir, {tokenizer, modelCard})', () => {
  it('writes the tokenizer files and a model card with the options, the data and the evaluation', async () => {
    const tok = new ByteTokenizer();
    const baseDir = path.join(tmp, 'base');
    Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 }).save(baseDir);
    const model = await Model.fromPretrained(baseDir);
    const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 3, targetModules: ['q_proj', 'v_proj'], seed: 1 });
    const data = MultiTaskDataset.fromArray(['cat', 'dog'].map((w) => ({ task: 'upper', prompt: w, response: w.toUpperCase() })), { tokenizer: tok, template: 'Q: {prompt}\nA: {response}', maxLength: 20 });
    const trainer = new Trainer(model, adapter, { maxSteps: 2, batchSize: 2, progress: false });
    await trainer.fit(data);
    const metrics = await trainer.evaluate(data);
    const dir = path.join(tmp, 'shared-adapter');
    adapter.save(dir, { tokenizer: tok, modelCard: { metrics, description: 'Upper-cases words.' } });
    expect(fs.readdirSync(dir).sort()).toEqual(['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'rlora_config.json', 'tokenizer.json', 'tokenizer_config.json']);
    expect(Tokenizer.fromFile(dir).encode('Q: cat')).toEqual(tok.encode('Q: cat'));
    const card = fs.readFileSync(path.join(dir, 'README.md'), 'utf8');
    expect(card.startsWith(`---\nlibrary_name: rlora\nbase_model: ${JSON.stringify(baseDir)}\ntags:\n- rlora\n- rlora\n- lora\n---\n\n# shared-adapter\n\nUpper-cases words.\n`)).toBe(true);
    expect(card).toContain(`${adapter.trainableParameterCount().toLocaleString('en-US')} trainable parameters`);
    expect(card).toContain('| heads | 3 |');
    expect(card).toContain('| target modules | q_proj, v_proj |');
    expect(card).toContain('- template: `"Q: {prompt}\\nA: {response}"`');
    expect(card).toContain(`| upper | ${metrics.upper.loss.toFixed(4)} | ${(100 * metrics.upper.accuracy).toFixed(1)}% | 2 |`);
    expect(card).toContain(`const adapter = await Adapter.load(model, "shared-adapter");`);
    // the folder loads as an adapter as before
    const again = await Adapter.load(await Model.fromPretrained(baseDir), dir);
    expect(again.options.heads).toBe(3);
  });

  it('a chat tokenizer keeps its chat_template in tokenizer_config.json; bad options are refused', async () => {
    const { json, config } = byteBpe('{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}');
    const chatTok = Tokenizer.fromJSON(json, config as never);
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const adapter = Adapter.attach(model, { targetModules: ['q_proj'] });
    const dir = path.join(tmp, 'chat-adapter');
    adapter.save(dir, { tokenizer: chatTok });
    expect(Tokenizer.fromFile(dir).chatTemplate).toBe(chatTok.chatTemplate);
    expect(() => adapter.save(dir, { tokenizer: { encode: () => [] } as never })).toThrow(/tokenizer must be a Tokenizer or a ByteTokenizer/);
    expect(() => adapter.save(dir, { modelcard: true } as never)).toThrow('Adapter.save: unknown option "modelcard" (did you mean "modelCard"?)');
  });
});
