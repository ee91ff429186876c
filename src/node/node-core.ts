import type { Application } from '../application.js';
import { WalshipError, isWalshipError } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { untilAborted } from '../lifecycle.js';
import { createLogger, type Logger } from '../logger.js';
import { assertLsn, formatLsn, type Lsn } from '../lsn.js';
import type { CompiledAuth } from '../protocol/auth-rules.js';
import type { AuthFailedEvent, AuthenticationLimits, ConnectionErrorEvent } from '../protocol/replication-server.js';
import type { SyncRep } from '../replication/sync-rep.js';
import { WalService } from '../replication/wal-service.js';
import type { BaseBackupData, ReplicationStatusRow, WalServiceEvents, WalSource } from '../replication/wal-source.js';
import type { RetentionState } from '../slots/retention.js';
import { WAL_REMOVED_REASON, type InvalidatedSlot, type ReplicationSlotRow, type SlotInfo, type SlotManager } from '../slots/slot-manager.js';
import type { Storage } from '../storage/storage.js';
import type { Transport } from '../transport/transport.js';
import { ancestorHistory, formatTimelineHistory, historyFileName, readTimelineHistory } from '../wal/timeline-history.js';
import type { WalLog } from '../wal/wal-log.js';
import { Applier, type EntryBuffers } from './applier.js';
import { Checkpointer, type CheckpointResult } from './checkpointer.js';
import { writeControlFile, type ControlData } from './control-file.js';
import { SnapshotStore } from './snapshot-store.js';
import { restoreApplication } from './starting-point.js';
import { WalArchiver, type ArchiveDoneEvent, type ArchiveFailedEvent, type ArchiveOptions, type ArchiverStatus } from './wal-archiver.js';
import { storageOf } from './node-options.js';

/** Payload of `slot:invalidated`. */
export interface SlotInvalidatedEvent {
  /** The slot that was invalidated; it stays listed but holds no WAL, and a standby streaming from it is refused. */
  readonly slotName: string;
  /** Why: `wal_removed` (it fell more than `maxSlotWalKeepSize` behind). */
  readonly reason: string;
  /** The restart position it held, now given up. */
  readonly restartLsn: Lsn;
}

/** What a base backup written to a directory holds (`baseBackup({ dir })`). */
export interface BaseBackupResult {
  /** The snapshot includes every batch up to here; the standby streams from here. */
  readonly lsn: Lsn;
  /** The timeline `lsn` is on, which the standby follows. */
  readonly timeline: number;
  /** Snapshot bytes. */
  readonly size: number;
}

/** Payload of `failed`. */
export interface FailedEvent {
  /** Why the node stopped: a failed fsync (`WAL_SYNC_FAILED`), an `apply` that threw (`APPLY_FAILED`), a standby's lineage (`WAL_DIVERGED`), … */
  readonly error: WalshipError;
}

/** Events every node emits, primary or standby: those of serving standbys, and of its slots. */
export interface NodeEvents extends WalServiceEvents {
  /**
   * The node stopped for good (the same event on `Primary` and `Standby`): later calls are
   * refused with `error`, which `failure` also holds. Close and reopen it once the cause is fixed.
   */
  failed: (event: FailedEvent) => void;
  /** A standby failed to authenticate. */
  'auth:failed': (event: AuthFailedEvent) => void;
  /** A connection failed before or during its handshake. */
  'connection:error': (event: ConnectionErrorEvent) => void;
  /** A checkpoint invalidated a replication slot (too far behind); its standby, if connected, was ended. */
  'slot:invalidated': (event: SlotInvalidatedEvent) => void;
  /** A WAL file is in the archive (`archive` option). */
  'archive:done': (event: ArchiveDoneEvent) => void;
  /** Putting a WAL file into the archive failed; it is tried again after `retryInMs`. */
  'archive:failed': (event: ArchiveFailedEvent) => void;
}

/** The events a node's facade (`Primary`, `Standby`) passes on from its core. */
export const NODE_EVENT_NAMES = [
  'standby:connected',
  'standby:disconnected',
  'standby:refused',
  'sender:state',
  'standby:caught-up',
  'auth:failed',
  'connection:error',
  'slot:invalidated',
  'archive:done',
  'archive:failed',
] as const satisfies readonly (keyof NodeEvents)[];

