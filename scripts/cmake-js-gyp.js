#!/usr/bin/env node
// prebuildify's PREBUILD_NODE_GYP: prebuildify runs node-gyp as
//   <this> rebuild --target=<node> --devdir=<dir> --arch=<arch> --release|--debug
// in its --cwd and takes the .node it finds in <cwd>/build/Release (or Debug). rlora builds with
// CMake, so this runs cmake-js instead, on the sources of RLORA_SOURCE_DIR (default: this
// repository), with its build folder in <cwd>/build. The addon is N-API, so --target and --devdir
// do not matter (cmake-js takes the headers from node-api-headers).
//   RLORA_PREBUILD_CLEAN=1     configure and build from scratch (cmake-js rebuild)
//   RLORA_PREBUILD_PARALLEL=N  compile jobs
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const args = process.argv.slice(2);
const value = (name) => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : undefined;
};
const source = path.resolve(process.env.RLORA_SOURCE_DIR || path.join(__dirname, '..'));
const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json', { paths: [source] })), 'bin', 'cmake-js');

const cmd = [
  cmakeJs,
  // prebuildify always asks for `rebuild`; the build folder is the prebuild's own, so an
  // incremental build is enough unless asked
  process.env.RLORA_PREBUILD_CLEAN === '1' ? 'rebuild' : 'compile',
  '--directory', source,
  '--out', path.join(process.cwd(), 'build'),
  // a prebuild carries no library path of the machine that built it: rlora's loader loads the
  // libtorch found at run time before it (lib/loader.ts)
  '--CDCMAKE_SKIP_BUILD_RPATH=ON',
];
if (value('arch')) cmd.push('--arch', value('arch'));
if (args.includes('--debug')) cmd.push('--debug');
if (process.env.RLORA_PREBUILD_PARALLEL) cmd.push('--parallel', process.env.RLORA_PREBUILD_PARALLEL);

console.error(`cmake-js ${cmd.slice(1).join(' ')}`);
const r = spawnSync(process.execPath, cmd, { stdio: 'inherit' });
process.exit(r.status ?? 1);
