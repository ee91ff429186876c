import { rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isArchiver, type Archiver } from './archive/archiver.js';
import { promoteChannel } from './diagnostics.js';
import { removeArchivedBefore, type ArchiveCleanup } from './roles/archive-cleanup.js';
import { WalshipError, isWalshipError } from './errors.js';
import { Lifecycle, NodeBase, type CloseOptions } from './lifecycle.js';
import { createLogger, type Logger } from './logger.js';
import type { WaitOptions } from './lsn-waiters.js';
import { assertLsn, type Lsn } from './lsn.js';
import type { CheckpointResult } from './node/checkpointer.js';
import { NODE_EVENT_NAMES, NodeCore, type BaseBackupResult, type NodeEvents } from './node/node-core.js';
import { PROMOTE_SIGNAL_FILE } from './node/promote-signal.js';
import { ARCHIVE_DEFAULTS, type ArchiverStatus } from './node/wal-archiver.js';
import {
  SERVE_DEFAULTS,
  checkNodeObjects,
  authenticationLimitsOf,
  checkEndpoint,
  nodeSchema,
  serveSchema,
  storageOf,
  validateCreateSlot,
  type CreateSlotOptions,
  type NodeOptions,
  type ServeOptions,
} from './node/node-options.js';
import { coreMetrics, type StandbyMetrics } from './metrics/node-metrics.js';
import { compileOptions, withDefaults, type OptionsValidator } from './options.js';
import { Primary, primaryOptionsSchema, type PrimaryOptions } from './primary.js';
import { REHEARSAL_INTERVAL_MS, rehearsePromotion, takeRehearsalTurn } from './promotion-rehearsal.js';
import { parseSynchronousStandbyNames } from './replication/sync-standby-names.js';
import type { SynchronousCommit } from './roles/writer.js';
import { compileAuth, type CompiledAuth } from './protocol/auth-rules.js';
import type { ReplicationStatusRow } from './replication/wal-source.js';
import { RECOVERY_EVENT_NAMES, RecoveryRole, type RecoveryEvents, type RecoveryTargetReachedEvent, type RecoveryTargetTimeline, type StandbyPrimaryOptions, type StandbyState } from './roles/recovery.js';
import { recoveryTargetSchema, resolveRecoveryTarget, type RecoveryTarget, type RecoveryTargetAction } from './node/recovery-target.js';
import type { ReplicationSlotRow, SlotInfo } from './slots/slot-manager.js';
import type { Storage } from './storage/storage.js';
import type { Transport } from './transport/transport.js';
import { clearTimer, currentScheduler, REAL_SCHEDULER, runWithScheduler, type SchedulerTimer } from './scheduler.js';

export type { BaseBackupProgressEvent, DiscardedBatch, RecoveryTargetReachedEvent, RecoveryTargetTimeline, RewindEvent, StandbyPrimaryOptions, StandbyState } from './roles/recovery.js';
export type { RecoveryTarget, RecoveryTargetAction } from './node/recovery-target.js';

/**
 * Options of {@link Standby.open}. Give `dir` or `storage`. With `listen` (and `auth`) the
 * standby serves standbys of its own (cascading replication): it streams them the WAL it has
 * received and flushed, serves base backups and keeps replication slots, as a primary does.
 */
