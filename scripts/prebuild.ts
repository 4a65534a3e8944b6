// npm run prebuild-torch [-- --clean] [-- --parallel N] [-- --out DIR]
//
// Builds the prebuilt binary for the libtorch this machine builds against (CMake's order:
// LIBTORCH, Torch_DIR, python3's torch, the system's) with prebuildify, and files it as
//   prebuilds/<platform>-<arch>/rlora.glibc.<libtorch tag>.node     (tag: lib/libtorch.ts)
// The build runs in .cache/prebuild (never in build/, the development build), incrementally after
// the first time. Prebuilds made on other machines (a CUDA one, another libtorch) are copied into
// prebuilds/ next to it; `npm run package` packs them all.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { libtorchOfBuild, readElfDynamic } from '../lib/libtorch';

export const REPO = path.resolve(__dirname, '..');

export interface PrebuildResult {
  file: string;
  tag: string;
  libtorch: string;
}

export interface PrebuildOptions {
  clean?: boolean;
  parallel?: number;
  /** Folder that receives <platform>-<arch>/rlora...node. Default: the repository's prebuilds/. */
  out?: string;
  /** Where the build happens. Default .cache/prebuild. */
  stage?: string;
  quiet?: boolean;
}

export function makePrebuild(opts: PrebuildOptions = {}): PrebuildResult {
  const stage = opts.stage ?? path.join(REPO, '.cache', 'prebuild');
  const out = opts.out ?? path.join(REPO, 'prebuilds');
  fs.mkdirSync(stage, { recursive: true });
  // prebuildify names the file after the package in its --cwd
  fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify({ name: 'rlora', private: true }) + '\n');
  const staged = path.join(stage, 'prebuilds', `${process.platform}-${process.arch}`);
  fs.rmSync(staged, { recursive: true, force: true });

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PREBUILD_NODE_GYP: path.join(REPO, 'scripts', 'cmake-js-gyp.js'),
    RLORA_SOURCE_DIR: REPO,
    RLORA_PREBUILD_CLEAN: opts.clean ? '1' : '0',
  };
  if (opts.parallel) env.RLORA_PREBUILD_PARALLEL = String(opts.parallel);
  const prebuildify = path.join(path.dirname(require.resolve('prebuildify/package.json', { paths: [REPO] })), 'bin.js');
  const args = [prebuildify, '--napi', '--strip', '--tag-libc', '--cwd', stage, '--cache', path.join(REPO, '.cache', 'prebuildify')];
  const r = spawnSync(process.execPath, args, { env, stdio: opts.quiet ? ['ignore', 'pipe', 'pipe'] : 'inherit', encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`prebuildify failed (exit ${r.status ?? r.signal})${opts.quiet ? `:\n${(r.stdout ?? '') + (r.stderr ?? '')}`.slice(-4000) : ''}`);

  const made = fs.readdirSync(staged).filter((n) => n.endsWith('.node'));
  if (made.length !== 1) throw new Error(`expected one .node in ${staged}, found ${made.join(', ') || 'none'}`);
  const file = path.join(staged, made[0]);
  // the tag comes from the libtorch CMake linked, and the binary must name that library
  const lt = libtorchOfBuild(path.join(stage, 'build'));
  if (!lt?.tag) throw new Error(`could not tell which libtorch ${path.join(stage, 'build')} linked${lt?.problem ? `: ${lt.problem}` : ''}`);
  const needed = readElfDynamic(file)?.needed ?? [];
  const cpuSoname = readElfDynamic(lt.libs[1])?.soname ?? path.basename(lt.libs[1]);
  if (!needed.includes(cpuSoname)) throw new Error(`${file} does not link ${cpuSoname} (it links ${needed.join(', ')})`);

  const destDir = path.join(out, `${process.platform}-${process.arch}`);
  fs.mkdirSync(destDir, { recursive: true });
  const dest = path.join(destDir, made[0].replace(/\.node$/, `.${lt.tag}.node`));
  fs.copyFileSync(file, dest);
  return { file: dest, tag: lt.tag, libtorch: `${lt.version} in ${lt.libDir}` };
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  const val = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const t0 = Date.now();
  try {
    const r = makePrebuild({ clean: argv.includes('--clean'), parallel: val('parallel') ? Number(val('parallel')) : undefined, out: val('out') });
    console.log(`prebuild ${path.relative(process.cwd(), r.file)}  (${r.tag}: libtorch ${r.libtorch}; ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  } catch (e) {
    console.error(`prebuild-torch: ${e instanceof Error ? e.message : e}`);
    process.exitCode = 1;
  }
}
