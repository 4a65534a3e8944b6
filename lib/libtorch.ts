// Finding libtorch at run time and naming its flavour with a prebuild tag (no native code here:
// this runs before the addon can be loaded, and when it cannot be).
//
// A prebuilt rlora binary only loads against the libtorch it was linked with: same major.minor
// (libtorch's C++ ABI changes between minors), same compute flavour (CPU, a CUDA or ROCm build),
// same C++ standard-library ABI and the same library file names (Debian's versioned sonames
// `libtorch_cpu.so.1.13` or PyTorch's own `libtorch_cpu.so`). The tag says all four:
//
//   torch<MAJOR>_<MINOR>-<compute>-<linkage>
//     compute: cpu | cu<CUDA major><CUDA minor> (cu121) | cuda (version unknown) | rocm<X>_<Y>
//     linkage: deb      versioned sonames as Debian/Ubuntu package them (C++11 ABI)
//              cxx11    PyTorch's own builds with the C++11 ABI (libtorch cxx11-abi zips, pip >= 2.7)
//              precxx11 PyTorch's own builds with the old ABI (pip wheels before 2.7, plain zips)
//   e.g. torch1_13-cpu-deb (Debian 12's libtorch), torch2_5-cu121-precxx11, torch2_7-cpu-cxx11
//
// It has no dot, so it sits among node-gyp-build's dot-separated file tags:
// prebuilds/linux-x64/rlora.glibc.torch1_13-cpu-deb.node
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export type LibtorchSource = 'LIBTORCH' | 'Torch_DIR' | 'system' | 'python3';

export interface Libtorch {
  source: LibtorchSource;
  /** Where it was found, for people: `LIBTORCH=/opt/libtorch`, `python3 torch of /usr/bin/python3`, ... */
  where: string;
  /** Folder holding libtorch_cpu. */
  libDir: string;
  /** libc10, libtorch_cpu, libtorch: the files to load before a prebuild (paths as found in libDir). */
  libs: string[];
  /** Most precise version known: `2.5.1+cu121` from version.py or build-version, else `1.13` from the soname. */
  version: string | null;
  major: number | null;
  minor: number | null;
  compute: string | null;
  abi: 'cxx11' | 'precxx11' | null;
  sonames: 'versioned' | 'plain' | null;
  /** Prebuild tag (above); null when something needed for it is unknown (see problem). */
  tag: string | null;
  problem?: string;
  /** realpath of libtorch_cpu: the same library reached two ways is the same libtorch. */
  key: string;
}

export const TAG_PATTERN = /^torch(\d+)_(\d+)-([a-z0-9_]+)-(deb|cxx11|precxx11)$/;

export function makeTag(major: number, minor: number, compute: string, linkage: 'deb' | 'cxx11' | 'precxx11'): string {
  return `torch${major}_${minor}-${compute}-${linkage}`;
}

/** The tag in a prebuild file name (`rlora.glibc.torch1_13-cpu-deb.node`), or null. */
export function tagOfFile(file: string): string | null {
  const parts = path.basename(file).split('.');
  return parts.find((p) => TAG_PATTERN.test(p)) ?? null;
}

/** A tag in words: `libtorch 1.13, CPU, Debian packages`. */
export function describeTag(tag: string): string {
  const m = TAG_PATTERN.exec(tag);
  if (!m) return tag;
  const [, major, minor, compute, linkage] = m;
  const c = compute === 'cpu' ? 'CPU' : compute.startsWith('cu') && compute !== 'cuda' ? `CUDA ${compute.slice(2, -1)}.${compute.slice(-1)}` : compute.toUpperCase();
  const l = linkage === 'deb' ? 'Debian/Ubuntu packages' : linkage === 'cxx11' ? "PyTorch's build, C++11 ABI" : "PyTorch's build, pre-C++11 ABI";
  return `libtorch ${major}.${minor}, ${c}, ${l}`;
}

