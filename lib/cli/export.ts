// rlora export: a model (with a LoRA merged in) as a GGUF file for llama.cpp, node-llama-cpp and
// Ollama, or a LoRA adapter as a GGUF LoRA adapter over such a file (lib/gguf/).
import * as fs from 'fs';
import * as path from 'path';

import { formatBytes, InputError, parseArgs, stringOption, Subcommand, UsageError } from './args';
import { adapterBase, as, lib, loadModel, loadTokenizer, modelArgument, resolveFolder } from './common';
import { ADAPTER_CONFIG_FILE } from '../adapter/files';

const FORMATS = ['gguf', 'gguf-lora'] as const;
const DTYPES = ['f32', 'f16', 'bf16', 'q8_0'] as const;

export const exportCommand: Subcommand = {
  summary: 'write a model (a LoRA merged in) or a LoRA adapter as GGUF, for llama.cpp, node-llama-cpp and Ollama',
  help: `rlora export --format gguf [--model DIR|ID] [--adapter DIR|ID] --out FILE [--dtype f32|f16|bf16|q8_0]
rlora export --format gguf-lora --adapter DIR|ID [--model DIR|ID] --out FILE [--dtype f32|f16|bf16|q8_0]

--format gguf writes the base model, with the adapter merged into its weights when --adapter is
given, as one GGUF file that llama.cpp loads: the architecture's metadata (LLaMA and Qwen2), the
weights under llama.cpp's names and layouts, and the tokenizer (the model folder's tokenizer.json,
or --tokenizer). Only single-head (lora) adapters merge: R-LoRA and HydraLoRA heads are mixed per
token by a router, which no fixed weight can hold.

--format gguf-lora writes a single-head adapter as a GGUF LoRA adapter (general.type adapter,
adapter.type lora, adapter.lora.alpha) that llama.cpp applies over the base model's GGUF file
(node-llama-cpp: createContext({lora: FILE})). The base model is --model, else the folder that
adapter_config.json's base_model_name_or_path names.

  --format gguf|gguf-lora  what to write
  --model DIR|ID           the base model's Hugging Face folder, or a Hub repo id; default with
                           --adapter: the base model the adapter names (base_model_name_or_path)
  --adapter DIR|ID         an adapter folder (adapter_config.json, adapter_model.safetensors),
                           or a Hub repo id
  --tokenizer FILE|byte    the tokenizer to write (default: the model folder's tokenizer.json)
  --out FILE               the .gguf file to write (refused if it exists, unless --overwrite)
  --dtype T                weight matrices in f32 (default), f16, bf16 or q8_0; norms and biases stay f32
  --name NAME              general.name (default: the model folder's name; with --adapter, the
                           --out file's name without .gguf)
  --overwrite              replace --out

Examples:
  rlora export --format gguf --model models/SmolLM2-135M --adapter runs/a/adapter --out smol-a.gguf
  rlora export --format gguf --model models/SmolLM2-135M --out smol-q8.gguf --dtype q8_0
  rlora export --format gguf-lora --model models/SmolLM2-135M --adapter runs/a/adapter --out a-lora.gguf`,
  run: (args) => runExport(args),
};

