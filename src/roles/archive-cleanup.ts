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

/**
 * Removes the archive's segments before `keepSegment` (compared by position, ignoring the
 * timeline, as `pg_archivecleanup` does); resolves with their names.
 */
export async function removeArchivedBefore(archiver: Archiver, keepSegment: string, segmentSize: number, signal?: AbortSignal): Promise<string[]> {
  if (archiver.remove === undefined) throw new WalshipError('INVALID_OPTIONS', 'archiveCleanup: true needs an archiver with remove()');
  const keep = parseWalFileName(keepSegment, segmentSize);
  if (keep === null || keep.kind !== 'segment') throw new WalshipError('INVALID_ARGUMENT', `${keepSegment} is not a segment name`);
  const names = await archiver.list('', signal === undefined ? {} : { signal });
  const removed: string[] = [];
  for (const name of names.sort()) {
    const file = parseWalFileName(name, segmentSize);
    if (file === null || file.kind === 'history' || file.segno >= keep.segno) continue;
    await archiver.remove(name, signal === undefined ? {} : { signal });
    removed.push(name);
  }
  return removed;
}
