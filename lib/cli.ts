#!/usr/bin/env node
// The `rlora` command: `rlora <subcommand> [options]`.
//
// Adding a subcommand: one entry in `commands` below. Import what it needs (the addon, models)
// inside its run(), not at the top of this file: `rlora build` and `rlora doctor` must work when
// the addon cannot be loaded.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { closest, InputError, parseArgs, Subcommand, UsageError } from './cli/args';
import { downloadCommand } from './cli/download';
import { evalCommand } from './cli/eval';
import { exportCommand } from './cli/export';
import { generateCommand } from './cli/generate';
import { inspect } from './cli/inspect';
import { mergeCommand } from './cli/merge';
import { plot } from './cli/plot';
import { serveCommand } from './cli/serve';
import { sweepCommand } from './cli/sweep';
import { train } from './cli/train';
import { hubCacheDir, hubEndpoint, hubToken, isOffline } from './hub/cache';
import { envVarAdvice, isUsable, Libtorch, readElfDynamic, Unusable } from './libtorch';
import { buildTools, inspectLibtorch, listLocalBuilds, listPrebuilds, loadReport, mappedLibraries, nvidiaSmi, PACKAGE_ROOT, RloraLoadError } from './loader';
import { printable } from './util/printable';

export { InputError, parseArgs, UsageError } from './cli/args';
export type { Subcommand } from './cli/args';

function version(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------
// rlora build

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

const build: Subcommand = {
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
    const check = spawnSync(process.execPath, [__filename, 'doctor'], { stdio: 'inherit' });
    return check.status ?? 1;
  },
};

// ---------------------------------------------------------------------------------------------
// rlora doctor

function describe(lt: Libtorch | Unusable): string {
  if (!isUsable(lt)) return `${lt.where}: ${lt.problem}`;
  const bits = [lt.version ?? 'version unknown', lt.compute, lt.abi === 'cxx11' ? 'C++11 ABI' : lt.abi === 'precxx11' ? 'pre-C++11 ABI' : null, lt.sonames === 'versioned' ? 'versioned sonames' : null];
  return `${bits.filter(Boolean).join(', ')}  tag ${lt.tag ?? `none (${lt.problem})`}\n${' '.repeat(14)}${lt.where}`;
}

function blasOf(libs: string[]): string {
  const openblas = libs.find((f) => /libopenblas/.test(path.basename(f))) ?? libs.find((f) => /openblas/.test(f));
  if (openblas) return `OpenBLAS${/pthread/.test(openblas) ? ' (pthread)' : /openmp/.test(openblas) ? ' (OpenMP)' : ''}  ${openblas}`;
  const mkl = libs.find((f) => /libmkl/.test(path.basename(f)));
  if (mkl) return `MKL  ${mkl}`;
  const blis = libs.find((f) => /libblis/.test(path.basename(f)));
  if (blis) return `BLIS  ${blis}`;
  const ref = libs.find((f) => /libblas\.so/.test(path.basename(f)));
  if (ref) return `${ref}: the reference BLAS, about 30 times slower; sudo apt-get install -y libopenblas0-pthread`;
  return "none loaded as a shared library (PyTorch's own builds link MKL into libtorch_cpu)";
}

