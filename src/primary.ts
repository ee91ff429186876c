import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'eventemitter3';
import type { Application, SnapshotData } from './application.js';
import { WalshipError, isWalshipError } from './errors.js';
import { createLogger, type Logger } from './logger.js';
import { LsnWaiters, MAX_TIMEOUT_MS } from './lsn-waiters.js';
import { assertLsn, formatLsn, type Lsn } from './lsn.js';
import { checkNodeObjects, checkTransport, endpointSchema, nodeStorageSchema, storageOf } from './node/node-options.js';
import { readControlFile, writeControlFile, type ControlData } from './node/control-file.js';
import { applyBatch, replay } from './node/replayer.js';
import { SnapshotStore } from './node/snapshot-store.js';
import { restoreApplication } from './node/starting-point.js';
import { compileOptions, withDefaults, type OptionsValidator } from './options.js';
import { authOptionsSchema, compileAuth, type AuthOptions } from './protocol/auth-rules.js';
import type { AuthFailedEvent, ConnectionErrorEvent } from './protocol/replication-server.js';
import { WalService } from './replication/wal-service.js';
import type { BaseBackupData, ReplicationStatusRow, WalServiceEvents } from './replication/wal-source.js';
import { SyncRep, type SyncStandbysEvent, type SyncWaitMode } from './replication/sync-rep.js';
import { parseSynchronousStandbyNames, type SyncStandbyConfig } from './replication/sync-standby-names.js';
import { RETENTION_DEFAULTS, type RetentionState } from './slots/retention.js';
import { SlotManager, WAL_REMOVED_REASON, type ReplicationSlotRow, type SlotInfo } from './slots/slot-manager.js';
import type { Storage } from './storage/storage.js';
import type { Transport } from './transport/transport.js';
import type { EntryInput } from './wal/wal-log.js';
import { WalLog, type AppendResult, type SyncMode } from './wal/wal-log.js';

/**
 * When a commit counts as done (PostgreSQL's `synchronous_commit`). `off` resolves once the
 * batch is in the log, before the local flush: a crash of the primary (or of its machine)
 * within about one group-commit flush can lose the last such commits, never corrupt the log,
 * and never a commit at another level that followed them. `local` waits for the local flush.
 * With `synchronousStandbyNames` set, `remote_write`, `on` and `remote_apply` also wait until
 * the synchronous standbys have written, flushed or applied the batch; without it they mean
 * `local`, as in PostgreSQL.
 */
export type SynchronousCommit = 'off' | 'local' | 'remote_write' | 'on' | 'remote_apply';

/** Options of {@link Primary.open}. Give `dir` or `storage`. */
export interface PrimaryOptions {
  /** The data directory (WAL segments, control file, snapshots); created if missing. */
  readonly dir?: string;
  /** Where the node's files live; `MemoryStorage` for simulations. */
  readonly storage?: Storage;
  /** The state machine that applies committed batches. */
  readonly application: Application;
  /** Where standbys connect. Without it the primary serves no one. */
  readonly listen?: { readonly transport: Transport; readonly address: string };
  /** Who may connect for replication. Leaving it out lets no one in. */
  readonly auth?: AuthOptions;
  /** The default commit level. @defaultValue 'on' */
  readonly synchronousCommit?: SynchronousCommit;
  /**
   * The standbys commits wait for (`synchronous_standby_names`): `FIRST n (s1, s2, …)`,
   * `ANY n (s1, s2, …)`, `n (…)`, `s1, s2` (FIRST 1), `*`; names match the standbys'
   * `applicationName`. Empty: no synchronous replication. @defaultValue ''
   */
  readonly synchronousStandbyNames?: string;
  /** Standby connections allowed at once (`max_wal_senders`). @defaultValue 10 */
  readonly maxWalSenders?: number;
  /** End a standby's connection after this long without a message from it (`wal_sender_timeout`). @defaultValue 60 000 */
  readonly walSenderTimeoutMs?: number;
  /** WAL bytes per message to a standby; also about the bytes in flight per standby beyond the transport's buffer. @defaultValue 1 MiB */
  readonly maxWalMessageBytes?: number;
  /** Segment size of a new WAL (a power of two, 64 KiB – 1 GiB). @defaultValue 16 MiB */
  readonly segmentSize?: number;
  /** `none` skips fsync: unsafe, for tests and benchmarks. @defaultValue 'fdatasync' */
  readonly sync?: SyncMode;
  /** Removed segments kept for reuse. @defaultValue 4 */
  readonly recycleSegments?: number;
  /** Limit for a standby's authentication. @defaultValue 10 000 */
  readonly handshakeTimeoutMs?: number;
  /** Delay before a failed authentication is answered. @defaultValue 250 */
  readonly authFailureDelayMs?: number;
  /** A prefix for this node's `debug` lines. */
  readonly logPrefix?: string;
  /**
   * Bytes of WAL behind the current position that checkpoints always keep, slot or no slot
   * (`wal_keep_size`). @defaultValue 0
   */
  readonly walKeepSize?: number;
  /**
   * The most WAL, in bytes behind the current position, that replication slots may hold
   * (`max_slot_wal_keep_size`); a slot further behind is invalidated at the checkpoint that
   * would remove its WAL. −1 is unlimited. @defaultValue −1
   */
  readonly maxSlotWalKeepSize?: number;
}

