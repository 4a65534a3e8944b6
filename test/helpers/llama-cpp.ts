// node-llama-cpp for the GGUF tests. It is not a dependency of rlora (its full install is 732 MB):
// it lives in test/gguf-runtime/ (pinned, `npm run test:gguf-setup` installs it) and runs in a
// child process (test/helpers/llama-cpp-runner.mjs), since it is an ES module with a binary of its own.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const RUNTIME_DIR = path.join(__dirname, '..', 'gguf-runtime');
const ENTRY = path.join(RUNTIME_DIR, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
const RUNNER = path.join(__dirname, 'llama-cpp-runner.mjs');

export interface LlamaCppJob {
  model: string;
  lora?: string;
  tokenize?: string[];
  generate?: { prompt: number[]; count: number };
  probabilities?: { tokens: number[]; from: number; vocab: number };
}
export interface LlamaCppResult {
  vocabulary: { type: string; bos: number | null; eos: number | null };
  tokenize?: number[][];
  generate?: number[];
  probabilities?: number[][];
}

/** Why node-llama-cpp cannot run here (not installed, or its binary does not load), or null when it can. */
export function llamaCppProblem(): string | null {
  const install = `install it with \`npm run test:gguf-setup\` (node-llama-cpp 3.21.1 into ${RUNTIME_DIR})`;
  if (!fs.existsSync(ENTRY)) return `node-llama-cpp is not installed: ${install}`;
  const r = spawnSync(process.execPath, [RUNNER], { input: JSON.stringify({ entry: ENTRY, probe: true }), encoding: 'utf8', timeout: 120_000 });
  if (r.status === 0 && r.stdout.includes('"ok":true')) return null;
  const why = (r.stderr || r.error?.message || `exit ${r.status ?? r.signal}`).trim().split('\n').filter(Boolean).slice(-1)[0];
  return `node-llama-cpp's binary cannot load here (${why}); ${install} on a linux-x64 machine`;
}

/** Runs the jobs in node-llama-cpp, in order, in one child process. */
export function runLlamaCpp(jobs: LlamaCppJob[]): Promise<LlamaCppResult[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUNNER], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`node-llama-cpp run failed (exit ${code}): ${err.trim().slice(-2000)}`));
      try {
        resolve((JSON.parse(out) as { results: LlamaCppResult[] }).results);
      } catch (e) {
        reject(new Error(`node-llama-cpp run printed no answer: ${(e as Error).message}; stderr: ${err.slice(-2000)}`));
      }
    });
    child.stdin.end(JSON.stringify({ entry: ENTRY, jobs }));
  });
}