const doctor: Subcommand = {
  summary: 'print what rlora finds: Node, libtorch, prebuilds, the binary it loads, CUDA, BLAS, threads, the HF cache',
  help: `rlora doctor [--json]

Prints Node, the libtorch installs found (with their prebuild tags), the prebuilt binaries of this
package, the local build, which binary \`require('rlora')\` loads and why, CUDA devices, the BLAS
library in use, thread settings, the Hugging Face cache folder and whether HF_TOKEN is set. Exits 1
when no binary loads, with what to install or run.

  --json   the same as one JSON object`,
  run(args) {
    const { opts, rest } = parseArgs(args, { json: 'flag' });
    if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
    const info: Record<string, unknown> = {
      rlora: version(),
      package: PACKAGE_ROOT,
      node: process.version,
      napi: process.versions.napi,
      platform: `${process.platform}-${process.arch}`,
    };
    let error: string | null = null;
    let native: typeof import('./native')['native'] | null = null;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      native = (require('./native') as typeof import('./native')).native;
    } catch (e) {
      error = e instanceof RloraLoadError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
    }
    const report = loadReport();
    const libtorch = inspectLibtorch();
    const prebuilds = listPrebuilds();
    const locals = listLocalBuilds();
    const mapped = mappedLibraries();
    const torchInUse = mapped.filter((f) => /libtorch_cpu\.so/.test(f));
    info.libtorch = libtorch.map((l) => (isUsable(l) || !envVarAdvice(l) ? l : { ...l, advice: envVarAdvice(l) }));
    info.prebuilds = prebuilds.prebuilds.map((p) => ({ ...p, matches: libtorch.filter(isUsable).filter((l) => l.tag === p.tag).map((l) => l.where) }));
    info.localBuilds = locals.map((f) => ({ file: f, mtime: fs.statSync(f).mtime.toISOString(), needed: readElfDynamic(f)?.needed.filter((n) => /torch|c10/.test(n)) ?? [] }));
    info.attempts = report?.attempts ?? [];
    info.loaded = report?.loaded ? { kind: report.loaded.kind, file: report.loaded.file, libtorch: report.loaded.libtorch?.where ?? null } : null;
    info.libtorchInUse = torchInUse;
    const gpus = nvidiaSmi();
    if (native) {
      info.buildInfo = native.buildInfo;
      info.cuda = { available: native.buildInfo.cudaAvailable, devices: native.buildInfo.cudaDeviceCount, nvidiaSmi: gpus };
      info.blas = blasOf(mapped);
      info.gloo = Boolean((native as { hasGloo?: boolean }).hasGloo);
      info.nccl = Boolean((native as { hasNccl?: boolean }).hasNccl);
      info.threads = {
        rlora: native.getNumThreads(),
        openblas: native.blasThreads() || null,
        cores: os.availableParallelism(),
        OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? null,
        OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? null,
        MKL_NUM_THREADS: process.env.MKL_NUM_THREADS ?? null,
        OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? null,
      };
    } else {
      info.cuda = { available: null, devices: null, nvidiaSmi: gpus };
    }
    const token = hubToken();
    let endpoint: string;
    try {
      endpoint = hubEndpoint();
    } catch (e) {
      endpoint = (e as Error).message;
    }
    info.huggingface = { cache: hubCacheDir(), endpoint, offline: isOffline(), token: token ? token.source : null };
    info.error = error;
    if (opts.json) {
      console.log(JSON.stringify(info, null, 2));
      return error ? 1 : 0;
    }

    const pad = (k: string) => k.padEnd(13) + ' ';
    const out: string[] = [];
    const line = (k: string, v: string) => out.push(pad(k) + v);
    line('rlora', `${info.rlora}  ${PACKAGE_ROOT}`);
    line('node', `${process.version} (N-API ${process.versions.napi}), ${info.platform}`);
    if (libtorch.length === 0) line('libtorch', "none found (LIBTORCH, Torch_DIR, system library folders, python3's torch)");
    libtorch.forEach((l, i) => {
      line(i === 0 ? 'libtorch' : '', describe(l));
      const advice = isUsable(l) ? null : envVarAdvice(l);
      if (advice) line('', advice);
    });
    if (prebuilds.prebuilds.length === 0) line('prebuilds', `none in ${prebuilds.dir}`);
    (info.prebuilds as { file: string; tag: string | null; matches: string[] }[]).forEach((p, i) =>
      line(i === 0 ? 'prebuilds' : '', `${path.basename(p.file)}${p.matches.length ? '  (matches the libtorch found)' : ''}`),
    );
    if (locals.length === 0) line('local build', 'none (`npx rlora build` makes one)');
    (info.localBuilds as { file: string; mtime: string; needed: string[] }[]).forEach((b, i) => line(i === 0 ? 'local build' : '', `${b.file}  (${b.mtime}; links ${b.needed.join(' ')})`));
    for (const a of report?.attempts ?? []) if (a.error) line('tried', `${a.kind} ${a.file}: ${a.error}`);
    if (report?.loaded) {
      const l = report.loaded;
      line('loaded', `${l.kind} ${l.file}`);
      if (l.libtorch) line('', `with the libtorch of ${l.libtorch.where}`);
    } else line('loaded', 'nothing');
    // (the token itself is never printed: only where it comes from)
    line('HF cache', `${hubCacheDir()}${isOffline() ? '  (HF_HUB_OFFLINE: no downloads)' : ''}${process.env.HF_ENDPOINT ? `; HF_ENDPOINT=${endpoint}` : ''}`);
    line('HF_TOKEN', token ? (token.source === 'HF_TOKEN' ? 'set' : `not set; a token file is read: ${token.source}`) : 'not set (gated and private Hub repos need one)');
    if (native) {
      const b = native.buildInfo;
      line('built with', `libtorch ${b.torchVersion} (${b.torchSource})`);
      line('in use', torchInUse.join(', ') || 'unknown');
      const cuda = b.cudaAvailable ? `${b.cudaDeviceCount} device${b.cudaDeviceCount === 1 ? '' : 's'}` : 'not available to this libtorch';
      line('CUDA', cuda + (gpus && !b.cudaAvailable ? `; nvidia-smi sees: ${gpus.split('\n').join('; ')} (a CUDA libtorch and binary would use it)` : ''));
      line('BLAS', info.blas as string);
      const backends = [info.gloo ? 'Gloo' : '', info.nccl ? 'NCCL (untested)' : ''].filter(Boolean).join(' and ');
      line('data parallel', backends ? `${backends} (c10d): rlora train --nproc-per-node N` : 'not in this build (no Gloo headers when it was built; Debian: apt-get install -y libgloo-dev, then npx rlora build)');
      const t = info.threads as Record<string, unknown>;
      line('threads', `libtorch ${t.rlora} per job (setNumThreads), OpenBLAS ${t.openblas ?? 'not loaded'}, ${t.cores} usable cores; OMP_NUM_THREADS=${t.OMP_NUM_THREADS ?? 'unset'}, OPENBLAS_NUM_THREADS=${t.OPENBLAS_NUM_THREADS ?? 'unset'}, OMP_WAIT_POLICY=${t.OMP_WAIT_POLICY ?? 'unset'}`);
    } else {
      if (gpus) line('CUDA', `nvidia-smi sees: ${gpus.split('\n').join('; ')}`);
      out.push('', error ?? '');
    }
    console.log(out.join('\n'));
    return error ? 1 : 0;
  },
};

