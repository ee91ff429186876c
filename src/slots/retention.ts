import { WalshipError } from '../errors.js';
import { assertLsn, type Lsn } from '../lsn.js';

/**
 * WAL retention: which segments a checkpoint may remove, which replication slots must be
 * given up for that, and each slot's `walStatus` / `safeWalSize`, by the rules of
 * PostgreSQL's `KeepLogSeg`, `GetWALAvailability` and `pg_replication_slots`.
 *
 * Everything here is pure arithmetic on positions. PostgreSQL keeps or removes whole segments,
 * so a position "holds" the whole segment it lies in; sizes are in bytes (PostgreSQL's are MB).
 */

/** The retention knobs (PostgreSQL's `wal_keep_size` and `max_slot_wal_keep_size`). */
export interface RetentionSettings {
  /**
   * Bytes of WAL behind the current position that are always kept, slot or no slot, so a
   * standby without a slot that is at most this far behind can still stream.
   * @defaultValue 0
   */
  readonly walKeepSize: number;
  /**
   * The most WAL, in bytes behind the current position, that slots may hold; a slot further
   * behind is invalidated (`lost`) at the next WAL removal that would remove its WAL. −1 is
   * unlimited: a dead standby's slot holds WAL forever.
   * @defaultValue −1
   */
  readonly maxSlotWalKeepSize: number;
}

/** Defaults of {@link RetentionSettings}, as PostgreSQL's. */
export const RETENTION_DEFAULTS: Readonly<RetentionSettings> = Object.freeze({ walKeepSize: 0, maxSlotWalKeepSize: -1 });

/** Where the WAL stands, plus the settings: the input of every function here. */
export interface RetentionState extends RetentionSettings {
  /** The WAL's segment size in bytes. */
  readonly segmentSize: number;
  /** The current WAL position (the log's insert or flush position; PostgreSQL uses its write position). */
  readonly currentLsn: Lsn;
  /** The oldest WAL still present: a slot needing WAL before its segment is `lost`. */
  readonly oldestLsn: Lsn;
  /**
   * The application's last checkpoint: crash recovery replays from here, so its segment and
   * every later one are kept. `null` (no checkpoint yet) keeps all WAL.
   */
  readonly checkpointLsn: Lsn | null;
  /** The oldest WAL not archived yet (kept until it is), or `null` when nothing waits. */
  readonly unarchivedLsn?: Lsn | null;
}

/** What one slot holds: its restart position, `null` when it holds nothing (not reserved, or lost). */
export interface SlotHold {
  /** The slot's name. */
  readonly name: string;
  /** The oldest WAL the slot keeps; `null` when it keeps none. */
  readonly restartLsn: Lsn | null;
}

/** The outcome of {@link decideRetention}. */
export interface RetentionDecision {
  /** The first segment to keep: every segment before it may be removed. */
  readonly keepFromSegno: number;
  /** Where that segment starts: pass it to `WalLog.removeSegmentsBefore`. */
  readonly keepFromLsn: Lsn;
  /**
   * Slots whose WAL this removal takes: beyond `maxSlotWalKeepSize` and held by nothing else.
   * They must be invalidated, durably, before any segment is removed.
   */
  readonly invalidate: readonly SlotHold[];
}

/** A slot's `walStatus`, as PostgreSQL's `pg_replication_slots.wal_status`. */
export type WalStatus = 'reserved' | 'extended' | 'unreserved' | 'lost';

/** The availability columns of a slot's row. */
export interface SlotAvailability {
  /**
   * - `reserved`: the slot's WAL is kept anyway, by the checkpoint or `walKeepSize`.
   * - `extended`: kept only because of the slot, within `maxSlotWalKeepSize`.
   * - `unreserved`: beyond `maxSlotWalKeepSize`: the slot no longer protects it and the next
   *   removal takes it (unless the checkpoint or the archive still need it then).
   * - `lost`: the slot was invalidated, or its WAL is gone.
   * - `null`: the slot has not reserved WAL yet.
   */
  readonly walStatus: WalStatus | null;
  /**
   * Bytes of WAL that can still be written before the slot is in danger of being lost (zero or
   * negative once `unreserved`); `null` when `maxSlotWalKeepSize` is unlimited, the slot is
   * lost, or it has not reserved WAL.
   */
  readonly safeWalSize: number | null;
}

/**
 * Decides the oldest segment to keep: the oldest of the checkpoint's segment, the segment
 * `walKeepSize` bytes behind the current position, the oldest unarchived segment and every
 * slot's restart segment, except slots more than `maxSlotWalKeepSize` behind whose segment
 * nothing else keeps: those are returned in `invalidate` and hold nothing. The segment of the
 * current position is always kept.
 *
 * Pass the positions each slot has *durably* (see `SlotManager.retentionHolds()`): a slot
 * found after a crash must still find its WAL.
 */
