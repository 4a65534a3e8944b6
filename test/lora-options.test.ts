// Each LoRA option fact once: native/rlora/options.h holds the bounds and the presets, the binding
// exports the bounds (native.loraLimits) and parses the options, lib/lora-options.ts declares the
// names, choices and documentation. These hold lib/'s checks and documentation to native's values:
// the bounds lib/ checks and states, the defaults it states, and the choices and names it lists.
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, Model, MultiHeadLoraLinear, Tensor } from '../lib';
import { DROPOUT_PLACES, INIT_SCALES, INIT_SCHEMES, loraKeys, METHODS, STABLE_BASES } from '../lib/lora-options';
import { native } from '../lib/native';
import { check } from '../lib/util/spec';
import { tempFolder, TINY_CONFIG } from './helpers/tiny-model';

const root = path.join(__dirname, '..');
const limits = native.loraLimits;
const tmp = tempFolder('rlora-lora-options-');
const weight = (): Tensor => Tensor.from(new Float32Array(12), [3, 4]);
const failure = (fn: () => unknown): Error => {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
};

/** The JSDoc of each field of `iface` in lib/lora-options.ts, by field name. */
function fieldDocs(iface: string): Record<string, string> {
  const text = fs.readFileSync(path.join(root, 'lib', 'lora-options.ts'), 'utf8');
  const body = text.slice(text.indexOf(`export interface ${iface} {`), text.indexOf('\n}\n', text.indexOf(`export interface ${iface} {`)));
  const docs: Record<string, string> = {};
  for (const m of body.matchAll(/\/\*\*([^]*?)\*\/\s*\n\s*(\w+)\?:/g)) docs[m[2]] = m[1].replace(/\s*\n\s*\*\s*/g, ' ').trim();
  return docs;
}

describe('native.loraLimits', () => {
  it('are the bounds native/rlora/options.h declares', () => {
    const header = fs.readFileSync(path.join(root, 'native', 'rlora', 'options.h'), 'utf8');
    const constant = (name: string): number => Number(new RegExp(`constexpr \\w+ ${name} = ([^;]+);`).exec(header)![1]);
    expect(limits).toEqual({
      maxRank: constant('kMaxRank'),
      maxHeads: constant('kMaxHeads'),
      maxAlpha: constant('kMaxAlpha'),
      minGamma: constant('kMinGamma'),
      maxGamma: constant('kMaxGamma'),
    });
    expect(limits).toEqual({ maxRank: 65536, maxHeads: 1024, maxAlpha: 1e6, minGamma: 1e-6, maxGamma: 1e12 });
  });

  it('are the bounds lib/ documents: LoraOptions, InitOptions and the run.json / sweep.json key reference', () => {
    const lora = fieldDocs('LoraOptions');
    expect(lora.rank).toContain(`from 1 to ${limits.maxRank}.`);
    expect(lora.heads).toContain(`from 1 to ${limits.maxHeads}.`);
    expect(lora.alpha).toContain(`at most ${limits.maxAlpha.toExponential().replace('e+', 'e')} in size`);
    expect(fieldDocs('InitOptions').gamma).toContain(`from ${limits.minGamma.toExponential()} to ${limits.maxGamma.toExponential().replace('e+', 'e')}.`);
    const keys = loraKeys();
    expect(keys.rank.doc).toContain(`up to ${limits.maxRank} `);
    expect(keys.heads.doc).toContain(`up to ${limits.maxHeads} `);
    expect(keys.alpha.doc).toContain(`up to ${limits.maxAlpha.toExponential().replace('e+', 'e')} `);
    expect(keys.init.doc).toContain(`gamma (${limits.minGamma.toExponential()} to ${limits.maxGamma.toExponential().replace('e+', 'e')})`);
  });

  it('are the bounds lib/ checks: the size check of Adapter.load counts up to them and leaves what is beyond to the layer, which names them', async () => {
    const dir = path.join(tmp, 'saved');
    const saved = Adapter.attach(Model.fromConfig(TINY_CONFIG, { seed: 1 }), { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], seed: 1 });
    saved.save(dir);
    const modules = saved.layers.size;
    const edit = (file: string, values: Record<string, number>): void => {
      const p = path.join(dir, file);
      fs.writeFileSync(p, JSON.stringify({ ...JSON.parse(fs.readFileSync(p, 'utf8')), ...values }));
    };
    const load = (): Promise<Adapter> => Adapter.load(Model.fromConfig(TINY_CONFIG, { seed: 1 }), dir);
    const config = path.join(dir, 'adapter_config.json');
    // at the bounds: lib/ counts the values (and finds the file holds fewer), nothing is allocated
    edit('adapter_config.json', { r: limits.maxRank });
    edit('rlora_config.json', { heads: limits.maxHeads });
    await expect(load()).rejects.toThrow(`${config}: r ${limits.maxRank} and ${limits.maxHeads} heads on ${modules} modules make `);
    // one beyond: lib/ does not count, the layer refuses naming its bound, and the error the files
    edit('adapter_config.json', { r: limits.maxRank + 1 });
    await expect(load()).rejects.toThrow(`${config} / rlora_config.json: rank must be at most ${limits.maxRank}, got ${limits.maxRank + 1}`);
    edit('adapter_config.json', { r: 2 });
    edit('rlora_config.json', { heads: limits.maxHeads + 1 });
    await expect(load()).rejects.toThrow(`${config} / rlora_config.json: heads must be at most ${limits.maxHeads}, got ${limits.maxHeads + 1}`);
    edit('rlora_config.json', { heads: 2 });
    await expect(load()).resolves.toBeInstanceOf(Adapter);
  });

  it('Adapter.attach and MultiHeadLoraLinear refuse one beyond each bound with a RangeError naming it', () => {
    const model = Model.fromConfig(TINY_CONFIG, { seed: 1 });
    const attach = (o: object): Error => failure(() => Adapter.attach(model, { targetModules: ['q_proj'], ...o }));
    const cases: [object, string][] = [
      [{ rank: limits.maxRank + 1 }, `rank must be at most ${limits.maxRank}, got ${limits.maxRank + 1}`],
      [{ heads: limits.maxHeads + 1 }, `heads must be at most ${limits.maxHeads}, got ${limits.maxHeads + 1}`],
      [{ alpha: limits.maxAlpha * 2 }, 'alpha must be a finite number from -1e+06 to 1e+06, got 2e+06'],
      [{ init: { gamma: limits.minGamma / 2 } }, 'init.gamma must be a number from 1e-06 to 1e+12, got 5e-07'],
      [{ init: { gamma: limits.maxGamma * 2 } }, 'init.gamma must be a number from 1e-06 to 1e+12, got 2e+12'],
    ];
    for (const [o, message] of cases) {
      for (const e of [attach(o), failure(() => new MultiHeadLoraLinear({ weight: weight() }, o))]) {
        expect([e.name, e.message]).toEqual(['RangeError', message]); // the addon's errors are from Node's realm, not jest's: by name
      }
    }
    expect(Adapter.of(model)).toBeUndefined();
    // exactly at a bound is fine
    expect(new MultiHeadLoraLinear({ weight: weight() }, { heads: limits.maxHeads, rank: 1, alpha: -limits.maxAlpha, init: { gamma: limits.maxGamma } }).options.heads).toBe(limits.maxHeads);
  });
});

