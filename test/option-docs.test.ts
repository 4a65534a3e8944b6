// Each Trainer option is documented once, in TrainerOptions' JSDoc: lib/trainer/option-docs.ts is
// generated from it (scripts/option-docs.cjs), the help texts take their lines from it, and the
// defaults it states are those the table applies.
import { spawnSync } from 'child_process';
import * as path from 'path';

import { DEFAULTS, docSummary, MAX_EVAL_EXTRA_TOKENS, MAX_GRADIENT_ACCUMULATION, runJsonTrainerKeys, TRAINER_OPTION_NAMES } from '../lib/trainer/options';
import { EARLY_STOPPING_DOCS, TRAINER_OPTION_DOCS } from '../lib/trainer/option-docs';

const ROOT = path.join(__dirname, '..');

test('lib/trainer/option-docs.ts is what the JSDoc says (regenerated, it is unchanged)', () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'option-docs.cjs'), '--check'], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
});

test('every option has its JSDoc, and every documented member is an option', () => {
  expect(Object.keys(TRAINER_OPTION_DOCS).sort()).toEqual([...TRAINER_OPTION_NAMES].sort());
});

/** The value a "Default X" sentence names, as the table would hold it. */
function statedDefault(doc: string): unknown {
  const m = /(?:^|\. )Default:? (\S+?)[.,;:]?(?=\s|$)/.exec(doc);
  if (!m) return undefined;
  const word = m[1];
  if (word === 'none') return [];
  if (word === 'true' || word === 'false') return word === 'true';
  if (/^'.*'$/.test(word)) return word.slice(1, -1);
  return Number.isFinite(Number(word)) ? Number(word) : word;
}

test('the default each JSDoc states is the one the Trainer applies', () => {
  const withDefault = Object.entries(DEFAULTS);
  expect(withDefault.length).toBeGreaterThan(20);
  for (const [k, v] of withDefault) {
    expect([k, statedDefault(TRAINER_OPTION_DOCS[k as keyof typeof TRAINER_OPTION_DOCS])]).toEqual([k, v]);
  }
  expect(statedDefault(TRAINER_OPTION_DOCS.learningRate)).toBe(2e-4);
  expect(statedDefault(EARLY_STOPPING_DOCS.patience)).toBe(1);
  // the limits the checks apply are the ones written
  expect(TRAINER_OPTION_DOCS.gradientAccumulation).toContain(`at most ${MAX_GRADIENT_ACCUMULATION} `);
  expect(TRAINER_OPTION_DOCS.evalExtraTokens).toContain(`at most ${MAX_EVAL_EXTRA_TOKENS} `);
});

test('a help line is the first sentence and the one stating the default', () => {
  expect(docSummary('Rows per step. Larger is faster. Default 8.')).toBe('Rows per step. Default 8.');
  expect(docSummary('Default 1 (as torch).')).toBe('Default 1 (as torch).');
  expect(docSummary("Where it goes (see torch.save). 'x' only.")).toBe('Where it goes (see torch.save).');
  const keys = runJsonTrainerKeys();
  expect(keys.learningRate.doc).toBe("AdamW's base learning rate. Default 2e-4 (the published R-LoRA run).");
  expect(keys.packing.doc).toBe(docSummary(TRAINER_OPTION_DOCS.packing));
  expect(keys.packing.doc).toMatch(/^Padding-free training: .*Default false\.$/);
  // run.json's own wording where its form of the option differs (built-in metric names only)
  expect(keys.metrics.doc).toMatch(/^Built-in metrics/);
});
