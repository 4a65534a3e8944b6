// setNumThreads: bounded to 1..1024 with an error naming the value (a million threads used to
// abort the process at the next native job).
import { spawnSync } from 'child_process';
import * as path from 'path';

import { blasInfo, getNumThreads, Model, setNumThreads } from '../lib';
import { expectErrorMatching } from './helpers/errors';

describe('setNumThreads', () => {
  afterEach(() => setNumThreads(1));

  it('accepts 1 to 1024', () => {
    setNumThreads(1024);
    expect(getNumThreads()).toBe(1024);
    setNumThreads(2);
    expect(getNumThreads()).toBe(2);
  });

  it('rejects values out of range or not integers, naming the value, and keeps the setting', async () => {
    setNumThreads(1);
    for (const [n, shown] of [[1e6, '1000000'], [1025, '1025'], [0, '0'], [-3, '-3'], [2.5, '2.5'], [NaN, 'NaN'], [Infinity, 'Infinity']] as const) {
      expectErrorMatching(() => setNumThreads(n), new RegExp(`threads must be an integer from 1 to 1024, got ${shown}$`));
    }
    expectErrorMatching(() => setNumThreads('4' as never), /threads must be an integer from 1 to 1024, got "4"$/);
    expect(getNumThreads()).toBe(1);
    // a native job still runs (with the setting kept)
    const m = Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: 32, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 1 });
    expect((await m.forward([[1, 2, 3]])).shape).toEqual([1, 3, 32]);
  });

  // OpenBLAS keeps its own pool (one thread per core unless told): it follows setNumThreads, from 1
  // at load, unless OPENBLAS_NUM_THREADS chose.
  const openblas = /OpenBLAS/.test(blasInfo());
  (openblas ? it : it.skip)('sets OpenBLAS\'s pool too: 1 at load, then what setNumThreads says; OPENBLAS_NUM_THREADS wins at load', () => {
    const child = (extra: Record<string, string>): string => {
      const env = { ...process.env, ...extra };
      if (!extra.OPENBLAS_NUM_THREADS) delete env.OPENBLAS_NUM_THREADS;
      const code = `const r = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))}); console.log(r.blasInfo()); r.setNumThreads(2); console.log(r.blasInfo());`;
      const r = spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', code], { env, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      return r.stdout;
    };
    const plain = child({});
    expect(plain).toMatch(/, 1 thread\)\n.*, 2 threads\)\n$/);
    expect(child({ OPENBLAS_NUM_THREADS: '2' })).toMatch(/, 2 threads\)\n.*, 2 threads\)\n$/);
    setNumThreads(2);
    expect(blasInfo()).toMatch(/, 2 threads\)$/);
    setNumThreads(1);
    expect(blasInfo()).toMatch(/, 1 thread\)$/);
  });
});
