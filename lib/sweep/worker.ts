// A sweep worker process (pool.ts): runs the jobs its parent sends, one at a time, and replies with
// each result; exits when the parent disconnects (or dies).
import { Job, runJob } from './job';

process.on('message', (m: { job: Job; what: string }) => {
  runJob(m.job, m.what).then(
    (ok) => process.send!({ ok }),
    (e: unknown) => process.send!({ error: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
process.on('disconnect', () => process.exit(0));
