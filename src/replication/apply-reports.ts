import type { Lsn } from '../lsn.js';
import type { StartupOption } from '../protocol/messages.js';

/**
 * When a standby tells its upstream how far replay got. Every status report carries the apply
 * position; what this decides is when replay alone is worth a report of its own.
 *
 * PostgreSQL's walreceiver sends the replay position with its write and flush replies, and
 * its startup process forces a reply only after replaying a commit record that asks for one
 * (`XACT_COMPLETION_APPLY_FEEDBACK`, set under `remote_apply`). walship's records carry no
 * such flag; an upstream that knows this standby reports on request instead sends an
 * `applyReportRequest` for the highest position a commit waits for it to apply. So:
 * - **asked**: a requested position reached is reported at once;
 * - **caught up**: replay at the readable end is reported within
 *   {@link APPLY_REPORT_INTERVAL_MS} unless a report goes out meanwhile (the next write or
 *   flush report usually does, on a busy stream);
 * - **behind**: while replay runs behind a steady stream, one report every
 *   {@link APPLY_REPORT_INTERVAL_MS}.
 *
 * Before the upstream's first request (an upstream that never asks: an older walship) the
 * caught-up report goes at once, as it did before requests existed.
 */
export class ApplyReports {
  /** The upstream asks for the positions its commits wait for. */
  #onRequest = false;
  /** The highest position asked for. */
  #requested: Lsn = 0;
  /** The apply position in the last report sent. */
  #reported: Lsn = -1;
  /** When the last report went out (scheduler milliseconds). */
  #reportedAt = Number.NEGATIVE_INFINITY;
  /** The readable end replay last caught up with and reported (or scheduled a report for). */
  #caughtUp: Lsn = -1;

  /** Whether the upstream has said it asks (its first `applyReportRequest`). */
  get onRequest(): boolean {
    return this.#onRequest;
  }

  /** The apply position in the last report sent; -1 before any. */
  get reported(): Lsn {
    return this.#reported;
  }

  /** A new stream: the upstream says again whether it asks. */
  reset(): void {
    this.#onRequest = false;
    this.#requested = 0;
    this.#caughtUp = -1;
  }

  /** The upstream asks for `applyLsn`; true when replay (at `applied`) is there already and it is to be reported now. */
  request(applyLsn: Lsn, applied: Lsn): boolean {
    this.#onRequest = true;
    if (applyLsn > this.#requested) this.#requested = applyLsn;
    return this.#due(applied);
  }

  /** A report went out carrying `applyLsn` at `now`. */
  sent(applyLsn: Lsn, now: number): void {
    this.#reported = applyLsn;
    this.#reportedAt = now;
  }

  /**
   * Replay applied up to `applied`, with the readable end at `readable`: `now` when a report
   * is to go now, `soon` when one is to go within {@link APPLY_REPORT_INTERVAL_MS} unless
   * another goes first, `none` otherwise.
   */
  replayed(applied: Lsn, readable: Lsn, now: number): 'now' | 'soon' | 'none' {
    if (this.#due(applied)) return 'now';
    if (applied >= readable && readable > this.#caughtUp) {
      this.#caughtUp = readable;
      return this.#onRequest ? 'soon' : 'now';
    }
    return applied > this.#reported && now - this.#reportedAt >= APPLY_REPORT_INTERVAL_MS ? 'now' : 'none';
  }

  /** A position asked for is reached and not yet reported. */
  #due(applied: Lsn): boolean {
    return this.#requested > 0 && this.#requested > this.#reported && applied >= this.#requested;
  }
}

/** How long an apply position may wait for a report to carry it, and how often replay running behind reports. */
export const APPLY_REPORT_INTERVAL_MS = 5;

/** The startup option a standby sends to say it reports replay when asked (see {@link ApplyReports}). */
export const APPLY_ON_REQUEST_OPTION: StartupOption = Object.freeze({ key: 'walship.apply_reports', value: 'on_request' });

/** Whether a standby's startup options say it reports replay when asked. */
export function reportsApplyOnRequest(options: readonly StartupOption[]): boolean {
  return options.some((option) => option.key === APPLY_ON_REQUEST_OPTION.key && option.value === APPLY_ON_REQUEST_OPTION.value);
}
