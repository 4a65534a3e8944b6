// Trainer.fit's options and the hooks it calls (in the shape of Hugging Face's TrainerCallback),
// checked here once; and the one dispatcher of the fit's events (CallbackHandler) to rlora's own
// callbacks and the user's.
import type { MultiTaskDataset } from '../data';
import { onInterrupt } from '../util/interrupt';
import { checkKeys, isPlainObject, show } from '../util/options';
import type { EvalRecord, History, StepRecord } from './records';

export interface FitOptions {
  evalDataset?: MultiTaskDataset;
  /** Stops after the current step (and writes a checkpoint when outputDir is set). */
  signal?: { readonly aborted: boolean };
  /** Called after each step's record (as TrainerCallback.onStepEnd, without the way to stop). */
  onStep?: (record: StepRecord) => void;
  /** Called after each evaluation (as TrainerCallback.onEvaluate, without the way to stop). */
  onEval?: (record: EvalRecord) => void;
  /** Hooks in the shape of Hugging Face's TrainerCallback; each may stop the fit. Called in order. */
  callbacks?: TrainerCallback[];
  /**
   * Ctrl-C (SIGINT) while this fit runs finishes the current step, writes a checkpoint (with
   * outputDir) and returns with stopped 'aborted', as `rlora train` does; a second Ctrl-C (more
   * than a second after the first: npx tsx passes one Ctrl-C on as two signals) quits at once (exit
   * code 130). Without it a script dies at Ctrl-C with no checkpoint. Default false in a script; in
   * the Node REPL (stdin a terminal in raw mode, where Ctrl-C is a key that interrupts the `await`
   * but not the fit) true: the fit stops after the step with a checkpoint and its progress line is
   * erased before the prompt.
   */
  stopOnSigint?: boolean;
}

/** What a callback may return: `{stop: true}` ends the fit after this step (History.stopped 'callback'), as control.should_training_stop does. */
export type CallbackResult = void | undefined | { stop?: boolean } | Promise<void | undefined | { stop?: boolean }>;

/** Where the fit is, for callbacks. */
export interface CallbackState {
  /** Steps done so far (the trainer's step). */
  step: number;
  /** The steps this fit runs to. */
  totalSteps: number;
}

/**
 * Hooks called by Trainer.fit, in the shape of Hugging Face's TrainerCallback (on_step_end, on_log,
 * on_evaluate, on_save, on_train_end). They run on the JS thread between steps: in a hook's
 * synchronous part the adapter may be read or changed (stateDict, loadStateDict, save); a native
 * job started there is refused (README "Calls during training"). A hook that returns a Promise is
 * awaited before the next step. An exception in a hook ends the fit with it.
 */
export interface TrainerCallback {
  /** Before the first step of this fit. */
  onTrainBegin?(state: CallbackState): CallbackResult;
  /** After each optimizer step, with its record. */
  onStepEnd?(record: StepRecord, state: CallbackState): CallbackResult;
  /** With the numbers of each step and each evaluation, as reportTo receives them (`train/loss`, `eval/<task>/accuracy`, ...). */
  onLog?(step: number, scalars: Record<string, number>, state: CallbackState): CallbackResult;
  /** After each evaluation. */
  onEvaluate?(record: EvalRecord, state: CallbackState): CallbackResult;
  /** After each checkpoint is written, with its folder. */
  onSave?(checkpoint: string, state: CallbackState): CallbackResult;
  /** When the fit ends (any way but an exception), with its history. */
  onTrainEnd?(history: History, state: CallbackState): void | Promise<void>;
}

export const CALLBACK_HOOKS = ['onTrainBegin', 'onStepEnd', 'onLog', 'onEvaluate', 'onSave', 'onTrainEnd'] as const;

/** FitOptions.callbacks checked: an array of objects; a plain object's keys must be hooks (a typo would never be called). */
export function checkCallbacks(callbacks: unknown): TrainerCallback[] {
  if (callbacks === undefined) return [];
  if (!Array.isArray(callbacks)) throw new TypeError(`fit: callbacks must be an array of TrainerCallback objects, got ${show(callbacks)}`);
  callbacks.forEach((cb, i) => {
    if (typeof cb !== 'object' || cb === null) throw new TypeError(`fit: callbacks[${i}] must be an object with hooks (${CALLBACK_HOOKS.join(', ')}), got ${show(cb)}`);
    if (isPlainObject(cb)) checkKeys(cb, CALLBACK_HOOKS, `fit: callbacks[${i}]`);
    for (const h of CALLBACK_HOOKS) {
      const fn = (cb as Record<string, unknown>)[h];
      if (fn !== undefined && typeof fn !== 'function') throw new TypeError(`fit: callbacks[${i}].${h} must be a function, got ${show(fn)}`);
    }
  });
  return callbacks as TrainerCallback[];
}


