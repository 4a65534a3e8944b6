// The safetensors format: 8-byte little-endian header length, a JSON header, then raw little-endian
// tensor data. Files written by Python's `safetensors` load here, and ours load there.
import * as fs from 'fs';
import * as os from 'os';

import { Dtype, Tensor } from './tensor';
import { openRegularFile, writeAll } from './util/files';
import { isRecord as isPlainObject } from './util/options';

/** How a dtype of the format is stored and which libtorch dtype it loads as. */
interface Format {
  dtype: Dtype;
  /** Bytes per element in the file. */
  size: number;
  /** Turns the file's bytes into bytes of `dtype` (formats libtorch 1.13 lacks). */
  widen?: (bytes: Buffer, name: string, path: string) => Buffer;
}

const FORMATS: Record<string, Format> = {
  F32: { dtype: 'float32', size: 4 },
  F16: { dtype: 'float16', size: 2 },
  BF16: { dtype: 'bfloat16', size: 2 },
  F64: { dtype: 'float64', size: 8 },
  I32: { dtype: 'int32', size: 4 },
  I64: { dtype: 'int64', size: 8 },
  U8: { dtype: 'uint8', size: 1 },
  BOOL: { dtype: 'bool', size: 1 },
  // No unsigned 32/64-bit or float8 dtypes in libtorch 1.13: the nearest one that holds every value.
  U32: { dtype: 'int64', size: 4, widen: (b) => Buffer.from(BigInt64Array.from(uint32s(b), BigInt).buffer) },
  U64: { dtype: 'int64', size: 8, widen: checkU64 },
  F8_E4M3: { dtype: 'float32', size: 1, widen: f8Widener(4, 3, false) },
  F8_E5M2: { dtype: 'float32', size: 1, widen: f8Widener(5, 2, true) },
};
const DTYPE_TO_FORMAT = Object.fromEntries(
  Object.entries(FORMATS)
    .filter(([, f]) => !f.widen)
    .map(([k, f]) => [f.dtype, k]),
) as Record<Dtype, string>;

/** Bytes per element of `dtype` in a safetensors file (what saveSafetensors writes). */
export function dtypeByteSize(dtype: Dtype): number {
  return FORMATS[DTYPE_TO_FORMAT[dtype]].size;
}

function uint32s(b: Buffer): Uint32Array {
  const out = new Uint32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readUInt32LE(4 * i);
  return out;
}

/** U64 loads as int64 when every value is below 2^63 (the same bytes then). */
function checkU64(b: Buffer, name: string, path: string): Buffer {
  for (let i = 7; i < b.length; i += 8) {
    if (b[i] & 0x80) {
      fail(path, `tensor "${name}" (U64) holds ${b.readBigUInt64LE(i - 7)} at element ${(i - 7) / 8}, which does not fit int64 (rlora loads U64 as int64)`);
    }
  }
  return b;
}

/**
 * float8 (OCP formats as in PyTorch: E4M3 is float8_e4m3fn, with no infinities and NaN at
 * S.1111.111; E5M2 is IEEE-like) to float32, exactly, through a table of the 256 values.
 */
function f8Widener(expBits: number, manBits: number, ieee: boolean): (b: Buffer) => Buffer {
  const bias = 2 ** (expBits - 1) - 1;
  const maxExp = 2 ** expBits - 1;
  const maxMan = 2 ** manBits - 1;
  const table = new Float32Array(256).map((_, byte) => {
    const e = (byte >> manBits) & maxExp;
    const m = byte & maxMan;
    let v: number;
    if (e === 0) v = (m / 2 ** manBits) * 2 ** (1 - bias);
    else if (ieee && e === maxExp) v = m ? NaN : Infinity;
    else if (!ieee && e === maxExp && m === maxMan) v = NaN;
    else v = (1 + m / 2 ** manBits) * 2 ** (e - bias);
    return byte & 0x80 ? -v : v;
  });
  return (b) => Buffer.from(Float32Array.from(b, (byte) => table[byte]).buffer);
}

