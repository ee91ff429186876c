import type { Lsn } from '../lsn.js';
import type { StartupOption } from '../protocol/messages.js';

/**
 * Flushes on request. PostgreSQL's walreceiver makes every message it receives durable at once,
 * whether or not a commit waits for it; with three nodes on one disk, an asynchronous standby's
 * fdatasyncs then queue with those the commits wait for (bench/README.md measures it). A walship
 * standby with `flushDelayMs` above 0 says in its startup options that it flushes on request.
 * Its upstream then asks it, with a `flushRequest`, for the WAL a commit waits for this standby
 * to write (`remote_write`), or to flush or apply: sent with that WAL (the commit says so as it
 * appends), and only to a standby whose confirmations commits need now (a `sync` one; under
 * `ANY n`, `n` of the `quorum` ones: `SyncRep.asks`). What is asked to be written is written
 * at once, what is asked to be flushed is flushed at once; WAL nobody asked to be flushed is
 * flushed at most once every `flushDelayMs`: at once when the last flush is that old (an idle
 * stream keeps its latency), else when it is. A request is a hint for latency only: whatever
 * the requests, every byte received is durable within `flushDelayMs`, and a standby whose
 * upstream never asks flushes every message at once. While a standby is not asked, its
 * upstream also sends it WAL at that pace ({@link sendPaceOf}).
 */

/** The startup option a standby sends to say it flushes on request. */
export const FLUSH_ON_REQUEST_OPTION: StartupOption = Object.freeze({ key: 'walship.flush', value: 'on_request' });

/** The startup option that carries such a standby's `flushDelayMs` (see {@link sendPaceOf}). */
const FLUSH_DELAY_KEY = 'walship.flush_delay_ms';

/** A standby's startup options that say it flushes on request, paced to `flushDelayMs`. */
export function flushOnRequestOptions(flushDelayMs: number): StartupOption[] {
  return [FLUSH_ON_REQUEST_OPTION, { key: FLUSH_DELAY_KEY, value: String(flushDelayMs) }];
}

/** Whether a standby's startup options say it flushes on request. */
export function flushesOnRequest(options: readonly StartupOption[]): boolean {
  return options.some((option) => option.key === FLUSH_ON_REQUEST_OPTION.key && option.value === FLUSH_ON_REQUEST_OPTION.value);
}

/**
 * The pace (ms) at which a standby that flushes on request takes its WAL while it is not asked
 * (not `sync`, not an asked quorum member, see `SyncRep.asks`): its `flushDelayMs` (it
 * flushes, and replays, no more often than that anyway); 0 for a standby that does not say
 * so, or says something out of range (1–1,000).
 * Its sender then sends it the WAL written meanwhile, and the primary's durable end, at most
 * once per pace: on one machine each message costs the primary a socket write and the standby
 * a wake-up (bench/README.md measures it).
 */
export function sendPaceOf(options: readonly StartupOption[]): number {
  if (!flushesOnRequest(options)) return 0;
  const value = options.find((option) => option.key === FLUSH_DELAY_KEY)?.value;
  const ms = value === undefined || !/^[0-9]{1,4}$/.test(value) ? 0 : Number(value);
  return ms >= 1 && ms <= 1000 ? ms : 0;
}

/**
 * The standby's side: when the WAL received but not yet durable is flushed. Times are
 * milliseconds on one monotonic clock.
 */
export class FlushPacing {
  readonly #delayMs: number;
  /** Whether the upstream asks (it sent a request since streaming started). */
  #asking = false;
  /** The highest positions asked to be written, and flushed. */
  #writeRequested: Lsn = 0;
  #requested: Lsn = 0;
  /** When the last flush started; -Infinity before the first. */
  #lastFlushAt = Number.NEGATIVE_INFINITY;

  constructor(delayMs: number) {
    this.#delayMs = delayMs;
  }

  /** A new stream: its upstream says again whether it asks. */
  reset(): void {
    this.#asking = false;
    this.#writeRequested = 0;
    this.#requested = 0;
  }

  /** The upstream asked for WAL up to `writeLsn` to be written, and up to `flushLsn` to be flushed, at once. */
  request(writeLsn: Lsn, flushLsn: Lsn): void {
    this.#asking = this.#delayMs > 0;
    this.#writeRequested = Math.max(this.#writeRequested, writeLsn, flushLsn);
    this.#requested = Math.max(this.#requested, flushLsn);
  }

  /** The highest position asked to be written at once (or flushed: that writes it too). */
  get writeRequested(): Lsn {
    return this.#writeRequested;
  }

  /**
   * How long the flush of what was received past `flushedLsn` may wait from `now`: 0 to flush
   * now (asked for, not paced, or the last flush is old enough), else the milliseconds left of
   * `flushDelayMs` since the last flush began.
   */
  waitMs(flushedLsn: Lsn, now: number): number {
    if (!this.#asking || this.#requested > flushedLsn) return 0;
    return Math.max(0, this.#lastFlushAt + this.#delayMs - now);
  }

  /** A flush starts at `now`. */
  flushing(now: number): void {
    this.#lastFlushAt = now;
  }
}
