// Tensor: a handle to a libtorch tensor, with conversion to and from JS data.
import * as util from 'util';

import { DtypeName, native, NativeTensor } from './native';
import { inspectSymbol } from './util/options';


/** The part of Node's util.inspect options that Tensor's inspector uses (util.InspectOptionsStylized). */
interface InspectOptions {
  stylize(text: string, styleType: string): string;
}

// Node >= 18.18 / 20.4 defines Symbol.dispose (for `using`); declared here too so that rlora's types
// type-check with lib ES2022 and without @types/node (both declare the same unique symbol).
declare global {
  interface SymbolConstructor {
    readonly dispose: unique symbol;
  }
}

export type Dtype = DtypeName;
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

/**
 * Whether two device names mean the same device: 'cuda' is the current CUDA device, which rlora
 * never changes from cuda:0 (as a tensor made on torch.device('cuda') lands on cuda:0).
 */
export function sameDevice(a: string, b: string): boolean {
  const norm = (d: string): string => (d === 'cuda' ? 'cuda:0' : d);
  return norm(a) === norm(b);
}
export type TypedData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
/** What `data()` returns for each dtype (bfloat16 and float16 widen to Float32Array; bool is 0/1 bytes). */
export interface DataOf {
  float32: Float32Array;
  float64: Float64Array;
  bfloat16: Float32Array;
  float16: Float32Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
  bool: Uint8Array;
}
export type NestedNumbers = number | NestedNumbers[];
export type TensorData = TypedData | NestedNumbers[] | bigint[];

export interface TensorOptions {
  /** Element type. Default: float32 for JS numbers, the typed array's own type otherwise. */
  dtype?: Dtype;
  /** Default: 'cpu'. */
  device?: Device;
}

const DTYPES: readonly Dtype[] = ['float32', 'float64', 'bfloat16', 'float16', 'int32', 'int64', 'uint8', 'bool'];
const INTEGER_RANGE: Partial<Record<Dtype, [number, number]>> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [-(2 ** 53), 2 ** 53], // numbers are exact up to 2^53; beyond, pass bigints
  uint8: [0, 255],
  // bool takes any number, as torch does: zero is false, anything else true
};

function typedDtype(data: TypedData): Dtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return 'uint8';
}

function inferShape(data: NestedNumbers[]): number[] {
  const shape: number[] = [data.length];
  let probe: NestedNumbers = data[0];
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    probe = probe[0];
  }
  return shape;
}

function flatten(data: NestedNumbers[], shape: number[]): Float64Array {
  const out = new Float64Array(shape.reduce((a, b) => a * b, 1));
  let k = 0;
  const walk = (v: NestedNumbers, depth: number, where: string): void => {
    if (depth === shape.length) {
      if (typeof v !== 'number') throw new TypeError(`Tensor.from: element ${where} must be a number, got ${util.inspect(v)}`);
      out[k++] = v;
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw new RangeError(
        `Tensor.from: ragged data at ${where || 'top level'}: expected an array of length ${shape[depth]}, got ${
          Array.isArray(v) ? `length ${v.length}` : util.inspect(v)
        }`,
      );
    }
    v.forEach((x, i) => walk(x, depth + 1, `${where}[${i}]`));
  };
  walk(data, 0, '');
  return out;
}

/**
 * A libtorch tensor. `D` is its dtype when known where it was made (`Tensor.from(new
 * Float32Array(...))` is a `Tensor<'float32'>`), so `data()` is typed by it; `as('float32')`
 * checks a tensor of unknown dtype and narrows it.
 */
export class Tensor<D extends Dtype = Dtype> {
  /** @internal The libtorch tensor behind this handle. */
  readonly native: NativeTensor;

  /** @internal Use Tensor.from(). */
  constructor(handle: NativeTensor) {
    this.native = handle;
  }

