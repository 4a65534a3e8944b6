// Model.stream, generateText and `rlora generate`, checked against Model.generate on a tiny model.
import { spawn } from 'child_process';
import * as path from 'path';

import { Adapter, applyPromptTemplate, ByteTokenizer, generateText, HFConfig, Model, MultiTaskDataset, Trainer } from '../lib';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

jest.setTimeout(60_000);

const REPO = path.resolve(__dirname, '..');
const CLI = path.join(REPO, 'lib', 'cli.ts');
const tmp = tempFolder('rlora-generate-');

const tok = new ByteTokenizer();
const CFG: HFConfig = TINY_BYTE_CONFIG;

async function collect(it: AsyncIterable<number>): Promise<number[]> {
  const out: number[] = [];
  for await (const t of it) out.push(t);
  return out;
}

describe('Model.stream', () => {
  const model = Model.fromConfig(CFG, { seed: 3 });
  const prompt = [tok.encode('hello there')];

  it('yields exactly the new tokens of greedy generate', async () => {
    // no eos here: a token id the byte vocabulary never reaches
    const opts = { maxNewTokens: 12, eosTokenId: tok.vocabSize + 5 };
    const [row] = await model.generate(prompt, opts);
    const streamed = await collect(model.stream(prompt, opts));
    expect(streamed).toHaveLength(12);
    expect(streamed).toEqual(row.slice(prompt[0].length));
  });

  it('stops after the eos token', async () => {
    const [first] = await collect(model.stream(prompt, { maxNewTokens: 1, eosTokenId: tok.vocabSize + 5 }));
    const streamed = await collect(model.stream(prompt, { maxNewTokens: 10, eosTokenId: first }));
    expect(streamed).toEqual([first]);
    // generate stops there too (a batch of one row ends when the row does)
    const [row] = await model.generate(prompt, { maxNewTokens: 10, eosTokenId: first });
    expect(row.slice(prompt[0].length)).toEqual([first]);
  });

  it('sampling is reproducible with a seed and stays within maxNewTokens', async () => {
    const opts = { maxNewTokens: 6, temperature: 1, topK: 20, seed: 7, eosTokenId: tok.vocabSize + 5 };
    const a = await collect(model.stream(prompt, opts));
    const b = await collect(model.stream(prompt, opts));
    expect(a).toHaveLength(6);
    expect(a).toEqual(b);
  });

  it('refuses more than one row', async () => {
    const two = [tok.encode('ab'), tok.encode('cd')];
    await expect(collect(model.stream(two))).rejects.toThrow(/one batch row only, got 2 rows/);
  });
});

