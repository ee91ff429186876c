import type { Archiver } from '../archive/archiver.js';
import { WalshipError } from '../errors.js';
import { parseWalFileName } from '../wal/segment-name.js';

/**
 * What `archiveCleanup` does after a standby's restartpoint (PostgreSQL's
 * `archive_cleanup_command = 'pg_archivecleanup … %r'`): `true` removes, from the `restore`
 * archive, every segment and `.partial` segment before `keep` (the segment of the
 * restartpoint, the oldest one a restart of this standby reads), on any timeline; history
 * files always stay. A function is called with `keep` instead, to clean up itself.
 */
export type ArchiveCleanup = boolean | ((keep: ArchiveCleanupPoint) => void | Promise<void>);

/** What an `archiveCleanup` function is given. */
export interface ArchiveCleanupPoint {
  /** The oldest segment a restart of the standby needs (`%r`): every one before it may go. */
  readonly keepSegment: string;
}

/** Options of {@link archivedBefore}. */
export interface ArchivedBeforeOptions {
  /**
   * Also pick backup history files (`<segment>.<offset>.backup`, which PostgreSQL's base
   * backups leave in an archive) before the kept segment, as `pg_archivecleanup -b` does.
   * @defaultValue false
   */
  readonly backupHistory?: boolean;
}

/** A PostgreSQL backup history file name: the segment of the backup's start, its offset there. */
const BACKUP_HISTORY = /^([0-9A-F]{24})\.[0-9A-F]{8}\.backup$/;

/**
 * The names among `names` (an archive's listing) that `pg_archivecleanup` removes for
 * `keepSegment`: segments and `.partial` segments before it, compared by position and
 * ignoring the timeline; with `backupHistory` also backup history files before it. Never a
 * timeline history file, nor a name walship does not know. Sorted.
 */
export function archivedBefore(names: readonly string[], keepSegment: string, segmentSize: number, options: ArchivedBeforeOptions = {}): string[] {
  const keep = parseWalFileName(keepSegment, segmentSize);
  if (keep === null || keep.kind !== 'segment') throw new WalshipError('INVALID_ARGUMENT', `${keepSegment} is not a segment name`);
  return [...names].sort().filter((name) => {
    const backup = options.backupHistory === true ? BACKUP_HISTORY.exec(name) : null;
    const file = parseWalFileName(backup === null ? name : (backup[1] as string), segmentSize);
    return file !== null && file.kind !== 'history' && file.segno < keep.segno;
  });
}

/**
 * Removes the archive's segments before `keepSegment` (compared by position, ignoring the
 * timeline, as `pg_archivecleanup` does; see {@link archivedBefore}); resolves with their names.
 */
export async function removeArchivedBefore(archiver: Archiver, keepSegment: string, segmentSize: number, signal?: AbortSignal): Promise<string[]> {
  if (archiver.remove === undefined) throw new WalshipError('INVALID_OPTIONS', 'archiveCleanup: true needs an archiver with remove()');
  const call = signal === undefined ? {} : { signal };
  const names = archivedBefore(await archiver.list('', call), keepSegment, segmentSize);
  for (const name of names) await archiver.remove(name, call);
  return names;
}
