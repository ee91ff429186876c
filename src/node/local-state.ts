import { errnoCode, WalshipError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { removeControlFile } from './control-file.js';

/** WAL segment files (set-aside `.partial` ones too) and their temporary files, timeline history files, snapshots and the partial snapshot. */
const LOCAL_STATE = /^(?:[0-9A-F]{24}(?:\.tmp|\.partial)?|[0-9A-F]{8}\.history(?:\.tmp)?|snapshot-[0-9A-F]{8}-[0-9A-F]{16}|snapshot\.partial)$/;

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

/**
 * A standby's directory on `timeline` (its control file's) holds no files of later timelines
 * but what an interrupted promotion, or an interrupted switch to its upstream's new timeline,
 * wrote before the control file recorded it: a history file and the copy of one segment, none
 * of it anything this node does not also hold on `timeline`. They are removed, so that a later
 * timeline of that number (its upstream's, say) is never mixed with them.
 */
export async function removeAbandonedTimelines(storage: Storage, timeline: number): Promise<string[]> {
  try {
    const later = (name: string): boolean => {
      const match = /^([0-9A-F]{8})(?:[0-9A-F]{16}(?:\.tmp)?|\.history(?:\.tmp)?)$/.exec(name);
      return match !== null && Number.parseInt(match[1] as string, 16) > timeline;
    };
    const names = (await storage.list()).filter(later);
    for (const name of names) {
      await storage.remove(name).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
    }
    if (names.length > 0) await storage.syncDirectory();
    return names;
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot clear abandoned timelines in ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}