/** What a person installs to get the libtorch of a tag. */
export function installHint(tag: string): string {
  const m = TAG_PATTERN.exec(tag);
  if (!m) return '';
  const [, major, minor, compute, linkage] = m;
  if (linkage === 'deb') {
    // Debian 12 packages libtorch 1.13 (libtorch1.13), Debian 13 libtorch 2.6 (libtorch2.6, and the
    // CUDA build libtorch-cuda-2.6 in contrib)
    const release = `${major}.${minor}` === '1.13' ? 'Debian 12' : `${major}.${minor}` === '2.6' ? 'Debian 13' : 'Debian/Ubuntu';
    return compute === 'cpu'
      ? `sudo apt-get install -y libtorch${major}.${minor} libopenblas0-pthread   (${release}; or python3-torch, which brings it)`
      : `sudo apt-get install -y libtorch-cuda-${major}.${minor}   (${release}, contrib; or python3-torch-cuda)`;
  }
  const index = compute === 'cpu' || compute.startsWith('cu') || compute.startsWith('rocm') ? compute.replace('_', '.') : 'cpu';
  return `pip install "torch==${major}.${minor}.*" --index-url https://download.pytorch.org/whl/${index}`;
}

// ---------------------------------------------------------------------------------------------
// ELF: the dynamic section of a shared library (DT_NEEDED, DT_SONAME, RUNPATH) and its .dynstr,
// read with a few small reads (libtorch_cpu is 120 MB and more).

export interface ElfDynamic {
  needed: string[];
  soname: string | null;
  runpath: string | null;
  rpath: string | null;
  /** The dynamic string table: symbol names live here too. */
  dynstr: Buffer;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new Error('file ends early');
    done += n;
  }
  return buf;
}

