// npm run demo: R-LoRA against LoRA and HydraLoRA on a real multi-task mixture, in miniature.
//
// A tiny byte-level LLaMA is pretrained on Moby-Dick (once; cached under ~/.cache/rlora), then
// LoRA, HydraLoRA, R-LoRA and two R-LoRA ablations are fine-tuned on five tasks built from npm data
// packages (examples/demo/data.ts) with the same seed and data order, evaluated on a held-out test
// split (exact match and loss per task), and their heads compared. See examples/demo/run.ts.
//
//   npm run demo -- [--quick] [--seeds 3] [--out demo-out] [--device cuda] [--tune]
import { main } from './demo/main';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(e instanceof Error && /^(unknown option|--)/.test(e.message) ? e.message : e);
    process.exit(1);
  },
);