export interface StandbyOptions extends NodeOptions, ServeOptions {
  /**
   * The upstream to stream from (`primary_conninfo`). Without it, `restore` is required: the
   * standby is a file-based log-shipping standby and gets its WAL from the archive alone.
   */
  readonly primary?: StandbyPrimaryOptions;
  /**
   * Where to restore WAL from (`restore_command`, as an object): before streaming, the standby
   * restores every segment the archive has past its WAL's end (following newer timelines whose
   * history files it holds, as `recoveryTargetTimeline` allows), then streams; when streaming
   * fails (and when the primary no longer has the WAL it needs), it goes back to the archive.
   * Without `primary`, it looks in the archive every `restoreIntervalMs`. Each segment is
   * checked whole before it is written; the standby never shows data from WAL it has not
   * restored or received.
   */
  readonly restore?: Archiver;
  /** How long a standby waits before looking in the archive again when it had nothing new (`wal_retrieve_retry_interval`). @defaultValue 5 000 */
  readonly restoreIntervalMs?: number;
  /**
   * After each restartpoint (`checkpoint()`), remove from the `restore` archive the segments
   * older than the restartpoint's (`archive_cleanup_command` with `pg_archivecleanup`), never one
   * a restart of this standby needs, never a history file; or call a function with the oldest
   * segment to keep. For an archive that serves this standby alone. @defaultValue false
   */
  readonly archiveCleanup?: ArchiveCleanup;
  /**
   * Hot standby: the application may serve reads once the standby is `consistent`.
   * Warm standby (`false`): it serves nothing until promoted. @defaultValue true
   */
  readonly hotStandby?: boolean;
  /** Report progress to the primary at least this often (`wal_receiver_status_interval`). @defaultValue 10 000 */
  readonly statusIntervalMs?: number;
  /**
   * Accept early WAL from a primary with `earlySend`: WAL shipped while the primary's own
   * fdatasync runs. The standby writes and fsyncs it, but replays, forwards, archives and
   * confirms only what the primary said is durable; each new stream starts at that point (after
   * its own restart, the highest flush stamp of its records) and the tail it holds past it is
   * compared with what arrives, cut at the first byte that differs; a promotion cuts the
   * unconfirmed tail first. Without it, a primary sends only durable WAL.
   * @defaultValue false
   */
  readonly acceptEarlyWal?: boolean;
  /**
   * Above 0: WAL that no commit waits for this standby to write or flush is made durable at
   * most this often, in milliseconds (at once when the last flush is older, else when it is).
   * The primary asks, with the WAL itself, for the WAL commits wait for (when commits need
   * this standby's confirmations: `sync`, or under `ANY n` one of `n` `quorum` standbys), and
   * that is flushed at once; while it does not ask, it sends this standby WAL at most this
   * often too. For standbys that share a disk with their primary or with its synchronous
   * standbys: an asynchronous one under a steady stream then makes one fdatasync every few
   * milliseconds instead of one per message, and leaves the disk to the syncs commits wait
   * for. The price: its replay, which applies only durable WAL, lags by up to twice this much
   * more (apply latency at 1,000 commits/s: p50 1.1 → 7.1 ms with 5, bench/README.md). 0
   * flushes every message at once, as PostgreSQL's walreceiver does. @defaultValue 0
   */
  readonly flushDelayMs?: number;
  /**
   * `wal_receiver_timeout`: a primary silent for half of this is asked for a reply; silent for
   * all of it, the connection is ended (`TIMEOUT`) and the standby reconnects. It also limits
   * each wait for the primary's answer while connecting and during a base backup. @defaultValue 60 000
   */
  readonly walReceiverTimeoutMs?: number;
  /** First wait before reconnecting; doubles after each failure. @defaultValue 100 */
  readonly retryMinDelayMs?: number;
  /** Longest wait between reconnects (`wal_retrieve_retry_interval`). @defaultValue 5 000 */
  readonly retryMaxDelayMs?: number;
  /**
   * Which timeline to follow (`recovery_target_timeline`): `'latest'` follows its upstream onto
   * every new timeline (after a promotion upstream) over the same connection; `'current'`
   * stays on its own timeline; a number follows up to that timeline. @defaultValue 'latest'
   */
  readonly recoveryTargetTimeline?: RecoveryTargetTimeline;
  /**
   * Where replay stops (point-in-time recovery; PostgreSQL's `recovery_target`,
   * `recovery_target_lsn`, `_time`, `_name`): `{ lsn }` (a position, or its `X/Y` text), `{ time }`
   * (a `Date`, milliseconds since the epoch, or an ISO 8601 string with a time zone), `{ name }`
   * (a restore point made by `Primary.createRestorePoint`) or `'immediate'` (as soon as the
   * state is consistent). Replay never applies a batch past it, however much WAL arrives; what
   * happens there is `recoveryTargetAction`. A target not reached yet is waited for: the standby
   * keeps streaming and replaying up to it. See {@link RecoveryTarget} for the exact stop of each.
   * @defaultValue none: replay follows the WAL to its end
   */
  readonly recoveryTarget?: RecoveryTarget;
  /**
   * `recovery_target_inclusive`, for `{ lsn }` and `{ time }`: `true` stops right after the
   * target (the batch ending at or covering the LSN, the batches committed at the time, are
   * applied), `false` right before it. @defaultValue true
   */
  readonly recoveryTargetInclusive?: boolean;
  /**
   * `recovery_target_action`: at the target, `'pause'` (the standby stays up and readable,
   * goes on receiving WAL, applies nothing more until `resumeReplay()`, or promote it),
   * `'promote'` (it promotes itself, its new timeline beginning at the target: WAL received
   * past it is set aside, never applied), `'shutdown'` (it closes itself; reopened with the same
   * target, it stops there again). @defaultValue 'pause'
   */
  readonly recoveryTargetAction?: RecoveryTargetAction;
  /**
   * When the upstream's new timeline left this node's timeline before the node's end (a former
   * primary rejoining, or a standby ahead of the promoted one): `true` rewinds (the WAL past
   * the switch point is set aside and reported by the `rewind` event, the application is
   * brought back from a local snapshot or a base backup), `false` stops with
   * `TIMELINE_DIVERGED`, the directory untouched. Nothing is ever deleted either way.
   * @defaultValue true
   */
  readonly rewind?: boolean;
  /**
   * A file path (PostgreSQL's `promote_trigger_file`): when the file appears the standby
   * promotes itself, then removes the file. The new `Primary` comes with the `promoted` event.
   * A standby opened with `dir` also watches the promote signal file `<dir>/promote`
   * (`PROMOTE_SIGNAL_FILE`, what `walship promote` writes) the same way, with or without this.
   */
  readonly promoteTriggerFile?: string;
}

/** Options of {@link Standby.promote}. */
export interface PromoteOptions {
  /** The new primary's default commit level. @defaultValue 'on' */
  readonly synchronousCommit?: SynchronousCommit;
  /** The new primary's synchronous standbys (see `PrimaryOptions`). @defaultValue '' */
  readonly synchronousStandbyNames?: string;
  /** Stops waiting for replay to apply what was received; the standby then goes on as it was. */
  readonly signal?: AbortSignal;
}

/** Payload of `promoted`. */
export interface PromotedEvent {
  /** The node as a primary: the object the application uses (and listens to) from now on. */
  readonly primary: Primary;
  /** The new timeline. */
  readonly timeline: number;
  /** Where it began: the end of the WAL the standby had received whole, or its recovery target's stop when that came first. */
  readonly switchLsn: Lsn;
}

/** Defaults of {@link StandbyOptions}. */
export const STANDBY_DEFAULTS = Object.freeze({
  ...SERVE_DEFAULTS,
  /** Hot standby: the application may serve reads once the standby is consistent. */
  hotStandby: true,
  /** A status report to the primary at least every 10 s. */
  statusIntervalMs: 10_000,
  /** The primary sends only durable WAL. */
  acceptEarlyWal: false,
  /** Every message is flushed at once, as PostgreSQL's walreceiver does. */
  flushDelayMs: 0,
  /** A primary silent for 30 s is asked for a reply; for 60 s, the connection is ended. */
  walReceiverTimeoutMs: 60_000,
  /** The first reconnect waits 100 ms … */
  retryMinDelayMs: 100,
  /** … doubling up to 5 s. */
  retryMaxDelayMs: 5_000,
  /** Follows the newest timeline it finds. */
  recoveryTargetTimeline: 'latest' as RecoveryTargetTimeline,
  /** A standby whose WAL diverged from its new upstream's rewinds itself. */
  rewind: true,
  /** The archive is polled every 5 s. */
  restoreIntervalMs: 5_000,
  /** Recovery stops right after the target, not right before it. */
  recoveryTargetInclusive: true,
  /** Recovery pauses at its target. */
  recoveryTargetAction: 'pause' as RecoveryTargetAction,
});

