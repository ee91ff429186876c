import { LatencyHistogram, type HistogramSnapshot } from '../latency-histogram.js';

/** A commit level's counters, in `Primary.metrics().commits`. */
export interface CommitLevelMetrics {
  /** Commits at this level that resolved. */
  readonly commits: number;
  /**
   * Commits at this level that rejected: never appended (a bad entry, a failed primary), dropped
   * (disk full), or stopped waiting (`ABORTED`, `SYNC_REP_CANCELED`: those batches stay committed).
   */
  readonly errors: number;
  /** Time from the `commit()` call to its resolution, of the commits that resolved, in seconds. */
  readonly latency: HistogramSnapshot;
}

/**
 * The writer's commit counters, one set per commit level, allocated once: counting a commit
 * adds to numbers and a preallocated histogram, nothing more (the commit path stays free of
 * per-commit allocations).
 */
export class CommitMetrics<Level extends string> {
  readonly #levels: readonly Level[];
  readonly #latency: Record<string, LatencyHistogram> = Object.create(null) as Record<string, LatencyHistogram>;
  readonly #errors: Record<string, number> = Object.create(null) as Record<string, number>;

  constructor(levels: readonly Level[]) {
    this.#levels = levels;
    for (const level of levels) {
      this.#latency[level] = new LatencyHistogram();
      this.#errors[level] = 0;
    }
  }

  /** A commit at `level` resolved after `seconds`. */
  resolved(level: Level, seconds: number): void {
    (this.#latency[level] as LatencyHistogram).observe(seconds);
  }

  /** A commit at `level` rejected. */
  rejected(level: Level): void {
    this.#errors[level] = (this.#errors[level] as number) + 1;
  }

  /** Every level's counters. */
  snapshot(): Record<Level, CommitLevelMetrics> {
    const result = {} as Record<Level, CommitLevelMetrics>;
    for (const level of this.#levels) {
      const latency = (this.#latency[level] as LatencyHistogram).snapshot();
      result[level] = { commits: latency.count, errors: this.#errors[level] as number, latency };
    }
    return result;
  }
}
