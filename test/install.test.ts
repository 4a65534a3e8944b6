// Installing the packed package where there is no compiler: `npm pack`, then `npm install` of the
// tarball into an empty folder with cmake, c++ and g++ hidden from PATH, and training through it.
//
// The prebuild packed is, in this order: a copy of the development build (build/Release) when it
// links the libtorch found at run time, a matching file of prebuilds/, or one built now with
// scripts/prebuild.ts (about 4 minutes on 2 cores; later runs are incremental).
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { findLibtorch, isUsable, Libtorch, libtorchOfBuild, readElfDynamic } from '../lib/libtorch';
import { pack, Packed, stagePackage } from '../scripts/package';
import { makePrebuild, REPO } from '../scripts/prebuild';

jest.setTimeout(15 * 60 * 1000);

const PLATFORM = `${process.platform}-${process.arch}`;
const HIDDEN = ['cmake', 'c++', 'g++', 'gcc', 'cc', 'clang++'];

// A mount namespace can mask the system's libtorch (root on Linux with unshare): then the
// LIBTORCH and python3-torch ways of finding it are tested for real.
const which = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim();
const [UNSHARE, MOUNT] = [which('unshare'), which('mount')];
const canMask = process.platform === 'linux' && !!UNSHARE && !!MOUNT && spawnSync(UNSHARE, ['-m', '--propagation', 'private', 'true']).status === 0;

// the libtorch found at run time, as the installed package will find it
const found = [...findLibtorch()].find((l): l is Libtorch => isUsable(l) && l.tag !== null);
if (!found) throw new Error('no libtorch with a known tag on this machine: the install test needs one (see `npx tsx lib/cli.ts doctor`)');
const libtorch: Libtorch = found;
const tag: string = found.tag!;

let tmp: string;
let app: string;
let env: NodeJS.ProcessEnv;
let packed: Packed;
let prebuildName: string;
let decoyName: string;
let prebuildSource: string;

function sh(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd: options.cwd ?? app, env: options.env ?? env, encoding: 'utf8', timeout: options.timeout ?? 120_000 });
}

