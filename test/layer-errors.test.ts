// Bad input to the layer: each is a JS Error naming the value and what was expected; the process
// survives and a failed call changes nothing.
import { MultiHeadLoraLinear, Tensor } from '../lib';

const W = Tensor.from(new Float32Array(6 * 4).fill(0.1), [6, 4]);
const make = (opts: object, base: object = { weight: W }): MultiHeadLoraLinear =>
  new MultiHeadLoraLinear(base as never, opts as never);

describe('options', () => {
  it.each([
    [{ rank: 0 }, /rank must be an integer >= 1, got 0/],
    [{ rank: 1.5 }, /rank must be an integer, got 1\.5/],
    [{ heads: 0 }, /heads must be an integer >= 1, got 0/],
    [{ dropout: 1 }, /dropout must be in \[0, 1\), got 1/],
    [{ dropout: -0.1 }, /dropout must be in \[0, 1\), got -0\.1/],
    [{ dropout: '0.1' }, /dropout must be a number, got "0\.1"/],
    [{ method: 'qlora' }, /method must be one of "lora", "hydralora", "rlora"; got "qlora"/],
    [{ dropoutOn: 'output' }, /dropoutOn must be one of "input", "rank"; got "output"/],
    [{ init: { a: 'xavier' } }, /init\.a must be one of "kaiming", .*"orthogonal"; got "xavier"/],
    [{ init: { router: 'ones' } }, /init\.router must be one of .*; got "ones"/],
    [{ init: { scale: 'big' } }, /init\.scale must be one of "none", "stable", "reference"; got "big"/],
    [{ init: { stableBase: 'in' } }, /init\.stableBase must be one of "rank", "out"; got "in"/],
    [{ init: { gamma: 0 } }, /init\.gamma must be a number from 1e-06 to 1e\+12, got 0/],
    [{ init: { offest: true } }, /^MultiHeadLoraLinear: init: unknown option "offest" \(did you mean "offset"\?\); known: a, b, router, scale, gamma, stableBase, offset$/],
    [{ rnak: 4 }, /^MultiHeadLoraLinear: unknown option "rnak" \(did you mean "rank"\?\); known: method, rank, heads, /],
    [{ zzz: 4 }, /^MultiHeadLoraLinear: unknown option "zzz"; known: /],
    [{ seed: -1 }, /seed must be a non-negative integer, got -1/],
    [{ alpha: Infinity }, /alpha must be a finite number from -1e\+06 to 1e\+06, got inf/],
    // the offset is exact only with a uniform router
    [{ init: { router: 'kaiming' } }, /init\.offset needs init\.router "zeros" \(a uniform router\) .*got init\.router "kaiming"/],
  ])('%j', (opts, message) => {
    expect(() => make(opts)).toThrow(message);
  });
});

describe('error classes', () => {
  // As in lib/: a value of the wrong type is a TypeError, a value out of range (or an unknown
  // option) a RangeError, whichever of the binding or native/ finds it; an argument that does not
  // fit the others (a bias of another shape) is an Error. The addon's errors come from Node's
  // realm, not jest's: compared by name.
  const nameOf = (fn: () => unknown): string => {
    try {
      fn();
    } catch (e) {
      return (e as Error).name;
    }
    return 'no error';
  };
  it.each([
    [{ rank: 1.5 }, 'TypeError'],
    [{ dropout: '0.1' }, 'TypeError'],
    [{ seed: 1.5 }, 'TypeError'],
    [{ init: 3 }, 'TypeError'],
    [{ rank: 0 }, 'RangeError'],
    [{ dropout: 1 }, 'RangeError'],
    [{ seed: -1 }, 'RangeError'],
    [{ method: 'qlora' }, 'RangeError'],
    [{ rnak: 4 }, 'RangeError'],
    [{ init: { offest: true } }, 'RangeError'],
  ])('%j: %s', (opts, name) => {
    expect(nameOf(() => make(opts))).toBe(name);
  });

  it('a layer reseeded with a negative seed: RangeError, as the option', () => {
    const l = make({});
    expect(nameOf(() => l.native.reseed(-1))).toBe('RangeError');
    expect(() => l.native.reseed(-1)).toThrow('seed must be a non-negative integer, got -1');
    expect(nameOf(() => l.native.reseed(0.5))).toBe('TypeError');
  });

  it('a bias that does not fit the weight: Error', () => {
    expect(nameOf(() => make({}, { weight: W, bias: Tensor.from([1, 2]) }))).toBe('Error');
  });
});