async function runExport(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, { format: 'value', model: 'value', adapter: 'value', tokenizer: 'value', out: 'value', dtype: 'value', name: 'value', overwrite: 'flag' });
  if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
  const format = stringOption(opts, 'format');
  if (format === undefined) throw new UsageError(`--format is required: ${FORMATS.join(' or ')}`);
  if (!(FORMATS as readonly string[]).includes(format)) throw new UsageError(`--format must be ${FORMATS.join(' or ')}, got ${JSON.stringify(format)}`);
  const dtype = stringOption(opts, 'dtype') ?? 'f32';
  if (!(DTYPES as readonly string[]).includes(dtype)) throw new UsageError(`--dtype must be one of ${DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
  const out = stringOption(opts, 'out');
  if (!out) throw new UsageError('--out FILE is required');
  let modelArg = stringOption(opts, 'model');
  const adapterArg = stringOption(opts, 'adapter');
  const name = stringOption(opts, 'name');
  if (fs.statSync(out, { throwIfNoEntry: false })?.isDirectory()) throw new InputError(`--out ${out} is a folder: name the .gguf file to write`);
  if (fs.existsSync(out) && !opts.overwrite) throw new InputError(`${out} exists: pass --overwrite to replace it`);
  const adapterDir = adapterArg === undefined ? undefined : await resolveFolder(adapterArg, 'adapter', '--adapter');
  if (adapterDir !== undefined && !fs.existsSync(path.join(adapterDir, ADAPTER_CONFIG_FILE))) throw new InputError(`${adapterDir} is not an adapter folder: no ${ADAPTER_CONFIG_FILE}`);

  if (format === 'gguf-lora') {
    if (!adapterDir) throw new UsageError('--format gguf-lora needs --adapter DIR');
    if (opts.tokenizer !== undefined) throw new UsageError('--tokenizer is for --format gguf: a LoRA file holds no vocabulary');
  } else if (!modelArg && !adapterDir) throw new UsageError('--format gguf needs --model DIR (or an --adapter whose base model it is)');

  const rl = lib();
  // without --model: the base the adapter names
  const source = modelArg !== undefined ? { path: modelArgument(modelArg) } : adapterBase(adapterDir!, '--model DIR');
  modelArg ??= source.path!;
  const model = await loadModel(source, `model${stringOption(opts, 'model') === undefined ? ` ${source.path} (the adapter's base_model_name_or_path)` : ''}`);
  const modelDir = model.source!; // a Hub repo's snapshot folder
  const written = path.resolve(out);
  const adapter = adapterDir === undefined ? undefined : await as(`adapter ${adapterDir}`, () => rl.Adapter.load(model, adapterDir));
  if (adapter && adapter.options.heads !== 1) {
    throw new InputError(
      `${adapterDir} is a ${adapter.options.method} adapter with ${adapter.options.heads} heads: it cannot be ${format === 'gguf' ? 'merged' : 'written as a LoRA'}, because its router mixes the heads differently for every token; ` +
        `export the base model (--format gguf without --adapter) and use the adapter with rlora`,
    );
  }
  let result: import('../gguf/export').GgufExportResult;
  if (format === 'gguf-lora') {
    result = await as(`writing ${out}`, () => rl.exportGgufLora(adapter!, written, { dtype: dtype as never, ...(name ? { name } : {}), baseModel: { name: modelName(modelArg, modelDir) } }));
  } else {
    const tokenizer = await loadTokenizer(stringOption(opts, 'tokenizer'), modelDir, 'tokenizer');
    if (!(tokenizer instanceof rl.Tokenizer) && !(tokenizer instanceof rl.ByteTokenizer)) throw new InputError('the tokenizer must be a tokenizer.json or "byte"');
    if (adapter) adapter.merge();
    const fileName = path.basename(out).replace(/\.gguf$/i, '');
    result = await as(`writing ${out}`, () =>
      rl.exportGguf(model, written, {
        tokenizer,
        dtype: dtype as never,
        name: name ?? (adapter ? fileName : modelName(modelArg, modelDir)),
        ...(adapter ? { baseModel: { name: modelName(modelArg, modelDir) } } : {}),
      }),
    );
  }
  const types = Object.entries(result.types).map(([t, n]) => `${n} ${t}`).join(', ');
  const what = format === 'gguf-lora' ? `LoRA adapter (alpha ${result.alpha}, rank ${[...new Set(result.ranks)].join('/')})` : adapter ? `model with ${adapterDir} merged` : 'model';
  console.log(`wrote ${out}: ${result.architecture} ${what}, ${types} tensors, ${formatBytes(fs.statSync(written).size)}`);
  return 0;
}

/** The model's name for general.name: a Hub repo id as given, else the folder's name. */
function modelName(arg: string, dir: string): string {
  return fs.existsSync(arg) ? path.basename(path.resolve(dir)) : arg;
}