/** The literal behind {@link standbyOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const standbySchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  required: ['application'],
  properties: {
    ...nodeSchema,
    ...serveSchema,
    primary: {
      type: 'object',
      additionalProperties: false,
      required: ['transport', 'address', 'user', 'applicationName'],
      properties: {
        transport: {},
        address: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', minItems: 1, maxItems: 64, items: { type: 'string', minLength: 1 } }] },
        user: { type: 'string', minLength: 1, maxLength: 255 },
        password: { type: 'string', minLength: 1 },
        applicationName: { type: 'string', maxLength: 255 },
        slotName: { type: 'string', pattern: '^[a-z0-9_]{1,63}$' },
        createSlot: { type: 'boolean' },
        requireAuth: { enum: ['scram-sha-256', 'none'] },
        connectTimeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
      },
    },
    restore: {},
    restoreIntervalMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
    archiveCleanup: {},
    hotStandby: { type: 'boolean' },
    statusIntervalMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
    acceptEarlyWal: { type: 'boolean' },
    flushDelayMs: { type: 'integer', minimum: 0, maximum: 1000 },
    walReceiverTimeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
    retryMinDelayMs: { type: 'integer', minimum: 1, maximum: 3_600_000 },
    retryMaxDelayMs: { type: 'integer', minimum: 1, maximum: 3_600_000 },
    promoteTriggerFile: { type: 'string', minLength: 1 },
    rewind: { type: 'boolean' },
    recoveryTargetTimeline: { anyOf: [{ enum: ['latest', 'current'] }, { type: 'integer', minimum: 1, maximum: 0xffffffff }] },
    recoveryTarget: recoveryTargetSchema,
    recoveryTargetInclusive: { type: 'boolean' },
    recoveryTargetAction: { enum: ['pause', 'promote', 'shutdown'] },
  },
});

/** JSON schema of {@link StandbyOptions} (objects with methods are checked separately). */
export const standbyOptionsSchema: typeof standbySchema = standbySchema;

/** The literal behind {@link promoteOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const promoteSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    synchronousCommit: primaryOptionsSchema.properties.synchronousCommit,
    synchronousStandbyNames: primaryOptionsSchema.properties.synchronousStandbyNames,
    signal: {},
  },
});

/** JSON schema of {@link PromoteOptions} (`signal` is checked separately). */
export const promoteOptionsSchema: typeof promoteSchema = promoteSchema;

const validatePromote: OptionsValidator<PromoteOptions> = compileOptions('promote()', promoteOptionsSchema);

/** The options a promoted standby passes on to its `Primary` (those both schemas have). */
const PRIMARY_OPTION_KEYS: ReadonlySet<string> = new Set(Object.keys(primaryOptionsSchema.properties));

/** How often `promoteTriggerFile` is looked for. */
const TRIGGER_POLL_MS = 100;

const validateOptions: OptionsValidator<StandbyOptions> = compileOptions('Standby', standbyOptionsSchema);

/** The literal behind {@link reconfigureOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const reconfigureSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  required: ['primary'],
  properties: { primary: standbyOptionsSchema.properties.primary },
});

/** JSON schema of {@link ReconfigureOptions}. */
export const reconfigureOptionsSchema: typeof reconfigureSchema = reconfigureSchema;

const validateReconfigure: OptionsValidator<ReconfigureOptions> = compileOptions('reconfigure()', reconfigureOptionsSchema);

/** What {@link Standby.reconfigure} changes while the standby runs. */
export interface ReconfigureOptions {
  /** The new upstream connection (all of it, as in {@link StandbyOptions.primary}). */
  readonly primary: StandbyPrimaryOptions;
}

/** The message on the `walship:promote` diagnostics channel: a standby was promoted. */
export interface PromoteDiagnostic {
  /** The standby that was promoted (from now on in state `promoted`). */
  readonly standby: Standby;
  /** The primary it became. */
  readonly primary: Primary;
  /** The new timeline. */
  readonly timeline: number;
  /** Where the new timeline begins. */
  readonly switchLsn: Lsn;
  /** From the start of the promotion to the new primary, in milliseconds. */
  readonly durationMs: number;
}

/** Events of a {@link Standby}: its recovery role's, and those of serving downstream standbys. */
export interface StandbyEvents extends NodeEvents, RecoveryEvents {
  /**
   * The standby was promoted (by `promote()` or `promoteTriggerFile`): `primary` is the node
   * from now on. This is the standby's last event: listen to the `Primary` after it.
   */
  promoted: (event: PromotedEvent) => void;
}

/**
 * A read-only follower: the recovery role over a node core. It receives the primary's WAL
 * into its own log (written and fsynced byte for byte), applies the batches through the
 * application in LSN order, exactly once, and reports its progress. It reconnects by itself
 * after any disconnect and resumes where its log ends. Opened on an empty directory, it first
 * bootstraps from the primary: a base backup when the application can `restore()`, else the
 * whole WAL from its beginning. With `listen` it serves standbys of its own (cascading).
 */
