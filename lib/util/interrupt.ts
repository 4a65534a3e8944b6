// Ctrl-C, heard once however it arrives: SIGINT, and in a terminal in raw mode (the Node REPL,
// where Ctrl-C reaches the program as a key and no signal is sent) the key itself. A second Ctrl-C
// within REPEAT_WINDOW_MS of the first is the same press (npx tsx passes one Ctrl-C on to its
// child as a second signal), so only a later one counts as "again".

/** Signals or keys this close to the first are the same Ctrl-C. */
export const REPEAT_WINDOW_MS = 1000;

interface KeyInput {
  isTTY?: boolean;
  isRaw?: boolean;
  prependListener(event: 'keypress', listener: (s: unknown, key: { ctrl?: boolean; name?: string } | undefined) => void): unknown;
  off(event: 'keypress', listener: (s: unknown, key: { ctrl?: boolean; name?: string } | undefined) => void): unknown;
}

/** Whether stdin is a terminal in raw mode (the Node REPL reading a line): Ctrl-C is then a key, not a signal. */
export function rawTerminal(): boolean {
  const input = process.stdin as unknown as KeyInput;
  return input.isTTY === true && input.isRaw === true;
}

/**
 * Calls `handler(n)` for the n-th Ctrl-C (1, then 2, ...; repeats within REPEAT_WINDOW_MS of the
 * previous one are not counted) until the returned function is called. Listens to SIGINT, and to
 * the Ctrl-C key while stdin is a raw terminal (before the REPL's own listener, so what the handler
 * prints comes first).
 */
export function onInterrupt(handler: (count: number) => void): () => void {
  let count = 0;
  let last = -Infinity;
  const hear = (): void => {
    const now = Date.now();
    if (now - last < REPEAT_WINDOW_MS) return;
    last = now;
    handler(++count);
  };
  const onKey = (_: unknown, key: { ctrl?: boolean; name?: string } | undefined): void => {
    if (key?.ctrl && key.name === 'c') hear();
  };
  const input = process.stdin as unknown as KeyInput;
  const keys = rawTerminal();
  process.on('SIGINT', hear);
  if (keys) input.prependListener('keypress', onKey);
  return () => {
    if (keys) input.off('keypress', onKey);
    // the rest of a press heard just now (its repeat) must not hit Node's default SIGINT action
    // and kill a process that has just stopped cleanly: the listener stays for the rest of the
    // window, and keeps the process alive that long (during Node's exit a signal kills it)
    const left = last + REPEAT_WINDOW_MS - Date.now();
    if (left <= 0) {
      process.off('SIGINT', hear);
      return;
    }
    setTimeout(() => process.off('SIGINT', hear), left);
  };
}