/** Options of {@link Primary.createSlot}. */
export interface CreateSlotOptions {
  /** Reserve WAL at once, from the current flushed position (else at the slot's first use). @defaultValue false */
  readonly reserveWal?: boolean;
}

/** Payload of `slot:invalidated`. */
export interface SlotInvalidatedEvent {
  readonly slotName: string;
  /** Why: `wal_removed` (it fell more than `maxSlotWalKeepSize` behind). */
  readonly reason: string;
  /** The restart position it held, now given up. */
  readonly restartLsn: Lsn;
}

/** Defaults of {@link PrimaryOptions}. */
export const PRIMARY_DEFAULTS = Object.freeze({
  synchronousCommit: 'on' as SynchronousCommit,
  synchronousStandbyNames: '',
  maxWalSenders: 10,
  walSenderTimeoutMs: 60_000,
  maxWalMessageBytes: 1024 * 1024,
  walKeepSize: RETENTION_DEFAULTS.walKeepSize,
  maxSlotWalKeepSize: RETENTION_DEFAULTS.maxSlotWalKeepSize,
});

const LEVELS = ['off', 'local', 'remote_write', 'on', 'remote_apply'] as const;
const MAX_STANDBY_NAMES_LENGTH = 65_536;
/** What each level waits for the synchronous standbys to have done, if anything. */
const SYNC_WAIT_MODES: Readonly<Record<SynchronousCommit, SyncWaitMode | null>> = Object.freeze({
  off: null,
  local: null,
  remote_write: 'write',
  on: 'flush',
  remote_apply: 'apply',
});

/** JSON schema of {@link PrimaryOptions} (objects with methods are checked separately). */
export const primaryOptionsSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  required: ['application'],
  properties: {
    ...nodeStorageSchema,
    listen: endpointSchema,
    auth: authOptionsSchema,
    synchronousCommit: { enum: LEVELS },
    synchronousStandbyNames: { type: 'string', maxLength: MAX_STANDBY_NAMES_LENGTH },
    maxWalSenders: { type: 'integer', minimum: 0, maximum: 1024 },
    walSenderTimeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
    maxWalMessageBytes: { type: 'integer', minimum: 4096, maximum: 16 * 1024 * 1024 },
    handshakeTimeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
    authFailureDelayMs: { type: 'integer', minimum: 0, maximum: 60_000 },
    walKeepSize: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    maxSlotWalKeepSize: { type: 'integer', minimum: -1, maximum: Number.MAX_SAFE_INTEGER },
  },
});

const validateOptions: OptionsValidator<PrimaryOptions> = compileOptions('Primary', primaryOptionsSchema);

/** Options of {@link Primary.commit}. */
export interface CommitOptions {
  /** This commit's level, overriding the primary's default. */
  readonly synchronousCommit?: SynchronousCommit;
  /**
   * Stops waiting. The batch stays committed either way: while the primary still flushes or
   * applies it the wait ends with `ABORTED`; while it waits for synchronous standbys, with
   * `SYNC_REP_CANCELED` (committed locally, not confirmed by the standbys).
   */
  readonly signal?: AbortSignal;
  /** Limit for the wait for synchronous standbys, ended with `SYNC_REP_CANCELED`. */
  readonly timeoutMs?: number;
}

/** What {@link Primary.reload} can change while the primary runs. */
export interface ReloadOptions {
  readonly synchronousStandbyNames?: string;
  readonly synchronousCommit?: SynchronousCommit;
}

/** What {@link Primary.commit} resolves with. */
export interface CommitResult {
  /** The position right after the batch: wait for it on a standby with `waitForReplay(lsn)`. */
  readonly lsn: Lsn;
  /** Where the batch's record starts. */
  readonly startLsn: Lsn;
}

/** What a checkpoint recorded. */
export interface CheckpointResult {
  /** The application's state is durable up to here; replay after a restart starts here. */
  readonly lsn: Lsn;
  /** Whether walship stored a snapshot for it (else the application keeps its state itself). */
  readonly snapshot: boolean;
}

/** What {@link Primary.baseBackup} wrote. */
export interface BaseBackupResult {
  /** The snapshot includes every batch up to here; the standby streams from here. */
  readonly lsn: Lsn;
  readonly timeline: number;
  /** Snapshot bytes. */
  readonly size: number;
}

/** Payload of `apply:error`. */
export interface ApplyErrorEvent {
  /** `APPLY_FAILED`, with the application's exception as `cause`. */
  readonly error: WalshipError;
}

