// TensorBoard event files, written without TensorFlow: TFRecord framing (length, masked CRC-32C of
// the length, the record, masked CRC-32C of the record) around Event protocol buffers, encoded by
// hand (the few fields scalars need):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { maskedCrc32c } from './crc32c';
import type { MetricSink, Scalars } from './sink';

function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt(Math.trunc(n));
  if (v < 0n) v += 1n << 64n; // int64 in two's complement, as protobuf encodes negatives
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const key = (field: number, wire: number): number[] => varint((field << 3) | wire);
const bytesField = (field: number, data: Uint8Array | number[]): number[] => [...key(field, 2), ...varint(data.length), ...data];
function float64(v: number): number[] {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return [...b];
}
function float32(v: number): number[] {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return [...b];
}

/** An Event holding `file_version` (the first record of every event file). */
export function versionEvent(wallTime: number): Uint8Array {
  return Uint8Array.from([...key(1, 1), ...float64(wallTime), ...bytesField(3, Buffer.from('brain.Event:2', 'utf8'))]);
}

/** An Event holding one scalar summary value per entry of `scalars`, at `step`. */
export function scalarEvent(wallTime: number, step: number, scalars: Scalars): Uint8Array {
  const values = Object.entries(scalars).flatMap(([tag, v]) => bytesField(1, [...bytesField(1, Buffer.from(tag, 'utf8')), ...key(2, 5), ...float32(v)]));
  return Uint8Array.from([...key(1, 1), ...float64(wallTime), ...key(2, 0), ...varint(step), ...bytesField(5, values)]);
}

/** One TFRecord: uint64 length, masked CRC of the length's bytes, the data, masked CRC of the data. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(BigInt(data.length), 0);
  head.writeUInt32LE(maskedCrc32c(head.subarray(0, 8)), 8);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(maskedCrc32c(data), 0);
  return Buffer.concat([head, data, tail]);
}

/** Writes scalars to `<dir>/events.out.tfevents.<seconds>.<host>`, as TensorBoard's SummaryWriter names its files. */
export class TensorBoardSink implements MetricSink {
  readonly file: string;
  constructor(dir: string, now: () => number = () => Date.now() / 1000) {
    this.now = now;
    fs.mkdirSync(dir, { recursive: true });
    this.file = path.join(dir, `events.out.tfevents.${Math.floor(now())}.${os.hostname()}`);
    fs.writeFileSync(this.file, tfRecord(versionEvent(now())));
  }
  private readonly now: () => number;
  log(step: number, scalars: Scalars): void {
    if (Object.keys(scalars).length) fs.appendFileSync(this.file, tfRecord(scalarEvent(this.now(), step, scalars)));
  }
}
