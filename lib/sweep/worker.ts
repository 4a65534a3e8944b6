// A sweep worker process (pool.ts): runs the jobs its parent sends, one at a time, and replies with
// each result; exits when the parent disconnects (or dies).
import { runJob } from './job';
import type { Job } from './types';

process.on('message', (m: { job: Job; what: string }) => {
  runJob(m.job, m.what).then(
    (ok) => process.send!({ ok }),
    // the message (the stack too under RLORA_DEBUG, or for an error that is not an Error)
    (e: unknown) => process.send!({ error: e instanceof Error ? (process.env.RLORA_DEBUG ? (e.stack ?? e.message) : e.message) : String(e) }),
  );
});
process.on('disconnect', () => process.exit(0));
