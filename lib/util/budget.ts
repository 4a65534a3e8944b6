// Time budgets for work that a downloaded file describes and that runs synchronously on the JS
// thread: a chat template (a Jinja program) and a tokenizer's regexes. A template with
// `range(1000000000)` or nested loops, or a pattern like `(a+)+$` that backtracks, would otherwise
// hold the process for minutes or exhaust V8's heap. The budget is enforced by V8 itself: the work
// runs under a vm script with a timeout, whose watchdog stops JavaScript (regex matching
// included) when the time is up.
import * as vm from 'vm';

const context = vm.createContext(Object.create(null));
const call = new vm.Script('run()', { filename: 'rlora-budget' });

/** Thrown when work ran past its budget; `message` says what ran and for how long it may. */
export class BudgetExceededError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BudgetExceededError';
  }
}

/**
 * The budget for work on a text of `chars` characters: one second, plus one millisecond for every
 * 100 characters (a megabyte of text gets 11 s; real templates and tokenizers need a small fraction).
 */
export function budgetFor(chars: number): number {
  return 1000 + Math.ceil(chars / 100);
}

/**
 * `fn()`, stopped after `ms` milliseconds with a BudgetExceededError whose message is `what()`
 * followed by the budget. Errors `fn` throws pass through unchanged.
 */
export function withBudget<T>(ms: number, fn: () => T, what: () => string): T {
  let result: T | undefined;
  (context as { run?: () => void }).run = () => {
    result = fn();
  };
  try {
    call.runInContext(context, { timeout: ms });
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') {
      throw new BudgetExceededError(`${what()}: stopped after ${ms} ms (the budget for this input)`);
    }
    throw err;
  } finally {
    (context as { run?: () => void }).run = undefined;
  }
  return result as T;
}
