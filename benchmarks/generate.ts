// Generation speed: the text path (generateText with onText, one native step a token, decoding and
// stop-string checks between steps) against one native Model.generate call for the same 200
// tokens, alternating in one process. Target: the text path within 1.2x. `npm run bench:generate`.
import * as path from 'path';

import { generateText, Model, Tokenizer } from '../lib';

const BASE = path.resolve(__dirname, '..', 'examples', 'demo', 'base');
const TOKENS = 200;
const ROUNDS = 7;

async function main(): Promise<void> {
  const model = await Model.fromPretrained(BASE);
  const tok = Tokenizer.fromFile(BASE);
  const prompt = 'Call me Ishmael. Some years ago';
  const ids = [[tok.bosTokenId!, ...tok.encode(prompt)]];
  const opts = { maxNewTokens: TOKENS, eosTokenId: 1_000_000 };
  const native: number[] = [];
  const text: number[] = [];
  let same = true;
  for (let r = 0; r < ROUNDS + 1; r++) {
    let t = process.hrtime.bigint();
    const [row] = await model.generate(ids, opts);
    const a = Number(process.hrtime.bigint() - t) / 1e6;
    t = process.hrtime.bigint();
    let streamed = '';
    const out = await generateText(model, tok, prompt, { ...opts, stop: ['never-in-this-text'], onText: (p) => (streamed += p) });
    const b = Number(process.hrtime.bigint() - t) / 1e6;
    same &&= out === tok.decode(row.slice(ids[0].length)) && streamed === out;
    if (r > 0) {
      // round 0 warms up
      native.push(a);
      text.push(b);
    }
  }
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const n = median(native);
  const t = median(text);
  console.log(`demo base, ${TOKENS} new tokens, median of ${ROUNDS} rounds (same text: ${same})`);
  console.log(`  Model.generate (one native call)    ${n.toFixed(0)} ms  ${(TOKENS / n * 1000).toFixed(0)} tokens/s`);
  console.log(`  generateText + onText + stop        ${t.toFixed(0)} ms  ${(TOKENS / t * 1000).toFixed(0)} tokens/s`);
  console.log(`  ratio ${(t / n).toFixed(3)} (target <= 1.2)`);
}

void main();
