import { WalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { WalLog } from './wal-log.js';

/**
 * What every reader of a live log does at its edges: refuse positions in removed segments,
 * and decide at the durable end whether to wait for more.
 */

/** Throws `WAL_REMOVED` when `lsn` lies in a segment that is no longer part of the log. */
export function assertNotRemoved(log: WalLog, lsn: Lsn): void {
  if (lsn < log.oldestLsn) {
    throw new WalshipError(
      'WAL_REMOVED',
      `requested WAL segment ${log.segmentName(lsn)} has already been removed (oldest available: ${formatLsn(log.oldestLsn)})`,
    );
  }
}

/**
 * At the readable end `horizon` (or the written end): resolves true once more is (with `follow`), false
 * when the reader should stop (no `follow`, or the log closed). Throws `WAL_CLOSED` if the
 * log stopped after an error, `ABORTED` on the signal.
 */
export async function awaitMore(log: WalLog, horizon: Lsn, follow: boolean, signal: AbortSignal | undefined, end: 'readable' | 'written' = 'readable'): Promise<boolean> {
  if (log.failure !== null) throw new WalshipError('WAL_CLOSED', `the log stopped: ${log.failure.message}`, { cause: log.failure });
  if (!follow) return false;
  return log.waitForTail(horizon, signal, end);
}
