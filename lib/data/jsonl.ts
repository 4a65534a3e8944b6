// The bounded JSON-lines reader: a file read in chunks, each line handed over as soon as it is
// complete, a line over the limit refused before more of it is held.
import * as fs from 'fs';

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;
/** fromJsonl reads files in chunks of this many bytes. */
const READ_CHUNK_BYTES = 64 * 1024;

/** Decodes UTF-8 and throws on bytes that are not (Latin-1 text was silently turned into U+FFFD). */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The offset (from 1) of the first byte where `bytes` stops being valid UTF-8 (only on the error path). */
function firstInvalid(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; ) {
    const c = bytes[i];
    const n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : (c & 0xf0) === 0xe0 ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n === 0 || i + n > bytes.length) return i + 1;
    try {
      UTF8.decode(bytes.subarray(i, i + n)); // continuation bytes, overlong forms, surrogates
    } catch {
      return i + 1;
    }
    i += n;
  }
  return bytes.length + 1;
}

/**
 * Calls onLine(text, lineNumber) for each line of an open file, without its line end (`\n` or
 * `\r\n`; a last line may lack one), reading chunks of READ_CHUNK_BYTES. A line is decoded as UTF-8
 * once complete, so a character split across chunks decodes whole. A line longer than maxLineBytes
 * is an error (`file:line: ...`) as soon as it passes the limit: at most maxLineBytes + 1 bytes of
 * it are held. Read errors name the file and the last line read.
 */
export async function forEachLine(
  where: string,
  file: string,
  handle: fs.promises.FileHandle,
  maxLineBytes: number,
  onLine: (text: string, lineNumber: number) => void,
): Promise<void> {
  const chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  let parts: Buffer[] = []; // the current line's bytes from earlier chunks (copies)
  let length = 0;
  let lineNumber = 1;
  const tooLong = (): Error =>
    new RangeError(`${file}:${lineNumber}: the line is longer than maxLineBytes (${maxLineBytes} bytes); raise options.maxLineBytes to read it`);
  const finish = (data: Buffer, start: number, end: number): void => {
    let bytes: Buffer;
    if (parts.length === 0) bytes = data.subarray(start, end);
    else {
      parts.push(data.subarray(start, end));
      bytes = Buffer.concat(parts, length + end - start);
    }
    if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, bytes.length - 1);
    if (bytes.length > maxLineBytes) throw tooLong();
    parts = [];
    length = 0;
    let text: string;
    try {
      text = UTF8.decode(bytes);
    } catch {
      throw new Error(`${file}:${lineNumber}: the line is not valid UTF-8 (at byte ${firstInvalid(bytes)} of the line; a file in Latin-1 or another encoding must be converted to UTF-8 first)`);
    }
    onLine(text, lineNumber++);
  };
  for (;;) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(chunk, 0, chunk.length, null));
    } catch (e) {
      throw new Error(`${where}: cannot read ${file} (after line ${lineNumber - 1}): ${(e as Error).message}`);
    }
    if (bytesRead === 0) break;
    const data = chunk.subarray(0, bytesRead);
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      const end = nl < 0 ? bytesRead : nl;
      // + 1: the \r of a \r\n line end, known only at the \n
      if (length + end - start > maxLineBytes + 1) throw tooLong();
      if (nl < 0) {
        if (end > start) {
          parts.push(Buffer.from(data.subarray(start, end))); // the chunk buffer is reused
          length += end - start;
        }
        break;
      }
      finish(data, start, end);
      start = nl + 1;
    }
  }
  if (length > 0) finish(Buffer.alloc(0), 0, 0);
}
