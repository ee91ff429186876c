import { WalshipError } from './errors.js';
import { Lifecycle, NodeBase, untilAborted, whenAborted, type CloseOptions } from './lifecycle.js';
import { createLogger, type Logger } from './logger.js';
import { MAX_TIMEOUT_MS } from './lsn-waiters.js';
import { assertLsn, formatLsn, type Lsn } from './lsn.js';
import type { CheckpointResult } from './node/checkpointer.js';
import { isRecoveryState, newSystemId, readControlFile, writeControlFile, type ControlData } from './node/control-file.js';
import { restoreTimelineHistory } from './node/local-state.js';
import { refuseMissingControlFile } from './node/missing-control-file.js';
import { withStorageLock } from './node/storage-lock.js';
import { NODE_EVENT_NAMES, NodeCore, type BaseBackupResult, type NodeEvents } from './node/node-core.js';
import type { ArchiverStatus } from './node/wal-archiver.js';
import {
  SERVE_DEFAULTS,
  checkNodeObjects,
  authenticationLimitsOf,
  checkEndpoint,
  nodeSchema,
  nodeStorageSchema,
  serveSchema,
  storageOf,
  validateCreateSlot,
  type CreateSlotOptions,
  type NodeOptions,
  type ServeOptions,
} from './node/node-options.js';
import { coreMetrics, type PrimaryMetrics } from './metrics/node-metrics.js';
import { compileOptions, withDefaults, type OptionsValidator } from './options.js';
import { compileAuth } from './protocol/auth-rules.js';
import type { ReplicationStatusRow } from './replication/wal-source.js';
import { parseSynchronousStandbyNames, type SyncStandbyConfig } from './replication/sync-standby-names.js';
import { SlotManager, type ReplicationSlotRow, type SlotInfo } from './slots/slot-manager.js';
import type { Storage } from './storage/storage.js';
import { WalLog, type EntryInput } from './wal/wal-log.js';
import {
  SYNCHRONOUS_COMMIT_LEVELS,
  WRITER_EVENT_NAMES,
  WriterRole,
  type CommitOptions,
  type CommitResult,
  type RestorePointResult,
  type SynchronousCommit,
  type WriterEvents,
} from './roles/writer.js';
import { currentScheduler, REAL_SCHEDULER, runWithScheduler } from './scheduler.js';

export type { CheckpointResult } from './node/checkpointer.js';
export type { ApplyErrorEvent, CommitOptions, CommitResult, RestorePointResult, SynchronousCommit } from './roles/writer.js';
export type { CloseOptions } from './lifecycle.js';
export type { CreateSlotOptions } from './node/node-options.js';
export type { BaseBackupResult, FailedEvent, SlotInvalidatedEvent } from './node/node-core.js';

/** Options of {@link Primary.open}. Give `dir` or `storage`. */
export interface PrimaryOptions extends NodeOptions, ServeOptions {
  /** The default commit level. @defaultValue 'on' */
  readonly synchronousCommit?: SynchronousCommit;
  /**
   * The standbys commits wait for (`synchronous_standby_names`): `FIRST n (s1, s2, …)`,
   * `ANY n (s1, s2, …)`, `n (…)`, `s1, s2` (FIRST 1), `*`; names match the standbys'
   * `applicationName`. Empty: no synchronous replication. @defaultValue ''
   */
  readonly synchronousStandbyNames?: string;
  /** Segment size of a new WAL (a power of two, 64 KiB – 1 GiB). @defaultValue 16 MiB */
  readonly segmentSize?: number;
  /**
   * Replicate while the primary's own fdatasync runs: WAL goes to standbys that accept early
   * WAL (`StandbyOptions.acceptEarlyWal`) as soon as it is written, each message carrying the
   * durable end, so a synchronous commit waits for the longer of the two fdatasyncs instead of
   * both in turn. Other standbys get durable WAL only. A commit is still released only once
   * it is durable here and the standbys confirmed it. @defaultValue false
   */
  readonly earlySend?: boolean;
}

/** Defaults of {@link PrimaryOptions}. */
export const PRIMARY_DEFAULTS = Object.freeze({
  ...SERVE_DEFAULTS,
  /** Commits wait for their local flush, and for synchronous standbys' flush when any are named. */
  synchronousCommit: 'on' as SynchronousCommit,
  /** No synchronous standbys. */
  synchronousStandbyNames: '',
  /** Standbys get only durable WAL. */
  earlySend: false,
});

