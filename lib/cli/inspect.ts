// rlora inspect <adapter-dir>: sizes, the adapter config, and the head similarity of each module
// as a small terminal heatmap, computed from the adapter file alone (no base model needed).
import * as fs from 'fs';
import * as path from 'path';

import type { Tensor } from '../tensor';
import { formatBytes, InputError, parseArgs, stringOption, Subcommand, table, UsageError, useColor } from './args';
import { lib, resolveFolder } from './common';
import { readTrainerState, TRAINER_STATE_FILE } from '../trainer/checkpoint';
import { readJsonFile } from '../util/json';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, RLORA_CONFIG_FILE } from '../adapter/files';

export const inspect: Subcommand = {
  summary: 'sizes, config and per-module head similarity (a terminal heatmap) of a saved adapter',
  help: `rlora inspect <adapter-dir or Hub repo id> [--all | --module REGEX] [--json]

Reads adapter_config.json, rlora_config.json and adapter_model.safetensors of an adapter folder (or a checkpoint
folder, or a Hub repo's: the Hugging Face cache, else a download into it) and prints: the file size and dtype, the number of adapted modules, trainable parameters
(A, the heads B_i, the router; the frozen R-LoRA offset counted apart), the adapter config, a table
of the modules, and the N x N cosine similarity of the flattened heads B_0 .. B_{N-1} as a heatmap
for each kind of module (q_proj, down_proj, ...: the mean over its layers; --all: each module's
own): 1 means two heads are identical (HydraLoRA starts so), near 0 that they differ (R-LoRA's
aim). Needs no base model. Colors (256-color backgrounds) on a terminal unless NO_COLOR is set; else shade blocks
(' ', ░, ▒, ▓, █ for |similarity| from 0 to 1) before each number.

  --all            a heatmap for every module (default: one per kind of module, averaged)
  --module REGEX   only the modules whose full name matches (e.g. 'layers\\.0\\.' or 'down_proj'),
                   each with its heatmap
  --json           everything as JSON (similarity matrices included)

Examples:
  rlora inspect runs/a/adapter
  rlora inspect runs/a/checkpoint-400 --module 'layers\\.(0|11)\\.mlp\\.down_proj'
  rlora inspect runs/a/adapter --json | jq '.modules[] | {name, meanOffDiagonal}'`,
  run: (args) => runInspect(args),
};

const PREFIX = 'base_model.model.';

export interface ModuleInfo {
  name: string;
  heads: number;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  /** Trainable values: A, every B_i, the router. */
  parameters: number;
  /** Values of the frozen offset pair (R-LoRA), not trained. */
  offsetValues: number;
  /** N x N cosine similarity of the flattened B_i (two zero heads: 1). */
  similarity: number[][];
  /** Mean and largest similarity between two different heads (null for one head). */
  meanOffDiagonal: number | null;
  maxOffDiagonal: number | null;
}

/** Cosine similarity of flattened vectors, as MultiHeadLoraLinear.headSimilarity computes it. */
export function cosineMatrix(heads: ArrayLike<number>[]): number[][] {
  const norms = heads.map((h) => {
    let s = 0;
    for (let i = 0; i < h.length; i++) s += h[i] * h[i];
    return Math.sqrt(s);
  });
  return heads.map((a, i) =>
    heads.map((b, j) => {
      if (norms[i] === 0 && norms[j] === 0) return 1;
      if (norms[i] === 0 || norms[j] === 0) return 0;
      let dot = 0;
      for (let k = 0; k < a.length; k++) dot += a[k] * b[k];
      return dot / (norms[i] * norms[j]);
    }),
  );
}

function offDiagonal(m: number[][]): number[] {
  return m.flatMap((row, i) => row.filter((_, j) => j !== i));
}

