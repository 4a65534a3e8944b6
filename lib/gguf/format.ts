// The GGUF file format, both ways (the one module that owns it): the header (magic "GGUF",
// version 3, counts), the metadata key/value pairs and their types, the tensor infos, the
// alignment (general.alignment, default 32) and the tensor data in F32, F16, BF16 and Q8_0 (blocks
// of 32 values: one float16 scale, then 32 int8). Written from the GGUF specification (ggml's
// docs/gguf.md); llama.cpp's loader (ggml/src/gguf.cpp) reads what this writes. Dimensions are
// stored fastest axis first (ggml's ne[0] is a row's length): callers give and get shapes in
// PyTorch's order (rows last), and this module reverses them. Loads no addon.
import * as fs from 'fs';
import * as path from 'path';

import { fsyncPath, sideName, writeAll } from '../util/files';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** The metadata value types and their codes in the file. */
export const GGUF_VALUE_TYPES = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7, string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
} as const;
export type GgufScalarType = Exclude<keyof typeof GGUF_VALUE_TYPES, 'array'>;
const TYPE_NAMES = Object.fromEntries(Object.entries(GGUF_VALUE_TYPES).map(([k, v]) => [v, k])) as Record<number, keyof typeof GGUF_VALUE_TYPES>;

/** A metadata value with its type: numbers for the number types, bigint for the 64-bit integers. */
export type GgufValue =
  | { type: 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64'; value: number }
  | { type: 'uint64' | 'int64'; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: GgufScalarType; value: (number | bigint | boolean | string)[] };

/** The tensor types this module writes and reads, with their codes (ggml_type) in the file. */
export const GGUF_TENSOR_TYPES = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type GgufTensorType = keyof typeof GGUF_TENSOR_TYPES;
const TENSOR_TYPE_NAMES = Object.fromEntries(Object.entries(GGUF_TENSOR_TYPES).map(([k, v]) => [v, k])) as Record<number, GgufTensorType>;

/** Values per Q8_0 block, and the block's bytes (a float16 scale and 32 int8). */
export const Q8_0_BLOCK = 32;
const Q8_0_BYTES = 34;

/** A tensor to write: its name, shape in PyTorch's order (rows last), type, and float32 values in row-major order (fetched when written). */
export interface GgufTensorInput {
  name: string;
  shape: readonly number[];
  type: GgufTensorType;
  data: () => Float32Array;
}

export interface GgufWriteOptions {
  /** Bytes each tensor's data starts on, a power of 2 (written as general.alignment when not 32). Default 32. */
  alignment?: number;
}

/** A tensor's entry as read from a file. */
export interface GgufTensorInfo {
  name: string;
  /** Shape in PyTorch's order (rows last): the file's dimensions reversed. */
  shape: number[];
  type: GgufTensorType;
  /** Where its data starts, counted from the start of the file. */
  offset: number;
  /** Bytes of data. */
  bytes: number;
}

export interface GgufFile {
  file: string;
  version: number;
  alignment: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  /** Where the data section starts. */
  dataOffset: number;
}

/** Bytes `count` values of `type` take (a Q8_0 tensor's rows are whole blocks). */
export function tensorBytes(type: GgufTensorType, count: number): number {
  return type === 'F32' ? count * 4 : type === 'Q8_0' ? (count / Q8_0_BLOCK) * Q8_0_BYTES : count * 2;
}

const pad = (n: number, alignment: number): number => Math.ceil(n / alignment) * alignment;

// ---------------------------------------------------------------------------------------------
// Number conversions

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> float16 bits, rounding to nearest even (as numpy, torch and ggml's F16C path); overflow gives infinity. */
export function toFloat16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // a carry into the exponent is right (up to infinity)
  return sign | h;
}

/** float16 bits -> number. */
export function fromFloat16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** float32 -> bfloat16 bits, rounding to nearest even (NaN stays a quiet NaN), as ggml's fp32_to_bf16. */
export function toBfloat16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 64) & 0xffff;
  return ((x + (0x7fff + ((x >>> 16) & 1))) >>> 16) & 0xffff;
}

