// Command line of the language-model demo: npm run demo -- [--quick] [--seeds N] [--out dir] [--device cuda] [--workers N] [--tune]
import { runDemo } from './run';

const USAGE = `npm run demo -- [options]

  --quick        one seed, fewer steps and test words (under a minute on 2 cores)
  --seeds N      seeds per method (default 3; quick 1); the table shows mean±std over seeds
  --out DIR      where results.json and figure.svg/png go (default ./demo-out)
  --device D     cpu (default) or cuda
  --workers N    worker processes running jobs side by side (default: cores, at most 2)
  --threads N    threads per job (default 1)
  --tune         choose each method's learning rate on the validation split (writes tune.json)
  --base DIR     another base model folder made by npm run demo:pretrain -- --out DIR`;

export async function main(argv: string[]): Promise<number> {
  const o: { quick?: boolean; seeds?: number; out?: string; device?: string; tune?: boolean; threads?: number; workers?: number; baseDir?: string } = {};
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
    if (a === '--quick') o.quick = true;
    else if (a === '--tune') o.tune = true;
    else if (a === '--seeds') o.seeds = int(value());
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
  await runDemo(o);
  return 0;
}
