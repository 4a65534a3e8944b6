// Token ids as the API takes them (nested arrays, typed arrays with a shape, integer Tensors) and
// their conversion to the int64 [batch, sequence] Tensors the native calls take; used by Model and
// by the generation helpers.
import * as util from 'util';

import { Tensor } from './tensor';

/** Token ids: nested arrays, a typed array with `shape`, or an integer Tensor, [batch, sequence]. */
export type TokenBatch = number[][] | Int32Array | BigInt64Array | Tensor;

/** Converts token ids (or a mask) to an int64 [batch, sequence] Tensor. */
export function toTokenTensor(ids: TokenBatch, what: string, shape?: [number, number]): Tensor {
  if (ids instanceof Tensor) {
    if (ids.dtype !== 'int64' && ids.dtype !== 'int32' && ids.dtype !== 'uint8' && ids.dtype !== 'bool') {
      throw new TypeError(`${what} must be an integer Tensor, got dtype ${ids.dtype}`);
    }
    return ids.dtype === 'int64' ? ids : ids.to('int64');
  }
  if (ids instanceof Int32Array || ids instanceof BigInt64Array) {
    if (!shape) throw new TypeError(`${what}: a typed array needs options.shape [batch, sequence]`);
    return Tensor.from(ids, shape, { dtype: 'int64' });
  }
  if (!Array.isArray(ids) || ids.length === 0) throw new RangeError(`${what} must be a non-empty batch [batch][sequence] of token ids`);
  const len = Array.isArray(ids[0]) ? ids[0].length : -1;
  ids.forEach((row, i) => {
    if (!Array.isArray(row)) throw new TypeError(`${what}[${i}] must be an array of token ids, got ${util.inspect(row, { depth: 0 })}`);
    if (row.length !== len) throw new RangeError(`${what} rows must have equal length (pad them and pass attentionMask): row 0 has ${len}, row ${i} has ${row.length}`);
  });
  return Tensor.from(ids as number[][], undefined, { dtype: 'int64' });
}

/** The attention mask as an int64 Tensor; values other than 0 and 1 are refused. */
export function toMaskTensor(mask: TokenBatch, shape?: [number, number]): Tensor {
  const t = toTokenTensor(mask, 'attentionMask', shape);
  const flat = t.data() as BigInt64Array;
  const bad = flat.findIndex((v) => v !== 0n && v !== 1n);
  if (bad >= 0) {
    const cols = t.shape[t.shape.length - 1];
    const at = t.shape.length === 2 ? `[${Math.floor(bad / cols)}][${bad % cols}]` : ` element ${bad}`;
    throw new RangeError(`attentionMask${at} is ${flat[bad]}; a mask holds only 1 (token) and 0 (padding)`);
  }
  return t;
}

/** A [batch, sequence] int64 Tensor as rows of numbers. */
export function rows(t: Tensor): number[][] {
  const [b, s] = t.shape;
  const flat = t.data() as BigInt64Array;
  return Array.from({ length: b }, (_, i) => Array.from(flat.subarray(i * s, (i + 1) * s), Number));
}

/** The single row of `ids` as numbers; more rows (or none) are refused. */
export function oneRow(ids: TokenBatch, shape: [number, number] | undefined): number[] {
  if (Array.isArray(ids) && ids.length > 0 && !Array.isArray(ids[0])) {
    throw new TypeError('Model.stream: inputIds must be one row [[id, ...]], got a flat array (wrap it in [...])');
  }
  if (Array.isArray(ids) && ids.length > 1) {
    throw new RangeError(`Model.stream: streams one batch row only, got ${ids.length} rows (call it once per row, or use Model.generate for a batch)`);
  }
  const t = toTokenTensor(ids, 'Model.stream: inputIds', shape);
  if (t.shape.length !== 2) throw new RangeError(`Model.stream: inputIds must be [1, sequence], got shape [${t.shape.join(', ')}]`);
  if (t.shape[0] !== 1) {
    throw new RangeError(`Model.stream: streams one batch row only, got ${t.shape[0]} rows (call it once per row, or use Model.generate for a batch)`);
  }
  if (t.shape[1] === 0) throw new RangeError('Model.stream: inputIds must hold at least one token');
  return Array.from(t.data() as BigInt64Array, Number);
}

/** Token ids given as one id, a list, or none (null/undefined), as a list. */
export function idList(v: number | number[] | null | undefined): number[] {
  return v == null ? [] : Array.isArray(v) ? v : [v];
}

/**
 * Packing offsets (example e at positions [cu[e], cu[e + 1]) of one row) as the int32 Tensor the
 * native calls take; a value that is not an int32 offset is refused, naming it (the native side
 * checks the order and the end).
 */
export function cuSeqlensTensor(cu: ArrayLike<number>, what = 'cuSeqlens'): Tensor {
  if (cu === null || typeof cu !== 'object' || typeof cu.length !== 'number') throw new TypeError(`${what} must be an array of offsets [0, ..., length], got ${util.inspect(cu, { depth: 0 })}`);
  const out = Int32Array.from(cu, (v, i) => {
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) throw new RangeError(`${what}[${i}] must be an integer offset from 0 to 2147483647, got ${util.inspect(v, { depth: 0 })}`);
    return v;
  });
  return Tensor.from(out, [out.length]);
}

/** The longest example of a packed row (the largest gap between offsets). */
export function longestPacked(cu: ArrayLike<number>): number {
  let most = 0;
  for (let e = 1; e < cu.length; e++) most = Math.max(most, cu[e] - cu[e - 1]);
  return most;
}
