// rlora train --nproc-per-node N: starts N worker processes of the same command, as torchrun does
// (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK set for each), prefixes their output with
// their rank, forwards Ctrl-C once to every worker (each stops at the same step; rank 0 writes the
// checkpoint), and exits with the first failure's code after stopping the others.
import { ChildProcess, spawn } from 'child_process';
import * as os from 'os';

import { ParsedOptions, UsageError } from './args';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  /** Threads per worker (default: this machine's cores / nprocPerNode, at least 1). */
  threads?: number;
}

/** The launcher's own flags (each takes a value; --oversubscribe is a flag). */
const LAUNCH_FLAGS = ['nproc-per-node', 'nnodes', 'node-rank', 'master-addr', 'master-port'];
const LAUNCH_SWITCHES = ['oversubscribe'];
/** Set in each worker's environment: the launcher's pid, so that the worker dies with it (dieWithLauncher). */
export const LAUNCHER_PID_ENV = 'RLORA_LAUNCHER_PID';

/** The launcher's flags (all optional): checked, with torchrun's defaults. */
export function launchOptions(opts: ParsedOptions): LaunchOptions | undefined {
  if (!LAUNCH_FLAGS.some((n) => opts[n] !== undefined)) return undefined;
  const int = (name: string, min: number, max: number, dflt: number): number => {
    const v = opts[name];
    if (v === undefined) return dflt;
    const n = Number(v);
    if (typeof v !== 'string' || !/^\d+$/.test(v) || n < min || n > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return n;
  };
  const nprocPerNode = int('nproc-per-node', 1, 1024, 1);
  // each worker needs a core (1000 workers on 2 cores held 19 GB before the first step)
  const cores = os.availableParallelism();
  if (nprocPerNode > cores && !opts.oversubscribe) {
    throw new UsageError(`--nproc-per-node ${nprocPerNode} is more than the ${cores} cores this process may use: each worker needs one (add --oversubscribe to start them anyway)`);
  }
  const nnodes = int('nnodes', 1, 65536, 1);
  const nodeRank = int('node-rank', 0, nnodes - 1, 0);
  const masterPort = int('master-port', 1, 65535, 29500);
  const masterAddr = opts['master-addr'] === undefined ? '127.0.0.1' : String(opts['master-addr']);
  if (nnodes > 1 && opts['master-addr'] === undefined) throw new UsageError('--nnodes above 1 needs --master-addr (the address of the machine with --node-rank 0)');
  return { nprocPerNode, nnodes, nodeRank, masterAddr, masterPort };
}

/** Removes the launcher's flags and --threads (with their values) from a command line. */
export function withoutLaunchFlags(args: string[]): string[] {
  // --threads too: the launcher gives each worker its share of the cores
  const flags = new Set([...LAUNCH_FLAGS, 'threads'].map((f) => `--${f}`));
  const switches = new Set(LAUNCH_SWITCHES.map((f) => `--${f}`));
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const eq = a.indexOf('=');
    if (switches.has(a)) continue;
    if (flags.has(eq > 0 ? a.slice(0, eq) : a)) {
      if (eq < 0) i++; // its value
      continue;
    }
    out.push(a);
  }
  return out;
}

/** Prefixes every complete line of `stream` with `prefix` onto `to`. */
function pipeLines(stream: NodeJS.ReadableStream, prefix: string, to: NodeJS.WritableStream): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (rest + chunk).split(/\r?\n|\r/);
    rest = parts.pop()!;
    for (const line of parts) to.write(`${prefix}${line}\n`);
  });
  stream.on('end', () => {
    if (rest) to.write(`${prefix}${rest}\n`);
  });
}

/**
 * Runs `command` (the worker's argv after node) in nprocPerNode processes and resolves with the
 * exit code: 0 when all succeed; else the first failure's (130 after Ctrl-C).
 */
export async function launch(command: string[], o: LaunchOptions, say: (s: string) => void): Promise<number> {
  const world = o.nprocPerNode * o.nnodes;
  const threads = o.threads ?? Math.max(1, Math.floor(os.availableParallelism() / o.nprocPerNode));
  say(`rlora: starting ${o.nprocPerNode} worker process${o.nprocPerNode === 1 ? '' : 'es'} (ranks ${o.nodeRank * o.nprocPerNode} to ${(o.nodeRank + 1) * o.nprocPerNode - 1} of ${world}), master ${o.masterAddr}:${o.masterPort}, ${threads} thread(s) each`);
  const children: ChildProcess[] = [];
  const exits: Promise<number>[] = [];
  let firstFailure: number | undefined;
  const signalRunning = (signal: NodeJS.Signals): void => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(signal);
  };
  const stopOthers = (): void => signalRunning('SIGTERM');
  for (let local = 0; local < o.nprocPerNode; local++) {
    const rank = o.nodeRank * o.nprocPerNode + local;
    const env = {
      ...process.env,
      MASTER_ADDR: o.masterAddr,
      MASTER_PORT: String(o.masterPort),
      WORLD_SIZE: String(world),
      RANK: String(rank),
      LOCAL_RANK: String(local),
      LOCAL_WORLD_SIZE: String(o.nprocPerNode),
      [LAUNCHER_PID_ENV]: String(process.pid),
    };
    // its own process group: a terminal's Ctrl-C reaches the launcher alone, which forwards it once
    const child = spawn(process.execPath, [...process.execArgv, ...command, '--threads', String(threads)], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    children.push(child);
    // a worker that could not be started (EMFILE while making its pipes) has none: its 'error' below says so
    if (child.stdout) pipeLines(child.stdout, `[rank ${rank}] `, process.stdout);
    if (child.stderr) pipeLines(child.stderr, `[rank ${rank}] `, process.stderr);
    exits.push(
      new Promise((resolve) => {
        // a worker that cannot be started (EMFILE, EAGAIN): stop the ones started, exit non-zero
        child.on('error', (e) => {
          if (firstFailure === undefined) {
            firstFailure = 1;
            say(`rlora: could not start rank ${rank}: ${e.message}; stopping the other workers`);
            stopOthers();
          }
          resolve(1);
        });
        child.on('exit', (code, signal) => {
          const c = code ?? (signal === 'SIGINT' ? 130 : 1);
          if (c !== 0 && firstFailure === undefined) {
            firstFailure = c;
            if (c !== 130) {
              say(`rlora: rank ${rank} exited with ${signal ?? `code ${code}`}; stopping the other workers`);
              stopOthers();
            }
          }
          resolve(c);
        });
      }),
    );
  }
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts++;
    signalRunning('SIGINT');
    if (interrupts === 1) say('\nrlora: Ctrl-C sent to every worker: they stop after the current step (Ctrl-C again to quit at once)');
  };
  const onSigterm = (): void => stopOthers();
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  try {
    await Promise.all(exits);
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
  }
  return firstFailure ?? 0;
}

/**
 * In a worker started by `rlora train --nproc-per-node`: asks to be sent SIGTERM when the launcher
 * dies (kill -9, SIGHUP of its terminal), so that no worker trains on alone. A worker whose
 * launcher is already gone exits. Nothing happens outside such a worker, or where the system has
 * no parent-death signal (then the workers outlive a killed launcher, as before).
 */
export function dieWithLauncher(setParentDeathSignal: (signal: number, parentPid: number) => number): void {
  const pid = Number(process.env[LAUNCHER_PID_ENV]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return;
  const r = setParentDeathSignal(os.constants.signals.SIGTERM, pid);
  if (r === os.constants.errno.ESRCH) {
    process.stderr.write('rlora: the launcher of this worker is gone: stopping\n');
    process.exit(1);
  }
}
