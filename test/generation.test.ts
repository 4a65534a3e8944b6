// The generation options (lib/generation.ts, native/model/generate.cpp) against hand computations
// on the logits of Model.forward: repetition penalty, minNewTokens, top-k, temperature bounds,
// seeds, numReturnSequences, stop strings, batches of prompts and AbortSignal.
import * as path from 'path';

import { ByteTokenizer, completeText, generateText, Model, Tokenizer } from '../lib';
import { TINY_BYTE_CONFIG } from './helpers/tiny-model';

jest.setTimeout(120_000);

const BASE = path.resolve(__dirname, '..', 'examples', 'demo', 'base');
let model: Model;
let tok: Tokenizer;
const NO_EOS = 100_000; // an id no row reaches: rows run to maxNewTokens

beforeAll(async () => {
  model = await Model.fromPretrained(BASE);
  tok = Tokenizer.fromFile(BASE);
});

/** The last position's logits of one row, as numbers. */
async function lastLogits(ids: number[]): Promise<number[]> {
  const logits = await model.forward([ids]);
  const [, s, v] = logits.shape;
  const flat = logits.data() as Float32Array;
  return Array.from(flat.subarray((s - 1) * v, s * v));
}

const argmax = (xs: number[]): number => xs.reduce((best, x, i) => (x > xs[best] ? i : best), 0);

describe('greedy decoding with logits processors', () => {
  const prompt = (): number[] => [tok.bosTokenId!, ...tok.encode('the whale, the whale, the whale')];

  it('repetitionPenalty divides positive logits and multiplies negative ones of seen tokens, as transformers', async () => {
    const ids = prompt();
    const logits = await lastLogits(ids);
    const penalty = 3;
    const seen = new Set(ids);
    const penalised = logits.map((x, t) => (seen.has(t) ? (x > 0 ? x / penalty : x * penalty) : x));
    // the check means something only if the penalty changes the choice
    expect(argmax(penalised)).not.toBe(argmax(logits));
    const [row] = await model.generate([ids], { maxNewTokens: 1, repetitionPenalty: penalty, eosTokenId: NO_EOS });
    expect(row[ids.length]).toBe(argmax(penalised));
    const [plain] = await model.generate([ids], { maxNewTokens: 1, eosTokenId: NO_EOS });
    expect(plain[ids.length]).toBe(argmax(logits));
  });

  it('repetitionPenalty counts the tokens generated so far too', async () => {
    const ids = prompt();
    const [row] = await model.generate([ids], { maxNewTokens: 3, repetitionPenalty: 2, eosTokenId: NO_EOS });
    // the third token, by hand from the first two
    const two = row.slice(0, ids.length + 2);
    const logits = await lastLogits(two);
    const seen = new Set(two);
    expect(row[ids.length + 2]).toBe(argmax(logits.map((x, t) => (seen.has(t) ? (x > 0 ? x / 2 : x * 2) : x))));
  });

  it('minNewTokens keeps the eos from ending a row before it', async () => {
    const ids = prompt();
    const logits = await lastLogits(ids);
    const first = argmax(logits);
    const [stopped] = await model.generate([ids], { maxNewTokens: 4, eosTokenId: first });
    expect(stopped).toEqual([...ids, first]);
    const [kept] = await model.generate([ids], { maxNewTokens: 1, minNewTokens: 1, eosTokenId: first });
    expect(kept[ids.length]).toBe(argmax(logits.map((x, t) => (t === first ? -Infinity : x))));
  });

  it('topK 1 samples the most likely token; a temperature down to 1e-30 does too, and below it is refused', async () => {
    const ids = prompt();
    const [greedy] = await model.generate([ids], { maxNewTokens: 8, eosTokenId: NO_EOS });
    const [k1] = await model.generate([ids], { maxNewTokens: 8, eosTokenId: NO_EOS, temperature: 1.5, topK: 1, seed: 5 });
    expect(k1).toEqual(greedy);
    const [cold] = await model.generate([ids], { maxNewTokens: 8, eosTokenId: NO_EOS, temperature: 1e-30, seed: 5 });
    expect(cold).toEqual(greedy);
    await expect(model.generate([ids], { temperature: 1e-45 })).rejects.toThrow(/temperature must be 0 \(greedy\) or a finite number >= 1e-30, got 1e-45/);
  });
});

describe('sampling', () => {
  const ids = (): number[] => [tok.bosTokenId!, ...tok.encode('Call me')];

  it('a seed reproduces; without one every call draws anew', async () => {
    const opts = { maxNewTokens: 40, eosTokenId: NO_EOS, temperature: 1.5 };
    const a = await model.generate([ids()], { ...opts, seed: 11 });
    expect(await model.generate([ids()], { ...opts, seed: 11 })).toEqual(a);
    const unseeded = await Promise.all([0, 1, 2].map(() => model.generate([ids()], opts)));
    // 40 tokens at temperature 1.5 over a byte vocabulary: equal rows by chance are out of reach
    expect(new Set(unseeded.map((r) => JSON.stringify(r))).size).toBe(3);
  });

  it('Model.stream yields what generate makes with the same seed', async () => {
    const opts = { maxNewTokens: 20, eosTokenId: NO_EOS, temperature: 1.2, topP: 0.9, seed: 4 };
    const [row] = await model.generate([ids()], opts);
    const streamed: number[] = [];
    for await (const t of model.stream([ids()], opts)) streamed.push(t);
    expect(streamed).toEqual(row.slice(ids().length));
  });

  it('numReturnSequences makes that many rows per prompt (refused with greedy decoding)', async () => {
    const out = await model.generate([ids()], { maxNewTokens: 10, eosTokenId: NO_EOS, temperature: 1.5, seed: 2, numReturnSequences: 3 });
    expect(out).toHaveLength(3);
    out.forEach((r) => expect(r.slice(0, ids().length)).toEqual(ids()));
    expect(new Set(out.map((r) => JSON.stringify(r))).size).toBe(3);
    await expect(model.generate([ids()], { numReturnSequences: 2 })).rejects.toThrow(/numReturnSequences 2 needs sampling/);
    const texts = await generateText(model, tok, 'Call me', { maxNewTokens: 10, temperature: 1.5, seed: 2, numReturnSequences: 3, eosTokenId: NO_EOS });
    expect(texts).toEqual(out.map((r) => tok.decode(r.slice(ids().length))));
  });
});

