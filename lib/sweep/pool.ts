// Runs a sweep's jobs in worker processes, one job at a time each, so that the cores work side by
// side (each job is deterministic: its result does not depend on which worker ran it or when).
// Jobs come from a queue that may grow while jobs run (a variant's test jobs join once its
// validation jobs have picked its learning rate).
//
// The workers pin OpenBLAS's kernels to Haswell's (OPENBLAS_CORETYPE, unless set already): OpenBLAS
// otherwise picks kernels by CPU, and the results then differ slightly between machines (measured:
// up to 10 points of one method's accuracy in the demo). Every x86-64 CPU with AVX2 runs the
// Haswell kernels, so a sweep's numbers are the same on all of them.
import { ChildProcess, fork } from 'child_process';
import * as path from 'path';

import type { Job, JobResult } from './types';

/** A job with what the pool says of it. */
export interface PoolTask {
  job: Job;
  /** The variant's description, copied into the result. */
  what: string;
  /** How errors name the job: "rlora, seed 1, lr 0.002, validation". */
  label: string;
}

type Reply = { ok: JobResult } | { error: string };

/** A queue of tasks that may grow while tasks run; take() waits for more, or gives null once nothing can come. */
export class TaskQueue {
  private items: PoolTask[] = [];
  private running = 0;
  private waiters: ((t: PoolTask | null) => void)[] = [];
  private closed = false;

  push(...tasks: PoolTask[]): void {
    for (const t of tasks) {
      const w = this.waiters.shift();
      if (w) {
        this.running++;
        w(t);
      } else this.items.push(t);
    }
  }

  /** The next task (counted as running until finished() is called), or null when the queue is empty and nothing runs that could add to it. */
  take(): Promise<PoolTask | null> {
    if (this.closed) return Promise.resolve(null);
    const t = this.items.shift();
    if (t) {
      this.running++;
      return Promise.resolve(t);
    }
    if (this.running === 0) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** A task taken is done (call after pushing what it brings). */
  finished(): void {
    this.running--;
    if (this.running === 0 && this.items.length === 0) this.close();
  }

  /** Nothing more is handed out (on failure, or when done). */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w(null);
  }

  get pending(): number {
    return this.items.length;
  }
}

/** The worker's file and node flags: the same loader as this process (tsx for TypeScript sources), no debugger flags. */
function workerCommand(): { file: string; execArgv: string[] } {
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--inspect'));
  const ts = __filename.endsWith('.ts');
  if (ts && !execArgv.some((a) => /tsx/.test(a))) execArgv.push('--import', 'tsx');
  return { file: path.join(__dirname, ts ? 'worker.ts' : 'worker.js'), execArgv };
}

/**
 * Runs the queue's tasks in `workers` processes until it is empty; `onResult` runs for each result
 * (before the queue learns the task is done, so it may push more). After the first failure no
 * job starts: the other workers finish the one they run (onResult keeps its result), then every
 * worker is stopped and the promise rejects with the failed job's label and error.
 */
export async function runPool(queue: TaskQueue, workers: number, onResult: (t: PoolTask, r: JobResult) => void | Promise<void>): Promise<void> {
  const children: ChildProcess[] = [];
  let failure: Error | undefined;
  const { file, execArgv } = workerCommand();
  const work = async (): Promise<void> => {
    let child: ChildProcess | undefined;
    let exited: Promise<Reply> | undefined;
    try {
      for (let task = await queue.take(); task && !failure; task = await queue.take()) {
        if (!child) {
          child = fork(file, [], {
            execArgv,
            stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
            env: { ...process.env, OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? (process.arch === 'x64' ? 'Haswell' : undefined) },
          });
          children.push(child);
          const c = child;
          exited = new Promise<Reply>((resolve) => c.on('exit', (code, signal) => resolve({ error: `its worker process exited (${signal ?? `code ${code}`}) before it finished` })));
        }
        const c = child;
        const reply = new Promise<Reply>((resolve) => c.once('message', (m) => resolve(m as Reply)));
        c.send({ job: task.job, what: task.what });
        const r = await Promise.race([reply, exited!]);
        if ('error' in r) throw new Error(`sweep job (${task.label}) failed: ${r.error}`);
        await onResult(task, r.ok);
        queue.finished();
      }
    } catch (e) {
      failure ??= e as Error;
      queue.close();
    } finally {
      if (child?.connected) child.disconnect();
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, workers) }, work));
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill();
  }
  if (failure) throw failure;
}
