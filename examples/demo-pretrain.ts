// npm run demo:pretrain: reproduces the demo's shipped base model (examples/demo/base) from the text
// of the demo's npm data packages. About 75 minutes on 2 cores; see examples/demo/pretrain.ts.
//
//   npm run demo:pretrain -- [--out dir] [--steps N] [--threads N]
import { pretrain } from './demo/pretrain';

const USAGE = 'npm run demo:pretrain -- [--out DIR (default examples/demo/base)] [--steps N] [--threads N]';

async function main(argv: string[]): Promise<void> {
  const o: { out?: string; steps?: number; threads?: number } = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[++i];
    if (a === '--help' || a === '-h') return console.log(USAGE);
    if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
    if (a === '--out') o.out = v;
    else if (a === '--steps' || a === '--threads') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive integer, got ${JSON.stringify(v)}`);
      o[a === '--steps' ? 'steps' : 'threads'] = n;
    } else throw new Error(`unknown option ${a}\n${USAGE}`);
  }
  await pretrain(o);
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
