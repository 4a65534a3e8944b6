// worker_threads: rlora loaded in the main thread and in two Workers at once, each building and
// running its own layer and model (the binding keeps its classes per environment, not in statics).
import { spawnSync } from 'child_process';
import * as path from 'path';

describe('worker_threads', () => {
  it('main thread and two Workers each run 20 forwards concurrently, with equal results', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers', 'threads-child.ts')], { encoding: 'utf8', timeout: 60000 });
    if (r.status !== 0) throw new Error(`the child exited with ${r.status} (signal ${r.signal}):\n${r.stdout}\n${r.stderr}`);
    const results = JSON.parse(r.stdout.trim().split('\n').pop()!) as { id: number; layerSum: number; logitsSum: number }[];
    expect(results.map((x) => x.id)).toEqual([0, 1, 2]);
    // the same seeds in every thread: the same numbers
    for (const x of results) {
      expect(Number.isFinite(x.layerSum)).toBe(true);
      expect(x.layerSum).toBe(results[0].layerSum);
      expect(x.logitsSum).toBe(results[0].logitsSum);
    }
  });

  // worker.terminate() while a Worker awaits a native job used to abort the whole process
  // ("terminate called after throwing an instance of 'Napi::Error'", exit 134, 3 of 3 runs)
  it('terminating Workers in the middle of forward, fit and generate leaves the process running', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers', 'terminate-child.ts')], { encoding: 'utf8', timeout: 120000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(r.stdout.trim()).toBe('alive');
  }, 150000);
});
