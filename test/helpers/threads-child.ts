// Run by test/workers.test.ts in a process of its own (a crash there must not take jest down):
// the main thread and two worker_threads Workers each load rlora, build a layer and a model, and
// run 20 forwards at the same time. Prints one JSON line: the results of every thread.
import { isMainThread, parentPort, Worker, workerData } from 'worker_threads';

async function work(id: number): Promise<{ id: number; layerSum: number; logitsSum: number }> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Model, MultiHeadLoraLinear, Tensor } = require('../../lib') as typeof import('../../lib');
  const W = Tensor.from(Float32Array.from({ length: 24 * 16 }, (_, k) => Math.sin(k)), [24, 16]);
  const layer = new MultiHeadLoraLinear({ weight: W }, { method: 'rlora', rank: 4, heads: 3, seed: 1 });
  const x = Tensor.from(Float32Array.from({ length: 8 * 16 }, (_, k) => Math.cos(k)), [8, 16]);
  const model = Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: 40, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 3 });
  let layerSum = 0, logitsSum = 0;
  for (let i = 0; i < 20; i++) {
    const [y, logits] = await Promise.all([layer.forward(x), model.forward([[1, 2, 3, 4]])]);
    layerSum = (y.data() as Float32Array).reduce((a, b) => a + b, 0);
    logitsSum = (logits.data() as Float32Array).reduce((a, b) => a + b, 0);
  }
  return { id, layerSum, logitsSum };
}

if (isMainThread) {
  const workers = [1, 2].map(
    (id) =>
      new Promise((resolve, reject) => {
        const w = new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(__filename)});`, { eval: true, workerData: { id } });
        w.once('message', resolve);
        w.once('error', reject);
        w.once('exit', (code) => (code !== 0 ? reject(new Error(`worker ${id} exited with ${code}`)) : undefined));
      }),
  );
  Promise.all([work(0), ...workers]).then(
    (r) => console.log(JSON.stringify(r)),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
} else {
  work((workerData as { id: number }).id).then((r) => parentPort!.postMessage(r));
}
