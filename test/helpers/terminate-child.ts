// Run by test/workers.test.ts in a process of its own (an abort there must not take jest down):
// Workers are terminated while they await a native job (forward, a training step, generate);
// prints "alive" at the end, so the test can tell the process survived every termination.
import { isMainThread, parentPort, Worker, workerData } from 'worker_threads';

async function inWorker(job: string): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const r = require('../../lib') as typeof import('../../lib');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { TINY_BYTE_CONFIG } = require('./tiny-model') as typeof import('./tiny-model');
  const model = r.Model.fromConfig({ ...TINY_BYTE_CONFIG, hidden_size: 128, intermediate_size: 512, num_hidden_layers: 4 }, { seed: 1 });
  const ids = [Array.from({ length: 200 }, (_, i) => i % 250)];
  parentPort!.postMessage('ready');
  if (job === 'forward') for (;;) await model.forward(ids);
  if (job === 'generate') for (;;) await model.generate([ids[0].slice(0, 20)], { maxNewTokens: 50 });
  const adapter = r.Adapter.attach(model, { targetModules: ['q_proj', 'up_proj'] });
  const data = r.MultiTaskDataset.fromArray(Array.from({ length: 16 }, (_, i) => ({ task: 't', prompt: 'x'.repeat(60 + i), response: 'y'.repeat(40) })), { tokenizer: new r.ByteTokenizer(), maxLength: 128 });
  await new r.Trainer(model, adapter, { maxSteps: 100000, batchSize: 8, progress: false }).fit(data);
}

if (isMainThread) {
  (async () => {
    for (const job of ['forward', 'fit', 'generate']) {
      for (let i = 0; i < 3; i++) {
        const w = new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(__filename)});`, { eval: true, workerData: { job } });
        await new Promise((res, rej) => {
          w.once('message', res);
          w.once('error', rej);
        });
        await new Promise((res) => setTimeout(res, 30 + Math.random() * 150));
        await w.terminate();
      }
    }
    console.log('alive');
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  void inWorker((workerData as { job: string }).job);
}