describe('text', () => {
  it('a stop string ends the text before it, across token boundaries (one byte a token)', async () => {
    const full = await generateText(model, tok, 'The whale', { maxNewTokens: 60, eosTokenId: NO_EOS });
    const stop = full.slice(10, 14); // four tokens
    expect(stop).toHaveLength(4);
    const pieces: string[] = [];
    const cut = await generateText(model, tok, 'The whale', { maxNewTokens: 60, eosTokenId: NO_EOS, stop: [stop, 'zzzz'], onText: (t) => pieces.push(t) });
    expect(cut).toBe(full.slice(0, full.indexOf(stop)));
    expect(pieces.join('')).toBe(cut);
    const [done] = await completeText(model, tok, [[tok.bosTokenId!, ...tok.encode('The whale')]], { maxNewTokens: 60, eosTokenId: NO_EOS, stop });
    expect(done).toMatchObject({ text: cut, finishReason: 'stop', completionTokens: full.indexOf(stop) + 4 });
    const [long] = await completeText(model, tok, [[tok.bosTokenId!, ...tok.encode('The whale')]], { maxNewTokens: 5, eosTokenId: NO_EOS });
    expect(long).toMatchObject({ text: full.slice(0, 5), finishReason: 'length', completionTokens: 5, promptTokens: 10 });
  });

  it('Model.generate with stop strings stops after the token that completes one', async () => {
    const ids = [tok.bosTokenId!, ...tok.encode('The whale')];
    const [row] = await model.generate([ids], { maxNewTokens: 60, eosTokenId: NO_EOS });
    const text = tok.decode(row.slice(ids.length));
    const stop = text.slice(7, 10);
    const [cut] = await model.generate([ids], { maxNewTokens: 60, eosTokenId: NO_EOS, stop, tokenizer: tok });
    expect(tok.decode(cut.slice(ids.length))).toBe(text.slice(0, text.indexOf(stop) + 3));
    await expect(model.generate([ids], { stop: 'x' })).rejects.toThrow(/stop needs the tokenizer option/);
  });

  it('a batch of prompts gives what each prompt gives alone (left padding)', async () => {
    const prompts = ['Call me Ishmael', 'The', 'It was the best of times'];
    const together = await generateText(model, tok, prompts, { maxNewTokens: 12, eosTokenId: NO_EOS });
    const alone = await Promise.all(prompts.map((p) => generateText(model, tok, p, { maxNewTokens: 12, eosTokenId: NO_EOS })));
    expect(together).toEqual(alone);
  });

  it('an AbortSignal stops after the current token and rejects with its reason', async () => {
    const controller = new AbortController();
    let pieces = 0;
    const run = generateText(model, tok, 'The whale', {
      maxNewTokens: 200,
      eosTokenId: NO_EOS,
      onText: () => {
        if (++pieces === 3) controller.abort(new Error('enough'));
      },
      signal: controller.signal,
    });
    await expect(run).rejects.toThrow('enough');
    expect(pieces).toBe(3);
  });

  it('unknown options are refused in JS as in TS, naming the closest known one', async () => {
    await expect(generateText(model, tok, 'x', { max_new_tokens: 5 } as never)).rejects.toThrow(/unknown option "max_new_tokens" \(did you mean "maxNewTokens"\?\)/);
    await expect(generateText(model, tok, 'x', { repetitionPenalty: 1.3, stops: ['a'] } as never)).rejects.toThrow(/unknown option "stops" \(did you mean "stop"\?\)/);
    const stream = model.stream([[1, 2]], { maxTokens: 3 } as never);
    await expect(stream.next()).rejects.toThrow(/Model.stream: unknown option "maxTokens"/);
  });

  it('streamed pieces never split a character: random bytes from an untrained model, pieces joined = the text', async () => {
    // an untrained byte-level model sampled hot emits bytes >= 0x80, so characters of 2-4 bytes
    // arrive over several tokens; a piece cut inside one would hold U+FFFD where the text does not
    const random = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 9 });
    const byte = new ByteTokenizer();
    const pieces: string[] = [];
    const text = await generateText(random, byte, 'x', { maxNewTokens: 400, temperature: 3, seed: 1, eosTokenId: NO_EOS, onText: (p) => pieces.push(p) });
    expect(pieces.join('')).toBe(text);
    const multiByte = [...text].filter((c) => c.codePointAt(0)! > 0x7f && c !== '\uFFFD');
    expect(multiByte.length).toBeGreaterThan(0); // the case under test occurred
    random.dispose();
  });
});