describe('generateText', () => {
  const model = Model.fromConfig(CFG, { seed: 4 });

  it('equals the decoded new tokens of generate, up to eos', async () => {
    const prompt = 'Q: 2+2?\nA:';
    const ids = tok.encode(prompt);
    const [row] = await model.generate([ids], { maxNewTokens: 16, eosTokenId: tok.eosTokenId });
    const fresh = row.slice(ids.length);
    const stop = fresh.indexOf(tok.eosTokenId);
    const expected = tok.decode(stop < 0 ? fresh : fresh.slice(0, stop));
    const pieces: string[] = [];
    const text = await generateText(model, tok, prompt, { maxNewTokens: 16, onText: (t) => pieces.push(t) });
    expect(text).toBe(expected);
    expect(pieces.join('')).toBe(text);
  });

  it('stops at eos: nothing of the eos or after it', async () => {
    const prompt = 'xyz';
    const [first] = await collect(model.stream([tok.encode(prompt)], { maxNewTokens: 1, eosTokenId: tok.vocabSize + 5 }));
    expect(await generateText(model, tok, prompt, { maxNewTokens: 10, eosTokenId: first })).toBe('');
  });
});

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env.FORCE_COLOR;
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// Generation encodes a prompt exactly as training and evaluation did: with the byte tokenizer the
// datasets put bos first and generateText did not, so `rlora generate` printed another answer than
// the evaluation predicted for the same adapter (17/20 against 19/20 on a test set).
describe('generation and evaluation agree', () => {
  it('generateText gives the evaluation\'s prediction for every example, and rlora generate prints it', async () => {
    const template = 'Q: {prompt}\nA: {response}';
    const rows = ['cat', 'dog', 'fish', 'bird', 'ant', 'emu'].map((w, i) => ({ task: i % 2 ? 'upper' : 'first', prompt: w, response: i % 2 ? w.toUpperCase() : w[0] }));
    const data = MultiTaskDataset.fromArray(rows, { tokenizer: tok, template, maxLength: 24 });
    const model = Model.fromConfig(CFG, { seed: 7 });
    const adapter = Adapter.attach(model, { method: 'rlora', heads: 2, rank: 2, dropout: 0, targetModules: ['q_proj', 'v_proj', 'up_proj'], seed: 1 });
    const trainer = new Trainer(model, adapter, { maxSteps: 30, batchSize: 6, learningRate: 3e-2, evalBatchSize: 1, evalExtraTokens: 3, progress: false });
    await trainer.fit(data);
    const { predictions } = await trainer.evaluate(data, { returnPredictions: true });
    const generated: string[] = [];
    for (let i = 0; i < rows.length; i++) {
      const ex = data.get(i);
      const response = ex.inputIds.slice(ex.promptLength);
      const eosAt = response.indexOf(tok.eosTokenId!);
      const maxNewTokens = (eosAt < 0 ? response.length : eosAt) + 3; // as evaluate sizes its generation
      generated.push(await generateText(model, tok, applyPromptTemplate(template, rows[i].prompt), { maxNewTokens }));
    }
    expect(generated).toEqual(predictions.map((p) => p.prediction));
    // and the CLI, from the saved folders, for one of them
    const modelDir = path.join(tmp, 'model-agree'), adapterDir = path.join(tmp, 'adapter-agree');
    Model.fromConfig(CFG, { seed: 7 }).save(modelDir);
    adapter.save(adapterDir);
    const r = await runCli(['generate', '--model', modelDir, '--adapter', adapterDir, '--prompt', rows[0].prompt, '--max-new-tokens', String(data.get(0).inputIds.length - data.get(0).promptLength - 1 + 3)]);
    if (r.code !== 0) throw new Error(`exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout).toBe(`${predictions[0].prediction}\n`);
  });
});

describe('rlora generate', () => {
  it('prints what generateText returns, for a saved model folder with an adapter', async () => {
    const model = Model.fromConfig(CFG, { seed: 5 });
    const modelDir = path.join(tmp, 'model');
    const adapterDir = path.join(tmp, 'adapter');
    model.save(modelDir);
    const adapter = Adapter.attach(model, { method: 'rlora', heads: 2, rank: 2, targetModules: ['q_proj', 'v_proj'], seed: 1 });
    adapter.save(adapterDir);
    const template = 'Q: {prompt}\nA: {response}';
    const expected = await generateText(model, tok, 'Q: hi\nA: ', { maxNewTokens: 8 });
    const r = await runCli(['generate', '--model', modelDir, '--adapter', adapterDir, '--prompt', 'hi', '--template', template, '--max-new-tokens', '8']);
    if (r.code !== 0) throw new Error(`exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout).toBe(`${expected}\n`);
    expect(r.stderr).toMatch(/has no tokenizer\.json; using the byte tokenizer/);
  });

  it('without --template, a trained adapter\'s prompts go through the template it was trained with', async () => {
    const model = Model.fromConfig(CFG, { seed: 6 });
    const modelDir = path.join(tmp, 'model-t');
    const adapterDir = path.join(tmp, 'adapter-t');
    model.save(modelDir);
    const adapter = Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['q_proj'], seed: 1 });
    adapter.trainingData = { template: '<{prompt}>={response}', maxLength: 32, fields: { task: 'task', prompt: 'prompt', response: 'response' }, addBos: true, addEos: true, tokenizer: 'byte' };
    adapter.save(adapterDir);
    const expected = await generateText(model, tok, '<hi>=', { maxNewTokens: 6 });
    const r = await runCli(['generate', '--model', modelDir, '--adapter', adapterDir, '--prompt', 'hi', '--max-new-tokens', '6']);
    if (r.code !== 0) throw new Error(`exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout).toBe(`${expected}\n`);
    expect(r.stderr).toContain('rlora generate: the prompt goes through the template the adapter was trained with');
  });

  it('without --model: the base model the adapter names (its base_model_name_or_path); none named is a usage error', async () => {
    const modelDir = path.join(tmp, 'model-named');
    Model.fromConfig(CFG, { seed: 8 }).save(modelDir);
    const model = await Model.fromPretrained(modelDir);
    const adapter = Adapter.attach(model, { method: 'rlora', heads: 2, rank: 2, targetModules: ['q_proj', 'v_proj'], seed: 3 });
    const adapterDir = path.join(tmp, 'adapter-named');
    adapter.save(adapterDir);
    const expected = await generateText(model, tok, 'hi', { maxNewTokens: 6 });
    const r = await runCli(['generate', '--adapter', adapterDir, '--prompt', 'hi', '--template', '{prompt}', '--max-new-tokens', '6']);
    if (r.code !== 0) throw new Error(`exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout).toBe(`${expected}\n`);
    const fromConfig = Model.fromConfig(CFG, { seed: 8 });
    Adapter.attach(fromConfig, { method: 'lora', rank: 2, targetModules: ['q_proj'] }).save(path.join(tmp, 'adapter-unnamed'));
    const u = await runCli(['generate', '--adapter', path.join(tmp, 'adapter-unnamed'), '--prompt', 'hi']);
    expect(u.code).toBe(2);
    expect(u.stderr).toContain(`--model DIR|ID is required: ${path.join(tmp, 'adapter-unnamed', 'adapter_config.json')} names no base model`);
  });

  it('--prompt is required (usage error, exit 2)', async () => {
    const r = await runCli(['generate', '--model', tmp]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--prompt TEXT is required/);
  });
});
