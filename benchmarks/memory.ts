// Peak resident memory of a stretch of work, measured by the kernel (Linux /proc).
import * as fs from 'fs';

function statusKb(field: 'VmRSS' | 'VmHWM'): number {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  if (!m) throw new Error(`no ${field} in /proc/self/status`);
  return Number(m[1]);
}

/** Resets the peak (VmHWM) to the current RSS and returns the current RSS in bytes. */
export function resetPeak(): number {
  fs.writeFileSync('/proc/self/clear_refs', '5');
  return statusKb('VmRSS') * 1024;
}

/** Peak RSS in bytes since the last resetPeak(). */
export function peakBytes(): number {
  return statusKb('VmHWM') * 1024;
}
