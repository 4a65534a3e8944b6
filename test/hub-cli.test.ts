// The CLI with Hugging Face Hub ids, against the stand-in Hub of test/helpers/hub-server.ts:
// `rlora download` prints the snapshot folder (stderr: a line per file with bytes and rate), asks
// the server again on a second run but fetches nothing, refuses offline what the cache lacks;
// `rlora doctor` shows the cache folder and whether HF_TOKEN is set (never the token); inspect,
// train (run.json's model), merge and eval take repo ids, and eval finds the base model by the
// adapter's base_model_name_or_path. Each child has a cache of its own in a temporary folder.
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, HFConfig, Model } from '../lib';
import { commitOf, filesOf, HubServer, startHubServer } from './helpers/hub-server';
import { REPO, Result, runCli } from './helpers/run-cli';
import { TINY_BYTE_CONFIG, tempFolder } from './helpers/tiny-model';

jest.setTimeout(120_000);

const tmp = tempFolder('rlora-hub-cli-');
const DEMO = path.join(REPO, 'examples', 'demo', 'base');
const CONFIG: HFConfig = { ...TINY_BYTE_CONFIG, hidden_size: 32, intermediate_size: 48 };
const sharded = path.join(tmp, 'sharded');
const loraDir = path.join(tmp, 'lora');
let server: HubServer;
let n = 0;


/** Environment of a child: the stand-in Hub, a fresh cache (or `cache`), nothing of the machine's. */
function hubEnv(extra: NodeJS.ProcessEnv = {}, cache?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', OMP_NUM_THREADS: '1' };
  for (const k of Object.keys(env)) if (/^(HF_|HUGGINGFACE_)/.test(k)) delete env[k];
  delete env.NODE_OPTIONS;
  const dir = cache ?? path.join(tmp, `cache-${++n}`);
  return { ...env, HF_ENDPOINT: server.url, HF_HUB_CACHE: dir, HF_HOME: path.join(tmp, `home-${n}`), ...extra };
}

