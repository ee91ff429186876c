import { WalshipError } from '../errors.js';
import type { Logger } from '../logger.js';
import { assertLsn, formatLsn, type Lsn } from '../lsn.js';
import type { RetentionState } from '../slots/retention.js';
import { WAL_REMOVED_REASON, type InvalidatedSlot, type SlotManager } from '../slots/slot-manager.js';
import type { WalLog } from '../wal/wal-log.js';
import type { Applier } from './applier.js';
import type { ControlData } from './control-file.js';
import type { SnapshotStore } from './snapshot-store.js';

/** What a checkpoint (on a primary) or restartpoint (on a standby) recorded. */
export interface CheckpointResult {
  /** The application's state is durable up to here; replay after a restart starts here. */
  readonly lsn: Lsn;
  /** Whether walship stored a snapshot for it (else the application keeps its state itself). */
  readonly snapshot: boolean;
}

/** What the checkpointer needs of its node. */
export interface CheckpointHost {
  readonly log: WalLog;
  readonly slots: SlotManager;
  readonly snapshots: SnapshotStore;
  readonly applier: Applier;
  readonly hasSnapshotHook: boolean;
  readonly control: ControlData;
  /** Changes the control file, one update at a time (see `NodeCore.updateControl`). */
  updateControl(change: (current: ControlData) => ControlData): Promise<ControlData>;
  /** Where the WAL stands, for the retention rules, with the checkpoint at `checkpointLsn`. */
  retentionState(checkpointLsn: Lsn | null): RetentionState;
  /** Positions that connected standbys and base backups in progress still need (and the archiver: the oldest segment not archived). */
  heldLsns(): Lsn[];
  /** Whether the archiver has still to put this file (a `.partial` segment stays until it has). */
  archivePending(name: string): boolean;
  /** A slot was invalidated (durably): end its holder's connection and announce it. */
  slotInvalidated(slot: InvalidatedSlot, error: WalshipError): void;
}

/**
 * The one checkpoint path of a node (PostgreSQL's checkpointer: a checkpoint on a primary, a
 * restartpoint on a standby). One runs at a time. It records how far the application's state
 * is durable — its snapshot, stored in the data directory, or a position the application
 * vouches for — then lets go of what nothing needs any more: older snapshots, and the WAL
 * that no checkpoint, replication slot (within `maxSlotWalKeepSize`), `walKeepSize`,
 * connected standby or base backup in progress still needs.
 */
export class Checkpointer {
  readonly #host: CheckpointHost;
  readonly #debug: Logger;
  #running: Promise<unknown> = Promise.resolve();

  constructor(host: CheckpointHost, debug: Logger) {
    this.#host = host;
    this.#debug = debug;
  }

  /**
   * Checks the arguments now (a rejected call changes nothing), then queues the checkpoint:
   * each one rewrites the control file and may remove WAL, so a slower earlier one must
   * never land after a later one.
   */
  run(lsn?: Lsn): Promise<CheckpointResult> {
    try {
      if (lsn !== undefined) {
        assertLsn(lsn);
        const applied = this.#host.applier.position;
        if (lsn > applied) throw new WalshipError('INVALID_ARGUMENT', `cannot checkpoint at ${formatLsn(lsn)}: the application has applied only up to ${formatLsn(applied)}`);
      } else if (!this.#host.hasSnapshotHook) {
        throw new WalshipError('INVALID_ARGUMENT', 'checkpoint() without an lsn takes a snapshot, and the application has no snapshot() hook; pass the lsn up to which its state is durable');
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.#running.catch(() => undefined).then(() => this.#checkpoint(lsn));
    this.#running = run;
    return run;
  }

  /** Resolves once the checkpoint in progress (if any) has ended, however it ended. */
  async settled(): Promise<void> {
    await this.#running.catch(() => undefined);
  }

  async #checkpoint(lsn: Lsn | undefined): Promise<CheckpointResult> {
    const host = this.#host;
    let checkpoint: CheckpointResult;
    if (lsn !== undefined) {
      checkpoint = { lsn, snapshot: false };
    } else {
      const taken = await host.applier.snapshot();
      await host.snapshots.write(taken.lsn, host.log.timeline, taken.data);
      checkpoint = { lsn: taken.lsn, snapshot: true };
    }
    // Decided in the update's turn: never over a newer checkpoint, never over another change.
    let newer: CheckpointResult | null = null;
    await host.updateControl((current) => {
      const previous = current.checkpoint;
      if (previous !== null && previous.lsn > checkpoint.lsn) {
        newer = previous;
        return current;
      }
      return { ...current, checkpoint };
    });
    if (newer !== null) return newer;
    // A checkpoint without a snapshot means the application keeps its state itself: no
    // snapshot is needed any more. With one, the older ones are.
    await host.snapshots.removeOlderThan(checkpoint.snapshot ? checkpoint.lsn : Number.MAX_SAFE_INTEGER).catch((err: unknown) => {
      this.#debug.error('removing old snapshots: %s', (err as Error).message);
    });
    await this.#removeOldWal(checkpoint.lsn);
    return checkpoint;
  }

  /**
   * Removes WAL nothing needs. The slots decide first, durably ({@link SlotManager.planWalRemoval}):
   * a slot too far behind is invalidated, announced, and its connection ended before any of
   * its WAL goes.
   */
  async #removeOldWal(checkpointLsn: Lsn): Promise<void> {
    const host = this.#host;
    const plan = await host.slots.planWalRemoval(host.retentionState(checkpointLsn));
    for (const slot of plan.invalidated) {
      this.#debug.error('replication slot %s invalidated: it held WAL from %s, beyond maxSlotWalKeepSize', slot.slotName, formatLsn(slot.restartLsn));
      const error = new WalshipError(
        'WAL_REMOVED',
        `replication slot "${slot.slotName}" was invalidated (${WAL_REMOVED_REASON}): it held WAL from ${formatLsn(slot.restartLsn)}, more than maxSlotWalKeepSize behind`,
      );
      host.slotInvalidated(slot, error);
    }
    const keepFrom = Math.min(plan.keepFromLsn, ...host.heldLsns());
    const removed = await host.log.removeSegmentsBefore(keepFrom);
    if (removed.length > 0) this.#debug('checkpoint removed %d WAL segments before %s', removed.length, formatLsn(keepFrom));
    await host.log.removePartialsBefore(keepFrom, (name) => host.archivePending(name));
  }
}