const LEVELS = SYNCHRONOUS_COMMIT_LEVELS;
const MAX_STANDBY_NAMES_LENGTH = 65_536;
/** The literal behind {@link primaryOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const primarySchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  required: ['application'],
  properties: {
    ...nodeSchema,
    ...serveSchema,
    segmentSize: nodeStorageSchema.segmentSize,
    synchronousCommit: { enum: LEVELS },
    synchronousStandbyNames: { type: 'string', maxLength: MAX_STANDBY_NAMES_LENGTH },
    earlySend: { type: 'boolean' },
  },
});

/** JSON schema of {@link PrimaryOptions} (objects with methods are checked separately). */
export const primaryOptionsSchema: typeof primarySchema = primarySchema;

/** JSON schema of {@link ReloadOptions}. */
export const reloadOptionsSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    synchronousCommit: primaryOptionsSchema.properties.synchronousCommit,
    synchronousStandbyNames: primaryOptionsSchema.properties.synchronousStandbyNames,
  },
});

const validateReload: OptionsValidator<ReloadOptions> = compileOptions('reload()', reloadOptionsSchema);
const validateOptions: OptionsValidator<PrimaryOptions> = compileOptions('Primary', primaryOptionsSchema);

/** What {@link Primary.reload} can change while the primary runs. */
export interface ReloadOptions {
  /** The new {@link PrimaryOptions.synchronousStandbyNames}; `''` turns synchronous replication off. Left out: unchanged. */
  readonly synchronousStandbyNames?: string;
  /** The new default commit level ({@link PrimaryOptions.synchronousCommit}). Left out: unchanged. */
  readonly synchronousCommit?: SynchronousCommit;
}

/** Events of a {@link Primary}. */
export interface PrimaryEvents extends NodeEvents, WriterEvents {
  /** The WAL failed: `fatal` when the primary stopped (a failed fsync), else some commits failed (disk full). */
  'wal:error': (event: { readonly error: WalshipError; readonly fatal: boolean }) => void;
}

/**
 * The read/write node: the writer role over the node core. Commits append batches to the
 * WAL (group-committed), the application applies them in LSN order once durable, and every
 * connected standby receives the WAL through its own sender.
 */
export class Primary extends NodeBase<PrimaryEvents> {
  readonly #core: NodeCore;
  readonly #log: WalLog;
  readonly #options: PrimaryOptions & typeof PRIMARY_DEFAULTS;
  readonly #debug: Logger;
  readonly #writer: WriterRole;
  readonly #lifecycle = new Lifecycle('primary');
  /** Aborted by a `close({ signal })` whose signal fired: the shutdown stops waiting (immediate). */
  readonly #immediate = new AbortController();
  /** The scheduler the primary was opened on (virtual time in a simulation): its calls run on it. */
  readonly #scheduler = currentScheduler();

  private constructor(core: NodeCore, log: WalLog, options: PrimaryOptions & typeof PRIMARY_DEFAULTS, syncConfig: SyncStandbyConfig | null) {
    super();
    this.#core = core;
    this.#log = log;
    this.#options = options;
    this.#debug = createLogger('primary', options.logPrefix);
    this.emitterLog = this.#debug;
    this.#writer = new WriterRole(core, log, { synchronousCommit: options.synchronousCommit, syncConfig, ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }) });
    for (const event of WRITER_EVENT_NAMES) this.#writer.on(event, (payload: unknown) => this.emitSafely(event, payload as never));
    for (const event of NODE_EVENT_NAMES) core.on(event, (payload: unknown) => this.emitSafely(event, payload as never));
    log.on('error', ({ error, fatal }) => {
      if (fatal) this.#writer.fail(error);
      this.emitSafely('wal:error', { error, fatal });
    });
  }

