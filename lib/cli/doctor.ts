// rlora doctor: prints what rlora finds (Node, the libtorch installs and their prebuild tags, the
// package's prebuilds and local build, which binary loads and why, CUDA, BLAS, threads, the Hugging
// Face cache), as text or one JSON object. Works when the addon cannot be loaded: it is required
// inside run(), and its failure is reported.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { hubCacheDir, hubEndpoint, hubToken, isOffline } from '../hub/cache';
import { envVarAdvice, isUsable, Libtorch, readElfDynamic, Unusable } from '../libtorch';
import { inspectLibtorch, listLocalBuilds, listPrebuilds, loadReport, mappedLibraries, nvidiaSmi, PACKAGE_ROOT, RloraLoadError } from '../loader';
import { parseArgs, Subcommand, UsageError } from './args';

/** The installed package's version (its package.json), or "unknown". */
export function version(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

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

export const doctorCommand: Subcommand = {
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
    let native: typeof import('../native')['native'] | null = null;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      native = (require('../native') as typeof import('../native')).native;
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

