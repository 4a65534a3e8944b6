// Statistics of a sweep over seeds: mean and sample standard deviation, Student's t quantiles, and
// the paired difference of two variants with its 95% confidence interval (paired by seed: the
// same seed gives both variants the same data order and a paired start).

export interface Stat {
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator; 0 for one value). */
  std: number;
  n: number;
}

/** Mean and sample standard deviation of `v` (NaN mean for no values). */
export function stats(v: number[]): Stat {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : 0;
  return { mean, std, n: v.length };
}

const T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];

/**
 * Two-sided 95% quantile of Student's t with `df` degrees of freedom (the 0.975 quantile): the
 * usual table to three decimals for df 1 to 30; beyond, the Cornish-Fisher expansion around the
 * normal quantile (within 0.001 of the exact value there), to three decimals. NaN below 1.
 */
export function t95(df: number): number {
  if (!(df >= 1)) return NaN;
  const n = Math.floor(df);
  if (n <= 30) return T95[n - 1];
  const z = 1.959963984540054;
  const g1 = (z ** 3 + z) / 4;
  const g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96;
  const g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384;
  return Math.round((z + g1 / n + g2 / n ** 2 + g3 / n ** 3) * 1000) / 1000;
}

export type Verdict = 'wins' | 'loses' | 'within noise' | 'one seed: no interval';

export interface PairedDifference {
  a: string;
  b: string;
  /** The seeds both variants ran, ascending. */
  seeds: number[];
  /** a - b of the metric, per seed of `seeds`. */
  perSeed: number[];
  mean: number;
  std: number;
  /** 95% confidence interval of the mean difference (Student's t over the seeds, n - 1 degrees of freedom); null for one seed. */
  ci95: [number, number] | null;
  /** From the interval: 'wins' (above 0), 'loses' (below 0), else 'within noise'. */
  verdict: Verdict;
}

/** A finished run as pairedDifference reads it. */
export interface SeededRun {
  variant: string;
  seed: number;
  meanAccuracy: number;
}

/**
 * a - b of `metric` (default: mean accuracy over the tasks) paired by seed, over the seeds both
 * ran: mean, sample std, and the interval mean ± t95(n - 1) std / sqrt(n).
 */
export function pairedDifference<R extends SeededRun>(runs: readonly R[], a: string, b: string, metric: (r: R) => number = (r) => r.meanAccuracy): PairedDifference {
  const all = [...new Set(runs.map((r) => r.seed))].sort((x, y) => x - y);
  const seeds: number[] = [];
  const perSeed: number[] = [];
  for (const s of all) {
    const ra = runs.find((r) => r.variant === a && r.seed === s), rb = runs.find((r) => r.variant === b && r.seed === s);
    if (ra && rb) {
      seeds.push(s);
      perSeed.push(metric(ra) - metric(rb));
    }
  }
  const st = stats(perSeed);
  const half = perSeed.length > 1 ? (t95(perSeed.length - 1) * st.std) / Math.sqrt(perSeed.length) : NaN;
  const ci95: [number, number] | null = perSeed.length > 1 ? [st.mean - half, st.mean + half] : null;
  const verdict: Verdict = !ci95 ? 'one seed: no interval' : ci95[0] > 0 ? 'wins' : ci95[1] < 0 ? 'loses' : 'within noise';
  return { a, b, seeds, perSeed, mean: st.mean, std: st.std, ci95, verdict };
}