  /**
   * Opens (or creates) a primary: validates the options (nothing is created when they are
   * invalid), recovers the WAL, brings the application to its last state by replaying the
   * batches after its checkpoint, and starts listening for standbys. A standby's directory is
   * refused with `STANDBY_DIRECTORY`, and a directory that holds WAL (or snapshots, history
   * files, slots) but no `walship.control` with `CONTROL_FILE_MISSING` (see
   * {@link rebuildControlFile}), both untouched. A WAL cut in the middle (a missing or damaged
   * segment followed by intact ones) is `WAL_CORRUPT`, and nothing is deleted.
   */
  static async open(options: PrimaryOptions): Promise<Primary> {
    validateOptions(options);
    checkNodeObjects('Primary', options);
    if (options.listen !== undefined) checkEndpoint('Primary.listen', options.listen);
    const settings = withDefaults(PRIMARY_DEFAULTS, options);
    const syncConfig = parseSynchronousStandbyNames(settings.synchronousStandbyNames);
    const auth = options.listen === undefined ? null : await compileAuth(options.auth);
    const storage = storageOf(options);
    // Before the WAL is opened (which may repair its tail): a standby's directory stays untouched.
    const recorded = await readControlFile(storage);
    refuseStandbyDirectory(storage, recorded);
    // A directory with a node's files but no control file lost it: never made a new cluster.
    if (recorded === null) await refuseMissingControlFile(storage, 'primary');
    if (recorded !== null) await withStorageLock(storage, () => restoreTimelineHistory(storage, recorded));
    const log = await WalLog.open({
      storage,
      // The control file names the timeline (a promotion may have left a later one's files behind it).
      ...(recorded === null ? {} : { timeline: recorded.timeline }),
      ...(options.segmentSize === undefined ? {} : { segmentSize: options.segmentSize }),
      ...(options.sync === undefined ? {} : { sync: options.sync }),
      ...(options.recycleSegments === undefined ? {} : { recycleSegments: options.recycleSegments }),
      ...(options.maxRecycleSegments === undefined ? {} : { maxRecycleSegments: options.maxRecycleSegments }),
      ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }),
      ...(options.clock === undefined ? {} : { clock: options.clock }),
    });
    const core = new NodeCore({
      storage,
      application: options.application,
      entryBuffers: settings.entryBuffers,
      walKeepSize: settings.walKeepSize,
      maxSlotWalKeepSize: settings.maxSlotWalKeepSize,
      ...(options.archive === undefined ? {} : { archive: options.archive }),
      ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }),
    });
    let primary: Primary | null = null;
    try {
      // Read again under the WAL's lock: another process may have bootstrapped a standby here meanwhile.
      let control = await readControlFile(storage);
      refuseStandbyDirectory(storage, control);
      if (control === null) {
        // Another process may have written there since the check above; WalLog.open wrote nothing in a new directory.
        await refuseMissingControlFile(storage, 'primary');
        // A new node: the cluster gets its identity now.
        control = { state: 'in-production', systemId: newSystemId(), segmentSize: log.segmentSize, timeline: log.timeline, checkpoint: null, consistentLsn: 0 };
        await writeControlFile(storage, control);
      } else if (control.state !== 'in-production') {
        control = { ...control, state: 'in-production' };
        await writeControlFile(storage, control);
      }
      const slots = await SlotManager.open(storage, {
        maxReplicationSlots: settings.maxReplicationSlots,
        ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }),
      });
      const start = await core.attach({ control, log, slots });
      if (start > log.flushedLsn) {
        throw new WalshipError('WAL_CORRUPT', `the application's state is at ${formatLsn(start)}, past the end of the WAL at ${formatLsn(log.flushedLsn)}: WAL it had applied is lost`);
      }
      await core.applier.follow(log, start, { follow: false });
      primary = new Primary(core, log, settings, syncConfig);
      if (options.listen !== undefined && auth !== null) {
        await core.serve({
          transport: options.listen.transport,
          address: options.listen.address,
          auth,
          maxWalSenders: settings.maxWalSenders,
          walSenderTimeoutMs: settings.walSenderTimeoutMs,
          maxWalMessageBytes: settings.maxWalMessageBytes,
          earlySend: settings.earlySend,
          syncRep: primary.#writer.syncRep,
          authenticationLimits: authenticationLimitsOf(settings),
        });
      }
      primary.#debug('open: system %s, WAL %s … %s, applied up to %s', control.systemId, formatLsn(log.oldestLsn), formatLsn(log.flushedLsn), formatLsn(core.applier.position));
      return primary;
    } catch (err) {
      if (primary !== null) await primary.close().catch(() => undefined);
      else {
        // What the core started with the local state (the archiver) stops with it.
        await core.close(AbortSignal.abort()).catch(() => undefined);
        await log.close().catch(() => undefined);
      }
      throw err;
    }
  }

  /**
   * The primary over a promoted standby's core (`Standby.promote`): the core keeps its lock,
   * its application state, its listener and its downstream connections; the writer role
   * starts on the log's new timeline, and the standbys it serves count for synchronous
   * replication from now on. `options` are validated by the caller.
   * @internal
   */
  static afterPromotion(core: NodeCore, log: WalLog, options: PrimaryOptions): Primary {
    const settings = withDefaults(PRIMARY_DEFAULTS, options);
    const primary = new Primary(core, log, settings, parseSynchronousStandbyNames(settings.synchronousStandbyNames));
    core.service?.useSyncRep(primary.#writer.syncRep);
    primary.#debug('promoted: timeline %d, WAL %s … %s, applied up to %s', log.timeline, formatLsn(log.oldestLsn), formatLsn(log.flushedLsn), formatLsn(core.applier.position));
    return primary;
  }

  /** The cluster's identity, shared by all its standbys (16 hex digits). */
  get systemId(): string {
    return this.#core.systemId;
  }

  /**
   * The end of the WAL (`pg_current_wal_lsn()`): the end of every batch committed so far,
   * including commits still waiting for their flush (with `synchronousCommit: 'off'` they have
   * resolved already). It is not necessarily durable (see {@link flushLsn}), and it can move
   * back: when a full disk (`ENOSPC`) fails commits, it returns to where the first failed
   * one began, and the next commit takes its place. After `close()` it includes the shutdown
   * record.
   */
  get currentLsn(): Lsn {
    return this.#log.insertLsn;
  }

  /** The end of the durable WAL (`pg_current_wal_flush_lsn()`). */
  get flushLsn(): Lsn {
    return this.#log.flushedLsn;
  }

  /** Where the application's state is: the `lsn` of the last batch it applied. */
  get appliedLsn(): Lsn {
    return this.#core.applier.position;
  }

  /** The timeline the primary writes: 1 for a new cluster, a new one after each promotion. */
  get timeline(): number {
    return this.#log.timeline;
  }

  /** The address standbys connect to, once listening. */
  get address(): string | null {
    return this.#core.address;
  }

  /** The WAL (read-only use: readers, positions). */
  get wal(): WalLog {
    return this.#log;
  }

  /** Why the primary stopped (a failed fsync, an `apply` that threw), if it did. */
  get failure(): WalshipError | null {
    return this.#writer.failure;
  }

  /**
   * Commits one atomic batch. Resolves once it is durable at the requested level and the
   * primary's own application has applied it (for `off`: as soon as it is in the log); at
   * the remote levels, also once the synchronous standbys confirmed it (waiting as long as it
   * takes: never silently less). Concurrent commits share one write and one fsync.
   */
  commit(entries: EntryInput | readonly EntryInput[], options: CommitOptions = {}): Promise<CommitResult> {
    return this.#enter(() => {
      if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError('no new commits'));
      const level = options.synchronousCommit ?? this.#writer.synchronousCommit;
      if (!LEVELS.includes(level)) {
        return Promise.reject(new WalshipError('INVALID_ARGUMENT', `synchronousCommit must be one of ${LEVELS.join(', ')}; got ${String(level)}`));
      }
      if (options.timeoutMs !== undefined && !(Number.isInteger(options.timeoutMs) && options.timeoutMs >= 0 && options.timeoutMs <= MAX_TIMEOUT_MS)) {
        return Promise.reject(new WalshipError('INVALID_ARGUMENT', `timeoutMs must be an integer from 0 to ${MAX_TIMEOUT_MS}; got ${String(options.timeoutMs)}`));
      }
      return this.#writer.commit(entries, level, options);
    });
  }

  /**
   * Writes a named restore point into the WAL (PostgreSQL's `pg_create_restore_point`): a place
   * a standby can stop replaying at, with `recoveryTarget: { name }` (replay stops right after
   * it). The name is 1 to 64 UTF-8 bytes (else `INVALID_ARGUMENT`, nothing written); names need
   * not be unique (a target stops at the first of that name). Resolves with the position right
   * after it and its time once it is durable, and confirmed by the synchronous standbys when the
   * default commit level waits for them (PostgreSQL only inserts it, flushed with the next
   * commit; walship resolves once it would survive a crash, or a failover to a synchronous
   * standby). Applications never see it as a batch.
   */
  createRestorePoint(name: string): Promise<RestorePointResult> {
    return this.#enter(() => {
      if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError('no new restore points'));
      return this.#writer.createRestorePoint(name);
    });
  }

  /**
   * Changes the synchronous replication settings while the primary runs (PostgreSQL's reload
   * of `synchronous_standby_names` and `synchronous_commit`). Waiting commits are re-evaluated
   * at once: clearing the names releases all of them. `INVALID_OPTIONS` changes nothing.
   */
  reload(options: ReloadOptions): void {
    this.#enter(() => {
      this.#assertUsable();
      validateReload(options);
      const { synchronousCommit, synchronousStandbyNames } = options;
      const syncConfig = synchronousStandbyNames === undefined ? undefined : parseSynchronousStandbyNames(synchronousStandbyNames);
      this.#writer.reload({ ...(synchronousCommit === undefined ? {} : { synchronousCommit }), ...(syncConfig === undefined ? {} : { syncConfig }) });
    });
  }

  /** Resolves once the primary's application has applied everything up to `lsn`. */
  waitForApply(lsn: Lsn, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    return this.#enter(() => {
      assertLsn(lsn);
      return this.#core.applier.wait(lsn, options);
    });
  }

  /** `pg_stat_replication`: one row per connected standby. */
  replicationStatus(): ReplicationStatusRow[] {
    return this.#core.replicationStatus();
  }

  /**
   * The primary's metrics as plain data: commits, errors and a latency histogram per
   * `synchronousCommit` level (since it was opened or promoted), its WAL's positions and writer
   * counters (bytes, writes, fdatasyncs and their time), each connected standby's lag in bytes
   * and seconds, each slot's retained WAL, and the archiver's counters. Render them for
   * Prometheus with `formatPrometheus`. Works after `close()` too (the last values).
   */
  metrics(): PrimaryMetrics {
    const log = this.#log;
    return {
      role: 'primary',
      systemId: this.#core.systemId,
      timeline: log.timeline,
      appliedLsn: this.#core.applier.position,
      commits: this.#writer.commitMetrics(),
      ...coreMetrics(this.#core),
      wal: { insertLsn: log.insertLsn, writtenLsn: log.writtenLsn, flushedLsn: log.flushedLsn, ...log.stats() },
    };
  }

  /**
   * Creates a physical replication slot, durably (`pg_create_physical_replication_slot`). With
   * `reserveWal` it holds WAL at once from where the primary's application has applied (as
   * PostgreSQL reserves from its last redo point), so that a base backup taken next is covered;
   * otherwise from where its standby first starts streaming. `INVALID_SLOT_NAME`, `SLOT_EXISTS`.
   */
  async createSlot(name: string, options: CreateSlotOptions = {}): Promise<SlotInfo> {
    return this.#enter(async () => {
      this.#assertUsable();
      validateCreateSlot(options);
      return this.#core.createSlot(name, { reserveWal: options.reserveWal === true, reserveFrom: null });
    });
  }

  /** Drops a replication slot, durably. `SLOT_NOT_FOUND`; `SLOT_ACTIVE` while a standby streams with it. */
  async dropSlot(name: string): Promise<void> {
    return this.#enter(async () => {
      this.#assertUsable();
      await this.#core.dropSlot(name);
    });
  }

  /**
   * Moves an inactive slot's `restartLsn` forward to `lsn` (`pg_replication_slot_advance`),
   * never past the flushed end of the WAL and never back, and persists it. Resolves with the
   * new `restartLsn`. `SLOT_ACTIVE` while a standby streams with it; `WAL_REMOVED` once lost.
   */
  async advanceSlot(name: string, lsn: Lsn): Promise<Lsn> {
    return this.#enter(async () => {
      this.#assertUsable();
      return this.#core.advanceSlot(name, lsn);
    });
  }

  /** `pg_replication_slots`: every slot, by name, with its `walStatus` and `safeWalSize`. */
  slots(): ReplicationSlotRow[] {
    return this.#core.slotRows();
  }

  /** Runs a call on the primary's scheduler, whoever calls: its timers and continuations stay on it. */
  #enter<T>(fn: () => T): T {
    return this.#scheduler === REAL_SCHEDULER ? fn() : runWithScheduler(this.#scheduler, fn);
  }

  /** Rejects calls that change the node once it is closing or has failed. */
  #assertUsable(): void {
    this.#lifecycle.assertOpen();
    if (this.#writer.failure !== null) throw this.#writer.failure;
  }

  /**
   * Records how far the application's state is durable, so that a restart replays only what
   * follows and older WAL can go (PostgreSQL's checkpoint). With `lsn`, the application
   * states that it has made its own state durable up to there. Without it, walship takes
   * the application's `snapshot()` and stores it in the data directory.
   */
  checkpoint(lsn?: Lsn): Promise<CheckpointResult> {
    return this.#enter(() => {
      if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError());
      if (this.#writer.failure !== null) return Promise.reject(this.#writer.failure);
      return this.#core.checkpoint(lsn);
    });
  }

  /**
   * Ends the current WAL segment now and makes it durable (PostgreSQL's `pg_switch_wal()`):
   * with archiving on, it goes to the archive at once. Resolves with the end of the segment
   * it ended, or `null` when the segment held no WAL yet.
   */
  async switchWal(): Promise<Lsn | null> {
    return this.#enter(async () => {
      this.#assertUsable();
      return this.#log.switchSegment();
    });
  }

  /** The archiver's progress (PostgreSQL's `pg_stat_archiver`) and what is still to archive (`archive` option). */
  archiverStatus(): ArchiverStatus {
    return this.#core.archiverStatus();
  }

  /**
   * Writes a ready-to-open standby data directory (PostgreSQL's `pg_basebackup`): the
   * application's snapshot, the control file with this cluster's identity, and nothing of
   * the WAL, which the standby streams from the snapshot's position when it opens.
   */
  async baseBackup(target: { dir?: string; storage?: Storage }): Promise<BaseBackupResult> {
    return this.#enter(async () => {
      this.#assertUsable();
      return this.#core.writeBaseBackup(target);
    });
  }

  /**
   * Fast shutdown: refuses new commits, waits for those in flight to be durable and applied
   * (or to fail), seals the WAL with its shutdown record (PostgreSQL's shutdown checkpoint),
   * lets connected standbys receive all of it, shutdown record included (each gets at most
   * `walSenderTimeoutMs` to confirm), then closes the WAL. Leaves no timer or socket behind.
   * Rejects, after all of that, if stopping the standbys' connections failed.
   *
   * Once `signal` aborts (e.g. `AbortSignal.timeout(5_000)`, within a container runtime's grace
   * period), the shutdown becomes PostgreSQL's immediate shutdown: it stops waiting for
   * commits in flight (they are rejected with `WAL_CLOSED`; what is durable stays), for a
   * checkpoint and for standbys' confirmations, writes no shutdown record, and closes. The
   * next open recovers as after a crash.
   */
  close(options: CloseOptions = {}): Promise<void> {
    return this.#enter(() => {
      const { signal } = options;
      // Any call's signal can cut the shutdown short, also one made after it began.
      if (signal !== undefined) whenAborted(signal, () => this.#immediate.abort());
      return this.#lifecycle.close(() => this.#close());
    });
  }

  async #close(): Promise<void> {
    let error: unknown = null;
    const immediate = this.#immediate.signal;
    // Commits waiting for standbys stop waiting: they are committed locally (PostgreSQL
    // cancels these waits when it shuts down).
    this.#writer.cancelSyncWaits('the primary is shutting down');
    const core = this.#core;
    try {
      await untilAborted(core.checkpointer.settled(), immediate);
      await untilAborted(this.#log.flush().catch(() => undefined), immediate);
      await untilAborted(this.#writer.whenIdle(), immediate);
      if (!immediate.aborted) await this.#log.seal().catch((err: unknown) => this.#debug.error('sealing the WAL: %s', (err as Error).message));
      await core.stopServing(this.#log.flushedLsn, this.#options.walSenderTimeoutMs, immediate);
      // Only a clean shutdown says so; a failed primary, or an immediate shutdown, stays "in
      // production": the next open recovers as after a crash.
      if (this.#writer.failure === null && !immediate.aborted) await core.updateControl((current) => ({ ...current, state: 'shut-down' }));
    } catch (err) {
      error = err;
      this.#debug.error('closing: %s', (err as Error).message);
    } finally {
      if (immediate.aborted) this.#debug.error('immediate shutdown: not waiting for commits in flight, checkpoints or standbys');
      await core.close(immediate);
      const closed = new WalshipError('WAL_CLOSED', 'the primary is closed');
      // The batch being applied too: an immediate shutdown does not wait for its apply.
      this.#writer.abandon(closed);
      core.applier.fail(closed);
    }
    if (error !== null) throw error;
  }

}

/**
 * `STANDBY_DIRECTORY` for a directory whose control file says it belongs to a standby: a
 * primary writing there would give positions the standby already holds a second history.
 */
function refuseStandbyDirectory(storage: Storage, control: ControlData | null): void {
  if (control === null || !isRecoveryState(control.state)) return;
  throw new WalshipError(
    'STANDBY_DIRECTORY',
    `${storage.description} belongs to a standby (its control file says "${control.state}"): opening it as a primary would write WAL at positions its upstream also writes. Open it with Standby.open; a standby becomes writable by promotion`,
  );
}
