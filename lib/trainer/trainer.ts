// Trainer: multi-task fine-tuning of an adapter (docs/ARCHITECTURE.md section 5): one native call per
// optimizer step, per-task logging, evaluation, atomic checkpoints and exact resume. The class
// holds the run's state (one TrainerState, checkpoint.ts) and its loop; what happens after a step
// goes through one dispatcher (callbacks.ts CallbackHandler) to rlora's own callbacks (reporting.ts:
// log.jsonl, the sinks, the progress line, the lines on stderr) and the user's. The options table,
// metrics, checkpoint format, step, evaluation, data parallelism and the after-step decision are
// the modules beside it.
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import * as distributed from '../distributed';
import { assertNotTraining, beginTraining, duringCallback, endTraining } from '../activity';
import { ADAPTER_WEIGHTS_FILE } from '../adapter/files';
import { Adapter } from '../adapter';
import { Batch, BatchSampler, MultiTaskDataset, packBatch } from '../data';
import { Model } from '../model';
import { AdamW } from '../optim';
import { EvalProgressLine } from '../progress';
import { rawTerminal } from '../util/interrupt';
import { sameDevice, Tensor } from '../tensor';
import { ensureWritableFolder, naming, writeFileAtomically } from '../util/files';
import { replaceFolder } from '../replace-folder';
import { checkInstance, checkKeys } from '../util/options';
import { bool, checkValue, int } from '../util/spec';
import { CallbackHandler, checkCallbacks, FitOptions, FitReporter, TrainerCallback } from './callbacks';
import { CHECKPOINT_FILES, checkpointName, EarlierRunError, earlierRunFiles, evalPredictionsName, LEFTOVER_NAME, lockRunFolder, LOG_FILE, OPTIMIZER_FILE, pruneCheckpoints, readTrainerState, restoredState, RNG_FILE, TRAINER_STATE_FILE, TrainerState, trimLog, writeTrainerState } from './checkpoint';
import { readOptimizerState, readRngStates, writeOptimizerState, writeRngStates } from './checkpoint-tensors';
import { evaluate } from './evaluate';
import { afterStep } from './flow';
import { BestTracker } from './metrics';
import { bestRuleOf, DEFAULTS, stopRuleOf, TRAINER_OPTION_NAMES, TrainerOptions, trainerOptionProblems } from './options';
import { gatherGeneratorStates, joinProcessGroup, Place, rankSlice, seedRankGenerators } from './parallel';
import { byTask, EvalRecord, EvaluateOptions, History, Prediction, StepRecord, TaskEval } from './records';
import { evalScalars, LogFileCallback, openSink, PrinterCallback, ProgressCallback, SinkCallback, stepScalars } from './reporting';
import { StepLog } from './steplog';
import { step } from './step';

/** One fit's context, which its steps, evaluations and checkpoints share. */
interface FitRun {
  train: MultiTaskDataset;
  evalDataset?: MultiTaskDataset;
  dp?: Place;
  /** Rank 0 (or the only process): writes files and shows progress. */
  writer: boolean;
  total: number;
  firstStep: number;
  events: CallbackHandler;
  history: History;
  /** The step of the checkpoint written last in this fit. */
  savedAt: number;
}

export class Trainer {
  readonly model: Model;
  readonly adapter: Adapter;
  readonly options: Required<Omit<TrainerOptions, 'maxSteps' | 'warmupSteps' | 'outputDir' | 'progress' | 'precision' | 'device' | 'metrics' | 'earlyStopping' | 'saveBest' | 'evalBatchSize' | 'distributed' | 'gradientCheckpointing'>> & TrainerOptions;
  /** The run's progress, one plain object: what a checkpoint saves and a resume restores. */
  private state: TrainerState = { step: 0, best: {} };
  private optimizer?: AdamW;
  private disposed = false;
  private sampler?: BatchSampler;
  /** Dropout generator states of ranks > 0 from a checkpoint (`rank<R>/<module>`). */
  private rankRng = new Map<string, Tensor>();
  /** Whether this rank's dropout generators were set for data parallelism. */
  private rankSeeded = false;
  /** Releases outputDir/rlora.lock, which fit holds while it runs. */
  private unlock?: () => void;
  /** earlyStopping's best value and evaluations since it; saveBest's best value and checkpoint (state.best). */
  private best: BestTracker;

  /** Optimizer steps taken so far. */
  get step(): number {
    return this.state.step;
  }
  set step(n: number) {
    this.state.step = n;
  }