/** Headers larger than this are refused, as the reference implementation does. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Deeper JSON nesting is refused before the header is parsed (a valid header nests 3 deep). */
const MAX_HEADER_DEPTH = 64;
/** Refuses invalid UTF-8 and keeps a byte order mark (which is not JSON), as the reference implementation. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface SafetensorsEntry {
  name: string;
  /** The dtype it loads as (U32 and U64 load as int64, F8_E4M3 and F8_E5M2 as float32). */
  dtype: Dtype;
  /** The dtype as the file names it (F32, BF16, U32, ...). */
  format: string;
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
  const { fd, size } = openRegularFile(path, (what) => fail(path, what));
  try {
    if (size < 8) fail(path, `truncated: ${size} bytes, a file needs at least the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(path, `header length ${headerLen} is over the ${MAX_HEADER_BYTES}-byte limit`);
    const n = Number(headerLen);
    if (8 + n > size) fail(path, `header length ${n} runs past the end of the file (${size} bytes)`);
    const headerBuf = Buffer.alloc(n);
    fs.readSync(fd, headerBuf, 0, n, 8);
    let text: string;
    try {
      text = UTF8.decode(headerBuf);
    } catch {
      fail(path, 'header is not valid UTF-8');
    }
    return parseHeader(path, text, 8 + n, size - 8 - n);
  } finally {
    fs.closeSync(fd);
  }
}


/**
 * Checks the raw header text for what JSON.parse hides: nesting deeper than MAX_HEADER_DEPTH, and
 * shape or data_offsets numbers written as 4.0 or 1e2 (the format's integers are plain digits,
 * as the reference implementation reads them). Runs before JSON.parse, so a deeply nested header
 * is refused without being parsed; on text that is not JSON it may pass, and JSON.parse then says
 * what is wrong.
 */
function scanHeader(path: string, text: string): void {
  const keys: string[] = []; // raw (quoted) key of each open container; '' in arrays and at the top
  let lastString = '';
  let key = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      lastString = text.slice(start, i + 1);
    } else if (c === ':') {
      key = lastString;
    } else if (c === ',') {
      key = '';
    } else if (c === '{' || c === '[') {
      if (keys.push(key) > MAX_HEADER_DEPTH) fail(path, `header is nested deeper than ${MAX_HEADER_DEPTH} levels`);
      key = '';
    } else if (c === '}' || c === ']') {
      keys.pop();
      key = '';
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      const start = i;
      while (i + 1 < text.length && '0123456789+-.eE'.includes(text[i + 1])) i++;
      const token = text.slice(start, i + 1);
      if (keys.length === 3 && /[.eE]/.test(token)) {
        const list = decodeKey(keys[2]);
        if (list === 'shape' || list === 'data_offsets') {
          const what = list === 'shape' ? 'an invalid shape' : 'invalid data_offsets';
          fail(path, `tensor "${decodeKey(keys[1])}" has ${what}: ${token} is not a plain integer (digits only, no fraction or exponent)`);
        }
      }
    }
  }
}

function decodeKey(raw: string): string {
  try {
    return JSON.parse(raw) as string;
  } catch {
    return raw;
  }
}

function parseHeader(path: string, text: string, dataStart: number, dataSize: number): SafetensorsHeader {
  scanHeader(path, text);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) fail(path, 'header must be a JSON object');
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, info] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (info === null) continue; // as Python writes "no metadata"
      if (!isPlainObject(info)) fail(path, '__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== 'string') fail(path, `__metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
        defineEntry(metadata, k, v);
      }
      continue;
    }
    if (!isPlainObject(info)) fail(path, `entry "${name}" must be an object`);
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (info[field] === undefined) fail(path, `tensor "${name}": ${field} is missing`);
    }
    const { dtype: format, shape, data_offsets: off } = info;
    const f = typeof format === 'string' && Object.hasOwn(FORMATS, format) ? FORMATS[format] : undefined;
    if (!f) fail(path, `tensor "${name}" has unsupported dtype ${JSON.stringify(format)}; supported: ${Object.keys(FORMATS).join(', ')}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(path, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}; expected an array of non-negative integers`);
    }
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
      fail(path, `tensor "${name}" has invalid data_offsets ${JSON.stringify(off)}; expected [begin, end] with 0 <= begin <= end`);
    }
    const need = shape.reduce((a: number, b: number) => a * b, 1) * f.size;
    if (off[1] - off[0] !== need) {
      fail(path, `tensor "${name}" (${format} [${shape.join(', ')}]) needs ${need} bytes but data_offsets ${JSON.stringify(off)} span ${off[1] - off[0]}`);
    }
    if (off[1] > dataSize) {
      fail(path, `tensor "${name}" data_offsets ${JSON.stringify(off)} are out of range: the data section has ${dataSize} bytes`);
    }
    entries.push({ name, dtype: f.dtype, format: format as string, shape, dataOffsets: [off[0], off[1]] });
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
 * Calls `visit` with each tensor of a safetensors file (CPU, in its entry's dtype) in file order,
 * reading one tensor at a time; `wanted` picks which entries are read at all.
 */
export function forEachSafetensor(
  path: string,
  visit: (entry: SafetensorsEntry, tensor: Tensor) => void,
  wanted: (entry: SafetensorsEntry) => boolean = () => true,
): SafetensorsHeader {
  const header = readSafetensorsHeader(path);
  const { fd } = openRegularFile(path, (what) => fail(path, what));
  try {
    // one read buffer for every tensor (Tensor.fromBytes copies out of it): a new Buffer each
    // would wait for the collector, and loading a model held about its whole file in them
    const chosen = header.entries.filter((e) => wanted(e));
    const shared = Buffer.allocUnsafe(Math.max(0, ...chosen.map((e) => e.dataOffsets[1] - e.dataOffsets[0])));
    for (const e of chosen) {
      const n = e.dataOffsets[1] - e.dataOffsets[0];
      const buf = shared.subarray(0, n);
      let read = 0;
      while (read < n) {
        const got = fs.readSync(fd, buf, read, n - read, header.dataStart + e.dataOffsets[0] + read);
        if (got === 0) fail(path, `unexpected end of file while reading "${e.name}"`);
        read += got;
      }
      const bytes = FORMATS[e.format].widen?.(buf, e.name, path) ?? buf;
      visit(e, Tensor.fromBytes(bytes, e.dtype, e.shape));
    }
  } finally {
    fs.closeSync(fd);
  }
  return header;
}

/**
 * Loads every tensor of a safetensors file (on the CPU, in the file's dtypes, or the nearest libtorch
 * has for U32, U64, F8_E4M3 and F8_E5M2: see SafetensorsEntry). Reads one tensor at a
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
  const blobs: Uint8Array[] = [];
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
  if (fs.statSync(path, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(`saveSafetensors: ${path} is a directory`);
  }
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      for (const b of [len, json, ...blobs]) writeAll(fd, b, path); // a short count (a full disk) throws
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
