// The house's import rules, read from the sources: no circle among lib/ files (type-only imports
// count: a circle of types is still two modules that cannot be understood apart), and library
// code never imports the CLI (lib/cli/ may import the library, not the other way round), and
// lib/util/ imports nothing of lib/ outside itself.
import * as fs from 'fs';
import * as path from 'path';

const LIB = path.join(__dirname, '..', 'lib');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

/** The lib/ files `file` imports (import, import type, export ... from, require), resolved. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/g), ...text.matchAll(/require\('([^']+)'\)/g), ...text.matchAll(/import\('([^']+)'\)/g)].map((m) => m[1]);
  return [...new Set(specs)]
    .filter((s) => s.startsWith('.'))
    .map((s) => {
      const base = path.resolve(path.dirname(file), s);
      return [`${base}.ts`, path.join(base, 'index.ts')].find((f) => fs.existsSync(f));
    })
    .filter((f): f is string => f !== undefined);
}

const files = sources(LIB);
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const rel = (f: string): string => path.relative(LIB, f);

test('the import graph is read: every lib file, and the imports it names', () => {
  expect(files.length).toBeGreaterThan(40);
  expect(graph.get(path.join(LIB, 'index.ts'))!.map(rel)).toContain(path.join('trainer', 'index.ts'));
});

test('no circle among lib/ files (type-only imports included)', () => {
  const circles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const g of graph.get(f) ?? []) {
      if (state.get(g) === 'open') circles.push([...stack.slice(stack.indexOf(g)), g].map(rel).join(' -> '));
      else if (!state.has(g)) visit(g);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  expect(circles).toEqual([]);
});

test('library code never imports from lib/cli/', () => {
  const cli = path.join(LIB, 'cli');
  const bad = files.filter((f) => !f.startsWith(cli + path.sep) && f !== path.join(LIB, 'cli.ts')).flatMap((f) => graph.get(f)!.filter((g) => g.startsWith(cli + path.sep)).map((g) => `${rel(f)} imports ${rel(g)}`));
  expect(bad).toEqual([]);
});

test('lib/util/ sits below the rest: its files import only each other (not the addon, not the library)', () => {
  const util = path.join(LIB, 'util');
  const utilFiles = files.filter((f) => f.startsWith(util + path.sep));
  expect(utilFiles.length).toBeGreaterThan(5);
  const bad = utilFiles.flatMap((f) => graph.get(f)!.filter((g) => !g.startsWith(util + path.sep)).map((g) => `${rel(f)} imports ${rel(g)}`));
  expect(bad).toEqual([]);
});

test('the run folder\'s file names are written in one module (lib/trainer/checkpoint.ts), as are the adapter folder\'s (lib/adapter/files.ts)', () => {
  const owners: [RegExp, string][] = [
    [/'(trainer_state\.json|optimizer\.safetensors|rng\.safetensors|log\.jsonl|metrics\.csv)'|`checkpoint-\$\{/, path.join('trainer', 'checkpoint.ts')],
    [/'(adapter_config\.json|adapter_model\.safetensors|rlora_config\.json)'/, path.join('adapter', 'files.ts')],
  ];
  for (const [literal, owner] of owners) {
    // code, not comments or messages: a quoted name or a template building one
    const users = files.filter((f) => fs.readFileSync(f, 'utf8').split('\n').some((line) => !/^\s*(\/\/|\*)/.test(line) && literal.test(line))).map(rel);
    expect(users).toEqual([owner]);
  }
});