// ---------------------------------------------------------------------------------------------

export const commands: Record<string, Subcommand> = { train, eval: evalCommand, generate: generateCommand, merge: mergeCommand, export: exportCommand, serve: serveCommand, sweep: sweepCommand, inspect, plot, download: downloadCommand, build, doctor };

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((k) => k.length));
  return [
    `rlora ${version()}: R-LoRA multi-head LoRA fine-tuning for Node.js, computed by libtorch`,
    '',
    'Usage: rlora <command> [options]',
    '',
    'Commands:',
    ...Object.entries(commands).map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`),
    '',
    '`rlora <command> --help` shows a command\'s options.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? args[0] : undefined;
    if (topic && commands[topic]) console.log(commands[topic].help);
    else if (topic) {
      const near = closest(topic, Object.keys(commands), 2);
      console.error(`rlora help: unknown command ${topic}${near ? `; did you mean ${near}?` : ''}\n\n${usage()}`);
      return 2;
    } else console.log(usage());
    return 0;
  }
  if (name === '--version' || name === '-v') {
    console.log(version());
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    const near = closest(name, [...Object.keys(commands), 'help'], 2);
    if (near) console.error(`rlora: unknown command ${name}; did you mean ${near}?\n\n\`rlora --help\` lists the commands.`);
    else console.error(`rlora: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  if (args.includes('--help') || args.includes('-h')) {
    console.log(cmd.help);
    return 0;
  }
  try {
    return await cmd.run(args);
  } catch (e) {
    if (e instanceof UsageError) {
      // the usage lines (the help up to its first blank line), not the whole help
      const synopsis = cmd.help.split(/\n\s*\n/)[0];
      console.error(`rlora ${name}: ${printable(e.message)}\n\n${synopsis}\n\n\`rlora ${name} --help\` shows every option.`);
      return 2;
    }
    if (e instanceof InputError) {
      console.error(`rlora ${name}: ${printable(e.message)}`);
      return 1;
    }
    if (e instanceof RloraLoadError) {
      console.error(e.message);
      return 1;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      console.error(e instanceof Error ? printable(e.stack ?? e.message) : e);
      process.exitCode = 1;
    },
  );
}
