// A Hugging Face tokenizer.json that reads any text, for tests: ByteTokenizer's own files (a
// byte-level BPE with one token per byte), with a chat_template when given.
import { ByteTokenizer } from '../../lib';

export function byteBpe(chatTemplate?: string): { json: object; config: Record<string, unknown> } {
  const f = new ByteTokenizer().files();
  return { json: f['tokenizer.json'], config: { ...f['tokenizer_config.json'], ...(chatTemplate !== undefined ? { chat_template: chatTemplate } : {}) } };
}
