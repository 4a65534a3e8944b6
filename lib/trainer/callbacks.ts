// Trainer.fit's options and the hooks it calls (in the shape of Hugging Face's TrainerCallback),
// checked here once.
import type { MultiTaskDataset } from '../data';
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

