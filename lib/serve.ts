// serve(): an HTTP server following OpenAI's API (GET /v1/models, POST /v1/completions,
// POST /v1/chat/completions, with server-sent events for stream: true) over one base model and its
// named adapters: the request's `model` picks the adapter ('base': none). Requests queue: one
// generation at a time on the model. rlora serve (lib/cli/serve.ts) is this with a command line.
import { randomUUID } from 'crypto';
import * as http from 'http';
import type { AddressInfo } from 'net';

import { Adapter } from './adapter';
import { encodePrompt } from './data';
import { chatIds, completeText, GenerateTextOptions, TextCompletion } from './generate';
import { Model } from './model';
import type { TextTokenizer } from './tokenizer';
import { checkInstance, checkKeys, show } from './util/options';

export interface ServeOptions {
  /** The base model; its adapters are loaded on it (Adapter.load(model, dir, {name})). */
  model: Model;
  tokenizer: TextTokenizer;
  /** The adapters to serve, by the id clients name in `model`. Default: those loaded on the model by name. */
  adapters?: readonly string[];
  /** Default '127.0.0.1' (this machine only). */
  host?: string;
  /** Default 8000; 0 picks a free port (see the server's `port`). */
  port?: number;
  /** When set, requests must send `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Answer browsers from any origin (Access-Control-Allow-Origin: *). Default false. */
  cors?: boolean;
  /** Request bodies above this many bytes are refused (400). Default 1 MiB. */
  maxBodyBytes?: number;
  /** New tokens when a request names no max_tokens: default 256 (and never past max_position_embeddings). */
  defaultMaxTokens?: number;
}

/** What rlora's types say of the Node http.Server (rlora's types need no @types/node). */
export interface HttpServerLike {
  readonly listening: boolean;
}

export interface RloraServer {
  /** http://host:port */
  readonly url: string;
  readonly port: number;
  /** The Node http.Server itself (cast it to use more of it). */
  readonly server: HttpServerLike;
  /** Stops accepting requests, aborts running generations and resolves when the server is closed. */
  close(): Promise<void>;
}

/** The model id of the base alone. */
export const BASE_MODEL_ID = 'base';

class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly type = 'invalid_request_error', readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

// fields of OpenAI's API that would change the answer in ways rlora does not compute
const UNSUPPORTED = ['tools', 'tool_choice', 'functions', 'function_call', 'logprobs', 'top_logprobs', 'response_format', 'logit_bias', 'echo', 'suffix', 'best_of', 'audio', 'modalities', 'prediction'];

