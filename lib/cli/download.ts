// rlora download <id> [--revision R]: brings a Hugging Face Hub repo's files that rlora reads into
// the Hugging Face cache (shared with Python's huggingface_hub) and prints the snapshot folder, as
// `huggingface-cli download` does. Needs no native addon.
import { downloadToCache } from '../hub/resolve';
import { hubCacheDir } from '../hub/cache';
import { formatSize } from '../hub/progress';
import { parseArgs, stringOption, Subcommand, UsageError } from './args';
import { as } from './common';

const KINDS = ['auto', 'model', 'adapter', 'tokenizer'] as const;

export const downloadCommand: Subcommand = {
  summary: 'download a model or adapter from the Hugging Face Hub into its cache; prints the folder',
  help: `rlora download <repo id> [--revision R] [--kind model|adapter|tokenizer]

Asks the Hub (HF_ENDPOINT, default https://huggingface.co) which commit the revision is, fetches
the files rlora reads that the cache lacks into the Hugging Face cache (HF_HUB_CACHE, else
HF_HOME/hub, else ~/.cache/huggingface/hub; Python's huggingface_hub shares it), and prints the
snapshot folder on stdout. A model brings config.json, generation_config.json, the safetensors
weights (and their index) and the tokenizer files; an adapter adapter_config.json,
adapter_model.safetensors and rlora_config.json. PyTorch pickles (.bin), ONNX and GGUF files are
never fetched. Downloads resume after an interruption, and every file is checked (sha256) before
it enters the snapshot. HF_HUB_OFFLINE=1: the cache only.

  --revision R   a branch, tag or commit hash (default main)
  --kind K       model, adapter or tokenizer (default: an adapter when the repo has
                 adapter_config.json, else a model)

A gated or private repo needs an access token: HF_TOKEN, or the token file of \`huggingface-cli login\`.

Examples:
  rlora download Qwen/Qwen2.5-0.5B-Instruct
  rlora generate --model "$(rlora download HuggingFaceTB/SmolLM2-135M --revision main)" --prompt "Hi"`,
  run: (args) => runDownload(args),
};

async function runDownload(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, { revision: 'value', kind: 'value' });
  if (rest.length !== 1) throw new UsageError(rest.length ? `one repo id, got ${rest.length} arguments` : 'the repo id is required ("org/name")');
  const kind = stringOption(opts, 'kind') ?? 'auto';
  if (!(KINDS as readonly string[]).includes(kind)) throw new UsageError(`--kind must be one of ${KINDS.slice(1).join(', ')}, got ${JSON.stringify(kind)}`);
  const revision = stringOption(opts, 'revision');
  const r = await as('', () => downloadToCache(rest[0], { kind: kind as (typeof KINDS)[number], ...(revision !== undefined ? { revision } : {}) }, ''));
  console.error(
    `rlora download: ${r.hub.repo} at ${r.hub.revision === r.hub.commit ? r.hub.commit : `${r.hub.revision} (${r.hub.commit})`} as ${r.kind === 'adapter' ? 'an adapter' : `a ${r.kind}`} in ${hubCacheDir()}` +
      (r.downloadedBytes > 0 ? `: ${formatSize(r.downloadedBytes)} downloaded` : ': nothing to download'),
  );
  console.log(r.path);
  return 0;
}
