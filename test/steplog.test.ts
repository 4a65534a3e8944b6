// StepLog keeps a fit's steps in columns; the records it gives back must be the ones pushed.
import { StepLog } from '../lib/trainer/steplog';
import type { StepRecord } from '../lib/trainer';

describe('StepLog', () => {
  it('gives back every record pushed, past its growth, with tasks that appear late, NaN losses and skipped steps', () => {
    const log = new StepLog();
    const pushed: StepRecord[] = [];
    for (let i = 1; i <= 1000; i++) {
      const taskLoss: Record<string, number> = {};
      if (i % 2) taskLoss.a = 1 / i;
      if (i > 600) taskLoss.b = i % 7 === 0 ? NaN : -i;
      const rec: StepRecord = { step: i, epoch: Math.floor(i / 300), loss: i === 500 ? Infinity : 2 / i, taskLoss, lr: 1e-3 * i, gradNorm: i % 5, tokens: 16 + i, tokensPerSecond: 1000.5 + i, ...(i === 500 ? { skipped: true } : {}) };
      log.push(rec);
      pushed.push(rec);
    }
    expect(log.length).toBe(1000);
    const back = log.records();
    expect(back).toEqual(pushed);
    expect(Object.keys(back[700].taskLoss)).toEqual(['a', 'b']);
    expect(back[1].taskLoss).toEqual({});
    expect('skipped' in back[498]).toBe(false);
    expect(back[499].skipped).toBe(true);
  });
});
