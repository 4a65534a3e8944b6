// The record formats a dataset reads (README "Data"): which format a record is, its fields checked,
// and the task it belongs to. Encoding the result into tokens is encode.ts's.
import type { ChatMessage } from '../chat';
import { describeKind as describe, isRecord as isPlainObject } from '../util/options';

/** `{task?, prompt, response}`: joined by the dataset's template, loss on the response. */
export interface PromptResponseExample {
  task?: string;
  prompt: string;
  response: string;
}

/**
 * `{task?, messages}`: a conversation (Hugging Face's chat format) rendered with the tokenizer's
 * chat_template, loss on the assistant turns only; the last message is the assistant's answer
 * that evaluation generates.
 */
export interface MessagesExample {
  task?: string;
  messages: ChatMessage[];
}

/** `{task?, text}`: plain language modelling, loss on every token (bos? + text + eos?). */
export interface TextExample {
  task?: string;
  text: string;
}

/**
 * `{task?, prompt, completion}`, TRL's prompt-completion format: two strings joined as they are
 * (no template), loss on the completion; or two message lists (TRL's conversational
 * prompt-completion) rendered with the chat template, loss on the completion's assistant turns.
 */
export interface PromptCompletionExample {
  task?: string;
  prompt: string | ChatMessage[];
  completion: string | ChatMessage[];
}

/** `{task?, instruction, input?, output}`, Stanford Alpaca's: rendered with Alpaca's prompt (ALPACA_PROMPT), loss on the output. */
export interface AlpacaExample {
  task?: string;
  instruction: string;
  input?: string;
  output: string;
}

/** One example: a record in any of the formats a dataset reads. A record without `task` belongs to task "default" (or its file's name). */
export type Example = PromptResponseExample | MessagesExample | TextExample | PromptCompletionExample | AlpacaExample;

/** Which format a record is. */
export type RecordFormat = 'prompt-response' | 'messages' | 'text' | 'prompt-completion' | 'alpaca';

/** What a template (a string or a function) fills in: the task, the prompt and the response. */
export interface TemplateFields {
  task: string;
  prompt: string;
  response: string;
}

/** A record read and checked, in one shape for the encoder. */
export interface ReadExample extends TemplateFields {
  format: RecordFormat;
  /** The conversation (messages, conversational prompt-completion). */
  messages?: ChatMessage[];
  /** Messages before this index get no loss (conversational prompt-completion: the prompt's). */
  lossFrom?: number;
  /** The plain text of a text record (also `response`). */
  text?: string;
}

export const DEFAULT_FIELDS = { task: 'task', prompt: 'prompt', response: 'response' } as const;
export type FieldKey = keyof typeof DEFAULT_FIELDS;
export const FIELD_KEYS: readonly FieldKey[] = ['task', 'prompt', 'response'];

/** The task of records that name none, when their dataset is one file or an array. */
export const DEFAULT_TASK = 'default';

/**
 * Stanford Alpaca's prompts (PROMPT_DICT of tatsu-lab/stanford_alpaca's train.py), with and
 * without an input; the output follows "### Response:" directly, as there, and gets the loss.
 */
export const ALPACA_PROMPT = {
  input:
    'Below is an instruction that describes a task, paired with an input that provides further context. ' +
    'Write a response that appropriately completes the request.\n\n' +
    '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:',
  noInput: 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' + '### Instruction:\n{instruction}\n\n### Response:',
} as const;

/** The formats, as errors list them. */
function formatList(fields: Record<FieldKey, string>): string {
  const t = `"${fields.task}"?`;
  return [
    `{${t}, "${fields.prompt}", "${fields.response}"}`,
    `{${t}, "messages"}`,
    `{${t}, "prompt", "completion"} (strings or message lists)`,
    `{${t}, "instruction", "input"?, "output"} (Alpaca)`,
    `{${t}, "text"}`,
  ].join(', ');
}

const has = (r: Record<string, unknown>, key: string): boolean => Object.prototype.hasOwnProperty.call(r, key);
const keysOf = (r: Record<string, unknown>): string => {
  const keys = Object.keys(r);
  return keys.length ? keys.map((k) => JSON.stringify(k)).join(', ') : 'no fields';
};

function stringField(at: string, r: Record<string, unknown>, name: string, what: string): string {
  if (!has(r, name)) throw new Error(`${at}: missing field "${name}" (the ${what}); the record has ${keysOf(r)}`);
  const v = r[name];
  if (typeof v !== 'string') throw new TypeError(`${at}: field "${name}" (the ${what}) must be a string, got ${describe(v)}`);
  return v;
}

