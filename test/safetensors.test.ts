// safetensors: round trips for every dtype, metadata, compatibility with an independent Python
// implementation of the format (written here from the spec: Python's `safetensors` package is not
// installable on the test machines), and the refusal of malformed files.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import {
  Dtype,
  MAX_HEADER_BYTES,
  Tensor,
  loadSafetensors,
  loadSafetensorsMetadata,
  readSafetensorsHeader,
  saveSafetensors,
} from '../lib';
import { expectErrorMatching } from './helpers/errors';
import { requireTorchPython, runPython } from './helpers/python';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-safetensors-test-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});
const file = (name: string): string => path.join(dir, name);



/** Elements as plain JS values: numbers, or decimal strings for int64 (all 64 bits). */
function values(t: Tensor): (number | string)[] {
  const d = t.data();
  return Array.from(d as ArrayLike<number | bigint>, (v) => (typeof v === 'bigint' ? v.toString() : v));
}

function sha256(bytes: ArrayBufferView): string {
  return createHash('sha256').update(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).digest('hex');
}

/** One tensor of every dtype, with edge values (NaN, ±Infinity, -0, subnormals, integer extremes). */
function sampleTensors(): Record<string, Tensor> {
  const floats = [0.1, -0, Infinity, -Infinity, NaN, 1e-45, 3.4028234663852886e38, 1 / 3];
  return {
    f32: Tensor.from(floats, [2, 4], { dtype: 'float32' }),
    f16: Tensor.from([0.1, -0, 65504, -Infinity, NaN, 2 ** -24, 1 / 3], undefined, { dtype: 'float16' }),
    bf16: Tensor.from([[1 / 3, -0, 3e38], [NaN, Infinity, 1e-40]], undefined, { dtype: 'bfloat16' }),
    f64: Tensor.from([Math.PI, -0, Number.MIN_VALUE, Number.MAX_VALUE, NaN, -Infinity], [3, 2], { dtype: 'float64' }),
    i32: Tensor.from([-2147483648, -1, 0, 1, 2147483647], undefined, { dtype: 'int32' }),
    i64: Tensor.from([-(2n ** 63n), -1n, 0n, 2n ** 53n + 1n, 2n ** 63n - 1n]),
    u8: Tensor.from(new Uint8Array(256).map((_, i) => i), [16, 16]),
    flags: Tensor.from([1, 0, 1, 1, 0], undefined, { dtype: 'bool' }),
    scalar: Tensor.from([2.5], [], { dtype: 'float64' }),
    empty: Tensor.from(new Float32Array(0), [0, 3]),
    'model.layers.0.self_attn.q_proj.weight': Tensor.from(new Float32Array(24).map((_, i) => i - 12), [2, 3, 4]),
  };
}

const FORMAT: Record<Dtype, string> = {
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  float64: 'F64',
  int32: 'I32',
  int64: 'I64',
  uint8: 'U8',
  bool: 'BOOL',
};