export class Standby extends NodeBase<StandbyEvents> {
  readonly #core: NodeCore;
  readonly #role: RecoveryRole;
  readonly #debug: Logger;
  readonly #lifecycle = new Lifecycle('standby');
  /** The scheduler the standby was opened on (virtual time in a simulation): its calls run on it. */
  readonly #scheduler = currentScheduler();
  readonly #options: StandbyOptions & typeof STANDBY_DEFAULTS;
  /** Passes the core's and the role's events on, until the standby is promoted. */
  readonly #forwarders: (() => void)[] = [];
  /** The primary it became, once promoted. */
  #primary: Primary | null = null;
  #promoting: Promise<Primary> | null = null;
  #trigger: SchedulerTimer | null = null;
  /** The files whose appearance promotes: `promoteTriggerFile` and `<dir>/promote` (see {@link #watchTrigger}). */
  #triggerFiles: readonly string[] = [];
  /** `open()` has returned: a recovery-target action reached while it ran waits for it (see {@link #actOnTarget}). */
  #opened = false;
  /** The recovery-target action waiting for `open()` to return. */
  #pendingAction: RecoveryTargetReachedEvent | null = null;
  /** The recovery-target action was started: a failed promotion is not retried by itself (replay stops at the target again). */
  #targetActed = false;
  /** The promotion rehearsal this standby started, until it settles (the node's close waits for it). */
  #rehearsal: Promise<void> | null = null;
  /** Rehearses again now and then while this standby waits (see {@link #rehearsePromotion}). */
  #rehearsals: SchedulerTimer | null = null;

