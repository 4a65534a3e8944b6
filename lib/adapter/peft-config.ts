// A PEFT adapter_config.json read as PEFT reads it: the options rlora cannot reproduce refused
// (naming the option and the file), the modules it targets chosen as PEFT chooses them
// (target_modules, exclude_modules, layers_to_transform / layers_pattern), and the per-module rank
// and alpha of rank_pattern / alpha_pattern. The regular expressions come from a file: callers run
// these under a time budget (adapter.ts).
import type { Model } from '../model';
import { resolveTargets } from './targets';

/** Values of init_lora_weights whose initialisation rewrites the base weights (PiSSA, OLoRA, CorDA, LoftQ). */
const BASE_CHANGING_INIT = /^(pissa.*|olora|corda|loftq)$/i;

/** Refuses adapter_config.json options that rlora cannot reproduce, naming the option and the file. */
export function refuseUnsupported(cfg: Record<string, unknown>, file: string): void {
  const no = (what: string): never => {
    throw new Error(`${file}: ${what}, which rlora does not support`);
  };
  if (cfg.use_dora === true) no('use_dora is true (DoRA, weight-decomposed LoRA)');
  const mts = cfg.modules_to_save;
  if (mts != null && !(Array.isArray(mts) && mts.length === 0)) no(`modules_to_save is ${JSON.stringify(mts)} (fully trained extra modules)`);
  if (cfg.bias !== undefined && cfg.bias !== 'none') no(`bias is ${JSON.stringify(cfg.bias)} (trained biases; only "none")`);
  if (cfg.fan_in_fan_out === true) no('fan_in_fan_out is true (Conv1D-style transposed weights)');
  if (cfg.task_type != null && cfg.task_type !== 'CAUSAL_LM') no(`task_type is ${JSON.stringify(cfg.task_type)} (only "CAUSAL_LM" or null)`);
  if (cfg.lora_bias === true) no('lora_bias is true (a bias on lora_B)');
  if (cfg.layer_replication != null) no('layer_replication is set');
  const tti = cfg.trainable_token_indices;
  if (tti != null && !(Array.isArray(tti) && tti.length === 0)) no('trainable_token_indices is set');
  const tp = cfg.target_parameters;
  if (tp != null && !(Array.isArray(tp) && tp.length === 0)) no('target_parameters is set');
  if (typeof cfg.init_lora_weights === 'string' && BASE_CHANGING_INIT.test(cfg.init_lora_weights)) {
    no(`init_lora_weights is ${JSON.stringify(cfg.init_lora_weights)} (an initialisation that rewrote the base weights)`);
  }
  for (const k of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = cfg[k];
    if (v != null && (typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'number'))) {
      throw new Error(`${file}: ${k} must be an object of module patterns to numbers, got ${JSON.stringify(v)}`);
    }
  }
  const ltt = cfg.layers_to_transform;
  if (ltt != null && !Number.isInteger(ltt) && !(Array.isArray(ltt) && ltt.every((x) => Number.isInteger(x)))) {
    throw new Error(`${file}: layers_to_transform must be a layer index or a list of them, got ${JSON.stringify(ltt)}`);
  }
}

/**
 * PEFT's per-module pattern lookup (peft.utils.other.get_pattern_key): the first key, in file
 * order, that matches the end of the full module name as a regular expression preceded by a dot
 * (or the whole name): `re.match(rf"(.*\.)?({key})$", name)`. Falls back to the full name itself as a key.
 */