describe('round trip', () => {
  test('every dtype comes back with its dtype, shape and exact values', () => {
    const src = sampleTensors();
    const p = file('all-dtypes.safetensors');
    saveSafetensors(p, src);
    const got = loadSafetensors(p);
    expect(Object.keys(got).sort()).toEqual(Object.keys(src).sort());
    for (const [name, t] of Object.entries(src)) {
      const g = got[name];
      expect(g).toBeInstanceOf(Tensor);
      expect([name, g.dtype, g.shape, g.device]).toEqual([name, t.dtype, t.shape, 'cpu']);
      expect([name, values(g)]).toEqual([name, values(t)]); // toEqual: NaN equals NaN, -0 differs from 0
    }
    // Spot checks against known values, independent of Tensor.from.
    expect(values(got.f16).slice(0, 3)).toEqual([0.0999755859375, -0, 65504]);
    expect(values(got.bf16).slice(0, 2)).toEqual([0.333984375, -0]);
    expect(values(got.bf16).slice(3, 5)).toEqual([NaN, Infinity]);
    expect(values(got.i64)).toEqual(['-9223372036854775808', '-1', '0', '9007199254740993', '9223372036854775807']);
    expect(values(got.u8)[255]).toBe(255);
    expect(values(got.flags)).toEqual([1, 0, 1, 1, 0]);
    expect(got.scalar.shape).toEqual([]);
    expect(got.scalar.item()).toBe(2.5);
    expect(got.empty.shape).toEqual([0, 3]);
    // No temporary file is left next to the result.
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('all-dtypes'))).toEqual(['all-dtypes.safetensors']);
  });

  test('the header lists every tensor, padded to 8 bytes, with contiguous offsets', () => {
    const src = sampleTensors();
    const p = file('header.safetensors');
    saveSafetensors(p, src);
    const h = readSafetensorsHeader(p);
    const size = fs.statSync(p).size;
    expect(h.dataStart % 8).toBe(0);
    const n = Number(fs.readFileSync(p).readBigUInt64LE(0));
    expect(h.dataStart).toBe(8 + n);
    expect(h.metadata).toEqual({});
    expect(h.entries.map((e) => e.name).sort()).toEqual(Object.keys(src).sort());
    let total = 0;
    for (const e of h.entries) {
      const t = src[e.name];
      expect([e.name, e.dtype, e.shape]).toEqual([e.name, t.dtype, t.shape]);
      total += e.dataOffsets[1] - e.dataOffsets[0];
    }
    expect(h.dataStart + total).toBe(size);
  });

  test('bit patterns survive exactly, including NaN payloads and float16/bfloat16 subnormals', () => {
    // Built from raw bytes so that nothing is rounded on the way in.
    const f32Bits = new Uint32Array([0x7fc00001, 0xffbfffff, 0x00000001, 0x807fffff, 0x3eaaaaab]);
    const f16Bits = new Uint16Array([0x7e01, 0x0001, 0x03ff, 0x8400, 0x3555, 0xfbff]);
    const f64 = new Float64Array([1 / 3, -0, 5e-324]);
    const p = file('bits.safetensors');
    saveSafetensors(p, {
      a: Tensor.fromBytes(new Uint8Array(f32Bits.buffer), 'float32', [5]),
      b: Tensor.fromBytes(new Uint8Array(f16Bits.buffer), 'float16', [6]),
      c: Tensor.fromBytes(new Uint8Array(f16Bits.buffer), 'bfloat16', [2, 3]),
      d: Tensor.fromBytes(new Uint8Array(f64.buffer), 'float64', [3]),
    });
    const got = loadSafetensors(p);
    expect(sha256(got.a.data())).toBe(sha256(f32Bits));
    expect(Buffer.from(got.b.native.bytes()).equals(Buffer.from(f16Bits.buffer))).toBe(true);
    expect(Buffer.from(got.c.native.bytes()).equals(Buffer.from(f16Bits.buffer))).toBe(true);
    expect(values(got.b).slice(1, 3)).toEqual([2 ** -24, 1023 * 2 ** -24]);
    expect(got.c.dtype).toBe('bfloat16');
    expect(values(got.d)).toEqual([1 / 3, -0, 5e-324]);
  });

  test('metadata round trip', () => {
    const metadata = {
      format: 'pt',
      empty: '',
      'ключ ✓': 'значение — 值 🙂',
      json: '{"r": 8, "alpha": [1, 2]}',
      multi: 'line 1\nline 2\t"quoted"\\',
    };
    const p = file('meta.safetensors');
    saveSafetensors(p, { w: Tensor.from([[1, 2], [3, 4]]) }, metadata);
    expect(loadSafetensorsMetadata(p)).toEqual(metadata);
    expect(readSafetensorsHeader(p).metadata).toEqual(metadata);
    expect(loadSafetensors(p).w.toArray()).toEqual([[1, 2], [3, 4]]);
    // Metadata only, and no metadata at all.
    const q = file('meta-only.safetensors');
    saveSafetensors(q, {}, { note: 'no tensors' });
    expect(loadSafetensorsMetadata(q)).toEqual({ note: 'no tensors' });
    expect(loadSafetensors(q)).toEqual({});
    const r = file('no-meta.safetensors');
    saveSafetensors(r, { x: Tensor.from([1]) });
    expect(loadSafetensorsMetadata(r)).toEqual({});
  });

  test('names that are special in JS objects stay ordinary entries', () => {
    const p = file('names.safetensors');
    const tensors: Record<string, Tensor> = {
      ['__proto__']: Tensor.from([1, 2]),
      constructor: Tensor.from([3], undefined, { dtype: 'int32' }),
      'a b/ü.weight': Tensor.from([4], undefined, { dtype: 'float64' }),
    };
    const meta: Record<string, string> = { ['__proto__']: 'p', toString: 's' };
    saveSafetensors(p, tensors, meta);
    const got = loadSafetensors(p);
    expect(Object.getPrototypeOf(got)).toBe(Object.prototype);
    expect(Object.keys(got).sort()).toEqual(['__proto__', 'a b/ü.weight', 'constructor']);
    expect(Object.getOwnPropertyDescriptor(got, '__proto__')?.value.toArray()).toEqual([1, 2]);
    expect(got['constructor' as string].toArray()).toEqual([3]);
    expect(got['a b/ü.weight'].toArray()).toEqual([4]);
    const m = loadSafetensorsMetadata(p);
    expect(Object.keys(m).sort()).toEqual(['__proto__', 'toString']);
    expect(Object.getOwnPropertyDescriptor(m, '__proto__')?.value).toBe('p');
  });

  test('saving over an existing file replaces it', () => {
    const p = file('overwrite.safetensors');
    saveSafetensors(p, { a: Tensor.from(new Float32Array(1000)) }, { v: '1' });
    saveSafetensors(p, { b: Tensor.from([7], undefined, { dtype: 'uint8' }) }, { v: '2' });
    const got = loadSafetensors(p);
    expect(Object.keys(got)).toEqual(['b']);
    expect(got.b.item()).toBe(7);
    expect(loadSafetensorsMetadata(p)).toEqual({ v: '2' });
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('overwrite'))).toEqual(['overwrite.safetensors']);
  });
});