  /**
   * A new tensor holding a copy of `data`.
   * - `data`: a typed array (flat, `shape` required unless 1-D), a flat or nested array of numbers
   *   (the shape of a nested array is inferred), or an array of bigints (int64).
   * - `shape`: the dimensions; its product must equal the number of elements.
   */
  static from<T extends Dtype>(data: TensorData, shape: number[] | undefined, options: TensorOptions & { dtype: T }): Tensor<T>;
  static from(data: Float32Array | NestedNumbers[], shape?: number[], options?: TensorOptions & { dtype?: undefined }): Tensor<'float32'>;
  static from(data: Float64Array, shape?: number[], options?: TensorOptions & { dtype?: undefined }): Tensor<'float64'>;
  static from(data: Int32Array, shape?: number[], options?: TensorOptions & { dtype?: undefined }): Tensor<'int32'>;
  static from(data: BigInt64Array | bigint[], shape?: number[], options?: TensorOptions & { dtype?: undefined }): Tensor<'int64'>;
  static from(data: Uint8Array, shape?: number[], options?: TensorOptions & { dtype?: undefined }): Tensor<'uint8'>;
  static from(data: TensorData, shape?: number[], options?: TensorOptions): Tensor;
  static from(data: TensorData, shape?: number[], options: TensorOptions = {}): Tensor {
    let flat: TypedData;
    let dims = shape;
    let dtype = options.dtype;
    if (dtype !== undefined && !DTYPES.includes(dtype)) {
      throw new TypeError(`Tensor.from: unknown dtype ${util.inspect(dtype)}; expected one of ${DTYPES.join(', ')}`);
    }
    if (ArrayBuffer.isView(data)) {
      flat = data as TypedData;
      // a view of a SharedArrayBuffer (another thread may write it): copied, as N-API cannot read one
      if (typeof SharedArrayBuffer !== 'undefined' && flat.buffer instanceof SharedArrayBuffer) flat = flat.slice() as TypedData;
      dims ??= [flat.length];
      dtype ??= typedDtype(flat);
    } else if (Array.isArray(data)) {
      if (data.length > 0 && typeof data[0] === 'bigint') {
        flat = BigInt64Array.from(data as bigint[]);
        dims ??= [flat.length];
        dtype ??= 'int64';
      } else {
        const nested = data as NestedNumbers[];
        const inferred = inferShape(nested);
        flat = flatten(nested, inferred);
        dims ??= inferred;
        dtype ??= 'float32';
      }
    } else {
      throw new TypeError(`Tensor.from: data must be an array or a typed array, got ${util.inspect(data)}`);
    }
    const range = INTEGER_RANGE[dtype];
    if (range && !(flat instanceof BigInt64Array)) {
      // Integers of the dtype's range only: a silent wrap or truncation is a wrong result.
      const [lo, hi] = range;
      const values = flat as Exclude<TypedData, BigInt64Array>;
      const bad = values.findIndex((v) => !Number.isInteger(v) || v < lo || v > hi);
      if (bad >= 0) {
        throw new RangeError(`Tensor.from: element ${bad} is ${values[bad]}, not an integer in [${lo}, ${hi}] as dtype ${dtype} needs`);
      }
    }
    return new Tensor(native.NativeTensor.fromTypedArray(flat, dims, dtype, options.device ?? 'cpu'));
  }

  /** @internal */
  static fromBytes(bytes: Uint8Array, dtype: Dtype, shape: number[]): Tensor {
    return new Tensor(native.NativeTensor.fromBytes(bytes, dtype, shape));
  }

  get shape(): number[] {
    return this.native.shape;
  }
  get dtype(): D {
    return this.native.dtype as D;
  }
  get device(): string {
    return this.native.device;
  }
  /** Number of elements. */
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /**
   * A copy of the elements, flat, as a typed array of the dtype (DataOf: bfloat16 and float16
   * widen to Float32Array). A method: `t.data[0]` throws, saying to call it.
   */
  data(): DataOf[D] {
    return this.native.data() as DataOf[D];
  }

