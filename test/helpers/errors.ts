// Asserting thrown errors that may come from Node's realm (fs, the addon), which are not instances
// of jest's sandboxed Error: no instanceof.
import * as util from 'util';

/** Calls fn, expects it to throw an Error whose message matches pattern, and returns the Error. */
export function expectErrorMatching(fn: () => unknown, pattern: RegExp): Error {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(util.types.isNativeError(caught)).toBe(true);
  expect((caught as Error).message).toMatch(pattern);
  return caught as Error;
}
