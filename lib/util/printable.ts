// Text from users' files (task names, paths, values in errors) made safe to print to a terminal or
// write into XML: control characters become visible escapes (`\x1b`, `\u202e`), so an escape
// sequence in a task name cannot move the cursor, retitle the window or hide text, and an SVG
// stays well-formed XML. The one helper for everything rlora prints: the progress and step lines,
// evaluation tables, the CLI's errors, `rlora plot`'s figures.

/**
 * C0 controls except tab and line end, DEL, C1 controls, and the bidirectional overrides and
 * isolates (which reorder what follows them on screen).
 */
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
/** The same, with tab and line ends: text that must stay on one line (a name in a table or a line). */
const CONTROL_ONE_LINE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

const escape = (c: string): string => {
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
};

/** `text` with its control characters as visible escapes; tabs and line ends kept unless `oneLine`. */
export function printable(text: string, oneLine = false): string {
  return text.replace(oneLine ? CONTROL_ONE_LINE : CONTROL, escape);
}

/**
 * `word` as one POSIX shell word: as it is when it holds only characters no shell treats specially,
 * else in single quotes (a quote inside as '\''), so a printed command pasted into a shell runs as
 * printed (a path holding `$(...)` ran it).
 */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_\/.,:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
