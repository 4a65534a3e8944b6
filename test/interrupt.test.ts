// Ctrl-C in the Node REPL reaches a running fit (lib/util/interrupt.ts): the REPL turns Ctrl-C into
// a key, interrupts the `await` and used to leave the fit running, its progress line drawn over the
// prompt. Run in a real terminal (script(1) gives the REPL a pseudo-terminal).
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { tempFolder } from './helpers/tiny-model';

jest.setTimeout(120_000);

const REPO = path.resolve(__dirname, '..');
const tmp = tempFolder('rlora-interrupt-');

(fs.existsSync('/usr/bin/script') ? it : it.skip)('in the REPL, Ctrl-C stops a fit after the step, with a checkpoint, and the progress line stays off the prompt', async () => {
  const out = path.join(tmp, 'run');
  const cmd = `${process.execPath} --import tsx --import ${path.join(REPO, 'test', 'helpers', 'repl-fit.ts')}`;
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm', RLORA_REPL_OUT: out, NO_COLOR: '1' } });
  let screen = '';
  child.stdout.on('data', (d: Buffer) => (screen += d.toString()));
  child.stderr.on('data', (d: Buffer) => (screen += d.toString()));
  const until = async (test: () => boolean, what: string, ms = 60_000): Promise<void> => {
    const t0 = Date.now();
    while (!test()) {
      if (Date.now() - t0 > ms) throw new Error(`waited ${ms} ms for ${what}; the terminal showed:\n${screen}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    await until(() => screen.includes('> '), 'the prompt');
    child.stdin.write('await tr.fit(ds)\r');
    await until(() => /step \d+\/1000000/.test(screen), 'the progress line');
    child.stdin.write('\x03');
    await until(() => screen.includes('rlora: Ctrl-C: stopping after step'), 'the notice');
    await until(() => fs.readdirSync(out).some((f) => /^checkpoint-\d+$/.test(f)), 'the checkpoint', 30_000);
    const checkpoint = fs.readdirSync(out).find((f) => /^checkpoint-\d+$/.test(f))!;
    const state = JSON.parse(fs.readFileSync(path.join(out, checkpoint, 'trainer_state.json'), 'utf8')) as { step?: number; global_step?: number };
    const step = Number(/\d+$/.exec(checkpoint)![0]);
    expect(step).toBeLessThan(1_000_000);
    expect(state).toBeTruthy();
    // the fit is over: no progress line is drawn after the notice (the REPL's prompt follows it)
    await new Promise((r) => setTimeout(r, 1500));
    const after = screen.slice(screen.indexOf('rlora: Ctrl-C: stopping after step'));
    expect(after).not.toMatch(/step \d+\/1000000 \|/);
    child.stdin.write('.exit\r');
    await new Promise<void>((resolve) => child.on('exit', () => resolve()));
  } finally {
    child.kill('SIGKILL');
  }
});