function patternValue(pattern: Record<string, number>, name: string, fallback: number, what: string): number {
  for (const [key, value] of Object.entries(pattern)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:.*\\.)?(?:${key})$`);
    } catch (e) {
      throw new Error(`${what} key ${JSON.stringify(key)} is not a regular expression: ${(e as Error).message}`);
    }
    if (re.test(name)) return value;
  }
  return Object.hasOwn(pattern, name) ? pattern[name] : fallback;
}

/**
 * The layer index PEFT reads from a module name for `layers_to_transform`
 * (peft.tuners.tuners_utils.check_target_module_exists): the number after `.<layers_pattern>.`,
 * or, with no layers_pattern (PEFT's default, null), after any `.<name>.`.
 */
function layerIndex(name: string, layersPattern: string | string[] | null | undefined): number | undefined {
  const patterns = layersPattern == null || layersPattern.length === 0 ? null : typeof layersPattern === 'string' ? [layersPattern] : layersPattern;
  const regexes = patterns ? patterns.map((p) => new RegExp(`^.*\\.${p}\\.(\\d+)\\.`)) : [/^.*\.[^.]*\.(\d+)\./];
  for (const re of regexes) {
    const m = re.exec(name);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** A regular expression an adapter config holds, compiled; a bad one names the file and key. */
function configRegExp(source: string, file: string, key: string): RegExp {
  try {
    return new RegExp(source);
  } catch (e) {
    throw new Error(`${file}: ${key} is not a valid regular expression (${(e as Error).message})`);
  }
}

/** exclude_modules / layers_pattern: null, a string, or a list of strings; anything else names the file and key. */
function stringOrList(v: unknown, file: string, key: string): string | string[] | null {
  if (v == null) return null;
  if (typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string'))) return v as string | string[];
  throw new Error(`${file}: ${key} must be a string, a list of strings or null, got ${JSON.stringify(v)}`);
}

/**
 * The modules a PEFT config targets, as PEFT chooses them, resolved on `model`: `targets` is what
 * the Adapter records as its targetModules, `modules` the full names it covers. A string
 * target_modules is a regular expression matched against the whole name ("all-linear": every
 * linear module but lm_head); a list matches a name equal to an entry or ending in "." + entry,
 * and only such suffix matches are then limited to `layers_to_transform`; exclude_modules is taken
 * out first.
 */
export function peftTargets(model: Model, cfg: Record<string, unknown>, file: string): { targets: string[] | RegExp; modules: string[] } {
  const tm = cfg.target_modules;
  const ltt = cfg.layers_to_transform as number | number[] | null | undefined;
  const usesLayers = ltt != null && !(Array.isArray(ltt) && ltt.length === 0);
  const ex = stringOrList(cfg.exclude_modules, file, 'exclude_modules');
  const layersPattern = stringOrList(cfg.layers_pattern, file, 'layers_pattern');
  for (const p of layersPattern === null ? [] : typeof layersPattern === 'string' ? [layersPattern] : layersPattern) configRegExp(p, file, 'layers_pattern');
  const exRe = typeof ex === 'string' ? configRegExp(`^(?:${ex})$`, file, 'exclude_modules') : null;
  const excluded = (n: string): boolean =>
    ex === null ? false : exRe ? exRe.test(n) : (ex as string[]).includes(n) || (ex as string[]).some((e) => n.endsWith(`.${e}`));
  const chosen = (modules: string[]): { targets: string[]; modules: string[] } => {
    if (modules.length === 0) {
      throw new Error(`${file}: target_modules ${JSON.stringify(tm)}${usesLayers ? ` with layers_to_transform ${JSON.stringify(ltt)}` : ''} selects no module of this model${ex === null ? '' : ` once exclude_modules ${JSON.stringify(ex)} is taken out`}`);
    }
    return { targets: modules, modules };
  };
  if (typeof tm === 'string') {
    if (usesLayers) throw new Error(`${file}: layers_to_transform cannot be used when target_modules is a string (as in PEFT)`);
    const re = tm.toLowerCase() === 'all-linear' ? /^(?!lm_head$).*$/ : configRegExp(`^(?:${tm})$`, file, 'target_modules');
    if (ex === null) return { targets: re, modules: resolveTargets(model, re) };
    return chosen(model.linearModuleNames().filter((n) => re.test(n) && !excluded(n)));
  }
  if (!Array.isArray(tm) || tm.length === 0 || !tm.every((t) => typeof t === 'string')) {
    throw new Error(`${file}: target_modules must be a non-empty list of module names or a regular expression, got ${JSON.stringify(tm)}`);
  }
  const modules = resolveTargets(model, tm as string[]);
  if (!usesLayers && ex === null) return { targets: tm as string[], modules };
  return chosen(modules.filter((n) => {
    if (excluded(n)) return false;
    if (!usesLayers || tm.includes(n)) return true; // an exact full name ignores layers_to_transform, as in PEFT
    const i = layerIndex(n, layersPattern);
    return i !== undefined && (Array.isArray(ltt) ? ltt.includes(i) : i === ltt);
  }));
}

/**
 * Each module's rank and alpha under rank_pattern / alpha_pattern (PEFT's lookup), or undefined
 * when the config has neither: then every module has `r` and `lora_alpha`.
 */
export function perModuleRanks(cfg: Record<string, unknown>, modules: readonly string[], file: string): Map<string, { rank: number; alpha: number }> | undefined {
  const rankPattern = (cfg.rank_pattern ?? {}) as Record<string, number>;
  const alphaPattern = (cfg.alpha_pattern ?? {}) as Record<string, number>;
  if (Object.keys(rankPattern).length + Object.keys(alphaPattern).length === 0) return undefined;
  const r0 = cfg.r as number;
  const alpha0 = cfg.lora_alpha as number;
  return new Map(modules.map((name): [string, { rank: number; alpha: number }] => [name, {
    rank: patternValue(rankPattern, name, r0, `${file}: rank_pattern`),
    alpha: patternValue(alphaPattern, name, alpha0, `${file}: alpha_pattern`),
  }]));
}