/**
 * rlora's own callbacks (log.jsonl, the metric sinks, the progress line, the lines on stderr: in
 * reporting.ts) have three hooks more than TrainerCallback's.
 * @internal
 */
export interface FitReporter extends TrainerCallback {
  /** During an evaluation: `done` of `total` examples evaluated. */
  onEvaluateProgress?(done: number, total: number): void;
  /** At Ctrl-C (count 1; 2 for the one that quits at once), while a step runs. */
  onInterrupt?(count: number, state: CallbackState): void;
  /** When the fit ends, however (an exception too): after onTrainEnd when it returns. */
  close?(): void;
}

type Hook = keyof TrainerCallback;
type HookArgs<K extends Hook> = Parameters<NonNullable<TrainerCallback[K]>> extends [...infer A, CallbackState] ? A : never;

/**
 * The one path of events out of Trainer.fit (as transformers' CallbackHandler): each hook goes to
 * rlora's own callbacks first, then to the user's (FitOptions.onStep and onEval, then
 * FitOptions.callbacks, in their order), each with the fit's state. User hooks run as callbacks
 * during training (`during`: lib/activity.ts) and may ask to stop (`{stop: true}`); Ctrl-C
 * (listenForCtrlC, lib/util/interrupt.ts) asks to abort.
 * @internal
 */
export class CallbackHandler {
  /** A user hook returned {stop: true}: the fit ends after this step. */
  stopRequested = false;
  /** Ctrl-C: the fit ends after this step (History.stopped 'aborted'). */
  interrupted = false;
  readonly #own: FitReporter[];
  readonly #user: TrainerCallback[];
  readonly #during: <T>(fn: () => T) => T;
  readonly #state: () => CallbackState;

  constructor(own: FitReporter[], user: TrainerCallback[], during: <T>(fn: () => T) => T, state: () => CallbackState) {
    this.#own = own;
    this.#user = user;
    this.#during = during;
    this.#state = state;
  }

  /** Calls `hook` of every callback, own ones first, awaiting each in turn. */
  async notify<K extends Hook>(hook: K, ...args: HookArgs<K>): Promise<void> {
    const all = [...args, this.#state()];
    for (const cb of this.#own) {
      const fn = cb[hook] as ((...a: unknown[]) => CallbackResult) | undefined;
      if (fn) await fn.apply(cb, all);
    }
    for (const cb of this.#user) {
      const fn = cb[hook] as ((...a: unknown[]) => CallbackResult) | undefined;
      if (!fn) continue;
      const r = this.#during(() => fn.apply(cb, all));
      const v = r instanceof Promise ? await r : r;
      if (hook !== 'onTrainEnd' && typeof v === 'object' && v !== null && v.stop === true) this.stopRequested = true;
    }
  }

  /** An evaluation's progress, to rlora's own callbacks. */
  evaluateProgress(done: number, total: number): void {
    for (const cb of this.#own) cb.onEvaluateProgress?.(done, total);
  }

  /** The end of the fit, however it ends. */
  close(): void {
    for (const cb of this.#own) cb.close?.();
  }

  /**
   * Ctrl-C until the returned function is called: the first sets `interrupted` (the fit stops after
   * the current step, with a checkpoint), a later one quits at once (exit code 130); own callbacks
   * hear both first (the notice, the progress line cleared).
   */
  listenForCtrlC(): () => void {
    return onInterrupt((count) => {
      for (const cb of this.#own) cb.onInterrupt?.(count, this.#state());
      if (count > 1) process.exit(INTERRUPTED_EXIT_CODE); // again: at once, without a checkpoint
      this.interrupted = true;
    });
  }
}

/** The exit code after a second Ctrl-C (128 + SIGINT, as shells report it). */
export const INTERRUPTED_EXIT_CODE = 130;
