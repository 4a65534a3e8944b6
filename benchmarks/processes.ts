// Running one benchmark variant in its own process, under the allocator settings of README.md.
import { execFileSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';

export const PYTHON = process.env.RLORA_BENCH_PYTHON ?? '/usr/bin/python3';
export const TSX = path.resolve(__dirname, '..', 'node_modules', '.bin', 'tsx');

const THREAD_VARS = ['OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'GOTO_NUM_THREADS'];
/** Each library at its own defaults: no thread variables (rlora: every usable core for libtorch's
 * pool and OpenBLAS's; Python torch on Debian: 1 intra-op thread, OpenBLAS on every core). */
export const DEFAULT_ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !THREAD_VARS.includes(k)));
/** Both told the same: every usable core for libtorch's intra-op pool and for OpenBLAS's. */
export const MATCHED_ENV: NodeJS.ProcessEnv = { ...DEFAULT_ENV, OMP_NUM_THREADS: String(os.availableParallelism()), OPENBLAS_NUM_THREADS: String(os.availableParallelism()) };
/** Memory runs: large blocks go straight to mmap and back to the kernel when freed (rlora's cache
 * off), in Node and Python alike, so resident memory follows live tensors. */
export const MEMORY_ENV = { ...DEFAULT_ENV, MALLOC_MMAP_THRESHOLD_: '131072', RLORA_CPU_CACHING: '0' };
/** glibc keeping freed memory: no page faults for reused blocks (the fairest Python baseline). */
export const KEPT_ENV = { ...DEFAULT_ENV, MALLOC_MMAP_MAX_: '0', MALLOC_TRIM_THRESHOLD_: String(2 ** 36) };

let torchVersion: [number, number] | undefined;
/** Python torch's version as [major, minor] (1.13 on Debian 12, 2.6 in the Debian 13 root); asked once. */
export function pythonTorchVersion(): [number, number] {
  if (!torchVersion) {
    const v = execFileSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).trim();
    const [major, minor] = v.split('.').map(Number);
    torchVersion = [major, minor];
  }
  return torchVersion;
}

/** Runs a variant and parses the JSON document it prints last. */
export function runVariant<T>(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): T {
  const out = execFileSync(cmd, args, { env, encoding: 'utf8', cwd: path.resolve(__dirname, '..'), maxBuffer: 1 << 24 });
  return JSON.parse(out.trim().split('\n').pop()!) as T;
}
