// npm run package: the tarball users install (rlora-<version>.tgz in the repository root).
//
//   1. the prebuild for this machine's libtorch (scripts/prebuild.ts; incremental)
//   2. a staging copy in .cache/package: the repository's files (git ls-files), TypeScript
//      compiled there, every prebuild of prebuilds/, and the package.json users get: without
//      `scripts` (npm would list rlora's `prepare` as an install script to approve) and without
//      devDependencies
//   3. npm pack --ignore-scripts of that copy ("files" in package.json decides what goes in)
// Nothing is written to build/, dist/ or the sources, so a development build is never touched.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { makePrebuild, REPO } from './prebuild';

/** Files of the working tree that git would commit (tracked, or untracked and not ignored). */
export function sourceFiles(repo = REPO): string[] {
  try {
    const out = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repo, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
    return out.split('\0').filter((f) => f && fs.existsSync(path.join(repo, f)));
  } catch {
    // not a git checkout: everything but what .gitignore keeps out
    const skip = new Set(['node_modules', 'build', 'dist', 'prebuilds', '.cache', '.git']);
    const walk = (rel: string): string[] =>
      fs.readdirSync(path.join(repo, rel), { withFileTypes: true }).flatMap((e) => {
        const r = path.join(rel, e.name);
        if (skip.has(e.name) || /\.(node|gch|tgz)$/.test(e.name) || e.name.startsWith('build-')) return [];
        return e.isDirectory() ? walk(r) : e.isFile() ? [r] : [];
      });
    return walk('');
  }
}

/** The package.json that is published: the repository's, less what only its development uses. */
export function publishedManifest(manifest: Record<string, unknown>): Record<string, unknown> {
  const published = { ...manifest };
  delete published.scripts;
  delete published.devDependencies;
  return published;
}

/** Lays out the package to pack in `stage`: sources, compiled TypeScript, the given prebuilds. */
export function stagePackage(stage: string, prebuilds: string[], repo = REPO): void {
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  for (const f of sourceFiles(repo)) {
    fs.mkdirSync(path.dirname(path.join(stage, f)), { recursive: true });
    fs.copyFileSync(path.join(repo, f), path.join(stage, f));
    fs.chmodSync(path.join(stage, f), fs.statSync(path.join(repo, f)).mode);
  }
  const manifest = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(publishedManifest(manifest), null, 2) + '\n');
  const tsc = path.join(path.dirname(require.resolve('typescript/package.json', { paths: [repo] })), 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(repo, 'tsconfig.build.json'), '--outDir', path.join(stage, 'dist')], { cwd: repo, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tsc failed:\n${r.stdout}${r.stderr}`);
  fs.chmodSync(path.join(stage, 'dist', 'cli.js'), 0o755);
  for (const p of prebuilds) {
    const dest = path.join(stage, 'prebuilds', path.basename(path.dirname(p)), path.basename(p));
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.copyFileSync(p, dest);
  }
}

export interface Packed {
  file: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string; size: number }[];
}

/** npm pack of a staged package into destDir. */
export function pack(stage: string, destDir: string, env: NodeJS.ProcessEnv = process.env): Packed {
  fs.mkdirSync(destDir, { recursive: true });
  const r = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', destDir], { cwd: stage, encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`npm pack failed:\n${r.stdout}${r.stderr}`);
  const [info] = JSON.parse(r.stdout) as { filename: string; size: number; unpackedSize: number; entryCount: number; files: { path: string; size: number }[] }[];
  return { file: path.join(destDir, info.filename), size: info.size, unpackedSize: info.unpackedSize, entryCount: info.entryCount, files: info.files };
}

/** Every prebuild in the repository's prebuilds/ (all platforms). */
export function repoPrebuilds(repo = REPO): string[] {
  const root = path.join(repo, 'prebuilds');
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((d) => {
    const dir = path.join(root, d);
    return fs.statSync(dir).isDirectory() ? fs.readdirSync(dir).filter((n) => n.endsWith('.node')).map((n) => path.join(dir, n)) : [];
  });
}

if (require.main === module) {
  try {
    const made = makePrebuild({ clean: process.argv.includes('--clean') });
    console.log(`prebuild ${path.relative(REPO, made.file)} (${made.tag})`);
    const prebuilds = repoPrebuilds();
    const stage = path.join(REPO, '.cache', 'package', 'rlora');
    stagePackage(stage, prebuilds);
    const p = pack(stage, REPO);
    console.log(`${path.relative(process.cwd(), p.file)}: ${(p.size / 1024).toFixed(0)} kB, ${p.entryCount} files; prebuilds: ${prebuilds.map((f) => path.basename(f)).join(', ')}`);
  } catch (e) {
    console.error(`package: ${e instanceof Error ? e.message : e}`);
    process.exitCode = 1;
  }
}
