// npm run demo: R-LoRA against LoRA and HydraLoRA on a multi-task mixture, in miniature.
//
// The shipped base model (examples/demo/base: a 2.7M-parameter byte-level LLaMA pretrained by
// `npm run demo:pretrain`) is fine-tuned with LoRA, HydraLoRA, R-LoRA and the paper's two R-LoRA
// ablations on questions about the same English words (examples/demo/data.ts), 3 seeds each, and
// evaluated on held-out words (exact match and loss per task); the table gives mean±std over seeds
// and the paired R-LoRA − HydraLoRA difference with its 95% interval. See examples/demo/run.ts.
// `--ladder` runs the R-LoRA ladder instead (examples/demo/ladder.ts): HydraLoRA to R-LoRA one
// choice at a time, learning rates picked on validation, test accuracy against HydraLoRA.
//
//   npm run demo -- [--quick] [--seeds N] [--out demo-out] [--device cuda] [--workers N] [--tune] [--ladder [--budget K]]
import { main } from './demo/main';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(e instanceof Error && /^(unknown option|--)/.test(e.message) ? e.message : e);
    process.exit(1);
  },
);
