// rlora train --config run.json: fine-tunes an adapter as run.json describes, with progress,
// checkpoints, a per-task evaluation at the end, and Ctrl-C that stops after the current step. The
// Trainer does the run (its progress, lines, Ctrl-C, the outputDir's lock and earlier run): this
// file turns run.json and the flags into its options and reports the end.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { DatasetOptions, MultiTaskDataset } from '../data';
import type { Trainer, TrainerOptions } from '../trainer';
import { InputError, intOption, parseArgs, stringOption, Subcommand, UsageError } from './args';
import { as, checkDataFiles, checkVocabulary, describeDataset, lib, loadModel, loadTokenizer } from './common';
import { dieWithLauncher, launch, launchOptions, withoutLaunchFlags } from './launch';
import { describeRunConfig, readRunConfig, RunConfig } from './runconfig';
import { printable, shellQuote } from '../util/printable';
import { CHECKPOINT_FILES, checkpointName, EarlierRunError, earlierRunFiles, earlierRunText, latestCheckpoint, LOG_FILE, readTrainerState, TRAINER_STATE_FILE } from '../trainer/checkpoint';
import { evalText, fmt } from '../logging/text';
import { ensureWritableFolder, writeFileAtomically } from '../util/files';
import { MAX_THREADS } from '../threads';

/** Exit code after Ctrl-C (128 + SIGINT), as shells report it. */
export const INTERRUPTED = 130;

const EXAMPLE = `{
  "model": "models/SmolLM2-135M",
  "tokenizer": "models/SmolLM2-135M/tokenizer.json",
  "data": { "train": "data/train.jsonl", "eval": "data/eval.jsonl",
            "template": "### {task}\\n{prompt}\\n### Answer\\n{response}", "maxLength": 256 },
  "adapter": { "method": "rlora", "rank": 8, "heads": 5, "alpha": 16, "dropout": 0.05,
               "targetModules": ["gate_proj", "up_proj", "down_proj"] },
  "trainer": { "learningRate": 2e-4, "epochs": 3, "batchSize": 8, "evalEvery": 200,
               "saveEvery": 200, "keepCheckpoints": 2 },
  "outputDir": "runs/smollm-rlora"
}`;

export const train: Subcommand = {
  summary: 'fine-tune an adapter on several tasks as a run.json file describes',
  help: `rlora train --config run.json [--resume <checkpoint>|latest] [--max-steps N] [--overwrite] [--threads N]
            [--nproc-per-node N [--nnodes M --node-rank K --master-addr HOST --master-port P]]

Fine-tunes a multi-head LoRA adapter on the tasks of a JSON lines file. Shows progress (a bar on
a terminal, else a line now and then on stderr), writes outputDir/log.jsonl (one line per step,
one per evaluation), checkpoints outputDir/checkpoint-<step>/, and when done the adapter to
outputDir/adapter/ and the per-task evaluation of data.eval to stdout.

Ctrl-C stops after the current step, writes a checkpoint and exits (code ${INTERRUPTED}) saying how to
resume; a second Ctrl-C quits at once without one.

  --config FILE        the run.json file (required); keys below
  --resume DIR         continue from this checkpoint (overrides run.json's resume); --resume latest:
                       the newest complete checkpoint of outputDir
  --max-steps N        total optimizer steps (overrides trainer.maxSteps); with --resume it may
                       extend (or shorten) the run: the learning-rate schedule is recomputed for N
  --overwrite          start over in an outputDir that holds an earlier run (deletes its
                       log.jsonl, checkpoint-*/, eval-*.jsonl, metrics.csv, tensorboard/ and
                       adapter/, and writes run.json again; nothing else)
  --threads N          threads of the matrix products (default: the ${os.availableParallelism()} usable cores, or OMP_NUM_THREADS; with
                       --nproc-per-node: the cores shared among the workers)

Data parallel (README "Data parallel"), as torchrun: each worker trains on its share of every
global batch (trainer.batchSize rows each; the global batch is batchSize x gradientAccumulation x
workers), the gradients are summed over the workers with Gloo, rank 0 writes the files. Output
lines are prefixed with the rank; Ctrl-C stops every worker at the same step with one checkpoint.
  --nproc-per-node N   worker processes on this machine (default 1; at most the usable cores
                       unless --oversubscribe). Workers die with the launcher (kill -9 included)
  --nnodes M           machines (default 1); run the same command on each, with its --node-rank
  --node-rank K        this machine's index, 0 to M - 1 (default 0)
  --master-addr HOST   address of the machine with node rank 0 (default 127.0.0.1)
  --master-port P      a free port there for the rendezvous (default 29500)
A launcher that sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK itself (torchrun --no-python,
SLURM, Kubernetes) runs plain \`rlora train --config run.json\` in each process instead.

run.json keys (* required; paths are relative to the run.json file):
${describeRunConfig()}

A data line: {"task": "upper", "prompt": "cat", "response": "CAT"}

Example run.json:
${EXAMPLE.replace(/^/gm, '  ')}

Examples:
  rlora train --config run.json
  rlora train --config run.json --resume runs/smollm-rlora/checkpoint-400
  rlora train --config run.json --resume runs/smollm-rlora/checkpoint-400 --max-steps 1000
  rlora train --config run.json --resume latest
  rlora train --config run.json --nproc-per-node 2
  rlora eval --config run.json            # evaluate outputDir/adapter on data.eval again
  rlora plot runs/smollm-rlora/log.jsonl --out loss.svg`,
  run: (args) => runTrain(args),
};

