/**
 * Upper bounds, in seconds, of the commit-latency histogram's buckets (Prometheus' `le`): from
 * 100 µs (an `off` commit, a fast local disk) to 10 s (a synchronous standby that is far away
 * or stalled); `+Inf` follows them. Fixed, so that histograms of every node and every run can
 * be added up.
 */
export const COMMIT_LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

/** One bucket of a {@link HistogramSnapshot}: observations at or below `le`, cumulative as in Prometheus. */
export interface HistogramBucket {
  /** The upper bound in seconds; `Infinity` for the last bucket (`+Inf`). */
  readonly le: number;
  /** Observations at or below `le` (every observation for `+Inf`). */
  readonly count: number;
}

/** A histogram as plain data, shaped like Prometheus' (cumulative buckets, count and sum). */
export interface HistogramSnapshot {
  /** Cumulative buckets by increasing `le`, the last one `+Inf`. */
  readonly buckets: readonly HistogramBucket[];
  /** Observations in all (equal to the `+Inf` bucket's count). */
  readonly count: number;
  /** The sum of every observation, in seconds. */
  readonly sum: number;
}

/**
 * A latency histogram with fixed bucket bounds. Observing allocates nothing: one counter per
 * bucket in a preallocated array (not cumulative: the bucket an observation falls in is counted
 * once), a count and a sum; {@link snapshot} adds the buckets up.
 */
export class LatencyHistogram {
  readonly #bounds: readonly number[];
  /** Per bucket, the last one `+Inf`. */
  readonly #counts: Float64Array;
  #count = 0;
  #sum = 0;

  /** `bounds`: increasing upper bounds in seconds (`+Inf` is added). */
  constructor(bounds: readonly number[] = COMMIT_LATENCY_BUCKETS) {
    for (let i = 0; i < bounds.length; i++) {
      const bound = bounds[i] as number;
      if (!Number.isFinite(bound) || (i > 0 && bound <= (bounds[i - 1] as number))) throw new RangeError(`histogram bounds must be finite and increasing; got ${bounds.join(', ')}`);
    }
    this.#bounds = [...bounds];
    this.#counts = new Float64Array(bounds.length + 1);
  }

  /** Counts one observation of `seconds`. */
  observe(seconds: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && seconds > (bounds[i] as number)) i++;
    this.#counts[i] = (this.#counts[i] as number) + 1;
    this.#count++;
    this.#sum += seconds;
  }

  /** Observations so far. */
  get count(): number {
    return this.#count;
  }

  /** The buckets added up (cumulative), with count and sum. */
  snapshot(): HistogramSnapshot {
    const buckets: HistogramBucket[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      cumulative += this.#counts[i] as number;
      buckets.push({ le: i < this.#bounds.length ? (this.#bounds[i] as number) : Infinity, count: cumulative });
    }
    return { buckets, count: this.#count, sum: this.#sum };
  }
}
