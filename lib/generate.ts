// Generation one token at a time (Model.stream) and from text to text (generateText).
import type { Model, StreamOptions } from './model';
import { idList } from './token-batch';
import { ChatMessage, checkMessages, renderChat } from './chat';
import { encodePrompt, encodeRendered } from './data';
import type { TextTokenizer } from './tokenizer';


export interface GenerateTextOptions extends StreamOptions {
  /** Called with each new piece of text as soon as it decodes (whole characters only). */
  onText?: (text: string) => void;
  /**
   * Put the tokenizer's bos first (when it has one), as rlora's datasets encode prompts by default
   * (DatasetOptions.addBos). Default true; an adapter records what its training data used
   * (adapter.trainingData.addBos). The prompt is then encoded without other special tokens.
   */
  addBos?: boolean;
}



/**
 * Continues `prompt` and returns the new text: encodes the prompt as datasets encode prompts (the
 * tokenizer's bos first unless options.addBos is false, never an eos), streams new tokens (Model.stream) and decodes those before the
 * first eos. The eos ids are options.eosTokenId, else the model config's, else the tokenizer's.
 */
export async function generateText(model: Model, tokenizer: TextTokenizer, prompt: string, options: GenerateTextOptions = {}): Promise<string> {
  if (typeof prompt !== 'string') throw new TypeError(`generateText: prompt must be a string, got ${typeof prompt}`);
  const { addBos, ...rest } = options;
  // exactly as a dataset encodes a prompt (it used to follow the tokenizer's own rules, which for
  // the byte tokenizer meant no bos: generation then disagreed with evaluation)
  return continueIds(model, tokenizer, encodePrompt(tokenizer, prompt, addBos ?? true), rest);
}

/**
 * Answers a conversation: renders `messages` with the tokenizer's chat_template and the generation
 * prompt (Tokenizer.applyChatTemplate(messages, {addGenerationPrompt: true})), encodes that text as
 * datasets encode chat records (the special tokens it writes become their ids), and returns the new
 * text up to the first eos, as generateText does. This is how an adapter trained on chat records is
 * used: its evaluation generates from the same tokens.
 */
export async function generateChat(model: Model, tokenizer: TextTokenizer, messages: readonly ChatMessage[], options: Omit<GenerateTextOptions, 'addBos'> = {}): Promise<string> {
  if (!tokenizer.chatTemplate) throw new Error('generateChat: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja); use generateText with a prompt template instead');
  const text = renderChat(tokenizer.chatTemplate, checkMessages(messages, 'generateChat'), true, tokenizer);
  return continueIds(model, tokenizer, encodeRendered(tokenizer, text), options);
}

/** Streams new tokens after `ids` and returns their text before the first eos (generateText, generateChat). */
async function continueIds(model: Model, tokenizer: TextTokenizer, ids: number[], options: Omit<GenerateTextOptions, 'addBos'>): Promise<string> {
  const { onText, ...rest } = options;
  const configEos = idList(model.config.eos_token_id);
  const eos = options.eosTokenId !== undefined ? idList(options.eosTokenId) : configEos.length ? configEos : idList(tokenizer.eosTokenId);
  const fresh: number[] = [];
  let shown = '';
  for await (const token of model.stream([ids], { ...rest, eosTokenId: eos })) {
    if (eos.includes(token)) break;
    fresh.push(token);
    if (onText) {
      // a multi-byte character may span tokens: wait until it decodes whole
      const text = tokenizer.decode(fresh);
      if (!text.endsWith('\uFFFD') && text.startsWith(shown) && text.length > shown.length) {
        onText(text.slice(shown.length));
        shown = text;
      }
    }
  }
  const text = tokenizer.decode(fresh);
  if (onText && text.startsWith(shown) && text.length > shown.length) onText(text.slice(shown.length));
  return text;
}

/**
 * The prompt a template makes of `prompt`: the template up to `{response}` (all of it when it has
 * none) with `{prompt}` filled in, as rlora's datasets build their prompts.
 */
export function applyPromptTemplate(template: string, prompt: string): string {
  const at = template.indexOf('{response}');
  const head = at < 0 ? template : template.slice(0, at);
  return head.replace(/\{prompt\}/g, () => prompt);
}