/** run.json as written to outputDir: every path absolute, so it works from there too. */
function resolvedCopy(cfg: RunConfig): Record<string, unknown> {
  const raw = JSON.parse(JSON.stringify(cfg.raw)) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  if (typeof raw.model === 'string') raw.model = cfg.model.path;
  else if (raw.model.path !== undefined) raw.model.path = cfg.model.path;
  if (raw.tokenizer !== undefined) raw.tokenizer = cfg.tokenizer;
  raw.data.train = cfg.data.train; // one path or several, absolute
  if (raw.data.eval !== undefined) raw.data.eval = cfg.data.eval;
  raw.outputDir = cfg.outputDir;
  delete raw.resume;
  return raw;
}

export { metricLines } from '../logging/text';

/** data.train as the messages name it: the file, or the files joined by commas. */
function trainName(cfg: RunConfig): string {
  return typeof cfg.data.train === 'string' ? cfg.data.train : cfg.data.train.join(', ');
}

/**
 * The training set (data.train, one file or several) and the evaluation set: data.eval, or the
 * part of data.train that data.validationSplit holds out (the rest is trained on).
 */
async function readData(rl: ReturnType<typeof lib>, cfg: RunConfig, dataOptions: DatasetOptions): Promise<{ trainSet: MultiTaskDataset; evalSet?: MultiTaskDataset; evalName?: string }> {
  const all = await as(`${cfg.file}: data.train`, () => rl.MultiTaskDataset.fromJsonl(cfg.data.train, dataOptions));
  if (cfg.data.eval) return { trainSet: all, evalSet: await as(`${cfg.file}: data.eval`, () => rl.MultiTaskDataset.fromJsonl(cfg.data.eval!, dataOptions)), evalName: cfg.data.eval };
  if (cfg.data.validationSplit === undefined) return { trainSet: all };
  const { train, validation } = await as(`${cfg.file}: data.validationSplit`, async () => all.split(cfg.data.validationSplit!, cfg.data.splitSeed));
  return { trainSet: train, evalSet: validation, evalName: `data.validationSplit ${cfg.data.validationSplit} of data.train (splitSeed ${cfg.data.splitSeed})` };
}