/** Reads an adapter folder into per-module facts. */
export function readAdapter(dir: string): { config: Record<string, any>; modules: ModuleInfo[]; dtypes: string[]; fileBytes: number } { // eslint-disable-line @typescript-eslint/no-explicit-any
  const configPath = path.join(dir, ADAPTER_CONFIG_FILE);
  const weights = path.join(dir, ADAPTER_WEIGHTS_FILE);
  if (!fs.existsSync(dir)) throw new InputError(`${dir}: no such folder`);
  if (!fs.existsSync(configPath)) throw new InputError(`${dir} is not an adapter folder: no adapter_config.json`);
  if (!fs.existsSync(weights)) throw new InputError(`${dir} is not an adapter folder: no adapter_model.safetensors`);
  let config: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    config = readJsonFile(configPath) as Record<string, unknown>;
  } catch (e) {
    throw new InputError(`${configPath} is not valid JSON: ${(e as Error).message}`);
  }
  // rlora's own settings: rlora_config.json (older adapters: the `rlora` section of adapter_config.json)
  const rloraPath = path.join(dir, RLORA_CONFIG_FILE);
  if (fs.existsSync(rloraPath)) {
    try {
      config = { ...config, rlora: readJsonFile(rloraPath) };
    } catch (e) {
      throw new InputError(`${rloraPath} is not valid JSON: ${(e as Error).message}`);
    }
  }
  let tensors: Record<string, Tensor>;
  try {
    tensors = lib().loadSafetensors(weights);
  } catch (e) {
    throw new InputError((e as Error).message);
  }
  const byModule = new Map<string, Record<string, Tensor>>();
  const dtypes = new Set<string>();
  for (const [name, t] of Object.entries(tensors)) {
    const key = name.startsWith(PREFIX) ? name.slice(PREFIX.length) : name;
    const cut = key.indexOf('.lora_');
    if (cut < 0) throw new InputError(`${weights} holds ${name}, which is not a LoRA tensor (<module>.lora_*.weight)`);
    const part = key.slice(cut + 1).replace(/\.weight$/, '');
    const entry = byModule.get(key.slice(0, cut)) ?? {};
    entry[part] = t;
    byModule.set(key.slice(0, cut), entry);
    dtypes.add(t.dtype);
  }
  const order: string[] = Array.isArray(config.rlora?.modules) ? config.rlora.modules : [];
  const names = [...byModule.keys()].sort((a, b) => {
    const ia = order.indexOf(a), ib = order.indexOf(b);
    return ia >= 0 && ib >= 0 ? ia - ib : a.localeCompare(b, 'en', { numeric: true });
  });
  const modules = names.map((name): ModuleInfo => {
    const t = byModule.get(name)!;
    const a = t.lora_A;
    if (!a) throw new InputError(`${weights}: module ${name} has no lora_A.weight`);
    const bNames = t.lora_B ? ['lora_B'] : Object.keys(t).filter((k) => /^lora_B\d+$/.test(k)).sort((x, y) => Number(x.slice(6)) - Number(y.slice(6)));
    if (bNames.length === 0) throw new InputError(`${weights}: module ${name} has no lora_B.weight or lora_B0.weight`);
    const heads = bNames.map((k) => t[k]);
    const numel = (x?: Tensor): number => (x ? x.shape.reduce((p, d) => p * d, 1) : 0);
    const similarity = cosineMatrix(heads.map((h) => h.data() as Float32Array | Float64Array));
    const off = offDiagonal(similarity);
    return {
      name,
      heads: heads.length,
      rank: a.shape[0],
      inFeatures: a.shape[1],
      outFeatures: heads[0].shape[0],
      parameters: numel(a) + heads.reduce((s, h) => s + numel(h), 0) + numel(t.lora_route),
      offsetValues: numel(t.lora_offset_A) + numel(t.lora_offset_B),
      similarity,
      meanOffDiagonal: off.length ? off.reduce((s, v) => s + v, 0) / off.length : null,
      maxOffDiagonal: off.length ? Math.max(...off) : null,
    };
  });
  return { config, modules, dtypes: [...dtypes].sort(), fileBytes: fs.statSync(weights).size };
}

// ---------------------------------------------------------------------------------------------
// The heatmap

const SHADES = [' ', '░', '▒', '▓', '█'];
// 256-color backgrounds: dark gray at 0, towards red for +1, towards blue for -1
const POSITIVE = [236, 52, 88, 124, 160, 196];
const NEGATIVE = [236, 17, 18, 19, 20, 21];

