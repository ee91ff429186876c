import { errnoCode, WalshipError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { removeControlFile } from './control-file.js';

/** WAL segment files and their temporary files, timeline history files, snapshots and the partial snapshot. */
const LOCAL_STATE = /^(?:[0-9A-F]{24}(?:\.tmp)?|[0-9A-F]{8}\.history(?:\.tmp)?|snapshot-[0-9A-F]{8}-[0-9A-F]{16}|snapshot\.partial)$/;

/**
 * Forgets a standby's local state so that its directory is new again: the control file goes
 * first (from then on the directory counts as never bootstrapped, whatever a crash leaves),
 * then the WAL segments and snapshots. The slots file and the lock are kept. Call it with the
 * directory's WAL closed and its lock held, so that no other node opens it meanwhile.
 */
export async function removeLocalState(storage: Storage): Promise<void> {
  await removeControlFile(storage);
  await removeLeftovers(storage);
}

/**
 * Removes WAL segments and snapshots that a directory without a control file still holds: what
 * an interrupted {@link removeLocalState} left behind. They belong to nothing.
 */
export async function removeLeftovers(storage: Storage): Promise<void> {
  try {
    const names = (await storage.list()).filter((name) => LOCAL_STATE.test(name));
    for (const name of names) {
      await storage.remove(name).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
    }
    if (names.length > 0) await storage.syncDirectory();
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot clear ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}
