import type { Lsn } from '../lsn.js';

/** How many send samples a sender remembers; older ones are merged away when it is full. */
const CAPACITY = 1024;

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
 * PostgreSQL's lag definition: the time between the primary sending WAL up to an LSN and
 * hearing that the standby wrote, flushed or applied it. The sender records (LSN, time)
 * samples as it sends; each report consumes the samples it covers, and the newest one
 * consumed gives the lag. A ring of fixed size bounds memory: when it is full the newest
 * sample is overwritten, so a lag is measured against a slightly later send time but
 * never grows the buffer.
 *
 * When the standby reports twice in a row that it has applied everything sent, the lags
 * are cleared (null), as PostgreSQL does, rather than showing stale values forever.
 */
export class LagTracker {
  readonly #lsns = new Float64Array(CAPACITY);
  readonly #times = new Float64Array(CAPACITY);
  #head = 0; // next slot to write
  readonly #reads = [0, 0, 0];
  readonly #lags: (number | null)[] = [null, null, null];
  #lastSentLsn = 0;
  #fullyAppliedLastTime = false;

  /** Notes that WAL up to `lsn` was sent at `now` (ms). */
  sent(lsn: Lsn, now: number): void {
    if (lsn <= this.#lastSentLsn) return;
    this.#lastSentLsn = lsn;
    const next = (this.#head + 1) % CAPACITY;
    if (this.#reads.includes(next)) {
      // Full: move the newest sample forward instead of growing.
      const newest = (this.#head + CAPACITY - 1) % CAPACITY;
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
        read = (read + 1) % CAPACITY;
      }
      this.#reads[which] = read;
      if (time !== null) this.#lags[which] = Math.max(0, now - time);
      if (clear) this.#lags[which] = null;
    }
    return this.lags;
  }

  get lags(): Lags {
    return { writeLagMs: this.#lags[WRITE] ?? null, flushLagMs: this.#lags[FLUSH] ?? null, replayLagMs: this.#lags[APPLY] ?? null };
  }
}