function cell(v: number, color: boolean): string {
  const num = v.toFixed(2).replace(/^-0\.00$/, '0.00').padStart(5);
  const level = Math.min(1, Math.abs(v));
  if (color) {
    const ramp = v < 0 ? NEGATIVE : POSITIVE;
    const bg = ramp[Math.round(level * (ramp.length - 1))];
    return `\x1b[48;5;${bg}m\x1b[38;5;15m ${num} \x1b[0m`;
  }
  return `${SHADES[Math.min(SHADES.length - 1, Math.floor(level * SHADES.length))]}${num.padStart(6)}`;
}

/** One module's matrix: a header row of head names, then one row per head. */
export function heatmap(m: number[][], color: boolean, indent = '  '): string {
  const label = (i: number): string => `B${i}`;
  const lw = Math.max(...m.map((_, i) => label(i).length));
  // a cell is 7 characters: "▓ -0.12" (shade, space, number), or " -0.12 " on a colored background
  const sep = color ? '' : ' ';
  const head = m.map((_, j) => (color ? label(j).padStart(6).padEnd(7) : label(j).padStart(7))).join(sep);
  const lines = [`${indent}${' '.repeat(lw)}  ${head}`];
  m.forEach((row, i) => lines.push(`${indent}${label(i).padStart(lw)}  ${row.map((v) => cell(v, color)).join(sep)}`));
  return lines.join('\n');
}

function configLines(c: Record<string, any>): string[][] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = c.rlora ?? {};
  const scaling = typeof c.lora_alpha === 'number' && typeof c.r === 'number' ? (c.use_rslora ? c.lora_alpha / Math.sqrt(c.r) : c.lora_alpha / c.r) : undefined;
  const rows: string[][] = [
    ['method', `${r.method ?? 'lora'} (${c.peft_type ?? '?'})${r.version ? `, saved by rlora ${r.version}` : ''}`],
    ['rank', String(c.r)],
    ['heads', String(r.heads ?? 1)],
    ['alpha', `${c.lora_alpha}${scaling !== undefined ? ` (scaling ${+scaling.toPrecision(6)} = alpha / ${c.use_rslora ? 'sqrt(r), rsLoRA' : 'r'})` : ''}`],
    ['dropout', `${c.lora_dropout}${r.dropout_on ? ` on ${r.dropout_on === 'rank' ? 'A x' : 'x'}` : ''}${r.multi_head_dropout ? ', a mask per head' : ''}`],
    ['targets', Array.isArray(c.target_modules) ? c.target_modules.join(', ') : String(c.target_modules)],
  ];
  if (r.init) {
    const i = r.init;
    rows.push(['init', `A ${i.a}, B ${i.b}, router ${i.router}, scale ${i.scale}${i.scale === 'stable' ? ` (gamma ${i.gamma}, base ${i.stableBase})` : ''}, offset ${i.offset}`]);
  }
  if (r.seed !== undefined) rows.push(['seed', String(r.seed)]);
  const b = r.base_model;
  if (b) {
    rows.push([
      'base model',
      `${b.architecture}: ${b.num_hidden_layers} layers, hidden ${b.hidden_size}, intermediate ${b.intermediate_size}, ` +
        `heads ${b.num_attention_heads}/${b.num_key_value_heads} kv, vocab ${b.vocab_size}${c.base_model_name_or_path ? `\n${c.base_model_name_or_path}` : ''}`,
    ]);
  } else if (c.base_model_name_or_path) rows.push(['base model', String(c.base_model_name_or_path)]);
  return rows;
}