/** Runs `node --import tsx lib/cli.ts ...args` to its end (killed after `timeoutMs`). */
function rlora(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 90_000): Promise<Result> {
  return runCli(args, env, timeoutMs);
}
const ok = (r: Result): Result => {
  if (r.code !== 0) throw new Error(`exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  return r;
};

beforeAll(async () => {
  Model.fromConfig(CONFIG, { seed: 3 }).save(sharded, { maxShardSize: 20_000 });
  const model = await Model.fromPretrained(sharded);
  Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['q_proj', 'v_proj'], seed: 5 }).save(loraDir);
  // as an adapter saved on the model loaded by its Hub id names it (test/hub.test.ts checks that)
  const cfgFile = path.join(loraDir, 'adapter_config.json');
  fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), base_model_name_or_path: 'rlora/sharded' }, null, 2));
  server = await startHubServer([
    { id: 'rlora/demo-base', files: filesOf(DEMO) },
    { id: 'rlora/sharded', files: filesOf(sharded), branches: { v2: filesOf(DEMO, (f) => f === 'config.json' || f === 'model.safetensors') } },
    { id: 'rlora/lora', files: filesOf(loraDir) },
  ]);
});
afterAll(async () => {
  await server?.close();
});

describe('rlora download', () => {
  it('prints the snapshot folder; stderr has a line per file with its bytes and rate; a second run asks the server and fetches nothing', async () => {
    const env = hubEnv();
    const commit = commitOf('rlora/demo-base', filesOf(DEMO));
    const snapshot = path.join(env.HF_HUB_CACHE!, 'models--rlora--demo-base', 'snapshots', commit);
    const r = ok(await rlora(['download', 'rlora/demo-base'], env));
    expect(r.stdout).toBe(`${snapshot}\n`);
    expect(r.stderr).toMatch(new RegExp(`^downloading rlora/demo-base at ${commit.slice(0, 12)} into ${path.dirname(path.dirname(snapshot))}$`, 'm'));
    expect(r.stderr).toMatch(/^config\.json: 390 B in \d+\.\d s \([\d.]+ [kMG]?B\/s\)$/m);
    expect(r.stderr).toMatch(/^model\.safetensors: 10\.8 MB in \d+\.\d s \([\d.]+ [kMG]?B\/s\)$/m);
    expect(r.stderr).toMatch(new RegExp(`^rlora download: rlora/demo-base at main \\(${commit}\\) as a model in ${env.HF_HUB_CACHE}: 10\\.8 MB downloaded$`, 'm'));
    expect(fs.readdirSync(snapshot).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

    const from = server.requests.length;
    const again = ok(await rlora(['download', 'rlora/demo-base'], env));
    expect(again.stdout).toBe(`${snapshot}\n`);
    expect(again.stderr).toContain('nothing to download');
    expect(server.since(from).map((q) => q.url.split('?')[0])).toEqual([
      '/api/models/rlora/demo-base/revision/main',
      `/api/models/rlora/demo-base/tree/${commit}`,
    ]);
  });

  it('--revision, an adapter repo, HF_HUB_OFFLINE=1 with the cache and without, a bad id, no id', async () => {
    const env = hubEnv();
    const v2 = ok(await rlora(['download', 'rlora/sharded', '--revision', 'v2', '--kind', 'tokenizer'], env));
    expect(v2.stdout).toBe(`${path.join(env.HF_HUB_CACHE!, 'models--rlora--sharded', 'snapshots', server.commit('rlora/sharded', 'v2'))}\n`);
    expect(fs.readFileSync(path.join(env.HF_HUB_CACHE!, 'models--rlora--sharded', 'refs', 'v2'), 'utf8')).toBe(server.commit('rlora/sharded', 'v2'));
    const adapter = ok(await rlora(['download', 'rlora/lora'], env));
    expect(adapter.stderr).toContain('as an adapter');
    expect(fs.readdirSync(adapter.stdout.trim()).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'rlora_config.json']);

    const offline = { ...env, HF_HUB_OFFLINE: '1' };
    const from = server.requests.length;
    expect(ok(await rlora(['download', 'rlora/lora'], offline)).stdout).toBe(adapter.stdout);
    const missing = await rlora(['download', 'rlora/demo-base'], offline);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe(
      `rlora download: offline (HF_HUB_OFFLINE=1): the cache has no rlora/demo-base at revision main (no ${path.join(env.HF_HUB_CACHE!, 'models--rlora--demo-base')}/refs/main); run once online, or \`rlora download rlora/demo-base\``,
    );
    expect(server.requests.length).toBe(from);

    const bad = await rlora(['download', '../../etc'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe('rlora download: "../../etc" is not a Hugging Face repo id: a repo id is "name" or "org/name": letters, digits, "-", "_" and "." (at most 96 a part)');
    const none = await rlora(['download'], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('the repo id is required');
  });
});

describe('rlora doctor', () => {
  it('shows the cache folder and whether HF_TOKEN is set, never the token', async () => {
    const env = hubEnv();
    const unset = ok(await rlora(['doctor'], env));
    expect(unset.stdout).toMatch(new RegExp(`^HF cache +${env.HF_HUB_CACHE}; HF_ENDPOINT=${server.url}$`, 'm'));
    expect(unset.stdout).toMatch(/^HF_TOKEN +not set \(gated and private Hub repos need one\)$/m);
    const set = ok(await rlora(['doctor', '--json'], { ...env, HF_TOKEN: 'hf_do_not_print_me', HF_HUB_OFFLINE: '1' }));
    expect(JSON.parse(set.stdout).huggingface).toEqual({ cache: env.HF_HUB_CACHE, endpoint: server.url, offline: true, token: 'HF_TOKEN' });
    expect(set.stdout).not.toContain('hf_do_not_print_me');
    const text = ok(await rlora(['doctor'], { ...env, HF_TOKEN: 'hf_do_not_print_me' }));
    expect(text.stdout).toMatch(/^HF_TOKEN +set$/m);
    expect(text.stdout).not.toContain('hf_do_not_print_me');
  });
});

