// The Python reference (test/helpers/reference_decoder.py) as source text for runPython scripts.
import * as fs from 'fs';
import * as path from 'path';

/** Defines load_safetensors(path) and decoder_forward(W, cfg, ids, mask, lora=None). */
export const PY_REFERENCE = fs.readFileSync(path.join(__dirname, 'reference_decoder.py'), 'utf8');
