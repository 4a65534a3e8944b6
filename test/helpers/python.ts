// Runs a Python torch script as an independent reference (Debian's python3-torch: /usr/bin/python3).
import { execFileSync } from 'child_process';
import * as fs from 'fs';

/** The interpreter that has torch (CI installs python3-torch); the python3 first on PATH may not. */
export const PYTHON = process.env.RLORA_TEST_PYTHON ?? '/usr/bin/python3';

export function hasTorchPython(): boolean {
  if (!fs.existsSync(PYTHON)) return false;
  try {
    execFileSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let torchPython: boolean | undefined;
/** The Python checks are part of the suite: without python3-torch they fail, never skip. */
export function requireTorchPython(): void {
  torchPython ??= hasTorchPython();
  if (!torchPython) {
    throw new Error(
      `these tests need Python with torch at ${PYTHON} (set RLORA_TEST_PYTHON to use another): ` +
        'install python3-torch (Debian: sudo apt-get install -y python3-torch)',
    );
  }
}

/**
 * Runs `script` with `input` available as the JSON variable `INP`; the script must print one JSON
 * document (its result) as its last stdout line. Doubles cross as JSON text, which round-trips
 * float64 exactly.
 */
export function runPython<T>(script: string, input: unknown): T {
  const prelude = 'import json, sys\nINP = json.loads(sys.stdin.read())\n';
  const out = execFileSync(PYTHON, ['-c', prelude + script], {
    input: JSON.stringify(input),
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, OMP_NUM_THREADS: '1' },
  });
  const lines = out.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as T;
}