async function runTrain(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, {
    config: 'value', resume: 'value', overwrite: 'flag', threads: 'value', 'max-steps': 'value',
    'nproc-per-node': 'value', nnodes: 'value', 'node-rank': 'value', 'master-addr': 'value', 'master-port': 'value', oversubscribe: 'flag',
  });
  if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
  const configFile = stringOption(opts, 'config');
  if (!configFile) throw new UsageError('--config run.json is required');
  const threadsGiven = intOption(opts, 'threads', 1, MAX_THREADS);
  const maxSteps = intOption(opts, 'max-steps', 1);
  const cfg = readRunConfig(configFile);
  const launching = launchOptions(opts);
  if (launching) {
    // the launcher: the same command in each worker, without the launcher's flags
    return launch([process.argv[1], 'train', ...withoutLaunchFlags(args)], { ...launching, threads: threadsGiven }, (s) => void process.stderr.write(s + '\n'));
  }
  const resume = opts.resume === 'latest' ? latest(cfg.outputDir) : typeof opts.resume === 'string' ? path.resolve(opts.resume) : cfg.resume;
  // data parallel (WORLD_SIZE > 1): every rank trains, rank 0 alone writes files and reports
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const world = await as('', () => (require('../distributed') as typeof import('../distributed')).worldSizeFromEnv()); // WORLD_SIZE=0 or abc: one line naming it
  const rank0 = world === 1 || process.env.RANK === '0';
  const say = (s: string): void => void (rank0 && process.stderr.write(printable(s) + '\n'));

  // the data first: a wrong path is one line before a model is loaded
  checkDataFiles(cfg.data.train, `${cfg.file}: data.train`);
  checkDataFiles(cfg.data.eval, `${cfg.file}: data.eval`);
  if (resume && !fs.existsSync(path.join(resume, TRAINER_STATE_FILE))) {
    throw new InputError(`${resume} is not a checkpoint (no ${TRAINER_STATE_FILE}); checkpoints are the ${checkpointName(0).replace('0', '<step>')} folders of outputDir`);
  }
  // before a model is loaded: an outputDir that cannot be written (a read-only mount) is one line,
  // and one holding an earlier run is refused as the Trainer's fit would (the same rule)
  if (rank0) await as('', () => ensureWritableFolder(cfg.outputDir, `${cfg.file}: outputDir`));
  if (rank0 && !resume && !opts.overwrite) {
    const earlier = earlierRunFiles(cfg.outputDir);
    if (earlier.length) throw new InputError(earlierRunCliText(cfg.outputDir, earlier));
  }

  // Ctrl-C (FitOptions.stopOnSigint): the first stops after the current step and the Trainer writes
  // a checkpoint, the second quits at once; before training starts it ends the process (nothing is written)
  const rl = lib();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  dieWithLauncher((require('../native') as typeof import('../native')).native.setParentDeathSignal); // a worker of --nproc-per-node
  if (threadsGiven !== undefined) rl.setNumThreads(threadsGiven); // else the library's default: the usable cores
  const model = await loadModel({ ...cfg.model, device: rl.distributed.rankDevice(cfg.model.device ?? cfg.trainer.device) }, `${cfg.file}: model`);
  say(`model      ${cfg.model.path ?? `random weights from model.config (seed ${cfg.model.seed})`}: ${model.resolvedConfig.architecture}, ${model.parameterCount().toLocaleString('en-US')} parameters, ${model.dtype} on ${model.device}`);
  const tokenizer = await loadTokenizer(cfg.tokenizer, model.source, `${cfg.file}: tokenizer`); // the model's folder (a Hub repo's snapshot)
  const dataOptions = { tokenizer, ...cfg.data.options };
  const { trainSet, evalSet, evalName } = await readData(rl, cfg, dataOptions);
  checkVocabulary(model, tokenizer, evalSet ? [trainSet, evalSet] : [trainSet]);
  say(`train      ${trainName(cfg)}: ${describeDataset(trainSet)}`);
  if (evalSet) say(`eval       ${evalName}: ${describeDataset(evalSet)}`);
  else if (cfg.trainer.evalEvery) say('note: trainer.evalEvery is set but neither data.eval nor data.validationSplit is: no evaluation');

  let trainer: Trainer;
  if (resume) {
    const overrides: Pick<TrainerOptions, 'outputDir' | 'progress' | 'maxSteps'> = { outputDir: cfg.outputDir, progress: cfg.trainer.progress };
    if (maxSteps !== undefined) overrides.maxSteps = maxSteps; // Trainer.resume warns that the schedule is recomputed
    trainer = await as(`resuming from ${resume}`, () => rl.Trainer.resume(resume, model, overrides));
    const o = trainer.options as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(cfg.trainer)) {
      if (k === 'maxSteps' && maxSteps !== undefined) continue;
      if (k !== 'progress' && JSON.stringify(o[k]) !== JSON.stringify(v)) {
        say(`note: trainer.${k} is ${JSON.stringify(v)} in run.json but ${JSON.stringify(o[k])} in the checkpoint; the checkpoint's applies`);
      }
    }
    say(`resume     ${resume}: step ${trainer.step} of ${maxSteps ?? readTrainerState(path.join(resume, TRAINER_STATE_FILE)).totalSteps}`);
  } else {
    const adapter = await as(`${cfg.file}: adapter`, () => rl.Adapter.attach(model, cfg.adapter));
    const options = { ...cfg.trainer, device: rl.distributed.rankDevice(cfg.trainer.device), outputDir: cfg.outputDir, overwriteOutputDir: Boolean(opts.overwrite), ...(maxSteps !== undefined ? { maxSteps } : {}) };
    trainer = await as(`${cfg.file}: trainer`, () => new rl.Trainer(model, adapter, options));
  }
  const a = trainer.adapter.options;
  say(`adapter    ${a.method}, rank ${a.rank}, heads ${a.heads}, ${trainer.adapter.layers.size} modules, ${trainer.adapter.trainableParameterCount().toLocaleString('en-US')} trainable parameters`);
  say(`output     ${cfg.outputDir}`);
  say(`threads    ${rl.describeThreadPools(rl.threadPools())}`);

  let total = 0;
  const adapterDir = path.join(cfg.outputDir, 'adapter');
  const history = await as('', () =>
    trainer
      .fit(trainSet, {
        evalDataset: evalSet,
        stopOnSigint: true,
        callbacks: [{
          // the Trainer has taken outputDir (locked, an earlier run refused or deleted): run.json is written then
          onTrainBegin: (state) => {
            total = state.totalSteps;
            if (!rank0) return;
            if (!resume && opts.overwrite) fs.rmSync(adapterDir, { recursive: true, force: true }); // the earlier run's
            writeFileAtomically(path.join(cfg.outputDir, 'run.json'), JSON.stringify(resolvedCopy(cfg), null, 2) + '\n');
          },
        }],
      })
      .catch((e: unknown) => {
        if (!(e instanceof EarlierRunError)) throw e;
        throw new InputError(earlierRunCliText(e.dir, e.files));
      }),
  );
  if (history.stopped === 'aborted') {
    const ckpt = history.lastCheckpoint ?? '(none)';
    say(
      `rlora train: interrupted at step ${trainer.step} of ${total}; checkpoint written to ${ckpt}\n` +
        `resume with: rlora train --config ${shellQuote(configFile)} --resume ${shellQuote(ckpt)}`, // pasted into a shell, it runs as printed
    );
    return INTERRUPTED;
  }
  if (history.stopped === 'nonFinite') {
    say(
      `rlora train: stopped at step ${trainer.step} of ${total}: ${history.skippedSteps} steps had a non-finite loss and were skipped (skipNonFinite), more than half of those planned; ` +
        `last checkpoint ${history.lastCheckpoint ?? '(none)'}; no adapter written. Lower trainer.learningRate, or check the data.`,
    );
    return 1;
  }
  if (history.stopped === 'earlyStopping') {
    const es = trainer.options.earlyStopping!;
    say(`rlora train: stopped early at step ${trainer.step} of ${total}: eval ${es.metric} did not improve by more than ${es.minDelta ?? 0} for ${es.patience ?? 1} evaluation(s)`);
  }
  if (history.bestCheckpoint) {
    say(`best checkpoint ${history.bestCheckpoint} (eval ${typeof trainer.options.saveBest === 'string' ? trainer.options.saveBest : trainer.options.saveBest?.metric} ${fmt(history.bestMetric!)})` +
      (trainer.options.loadBestAtEnd ? '; its adapter weights were loaded back and are written to adapter/' : ''));
  }
  if (!rank0) return 0; // rank 0 writes the adapter and reports
  trainer.adapter.save(adapterDir);
  // the evaluation of what adapter/ holds: the best checkpoint's when it was loaded back
  const bestStep = trainer.options.loadBestAtEnd && history.bestCheckpoint ? Number(/checkpoint-(\d+)$/.exec(history.bestCheckpoint)?.[1]) : undefined;
  const shown = bestStep !== undefined ? history.evals.find((e) => e.step === bestStep) : history.evals[history.evals.length - 1];
  console.log(`trained ${trainer.step} steps; adapter written to ${adapterDir}${bestStep !== undefined ? ` (the best checkpoint's, step ${bestStep})` : ''}`);
  console.log(`checkpoint ${history.lastCheckpoint}; log ${path.join(cfg.outputDir, LOG_FILE)}`);
  if (shown) console.log(`\neval at step ${shown.step}${bestStep !== undefined ? ', the adapter written' : ''} (${evalName}):\n${evalText(shown.tasks)}`);
  else console.log('(no data.eval or data.validationSplit in run.json: no evaluation)');
  return 0;
}

/** An earlier run in outputDir, with the CLI's flags as the remedies. */
function earlierRunCliText(dir: string, files: string[]): string {
  return earlierRunText(dir, files, { overwrite: 'pass --overwrite', resume: (c) => `continue it with --resume ${shellQuote(c)} (or --resume latest)` });
}

/** --resume latest: the newest complete checkpoint of outputDir. */
function latest(outputDir: string): string {
  const found = latestCheckpoint(outputDir);
  if (!found) throw new InputError(`--resume latest: outputDir ${outputDir} holds no complete checkpoint (a ${checkpointName(0).replace('0', '<step>')} folder with ${CHECKPOINT_FILES.join(', ')} and the adapter's files)`);
  return found;
}