/** Events of a {@link Primary}. */
export interface PrimaryEvents extends WalServiceEvents {
  /** The application's `apply` threw; the primary stops applying and committing. */
  'apply:error': (event: ApplyErrorEvent) => void;
  /** A standby failed to authenticate. */
  'auth:failed': (event: AuthFailedEvent) => void;
  /** A connection failed before or during its handshake. */
  'connection:error': (event: ConnectionErrorEvent) => void;
  /** The WAL failed: `fatal` when the primary stopped (a failed fsync), else some commits failed (disk full). */
  'wal:error': (event: { readonly error: WalshipError; readonly fatal: boolean }) => void;
  /** A checkpoint invalidated a replication slot (too far behind); its standby, if connected, was ended. */
  'slot:invalidated': (event: SlotInvalidatedEvent) => void;
  /** The set of synchronous (or quorum) standbys that commits wait for changed. */
  'sync:standbys': (event: SyncStandbysEvent) => void;
}

interface Pending {
  readonly result: AppendResult;
  readonly entries: readonly EntryInput[];
  flushed: boolean;
  dropped: unknown;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * The read/write node. Commits append batches to the WAL (group-committed), the
 * application applies them in LSN order once durable, and every connected standby receives
 * the WAL through its own sender.
 */
export class Primary extends EventEmitter<PrimaryEvents> {
  readonly #log: WalLog;
  readonly #slots: SlotManager;
  readonly #app: Application;
  readonly #storage: Storage;
  readonly #snapshots: SnapshotStore;
  readonly #options: PrimaryOptions & typeof PRIMARY_DEFAULTS;
  readonly #debug: Logger;
  readonly #applied: LsnWaiters;
  readonly #syncRep: SyncRep;
  /** The default commit level; `reload()` changes it. */
  #synchronousCommit: SynchronousCommit;
  readonly #queue: Pending[] = [];
  #control: ControlData;
  #service: WalService | null = null;
  #address: string | null = null;
  #draining = false;
  #applying: Promise<void> | null = null;
  /** Settled by the drain once no commit is queued and no apply runs (see {@link #whenIdle}). */
  #idle: { promise: Promise<void>; resolve: () => void } | null = null;
  /** Positions of the base backups `baseBackup()` is writing: their standbys will stream from there. */
  readonly #backupsInProgress = new Set<{ lsn: Lsn }>();
  #pause: Promise<void> | null = null;
  #failure: WalshipError | null = null;
  #closing: Promise<void> | null = null;
  /** The checkpoint in progress (or the last one); close() waits for it. */
  #checkpointing: Promise<unknown> = Promise.resolve();

  private constructor(
    log: WalLog,
    slots: SlotManager,
    app: Application,
    storage: Storage,
    control: ControlData,
    appliedLsn: Lsn,
    options: PrimaryOptions & typeof PRIMARY_DEFAULTS,
    syncConfig: SyncStandbyConfig | null,
  ) {
    super();
    this.#syncRep = new SyncRep(syncConfig);
    this.#syncRep.on('sync:standbys', (event) => this.#emitSafely('sync:standbys', event));
    this.#synchronousCommit = options.synchronousCommit;
    this.#log = log;
    this.#slots = slots;
    this.#app = app;
    this.#storage = storage;
    this.#snapshots = new SnapshotStore(storage);
    this.#control = control;
    this.#options = options;
    this.#applied = new LsnWaiters(appliedLsn);
    this.#debug = createLogger('primary', options.logPrefix);
    log.on('error', ({ error, fatal }) => {
      if (fatal) this.#fail(error);
      this.#emitSafely('wal:error', { error, fatal });
    });
  }