describe('saving bad input', () => {
  test('a value that is not a Tensor is refused and nothing is written', () => {
    const p = file('not-a-tensor.safetensors');
    const fakes: unknown[] = [
      [1, 2, 3],
      new Float32Array([1]),
      { shape: [1], dtype: 'float32', device: 'cpu', native: Tensor.from([1]).native },
      null,
      Tensor.from([1]).native,
    ];
    for (const fake of fakes) {
      expectErrorMatching(
        () => saveSafetensors(p, { ok: Tensor.from([1]), w: fake as Tensor }),
        /saveSafetensors: tensors\["w"\] must be a Tensor/,
      );
    }
    expect(fs.existsSync(p)).toBe(false);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('not-a-tensor'))).toEqual([]);
  });

  test('the reserved name __metadata__ and non-string metadata are refused', () => {
    const p = file('reserved.safetensors');
    expectErrorMatching(() => saveSafetensors(p, { __metadata__: Tensor.from([1]) }), /"__metadata__" is reserved/);
    expectErrorMatching(
      () => saveSafetensors(p, { a: Tensor.from([1]) }, { r: 8 } as unknown as Record<string, string>),
      /metadata\.r must be a string, got number/,
    );
    expect(fs.existsSync(p)).toBe(false);
  });

  test('saving onto a path that is a directory fails clearly and leaves no temporary file', () => {
    const p = path.join(dir, 'a-folder.safetensors');
    fs.mkdirSync(p);
    expectErrorMatching(() => saveSafetensors(p, { a: Tensor.from([1]) }), /saveSafetensors: .*a-folder\.safetensors is a directory/);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('a-folder'))).toEqual(['a-folder.safetensors']);
    expect(fs.readdirSync(p)).toEqual([]);
  });

  test('saving into a directory that does not exist is an error', () => {
    const p = path.join(dir, 'missing-dir', 'x.safetensors');
    expectErrorMatching(() => saveSafetensors(p, { a: Tensor.from([1]) }), /ENOENT/);
  });
});

// ---- Malformed files -------------------------------------------------------------------------

/** Writes a file by hand: 8-byte little-endian length, the header text, then `data`. */
function writeRaw(name: string, header: string | object, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(h.length));
  const p = file(name);
  fs.writeFileSync(p, Buffer.concat([len, h, data]));
  return p;
}

function f32Bytes(...v: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(v).buffer);
}

/** Every reader refuses the file with a message that names the file and the problem. */
function expectRefused(p: string, pattern: RegExp): void {
  for (const read of [loadSafetensors, readSafetensorsHeader, loadSafetensorsMetadata]) {
    const e = expectErrorMatching(() => read(p), pattern);
    expect(e.message).toContain(p);
  }
}

