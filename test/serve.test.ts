// serve() and rlora serve through OpenAI's own client (the `openai` npm package): answers equal
// generateText / generateChat for the base and for each adapter, streaming equals non-streaming,
// adapters alternate without cross-talk, and bad requests get OpenAI's error shape.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import OpenAI from 'openai';

import { Adapter, generateChat, generateText, Model, RloraServer, serve, Tokenizer } from '../lib';
import { tempFolder } from './helpers/tiny-model';

jest.setTimeout(120_000);

const REPO = path.resolve(__dirname, '..');
const tmp = tempFolder('rlora-serve-');
const CHATML = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
const base = path.join(tmp, 'base');
let model: Model;
let tok: Tokenizer;
let server: RloraServer;
let client: OpenAI;

beforeAll(async () => {
  // the demo base with a chat template
  fs.cpSync(path.join(REPO, 'examples', 'demo', 'base'), base, { recursive: true });
  const cfgPath = path.join(base, 'tokenizer_config.json');
  fs.writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgPath, 'utf8')), chat_template: CHATML }));
  model = await Model.fromPretrained(base);
  tok = Tokenizer.fromFile(base);
  for (const [name, seed] of [['alpha', 5], ['beta', 6]] as const) {
    const a = Adapter.attach(model, { method: 'lora', rank: 4, alpha: 16, targetModules: ['q_proj', 'v_proj', 'down_proj'], init: { b: 'unit', offset: false }, seed });
    a.save(path.join(tmp, name));
    a.detach();
  }
  await Adapter.load(model, path.join(tmp, 'alpha'), { name: 'alpha' });
  await Adapter.load(model, path.join(tmp, 'beta'), { name: 'beta' });
  server = await serve({ model, tokenizer: tok, port: 0 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await server?.close();
});

/** generateText with `name` active (null: the base), as the server generates. */
async function expected(name: string | null, prompt: string, maxNewTokens: number): Promise<string> {
  Adapter.setActive(model, name);
  return generateText(model, tok, prompt, { maxNewTokens });
}

