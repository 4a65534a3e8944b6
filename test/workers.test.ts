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
});
