// The multi-head LoRA layer's options (docs/ARCHITECTURE.md section 2), declared once for lib/:
// their names, choices and documentation, as TypeScript types (LoraOptions, InitOptions, what
// MultiHeadLoraLinear and Adapter take) and as the key table that run.json and sweep.json are
// checked with (loraKeys). The table's keys are typed by the interfaces and its choices are the
// arrays the types are made from, so neither can drift from the other. The defaults are native's
// presets and the upper bounds native's (native/rlora/options.h; the addon's `loraLimits`): stated
// here in words, held to native's values by test/lora-options.test.ts. Loads no addon, so the CLI
// can check a run.json before the addon loads.
import { bool, Key, num, oneOf, safeInt } from './util/spec';

export type Method = 'lora' | 'hydralora' | 'rlora';
export type InitScheme = 'kaiming' | 'gaussian' | 'unit' | 'zeros' | 'orthogonal';
export type InitScale = 'none' | 'stable' | 'reference';

/**
 * The members of the string union T, in the order written, for the key tables and their help: the
 * object must name each member and nothing else, so the compiler refuses a list that drifts from
 * the type (the type stays the source, and keeps its name in the published declarations).
 */
function members<T extends string>(names: Record<T, true>): readonly T[] {
  return Object.keys(names) as T[];
}

/** The presets (`method`). */
export const METHODS = members<Method>({ lora: true, hydralora: true, rlora: true });
/** The initialisations of A, each B_i and the router (`init.a`, `init.b`, `init.router`). */
export const INIT_SCHEMES = members<InitScheme>({ kaiming: true, gaussian: true, unit: true, zeros: true, orthogonal: true });
/** `init.scale`. */
export const INIT_SCALES = members<InitScale>({ none: true, stable: true, reference: true });
/** `init.stableBase`. */
export const STABLE_BASES = members<Required<InitOptions>['stableBase']>({ rank: true, out: true });
/** `dropoutOn`. */
export const DROPOUT_PLACES = members<Required<LoraOptions>['dropoutOn']>({ input: true, rank: true });

/**
 * How the LoRA matrices start. Defaults come from the method's preset:
 *
 * | field      | lora      | hydralora | rlora     |
 * |------------|-----------|-----------|-----------|
 * | a          | kaiming   | kaiming   | unit      |
 * | b          | zeros     | zeros     | unit      |
 * | router     | kaiming   | kaiming   | zeros     |
 * | scale      | none      | none      | stable    |
 * | offset     | false     | false     | true      |
 *
 * Schemes: `kaiming` is Kaiming-uniform with a = sqrt(5) (bound 1/sqrt(fan_in), as LoRA);
 * `gaussian` is N(0, 1/rank^2) (PEFT's "gaussian"); `unit` is N(0, 1/in) for A and the router and
 * N(0, 1/out) for each B_i; `orthogonal` is as torch.nn.init.orthogonal_; `zeros`.
 */
export interface InitOptions {
  a?: InitScheme;
  b?: InitScheme;
  router?: InitScheme;
  /**
   * `stable` multiplies A and each B_i once by c / sqrt(gamma); `reference` reproduces the published
   * R-LoRA code, whose scale sits inside its per-head loop: A is multiplied N times and B_i
   * (0-based) N - i times; `none` leaves them.
   */
  scale?: InitScale;
  /** gamma of the stable scale: from 1e-6 to 1e12. Default 64. */
  gamma?: number;
  /** c of the stable scale: `rank` gives r^(1/4) (the published code, default), `out` gives out^(1/4) (the paper's table). */
  stableBase?: 'rank' | 'out';
  /**
   * Subtract the initial product s * mean_i B_i(0) A(0) so the layer starts where the base layer
   * was (with a uniform router). Kept as a low-rank pair (`lora_offset_A/B.weight`); the frozen
   * weight itself is never modified. Exact only with a uniform router, so it needs
   * `router: 'zeros'` (the `rlora` preset) when there are several heads; `scale: 'reference'`
   * alone may combine it with another router, as the published code does.
   */
  offset?: boolean;
}

