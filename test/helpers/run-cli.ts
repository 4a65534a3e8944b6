// Runs `node --import tsx lib/cli.ts ...args` (or any node arguments) as a child of a test, with
// its output collected; every child still running when the suite ends is killed.
import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';

export const REPO = path.resolve(__dirname, '..', '..');
export const CLI = path.join(REPO, 'lib', 'cli.ts');

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Starts `node <argv>` in the repository root (argv: node's arguments, e.g. ['--import', 'tsx', CLI, ...]). */
export function startNode(argv: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; done: Promise<Result> } {
  const child = spawn(process.execPath, argv, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Result>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, done };
}

/** Runs `node <argv>` to its end, killed after `timeoutMs`. */
export async function runNode(argv: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Result> {
  const { child, done } = startNode(argv, env);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    return await done;
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

/** Runs the CLI with these arguments to its end. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Result> {
  return runNode(['--import', 'tsx', CLI, ...args], env, timeoutMs);
}
