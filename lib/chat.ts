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