describe('base layer', () => {
  it.each([
    [{ weight: Tensor.from([1, 2, 3]) }, /weight must be a 2-D tensor \[out, in\], got \[3\]/],
    [{ weight: Tensor.from([[1, 2]], undefined, { dtype: 'int32' }) }, /weight must be float32, float64, bfloat16 or float16, got int32/],
    [{ weight: W, bias: Tensor.from([1, 2]) }, /bias must have shape \[6\] to match weight \[6, 4\], got \[2\]/],
    [{ weight: W, bias: Tensor.from(new Float64Array(6)) }, /bias dtype float64 differs from weight dtype float32/],
    [{ weight: [[1, 2]] }, /weight must be a Tensor/],
    [{}, /weight must be a Tensor/],
  ])('%#', (base, message) => {
    expect(() => make({}, base)).toThrow(message);
  });
});

describe('forward, vjp and state dicts', () => {
  const layer = make({ rank: 2, heads: 3 });

  it('rejects inputs of the wrong shape, dtype or kind', async () => {
    await expect(layer.forward(Tensor.from([[1, 2, 3]]))).rejects.toThrow(/input must have shape \[\.\.\., 4\], got \[1, 3\]/);
    await expect(layer.forward(Tensor.from(new Float64Array(4), [1, 4]))).rejects.toThrow(/input dtype float64 does not match the layer's float32/);
    await expect(layer.forward([1, 2, 3, 4] as never)).rejects.toThrow(/input must be a Tensor/);
    await expect(layer.vjp(Tensor.from(new Float32Array(8), [2, 4]), Tensor.from(new Float32Array(6), [1, 6]))).rejects.toThrow(
      /gradOutput must have the output's shape \[2, 6\], got \[1, 6\]/,
    );
  });

  it('loadStateDict is strict and all-or-nothing', () => {
    const before = layer.stateDict();
    const bad = { ...before, 'lora_B2.weight': Tensor.from(new Float32Array(12), [6, 2]), 'lora_A.weight': Tensor.from(new Float32Array(6), [2, 3]) };
    expect(() => layer.loadStateDict(bad)).toThrow(/lora_A\.weight has shape \[2, 3\], expected \[2, 4\]/);
    const after = layer.stateDict();
    for (const k of Object.keys(before)) expect(after[k].data()).toEqual(before[k].data()); // nothing changed
    const missing = { ...before };
    delete (missing as Record<string, Tensor>)['lora_B1.weight'];
    expect(() => layer.loadStateDict(missing)).toThrow(/state dict is missing lora_B1\.weight \(expected shape \[6, 2\]\)/);
    expect(() => layer.loadStateDict({ ...before, 'lora_C.weight': W })).toThrow(/unexpected entries: lora_C\.weight/);
    expect(() => layer.loadStateDict({ ...before, 'lora_A.weight': 3 as never })).toThrow(/stateDict\["lora_A\.weight"\] must be a Tensor/);
  });

  it('the process survives every error above and the layer still works', async () => {
    const y = await layer.eval().forward(Tensor.from(new Float32Array(4).fill(1), [1, 4]));
    expect(y.shape).toEqual([1, 6]);
    expect(Array.from(y.data() as Float32Array).every(Number.isFinite)).toBe(true);
  });
});
