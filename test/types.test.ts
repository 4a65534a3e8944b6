// rlora's published declarations are self-contained: a TypeScript project without @types/node
// (`"types": []`, lib ES2022, strict, no skipLibCheck) type-checks code that uses them.
//
// The declarations are compiled here from lib/ (tsconfig.build.json) into a temporary
// node_modules/rlora, so the test does not depend on the state of dist/; then two consumer
// projects (module commonjs, and module nodenext with a CommonJS .ts and an ES module .mts) are
// type-checked with this repository's TypeScript.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as util from 'util';

jest.setTimeout(120_000);

const REPO = path.join(__dirname, '..');
const TSC = path.join(path.dirname(require.resolve('typescript/package.json', { paths: [REPO] })), 'bin', 'tsc');

let tmp: string;
let dts: string; // node_modules/rlora/dist of the consumers

function tsc(args: string[], cwd: string): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [TSC, ...args], { cwd, encoding: 'utf8', timeout: 90_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}` };
}

// Uses the main classes as a user would, without anything from Node's types.
const CONSUMER = `
import { Adapter, AdamW, ByteTokenizer, Model, MultiTaskDataset, Tensor, Tokenizer, Trainer } from 'rlora';
import type { AdapterOptions, History, TrainerOptions } from 'rlora';

export async function main(dir: string): Promise<number> {
  const model: Model = await Model.fromPretrained(dir);
  const options: AdapterOptions = { method: 'rlora', rank: 8, heads: 2, targetModules: ['q_proj', 'v_proj'] };
  const adapter: Adapter = Adapter.attach(model, options);
  const trainerOptions: TrainerOptions = { learningRate: 2e-4 };
  const trainer = new Trainer(model, adapter, trainerOptions);
  const tokenizer = new ByteTokenizer();
  const data = MultiTaskDataset.fromArray([{ task: 'echo', prompt: 'a', response: 'b' }], { tokenizer, maxLength: 32 });
  const history: History = await trainer.fit(data);
  const t: Tensor = Tensor.from([[1, 2], [3, 4]]);
  const u = Tensor.from(new Float32Array([1, 2, 3]), [3], { dtype: 'float32' });
  const values = t.data();
  // data() is typed by the dtype the tensor was made with; as() narrows one of unknown dtype
  const f32: Float32Array = u.data();
  const f64: Float64Array = Tensor.from([1], [1], { dtype: 'float64' }).data();
  const i64: BigInt64Array = Tensor.from(new BigInt64Array(2)).data();
  const narrowed: Float32Array = (u as Tensor).as('float32').data();
  // @ts-expect-error a float32 tensor's data is not a BigInt64Array
  const wrong: BigInt64Array = u.data();
  t[Symbol.dispose]();
  u.dispose();
  const opt = new AdamW(model, { lr: 1e-3 });
  opt[Symbol.dispose]();
  adapter.save(dir);
  adapter[Symbol.dispose]();
  model[Symbol.dispose]();
  const hf: Tokenizer = Tokenizer.fromFile(dir);
  return history.steps.length + values.length + hf.encode('x').length + f32.length + f64.length + i64.length + narrowed.length + wrong.length;
}
`;

function consumer(name: string, module: 'commonjs' | 'nodenext', files: Record<string, string>, extra: Record<string, unknown> = {}): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.symlinkSync(path.join(tmp, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true }));
  for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), text);
  const compilerOptions = {
    strict: true,
    noEmit: true,
    types: [],
    lib: ['ES2022'],
    target: 'ES2022',
    module,
    ...(module === 'commonjs' ? { moduleResolution: 'node10', esModuleInterop: true } : {}),
    ...extra,
  };
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: Object.keys(files) }, null, 2));
  return dir;
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-types-'));
  const pkg = path.join(tmp, 'node_modules', 'rlora');
  dts = path.join(pkg, 'dist');
  const { main, types, name, version } = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
  fs.mkdirSync(pkg, { recursive: true });
  fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name, version, main, types }));
  const r = tsc(['-p', path.join(REPO, 'tsconfig.build.json'), '--outDir', dts, '--emitDeclarationOnly', '--sourceMap', 'false'], REPO);
  if (r.status !== 0) throw new Error(`tsc -p tsconfig.build.json failed:\n${r.output}`);
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// libtorch.d.ts (read by loader.d.ts) and cli*.d.ts are internal: index.d.ts reaches neither.
test('the declarations name neither the util module nor Buffer', () => {
  const offending: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const f = path.join(dir, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.name.endsWith('.d.ts') && path.relative(dts, f) !== 'libtorch.d.ts' && !path.relative(dts, f).startsWith('cli'))
        fs.readFileSync(f, 'utf8').split('\n').forEach((line, i) => {
          if (/from ['"](node:)?util['"]|\bBuffer\b|\bNodeJS\./.test(line)) offending.push(`${path.relative(dts, f)}:${i + 1}: ${line.trim()}`);
        });
    }
  };
  walk(dts);
  expect(offending).toEqual([]);
});

test('the inspect symbol of the declarations is util.inspect.custom', () => {
  expect(Symbol.for('nodejs.util.inspect.custom')).toBe(util.inspect.custom);
});

test('a strict module:commonjs project without @types/node type-checks against rlora', () => {
  const dir = consumer('cjs', 'commonjs', { 'main.ts': CONSUMER });
  const r = tsc(['-p', '.'], dir);
  expect(r.output).toBe('');
  expect(r.status).toBe(0);
});

test('a strict module:nodenext project without @types/node type-checks against rlora (.ts and .mts)', () => {
  const dir = consumer('nodenext', 'nodenext', { 'main.ts': CONSUMER, 'main.mts': CONSUMER });
  const r = tsc(['-p', '.'], dir);
  expect(r.output).toBe('');
  expect(r.status).toBe(0);
});

// @tsconfig/strictest's checks (with the declarations checked too: skipLibCheck off), on the
// README's main sample as it stands in the README and on the consumer above.
const STRICTEST = {
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  noImplicitOverride: true,
  noImplicitReturns: true,
  noPropertyAccessFromIndexSignature: true,
  noFallthroughCasesInSwitch: true,
  allowUnusedLabels: false,
  allowUnreachableCode: false,
  isolatedModules: true,
  skipLibCheck: false,
};

function readmeSample(): string {
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const m = /```ts\n(import \{ Adapter, Model, MultiTaskDataset, Tokenizer, Trainer \} from 'rlora';[\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README.md has no ts sample starting with the import of Adapter, Model, MultiTaskDataset, Tokenizer, Trainer');
  // (the sample prints with console.log, which a project without @types/node or the DOM lib lacks)
  return 'declare const console: { log(...values: unknown[]): void };\n' + m[1] + 'export {};\n';
}

test('a project with @tsconfig/strictest\'s checks type-checks the README sample and the consumer', () => {
  const dir = consumer('strictest', 'nodenext', { 'readme.mts': readmeSample(), 'main.mts': CONSUMER }, STRICTEST);
  const r = tsc(['-p', '.'], dir);
  expect(r.output).toBe('');
  expect(r.status).toBe(0);
});
