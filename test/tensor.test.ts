// Tensor: construction from JS data for every dtype, read-back, conversion, inspection and errors.
import * as util from 'util';

import { Dtype, Tensor, buildInfo } from '../lib';
import { sameDevice } from '../lib/tensor';
import { expectErrorMatching } from './helpers/errors';

// ---- Independent references for the half-precision roundings (double -> float32 -> 16 bits, as libtorch does).

/** bfloat16 rounding by hand: the float32 bits, rounded to nearest-even onto the top 16 bits. */
function bf16Round(x: number): number {
  const f = new Float32Array([x]);
  const bits = new Uint32Array(f.buffer);
  const b = bits[0];
  const lsb = (b >>> 16) & 1;
  bits[0] = (Math.floor((b + 0x7fff + lsb) / 0x10000) & 0xffff) * 0x10000;
  return f[0];
}

/** float16 rounding by hand: 11 significant bits (quantum 2^-24 below 2^-14), ties to even, overflow to ±Infinity. */
function f16Round(x: number): number {
  const f = Math.fround(x);
  if (!Number.isFinite(f) || f === 0) return f;
  const a = Math.abs(f);
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  // Math.log2 can be off by one right at powers of two: correct it.
  const exp = 2 ** e > a ? Math.max(e - 1, -14) : 2 ** (e + 1) <= a ? e + 1 : e;
  const q = 2 ** (exp - 10);
  const m = a / q; // exact: a power-of-two scaling
  let r = Math.floor(m);
  const frac = m - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r += 1;
  const v = r * q;
  return Math.sign(f) * (v >= 65520 ? Infinity : v);
}

/** The elements of a typed array (any of the kinds data() returns) as a plain array. */
function list(d: ArrayLike<unknown>): unknown[] {
  return Array.from(d);
}

/** The typed array's class by name: data() arrays are made in Node's realm, not jest's sandbox, so no instanceof. */
function expectKind(x: unknown, kind: string): void {
  expect(Object.prototype.toString.call(x)).toBe(`[object ${kind}]`);
}


