// The keys run.json (lib/cli/runconfig.ts) and sweep.json (lib/sweep/config.ts) share, written once:
// how records are encoded (DatasetOptions). The adapter's options come from the layer's table
// (lib/lora-options.ts loraKeys), the Trainer's from its own (lib/trainer/options.ts). Nothing here
// loads the native addon.
import { bool, Key, safeInt, str } from './util/spec';

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