export function decideRetention(state: RetentionState, slots: readonly SlotHold[]): RetentionDecision {
  checkState(state);
  const seg = (lsn: Lsn): number => Math.floor(lsn / state.segmentSize);
  // What is kept with no slot at all (PostgreSQL: the redo pointer, wal_keep_size, archiving).
  let keep = Math.min(seg(state.currentLsn), seg(state.checkpointLsn ?? 0), seg(walKeepFloor(state)));
  if (state.unarchivedLsn !== undefined && state.unarchivedLsn !== null) keep = Math.min(keep, seg(state.unarchivedLsn));
  const allowanceSegno = seg(slotAllowanceFloor(state));
  const invalidate: SlotHold[] = [];
  let slotKeep = Infinity;
  for (const slot of slots) {
    if (slot.restartLsn === null) continue;
    assertLsn(slot.restartLsn, `slot ${slot.name} restartLsn`);
    const segno = seg(slot.restartLsn);
    // Beyond its allowance the slot protects nothing; it is lost only if its WAL really goes.
    if (segno < allowanceSegno && segno < keep) invalidate.push(slot);
    else slotKeep = Math.min(slotKeep, segno);
  }
  const keepFromSegno = Math.min(keep, slotKeep);
  return { keepFromSegno, keepFromLsn: keepFromSegno * state.segmentSize, invalidate };
}

/**
 * A slot's `walStatus` and `safeWalSize` (PostgreSQL's `GetWALAvailability` and
 * `pg_get_replication_slots`), from its current `restartLsn` and whether it was invalidated.
 *
 * walship has no `max_wal_size`; in its place `reserved` means "kept anyway", by the
 * checkpoint or `walKeepSize`, and `extended` "kept only for slots". As in PostgreSQL, a slot
 * beyond its allowance is `unreserved` even while the checkpoint still keeps its WAL: the
 * next checkpoint will not.
 */
export function slotAvailability(state: RetentionState, restartLsn: Lsn | null, invalidated: boolean): SlotAvailability {
  checkState(state);
  if (invalidated) return { walStatus: 'lost', safeWalSize: null };
  if (restartLsn === null) return { walStatus: null, safeWalSize: null };
  assertLsn(restartLsn, 'restartLsn');
  const seg = (lsn: Lsn): number => Math.floor(lsn / state.segmentSize);
  const target = seg(restartLsn);
  // WAL that is gone is lost whatever the settings say (PostgreSQL never removes a slot's WAL
  // without invalidating it first; walship checks anyway).
  if (target < seg(state.oldestLsn)) return { walStatus: 'lost', safeWalSize: null };
  let walStatus: WalStatus;
  // Protected by its slot allowance or by walKeepSize (PostgreSQL's KeepLogSeg window).
  if (target >= seg(Math.min(slotAllowanceFloor(state), walKeepFloor(state)))) {
    const keptAnyway = Math.min(seg(state.checkpointLsn ?? 0), seg(walKeepFloor(state)));
    walStatus = target >= keptAnyway ? 'reserved' : 'extended';
  } else {
    walStatus = 'unreserved';
  }
  if (state.maxSlotWalKeepSize < 0) return { walStatus, safeWalSize: null };
  // The slot's segment goes once the current position leaves it further behind than the
  // larger of the two allowances: safeWalSize > 0 exactly while reserved or extended.
  const failLsn = (target + 1) * state.segmentSize + Math.max(state.maxSlotWalKeepSize, state.walKeepSize);
  return { walStatus, safeWalSize: failLsn - state.currentLsn };
}

/** The oldest position `walKeepSize` keeps. */
function walKeepFloor(state: RetentionState): Lsn {
  return Math.max(0, state.currentLsn - state.walKeepSize);
}

/** The oldest position a slot may hold (0 when unlimited). */
function slotAllowanceFloor(state: RetentionState): Lsn {
  return state.maxSlotWalKeepSize < 0 ? 0 : Math.max(0, state.currentLsn - state.maxSlotWalKeepSize);
}

function checkState(state: RetentionState): void {
  const { segmentSize, walKeepSize, maxSlotWalKeepSize } = state;
  if (!Number.isSafeInteger(segmentSize) || segmentSize <= 0) {
    throw new WalshipError('INVALID_ARGUMENT', `segmentSize must be a positive integer, got ${String(segmentSize)}`);
  }
  if (!Number.isSafeInteger(walKeepSize) || walKeepSize < 0) {
    throw new WalshipError('INVALID_ARGUMENT', `walKeepSize must be a non-negative integer, got ${String(walKeepSize)}`);
  }
  if (!Number.isSafeInteger(maxSlotWalKeepSize) || maxSlotWalKeepSize < -1) {
    throw new WalshipError('INVALID_ARGUMENT', `maxSlotWalKeepSize must be -1 (unlimited) or a non-negative integer, got ${String(maxSlotWalKeepSize)}`);
  }
  assertLsn(state.currentLsn, 'currentLsn');
  assertLsn(state.oldestLsn, 'oldestLsn');
  if (state.checkpointLsn !== null) assertLsn(state.checkpointLsn, 'checkpointLsn');
  if (state.unarchivedLsn !== undefined && state.unarchivedLsn !== null) assertLsn(state.unarchivedLsn, 'unarchivedLsn');
}