/** What a node needs to serve standbys: where, who, and its limits. */
export interface ServeSettings {
  readonly transport: Transport;
  readonly address: string;
  readonly auth: CompiledAuth;
  readonly maxWalSenders: number;
  readonly walSenderTimeoutMs: number;
  readonly maxWalMessageBytes: number;
  readonly authenticationLimits: AuthenticationLimits;
  /** Send early WAL to standbys that accept it (a primary's `earlySend`). */
  readonly earlySend?: boolean;
  /** Only a writer has synchronous standbys: a cascading standby's downstreams are asynchronous. */
  readonly syncRep?: SyncRep;
}

/** The settings of a node's core. */
export interface NodeCoreSettings {
  readonly storage: Storage;
  readonly application: Application;
  readonly entryBuffers: EntryBuffers;
  readonly walKeepSize: number;
  readonly maxSlotWalKeepSize: number;
  /** Continuous archiving of the node's WAL, when on. */
  readonly archive?: ArchiveOptions;
  readonly logPrefix?: string;
}

/** The node's local state: its control data, WAL and slots, opened under the directory's lock (the WAL holds it). */
export interface LocalState {
  readonly control: ControlData;
  readonly log: WalLog;
  readonly slots: SlotManager;
}

/**
 * What every node has, whatever its role (PostgreSQL's shared machinery: `pg_control`, the
 * WAL, the checkpointer, the walsenders): the control file, the `WalLog`, the snapshot store
 * and the replication slots of its data directory, the one apply path ({@link Applier}), the
 * one checkpoint path ({@link Checkpointer}), and the WAL service that serves standbys. The
 * writer (`Primary`) and recovery (`Standby`) roles run over it; it trusts their input.
 *
 * A standby's core exists before it has local state (while it bootstraps) and keeps serving
 * through a re-bootstrap: {@link attach} and {@link detach} bring the local state in and out;
 * meanwhile its downstreams are refused (transiently) and retry.
 */
export class NodeCore extends SafeEmitter<NodeEvents> implements WalSource {
  readonly storage: Storage;
  readonly app: Application;
  readonly snapshots: SnapshotStore;
  readonly applier: Applier;
  readonly checkpointer: Checkpointer;
  readonly #settings: NodeCoreSettings;
  readonly #debug: Logger;
  #local: LocalState | null = null;
  #control: ControlData | null = null;
  /** The control-file update in progress (see {@link updateControl}). */
  #controlWrites: Promise<unknown> = Promise.resolve();
  #service: WalService | null = null;
  #address: string | null = null;
  /** Positions of the base backups being written by {@link baseBackup}: their standbys stream from there. */
  readonly #backupsInProgress = new Set<{ lsn: Lsn }>();
  /** Archives the WAL while local state is attached (`archive` option). */
  #archiver: WalArchiver | null = null;
  /** Work beside the role's that {@link close} waits for (see {@link keepUntilClosed}). */
  readonly #sideWork = new Set<Promise<void>>();

  constructor(settings: NodeCoreSettings) {
    super();
    this.#settings = settings;
    this.storage = settings.storage;
    this.app = settings.application;
    this.snapshots = new SnapshotStore(settings.storage);
    this.applier = new Applier(settings.application, 0, settings.entryBuffers);
    this.#debug = createLogger('node', settings.logPrefix);
    this.emitterLog = this.#debug;
    const core = this;
    this.checkpointer = new Checkpointer(
      {
        get log() {
          return core.log;
        },
        get slots() {
          return core.slots;
        },
        get control() {
          return core.control;
        },
        snapshots: this.snapshots,
        applier: this.applier,
        hasSnapshotHook: settings.application.snapshot !== undefined,
        updateControl: (change) => this.updateControl(change),
        retentionState: (checkpointLsn) => this.retentionState(checkpointLsn),
        heldLsns: () => this.#heldLsns(),
        archivePending: (name) => this.#archiver?.pending(name) ?? false,
        slotInvalidated: (slot, error) => this.#slotInvalidated(slot, error),
      },
      this.#debug,
    );
  }

  /** Whether the node has its local state (a standby has none while it bootstraps). */
  get attached(): boolean {
    return this.#local !== null;
  }