/** Starts the server; resolves once it listens. */
export async function serve(options: ServeOptions): Promise<RloraServer> {
  checkKeys(options as unknown, ['model', 'tokenizer', 'adapters', 'host', 'port', 'apiKey', 'cors', 'maxBodyBytes', 'defaultMaxTokens'], 'serve');
  const { model, tokenizer } = options;
  checkInstance(model, Model, 'serve: model');
  if (typeof tokenizer?.decode !== 'function') throw new TypeError(`serve: tokenizer must be a Tokenizer, got ${show(tokenizer)}`);
  const loaded = Adapter.loaded(model);
  const adapters = options.adapters ?? [...loaded.keys()];
  for (const a of adapters) {
    if (!loaded.has(a)) throw new RangeError(`serve: no adapter named ${JSON.stringify(a)} is loaded on the model (Adapter.load(model, dir, {name: ${JSON.stringify(a)}}))`);
    if (a === BASE_MODEL_ID) throw new RangeError(`serve: an adapter cannot be named ${JSON.stringify(BASE_MODEL_ID)} (the id of the base model alone)`);
  }
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 8000;
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) throw new RangeError(`serve: port must be an integer from 0 to 65535, got ${show(port)}`);
  const maxBody = options.maxBodyBytes ?? 1 << 20;
  const defaultMax = options.defaultMaxTokens ?? 256;
  const created = Math.floor(Date.now() / 1000);
  const running = new Set<AbortController>();
  let queue: Promise<unknown> = Promise.resolve();
  /** Runs `job` when the generations queued before it are done (one at a time on the model). */
  const exclusive = <T>(job: () => Promise<T>): Promise<T> => {
    const next = queue.then(job, job);
    queue = next.catch(() => undefined);
    return next;
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      const err = e instanceof ApiError ? e : e instanceof RangeError || e instanceof TypeError ? new ApiError(400, e.message) : new ApiError(500, (e as Error)?.message ?? String(e), 'server_error');
      if (res.headersSent) {
        // a stream already under way: say so in the stream, then end it
        if (!res.writableEnded) res.end(`data: ${JSON.stringify({ error: { message: err.message, type: err.type } })}\n\ndata: [DONE]\n\n`);
        return;
      }
      send(res, err.status, { error: { message: err.message, type: err.type, param: err.param, code: err.code } });
    });
  });

  function send(res: http.ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...corsHeaders() });
    res.end(text);
  }
  function corsHeaders(): Record<string, string> {
    return options.cors ? { 'Access-Control-Allow-Origin': '*', 'Access-Control-Allow-Headers': 'Authorization, Content-Type', 'Access-Control-Allow-Methods': 'GET, POST, OPTIONS' } : {};
  }

  async function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) throw new ApiError(400, `the request body is ${declared} bytes, more than the server takes (${maxBody})`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > maxBody) throw new ApiError(400, `the request body is more than the server takes (${maxBody} bytes)`);
      chunks.push(chunk as Buffer);
    }
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError(400, 'the request body must be a JSON object');
    return body as Record<string, unknown>;
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'OPTIONS' && options.cors) {
      res.writeHead(204, corsHeaders());
      res.end();
      return;
    }
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      throw new ApiError(401, 'Incorrect API key provided: send Authorization: Bearer <key>', 'invalid_request_error', null, 'invalid_api_key');
    }
    if (req.method === 'GET' && url.pathname === '/v1/models') {
      const ids = [BASE_MODEL_ID, ...adapters];
      send(res, 200, { object: 'list', data: ids.map((id) => ({ id, object: 'model', created, owned_by: 'rlora' })) });
      return;
    }
    const chat = url.pathname === '/v1/chat/completions';
    if (req.method === 'POST' && (chat || url.pathname === '/v1/completions')) {
      const body = await readBody(req);
      await complete(req, res, body, chat);
      return;
    }
    throw new ApiError(404, `no route ${req.method} ${url.pathname} (rlora serves GET /v1/models, POST /v1/completions, POST /v1/chat/completions)`, 'invalid_request_error', null, 'not_found');
  }

  /** The generation options of a request body, checked with OpenAI's names. */
  function sampling(body: Record<string, unknown>, promptTokens: number): GenerateTextOptions & { n: number } {
    const num = (key: string, ok: (v: number) => boolean, what: string): number | undefined => {
      const v = body[key];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number' || !ok(v)) throw new ApiError(400, `${key} must be ${what}, got ${show(v)}`, 'invalid_request_error', key);
      return v;
    };
    const int = (v: number): boolean => Number.isSafeInteger(v);
    const limit = model.config.max_position_embeddings;
    const room = typeof limit === 'number' ? limit - promptTokens : Infinity;
    if (room < 1) throw new ApiError(400, `the prompt is ${promptTokens} tokens, as long as the model takes (max_position_embeddings ${limit}) or more`, 'invalid_request_error', 'messages', 'context_length_exceeded');
    const maxTokens = num('max_completion_tokens', (v) => int(v) && v >= 1, 'an integer >= 1') ?? num('max_tokens', (v) => int(v) && v >= 1, 'an integer >= 1');
    if (maxTokens !== undefined && maxTokens > room) {
      throw new ApiError(400, `the prompt (${promptTokens} tokens) plus max_tokens (${maxTokens}) is more than the model takes (max_position_embeddings ${limit})`, 'invalid_request_error', 'max_tokens', 'context_length_exceeded');
    }
    const temperature = num('temperature', (v) => v >= 0 && v <= 2, 'a number from 0 to 2') ?? 1; // OpenAI's default
    const topP = num('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]');
    const seed = num('seed', (v) => int(v) && v >= 0, 'an integer >= 0');
    const n = num('n', (v) => int(v) && v >= 1 && v <= 16, 'an integer from 1 to 16') ?? 1;
    const stop = body.stop;
    if (stop !== undefined && stop !== null && typeof stop !== 'string' && !(Array.isArray(stop) && stop.length <= 4 && stop.every((s) => typeof s === 'string' && s !== ''))) {
      throw new ApiError(400, `stop must be a string or a list of up to 4 non-empty strings, got ${show(stop)}`, 'invalid_request_error', 'stop');
    }
    return {
      maxNewTokens: maxTokens ?? Math.min(defaultMax, room),
      temperature: temperature === 0 ? 0 : Math.max(temperature, 1e-30),
      ...(topP !== undefined ? { topP } : {}),
      ...(seed !== undefined ? { seed } : {}),
      ...(stop !== undefined && stop !== null && stop !== '' ? { stop: stop as string | string[] } : {}),
      n,
    };
  }

  async function complete(req: http.IncomingMessage, res: http.ServerResponse, body: Record<string, unknown>, chat: boolean): Promise<void> {
    for (const key of UNSUPPORTED) {
      const v = body[key];
      if (v === undefined || v === null || v === false || (key === 'response_format' && (v as { type?: string })?.type === 'text')) continue;
      throw new ApiError(400, `${key} is not supported by rlora serve`, 'invalid_request_error', key, 'unsupported_parameter');
    }
    const id = body.model;
    if (typeof id !== 'string') throw new ApiError(400, `model must be a string (one of: ${[BASE_MODEL_ID, ...adapters].join(', ')})`, 'invalid_request_error', 'model');
    if (id !== BASE_MODEL_ID && !adapters.includes(id)) {
      throw new ApiError(404, `The model ${JSON.stringify(id)} does not exist; this server has: ${[BASE_MODEL_ID, ...adapters].join(', ')}`, 'invalid_request_error', 'model', 'model_not_found');
    }
    const adapter = id === BASE_MODEL_ID ? undefined : loaded.get(id);
    // the prompts as token ids: chat through the tokenizer's chat template, text as an adapter's
    // training data encoded prompts (its bos choice), else with the tokenizer's bos
    let prompts: number[][];
    if (chat) {
      if (!Array.isArray(body.messages) || body.messages.length === 0) throw new ApiError(400, 'messages must be a non-empty list of {role, content}', 'invalid_request_error', 'messages');
      if (!tokenizer.chatTemplate) throw new ApiError(400, 'the model\'s tokenizer has no chat template: use /v1/completions', 'invalid_request_error', 'messages');
      const messages = (body.messages as unknown[]).map((m, i) => {
        const msg = m as { role?: unknown; content?: unknown };
        const content = Array.isArray(msg?.content)
          ? (msg.content as { type?: string; text?: string }[]).map((part) => {
              if (part?.type !== 'text' || typeof part.text !== 'string') throw new ApiError(400, `messages[${i}].content: only text parts are supported`, 'invalid_request_error', 'messages');
              return part.text;
            }).join('')
          : msg?.content;
        return { role: msg?.role, content } as { role: string; content: string };
      });
      prompts = [chatIds(tokenizer, messages, 'messages')];
    } else {
      const p = body.prompt;
      const list = typeof p === 'string' ? [p] : Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string') ? (p as string[]) : undefined;
      if (!list) throw new ApiError(400, `prompt must be a string or a non-empty list of strings, got ${show(p)}`, 'invalid_request_error', 'prompt');
      const addBos = adapter?.trainingData?.addBos ?? true;
      prompts = list.map((t) => encodePrompt(tokenizer, t, addBos));
    }
    const o = sampling(body, Math.max(...prompts.map((p) => p.length)));
    const { n, ...gen } = o;
    const stream = body.stream === true;
    const includeUsage = stream && (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    const controller = new AbortController();
    // a client that goes away stops its generation (after the current token)
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
    });
    running.add(controller);
    const rid = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const object = chat ? 'chat.completion' : 'text_completion';
    const chunkOf = (index: number, piece: string | null, finish: string | null): unknown => ({
      id: rid,
      object: chat ? 'chat.completion.chunk' : 'text_completion',
      created: Math.floor(Date.now() / 1000),
      model: id,
      choices: [chat ? { index, delta: piece === null ? {} : { content: piece }, logprobs: null, finish_reason: finish } : { index, text: piece ?? '', logprobs: null, finish_reason: finish }],
    });
    const write = (data: unknown): void => {
      if (!res.writableEnded) res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    // greedy decoding makes the same text n times: made once, sent n times
    const copies = o.temperature === 0 ? n : 1;
    let done: TextCompletion[] = [];
    try {
      done = await exclusive(async () => {
        if (controller.signal.aborted) return [];
        Adapter.setActive(model, adapter ? id : null);
        if (stream) {
          // the connection closes with the stream: kept alive, the openai client's node-fetch 2.7 reported
          // "Premature close" at its end on Node 20.19 (Debian 13), every time
          res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'close', ...corsHeaders() });
          if (chat) for (let i = 0; i < n * prompts.length; i++) write({ ...(chunkOf(i, null, null) as object), choices: [{ index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
        }
        return completeText(model, tokenizer, prompts, {
          ...gen,
          numReturnSequences: copies === 1 ? n : 1,
          signal: controller.signal,
          ...(stream ? { onText: (piece: string, index: number) => { for (let c = 0; c < copies; c++) write(chunkOf(index * copies + c, piece, null)); } } : {}),
        });
      });
    } finally {
      running.delete(controller);
    }
    if (controller.signal.aborted) return;
    const results = done.flatMap((d) => new Array<TextCompletion>(copies).fill(d));
    const usage = {
      prompt_tokens: prompts.reduce((a, p) => a + p.length, 0),
      completion_tokens: results.reduce((a, d) => a + d.completionTokens, 0),
      total_tokens: 0,
    };
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    if (stream) {
      results.forEach((d, i) => write(chunkOf(i, null, d.finishReason)));
      if (includeUsage) write({ id: rid, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: id, choices: [], usage });
      res.end('data: [DONE]\n\n');
      return;
    }
    send(res, 200, {
      id: rid,
      object,
      created: Math.floor(Date.now() / 1000),
      model: id,
      choices: results.map((d, index) =>
        chat
          ? { index, message: { role: 'assistant', content: d.text }, logprobs: null, finish_reason: d.finishReason }
          : { index, text: d.text, logprobs: null, finish_reason: d.finishReason },
      ),
      usage,
    });
    void req;
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${bound}`,
    port: bound,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of running) c.abort(new Error('the server is closing'));
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}
