// Runs GGUF files in node-llama-cpp (llama.cpp) for test/gguf.test.ts, in a process of its own:
// node-llama-cpp is an ES module (jest's CommonJS sandbox cannot import it) with a native binary
// of its own. Reads one JSON request on stdin, writes one JSON answer on stdout.
//
// Request: { entry: <node-llama-cpp's dist/index.js>, probe?: true, jobs: [{ model, lora?,
//   tokenize?: [text, ...], generate?: { prompt: [id, ...], count }, probabilities?: { tokens: [id, ...], from, vocab } }] }
// Answer: { results: [{ vocabulary: { type, bos, eos }, tokenize?: [[id, ...], ...], generate?: [id, ...],
//   probabilities?: [[p for every id], ...] (the next-token distribution after tokens[from..]) }] }
import { pathToFileURL } from 'url';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(request.entry).href);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
if (request.probe) {
  process.stdout.write(JSON.stringify({ ok: true }));
  process.exit(0);
}

const results = [];
for (const job of request.jobs) {
  const model = await llama.loadModel({ modelPath: job.model });
  const out = { vocabulary: { type: model.vocabularyType, bos: model.tokens.bos, eos: model.tokens.eos } };
  if (job.tokenize) out.tokenize = job.tokenize.map((t) => Array.from(model.tokenize(t, false)));
  // float32 keys and values in the cache and no flash attention (llama.cpp's defaults compute them in
  // float16), so that a comparison sees the export alone
  const contextOptions = { contextSize: 512, threads: 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false, ...(job.lora ? { lora: { adapters: [{ filePath: job.lora }] } } : {}) };
  if (job.generate) {
    const context = await model.createContext(contextOptions);
    const seq = context.getSequence();
    const tokens = [];
    // greedy, past end-of-generation tokens too (which Model.generate is told not to stop at)
    for await (const t of seq.evaluate(job.generate.prompt, { temperature: 0, yieldEogToken: true })) {
      tokens.push(t);
      if (tokens.length >= job.generate.count) break;
    }
    out.generate = tokens;
    await context.dispose();
  }
  if (job.probabilities) {
    const context = await model.createContext(contextOptions);
    const seq = context.getSequence();
    const { tokens, from } = job.probabilities;
    // temperature 1 with every filter off: the model's softmax over the whole vocabulary
    const next = { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } };
    const evaluated = await seq.controlledEvaluate(tokens.map((t, i) => (i >= from ? [t, { generateNext: next }] : t)));
    out.probabilities = [];
    for (let i = from; i < tokens.length; i++) {
      const dense = new Array(job.probabilities.vocab).fill(0);
      for (const [t, p] of evaluated[i].next.probabilities) dense[t] = p;
      out.probabilities.push(dense);
    }
    await context.dispose();
  }
  await model.dispose();
  results.push(out);
}
process.stdout.write(JSON.stringify({ results }));
await llama.dispose();
