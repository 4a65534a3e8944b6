// rlora build: compiles the native addon from source against the user's libtorch with cmake-js,
// then runs `rlora doctor` in a fresh process to show what `require('rlora')` loads now. Loads no
// addon (it is what makes one).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { buildTools, PACKAGE_ROOT } from '../loader';
import { parseArgs, Subcommand, UsageError } from './args';

/** The `rlora` entry point (lib/cli.ts, or dist/cli.js once compiled), which runs doctor after a build. */
const CLI_ENTRY = path.join(__dirname, '..', `cli${path.extname(__filename)}`);

/** What `rlora build` asks users to run when cmake-js or node-addon-api is not installed. */
export const BUILD_PACKAGES_INSTALL = 'npm install --no-save cmake-js node-addon-api';

/** The folder of an npm package as `require` finds it from `from` (its node_modules, then above), or null. */
function packageDir(name: string, from: string): string | null {
  try {
    return path.dirname(require.resolve(`${name}/package.json`, { paths: [from] }));
  } catch {
    return null;
  }
}

export const buildCommand: Subcommand = {
  summary: 'compile the native addon from source against your libtorch (cmake-js)',
  help: `rlora build [--clean] [--debug] [--parallel N]

Compiles native/ and binding/ with cmake-js into ${path.join('build', 'Release', 'rlora.node')} of the
installed package; \`require('rlora')\` then loads it. Needs cmake >= 3.18, a C++17 compiler and
libtorch with its headers, found as CMake looks for it: LIBTORCH (an unpacked libtorch folder),
Torch_DIR, python3's torch package (pip install torch; brings CUDA builds), the system's
(Debian/Ubuntu: sudo apt-get install -y cmake g++ libtorch-dev libopenblas0-pthread libgloo-dev;
libgloo-dev brings data parallelism), and the npm packages cmake-js and node-addon-api, optional dependencies of rlora (when your install left them
out: ${BUILD_PACKAGES_INSTALL}).

  --clean        configure from scratch (after changing libtorch)
  --debug        debug build (build/Debug)
  --parallel N   compile jobs`,
  run(args) {
    const { opts, rest } = parseArgs(args, { clean: 'flag', debug: 'flag', parallel: 'value' });
    if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
    const root = PACKAGE_ROOT;
    if (!fs.existsSync(path.join(root, 'CMakeLists.txt'))) {
      console.error(`rlora build: ${root} has no CMakeLists.txt: this copy of rlora has no sources to build.`);
      return 1;
    }
    const tools = buildTools();
    // cmake-js and node-addon-api are optionalDependencies: only building needs them
    const npmPackages = (['cmake-js', 'node-addon-api'] as const).map((name) => ({ name, dir: packageDir(name, root) }));
    const missingPackages = npmPackages.filter((p) => p.dir === null).map((p) => p.name);
    const installPackages =
      (missingPackages.length === 1 ? `the npm package ${missingPackages[0]} is` : `the npm packages ${missingPackages.join(' and ')} are`) +
      ' not installed (optional dependencies of rlora, needed only to build).\n' +
      'Install them in your project, then run `npx rlora build` again:\n' +
      `  ${BUILD_PACKAGES_INSTALL}`;
    if (!tools.cmake || !tools.cxx) {
      const missing = [!tools.cmake && 'cmake', !tools.cxx && 'a C++ compiler (c++, g++ or clang++; or set CXX)'].filter(Boolean).join(' and ');
      console.error(
        `rlora build: ${missing} not found on PATH.\n` +
          'Install the build tools and libtorch with its headers, then run `npx rlora build` again:\n' +
          '  sudo apt-get install -y cmake g++ libtorch-dev libopenblas0-pthread libgloo-dev   (Debian/Ubuntu)\n' +
          '  (or pip install torch for python3, or LIBTORCH=/path/to/libtorch, instead of libtorch-dev)' +
          (missingPackages.length ? `\nAlso, ${installPackages}` : ''),
      );
      return 1;
    }
    if (missingPackages.length) {
      console.error(`rlora build: ${installPackages}`);
      return 1;
    }
    const cmakeJs = path.join(npmPackages[0].dir!, 'bin', 'cmake-js');
    const cmd = [cmakeJs, opts.clean ? 'rebuild' : 'compile', '--out', 'build'];
    if (opts.debug) cmd.push('--debug');
    if (typeof opts.parallel === 'string') cmd.push('--parallel', opts.parallel);
    console.error(`rlora build: in ${root}\n  cmake-js ${cmd.slice(1).join(' ')}`);
    const r = spawnSync(process.execPath, cmd, { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) {
      console.error(`rlora build: cmake-js failed (exit ${r.status ?? r.signal}); its output above says why.`);
      return 1;
    }
    // what `require('rlora')` loads now, in a fresh process
    const check = spawnSync(process.execPath, [CLI_ENTRY, 'doctor'], { stdio: 'inherit' });
    return check.status ?? 1;
  },
};

