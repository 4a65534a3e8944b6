// The default number of threads for the matrix products: what a process may use, unless the
// environment says otherwise. Applied once when the addon loads (native.ts) to libtorch's intra-op
// pool and to OpenBLAS's own pool; setNumThreads changes both later.
import * as os from 'os';

/** The most intra-op threads a job may use (the binding refuses more). */
export const MAX_THREADS = 1024;

export interface ThreadDefaults {
  /** libtorch's intra-op threads: OMP_NUM_THREADS when it is a positive integer, else the usable cores. */
  intraOp: number;
  /** Where that number came from. */
  source: 'OMP_NUM_THREADS' | 'cores';
  /** Whether OpenBLAS's pool follows it (false when OPENBLAS_NUM_THREADS chose that pool's size at load). */
  blasFollows: boolean;
  /** A variable that was set but is not a positive integer, and was therefore ignored. */
  ignored?: { name: string; value: string };
}

/**
 * Threads a process uses by default: OMP_NUM_THREADS when set to a positive integer (as torch reads
 * it), else `os.availableParallelism()`, the cores this process may run on (it follows the affinity
 * mask, e.g. `taskset` or a container's CPU set). OpenBLAS's pool follows the same number unless
 * OPENBLAS_NUM_THREADS is set, in which case OpenBLAS has read it at load. Processes that run jobs side
 * by side (the demo's workers, `rlora train --nproc-per-node`) set their share explicitly.
 */
export function defaultThreads(env: Record<string, string | undefined> = process.env): ThreadDefaults {
  const blasFollows = !env.OPENBLAS_NUM_THREADS;
  const omp = env.OMP_NUM_THREADS;
  if (omp !== undefined && omp !== '') {
    const n = /^\s*\d+\s*$/.test(omp) ? Number(omp) : NaN;
    if (Number.isSafeInteger(n) && n >= 1) return { intraOp: Math.min(n, MAX_THREADS), source: 'OMP_NUM_THREADS', blasFollows };
    return { intraOp: cores(), source: 'cores', blasFollows, ignored: { name: 'OMP_NUM_THREADS', value: omp } };
  }
  return { intraOp: cores(), source: 'cores', blasFollows };
}

function cores(): number {
  return Math.max(1, Math.min(os.availableParallelism(), MAX_THREADS));
}

export interface ThreadPools {
  /** libtorch's intra-op threads per native job (setNumThreads). */
  intraOp: number;
  /** OpenBLAS's pool (process-wide); null where libtorch does not run on OpenBLAS. */
  blas: number | null;
  /** The cores this process may run on (os.availableParallelism()). */
  cores: number;
}

/** "libtorch 2, OpenBLAS 2 threads (2 usable cores)": the pools in one phrase. */
export function describeThreadPools(p: ThreadPools): string {
  const plural = p.intraOp !== 1 || (p.blas ?? 1) !== 1;
  return `libtorch ${p.intraOp}, OpenBLAS ${p.blas ?? 'not loaded'} thread${plural ? 's' : ''} (${p.cores} usable core${p.cores === 1 ? '' : 's'})`;
}
