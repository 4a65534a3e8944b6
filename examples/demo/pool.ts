// Runs the demo's fine-tuning jobs in worker processes, one job at a time each, so both cores work
// (each job is single-threaded and deterministic: its result does not depend on which worker ran
// it or in what order).
//
// The workers pin OpenBLAS's kernels to Haswell's (OPENBLAS_CORETYPE, unless set already): OpenBLAS
// otherwise picks kernels by CPU, and the results then differ slightly between machines (measured:
// up to 10 points of one method's accuracy with the earlier demo). Every x86-64 CPU with AVX2 runs
// the Haswell kernels, so the demo's numbers are the same on all of them.
import { ChildProcess, fork } from 'child_process';
import * as path from 'path';

import type { Job, MethodResult } from './run';

type Reply = { ok: MethodResult } | { error: string };

const describe = (j: Job): string => `${j.spec.name}, seed ${j.seed}, lr ${j.learningRate}`;

export async function runJobs(jobs: Job[], workers: number, onResult: (r: MethodResult) => void = () => {}): Promise<MethodResult[]> {
  const results: MethodResult[] = new Array(jobs.length);
  const children: ChildProcess[] = [];
  let next = 0;
  let failed = false;
  const work = async (): Promise<void> => {
    // the same loader as this process (tsx); no inherited debugger flags
    const child = fork(path.join(__dirname, 'worker'), [], {
      execArgv: process.execArgv.filter((a) => !a.startsWith('--inspect')),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? (process.arch === 'x64' ? 'Haswell' : undefined) },
    });
    children.push(child);
    const exited = new Promise<Reply>((resolve) =>
      child.on('exit', (code, signal) => resolve({ error: `its worker process exited (${signal ?? `code ${code}`}) before it finished` })),
    );
    while (!failed && next < jobs.length) {
      const i = next++;
      const reply = new Promise<Reply>((resolve) => child.once('message', (m) => resolve(m as Reply)));
      child.send({ job: jobs[i] });
      const r = await Promise.race([reply, exited]);
      if ('error' in r) {
        failed = true;
        throw new Error(`demo job (${describe(jobs[i])}) failed: ${r.error}`);
      }
      results[i] = r.ok;
      onResult(r.ok);
    }
    child.disconnect();
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(workers, jobs.length)) }, work));
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill();
  }
  return results;
}