describe('lib/lora-options.ts states what native does', () => {
  const rlora = new MultiHeadLoraLinear({ weight: weight() }).options;
  const presets = Object.fromEntries(METHODS.map((m) => [m, new MultiHeadLoraLinear({ weight: weight() }, { method: m }).options]));

  it('the defaults its documentation states are the presets', () => {
    const lora = fieldDocs('LoraOptions');
    const keys = loraKeys();
    expect(rlora.method).toBe('rlora');
    expect(lora.method).toContain(`Default \`${rlora.method}\`.`);
    expect(keys.method.doc).toContain(`(default ${rlora.method})`);
    for (const k of ['rank', 'alpha', 'dropout'] as const) {
      expect(lora[k]).toContain(`Default ${rlora[k]}.`);
      expect(keys[k].doc).toContain(`(default ${rlora[k]})`);
    }
    expect(presets.lora.heads).toBe(1);
    expect(presets.hydralora.heads).toBe(presets.rlora.heads);
    expect(lora.heads).toContain(`Default ${presets.lora.heads} for \`lora\`, ${presets.rlora.heads} otherwise.`);
    expect(keys.heads.doc).toContain(`(default ${presets.lora.heads} for lora, ${presets.rlora.heads} otherwise)`);
    expect([presets.lora.rankStabilization, presets.hydralora.rankStabilization, presets.rlora.rankStabilization]).toEqual([false, false, true]);
    expect(lora.rankStabilization).toContain('Default true for `rlora`, false otherwise.');
    const init = fieldDocs('InitOptions');
    expect(init.gamma).toContain(`Default ${rlora.init.gamma}.`);
    expect(init.stableBase).toContain(`\`${rlora.init.stableBase}\` gives r^(1/4) (the published code, default)`);
  });

  it('the preset table of InitOptions is native\'s', () => {
    const text = fs.readFileSync(path.join(root, 'lib', 'lora-options.ts'), 'utf8');
    const rows = [...text.matchAll(/^ \* \| (a|b|router|scale|offset) +\| (\w+) +\| (\w+) +\| (\w+) +\|$/gm)];
    expect(rows.map((r) => r[1])).toEqual(['a', 'b', 'router', 'scale', 'offset']);
    for (const [, field, ...values] of rows) {
      expect(values).toEqual(['lora', 'hydralora', 'rlora'].map((m) => String(presets[m].init[field as 'a'])));
    }
  });

  it('the choices are the binding\'s, in its order; the option names are the ones it knows', () => {
    const choices = (o: object): string[] => JSON.parse(`[${/must be one of (.*); got/.exec(failure(() => new MultiHeadLoraLinear({ weight: weight() }, o)).message)![1]}]`);
    expect(choices({ method: 'x' })).toEqual(METHODS);
    expect(choices({ dropoutOn: 'x' })).toEqual(DROPOUT_PLACES);
    expect(choices({ init: { a: 'x' } })).toEqual(INIT_SCHEMES);
    expect(choices({ init: { router: 'x' } })).toEqual(INIT_SCHEMES);
    expect(choices({ init: { scale: 'x' } })).toEqual(INIT_SCALES);
    expect(choices({ init: { stableBase: 'x' } })).toEqual(STABLE_BASES);
    const known = /; known: (.*)$/.exec(failure(() => new MultiHeadLoraLinear({ weight: weight() }, { bogus: 1 } as object)).message)![1].split(', ');
    expect([...known].sort()).toEqual([...Object.keys(loraKeys()), 'seed'].sort());
  });

  it('the run.json / sweep.json table refuses a choice it does not list, with "did you mean"', () => {
    // lib/util/spec.ts checks the table's enums with lib/util/options.ts closest, lib/'s one "did you mean"
    expect(check('hydralroa', loraKeys().method.spec, 'adapter.method')).toEqual([{ kind: 'range', message: 'adapter.method must be one of "lora", "hydralora", "rlora", got "hydralroa" (did you mean "hydralora"?)' }]);
  });
});
