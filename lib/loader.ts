// Picks and loads the native addon at `require` time. No install script is involved (npm 11 does
// not run a dependency's install scripts unless the user approves them), so everything happens here:
//
//   1. RLORA_BINARY, when set: `prebuild`, `build`, or the path of a .node file: only that.
//   2. A prebuild (prebuilds/<platform>-<arch>/rlora.<tags>.node) whose libtorch tag (libtorch.ts)
//      is that of a libtorch found at run time: LIBTORCH, else Torch_DIR, else the system's, then
//      python3's torch package. That libtorch's libc10/libtorch_cpu/libtorch are loaded first from
//      their folder, so a prebuild finds them where no loader path points (pip's torch/lib).
//   3. A local build (build/Release/rlora.node: `npx rlora build`, or a development build).
//      A local build newer than the matching prebuild goes first: someone built it on purpose
//      (`npx rlora build` against a CUDA torch), and an installed package's prebuilds carry npm's
//      fixed 1985 time stamp. In a source checkout (lib/*.ts present) local builds always go
//      first, so a prebuild made there never shadows the development build.
//   4. Else an RloraLoadError that says what was found and exactly what to install or run.
// A candidate that fails to load is noted and the next one is tried.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { describeTag, envVarAdvice, findLibtorch, installHint, isUsable, Libtorch, tagOfFile, Unusable } from './libtorch';

export const PACKAGE_ROOT = path.resolve(__dirname, '..');

export interface Prebuild {
  file: string;
  /** libtorch tag of the file name; null for an untagged prebuild (not loaded: its libtorch is unknown). */
  tag: string | null;
}

export interface Attempt {
  kind: 'prebuild' | 'build' | 'RLORA_BINARY';
  file: string;
  libtorch?: Libtorch;
  error?: string;
}

export interface LoadReport {
  packageRoot: string;
  /** prebuilds/<platform>-<arch> */
  prebuildDir: string;
  /** Prebuilds for this platform, architecture, runtime and libc. */
  prebuilds: Prebuild[];
  localBuilds: string[];
  /** libtorch installs looked at so far, in order (python3 is only asked when needed, except by doctor). */
  libtorch: (Libtorch | Unusable)[];
  attempts: Attempt[];
  /** The attempt that loaded. */
  loaded: Attempt | null;
}

