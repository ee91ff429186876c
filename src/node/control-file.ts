import { WalshipError, errnoCode } from '../errors.js';
import type { Lsn } from '../lsn.js';
import { damaged, readJsonFile, writeJsonFile, type JsonFileSpec } from '../storage/json-file.js';
import type { Storage } from '../storage/storage.js';

/** The node's control file: its identity and where its application's state is durable. */
export const CONTROL_FILE = 'walship.control';
const SPEC: JsonFileSpec = {
  name: CONTROL_FILE,
  // 2: the node's state (in production, in recovery, shut down) is recorded.
  format: 2,
  // Far more than the JSON ever needs.
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
   * The latest checkpoint: the application's state is durable up to `lsn`, kept by the
   * application itself (`snapshot: false`) or in the local snapshot file of that LSN.
   */
  readonly checkpoint: { readonly lsn: Lsn; readonly snapshot: boolean } | null;
  /** A standby's state is consistent once replay reaches this LSN (the end of its base backup). */
  readonly consistentLsn: Lsn;
}

/** Reads the control file; `null` when there is none (a new node). A damaged one is `WAL_CORRUPT`. */
export async function readControlFile(storage: Storage): Promise<ControlData | null> {
  const data = await readJsonFile(storage, SPEC);
  if (data === null) return null;
  if (!isControlData(data)) throw damaged(SPEC, storage, 'unexpected content');
  return {
    state: data.state,
    systemId: data.systemId,
    segmentSize: data.segmentSize,
    timeline: data.timeline,
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
  return (
    NODE_STATES.includes(v['state'] as NodeState) &&
    typeof v['systemId'] === 'string' &&
    /^[0-9a-f]{16}$/.test(v['systemId']) &&
    Number.isSafeInteger(v['segmentSize']) &&
    (v['segmentSize'] as number) > 0 &&
    Number.isSafeInteger(v['timeline']) &&
    (v['timeline'] as number) >= 1 &&
    isLsn(v['consistentLsn']) &&
    (checkpoint === null ||
      (typeof checkpoint === 'object' && checkpoint !== undefined && isLsn(checkpoint['lsn']) && typeof checkpoint['snapshot'] === 'boolean'))
  );
}

/** Replaces the control file atomically and durably: a crash at any point leaves the old file or the new one. */
export function writeControlFile(storage: Storage, data: ControlData): Promise<void> {
  return writeJsonFile(storage, SPEC, data);
}

/** Removes the control file durably (undoing a bootstrap that never received anything); a missing one is fine. */
export async function removeControlFile(storage: Storage): Promise<void> {
  try {
    await storage.remove(CONTROL_FILE).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    await storage.syncDirectory();
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot remove ${CONTROL_FILE} in ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}