async function runInspect(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, { module: 'value', json: 'flag', all: 'flag' });
  if (rest.length !== 1) throw new UsageError(rest.length ? `one adapter folder, got ${rest.length} arguments` : 'the adapter folder is required');
  const dir = await resolveFolder(rest[0], 'adapter', 'adapter');
  let filter: RegExp | undefined;
  const pattern = stringOption(opts, 'module');
  if (pattern !== undefined) {
    try {
      filter = new RegExp(pattern);
    } catch (e) {
      throw new UsageError(`--module: ${(e as Error).message}`);
    }
  }
  const info = readAdapter(dir);
  const statePath = path.join(dir, TRAINER_STATE_FILE);
  const state = fs.existsSync(statePath) ? readTrainerState(statePath) : undefined;
  const all = info.modules;
  const shown = filter ? all.filter((m) => filter!.test(m.name)) : all;
  if (filter && shown.length === 0) throw new InputError(`--module ${pattern} matches none of the ${all.length} modules (e.g. ${all[0]?.name})`);
  const trainable = all.reduce((s, m) => s + m.parameters, 0);
  const offsets = all.reduce((s, m) => s + m.offsetValues, 0);
  const multi = all.filter((m) => m.meanOffDiagonal !== null);
  const mean = multi.length ? multi.reduce((s, m) => s + m.meanOffDiagonal!, 0) / multi.length : null;

  if (opts.json) {
    console.log(
      JSON.stringify(
        {
          dir: path.resolve(dir),
          fileBytes: info.fileBytes,
          dtypes: info.dtypes,
          modules: shown,
          moduleCount: all.length,
          trainableParameters: trainable,
          offsetValues: offsets,
          meanOffDiagonal: mean,
          checkpoint: state ? { step: state.step, totalSteps: state.totalSteps } : null,
          config: info.config,
        },
        null,
        2,
      ),
    );
    return 0;
  }

  const color = useColor();
  const shorts = [...new Set(all.map((m) => m.name.slice(m.name.lastIndexOf('.') + 1)))];
  const rows: string[][] = [
    ['adapter', path.resolve(dir)],
    ['file', `adapter_model.safetensors, ${formatBytes(info.fileBytes)}, ${info.dtypes.join(', ')}`],
    ['modules', `${all.length} (${shorts.join(', ')})`],
    ['trainable', `${trainable.toLocaleString('en-US')} parameters${offsets ? ` (plus ${offsets.toLocaleString('en-US')} frozen offset values)` : ''}`],
  ];
  if (state) rows.push(['checkpoint', `step ${state.step} of ${state.totalSteps}`]);
  rows.push(...configLines(info.config));
  const w = Math.max(...rows.map((r) => r[0].length));
  const out = rows.map(([k, v]) => `${k.padEnd(w)}  ${v.replace(/\n/g, '\n' + ' '.repeat(w + 2))}`);

  out.push('');
  if (multi.length === 0) {
    out.push('head similarity: every module has one head (plain LoRA): nothing to compare');
  } else {
    out.push(`head similarity: cosine of the flattened B_i (1: identical heads, 0: unrelated); mean off-diagonal over all modules ${mean!.toFixed(3)}`);
    const summary = [['module', 'heads', 'rank', 'in', 'out', 'parameters', 'mean', 'max']];
    for (const m of shown) {
      summary.push([m.name, String(m.heads), String(m.rank), String(m.inFeatures), String(m.outFeatures), m.parameters.toLocaleString('en-US'), m.meanOffDiagonal?.toFixed(3) ?? '-', m.maxOffDiagonal?.toFixed(3) ?? '-']);
    }
    out.push('', table(summary, [false, true, true, true, true, true, true, true]));
    if (opts.all || opts.module !== undefined) {
      for (const m of shown) {
        if (m.heads < 2) continue;
        out.push('', `${m.name}  (${m.heads} heads; off-diagonal mean ${m.meanOffDiagonal!.toFixed(3)}, max ${m.maxOffDiagonal!.toFixed(3)})`, heatmap(m.similarity, color));
      }
    } else {
      // one heatmap per kind of module: the mean of its modules' matrices (same head count)
      for (const kind of shorts) {
        const mods = shown.filter((m) => m.heads > 1 && m.name.slice(m.name.lastIndexOf('.') + 1) === kind);
        const groups = new Map<number, ModuleInfo[]>();
        for (const m of mods) (groups.get(m.heads) ?? groups.set(m.heads, []).get(m.heads)!).push(m);
        for (const [heads, group] of groups) {
          const mean = group[0].similarity.map((row, i) => row.map((_, j) => group.reduce((a, m) => a + m.similarity[i][j], 0) / group.length));
          const off = offDiagonal(mean);
          const offMean = off.reduce((a, b) => a + b, 0) / off.length;
          out.push('', `${kind}  (mean of ${group.length} module${group.length === 1 ? '' : 's'}, ${heads} heads; off-diagonal mean ${offMean.toFixed(3)}, max ${Math.max(...off).toFixed(3)})`, heatmap(mean, color));
        }
      }
      if (shown.length > shorts.length) out.push('', `each module's own heatmap: rlora inspect ${args[0] ?? 'DIR'} --all`);
    }
  }
  console.log(out.join('\n'));
  return 0;
}
