// rlora serve: an OpenAI-compatible HTTP server over a model and its named adapters (lib/serve.ts).
import * as fs from 'fs';
import * as path from 'path';

import { InputError, intOption, parseArgs, stringOption, Subcommand, UsageError } from './args';
import { as, checkVocabulary, lib, loadModel, loadTokenizer, modelArgument, resolveFolder } from './common';
import { ADAPTER_CONFIG_FILE } from '../adapter/files';

export const serveCommand: Subcommand = {
  summary: 'serve a model and its adapters over OpenAI\'s API (/v1/chat/completions, /v1/completions)',
  help: `rlora serve --model DIR|ID [--adapter NAME=DIR|ID ...] [options]

Loads the model and each adapter under its NAME, and answers OpenAI's API: GET /v1/models (ids:
"base" for the model alone, and each adapter's NAME), POST /v1/completions and
POST /v1/chat/completions (chat through the tokenizer's chat template), with "stream": true as
server-sent events. A request's "model" picks the adapter. Requests queue: one generation at a
time. Ctrl-C stops the server.

  --model DIR|ID        the base model's Hugging Face folder, or a Hub repo id ("org/name": the
                        Hugging Face cache, else a download into it)
  --adapter NAME=DIR|ID an adapter folder (or Hub repo id) served as NAME (repeat for several)
  --host H              address to listen on (default 127.0.0.1: this machine only)
  --port P              port (default 8000; 0 picks a free one)
  --api-key KEY         require "Authorization: Bearer KEY"
  --cors                answer browsers from any origin
  --max-tokens N        new tokens when a request names none (default 256)

Example:
  rlora serve --model models/Qwen2.5-0.5B-Instruct --adapter support=runs/a/adapter
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "support", "messages": [{"role": "user", "content": "Hi"}]}'`,
  run: (args) => runServe(args),
};

async function runServe(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, { model: 'value', adapter: 'list', host: 'value', port: 'value', 'api-key': 'value', cors: 'flag', 'max-tokens': 'value' });
  if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
  const modelArg = stringOption(opts, 'model');
  if (!modelArg) throw new UsageError('--model DIR|ID is required');
  const port = intOption(opts, 'port', 0, 65535) ?? 8000;
  const maxTokens = intOption(opts, 'max-tokens', 1);
  const adapters = ((opts.adapter as string[] | undefined) ?? []).map((spec) => {
    const eq = spec.indexOf('=');
    if (eq <= 0 || eq === spec.length - 1) throw new UsageError(`--adapter must be NAME=DIR, got ${JSON.stringify(spec)}`);
    const name = spec.slice(0, eq);
    if (name === 'base') throw new UsageError('--adapter: the name "base" is the model alone; pick another');
    return { name, arg: spec.slice(eq + 1) };
  });
  const names = adapters.map((a) => a.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) throw new UsageError(`--adapter: the name ${JSON.stringify(twice)} is given twice`);

  const folders: { name: string; dir: string }[] = [];
  for (const a of adapters) {
    const dir = await resolveFolder(a.arg, 'adapter', `--adapter ${a.name}`);
    if (!fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE))) throw new InputError(`--adapter ${a.name}=${a.arg}: ${dir} is not an adapter folder (no ${ADAPTER_CONFIG_FILE})`);
    folders.push({ name: a.name, dir });
  }
  const rl = lib();
  const model = await loadModel({ path: modelArgument(modelArg) }, 'model');
  const modelDir = model.source!; // a Hub repo's snapshot folder
  const hasTokenizer = fs.existsSync(path.join(modelDir, 'tokenizer.json'));
  const tokenizer = await loadTokenizer(hasTokenizer ? undefined : 'byte', modelDir, 'tokenizer');
  checkVocabulary(model, tokenizer, []);
  for (const a of folders) await as(`adapter ${a.name} (${a.dir})`, () => rl.Adapter.load(model, a.dir, { name: a.name }));
  rl.Adapter.setActive(model, null);
  const server = await rl.serve({
    model,
    tokenizer,
    adapters: names,
    host: stringOption(opts, 'host') ?? '127.0.0.1',
    port,
    ...(stringOption(opts, 'api-key') !== undefined ? { apiKey: stringOption(opts, 'api-key') } : {}),
    cors: opts.cors === true,
    ...(maxTokens !== undefined ? { defaultMaxTokens: maxTokens } : {}),
  });
  console.error(`rlora serve: ${server.url}/v1 (models: ${['base', ...names].join(', ')}); Ctrl-C stops it`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      console.error('rlora serve: stopping');
      void server.close().then(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  return 0;
}
