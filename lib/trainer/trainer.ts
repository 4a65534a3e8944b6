// Trainer: multi-task fine-tuning of an adapter (docs/ARCHITECTURE.md section 5): one native call per
// optimizer step, per-task logging, evaluation, atomic checkpoints and exact resume. The class
// holds the run's state and its loop; the options table, metrics, checkpoint format, step,
// evaluation, data parallelism and the after-step decision are the modules beside it.
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import * as distributed from '../distributed';
import { assertNotTraining, beginTraining, duringCallback, endTraining } from '../activity';
import { ADAPTER_WEIGHTS_FILE } from '../adapter/files';
import { Adapter } from '../adapter';
import { Batch, BatchSampler, MultiTaskDataset, packBatch, SamplerState } from '../data';
import { evalText, stepLine } from '../logging/text';
import type { MetricSink } from '../logging/sink';
import { Model } from '../model';
import { AdamW } from '../optim';
import { CLEAR_LINE, ProgressLine } from '../progress';
import { onInterrupt, rawTerminal } from '../util/interrupt';
import { sameDevice, Tensor } from '../tensor';
import { ensureFolder, naming, writeFileAtomically } from '../util/files';
import { replaceFolder } from '../replace-folder';
import { checkInstance, checkKeys } from '../util/options';
import { bool, checkValue, int } from '../util/spec';
import { CallbackResult, CallbackState, checkCallbacks, FitOptions, TrainerCallback } from './callbacks';
import { CHECKPOINT_FILES, checkpointName, evalPredictionsName, LEFTOVER_NAME, lockRunFolder, LOG_FILE, OPTIMIZER_FILE, pruneCheckpoints, readTrainerState, RNG_FILE, runFiles, TRAINER_STATE_FILE, trimLog, writeTrainerState } from './checkpoint';
import { readOptimizerState, readRngStates, writeOptimizerState, writeRngStates } from './checkpoint-tensors';
import { evaluate } from './evaluate';
import { afterStep } from './flow';
import { BestTracker } from './metrics';
import { bestRuleOf, DEFAULTS, stopRuleOf, TRAINER_OPTION_NAMES, TrainerOptions, trainerOptionProblems } from './options';
import { gatherGeneratorStates, joinProcessGroup, rankSlice, seedRankGenerators } from './parallel';
import { byTask, EvalRecord, EvaluateOptions, History, Prediction, StepRecord, TaskEval } from './records';
import { evalScalars, openSink, stepScalars } from './reporting';
import { StepLog } from './steplog';
import { step } from './step';


