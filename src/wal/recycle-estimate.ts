import type { Lsn } from '../lsn.js';

/**
 * How many removed segment files a log keeps for reuse, as PostgreSQL decides at each
 * checkpoint (`XLOGfileslop` and `CheckPointDistanceEstimate` in its `xlog.c`): as many as
 * the WAL it expects before the next removal, estimated from the WAL written between
 * removals, never fewer than `min` (PostgreSQL's `min_wal_size`) nor more than `max` (its
 * `max_wal_size`). A burst of WAL (a standby catching up, a bulk load) is often followed by
 * another of its size, and a recycled file has its blocks allocated and may still have its
 * pages cached, where a new file has neither.
 *
 * The estimate follows PostgreSQL's rule: a longer distance than the estimate replaces it,
 * a shorter one lowers it by a tenth of the difference. The count only decides what becomes
 * of the files a removal takes away: spare files already there stay until the writer uses
 * them, as in PostgreSQL. The estimate is kept in memory only: a reopened log starts from
 * `min` again.
 */
export class RecycleEstimate {
  readonly #segmentSize: number;
  readonly #min: number;
  readonly #max: number;
  /** WAL expected between two removals, bytes. */
  #estimate = 0;
  /** The insert position at the last removal (at first, where the log opened). */
  #lastEnd: Lsn;

  constructor(options: { segmentSize: number; min: number; max: number; openedAt: Lsn }) {
    this.#segmentSize = options.segmentSize;
    this.#min = options.min;
    this.#max = Math.max(options.min, options.max);
    this.#lastEnd = options.openedAt;
  }

  /** WAL expected between two removals, bytes (0 before the first). */
  get estimate(): number {
    return this.#estimate;
  }

  /** A removal, with the insert position at `insertLsn`: how many spare segment files to keep. */
  spareSegments(insertLsn: Lsn): number {
    const distance = Math.max(0, insertLsn - this.#lastEnd);
    this.#lastEnd = Math.max(this.#lastEnd, insertLsn);
    this.#estimate = distance > this.#estimate ? distance : 0.9 * this.#estimate + 0.1 * distance;
    return Math.min(this.#max, Math.max(this.#min, Math.ceil(this.#estimate / this.#segmentSize)));
  }
}