function messageList(at: string, value: unknown, name: string): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) throw new TypeError(`${at}: field "${name}" must be a non-empty array of {role, content}, got ${describe(value)}`);
  return value.map((x, i) => {
    if (!isPlainObject(x) || typeof x.role !== 'string' || typeof x.content !== 'string') {
      throw new TypeError(`${at}: ${name}[${i}] must be {role, content} with string values, got ${describe(x)}`);
    }
    return { role: x.role, content: x.content };
  });
}

/** A conversation's last message must be the assistant's answer. */
function endsWithAnswer(at: string, messages: ChatMessage[], name: string): void {
  const last = messages[messages.length - 1];
  if (last.role !== 'assistant') throw new Error(`${at}: the last message${name === 'messages' ? '' : ` of "${name}"`} must be the assistant's (the answer to learn and to generate), got role ${JSON.stringify(last.role)}`);
}

function chat(task: string, messages: ChatMessage[], lossFrom?: number): ReadExample {
  const before = messages.slice(0, -1);
  return {
    format: lossFrom === undefined ? 'messages' : 'prompt-completion',
    task,
    prompt: before.length ? before[before.length - 1].content : '',
    response: messages[messages.length - 1].content,
    messages,
    ...(lossFrom === undefined ? {} : { lossFrom }),
  };
}

/**
 * Reads a raw record: its format is the first of these whose key it has: `messages`; the response
 * field (`{prompt, response}`); `completion`; `instruction` or `output` (Alpaca); `text`. Other keys
 * are ignored. `at` names it in errors ("examples[3]", "file:7"); `defaultTask` is the task of a
 * record without one.
 */
export function readRecord(at: string, record: unknown, fields: Record<FieldKey, string>, defaultTask: string = DEFAULT_TASK): ReadExample {
  if (!isPlainObject(record)) throw new Error(`${at}: a record must be a JSON object, got ${describe(record)}`);
  let task = defaultTask;
  if (has(record, fields.task)) {
    const t = record[fields.task];
    if (typeof t !== 'string') throw new TypeError(`${at}: field "${fields.task}" (the task) must be a string, got ${describe(t)}`);
    if (t === '') throw new Error(`${at}: field "${fields.task}" (the task) is empty`);
    task = t;
  }
  if (has(record, 'messages')) {
    const messages = messageList(at, record.messages, 'messages');
    endsWithAnswer(at, messages, 'messages');
    return chat(task, messages);
  }
  if (has(record, fields.response)) {
    return { format: 'prompt-response', task, prompt: stringField(at, record, fields.prompt, 'prompt'), response: stringField(at, record, fields.response, 'response') };
  }
  if (has(record, 'completion')) {
    if (!has(record, 'prompt')) throw new Error(`${at}: missing field "prompt" (a prompt-completion record's prompt); the record has ${keysOf(record)}`);
    const p = record.prompt;
    const c = record.completion;
    if (typeof p === 'string' && typeof c === 'string') return { format: 'prompt-completion', task, prompt: p, response: c };
    if (Array.isArray(p) && Array.isArray(c)) {
      const prompt = p.length === 0 ? [] : messageList(at, p, 'prompt');
      const completion = messageList(at, c, 'completion');
      endsWithAnswer(at, completion, 'completion');
      return chat(task, [...prompt, ...completion], prompt.length);
    }
    throw new TypeError(`${at}: "prompt" and "completion" must both be strings or both be lists of {role, content} messages, got ${describe(p)} and ${describe(c)}`);
  }
  if (has(record, 'instruction') || has(record, 'output')) {
    const instruction = stringField(at, record, 'instruction', "Alpaca record's instruction");
    const output = stringField(at, record, 'output', "Alpaca record's output");
    const input = has(record, 'input') && record.input !== null ? stringField(at, record, 'input', "Alpaca record's input") : '';
    // one pass, so an instruction that contains "{input}" stays as written
    const prompt = (input === '' ? ALPACA_PROMPT.noInput : ALPACA_PROMPT.input).replace(/\{(instruction|input)\}/g, (_, k: string) => (k === 'instruction' ? instruction : input));
    return { format: 'alpaca', task, prompt, response: output };
  }
  if (has(record, 'text')) {
    const text = stringField(at, record, 'text', 'text');
    return { format: 'text', task, prompt: '', response: text, text };
  }
  if (has(record, fields.prompt)) throw new Error(`${at}: missing field "${fields.response}" (the response); the record has ${keysOf(record)}`);
  throw new Error(`${at}: the record fits none of the formats (it has ${keysOf(record)}); the formats are ${formatList(fields)}`);
}