  /** The node's WAL. Without local state: a transient `CONNECTION_FAILED` (for downstreams, who retry). */
  get log(): WalLog {
    return this.#localState().log;
  }

  get slots(): SlotManager {
    return this.#localState().slots;
  }

  get control(): ControlData {
    if (this.#control === null) throw this.#notReady();
    return this.#control;
  }

  get systemId(): string {
    return this.control.systemId;
  }

  /** Where standbys connect, once serving. */
  get address(): string | null {
    return this.#address;
  }

  /** The WAL service, once serving. */
  get service(): WalService | null {
    return this.#service;
  }

  /** Brings in the local state (opened by the role), and the application to its last state: resolves with where replay continues. */
  async attach(local: LocalState): Promise<Lsn> {
    const start = await restoreApplication(this.app, local.log, local.control, this.snapshots);
    // The archiver first: from the moment the local state is in, checkpoints ask it what to keep.
    await this.#startArchiving(local.log);
    this.#local = local;
    this.#control = local.control;
    this.applier.reset(start);
    return start;
  }

  /**
   * Lets go of the local state (a standby bootstrapping again): downstream connections end
   * (they reconnect and are refused until the new state is attached), then the WAL closes.
   */
  async detach(reason: WalshipError): Promise<void> {
    const local = this.#local;
    if (local === null) return;
    await this.checkpointer.settled();
    this.#service?.terminateAll(reason);
    await this.#stopArchiving();
    this.#local = null;
    this.#control = null;
    await local.slots.flush().catch((err: unknown) => this.#debug.error('saving the slots: %s', (err as Error).message));
    await local.log.close().catch((err: unknown) => this.#debug.error('closing the WAL: %s', (err as Error).message));
  }

  /**
   * Changes the control file: `change` gets the control data as they are when its turn comes
   * (updates run one at a time, so none is lost to a concurrent one and no two share the
   * temporary file), and the node's view moves on once the new content is durable in the
   * file's first copy: what a crash finds from then on, even if the update later fails. With
   * `firstCopy` the call resolves there too (a promotion's commit point), and the other copy
   * is written once `secondCopyAfter` settles (at once without it): the next update and
   * {@link close} wait for that.
   */
  updateControl(change: (current: ControlData) => ControlData, options: { firstCopy?: boolean; secondCopyAfter?: Promise<unknown> } = {}): Promise<ControlData> {
    let durable: ((data: ControlData) => void) | undefined;
    const firstCopy = options.firstCopy === true ? new Promise<ControlData>((resolve) => (durable = resolve)) : null;
    let told = false;
    const run = this.#controlWrites.catch(() => undefined).then(async () => {
      const next = change(this.control);
      const onDurable = (): Promise<unknown> | undefined => {
        told = true;
        this.#control = next;
        durable?.(next);
        return options.secondCopyAfter;
      };
      // A write that resolves called onDurable first (on either of its paths).
      await writeControlFile(this.storage, next, { onDurable });
      return next;
    });
    this.#controlWrites = run;
    if (firstCopy === null) return run;
    // The second copy's failure, once the first was durable, is the next update's to mend
    // (it replaces the file whole): logged, not the caller's.
    this.keepUntilClosed(
      run.catch((err: unknown) => {
        if (told) this.#debug.error("writing the control file's second copy: %s", (err as Error).message);
      }),
    );
    return Promise.race([firstCopy, run]);
  }

  /** Where the WAL stands, for the retention rules. */
  retentionState(checkpointLsn: Lsn | null = this.control.checkpoint?.lsn ?? null): RetentionState {
    const log = this.log;
    return {
      segmentSize: log.segmentSize,
      currentLsn: log.flushedLsn,
      oldestLsn: log.oldestLsn,
      checkpointLsn,
      walKeepSize: this.#settings.walKeepSize,
      maxSlotWalKeepSize: this.#settings.maxSlotWalKeepSize,
    };
  }

  /** A checkpoint (restartpoint on a standby): see {@link Checkpointer.run}. */
  checkpoint(lsn?: Lsn): Promise<CheckpointResult> {
    if (!this.attached) return Promise.reject(new WalshipError('INVALID_ARGUMENT', 'the node has no local state yet (a standby that has not bootstrapped): nothing to checkpoint'));
    return this.checkpointer.run(lsn);
  }

  // -------------------------------------------------------------------------------------
  // Serving standbys (a primary's, or a cascading standby's)

  /** Starts the WAL service: listens and serves IDENTIFY_SYSTEM, BASE_BACKUP, slots and streaming. */
  async serve(settings: ServeSettings): Promise<string> {
    const prefix = this.#settings.logPrefix;
    const service = new WalService(this, {
      transport: settings.transport,
      address: settings.address,
      auth: settings.auth,
      maxWalSenders: settings.maxWalSenders,
      walSenderTimeoutMs: settings.walSenderTimeoutMs,
      maxMessageBytes: settings.maxWalMessageBytes,
      ...(settings.syncRep === undefined ? {} : { syncRep: settings.syncRep }),
      ...(settings.earlySend === true ? { earlySend: true } : {}),
      authenticationLimits: settings.authenticationLimits,
      ...(prefix === undefined ? {} : { logPrefix: prefix }),
    });
    for (const event of ['standby:connected', 'standby:disconnected', 'standby:refused', 'sender:state', 'standby:caught-up'] as const) {
      service.on(event, (payload: unknown) => this.emitSafely(event, payload as never));
    }
    service.server.on('auth:failed', (event) => this.emitSafely('auth:failed', event));
    service.server.on('connection:error', (event) => this.emitSafely('connection:error', event));
    this.#service = service;
    this.#address = await service.listen();
    return this.#address;
  }

  /** `pg_stat_replication`: one row per connected standby. */
  replicationStatus(): ReplicationStatusRow[] {
    return this.#service?.status() ?? [];
  }

  /**
   * Fast shutdown of the service: stops listening, lets each streaming standby receive the WAL
   * up to `endLsn` (each gets at most `timeoutMs` to confirm), ends every other connection.
   * Once `signal` aborts, it stops waiting for confirmations (immediate shutdown).
   */
  async stopServing(endLsn: Lsn, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    await this.#service?.close(endLsn, timeoutMs, signal);
  }

  /**
   * {@link WalSource.timelineHistory}: the history file of `timeline`, or `null` when there is
   * none. The log's own timeline and its ancestors are answered from its history in memory (a
   * switch writes the file in the background); other timelines from the data directory's
   * files, checked on the way. Timeline 1 has no file, as in PostgreSQL.
   */
  async timelineHistory(timeline: number): Promise<{ fileName: string; content: Uint8Array } | null> {
    if (timeline === 1) return null;
    const known = this.#local === null ? null : ancestorHistory(this.#local.log.history, timeline);
    const history = known ?? (await readTimelineHistory(this.storage, timeline));
    if (history === null) return null;
    return { fileName: historyFileName(timeline), content: Buffer.from(formatTimelineHistory(history), 'utf8') };
  }

  /** {@link WalSource.historyFrom}: a standby bootstrapped from a base backup holds the cluster's WAL from the backup's position on. */
  historyFrom(): Lsn {
    return this.control.consistentLsn;
  }

  /** A snapshot for a standby (BASE_BACKUP): `BASE_BACKUP_UNAVAILABLE` without a `snapshot()` hook, `BASE_BACKUP_FAILED` when it throws. */
  async baseBackup(): Promise<BaseBackupData> {
    if (this.app.snapshot === undefined) {
      throw new WalshipError('BASE_BACKUP_UNAVAILABLE', "this node's application has no snapshot() hook, so it cannot make a base backup");
    }
    // Read before the snapshot: a standby's WAL cannot be removed under a backup in progress.
    const timeline = this.log.timeline;
    try {
      const taken = await this.applier.snapshot();
      return { lsn: taken.lsn, timeline, size: taken.size, data: taken.data };
    } catch (err) {
      if (isWalshipError(err)) throw err;
      throw new WalshipError('BASE_BACKUP_FAILED', `the application's snapshot() failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Writes a ready-to-open standby data directory (PostgreSQL's `pg_basebackup`): the
   * application's snapshot and the control file with this cluster's identity, marked as a
   * standby's; the standby streams the WAL from the snapshot's position when it opens.
   */
  async writeBaseBackup(target: { dir?: string; storage?: Storage }): Promise<BaseBackupResult> {
    if ((target.dir === undefined) === (target.storage === undefined)) {
      throw new WalshipError('INVALID_ARGUMENT', 'baseBackup() needs exactly one of "dir" and "storage"');
    }
    const storage = storageOf(target);
    await storage.prepare();
    const lock = await storage.lock();
    try {
      const names = (await storage.list()).filter((name) => !name.startsWith('walship.lock'));
      if (names.length > 0) throw new WalshipError('INVALID_ARGUMENT', `the base backup's target ${storage.description} is not empty`);
      const backup = await this.baseBackup();
      // Until it is written, checkpoints keep the WAL its standby will stream from.
      const inProgress = { lsn: backup.lsn };
      this.#backupsInProgress.add(inProgress);
      try {
        const written = await new SnapshotStore(storage).write(backup.lsn, backup.timeline, backup.data);
        await writeControlFile(storage, {
          // A standby's directory: Primary.open refuses it, Standby.open streams from here.
          state: 'shut-down-in-recovery',
          systemId: this.systemId,
          segmentSize: this.log.segmentSize,
          timeline: backup.timeline,
          checkpoint: { lsn: backup.lsn, snapshot: true },
          consistentLsn: backup.lsn,
        });
        return { lsn: backup.lsn, timeline: backup.timeline, size: written.size };
      } finally {
        this.#backupsInProgress.delete(inProgress);
      }
    } finally {
      await lock.release();
    }
  }

  // -------------------------------------------------------------------------------------
  // Replication slots

  /**
   * Creates a physical slot, durably (also CREATE_REPLICATION_SLOT from a standby). With
   * `reserveWal` it holds WAL at once: from `reserveFrom` (where a standby resumes, which must
   * still be here), else from where the application has applied (PostgreSQL reserves from its
   * last redo point), so that a base backup taken next is covered. Without, from where its
   * standby first starts streaming.
   */
  async createSlot(name: string, options: { reserveWal: boolean; reserveFrom: Lsn | null }): Promise<SlotInfo> {
    const { reserveWal, reserveFrom } = options;
    const log = this.log;
    if (!reserveWal) return this.slots.create(name, {});
    // The applied position is never past the flushed one, nor before the oldest WAL kept.
    if (reserveFrom === null) return this.slots.create(name, { reserveAt: Math.min(this.applier.position, log.flushedLsn) });
    if (reserveFrom > log.flushedLsn) {
      throw new WalshipError('INVALID_ARGUMENT', `cannot reserve WAL from ${formatLsn(reserveFrom)}: it is ahead of the WAL flush position ${formatLsn(log.flushedLsn)}`);
    }
    if (reserveFrom < log.oldestLsn) {
      throw new WalshipError('WAL_REMOVED', `replication slot "${name}" cannot reserve WAL from ${formatLsn(reserveFrom)}: the oldest WAL left is at ${formatLsn(log.oldestLsn)}`);
    }
    return this.slots.create(name, { reserveAt: reserveFrom });
  }

  async dropSlot(name: string): Promise<void> {
    await this.slots.drop(name);
  }

  /** Moves an inactive slot's `restartLsn` forward, never past the flushed end nor back; persists it. */
  async advanceSlot(name: string, lsn: Lsn): Promise<Lsn> {
    assertLsn(lsn);
    const { log, slots } = this;
    if (slots.has(name) && slots.get(name).restartLsn === null && Math.min(lsn, log.flushedLsn) < log.oldestLsn) {
      throw new WalshipError('WAL_REMOVED', `replication slot "${name}" cannot reserve WAL from ${formatLsn(lsn)}: the oldest WAL left is at ${formatLsn(log.oldestLsn)}`);
    }
    const restartLsn = slots.advance(name, { flushLsn: log.flushedLsn, lsn });
    await slots.flush();
    return restartLsn;
  }

  /** `pg_replication_slots`. */
  slotRows(): ReplicationSlotRow[] {
    return this.slots.list(this.retentionState());
  }

  /**
   * Has {@link close} wait for `work` to settle, whichever role closes the node: work the
   * node runs for itself beside its role (a standby's promotion rehearsal), which must not
   * outlive it. Its outcome is the caller's to handle.
   */
  keepUntilClosed(work: Promise<unknown>): void {
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    this.#sideWork.add(settled);
    void settled.then(() => this.#sideWork.delete(settled));
  }

  /**
   * Closes the local state: waits for the checkpoint in progress and the work kept until
   * closed (not once `signal` has aborted: immediate shutdown), saves the slots, closes the WAL.
   */
  async close(signal?: AbortSignal): Promise<void> {
    const settled = Promise.all([this.checkpointer.settled(), ...this.#sideWork]);
    if (signal === undefined) await settled;
    else await untilAborted(settled, signal);
    await this.#stopArchiving();
    const local = this.#local;
    if (local === null) return;
    // The positions the standbys confirmed last survive the restart (PostgreSQL saves slots at shutdown).
    await local.slots.flush().catch((err: unknown) => this.#debug.error('saving the slots: %s', (err as Error).message));
    await local.log.close().catch((err: unknown) => this.#debug.error('closing the WAL: %s', (err as Error).message));
  }

  /** `pg_stat_archiver`, and what is still to archive. */
  archiverStatus(): ArchiverStatus {
    return (
      this.#archiver?.status() ?? {
        mode: this.#settings.archive?.mode === 'off' || this.#settings.archive === undefined ? 'off' : this.#settings.archive.mode,
        archivedCount: 0,
        lastArchivedWal: null,
        lastArchivedTime: null,
        failedCount: 0,
        lastFailedWal: null,
        lastFailedTime: null,
        lastFailedError: null,
        pendingCount: 0,
        oldestPendingWal: null,
      }
    );
  }

  /**
   * Cuts the log back to `lsn` (a rewind: `WalLog.discardFrom`) with the archiver paused, so
   * that it never reads a segment being cut, and then forgets what it had marked from `lsn`'s
   * segment on: that WAL is no longer this node's to archive.
   */
  async discardWal(lsn: Lsn): Promise<string[]> {
    const log = this.log;
    await this.#archiver?.stop();
    try {
      return await log.discardFrom(lsn);
    } finally {
      await this.#startArchiving(log, lsn);
    }
  }

  async #startArchiving(log: WalLog, forgetFrom?: Lsn): Promise<void> {
    const options = this.#settings.archive;
    if (options === undefined || options.mode === 'off' || options.archiver === undefined) return;
    const archiver = new WalArchiver(
      {
        storage: this.storage,
        log,
        done: (event) => this.emitSafely('archive:done', event),
        failed: (event) => this.emitSafely('archive:failed', event),
      },
      { ...options, mode: options.mode, archiver: options.archiver },
      createLogger('archiver', this.#settings.logPrefix),
    );
    try {
      await archiver.start(forgetFrom);
    } catch (err) {
      await archiver.stop();
      throw isWalshipError(err) ? err : new WalshipError('WAL_IO', `starting the archiver: ${(err as Error).message}`, { cause: err });
    }
    this.#archiver = archiver;
  }

  /**
   * Stops archiving. The stopped archiver still answers what checkpoints must keep (a
   * checkpoint may still be running, e.g. under an immediate shutdown) until another one
   * starts with new local state.
   */
  async #stopArchiving(): Promise<void> {
    await this.#archiver?.stop();
  }

  #heldLsns(): Lsn[] {
    const held = [...this.#backupsInProgress].map((b) => b.lsn);
    const unarchived = this.#archiver?.keepFromLsn() ?? Infinity;
    if (Number.isFinite(unarchived)) held.push(unarchived);
    const standbys = this.#service?.retainedLsn() ?? null;
    if (standbys !== null) held.push(standbys);
    return held;
  }

  #slotInvalidated(slot: InvalidatedSlot, error: WalshipError): void {
    this.#service?.terminateSlotHolder(slot.slotName, error);
    this.emitSafely('slot:invalidated', { slotName: slot.slotName, reason: WAL_REMOVED_REASON, restartLsn: slot.restartLsn });
  }

  #localState(): LocalState {
    if (this.#local === null) throw this.#notReady();
    return this.#local;
  }

  #notReady(): WalshipError {
    return new WalshipError('CONNECTION_FAILED', 'this node has no local state yet (a standby bootstrapping): try again later', { transient: true });
  }
}
