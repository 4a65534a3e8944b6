// What is running on a model. Training (Trainer.fit, or one trainStep) holds the model until it
// ends; meanwhile every other call that would train it, change its adapter or read its values (a
// second fit or trainStep, Adapter.detach / merge / save / stateDict / headSimilarity / train / eval,
// the adapter's layers' forward, stateDict, loadStateDict and dispose, Trainer.saveCheckpoint,
// Model.forward / generate / save, Trainer.evaluate) is refused at once with an error naming what is
// running. Refusing, rather than queueing, keeps training results independent of what else the
// program does: an inference call would otherwise run in training mode (dropout on) and consume the
// training's random numbers, and a read could see a tensor half-way through an optimizer step.
// This is the one rule: it is checked here, on the JS thread, before any native call starts, so
// nothing waits on a native lock. A layer belongs to the model its adapter is attached to
// (setOwner); a layer trained on its own by fitStep is held itself.

const running = new WeakMap<object, string>();
const owners = new WeakMap<object, object>();
// Models whose Trainer is running a user callback (onStep, onEval) between two steps: the
// callback may read and change the adapter synchronously (nothing native runs meanwhile).
const inCallback = new WeakSet<object>();

/** Marks `target` (a model, or a layer trained alone) as training by `what`; throws if something already trains it. */
export function beginTraining(target: object, what: string): void {
  assertNotTraining(target, what);
  running.set(target, what);
}

export function endTraining(target: object): void {
  running.delete(target);
}

/** Records that `part` (an adapter's layer) belongs to `owner` (its model), or no longer does (undefined). */
export function setOwner(part: object, owner: object | undefined): void {
  if (owner === undefined) owners.delete(part);
  else owners.set(part, owner);
}

/** Runs a user callback of the training of `model` between two steps: synchronous reads and changes of its adapter are allowed in it. */
export function duringCallback<T>(model: object, fn: () => T): T {
  const outer = inCallback.has(model); // nested (a checkpoint written from a callback's save): the outer call clears it
  inCallback.add(model);
  try {
    return fn();
  } finally {
    if (!outer) inCallback.delete(model);
  }
}

/** What trains `target` or what it belongs to, if anything (a callback's synchronous calls are let through where `inCallbackOk`). */
export function trainingOf(target: object, inCallbackOk = false): string | undefined {
  for (let t: object | undefined = target; t !== undefined; t = owners.get(t)) {
    const what = running.get(t);
    if (what !== undefined) return inCallbackOk && inCallback.has(t) ? undefined : what;
  }
  return undefined;
}

/**
 * Throws `<action> refused: the model is training (<what> is running)` while `target` (or its
 * model) trains. `inCallbackOk`: a synchronous call (no native job outlives it) that a training
 * callback may make between steps.
 */
export function assertNotTraining(target: object, action: string, inCallbackOk = false): void {
  const what = trainingOf(target, inCallbackOk);
  if (what !== undefined) {
    throw new Error(
      `${action} refused: the model is training (${what} is running); wait for it to finish (did you forget to await it?), or stop it with the fit's AbortSignal`,
    );
  }
}

// What is attached to a model (its adapter): kept here, beside what runs on it, so that a model can
// dispose of its adapter without knowing the Adapter class (model.ts and adapter/adapter.ts would import
// each other otherwise).
const attachments = new WeakMap<object, { dispose(): void }>();

/** Records `part` as attached to `model` (undefined: nothing is attached any more). */
export function setAttached(model: object, part: { dispose(): void } | undefined): void {
  if (part === undefined) attachments.delete(model);
  else attachments.set(model, part);
}

/** What is attached to `model`, if anything. */
export function attachedTo(model: object): { dispose(): void } | undefined {
  return attachments.get(model);
}
