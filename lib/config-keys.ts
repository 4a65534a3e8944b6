// The keys run.json (lib/cli/runconfig.ts) and sweep.json (lib/sweep/config.ts) share, written once:
// how records are encoded (DatasetOptions) and the adapter's options (AdapterOptions) without the
// two each file treats in its own way (targetModules, which code may also give as a RegExp, and
// seed, which a sweep sets itself). The Trainer's options come from its own table
// (lib/trainer/options.ts). Nothing here loads the native addon.
import type { InitOptions } from './layer';
import { bool, Key, num, oneOf, safeInt, str } from './util/spec';

/** DatasetOptions as a file writes them (the data files themselves are each file's own keys). */
export const ENCODING_KEYS: Record<string, Key> = {
  template: { spec: str, doc: 'how a record becomes text, e.g. "Q: {prompt}\\nA: {response}" ({task} too); the loss starts at {response}; default "{prompt}\\n{response}"' },
  maxLength: { spec: safeInt(2), doc: 'most tokens of a sequence, longer ones are cut (default 512)' },
  fields: {
    spec: { kind: 'object', keys: { task: { spec: str, doc: '' }, prompt: { spec: str, doc: '' }, response: { spec: str, doc: '' } } },
    type: '{task?, prompt?, response?}',
    doc: 'the records\' field names, when not "task", "prompt", "response"',
  },
  addBos: { spec: bool, doc: 'put the tokenizer\'s bos first (default true)' },
  addEos: { spec: bool, doc: 'put the tokenizer\'s eos last (default true)' },
};

const INIT_SCHEMES = ['kaiming', 'gaussian', 'unit', 'zeros', 'orthogonal'];
const INIT_KEYS: Record<keyof InitOptions, Key> = {
  a: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  b: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  router: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  scale: { spec: oneOf('none', 'stable', 'reference'), doc: '' },
  gamma: { spec: num(0, true), doc: '' },
  stableBase: { spec: oneOf('rank', 'out'), doc: '' },
  offset: { spec: bool, doc: '' },
};

/** AdapterOptions but targetModules and seed; `initDoc` ends the init key's documentation. */
export function adapterKeys(initDoc = ''): Record<string, Key> {
  return {
    method: { spec: oneOf('lora', 'hydralora', 'rlora'), doc: 'the preset filling every key not given (default rlora)' },
    rank: { spec: safeInt(1), doc: 'rank r of the shared A (default 8)' },
    heads: { spec: safeInt(1), doc: 'number of heads N (default 1 for lora, 5 otherwise)' },
    alpha: { spec: num(0, true), doc: 'scaling alpha / r, or alpha / sqrt(r) with rankStabilization (default 16)' },
    dropout: { spec: num(0, false, 1, true), doc: 'dropout probability in [0, 1) (default 0.1)' },
    dropoutOn: { spec: oneOf('input', 'rank'), doc: 'dropout on x (lora, hydralora) or on A x (rlora)' },
    multiHeadDropout: { spec: bool, doc: 'a dropout mask per head (rlora: true)' },
    rankStabilization: { spec: bool, doc: 'rsLoRA scaling alpha / sqrt(r) (rlora: true)' },
    init: {
      spec: { kind: 'object', keys: INIT_KEYS },
      type: '{a, b, router, scale, gamma, stableBase, offset}',
      doc: `initialisation (InitOptions)${initDoc}: a, b, router: ${INIT_SCHEMES.join('|')}; scale: none|stable|reference; gamma; stableBase: rank|out; offset`,
    },
  };
}
