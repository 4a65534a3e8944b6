// The adapter, split as PEFT splits a tuner (docs/ARCHITECTURE.md section 4): adapter.ts (the
// Adapter class: attaching, loading, saving), folder.ts (the adapter folder's configs),
// files.ts (its file names), peft-config.ts (a PEFT adapter_config.json read as PEFT reads it),
// targets.ts (the modules an adapter covers). This re-exports what the rest of lib/ uses; code
// that must not load the addon (the CLI before it loads) imports files.ts itself.
export { Adapter, MAX_ADAPTER_VALUE } from './adapter';
export type { AdapterLoadOptions, AdapterOptions, AdapterSaveOptions } from './adapter';
export { hash48, moduleSeed } from './targets';
