// rlora eval: per-task loss and exact-match accuracy of an adapter on a JSON lines file.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { DatasetOptions } from '../data';
import { MAX_THREADS } from '../threads';
import { writeFileFully } from '../util/files';
import type { ModelSource } from './common';
import { InputError, intOption, parseArgs, stringOption, Subcommand, UsageError } from './args';
import { adapterBase, as, checkDataFiles, checkVocabulary, evalTable, lib, loadModel, loadTokenizer, modelArgument, resolveFolder } from './common';
import { isInsideFolder } from '../hub/cache';
import { BUILTIN_METRICS } from '../trainer/metrics';
import { MAX_EVAL_EXTRA_TOKENS } from '../trainer/options';
import { readRunConfig, RunConfig } from './runconfig';

const BUILTIN_METRIC_NAMES = Object.keys(BUILTIN_METRICS);
import { metricLines } from './train';
import { ADAPTER_CONFIG_FILE, RLORA_CONFIG_FILE } from '../adapter/files';

export const evalCommand: Subcommand = {
  summary: 'per-task loss and exact-match accuracy of an adapter on a JSON lines file',
  help: `rlora eval --adapter DIR|ID --data FILE [--model DIR|ID] [--tokenizer FILE|byte] [options]
rlora eval --config run.json [--adapter DIR] [--data FILE] [options]

Attaches the adapter to the base model and evaluates every example of the data file: per task the
mean cross-entropy per response token (loss), the share of examples whose greedy generation equals
the response exactly (accuracy), and the number of examples (count).

  --adapter DIR|ID    an adapter folder (adapter_config.json, adapter_model.safetensors), a
                      checkpoint folder, or a Hub repo id ("org/name": the Hugging Face cache,
                      else a download into it); with --config, default outputDir/adapter
  --data FILE         JSON lines of {"task", "prompt", "response"}; with --config, default data.eval,
                      or the part of data.train that data.validationSplit holds out
  --model DIR|ID      the base model's Hugging Face folder or Hub repo id; default: the folder
                      or repo the adapter names (base_model_name_or_path, with its revision), or
                      run.json's model with --config
  --tokenizer T       a tokenizer.json, a folder holding one, or "byte"; default: run.json's, or
                      the model folder's tokenizer.json
  --config FILE       take model, tokenizer, data options (template, maxLength, fields), batch size
                      and evalExtraTokens from a run.json (as rlora train reads it)
  --template T        e.g. "Q: {prompt}\\nA: {response}" (the loss starts at {response})
  --max-length N      most tokens of a sequence (default 512)
                      Without --config, template, maxLength, fields and tokenizer default to what
                      the adapter was trained with (its rlora_config.json records them; stderr says so)
  --batch-size N      examples per batch (default 8)
  --extra-tokens N    greedy generation runs this many tokens past the response length (default 4)
  --metrics LIST      built-in metrics to add, comma-separated: ${BUILTIN_METRIC_NAMES.join(', ')}
                      (default: run.json's trainer.metrics with --config, else none)
  --predictions FILE  write every example's {task, prompt, reference, prediction, correct} as JSON lines
  --threads N         threads of the matrix products (default: the ${os.availableParallelism()} usable cores,
                      or OMP_NUM_THREADS)
  --json              print {"tasks": {task: {loss, accuracy, count, metrics?}}, ...} as JSON

Examples:
  rlora eval --model models/SmolLM2-135M --adapter runs/a/adapter --data data/eval.jsonl
  rlora eval --config run.json --json
  rlora eval --config run.json --metrics exactMatch,charF1 --predictions preds.jsonl
  rlora eval --config run.json --adapter runs/a/checkpoint-400 --data data/test.jsonl`,
  run: (args) => runEval(args),
};

