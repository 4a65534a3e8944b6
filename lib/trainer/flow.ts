// What happens after each optimizer step, decided in one place (as the Hugging Face Trainer's
// DefaultFlowCallback decides): whether to evaluate, to write a checkpoint, and whether the fit
// stops. Pure functions of the step counters and the options, so the rule can be read and tested
// on its own.

/** The options the decision reads. */
export interface FlowOptions {
  evalEvery: number;
  saveEvery: number;
  outputDir?: string;
}

/** Where the fit is after a step. */
export interface FlowCounters {
  /** The step just taken (1-based) and the last step of the fit. */
  step: number;
  total: number;
  /** The trainer's step when this fit began, and the steps of this fit skipped for a non-finite loss. */
  firstStep: number;
  skippedSteps: number;
}

/** Evaluate (every evalEvery steps, not at the last: the end evaluates anyway), write a checkpoint (every saveEvery steps, likewise). */
export function afterStep(o: FlowOptions, c: FlowCounters): { evaluate: boolean; save: boolean; stop?: 'nonFinite' } {
  const before = c.step < c.total;
  return {
    evaluate: o.evalEvery > 0 && c.step % o.evalEvery === 0 && before,
    save: Boolean(o.outputDir) && o.saveEvery > 0 && c.step % o.saveEvery === 0 && before,
    // with skipNonFinite, more than half of this fit's planned steps skipped: nothing useful is learnt
    ...(2 * c.skippedSteps > c.total - c.firstStep ? { stop: 'nonFinite' as const } : {}),
  };
}
