// Sizes as people read them: "812 B", "5.20 MB", "1.07 GB".

/**
 * `n` bytes with a unit: binary steps (1024, the default: file sizes in memory terms) or decimal
 * (1000: download sizes and rates, as the Hub and browsers give them).
 */
export function formatBytes(n: number, step: 1000 | 1024 = 1024): string {
  if (n < step) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / step;
  let u = 0;
  while (v >= step && u < units.length - 1) {
    v /= step;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`;
}
