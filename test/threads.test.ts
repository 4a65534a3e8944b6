// setNumThreads: bounded to 1..1024 with an error naming the value (a million threads used to
// abort the process at the next native job).
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';

import { blasInfo, getNumThreads, Model, setNumThreads } from '../lib';
import { native } from '../lib/native';
import { defaultThreads } from '../lib/threads';
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

  // The default is the cores this process may use (os.availableParallelism(), which follows the
  // affinity mask) for libtorch's pool and OpenBLAS's, unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
  // say otherwise; it was 1 at load, so every product of a user's script ran on one core.
  const openblas = /OpenBLAS/.test(blasInfo());
  const child = (extra: Record<string, string>, prefix: string[] = []): { threads: number; cores: number; blas: string; after: string } => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of ['OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'GOTO_NUM_THREADS', 'MKL_NUM_THREADS']) delete env[k];
    Object.assign(env, extra);
    const code = `const os = require('os'); const r = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
      const out = { threads: r.getNumThreads(), cores: os.availableParallelism(), blas: r.blasInfo() };
      r.setNumThreads(1); out.after = r.blasInfo(); console.log(JSON.stringify(out));`;
    const argv = [...prefix, process.execPath, '-r', 'tsx/cjs', '-e', code];
    const r = spawnSync(argv[0], argv.slice(1), { env, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout);
  };
  const blasThreads = (info: string): number => Number(/, (\d+) threads?\)$/.exec(info)?.[1]);

  it('defaults to the usable cores in a fresh process with no thread variables set', () => {
    const c = child({});
    expect(c.cores).toBe(os.availableParallelism());
    expect(c.threads).toBe(c.cores);
    if (openblas) {
      expect(blasThreads(c.blas)).toBe(c.cores);
      expect(blasThreads(c.after)).toBe(1); // setNumThreads moves OpenBLAS's pool with it
    }
  });

  it('OMP_NUM_THREADS sets both pools; OPENBLAS_NUM_THREADS keeps OpenBLAS\'s own', () => {
    const omp = child({ OMP_NUM_THREADS: '1' });
    expect(omp.threads).toBe(1);
    if (openblas) expect(blasThreads(omp.blas)).toBe(1);
    const ob = child({ OPENBLAS_NUM_THREADS: '1' });
    expect(ob.threads).toBe(os.availableParallelism());
    if (openblas) expect(blasThreads(ob.blas)).toBe(1);
  });

  it('a malformed OMP_NUM_THREADS is named in a warning and the cores are used', () => {
    const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: 'four' };
    const code = `const r = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))}); console.log(r.getNumThreads());`;
    const r = spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', code], { env, encoding: 'utf8' });
    expect(r.stderr).toMatch(/OMP_NUM_THREADS="four" is not a positive integer/);
    expect(Number(r.stdout)).toBe(os.availableParallelism());
  });

  const taskset = spawnSync('taskset', ['--version']).status === 0 && os.availableParallelism() > 1;
  (taskset ? it : it.skip)('follows the affinity mask (taskset -c 0: one core, one thread)', () => {
    const c = child({}, ['taskset', '-c', '0']);
    expect(c.cores).toBe(1);
    expect(c.threads).toBe(1);
    if (openblas) expect(blasThreads(c.blas)).toBe(1);
  });

  it('setNumThreads refuses an unknown option', () => {
    expectErrorMatching(() => (native.setNumThreads as (n: number, o: object) => void)(2, { blsa: false }), /^setNumThreads: unknown option "blsa" \(did you mean "blas"\?\); known: blas$/);
  });
});

describe('defaultThreads', () => {
  it('reads OMP_NUM_THREADS as torch does, else the cores', () => {
    const cores = os.availableParallelism();
    expect(defaultThreads({})).toEqual({ intraOp: cores, source: 'cores', blasFollows: true });
    expect(defaultThreads({ OMP_NUM_THREADS: '3' })).toEqual({ intraOp: 3, source: 'OMP_NUM_THREADS', blasFollows: true });
    expect(defaultThreads({ OMP_NUM_THREADS: '5000', OPENBLAS_NUM_THREADS: '2' })).toEqual({ intraOp: 1024, source: 'OMP_NUM_THREADS', blasFollows: false });
    expect(defaultThreads({ OMP_NUM_THREADS: '0' })).toEqual({ intraOp: cores, source: 'cores', blasFollows: true, ignored: { name: 'OMP_NUM_THREADS', value: '0' } });
  });
});
