// lib/util/json.ts: JSON files from folders anyone may hand us are read only when they are regular
// files under a size limit, and a syntax error names the place but never quotes the contents.
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, Model, Tokenizer } from '../lib';
import { readJsonFile } from '../lib/util/json';
import { tempFolder, TINY_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-json-');

describe('readJsonFile', () => {
  it('reads a JSON file', () => {
    const f = path.join(tmp, 'ok.json');
    fs.writeFileSync(f, '{"a": [1, 2]}');
    expect(readJsonFile(f)).toEqual({ a: [1, 2] });
  });

  it('refuses a device or a folder before reading (/dev/zero used to read 17 GB, then abort)', () => {
    expect(() => readJsonFile('/dev/zero')).toThrow('/dev/zero is not a regular file (a JSON file was expected)');
    expect(() => readJsonFile(tmp, { where: 'Model' })).toThrow(`Model: ${tmp} is not a regular file`);
    expect(() => readJsonFile(path.join(tmp, 'none.json'))).toThrow(`${path.join(tmp, 'none.json')} not found`);
  });

  it('refuses a file over the limit, naming its size', () => {
    const f = path.join(tmp, 'big.json');
    fs.writeFileSync(f, JSON.stringify({ x: 'y'.repeat(2000) }));
    expect(() => readJsonFile(f, { maxBytes: 1000 })).toThrow(`${f} holds 2008 bytes, more than the 1000 a JSON file of this kind may hold`);
  });

  it('names the line and column of a syntax error and quotes none of the file', () => {
    const f = path.join(tmp, 'bad.json');
    fs.writeFileSync(f, '{\n  "a": 1,\n  SECRET\n}');
    let message = '';
    try {
      readJsonFile(f);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toBe(`${f} is not valid JSON (line 3, column 3)`);
    fs.writeFileSync(f, 'SECRET-LINE:x:0:0');
    expect(() => readJsonFile(f)).toThrow(`${f} is not valid JSON (an unexpected character)`);
    expect(() => readJsonFile(f)).not.toThrow(/SECRET/);
    fs.writeFileSync(f, '{"a": ');
    expect(() => readJsonFile(f)).toThrow(`${f} is not valid JSON (it ends too early)`);
  });

  it('guards config.json, adapter_config.json and tokenizer.json', async () => {
    const dir = path.join(tmp, 'model');
    fs.mkdirSync(dir);
    fs.symlinkSync('/dev/zero', path.join(dir, 'config.json'));
    await expect(Model.fromPretrained(dir)).rejects.toThrow(`${path.join(dir, 'config.json')} is not a regular file`);
    const adapterDir = path.join(tmp, 'adapter');
    fs.mkdirSync(adapterDir);
    fs.symlinkSync('/dev/zero', path.join(adapterDir, 'adapter_config.json'));
    fs.writeFileSync(path.join(adapterDir, 'adapter_model.safetensors'), '');
    await expect(Adapter.load(Model.fromConfig(TINY_CONFIG), adapterDir)).rejects.toThrow(`${path.join(adapterDir, 'adapter_config.json')} is not a regular file`);
    const tokDir = path.join(tmp, 'tok');
    fs.mkdirSync(tokDir);
    fs.symlinkSync('/dev/zero', path.join(tokDir, 'tokenizer.json'));
    expect(() => Tokenizer.fromFile(tokDir)).toThrow(`Tokenizer.fromFile: ${path.join(tokDir, 'tokenizer.json')} is not a regular file`);
  });
});
