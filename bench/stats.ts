/**
 * Latency samples and the statistics the benchmark reports: nearest-rank percentiles of
 * one run, and the median of several runs.
 */

/** Collects latencies in microseconds without allocating per sample. */
export class LatencyRecorder {
  #samples = new Float64Array(1 << 16);
  #count = 0;

  /** Number of samples recorded. */
  get count(): number {
    return this.#count;
  }

  /** Records one latency, in microseconds. */
  add(us: number): void {
    if (this.#count === this.#samples.length) {
      const grown = new Float64Array(this.#samples.length * 2);
      grown.set(this.#samples);
      this.#samples = grown;
    }
    this.#samples[this.#count++] = us;
  }

  /** The nearest-rank percentiles `ps` (each 0..1) of the samples; NaN when there are none. */
  percentiles(ps: readonly number[]): number[] {
    const sorted = this.#samples.slice(0, this.#count).sort();
    return ps.map((p) => percentileOfSorted(sorted, p));
  }
}

/** Nearest-rank percentile `p` (0..1) of ascending `sorted`; NaN when empty. */
export function percentileOfSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(p * sorted.length)));
  return sorted[rank - 1] as number;
}

/** The median of `values`; NaN when empty. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** The figures of one measured run. Fields that do not apply are NaN. */
export interface RunResult {
  /** Operations (appends, commits, write+fdatasync pairs) per second. */
  readonly opsPerSec: number;
  /** Payload bytes per second. */
  readonly bytesPerSec: number;
  /** Median latency of one operation, in microseconds. */
  readonly p50Us: number;
  /** 99th-percentile latency of one operation, in microseconds. */
  readonly p99Us: number;
  /** fdatasync rounds per second (walship commit runs only). */
  readonly syncsPerSec: number;
}

/** The runs of one case and the median of each figure across them. */
export interface CaseSummary {
  readonly runs: readonly RunResult[];
  readonly median: RunResult;
}

/** Summarizes the runs of one case: the median of each figure, taken independently. */
export function summarize(runs: readonly RunResult[]): CaseSummary {
  const pick = (key: keyof RunResult): number => median(runs.map((r) => r[key]).filter((v) => !Number.isNaN(v)));
  return {
    runs,
    median: {
      opsPerSec: pick('opsPerSec'),
      bytesPerSec: pick('bytesPerSec'),
      p50Us: pick('p50Us'),
      p99Us: pick('p99Us'),
      syncsPerSec: pick('syncsPerSec'),
    },
  };
}

/** The per-run ratios `a[i] / b[i]` of runs that were measured side by side. */
export function pairedRatios(a: readonly number[], b: readonly number[]): number[] {
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) ratios.push((a[i] as number) / (b[i] as number));
  return ratios;
}