async function runEval(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, {
    adapter: 'value', data: 'value', model: 'value', tokenizer: 'value', config: 'value', template: 'value',
    'max-length': 'value', 'batch-size': 'value', 'extra-tokens': 'value', threads: 'value', json: 'flag', metrics: 'value', predictions: 'value',
  });
  if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
  const cfgFile = stringOption(opts, 'config');
  const cfg: RunConfig | undefined = cfgFile ? readRunConfig(cfgFile) : undefined;
  const adapterArg = stringOption(opts, 'adapter') ?? (cfg ? path.join(cfg.outputDir, 'adapter') : undefined);
  if (!adapterArg) throw new UsageError('--adapter DIR is required (or --config run.json, whose outputDir/adapter is used)');
  const data = stringOption(opts, 'data') ?? cfg?.data.eval;
  // run.json without data.eval but with data.validationSplit: the held-out part of data.train, as rlora train drew it
  const heldOut = data === undefined && cfg?.data.validationSplit !== undefined ? cfg : undefined;
  if (!data && !heldOut) throw new UsageError(`--data FILE is required${cfg ? ' (run.json has neither data.eval nor data.validationSplit)' : ''}`);
  const batchSize = intOption(opts, 'batch-size', 1) ?? cfg?.trainer.batchSize;
  const extra = intOption(opts, 'extra-tokens', 0, MAX_EVAL_EXTRA_TOKENS) ?? cfg?.trainer.evalExtraTokens;
  const maxLength = intOption(opts, 'max-length', 2) ?? cfg?.data.options.maxLength;
  const threads = intOption(opts, 'threads', 1, MAX_THREADS);
  const metricsOpt = stringOption(opts, 'metrics');
  let metrics = cfg?.trainer.metrics as Record<string, 'exactMatch' | 'charF1'> | undefined;
  if (metricsOpt !== undefined) {
    const names = metricsOpt.split(',').map((m) => m.trim()).filter((m) => m !== '');
    const bad = names.find((m) => !BUILTIN_METRIC_NAMES.includes(m));
    if (bad !== undefined || names.length === 0) throw new UsageError(`--metrics must list built-in metrics (${BUILTIN_METRIC_NAMES.join(', ')}), got ${JSON.stringify(bad ?? metricsOpt)}`);
    metrics = Object.fromEntries(names.map((m) => [m, m])) as Record<string, 'exactMatch' | 'charF1'>;
  }
  const predictionsFile = stringOption(opts, 'predictions');
  // the options read (a bad one is a usage error), the data next: before an adapter or model loads
  checkDataFiles(heldOut ? heldOut.data.train : data, heldOut ? `${heldOut.file}: data.train` : stringOption(opts, 'data') !== undefined ? '--data' : `${cfg!.file}: data.eval`);

  const adapterDir = await resolveFolder(adapterArg, 'adapter', '--adapter');
  const configPath = path.join(adapterDir, ADAPTER_CONFIG_FILE);
  if (!fs.existsSync(configPath)) throw new InputError(`${adapterDir} is not an adapter folder: no adapter_config.json`);
  let source: ModelSource;
  const modelOpt = stringOption(opts, 'model');
  if (modelOpt) source = { path: modelArgument(modelOpt) };
  else if (cfg) source = cfg.model;
  else source = adapterBase(adapterDir);

  const rl = lib();
  if (threads !== undefined) rl.setNumThreads(threads); // else the library's default: the usable cores
  const model = await loadModel(source, `model${source.path && !modelOpt && !cfg ? ` ${source.path} (the adapter's base_model_name_or_path)` : ''}`);
  const adapter = await as(`adapter ${adapterDir}`, () => rl.Adapter.load(model, adapterDir));
  // Without run.json: encode the data as the adapter was trained (rlora_config.json `data`,
  // written by the Trainer, read by Adapter.load), unless the options say otherwise.
  const recorded = cfg ? undefined : adapter.trainingData;
  const template = stringOption(opts, 'template');
  if (recorded) {
    const used = [
      template === undefined && recorded.template !== null ? `template ${JSON.stringify(recorded.template)}` : '',
      maxLength === undefined ? `maxLength ${recorded.maxLength}` : '',
      !stringOption(opts, 'tokenizer') && recorded.tokenizer ? `tokenizer ${recorded.tokenizer}` : '',
    ].filter(Boolean);
    if (used.length) console.error(`rlora eval: encoding the data as the adapter was trained (${path.join(adapterDir, RLORA_CONFIG_FILE)}): ${used.join(', ')}`);
    if (recorded.templateFunction && template === undefined) {
      console.error('rlora eval: note: the adapter was trained with a template function, which its folder cannot record: pass --template to encode as in training');
    }
  }
  const given = stringOption(opts, 'tokenizer') ?? cfg?.tokenizer;
  const recordedTokenizer = given === undefined && recorded?.tokenizer ? confinedTokenizer(recorded.tokenizer, adapterDir, model.source) : undefined;
  const tokenizer = await loadTokenizer(given ?? recordedTokenizer, model.source, 'tokenizer');
  const fromAdapter = recorded
    ? { ...(recorded.template !== null ? { template: recorded.template } : {}), maxLength: recorded.maxLength, fields: recorded.fields, addBos: recorded.addBos, addEos: recorded.addEos }
    : {};
  const dataOptions: Omit<DatasetOptions, 'maxLineBytes'> = { ...(cfg?.data.options ?? fromAdapter), tokenizer, maxLength: maxLength ?? cfg?.data.options.maxLength ?? recorded?.maxLength };
  if (template !== undefined) dataOptions.template = template;
  const ds = heldOut
    ? (await as(`${heldOut.file}: data.train`, () => rl.MultiTaskDataset.fromJsonl(heldOut.data.train, dataOptions))).split(heldOut.data.validationSplit!, heldOut.data.splitSeed).validation
    : await as('', () => rl.MultiTaskDataset.fromJsonl(data!, dataOptions));
  if (heldOut) console.error(`rlora eval: evaluating data.validationSplit ${heldOut.data.validationSplit} of data.train (splitSeed ${heldOut.data.splitSeed}, ${ds.size} examples), as rlora train held it out`);
  checkVocabulary(model, tokenizer, [ds]);
  // (keys left out, not undefined: the trainer's defaults apply to absent keys only)
  const trainer = new rl.Trainer(model, adapter, {
    progress: false, ...(batchSize ? { batchSize } : {}), ...(extra !== undefined ? { evalExtraTokens: extra } : {}), ...(metrics ? { metrics } : {}),
  });
  const { tasks, predictions } = await trainer.evaluate(ds, { returnPredictions: true });
  if (predictionsFile) {
    try {
      writeFileFully(predictionsFile, predictions.map((p) => JSON.stringify(p) + '\n').join(''));
    } catch (e) {
      throw new InputError(`--predictions ${predictionsFile} cannot be written: ${(e as Error).message}`);
    }
  }
  if (opts.json) {
    const dataField = data !== undefined ? path.resolve(data) : { train: heldOut!.data.train, validationSplit: heldOut!.data.validationSplit, splitSeed: heldOut!.data.splitSeed };
    console.log(JSON.stringify({ tasks, adapter: path.resolve(adapterDir), model: source.path ?? null, data: dataField, examples: ds.size }, null, 2));
  } else {
    const what = data ?? `data.validationSplit ${heldOut!.data.validationSplit} of data.train`;
    console.log(`${ds.size} examples of ${what}, adapter ${adapterDir}${source.path ? `, model ${source.path}` : ''}:\n`);
    console.log(evalTable(tasks));
    const m = metricLines(tasks);
    if (m) console.log(m);
    if (predictionsFile) console.log(`predictions written to ${predictionsFile}`);
  }
  return 0;
}

/**
 * The tokenizer an adapter folder records (rlora_config.json `data.tokenizer`), where it is "byte" or
 * a file inside the adapter folder or the model folder given (links resolved). An adapter folder is
 * untrusted input: a path elsewhere is refused, naming the file and the key, so that a downloaded
 * adapter cannot make rlora read (and show parts of) any file. A path that does not exist is
 * ignored, as before (the model folder's tokenizer is used).
 */
export function confinedTokenizer(named: string, adapterDir: string, modelDir: string | undefined): string | undefined {
  if (named === 'byte') return named;
  const file = path.resolve(adapterDir, named);
  if (!fs.existsSync(file)) return undefined;
  // (a Hub repo's snapshot folder in the cache links its files to the repo's blobs/: inside too)
  const inside = (dir: string | undefined): boolean => dir !== undefined && isInsideFolder(file, dir);
  if (inside(adapterDir) || inside(modelDir)) return file;
  throw new InputError(
    `${path.join(adapterDir, RLORA_CONFIG_FILE)}: data.tokenizer names ${JSON.stringify(named)}, which is outside the adapter folder` +
      `${modelDir ? ' and the model folder' : ''}: refused (an adapter folder may only name files inside itself or the model's folder); pass --tokenizer to choose one`,
  );
}
