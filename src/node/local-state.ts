import { errnoCode, WalCorruptError, WalshipError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { DISCARD_MARKER, removeControlFile, type ControlData } from './control-file.js';
import { RECORD_HEADER_SIZE } from '../wal/record.js';
import { parseSegmentFileName, segmentFileName } from '../wal/segment-name.js';
import { branchHistory, historyFileName, readTimelineHistory, writeTimelineHistory, type TimelineHistory } from '../wal/timeline-history.js';

/** WAL segment files (set-aside `.partial` ones too) and their temporary files, timeline history files, snapshots and the partial snapshot. */
const LOCAL_STATE = /^(?:[0-9A-F]{24}(?:\.tmp|\.partial)?|[0-9A-F]{8}\.history(?:\.tmp)?|snapshot-[0-9A-F]{8}-[0-9A-F]{16}|snapshot\.partial)$/;

/**
 * Forgets a standby's local state so that its directory is new again: the control file goes
 * first, after the `walship.discarding` marker is written (from then on the directory counts as
 * never bootstrapped, whatever a crash leaves, and what it still holds as leftovers), then the
 * WAL segments and snapshots, then the marker. The slots file and the lock are kept. Call it with the
 * directory's WAL closed and its lock held, so that no other node opens it meanwhile.
 */
export async function removeLocalState(storage: Storage): Promise<void> {
  await removeControlFile(storage);
  await removeLeftovers(storage);
}

/**
 * Removes WAL segments and snapshots that a directory without a control file still holds: what
 * an interrupted {@link removeLocalState} left behind (with its `walship.discarding` marker), or
 * an interrupted bootstrap (snapshots, history files). They belong to nothing. A bootstrap
 * calls it only after `refuseMissingControlFile` found no WAL of a node whose control file was
 * lost.
 */
export async function removeLeftovers(storage: Storage): Promise<void> {
  try {
    const all = await storage.list();
    const names = all.filter((name) => LOCAL_STATE.test(name));
    for (const name of names) await removeIfThere(storage, name);
    if (names.length > 0) await storage.syncDirectory();
    // Last: until the files are gone, it says they are an interrupted discard's.
    if (all.includes(DISCARD_MARKER)) {
      await removeIfThere(storage, DISCARD_MARKER);
      await storage.syncDirectory();
    }
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot clear ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A standby's directory on `timeline` (its control file's) holds no files of later timelines
 * but what an interrupted promotion, or an interrupted switch to its upstream's new timeline,
 * wrote before the control file recorded it (or after, when the promotion failed and the
 * control file was put back): a history file, and the segment holding the switch point,
 * renamed onto the later timeline. That segment is moved back, its end-of-recovery record at
 * the switch point zeroed (nothing else was written there before the control file recorded
 * the promotion); anything else of a later timeline is removed, so that a later timeline of
 * that number (its upstream's, say) is never mixed with them. Returns what it removed or moved.
 */
export async function removeAbandonedTimelines(storage: Storage, timeline: number, segmentSize: number): Promise<string[]> {
  try {
    const names = await storage.list();
    const tli = (name: string): number => Number.parseInt(name.slice(0, 8), 16);
    const segments = names.filter((name) => /^[0-9A-F]{24}$/.test(name) && tli(name) > timeline);
    const histories = names.filter((name) => /^[0-9A-F]{8}\.history(?:\.tmp)?$/.test(name) && tli(name) > timeline);
    // Decided for every file first: a refusal changes nothing.
    const plan: { name: string; backTo: string | null; within: number }[] = [];
    for (const name of segments) {
      const segno = parseSegmentFileName(name, segmentSize)?.segno;
      const own = segno === undefined ? null : segmentFileName(timeline, segno, segmentSize);
      let history = null;
      if (own !== null && !names.includes(own)) {
        // The file may hold this timeline's WAL below the switch point: moved back, never
        // removed, which needs the switch point. A failed promotion wrote the history file
        // before it put the control file back, so a missing one is damage (a damaged one is
        // WAL_CORRUPT from the read).
        history = await readTimelineHistory(storage, tli(name));
        if (history === null) {
          throw new WalCorruptError(
            name,
            0,
            `${historyFileName(tli(name))} is missing, so where timeline ${tli(name)} left timeline ${timeline} is unknown, and ${own} is not there: this file may hold its WAL; nothing was changed (restore the history file, or give the standby an empty directory)`,
          );
        }
      }
      const switchLsn = history?.entries.find((e) => e.timeline === timeline)?.switchLsn;
      const moveBack = own !== null && switchLsn !== undefined && Math.floor(switchLsn / segmentSize) === segno && switchLsn % segmentSize !== 0;
      plan.push({ name, backTo: moveBack ? own : null, within: moveBack ? switchLsn % segmentSize : 0 });
    }
    const touched: string[] = [];
    for (const { name, backTo, within } of plan) {
      if (backTo !== null) {
        const file = await storage.open(name);
        try {
          await file.write(Buffer.alloc(Math.min(RECORD_HEADER_SIZE, segmentSize - within)), within);
          await file.datasync();
        } finally {
          await file.close();
        }
        await storage.rename(name, backTo);
      } else {
        await removeIfThere(storage, name);
      }
      touched.push(name);
    }
    for (const name of [...histories, ...names.filter((n) => /^[0-9A-F]{24}\.tmp$/.test(n) && tli(n) > timeline)]) {
      await removeIfThere(storage, name);
      touched.push(name);
    }
    if (touched.length > 0) await storage.syncDirectory();
    return touched;
  } catch (err) {
    if (err instanceof WalshipError) throw err;
    throw new WalshipError('WAL_IO', `cannot clear abandoned timelines in ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Writes the history file of the control file's timeline when a crash lost it: a promotion or a
 * switch to an upstream's new timeline records the timeline with its history entry
 * (`switchedFrom`) in the control file first and writes the file after. The file is rebuilt
 * from that entry and the parent timeline's history file, which was on disk before. Returns
 * whether it wrote it. Call it with the directory's lock held, before the WAL is opened.
 */
export async function restoreTimelineHistory(storage: Storage, control: ControlData): Promise<boolean> {
  const history = await lostTimelineHistory(storage, control);
  if (history === null) return false;
  await writeTimelineHistory(storage, history);
  return true;
}

/**
 * The history of the control file's timeline rebuilt as {@link restoreTimelineHistory} would
 * write it, without writing it (the CLI reads a directory beside its node); `null` when its
 * file is there or there is nothing to rebuild (timeline 1, no `switchedFrom`).
 */
export async function lostTimelineHistory(storage: Storage, control: ControlData): Promise<TimelineHistory | null> {
  const from = control.switchedFrom;
  if (control.timeline === 1 || from === undefined) return null;
  if ((await readTimelineHistory(storage, control.timeline)) !== null) return null;
  const parent = await readTimelineHistory(storage, from.timeline);
  if (parent === null) {
    throw new WalshipError(
      'WAL_CORRUPT',
      `${historyFileName(control.timeline)} and ${historyFileName(from.timeline)} are missing in ${storage.description}: timeline ${control.timeline}'s history cannot be rebuilt; restore the node from a base backup`,
    );
  }
  return branchHistory(parent, from.switchLsn, from.reason, control.timeline);
}

async function removeIfThere(storage: Storage, name: string): Promise<void> {
  await storage.remove(name).catch((err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
  });
}