export function fromBfloat16Bits(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/**
 * Encodes float32 values (row-major, rows of `rowLength`) as `type`. Q8_0 (ggml's
 * quantize_row_q8_0_ref): per block of 32, d = max|x| / 127, q = round(x / d) half away from zero,
 * stored as float16(d) then the 32 int8.
 */
export function encodeTensor(type: GgufTensorType, values: Float32Array, rowLength: number): Uint8Array {
  const n = values.length;
  if (type === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + n * 4));
  if (type === 'F16' || type === 'BF16') {
    const out = new Uint16Array(n);
    const conv = type === 'F16' ? toFloat16Bits : toBfloat16Bits;
    for (let i = 0; i < n; i++) out[i] = conv(values[i]);
    return new Uint8Array(out.buffer);
  }
  if (rowLength % Q8_0_BLOCK !== 0) throw new RangeError(`Q8_0 needs rows whose length is a multiple of ${Q8_0_BLOCK}, got ${rowLength}`);
  const blocks = n / Q8_0_BLOCK;
  const out = Buffer.alloc(blocks * Q8_0_BYTES);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(values[at + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    const o = b * Q8_0_BYTES;
    out.writeUInt16LE(toFloat16Bits(d), o);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const x = Math.fround(values[at + j] * id);
      out.writeInt8(x < 0 ? -Math.round(-x) : Math.round(x), o + 2 + j);
    }
  }
  return out;
}

