// The public API stays as it was through refactors: scripts/api-surface.ts prints every export of
// lib/index.ts with its type and members (as the compiler sees them, wherever they are declared),
// and this compares it with the recorded test/fixtures/api-surface.txt. A deliberate API change
// regenerates the fixture (the command is in the script) and shows up in the diff.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const root = path.join(__dirname, '..');

test('the public exports and their types are the recorded ones', () => {
  const r = spawnSync(process.execPath, ['-r', 'tsx/cjs', path.join(root, 'scripts', 'api-surface.ts')], { encoding: 'utf8', cwd: root });
  expect(r.stderr).toBe('');
  const now = r.stdout.split('\n');
  const recorded = fs.readFileSync(path.join(__dirname, 'fixtures', 'api-surface.txt'), 'utf8').split('\n');
  expect(now.length).toBeGreaterThan(500); // every export with its members, not an empty listing
  expect(now).toEqual(recorded);
}, 60_000);
