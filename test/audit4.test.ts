// The fourth adversarial audit (issue 33): each case here lost data, hung, answered wrongly or
// printed an unclear error before its fix, and is now refused with an error that names what is
// wrong (or handled).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as url from 'url';

import { Adapter, ByteTokenizer, Model, MultiTaskDataset, Trainer } from '../lib';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-audit4-');
const tok = new ByteTokenizer();
const rows = (tasks: string[], n = 4): { task: string; prompt: string; response: string }[] => tasks.flatMap((t) => Array.from({ length: n }, (_, i) => ({ task: t, prompt: `p${i}`, response: `r${i}` })));

/** A folder holding one file, which a save through a link would have deleted. */
function victim(name: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'precious.txt'), 'keep me');
  return dir;
}

describe('data loss', () => {
  it('a link planted at checkpoint-<step> while a run trains is refused, naming it; the folder it names is untouched', async () => {
    const m = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const a = Adapter.attach(m, { rank: 2, heads: 2, targetModules: ['q_proj'] });
    const ds = MultiTaskDataset.fromArray(rows(['a']), { tokenizer: tok, maxLength: 16 });
    const out = path.join(tmp, 'run-link');
    const target = victim('victim-1');
    const link = path.join(out, 'checkpoint-1');
    const t = new Trainer(m, a, { maxSteps: 2, saveEvery: 1, batchSize: 2, outputDir: out, progress: false });
    await expect(t.fit(ds, { onStep: (r) => r.step === 1 && fs.symlinkSync(target, link) })).rejects.toThrow(`${link} is a link (to ${target}); rlora writes this name itself and never follows a link there: remove the link`);
    expect(fs.readdirSync(target)).toEqual(['precious.txt']);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
  });
});

describe('rlora merge --out', () => {
  jest.setTimeout(60_000);
  const CLI = path.join(__dirname, '..', 'lib', 'cli.ts');
  // tsx by its absolute address: the command runs in a folder outside the repository
  const tsx = url.pathToFileURL(require.resolve('tsx')).href;
  const rlora = (args: string[], cwd?: string) => spawnSync(process.execPath, ['--import', tsx, CLI, ...args], { encoding: 'utf8', cwd });

  it('a link to the base model\'s folder is the base\'s folder: refused with or without --overwrite, never offering it; "." is refused in one line', async () => {
    const base = path.join(tmp, 'merge-base'), adapterDir = path.join(tmp, 'merge-lora'), link = path.join(tmp, 'merge-link');
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 2 });
    model.save(base);
    Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['q_proj'], init: { b: 'unit', offset: false }, seed: 5 }).save(adapterDir);
    fs.symlinkSync(base, link);
    const weights = fs.readFileSync(path.join(base, 'model.safetensors'));
    for (const extra of [[], ['--overwrite']]) {
      const r = rlora(['merge', '--model', base, '--adapter', adapterDir, '--out', link, ...extra]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(`--out ${link} is the base model's folder (${base}): write the merged model elsewhere`);
      expect(r.stderr).not.toContain('--overwrite');
    }
    expect(fs.readFileSync(path.join(base, 'model.safetensors')).equals(weights)).toBe(true);
    // the current folder ("EBUSY rename '.'")
    const here = path.join(tmp, 'merge-here');
    fs.mkdirSync(here);
    const dot = rlora(['merge', '--model', base, '--adapter', adapterDir, '--out', '.'], here);
    expect(dot.status).not.toBe(0);
    expect(dot.stderr.trim()).toBe('rlora merge: --out . is the current folder or holds it: rlora replaces the whole --out folder, so name a folder of its own (e.g. --out ./merged)');
  });
});