  constructor(model: Model, adapter: Adapter, options: TrainerOptions = {}) {
    checkInstance(model, Model, 'Trainer: the model (first argument)');
    checkInstance(adapter, Adapter, 'Trainer: the adapter (second argument)');
    if (adapter.model !== model) throw new TypeError('Trainer: the adapter (second argument) must be attached to that model');
    this.model = model;
    this.adapter = adapter;
    // an explicit undefined means "the default", as an absent key does
    checkKeys(options, TRAINER_OPTION_NAMES, 'Trainer');
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as TrainerOptions;
    this.options = { ...DEFAULTS, ...given };
    for (const p of trainerOptionProblems(this.options)) {
      throw p.kind === 'type' ? new TypeError(p.message) : p.kind === 'range' ? new RangeError(p.message) : new Error(p.message);
    }
    if (this.options.device !== undefined && !sameDevice(this.options.device as string, model.device)) {
      throw new RangeError(`device ${JSON.stringify(options.device)} differs from the model's (${model.device}): load the model with {device: ${JSON.stringify(options.device)}}`);
    }
    this.best = new BestTracker(stopRuleOf(this.options), bestRuleOf(this.options), this.state.best);
  }

  /** What the REPL and console.log show: a one-line summary, not the private fields. */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const o = this.options;
    const total = this.state.totalSteps ?? o.maxSteps;
    const parts = [
      total !== undefined ? `step ${this.step} of ${total}` : `step ${this.step}, ${o.epochs} epoch${o.epochs === 1 ? '' : 's'}`,
      `lr ${o.learningRate}`,
      `batch ${o.batchSize}${o.gradientAccumulation > 1 ? ` x ${o.gradientAccumulation} accumulated` : ''}`,
      `method ${this.adapter.options.method}`,
      `${this.adapter.layers.size} module${this.adapter.layers.size === 1 ? '' : 's'}`,
    ];
    if (o.precision === 'bfloat16') parts.push('bfloat16');
    if (o.outputDir) parts.push(`outputDir ${o.outputDir}`);
    if (this.disposed) parts.push('disposed');
    return `Trainer(${parts.join(', ')})`;
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('this Trainer was disposed');
    try {
      this.model.parameterCount(); // a disposed model throws here
    } catch (e) {
      throw new Error(`this Trainer's model cannot be used: ${(e as Error).message}`);
    }
  }

  /**
   * Frees the optimizer state now (the collector would later). The model and the adapter are the
   * caller's and stay. Using the Trainer afterwards throws "this Trainer was disposed"; refused
   * while it trains. `using trainer = ...` calls it at the end of the block.
   */
  dispose(): void {
    if (this.disposed) return;
    assertNotTraining(this.model, 'Trainer.dispose');
    this.optimizer?.dispose();
    this.optimizer = undefined;
    this.disposed = true;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * Fine-tunes the adapter on `train`; resolves with the history. Runs each step off the JS thread.
   * The model counts as training until it resolves (README "Calls during training").
   */
  async fit(train: MultiTaskDataset, fitOptions: FitOptions = {}): Promise<History> {
    checkInstance(train, MultiTaskDataset, 'fit: the training set');
    checkKeys(fitOptions, ['evalDataset', 'signal', 'onStep', 'onEval', 'callbacks', 'stopOnSigint'], 'fit');
    if (fitOptions.stopOnSigint !== undefined) checkValue(fitOptions.stopOnSigint, bool, 'fit: stopOnSigint');
    this.checkLive();
    const current = Adapter.of(this.model);
    if (current !== this.adapter) {
      // it would train nothing (the detached adapter's layers are not in the model) and report success
      throw new Error(
        `Trainer.fit refused: this Trainer's adapter is no longer attached to its model (it was detached or merged${current ? '; another adapter is attached now' : ''}); make a new Trainer with the adapter the model has`,
      );
    }
    // examples longer than the model's positions would train on positions it has no embedding
    // for (RoPE beyond its range); 1,600-token examples trained silently on a 256-position model
    const limit = this.model.config.max_position_embeddings;
    if (typeof limit === 'number' && Number.isSafeInteger(limit) && limit > 0) {
      const sets: [string, MultiTaskDataset | undefined][] = [['the training set', train], ['the evalDataset', fitOptions.evalDataset as MultiTaskDataset | undefined]];
      for (const [what, ds] of sets) {
        if (!ds) continue;
        let longest = 0;
        for (let k = 0; k < ds.size; k++) longest = Math.max(longest, ds.get(k).inputIds.length);
        if (longest > limit) {
          throw new RangeError(`Trainer.fit: ${what} has examples of ${longest} tokens, more than the model's max_position_embeddings (${limit}, in its config): encode it with maxLength <= ${limit}`);
        }
      }
    }
    beginTraining(this.model, 'Trainer.fit');
    try {
      return await this.fitUnchecked(train, fitOptions);
    } finally {
      this.unlock?.();
      this.unlock = undefined;
      endTraining(this.model);
    }
  }

  private async fitUnchecked(train: MultiTaskDataset, fitOptions: FitOptions): Promise<History> {
    const o = this.options;
    const s = this.state;
    const user = checkCallbacks(fitOptions.callbacks);
    if (s.resumedFrom && s.dataset && (s.dataset.size !== train.size || s.dataset.tasks.join('\0') !== train.tasks.join('\0'))) {
      throw new Error(
        `the checkpoint was trained on ${s.dataset.size} examples of tasks ${s.dataset.tasks.join(', ')}; ` +
          `this training set has ${train.size} of ${train.tasks.join(', ')}: resume needs the same data`,
      );
    }
    if (s.broken) throw this.brokenError();
    s.dataset = { size: train.size, tasks: train.tasks };
    this.adapter.trainingData = train.settings(); // saved with the adapter: evaluation encodes data the same way
    const dp = await joinProcessGroup({ model: this.model, adapter: this.adapter, options: this.savedOptions(), train, step: s.step, globalBatch: this.sampler?.batchSize });
    if (dp && !this.rankSeeded) {
      seedRankGenerators(this.adapter, dp.rank, s.step, this.rankRng);
      this.rankSeeded = true;
    }
    const writer = (dp?.rank ?? 0) === 0;
    const sampler = this.startSampler(train, dp?.worldSize ?? 1, writer);
    const total = (s.totalSteps ??= o.maxSteps ?? Math.max(1, Math.ceil((o.epochs * sampler.stepsPerEpoch) / o.gradientAccumulation)));
    if (s.step >= total) {
      // it used to return {steps: []}, as if it had trained
      throw new Error(
        `Trainer.fit refused: this Trainer has run all its ${total} steps (step ${s.step} of ${total}), so a second fit would train nothing: ` +
          'make a new Trainer for another run, or continue from a checkpoint with Trainer.resume(dir, model, {maxSteps}) and more steps',
      );
    }
    this.optimizer ??= this.createOptimizer(total);
    if ((this.best.stopRule || this.best.bestRule) && !fitOptions.evalDataset) {
      throw new Error(`${this.best.stopRule ? 'earlyStopping' : 'saveBest'} needs an evalDataset: pass fit(train, {evalDataset})`);
    }
    if (o.outputDir && writer) this.openRunFolder(o.outputDir);
    const history: History = { steps: [], evals: [], stopped: 'completed', skippedSteps: 0, outputDir: o.outputDir, lastCheckpoint: s.lastCheckpoint };
    if (this.best.state.save) [history.bestCheckpoint, history.bestMetric] = [this.best.state.save.checkpoint, this.best.state.save.value];
    const given: TrainerCallback[] = fitOptions.onStep || fitOptions.onEval ? [{ onStepEnd: (rec) => void fitOptions.onStep?.(rec), onEvaluate: (rec) => void fitOptions.onEval?.(rec) }] : [];
    const events = new CallbackHandler(writer ? this.reporters(s.step) : [], [...given, ...user], (fn) => duringCallback(this.model, fn), () => ({ step: s.step, totalSteps: total }));
    const run: FitRun = { train, evalDataset: fitOptions.evalDataset, dp, writer, total, firstStep: s.step, events, history, savedAt: -1 };
    if (dp && writer) {
      process.stderr.write(`rlora: data parallel over ${dp.worldSize} processes (${distributed.backendName()}): global batch ${o.batchSize} x ${o.gradientAccumulation} accumulated x ${dp.worldSize} = ${o.batchSize * o.gradientAccumulation * dp.worldSize} rows per step\n`);
    }
    /** The steps, in columns until fit returns (a long run's history is then 8 bytes a value). */
    const steps = new StepLog();
    // in the REPL Ctrl-C is a key that interrupts the `await` but not the fit: there it stops the fit unless stopOnSigint is false
    const stopListening = (fitOptions.stopOnSigint ?? rawTerminal()) ? events.listenForCtrlC() : undefined;
    this.adapter.setMode(true);
    try {
      await events.notify('onTrainBegin');
      while (s.step < total && !events.stopRequested) {
        const rec = await this.trainStep(run, sampler);
        steps.push(rec);
        await events.notify('onStepEnd', rec);
        await events.notify('onLog', rec.step, stepScalars(rec));
        const next = afterStep(o, { step: s.step, total, firstStep: run.firstStep, skippedSteps: history.skippedSteps });
        if (next.evaluate && (await this.evaluateInFit(run))) {
          history.stopped = 'earlyStopping';
          break;
        }
        if (next.save && run.savedAt !== s.step) await this.saveInFit(run);
        if (next.stop) {
          history.stopped = next.stop;
          break;
        }
        let aborted = Boolean(fitOptions.signal?.aborted) || events.interrupted;
        let stopped: boolean = events.stopRequested;
        // one decision for every rank: any rank's abort (Ctrl-C) or callback stops them all after this step
        if (dp) [aborted, stopped] = (await distributed.allreduceSum([aborted ? 1 : 0, stopped ? 1 : 0])).map((v) => v > 0);
        if (aborted || stopped) {
          history.stopped = aborted ? 'aborted' : 'callback';
          break;
        }
      }
      if (events.stopRequested && history.stopped === 'completed') history.stopped = 'callback'; // onTrainBegin asked
      if (history.stopped === 'completed') await this.evaluateInFit(run);
      if (o.outputDir && run.savedAt !== s.step) await this.saveInFit(run);
      if (o.loadBestAtEnd && history.bestCheckpoint && (history.stopped === 'completed' || history.stopped === 'earlyStopping')) {
        this.loadAdapterWeights(history.bestCheckpoint);
      }
    } finally {
      stopListening?.();
      events.close();
      this.adapter.setMode(false);
    }
    history.steps = steps.records();
    if (history.skippedSteps > 0) {
      console.warn(
        `rlora: skipped ${history.skippedSteps} of ${history.steps.length} steps (${run.firstStep + 1}..${s.step}) for a non-finite loss` +
          (history.stopped === 'nonFinite' ? `; stopped, as more than half of the ${total - run.firstStep} steps planned were skipped` : '') +
          ' (lower the learning rate?)',
      );
    }
    await events.notify('onTrainEnd', history);
    return history;
  }

  /** The sampler of global batches (batchSize x worldSize rows), at the data position a checkpoint saved if resumed. */
  private startSampler(train: MultiTaskDataset, W: number, writer: boolean): BatchSampler {
    const o = this.options, s = this.state;
    const padId = train.tokenizer.padTokenId ?? train.tokenizer.eosTokenId ?? 0;
    // one seeded stream of global batches: the data order does not depend on the number of processes; each rank takes its slice
    const sampler = (this.sampler ??= new BatchSampler(train, { batchSize: o.batchSize * W, sampling: o.sampling, temperature: o.samplingTemperature, seed: o.seed, groupByLength: o.groupByLength }, padId));
    const saved = s.sampler;
    if (!saved) return sampler;
    if (saved.batchSize !== o.batchSize * W && saved.batchSize % o.batchSize === 0 && saved.datasetSize === train.size) {
      // another number of processes: the global batch changed, so the saved order cannot go on;
      // the same seeded order restarts at the batch that covers the examples already seen
      const skip = Math.floor((saved.step * saved.batchSize) / (o.batchSize * W));
      for (let k = 0; k < skip; k++) sampler.next();
      if (writer) {
        process.stderr.write(
          `rlora: the checkpoint was trained with a global batch of ${saved.batchSize} rows (${saved.batchSize / o.batchSize} process(es)); this run has ${o.batchSize * W} ` +
            `(${W} process(es)): continuing at step ${s.step} with the data order of the new batch, from about example ${skip * o.batchSize * W} of the run (not the order an unchanged run would take)\n`,
        );
      }
    } else naming(s.resumedFrom!.file, () => sampler.setState(saved));
    s.sampler = undefined;
    return sampler;
  }

  /**
   * Takes outputDir for this fit: writable (one line naming it and the reason otherwise), locked
   * (rlora.lock: a second run there is refused, naming the first), an earlier run refused or
   * deleted (overwriteOutputDir; this Trainer's own earlier fits and a resumed run continue
   * there), leftovers of a killed process removed, and on resume the log trimmed to the checkpoint.
   */
  private openRunFolder(dir: string): void {
    const s = this.state;
    ensureWritableFolder(dir, 'outputDir');
    this.unlock = lockRunFolder(dir);
    const earlier = s.step === 0 && !s.resumedFrom ? earlierRunFiles(dir) : [];
    if (earlier.length && !this.options.overwriteOutputDir) throw new EarlierRunError(dir, earlier);
    for (const f of earlier) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
    // half-written or half-deleted checkpoints and logs of a process that was killed
    for (const f of fs.readdirSync(dir)) if (LEFTOVER_NAME.test(f)) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
    // resuming from an older checkpoint: the steps after it are about to be logged again
    const log = path.join(dir, LOG_FILE);
    if (s.resumedFrom && s.step === s.resumedFrom.step && fs.existsSync(log)) trimLog(log, s.step);
  }

  /** rlora's own callbacks of a fit starting at `firstStep` (rank 0's): log.jsonl, reportTo's sinks, the lines and the progress line on stderr. */
  private reporters(firstStep: number): FitReporter[] {
    const o = this.options;
    const own: FitReporter[] = [];
    if (o.outputDir) own.push(new LogFileCallback(path.join(o.outputDir, LOG_FILE)));
    if (o.outputDir && o.reportTo.length) own.push(new SinkCallback(o.reportTo.map((r) => openSink(r, o.outputDir!, firstStep))));
    const bar = o.progress ?? Boolean(process.stderr.isTTY);
    // no bar where stderr is no terminal (a log file, CI): a line now and then, and the evaluations
    own.push(new PrinterCallback(process.stderr, { bar, lines: o.progress === undefined && !process.stderr.isTTY, loggingSteps: o.loggingSteps, checkpoints: Boolean(o.outputDir) }));
    if (bar) own.push(new ProgressCallback(process.stderr));
    return own;
  }

  /** One optimizer step of the fit: its record. */
  private async trainStep(run: FitRun, sampler: BatchSampler): Promise<StepRecord> {
    const o = this.options, s = this.state, dp = run.dp;
    const micro: Batch[] = [];
    for (let k = 0; k < o.gradientAccumulation; k++) {
      const rows = dp ? rankSlice(sampler.next(), dp.rank, dp.worldSize) : sampler.next();
      micro.push(o.packing ? packBatch(rows) : rows); // the same examples, laid out without padding
    }
    const t0 = process.hrtime.bigint();
    const r = await step(this.model, micro, this.optimizer!, { precision: o.precision ?? 'float32', distributed: Boolean(dp), gradientCheckpointing: o.gradientCheckpointing ?? false });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    let tokens = micro.reduce((a, b) => a + (b.tasks.length ? b.attentionMask.flat().reduce((x, y) => x + y, 0) : 0), 0);
    if (!r.finite && !o.skipNonFinite) {
      throw new Error(
        `the loss became ${r.loss} at step ${s.step + 1}; no update was made. Last good checkpoint: ${s.lastCheckpoint ?? 'none'} ` +
          '(lower the learning rate, or set skipNonFinite to skip such steps)',
      );
    }
    if (!r.paramsFinite) {
      s.broken = { step: s.step + 1, paramNorm: r.paramNorm };
      throw this.brokenError();
    }
    s.step += 1;
    if (!r.finite) run.history.skippedSteps += 1;
    let taskSum: Record<string, number> = byTask(), taskCount: Record<string, number> = byTask();
    micro.flatMap((b) => (b.tasks.length ? b.tasks : [undefined])).forEach((task, i) => {
      if (task === undefined) return; // a rank's empty slice (one row without labels)
      taskSum[task] = (taskSum[task] ?? 0) + r.rowLoss[i];
      taskCount[task] = (taskCount[task] ?? 0) + r.rowTokens[i];
    });
    if (dp) {
      // the step's tokens and per-task losses over every rank
      const names = run.train.tasks;
      const v = await distributed.allreduceSum([tokens, ...names.map((t) => taskSum[t] ?? 0), ...names.map((t) => taskCount[t] ?? 0)]);
      tokens = v[0];
      taskSum = Object.assign(byTask<number>(), Object.fromEntries(names.map((t, i) => [t, v[1 + i]])));
      taskCount = Object.assign(byTask<number>(), Object.fromEntries(names.map((t, i) => [t, v[1 + names.length + i]])));
    }
    return {
      step: s.step,
      epoch: sampler.epoch,
      loss: r.loss,
      taskLoss: Object.fromEntries(Object.keys(taskSum).sort().filter((k) => taskCount[k] > 0).map((k) => [k, taskSum[k] / taskCount[k]])),
      lr: r.lr,
      gradNorm: r.gradNorm,
      tokens,
      tokensPerSecond: tokens / seconds,
      ...(r.finite ? {} : { skipped: true }),
    };
  }

  /** Evaluates during the fit (when it has an evalDataset); true when earlyStopping says stop. */
  private async evaluateInFit(run: FitRun): Promise<boolean> {
    if (!run.evalDataset) return false;
    const o = this.options;
    const { tasks, predictions } = await evaluate(this.model, this.adapter, run.evalDataset, o, Boolean(o.outputDir), run.dp, (done, total) => run.events.evaluateProgress(done, total));
    this.adapter.setMode(true);
    const rec: EvalRecord = { step: this.step, tasks };
    run.history.evals.push(rec);
    if (o.outputDir && run.writer) writeFileAtomically(path.join(o.outputDir, evalPredictionsName(this.step)), predictions.map((p) => JSON.stringify(p) + '\n').join(''));
    await run.events.notify('onEvaluate', rec);
    await run.events.notify('onLog', rec.step, evalScalars(tasks));
    const best = this.best.newBest(tasks, path.join(o.outputDir ?? '', checkpointName(this.step)));
    if (best) {
      await this.saveInFit(run);
      [run.history.bestCheckpoint, run.history.bestMetric] = [best.checkpoint, best.value];
    }
    return this.best.shouldStop(tasks);
  }

  /** Writes a checkpoint during the fit: rank 0 writes while the others wait; every rank goes on once it is complete. */
  private async saveInFit(run: FitRun): Promise<void> {
    const rng = run.dp ? await gatherGeneratorStates(this.adapter) : undefined;
    const dir = run.writer ? this.saveCheckpointUnchecked(rng) : path.join(this.options.outputDir!, checkpointName(this.step));
    this.state.lastCheckpoint = run.history.lastCheckpoint = dir;
    if (run.dp) await distributed.barrier();
    run.savedAt = this.step;
    await run.events.notify('onSave', dir);
  }

  /**
   * Per task: mean cross-entropy per response token, and exact-match accuracy of greedy generation
   * (the generated tokens up to eos must equal the response's tokens).
   */
  async evaluate(dataset: MultiTaskDataset, options?: EvaluateOptions & { returnPredictions?: false }): Promise<Record<string, TaskEval>>;
  /** With returnPredictions: the per-task results and every example's prediction, in dataset order. */
  async evaluate(dataset: MultiTaskDataset, options: EvaluateOptions & { returnPredictions: true }): Promise<{ tasks: Record<string, TaskEval>; predictions: Prediction[] }>;
  async evaluate(dataset: MultiTaskDataset, options: EvaluateOptions = {}): Promise<Record<string, TaskEval> | { tasks: Record<string, TaskEval>; predictions: Prediction[] }> {
    checkInstance(dataset, MultiTaskDataset, 'evaluate: the dataset');
    if (typeof options !== 'object' || options === null) throw new TypeError(`evaluate: options must be an object, got ${util.inspect(options)}`);
    const unknown = Object.keys(options).filter((k) => k !== 'returnPredictions');
    if (unknown.length) throw new RangeError(`evaluate: unknown option ${JSON.stringify(unknown[0])} (known: returnPredictions)`);
    if (options.returnPredictions !== undefined) checkValue(options.returnPredictions, bool, 'evaluate: returnPredictions');
    this.checkLive();
    assertNotTraining(this.model, 'Trainer.evaluate');
    // a line on a terminal (as the training's), erased at the end: a large set takes a while
    const line = (this.options.progress ?? process.stderr.isTTY) ? new EvalProgressLine(process.stderr) : undefined;
    try {
      const r = await evaluate(this.model, this.adapter, dataset, this.options, Boolean(options.returnPredictions), undefined, line && ((done, total) => line.update(done, total)));
      return options.returnPredictions ? r : r.tasks;
    } finally {
      line?.clear();
    }
  }

  /**
   * Writes outputDir/checkpoint-<step>: the adapter, the optimizer state, the dropout generators,
   * the data position and the options, atomically (a temporary folder renamed when complete).
   */
  saveCheckpoint(): string {
    this.checkLive();
    assertNotTraining(this.model, 'Trainer.saveCheckpoint');
    return this.saveCheckpointUnchecked();
  }

  private saveCheckpointUnchecked(rngStates?: Record<string, Tensor>): string {
    const dir0 = this.options.outputDir;
    if (!dir0) throw new Error('saveCheckpoint needs outputDir');
    if (!this.optimizer || !this.sampler) throw new Error('nothing to checkpoint before fit() has started');
    if (this.state.broken) throw this.brokenError();
    const dir = path.join(dir0, checkpointName(this.step));
    const opt = this.optimizer.native.state();
    const sampler = this.sampler;
    replaceFolder(dir, (tmp) => {
      duringCallback(this.model, () => this.adapter.write(tmp)); // between steps: nothing native runs
      writeOptimizerState(tmp, opt);
      writeRngStates(tmp, rngStates ?? Object.fromEntries([...this.adapter.layers].map(([name, layer]) => [name, new Tensor(layer.native.generatorState())])));
      writeTrainerState(tmp, this.state, {
        options: this.savedOptions(),
        sampler: sampler.state(),
        customMetrics: Object.entries(this.options.metrics ?? {}).filter(([, v]) => typeof v === 'function').map(([k]) => k),
      });
    }, { refuseLink: true }); // a link planted at checkpoint-<step> is refused, never followed
    this.state.lastCheckpoint = dir;
    if (this.options.keepCheckpoints > 0) pruneCheckpoints(dir0, this.options.keepCheckpoints, this.best.state.save?.checkpoint); // saveBest's is never pruned
    return dir;
  }

  /** The options as trainer_state.json keeps them: metric functions left out (names stay). */
  private savedOptions(): TrainerOptions {
    const m = this.options.metrics;
    if (!m) return this.options;
    const named = Object.fromEntries(Object.entries(m).filter(([, v]) => typeof v === 'string'));
    return { ...this.options, metrics: named };
  }

  /** Loads the adapter weights of a checkpoint (saveBest's) into the adapter. */
  private loadAdapterWeights(dir: string): void {
    const file = path.join(dir, ADAPTER_WEIGHTS_FILE);
    naming(file, () => duringCallback(this.model, () => this.adapter.loadWeights(file))); // after the last step
  }

  private createOptimizer(total: number): AdamW {
    const o = this.options;
    const warmup = o.warmupSteps ?? Math.round(o.warmupRatio * total);
    return new AdamW([...this.adapter.layers.values()], {
      lr: o.learningRate,
      weightDecay: o.weightDecay,
      maxGradNorm: o.maxGradNorm,
      schedule: o.schedule,
      warmupSteps: warmup,
      totalSteps: o.schedule === 'constant' ? Math.max(total, warmup + 1) : total,
    });
  }

  private brokenError(): Error {
    const b = this.state.broken!;
    return new Error(
      `the update of step ${b.step} left the trainable parameters non-finite or too large (L2 norm ${b.paramNorm}); ` +
        `the adapter in memory holds them, so nothing is saved or trained from here. Last good checkpoint: ${this.state.lastCheckpoint ?? 'none'} ` +
        '(lower the learning rate and resume from it)',
    );
  }

  /**
   * A resume's last part: the run's progress, the optimizer's state and the dropout generators'
   * read from the checkpoint `dir` (errors name its files).
   */
  private restore(state: TrainerState, optimizerState: ReturnType<typeof readOptimizerState>, rng: ReturnType<typeof readRngStates>, dir: string): void {
    this.state = state;
    this.best = new BestTracker(this.best.stopRule, this.best.bestRule, state.best);
    const optimizer = naming(state.resumedFrom!.file, () => this.createOptimizer(state.totalSteps!));
    naming(path.join(dir, OPTIMIZER_FILE), () => optimizer.native.setState(optimizerState));
    this.optimizer = optimizer;
    const rngPath = path.join(dir, RNG_FILE);
    for (const [name, t] of rng) {
      if (/^rank\d+\//.test(name)) {
        this.rankRng.set(name, t); // another rank's stream (data parallelism): taken when it joins
        continue;
      }
      const layer = this.adapter.layers.get(name);
      if (!layer) throw new Error(`${rngPath} names ${name}, which the adapter does not wrap`);
      naming(rngPath, () => layer.native.setGeneratorState(t.native));
    }
    const missing = [...this.adapter.layers.keys()].filter((name) => !rng.has(name));
    if (missing.length) throw new Error(`${rngPath} has no generator state for ${missing.join(', ')}`);
  }

  /**
   * A trainer that continues from `checkpointDir` on `model` (the same base model, no adapter
   * attached): the next fit() with the same training set continues as if never stopped. It writes
   * to `overrides.outputDir` when given, else to the checkpoint's parent folder (wherever the
   * checkpoint now lies); `trainer.options.outputDir` says which. Every file of the checkpoint is
   * read and checked here: on any error (naming the file) nothing stays attached to the model.
   *
   * `overrides.maxSteps` sets a new total number of steps (above the checkpoint's step): the run
   * is extended (or shortened) and the learning-rate schedule (and a warmupRatio warm-up) is
   * recomputed for the new total, with a console.warn saying so. `overrides.metrics` gives the
   * metric functions again (checkpoints keep only built-in metric names). Training continues on
   * `model`'s device, whichever device wrote the checkpoint.
   */
  static async resume(checkpointDir: string, model: Model, overrides: Pick<TrainerOptions, 'outputDir' | 'progress' | 'maxSteps' | 'metrics'> = {}): Promise<Trainer> {
    if (typeof overrides !== 'object' || overrides === null) throw new TypeError(`Trainer.resume: overrides must be an object, got ${util.inspect(overrides)}`);
    const unknown = Object.keys(overrides).filter((k) => !['outputDir', 'progress', 'maxSteps', 'metrics'].includes(k));
    if (unknown.length) throw new RangeError(`Trainer.resume: ${JSON.stringify(unknown[0])} cannot be changed on resume (known: outputDir, progress, maxSteps, metrics)`);
    const given = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as typeof overrides;
    if (given.maxSteps !== undefined) checkValue(given.maxSteps, int(1), 'maxSteps');
    const file = (name: string): string => path.join(checkpointDir, name);
    for (const name of CHECKPOINT_FILES) {
      if (!fs.existsSync(file(name))) throw new Error(`${checkpointDir} is not a complete checkpoint: no ${name}`);
    }
    const statePath = file(TRAINER_STATE_FILE);
    const state = readTrainerState(statePath);
    const optimizerState = readOptimizerState(file(OPTIMIZER_FILE));
    const rng = readRngStates(checkpointDir);
    // metric functions cannot be saved: the run's are required again, not dropped silently
    const missing = (state.customMetrics ?? []).filter((m) => typeof given.metrics?.[m] !== 'function');
    if (missing.length) {
      throw new Error(
        `${statePath}: the run evaluated the metric function${missing.length > 1 ? 's' : ''} ${missing.join(', ')}, which a checkpoint cannot hold: ` +
          `pass ${missing.length > 1 ? 'them' : 'it'} again, Trainer.resume(dir, model, {metrics: {${missing.join(', ')}}})`,
      );
    }
    const adapter = await Adapter.load(model, checkpointDir); // attaches nothing when it fails (NaN or infinite weights included)
    try {
      const outputDir = given.outputDir ?? path.dirname(path.resolve(checkpointDir));
      let total = state.totalSteps;
      if (given.maxSteps !== undefined && given.maxSteps !== state.totalSteps) {
        if (given.maxSteps <= state.step) {
          throw new RangeError(`maxSteps ${given.maxSteps} must be above the checkpoint's step (${state.step}): ${checkpointDir} has nothing left to train for it`);
        }
        console.warn(
          `rlora: resuming ${checkpointDir} with maxSteps ${given.maxSteps} instead of its ${state.totalSteps}: ` +
            `the ${state.options.schedule ?? DEFAULTS.schedule} learning-rate schedule is recomputed for ${given.maxSteps} steps in all (${given.maxSteps - state.step} more)`,
        );
        total = given.maxSteps;
      }
      // the run goes on on the model's device, wherever the checkpoint was written (as
      // torch.load's map_location): a checkpoint of a CUDA run resumes on the CPU and back
      const options = { ...state.options, ...given, ...(total !== state.totalSteps ? { maxSteps: total } : {}), outputDir, device: model.device };
      const trainer = naming(statePath, () => new Trainer(model, adapter, options));
      trainer.restore(restoredState(checkpointDir, statePath, state, total), optimizerState, rng, checkpointDir);
      return trainer;
    } catch (e) {
      adapter.detach();
      throw e;
    }
  }
}