  private constructor(storage: Storage, options: StandbyOptions & typeof STANDBY_DEFAULTS, onLocked: (() => Promise<void>) | undefined) {
    super();
    this.#options = options;
    this.#debug = createLogger('standby', options.logPrefix);
    this.emitterLog = this.#debug;
    this.#core = new NodeCore({
      storage,
      application: options.application,
      entryBuffers: options.entryBuffers,
      walKeepSize: options.walKeepSize,
      maxSlotWalKeepSize: options.maxSlotWalKeepSize,
      ...(options.archive === undefined ? {} : { archive: options.archive }),
      ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }),
    });
    this.#role = new RecoveryRole(this.#core, storage, options.application, {
      ...options,
      archiveCallTimeoutMs: options.archive?.callTimeoutMs ?? ARCHIVE_DEFAULTS.callTimeoutMs,
      ...(options.archive?.archiver === undefined ? {} : { archiver: options.archive.archiver }),
      ...(onLocked === undefined ? {} : { onLocked }),
    });
    for (const event of NODE_EVENT_NAMES) {
      const forward = (payload: unknown): void => void this.emitSafely(event, payload as never);
      this.#core.on(event, forward);
      this.#forwarders.push(() => this.#core.off(event, forward));
    }
    for (const event of RECOVERY_EVENT_NAMES) {
      const forward = (payload: unknown): void => void this.emitSafely(event, payload as never);
      this.#role.on(event, forward);
      this.#forwarders.push(() => this.#role.off(event, forward));
    }
    // After the forwarder: listeners hear that the target was reached before the action begins.
    this.#role.on('recovery-target:reached', (event) => this.#actOnTarget(event));
  }

  /**
   * Opens a standby. A directory that already holds a standby opens at once: its application
   * is brought back to its last state and replay of the local WAL starts. An empty one
   * bootstraps from the primary in the background (watch `state`, `base-backup:*` and
   * `consistent`). Either way the standby then streams from its primary, reconnecting with
   * capped exponential back-off.
   */
  static async open(options: StandbyOptions): Promise<Standby> {
    validateOptions(options);
    checkNodeObjects('Standby', options);
    if (options.primary === undefined && options.restore === undefined) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid Standby options: give "primary" (to stream), "restore" (an archiver, to restore from an archive), or both');
    }
    if (options.restore !== undefined && !isArchiver(options.restore)) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid Standby options: Standby.restore must implement Archiver (put, get, list, and optional remove)');
    }
    if (options.archiveCleanup !== undefined && typeof options.archiveCleanup !== 'boolean' && typeof options.archiveCleanup !== 'function') {
      throw new WalshipError('INVALID_OPTIONS', 'invalid Standby options: archiveCleanup must be a boolean or a function');
    }
    if (options.archiveCleanup === true && (options.restore === undefined || typeof options.restore.remove !== 'function')) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid Standby options: archiveCleanup: true needs restore, an archiver with remove()');
    }
    if (options.primary !== undefined) checkEndpoint('Standby.primary', options.primary);
    if (options.recoveryTarget !== undefined) resolveRecoveryTarget(options.recoveryTarget);
    const settings = withDefaults(STANDBY_DEFAULTS, options);
    if (options.primary?.createSlot === true && options.primary.slotName === undefined) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid Standby options: primary.createSlot needs primary.slotName');
    }
    if (settings.retryMinDelayMs > settings.retryMaxDelayMs) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid Standby options: retryMinDelayMs must not exceed retryMaxDelayMs');
    }
    if (options.listen !== undefined) checkEndpoint('Standby.listen', options.listen);
    const auth = options.listen === undefined ? null : await compileAuth(options.auth);
    const storage = storageOf(options);
    await storage.prepare().catch((err: unknown) => {
      throw new WalshipError('WAL_IO', `cannot prepare ${storage.description}: ${(err as Error).message}`, { cause: err });
    });
    const signalFile = options.dir === undefined ? undefined : join(resolve(options.dir), PROMOTE_SIGNAL_FILE);
    // A request left from before this open (PostgreSQL's RemovePromoteSignalFiles, which the
    // postmaster runs once it holds the data directory's lock): removed once this open holds
    // the lock, before the control file says a node runs here and before the watch begins. An
    // open refused with WAL_LOCKED never gets there, so a running node's request stays.
    const onLocked =
      signalFile === undefined
        ? undefined
        : () =>
            rm(signalFile, { force: true }).catch((err: unknown) => {
              throw new WalshipError('WAL_IO', `cannot remove the leftover promote signal file ${signalFile}: ${(err as Error).message}`, { cause: err });
            });
    const standby = new Standby(storage, settings, onLocked);
    standby.#triggerFiles = [settings.promoteTriggerFile, signalFile].filter((file) => file !== undefined);
    try {
      await standby.#role.prepare();
      if (options.listen !== undefined && auth !== null) await standby.#serve(options.listen, auth, settings);
    } catch (err) {
      await standby.close().catch(() => undefined);
      throw err;
    }
    standby.#role.start();
    if (standby.#triggerFiles.length > 0) standby.#watchTrigger(0);
    standby.#opened = true;
    // Once the standby could be promoted, and after that turn's own work.
    standby.#role.whenConsistent().then(
      () => standby.#scheduler.setImmediate(() => standby.#startRehearsals()),
      () => undefined,
    );
    const pending = standby.#pendingAction;
    standby.#pendingAction = null;
    // After the caller's turn, as the event itself: a listener attached right after open() hears it first.
    if (pending !== null) currentScheduler().setImmediate(() => standby.#actOnTarget(pending));
    return standby;
  }

  /**
   * Carries out `recoveryTargetAction` once replay reached the target: `promote` promotes (at
   * the target: see `RecoveryRole.promote`), `shutdown` closes the standby; `pause` has nothing
   * more to do. Not while `open()` runs (the action waits for it), and not during a promotion or
   * a shutdown already under way. A promotion that fails leaves the standby paused at the target
   * (logged; `promote()` can be called again).
   */
  #actOnTarget(event: RecoveryTargetReachedEvent): void {
    if (event.action === 'pause') return;
    if (!this.#opened) {
      this.#pendingAction = event;
      return;
    }
    if (this.#lifecycle.closing || this.#primary !== null || this.#promoting !== null || !this.#role.replayPaused || this.#targetActed) return;
    this.#targetActed = true;
    if (event.action === 'shutdown') {
      this.#debug('recovery target reached: shutting down');
      void this.close().catch((err: unknown) => this.#debug.error('shutting down at the recovery target: %s', (err as Error).message));
      return;
    }
    // A stop at the application's state may lie past the WAL received so far: the new timeline begins there.
    void this.#role.waitForReceived(event.lsn).then(
      () => {
        if (this.#lifecycle.closing || this.#primary !== null || this.#promoting !== null || !this.#role.replayPaused) return;
        this.#promoting = this.#promote({}, 'the recovery target').finally(() => {
          this.#promoting = null;
        });
        this.#promoting.catch((err: unknown) => this.#debug.error('promotion at the recovery target failed; the standby stays paused there: %s', (err as Error).message));
      },
      () => undefined,
    );
  }

  /**
   * Points the standby at another upstream while it runs (PostgreSQL 13+ reloading
   * `primary_conninfo`): the current connection ends and the next one, made at once, uses the
   * new settings. Replay, the local state and the standby's own downstream standbys are not
   * touched. `INVALID_OPTIONS` changes nothing.
   */
  reconfigure(options: ReconfigureOptions): void {
    this.#enter(() => {
      if (this.#primary !== null) throw promotedError();
      this.#lifecycle.assertOpen();
      validateReconfigure(options);
      checkEndpoint('reconfigure().primary', options.primary);
      if (options.primary.createSlot === true && options.primary.slotName === undefined) {
        throw new WalshipError('INVALID_OPTIONS', 'invalid reconfigure() options: primary.createSlot needs primary.slotName');
      }
      this.#role.reconfigure(options.primary);
    });
  }

  /**
   * Promotes the standby to primary (PostgreSQL's `pg_promote()`): it applies everything it
   * has received (up to its recovery target, when that is in what it received: the new
   * timeline then begins at the target, and the WAL past it is set aside, never applied),
   * stops streaming from its upstream, starts a new timeline (one past every
   * timeline it knows of) with a history file and an end-of-recovery record, records durably
   * that its directory is a primary's, and resolves with the running `Primary`, which accepts
   * commits at once. The record is flushed with the first commit, the history file a moment
   * later (a crash before either is repaired at open from the control file). Nothing is
   * closed or replayed: the directory's lock, the application's state, the listener and the downstream standbys' connections carry over (they follow the
   * new timeline). From then on this object is in state `promoted`, emits no more events, and
   * refuses calls with `NOT_IN_RECOVERY` (`close()` does nothing): use the `Primary`.
   *
   * Concurrent calls share one promotion. `NOT_CONSISTENT` before the standby is consistent.
   * A promotion that fails (an I/O error, the `signal`) before the directory says "primary"
   * leaves the standby streaming as it was; a crash at any point leaves a directory that opens
   * as this standby or as the new primary.
   */
  promote(options: PromoteOptions = {}): Promise<Primary> {
    return this.#enter(() => {
      if (this.#primary !== null) return Promise.reject(promotedError());
      if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError('it cannot be promoted'));
      try {
        validatePromote(options);
        if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
          throw new WalshipError('INVALID_OPTIONS', 'invalid promote() options: signal must be an AbortSignal');
        }
        parseSynchronousStandbyNames(options.synchronousStandbyNames ?? '');
      } catch (err) {
        return Promise.reject(err);
      }
      this.#promoting ??= this.#promote(options, 'promote()').finally(() => {
        this.#promoting = null;
      });
      return this.#promoting;
    });
  }

  async #promote(options: PromoteOptions, by: string): Promise<Primary> {
    const started = currentScheduler().monotonic();
    const { timeline, switchLsn, log } = await this.#role.promote(`promoted by ${by}`, options.signal);
    this.#stopTrigger();
    this.#stopRehearsals();
    for (const stop of this.#forwarders) stop();
    const primary = Primary.afterPromotion(this.#core, log, this.#primaryOptions(options));
    this.#primary = primary;
    if (promoteChannel.hasSubscribers && !this.#debug.quiet) {
      const message: PromoteDiagnostic = { standby: this, primary, timeline, switchLsn, durationMs: currentScheduler().monotonic() - started };
      promoteChannel.publish(message);
    }
    this.emitSafely('promoted', { primary, timeline, switchLsn });
    return primary;
  }

  /**
   * Once consistent (it could be promoted): rehearses a promotion now and every
   * {@link REHEARSAL_INTERVAL_MS} until closed or promoted. Not under a virtual scheduler (the
   * rehearsal's steps would be events of the simulation, and no time is spent compiling
   * there), not on the rehearsal's own standby.
   */
  #startRehearsals(): void {
    if (this.#scheduler.virtual || this.#debug.quiet || this.#lifecycle.closing || this.#primary !== null) return;
    this.#rehearsePromotion();
    this.#rehearsals = this.#scheduler.setInterval(() => this.#rehearsePromotion(), REHEARSAL_INTERVAL_MS).unref();
  }

  #stopRehearsals(): void {
    if (this.#rehearsals !== null) clearTimer(this.#rehearsals);
    this.#rehearsals = null;
  }

  /**
   * Rehearses a promotion on a private cluster in memory (see {@link rehearsePromotion}), so
   * that V8 has compiled what `promote()` and the first commit run before they are needed:
   * V8 compiles a function on its first call, and drops the bytecode of one not run for a few
   * major garbage collections, hence the rehearsal again now and then. Not when a standby of
   * this process rehearsed a moment ago (see {@link takeRehearsalTurn}: the compiled code is
   * the process's), nor once closing or promoting. A failure is only traced: it changes
   * nothing but the next promotion's speed.
   */
  #rehearsePromotion(): void {
    if (this.#lifecycle.closing || this.#primary !== null || this.#promoting !== null) return;
    if (this.#rehearsal !== null || !takeRehearsalTurn(this.#scheduler.monotonic())) return;
    this.#rehearsal = rehearsePromotion(Standby)
      .then(() => undefined)
      .catch((err: unknown) => this.#debug.trace('the promotion rehearsal failed: %s', (err as Error).message))
      .finally(() => {
        this.#rehearsal = null;
      });
    this.#core.keepUntilClosed(this.#rehearsal);
  }

  /** The new primary's options: this standby's node and serving options, and the commit settings given to promote(). */
  #primaryOptions(options: PromoteOptions): PrimaryOptions {
    const o = this.#options;
    const inherited = Object.fromEntries(Object.entries(o).filter(([key, value]) => PRIMARY_OPTION_KEYS.has(key) && value !== undefined)) as PrimaryOptions;
    return {
      ...inherited,
      ...(options.synchronousCommit === undefined ? {} : { synchronousCommit: options.synchronousCommit }),
      ...(options.synchronousStandbyNames === undefined ? {} : { synchronousStandbyNames: options.synchronousStandbyNames }),
    };
  }

  /**
   * `promoteTriggerFile` and the promote signal file: looks for them every
   * {@link TRIGGER_POLL_MS}; once one is there, promotes and removes it.
   */
  #watchTrigger(delayMs: number): void {
    this.#trigger = currentScheduler().setTimeout(() => {
      this.#trigger = null;
      void firstExisting(this.#triggerFiles).then((path) => {
        // A close() or promotion during the look found no timer to cancel: the watch ends here.
        if (this.#triggerWatchEnded) return;
        if (path === undefined) this.#watchTrigger(TRIGGER_POLL_MS);
        else void this.#promoteByTrigger(path);
      });
    }, delayMs);
    this.#trigger.unref();
  }

  async #promoteByTrigger(path: string): Promise<void> {
    if (this.#lifecycle.closing || this.#primary !== null || this.#role.failure !== null) return;
    try {
      this.#promoting ??= this.#promote({}, `the trigger file ${path}`).finally(() => {
        this.#promoting = null;
      });
      await this.#promoting;
      await rm(path, { force: true }).catch((err: unknown) => this.#debug.error('removing the trigger file %s: %s', path, (err as Error).message));
    } catch (err) {
      if (isWalshipError(err, 'NOT_IN_RECOVERY')) return;
      this.#debug.error('promotion by the trigger file %s failed: %s', path, (err as Error).message);
      // Looked for again after a while: the file stays until a promotion succeeds.
      if (!this.#triggerWatchEnded) this.#watchTrigger(this.#options.retryMaxDelayMs);
    }
  }

  /** Whether the trigger files are no longer looked for: the standby is closing, closed or promoted. */
  get #triggerWatchEnded(): boolean {
    return this.#lifecycle.closing || this.#primary !== null;
  }

  #stopTrigger(): void {
    if (this.#trigger !== null) clearTimer(this.#trigger);
    this.#trigger = null;
  }

  /**
   * Cascading replication: serves standbys of its own. They are asynchronous (a cascading
   * standby ignores synchronous replication, as PostgreSQL's does) and receive only WAL this
   * standby has flushed; while it has no local state (bootstrapping) they are refused and retry.
   */
  async #serve(listen: { transport: Transport; address: string }, auth: CompiledAuth, o: StandbyOptions & typeof STANDBY_DEFAULTS): Promise<void> {
    await this.#core.serve({
      transport: listen.transport,
      address: listen.address,
      auth,
      maxWalSenders: o.maxWalSenders,
      walSenderTimeoutMs: o.walSenderTimeoutMs,
      maxWalMessageBytes: o.maxWalMessageBytes,
      authenticationLimits: authenticationLimitsOf(o),
    });
  }

  /** What the standby is doing now (see {@link StandbyState}); `state:change` reports each change. */
  get state(): StandbyState {
    return this.#role.state;
  }

  /** Why the standby stopped, when `state` is `failed`. */
  get failure(): WalshipError | null {
    return this.#role.failure;
  }

  /** The cluster's identity, once known. */
  get systemId(): string | null {
    return this.#role.systemId;
  }

  /** Where its downstream standbys connect, when it serves them (`listen`). */
  get address(): string | null {
    return this.#core.address;
  }

  /** The timeline being replayed, once known. */
  get timeline(): number | null {
    return this.#role.timeline;
  }

  /** The end of the WAL received and flushed (`pg_last_wal_receive_lsn()`). */
  get receiveLsn(): Lsn | null {
    return this.#role.receiveLsn;
  }

  /** The end of the last batch replayed (`pg_last_wal_replay_lsn()`). */
  get replayLsn(): Lsn | null {
    return this.#role.replayLsn;
  }

  /**
   * The commit time of the last batch replayed (PostgreSQL's `pg_last_xact_replay_timestamp()`),
   * by the primary's clock. `null` until the standby has replayed a batch since it was opened.
   * For a batch written before on-disk format 2 (no commit time), the primary's send time of
   * its WAL, when it was received since the standby was opened (see the README).
   */
  get lastReplayTimestamp(): Date | null {
    return this.#role.lastReplayTimestamp;
  }

  /**
   * Replay lag in time: how long ago (by this node's `clock`) the last batch replayed was
   * committed, while the standby holds received WAL it has not replayed (paused at a recovery
   * target included); 0 once it has replayed everything it received; `null` before it replayed
   * a batch with a time.
   */
  get replayDelayMs(): number | null {
    // On the standby's clock, whoever reads it: a simulated standby's delay is virtual.
    return this.#enter(() => this.#role.replayDelayMs);
  }

  /** Whether replay has reached a consistent point. */
  get consistent(): boolean {
    return this.#role.consistent;
  }

  /** Whether replay is paused at its recovery target (PostgreSQL's `pg_is_wal_replay_paused()`). */
  get replayPaused(): boolean {
    return this.#role.replayPaused;
  }

  /**
   * Ends recovery-target mode (PostgreSQL's `pg_wal_replay_resume()`): replay paused at the
   * target goes on past it, following the WAL as any standby does; called before the target is
   * reached, it drops the target. The standby stays a standby: PostgreSQL ends recovery (it
   * promotes) when replay resumes at a target; here call `promote()` while paused for that, and
   * the new timeline begins at the target. Does nothing without a target. `NOT_IN_RECOVERY`
   * once promoted, `WAL_CLOSED` once closed.
   */
  resumeReplay(): void {
    this.#enter(() => {
      if (this.#primary !== null) throw promotedError();
      this.#lifecycle.assertOpen();
      this.#role.resumeReplay();
    });
  }

  /** Whether the application may serve reads: a hot standby that is consistent. */
  get readable(): boolean {
    return this.#role.readable;
  }

  /**
   * Why the standby is not streaming: the error that ended its last attempt to connect or
   * stream (a wrong password is `AUTH_FAILED`, an unreachable primary `CONNECTION_FAILED`, …),
   * `null` while it streams. The standby keeps retrying such errors (a password changed on the
   * primary, a primary that comes back heal by themselves); the ones that cannot heal stop it
   * (see {@link failure}).
   */
  get lastError(): WalshipError | null {
    return this.#role.lastError;
  }

  /**
   * Read-your-writes: resolves once this standby has replayed everything up to `lsn` (e.g. the
   * `lsn` a commit on the primary returned). Only on a hot standby (`HOT_STANDBY_OFF`). A wait
   * that times out while the standby cannot stream has the reason as its `cause`.
   */
  waitForReplay(lsn: Lsn, options: WaitOptions = {}): Promise<void> {
    return this.#enter(() => {
      try {
        assertLsn(lsn);
      } catch (err) {
        return Promise.reject(err);
      }
      if (this.#primary !== null) return Promise.reject(promotedError());
      if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError());
      return this.#role.waitForReplay(lsn, options);
    });
  }

  /**
   * Resolves once the standby is bootstrapped and replay has reached a consistent point, when
   * a hot standby's application may start serving reads (at once if it already has).
   * `HOT_STANDBY_OFF` on a warm standby.
   */
  waitForConsistent(options: WaitOptions = {}): Promise<void> {
    return this.#enter(() => {
      if (this.#primary !== null) return Promise.reject(promotedError());
      if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError());
      return this.#role.waitForConsistent(options);
    });
  }

  /** A standby is read-only: every commit is refused with `READ_ONLY`. */
  commit(_entries?: unknown, _options?: unknown): Promise<never> {
    return Promise.reject(new WalshipError('READ_ONLY', 'cannot commit on a standby: it only replays WAL from its primary (promote it to write)'));
  }

  /**
   * A restartpoint: records how far the application's state is durable so that a restart
   * replays only what follows, and older local WAL can go: all that no replication slot of its
   * own, `walKeepSize` or downstream standby still needs. With `lsn`, the application states
   * its own state is durable up to there; without, walship stores its `snapshot()`.
   */
  checkpoint(lsn?: Lsn): Promise<CheckpointResult> {
    return this.#enter(() => {
      if (this.#primary !== null) return Promise.reject(promotedError());
      if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError());
      // A standby stopped by a failed fsync or apply removes nothing and records nothing.
      const failure = this.#role.failure;
      if (failure !== null) return Promise.reject(failure);
      return this.#core.checkpoint(lsn).then(async (result) => {
        await this.#cleanArchive(result.lsn);
        return result;
      });
    });
  }

  /**
   * `archiveCleanup` after a restartpoint at `lsn`: the archive's segments before the one
   * holding it go (or the callback is told). A failure is logged, never the checkpoint's.
   */
  async #cleanArchive(lsn: Lsn): Promise<void> {
    const cleanup = this.#options.archiveCleanup;
    const archiver = this.#options.restore;
    if (cleanup === undefined || cleanup === false || archiver === undefined || !this.#core.attached) return;
    const log = this.#core.log;
    const keepSegment = log.segmentName(lsn);
    try {
      if (typeof cleanup === 'function') {
        await cleanup({ keepSegment });
        return;
      }
      const removed = await removeArchivedBefore(archiver, keepSegment, log.segmentSize);
      if (removed.length > 0) this.#debug('archive cleanup: removed %d segments before %s', removed.length, keepSegment);
    } catch (err) {
      this.#debug.error('archive cleanup before %s: %s', keepSegment, (err as Error).message);
    }
  }

  /**
   * The standby's metrics as plain data: its state, received, flushed and replayed positions,
   * replay lag in bytes and seconds, timeline, its WAL writer's counters, and (when it serves
   * standbys, keeps slots or archives) the same downstream, slot and archiver figures as
   * `Primary.metrics()`. Render them with `formatPrometheus`. Works in every state, also
   * before bootstrap (no WAL figures yet) and after close.
   */
  metrics(): StandbyMetrics {
    const role = this.#role;
    const core = coreMetrics(this.#core);
    const flushed = role.receiveLsn;
    const replayed = role.replayLsn;
    const delay = this.replayDelayMs;
    return {
      role: 'standby',
      systemId: role.systemId,
      timeline: role.timeline,
      state: this.state,
      consistent: role.consistent,
      readable: role.readable,
      replayPaused: role.replayPaused,
      receivedLsn: core.wal?.writtenLsn ?? null,
      flushedLsn: flushed,
      replayedLsn: replayed,
      replayLagBytes: flushed === null || replayed === null ? null : Math.max(0, flushed - replayed),
      replayLagSeconds: delay === null ? null : delay / 1000,
      ...core,
    };
  }

  /** `pg_stat_replication` of a cascading standby: one row per connected downstream standby. */
  replicationStatus(): ReplicationStatusRow[] {
    return this.#core.replicationStatus();
  }

  /**
   * Creates a replication slot on this standby, for a downstream standby (see
   * `Primary.createSlot`): with `reserveWal` it holds this standby's WAL from where its
   * application has applied.
   */
  async createSlot(name: string, options: CreateSlotOptions = {}): Promise<SlotInfo> {
    return this.#enter(async () => {
      this.#assertUsable();
      validateCreateSlot(options);
      return this.#core.createSlot(name, { reserveWal: options.reserveWal === true, reserveFrom: null });
    });
  }

  /** Drops a replication slot of this standby. `SLOT_NOT_FOUND`; `SLOT_ACTIVE` while a downstream streams with it. */
  async dropSlot(name: string): Promise<void> {
    return this.#enter(async () => {
      this.#assertUsable();
      await this.#core.dropSlot(name);
    });
  }

  /** Moves an inactive slot of this standby forward (see `Primary.advanceSlot`). */
  async advanceSlot(name: string, lsn: Lsn): Promise<Lsn> {
    return this.#enter(async () => {
      this.#assertUsable();
      return this.#core.advanceSlot(name, lsn);
    });
  }

  /** The archiver's progress and what is still to archive (`archive.mode` `'always'`; see `Primary.archiverStatus`). */
  archiverStatus(): ArchiverStatus {
    return this.#core.archiverStatus();
  }

  /** `pg_replication_slots` of this standby. */
  slots(): ReplicationSlotRow[] {
    if (!this.#core.attached) return [];
    return this.#core.slotRows();
  }

  /**
   * Writes a ready-to-open standby directory from this standby (`pg_basebackup` from a
   * standby): its application's snapshot at its replay position.
   */
  async baseBackup(target: { dir?: string; storage?: Storage }): Promise<BaseBackupResult> {
    return this.#enter(async () => {
      this.#assertUsable();
      return this.#core.writeBaseBackup(target);
    });
  }

  /** Runs a call on the standby's scheduler, whoever calls: its timers and continuations stay on it. */
  #enter<T>(fn: () => T): T {
    return this.#scheduler === REAL_SCHEDULER ? fn() : runWithScheduler(this.#scheduler, fn);
  }

  /** Calls that need local state: `WAL_CLOSED` once closing, the failure once failed, `INVALID_ARGUMENT` before bootstrap. */
  #assertUsable(): void {
    if (this.#primary !== null) throw promotedError();
    this.#lifecycle.assertOpen();
    const failure = this.#role.failure;
    if (failure !== null) throw failure;
    if (!this.#core.attached) throw new WalshipError('INVALID_ARGUMENT', 'the standby has not bootstrapped yet');
  }

  /**
   * Stops streaming and replay, lets its downstream standbys receive what it has flushed (each
   * at most `walSenderTimeoutMs` to confirm), and closes the local WAL. Leaves no timer or
   * socket behind. With `dropSlot`, it then connects to the primary once more and drops its
   * replication slot there (waiting until the primary has let go of it), for a standby leaving
   * for good; a failure to do so rejects, after everything else is closed. Once `signal`
   * aborts, it stops waiting (for an `apply` or checkpoint in progress, for downstreams).
   */
  close(options: CloseOptions & { dropSlot?: boolean } = {}): Promise<void> {
    return this.#enter(() => {
      // A promoted standby's node belongs to its Primary: closing is the Primary's.
      if (this.#primary !== null) return Promise.resolve();
      // Closing during a promotion closes whichever node comes out of it.
      const promoting = this.#promoting;
      if (promoting !== null) return promoting.then((primary) => primary.close(options), () => this.close(options));
      this.#stopTrigger();
      this.#stopRehearsals();
      // The role's stop() shares one shutdown across calls; a later call may add a signal or
      // dropSlot. A refused call (dropSlot without a slot) changes nothing.
      const closing = this.#role.stop(options);
      if (options.dropSlot === true && this.#role.refusesDropSlot) return closing;
      void this.#lifecycle.close(() => closing.catch(() => undefined));
      return closing;
    });
  }

}

/** What a promoted standby's methods answer: the `Primary` owns the node now. */
function promotedError(): WalshipError {
  return new WalshipError('NOT_IN_RECOVERY', 'this standby was promoted: use the Primary that promote() resolved with (or the promoted event carried)');
}

/** The first of `paths` that exists, looked at in order. */
async function firstExisting(paths: readonly string[]): Promise<string | undefined> {
  for (const path of paths) {
    if (await stat(path).then(() => true, () => false)) return path;
  }
  return undefined;
}
