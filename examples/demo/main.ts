// Command line of the language-model demo: npm run demo -- [--quick] [--seeds N] [--out dir] [--device cuda] [--workers N] [--tune] [--ladder [--budget K]]
import { runLadder } from './ladder';
import { runDemo } from './run';

const USAGE = `npm run demo -- [options]

  --quick        one seed, fewer steps and test words (under a minute on 2 cores)
  --seeds N      seeds per method (default 3; quick 1); the table shows mean±std over seeds
  --out DIR      where results.json and figure.svg/png go (default ./demo-out)
  --device D     cpu (default) or cuda
  --workers N    worker processes running jobs side by side (default: cores, at most 2)
  --threads N    threads per job (default 1)
  --tune         choose each method's learning rate on the validation split (writes tune.json)
  --base DIR     another base model folder made by npm run demo:pretrain -- --out DIR

The R-LoRA ladder: HydraLoRA, then one of R-LoRA's choices added at a time up to R-LoRA, and
R-LoRA with the published code's init scale; each rung's learning rate picked on validation by
the mean over the seeds, test accuracy with paired 95% intervals against HydraLoRA. Writes
DIR/ladder/ (ladder.md, ladder.json and the sweep's files). About 150 jobs: an hour or more on 2 cores.
  --ladder       run it (default: 300 steps of 16, 3 seeds, rates 5e-4 7e-4 1e-3 1.5e-3 2e-3 3e-3)
  --budget K     with --ladder: K times the steps, at the rates the ladder picked at the default
                 budget (run --ladder first; nothing is tuned at K); writes DIR/ladder/budget-K/
  --rates LIST   with --ladder: other learning rates to try, comma-separated

For trying things out:
  --steps N      optimizer steps of each job (default 300; quick 30)
  --sizes T,V,E  examples per task in train, validation and test (default 2000,200,200; quick 400,40,40)

A stopped run started again with the same options skips the jobs that finished (each job's result
is a file under DIR/jobs/, DIR/ladder/jobs/, ...).`;

export async function main(argv: string[]): Promise<number> {
  const o: Parameters<typeof runDemo>[0] & {} = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n\n${USAGE}`);
      return v;
    };
    const int = (v: string): number => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive integer, got ${JSON.stringify(v)}`);
      return n;
    };
    const list = (v: string, count?: number): number[] => {
      const xs = v.split(',').map((x) => Number(x.trim()));
      if (xs.some((x) => !Number.isFinite(x) || x <= 0) || (count !== undefined && xs.length !== count)) {
        throw new Error(`${a} needs ${count ?? 'a list of'} positive numbers separated by commas, got ${JSON.stringify(v)}`);
      }
      return xs;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--tune') o.tune = true;
    else if (a === '--ladder') o.ladder = true;
    else if (a === '--budget') o.budget = int(value());
    else if (a === '--rates') o.rates = list(value());
    else if (a === '--steps') o.steps = int(value());
    else if (a === '--sizes') {
      const [train, validation, test] = list(value(), 3);
      if (![train, validation, test].every(Number.isInteger)) throw new Error(`--sizes needs three integers, got ${JSON.stringify(argv[i])}`);
      o.sizes = { train, validation, test };
    } else if (a === '--seeds') o.seeds = int(value());
    else if (a === '--threads') o.threads = int(value());
    else if (a === '--workers') o.workers = int(value());
    else if (a === '--out') o.out = value();
    else if (a === '--base') o.baseDir = value();
    else if (a === '--device') {
      o.device = value();
      if (o.device !== 'cpu' && !/^cuda(:\d+)?$/.test(o.device)) throw new Error(`--device must be cpu or cuda, got ${JSON.stringify(o.device)}`);
    } else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      return 0;
    } else throw new Error(`unknown option ${a}\n\n${USAGE}`);
  }
  if ((o.budget !== undefined || o.rates !== undefined) && !o.ladder) throw new Error(`--budget and --rates go with --ladder\n\n${USAGE}`);
  if (o.ladder && o.tune) throw new Error('--ladder and --tune: one at a time');
  if (o.ladder) await runLadder(o);
  else await runDemo(o);
  return 0;
}
