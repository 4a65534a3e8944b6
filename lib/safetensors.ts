// The safetensors format: 8-byte little-endian header length, a JSON header, then raw little-endian
// tensor data. Files written by Python's `safetensors` load here, and ours load there.
import * as fs from 'fs';
import * as os from 'os';

import { Dtype, Tensor } from './tensor';

const FORMAT_TO_DTYPE: Record<string, Dtype> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  F64: 'float64',
  I32: 'int32',
  I64: 'int64',
  U8: 'uint8',
  BOOL: 'bool',
};
const DTYPE_TO_FORMAT: Record<Dtype, string> = Object.fromEntries(
  Object.entries(FORMAT_TO_DTYPE).map(([k, v]) => [v, k]),
) as Record<Dtype, string>;
const ELEMENT_SIZE: Record<Dtype, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int32: 4,
  int64: 8,
  uint8: 1,
  bool: 1,
};

/** Headers larger than this are refused (as the reference implementation does). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Byte offsets [begin, end) relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** Byte position of the data section in the file (8 + header length). */
  dataStart: number;
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
}

/** Sets an own, enumerable property (plain assignment of "__proto__" would change the prototype instead). */
function defineEntry(obj: object, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function fail(path: string, what: string): never {
  throw new Error(`safetensors file ${path}: ${what}`);
}

function checkEndianness(): void {
  if (os.endianness() !== 'LE') throw new Error('rlora reads and writes safetensors only on little-endian machines');
}

/** Reads and validates the header of a safetensors file without reading its tensors. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  checkEndianness();
  const fd = fs.openSync(path, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) fail(path, `truncated: ${size} bytes, a file needs at least the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(path, `header length ${headerLen} is over the ${MAX_HEADER_BYTES}-byte limit`);
    const n = Number(headerLen);
    if (8 + n > size) fail(path, `header length ${n} runs past the end of the file (${size} bytes)`);
    const headerBuf = Buffer.alloc(n);
    fs.readSync(fd, headerBuf, 0, n, 8);
    return parseHeader(path, headerBuf.toString('utf8'), 8 + n, size - 8 - n);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(path: string, text: string, dataStart: number, dataSize: number): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail(path, 'header must be a JSON object');
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, info] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof info !== 'object' || info === null) fail(path, '__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(path, `__metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
        defineEntry(metadata, k, v);
      }
      continue;
    }
    const e = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) fail(path, `entry "${name}" must be an object`);
    const dtype = typeof e.dtype === 'string' ? FORMAT_TO_DTYPE[e.dtype] : undefined;
    if (!dtype) {
      fail(path, `tensor "${name}" has unsupported dtype ${JSON.stringify(e.dtype)}; supported: ${Object.keys(FORMAT_TO_DTYPE).join(', ')}`);
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(path, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}; expected an array of non-negative integers`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
      fail(path, `tensor "${name}" has invalid data_offsets ${JSON.stringify(off)}; expected [begin, end] with 0 <= begin <= end`);
    }
    const need = (shape as number[]).reduce((a, b) => a * b, 1) * ELEMENT_SIZE[dtype];
    if (off[1] - off[0] !== need) {
      fail(path, `tensor "${name}" (${e.dtype} [${(shape as number[]).join(', ')}]) needs ${need} bytes but data_offsets ${JSON.stringify(off)} span ${off[1] - off[0]}`);
    }
    if (off[1] > dataSize) {
      fail(path, `tensor "${name}" data_offsets ${JSON.stringify(off)} are out of range: the data section has ${dataSize} bytes`);
    }
    entries.push({ name, dtype, shape: shape as number[], dataOffsets: [off[0], off[1]] });
  }
  // The data section is covered exactly once, in order, as the reference implementation requires.
  const sorted = [...entries].sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let end = 0;
  for (const e of sorted) {
    if (e.dataOffsets[0] < end) fail(path, `tensor "${e.name}" data_offsets ${JSON.stringify(e.dataOffsets)} overlap another tensor (which ends at ${end})`);
    if (e.dataOffsets[0] > end) fail(path, `bytes ${end}..${e.dataOffsets[0]} of the data section belong to no tensor`);
    end = e.dataOffsets[1];
  }
  if (end !== dataSize) fail(path, `the tensors cover ${end} bytes but the data section has ${dataSize}`);
  return { dataStart, entries, metadata };
}

/**
 * Calls `visit` with each tensor of a safetensors file (CPU, the file's dtype) in file order,
 * reading one tensor at a time; `wanted` picks which entries are read at all.
 */
export function forEachSafetensor(
  path: string,
  visit: (entry: SafetensorsEntry, tensor: Tensor) => void,
  wanted: (entry: SafetensorsEntry) => boolean = () => true,
): SafetensorsHeader {
  const header = readSafetensorsHeader(path);
  const fd = fs.openSync(path, 'r');
  try {
    for (const e of header.entries) {
      if (!wanted(e)) continue;
      const n = e.dataOffsets[1] - e.dataOffsets[0];
      const buf = Buffer.allocUnsafe(n);
      let read = 0;
      while (read < n) {
        const got = fs.readSync(fd, buf, read, n - read, header.dataStart + e.dataOffsets[0] + read);
        if (got === 0) fail(path, `unexpected end of file while reading "${e.name}"`);
        read += got;
      }
      visit(e, Tensor.fromBytes(buf, e.dtype, e.shape));
    }
  } finally {
    fs.closeSync(fd);
  }
  return header;
}

/**
 * Loads every tensor of a safetensors file (on the CPU, in the file's dtypes). Reads one tensor at a
 * time, so it holds at most one extra copy of one tensor besides the result.
 */
export function loadSafetensors(path: string): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  // defineProperty, not assignment: a tensor named "__proto__" must stay an own entry.
  forEachSafetensor(path, (e, t) => defineEntry(out, e.name, t));
  return out;
}

/** The `__metadata__` of a safetensors file. */
export function loadSafetensorsMetadata(path: string): Record<string, string> {
  return readSafetensorsHeader(path).metadata;
}

/**
 * Writes tensors (any device; stored as their dtype) and optional string metadata. The file is
 * written to a temporary name and renamed, so a failure never leaves a partial file at `path`.
 */
export function saveSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  checkEndianness();
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new TypeError(`saveSafetensors: metadata.${k} must be a string, got ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  const names = Object.keys(tensors).sort();
  const blobs: Buffer[] = [];
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    if (!(t instanceof Tensor)) throw new TypeError(`saveSafetensors: tensors["${name}"] must be a Tensor`);
    if (name === '__metadata__') throw new TypeError('saveSafetensors: "__metadata__" is reserved');
    const bytes = t.native.bytes();
    defineEntry(header, name, { dtype: DTYPE_TO_FORMAT[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes.length] });
    offset += bytes.length;
    blobs.push(bytes);
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    for (const b of [len, json, ...blobs]) fs.writeSync(fd, b);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, path);
}