function expectOk(r: SpawnSyncReturns<string>): void {
  if (r.status !== 0) throw new Error(`exit ${r.status ?? r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
}

/** The prebuild to pack for the libtorch found at run time, and where it came from. */
function prebuildFor(lt: Libtorch): { file: string; how: string } {
  const dev = path.join(REPO, 'build', 'Release', 'rlora.node');
  const devTorch = libtorchOfBuild(path.join(REPO, 'build'));
  if (fs.existsSync(dev) && devTorch?.tag === lt.tag && readElfDynamic(dev)) {
    const copy = path.join(tmp, 'dev-build', PLATFORM, `rlora.glibc.${lt.tag}.node`);
    fs.mkdirSync(path.dirname(copy), { recursive: true });
    fs.copyFileSync(dev, copy);
    return { file: copy, how: 'copy of build/Release/rlora.node' };
  }
  const dir = path.join(REPO, 'prebuilds', PLATFORM);
  const existing = fs.existsSync(dir) ? fs.readdirSync(dir).find((n) => n.endsWith(`.${lt.tag}.node`)) : undefined;
  if (existing) return { file: path.join(dir, existing), how: `prebuilds/${PLATFORM}/${existing}` };
  const made = makePrebuild({ out: path.join(tmp, 'made'), quiet: true });
  return { file: made.file, how: 'built now by scripts/prebuild.ts' };
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-install-'));

  const pre = prebuildFor(libtorch);
  prebuildName = path.basename(pre.file);
  prebuildSource = pre.how;
  const npmCache = spawnSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).stdout.trim();
  const npmCli = fs.realpathSync(which('npm'));

  // beside it, a prebuild of the other Debian libtorch (a copy under that tag), as the published
  // package carries both: the loader must pick the one whose tag matches the libtorch found
  decoyName = prebuildName.replace(tag, tag === 'torch1_13-cpu-deb' ? 'torch2_6-cpu-deb' : 'torch1_13-cpu-deb');
  const decoy = path.join(tmp, 'decoy', PLATFORM, decoyName);
  fs.mkdirSync(path.dirname(decoy), { recursive: true });
  fs.copyFileSync(pre.file, decoy);
  stagePackage(path.join(tmp, 'stage'), [pre.file, decoy]);
  packed = pack(path.join(tmp, 'stage'), tmp);

  // a PATH with node, npm, npx and sh (npx runs bins through it) only
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(npmCli, path.join(bin, 'npm'));
  fs.symlinkSync(path.join(path.dirname(npmCli), 'npx-cli.js'), path.join(bin, 'npx'));
  env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && !['LIBTORCH', 'Torch_DIR', 'RLORA_BINARY', 'NODE_OPTIONS', 'INIT_CWD', 'PYTHONPATH'].includes(k)));
  Object.assign(env, { PATH: bin, npm_config_cache: npmCache, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' });

  app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'rlora-install-test', version: '1.0.0', private: true }));
  fs.writeFileSync(path.join(app, 'train.js'), TRAIN_JS);
  expectOk(sh('npm', ['install', packed.file, '--prefer-offline', '--loglevel=error']));
});

afterAll(() => {
  if (tmp && !process.env.RLORA_KEEP_INSTALL_TEST) fs.rmSync(tmp, { recursive: true, force: true });
});

// Trains one R-LoRA layer on y = (W0 + U V) x through the installed package; prints a JSON line.
const TRAIN_JS = `
const rlora = require('rlora');
const { loadReport } = require('rlora/dist/loader');
const { MultiHeadLoraLinear, Tensor, AdamW, fitStep } = rlora;
let s = 12345;
const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 2;
const IN = 16, OUT = 8, N = 64, STEPS = 30;
const W0 = Float32Array.from({ length: OUT * IN }, rnd);
const U = Float32Array.from({ length: OUT * 2 }, rnd), V = Float32Array.from({ length: 2 * IN }, rnd);
const X = Float32Array.from({ length: N * IN }, rnd), Y = new Float32Array(N * OUT);
for (let n = 0; n < N; n++) for (let o = 0; o < OUT; o++) {
  let y = 0;
  for (let i = 0; i < IN; i++) {
    let w = W0[o * IN + i];
    for (let k = 0; k < 2; k++) w += 0.5 * U[o * 2 + k] * V[k * IN + i];
    y += w * X[n * IN + i];
  }
  Y[n * OUT + o] = y;
}
(async () => {
  const layer = new MultiHeadLoraLinear({ weight: Tensor.from(W0, [OUT, IN]) }, { method: 'rlora', rank: 4, heads: 3, dropout: 0, seed: 1 });
  const x = Tensor.from(X, [N, IN]), target = Tensor.from(Y, [N, OUT]);
  const opt = new AdamW([layer], { lr: 0.05, weightDecay: 0 });
  const losses = [];
  for (let step = 0; step < STEPS; step++) losses.push((await fitStep(layer, x, target, opt)).loss);
  const r = loadReport();
  console.log(JSON.stringify({ losses, kind: r.loaded.kind, file: r.loaded.file, libtorch: r.loaded.libtorch ? r.loaded.libtorch.source : null, torch: rlora.buildInfo.torchVersion }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

function trained(r: SpawnSyncReturns<string>): { losses: number[]; kind: string; file: string; libtorch: string | null } {
  expectOk(r);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
}

test('the tarball holds what users need and nothing else', () => {
  const files = packed.files.map((f) => f.path);
  for (const f of ['package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'dist/loader.js', 'CMakeLists.txt', `prebuilds/${PLATFORM}/${prebuildName}`, `prebuilds/${PLATFORM}/${decoyName}`]) expect(files).toContain(f);
  expect(files.some((f) => f.startsWith('native/') && f.endsWith('.cpp'))).toBe(true);
  expect(files.some((f) => f.startsWith('binding/') && f.endsWith('.cpp'))).toBe(true);
  const unwanted = files.filter((f) => /^(build|test|lib|scripts|benchmarks|examples|node_modules|\.cache|\.ci)\//.test(f) || /\.(map|gch|tgz|o)$/.test(f) || f.startsWith('build-'));
  expect(unwanted).toEqual([]);
  // the development build is about 0.5 MB; the sources and compiled TypeScript well under 1 MB
  expect(packed.size).toBeLessThan(5 << 20);
  console.log(`tarball ${path.basename(packed.file)}: ${(packed.size / 1024).toFixed(0)} kB packed, ${(packed.unpackedSize / 1024).toFixed(0)} kB unpacked, ${packed.entryCount} files; prebuild: ${prebuildSource}`);
});

test('the installed package.json has no scripts (nothing for npm to run or ask about) and no devDependencies', () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(app, 'node_modules', 'rlora', 'package.json'), 'utf8'));
  expect(manifest.scripts).toBeUndefined();
  expect(manifest.devDependencies).toBeUndefined();
  expect(manifest.bin).toEqual({ rlora: 'dist/cli.js' });
  // only `rlora build` needs these
  expect(Object.keys(manifest.optionalDependencies ?? {}).sort()).toEqual(['cmake-js', 'node-addon-api']);
  expect(Object.keys(manifest.dependencies)).not.toContain('cmake-js');
  expect(Object.keys(manifest.dependencies)).not.toContain('node-addon-api');
  const lock = JSON.parse(fs.readFileSync(path.join(app, 'package-lock.json'), 'utf8'));
  expect(lock.packages['node_modules/rlora'].hasInstallScript).toBeUndefined();
});

test('cmake and the C++ compilers are not on PATH in the install folder', () => {
  for (const tool of HIDDEN) expect(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env }).status).not.toBe(0);
});

test('the installed package trains an R-LoRA layer with its prebuild', () => {
  const out = trained(sh('node', ['train.js']));
  expect(out.kind).toBe('prebuild');
  expect(path.basename(out.file)).toBe(prebuildName);
  expect(out.file.startsWith(path.join(app, 'node_modules', 'rlora', 'prebuilds'))).toBe(true);
  expect(out.losses).toHaveLength(30);
  expect(out.losses.every(Number.isFinite)).toBe(true);
  expect(out.losses[29]).toBeLessThan(out.losses[0] * 0.5);
});

test('npx rlora --help, doctor', () => {
  const help = sh('npx', ['--no-install', 'rlora', '--help']);
  expectOk(help);
  expect(help.stdout).toMatch(/^\s+build\s/m);
  expect(help.stdout).toMatch(/^\s+doctor\s/m);
  const doctor = sh('npx', ['--no-install', 'rlora', 'doctor']);
  expectOk(doctor);
  expect(doctor.stdout).toContain(prebuildName);
  expect(doctor.stdout).toMatch(/^loaded\s+prebuild /m);
  expect(doctor.stdout).toContain(tag);
  expect(doctor.stdout).toMatch(/^BLAS\s/m);
  expect(doctor.stdout).toMatch(/^threads\s/m);
  const json = JSON.parse(expectJson(sh('npx', ['--no-install', 'rlora', 'doctor', '--json'])));
  expect(json.loaded.kind).toBe('prebuild');
  expect(json.error).toBeNull();
});

function expectJson(r: SpawnSyncReturns<string>): string {
  expectOk(r);
  return r.stdout;
}

describe('without a matching binary and without a compiler', () => {
  const dir = () => path.join(app, 'node_modules', 'rlora', 'prebuilds', PLATFORM);
  const other = () => prebuildName.replace(tag, 'torch9_9-cpu-deb');
  beforeAll(() => fs.renameSync(path.join(dir(), prebuildName), path.join(dir(), other())));
  afterAll(() => fs.renameSync(path.join(dir(), other()), path.join(dir(), prebuildName)));

  test("require('rlora') says what to install or run, without a loader stack trace", () => {
    const r = sh('node', ['-e', "require('rlora')"]);
    expect(r.status).not.toBe(0);
    const err = r.stderr;
    expect(err).toContain('rlora: no native binary could be loaded');
    expect(err).toContain('torch9_9-cpu-deb'); // what the package has
    expect(err).toContain(tag); // what this machine has
    expect(err).toContain('npx rlora build');
    expect(err).toContain('sudo apt-get install -y libtorch9.9');
    expect(err).toContain('sudo apt-get install -y cmake g++ libtorch-dev');
    expect(err).toMatch(/cmake and a C\+\+ compiler .* are not on PATH here/);
    // at most the one frame that required rlora, none of the loader's or Node's
    expect((err.match(/^\s+at /gm) ?? []).length).toBeLessThanOrEqual(1);
    expect(err).not.toMatch(/^\s+at .*(node_modules[\\/]rlora|node:internal)/m);
    expect(err).not.toMatch(/node-gyp-build|Cannot find module|No native build/);
  });

  test('npx rlora doctor prints the same and exits 1; npx rlora build says what is missing', () => {
    const d = sh('npx', ['--no-install', 'rlora', 'doctor']);
    expect(d.status).toBe(1);
    expect(d.stdout).toContain('npx rlora build');
    expect(d.stdout).toMatch(/^loaded\s+nothing/m);
    const b = sh('npx', ['--no-install', 'rlora', 'build']);
    expect(b.status).toBe(1);
    expect(b.stderr).toContain('cmake and a C++ compiler');
    expect(b.stderr).toContain('sudo apt-get install -y cmake g++ libtorch-dev');
    expect(b.stderr).not.toContain('npm install --no-save');
  });

  test('npx rlora build without the optional cmake-js: says what to install', () => {
    const dir = path.join(app, 'node_modules', 'cmake-js');
    fs.renameSync(dir, `${dir}.hidden`);
    try {
      const b = sh('npx', ['--no-install', 'rlora', 'build']);
      expect(b.status).toBe(1);
      expect(b.stderr).toContain('the npm package cmake-js is not installed');
      expect(b.stderr).toContain('npm install --no-save cmake-js node-addon-api');
      expect(b.stderr).toContain('cmake and a C++ compiler'); // still named: both are missing here
    } finally {
      fs.renameSync(`${dir}.hidden`, dir);
    }
  });
});

// With the system's libtorch masked, the libraries are only in a folder no loader path names:
// rlora finds them through LIBTORCH or python3's torch package and loads them before the prebuild.
(canMask && libtorch.source === 'system' ? describe : describe.skip)('libtorch outside the loader paths', () => {
  let masked: string[];
  let script: string;
  beforeAll(() => {
    const names = ['c10', 'torch_cpu', 'torch'];
    masked = fs.readdirSync(libtorch.libDir).filter((n) => names.some((b) => new RegExp(`^lib${b}\\.so`).test(n))).map((n) => path.join(libtorch.libDir, n));
    // a libtorch folder (LIBTORCH) and a python torch package (its lib/) holding the same files
    const lib = path.join(tmp, 'libtorch', 'lib');
    fs.mkdirSync(lib, { recursive: true });
    for (const f of libtorch.libs) {
      const dest = path.join(lib, path.basename(f));
      try {
        fs.linkSync(fs.realpathSync(f), dest);
      } catch {
        fs.copyFileSync(f, dest);
      }
    }
    const torch = path.join(tmp, 'site', 'torch');
    fs.mkdirSync(torch, { recursive: true });
    fs.writeFileSync(path.join(torch, '__init__.py'), '');
    fs.writeFileSync(path.join(torch, 'version.py'), `__version__ = '${libtorch.major}.${libtorch.minor}.0'\ncuda = None\n`);
    fs.symlinkSync(lib, path.join(torch, 'lib'));
    fs.writeFileSync(path.join(tmp, 'empty'), '');
    script = path.join(tmp, 'masked.sh');
    fs.writeFileSync(script, ['set -e', ...masked.map((f) => `${MOUNT} --bind ${tmp}/empty ${f}`), 'exec "$@"'].join('\n') + '\n');
  });

  const inMask = (extra: NodeJS.ProcessEnv, args: string[]) =>
    sh(UNSHARE, ['-m', '--propagation', 'private', '/bin/sh', script, process.execPath, ...args], { env: { ...env, ...extra, PATH: env.PATH } });

  test('masked, with nothing pointing at libtorch: the message', () => {
    const r = inMask({}, ['-e', "require('rlora')"]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('rlora: no native binary could be loaded');
    expect(r.stderr).toContain('npx rlora build');
  });

  test('LIBTORCH=<folder>: its libraries are loaded, then the prebuild, and it trains', () => {
    const out = trained(inMask({ LIBTORCH: path.join(tmp, 'libtorch') }, ['train.js']));
    expect(out.kind).toBe('prebuild');
    expect(out.libtorch).toBe('LIBTORCH');
    expect(out.losses[29]).toBeLessThan(out.losses[0] * 0.5);
  });

  test("python3's torch package: its lib folder is found and loaded, and it trains", () => {
    if (!fs.existsSync('/usr/bin/python3')) return;
    const out = trained(inMask({ PYTHONPATH: path.join(tmp, 'site') }, ['train.js']));
    expect(out.kind).toBe('prebuild');
    expect(out.libtorch).toBe('python3');
    expect(out.losses[29]).toBeLessThan(out.losses[0] * 0.5);
  });
});
