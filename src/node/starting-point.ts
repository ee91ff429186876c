import type { Application } from '../application.js';
import { WalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
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
  if (app.appliedLsn !== undefined) start = await app.appliedLsn();
  if (start === null && control.checkpoint !== null) {
    const { lsn, snapshot } = control.checkpoint;
    if (snapshot) {
      if (app.restore === undefined) {
        throw new WalshipError('INVALID_OPTIONS', `the last checkpoint (${formatLsn(lsn)}) is a snapshot, but the application has no restore() hook to load it`);
      }
      await app.restore(await snapshots.at(lsn));
      start = lsn;
    } else if (app.appliedLsn === undefined) {
      start = lsn;
    }
  }
  start ??= log.oldestLsn;
  if (start < log.oldestLsn) {
    throw new WalshipError(
      'WAL_REMOVED',
      `the application's state is at ${formatLsn(start)}, but the oldest WAL left is at ${formatLsn(log.oldestLsn)}: the batches between are gone (restore the application from a newer snapshot)`,
    );
  }
  return start;
}
