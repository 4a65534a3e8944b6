// Run by test/hub.test.ts in a process of its own, to be killed with SIGKILL in the middle of a
// download: resolves a Hub repo id (HF_ENDPOINT and HF_HUB_CACHE come from the environment) and
// prints the folder it got. Needs no native addon.
import { resolveModel } from '../../lib/hub/resolve';

resolveModel(process.argv[2], { kind: 'model' }).then(
  (dir) => console.log(dir),
  (e) => {
    console.error((e as Error).message);
    process.exitCode = 1;
  },
);