describe('serve', () => {
  it('lists the base and each adapter', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(['base', 'alpha', 'beta']);
  });

  it('completions equal generateText, for the base and for an adapter; adapters differ', async () => {
    const prompt = 'Call me Ishmael. Some years ago';
    const want = { base: await expected(null, prompt, 24), alpha: await expected('alpha', prompt, 24) };
    expect(want.alpha).not.toBe(want.base);
    for (const id of ['base', 'alpha'] as const) {
      const r = await client.completions.create({ model: id, prompt, max_tokens: 24, temperature: 0 });
      expect(r.choices[0].text).toBe(want[id]);
      expect(r.choices[0].finish_reason).toBe('length');
      expect(r.usage).toEqual({ prompt_tokens: tok.encode(prompt).length + 1, completion_tokens: 24, total_tokens: tok.encode(prompt).length + 25 });
    }
  });

  it('chat completions equal generateChat; streaming gives the same text, ending in [DONE] with usage', async () => {
    const messages = [{ role: 'user' as const, content: 'Name a whale.' }];
    Adapter.setActive(model, 'beta');
    const want = await generateChat(model, tok, messages, { maxNewTokens: 20 });
    const r = await client.chat.completions.create({ model: 'beta', messages, max_completion_tokens: 20, temperature: 0 });
    expect(r.choices[0].message).toMatchObject({ role: 'assistant', content: want });
    const stream = await client.chat.completions.create({ model: 'beta', messages, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: unknown;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        finish = c.finish_reason ?? finish;
      }
    }
    expect(text).toBe(want);
    expect(finish).toBe(r.choices[0].finish_reason);
    expect(usage).toEqual(r.usage);
  });

  it('a seed reproduces sampled text; n gives that many choices', async () => {
    const a = await client.completions.create({ model: 'alpha', prompt: 'The sea', max_tokens: 16, temperature: 1, seed: 7, n: 3 });
    const b = await client.completions.create({ model: 'alpha', prompt: 'The sea', max_tokens: 16, temperature: 1, seed: 7, n: 3 });
    expect(a.choices.map((c) => c.text)).toEqual(b.choices.map((c) => c.text));
    expect(a.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(new Set(a.choices.map((c) => c.text)).size).toBe(3);
    const stop = await client.completions.create({ model: 'alpha', prompt: 'The sea', max_tokens: 16, temperature: 1, seed: 7, n: 3, stop: [a.choices[0].text.slice(3, 5)] });
    expect(stop.choices[0].text).toBe(a.choices[0].text.slice(0, a.choices[0].text.indexOf(a.choices[0].text.slice(3, 5))));
    expect(stop.choices[0].finish_reason).toBe('stop');
  });

  it('two adapters alternating over 20 requests, several at once, never mix', async () => {
    const prompt = 'It was the best of times';
    const want = { alpha: await expected('alpha', prompt, 12), beta: await expected('beta', prompt, 12) };
    expect(want.alpha).not.toBe(want.beta);
    const ids = Array.from({ length: 20 }, (_, i) => (i % 2 ? 'beta' : 'alpha') as 'alpha' | 'beta');
    const got = await Promise.all(ids.map((id) => client.completions.create({ model: id, prompt, max_tokens: 12, temperature: 0 })));
    got.forEach((r, i) => expect(r.choices[0].text).toBe(want[ids[i]]));
  });

  it('errors in OpenAI\'s shape: unknown model 404, unsupported fields, bad JSON, huge bodies and long prompts 400; the server keeps serving', async () => {
    await expect(client.completions.create({ model: 'gamma', prompt: 'x', max_tokens: 2 })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
    await expect(client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'f' } }] })).rejects.toMatchObject({ status: 400, message: expect.stringContaining('tools is not supported') });
    const post = (body: string): Promise<Response> => fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    const bad = await post('{"model": "base", "prompt": ');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/not valid JSON/);
    const huge = await post(JSON.stringify({ model: 'base', prompt: 'x'.repeat(2 << 20) }));
    expect(huge.status).toBe(400);
    const limit = model.config.max_position_embeddings!;
    await expect(client.completions.create({ model: 'base', prompt: 'x'.repeat(limit + 5), max_tokens: 2 })).rejects.toMatchObject({ status: 400, code: 'context_length_exceeded' });
    // harmless unknown fields are ignored
    const ok = await client.completions.create({ model: 'base', prompt: 'The', max_tokens: 3, temperature: 0, user: 'u1', frequency_penalty: 0 });
    expect(ok.choices[0].text).toBe(await expected(null, 'The', 3));
  });

  it('a client that disconnects stops its generation', async () => {
    const long = { model: 'base', prompt: 'The', max_tokens: 500, temperature: 0, stop: null } as const;
    let t0 = Date.now();
    const full = await client.completions.create(long);
    const fullMs = Date.now() - t0;
    expect(full.usage?.completion_tokens).toBe(500);
    const controller = new AbortController();
    t0 = Date.now();
    const stream = await client.completions.create({ ...long, stream: true }, { signal: controller.signal });
    let pieces = 0;
    try {
      for await (const _ of stream) if (++pieces === 3) controller.abort();
    } catch {
      // the client may end the iteration with an abort error, or quietly
    }
    expect(pieces).toBe(3);
    // the next request is answered as soon as the aborted one stops: well before 500 tokens' time
    await client.completions.create({ model: 'base', prompt: 'The', max_tokens: 2, temperature: 0 });
    expect(Date.now() - t0).toBeLessThan(fullMs / 2);
  });
});

describe('rlora serve', () => {
  it('serves adapters by name with an API key, and stops on SIGINT', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'lib', 'cli.ts'), 'serve', '--model', base, '--adapter', `alpha=${path.join(tmp, 'alpha')}`, '--port', '0', '--api-key', 'sekrit'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /rlora serve: (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(err);
        if (m) resolve(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`rlora serve exited ${code}: ${err}`)));
    });
    const denied = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await expect(denied.models.list()).rejects.toMatchObject({ status: 401 });
    const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sekrit', maxRetries: 0 });
    const r = await c.completions.create({ model: 'alpha', prompt: 'The sea', max_tokens: 10, temperature: 0 });
    expect(r.choices[0].text).toBe(await expected('alpha', 'The sea', 10));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});
