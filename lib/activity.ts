// What is running on a model. Training (Trainer.fit, or one trainStep) holds the model until it
// ends; meanwhile every other call that would train it, change its adapter or read it (a second
// fit or trainStep, Adapter.detach / merge, Trainer.saveCheckpoint, Model.forward / generate / save,
// Trainer.evaluate) is refused at once with an error naming what is running. Refusing, rather than
// queueing, keeps training results independent of what else the program does: an inference call
// would otherwise run in training mode (dropout on) and consume the training's random numbers.

const running = new WeakMap<object, string>();

/** Marks `model` as training by `what`; throws if something already trains it. */
export function beginTraining(model: object, what: string): void {
  assertNotTraining(model, what);
  running.set(model, what);
}

export function endTraining(model: object): void {
  running.delete(model);
}

/** Throws `<action> refused: the model is training (<what> is running)` while `model` trains. */
export function assertNotTraining(model: object, action: string): void {
  const what = running.get(model);
  if (what !== undefined) {
    throw new Error(`${action} refused: the model is training (${what} is running); wait for it to finish (await it), or stop it with the fit's AbortSignal`);
  }
}
