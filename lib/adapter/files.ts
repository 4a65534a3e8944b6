// The names of an adapter folder's files, in one place (the format is docs/ARCHITECTURE.md
// section 4; folder.ts reads and writes its configs). It imports nothing, so the CLI can use it
// before the addon loads, and the Hub cache (hub/cache.ts) without a circle through the model.
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** rlora's settings that PEFT's adapter_config.json has no key for (heads, init, training data). */
export const RLORA_CONFIG_FILE = 'rlora_config.json';
/** The files rlora writes into an adapter folder (others in it are the user's, and kept by save). */
export const ADAPTER_FILES = [ADAPTER_CONFIG_FILE, RLORA_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] as const;
