// The steps of a fit, kept in columns while it runs: 8 bytes a value in growable Float64Arrays
// instead of one JS object a step (about 280 bytes of V8 heap with its per-task losses). A
// 100,000-step fit so keeps about 7 MB instead of about 28 MB while it trains; fit builds the
// StepRecord objects once, when it returns.
import type { StepRecord } from './records';

const FIELDS = ['step', 'epoch', 'loss', 'lr', 'gradNorm', 'tokens', 'tokensPerSecond'] as const;

export class StepLog {
  private n = 0;
  private cap = 256;
  private readonly cols = new Map<string, Float64Array>(FIELDS.map((f) => [f, new Float64Array(this.cap)]));
  /** One column per task name: its loss, and whether the task was in the step. */
  private readonly tasks = new Map<string, { loss: Float64Array; present: Uint8Array }>();
  private skipped = new Uint8Array(this.cap);

  get length(): number {
    return this.n;
  }

  push(rec: StepRecord): void {
    if (this.n === this.cap) this.grow();
    for (const f of FIELDS) this.cols.get(f)![this.n] = rec[f];
    for (const [task, loss] of Object.entries(rec.taskLoss)) {
      let col = this.tasks.get(task);
      if (!col) this.tasks.set(task, (col = { loss: new Float64Array(this.cap), present: new Uint8Array(this.cap) }));
      col.loss[this.n] = loss;
      col.present[this.n] = 1;
    }
    this.skipped[this.n] = rec.skipped ? 1 : 0;
    this.n += 1;
  }

  /** The records, as they were pushed (task names sorted, as fit writes them). */
  records(): StepRecord[] {
    const names = [...this.tasks.keys()].sort();
    const out: StepRecord[] = new Array(this.n);
    for (let i = 0; i < this.n; i++) {
      // built from entries: a task named "__proto__" becomes a key, not the object's prototype
      const taskLoss: Record<string, number> = Object.fromEntries(
        names.flatMap((t) => {
          const col = this.tasks.get(t)!;
          return col.present[i] ? [[t, col.loss[i]]] : [];
        }),
      );
      const c = (f: (typeof FIELDS)[number]): number => this.cols.get(f)![i];
      out[i] = {
        step: c('step'),
        epoch: c('epoch'),
        loss: c('loss'),
        taskLoss,
        lr: c('lr'),
        gradNorm: c('gradNorm'),
        tokens: c('tokens'),
        tokensPerSecond: c('tokensPerSecond'),
        ...(this.skipped[i] ? { skipped: true } : {}),
      };
    }
    return out;
  }

  private grow(): void {
    this.cap *= 2;
    const wider = <T extends Float64Array | Uint8Array>(a: T): T => {
      const b = new (a.constructor as new (n: number) => T)(this.cap);
      b.set(a);
      return b;
    };
    for (const [f, a] of this.cols) this.cols.set(f, wider(a));
    for (const [t, c] of this.tasks) this.tasks.set(t, { loss: wider(c.loss), present: wider(c.present) });
    this.skipped = wider(this.skipped);
  }
}
