import type { Application } from '../application.js';
import { WalshipError, isWalshipError } from '../errors.js';
import { formatLsn, isLsn, type Lsn } from '../lsn.js';
import type { WalLog } from '../wal/wal-log.js';
import type { ControlData } from './control-file.js';
import type { SnapshotStore } from './snapshot-store.js';

/**
 * Brings the application to a known position and returns where replay continues: its own
 * `appliedLsn()` if it keeps durable state, else the latest checkpoint (restoring that
 * checkpoint's snapshot), else the oldest WAL, replayed from the start.
 */
export async function restoreApplication(app: Application, log: WalLog, control: ControlData, snapshots: SnapshotStore): Promise<Lsn> {
  let start: Lsn | null = null;
  if (app.appliedLsn !== undefined) {
    try {
      start = await app.appliedLsn();
    } catch (err) {
      throw hookFailed('appliedLsn', err);
    }
    if (start !== null && !isLsn(start)) {
      throw new WalshipError('APPLY_FAILED', `the application's appliedLsn() returned ${String(start)}; it must return an LSN (a non-negative safe integer) or null`);
    }
  }
  if (start === null && control.checkpoint !== null) {
    const { lsn, snapshot } = control.checkpoint;
    if (snapshot) {
      if (app.restore === undefined) {
        throw new WalshipError('INVALID_OPTIONS', `the last checkpoint (${formatLsn(lsn)}) is a snapshot, but the application has no restore() hook to load it`);
      }
      const snapshot = await snapshots.at(lsn);
      try {
        await app.restore(snapshot);
      } catch (err) {
        throw hookFailed('restore', err);
      }
      start = lsn;
    } else if (app.appliedLsn === undefined) {
      start = lsn;
    }
  }
  if (start === null) {
    // No state at all: replay must start where the log began (segment 1), and that WAL must still be there.
    start = log.segmentSize;
    if (log.oldestLsn > start) {
      throw new WalshipError(
        'WAL_REMOVED',
        `the application has no state to start from, and the WAL before ${formatLsn(log.oldestLsn)} has been removed: replaying only the rest would lose batches (restore the application from a snapshot)`,
      );
    }
    start = log.oldestLsn;
  }
  if (start < log.oldestLsn) {
    throw new WalshipError(
      'WAL_REMOVED',
      `the application's state is at ${formatLsn(start)}, but the oldest WAL left is at ${formatLsn(log.oldestLsn)}: the batches between are gone (restore the application from a newer snapshot)`,
    );
  }
  return start;
}

/** The application's own hook threw while walship brought its state back: `APPLY_FAILED`, the original as `cause`. */
function hookFailed(hook: 'restore' | 'appliedLsn', err: unknown): WalshipError {
  // walship's own errors (reading the snapshot failed: WAL_IO, WAL_CORRUPT) keep their code.
  if (isWalshipError(err)) return err;
  const why = err instanceof Error ? err.message : String(err);
  return new WalshipError('APPLY_FAILED', `the application's ${hook}() failed: ${why}`, { cause: err });
}