/** Little-endian ELF (x86-64, aarch64) only; null for anything else or an unreadable file. */
export function readElfDynamic(file: string): ElfDynamic | null {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return null;
  }
  try {
    const h = readAt(fd, 0, 64);
    if (h.readUInt32BE(0) !== 0x7f454c46 || h[5] !== 1) return null;
    const is64 = h[4] === 2;
    const shoff = is64 ? Number(h.readBigUInt64LE(0x28)) : h.readUInt32LE(0x20);
    const shentsize = h.readUInt16LE(is64 ? 0x3a : 0x2e);
    const shnum = h.readUInt16LE(is64 ? 0x3c : 0x30);
    if (shoff === 0 || shnum === 0) return null;
    const sh = readAt(fd, shoff, shnum * shentsize);
    const section = (i: number) => {
      const o = i * shentsize;
      return {
        type: sh.readUInt32LE(o + 4),
        offset: is64 ? Number(sh.readBigUInt64LE(o + 0x18)) : sh.readUInt32LE(o + 0x10),
        size: is64 ? Number(sh.readBigUInt64LE(o + 0x20)) : sh.readUInt32LE(o + 0x14),
        link: sh.readUInt32LE(o + (is64 ? 0x28 : 0x18)),
      };
    };
    for (let i = 0; i < shnum; i++) {
      const s = section(i);
      if (s.type !== 6 /* SHT_DYNAMIC */) continue;
      const dyn = readAt(fd, s.offset, s.size);
      const str = section(s.link);
      const dynstr = readAt(fd, str.offset, str.size);
      const text = (off: number) => dynstr.toString('utf8', off, dynstr.indexOf(0, off));
      const out: ElfDynamic = { needed: [], soname: null, runpath: null, rpath: null, dynstr };
      const entry = is64 ? 16 : 8;
      for (let o = 0; o + entry <= dyn.length; o += entry) {
        const tag = is64 ? Number(dyn.readBigInt64LE(o)) : dyn.readInt32LE(o);
        const val = is64 ? Number(dyn.readBigUInt64LE(o + 8)) : dyn.readUInt32LE(o + 4);
        if (tag === 0) break;
        if (tag === 1) out.needed.push(text(val));
        else if (tag === 14) out.soname = text(val);
        else if (tag === 15) out.rpath = text(val);
        else if (tag === 29) out.runpath = text(val);
      }
      return out;
    }
    return null;
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Describing the libtorch in one folder

const LIB_PATTERNS: Record<string, RegExp> = {
  c10: /^libc10\.so(\.\d+)*$/,
  torch_cpu: /^libtorch_cpu\.so(\.\d+)*$/,
  torch: /^libtorch\.so(\.\d+)*$/,
};

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** The file of a library in a folder: the name equal to its soname when there is one, else the shortest. */
function findLib(dir: string, names: string[], pattern: RegExp): string | null {
  const found = names.filter((n) => pattern.test(n)).sort((a, b) => a.length - b.length);
  if (found.length === 0) return null;
  // Debian: libtorch_cpu.so (-dev only), libtorch_cpu.so.1.13 (the soname), libtorch_cpu.so.1.13.0
  return path.join(dir, found.find((n) => /\.so\.\d+\.\d+$/.test(n)) ?? found[0]);
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

interface VersionHints {
  version?: string | null;
  /** The version came from headers next to the libraries, not from the libraries themselves. */
  fromHeaders?: boolean;
  cuda?: string | null;
  hip?: string | null;
}

/** torch/version.py of a pip install: `__version__ = '2.5.1+cu121'`, `cuda: Optional[str] = '12.1'`. */
function parseVersionPy(text: string): VersionHints {
  const field = (name: string) => {
    const m = new RegExp(`^${name}(?:\\s*:[^=\\n]*)?\\s*=\\s*(?:'([^']*)'|"([^"]*)"|None)`, 'm').exec(text);
    return m ? (m[1] ?? m[2] ?? null) : null;
  };
  return { version: field('__version__'), cuda: field('cuda'), hip: field('hip') };
}

/** Hints found next to a lib folder: pip's torch/version.py, a libtorch zip's build-version. */
function hintsNear(libDir: string): VersionHints {
  const root = path.dirname(libDir);
  const py = readText(path.join(root, 'version.py'));
  if (py) return parseVersionPy(py);
  const bv = readText(path.join(root, 'build-version'));
  if (bv) {
    const version = bv.trim();
    const cu = /\+cu(\d+)/.exec(version);
    const rocm = /\+rocm([\d.]+)/.exec(version);
    return { version, cuda: cu ? `${cu[1].slice(0, -1)}.${cu[1].slice(-1)}` : null, hip: rocm ? rocm[1] : null };
  }
  // headers installed with the libraries (a -dev package): only where they belong to this folder
  const includes = [path.join(root, 'include')];
  if (libDir.startsWith('/usr/local/')) includes.push('/usr/local/include');
  else if (/^\/(usr\/)?lib/.test(libDir)) includes.push('/usr/include');
  for (const dir of includes) {
    const vh = readText(path.join(dir, 'torch/csrc/api/include/torch/version.h'));
    if (!vh) continue;
    const num = (n: string) => new RegExp(`#define TORCH_VERSION_${n} (\\d+)`).exec(vh)?.[1];
    const [ma, mi, pa] = [num('MAJOR'), num('MINOR'), num('PATCH')];
    if (ma && mi) return { version: `${ma}.${mi}${pa ? '.' + pa : ''}`, fromHeaders: true };
  }
  return {};
}

/** Describes the libtorch whose libraries are in libDir; null when libDir has no libtorch_cpu. */
export function describeLibDir(libDir: string, source: LibtorchSource, where: string, hints: VersionHints = {}): Libtorch | null {
  const names = listDir(libDir);
  const cpu = findLib(libDir, names, LIB_PATTERNS.torch_cpu);
  if (!cpu) return null;
  const c10 = findLib(libDir, names, LIB_PATTERNS.c10);
  const torch = findLib(libDir, names, LIB_PATTERNS.torch);
  let key = cpu;
  try {
    key = fs.realpathSync(cpu);
  } catch {
    /* a dangling link: described as a problem below */
  }
  const lt: Libtorch = {
    source, where, libDir, libs: [c10, cpu, torch].filter((x): x is string => x !== null),
    version: null, major: null, minor: null, compute: null, abi: null, sonames: null, tag: null, key,
  };
  const elf = readElfDynamic(cpu);
  if (!elf) {
    lt.problem = `${cpu} is not a readable shared library`;
    return lt;
  }
  if (!c10 || !torch) {
    lt.problem = `${libDir} has libtorch_cpu but no ${!c10 ? 'libc10' : 'libtorch'}`;
    return lt;
  }
  const soname = elf.soname ?? path.basename(cpu);
  const versioned = /^libtorch_cpu\.so\.(\d+)\.(\d+)/.exec(soname);
  lt.sonames = versioned ? 'versioned' : 'plain';

  const given = Object.fromEntries(Object.entries(hints).filter(([, v]) => v != null)) as VersionHints;
  const h: VersionHints = given.version ? given : { ...hintsNear(libDir), ...given };
  const sonameVersion = versioned ? `${versioned[1]}.${versioned[2]}` : null;
  // headers of another version than the libraries' sonames are not these libraries' headers
  const headersAgree = !h.fromHeaders || !sonameVersion || h.version?.startsWith(sonameVersion + '.');
  lt.version = (headersAgree ? h.version : null) ?? sonameVersion;
  const mm = /^(\d+)\.(\d+)/.exec(lt.version ?? '');
  if (mm) [lt.major, lt.minor] = [Number(mm[1]), Number(mm[2])];

  if (h.cuda) lt.compute = 'cu' + h.cuda.split('.').slice(0, 2).join('');
  else if (h.hip) lt.compute = 'rocm' + h.hip.split('.').slice(0, 2).join('_');
  else if (names.some((n) => /^libtorch_cuda\.so/.test(n))) lt.compute = 'cuda';
  else if (names.some((n) => /^libtorch_hip\.so/.test(n))) lt.compute = 'rocm';
  else lt.compute = 'cpu';

  const c10elf = readElfDynamic(c10);
  if (c10elf) lt.abi = c10elf.dynstr.includes('St7__cxx11') ? 'cxx11' : 'precxx11';

  if (lt.major === null || lt.minor === null) lt.problem = 'its version is unknown';
  else if (!lt.abi) lt.problem = `${c10} is not a readable shared library`;
  else if (lt.sonames === 'versioned' && lt.abi !== 'cxx11') lt.problem = 'versioned sonames with the pre-C++11 ABI: no prebuild kind for that';
  else lt.tag = makeTag(lt.major, lt.minor, lt.compute, lt.sonames === 'versioned' ? 'deb' : lt.abi);
  return lt;
}

// ---------------------------------------------------------------------------------------------
// Where libtorch can be, in the order rlora looks at run time

function multiarch(): string[] {
  const a = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : process.arch;
  return [`${a}-linux-gnu`, `${a}-linux-musl`];
}

/** Library folders the dynamic loader searches (LD_LIBRARY_PATH first), as far as a file listing can tell. */
export function systemLibDirs(): string[] {
  const env = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  const std = ['/usr/local/lib', ...multiarch().flatMap((m) => [`/usr/lib/${m}`, `/lib/${m}`]), '/usr/lib64', '/lib64', '/usr/lib', '/lib'];
  return [...env, ...std];
}

/** Why a folder named by an environment variable cannot be looked in, or null when it can. */
function folderProblem(dir: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'no such folder' : `cannot be read (${code ?? (e as Error).message})`;
  }
  return st.isDirectory() ? null : 'not a folder';
}

/** `LIBTORCH=value`, with the absolute path when the value is relative. */
function whereOf(name: string, value: string, dir: string): string {
  return `${name}=${value}${dir === value ? '' : ` (${dir})`}`;
}

function fromLIBTORCH(value: string): Libtorch | Unusable {
  const dir = path.resolve(value);
  const where = whereOf('LIBTORCH', value, dir);
  const bad = folderProblem(dir);
  if (bad) return { source: 'LIBTORCH', where, problem: bad };
  const lt = describeLibDir(path.join(dir, 'lib'), 'LIBTORCH', where);
  if (lt) return lt;
  // LIBTORCH set to the lib folder itself, or to libtorch's parent (unzip -d /opt puts it in /opt/libtorch)
  const hint = describeLibDir(dir, 'LIBTORCH', where)
    ? `; it holds libtorch_cpu.so itself: set LIBTORCH=${path.dirname(dir)}`
    : describeLibDir(path.join(dir, 'libtorch', 'lib'), 'LIBTORCH', where)
      ? `; set LIBTORCH=${path.join(dir, 'libtorch')}`
      : '';
  return { source: 'LIBTORCH', where, problem: `holds no lib/libtorch_cpu.so${hint}` };
}

function fromTorchDir(value: string): Libtorch | Unusable {
  const dir = path.resolve(value);
  const where = whereOf('Torch_DIR', value, dir);
  const bad = folderProblem(dir);
  if (bad) return { source: 'Torch_DIR', where, problem: bad };
  // a libtorch zip or pip torch: <root>/share/cmake/Torch -> <root>/lib; Debian: <libdir>/cmake/Torch -> <libdir>
  const libDirs = [path.resolve(dir, '../../../lib'), path.resolve(dir, '../..')];
  for (const libDir of libDirs) {
    const lt = describeLibDir(libDir, 'Torch_DIR', where);
    if (lt) return lt;
  }
  const config = fs.existsSync(path.join(dir, 'TorchConfig.cmake')) ? '' : 'holds no TorchConfig.cmake, and ';
  return { source: 'Torch_DIR', where, problem: `${config}no libtorch_cpu.so in ${libDirs.join(' or ')} (Torch_DIR is the folder of TorchConfig.cmake, e.g. <libtorch>/share/cmake/Torch)` };
}

/**
 * What to do about a LIBTORCH or Torch_DIR that names no usable libtorch (a line for doctor and
 * for the loader's error), or null for other sources.
 */
export function envVarAdvice(lt: Unusable): string | null {
  if (lt.source !== 'LIBTORCH' && lt.source !== 'Torch_DIR') return null;
  const fix = lt.source === 'LIBTORCH' ? 'set it to an unpacked libtorch (the folder holding lib/libtorch_cpu.so)' : 'set it to the folder of TorchConfig.cmake';
  return `${lt.source} is set, so neither rlora nor \`rlora build\` looks for libtorch anywhere else: ${fix}, or unset it`;
}

function fromSystem(): Libtorch | null {
  const seen = new Set<string>();
  for (const dir of systemLibDirs()) {
    let real: string;
    try {
      real = fs.realpathSync(dir);
    } catch {
      continue;
    }
    if (seen.has(real)) continue;
    seen.add(real);
    const fromEnv = (process.env.LD_LIBRARY_PATH ?? '').split(':').includes(dir);
    const lt = describeLibDir(dir, 'system', `${fromEnv ? 'LD_LIBRARY_PATH' : 'system'} (${dir})`);
    if (lt) return lt;
  }
  return null;
}

/** python3 on PATH, then the system's: the torch package folder, found without importing torch. */
function fromPython(): Libtorch[] {
  const script =
    'import importlib.util as u, json, sys\n' +
    "s = u.find_spec('torch')\n" +
    "print(json.dumps({'exe': sys.executable, 'dir': list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else None}))";
  const out: Libtorch[] = [];
  const seen = new Set<string>();
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', script], { encoding: 'utf8', timeout: 15000, stdio: ['ignore', 'pipe', 'ignore'] });
    if (r.status !== 0 || !r.stdout) continue;
    let info: { exe: string; dir: string | null };
    try {
      info = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
    } catch {
      continue;
    }
    if (!info.dir || seen.has(info.dir)) continue;
    seen.add(info.dir);
    const hints = parseVersionPy(readText(path.join(info.dir, 'version.py')) ?? '');
    const lt = describeLibDir(path.join(info.dir, 'lib'), 'python3', `python3 torch of ${info.exe} (${info.dir})`, hints);
    if (lt) out.push(lt);
  }
  return out;
}