  /** This tensor typed as dtype `dtype`, after checking that it is (a TypeError naming both otherwise). */
  as<T extends Dtype>(dtype: T): Tensor<T> {
    if (this.dtype !== (dtype as Dtype)) throw new TypeError(`this tensor is ${this.dtype}, not ${dtype} (convert it with .to(${JSON.stringify(dtype)}))`);
    return this as unknown as Tensor<T>;
  }

  /** A copy of the elements as nested arrays of numbers (int64 beyond 2^53 loses precision). */
  toArray(): NestedNumbers {
    const flat = this.data();
    const get = (i: number): number => Number(flat[i]);
    const shape = this.shape;
    if (shape.length === 0) return get(0);
    let k = 0;
    const build = (depth: number): NestedNumbers[] => {
      const n = shape[depth];
      const out: NestedNumbers[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = depth === shape.length - 1 ? get(k++) : build(depth + 1);
      return out;
    };
    return build(0);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.numel !== 1) throw new RangeError(`item() needs a tensor of one element, this one has shape [${this.shape.join(', ')}]`);
    return Number(this.data()[0]);
  }

  /** A copy converted to another dtype and/or device. */
  to<T extends Dtype>(dtype: T): Tensor<T>;
  to(target: Device): Tensor<D>;
  to(target: Dtype | Device | TensorOptions): Tensor;
  to(target: Dtype | Device | TensorOptions): Tensor {
    const o: TensorOptions =
      typeof target === 'string'
        ? (DTYPES as readonly string[]).includes(target)
          ? { dtype: target as Dtype }
          : { device: target as Device }
        : target;
    return new Tensor(this.native.to(o.dtype ?? null, o.device ?? null));
  }

  /**
   * Frees the native memory now instead of when the collector gets to it (rlora tells V8 how much
   * native memory each object holds, so dropped objects are collected in time anyway). Using the
   * Tensor afterwards throws "this Tensor was disposed". `using x = ...` calls it at the end of the block.
   */
  dispose(): void {
    this.native.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  [inspectSymbol](depth: number, options: InspectOptions): string {
    const head = `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device})`;
    if (depth < 0) return options.stylize(head, 'special');
    return `${options.stylize(head, 'special')} ${preview(this)}`;
  }

  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}) ${preview(this)}`;
  }
}

// A few values per dimension: [[0.1, 0.2, ..., 0.9], ...]
function preview(t: Tensor, edge = 3): string {
  const flat = t.data();
  const shape = t.shape;
  const fmt = (i: number): string => {
    const v = Number(flat[i]);
    return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  };
  if (shape.length === 0) return fmt(0);
  const strides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const render = (depth: number, offset: number): string => {
    const n = shape[depth];
    const idx = n <= 2 * edge ? [...Array(n).keys()] : [...Array(edge).keys(), -1, ...Array.from({ length: edge }, (_, i) => n - edge + i)];
    const parts = idx.map((i) =>
      i < 0 ? '...' : depth === shape.length - 1 ? fmt(offset + i) : render(depth + 1, offset + i * strides[depth]),
    );
    return `[${parts.join(', ')}]`;
  };
  return render(0, 0);
}

// `data` is a method: in plain JS, `t.data[0]` would read undefined and `t.data.length` the
// method's arity, silently. Reading an element or the length off the method throws instead.
const dataMethod = Tensor.prototype.data;
Object.defineProperty(Tensor.prototype, 'data', {
  value: new Proxy(dataMethod, {
    get(target, prop, receiver) {
      if (prop === 'length' || (typeof prop === 'string' && /^\d+$/.test(prop))) {
        throw new TypeError(`Tensor.data is a method: call it, t.data()${prop === 'length' ? '.length' : `[${prop}]`} (or use t.toArray())`);
      }
      return Reflect.get(target, prop, receiver);
    },
  }),
  writable: true,
  configurable: true,
});
