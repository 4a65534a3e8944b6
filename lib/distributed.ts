// Data parallelism across processes and machines on libtorch's c10d (TCPStore rendezvous; Gloo
// collectives on the CPU, NCCL on CUDA where the build has it), with torchrun's environment contract: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK,
// LOCAL_RANK. Trainer.fit uses it by itself (TrainerOptions.distributed); this namespace is for
// custom loops with trainStep, which sums its step over the ranks once a group exists.
import * as util from 'util';

import { native } from './native';

export type Backend = 'gloo' | 'nccl';
/** Environment variables (process.env's shape, without needing Node's types). */
export type Env = Record<string, string | undefined>;

export interface DistributedOptions {
  /**
   * 'gloo' (default): collectives through the CPU, for CPU or CUDA tensors. 'nccl': on this rank's
   * GPU, cuda:localRank; only in builds against a libtorch with CUDA and NCCL (isAvailable('nccl')).
   */
  backend?: Backend;
  /** How long a rendezvous or a collective may wait for the other ranks. Default 600000 (10 minutes, as torch). */
  timeoutMs?: number;
  /** Default: the environment's MASTER_ADDR, else 127.0.0.1. */
  masterAddr?: string;
  /** Default: the environment's MASTER_PORT, else 29500. */
  masterPort?: number;
  /** Default: the environment's RANK (required when worldSize > 1). */
  rank?: number;
  /** Default: the environment's WORLD_SIZE, else 1. */
  worldSize?: number;
  /** This process's index on its machine: NCCL uses cuda:localRank. Default: the environment's LOCAL_RANK, else 0. */
  localRank?: number;
  /**
   * Gradients are summed in buckets of this many MiB while backward still runs, as DDP's
   * bucket_cap_mb (the first bucket at most 1 MiB); 0: in one all-reduce after backward. Default:
   * 25 with NCCL; 0 with Gloo, where the CPU that would overlap the exchange is busy with backward
   * (benchmarks/README.md "benchmarks/distributed": no gain on 2 cores).
   */
  bucketCapMb?: number;
  /**
   * What this run is: a rank whose runId differs from rank 0's (a rank of another job started on the
   * same MASTER_PORT, or one started with other options) is refused at the rendezvous, naming both,
   * and never counted among this run's ranks. Trainer.fit sets it to a hash of the configuration,
   * the training data and the base weights. Default: the environment's RLORA_RUN_ID, else
   * TORCHELASTIC_RUN_ID (torchrun's --rdzv-id), else empty (any rank is taken).
   */
  runId?: string;
}

const OPTION_NAMES = ['backend', 'timeoutMs', 'masterAddr', 'masterPort', 'rank', 'worldSize', 'localRank', 'bucketCapMb', 'runId'];
export const DEFAULT_TIMEOUT_MS = 600_000;
/** DDP's bucket_cap_mb. */
export const DEFAULT_NCCL_BUCKET_MB = 25;

