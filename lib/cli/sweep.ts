// rlora sweep --config sweep.json: compares adapter variants and learning rates on the user's data
// (lib/sweep/): jobs in worker processes, a result file per job (running it again skips the
// finished ones), rates picked on validation by the mean over seeds, the picks evaluated on test,
// mean ± std over seeds, paired differences with 95% intervals, sweep.json, table.md, a figure.
import * as os from 'os';
import * as path from 'path';

import { describeSweepConfig, resolveSweep, SweepConfigError } from '../sweep/config';
import { readJsonFile } from '../util/json';
import { InputError, intOption, parseArgs, stringOption, Subcommand, UsageError } from './args';

const EXAMPLE = `{
  "model": "models/SmolLM2-135M",
  "data": { "train": "data/train.jsonl", "validation": "data/validation.jsonl", "test": "data/test.jsonl",
            "template": "### {task}\\n{prompt}\\n### Answer\\n{response}", "maxLength": 256 },
  "adapter": { "targetModules": ["q_proj", "v_proj", "up_proj", "down_proj"], "rank": 8, "alpha": 16 },
  "variants": [
    { "name": "lora", "adapter": { "method": "lora", "rank": 16 } },
    { "name": "hydralora", "adapter": { "method": "hydralora" } },
    { "name": "rlora", "adapter": { "method": "rlora" } },
    { "name": "rlora-no-rslora", "adapter": { "method": "rlora", "rankStabilization": false } }
  ],
  "learningRates": [1e-4, 2e-4, 5e-4],
  "seeds": 3,
  "steps": 500,
  "batchSize": 8,
  "trainer": { "schedule": "cosine", "warmupRatio": 0.03 },
  "compare": [["rlora", "hydralora"], ["rlora", "rlora-no-rslora"]],
  "outputDir": "sweeps/smollm"
}`;

export const sweepCommand: Subcommand = {
  summary: 'compare adapter variants and learning rates on your data: seeds, validation picks, paired intervals',
  help: `rlora sweep --config sweep.json [--workers N] [--threads N] [--out DIR]

Trains every variant at every learning rate of its grid and every seed on data.train, in worker
processes side by side, and scores each run on data.validation (exact match and loss per task).
Each variant's learning rate is the best mean over the seeds there; the picks are trained again
and scored on data.test (when given). Prints one line per finished job with an estimate of the time
left, then the table: mean ± std over seeds per task, trainable parameters, tokens/s, peak memory,
head similarity, the validation grid, and for each pair of \`compare\` the paired difference (same
seed = same data order and start) with its 95% interval (Student's t over the seeds).

Each job's result is a file, outputDir/jobs/<variant>/<split>-lr<rate>-seed<seed>.json: a sweep
that was stopped (Ctrl-C, a reboot) and run again skips its finished jobs; a variant, rate or seed
added later runs only its own jobs; a job file of a job defined otherwise (other steps, data,
options) is run again and replaced. Writes outputDir/sweep.json (every number), table.md and
figure.svg/.png (training loss of the picks, head similarity per module kind).

  --config FILE   the sweep.json file (required); keys below
  --workers N     worker processes (overrides workers; default: the ${os.availableParallelism()} usable cores / threads)
  --threads N     threads per worker (overrides threads; default 1)
  --out DIR       where the results go (overrides outputDir)

The workers pin OpenBLAS to its Haswell kernels on x86-64 (unless OPENBLAS_CORETYPE is set), so
that the numbers are the same on every CPU with AVX2.

sweep.json keys (* required; paths are relative to the sweep.json file):
${describeSweepConfig()}

A data line: {"task": "upper", "prompt": "cat", "response": "CAT"}

Example sweep.json:
${EXAMPLE.replace(/^/gm, '  ')}

Examples:
  rlora sweep --config sweep.json
  rlora sweep --config sweep.json --workers 4 --out sweeps/again`,
  run: (args) => runSweepCommand(args),
};

async function runSweepCommand(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, { config: 'value', workers: 'value', threads: 'value', out: 'value' });
  if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
  const file = stringOption(opts, 'config');
  if (!file) throw new UsageError('--config sweep.json is required');
  const workers = intOption(opts, 'workers', 1, 1024);
  const threads = intOption(opts, 'threads', 1, 1024);
  const out = stringOption(opts, 'out');
  try {
    const raw = readJsonFile(file, { where: 'the sweep definition' });
    if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
      const o = raw as Record<string, unknown>;
      if (workers !== undefined) o.workers = workers;
      if (threads !== undefined) o.threads = threads;
      if (out !== undefined) o.outputDir = path.resolve(out);
    }
    const r = resolveSweep(raw, file);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { runSweep } = require('../sweep/run') as typeof import('../sweep/run');
    const result = await runSweep(r);
    console.log(result.table.trimEnd());
    return 0;
  } catch (e) {
    if (e instanceof SweepConfigError || !(e instanceof Error)) throw new InputError(e instanceof Error ? e.message : String(e));
    if (process.env.RLORA_DEBUG) console.error(e.stack);
    throw new InputError(e.message);
  }
}