/** Decodes a tensor's bytes to float32 values. */
export function decodeTensor(type: GgufTensorType, bytes: Uint8Array, count: number): Float32Array {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  if (type === 'F32') for (let i = 0; i < count; i++) out[i] = buf.readFloatLE(i * 4);
  else if (type === 'F16') for (let i = 0; i < count; i++) out[i] = fromFloat16Bits(buf.readUInt16LE(i * 2));
  else if (type === 'BF16') for (let i = 0; i < count; i++) out[i] = fromBfloat16Bits(buf.readUInt16LE(i * 2));
  else {
    for (let b = 0; b < count / Q8_0_BLOCK; b++) {
      const o = b * Q8_0_BYTES;
      const d = fromFloat16Bits(buf.readUInt16LE(o));
      for (let j = 0; j < Q8_0_BLOCK; j++) out[b * Q8_0_BLOCK + j] = d * buf.readInt8(o + 2 + j);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Little-endian bytes, appended. */
class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  scalar(type: GgufScalarType, v: number | bigint | boolean | string, key: string): void {
    const b = Buffer.alloc(8);
    const bad = (what: string): never => {
      throw new RangeError(`GGUF metadata ${key}: ${JSON.stringify(typeof v === 'bigint' ? String(v) : v)} is not ${what}`);
    };
    const int = (lo: number, hi: number): number => (typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi ? v : bad(`a ${type} (${lo}..${hi})`));
    switch (type) {
      case 'uint8': b.writeUInt8(int(0, 255)); return this.push(b.subarray(0, 1));
      case 'int8': b.writeInt8(int(-128, 127)); return this.push(b.subarray(0, 1));
      case 'uint16': b.writeUInt16LE(int(0, 65535)); return this.push(b.subarray(0, 2));
      case 'int16': b.writeInt16LE(int(-32768, 32767)); return this.push(b.subarray(0, 2));
      case 'uint32': b.writeUInt32LE(int(0, 2 ** 32 - 1)); return this.push(b.subarray(0, 4));
      case 'int32': b.writeInt32LE(int(-(2 ** 31), 2 ** 31 - 1)); return this.push(b.subarray(0, 4));
      case 'float32':
        if (typeof v !== 'number' || Number.isNaN(v)) bad('a number');
        b.writeFloatLE(v as number);
        return this.push(b.subarray(0, 4));
      case 'float64':
        if (typeof v !== 'number' || Number.isNaN(v)) bad('a number');
        b.writeDoubleLE(v as number);
        return this.push(b);
      case 'bool':
        if (typeof v !== 'boolean') bad('true or false');
        return this.push(Buffer.from([v ? 1 : 0]));
      case 'string':
        if (typeof v !== 'string') bad('a string');
        return this.string(v as string);
      case 'uint64':
      case 'int64': {
        if (typeof v !== 'bigint' && !(typeof v === 'number' && Number.isSafeInteger(v))) bad(`a ${type}`);
        const big = BigInt(v as number | bigint);
        if (type === 'uint64' ? big < 0n || big >= 2n ** 64n : big < -(2n ** 63n) || big >= 2n ** 63n) bad(`a ${type}`);
        if (type === 'uint64') b.writeBigUInt64LE(big);
        else b.writeBigInt64LE(big);
        return this.push(b);
      }
    }
  }
  value(key: string, v: GgufValue): void {
    this.u32(GGUF_VALUE_TYPES[v.type]);
    if (v.type !== 'array') return this.scalar(v.type, v.value, key);
    if (!Object.hasOwn(GGUF_VALUE_TYPES, v.itemType) || (v.itemType as string) === 'array') throw new RangeError(`GGUF metadata ${key}: array item type ${JSON.stringify(v.itemType)} is not a scalar type`);
    this.u32(GGUF_VALUE_TYPES[v.itemType]);
    this.u64(v.value.length);
    for (const item of v.value) this.scalar(v.itemType, item, key);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

/** Checks a tensor to write: a name llama.cpp accepts, whole positive dimensions, values that fit the shape and type. */
function checkTensor(t: GgufTensorInput, seen: Set<string>): void {
  if (typeof t.name !== 'string' || t.name.length === 0 || Buffer.byteLength(t.name) >= 64) {
    throw new RangeError(`GGUF tensor name ${JSON.stringify(t.name)} must be 1 to 63 bytes (ggml's GGML_MAX_NAME)`);
  }
  if (seen.has(t.name)) throw new RangeError(`GGUF tensor ${t.name} is given twice`);
  seen.add(t.name);
  if (!Array.isArray(t.shape) || t.shape.length < 1 || t.shape.length > 4 || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw new RangeError(`GGUF tensor ${t.name}: shape must be 1 to 4 whole dimensions >= 1, got ${JSON.stringify(t.shape)}`);
  }
  if (!Object.hasOwn(GGUF_TENSOR_TYPES, t.type)) throw new RangeError(`GGUF tensor ${t.name}: type must be one of ${Object.keys(GGUF_TENSOR_TYPES).join(', ')}, got ${JSON.stringify(t.type)}`);
  const row = t.shape[t.shape.length - 1];
  if (t.type === 'Q8_0' && row % Q8_0_BLOCK !== 0) throw new RangeError(`GGUF tensor ${t.name}: Q8_0 needs rows whose length is a multiple of ${Q8_0_BLOCK}, got ${row}`);
}

/**
 * Writes a GGUF file: header, metadata (in the order given), tensor infos, then each tensor's
 * data at its aligned offset. The file is written beside its place and renamed over it when
 * complete and flushed: a failure leaves no partial file (and an older file at that path whole).
 */
export function writeGguf(file: string, metadata: readonly (readonly [string, GgufValue])[], tensors: readonly GgufTensorInput[], options: GgufWriteOptions = {}): void {
  const alignment = options.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isSafeInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0 || alignment > 2 ** 30) {
    throw new RangeError(`GGUF alignment must be a power of 2, got ${alignment}`);
  }
  const keys = new Set<string>();
  const kv: [string, GgufValue][] = [];
  for (const [key, value] of metadata) {
    if (typeof key !== 'string' || key.length === 0) throw new RangeError(`GGUF metadata key must be a non-empty string, got ${JSON.stringify(key)}`);
    if (keys.has(key)) throw new RangeError(`GGUF metadata key ${key} is given twice`);
    if (key === 'general.alignment') throw new RangeError('GGUF metadata general.alignment is written from options.alignment');
    keys.add(key);
    kv.push([key, value]);
  }
  if (alignment !== GGUF_DEFAULT_ALIGNMENT) kv.push(['general.alignment', { type: 'uint32', value: alignment }]);
  const seen = new Set<string>();
  tensors.forEach((t) => checkTensor(t, seen));

  const head = new ByteSink();
  head.u32(GGUF_MAGIC);
  head.u32(GGUF_VERSION);
  head.u64(tensors.length);
  head.u64(kv.length);
  for (const [key, value] of kv) {
    head.string(key);
    head.value(key, value);
  }
  let offset = 0;
  const counts = tensors.map((t) => t.shape.reduce((a, b) => a * b, 1));
  tensors.forEach((t, i) => {
    head.string(t.name);
    head.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) head.u64(d);
    head.u32(GGUF_TENSOR_TYPES[t.type]);
    head.u64(offset);
    offset += pad(tensorBytes(t.type, counts[i]), alignment);
  });
  const header = head.bytes();

  const tmp = sideName(file, 'tmp');
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    writeAll(fd, header, file);
    const zeros = Buffer.alloc(alignment);
    const fill = (n: number): void => {
      if (n % alignment) writeAll(fd!, zeros.subarray(0, alignment - (n % alignment)), file);
    };
    fill(header.length);
    tensors.forEach((t, i) => {
      const values = t.data();
      if (!(values instanceof Float32Array) || values.length !== counts[i]) {
        throw new RangeError(`GGUF tensor ${t.name}: expected ${counts[i]} float32 values for shape ${JSON.stringify(t.shape)}, got ${values instanceof Float32Array ? values.length : typeof values}`);
      }
      const bytes = encodeTensor(t.type, values, t.shape[t.shape.length - 1]);
      writeAll(fd!, bytes, file);
      fill(bytes.length);
    });
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
    fsyncPath(path.dirname(path.resolve(file)));
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Most metadata entries, tensors and array items read before a file is refused (llama.cpp's limit is 2^30 array items). */
const MAX_COUNT = 2 ** 30;

/** Reads a file's bytes in order, a window at a time, checking each read stays inside the file. */
class ByteSource {
  private buf = Buffer.alloc(0);
  private bufAt = 0; // file offset of buf[0]
  pos = 0;
  constructor(private readonly fd: number, readonly size: number, private readonly file: string) {}
  fail(what: string): never {
    throw new Error(`${this.file} is not a valid GGUF file: ${what} (at byte ${this.pos} of ${this.size})`);
  }
  take(n: number, what: string): Buffer {
    if (n > this.size - this.pos) this.fail(`${what} runs past the end of the file`);
    if (this.pos < this.bufAt || this.pos + n > this.bufAt + this.buf.length) {
      const len = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
      const b = Buffer.alloc(len);
      let got = 0;
      while (got < len) {
        const r = fs.readSync(this.fd, b, got, len - got, this.pos + got);
        if (r <= 0) this.fail(`${what}: the file ended early`);
        got += r;
      }
      this.buf = b;
      this.bufAt = this.pos;
    }
    const at = this.pos - this.bufAt;
    this.pos += n;
    return this.buf.subarray(at, at + n);
  }
  u32(what: string): number {
    return this.take(4, what).readUInt32LE(0);
  }
  u64(what: string): number {
    const v = this.take(8, what).readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} is ${v}, more than this reader handles`);
    return Number(v);
  }
  string(what: string): string {
    const n = this.u64(`${what}'s length`);
    return this.take(n, what).toString('utf8');
  }
  scalar(type: GgufScalarType, what: string): number | bigint | boolean | string {
    switch (type) {
      case 'uint8': return this.take(1, what).readUInt8(0);
      case 'int8': return this.take(1, what).readInt8(0);
      case 'uint16': return this.take(2, what).readUInt16LE(0);
      case 'int16': return this.take(2, what).readInt16LE(0);
      case 'uint32': return this.take(4, what).readUInt32LE(0);
      case 'int32': return this.take(4, what).readInt32LE(0);
      case 'float32': return this.take(4, what).readFloatLE(0);
      case 'float64': return this.take(8, what).readDoubleLE(0);
      case 'uint64': return this.take(8, what).readBigUInt64LE(0);
      case 'int64': return this.take(8, what).readBigInt64LE(0);
      case 'bool': {
        const b = this.take(1, what).readUInt8(0);
        if (b > 1) this.fail(`${what} is a bool of value ${b}`);
        return b === 1;
      }
      case 'string': return this.string(what);
    }
  }
}

function valueType(code: number, src: ByteSource, what: string): keyof typeof GGUF_VALUE_TYPES {
  const t = TYPE_NAMES[code];
  if (t === undefined) src.fail(`${what} has value type ${code}, which is none of GGUF's`);
  return t;
}

/** Reads a GGUF file's header, metadata and tensor infos (not the tensor data: readGgufTensor). */
export function readGguf(file: string): GgufFile {
  const fd = fs.openSync(file, 'r');
  try {
    const src: ByteSource = new ByteSource(fd, fs.fstatSync(fd).size, file);
    const magic = src.u32('the magic number');
    if (magic !== GGUF_MAGIC) src.fail(`it starts with 0x${magic.toString(16).padStart(8, '0')}, not "GGUF"`);
    const version = src.u32('the version');
    if (version !== 2 && version !== 3) src.fail(`version ${version} is not 2 or 3`);
    const nTensors = src.u64('the tensor count');
    const nKv = src.u64('the metadata count');
    if (nTensors > MAX_COUNT || nKv > MAX_COUNT) src.fail(`${nTensors} tensors and ${nKv} metadata entries are more than it can hold`);
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < nKv; i++) {
      const key = src.string(`metadata key ${i}`);
      if (metadata.has(key)) src.fail(`metadata key ${key} appears twice`);
      const type = valueType(src.u32(`${key}'s type`), src, key);
      if (type === 'array') {
        const itemType = valueType(src.u32(`${key}'s item type`), src, key);
        if (itemType === 'array') src.fail(`${key} is an array of arrays, which this reader does not read`);
        const n = src.u64(`${key}'s length`);
        if (n > MAX_COUNT) src.fail(`${key} has ${n} items`);
        const items: (number | bigint | boolean | string)[] = [];
        for (let j = 0; j < n; j++) items.push(src.scalar(itemType, `${key}[${j}]`));
        metadata.set(key, { type, itemType, value: items });
      } else metadata.set(key, { type, value: src.scalar(type, key) } as GgufValue);
    }
    const al = metadata.get('general.alignment');
    let alignment = GGUF_DEFAULT_ALIGNMENT;
    if (al !== undefined) {
      if (al.type !== 'uint32' || al.value === 0 || (al.value & (al.value - 1)) !== 0) src.fail(`general.alignment must be a uint32 power of 2, got ${al.type} ${String(al.value)}`);
      alignment = al.value;
    }
    const infos: { name: string; shape: number[]; type: GgufTensorType; rel: number; bytes: number }[] = [];
    const names = new Set<string>();
    for (let i = 0; i < nTensors; i++) {
      const name = src.string(`tensor ${i}'s name`);
      if (names.has(name)) src.fail(`tensor ${name} appears twice`);
      names.add(name);
      const nDims = src.u32(`${name}'s dimension count`);
      if (nDims < 1 || nDims > 4) src.fail(`tensor ${name} has ${nDims} dimensions`);
      const dims: number[] = [];
      for (let j = 0; j < nDims; j++) dims.push(src.u64(`${name}'s dimension ${j}`));
      const code = src.u32(`${name}'s type`);
      const type = TENSOR_TYPE_NAMES[code];
      if (type === undefined) src.fail(`tensor ${name} has type ${code}, which this reader does not decode (it reads ${Object.entries(GGUF_TENSOR_TYPES).map(([k, v]) => `${k} ${v}`).join(', ')})`);
      const count = dims.reduce((a, b) => a * b, 1);
      if (!Number.isSafeInteger(count)) src.fail(`tensor ${name} has too many values`);
      if (type === 'Q8_0' && dims[0] % Q8_0_BLOCK !== 0) src.fail(`Q8_0 tensor ${name} has rows of ${dims[0]} values, not whole blocks of ${Q8_0_BLOCK}`);
      const rel = src.u64(`${name}'s offset`);
      if (rel % alignment !== 0) src.fail(`tensor ${name}'s offset ${rel} is not a multiple of the alignment ${alignment}`);
      infos.push({ name, shape: dims.reverse(), type, rel, bytes: tensorBytes(type, count) });
    }
    const dataOffset = pad(src.pos, alignment);
    const tensors = infos.map((t) => {
      if (dataOffset + t.rel + t.bytes > src.size) src.fail(`tensor ${t.name}'s data (${t.bytes} bytes at ${dataOffset + t.rel}) runs past the end of the file`);
      return { name: t.name, shape: t.shape, type: t.type, offset: dataOffset + t.rel, bytes: t.bytes };
    });
    return { file, version, alignment, metadata, tensors, dataOffset };
  } finally {
    fs.closeSync(fd);
  }
}

/** One tensor's values, decoded to float32 (row-major, in `info.shape`). */
export function readGgufTensor(gguf: GgufFile, name: string): Float32Array {
  const info = gguf.tensors.find((t) => t.name === name);
  if (!info) throw new Error(`${gguf.file} has no tensor ${name}`);
  const fd = fs.openSync(gguf.file, 'r');
  try {
    const bytes = Buffer.alloc(info.bytes);
    let got = 0;
    while (got < info.bytes) {
      const r = fs.readSync(fd, bytes, got, info.bytes - got, info.offset + got);
      if (r <= 0) throw new Error(`${gguf.file}: tensor ${name}'s data ends early`);
      got += r;
    }
    return decodeTensor(info.type, bytes, info.shape.reduce((a, b) => a * b, 1));
  } finally {
    fs.closeSync(fd);
  }
}

/** A metadata value as a plain JS value (numbers, bigints, booleans, strings, arrays of them), or undefined. */
export function metadataValue(gguf: GgufFile, key: string): number | bigint | boolean | string | (number | bigint | boolean | string)[] | undefined {
  return gguf.metadata.get(key)?.value;
}