  /**
   * Opens (or creates) a primary: validates the options (nothing is created when they are
   * invalid), recovers the WAL, brings the application to its last state by replaying the
   * batches after its checkpoint, and starts listening for standbys.
   */
  static async open(options: PrimaryOptions): Promise<Primary> {
    validateOptions(options);
    checkNodeObjects('Primary', options);
    if (options.listen !== undefined) checkTransport('Primary.listen.transport', options.listen.transport);
    const settings = withDefaults(PRIMARY_DEFAULTS, options);
    const syncConfig = parseSynchronousStandbyNames(settings.synchronousStandbyNames);
    const auth = options.listen === undefined ? null : await compileAuth(options.auth);
    const storage = storageOf(options);
    const log = await WalLog.open({
      storage,
      ...(options.segmentSize === undefined ? {} : { segmentSize: options.segmentSize }),
      ...(options.sync === undefined ? {} : { sync: options.sync }),
      ...(options.recycleSegments === undefined ? {} : { recycleSegments: options.recycleSegments }),
      ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }),
    });
    let primary: Primary | null = null;
    try {
      let control = await readControlFile(storage);
      if (control === null) {
        // A new node (or a directory a bare WalLog wrote): the cluster gets its identity now.
        control = { systemId: newSystemId(), segmentSize: log.segmentSize, timeline: log.timeline, checkpoint: null, consistentLsn: 0 };
        await writeControlFile(storage, control);
      }
      const slots = await SlotManager.open(storage);
      const snapshots = new SnapshotStore(storage);
      const start = await restoreApplication(options.application, log, control, snapshots);
      if (start > log.flushedLsn) {
        throw new WalshipError('WAL_CORRUPT', `the application's state is at ${formatLsn(start)}, past the end of the WAL at ${formatLsn(log.flushedLsn)}: WAL it had applied is lost`);
      }
      let applied = start;
      await replay(log, options.application, start, { follow: false, onApplied: (lsn) => (applied = lsn) });
      primary = new Primary(log, slots, options.application, storage, control, Math.max(applied, start), settings, syncConfig);
      if (options.listen !== undefined && auth !== null) await primary.#listen(options.listen, auth, settings);
      primary.#debug('open: system %s, WAL %s … %s, applied up to %s', control.systemId, formatLsn(log.oldestLsn), formatLsn(log.flushedLsn), formatLsn(applied));
      return primary;
    } catch (err) {
      if (primary !== null) await primary.close().catch(() => undefined);
      else await log.close().catch(() => undefined);
      throw err;
    }
  }

  /** The cluster's identity, shared by all its standbys (16 hex digits). */
  get systemId(): string {
    return this.#control.systemId;
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
    return this.#applied.position;
  }

  get timeline(): number {
    return this.#log.timeline;
  }

  /** The address standbys connect to, once listening. */
  get address(): string | null {
    return this.#address;
  }

  /** The WAL (read-only use: readers, positions). */
  get wal(): WalLog {
    return this.#log;
  }

  /** Why the primary stopped (a failed fsync, an `apply` that threw), if it did. */
  get failure(): WalshipError | null {
    return this.#failure;
  }

  /**
   * Commits one atomic batch. Resolves once it is durable at the requested level and the
   * primary's own application has applied it (for `off`: as soon as it is in the log); at
   * the remote levels, also once the synchronous standbys confirmed it (waiting as long as it
   * takes: never silently less). Concurrent commits share one write and one fsync.
   */
  commit(entries: EntryInput | readonly EntryInput[], options: CommitOptions = {}): Promise<CommitResult> {
    if (this.#closing !== null) return Promise.reject(new WalshipError('WAL_CLOSED', 'the primary is shutting down; no new commits'));
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const level = options.synchronousCommit ?? this.#synchronousCommit;
    if (!LEVELS.includes(level)) {
      return Promise.reject(new WalshipError('INVALID_ARGUMENT', `synchronousCommit must be one of ${LEVELS.join(', ')}; got ${String(level)}`));
    }
    if (options.timeoutMs !== undefined && !(Number.isInteger(options.timeoutMs) && options.timeoutMs >= 0 && options.timeoutMs <= MAX_TIMEOUT_MS)) {
      return Promise.reject(new WalshipError('INVALID_ARGUMENT', `timeoutMs must be an integer from 0 to ${MAX_TIMEOUT_MS}; got ${String(options.timeoutMs)}`));
    }
    let result: AppendResult;
    try {
      result = this.#log.append(entries);
    } catch (err) {
      return Promise.reject(err);
    }
    const committed = { lsn: result.endLsn, startLsn: result.lsn };
    let batch: readonly EntryInput[] = Array.isArray(entries) ? entries : [entries as EntryInput];
    // The caller may reuse its buffers once commit() settles; when that can happen before
    // the batch is applied, apply a copy, so the application sees what the WAL holds.
    if (level === 'off' || options.signal !== undefined) batch = copyEntries(batch);
    const applied = new Promise<void>((resolve, reject) => {
      const pending: Pending = { result, entries: batch, flushed: false, dropped: null, resolve, reject };
      this.#queue.push(pending);
      this.#log.waitForFlush(result).then(
        () => {
          pending.flushed = true;
          this.#drain();
        },
        (err: unknown) => {
          pending.dropped = err;
          this.#drain();
        },
      );
    });
    if (level === 'off') {
      applied.catch((err: unknown) => this.#debug.error('an asynchronous commit at %s failed: %s', formatLsn(result.lsn), (err as Error).message));
      return Promise.resolve(committed);
    }
    const { signal } = options;
    const mode = SYNC_WAIT_MODES[level];
    if (mode !== null && this.#syncRep.config !== null) {
      const local = signal === undefined ? applied : this.#localWait(applied, signal, result.endLsn);
      // Registered once durable and applied here: standbys receive only flushed WAL, so none
      // can have confirmed it earlier, and a cancel from then on means "committed locally".
      return local.then(() => this.#syncRep.wait(result.endLsn, mode, options)).then(() => committed);
    }
    if (signal === undefined) return applied.then(() => committed);
    return this.#localWait(applied, signal, result.endLsn).then(() => committed);
  }

  /** `applied`, or `ABORTED` as soon as `signal` fires (the batch stays committed). */
  #localWait(applied: Promise<void>, signal: AbortSignal, endLsn: Lsn): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(abortedWait(signal, endLsn));
      const onAbort = (): void => reject(abortedWait(signal, endLsn));
      signal.addEventListener('abort', onAbort, { once: true });
      applied.then(
        () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      );
    });
  }

  /**
   * Changes the synchronous replication settings while the primary runs (PostgreSQL's reload
   * of `synchronous_standby_names` and `synchronous_commit`). Waiting commits are re-evaluated
   * at once: clearing the names releases all of them. `INVALID_OPTIONS` changes nothing.
   */
  reload(options: ReloadOptions): void {
    this.#assertUsable();
    if (typeof options !== 'object' || options === null) throw new WalshipError('INVALID_OPTIONS', 'reload() options must be an object');
    const unknown = Object.keys(options).filter((k) => k !== 'synchronousStandbyNames' && k !== 'synchronousCommit');
    if (unknown.length > 0) throw new WalshipError('INVALID_OPTIONS', `reload() cannot change "${unknown[0]}" (only synchronousStandbyNames and synchronousCommit)`);
    const { synchronousCommit, synchronousStandbyNames } = options;
    if (synchronousCommit !== undefined && !LEVELS.includes(synchronousCommit)) {
      throw new WalshipError('INVALID_OPTIONS', `reload(): synchronousCommit must be one of ${LEVELS.join(', ')}; got ${String(synchronousCommit)}`);
    }
    if (synchronousStandbyNames !== undefined && (typeof synchronousStandbyNames !== 'string' || synchronousStandbyNames.length > MAX_STANDBY_NAMES_LENGTH)) {
      throw new WalshipError('INVALID_OPTIONS', `reload(): synchronousStandbyNames must be a string of at most ${MAX_STANDBY_NAMES_LENGTH} characters`);
    }
    const config = synchronousStandbyNames === undefined ? undefined : parseSynchronousStandbyNames(synchronousStandbyNames);
    if (synchronousCommit !== undefined) this.#synchronousCommit = synchronousCommit;
    if (config !== undefined) {
      this.#debug('synchronousStandbyNames is now %s', config === null ? "'' (off)" : config.text);
      this.#syncRep.reload(config, this.#service?.syncInputs() ?? []);
    }
  }

  /** Resolves once the primary's application has applied everything up to `lsn`. */
  waitForApply(lsn: Lsn, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    assertLsn(lsn);
    return this.#applied.wait(lsn, options);
  }

  /** `pg_stat_replication`: one row per connected standby. */
  replicationStatus(): ReplicationStatusRow[] {
    return this.#service?.status() ?? [];
  }

  /**
   * Creates a physical replication slot, durably (`pg_create_physical_replication_slot`). With
   * `reserveWal` it holds WAL at once from where the primary's application has applied (as
   * PostgreSQL reserves from its last redo point), so that a base backup taken next is covered;
   * otherwise from where its standby first starts streaming. `INVALID_SLOT_NAME`, `SLOT_EXISTS`.
   */
  async createSlot(name: string, options: CreateSlotOptions = {}): Promise<SlotInfo> {
    this.#assertUsable();
    if (typeof options !== 'object' || options === null) throw new WalshipError('INVALID_ARGUMENT', 'createSlot() options must be an object');
    const unknown = Object.keys(options).filter((k) => k !== 'reserveWal');
    if (unknown.length > 0) throw new WalshipError('INVALID_ARGUMENT', `createSlot() options has unknown option "${unknown[0]}"`);
    if (options.reserveWal !== undefined && typeof options.reserveWal !== 'boolean') {
      throw new WalshipError('INVALID_ARGUMENT', `createSlot() options.reserveWal must be a boolean, got ${typeof options.reserveWal}`);
    }
    // The applied position is never past the flushed one, nor before the oldest WAL kept.
    return this.#slots.create(name, options.reserveWal === true ? { reserveAt: Math.min(this.#applied.position, this.#log.flushedLsn) } : {});
  }

  /**
   * CREATE_REPLICATION_SLOT from a standby: like {@link createSlot}, or reserving from
   * `reserveFrom` (where the standby resumes), which must still be in the WAL.
   */
  async #createSlotFor(name: string, reserveWal: boolean, reserveFrom: Lsn | null): Promise<SlotInfo> {
    if (!reserveWal || reserveFrom === null) return this.createSlot(name, { reserveWal });
    this.#assertUsable();
    if (reserveFrom > this.#log.flushedLsn) {
      throw new WalshipError('INVALID_ARGUMENT', `cannot reserve WAL from ${formatLsn(reserveFrom)}: it is ahead of the WAL flush position ${formatLsn(this.#log.flushedLsn)}`);
    }
    if (reserveFrom < this.#log.oldestLsn) {
      throw new WalshipError('WAL_REMOVED', `replication slot "${name}" cannot reserve WAL from ${formatLsn(reserveFrom)}: the oldest WAL left is at ${formatLsn(this.#log.oldestLsn)}`);
    }
    return this.#slots.create(name, { reserveAt: reserveFrom });
  }

  /** Drops a replication slot, durably. `SLOT_NOT_FOUND`; `SLOT_ACTIVE` while a standby streams with it. */
  async dropSlot(name: string): Promise<void> {
    this.#assertUsable();
    await this.#slots.drop(name);
  }

  /**
   * Moves an inactive slot's `restartLsn` forward to `lsn` (`pg_replication_slot_advance`),
   * never past the flushed end of the WAL and never back, and persists it. Resolves with the
   * new `restartLsn`. `SLOT_ACTIVE` while a standby streams with it; `WAL_REMOVED` once lost.
   */
  async advanceSlot(name: string, lsn: Lsn): Promise<Lsn> {
    this.#assertUsable();
    assertLsn(lsn);
    if (this.#slots.has(name) && this.#slots.get(name).restartLsn === null && Math.min(lsn, this.#log.flushedLsn) < this.#log.oldestLsn) {
      throw new WalshipError('WAL_REMOVED', `replication slot "${name}" cannot reserve WAL from ${formatLsn(lsn)}: the oldest WAL left is at ${formatLsn(this.#log.oldestLsn)}`);
    }
    const restartLsn = this.#slots.advance(name, { flushLsn: this.#log.flushedLsn, lsn });
    await this.#slots.flush();
    return restartLsn;
  }

  /** `pg_replication_slots`: every slot, by name, with its `walStatus` and `safeWalSize`. */
  slots(): ReplicationSlotRow[] {
    return this.#slots.list(this.#retentionState());
  }

  /** Rejects calls that change the node once it is closing or has failed. */
  #assertUsable(): void {
    if (this.#closing !== null) throw new WalshipError('WAL_CLOSED', 'the primary is shutting down');
    if (this.#failure !== null) throw this.#failure;
  }

  /** Where the WAL stands, for the retention rules. */
  #retentionState(checkpointLsn: Lsn | null = this.#control.checkpoint?.lsn ?? null): RetentionState {
    return {
      segmentSize: this.#log.segmentSize,
      currentLsn: this.#log.flushedLsn,
      oldestLsn: this.#log.oldestLsn,
      checkpointLsn,
      walKeepSize: this.#options.walKeepSize,
      maxSlotWalKeepSize: this.#options.maxSlotWalKeepSize,
    };
  }

  /**
   * Records how far the application's state is durable, so that a restart replays only what
   * follows and older WAL can go (PostgreSQL's checkpoint). With `lsn`, the application
   * states that it has made its own state durable up to there. Without it, walship takes
   * the application's `snapshot()` and stores it in the data directory.
   */
  checkpoint(lsn?: Lsn): Promise<CheckpointResult> {
    if (this.#closing !== null) return Promise.reject(new WalshipError('WAL_CLOSED', 'the primary is shutting down'));
    // One at a time: each rewrites the control file and the snapshot's partial file.
    const run = this.#checkpointing.catch(() => undefined).then(() => this.#checkpoint(lsn));
    this.#checkpointing = run;
    return run;
  }

  async #checkpoint(lsn?: Lsn): Promise<CheckpointResult> {
    if (this.#failure !== null) throw this.#failure;
    let checkpoint: { lsn: Lsn; snapshot: boolean };
    if (lsn !== undefined) {
      assertLsn(lsn);
      if (lsn > this.#applied.position) {
        throw new WalshipError('INVALID_ARGUMENT', `cannot checkpoint at ${formatLsn(lsn)}: the application has applied only up to ${formatLsn(this.#applied.position)}`);
      }
      checkpoint = { lsn, snapshot: false };
    } else {
      if (this.#app.snapshot === undefined) {
        throw new WalshipError('INVALID_ARGUMENT', 'checkpoint() without an lsn takes a snapshot, and the application has no snapshot() hook; pass the lsn up to which its state is durable');
      }
      const backup = await this.#takeSnapshot();
      await this.#snapshots.write(backup.lsn, backup.timeline, backup.data);
      checkpoint = { lsn: backup.lsn, snapshot: true };
    }
    const previous = this.#control.checkpoint;
    if (previous !== null && previous.lsn > checkpoint.lsn) return previous;
    this.#control = { ...this.#control, checkpoint };
    await writeControlFile(this.#storage, this.#control);
    await this.#snapshots.removeOlderThan(checkpoint.snapshot ? checkpoint.lsn : Number.MAX_SAFE_INTEGER).catch(() => undefined);
    await this.#removeOldWal(checkpoint.lsn);
    return checkpoint;
  }

  /**
   * Writes a ready-to-open standby data directory (PostgreSQL's `pg_basebackup`): the
   * application's snapshot, the control file with this cluster's identity, and nothing of
   * the WAL, which the standby streams from the snapshot's position when it opens.
   */
  async baseBackup(target: { dir?: string; storage?: Storage }): Promise<BaseBackupResult> {
    if (this.#closing !== null) throw new WalshipError('WAL_CLOSED', 'the primary is shutting down');
    if ((target.dir === undefined) === (target.storage === undefined)) {
      throw new WalshipError('INVALID_ARGUMENT', 'baseBackup() needs exactly one of "dir" and "storage"');
    }
    const storage = storageOf(target);
    await storage.prepare();
    const lock = await storage.lock();
    try {
      const names = (await storage.list()).filter((name) => !name.startsWith('walship.lock'));
      if (names.length > 0) throw new WalshipError('INVALID_ARGUMENT', `the base backup's target ${storage.description} is not empty`);
      const backup = await this.#baseBackupData();
      // Until it is written, checkpoints keep the WAL its standby will stream from.
      const inProgress = { lsn: backup.lsn };
      this.#backupsInProgress.add(inProgress);
      try {
        const written = await new SnapshotStore(storage).write(backup.lsn, backup.timeline, backup.data);
        await writeControlFile(storage, {
          systemId: this.systemId,
          segmentSize: this.#log.segmentSize,
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

  /**
   * Fast shutdown: refuses new commits, waits for those in flight to be durable and applied
   * (or to fail), seals the WAL with its shutdown record (PostgreSQL's shutdown checkpoint),
   * lets connected standbys receive all of it, shutdown record included (each gets at most
   * `walSenderTimeoutMs` to confirm), then closes the WAL. Leaves no timer or socket behind.
   * Rejects, after all of that, if stopping the standbys' connections failed.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    let error: unknown = null;
    // Commits waiting for standbys stop waiting: they are committed locally (PostgreSQL
    // cancels these waits when it shuts down).
    this.#syncRep.cancelAll('the primary is shutting down');
    try {
      await this.#checkpointing.catch(() => undefined);
      await this.#log.flush().catch(() => undefined);
      await this.#whenIdle();
      await this.#log.seal().catch((err: unknown) => this.#debug.error('sealing the WAL: %s', (err as Error).message));
      await this.#service?.close(this.#log.flushedLsn, this.#options.walSenderTimeoutMs);
      // The positions the standbys confirmed last survive the restart (PostgreSQL saves slots at shutdown).
      await this.#slots.flush();
    } catch (err) {
      error = err;
      this.#debug.error('closing: %s', (err as Error).message);
    } finally {
      await this.#log.close().catch((err: unknown) => this.#debug.error('closing the WAL: %s', (err as Error).message));
      this.#applied.fail(new WalshipError('WAL_CLOSED', 'the primary is closed'));
    }
    if (error !== null) throw error;
  }

  /** Resolves once no commit is queued and no apply runs (at once if so now). */
  #whenIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    if (this.#idle === null) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.#idle = { promise, resolve };
    }
    return this.#idle.promise;
  }

  #isIdle(): boolean {
    return this.#queue.length === 0 && !this.#draining;
  }

  /** Settles {@link #whenIdle}'s promise when the primary has become idle. */
  #checkIdle(): void {
    if (this.#idle === null || !this.#isIdle()) return;
    const { resolve } = this.#idle;
    this.#idle = null;
    resolve();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #listen(listen: { transport: Transport; address: string }, auth: Awaited<ReturnType<typeof compileAuth>>, settings: PrimaryOptions & typeof PRIMARY_DEFAULTS): Promise<void> {
    const service = new WalService(
      {
        log: this.#log,
        systemId: this.systemId,
        baseBackup: () => this.#baseBackupData(),
        slots: this.#slots,
        createSlot: (name, { reserveWal, reserveFrom }) => this.#createSlotFor(name, reserveWal, reserveFrom),
      },
      {
        transport: listen.transport,
        address: listen.address,
        auth,
        maxWalSenders: settings.maxWalSenders,
        walSenderTimeoutMs: settings.walSenderTimeoutMs,
        maxMessageBytes: settings.maxWalMessageBytes,
        syncRep: this.#syncRep,
        ...(settings.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: settings.handshakeTimeoutMs }),
        ...(settings.authFailureDelayMs === undefined ? {} : { authFailureDelayMs: settings.authFailureDelayMs }),
        ...(settings.logPrefix === undefined ? {} : { logPrefix: settings.logPrefix }),
      },
    );
    for (const event of ['standby:connected', 'standby:disconnected', 'standby:refused', 'sender:state', 'standby:caught-up'] as const) {
      service.on(event, (payload: unknown) => this.#emitSafely(event, payload as never));
    }
    service.server.on('auth:failed', (event) => this.#emitSafely('auth:failed', event));
    service.server.on('connection:error', (event) => this.#emitSafely('connection:error', event));
    this.#service = service;
    this.#address = await service.listen();
  }

  /** A snapshot for a standby: fails with `BASE_BACKUP_FAILED` when the application cannot take one. */
  async #baseBackupData(): Promise<BaseBackupData> {
    if (this.#app.snapshot === undefined) {
      throw new WalshipError('BASE_BACKUP_UNAVAILABLE', "the primary's application has no snapshot() hook, so it cannot make a base backup");
    }
    try {
      return await this.#takeSnapshot();
    } catch (err) {
      if (isWalshipError(err)) throw err;
      throw new WalshipError('BASE_BACKUP_FAILED', `the application's snapshot() failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Pauses applying (after the batch in progress) while the application takes its snapshot. */
  async #takeSnapshot(): Promise<{ lsn: Lsn; timeline: number; size: number | null; data: SnapshotData }> {
    const snapshot = this.#app.snapshot as () => Promise<SnapshotData>;
    while (this.#pause !== null) await this.#pause;
    let resume!: () => void;
    this.#pause = new Promise((resolve) => (resume = resolve));
    try {
      await this.#applying;
      const lsn = this.#applied.position;
      const data = await snapshot.call(this.#app);
      return { lsn, timeline: this.#log.timeline, size: data instanceof Uint8Array ? data.length : null, data };
    } finally {
      this.#pause = null;
      resume();
    }
  }

  /** Applies durable batches in LSN order; one drain runs at a time. */
  #drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    void this.#drainLoop().finally(() => {
      this.#draining = false;
      const head = this.#queue[0];
      if (head !== undefined && (head.flushed || head.dropped !== null) && this.#failure === null) this.#drain();
      else this.#checkIdle();
    });
  }

  async #drainLoop(): Promise<void> {
    for (let head = this.#queue[0]; head !== undefined && (head.flushed || head.dropped !== null); head = this.#queue[0]) {
      if (this.#failure !== null) return;
      this.#queue.shift();
      if (head.dropped !== null) {
        head.reject(head.dropped);
        continue;
      }
      while (this.#pause !== null) await this.#pause;
      const { result } = head;
      this.#applying = applyBatch(this.#app, result.endLsn, result.lsn, this.#log.timeline, head.entries.map(toEntry));
      try {
        await this.#applying;
      } catch (err) {
        const error = err as WalshipError;
        head.reject(error);
        this.#emitSafely('apply:error', { error });
        this.#fail(error);
        return;
      } finally {
        this.#applying = null;
      }
      this.#applied.advance(result.endLsn);
      head.resolve();
    }
  }

  /** Stops the primary for good: every waiting and later commit gets `error`. */
  #fail(error: WalshipError): void {
    if (this.#failure !== null) return;
    this.#failure = error;
    this.#debug.error('primary stopped: %s', error.message);
    for (const pending of this.#queue.splice(0)) pending.reject(error);
    this.#applied.fail(error);
    this.#syncRep.cancelAll(`the primary stopped: ${error.message}`);
    this.#checkIdle();
  }

  /**
   * Removes WAL that no checkpoint, no replication slot (within `maxSlotWalKeepSize`), no
   * `walKeepSize`, no connected standby and no base backup in progress needs any more. The
   * slots decide first, durably ({@link SlotManager.planWalRemoval}): a slot too far behind is
   * invalidated, announced, and its connection ended before any of its WAL goes.
   */
  async #removeOldWal(checkpointLsn: Lsn): Promise<void> {
    const plan = await this.#slots.planWalRemoval(this.#retentionState(checkpointLsn));
    for (const slot of plan.invalidated) {
      this.#debug.error('replication slot %s invalidated: it held WAL from %s, beyond maxSlotWalKeepSize', slot.slotName, formatLsn(slot.restartLsn));
      const error = new WalshipError(
        'WAL_REMOVED',
        `replication slot "${slot.slotName}" was invalidated (${WAL_REMOVED_REASON}): it held WAL from ${formatLsn(slot.restartLsn)}, more than maxSlotWalKeepSize behind`,
      );
      this.#service?.terminateSlotHolder(slot.slotName, error);
      this.#emitSafely('slot:invalidated', { slotName: slot.slotName, reason: WAL_REMOVED_REASON, restartLsn: slot.restartLsn });
    }
    const needed = [plan.keepFromLsn, ...[...this.#backupsInProgress].map((b) => b.lsn)];
    const standbys = this.#service?.retainedLsn() ?? null;
    if (standbys !== null) needed.push(standbys);
    const keepFrom = Math.min(...needed);
    const removed = await this.#log.removeSegmentsBefore(keepFrom);
    if (removed.length > 0) this.#debug('checkpoint removed %d WAL segments before %s', removed.length, formatLsn(keepFrom));
  }

  #emitSafely<E extends keyof PrimaryEvents>(event: E, payload: Parameters<PrimaryEvents[E]>[0]): void {
    try {
      (this.emit as (event: E, payload: unknown) => boolean)(event, payload);
    } catch (err) {
      this.#debug.error('a %s listener threw: %s', event, (err as Error).message);
    }
  }
}

/** The entries with their bytes copied into one new buffer. */
function copyEntries(entries: readonly EntryInput[]): EntryInput[] {
  let size = 0;
  for (const entry of entries) size += (entry instanceof Uint8Array ? entry : entry.data).length;
  const copy = Buffer.allocUnsafe(size);
  let at = 0;
  return entries.map((entry) => {
    const data = entry instanceof Uint8Array ? entry : entry.data;
    copy.set(data, at);
    const view = copy.subarray(at, (at += data.length));
    return entry instanceof Uint8Array || entry.channel === undefined ? view : { data: view, channel: entry.channel };
  });
}

function toEntry(entry: EntryInput): { data: Uint8Array; channel?: string } {
  return entry instanceof Uint8Array ? { data: entry } : entry;
}

function abortedWait(signal: AbortSignal, lsn: Lsn): WalshipError {
  return new WalshipError('ABORTED', `stopped waiting for the commit at ${formatLsn(lsn)}; it is in the log and will be applied`, { cause: signal.reason });
}

/** A random, non-zero 64-bit cluster identity. */
function newSystemId(): string {
  for (;;) {
    const id = randomBytes(8).toString('hex');
    if (id !== '0000000000000000') return id;
  }
}
