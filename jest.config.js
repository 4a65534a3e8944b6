/** Tests run TypeScript through @swc/jest (no type check here: `npm test` runs `tsc --noEmit` first). */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest'] },
  cacheDirectory: '<rootDir>/.cache/jest',
  testTimeout: 120000,
};
