import { randomBytes } from 'node:crypto';
import { WalshipError, errnoCode } from '../errors.js';
import type { Lsn } from '../lsn.js';
import { damaged, type JsonFileSpec } from '../storage/json-file.js';
import type { Storage } from '../storage/storage.js';
import { readTwoCopyFile, writeTwoCopyFile, type TwoCopyWriteOptions } from '../storage/two-copy-file.js';
import { clipReason, type TimelineHistory, type TimelineHistoryEntry } from '../wal/timeline-history.js';

/** The node's control file: its identity and where its application's state is durable. */
export const CONTROL_FILE = 'walship.control';
const SPEC: JsonFileSpec = {
  name: CONTROL_FILE,
  // 2: the node's state (in production, in recovery, shut down) is recorded. The two-copy
  // layout (and `switchedFrom`) left the format as it was: older files are still read.
  format: 2,
  // The two-copy file's size, or an older single-copy one's (far more than its JSON needs).
  maxBytes: 64 * 1024,
  repairHint: 'restore the node from a base backup',
  enospcTransient: false,
};

/**
 * What the node is, as PostgreSQL's `pg_control` records it (`DBState`): a primary
 * (`in-production`, `shut-down` after a clean close) or a standby (`in-recovery`,
 * `shut-down-in-recovery`). Written at every change, so that a standby's directory is never
 * opened as a primary, nor a former primary's as a standby without a lineage check.
 */
export type NodeState = 'in-production' | 'shut-down' | 'in-recovery' | 'shut-down-in-recovery';

const NODE_STATES: readonly NodeState[] = ['in-production', 'shut-down', 'in-recovery', 'shut-down-in-recovery'];

/** Whether a node in `state` is a standby (it replays WAL from upstream and writes none of its own). */
export function isRecoveryState(state: NodeState): boolean {
  switch (state) {
    case 'in-recovery':
    case 'shut-down-in-recovery':
      return true;
    case 'in-production':
    case 'shut-down':
      return false;
  }
}

/** What a node's control file records (PostgreSQL's `pg_control`, the part walship needs). */
export interface ControlData {
  /** What the node is: a primary or a standby, running or shut down. */
  readonly state: NodeState;
  /** The cluster's identity (16 hex digits): chosen by the first primary, copied by standbys. */
  readonly systemId: string;
  /** The WAL's segment size (a standby's must equal its primary's). */
  readonly segmentSize: number;
  /** The timeline the node's WAL is on. */
  readonly timeline: number;
  /**
   * Where {@link timeline} branched off (the last entry of its history: the parent timeline,
   * the switch point, the reason), recorded with it by a promotion or a switch to an upstream's
   * new timeline. The timeline's history file is written after the control file, and rebuilt
   * from this and the parent's history file when a crash came first. Absent on timeline 1, and
   * in control files of older walship versions, whose history files were written first.
   */
  readonly switchedFrom?: TimelineHistoryEntry;
  /**
   * The latest checkpoint: the application's state is durable up to `lsn`, kept by the
   * application itself (`snapshot: false`) or in the local snapshot file of that LSN.
   */
  readonly checkpoint: { readonly lsn: Lsn; readonly snapshot: boolean } | null;
  /** A standby's state is consistent once replay reaches this LSN (the end of its base backup). */
  readonly consistentLsn: Lsn;
}

/** A random, non-zero 64-bit cluster identity (PostgreSQL's database system identifier). */
export function newSystemId(): string {
  for (;;) {
    const id = randomBytes(8).toString('hex');
    if (id !== '0000000000000000') return id;
  }
}

/** {@link ControlData.switchedFrom} for a node moving onto `history.timeline` (timeline 1 has none). */
export function switchedFromOf(history: TimelineHistory): Pick<ControlData, 'switchedFrom'> {
  const last = history.entries.at(-1);
  if (last === undefined) return {};
  return { switchedFrom: { timeline: last.timeline, switchLsn: last.switchLsn, reason: clipReason(last.reason) } };
}

/** Reads the control file; `null` when there is none (a new node). A damaged one is `WAL_CORRUPT`. */
export async function readControlFile(storage: Storage): Promise<ControlData | null> {
  const data = await readTwoCopyFile(storage, SPEC);
  if (data === null) return null;
  if (!isControlData(data)) throw damaged(SPEC, storage, 'unexpected content');
  return {
    state: data.state,
    systemId: data.systemId,
    segmentSize: data.segmentSize,
    timeline: data.timeline,
    ...(data.switchedFrom === undefined ? {} : { switchedFrom: { ...data.switchedFrom } }),
    checkpoint: data.checkpoint === null ? null : { lsn: data.checkpoint.lsn, snapshot: data.checkpoint.snapshot },
    consistentLsn: data.consistentLsn,
  };
}

/** The shape check of a parsed control file: a checksum only proves the bytes are what was written. */
function isControlData(value: unknown): value is ControlData {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  const isLsn = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;
  const checkpoint = v['checkpoint'] as Record<string, unknown> | null | undefined;
  const switchedFrom = v['switchedFrom'] as Record<string, unknown> | undefined;
  return (
    NODE_STATES.includes(v['state'] as NodeState) &&
    typeof v['systemId'] === 'string' &&
    /^[0-9a-f]{16}$/.test(v['systemId']) &&
    Number.isSafeInteger(v['segmentSize']) &&
    (v['segmentSize'] as number) > 0 &&
    Number.isSafeInteger(v['timeline']) &&
    (v['timeline'] as number) >= 1 &&
    isLsn(v['consistentLsn']) &&
    (switchedFrom === undefined ||
      (typeof switchedFrom === 'object' &&
        switchedFrom !== null &&
        Number.isSafeInteger(switchedFrom['timeline']) &&
        (switchedFrom['timeline'] as number) >= 1 &&
        (switchedFrom['timeline'] as number) < (v['timeline'] as number) &&
        isLsn(switchedFrom['switchLsn']) &&
        typeof switchedFrom['reason'] === 'string')) &&
    (checkpoint === null ||
      (typeof checkpoint === 'object' && checkpoint !== undefined && isLsn(checkpoint['lsn']) && typeof checkpoint['snapshot'] === 'boolean'))
  );
}

/**
 * Updates the control file durably, in place (two copies, see `storage/two-copy-file.ts`): a
 * crash at any point leaves the old content or the new one. It syncs no directory: a caller
 * whose renames must be durable first syncs the directory itself.
 */
export function writeControlFile(storage: Storage, data: ControlData, options: TwoCopyWriteOptions = {}): Promise<void> {
  return writeTwoCopyFile(storage, SPEC, data, options);
}

/**
 * Written (durably) before a standby removes its control file to discard its local state, and
 * removed once the rest is gone (`removeLeftovers`, `src/node/local-state.ts`): it tells the
 * files an interrupted discard left, which the next bootstrap removes, from those of a directory
 * whose control file was lost, which is refused (`CONTROL_FILE_MISSING`).
 */
export const DISCARD_MARKER = 'walship.discarding';

/**
 * Removes the control file durably (a standby discarding its state, or undoing a bootstrap that
 * never received anything), after writing {@link DISCARD_MARKER}; a missing one is fine.
 */
export async function removeControlFile(storage: Storage): Promise<void> {
  try {
    const marker = await storage.open(DISCARD_MARKER, { create: true });
    await marker.close();
    await storage.syncDirectory();
    await storage.remove(CONTROL_FILE).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    await storage.syncDirectory();
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot remove ${CONTROL_FILE} in ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}
