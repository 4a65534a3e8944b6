// README.md of an adapter folder (Adapter.save(dir, {modelCard})), as Hugging Face model cards
// are written: YAML front matter (library, base model, tags), then what the adapter is, how its
// data was encoded, its evaluation, and how to load it. Made from plain values: it knows no class.

export interface ModelCardInput {
  /** The folder's name, for the title and the loading sample. */
  name: string;
  version: string;
  baseModel: string | null;
  options: { method: string; rank: number; heads: number; alpha: number; dropout: number; dropoutOn: string; rankStabilization: boolean };
  targetModules: string[];
  trainableParameters: number;
  /** How the training data was encoded (adapter.trainingData). */
  data?: { template: string | null; maxLength: number; chat?: boolean; tokenizer: string | null };
  /** Evaluation per task (Trainer.evaluate's result), shown as a table. */
  metrics?: Record<string, { loss: number; accuracy: number; count: number; metrics?: Record<string, number> }>;
  /** A paragraph of your own, after the title. */
  description?: string;
}

const yamlString = (s: string): string => JSON.stringify(s); // JSON strings are YAML strings
const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

export function renderModelCard(c: ModelCardInput): string {
  const o = c.options;
  const front = [
    '---',
    'library_name: rlora',
    ...(c.baseModel ? [`base_model: ${yamlString(c.baseModel)}`] : []),
    'tags:',
    '- rlora',
    `- ${o.method}`,
    '- lora',
    '---',
  ];
  const lines = [...front, '', `# ${c.name}`, ''];
  if (c.description) lines.push(c.description, '');
  lines.push(
    `A ${o.method === 'rlora' ? 'R-LoRA' : o.method === 'hydralora' ? 'HydraLoRA' : 'LoRA'} adapter made with rlora ${c.version}${c.baseModel ? ` for \`${c.baseModel}\`` : ''}: ` +
      `${c.trainableParameters.toLocaleString('en-US')} trainable parameters.`,
    '',
    '| option | value |',
    '| --- | --- |',
    `| method | ${o.method} |`,
    `| rank | ${o.rank} |`,
    `| heads | ${o.heads} |`,
    `| alpha | ${o.alpha}${o.rankStabilization ? ' (rsLoRA: alpha / sqrt(rank))' : ''} |`,
    `| dropout | ${o.dropout} on the ${o.dropoutOn} |`,
    `| target modules | ${cell(c.targetModules.join(', '))} |`,
    '',
  );
  if (c.data) {
    lines.push('## Training data', '');
    lines.push(c.data.chat ? '- conversations rendered with the tokenizer\'s chat template' : `- template: ${c.data.template === null ? 'none (prompt and response as they are)' : `\`${cell(JSON.stringify(c.data.template))}\``}`);
    lines.push(`- at most ${c.data.maxLength} tokens an example`);
    if (c.data.tokenizer) lines.push(`- tokenizer: ${c.data.tokenizer === 'byte' ? 'the byte tokenizer' : `\`${cell(c.data.tokenizer)}\``}`);
    lines.push('');
  }
  if (c.metrics && Object.keys(c.metrics).length) {
    const extra = [...new Set(Object.values(c.metrics).flatMap((m) => Object.keys(m.metrics ?? {})))];
    lines.push('## Evaluation', '', `| task | loss | accuracy | count${extra.map((m) => ` | ${m}`).join('')} |`, `| --- | --- | --- | ---${extra.map(() => ' | ---').join('')} |`);
    for (const [task, m] of Object.entries(c.metrics)) {
      lines.push(`| ${cell(task)} | ${m.loss.toFixed(4)} | ${pct(m.accuracy)} | ${m.count}${extra.map((k) => ` | ${m.metrics?.[k] !== undefined ? m.metrics[k].toFixed(4) : ''}`).join('')} |`);
    }
    lines.push('');
  }
  lines.push(
    '## Use',
    '',
    '```ts',
    "import { Adapter, Model, Tokenizer, generateText } from 'rlora';",
    '',
    `const model = await Model.fromPretrained(${JSON.stringify(c.baseModel ?? 'path/to/base-model')});`,
    `const adapter = await Adapter.load(model, ${JSON.stringify(c.name)});`,
    '```',
    '',
  );
  return lines.join('\n');
}
