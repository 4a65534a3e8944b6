// Prints rlora's public API as the TypeScript compiler sees it from lib/index.ts: every export
// (values, classes, interfaces, type aliases, the distributed namespace) with its type, each
// class's and interface's public members with theirs. Independent of which file declares what, so
// moving code between files leaves it unchanged. test/api-surface.test.ts compares it with
// test/fixtures/api-surface.txt; after a deliberate API change, regenerate that file with
//   npx tsx scripts/api-surface.ts > test/fixtures/api-surface.txt
import * as path from 'path';
import * as ts from 'typescript';

const root = path.join(__dirname, '..');
const entry = path.join(root, 'lib', 'index.ts');
const program = ts.createProgram([entry], { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, strict: true, esModuleInterop: true, skipLibCheck: true, types: ['node'] });
const checker = program.getTypeChecker();
const source = program.getSourceFile(entry)!;
const FLAGS = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseAliasDefinitionOutsideCurrentScope | ts.TypeFormatFlags.WriteArrowStyleSignature;
const show = (t: ts.Type): string => checker.typeToString(t, source, FLAGS).replace(/import\("[^"]*"\)\./g, '');

const isHidden = (s: ts.Symbol): boolean =>
  s.name.startsWith('#') || s.name.startsWith('__@') || (s.declarations ?? []).some((d) => (ts.getCombinedModifierFlags(d as ts.Declaration) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) !== 0);

function members(t: ts.Type, indent: string, skip: string[] = []): string[] {
  return checker
    .getPropertiesOfType(t)
    .filter((p) => !isHidden(p) && !skip.includes(p.name))
    .map((p) => {
      const optional = p.flags & ts.SymbolFlags.Optional ? '?' : '';
      const readonly = (p.declarations ?? []).some((d) => ts.getCombinedModifierFlags(d as ts.Declaration) & ts.ModifierFlags.Readonly) ? 'readonly ' : '';
      return `${indent}${readonly}${p.name}${optional}: ${show(checker.getTypeOfSymbolAtLocation(p, source))}`;
    })
    .sort();
}

function describe(name: string, sym: ts.Symbol, indent: string): string[] {
  const s = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
  const out: string[] = [];
  if (s.flags & ts.SymbolFlags.Class) {
    out.push(`${indent}class ${name}`);
    out.push(...members(checker.getTypeOfSymbolAtLocation(s, source), `${indent}  static `, ['prototype']));
    for (const sig of checker.getSignaturesOfType(checker.getTypeOfSymbolAtLocation(s, source), ts.SignatureKind.Construct)) out.push(`${indent}  new ${checker.signatureToString(sig, source, FLAGS)}`);
    out.push(...members(checker.getDeclaredTypeOfSymbol(s), `${indent}  `));
  } else if (s.flags & ts.SymbolFlags.Interface) {
    out.push(`${indent}interface ${name}`, ...members(checker.getDeclaredTypeOfSymbol(s), `${indent}  `));
  } else if (s.flags & ts.SymbolFlags.TypeAlias) {
    out.push(`${indent}type ${name} = ${checker.typeToString(checker.getDeclaredTypeOfSymbol(s), source, FLAGS | ts.TypeFormatFlags.InTypeAlias)}`);
  } else if (s.flags & (ts.SymbolFlags.ValueModule | ts.SymbolFlags.NamespaceModule)) {
    out.push(`${indent}namespace ${name}`);
    for (const e of checker.getExportsOfModule(s).sort((a, b) => a.name.localeCompare(b.name))) out.push(...describe(e.name, e, `${indent}  `));
  } else {
    out.push(`${indent}${s.flags & ts.SymbolFlags.Function ? 'function' : 'const'} ${name}: ${show(checker.getTypeOfSymbolAtLocation(s, source))}`);
  }
  return out;
}

const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(source)!).sort((a, b) => a.name.localeCompare(b.name));
const lines = exports.flatMap((e) => describe(e.name, e, ''));
// a union of string literals in the order the compiler created them (which moving code changes): sorted
const sortedUnions = (line: string): string => line.replace(/"[^"]*"(?: \| "[^"]*")+/g, (u) => u.split(' | ').sort().join(' | '));
process.stdout.write(lines.map(sortedUnions).join('\n').replace(/import\("[^"]*"\)\./g, '') + '\n');
