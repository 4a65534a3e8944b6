// Model.save with shards (an index as transformers writes it) and generation_config.json, and
// `rlora merge`: the merged folder's logits equal those of the base model with the adapter attached.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, Model, readSafetensorsHeader } from '../lib';
import { IDS, MASK, tempFolder, TINY_CONFIG, tinyLogits } from './helpers/tiny-model';

const tmp = tempFolder('rlora-merge-');
const CLI = path.join(__dirname, '..', 'lib', 'cli.ts');
const rlora = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8' });
const maxAbsDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe('Model.save', () => {
  it('shards over maxShardSize with model.safetensors.index.json; loads back the same; one file again removes the shards', async () => {
    const model = Model.fromConfig(TINY_CONFIG, { seed: 4 });
    const dir = path.join(tmp, 'sharded');
    const limit = 6000; // bytes: the tiny model holds about 40 KB of float32
    model.save(dir, { maxShardSize: limit });
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    const files = [...new Set(Object.values(index.weight_map))].sort();
    expect(files.length).toBeGreaterThan(2);
    files.forEach((f, i) => expect(f).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(files.length).padStart(5, '0')}.safetensors`));
    expect(fs.existsSync(path.join(dir, 'model.safetensors'))).toBe(false);
    let total = 0;
    for (const f of files) {
      const h = readSafetensorsHeader(path.join(dir, f));
      const bytes = h.entries.reduce((a, e) => a + (e.dataOffsets[1] - e.dataOffsets[0]), 0);
      // a shard stays under the limit unless it holds one tensor larger than the limit
      if (h.entries.length > 1) expect(bytes).toBeLessThanOrEqual(limit);
      for (const e of h.entries) expect(index.weight_map[e.name]).toBe(f);
      total += bytes;
    }
    expect(index.metadata.total_size).toBe(total);
    expect(Object.keys(index.weight_map).sort()).toEqual(model.native.parameterSpecs().map((s) => s.name).sort());
    const back = await Model.fromPretrained(dir);
    expect(maxAbsDiff(await tinyLogits(back), await tinyLogits(model))).toBe(0);
    // saved again in one file: the shards and the index go
    model.save(dir);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors') || f.endsWith('.json')).sort()).toEqual(['config.json', 'model.safetensors']);
    expect(() => model.save(dir, { maxShardSize: 0 })).toThrow('Model.save: maxShardSize must be a whole number of bytes >= 1, got 0');
    expect(() => model.save(dir, { maxShardSiz: 1 } as never)).toThrow('Model.save: unknown option "maxShardSiz" (did you mean "maxShardSize"?); known: maxShardSize, copyFiles');
  });

  it('keeps generation_config.json from the folder it loaded', async () => {
    const src = path.join(tmp, 'gen-src'), dst = path.join(tmp, 'gen-dst');
    Model.fromConfig(TINY_CONFIG, { seed: 1 }).save(src);
    const gen = { bos_token_id: 1, eos_token_id: [2, 5], max_new_tokens: 64, do_sample: false };
    fs.writeFileSync(path.join(src, 'generation_config.json'), JSON.stringify(gen));
    const m = await Model.fromPretrained(src);
    expect(m.generationConfig).toEqual(gen);
    m.save(dst);
    expect(JSON.parse(fs.readFileSync(path.join(dst, 'generation_config.json'), 'utf8'))).toEqual(gen);
    fs.writeFileSync(path.join(src, 'generation_config.json'), '[1]');
    await expect(Model.fromPretrained(src)).rejects.toThrow(`${path.join(src, 'generation_config.json')} must hold a JSON object`);
  });
});

describe('rlora merge', () => {
  jest.setTimeout(60_000);

  it('writes a folder whose logits are the base model with the adapter attached; refuses a multi-head adapter', async () => {
    const base = path.join(tmp, 'base'), adapterDir = path.join(tmp, 'lora'), out = path.join(tmp, 'merged');
    Model.fromConfig(TINY_CONFIG, { seed: 2 }).save(base);
    fs.writeFileSync(path.join(base, 'generation_config.json'), JSON.stringify({ eos_token_id: 2 }));
    fs.writeFileSync(path.join(base, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 128 }));
    const model = await Model.fromPretrained(base);
    // B drawn at random and no offset: the adapter changes the logits
    const adapter = Adapter.attach(model, { method: 'lora', rank: 3, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], init: { b: 'unit', offset: false }, seed: 5 });
    const withAdapter = (await model.forward(IDS, { attentionMask: MASK })).data() as Float32Array;
    adapter.save(adapterDir);
    adapter.detach();
    const plain = (await model.forward(IDS, { attentionMask: MASK })).data() as Float32Array;
    expect(maxAbsDiff(withAdapter, plain)).toBeGreaterThan(1e-3);

    const r = rlora(['merge', '--model', base, '--adapter', adapterDir, '--out', out, '--max-shard-size', '8000']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^merged 6 modules of ${adapterDir} into ${base}; wrote ${out} \\(\\d+ weights files, tokenizer_config.json\\)`));
    expect(fs.existsSync(path.join(out, 'model.safetensors.index.json'))).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'generation_config.json'), 'utf8'))).toEqual({ eos_token_id: 2 });
    const merged = await Model.fromPretrained(out);
    expect(maxAbsDiff((await merged.forward(IDS, { attentionMask: MASK })).data() as Float32Array, withAdapter)).toBeLessThan(1e-5);

    // again into the same folder: refused without --overwrite
    expect(rlora(['merge', '--model', base, '--adapter', adapterDir, '--out', out]).stderr).toContain(`${out} already holds a model (config.json): pass --overwrite to replace it`);
    // a multi-head adapter
    const multi = path.join(tmp, 'rlora-adapter');
    const m2 = await Model.fromPretrained(base);
    Adapter.attach(m2, { method: 'rlora', rank: 2, heads: 3, targetModules: ['q_proj'] }).save(multi);
    const bad = rlora(['merge', '--model', base, '--adapter', multi, '--out', path.join(tmp, 'never')]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('is a rlora adapter with 3 heads: only single-head (lora) adapters can be merged');
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });
});