export interface Unusable {
  source: LibtorchSource;
  where: string;
  problem: string;
}

/**
 * The libtorch installs that can be used at run time, in rlora's order, lazily (python3 is only
 * asked when the earlier ones were not enough). LIBTORCH, then Torch_DIR, when set, are the only
 * ones looked at, as when building. Otherwise the system's, then python3's torch package.
 * Unusable ones (LIBTORCH pointing nowhere) are yielded too, with their problem.
 */
export function* findLibtorch(): Generator<Libtorch | Unusable> {
  if (process.env.LIBTORCH) {
    yield fromLIBTORCH(process.env.LIBTORCH);
    return;
  }
  if (process.env.Torch_DIR) {
    yield fromTorchDir(process.env.Torch_DIR);
    return;
  }
  const seen = new Set<string>();
  const sys = fromSystem();
  if (sys) {
    seen.add(sys.key);
    yield sys;
  }
  for (const lt of fromPython()) {
    if (seen.has(lt.key)) continue; // Debian's python3-torch links the system's libraries
    seen.add(lt.key);
    yield lt;
  }
}

export function isUsable(x: Libtorch | Unusable): x is Libtorch {
  return 'libDir' in x;
}

/** The libtorch a CMake build linked, from its CMakeCache.txt (TORCH_LIBRARY): the tag of that build. */
export function libtorchOfBuild(buildDir: string): Libtorch | null {
  const cache = readText(path.join(buildDir, 'CMakeCache.txt'));
  const m = cache && /^TORCH_LIBRARY:FILEPATH=(.+)$/m.exec(cache);
  if (!m) return null;
  let lib: string;
  try {
    lib = fs.realpathSync(m[1].trim());
  } catch {
    return null;
  }
  return describeLibDir(path.dirname(lib), 'system', `the build in ${buildDir}`);
}