export class Trainer {
  readonly model: Model;
  readonly adapter: Adapter;
  readonly options: Required<Omit<TrainerOptions, 'maxSteps' | 'warmupSteps' | 'outputDir' | 'progress' | 'precision' | 'device' | 'metrics' | 'earlyStopping' | 'saveBest' | 'evalBatchSize' | 'distributed' | 'gradientCheckpointing'>> & TrainerOptions;
  /** Optimizer steps taken so far. */
  step = 0;
  private optimizer?: AdamW;
  private disposed = false;
  private sampler?: BatchSampler;
  private pendingSampler: SamplerState | null = null;
  private totalSteps?: number;
  /** Always a checkpoint of finite values: none is written after an update broke the parameters. */
  private lastCheckpoint?: string;
  private trainInfo?: { size: number; tasks: string[] };
  private resumedFrom?: number;
  /** trainer_state.json of the checkpoint resumed from, for errors about its data position. */
  private resumedState?: string;
  private pendingTrainInfo?: { size: number; tasks: string[] };
  /** Dropout generator states of ranks > 0 from a checkpoint (`rank<R>/<module>`). */
  private rankRng = new Map<string, Tensor>();
  /** Whether this rank's dropout generators were set for data parallelism. */
  private rankSeeded = false;
  /** The step whose update left the parameters non-finite; nothing can continue from there. */
  private brokenAt?: { step: number; paramNorm: number };
  /** Releases outputDir/rlora.lock, which fit holds while it runs. */
  private unlock?: () => void;
  /** earlyStopping's best value and evaluations since it; saveBest's best value and checkpoint. */
  private best: BestTracker;

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
    this.best = new BestTracker(stopRuleOf(this.options), bestRuleOf(this.options));
  }

  /** What the REPL and console.log show: a one-line summary, not the private fields. */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const o = this.options;
    const total = this.totalSteps ?? o.maxSteps;
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
    const padId = train.tokenizer.padTokenId ?? train.tokenizer.eosTokenId ?? 0;
    this.trainInfo = { size: train.size, tasks: train.tasks };
    this.adapter.trainingData = train.settings(); // saved with the adapter: evaluation encodes data the same way
    const was = this.pendingTrainInfo;
    if (was && (was.size !== train.size || was.tasks.join('\0') !== train.tasks.join('\0'))) {
      throw new Error(
        `the checkpoint was trained on ${was.size} examples of tasks ${was.tasks.join(', ')}; ` +
          `this training set has ${train.size} of ${train.tasks.join(', ')}: resume needs the same data`,
      );
    }
    if (this.brokenAt) throw this.brokenError();
    const dp = await joinProcessGroup({ model: this.model, adapter: this.adapter, options: this.savedOptions(), train, step: this.step, globalBatch: this.sampler?.batchSize });
    if (dp && !this.rankSeeded) {
      seedRankGenerators(this.adapter, dp.rank, this.step, this.rankRng);
      this.rankSeeded = true;
    }
    const W = dp?.worldSize ?? 1, R = dp?.rank ?? 0;
    /** Rank 0 (or the only process) writes files and shows progress. */
    const writer = R === 0;
    // one seeded stream of global batches (batchSize x worldSize rows): the data order does not
    // depend on the number of processes; each rank takes its slice
    this.sampler ??= new BatchSampler(train, { batchSize: o.batchSize * W, sampling: o.sampling, temperature: o.samplingTemperature, seed: o.seed, groupByLength: o.groupByLength }, padId);
    if (this.pendingSampler) {
      const [sampler, state] = [this.sampler, this.pendingSampler];
      if (state.batchSize !== o.batchSize * W && state.batchSize % o.batchSize === 0 && state.datasetSize === train.size) {
        // another number of processes: the global batch changed, so the saved order cannot go on;
        // the same seeded order restarts at the batch that covers the examples already seen
        const skip = Math.floor((state.step * state.batchSize) / (o.batchSize * W));
        for (let k = 0; k < skip; k++) sampler.next();
        if (writer) {
          process.stderr.write(
            `rlora: the checkpoint was trained with a global batch of ${state.batchSize} rows (${state.batchSize / o.batchSize} process(es)); this run has ${o.batchSize * W} ` +
              `(${W} process(es)): continuing at step ${this.step} with the data order of the new batch, from about example ${skip * o.batchSize * W} of the run (not the order an unchanged run would take)\n`,
          );
        }
      } else naming(this.resumedState!, () => sampler.setState(state));
      this.pendingSampler = null;
    }
    const total = (this.totalSteps ??= o.maxSteps ?? Math.max(1, Math.ceil((o.epochs * this.sampler.stepsPerEpoch) / o.gradientAccumulation)));
    if (this.step >= total) {
      // it used to return {steps: []}, as if it had trained
      throw new Error(
        `Trainer.fit refused: this Trainer has run all its ${total} steps (step ${this.step} of ${total}), so a second fit would train nothing: ` +
          'make a new Trainer for another run, or continue from a checkpoint with Trainer.resume(dir, model, {maxSteps}) and more steps',
      );
    }
    this.optimizer ??= this.createOptimizer(total);
    if ((this.best.stopRule || this.best.bestRule) && !fitOptions.evalDataset) {
      throw new Error(`${this.best.stopRule ? 'earlyStopping' : 'saveBest'} needs an evalDataset: pass fit(train, {evalDataset})`);
    }
    this.adapter.setMode(true);
    const history: History = { steps: [], evals: [], stopped: 'completed', skippedSteps: 0, outputDir: o.outputDir, lastCheckpoint: this.lastCheckpoint };
    /** The steps, in columns until fit returns (a long run's history is then 8 bytes a value). */
    const steps = new StepLog();
    if (this.best.state.save) {
      history.bestCheckpoint = this.best.state.save.checkpoint;
      history.bestMetric = this.best.state.save.value;
    }
    /** The step of the checkpoint written last in this fit. */
    let savedAt = -1;
    const callbacks = checkCallbacks(fitOptions.callbacks);
    const state = (): CallbackState => ({ step: this.step, totalSteps: total });
    /** Set when a callback returns {stop: true}: the fit ends after the current step. */
    let stopRequested = false;
    const notify = async <K extends Exclude<keyof TrainerCallback, 'onTrainEnd'>>(hook: K, ...args: Parameters<NonNullable<TrainerCallback[K]>>): Promise<void> => {
      for (const cb of callbacks) {
        const fn = cb[hook] as ((...a: unknown[]) => CallbackResult) | undefined;
        if (!fn) continue;
        const r = duringCallback(this.model, () => fn.apply(cb, args));
        const v = r instanceof Promise ? await r : r;
        if (typeof v === 'object' && v !== null && v.stop === true) stopRequested = true;
      }
    };
    const save = async (): Promise<void> => {
      // rank 0 writes while the others wait: every rank goes on once the checkpoint is complete
      const rng = dp ? await gatherGeneratorStates(this.adapter) : undefined;
      history.lastCheckpoint = writer ? this.saveCheckpointUnchecked(rng) : path.join(o.outputDir!, checkpointName(this.step));
      if (!writer) this.lastCheckpoint = history.lastCheckpoint;
      if (dp) await distributed.barrier();
      savedAt = this.step;
      await notify('onSave', history.lastCheckpoint, state());
    };
    const log = o.outputDir && writer ? path.join(o.outputDir, LOG_FILE) : undefined;
    if (o.outputDir && writer) {
      // one run at a time in a folder (rlora.lock): a second is refused, naming the first
      ensureFolder(o.outputDir, 'outputDir');
      this.unlock = lockRunFolder(o.outputDir);
      // a folder holding another run: refused, or emptied of it (overwriteOutputDir); this Trainer's
      // own earlier fits and a resumed run continue there
      const earlier = this.step === 0 && this.resumedFrom === undefined ? runFiles(o.outputDir).filter((f) => !LEFTOVER_NAME.test(f)) : [];
      if (earlier.length && !o.overwriteOutputDir) {
        throw new Error(
          `Trainer.fit refused: outputDir ${o.outputDir} holds an earlier run (${earlier.sort().join(', ')}); logging into it would mix two runs: ` +
            'choose another outputDir, set overwriteOutputDir: true to start over there, or continue that run with Trainer.resume',
        );
      }
      for (const f of earlier) fs.rmSync(path.join(o.outputDir, f), { recursive: true, force: true });
      // half-written or half-deleted checkpoints and logs of a process that was killed
      for (const f of fs.readdirSync(o.outputDir)) if (LEFTOVER_NAME.test(f)) fs.rmSync(path.join(o.outputDir, f), { recursive: true, force: true });
    }
    // resuming from an older checkpoint: the steps after it are about to be logged again
    if (log && this.resumedFrom !== undefined && fs.existsSync(log)) trimLog(log, this.resumedFrom);
    this.resumedFrom = undefined;
    const firstStep = this.step;
    const showBar = writer && (o.progress ?? Boolean(process.stderr.isTTY));
    // no bar where stderr is no terminal (a log file, CI): a line now and then, and the evaluations
    const showLines = writer && o.progress === undefined && !process.stderr.isTTY;
    const sinks: MetricSink[] = o.outputDir && writer ? o.reportTo.map((r) => openSink(r, o.outputDir!, firstStep)) : [];
    if (dp && writer) {
      process.stderr.write(`rlora: data parallel over ${W} processes (${distributed.backendName()}): global batch ${o.batchSize} x ${o.gradientAccumulation} accumulated x ${W} = ${o.batchSize * o.gradientAccumulation * W} rows per step\n`);
    }
    const bar = showBar ? new ProgressLine(process.stderr, total, this.step) : undefined;
    /** Evaluates; true when earlyStopping says stop. */
    const evaluateNow = async (): Promise<boolean> => {
      if (!fitOptions.evalDataset) return false;
      const { tasks, predictions } = await evaluate(this.model, this.adapter, fitOptions.evalDataset, o, Boolean(o.outputDir), dp);
      const rec: EvalRecord = { step: this.step, tasks };
      this.adapter.setMode(true);
      history.evals.push(rec);
      if (log) fs.appendFileSync(log, JSON.stringify({ type: 'eval', ...rec }) + '\n');
      for (const sink of sinks) sink.log(rec.step, evalScalars(rec.tasks));
      if (showLines) process.stderr.write(`eval at step ${rec.step}:\n${evalText(tasks).replace(/^/gm, '  ')}\n`);
      if (o.outputDir && writer) writeFileAtomically(path.join(o.outputDir, evalPredictionsName(this.step)), predictions.map((p) => JSON.stringify(p) + '\n').join(''));
      if (fitOptions.onEval) duringCallback(this.model, () => fitOptions.onEval!(rec));
      await notify('onEvaluate', rec, state());
      if (callbacks.length) await notify('onLog', rec.step, evalScalars(tasks), state());
      const best = this.best.newBest(tasks, path.join(o.outputDir ?? '', checkpointName(this.step)));
      if (best) {
        await save();
        history.bestCheckpoint = best.checkpoint;
        history.bestMetric = best.value;
      }
      return this.best.shouldStop(tasks);
    };
    const sigint = { requested: false };
    // in the REPL Ctrl-C is a key that interrupts the `await` but not the fit: there it stops the fit
    // unless stopOnSigint is false
    const stopOnSigint = fitOptions.stopOnSigint ?? rawTerminal();
    const stopListening = stopOnSigint
      ? onInterrupt((count) => {
          if (count > 1) process.exit(130); // Ctrl-C again: at once, without a checkpoint
          sigint.requested = true;
          process.stderr.write(bar ? CLEAR_LINE : '\n');
          bar?.close(); // no more redraws: the REPL's prompt comes next
          process.stderr.write(`rlora: Ctrl-C: stopping after step ${this.step + 1}${o.outputDir ? ' and writing a checkpoint' : ''} (Ctrl-C again to quit at once)\n`);
        })
      : undefined;
    try {
      await notify('onTrainBegin', state());
      while (this.step < total && !stopRequested) {
        const micro: Batch[] = [];
        for (let k = 0; k < o.gradientAccumulation; k++) {
          const rows = dp ? rankSlice(this.sampler.next(), R, W) : this.sampler.next();
          micro.push(o.packing ? packBatch(rows) : rows); // the same examples, laid out without padding
        }
        const t0 = process.hrtime.bigint();
        const r = await step(this.model, micro, this.optimizer, o.precision ?? 'float32', Boolean(dp), o.gradientCheckpointing ?? false);
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        let tokens = micro.reduce((a, b) => a + (b.tasks.length ? b.attentionMask.flat().reduce((x, y) => x + y, 0) : 0), 0);
        if (!r.finite && !o.skipNonFinite) {
          throw new Error(
            `the loss became ${r.loss} at step ${this.step + 1}; no update was made. Last good checkpoint: ${this.lastCheckpoint ?? 'none'} ` +
              '(lower the learning rate, or set skipNonFinite to skip such steps)',
          );
        }
        if (!r.paramsFinite) {
          this.brokenAt = { step: this.step + 1, paramNorm: r.paramNorm };
          throw this.brokenError();
        }
        this.step += 1;
        if (!r.finite) history.skippedSteps += 1;
        const sums = r.rowLoss;
        const counts = r.rowTokens;
        let taskSum: Record<string, number> = byTask(), taskCount: Record<string, number> = byTask();
        micro.flatMap((b) => (b.tasks.length ? b.tasks : [undefined])).forEach((task, i) => {
          if (task === undefined) return; // a rank's empty slice (one row without labels)
          taskSum[task] = (taskSum[task] ?? 0) + sums[i];
          taskCount[task] = (taskCount[task] ?? 0) + counts[i];
        });
        if (dp) {
          // the step's tokens and per-task losses over every rank
          const names = train.tasks;
          const v = await distributed.allreduceSum([tokens, ...names.map((t) => taskSum[t] ?? 0), ...names.map((t) => taskCount[t] ?? 0)]);
          tokens = v[0];
          taskSum = Object.assign(byTask<number>(), Object.fromEntries(names.map((t, i) => [t, v[1 + i]])));
          taskCount = Object.assign(byTask<number>(), Object.fromEntries(names.map((t, i) => [t, v[1 + names.length + i]])));
        }
        const rec: StepRecord = {
          step: this.step,
          epoch: this.sampler.epoch,
          loss: r.loss,
          taskLoss: Object.fromEntries(Object.keys(taskSum).sort().filter((k) => taskCount[k] > 0).map((k) => [k, taskSum[k] / taskCount[k]])),
          lr: r.lr,
          gradNorm: r.gradNorm,
          tokens,
          tokensPerSecond: tokens / seconds,
          ...(r.finite ? {} : { skipped: true }),
        };
        steps.push(rec);
        if (log) fs.appendFileSync(log, JSON.stringify(rec) + '\n');
        for (const sink of sinks) sink.log(rec.step, stepScalars(rec));
        bar?.update(this.step, rec.loss.toFixed(4), String(Math.round(rec.tokensPerSecond)));
        if (showLines && (rec.step === firstStep + 1 || rec.step % o.loggingSteps === 0 || rec.step === total)) process.stderr.write(stepLine(rec, total) + '\n');
        if (fitOptions.onStep) duringCallback(this.model, () => fitOptions.onStep!(rec));
        await notify('onStepEnd', rec, state());
        if (callbacks.length) await notify('onLog', rec.step, stepScalars(rec), state());
        const next = afterStep(o, { step: this.step, total, firstStep, skippedSteps: history.skippedSteps });
        if (next.evaluate && (await evaluateNow())) {
          history.stopped = 'earlyStopping';
          break;
        }
        if (next.save && savedAt !== this.step) await save();
        if (next.stop) {
          history.stopped = next.stop;
          break;
        }
        let aborted = Boolean(fitOptions.signal?.aborted) || sigint.requested;
        let stopped = stopRequested;
        // one decision for every rank: any rank's abort (Ctrl-C) or callback stops them all after this step
        if (dp) [aborted, stopped] = (await distributed.allreduceSum([aborted ? 1 : 0, stopped ? 1 : 0])).map((v) => v > 0);
        if (aborted || stopped) {
          history.stopped = aborted ? 'aborted' : 'callback';
          break;
        }
      }
      if (stopRequested && history.stopped === 'completed') history.stopped = 'callback'; // onTrainBegin asked
      if (history.stopped === 'completed') await evaluateNow();
      if (o.outputDir && savedAt !== this.step) await save();
      if (o.loadBestAtEnd && history.bestCheckpoint && (history.stopped === 'completed' || history.stopped === 'earlyStopping')) {
        this.loadAdapterWeights(history.bestCheckpoint);
      }
    } finally {
      stopListening?.();
      bar?.stop();
      this.adapter.setMode(false);
    }
    history.steps = steps.records();
    if (history.skippedSteps > 0) {
      console.warn(
        `rlora: skipped ${history.skippedSteps} of ${history.steps.length} steps (${firstStep + 1}..${this.step}) for a non-finite loss` +
          (history.stopped === 'nonFinite' ? `; stopped, as more than half of the ${total - firstStep} steps planned were skipped` : '') +
          ' (lower the learning rate?)',
      );
    }
    for (const cb of callbacks) if (cb.onTrainEnd) await duringCallback(this.model, () => cb.onTrainEnd!(history, state()));
    return history;
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
    const r = await evaluate(this.model, this.adapter, dataset, this.options, Boolean(options.returnPredictions));
    return options.returnPredictions ? r : r.tasks;
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
    if (this.brokenAt) throw this.brokenError();
    const dir = path.join(dir0, checkpointName(this.step));
    const opt = this.optimizer.native.state();
    const sampler = this.sampler;
    replaceFolder(dir, (tmp) => {
      duringCallback(this.model, () => this.adapter.write(tmp)); // between steps: nothing native runs
      writeOptimizerState(tmp, opt);
      writeRngStates(tmp, rngStates ?? Object.fromEntries([...this.adapter.layers].map(([name, layer]) => [name, new Tensor(layer.native.generatorState())])));
      writeTrainerState(tmp, {
        version: 1,
        step: this.step,
        totalSteps: this.totalSteps!,
        options: this.savedOptions(),
        sampler: sampler.state(),
        dataset: this.trainInfo!,
        best: this.best.state,
        customMetrics: Object.entries(this.options.metrics ?? {}).filter(([, v]) => typeof v === 'function').map(([k]) => k),
      });
    }, { refuseLink: true }); // a link planted at checkpoint-<step> is refused, never followed
    this.lastCheckpoint = dir;
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
    const b = this.brokenAt!;
    return new Error(
      `the update of step ${b.step} left the trainable parameters non-finite or too large (L2 norm ${b.paramNorm}); ` +
        `the adapter in memory holds them, so nothing is saved or trained from here. Last good checkpoint: ${this.lastCheckpoint ?? 'none'} ` +
        '(lower the learning rate and resume from it)',
    );
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
    const rngPath = file(RNG_FILE);
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
      trainer.step = state.step;
      trainer.resumedFrom = state.step;
      trainer.resumedState = statePath;
      trainer.totalSteps = total;
      if (state.best !== undefined) trainer.best.state = state.best;
      trainer.pendingSampler = state.sampler;
      trainer.pendingTrainInfo = state.dataset;
      trainer.lastCheckpoint = checkpointDir;
      const optimizer = naming(statePath, () => trainer.createOptimizer(total));
      naming(file(OPTIMIZER_FILE), () => optimizer.native.setState(optimizerState));
      trainer.optimizer = optimizer;
      for (const [name, t] of rng) {
        if (/^rank\d+\//.test(name)) {
          trainer.rankRng.set(name, t); // another rank's stream (data parallelism): taken when it joins
          continue;
        }
        const layer = adapter.layers.get(name);
        if (!layer) throw new Error(`${rngPath} names ${name}, which the adapter does not wrap`);
        naming(rngPath, () => layer.native.setGeneratorState(t.native));
      }
      const missing = [...adapter.layers.keys()].filter((name) => !rng.has(name));
      if (missing.length) throw new Error(`${rngPath} has no generator state for ${missing.join(', ')}`);
      return trainer;
    } catch (e) {
      adapter.detach();
      throw e;
    }
  }
}