describe('commands that take --model and --adapter by Hub id', () => {
  it('inspect <repo id> reads the adapter from the Hub', async () => {
    const r = ok(await rlora(['inspect', 'rlora/lora', '--json'], hubEnv()));
    expect(JSON.parse(r.stdout).modules.map((m: { name: string }) => m.name)).toEqual(JSON.parse(ok(await rlora(['inspect', loraDir, '--json'], hubEnv())).stdout).modules.map((m: { name: string }) => m.name));
  });

  it('train with run.json\'s model as a repo id, then merge --model <id> writes what the folder gives', async () => {
    const env = hubEnv();
    const dir = path.join(tmp, 'run');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'train.jsonl'), ['ab', 'cd', 'ef', 'gh'].map((p) => JSON.stringify({ task: 't', prompt: p, response: p.toUpperCase() })).join('\n') + '\n');
    fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify({
      model: 'rlora/sharded', tokenizer: 'byte', data: { train: 'train.jsonl', maxLength: 16 },
      adapter: { method: 'lora', rank: 2, targetModules: ['q_proj'] }, trainer: { batchSize: 2, maxSteps: 2, learningRate: 1e-2, progress: false }, outputDir: 'out',
    }));
    const train = ok(await rlora(['train', '--config', path.join(dir, 'run.json'), '--threads', '1'], env));
    expect(train.stdout).toContain('trained 2 steps');
    const adapter = path.join(dir, 'out', 'adapter');
    expect(JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8')).base_model_name_or_path).toBe('rlora/sharded');
    // run.json copied to the output keeps the id (it loads from the Hub, or its cache, anywhere)
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'out', 'run.json'), 'utf8')).model).toBe('rlora/sharded');

    ok(await rlora(['merge', '--model', 'rlora/sharded', '--adapter', adapter, '--out', path.join(dir, 'merged-hub')], env));
    ok(await rlora(['merge', '--model', sharded, '--adapter', adapter, '--out', path.join(dir, 'merged-folder')], env));
    const files = fs.readdirSync(path.join(dir, 'merged-folder')).sort();
    expect(fs.readdirSync(path.join(dir, 'merged-hub')).sort()).toEqual(files);
    for (const f of files) expect(fs.readFileSync(path.join(dir, 'merged-hub', f)).equals(fs.readFileSync(path.join(dir, 'merged-folder', f)))).toBe(true);
  });

  it('eval --adapter <repo id> finds the base model by the adapter\'s base_model_name_or_path (a repo id) and equals eval of the folders', async () => {
    const data = path.join(tmp, 'eval.jsonl');
    fs.writeFileSync(data, ['ab', 'cd'].map((p) => JSON.stringify({ task: 't', prompt: p, response: p.toUpperCase() })).join('\n') + '\n');
    const viaHub = ok(await rlora(['eval', '--adapter', 'rlora/lora', '--data', data, '--tokenizer', 'byte', '--json', '--threads', '1'], hubEnv()));
    const viaFolders = ok(await rlora(['eval', '--adapter', loraDir, '--model', sharded, '--data', data, '--tokenizer', 'byte', '--json', '--threads', '1'], hubEnv()));
    expect(JSON.parse(viaHub.stdout).tasks).toEqual(JSON.parse(viaFolders.stdout).tasks);
    expect(JSON.parse(viaHub.stdout).model).toBe('rlora/sharded');
  });

  it('a --model that is neither a folder nor a repo on the Hub: both are said', async () => {
    const r = await rlora(['merge', '--model', 'rlora/nothing', '--adapter', loraDir, '--out', path.join(tmp, 'never')], hubEnv());
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `rlora merge: model: Model.fromPretrained("rlora/nothing"): repo "rlora/nothing" was not found on ${server.url} (401): if it is private, set HF_TOKEN to an access token that can read it (or pass the token option); nor is there a folder ${path.join(REPO, 'rlora', 'nothing')}`,
    );
  });
});