describe('reference roundings used by these tests', () => {
  test('bf16Round and f16Round agree with known values', () => {
    expect(bf16Round(1)).toBe(1);
    expect(bf16Round(1 / 3)).toBe(0.333984375); // 0x3EAB
    expect(bf16Round(1 + 2 ** -8)).toBe(1); // tie, rounds to even
    expect(bf16Round(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6); // tie, rounds up to even
    expect(f16Round(0.1)).toBe(0.0999755859375);
    expect(f16Round(1 + 2 ** -11)).toBe(1); // tie to even
    expect(f16Round(1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9);
    expect(f16Round(65504)).toBe(65504);
    expect(f16Round(65520)).toBe(Infinity);
    expect(f16Round(2 ** -24)).toBe(2 ** -24); // smallest subnormal
    expect(f16Round(2 ** -26)).toBe(0);
    expect(f16Round(-2.5)).toBe(-2.5);
  });
});

describe('Tensor.from with every dtype', () => {
  test('float32 (the default for JS numbers), nested arrays infer the shape', () => {
    const t = Tensor.from([
      [1, 2.5, -3],
      [0.1, 1e-8, 1e30],
    ]);
    expect(t).toBeInstanceOf(Tensor);
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('float32');
    expect(t.device).toBe('cpu');
    expect(t.numel).toBe(6);
    const d = t.data();
    expectKind(d, 'Float32Array');
    expect(list(d)).toEqual([1, 2.5, -3, 0.1, 1e-8, 1e30].map(Math.fround));
    expect(t.toArray()).toEqual([
      [1, 2.5, -3],
      [Math.fround(0.1), Math.fround(1e-8), Math.fround(1e30)],
    ]);
  });

  test('float64 keeps doubles exactly', () => {
    const vals = [0.1, 1 / 3, -Math.PI, 1e-300, Number.MAX_VALUE, 2 ** 53 + 2];
    const t = Tensor.from(vals, undefined, { dtype: 'float64' });
    expect(t.dtype).toBe('float64');
    expect(t.shape).toEqual([6]);
    const d = t.data();
    expectKind(d, 'Float64Array');
    expect(list(d)).toEqual(vals);
  });

  test('bfloat16 rounds to nearest even on the top 16 bits of the float32', () => {
    const t = Tensor.from([1 / 3], undefined, { dtype: 'bfloat16' });
    expect(t.dtype).toBe('bfloat16');
    expectKind(t.data(), 'Float32Array'); // widened on read
    expect(t.item()).toBe(bf16Round(1 / 3));
    expect(t.item()).toBe(0.333984375);
    expect(t.item()).not.toBe(Math.fround(1 / 3));

    const vals = [0, -0, 1, -1, 0.1, 1 / 3, 2 / 3, Math.PI, -1e-3, 65504, 1e20, -3.0e38, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1e-40];
    for (let i = 0; i < 200; i++) vals.push(Math.sin(i * 12.9898) * 10 ** ((i % 13) - 6));
    const b = Tensor.from(vals, undefined, { dtype: 'bfloat16' });
    expect(list(b.data())).toEqual(vals.map(bf16Round));
    expect(Object.is(b.data()[1], -0)).toBe(true);
  });

  test('float16: 0.1 is 0.0999755859375, plus subnormals, ties and overflow', () => {
    const t = Tensor.from([0.1], undefined, { dtype: 'float16' });
    expect(t.dtype).toBe('float16');
    expect(t.item()).toBe(0.0999755859375);

    const vals = [0, 1, -2.5, 1 / 3, 65504, 65519, 70000, -70000, 2 ** -24, 2 ** -25 * 3, 2 ** -15, 1 + 2 ** -11, 1 + 3 * 2 ** -11];
    for (let i = 0; i < 200; i++) vals.push(Math.sin(i * 78.233) * 2 ** ((i % 30) - 20));
    const h = Tensor.from(vals, undefined, { dtype: 'float16' });
    const got = list(h.data());
    expect(got).toEqual(vals.map(f16Round));
    expect(got[6]).toBe(Infinity);
    expect(got[7]).toBe(-Infinity);
    expect(got[8]).toBe(2 ** -24);
  });

  test('int32', () => {
    const t = Tensor.from([[-2147483648, 0], [7, 2147483647]], undefined, { dtype: 'int32' });
    expect(t.dtype).toBe('int32');
    expect(t.shape).toEqual([2, 2]);
    const d = t.data();
    expectKind(d, 'Int32Array');
    expect(list(d)).toEqual([-2147483648, 0, 7, 2147483647]);
    expect(t.toArray()).toEqual([[-2147483648, 0], [7, 2147483647]]);
  });

  test('int64 from numbers (exact up to 2^53)', () => {
    const t = Tensor.from([-(2 ** 53), -1, 0, 2 ** 53], undefined, { dtype: 'int64' });
    expect(t.dtype).toBe('int64');
    const d = t.data();
    expectKind(d, 'BigInt64Array');
    expect(list(d)).toEqual([-(2n ** 53n), -1n, 0n, 2n ** 53n]);
    expect(t.toArray()).toEqual([-(2 ** 53), -1, 0, 2 ** 53]);
  });

  test('int64 from a bigint array keeps all 64 bits', () => {
    const vals = [-(2n ** 63n), -1n, 0n, 2n ** 60n + 1n, 2n ** 63n - 1n];
    const t = Tensor.from(vals);
    expect(t.dtype).toBe('int64');
    expect(t.shape).toEqual([5]);
    expect(list(t.data())).toEqual(vals);
    const m = Tensor.from([1n, 2n, 3n, 4n, 5n, 6n], [2, 3]);
    expect(m.shape).toEqual([2, 3]);
    expect(m.toArray()).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    // A bigint array converted to another dtype.
    const f = Tensor.from([3n, -4n], undefined, { dtype: 'float64' });
    expect(f.dtype).toBe('float64');
    expect(list(f.data())).toEqual([3, -4]);
  });

  test('uint8', () => {
    const t = Tensor.from([0, 1, 128, 255], undefined, { dtype: 'uint8' });
    expect(t.dtype).toBe('uint8');
    const d = t.data();
    expectKind(d, 'Uint8Array');
    expect(list(d)).toEqual([0, 1, 128, 255]);
  });

  test('bool: zero is false, anything else true; read back as 0/1 bytes', () => {
    const t = Tensor.from([[1, 0, 2], [0, -1, 1]], undefined, { dtype: 'bool' });
    expect(t.dtype).toBe('bool');
    expect(t.shape).toEqual([2, 3]);
    const d = t.data();
    expectKind(d, 'Uint8Array');
    expect(list(d)).toEqual([1, 0, 1, 0, 1, 1]);
    expect(t.toArray()).toEqual([[1, 0, 1], [0, 1, 1]]);
  });
});

describe('Tensor.from with typed arrays and flat arrays', () => {
  test('each typed array gives its own dtype by default', () => {
    const cases: [ArrayLike<number | bigint> & ArrayBufferView, Dtype, unknown[]][] = [
      [new Float32Array([1.5, -2]), 'float32', [1.5, -2]],
      [new Float64Array([0.1, 1 / 3]), 'float64', [0.1, 1 / 3]],
      [new Int32Array([-5, 6]), 'int32', [-5, 6]],
      [new BigInt64Array([-(2n ** 62n), 9n]), 'int64', [-(2n ** 62n), 9n]],
      [new Uint8Array([0, 255]), 'uint8', [0, 255]],
    ];
    for (const [data, dtype, want] of cases) {
      const t = Tensor.from(data as never);
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([2]);
      expect(list(t.data())).toEqual(want);
    }
  });

  test('a typed array with a shape, and a converted dtype', () => {
    const src = new Float32Array([0, 1, 2, 3, 4, 5]);
    const t = Tensor.from(src, [2, 1, 3]);
    expect(t.shape).toEqual([2, 1, 3]);
    expect(t.toArray()).toEqual([[[0, 1, 2]], [[3, 4, 5]]]);
    const h = Tensor.from(new Float32Array([0.1, 1 / 3]), [2], { dtype: 'float16' });
    expect(h.dtype).toBe('float16');
    expect(list(h.data())).toEqual([0.0999755859375, f16Round(1 / 3)]);
    const b = Tensor.from(new Float64Array([1 / 3]), [1], { dtype: 'bfloat16' });
    expect(b.item()).toBe(bf16Round(1 / 3));
    const i = Tensor.from(new Int32Array([1, 0, 3]), undefined, { dtype: 'bool' });
    expect(i.dtype).toBe('bool');
    expect(list(i.data())).toEqual([1, 0, 1]);
  });

  test('the data is copied, and views into a larger buffer read from their own offset', () => {
    const src = new Float32Array([10, 11, 12, 13, 14]);
    const view = src.subarray(1, 4);
    const t = Tensor.from(view);
    src[2] = 99;
    expect(list(t.data())).toEqual([11, 12, 13]);
    const d = t.data();
    d[0] = -1;
    expect(t.data()[0]).toBe(11); // data() is a copy as well
    const buf = Buffer.from([9, 8, 7, 6]); // a Buffer may sit inside a shared pool
    expect(list(Tensor.from(buf.subarray(1)).data())).toEqual([8, 7, 6]);
  });

  test('a flat array of numbers with a shape', () => {
    const t = Tensor.from([1, 2, 3, 4, 5, 6], [3, 2], { dtype: 'int32' });
    expect(t.shape).toEqual([3, 2]);
    expect(t.toArray()).toEqual([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
  });

  test('scalars (shape []) and empty tensors', () => {
    const s = Tensor.from([4.25], []);
    expect(s.shape).toEqual([]);
    expect(s.numel).toBe(1);
    expect(s.item()).toBe(4.25);
    expect(s.toArray()).toBe(4.25);
    const e = Tensor.from([]);
    expect(e.shape).toEqual([0]);
    expect(e.numel).toBe(0);
    expect(e.data()).toHaveLength(0);
    expect(e.toArray()).toEqual([]);
    const e2 = Tensor.from(new Float32Array(0), [3, 0]);
    expect(e2.shape).toEqual([3, 0]);
    expect(e2.toArray()).toEqual([[], [], []]);
  });

  test('deeply nested arrays', () => {
    const nested = [[[[1, 2]], [[3, 4]]], [[[5, 6]], [[7, 8]]]];
    const t = Tensor.from(nested, undefined, { dtype: 'float64' });
    expect(t.shape).toEqual([2, 2, 1, 2]);
    expect(t.toArray()).toEqual(nested);
    expect(list(t.data())).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });
});

describe('item()', () => {
  test('returns the value of any one-element tensor as a number', () => {
    expect(Tensor.from([[2.5]]).item()).toBe(2.5);
    expect(Tensor.from([-7], [], { dtype: 'int32' }).item()).toBe(-7);
    expect(Tensor.from([123n]).item()).toBe(123);
    expect(Tensor.from([200], undefined, { dtype: 'uint8' }).item()).toBe(200);
    expect(Tensor.from([3], undefined, { dtype: 'bool' }).item()).toBe(1);
  });

  test('throws on a tensor of more or fewer than one element', () => {
    expectErrorMatching(() => Tensor.from([1, 2]).item(), /one element.*shape \[2\]/);
    expectErrorMatching(() => Tensor.from([[1, 2], [3, 4]]).item(), /shape \[2, 2\]/);
    expectErrorMatching(() => Tensor.from([]).item(), /one element.*shape \[0\]/);
  });
});

describe('to()', () => {
  test('converts dtype with a dtype name or options, leaving the source unchanged', () => {
    const t = Tensor.from([1.7, -2.7, 1 / 3]);
    const d = t.to('float64');
    expect(d.dtype).toBe('float64');
    expect(list(d.data())).toEqual([1.7, -2.7, 1 / 3].map(Math.fround));
    const i = t.to({ dtype: 'int32' });
    expect(i.dtype).toBe('int32');
    expect(list(i.data())).toEqual([1, -2, 0]); // truncation toward zero, as torch does
    const h = t.to('float16');
    expect(list(h.data())).toEqual([1.7, -2.7, 1 / 3].map(f16Round));
    const b = t.to('bfloat16');
    expect(list(b.data())).toEqual([1.7, -2.7, 1 / 3].map(bf16Round));
    const z = t.to('bool');
    expect(list(z.data())).toEqual([1, 1, 1]);
    const l = Tensor.from([5, 6], undefined, { dtype: 'uint8' }).to('int64');
    expect(list(l.data())).toEqual([5n, 6n]);
    expect(t.dtype).toBe('float32');
    expect(list(t.data())).toEqual([1.7, -2.7, 1 / 3].map(Math.fround));
  });

  test('to the cpu device, and dtype and device together', () => {
    const t = Tensor.from([[1, 2]], undefined, { dtype: 'int32', device: 'cpu' });
    expect(t.device).toBe('cpu');
    const c = t.to('cpu');
    expect(c.device).toBe('cpu');
    expect(c.dtype).toBe('int32');
    expect(c.shape).toEqual([1, 2]);
    const both = t.to({ dtype: 'float64', device: 'cpu' });
    expect(both.dtype).toBe('float64');
    expect(both.device).toBe('cpu');
    expect(both.toArray()).toEqual([[1, 2]]);
  });

  test('unknown targets and CUDA without CUDA are errors', () => {
    const t = Tensor.from([1]);
    expectErrorMatching(() => t.to('tpu' as never), /unknown device "tpu"/);
    expectErrorMatching(() => t.to({ dtype: 'float8' as never }), /unknown dtype "float8"/);
    if (!buildInfo.cudaAvailable) {
      expectErrorMatching(() => t.to('cuda'), /CUDA/);
      expectErrorMatching(() => t.to({ device: 'cuda:0' }), /CUDA/);
    }
  });
});

describe('util.inspect', () => {
  test('shows shape, dtype, device and the values', () => {
    const s = util.inspect(Tensor.from([[1, 2, 3], [4, 5, 6]], undefined, { dtype: 'int32' }));
    expect(s).toContain('shape=[2, 3]');
    expect(s).toContain('dtype=int32');
    expect(s).toContain('device=cpu');
    expect(s).toContain('[[1, 2, 3], [4, 5, 6]]');
    const f = util.inspect(Tensor.from([0.5, 1 / 3]));
    expect(f).toContain('dtype=float32');
    expect(f).toContain('[0.5000, 0.3333]');
    expect(util.inspect(Tensor.from([2.5], []))).toMatch(/shape=\[\].*2\.500/);
    expect(util.inspect(Tensor.from([7n, -8n]))).toContain('[7, -8]');
    expect(String(Tensor.from([1, 0], undefined, { dtype: 'bool' }))).toBe('Tensor(shape=[2], dtype=bool, device=cpu) [1, 0]');
  });

  test("elides the middle of long dimensions with '...', keeping a few values at each end", () => {
    const v = Tensor.from(new Int32Array(1000).map((_, i) => i));
    const s = util.inspect(v);
    expect(s).toContain('shape=[1000]');
    expect(s).toContain('[0, 1, 2, ..., 997, 998, 999]');
    expect(s).not.toContain(' 500');
    const m = Tensor.from(new Float32Array(20 * 30).map((_, i) => i), [20, 30]);
    const ms = util.inspect(m);
    expect(ms).toContain('shape=[20, 30]');
    expect(ms).toContain('[[0, 1, 2, ..., 27, 28, 29], [30, 31, 32, ..., 57, 58, 59], [60, 61, 62, ..., 87, 88, 89], ..., ');
    expect(ms).toContain('[570, 571, 572, ..., 597, 598, 599]]');
    expect(ms.length).toBeLessThan(400);
    // Six or fewer elements along a dimension are all shown.
    expect(util.inspect(Tensor.from([1, 2, 3, 4, 5, 6]))).toContain('[1, 2, 3, 4, 5, 6]');
    expect(util.inspect(Tensor.from([1, 2, 3, 4, 5, 6, 7]))).toContain('[1, 2, 3, ..., 5, 6, 7]');
  });

  test('nested beyond the inspect depth, only the header is shown', () => {
    const s = util.inspect({ a: { b: { c: { t: Tensor.from([1, 2]) } } } }, { depth: 1 });
    expect(s).not.toContain('Tensor(');
    const deep = util.inspect({ a: { t: Tensor.from([1, 2]) } }, { depth: 0 });
    expect(deep).not.toContain('[1, 2]');
  });
});

describe('Tensor.from errors', () => {
  test('ragged nested arrays', () => {
    expectErrorMatching(() => Tensor.from([[1, 2], [3]]), /ragged data at \[1\]: expected an array of length 2, got length 1/);
    expectErrorMatching(() => Tensor.from([[1], [2, 3]]), /ragged/);
    expectErrorMatching(() => Tensor.from([[1, 2], 3] as never), /ragged data at \[1\]/);
    expectErrorMatching(() => Tensor.from([[[1], [2]], [[3], [4, 5]]]), /ragged data at \[1\]\[1\]/);
    expectErrorMatching(() => Tensor.from([1, [2]] as never), /element \[1\] must be a number/);
    expectErrorMatching(() => Tensor.from([1, 'x'] as never), /must be a number/);
  });

  test('shape does not match the number of elements', () => {
    expectErrorMatching(() => Tensor.from([1, 2, 3], [2, 2]), /shape \[2, 2\] holds 4 elements but data has 3/);
    expectErrorMatching(() => Tensor.from(new Float32Array(6), [4]), /holds 4 elements but data has 6/);
    expectErrorMatching(() => Tensor.from([[1, 2], [3, 4]], [3]), /holds 3 elements but data has 4/);
    expectErrorMatching(() => Tensor.from([1n, 2n], [3]), /holds 3 elements but data has 2/);
    expectErrorMatching(() => Tensor.from([1, 2], [-1, -2]), /non-negative/);
    expectErrorMatching(() => Tensor.from([1, 2], [1.5]), /integer/);
  });

  test('integers outside the dtype range (no silent wrap)', () => {
    expectErrorMatching(() => Tensor.from([300], undefined, { dtype: 'uint8' }), /element 0 is 300, not an integer in \[0, 255\]/);
    expectErrorMatching(() => Tensor.from([-1], undefined, { dtype: 'uint8' }), /element 0 is -1/);
    expectErrorMatching(() => Tensor.from([0, 2 ** 31], undefined, { dtype: 'int32' }), /element 1 is 2147483648, not an integer in \[-2147483648, 2147483647\]/);
    expectErrorMatching(() => Tensor.from([2 ** 54], undefined, { dtype: 'int64' }), /element 0 is 18014398509481984/);
    expect(Tensor.from([2 ** 31 - 1, -(2 ** 31)], undefined, { dtype: 'int32' }).toArray()).toEqual([2 ** 31 - 1, -(2 ** 31)]);
    expect(Tensor.from([255, 0], undefined, { dtype: 'uint8' }).toArray()).toEqual([255, 0]);
  });

  test('non-integers for an integer dtype', () => {
    for (const dtype of ['int32', 'int64', 'uint8'] as const) {
      expectErrorMatching(() => Tensor.from([1, 2.5], undefined, { dtype }), new RegExp(`element 1 is 2.5, not an integer in \\[.*\\] as dtype ${dtype} needs`));
    }
    expectErrorMatching(() => Tensor.from([NaN], undefined, { dtype: 'int32' }), /not an integer/);
    expectErrorMatching(() => Tensor.from([Infinity], undefined, { dtype: 'int64' }), /not an integer/);
    expectErrorMatching(() => Tensor.from(new Float64Array([0.5]), undefined, { dtype: 'int32' }), /not an integer/);
    expectErrorMatching(() => Tensor.from(new Float32Array([1, -2.75]), undefined, { dtype: 'int32' }), /element 1 is -2.75, not an integer/);
  });

  test('unknown dtype', () => {
    expectErrorMatching(() => Tensor.from([1], undefined, { dtype: 'float8' as never }), /unknown dtype 'float8'.*float32, float64, bfloat16/);
    expectErrorMatching(() => Tensor.from(new Float32Array([1]), undefined, { dtype: 'int16' as never }), /unknown dtype/);
  });

  test('unknown device', () => {
    expectErrorMatching(() => Tensor.from([1], undefined, { device: 'tpu' as never }), /unknown device "tpu"/);
    expectErrorMatching(() => Tensor.from([1], undefined, { device: 'CPU' as never }), /unknown device/);
  });

  test('CUDA on a machine without CUDA', () => {
    if (buildInfo.cudaAvailable) {
      // With CUDA, a tensor goes there and comes back intact.
      const t = Tensor.from([1.5, 2], undefined, { device: 'cuda' });
      expect(t.device).toMatch(/^cuda/);
      expect(list(t.data())).toEqual([1.5, 2]);
      return;
    }
    expect(buildInfo.cudaDeviceCount).toBe(0);
    expectErrorMatching(() => Tensor.from([1], undefined, { device: 'cuda' }), /CUDA/);
    expectErrorMatching(() => Tensor.from(new Float32Array([1]), undefined, { device: 'cuda:0' }), /CUDA/);
  });

  test('data that is not an array', () => {
    expectErrorMatching(() => Tensor.from('abc' as never), /data must be an array or a typed array/);
    expectErrorMatching(() => Tensor.from(42 as never), /data must be an array or a typed array/);
    expectErrorMatching(() => Tensor.from(new Int16Array([1]) as never), /Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array/);
  });
});

describe('data() is a method, typed by dtype', () => {
  it('reading an element or the length off the method throws, saying to call it', () => {
    const t = Tensor.from(new Float32Array([1.5, 2.5]));
    const loose = t as unknown as { data: Record<string, unknown> };
    expect(() => loose.data[0]).toThrow('Tensor.data is a method: call it, t.data()[0] (or use t.toArray())');
    expect(() => loose.data.length).toThrow('Tensor.data is a method: call it, t.data().length (or use t.toArray())');
    expect(Array.from(t.data())).toEqual([1.5, 2.5]);
    expect(typeof loose.data.call).toBe('function'); // the method's own properties are untouched
  });

  it('as() checks the dtype; to() converts', () => {
    const t: Tensor = Tensor.from([1, 2, 3], [3], { dtype: 'float64' });
    expect(t.as('float64').data().constructor.name).toBe('Float64Array');
    expect(() => t.as('float32')).toThrow('this tensor is float64, not float32 (convert it with .to("float32"))');
    expect(t.to('float32').data()).toEqual(new Float32Array([1, 2, 3]));
    expect(Tensor.from(new BigInt64Array([5n])).data()).toEqual(new BigInt64Array([5n]));
  });
});

describe('sameDevice', () => {
  it("treats 'cuda' as cuda:0 (the current device, which rlora never changes) and nothing else as equal", () => {
    expect(sameDevice('cuda', 'cuda:0')).toBe(true);
    expect(sameDevice('cuda:0', 'cuda')).toBe(true);
    expect(sameDevice('cuda', 'cuda')).toBe(true);
    expect(sameDevice('cuda', 'cuda:1')).toBe(false);
    expect(sameDevice('cpu', 'cuda:0')).toBe(false);
    expect(sameDevice('cpu', 'cpu')).toBe(true);
  });
});
