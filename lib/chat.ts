// Chat templates (Hugging Face's `chat_template`, a Jinja template in tokenizer_config.json or
// chat_template.jinja), rendered with @huggingface/jinja as transformers renders them. Used by the
// datasets (chat records), Tokenizer.applyChatTemplate and generateChat.
import { Template } from '@huggingface/jinja';

import { BudgetExceededError, budgetFor, withBudget } from './util/budget';

/** One turn of a conversation: `{role: 'system' | 'user' | 'assistant', content}`. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** The special tokens a template may write (`bos_token`, `eos_token`, `pad_token`). */
export interface ChatSpecialTokens {
  bosToken?: string | undefined;
  eosToken?: string | undefined;
  padToken?: string | undefined;
}

const compiled = new Map<string, Template>();

/**
 * The text `source` renders for `messages`; with `addGenerationPrompt` the template's opening of the
 * assistant's turn follows (what a model continues). Throws "the chat template does not parse" or
 * "the chat template failed: ..." with the template's own message. A template is a program from a
 * downloaded file: its rendering has a time budget (`budgetFor` the characters of the template and
 * the messages: 1 s plus 1 ms per 100 characters), past which it is stopped with an error.
 */
export function renderChat(source: string, messages: readonly ChatMessage[], addGenerationPrompt: boolean, specials: ChatSpecialTokens): string {
  let template = compiled.get(source);
  if (!template) {
    try {
      template = new Template(source);
    } catch (err) {
      throw new Error(`the chat template does not parse: ${(err as Error).message}`);
    }
    checkPadding(template.parsed);
    compiled.set(source, template);
  }
  const chars = messages.reduce((n, m) => n + m.content.length + m.role.length, source.length);
  const items = {
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: addGenerationPrompt,
    bos_token: specials.bosToken ?? '',
    eos_token: specials.eosToken ?? '',
    pad_token: specials.padToken ?? '',
  };
  try {
    return withBudget(budgetFor(chars), () => template.render(items), () => 'the chat template ran too long (a loop that does not end soon?)');
  } catch (err) {
    if (err instanceof BudgetExceededError) throw err;
    throw new Error(`the chat template failed: ${(err as Error).message}`);
  }
}

/** The widest indent or center a template may ask for (real templates indent by a few spaces). */
const MAX_PAD_WIDTH = 1000;

/**
 * Refuses `indent(n)` and `center(n)` filters whose width is not a number up to MAX_PAD_WIDTH: one
 * such call is a single built-in that the time budget cannot stop (indent(50000 * 10000) built a
 * 500 MB string in 3 s against a 1 s budget).
 */
function checkPadding(program: unknown): void {
  const stack = [program];
  while (stack.length) {
    const v = stack.pop();
    if (Array.isArray(v)) stack.push(...v);
    else if (v !== null && typeof v === 'object') {
      const node = v as { type?: string; filter?: { type?: string; callee?: { value?: unknown }; args?: { type?: string; value?: unknown }[] } };
      const f = node.filter;
      if (node.type === 'FilterExpression' && f?.type === 'CallExpression' && (f.callee?.value === 'indent' || f.callee?.value === 'center')) {
        const width = f.args?.[0];
        const ok = width === undefined || ((width.type === 'IntegerLiteral' || width.type === 'NumericLiteral') && typeof width.value === 'number' && width.value <= MAX_PAD_WIDTH);
        if (!ok) throw new Error(`the chat template's ${String(f.callee.value)}(...) takes a width that is not a number up to ${MAX_PAD_WIDTH}: a wider one runs past the template's time budget`);
      }
      stack.push(...Object.values(v));
    }
  }
}

/** Checks a list of messages as a template receives it; `where` prefixes errors. */
export function checkMessages(messages: unknown, where: string): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw new TypeError(`${where}: messages must be a non-empty array of {role, content}`);
  return messages.map((m, i) => {
    if (typeof m !== 'object' || m === null || typeof (m as ChatMessage).role !== 'string' || typeof (m as ChatMessage).content !== 'string') {
      throw new TypeError(`${where}: messages[${i}] must be {role: string, content: string}`);
    }
    return { role: (m as ChatMessage).role, content: (m as ChatMessage).content };
  });
}
