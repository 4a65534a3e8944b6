// Command line of the language-model demo: npm run demo -- [--quick] [--seeds N] [--out dir] [--device cuda] [--tune]
import { runDemo } from './run';

const USAGE = `npm run demo -- [options]

  --quick        a small model and a few steps (under a minute on 2 cores)
  --seeds N      repeat the fine-tuning with N seeds; the table shows mean and spread
  --out DIR      where results.json and figure.svg/png go (default ./demo-out)
  --device D     cpu (default) or cuda
  --threads N    threads per native job (default 1)
  --tune         choose the shared learning rate on the validation split (prints, writes tune.json)`;

export async function main(argv: string[]): Promise<number> {
  const o: { quick?: boolean; seeds?: number; out?: string; device?: string; tune?: boolean; threads?: number } = {};
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
    else if (a === '--out') o.out = value();
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