/** An integer from the environment, or undefined when unset; a bad value names the variable. */
function envInt(name: string, min: number, env: Env): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!/^\s*-?\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min) {
    throw new RangeError(`environment variable ${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** World size from the environment (WORLD_SIZE), 1 when unset. */
export function worldSizeFromEnv(env: Env = process.env): number {
  return envInt('WORLD_SIZE', 1, env) ?? 1;
}

/**
 * The device a process of a data-parallel run (WORLD_SIZE > 1) means by "cuda": its own GPU,
 * cuda:LOCAL_RANK, as torchrun scripts call torch.cuda.set_device(local_rank). Any other name, and
 * any name in one process, is kept. A bad WORLD_SIZE or LOCAL_RANK names the variable.
 */
export function rankDevice<T extends string | undefined>(device: T, env: Env = process.env): T | `cuda:${number}` {
  if (device !== 'cuda' || worldSizeFromEnv(env) <= 1) return device;
  return `cuda:${envInt('LOCAL_RANK', 0, env) ?? 0}`;
}

/** The options init() would use: explicit ones first, then torchrun's environment variables. */
export function resolveOptions(o: DistributedOptions = {}, env: Env = process.env): Required<DistributedOptions> {
  if (typeof o !== 'object' || o === null) throw new TypeError(`distributed options must be an object, got ${util.inspect(o)}`);
  const unknown = Object.keys(o).filter((k) => !OPTION_NAMES.includes(k));
  if (unknown.length) throw new RangeError(`distributed: unknown option ${JSON.stringify(unknown[0])}; known: ${OPTION_NAMES.join(', ')}`);
  const int = (v: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) throw new RangeError(`distributed: ${name} must be an integer from ${min} to ${max}, got ${util.inspect(v)}`);
    return v as number;
  };
  const backend = o.backend ?? 'gloo';
  if (backend !== 'gloo' && backend !== 'nccl') throw new RangeError(`distributed: backend must be 'gloo' or 'nccl', got ${util.inspect(backend)}`);
  const worldSize = o.worldSize !== undefined ? int(o.worldSize, 'worldSize', 1) : worldSizeFromEnv(env);
  const rank = o.rank !== undefined ? int(o.rank, 'rank', 0) : (envInt('RANK', 0, env) ?? (worldSize === 1 ? 0 : undefined));
  if (rank === undefined) throw new RangeError(`distributed: WORLD_SIZE is ${worldSize} but RANK is not set (each process needs its rank, 0 to ${worldSize - 1})`);
  if (rank >= worldSize) throw new RangeError(`distributed: RANK ${rank} is not below WORLD_SIZE ${worldSize}`);
  const masterAddr = o.masterAddr ?? (env.MASTER_ADDR || '127.0.0.1');
  if (typeof masterAddr !== 'string' || masterAddr === '') throw new RangeError(`distributed: masterAddr must be a host name or address, got ${util.inspect(masterAddr)}`);
  const masterPort = o.masterPort !== undefined ? int(o.masterPort, 'masterPort', 1, 65535) : (envInt('MASTER_PORT', 1, env) ?? 29500);
  if (masterPort > 65535) throw new RangeError(`environment variable MASTER_PORT must be at most 65535, got ${masterPort}`);
  const timeoutMs = o.timeoutMs !== undefined ? int(o.timeoutMs, 'timeoutMs', 1) : DEFAULT_TIMEOUT_MS;
  const localRank = o.localRank !== undefined ? int(o.localRank, 'localRank', 0) : (envInt('LOCAL_RANK', 0, env) ?? 0);
  const bucketCapMb = o.bucketCapMb ?? (backend === 'nccl' ? DEFAULT_NCCL_BUCKET_MB : 0);
  if (typeof bucketCapMb !== 'number' || !Number.isFinite(bucketCapMb) || bucketCapMb < 0 || bucketCapMb > 1 << 20) {
    throw new RangeError(`distributed: bucketCapMb must be a number from 0 to ${1 << 20} (MiB), got ${util.inspect(bucketCapMb)}`);
  }
  const runId = o.runId ?? env.RLORA_RUN_ID ?? env.TORCHELASTIC_RUN_ID ?? '';
  if (typeof runId !== 'string' || runId.length > 1024) throw new RangeError(`distributed: runId must be a string of at most 1024 characters, got ${util.inspect(runId, { maxStringLength: 40 })}`);
  return { backend, timeoutMs, masterAddr, masterPort, rank, worldSize, localRank, bucketCapMb, runId };
}

export interface StoreOptions {
  /** Ask for TCPStore's libuv server as torch does: USE_LIBUV unset or "1". Where libtorch was built without libuv (Debian's 2.6), the store is made without it. */
  useLibuv: boolean;
  /** torchrun 2.x hosts the store in its agent (TORCHELASTIC_USE_AGENT_STORE=True): every rank, rank 0 included, then connects to it at MASTER_ADDR:MASTER_PORT. */
  agentStore: boolean;
  /** TORCHELASTIC_RESTART_COUNT: with the agent's store, keys live under "/worker/attempt_<n>", as torch.distributed puts them. */
  restartCount: number;
}

/** How the rendezvous store is made, from the environment torch reads (USE_LIBUV, torchrun's TORCHELASTIC_*). */
export function storeOptions(env: Env = process.env): StoreOptions {
  return {
    useLibuv: (env.USE_LIBUV ?? '1') === '1',
    agentStore: env.TORCHELASTIC_USE_AGENT_STORE === 'True',
    restartCount: envInt('TORCHELASTIC_RESTART_COUNT', 0, env) ?? 0,
  };
}

/**
 * Joins the process group: every rank calls it with the same MASTER_ADDR, MASTER_PORT and
 * WORLD_SIZE; it resolves when all have joined, or rejects after timeoutMs naming this rank. One
 * group per process (a second init rejects until destroy()).
 */
export async function init(options: DistributedOptions = {}): Promise<{ rank: number; worldSize: number }> {
  const o = resolveOptions(options);
  const { bucketCapMb, ...rest } = o;
  await native.distInit({ ...rest, ...storeOptions(), bucketCapBytes: Math.round(bucketCapMb * 2 ** 20) });
  return { rank: o.rank, worldSize: o.worldSize };
}

/** Whether this process is in a process group. */
export function isInitialized(): boolean {
  return native.distInfo() !== null;
}

/** This process's rank (0 without a group). */
export function rank(): number {
  return native.distInfo()?.rank ?? 0;
}

/** The number of processes in the group (1 without one). */
export function worldSize(): number {
  return native.distInfo()?.worldSize ?? 1;
}

/** Waits until every rank reaches it; after timeoutMs rejects naming the ranks that did not. */
export async function barrier(): Promise<void> {
  if (!isInitialized()) return;
  await native.distBarrier();
}

/**
 * Element-wise sums of `values` over the ranks (every rank passes as many, in the same order).
 * A Float32Array or Float64Array is summed in its own precision and copied in one piece (large
 * arrays: much faster than numbers), and comes back as the same kind of array.
 */
export async function allreduceSum<T extends number[] | Float32Array | Float64Array>(values: T): Promise<T> {
  if (!isInitialized()) return values.slice() as T;
  return native.distAllreduceSum(values);
}

/** Every rank's integer, in rank order (e.g. to compare a hash of each rank's configuration). */
export async function allgather(value: number): Promise<number[]> {
  if (!isInitialized()) return [value];
  return native.distAllgather(value);
}

/** Leaves the process group (no-op without one). */
export function destroy(): void {
  native.distDestroy();
}

/**
 * Whether this build of rlora has a backend: 'gloo' (default; libtorch's c10d and Gloo headers at
 * build time) or 'nccl' (a libtorch with CUDA and NCCL, and nccl.h, at build time).
 */
export function isAvailable(backend: Backend = 'gloo'): boolean {
  if (backend !== 'gloo' && backend !== 'nccl') throw new RangeError(`distributed: backend must be 'gloo' or 'nccl', got ${util.inspect(backend)}`);
  return backend === 'nccl' ? native.hasNccl : native.hasGloo;
}

/** The active group's backend ('gloo' or 'nccl'), or 'none'. */
export function backendName(): string {
  return native.distInfo()?.backend ?? 'none';
}

/** Where the active group's collectives run: 'cpu' for Gloo, 'cuda:<localRank>' for NCCL; undefined without a group. */
export function device(): string | undefined {
  return native.distInfo()?.device;
}

/**
 * The backend for a model on `modelDevice` when none is named: NCCL for a CUDA model where this
 * build has it (as torch.distributed picks NCCL for CUDA tensors), else Gloo.
 */
export function defaultBackend(modelDevice: string): Backend {
  return modelDevice.startsWith('cuda') && isAvailable('nccl') ? 'nccl' : 'gloo';
}

/**
 * Every rank's JSON-serialisable value, in rank order (e.g. evaluation shares). Carried by two
 * collectives: an allgather of the byte lengths, then a sum over a zero buffer in which each rank
 * fills its own slot (4 bytes per float64, exact).
 */
export async function gatherJson<T>(value: T): Promise<T[]> {
  if (!isInitialized() || worldSize() === 1) return [JSON.parse(JSON.stringify(value)) as T];
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  const lengths = await allgather(bytes.length);
  const slot = Math.ceil(Math.max(...lengths) / 4);
  const buf = new Array<number>(slot * lengths.length).fill(0);
  const r = rank();
  for (let i = 0; i < bytes.length; i += 4) {
    buf[r * slot + i / 4] = bytes[i] * 0x1000000 + (bytes[i + 1] ?? 0) * 0x10000 + (bytes[i + 2] ?? 0) * 0x100 + (bytes[i + 3] ?? 0);
  }
  const sum = await allreduceSum(buf);
  return lengths.map((len, k) => {
    const out = new Uint8Array(len);
    for (let i = 0; i < len; i++) out[i] = Math.floor(sum[k * slot + Math.floor(i / 4)] / 2 ** (8 * (3 - (i % 4)))) % 256;
    return JSON.parse(new TextDecoder().decode(out)) as T;
  });
}
