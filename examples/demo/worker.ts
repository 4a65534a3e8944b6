// A demo worker process (pool.ts): runs the jobs its parent sends, one at a time, and replies with
// each result; exits when the parent disconnects.
import { Job, runJob } from './run';

process.on('message', (m: { job: Job }) => {
  runJob(m.job).then(
    (ok) => process.send!({ ok }),
    (e: unknown) => process.send!({ error: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
process.on('disconnect', () => process.exit(0));