export class RloraLoadError extends Error {
  declare readonly report: LoadReport;
  constructor(message: string, report: LoadReport) {
    super(message);
    this.name = 'RloraLoadError';
    // not enumerable: Node prints an uncaught error's own properties after its stack
    Object.defineProperty(this, 'report', { value: report, enumerable: false });
    // What a person needs is the message; a stack of loader frames hides it. Keep only the
    // frame that required rlora (which also keeps Node from printing the message in brackets).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 100;
    const here = new Error().stack ?? '';
    Error.stackTraceLimit = limit;
    const caller = here
      .split('\n')
      .slice(1)
      .find((l) => /^\s+at /.test(l) && !l.includes(PACKAGE_ROOT + path.sep) && !/\(node:|at node:/.test(l));
    this.stack = `${this.name}: ${message}${caller ? '\n' + caller : ''}`;
  }
}

// glibc: keep a library loaded although process.dlopen closes what is not an addon
const RTLD_NODELETE = 0x1000;

function firstLine(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.split('\n')[0].trim();
}

function mtime(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

interface GypBuild {
  parseTags(file: string): Record<string, unknown> | undefined;
  matchTags(runtime: string, abi: string): (tags: Record<string, unknown> | undefined) => boolean;
}

/** The prebuilds of this platform and architecture that node-gyp-build's own tags (runtime, libc, ...) allow. */
export function listPrebuilds(root = PACKAGE_ROOT): { dir: string; prebuilds: Prebuild[] } {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.node')).sort();
  } catch {
    return { dir, prebuilds: [] };
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const gyp = require('node-gyp-build') as GypBuild;
  const match = gyp.matchTags('node', process.versions.modules);
  return { dir, prebuilds: names.filter((n) => match(gyp.parseTags(n))).map((n) => ({ file: path.join(dir, n), tag: tagOfFile(n) })) };
}

export function listLocalBuilds(root = PACKAGE_ROOT): string[] {
  return ['build/Release', 'build/Debug']
    .map((d) => path.join(root, d, 'rlora.node'))
    .filter((f) => fs.existsSync(f));
}

/** Loads libtorch's libraries from their folder and keeps them loaded, so the addon's DT_NEEDED finds them. */
function preload(lt: Libtorch): void {
  if (process.platform !== 'linux') return;
  const flags = os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_LOCAL | RTLD_NODELETE;
  for (const lib of lt.libs) {
    try {
      process.dlopen({ exports: {} } as NodeJS.Module, lib, flags);
    } catch (e) {
      // a plain library is not an addon: "did not self-register" means it did load
      if (!/did not self-register/.test(firstLine(e))) throw new Error(`could not load ${lib}: ${firstLine(e)}`);
    }
  }
}

function tryLoad(attempt: Attempt, report: LoadReport): unknown {
  report.attempts.push(attempt);
  try {
    if (attempt.libtorch) preload(attempt.libtorch);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addon = require(attempt.file) as { NativeLoraLinear?: unknown };
    if (typeof addon?.NativeLoraLinear !== 'function') throw new Error('it is not an rlora addon');
    report.loaded = attempt;
    return addon;
  } catch (e) {
    attempt.error = firstLine(e);
    return undefined;
  }
}

/** Matching (prebuild, libtorch) pairs, looking at libtorch installs lazily. */
function* matchingPrebuilds(report: LoadReport): Generator<{ prebuild: Prebuild; libtorch: Libtorch }> {
  const tagged = report.prebuilds.filter((p) => p.tag);
  if (tagged.length === 0) return;
  for (const lt of findLibtorch()) {
    report.libtorch.push(lt);
    if (!isUsable(lt) || !lt.tag) continue;
    const p = tagged.find((x) => x.tag === lt.tag);
    if (p) yield { prebuild: p, libtorch: lt };
  }
}

function newReport(root: string): LoadReport {
  const { dir, prebuilds } = listPrebuilds(root);
  return { packageRoot: root, prebuildDir: dir, prebuilds, localBuilds: listLocalBuilds(root), libtorch: [], attempts: [], loaded: null };
}

/** Loads the addon as described at the top of this file. */
export function load(root = PACKAGE_ROOT): { addon: unknown; report: LoadReport } {
  const report = newReport(root);
  lastReport = report;
  const override = process.env.RLORA_BINARY;
  const locals = report.localBuilds;
  const checkout = fs.existsSync(path.join(root, 'lib', 'loader.ts'));

  const attempt = (a: Attempt) => tryLoad(a, report);

  if (override && override !== 'prebuild' && override !== 'build') {
    const addon = attempt({ kind: 'RLORA_BINARY', file: path.resolve(override) });
    if (addon) return { addon, report };
    throw new RloraLoadError(explain(report), report);
  }
  const wantPrebuild = override !== 'build';
  const wantBuild = override !== 'prebuild';

  let localsTried = !wantBuild;
  const tryLocals = () => {
    localsTried = true;
    for (const file of locals) {
      const addon = attempt({ kind: 'build', file });
      if (addon) return addon;
    }
    return undefined;
  };

  if (wantPrebuild) {
    for (const { prebuild, libtorch } of matchingPrebuilds(report)) {
      if (!localsTried && (checkout || locals.some((f) => mtime(f) > mtime(prebuild.file)))) {
        const addon = tryLocals();
        if (addon) return { addon, report };
      }
      const addon = attempt({ kind: 'prebuild', file: prebuild.file, libtorch });
      if (addon) return { addon, report };
    }
  }
  if (!localsTried) {
    const addon = tryLocals();
    if (addon) return { addon, report };
  }
  throw new RloraLoadError(explain(report), report);
}

let cached: { addon: unknown; report: LoadReport } | undefined;
let lastReport: LoadReport | undefined;

/** Loads once per process; later calls return the same addon (or try again after an error). */
export function loadAddon(): unknown {
  // no catch and rethrow here: Node points at the line that threw, best the RloraLoadError's own
  cached ??= load();
  return cached.addon;
}

/** What the last load found and tried (null before any). */
export function loadReport(): LoadReport | null {
  return lastReport ?? null;
}

// ---------------------------------------------------------------------------------------------
// Saying what to do

export function onPath(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const f = path.join(dir, cmd);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      if (fs.statSync(f).isFile()) return f;
    } catch {
      /* not here */
    }
  }
  return null;
}

/** cmake and a C++ compiler, as `npx rlora build` needs them. */
export function buildTools(): { cmake: string | null; cxx: string | null } {
  const cxx = process.env.CXX ? onPath(process.env.CXX) ?? (fs.existsSync(process.env.CXX) ? process.env.CXX : null) : null;
  return { cmake: onPath('cmake'), cxx: cxx ?? onPath('c++') ?? onPath('g++') ?? onPath('clang++') };
}

function describeLibtorch(lt: Libtorch | Unusable): string {
  if (!isUsable(lt)) return `${lt.where}: ${lt.problem}`;
  const what = lt.tag ? `${lt.version} (${lt.tag})` : `${lt.version ?? 'version unknown'}: ${lt.problem}`;
  return `${what} from ${lt.where}`;
}

/**
 * The address-space limit of this process in bytes (`ulimit -v`, `prlimit --as`; shared clusters
 * set one), or null when unlimited or unknown (not Linux).
 */