describe('loading malformed files', () => {
  test('a file shorter than 8 bytes is truncated', () => {
    const empty = file('empty.safetensors');
    fs.writeFileSync(empty, Buffer.alloc(0));
    expectRefused(empty, /truncated: 0 bytes/);
    const five = file('five.safetensors');
    fs.writeFileSync(five, Buffer.from([1, 0, 0, 0, 0]));
    expectRefused(five, /truncated: 5 bytes, a file needs at least the 8-byte header length/);
  });

  test('a header length past the end of the file', () => {
    const p = writeRaw('past-end.safetensors', '{}', new Uint8Array(10), 100n);
    expectRefused(p, /header length 100 runs past the end of the file \(20 bytes\)/);
    const q = writeRaw('past-end-1.safetensors', '{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}', undefined, 54n);
    expectRefused(q, /header length 54 runs past the end of the file \(61 bytes\)/);
  });

  test('a header over 100,000,000 bytes is refused before anything is read; exactly 100,000,000 is within the limit', () => {
    expect(MAX_HEADER_BYTES).toBe(100_000_000); // the reference implementation's MAX_HEADER_SIZE
    // Only the 8-byte length field: if the header were read first, the error would be "past the end".
    const p = file('huge-header.safetensors');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(200n * 1024n * 1024n);
    fs.writeFileSync(p, len);
    expectRefused(p, /header length 209715200 is over the 100000000-byte limit/);
    len.writeBigUInt64LE(2n ** 64n - 1n);
    fs.writeFileSync(p, len);
    expectRefused(p, /header length 18446744073709551615 is over the 100000000-byte limit/);
    len.writeBigUInt64LE(100_000_001n);
    fs.writeFileSync(p, len);
    expectRefused(p, /header length 100000001 is over the 100000000-byte limit/);
    len.writeBigUInt64LE(100_000_000n);
    fs.writeFileSync(p, len);
    expectRefused(p, /header length 100000000 runs past the end of the file \(8 bytes\)/);
  });

  test('a header that is not valid UTF-8', () => {
    // A lone continuation byte inside a metadata string: Buffer.toString would turn it into U+FFFD.
    const text = Buffer.from('{"__metadata__":{"k":"v?"}}', 'utf8');
    text[text.indexOf('?')] = 0x80;
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(text.length));
    const p = file('not-utf8.safetensors');
    fs.writeFileSync(p, Buffer.concat([len, text]));
    expectRefused(p, /header is not valid UTF-8/);
    // A byte order mark is not JSON whitespace (the reference implementation refuses it too).
    expectRefused(writeRaw('bom.safetensors', '\ufeff{}'), /header is not valid JSON/);
  });

  test('integers written as 4.0 or 1e2 in shape or data_offsets', () => {
    const cases: [string, RegExp][] = [
      ['{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', /tensor "w" has an invalid shape: 1\.0 is not a plain integer/],
      ['{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4e0]}}', /tensor "w" has invalid data_offsets: 4e0 is not a plain integer/],
      ['{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4E+0]}}', /tensor "w" has invalid data_offsets: 4E\+0 is not a plain integer/],
      ['{"\\u0077":{"dtype":"F32","\\u0073hape":[1],"data_offsets":[0.0,4]}}', /tensor "w" has invalid data_offsets: 0\.0 is not a plain integer/],
    ];
    for (const [header, pattern] of cases) expectRefused(writeRaw('float-ints.safetensors', header, f32Bytes(1)), pattern);
    // Elsewhere (an unknown field, as the reference implementation ignores them) a float is fine.
    const ok = writeRaw('float-elsewhere.safetensors', '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"note":[1.5,2e3]}}', f32Bytes(7));
    expect(loadSafetensors(ok).w.toArray()).toEqual([7]);
  });

  test('JSON nested deeper than 64 levels', () => {
    const nest = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth);
    // The top object and the entry are 2 levels: 62 more reach 64.
    const at64 = writeRaw('depth-64.safetensors', `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":${nest(62)}}}`, f32Bytes(2));
    expect(loadSafetensors(at64).w.toArray()).toEqual([2]);
    const at65 = writeRaw('depth-65.safetensors', `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":${nest(63)}}}`, f32Bytes(2));
    expectRefused(at65, /header is nested deeper than 64 levels/);
    // Refused before parsing: ten million open brackets are not handed to JSON.parse.
    const start = Date.now();
    expectRefused(writeRaw('depth-huge.safetensors', '{"a":' + '['.repeat(10_000_000)), /nested deeper than 64/);
    expect(Date.now() - start).toBeLessThan(5000);
  });

  test('a header that is not valid JSON, or not a JSON object', () => {
    expectRefused(writeRaw('bad-json.safetensors', '{"a": {"dtype": "F32", '), /header is not valid JSON/);
    expectRefused(writeRaw('empty-json.safetensors', ''), /header is not valid JSON/);
    expectRefused(writeRaw('array-json.safetensors', '[1, 2]'), /header must be a JSON object/);
    expectRefused(writeRaw('null-json.safetensors', 'null'), /header must be a JSON object/);
    expectRefused(writeRaw('entry-null.safetensors', '{"a": null}'), /entry "a" must be an object/);
  });

  test('an unknown dtype', () => {
    for (const dtype of ['X9', 'f32', 'I16', 'toString']) {
      const p = writeRaw(`dtype-${dtype}.safetensors`, { w: { dtype, shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
      expectRefused(p, new RegExp(`tensor "w" has unsupported dtype "${dtype}"; supported: F32, F16, BF16, F64, I32, I64, U8, BOOL, U32, U64, F8_E4M3, F8_E5M2`));
    }
    const p = writeRaw('dtype-null.safetensors', { w: { dtype: null, shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
    expectRefused(p, /tensor "w" has unsupported dtype null/);
  });

  test('a missing dtype, shape or data_offsets says "missing"', () => {
    const full = { dtype: 'U8', shape: [1], data_offsets: [0, 1] };
    for (const field of ['dtype', 'shape', 'data_offsets'] as const) {
      const { [field]: _, ...rest } = full;
      const p = writeRaw(`missing-${field}.safetensors`, { w: rest }, new Uint8Array(1));
      expectRefused(p, new RegExp(`tensor "w": ${field} is missing`));
    }
  });

  test('an invalid shape or invalid data_offsets', () => {
    for (const shape of [[-1], [1.5], '4', null]) {
      const p = writeRaw('bad-shape.safetensors', { w: { dtype: 'U8', shape, data_offsets: [0, 1] } }, new Uint8Array(1));
      expectRefused(p, /tensor "w" has an invalid shape/);
    }
    for (const data_offsets of [[4, 0], [0], [0, 4, 8], [-4, 0], [0, '4'], null]) {
      const p = writeRaw('bad-offsets.safetensors', { w: { dtype: 'F32', shape: [1], data_offsets } }, f32Bytes(1));
      expectRefused(p, /tensor "w" has invalid data_offsets/);
    }
  });

  test('offsets out of range of the data section', () => {
    const p = writeRaw('out-of-range.safetensors', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32Bytes(1, 2));
    expectRefused(p, /tensor "w" data_offsets \[0,16\] are out of range: the data section has 8 bytes/);
    const q = writeRaw(
      'out-of-range-2.safetensors',
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } },
      f32Bytes(1, 2),
    );
    expectRefused(q, /tensor "b" data_offsets \[8,12\] are out of range/);
  });

  test('overlapping offsets', () => {
    const p = writeRaw(
      'overlap.safetensors',
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
      f32Bytes(1, 2, 3),
    );
    expectRefused(p, /tensor "b" data_offsets \[4,12\] overlap another tensor/);
    // Two tensors on the very same bytes.
    const q = writeRaw(
      'alias.safetensors',
      { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'I32', shape: [1], data_offsets: [0, 4] } },
      f32Bytes(1),
    );
    expectRefused(q, /overlap another tensor/);
  });

  test('offsets that do not match shape times element size', () => {
    const p = writeRaw('size-mismatch.safetensors', { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, f32Bytes(1, 2, 3));
    expectRefused(p, /tensor "w" \(F32 \[2, 2\]\) needs 16 bytes but data_offsets \[0,12\] span 12/);
    const q = writeRaw('size-mismatch-bf16.safetensors', { w: { dtype: 'BF16', shape: [3], data_offsets: [0, 3] } }, new Uint8Array(3));
    expectRefused(q, /needs 6 bytes but data_offsets \[0,3\] span 3/);
    const r = writeRaw('size-mismatch-i64.safetensors', { w: { dtype: 'I64', shape: [], data_offsets: [0, 4] } }, new Uint8Array(4));
    expectRefused(r, /\(I64 \[\]\) needs 8 bytes/);
  });

  test('a gap between tensors, a gap at the start, or bytes after the last tensor', () => {
    const gap = writeRaw(
      'gap.safetensors',
      { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } },
      f32Bytes(1, 2, 3),
    );
    expectRefused(gap, /bytes 4\.\.8 of the data section belong to no tensor/);
    const start = writeRaw('gap-start.safetensors', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32Bytes(1, 2));
    expectRefused(start, /bytes 0\.\.4 of the data section belong to no tensor/);
    const tail = writeRaw('tail.safetensors', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32Bytes(1, 2));
    expectRefused(tail, /the tensors cover 4 bytes but the data section has 8/);
  });

  test('metadata that is not an object of strings', () => {
    expectRefused(writeRaw('meta-num.safetensors', { __metadata__: { r: 8 } }), /__metadata__\.r must be a string, got 8/);
    expectRefused(writeRaw('meta-str.safetensors', { __metadata__: 'x' }), /__metadata__ must be an object of strings/);
    expectRefused(writeRaw('meta-array.safetensors', { __metadata__: ['a', 'b'] }), /__metadata__ must be an object of strings/);
    expectRefused(writeRaw('meta-nested.safetensors', { __metadata__: { r: { a: 'b' } } }), /__metadata__\.r must be a string, got \{"a":"b"\}/);
  });

  test('__metadata__: null means no metadata, as Python writes it', () => {
    const p = writeRaw('meta-null.safetensors', { __metadata__: null, w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32Bytes(3));
    expect(loadSafetensorsMetadata(p)).toEqual({});
    expect(loadSafetensors(p).w.toArray()).toEqual([3]);
  });

  test('U32 and U64 load as int64, F8_E4M3 and F8_E5M2 as float32, with exact values', () => {
    const u32 = new Uint32Array([0, 1, 2 ** 31, 2 ** 32 - 1]);
    const u64 = new BigUint64Array([0n, 5n, 2n ** 63n - 1n]);
    // OCP float8 (PyTorch float8_e4m3fn / float8_e5m2): bytes and their values, worked out by hand.
    const e4m3: [number, number][] = [[0x38, 1], [0xb8, -1], [0x7e, 448], [0x01, 2 ** -9], [0x08, 2 ** -6], [0x80, -0], [0x7f, NaN], [0x3c, 1.5]];
    const e5m2: [number, number][] = [[0x3c, 1], [0x7b, 57344], [0x7c, Infinity], [0xfc, -Infinity], [0x7d, NaN], [0x01, 2 ** -16], [0x3e, 1.5]];
    const data = Buffer.concat([
      Buffer.from(u64.buffer),
      Buffer.from(u32.buffer),
      Buffer.from(e4m3.map(([b]) => b)),
      Buffer.from(e5m2.map(([b]) => b)),
    ]);
    const p = writeRaw(
      'unsigned-f8.safetensors',
      {
        big: { dtype: 'U64', shape: [3], data_offsets: [0, 24] },
        u: { dtype: 'U32', shape: [2, 2], data_offsets: [24, 40] },
        a: { dtype: 'F8_E4M3', shape: [8], data_offsets: [40, 48] },
        b: { dtype: 'F8_E5M2', shape: [7], data_offsets: [48, 55] },
      },
      data,
    );
    const h = readSafetensorsHeader(p);
    expect(h.entries.map((e) => [e.name, e.format, e.dtype])).toEqual([
      ['big', 'U64', 'int64'],
      ['u', 'U32', 'int64'],
      ['a', 'F8_E4M3', 'float32'],
      ['b', 'F8_E5M2', 'float32'],
    ]);
    const got = loadSafetensors(p);
    expect([got.u.dtype, got.u.shape, values(got.u)]).toEqual(['int64', [2, 2], ['0', '1', '2147483648', '4294967295']]);
    expect([got.big.dtype, values(got.big)]).toEqual(['int64', ['0', '5', '9223372036854775807']]);
    expect([got.a.dtype, values(got.a)]).toEqual(['float32', e4m3.map(([, v]) => v)]);
    expect([got.b.dtype, values(got.b)]).toEqual(['float32', e5m2.map(([, v]) => v)]);
  });

  test('a U64 value beyond int64 is refused, naming the tensor', () => {
    const p = writeRaw('u64-big.safetensors', { n: { dtype: 'U64', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(new BigUint64Array([1n, 2n ** 63n]).buffer));
    const e = expectErrorMatching(() => loadSafetensors(p), /tensor "n" \(U64\) holds 9223372036854775808 at element 1, which does not fit int64/);
    expect(e.message).toContain(p);
    expect(readSafetensorsHeader(p).entries[0].dtype).toBe('int64'); // the header alone is fine
  });

  test('a file that does not exist, or a directory', () => {
    expectErrorMatching(() => loadSafetensors(file('nope.safetensors')), /ENOENT/);
    fs.mkdirSync(file('folder.safetensors'));
    expectRefused(file('folder.safetensors'), /not a regular file/);
  });

  test('well-formed hand-written files do load (the checks are not too strict)', () => {
    // Tensors listed out of order, unpadded header, zero-size tensors at shared offsets.
    const p = writeRaw(
      'hand-ok.safetensors',
      {
        b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
        z1: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
        a: { dtype: 'I32', shape: [1], data_offsets: [0, 4] },
        z2: { dtype: 'BOOL', shape: [2, 0], data_offsets: [8, 8] },
        __metadata__: { k: 'v' },
      },
      new Uint8Array([...new Uint8Array(new Int32Array([-3]).buffer), ...f32Bytes(1.5)]),
    );
    const got = loadSafetensors(p);
    expect(Object.keys(got).sort()).toEqual(['a', 'b', 'z1', 'z2']);
    expect(got.a.toArray()).toEqual([-3]);
    expect(got.b.toArray()).toEqual([1.5]);
    expect(got.z2.shape).toEqual([2, 0]);
    expect(loadSafetensorsMetadata(p)).toEqual({ k: 'v' });
  });
});

// ---- Compatibility with an independent Python implementation of the format -------------------

/** Writes tensors the way the reference writer lays them out (element size descending, then name). */
const PY_WRITER = `
import struct, hashlib, math
import torch
torch.manual_seed(1234)
FORMAT = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.float64: 'F64',
          torch.int32: 'I32', torch.int64: 'I64', torch.uint8: 'U8', torch.bool: 'BOOL'}
tensors = {
    'f32': torch.randn(3, 4) * 100,
    'f16': torch.randn(2, 5).half(),
    'bf16': torch.randn(7).bfloat16(),
    'f64': torch.randn(2, 2, dtype=torch.float64),
    'i32': torch.tensor([-2**31, -1, 0, 1, 2**31 - 1], dtype=torch.int32),
    'i64': torch.tensor([-2**63, -1, 2**53 + 1, 2**63 - 1], dtype=torch.int64),
    'u8': torch.tensor([[0, 1, 2], [127, 128, 255]], dtype=torch.uint8),
    'flags': torch.tensor([True, False, False, True]),
    'scalar': torch.tensor(-2.75),
    'empty': torch.zeros(0, 3),
    'lm_head.weight.\u00fc': torch.randn(256, 512),
    'specials': torch.tensor([float('nan'), float('inf'), float('-inf'), -0.0, 1e-45]),
}
def raw(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()
def enc(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v
def values(t):
    flat = t.flatten()
    if t.dtype == torch.int64:
        return [str(v) for v in flat.tolist()]
    if t.dtype in (torch.float16, torch.bfloat16):
        flat = flat.double()  # exact
    return [enc(v) for v in flat.tolist()]
header = {'__metadata__': {'format': 'pt', 'written_by': 'python \u2713'}}
data = bytearray()
for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
    t = tensors[name]
    b = raw(t)
    header[name] = {'dtype': FORMAT[t.dtype], 'shape': list(t.shape), 'data_offsets': [len(data), len(data) + len(b)]}
    data += b
h = json.dumps(header, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
h += b' ' * ((8 - len(h) % 8) % 8)
with open(INP['path'], 'wb') as f:
    f.write(struct.pack('<Q', len(h)))
    f.write(h)
    f.write(bytes(data))
out = {}
for name, t in tensors.items():
    out[name] = {'dtype': FORMAT[t.dtype], 'shape': list(t.shape), 'sha256': hashlib.sha256(raw(t)).hexdigest()}
    if t.numel() <= 64:
        out[name]['values'] = values(t)
print(json.dumps({'tensors': out, 'metadata': header['__metadata__']}))
`;

/** Reads a file from the spec alone, checking the layout rules, and reports what it found. */
const PY_READER = `
import struct, hashlib, math
import numpy as np
import torch
DT = {'F32': (torch.float32, np.float32), 'F16': (torch.float16, np.float16), 'BF16': (torch.bfloat16, np.int16),
      'F64': (torch.float64, np.float64), 'I32': (torch.int32, np.int32), 'I64': (torch.int64, np.int64),
      'U8': (torch.uint8, np.uint8), 'BOOL': (torch.bool, np.bool_)}
buf = open(INP['path'], 'rb').read()
(n,) = struct.unpack('<Q', buf[:8])
hb = buf[8:8 + n]
text = hb.decode('utf-8')
header = json.loads(text)
data = buf[8 + n:]
meta = header.pop('__metadata__', None)
def enc(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v
tensors, spans = {}, []
for name, info in header.items():
    tdt, ndt = DT[info['dtype']]
    b, e = info['data_offsets']
    shape = info['shape']
    assert (e - b) == int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=tdt).element_size(), name
    arr = np.frombuffer(data[b:e], dtype=ndt).copy()
    t = torch.from_numpy(arr)
    if tdt == torch.bfloat16:
        t = t.view(torch.bfloat16)
    t = t.reshape(shape)
    flat = t.flatten()
    if tdt == torch.int64:
        vals = [str(v) for v in flat.tolist()]
    else:
        if tdt in (torch.float16, torch.bfloat16):
            flat = flat.double()
        vals = [enc(v) for v in flat.tolist()]
    tensors[name] = {'dtype': info['dtype'], 'shape': list(t.shape), 'torch_dtype': str(t.dtype), 'values': vals}
    spans.append((b, e))
spans.sort()
contiguous = all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
# torch's own rounding of the source doubles, to compare with Tensor.from's.
rounded = {}
for name, spec in INP.get('round', {}).items():
    t = torch.tensor(spec['values'], dtype=torch.float64).to(getattr(torch, spec['dtype']))
    rounded[name] = [enc(v) for v in t.double().tolist()]
print(json.dumps({
    'header_length': n,
    'header_starts_with_brace': text.startswith('{'),
    'header_padding_is_spaces': text.rstrip(' ').endswith('}'),
    'covers_data_exactly': (not spans) or (spans[0][0] == 0 and contiguous and spans[-1][1] == len(data)),
    'metadata': meta,
    'tensors': tensors,
    'rounded': rounded,
}))
`;

/** Python's JSON for non-finite floats ('nan', 'inf', '-inf') back to numbers. */
function decode(v: number | string, dtype: string): number | string {
  if (dtype === 'I64' || typeof v === 'number') return v;
  return v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v;
}

interface PyTensor {
  dtype: string;
  shape: number[];
  sha256?: string;
  values?: (number | string)[];
  torch_dtype?: string;
}

describe('compatibility with an independent Python implementation (torch)', () => {
  test('a file written by Python loads with the exact values', () => {
    requireTorchPython();
    const p = file('from-python.safetensors');
    const py = runPython<{ tensors: Record<string, PyTensor>; metadata: Record<string, string> }>(PY_WRITER, { path: p });
    const got = loadSafetensors(p);
    expect(Object.keys(got).sort()).toEqual(Object.keys(py.tensors).sort());
    for (const [name, want] of Object.entries(py.tensors)) {
      const t = got[name];
      expect([name, FORMAT[t.dtype], t.shape]).toEqual([name, want.dtype, want.shape]);
      expect([name, sha256(t.native.bytes())]).toEqual([name, want.sha256]);
      if (want.values) {
        expect([name, values(t)]).toEqual([name, want.values.map((v) => decode(v, want.dtype))]);
      }
    }
    // The big tensor through data(): its float32 bytes are the ones Python wrote.
    expect(sha256(got['lm_head.weight.ü'].data())).toBe(py.tensors['lm_head.weight.ü'].sha256);
    expect(values(got.specials)).toEqual([NaN, Infinity, -Infinity, -0, 1e-45].map(Math.fround));
    expect(values(got.i64)).toEqual(['-9223372036854775808', '-1', '9007199254740993', '9223372036854775807']);
    expect(got.scalar.shape).toEqual([]);
    expect(got.scalar.item()).toBe(-2.75);
    expect(got.empty.shape).toEqual([0, 3]);
    expect(loadSafetensorsMetadata(p)).toEqual({ format: 'pt', written_by: 'python ✓' });
    expect(py.metadata).toEqual({ format: 'pt', written_by: 'python ✓' });
  });

  test('a file written here is read correctly by Python', () => {
    requireTorchPython();
    const src = sampleTensors();
    const big = new Float32Array(128 * 300).map((_, i) => Math.sin(i) * 1000);
    src['big.weight'] = Tensor.from(big, [128, 300]);
    const metadata = { format: 'pt', 'ключ': 'значение ✓', json: '{"a": [1, 2]}' };
    const p = file('to-python.safetensors');

    // Source doubles for the rounding dtypes: Python rounds them with torch, independently.
    const roundSrc = [0.1, 1 / 3, -2 / 3, Math.PI, 1e-5, 6e-8, 65519.99, 1e20, -3e-39];
    for (let i = 0; i < 100; i++) roundSrc.push(Math.sin(i * 1.618) * 10 ** ((i % 16) - 8));
    const rounding: Dtype[] = ['float32', 'float16', 'bfloat16'];
    for (const dtype of rounding) src[`round_${dtype}`] = Tensor.from(roundSrc, undefined, { dtype });
    saveSafetensors(p, src, metadata);

    const py = runPython<{
      header_length: number;
      header_starts_with_brace: boolean;
      header_padding_is_spaces: boolean;
      covers_data_exactly: boolean;
      metadata: Record<string, string> | null;
      tensors: Record<string, PyTensor>;
      rounded: Record<string, (number | string)[]>;
    }>(PY_READER, {
      path: p,
      round: Object.fromEntries(rounding.map((dtype) => [`round_${dtype}`, { dtype, values: roundSrc }])),
    });
    expect(py.header_length % 8).toBe(0);
    expect(py.header_starts_with_brace).toBe(true);
    expect(py.header_padding_is_spaces).toBe(true);
    expect(py.covers_data_exactly).toBe(true);
    expect(py.metadata).toEqual(metadata);
    expect(Object.keys(py.tensors).sort()).toEqual(Object.keys(src).sort());
    const torchName: Record<Dtype, string> = {
      float32: 'torch.float32',
      float16: 'torch.float16',
      bfloat16: 'torch.bfloat16',
      float64: 'torch.float64',
      int32: 'torch.int32',
      int64: 'torch.int64',
      uint8: 'torch.uint8',
      bool: 'torch.bool',
    };
    for (const [name, t] of Object.entries(src)) {
      const r = py.tensors[name];
      expect([name, r.dtype, r.torch_dtype, r.shape]).toEqual([name, FORMAT[t.dtype], torchName[t.dtype], t.shape]);
      expect([name, (r.values ?? []).map((v) => decode(v, r.dtype))]).toEqual([name, values(t)]);
    }
    // Spot checks that do not go through our own reader.
    expect(py.tensors.f16.values!.slice(0, 3)).toEqual([0.0999755859375, -0, 65504]);
    expect(py.tensors.bf16.values![0]).toBe(0.333984375);
    expect(py.tensors.i64.values).toEqual(['-9223372036854775808', '-1', '0', '9007199254740993', '9223372036854775807']);
    expect(py.tensors['big.weight'].values).toEqual(Array.from(big));
    // Tensor.from rounds float32/float16/bfloat16 exactly as torch does.
    for (const dtype of rounding) {
      const name = `round_${dtype}`;
      expect([name, py.rounded[name].map((v) => decode(v, 'F64'))]).toEqual([name, values(src[name])]);
    }
  });
});
