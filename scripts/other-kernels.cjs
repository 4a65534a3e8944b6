#!/usr/bin/env node
// The second half of `npm test`: the suite once more on OpenBLAS's other kernel path, so that a test
// whose numbers hold on this CPU's kernels only fails here, not on a user's machine. OpenBLAS picks
// its kernels by CPU (Cooperlake's AVX-512 ones on the AMD EPYC machines here, Haswell's AVX2 ones
// on many others) unless OPENBLAS_CORETYPE names them:
//   - OPENBLAS_CORETYPE set (some machines set it for the whole environment): the run without it,
//     on the kernels OpenBLAS picks for this CPU;
//   - unset: the run with OPENBLAS_CORETYPE=Haswell (the AVX2 path every x86-64 CPU with AVX2 has).
// When both would be the same kernels (a Haswell-class CPU without the variable), it says so and
// runs nothing. RLORA_SKIP_OTHER_KERNELS=1 skips it. Arguments are passed to jest.
//
// It runs the suites whose numbers come from the kernels, not those listed in KERNEL_FREE, whose
// assertions hold whichever kernels ran: messages and argument checks, files, processes, servers,
// comparisons of rlora with itself on the same kernels (data parallel against one process), and with
// llama.cpp's own kernels (gguf: tolerances far above the differences between BLAS kernel paths).
// They take about four fifths of the first run's time (measured 2026-12-07: 560 of 683 s), which keeps
// `npm test` within 15 minutes on 2 cores.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

if (process.env.RLORA_SKIP_OTHER_KERNELS === '1') {
  console.log('other-kernels: skipped (RLORA_SKIP_OTHER_KERNELS=1)');
  process.exit(0);
}
const KERNEL_FREE = [
  'adapter-bounds', 'api-surface', 'atomic-save', 'audit4', 'charts', 'cli', 'data', 'data-formats', 'demo', 'dispose', 'distributed',
  'fuzz', 'gguf', 'hub', 'hub-cli', 'imports', 'install', 'interrupt', 'json', 'layer-errors', 'libtorch', 'locking', 'logging', 'lora-options', 'option-docs',
  'model-card', 'model-errors', 'reliability', 'resume-errors', 'safetensors', 'serve', 'steplog', 'sweep', 'tensor',
  'threads', 'tokenizer', 'types', 'workers',
];
const root = path.join(__dirname, '..');
const env = { ...process.env };
const given = env.OPENBLAS_CORETYPE;
let what;
if (given) {
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE; // set together with it on those machines
  what = `without OPENBLAS_CORETYPE (it was ${given}): the kernels OpenBLAS picks for this CPU`;
} else {
  env.OPENBLAS_CORETYPE = 'Haswell';
  what = 'with OPENBLAS_CORETYPE=Haswell (the AVX2 kernels)';
}
// Which kernel that run gets, asked of the addon in a child with that environment
const probe = spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', "process.stdout.write(require('./lib').blasInfo())"], { cwd: root, env, encoding: 'utf8' });
const here = spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', "process.stdout.write(require('./lib').blasInfo())"], { cwd: root, encoding: 'utf8' });
const core = (s) => (/core (\w+)/.exec(s || '') || [])[1];
if (probe.status !== 0 || here.status !== 0) {
  console.error(`other-kernels: could not ask the addon for its BLAS:\n${probe.stderr || here.stderr}`);
  process.exit(1);
}
if (!core(probe.stdout)) {
  console.log(`other-kernels: libtorch does not run on OpenBLAS here (${probe.stdout}): nothing to run`);
  process.exit(0);
}
if (core(probe.stdout) === core(here.stdout)) {
  console.log(`other-kernels: OpenBLAS picks the ${core(here.stdout)} kernels either way on this CPU: nothing more to run`);
  process.exit(0);
}
console.log(`\nother-kernels: the suite again ${what} (${core(probe.stdout)} kernels; the first run had ${core(here.stdout)})\n`);
const jest = require.resolve('jest/bin/jest', { paths: [root] });
const ignore = KERNEL_FREE.map((name) => `/test/${name.replace(/[-]/g, '\\-')}\\.test\\.ts$`);
const r = spawnSync(process.execPath, [jest, ...process.argv.slice(2), '--testPathIgnorePatterns', ...ignore], { cwd: root, env, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