export interface LoraOptions {
  /** Preset that fills every field not given. Default `rlora`. */
  method?: Method;
  /** Rank r of the shared down-projection A: an integer from 1 to 65536. Default 8. */
  rank?: number;
  /** Number of heads N (B_0 .. B_{N-1}, mixed by a softmax router when N > 1): from 1 to 1024. Default 1 for `lora`, 5 otherwise. */
  heads?: number;
  /** alpha of the scaling s = alpha / r (or alpha / sqrt(r) with rankStabilization): at most 1e6 in size. Default 16. */
  alpha?: number;
  /** Dropout probability p in [0, 1), applied in training mode only. Default 0.1. */
  dropout?: number;
  /** Where dropout stands: `input` (on x before A; LoRA, HydraLoRA) or `rank` (on A x; R-LoRA). */
  dropoutOn?: 'input' | 'rank';
  /** Each head draws its own dropout mask (R-LoRA: true) or all share one (HydraLoRA: false). */
  multiHeadDropout?: boolean;
  /** rsLoRA: s = alpha / sqrt(r). Default true for `rlora`, false otherwise. */
  rankStabilization?: boolean;
  init?: InitOptions;
  /** Seed of the initial values and of the dropout masks. Default 0. */
  seed?: number;
}

/** Every option resolved: the preset with the given fields on top, plus the scaling s. */
export interface ResolvedLoraOptions {
  method: Method;
  rank: number;
  heads: number;
  alpha: number;
  dropout: number;
  // written out, as in LoraOptions: an indexed type here would change how the published declarations print
  dropoutOn: 'input' | 'rank';
  multiHeadDropout: boolean;
  rankStabilization: boolean;
  init: Required<InitOptions>;
  seed: number;
  scaling: number;
}

/** InitOptions as a file writes them (documented as one, by the `init` key). */
const INIT_KEYS: Record<keyof InitOptions, Key> = {
  a: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  b: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  router: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  scale: { spec: oneOf(...INIT_SCALES), doc: '' },
  gamma: { spec: num(0, true), doc: '' },
  stableBase: { spec: oneOf(...STABLE_BASES), doc: '' },
  offset: { spec: bool, doc: '' },
};

/**
 * LoraOptions as run.json's `adapter` and sweep.json's variants write them, but `seed` (each file
 * treats it in its own way); `initDoc` ends the init key's documentation. The upper bounds are
 * left to the layer (native), whose errors name them.
 */
export function loraKeys(initDoc = ''): Record<Exclude<keyof LoraOptions, 'seed'>, Key> {
  return {
    method: { spec: oneOf(...METHODS), doc: 'the preset filling every key not given (default rlora)' },
    rank: { spec: safeInt(1), doc: 'rank r of the shared A, up to 65536 (default 8)' },
    heads: { spec: safeInt(1), doc: 'number of heads N, up to 1024 (default 1 for lora, 5 otherwise)' },
    alpha: { spec: num(0, true), doc: 'scaling alpha / r, or alpha / sqrt(r) with rankStabilization, up to 1e6 (default 16)' },
    dropout: { spec: num(0, false, 1, true), doc: 'dropout probability in [0, 1) (default 0.1)' },
    dropoutOn: { spec: oneOf(...DROPOUT_PLACES), doc: 'dropout on x (lora, hydralora) or on A x (rlora)' },
    multiHeadDropout: { spec: bool, doc: 'a dropout mask per head (rlora: true)' },
    rankStabilization: { spec: bool, doc: 'rsLoRA scaling alpha / sqrt(r) (rlora: true)' },
    init: {
      spec: { kind: 'object', keys: INIT_KEYS },
      type: `{${Object.keys(INIT_KEYS).join(', ')}}`,
      doc: `initialisation (InitOptions)${initDoc}: a, b, router: ${INIT_SCHEMES.join('|')}; scale: ${INIT_SCALES.join('|')}; gamma (1e-6 to 1e12); stableBase: ${STABLE_BASES.join('|')}; offset`,
    },
  };
}
