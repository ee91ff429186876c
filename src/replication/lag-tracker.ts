import type { Lsn } from '../lsn.js';

/** How many samples a sender remembers by default; when full, the newest is overwritten. */
export const LAG_TRACKER_CAPACITY = 1024;

/** The three positions a standby reports, as indexes into the tracker's read heads. */
const WRITE = 0;
const FLUSH = 1;
const APPLY = 2;

/** Replication lags in milliseconds (`pg_stat_replication`'s write/flush/replay lag); null when unknown or idle. */
export interface Lags {
  readonly writeLagMs: number | null;
  readonly flushLagMs: number | null;
  readonly replayLagMs: number | null;
}

/**
 * PostgreSQL's lag definition: the time between the primary flushing WAL up to an LSN and
 * hearing that the standby wrote, flushed or applied it. The sender records (LSN, time)
 * samples as it sends: the log's flushed end and the moment it saw it, as PostgreSQL's
 * walsender does. Each report consumes the samples it covers, and the newest one consumed
 * gives the lag. A ring of fixed size bounds memory: when it is full the newest sample is
 * overwritten, so a lag is measured against a slightly later time but never grows the
 * buffer.
 *
 * When the standby reports twice in a row that it has applied everything sent, the lags
 * that the report does not measure anew are cleared (null), as PostgreSQL does, rather than
 * showing stale values until more WAL traffic arrives.
 */
export class LagTracker {
  readonly #capacity: number;
  readonly #lsns: Float64Array;
  readonly #times: Float64Array;
  #head = 0; // next slot to write
  readonly #reads = [0, 0, 0];
  readonly #lags: (number | null)[] = [null, null, null];
  #lastSentLsn = 0;
  #fullyAppliedLastTime = false;

  /** `capacity`: samples remembered (at least 2); memory is fixed at construction. */
  constructor(capacity = LAG_TRACKER_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 2) throw new RangeError(`capacity must be an integer >= 2, got ${capacity}`);
    this.#capacity = capacity;
    this.#lsns = new Float64Array(capacity);
    this.#times = new Float64Array(capacity);
  }

  /** Samples waiting for a report to consume them (for at least one of write, flush, apply). */
  get pending(): number {
    const oldest = Math.min(...this.#reads.map((read) => (read <= this.#head ? read : read - this.#capacity)));
    return this.#head - oldest;
  }

  /** Notes that WAL up to `lsn` was flushed (and is being sent) at `now` (ms). */
  sent(lsn: Lsn, now: number): void {
    if (lsn <= this.#lastSentLsn) return;
    this.#lastSentLsn = lsn;
    const next = (this.#head + 1) % this.#capacity;
    if (this.#reads.includes(next)) {
      // Full: move the newest sample forward instead of growing.
      const newest = (this.#head + this.#capacity - 1) % this.#capacity;
      this.#lsns[newest] = lsn;
      this.#times[newest] = now;
      return;
    }
    this.#lsns[this.#head] = lsn;
    this.#times[this.#head] = now;
    this.#head = next;
  }

  /** Takes in a standby report received at `now` (ms) and returns the lags it yields. */
  reported(writeLsn: Lsn, flushLsn: Lsn, applyLsn: Lsn, sentLsn: Lsn, now: number): Lags {
    const clear = applyLsn >= sentLsn && this.#fullyAppliedLastTime;
    this.#fullyAppliedLastTime = applyLsn >= sentLsn;
    const positions = [writeLsn, flushLsn, applyLsn];
    for (const which of [WRITE, FLUSH, APPLY]) {
      let read = this.#reads[which] as number;
      let time: number | null = null;
      while (read !== this.#head && (this.#lsns[read] as number) <= (positions[which] as number)) {
        time = this.#times[read] as number;
        read = (read + 1) % this.#capacity;
      }
      this.#reads[which] = read;
      if (time !== null) this.#lags[which] = Math.max(0, now - time);
      else if (clear) this.#lags[which] = null;
    }
    return this.lags;
  }

  get lags(): Lags {
    return { writeLagMs: this.#lags[WRITE] ?? null, flushLagMs: this.#lags[FLUSH] ?? null, replayLagMs: this.#lags[APPLY] ?? null };
  }
}
