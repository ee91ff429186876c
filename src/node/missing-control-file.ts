import { WalshipError, errnoCode } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { CONTROL_FILE, DISCARD_MARKER } from './control-file.js';

const SEGMENT = /^[0-9A-F]{24}$/;
const SET_ASIDE = /^[0-9A-F]{24}\.(?:partial|diverged)$/;
const HISTORY = /^[0-9A-F]{8}\.history$/;
const SNAPSHOT = /^snapshot-[0-9A-F]{8}-[0-9A-F]{16}$/;
const SLOTS = 'walship.slots';

/** A node's files in a directory (temporary files and the lock are not counted). */
export interface NodeFiles {
  /** WAL segment files, sorted. */
  readonly segments: readonly string[];
  /** `.partial` and `.diverged` segment copies. */
  readonly setAside: readonly string[];
  readonly histories: readonly string[];
  readonly snapshots: readonly string[];
  readonly slots: boolean;
  readonly discarding: boolean;
}

/** The node files in `storage`, by name. */
export async function listNodeFiles(storage: Storage): Promise<NodeFiles> {
  let names: string[];
  try {
    names = (await storage.list()).sort();
  } catch (err) {
    // A directory not created yet holds nothing.
    if (errnoCode(err) !== 'ENOENT') throw new WalshipError('WAL_IO', `cannot list ${storage.description}: ${(err as Error).message}`, { cause: err });
    names = [];
  }
  return {
    segments: names.filter((n) => SEGMENT.test(n)),
    setAside: names.filter((n) => SET_ASIDE.test(n)),
    histories: names.filter((n) => HISTORY.test(n)),
    snapshots: names.filter((n) => SNAPSHOT.test(n)),
    slots: names.includes(SLOTS),
    discarding: names.includes(DISCARD_MARKER),
  };
}

/** What a directory holds, for a message: "16 WAL segments (… to …, timeline 1), 1 snapshot". */
export function describeNodeFiles(files: NodeFiles): string {
  const parts: string[] = [];
  const { segments } = files;
  if (segments.length > 0) {
    const timelines = [...new Set(segments.map((n) => Number.parseInt(n.slice(0, 8), 16)))];
    const range = segments.length === 1 ? (segments[0] as string) : `${segments[0] as string} to ${segments.at(-1) as string}`;
    parts.push(`${count(segments.length, 'WAL segment')} (${range}, ${timelines.length === 1 ? 'timeline' : 'timelines'} ${timelines.join(', ')})`);
  }
  if (files.setAside.length > 0) parts.push(count(files.setAside.length, 'set-aside segment copy', 'set-aside segment copies'));
  if (files.histories.length > 0) parts.push(`${count(files.histories.length, 'timeline history file')} (${files.histories.join(', ')})`);
  if (files.snapshots.length > 0) parts.push(count(files.snapshots.length, 'snapshot'));
  if (files.slots) parts.push(SLOTS);
  if (files.discarding) parts.push(`${DISCARD_MARKER} (a standby's state being discarded)`);
  return parts.join(', ');
}

/**
 * A node opened on a directory without a control file: refuses with `CONTROL_FILE_MISSING`,
 * having written nothing, when the directory holds what only a node that had one writes
 * (PostgreSQL refuses to start without `pg_control`). A primary refuses any of a node's files
 * (opening them as a new node would give the WAL a new system id); a standby refuses WAL
 * segments unless an interrupted discard of its own state left them ({@link DISCARD_MARKER}):
 * snapshots and history files without WAL are what an interrupted bootstrap leaves, and the
 * slots file outlives a discard.
 */
export async function refuseMissingControlFile(storage: Storage, role: 'primary' | 'standby'): Promise<void> {
  const files = await listNodeFiles(storage);
  const orphaned =
    role === 'primary'
      ? files.segments.length + files.setAside.length + files.histories.length + files.snapshots.length > 0 || files.slots || files.discarding
      : files.segments.length > 0 && !files.discarding;
  if (!orphaned) return;
  const recover =
    role === 'primary'
      ? 'rebuild it from the WAL with rebuildControlFile({ dir, systemId }), systemId being what its standbys report (standby.systemId), then open again; to start a new cluster instead, empty the directory'
      : 'give the standby an empty directory (it bootstraps from its upstream)';
  throw new WalshipError(
    'CONTROL_FILE_MISSING',
    `${CONTROL_FILE} is missing in ${storage.description}, which holds ${describeNodeFiles(files)}: it is not a new data directory, and opening it as one would ${
      role === 'primary' ? 'give its WAL a new system id that none of its standbys accept' : 'discard its WAL'
    }. Nothing was written. To recover, ${recover}`,
  );
}

function count(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}
