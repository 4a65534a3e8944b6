// The tiny model the adapter tests share: a 2-layer LLaMA with GQA, saved once per test file into
// a temporary folder, and a left-padded batch to run it on.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { ByteTokenizer, HFConfig, Model } from '../../lib';

export const TINY_CONFIG: HFConfig = {
  architectures: ['LlamaForCausalLM'], vocab_size: 53, hidden_size: 32, intermediate_size: 40,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
};
/** The same shape for byte-level tokens (ByteTokenizer's 259 ids), as the trainer tests use. */
export const TINY_BYTE_CONFIG: HFConfig = {
  architectures: ['LlamaForCausalLM'], vocab_size: new ByteTokenizer().vocabSize, hidden_size: 16, intermediate_size: 24,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1,
};
/** A model of about 0.2 MB for the saving tests (many shards with a small maxShardSize). */
export const SAVE_CONFIG: HFConfig = { ...TINY_CONFIG, hidden_size: 64, intermediate_size: 128 };
export const IDS = [[3, 14, 15, 9, 26, 5], [0, 0, 35, 8, 9, 7]];
export const MASK = [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]];

/** A temporary folder, removed after the calling test file's tests. */
export function tempFolder(prefix: string): string {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  return tmp;
}

/** A temporary folder holding the tiny model saved with `seed` in base/. */
export function tinyModelFolder(prefix: string, seed: number): { tmp: string; baseDir: string } {
  const tmp = tempFolder(prefix);
  const baseDir = path.join(tmp, 'base');
  Model.fromConfig(TINY_CONFIG, { seed }).save(baseDir);
  return { tmp, baseDir };
}

/** Logits of the shared batch, as a flat Float32Array. */
export const tinyLogits = async (m: Model): Promise<Float32Array> => (await m.forward(IDS, { attentionMask: MASK })).data() as Float32Array;
