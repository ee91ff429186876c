import { WalshipError } from '../errors.js';
import type { Lsn } from '../lsn.js';

/**
 * The sender's clock time of recently received WAL: for each `walData` message, the LSN
 * where it ends and its `sendTime` (when the sender sent that WAL, which it had flushed).
 * {@link timeFor} answers, for the end of a record, the send time of the message that
 * completed it. Bounded: when `capacity` messages are remembered, the two oldest are merged
 * into one that ends where the second ended and keeps the first one's (earlier) time, so a
 * far-behind reader gets a slightly early answer rather than none. Lookups must come in LSN
 * order (replay order): each one forgets the messages wholly before it.
 */
export class SendTimes {
  readonly #ends: Float64Array;
  readonly #times: Float64Array;
  #head = 0;
  #size = 0;
  /** What is remembered covers the LSNs after `#floor` up to the newest message's end; null before any message. */
  #floor: Lsn | null = null;

  constructor(readonly capacity = 4096) {
    if (!Number.isSafeInteger(capacity) || capacity < 2) throw new WalshipError('INVALID_ARGUMENT', `SendTimes capacity must be an integer >= 2, got ${String(capacity)}`);
    this.#ends = new Float64Array(capacity);
    this.#times = new Float64Array(capacity);
  }

  /** How many messages are remembered. */
  get size(): number {
    return this.#size;
  }

  /**
   * Remembers that the WAL from `startLsn` to `endLsn` was sent at `sendTime` (microseconds
   * since the epoch). WAL that does not continue where the last message ended (or that goes
   * back) starts the memory afresh.
   */
  record(startLsn: Lsn, endLsn: Lsn, sendTime: number): void {
    if (endLsn <= startLsn) return;
    const last = this.#size > 0 ? this.#endAt(this.#size - 1) : this.#floor;
    if (startLsn !== last) {
      this.#head = 0;
      this.#size = 0;
      this.#floor = startLsn;
    }
    if (this.#size === this.capacity) {
      // Merge the two oldest: the second's range, the first's (earlier) time.
      const second = (this.#head + 1) % this.capacity;
      this.#times[second] = this.#times[this.#head] as number;
      this.#head = second;
      this.#size--;
    }
    const at = (this.#head + this.#size) % this.capacity;
    this.#ends[at] = endLsn;
    this.#times[at] = sendTime;
    this.#size++;
  }

  /**
   * The send time (microseconds since the epoch) of the first remembered message whose end is
   * at or after `endLsn`: the one that carried the end of a record ending there. `null` for
   * WAL received before this memory began (or beyond what it has seen).
   */
  timeFor(endLsn: Lsn): number | null {
    if (this.#floor === null || endLsn <= this.#floor) return null;
    while (this.#size > 0 && this.#endAt(0) < endLsn) {
      this.#floor = this.#endAt(0);
      this.#head = (this.#head + 1) % this.capacity;
      this.#size--;
    }
    return this.#size === 0 ? null : (this.#times[this.#head] as number);
  }

  #endAt(i: number): Lsn {
    return this.#ends[(this.#head + i) % this.capacity] as number;
  }
}