export function addressSpaceLimit(): number | null {
  try {
    const m = /^Max address space\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' && Number.isFinite(Number(m[1])) ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The address space this process has mapped in bytes (VmSize), or null when unknown (not Linux). */
export function mappedBytes(): number | null {
  try {
    const m = /^VmSize:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** "1000 MB" for an address-space limit. */
export function describeLimit(bytes: number): string {
  return `${Math.round(bytes / 2 ** 20)} MB`;
}

/** The message of a failed load: what was found, what was tried, what to install or run. */
export function explain(report: LoadReport): string {
  const rel = (f: string) => path.relative(process.cwd(), f) || f;
  const tried = report.attempts.map((a) => `  tried ${a.kind} ${rel(a.file)}: ${a.error}`);
  // libtorch could not be mapped under an address-space limit: that is the cause, not the build
  const limit = addressSpaceLimit();
  if (limit !== null && report.attempts.some((a) => /failed to map segment|cannot allocate memory/i.test(a.error ?? ''))) {
    return [
      `rlora: libtorch could not be loaded: this process may map at most ${describeLimit(limit)} (an address-space limit: ulimit -v or prlimit --as), too little for libtorch.`,
      ...tried,
      'Raise or remove the limit (ulimit -v unlimited, or ask for more memory on a cluster); loading libtorch needs a few GB of address space.',
    ].join('\n');
  }
  // the message names every libtorch install, python3's too (loading stops at the first that fits)
  const found = inspectLibtorch();
  const platform = `${process.platform}-${process.arch}`;
  const lines = ['rlora: no native binary could be loaded for the libtorch on this machine.'];
  // LIBTORCH or Torch_DIR naming no libtorch: said first, it is why nothing else was looked at
  const envProblems = found.filter((lt): lt is Unusable => !isUsable(lt) && envVarAdvice(lt) !== null);
  for (const lt of envProblems) lines.push(`  ${lt.where}: ${lt.problem}`, `    ${envVarAdvice(lt)}`);
  const others = found.filter((lt) => !envProblems.includes(lt as Unusable));
  lines.push(
    others.length
      ? '  libtorch found: ' + others.map(describeLibtorch).join('\n                  ')
      : envProblems.length
        ? '  libtorch found: none'
        : '  libtorch found: none (looked at LIBTORCH, Torch_DIR, the system library folders, python3\'s torch package)',
  );
  const tags = report.prebuilds.map((p) => p.tag ?? path.basename(p.file));
  lines.push(`  prebuilt binaries in this package for ${platform}: ${tags.length ? tags.join(', ') : 'none'}`);
  lines.push(`  local build: ${report.localBuilds.length ? report.localBuilds.map(rel).join(', ') : `none (${rel(path.join(report.packageRoot, 'build/Release/rlora.node'))})`}`);
  lines.push(...tried);
  if (process.env.RLORA_BINARY) lines.push(`  RLORA_BINARY=${process.env.RLORA_BINARY} limits the choice; unset it to let rlora choose.`);

  lines.push('Do one of:');
  const wanted = [...new Set(report.prebuilds.map((p) => p.tag).filter((t): t is string => !!t))];
  let n = 1;
  for (const tag of wanted) lines.push(`  ${n++}. install the libtorch a prebuilt binary was made for (${describeTag(tag)}):`, `       ${installHint(tag)}`);
  lines.push(`  ${n++}. compile rlora against your libtorch:  npx rlora build`);
  const tools = buildTools();
  const missing = [!tools.cmake && 'cmake', !tools.cxx && 'a C++ compiler (c++, g++ or clang++)'].filter(Boolean);
  lines.push(
    '       it needs cmake >= 3.18, a C++17 compiler and libtorch with its headers:',
    '       sudo apt-get install -y cmake g++ libtorch-dev libopenblas0-pthread libgloo-dev   (Debian/Ubuntu)',
    '       or pip install torch (rlora builds against python3\'s torch), or LIBTORCH=/path/to/libtorch',
  );
  if (missing.length) lines.push(`       (${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not on PATH here)`);
  lines.push('Run `npx rlora doctor` to see what rlora finds.');
  return lines.join('\n');
}

/** For doctor: every libtorch install (python3's included), not only those needed to load. */
export function inspectLibtorch(): (Libtorch | Unusable)[] {
  return [...findLibtorch()];
}

/** The shared libraries this process has mapped (Linux), e.g. to tell which libtorch and BLAS are in use. */
export function mappedLibraries(): string[] {
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'utf8');
    const files = new Set<string>();
    for (const line of maps.split('\n')) {
      const f = line.slice(line.indexOf('/'));
      if (line.includes('/') && /\.so(\.|$)/.test(f)) files.add(f.trim());
    }
    return [...files];
  } catch {
    return [];
  }
}

/** NVIDIA GPUs as nvidia-smi lists them (null without the tool): doctor compares them with what libtorch sees. */
export function nvidiaSmi(): string | null {
  const r = spawnSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10000 });
  return r.status === 0 ? r.stdout.trim() : null;
}
