import type { Application } from '../application.js';
import { WalshipError, abortError, isWalshipError, type ErrorCode } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { Lifecycle, untilAborted, whenAborted, type CloseOptions } from '../lifecycle.js';
import { createLogger, type Logger } from '../logger.js';
import { LsnWaiters, type WaitOptions } from '../lsn-waiters.js';
import { assertLsn, formatLsn, type Lsn } from '../lsn.js';
import { isRecoveryState, readControlFile, removeControlFile, switchedFromOf, writeControlFile, type ControlData, type NodeState } from '../node/control-file.js';
import type { FailedEvent, NodeCore } from '../node/node-core.js';
import { removeAbandonedTimelines, restoreTimelineHistory, removeLeftovers, removeLocalState } from '../node/local-state.js';
import { refuseMissingControlFile } from '../node/missing-control-file.js';
import {
  RecoveryTargetCheck,
  describeTarget,
  findTargetStop,
  resolveRecoveryTarget,
  type RecoveryTarget,
  type RecoveryTargetAction,
  type ResolvedTarget,
  type TargetStop,
} from '../node/recovery-target.js';
import type { IdentifySystemResultMessage, ServerMessage } from '../protocol/messages.js';
import type { MessageStream } from '../protocol/message-stream.js';
import { connectReplication, createReplicationSlot, dropReplicationSlot, expectMessage, fetchTimelineHistory, type ReplyOptions } from '../protocol/replication-client.js';
import { receiveBaseBackup } from '../replication/base-backup-receiver.js';
import { EARLY_WAL_OPTION, restartBound, streamStart } from '../replication/early-wal.js';
import { flushOnRequestOptions } from '../replication/flush-requests.js';
import { SendTimes } from '../replication/send-times.js';
import { WalReceiver } from '../replication/wal-receiver.js';
import { SlotManager } from '../slots/slot-manager.js';
import type { Storage } from '../storage/storage.js';
import type { Transport } from '../transport/transport.js';
import { branchHistory, formatTimelineHistory, historyFileName, newestTimeline, parseTimelineHistory, switchPointOf, writeTimelineHistory, type TimelineHistory } from '../wal/timeline-history.js';
import { WalLog, type SyncMode } from '../wal/wal-log.js';
import { lockStorage, withStorageLock } from '../node/storage-lock.js';
import { describeHistory, extendsHistory, sameHistory, upstreamAddresses } from './upstream.js';
import { discardedBatches, type RewindEvent } from './rewind.js';
import { archiverCall, restoreFromArchive } from './archive-restore.js';
import type { Archiver } from '../archive/archiver.js';
import { currentScheduler } from '../scheduler.js';

export type { DiscardedBatch, RewindEvent } from './rewind.js';
export { upstreamAddresses } from './upstream.js';

/** Where and how a standby connects to its primary (PostgreSQL's `primary_conninfo`). */
export interface StandbyPrimaryOptions {
  /** The transport to connect over. */
  readonly transport: Transport;
  /**
   * Where the upstream listens. Several addresses (a list, or one string with commas, as
   * libpq's multi-host connection strings) are all tried at each connection: the standby
   * streams from the one on the newest timeline its history allows (the first such in the
   * list), so after a failover it finds the promoted node by itself.
   */
  readonly address: string | readonly string[];
  /** The user to authenticate as (1–255 bytes), matched by the primary's `auth` rules. */
  readonly user: string;
  /** Never logged or reported. */
  readonly password?: string;
  /** How the primary knows this standby (`application_name`). */
  readonly applicationName: string;
  /** A replication slot on the primary to stream from. */
  readonly slotName?: string;
  /**
   * Create `slotName` on the primary if it does not exist yet (reserving WAL at once), before
   * the base backup of a new standby, so that the primary keeps every WAL segment the standby
   * will need (`pg_basebackup --create-slot`). Remove it with `close({ dropSlot: true })`.
   * @defaultValue false
   */
  readonly createSlot?: boolean;
  /** `'scram-sha-256'` refuses a primary that does not prove it knows the password. @defaultValue 'scram-sha-256' with a password */
  readonly requireAuth?: 'scram-sha-256' | 'none';
  /** Limit for connecting and authenticating. @defaultValue 10 000 */
  readonly connectTimeoutMs?: number;
}

/**
 * What the standby is doing: `connecting` to the primary, receiving a `base-backup`,
 * `streaming`, `restoring` WAL from the archive (`restore`), `disconnected` (waiting to
 * reconnect, or to look in the archive again), `failed` (stopped by an error that
 * retrying cannot fix; see `Standby.failure`), `closed`, or `promoted` (it is a primary now:
 * the `Primary` that `promote()` resolved with owns the node from then on).
 */
export type StandbyState = 'connecting' | 'base-backup' | 'streaming' | 'restoring' | 'disconnected' | 'failed' | 'closed' | 'promoted';

/** Every {@link StandbyState}, in the order a standby usually meets them. */
export const STANDBY_STATES = ['connecting', 'base-backup', 'streaming', 'restoring', 'disconnected', 'failed', 'closed', 'promoted'] as const satisfies readonly StandbyState[];
// And each StandbyState is in the list.
const statesListed: SameKinds<(typeof STANDBY_STATES)[number], StandbyState> = true;
void statesListed;

/**
 * The recovery role's state as one union (each transition is one assignment, and what the
 * role holds — a connection, a receiver, an error — exists only in the states that have it).
 */
export type RecoveryState =
  | { readonly kind: 'connecting'; readonly conn: MessageStream<'client'> | null }
  | { readonly kind: 'base-backup'; readonly conn: MessageStream<'client'> }
  | { readonly kind: 'streaming'; readonly conn: MessageStream<'client'>; readonly receiver: WalReceiver }
  | { readonly kind: 'restoring' }
  | { readonly kind: 'disconnected'; readonly error: WalshipError | null; readonly retryInMs: number }
  | { readonly kind: 'failed'; readonly error: WalshipError }
  | { readonly kind: 'closed'; readonly failure: WalshipError | null }
  | { readonly kind: 'promoted'; readonly timeline: number; readonly switchLsn: Lsn };

// Each state of the union is a public StandbyState, and each StandbyState a state.
type SameKinds<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const kindsMatch: SameKinds<RecoveryState['kind'], StandbyState> = true;
void kindsMatch;

/** What a promotion leaves for the new primary: the log, on its new timeline. */
export interface PromotedLocal {
  readonly log: WalLog;
  readonly timeline: number;
  /** Where the new timeline began: the end of the WAL the standby had received whole, or the recovery target's stop when that came first. */
  readonly switchLsn: Lsn;
}

/** An upstream reached while choosing among several addresses, and how it fits the standby's history. */
interface Candidate {
  readonly conn: MessageStream<'client'>;
  readonly identity: IdentifySystemResultMessage;
  readonly address: string;
  readonly fit: 'follows' | 'rewinds' | 'refused';
}

/** Payload of `base-backup:progress`. */
export interface BaseBackupProgressEvent {
  /** Snapshot bytes received and written so far. */
  readonly receivedBytes: number;
  /** The snapshot's size, when the primary knows it. */
  readonly totalBytes: number | null;
}

/** Events of the {@link RecoveryRole}, passed on by `Standby` (whose `StandbyEvents` adds the node's). */
export interface RecoveryEvents {
  /** The standby's {@link StandbyState} changed (also read as `standby.state`). */
  'state:change': (event: { readonly state: StandbyState }) => void;
  /** Connected and authenticated to the primary. */
  'primary:connected': (event: { readonly address: string; readonly systemId: string }) => void;
  /** The connection ended; the standby reconnects unless the error is fatal. */
  'primary:disconnected': (event: { readonly error: WalshipError | null; readonly retryInMs: number | null }) => void;
  /** The standby has received everything the primary had flushed when it last said so. */
  'wal:caught-up': (event: { readonly receiveLsn: Lsn }) => void;
  /** Replay reached a consistent point: a hot standby's application may serve reads. */
  consistent: (event: { readonly lsn: Lsn }) => void;
  /** A chunk of a base backup's snapshot was received and written. */
  'base-backup:progress': (event: BaseBackupProgressEvent) => void;
  /** A base backup's snapshot was received whole and checked; it includes every batch before `lsn`, and `size` is its bytes. */
  'base-backup:done': (event: { readonly lsn: Lsn; readonly size: number }) => void;
  /** The application's `apply` threw: replay stopped; the batch is retried when the standby is reopened. */
  'apply:error': (event: { readonly error: WalshipError }) => void;
  /**
   * The primary no longer has WAL this standby needs (its replication slot was invalidated,
   * or it fell behind `walKeepSize`): the standby discards its local WAL and state and
   * bootstraps again from a base backup, which the application `restore()`s. Until that state
   * is consistent again (`consistent` fires), `readable` is false. Only a standby whose
   * application has a `restore()` hook does; any other stops with `WAL_REMOVED`.
   */
  rebootstrap: (event: { readonly error: WalshipError; readonly receiveLsn: Lsn }) => void;
  /**
   * The node held WAL past the point where its upstream's history left its timeline (a former
   * primary's unconfirmed tail, or an asynchronous standby ahead of the promoted one) and
   * rewound: the event says exactly what was discarded, so the application can re-submit or
   * reconcile it.
   */
  rewind: (event: RewindEvent) => void;
  /** The standby moved onto its upstream's new timeline at `switchLsn` (after a promotion upstream). */
  'timeline:switch': (event: { readonly timeline: number; readonly switchLsn: Lsn }) => void;
  /** A WAL segment (or its part before a switch point) was restored from the archive (`restore`) into the standby's WAL, up to `endLsn`. */
  'archive:restored': (event: { readonly name: string; readonly endLsn: Lsn }) => void;
  /** `createSlot` created the replication slot on the primary. */
  'slot:created': (event: { readonly slotName: string; readonly restartLsn: Lsn | null }) => void;
  /**
   * Replay reached the recovery target (`recoveryTarget`) and stopped: nothing past `lsn` is
   * applied. `action` follows: `pause` (the standby stays up, readable, and keeps receiving;
   * `resumeReplay()` goes on), `promote` (`promoted` follows, its timeline beginning at
   * `lsn`), `shutdown` (the standby closes).
   */
  'recovery-target:reached': (event: RecoveryTargetReachedEvent) => void;
  /** The standby stopped for good. */
  failed: (event: FailedEvent) => void;
}

/** The events `Standby` passes on from its recovery role. */
export const RECOVERY_EVENT_NAMES = [
  'state:change',
  'primary:connected',
  'primary:disconnected',
  'wal:caught-up',
  'consistent',
  'base-backup:progress',
  'base-backup:done',
  'apply:error',
  'rebootstrap',
  'slot:created',
  'timeline:switch',
  'archive:restored',
  'rewind',
  'recovery-target:reached',
  'failed',
] as const satisfies readonly (keyof RecoveryEvents)[];

/** Payload of `recovery-target:reached`. */
export interface RecoveryTargetReachedEvent {
  /** Where replay stopped: every batch before it is applied, none after it; a promotion's new timeline begins here. */
  readonly lsn: Lsn;
  /** The end of the last batch applied (`replayLsn`). */
  readonly replayLsn: Lsn;
  /** What the standby does now. */
  readonly action: RecoveryTargetAction;
  /** The target and why replay stopped here, in words. */
  readonly reason: string;
}

/**
 * Which timeline a standby follows (PostgreSQL's `recovery_target_timeline`): `latest`, every
 * timeline its upstream moves to; `current`, only the one it is on; a number, up to that one.
 */
export type RecoveryTargetTimeline = 'latest' | 'current' | number;

/** What the recovery role needs of the standby's options (validated and defaulted by `Standby`). */
export interface RecoverySettings {
  /** The upstream to stream from; without it the standby restores from the archive alone. */
  readonly primary?: StandbyPrimaryOptions;
  /** Where to restore WAL from (`restore`): before streaming, and whenever streaming fails. */
  readonly restore?: Archiver;
  /** How long to wait before looking in the archive again when it had nothing new (`wal_retrieve_retry_interval`). */
  readonly restoreIntervalMs: number;
  /** The longest one archiver call may take. */
  readonly archiveCallTimeoutMs: number;
  /** Where this node archives (`archive.archiver`): a promotion looks there for newer timelines too. */
  readonly archiver?: Archiver;
  readonly recoveryTargetTimeline: RecoveryTargetTimeline;
  readonly rewind: boolean;
  readonly hotStandby: boolean;
  readonly statusIntervalMs: number;
  /** Accept WAL a primary sends before it is durable there (see `early-wal.ts`). */
  readonly acceptEarlyWal: boolean;
  /** WAL no commit waits for is flushed at most this often, ms (see `flush-requests.ts`); 0 flushes every message. */
  readonly flushDelayMs: number;
  readonly walReceiverTimeoutMs: number;
  readonly retryMinDelayMs: number;
  readonly retryMaxDelayMs: number;
  readonly walSenderTimeoutMs: number;
  /** For the slots this standby keeps for its own downstream standbys. */
  readonly maxReplicationSlots: number;
  readonly sync?: SyncMode;
  readonly recycleSegments?: number;
  readonly maxRecycleSegments?: number;
  readonly logPrefix?: string;
  readonly clock?: () => number;
  /** Validated by `Standby` (see {@link resolveRecoveryTarget}). */
  readonly recoveryTarget?: RecoveryTarget;
  readonly recoveryTargetInclusive: boolean;
  readonly recoveryTargetAction: RecoveryTargetAction;
  /**
   * Runs once, the first time the open holds the directory's lock for good (the local WAL is
   * open, or, in an empty directory, the lock taken to check it): the `Standby` removes a
   * leftover promote signal file there, which only a node holding the lock may do.
   */
  readonly onLocked?: () => Promise<void>;
}

/** While replay runs behind the received WAL, it reports its position at most this often. */
const APPLY_REPORT_INTERVAL_MS = 5;

/** Errors that retrying the connection cannot fix: the standby stops with them. */
const FATAL: readonly ErrorCode[] = [
  'WAL_LOCKED',
  'SYSTEM_ID_MISMATCH',
  'WAL_DIVERGED',
  'TIMELINE_DIVERGED',
  'WAL_FORMAT',
  'PROTOCOL_VERSION',
  'BASE_BACKUP_REQUIRED',
  'WAL_REMOVED',
  'WAL_CORRUPT',
  'CONTROL_FILE_MISSING',
  'WAL_SYNC_FAILED',
  'APPLY_FAILED',
  'READ_ONLY',
  'INVALID_OPTIONS',
];

/**
 * The primary refused a base backup because its application has no `snapshot()` hook: a
 * condition that retrying cannot change. Told apart by the code and the primary's wording
 * (see `Primary`'s base backup source) until the protocol has a code of its own for it.
 */
function primaryHasNoSnapshotHook(err: unknown): boolean {
  return isWalshipError(err, 'BASE_BACKUP_UNAVAILABLE');
}

/**
 * The recovery role over a {@link NodeCore} (PostgreSQL's startup process and walreceiver):
 * it receives the upstream's WAL into the node's log (written and fsynced byte for byte),
 * replays it through the core's applier, reports its progress, reconnects by itself after
 * any disconnect and resumes where its log ends. A node without local state first
 * bootstraps from the upstream: a base backup when the application can `restore()`, else the
 * whole WAL from its beginning; after `WAL_REMOVED` it bootstraps again. It trusts its input:
 * `Standby` validates.
 */
export class RecoveryRole extends SafeEmitter<RecoveryEvents> {
  readonly kind = 'recovery';
  readonly #core: NodeCore;
  readonly #storage: Storage;
  readonly #app: Application;
  #options: RecoverySettings;
  /** The `onLocked` setting until it has run. */
  #onLocked: (() => Promise<void>) | undefined;
  readonly #debug: Logger;
  readonly #abort = new AbortController();
  /** Stops the upstream connection loop alone (a promotion); replaced when the loop starts again. */
  #upstream = new AbortController();
  /** Aborted when the standby closes or its upstream loop stops: every wait on the upstream ends. */
  #upstreamSignal: AbortSignal = this.#abort.signal;
  /** The upstream address of the current (or last) connection: the first one until a connection chose. */
  #upstreamAddress: string;
  /** Aborted to cut a reconnect delay short (after `reconfigure`). */
  #retryNow: AbortController | null = null;
  /** The highest timeline an upstream reported (IDENTIFY_SYSTEM): a promotion picks one past it. */
  #upstreamTimeline = 0;
  /** The promotion in progress (concurrent calls share it). */
  #promoting: Promise<PromotedLocal> | null = null;
  /**
   * The log is beginning a promotion's timeline: a write or fdatasync error there (fatal for
   * the log) fails the promotion, not the standby, which reopens its log from disk
   * ({@link #resumeAfterFailedPromotion}; the new timeline's file is abandoned).
   */
  #beginningTimeline = false;
  /** The local WAL, once bootstrapped (null again while bootstrapping anew). */
  #log: WalLog | null = null;
  /** What the role is doing, and what it holds while doing it. */
  #state: RecoveryState = { kind: 'connecting', conn: null };
  /** Aborted by a `close({ signal })` whose signal fired: the shutdown stops waiting. */
  readonly #immediate = new AbortController();
  /** The error that ended the last connection attempt; null while streaming. */
  #lastError: WalshipError | null = null;
  #consistent = false;
  /** Position 1 once consistent: waiters for consistency reuse the LSN waiters. */
  readonly #consistency = new LsnWaiters(0);
  /**
   * The commit time (ms since the epoch) of the last batch replayed; for a batch of on-disk
   * format 1, which has none, the primary's send time of the WAL holding its end, if known.
   */
  #lastReplayTime: number | null = null;
  /** Send times of the WAL received, kept across reconnects until replay has used them. */
  readonly #sendTimes = new SendTimes();
  /** The readable end at which replay last caught up and told the primary (once per such end). */
  #caughtUpReportedLsn: Lsn = -1;
  /** When replay last reported its position (ms since the epoch). */
  #applyReportedAt = 0;
  /** Set while `open()` runs: a `consistent` reached then is emitted after it returns. */
  #opening = false;
  /** The primary said it cannot make a base backup (no `snapshot()` hook): bootstrap from its WAL instead. */
  #noBaseBackup = false;
  #replaying: Promise<void> | null = null;
  #running: Promise<void> | null = null;
  readonly #lifecycle = new Lifecycle('standby');
  /** Whether the current connection got anywhere (WAL arrived, a base backup completed). */
  #progressed = false;
  /** Stops replay of the local WAL open now (when the standby closes, or bootstraps again). */
  #replayAbort: AbortController | null = null;
  /** The recovery target: null without one, or once `resumeReplay()` ended recovery-target mode. */
  #target: ResolvedTarget | null;
  /** The target check of the replay running now (disabled by `resumeReplay()`). */
  #targetCheck: RecoveryTargetCheck | null = null;
  /** Where replay stopped at the target, while it is paused there. */
  #pausedAt: TargetStop | null = null;
  /** `createSlot`: the slot is known to exist on the primary (created, or found), since the last bootstrap. */
  #slotReady = false;
  /**
   * The primary answered `WAL_REMOVED` to START_REPLICATION right after a base backup on the
   * same connection, which held that WAL: the refusal is not about WAL (an invalidated
   * slot), and bootstrapping again cannot help.
   */
  #refusedAfterBackup: WalshipError | null = null;
  /** Bootstrapping again: the application still holds the state it had, so only a base backup can replace it. */
  #applicationHoldsState = false;
  /** `createSlot` after bootstrapping again: drop the slot (it may be invalidated) and create it anew. */
  #recreateSlot = false;
  /** `close({ dropSlot: true })` in progress or done. */
  #droppingSlot: Promise<void> | null = null;
  /** The cluster this directory belonged to: still checked while it bootstraps again. */
  #cluster: { readonly systemId: string; readonly segmentSize: number } | null = null;

  constructor(core: NodeCore, storage: Storage, app: Application, options: RecoverySettings) {
    super();
    this.#core = core;
    this.#storage = storage;
    this.#app = app;
    this.#options = options;
    this.#onLocked = options.onLocked;
    this.#upstreamAddress = options.primary === undefined ? '' : (upstreamAddresses(options.primary.address)[0] as string);
    this.#debug = createLogger('standby', options.logPrefix);
    this.emitterLog = this.#debug;
    this.#target = options.recoveryTarget === undefined ? null : resolveRecoveryTarget(options.recoveryTarget);
  }

  /**
   * Opens what the directory holds (local state: the application is brought back to its last
   * state and replay of the local WAL starts; events of this step are emitted after the
   * caller's turn), or checks that a new directory is not in another node's use.
   */
  async prepare(): Promise<void> {
    this.#opening = true;
    try {
      const control = await readControlFile(this.#storage);
      if (control !== null) await this.#openLocal(control);
      else if (this.#options.primary === undefined) {
        throw new WalshipError(
          'BASE_BACKUP_REQUIRED',
          `${this.#storage.description} holds no standby, and a standby without a primary can only restore WAL from its archive onto a base backup: write one there first (primary.baseBackup({ dir }))`,
        );
      } else {
        // WAL without a control file that lost it is refused now (a bootstrap would discard it).
        await refuseMissingControlFile(this.#storage, 'standby');
        // A new directory another node is using (bootstrapping it, say) is refused now, not in the background.
        await withStorageLock(this.#storage, () => this.#lockedFirstTime());
      }
    } finally {
      // Events of the open itself reach listeners attached right after `await Standby.open()`.
      currentScheduler().setImmediate(() => (this.#opening = false));
    }
  }

  /** Starts the upstream connection loop (in the background). */
  start(): void {
    this.#upstream = new AbortController();
    this.#upstreamSignal = AbortSignal.any([this.#abort.signal, this.#upstream.signal]);
    this.#running = this.#run();
  }

  get state(): StandbyState {
    return this.#state.kind;
  }

  /** Why the standby stopped, when `state` is `failed` (and after it was closed). */
  get failure(): WalshipError | null {
    const state = this.#state;
    switch (state.kind) {
      case 'failed':
        return state.error;
      case 'closed':
        return state.failure;
      case 'connecting':
      case 'base-backup':
      case 'streaming':
      case 'restoring':
      case 'disconnected':
      case 'promoted':
        return null;
    }
  }

  /** The connection to the upstream, while there is one. */
  get #conn(): MessageStream<'client'> | null {
    const state = this.#state;
    switch (state.kind) {
      case 'connecting':
      case 'base-backup':
      case 'streaming':
        return state.conn;
      case 'restoring':
      case 'disconnected':
      case 'failed':
      case 'closed':
      case 'promoted':
        return null;
    }
  }

  /** The WAL receiver, while streaming. */
  get #receiver(): WalReceiver | null {
    return this.#state.kind === 'streaming' ? this.#state.receiver : null;
  }

  /** The cluster's identity, once known. */
  get systemId(): string | null {
    return this.#control?.systemId ?? null;
  }

  get timeline(): number | null {
    return this.#log?.timeline ?? this.#control?.timeline ?? null;
  }

  /** The end of the WAL received and flushed (`pg_last_wal_receive_lsn()`). */
  get receiveLsn(): Lsn | null {
    return this.#log?.flushedLsn ?? null;
  }

  /** The end of the last batch replayed (`pg_last_wal_replay_lsn()`). */
  get replayLsn(): Lsn | null {
    return this.#log === null ? null : this.#core.applier.position;
  }

  /**
   * The commit time of the last batch replayed (PostgreSQL's `pg_last_xact_replay_timestamp()`):
   * when the primary committed it, by the primary's clock, as the WAL carries it. It does not
   * move while there is nothing new to replay. `null` until the standby has replayed a batch
   * since it was opened. A batch written by a walship before on-disk format 2 has no commit
   * time: for one received since the standby was opened it is the primary's clock time when it
   * sent the WAL holding the batch's end (shortly after the commit, or later while the standby
   * catches up), else the value stays as it was.
   */
  get lastReplayTimestamp(): Date | null {
    return this.#lastReplayTime === null ? null : new Date(this.#lastReplayTime);
  }

  /**
   * How far replay is behind in time: this node's clock now minus {@link lastReplayTimestamp},
   * while the standby holds received WAL it has not replayed (also while replay is paused at a
   * recovery target with WAL received past it); 0 once replay has applied everything received
   * (the usual `CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 ELSE
   * now() - pg_last_xact_replay_timestamp() END`). `null` before a batch with a time was
   * replayed. It counts from the commit on the primary, so it includes shipping, and the two
   * clocks' difference. The primary's `replayLagMs` (`replicationStatus()`) measures
   * shipping-to-applying from the primary's side instead.
   */
  get replayDelayMs(): number | null {
    const last = this.#lastReplayTime;
    if (last === null) return null;
    if (this.#replayCaughtUp()) return 0;
    return Math.max(0, (this.#options.clock?.() ?? currentScheduler().now()) - last);
  }

  /** Whether replay has applied every complete record the standby received (paused at a target: nothing was received past it). */
  #replayCaughtUp(): boolean {
    if (this.#pausedAt !== null) return (this.#log?.flushedLsn ?? 0) <= this.#pausedAt.lsn;
    return this.#replaying !== null && this.#core.applier.caughtUp;
  }

  /**
   * Resolves once the standby has received (and flushed) WAL up to `lsn`: a stop at the target
   * found at the start of replay (the application's state) may lie past the WAL received so far,
   * and a promotion there needs it. Rejects with `WAL_CLOSED` once the standby closes or fails.
   */
  async waitForReceived(lsn: Lsn): Promise<void> {
    const signal = this.#abort.signal;
    while (!signal.aborted && this.failure === null) {
      const log = this.#log;
      if (log !== null && log.flushedLsn >= lsn) return;
      // The next flush, or a second later (the log may be replaced: a bootstrap again).
      const wake = new AbortController();
      const done = (): void => wake.abort();
      log?.on('flush', done);
      try {
        await currentScheduler().sleep(1000, { signal: AbortSignal.any([signal, wake.signal]), ref: false }).catch(() => undefined);
      } finally {
        log?.off('flush', done);
      }
    }
    throw this.failure ?? this.#lifecycle.closedError();
  }

  /** Whether replay is paused at the recovery target (`pg_is_wal_replay_paused()`). */
  get replayPaused(): boolean {
    return this.#pausedAt !== null;
  }

  /**
   * Ends recovery-target mode (PostgreSQL's `pg_wal_replay_resume()`, except that the standby
   * stays a standby): the target no longer stops replay, and replay paused at it goes on, as on
   * any standby. Called before the target is reached, it drops the target. Idempotent.
   */
  resumeReplay(): void {
    if (this.#target === null) return;
    this.#debug('recovery-target mode ended: replay goes on past %s', describeTarget(this.#target, this.#options.recoveryTargetInclusive));
    this.#target = null;
    this.#targetCheck?.disable();
    const paused = this.#pausedAt;
    this.#pausedAt = null;
    // A promotion under way restarts replay itself if it fails.
    if (paused === null || this.#promoting !== null || this.#log === null || this.failure !== null || this.#lifecycle.closing) return;
    this.#startReplay(this.#log, this.#core.applier.position);
  }

  /** Whether replay has reached a consistent point. */
  get consistent(): boolean {
    return this.#consistent;
  }

  /** Whether the application may serve reads: a hot standby that is consistent. */
  get readable(): boolean {
    return this.#options.hotStandby && this.#consistent && this.#state.kind !== 'failed' && this.#state.kind !== 'closed';
  }

  /**
   * Read-your-writes: resolves once this standby has replayed everything up to `lsn` (e.g. the
   * `lsn` a commit on the primary returned). Only on a hot standby (`HOT_STANDBY_OFF`).
   */
  waitForReplay(lsn: Lsn, options: WaitOptions = {}): Promise<void> {
    try {
      assertLsn(lsn);
    } catch (err) {
      return Promise.reject(err);
    }
    if (!this.#options.hotStandby) {
      return Promise.reject(new WalshipError('HOT_STANDBY_OFF', 'this is a warm standby (hotStandby: false); it serves nothing until promoted'));
    }
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError());
    return this.#core.applier.wait(lsn, options).catch((err: unknown) => {
      throw this.#whyWaiting(err);
    });
  }

  /**
   * Resolves once the standby is bootstrapped and replay has reached a consistent point, when
   * a hot standby's application may start serving reads (at once if it already has).
   * `HOT_STANDBY_OFF` on a warm standby.
   */
  waitForConsistent(options: WaitOptions = {}): Promise<void> {
    if (!this.#options.hotStandby) {
      return Promise.reject(new WalshipError('HOT_STANDBY_OFF', 'this is a warm standby (hotStandby: false); it serves nothing until promoted'));
    }
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError());
    return this.#consistency.wait(1, options).catch((err: unknown) => {
      throw this.#whyWaiting(err);
    });
  }

  /**
   * Resolves once replay has reached a consistent point, on a warm standby too; rejects once
   * the standby closes or fails. For work the standby does ahead of a promotion, which needs
   * a consistent state.
   */
  whenConsistent(): Promise<void> {
    return this.#consistency.wait(1, {});
  }

  /**
   * Why the standby is not streaming: the error that ended its last attempt to connect or
   * stream (a wrong password is `AUTH_FAILED`, an unreachable primary `CONNECTION_FAILED`, …),
   * `null` while it streams. The standby keeps retrying such errors (a password changed on the
   * primary, a primary that comes back heal by themselves); the ones that cannot heal stop it
   * (see {@link failure}).
   */
  get lastError(): WalshipError | null {
    return this.#lastError;
  }

  /** A wait that ended by its timeout or signal while the standby could not stream says why. */
  #whyWaiting(err: unknown): unknown {
    const why = this.#lastError;
    if (why === null || !(isWalshipError(err, 'TIMEOUT') || isWalshipError(err, 'ABORTED'))) return err;
    // TIMEOUT keeps the connection error as its cause; ABORTED keeps the signal's reason.
    const cause = err.code === 'TIMEOUT' ? why : err.cause;
    return new WalshipError(err.code, `${err.message}; the standby is not streaming: ${why.message}`, { cause, transient: err.transient });
  }

  /**
   * Stops streaming and replay, lets its downstream standbys receive what it has flushed (each
   * at most `walSenderTimeoutMs` to confirm), and closes the local WAL. Leaves no timer or
   * socket behind. With `dropSlot`, it then connects to the primary once more and drops its
   * replication slot there (waiting until the primary has let go of it), for a standby leaving
   * for good; a failure to do so rejects, after everything else is closed. Once `signal`
   * aborts, it stops waiting (for an `apply` or checkpoint in progress, for downstreams).
   */
  /** Whether `stop({ dropSlot: true })` is refused (the standby has no `primary.slotName`). */
  get refusesDropSlot(): boolean {
    return this.#options.primary?.slotName === undefined;
  }

  stop(options: CloseOptions & { dropSlot?: boolean } = {}): Promise<void> {
    if (options.dropSlot === true && this.#options.primary?.slotName === undefined) {
      return Promise.reject(new WalshipError('INVALID_ARGUMENT', 'close({ dropSlot: true }): this standby has no primary.slotName'));
    }
    if (options.signal !== undefined) whenAborted(options.signal, () => this.#immediate.abort());
    const closing = this.#lifecycle.close(async () => {
      const immediate = this.#immediate.signal;
      this.#abort.abort();
      this.#conn?.destroy();
      await untilAborted(this.#receiver?.stop() ?? Promise.resolve(), immediate);
      await untilAborted(this.#running ?? Promise.resolve(), immediate);
      await untilAborted(this.#replaying ?? Promise.resolve(), immediate);
      const core = this.#core;
      await untilAborted(core.checkpointer.settled(), immediate);
      // Downstream standbys get what this standby has flushed (and its primary made durable:
      // they get no more), each at most walSenderTimeoutMs to confirm.
      await core.stopServing(this.#log?.readableLsn ?? 0, this.#log === null ? 0 : this.#options.walSenderTimeoutMs, immediate).catch((err: unknown) => {
        this.#debug.error('closing the WAL service: %s', (err as Error).message);
      });
      if (this.#log !== null && this.failure === null && !immediate.aborted && this.#control?.state === 'in-recovery') {
        await this.#setControlState('shut-down-in-recovery').catch((err: unknown) => this.#debug.error('recording the shutdown: %s', (err as Error).message));
      }
      await core.close(immediate);
      core.applier.fail(new WalshipError('WAL_CLOSED', 'the standby is closed'));
      this.#consistency.fail(new WalshipError('WAL_CLOSED', 'the standby is closed'));
      this.#state = { kind: 'closed', failure: this.failure };
      this.emitSafely('state:change', { state: 'closed' });
    });
    if (options.dropSlot !== true) return closing;
    // Once, whether or not an earlier close() asked for it.
    this.#droppingSlot ??= closing.then(() => this.#dropSlotOnPrimary());
    return this.#droppingSlot;
  }

  /** `close({ dropSlot: true })`: DROP_REPLICATION_SLOT … WAIT on a connection of its own. */
  async #dropSlotOnPrimary(): Promise<void> {
    const slotName = this.#upstreamOptions.slotName as string;
    const conn = await this.#connect(undefined);
    try {
      await dropReplicationSlot(conn, slotName, { wait: true, timeoutMs: this.#options.walReceiverTimeoutMs });
      this.#debug('dropped replication slot %s on the primary', slotName);
    } finally {
      conn.destroy();
    }
  }

  /** Connects and authenticates to the upstream at `address`, within `connectTimeoutMs` (and `signal`). */
  #connect(signal: AbortSignal | undefined, address = this.#upstreamAddress): Promise<MessageStream<'client'>> {
    const p = this.#upstreamOptions;
    const timeout = currentScheduler().timeoutSignal(p.connectTimeoutMs ?? 10_000);
    return connectReplication({
      transport: p.transport,
      address,
      user: p.user,
      applicationName: p.applicationName,
      options: [...(this.#options.acceptEarlyWal ? [EARLY_WAL_OPTION] : []), ...(this.#options.flushDelayMs > 0 ? flushOnRequestOptions(this.#options.flushDelayMs) : [])],
      handshakeTimeoutMs: p.connectTimeoutMs ?? 10_000,
      signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
      ...(p.password === undefined ? {} : { password: p.password }),
      ...(p.requireAuth === undefined ? {} : { requireAuth: p.requireAuth }),
    });
  }

  /** The upstream's addresses, in the order given. */
  get #addresses(): string[] {
    return this.#options.primary === undefined ? [] : upstreamAddresses(this.#options.primary.address);
  }

  /** The upstream's options; only asked for when there is an upstream. */
  get #upstreamOptions(): StandbyPrimaryOptions {
    const p = this.#options.primary;
    if (p === undefined) throw new WalshipError('INVALID_ARGUMENT', 'this standby has no primary: it restores from its archive alone');
    return p;
  }

  /**
   * Connects to the upstream and identifies it. With several addresses it connects to all of
   * them and keeps the one on the newest timeline its history allows (the first such in the
   * list): an upstream whose history contains this standby's timeline and leaves it no earlier
   * than the standby's end comes before one that would make it rewind; on one timeline, one
   * holding the WAL up to the standby's end before one behind it; one behind the standby's
   * timeline, or off its history, is never chosen. The others are closed.
   */
  async #connectUpstream(signal: AbortSignal): Promise<{ conn: MessageStream<'client'>; identity: IdentifySystemResultMessage; address: string }> {
    const addresses = this.#addresses;
    const log = this.#log;
    const attempt = async (address: string): Promise<Candidate> => {
      const conn = await this.#connect(signal, address);
      try {
        this.#setState({ kind: 'connecting', conn });
        const identity = await this.#identify(conn);
        const fit = addresses.length === 1 || log === null ? 'follows' : await this.#fitOf(conn, log, identity.timeline);
        return { conn, identity, address, fit };
      } catch (err) {
        conn.destroy();
        throw err;
      }
    };
    if (addresses.length === 1) return attempt(addresses[0] as string);
    const results = await Promise.allSettled(addresses.map(attempt));
    const rank = (c: Candidate): number => (c.fit === 'follows' ? 2 : c.fit === 'rewinds' ? 1 : 0);
    // On the same timeline, one that has the WAL up to this standby's end comes before one behind it.
    const holds = (c: Candidate): boolean => log === null || c.identity.timeline !== log.timeline || c.identity.flushLsn >= streamStart(log);
    const better = (c: Candidate, than: Candidate): boolean =>
      rank(c) !== rank(than) ? rank(c) > rank(than) : c.identity.timeline !== than.identity.timeline ? c.identity.timeline > than.identity.timeline : holds(c) && !holds(than);
    let best: Candidate | null = null;
    let error: unknown = null;
    for (const result of results) {
      if (result.status === 'rejected') {
        error ??= result.reason;
        continue;
      }
      const c = result.value;
      if (rank(c) === 0) continue;
      if (best === null || better(c, best)) best = c;
    }
    for (const result of results) if (result.status === 'fulfilled' && result.value !== best) result.value.conn.destroy();
    if (best !== null) return best;
    if (results.some((r) => r.status === 'fulfilled')) {
      throw new WalshipError('TIMELINE_MISMATCH', `no reachable upstream (${addresses.join(', ')}) is on a timeline this standby's history allows (it is on timeline ${log?.timeline ?? 0})`, { transient: true });
    }
    throw error;
  }

  /**
   * How an upstream on `timeline` fits this standby's history: `follows` (its history contains
   * the standby's timeline, left no earlier than the standby's end, or it is on the same
   * timeline with the same history), `rewinds` (left before the standby's end), or `refused`
   * (behind, or another history). Asks for its history over `conn`.
   */
  async #fitOf(conn: MessageStream<'client'>, log: WalLog, timeline: number): Promise<Candidate['fit']> {
    const own = log.timeline;
    if (timeline < own) return 'refused';
    if (timeline === own && own === 1) return 'follows';
    const history = await this.#fetchHistory(conn, timeline);
    if (timeline === own) return sameHistory(history, log.history) ? 'follows' : 'refused';
    const switchLsn = switchPointOf(history, own);
    if (switchLsn === undefined || !extendsHistory(history, log.history)) return 'refused';
    return switchLsn === null || this.#historyEnd(log) <= switchLsn ? 'follows' : 'rewinds';
  }

  /**
   * How far this standby's history reaches on its timeline: the end of its WAL, or where its
   * application is when that lies further (a standby bootstrapped from a base backup holds
   * state past its WAL until it has streamed up to there). An upstream whose timeline left
   * this one before it cannot be followed without taking something back.
   */
  #historyEnd(log: WalLog): Lsn {
    return Math.max(log.insertLsn, this.#core.applier.position);
  }

  /**
   * Changes the upstream connection while the standby runs (PostgreSQL reloading
   * `primary_conninfo`): the current connection ends and the next one uses `primary`. Replay,
   * the local state and downstream standbys are untouched.
   */
  reconfigure(primary: StandbyPrimaryOptions): void {
    this.#options = { ...this.#options, primary };
    this.#upstreamAddress = upstreamAddresses(primary.address)[0] as string;
    this.#debug('upstream reconfigured: %s', this.#addresses.join(', '));
    this.#conn?.destroy();
    this.#retryNow?.abort();
  }

  // -------------------------------------------------------------------------------------
  // Local state

  /** The control data of the local state, once bootstrapped. */
  get #control(): ControlData | null {
    return this.#core.attached ? this.#core.control : null;
  }

  /** Opens the local WAL and slots, brings the application to its last state and starts replay. */
  async #openLocal(control: ControlData): Promise<void> {
    const o = this.#options;
    // Under the directory's lock (nobody else may be using those files).
    await withStorageLock(this.#storage, async () => {
      if (await restoreTimelineHistory(this.#storage, control)) this.#debug('wrote the history file of timeline %d, which a crash lost', control.timeline);
      if (!isRecoveryState(control.state)) return;
      const removed = await removeAbandonedTimelines(this.#storage, control.timeline, control.segmentSize);
      if (removed.length > 0) this.#debug('removed %o: an interrupted promotion or timeline switch left them', removed);
    });
    const log = await WalLog.open({
      storage: this.#storage,
      role: 'replica',
      segmentSize: control.segmentSize,
      timeline: control.timeline,
      ...(control.checkpoint === null ? {} : { startLsn: control.checkpoint.lsn }),
      ...(o.sync === undefined ? {} : { sync: o.sync }),
      ...(o.recycleSegments === undefined ? {} : { recycleSegments: o.recycleSegments }),
      ...(o.maxRecycleSegments === undefined ? {} : { maxRecycleSegments: o.maxRecycleSegments }),
      ...(o.logPrefix === undefined ? {} : { logPrefix: o.logPrefix }),
      ...(o.clock === undefined ? {} : { clock: o.clock }),
    });
    // Early WAL: until the application's position is known (attach), the bound without it. The
    // archiver starts in attach, and must not take WAL past it for complete segments.
    if (o.acceptEarlyWal) log.boundUpstreamDurable(restartBound(log, 0));
    let start: Lsn;
    try {
      await this.#lockedFirstTime();
      const slots = await SlotManager.open(this.#storage, {
        maxReplicationSlots: o.maxReplicationSlots,
        ...(o.logPrefix === undefined ? {} : { logPrefix: o.logPrefix }),
      });
      // After bootstrapping again the restored state may be older than what was replayed before.
      start = await this.#core.attach({ control, log, slots });
      await this.#recordRunning();
    } catch (err) {
      await log.close().catch(() => undefined);
      throw err;
    }
    log.on('error', ({ error, fatal }) => {
      if (fatal && !this.#beginningTimeline) this.#fail(error);
    });
    this.#cluster = { systemId: control.systemId, segmentSize: control.segmentSize };
    this.#log = log;
    // Early WAL: what the primary confirmed before this restart is known only up to the
    // stamps. Replay waits for the primary to confirm the rest (or for the stream to show where
    // it differs); a promotion meanwhile keeps it, as this standby may have confirmed it.
    if (o.acceptEarlyWal) {
      log.boundUpstreamDurable(restartBound(log, start));
      log.keep(log.insertLsn);
    }
    this.#checkConsistent();
    this.#startReplay(log, start);
    this.#debug('open: system %s, WAL %s … %s, replay from %s', control.systemId, formatLsn(log.oldestLsn), formatLsn(log.flushedLsn), formatLsn(start));
  }

  /** Runs the `onLocked` setting, the first time only. */
  async #lockedFirstTime(): Promise<void> {
    const onLocked = this.#onLocked;
    this.#onLocked = undefined;
    await onLocked?.();
  }

  /**
   * The open holds the lock and has recovered the local WAL: a former primary's directory that
   * says `in-production` (its primary crashed) says `shut-down` from now on, so that
   * `in-production` means a primary process alone and `walship promote` can tell a running
   * standby (a live lock holder) from a running primary. It stays a primary's directory (not
   * a recovery state) until its upstream has compared its WAL (see {@link #recordRecovery});
   * nothing else tells the two primary states apart, and a crash during the write leaves one of
   * them. A standby's directory is not written here (PostgreSQL's startup records
   * DB_IN_ARCHIVE_RECOVERY, but a standby refused by its upstream changes nothing here: its
   * `in-recovery` comes with streaming).
   */
  async #recordRunning(): Promise<void> {
    if ((this.#control as ControlData).state === 'in-production') await this.#setControlState('shut-down');
  }

  /**
   * Replays the local WAL from `start` through the applier, following it as WAL arrives; with
   * a recovery target, up to it (the applier's `follow` asks the target check before and after
   * each record), and then {@link #reachedTarget}.
   */
  #startReplay(log: WalLog, start: Lsn): void {
    const replayAbort = new AbortController();
    this.#replayAbort = replayAbort;
    const signal = AbortSignal.any([this.#abort.signal, replayAbort.signal]);
    const check = this.#newTargetCheck();
    this.#targetCheck = check;
    this.#pausedAt = null;
    this.#replaying = this.#core.applier
      .follow(log, start, { follow: true, signal, onApplied: (lsn, commitTime) => this.#replayed(log, lsn, commitTime), ...(check === null ? {} : { target: check }) })
      .then(
        (stop) => {
          if (stop !== null && !signal.aborted && !check?.disabled) this.#reachedTarget(stop);
        },
        (err: unknown) => {
          if (signal.aborted) return;
          const error = isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err });
          if (error.code === 'APPLY_FAILED') this.emitSafely('apply:error', { error });
          this.#fail(error);
        },
      );
  }

  /** A check of the recovery target for a replay starting now (null without a target). */
  #newTargetCheck(): RecoveryTargetCheck | null {
    if (this.#target === null) return null;
    return new RecoveryTargetCheck(this.#target, this.#options.recoveryTargetInclusive, (this.#control as ControlData).consistentLsn);
  }

  /**
   * Replay stopped at the recovery target: it stays there (paused; receiving goes on) and
   * `recovery-target:reached` says so; the `Standby` carries out a `promote` or `shutdown`
   * action. A target before the consistent point stops the standby, as PostgreSQL does
   * ("requested recovery stop point is before consistent recovery point").
   */
  #reachedTarget(stop: TargetStop): void {
    this.#checkConsistent();
    const target = describeTarget(this.#target as ResolvedTarget, this.#options.recoveryTargetInclusive);
    if (!this.#consistent) {
      const consistentLsn = (this.#control as ControlData).consistentLsn;
      this.#fail(
        new WalshipError(
          'RECOVERY_TARGET_BEFORE_CONSISTENT',
          `replay reached its recovery target (${target}) ${stop.reason}, before the standby's state is consistent at ${formatLsn(consistentLsn)} (the end of its base backup): choose a later target`,
        ),
      );
      return;
    }
    this.#pausedAt = stop;
    const action = this.#options.recoveryTargetAction;
    const replayLsn = this.#core.applier.position;
    this.#debug('recovery target %s reached %s: replay stops at %s (applied up to %s); action %s', target, stop.reason, formatLsn(stop.lsn), formatLsn(replayLsn), action);
    const event: RecoveryTargetReachedEvent = { lsn: stop.lsn, replayLsn, action, reason: `recovery target ${target} reached ${stop.reason}` };
    // The applied position goes to the upstream now (remote_apply commits may wait for it).
    this.#receiver?.reportNow();
    if (!this.#opening) {
      this.emitSafely('recovery-target:reached', event);
      return;
    }
    // Reached while open() runs: nobody can listen yet. Emitted once open() has returned.
    currentScheduler().setImmediate(() => {
      if (!this.#lifecycle.closing && this.#pausedAt === stop) this.emitSafely('recovery-target:reached', event);
    });
  }

  /** Stops replay (waiting for the batch in progress) and returns whether it was running. */
  async #stopReplay(): Promise<void> {
    this.#replayAbort?.abort();
    await this.#replaying?.catch(() => undefined);
    this.#replaying = null;
    this.#replayAbort = null;
    this.#pausedAt = null;
  }

  /** Replay applied the batch ending at `lsn` committed at `commitTime`: the replay time, consistency, and the apply report. */
  #replayed(log: WalLog, lsn: Lsn, commitTime: number | null): void {
    // Send times are kept (and used up) for every batch, so that a format-1 batch finds its own.
    const sent = this.#sendTimes.timeFor(lsn);
    if (commitTime !== null) this.#lastReplayTime = commitTime;
    else if (sent !== null) this.#lastReplayTime = sent / 1000;
    this.#checkConsistent();
    // Tell the primary the apply position (remote_apply commits wait for it) without
    // waiting for the status interval: at once when replay has caught up with what it may
    // read (flushed and, with early WAL, said durable by the sender; once per such end), and
    // every few ms while it runs behind a steady stream.
    const readable = log.readableLsn;
    const now = currentScheduler().now();
    if (this.#receiver !== null && ((lsn >= readable && readable > this.#caughtUpReportedLsn) || now - this.#applyReportedAt >= APPLY_REPORT_INTERVAL_MS)) {
      if (lsn >= readable) this.#caughtUpReportedLsn = readable;
      this.#applyReportedAt = now;
      this.#receiver.reportNow();
    }
  }

  #checkConsistent(): void {
    const control = this.#control;
    if (this.#consistent || control === null || this.#core.applier.position < control.consistentLsn) return;
    this.#consistent = true;
    this.#consistency.advance(1);
    const lsn = this.#core.applier.position;
    this.#debug('consistent recovery state reached at %s', formatLsn(lsn));
    if (!this.#options.hotStandby) return;
    if (!this.#opening) {
      this.emitSafely('consistent', { lsn });
      return;
    }
    // Reached while open() runs: nobody can listen yet. Emitted once open() has returned.
    currentScheduler().setImmediate(() => {
      if (!this.#lifecycle.closing) this.emitSafely('consistent', { lsn });
    });
  }

  // -------------------------------------------------------------------------------------
  // The connection loop

  async #run(): Promise<void> {
    const signal = this.#upstreamSignal;
    let delay: number = this.#options.retryMinDelayMs;
    while (!signal.aborted && this.failure === null) {
      let error: WalshipError | null = null;
      this.#progressed = false;
      // The archive first: what it has is restored before streaming starts, and again each
      // time streaming ends (PostgreSQL's loop: archive, then pg_wal, then the stream).
      error = await this.#restoreStep();
      if (signal.aborted || this.failure !== null) break;
      if (this.#options.primary === undefined) {
        // An archive-only standby looks again after restoreIntervalMs.
        if (this.#state.kind !== 'restoring') this.#setState({ kind: 'restoring' });
        if (error !== null) this.#lastError = error;
        await this.#pause(this.#progressed ? 0 : this.#options.restoreIntervalMs, signal);
        continue;
      }
      try {
        await this.#session();
      } catch (err) {
        error = isWalshipError(err) ? err : new WalshipError('CONNECTION_FAILED', String(err), { cause: err, transient: true });
      } finally {
        // The next state (disconnected, failed, connecting again) lets go of it.
        this.#conn?.destroy();
      }
      if (signal.aborted || this.failure !== null) break;
      if (error !== null && error.code === 'WAL_REMOVED' && this.#options.restore !== undefined && this.#log !== null) {
        // The primary no longer has it: the archive may (PostgreSQL's standby goes back to it).
        const restoring = await this.#restoreStep();
        if (this.#progressed) continue;
        if (restoring !== null) this.#debug.error('the archive could not help either: %s', restoring.message);
      }
      if (error !== null && error.code === 'WAL_REMOVED' && this.#control !== null) {
        const why = this.#cannotBootstrapAgain(error);
        if (why === null) {
          try {
            await this.#bootstrapAgain(error);
            continue;
          } catch (err) {
            error = isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err });
          }
        } else {
          error = new WalshipError('WAL_REMOVED', `${error.message}; ${why}`, { cause: error });
        }
      }
      if (error !== null) this.#lastError = error;
      if (error !== null && FATAL.includes(error.code)) {
        this.emitSafely('primary:disconnected', { error, retryInMs: null });
        this.#fail(error);
        break;
      }
      // Back-off grows over consecutive fruitless attempts only: a connection that carried WAL
      // and then broke is retried at once (after the shortest delay).
      if (this.#progressed) delay = this.#options.retryMinDelayMs;
      this.#setState({ kind: 'disconnected', error, retryInMs: delay });
      if (error !== null) this.#debug.error('replication connection ended: %s (retrying in %d ms)', error.message, delay);
      this.emitSafely('primary:disconnected', { error, retryInMs: delay });
      const cut = await this.#pause(delay, signal);
      delay = cut ? this.#options.retryMinDelayMs : Math.min(delay * 2, this.#options.retryMaxDelayMs);
    }
  }

  /** Waits `ms` (less if `reconfigure` cuts it short, which it resolves true for). */
  async #pause(ms: number, signal: AbortSignal): Promise<boolean> {
    const retryNow = new AbortController();
    this.#retryNow = retryNow;
    await currentScheduler().sleep(ms, { signal: AbortSignal.any([signal, retryNow.signal]) }).catch(() => undefined);
    this.#retryNow = null;
    return retryNow.signal.aborted;
  }

  /**
   * Restores what the archive has (`restore`), when the standby has local state; sets
   * `#progressed` when it restored anything. Resolves with the error that stopped it (the
   * archive failed, or holds WAL this standby cannot use), or null; a fatal one fails the standby.
   */
  async #restoreStep(signal: AbortSignal = this.#upstreamSignal): Promise<WalshipError | null> {
    const archiver = this.#options.restore;
    const log = this.#log;
    if (archiver === undefined || log === null) return null;
    try {
      const restored = await restoreFromArchive({
        archiver,
        storage: this.#storage,
        log,
        recoveryTargetTimeline: this.#options.recoveryTargetTimeline,
        callTimeoutMs: this.#options.archiveCallTimeoutMs,
        signal,
        debug: this.#debug,
        follow: (history) => this.#moveOntoTimeline(log, history),
        beforeWrite: (overlapChecked) => (this.#control?.state === 'in-recovery' ? Promise.resolve() : this.#recordRecovery(overlapChecked)),
        restored: (name, endLsn) => {
          if (this.#state.kind !== 'restoring') this.#setState({ kind: 'restoring' });
          this.#debug('restored %s from the archive, up to %s', name, formatLsn(endLsn));
          this.emitSafely('archive:restored', { name, endLsn });
        },
      });
      if (restored > 0) this.#progressed = true;
      return null;
    } catch (err) {
      if (signal.aborted) return null;
      const error = isWalshipError(err) ? err : new WalshipError('ARCHIVE_FAILED', String(err), { cause: err });
      if (FATAL.includes(error.code)) this.#fail(error);
      else this.#debug.error('restoring from the archive: %s', error.message);
      return error;
    }
  }

  /** One connection: identify, bootstrap if needed, stream; sets `#progressed` when it gets somewhere. */
  async #session(): Promise<void> {
    const o = this.#options;
    const signal = this.#upstreamSignal;
    this.#setState({ kind: 'connecting', conn: null });
    if (this.#control === null) await this.#resumeBootstrap();
    const p = this.#upstreamOptions;
    const { conn, identity, address } = await this.#connectUpstream(signal);
    this.#upstreamAddress = address;
    this.#setState({ kind: 'connecting', conn });
    if (signal.aborted) throw abortError(signal);
    this.#upstreamTimeline = Math.max(this.#upstreamTimeline, identity.timeline);
    this.emitSafely('primary:connected', { address, systemId: identity.systemId });
    if (this.#log !== null && (identity.timeline !== this.#log.timeline || this.#log.timeline > 1)) {
      const divergedAt = await this.#checkUpstreamTimeline(conn, this.#log, identity.timeline);
      if (divergedAt !== null && (await this.#rewind(this.#log, divergedAt, identity.timeline)) === 'bootstrap-again') return;
    }
    if (this.#log !== null && identity.timeline === this.#log.timeline && streamStart(this.#log) > identity.flushLsn) {
      // A standby ahead of its upstream (one that streamed from another node) waits for it.
      throw new WalshipError(
        'CONNECTION_FAILED',
        `the upstream's WAL ends at ${formatLsn(identity.flushLsn)}, behind this standby's at ${formatLsn(streamStart(this.#log))}: waiting for it to catch up`,
        { transient: true },
      );
    }
    if (p.createSlot === true && !this.#slotReady) await this.#createSlot(conn, p.slotName as string);
    const backupOnThisConnection = this.#control === null && this.#app.restore !== undefined && !this.#noBaseBackup;
    if (this.#control === null) {
      try {
        await this.#bootstrap(conn, identity);
      } catch (err) {
        if (this.#noBaseBackup || !primaryHasNoSnapshotHook(err)) throw err;
        if (this.#applicationHoldsState) {
          // Streaming the WAL from its beginning would apply it on top of the state the application still holds.
          throw new WalshipError(
            'BASE_BACKUP_REQUIRED',
            `this node must start its application afresh from a base backup (${(err as Error).message}), and the upstream's application has no snapshot() hook to make one: give the upstream's application a snapshot() hook, or bootstrap this node in an empty directory`,
          );
        }
        // Retrying cannot change that: stream the primary's WAL from its beginning instead, as
        // a standby without restore() does, on a new connection (the primary closed this one).
        this.#noBaseBackup = true;
        this.#debug("the primary cannot make a base backup (its application has no snapshot() hook): bootstrapping from its WAL's beginning");
        conn.destroy();
        this.#setState({ kind: 'connecting', conn: null });
        return this.#session();
      }
    }
    const log = this.#log as WalLog;
    const receiver = new WalReceiver(conn, log, {
      statusIntervalMs: o.statusIntervalMs,
      receiverTimeoutMs: o.walReceiverTimeoutMs,
      sendTimes: this.#sendTimes,
      appliedLsn: () => this.#core.applier.position,
      historyFrom: this.#control?.consistentLsn ?? 0,
      // Before any WAL is written: the directory says "standby" first (a former primary's only
      // once its upstream confirmed its WAL is a prefix), so a crash can never leave upstream
      // WAL in a directory that still says "primary".
      beforeStreaming: ({ historyChecked }) => (this.#control?.state === 'in-recovery' ? Promise.resolve() : this.#recordRecovery(historyChecked)),
      onEndOfTimeline: ({ nextTimeline, switchLsn }) => this.#followTimeline(conn, log, nextTimeline, switchLsn),
      acceptEarlyWal: o.acceptEarlyWal,
      flushDelayMs: o.flushDelayMs,
      ...(p.slotName === undefined ? {} : { slotName: p.slotName }),
      ...(o.logPrefix === undefined ? {} : { logPrefix: o.logPrefix }),
    });
    let caughtUp = false;
    let started = false;
    receiver.on('streaming:started', () => {
      started = true;
      this.#lastError = null;
    });
    receiver.on('wal:flushed', ({ flushLsn }) => {
      this.#progressed = true;
      if (!caughtUp && flushLsn >= identity.flushLsn) {
        caughtUp = true;
        this.emitSafely('wal:caught-up', { receiveLsn: flushLsn });
      }
    });
    this.#setState({ kind: 'streaming', conn, receiver });
    if (log.flushedLsn >= identity.flushLsn) {
      caughtUp = true;
      this.emitSafely('wal:caught-up', { receiveLsn: log.flushedLsn });
    }
    try {
      await receiver.run();
    } catch (err) {
      // A new standby without a restore hook asked for WAL the primary no longer has.
      if (isWalshipError(err, 'WAL_REMOVED') && this.#control?.checkpoint === null && log.flushedLsn <= log.oldestLsn) {
        // Nothing was ever received: undo the bootstrap, so that the directory is new again and
        // a reopen with a restore() hook (or seeding it with primary.baseBackup()) works.
        await removeControlFile(this.#storage).catch((e: unknown) => this.#debug.error('undoing the bootstrap: %s', (e as Error).message));
        const why =
          this.#app.restore === undefined
            ? "this standby's application has no restore() hook, so it cannot start from a base backup"
            : this.#noBaseBackup
              ? "a base backup is needed, and the primary's application has no snapshot() hook to make one"
              : 'reopen the standby to bootstrap it from a base backup';
        throw new WalshipError('BASE_BACKUP_REQUIRED', `the primary no longer has its WAL from the beginning (${err.message}); ${why}`);
      }
      if (isWalshipError(err, 'WAL_REMOVED') && !started && p.slotName !== undefined && p.createSlot !== true && !backupOnThisConnection) {
        // Refused at the start with a slot this standby does not manage: if the WAL is still
        // there, the slot was invalidated, and wiping the local state would not help.
        if (await this.#walStillThere(streamStart(log), log.timeline)) {
          this.#refusedAfterBackup = new WalshipError(
            'WAL_REMOVED',
            `${err.message}; the primary still has the WAL from ${formatLsn(log.insertLsn)}, so it is replication slot "${p.slotName}" that refuses (invalidated, or unable to reserve WAL the primary is letting go): drop and recreate it (or set createSlot), or stream without it; this standby's local state is kept`,
            { cause: err },
          );
          throw this.#refusedAfterBackup;
        }
      }
      if (isWalshipError(err, 'WAL_REMOVED') && backupOnThisConnection && !started) {
        this.#refusedAfterBackup = new WalshipError(
          'WAL_REMOVED',
          `${err.message}; the primary refuses to stream right after sending a base backup on the same connection, so the WAL is not what is missing: if the replication slot was invalidated, drop and recreate it (or set createSlot)`,
          { cause: err },
        );
        throw this.#refusedAfterBackup;
      }
      throw err;
    }
  }

  /** Why this standby cannot bootstrap again after `WAL_REMOVED`, or null when it can. */
  #cannotBootstrapAgain(error: WalshipError): string | null {
    const remedy = 'give it a replication slot on the primary (or a larger walKeepSize there) and bootstrap it anew in an empty directory';
    if (this.#app.restore === undefined) return `its application has no restore() hook, so this standby cannot bootstrap again from a base backup: ${remedy}`;
    if (this.#noBaseBackup) return `the primary's application has no snapshot() hook to make a base backup: ${remedy}`;
    if (error === this.#refusedAfterBackup) return 'bootstrapping again cannot help';
    return null;
  }

  /**
   * After `WAL_REMOVED`: stops replay, closes and removes the local WAL, snapshots and control
   * file, so that the next connection bootstraps the directory from a base backup. With
   * `createSlot`, the slot (invalidated, maybe) is dropped and created again first.
   */
  async #bootstrapAgain(error: WalshipError): Promise<void> {
    const log = this.#log as WalLog;
    const receiveLsn = log.flushedLsn;
    this.#debug.error('the primary removed WAL this standby needs (%s): bootstrapping again from a base backup', error.message);
    this.emitSafely('rebootstrap', { error, receiveLsn });
    this.#applicationHoldsState = true;
    this.#slotReady = false;
    this.#recreateSlot = true;
    // The application's state is about to be replaced: not readable until consistent again.
    this.#consistent = false;
    this.#consistency.rewind(0);
    this.#replayAbort?.abort();
    await this.#replaying?.catch(() => undefined);
    this.#log = null;
    this.#replaying = null;
    this.#pausedAt = null;
    // Downstream standbys are let go (they reconnect, and are refused until the new state is there).
    await this.#core.detach(new WalshipError('CONNECTION_FAILED', 'the upstream standby is bootstrapping again from a base backup', { transient: true }));
    // Locked: another node must not open the directory while its files go.
    const lock = await lockStorage(this.#storage);
    try {
      await removeLocalState(this.#storage);
    } finally {
      await lock.release().catch(() => undefined);
    }
  }

  /**
   * `createSlot`: creates the slot on the primary, reserving WAL now; one that exists is used as
   * it is, unless the standby is bootstrapping again (the slot may be invalidated): then it is
   * dropped and created anew.
   */
  async #createSlot(conn: MessageStream<'client'>, slotName: string): Promise<void> {
    const timeoutMs = this.#options.walReceiverTimeoutMs;
    if (this.#recreateSlot) {
      await dropReplicationSlot(conn, slotName, { wait: true, timeoutMs }).catch((err: unknown) => {
        if (!isWalshipError(err, 'SLOT_NOT_FOUND')) throw err;
      });
    }
    try {
      // A new (or discarded) directory is bootstrapped next, from a base backup the slot must
      // cover: the primary reserves from its applied position. One with local state resumes
      // from its own end, which may be older: the slot reserves from there.
      const log = this.#log;
      const created = await createReplicationSlot(conn, slotName, { reserveWal: true, timeoutMs, ...(log === null ? {} : { reserveFrom: streamStart(log) }) });
      this.#debug('created replication slot %s on the primary', slotName);
      this.emitSafely('slot:created', created);
    } catch (err) {
      if (!isWalshipError(err, 'SLOT_EXISTS')) throw err;
    }
    this.#slotReady = true;
    this.#recreateSlot = false;
  }

  /**
   * Whether the primary would stream from `lsn` without a slot: START_REPLICATION on a
   * connection of its own, ended at once. False when it answers `WAL_REMOVED`; any other
   * failure is thrown.
   */
  async #walStillThere(lsn: Lsn, timeline: number): Promise<boolean> {
    const conn = await this.#connect(this.#upstreamSignal);
    try {
      conn.send({ kind: 'startReplication', slotName: '', startLsn: lsn, timeline, checkFrom: null, checkCrc: 0 });
      const answer = await conn.next({ signal: this.#upstreamSignal, timeoutMs: this.#options.walReceiverTimeoutMs });
      if (answer?.kind === 'replicationStarted') return true;
      if (answer?.kind === 'error' && answer.code === 'WAL_REMOVED') return false;
      throw new WalshipError('PROTOCOL_ERROR', `unexpected ${answer === null ? 'end of the connection' : answer.kind} while checking whether the primary still has ${formatLsn(lsn)}`);
    } finally {
      conn.destroy();
    }
  }

  /**
   * An upstream on another timeline than this standby's: one behind it, or whose history does
   * not contain it, is never followed (`TIMELINE_MISMATCH`, retried); one whose history left
   * this standby's timeline before the standby's end means the standby holds WAL that is not
   * on the new timeline: with `rewind` it resolves with the switch point to rewind to, else
   * `TIMELINE_DIVERGED`. Otherwise (null) the standby streams the rest of its timeline, and the
   * sender's end of timeline moves it on (see {@link #followTimeline}).
   */
  async #checkUpstreamTimeline(conn: MessageStream<'client'>, log: WalLog, upstream: number): Promise<Lsn | null> {
    const own = log.timeline;
    if (upstream < own) {
      throw new WalshipError('TIMELINE_MISMATCH', `the upstream is on timeline ${upstream}, behind this standby's timeline ${own}: it is never followed (a former primary, or a node of an older branch)`, { transient: true });
    }
    const history = await this.#fetchHistory(conn, upstream);
    if (upstream === own) {
      // The same timeline number with another history: a node of another promotion.
      if (sameHistory(history, log.history)) return null;
      throw new WalshipError('TIMELINE_MISMATCH', `the upstream's timeline ${upstream} has another history (${describeHistory(history)}) than this standby's (${describeHistory(log.history)}): it was promoted elsewhere`, { transient: true });
    }
    const switchLsn = switchPointOf(history, own);
    if (switchLsn === undefined || !extendsHistory(history, log.history)) {
      throw new WalshipError('TIMELINE_MISMATCH', `the upstream's timeline ${upstream} did not come from this standby's timeline ${own} (its history: ${describeHistory(history)})`, { transient: true });
    }
    if (switchLsn === null || this.#historyEnd(log) <= switchLsn) return null;
    if (!this.#options.rewind) {
      throw new WalshipError(
        'TIMELINE_DIVERGED',
        `this standby's WAL on timeline ${own} reaches ${formatLsn(log.insertLsn)} (replayed up to ${formatLsn(this.#core.applier.position)}), past ${formatLsn(switchLsn)}, where the upstream's timeline ${upstream} left timeline ${own}: it holds WAL that is not on the upstream's history (rewind: false)`,
      );
    }
    return switchLsn;
  }

  /**
   * Rewinds this node onto its upstream's history (walship's `pg_rewind`, done by the node
   * itself): the local WAL past `switchLsn` is cut back and set aside (`.diverged` files, never
   * deleted), and the application, if it applied any of it, is brought back to a state on the
   * shared history: the newest local snapshot at or below `switchLsn` plus local WAL up to it,
   * or else a base backup from the upstream. The `rewind` event reports exactly what is
   * discarded, before the cut (a crash in between reports it again: at least once). A former
   * primary's directory says "standby" before anything is cut. Resolves
   * `continue` (stream on this connection) or `bootstrap-again` (the next connection takes a
   * base backup).
   */
  async #rewind(log: WalLog, switchLsn: Lsn, upstream: number): Promise<'continue' | 'bootstrap-again'> {
    const core = this.#core;
    const timeline = log.timeline;
    const endLsn = log.insertLsn;
    await this.#stopReplay();
    const applied = core.applier.position;
    let restoredFrom: RewindEvent['restoredFrom'] = 'wal';
    let snapshotLsn: Lsn | null = null;
    if (applied > switchLsn) {
      // An application that keeps its own durable state (appliedLsn) cannot be taken back by walship.
      const canRestore = this.#app.restore !== undefined && this.#app.appliedLsn === undefined;
      snapshotLsn = canRestore ? await core.snapshots.newestAtOrBelow(switchLsn) : null;
      if (snapshotLsn !== null && snapshotLsn >= log.oldestLsn) restoredFrom = 'snapshot';
      else if (this.#app.restore !== undefined && !this.#noBaseBackup) restoredFrom = 'base-backup';
      else {
        this.#startReplay(log, applied);
        throw new WalshipError(
          'TIMELINE_DIVERGED',
          `this node applied WAL up to ${formatLsn(applied)} on timeline ${timeline}, past ${formatLsn(switchLsn)}, where the upstream's timeline ${upstream} left it, and cannot rewind its application: ${this.#app.restore === undefined ? 'it has no restore() hook' : "the upstream's application cannot make a base backup"}`,
        );
      }
    }
    if (!isRecoveryState((this.#control as ControlData).state)) await this.#setControlState('in-recovery');
    const discarded = await discardedBatches(log, switchLsn);
    const { batches } = discarded;
    // An application restored from a base backup may hold batches past the switch point that
    // this node's WAL never had: they are discarded too, but cannot be listed.
    const complete = discarded.complete && applied <= Math.max(endLsn, switchLsn);
    // Told before anything is cut: a crash after the cut would leave nothing to tell it again
    // (the log then ends at the switch point). So the report comes at least once.
    const segments = Array.from({ length: Math.floor(Math.max(endLsn - 1, switchLsn) / log.segmentSize) - Math.floor(switchLsn / log.segmentSize) + 1 }, (_, i) => switchLsn + i * log.segmentSize);
    const setAside = segments.map((lsn) => log.segmentName(lsn));
    this.emitSafely('rewind', { timeline, switchLsn, endLsn, batches, complete, setAside, restoredFrom });
    // Downstream standbys may hold what is discarded: they reconnect and find out for themselves.
    core.service?.terminateAll(new WalshipError('CONNECTION_FAILED', 'the upstream standby is rewinding onto a new timeline', { transient: true }));
    await core.discardWal(switchLsn);
    this.#debug.error('rewound from %s to %s on timeline %d (%d batches discarded); the application starts from %s', formatLsn(endLsn), formatLsn(switchLsn), timeline, batches.length, restoredFrom);
    if (restoredFrom === 'snapshot') {
      await core.snapshots.setAsideAbove(switchLsn);
      const control = await core.updateControl((current) => ({ ...current, checkpoint: { lsn: snapshotLsn as Lsn, snapshot: true } }));
      this.#log = null;
      await core.detach(new WalshipError('CONNECTION_FAILED', 'the upstream standby is rewinding', { transient: true }));
      await this.#openLocal(control);
    } else if (restoredFrom === 'wal') {
      this.#startReplay(log, applied);
    }
    if (restoredFrom === 'base-backup') {
      await this.#bootstrapAgain(new WalshipError('TIMELINE_DIVERGED', `rewinding: no local snapshot at or below ${formatLsn(switchLsn)} to start the application from`));
      return 'bootstrap-again';
    }
    return 'continue';
  }

  /**
   * TIMELINE_HISTORY over `conn`: the upstream's history of `timeline`, parsed and checked. One
   * this standby could not write as its own file (`FILE_TOO_LARGE`: longer than walship reads
   * back once formatted here) is refused now, before a timeline switch records anything.
   */
  async #fetchHistory(conn: MessageStream<'client'>, timeline: number): Promise<TimelineHistory> {
    const { content } = await fetchTimelineHistory(conn, timeline, { timeoutMs: this.#options.walReceiverTimeoutMs });
    const history = parseTimelineHistory(timeline, Buffer.from(content).toString('utf8'), `the upstream's ${historyFileName(timeline)}`);
    formatTimelineHistory(history);
    return history;
  }

  /**
   * The upstream ended this standby's timeline at `switchLsn` (its log ends exactly there) and
   * `nextTimeline` follows: unless `recoveryTargetTimeline` keeps it where it is, the standby
   * fetches the new timeline's history, writes it, moves its log onto it and records the
   * timeline in the control file, before any WAL of it is received. Resolves whether to stream it.
   */
  async #followTimeline(conn: MessageStream<'client'>, log: WalLog, nextTimeline: number, switchLsn: Lsn): Promise<boolean> {
    const target = this.#options.recoveryTargetTimeline;
    if (target === 'current' || (typeof target === 'number' && nextTimeline > target)) {
      throw new WalshipError(
        'TIMELINE_MISMATCH',
        `the upstream moved on to timeline ${nextTimeline} at ${formatLsn(switchLsn)}; recoveryTargetTimeline ${JSON.stringify(target)} keeps this standby on timeline ${log.timeline}`,
        { transient: true },
      );
    }
    const history = await this.#fetchHistory(conn, nextTimeline);
    if (switchPointOf(history, log.timeline) !== switchLsn || !extendsHistory(history, log.history)) {
      throw new WalshipError('TIMELINE_MISMATCH', `the upstream's history of timeline ${nextTimeline} (${describeHistory(history)}) does not continue timeline ${log.timeline} at ${formatLsn(switchLsn)}`);
    }
    await this.#moveOntoTimeline(log, history);
    return true;
  }

  /**
   * Moves the standby onto `history`'s timeline, which left the log's timeline at its switch
   * point, where the log ends (from the stream's end of timeline, or the archive): the control
   * file records it, then the log follows. Refused (`TIMELINE_MISMATCH`, transient) when the
   * application's state is past the switch point.
   */
  async #moveOntoTimeline(log: WalLog, history: TimelineHistory): Promise<void> {
    const nextTimeline = history.timeline;
    const switchLsn = switchPointOf(history, log.timeline) as Lsn;
    if (!isRecoveryState((this.#control as ControlData).state)) {
      // Never: the directory says "standby" before any WAL arrives (streaming or restored). A
      // primary's directory recording another timeline would open as a primary on it.
      throw new WalshipError('WAL_DIVERGED', `${this.#storage.description} still says it belongs to a primary: it does not move onto timeline ${nextTimeline}`);
    }
    if (this.#historyEnd(log) > switchLsn) {
      // Its application holds state past the switch point (from a base backup): following would
      // continue that state with WAL of another history. The next connection rewinds, or stops.
      throw new WalshipError(
        'TIMELINE_MISMATCH',
        `the upstream's timeline ${nextTimeline} leaves timeline ${log.timeline} at ${formatLsn(switchLsn)}, before this standby's state (${formatLsn(this.#core.applier.position)}): it is not followed as it is`,
        { transient: true },
      );
    }
    // The control file records the new timeline's history entry: the log writes the history
    // file itself once it switches (rebuilt at open from the entry and this timeline's file).
    await log.historyFileWritten();
    await log.removeSegmentsPast(switchLsn);
    await this.#recordOrStop(() => this.#core.updateControl((current) => ({ ...current, timeline: nextTimeline, ...switchedFromOf(history) })));
    try {
      await log.followTimeline(history);
    } catch (err) {
      // The control file names the new timeline: the standby stops; reopened, it finds the segment in place.
      const error = isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err });
      this.#fail(error);
      throw error;
    }
    this.#debug('following timeline %d from %s', nextTimeline, formatLsn(switchLsn));
    this.emitSafely('timeline:switch', { timeline: nextTimeline, switchLsn });
  }

  /** IDENTIFY_SYSTEM: the primary must belong to this standby's cluster. */
  async #identify(conn: MessageStream<'client'>): Promise<IdentifySystemResultMessage> {
    conn.send({ kind: 'identifySystem' });
    const result = await this.#expect(conn, 'identifySystemResult');
    await this.#expect(conn, 'readyForCommand');
    const control = this.#control ?? this.#cluster;
    if (control !== null) {
      if (result.systemId !== control.systemId) {
        throw new WalshipError(
          'SYSTEM_ID_MISMATCH',
          `database system identifier differs between the primary and standby: the primary's is ${result.systemId}, the standby's is ${control.systemId}`,
        );
      }
      if (result.segmentSize !== control.segmentSize) {
        throw new WalshipError('WAL_FORMAT', `the primary's WAL segment size is ${result.segmentSize} bytes, this standby's is ${control.segmentSize}`);
      }
    }
    return result;
  }

  /** A new standby: a base backup when the application can restore one, else the WAL from its start. */
  async #bootstrap(conn: MessageStream<'client'>, identity: IdentifySystemResultMessage): Promise<void> {
    const control = await withStorageLock(this.#storage, async (): Promise<ControlData> => {
      // Another standby opened on the same new directory may have bootstrapped it meanwhile.
      if ((await readControlFile(this.#storage)) !== null) {
        throw new WalshipError('WAL_LOCKED', `${this.#storage.description} was bootstrapped by another node while this standby was connecting`);
      }
      // WAL and snapshots of a state this directory was discarding when it crashed (never WAL
      // whose control file was lost: refused, as at open).
      await refuseMissingControlFile(this.#storage, 'standby');
      await removeLeftovers(this.#storage);
      const bootstrapped: ControlData =
        this.#app.restore !== undefined && !this.#noBaseBackup
          ? await this.#receiveBaseBackup(conn, identity)
          : { state: 'in-recovery', systemId: identity.systemId, segmentSize: identity.segmentSize, timeline: identity.timeline, checkpoint: null, consistentLsn: 0 };
      // A timeline after 1 comes with its history (which timeline's files hold the older WAL).
      if (bootstrapped.timeline > 1) await writeTimelineHistory(this.#storage, await this.#fetchHistory(conn, bootstrapped.timeline));
      await writeControlFile(this.#storage, bootstrapped);
      // Snapshots an interrupted earlier bootstrap left behind belong to nothing.
      await this.#core.snapshots.removeOlderThan(bootstrapped.checkpoint?.lsn ?? Number.MAX_SAFE_INTEGER);
      return bootstrapped;
    });
    await this.#openLocalUnlessClosing(control);
  }

  /**
   * A bootstrap that wrote the control file and then failed (opening the log or cleaning up
   * hit a transient error) is finished, not started again: the directory is this standby's.
   */
  async #resumeBootstrap(): Promise<void> {
    const control = await readControlFile(this.#storage);
    if (control === null) return;
    this.#debug('finishing an earlier bootstrap of %s', this.#storage.description);
    // Locked: a directory another node has opened meanwhile is WAL_LOCKED, and its files are left alone.
    await withStorageLock(this.#storage, () => this.#core.snapshots.removeOlderThan(control.checkpoint?.lsn ?? Number.MAX_SAFE_INTEGER));
    await this.#openLocalUnlessClosing(control);
  }

  /** Opens the bootstrapped state, unless the standby is closing meanwhile (an immediate shutdown does not wait for this). */
  async #openLocalUnlessClosing(control: ControlData): Promise<void> {
    if (this.#abort.signal.aborted) throw abortError(this.#abort.signal);
    await this.#openLocal(control);
  }

  /**
   * A base backup from the primary (`pg_basebackup`), received by {@link receiveBaseBackup}
   * into a local snapshot file: only a complete, verified snapshot is put into place, so an
   * interrupted backup leaves nothing behind and simply starts over. Returns the control data
   * of the new state: replay is consistent once it reaches the backup's end.
   */
  async #receiveBaseBackup(conn: MessageStream<'client'>, identity: IdentifySystemResultMessage): Promise<ControlData> {
    this.#setState({ kind: 'base-backup', conn });
    const { begin, end, written } = await receiveBaseBackup(conn, {
      snapshots: this.#core.snapshots,
      label: `walship standby ${this.#upstreamOptions.applicationName}`.slice(0, 255),
      ...this.#replyOptions(),
      onProgress: (progress) => this.emitSafely('base-backup:progress', progress),
    });
    this.#progressed = true;
    this.#applicationHoldsState = false;
    await this.#expect(conn, 'readyForCommand');
    this.emitSafely('base-backup:done', { lsn: begin.startLsn, size: written.size });
    this.#debug('base backup of %d bytes at %s received', written.size, formatLsn(begin.startLsn));
    return {
      state: 'in-recovery',
      systemId: identity.systemId,
      segmentSize: identity.segmentSize,
      timeline: begin.timeline,
      checkpoint: { lsn: begin.startLsn, snapshot: true },
      consistentLsn: end.endLsn,
    };
  }

  /** Waits for the primary's answers: as long as `walReceiverTimeoutMs`, until the standby stops. */
  #replyOptions(): ReplyOptions {
    return { signal: this.#upstreamSignal, timeoutMs: this.#options.walReceiverTimeoutMs, peer: 'the primary' };
  }

  async #expect<K extends ServerMessage['kind']>(conn: MessageStream<'client'>, kind: K): Promise<Extract<ServerMessage, { kind: K }>> {
    return expectMessage(conn, kind, this.#replyOptions());
  }

  // -------------------------------------------------------------------------------------
  // Promotion

  /**
   * Promotion's recovery side (PostgreSQL's end of recovery, `StartupXLOG` after the promote
   * signal): stops the upstream connection, applies every complete record received (up to the
   * recovery target when it is among them: then the WAL past the target is set aside and the
   * new timeline begins at the stop), cuts a trailing partial record, picks the new timeline (one past the highest known here or from
   * an upstream), writes its history file, begins it in the log with an end-of-recovery
   * record, and records "in production" and the timeline in the control file: from that write
   * on the directory is a primary's. The core, its listener, downstream connections and the
   * application stay as they are. Concurrent calls share one promotion. A promotion that fails
   * before the control file says so leaves this standby streaming again, as it was.
   */
  promote(reason: string, signal?: AbortSignal): Promise<PromotedLocal> {
    if (this.#state.kind === 'promoted') {
      return Promise.reject(new WalshipError('NOT_IN_RECOVERY', 'this standby was promoted already: use the Primary that promote() resolved with'));
    }
    if (this.#lifecycle.closing) return Promise.reject(this.#lifecycle.closedError('it cannot be promoted'));
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.#log === null) {
      return Promise.reject(new WalshipError('NOT_CONSISTENT', 'the standby has not bootstrapped yet: there is no state to promote'));
    }
    this.#promoting ??= this.#promote(reason, signal).finally(() => {
      this.#promoting = null;
    });
    return this.#promoting;
  }

  /**
   * Early WAL at a promotion: the tail past the primary's last confirmed durable end is cut
   * (the primary may have lost it; nothing of it was confirmed, applied or forwarded). What
   * the log held when it was opened is kept, unless the stream showed where it differs from
   * the primary's: which part of it this standby confirmed before its restart is unknown (its
   * confirmations went up to the durable ends it heard, past the stamps), and no commit it
   * confirmed may be lost.
   */
  async #cutUnconfirmed(log: WalLog): Promise<void> {
    const bound = log.upstreamDurableLsn;
    if (bound === null) return;
    const keep = Math.max(bound, log.keptLsn ?? bound);
    if (log.insertLsn > keep) {
      this.#core.service?.terminateAll(new WalshipError('CONNECTION_FAILED', 'the upstream standby is promoting', { transient: true }));
      await log.cutBack(keep);
      this.#debug('promoting: the WAL past %s, which the primary never said was durable, is cut', formatLsn(keep));
    }
    log.boundUpstreamDurable(null);
    log.keep(null);
  }

  async #promote(reason: string, signal: AbortSignal | undefined): Promise<PromotedLocal> {
    const core = this.#core;
    // The upstream goes first: nothing more is received or written from it (its socket is
    // closed a moment later, while the promotion's first reads run).
    this.#conn?.destroy({ closeSoon: true });
    this.#upstream.abort();
    const started = currentScheduler().monotonic();
    const lap = (): string => (currentScheduler().monotonic() - started).toFixed(1);
    // The receiver's last write is waited for; the socket's close is not.
    await this.#receiver?.stop({ waitForClose: false });
    await this.#running?.catch(() => undefined);
    const stopped = lap();
    let recorded = false;
    let switched = false;
    // Steps started ahead to overlap others: settled on every path, so that a failed promotion
    // resumes only once they are done.
    let newestKnown: Promise<[number, number, void]> | null = null;
    let removed: Promise<void> | null = null;
    let switchReady: Promise<number> | null = null;
    let replayStopped: Promise<void> | null = null;
    // Settles once the end-of-recovery record is durable, or the promotion failed.
    let recordDone!: () => void;
    const recordFlushed = new Promise<void>((resolve) => (recordDone = resolve));
    try {
      // What the archive has is restored first (PostgreSQL's promotion does the same; it does
      // not wait for an archive that fails: that is logged).
      if (this.#options.restore !== undefined && this.#log !== null) {
        await this.#restoreStep(signal === undefined ? this.#abort.signal : AbortSignal.any([this.#abort.signal, signal]));
      }
      const log = this.#log;
      if (log === null || this.failure !== null) throw this.failure ?? new WalshipError('NOT_CONSISTENT', 'the standby is bootstrapping again: there is no state to promote');
      await this.#cutUnconfirmed(log);
      // Reads only, started now so that they overlap replay's last steps: the newest timeline
      // known here (the receiver, which could write another history file, has stopped) and in
      // the archives, and the current timeline's history file, which the new one extends.
      const archivedLookup = this.#options.restore === undefined && this.#options.archiver === undefined ? log.timeline : this.#newestArchivedTimeline(log.timeline);
      newestKnown = Promise.all([newestTimeline(this.#storage, log.timeline), archivedLookup, log.historyFileWritten()]);
      newestKnown.catch(() => undefined);
      const received = await log.endOfRecords(core.applier.position);
      // With a recovery target in the WAL received, the new timeline begins at the target, not
      // at the end of what was received: the same stop replay makes (or made: paused there).
      const check = this.#newTargetCheck();
      const found = check === null ? null : await findTargetStop(log, core.applier.position, check);
      const switchLsn = found?.stop.lsn ?? received.end;
      const lastBatchEnd = found?.lastBatchEnd ?? received.lastBatchEnd;
      if (found !== null && switchLsn > log.flushedLsn) {
        throw new WalshipError(
          'NOT_CONSISTENT',
          `the standby stopped at its recovery target at ${formatLsn(switchLsn)} (its application's state), but its WAL ends at ${formatLsn(log.flushedLsn)}: it must receive the WAL up to there before it can be promoted`,
        );
      }
      // A standby restored from a base backup holds the backup's state before it has the WAL up
      // to it (closed, say, before it received that WAL): the end of its records, looked for from
      // that state on, past the WAL's end, comes back as that state's position. The new timeline
      // would begin past the end of the WAL, which beginTimeline refuses, after the commit point:
      // the control file written and taken back, the log reopened (the directory's lock let go
      // meanwhile, which `walship promote` takes for a standby that stopped). Refused here.
      const walEnd = Math.min(switchLsn, log.flushedLsn);
      if (walEnd < core.applier.position) {
        throw new WalshipError(
          'NOT_CONSISTENT',
          `the standby's WAL ends at ${formatLsn(walEnd)}, before the state it restored from its base backup (${formatLsn(core.applier.position)}): it must receive the WAL up to there before it can be promoted`,
        );
      }
      // Everything received is applied before the node writes: the new timeline continues that state.
      await core.applier.wait(lastBatchEnd, signal === undefined ? {} : { signal });
      this.#checkConsistent();
      if (!this.#consistent) {
        throw new WalshipError(
          'NOT_CONSISTENT',
          `the standby has replayed up to ${formatLsn(core.applier.position)}, before its consistent point ${formatLsn((this.#control as ControlData).consistentLsn)} (the end of its base backup): promoting would expose a state no primary ever had`,
        );
      }
      if (signal?.aborted) throw abortError(signal);
      // Replay has applied every batch there is (up to the target, if any): it can apply
      // nothing more, so its reader's teardown overlaps the next steps.
      replayStopped = this.#stopReplay();
      if (found !== null && log.insertLsn > switchLsn) {
        await replayStopped;
        // WAL received past the target is never replayed on the new timeline: set aside as
        // `.diverged` (durably, before the commit point), as a rewind does, so that no record of
        // it can be read at its old position after a crash. Downstream standbys reading it go first.
        core.service?.terminateAll(new WalshipError('CONNECTION_FAILED', 'the upstream standby is promoting at its recovery target', { transient: true }));
        const aside = await log.discardFrom(switchLsn);
        this.#debug('promoting at the recovery target %s: the WAL received past it is set aside (%o)', formatLsn(switchLsn), aside);
      }
      const applied = lap();
      // Segments prepared past the switch point: a crash that brings them back leaves files past the WAL's end, which nothing reads.
      removed = log.removeSegmentsPast(switchLsn);
      // The new history extends this timeline's file, which must be on disk (it is, unless a switch just wrote it).
      const [[onDisk, archived]] = await Promise.all([newestKnown, removed, replayStopped]);
      const timeline = Math.max(onDisk, this.#upstreamTimeline, log.timeline, archived) + 1;
      const history = branchHistory(log.history, switchLsn, reason, timeline);
      // What the switch can do ahead without writing (close the switch segment's handle, read
      // its format version) overlaps the control-file write; a failure shows after that write,
      // where beginTimeline's would, and is undone the same way.
      switchReady = log.prepareTimelineSwitch(switchLsn);
      switchReady.catch(() => undefined);
      const prepared = lap();
      // The commit point: from this write on the directory opens as the new primary. The
      // control file records the new timeline's history entry, so the history file is written
      // after it, in the background (an open rebuilds it if a crash came first), and an open
      // moves the switch segment into place if the rename below did not survive a crash.
      const before = core.control;
      // The first copy's fdatasync is the commit point. The second copy waits for the
      // end-of-recovery record's flush (the first commit's), so as not to slow that one down.
      await this.#recordOrStop(() =>
        core.updateControl((current) => ({ ...current, state: 'in-production', timeline, ...switchedFromOf(history) }), { firstCopy: true, secondCopyAfter: recordFlushed }),
      );
      const controlWritten = lap();
      switched = true;
      this.#beginningTimeline = true;
      try {
        const end = await log.beginTimeline(history, await switchReady);
        void log.waitForFlush(end).then(recordDone, recordDone);
      } catch (err) {
        // The control file's second copy goes first (the update below waits for it).
        recordDone();
        // Not a primary after all: the directory says "standby" again, then reopens as one
        // (a failure to say so stops the standby: reopened, the directory is the new primary's).
        // The new timeline's history file goes first: the open that moves the switch segment
        // back under the old timeline's name reads the switch point from it.
        await log
          .historyFileWritten()
          .then(() => core.updateControl(() => before))
          .catch((revertError: unknown) => {
            this.#fail(isWalshipError(revertError) ? revertError : new WalshipError('WAL_IO', String(revertError), { cause: revertError }));
          });
        throw err;
      } finally {
        this.#beginningTimeline = false;
      }
      recorded = true;
      this.#debug('promoted: timeline %d from %s in %s ms (upstream stopped %s, applied %s, prepared %s, control file %s)', timeline, formatLsn(switchLsn), lap(), stopped, applied, prepared, controlWritten);
      this.#state = { kind: 'promoted', timeline, switchLsn };
      this.emitSafely('state:change', { state: 'promoted' });
      return { log, timeline, switchLsn };
    } catch (err) {
      const error = isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err });
      recordDone();
      await Promise.allSettled([newestKnown, removed, switchReady, replayStopped]);
      if (recorded || this.failure !== null) throw error;
      this.#debug.error('promotion failed, going on as a standby: %s', error.message);
      await this.#resumeAfterFailedPromotion(switched).catch((e: unknown) => {
        this.#fail(isWalshipError(e) ? e : new WalshipError('WAL_IO', String(e), { cause: e }));
      });
      throw error;
    }
  }

  /**
   * The newest timeline past `from` whose history file the standby's archives hold (`restore`,
   * and `archive.archiver`), found as PostgreSQL's `findNewestTimeLine` does: by asking for the
   * next one until it is absent. A promotion picks one past it, so that two promotions of one
   * cluster that share an archive never pick the same timeline. An archive that fails to answer
   * is passed over (logged): a promotion does not wait for it.
   */
  async #newestArchivedTimeline(from: number): Promise<number> {
    const archivers = new Set([this.#options.restore, this.#options.archiver].filter((a): a is Archiver => a !== undefined));
    let newest = from;
    for (const archiver of archivers) {
      try {
        for (let timeline = newest + 1; ; timeline++) {
          const name = historyFileName(timeline);
          const found = await archiverCall(this.#abort.signal, this.#options.archiveCallTimeoutMs, `getting ${name}`, (signal) => archiver.get(name, { signal }));
          if (found === null) break;
          newest = timeline;
        }
      } catch (err) {
        this.#debug.error('looking for newer timelines in the archive: %s', (err as Error).message);
      }
    }
    return newest;
  }

  /**
   * A promotion failed before the control file recorded it: the standby goes on. When the log
   * had begun switching, it is reopened from disk (on the timeline the control file names; the
   * new timeline's files are removed); replay and the upstream loop start again.
   */
  async #resumeAfterFailedPromotion(switched: boolean): Promise<void> {
    if (this.failure !== null || this.#lifecycle.closing) return;
    if (switched) {
      await this.#stopReplay();
      const control = this.#control as ControlData;
      this.#log = null;
      await this.#core.detach(new WalshipError('CONNECTION_FAILED', 'the upstream standby is reopening its WAL after a failed promotion', { transient: true }));
      await this.#openLocal(control);
    } else if (this.#replaying === null && this.#log !== null) {
      this.#startReplay(this.#log, this.#core.applier.position);
    }
    this.start();
  }

  /**
   * Streaming has started: the control file says "in recovery" from now on (written here, not
   * at open, so that a standby refused by its upstream changes nothing). A former primary's
   * directory becomes a standby's only when its upstream compared its last WAL bytes with its
   * own and they matched (its WAL is a prefix of the upstream's); with nothing left to compare
   * it stops with `WAL_DIVERGED`.
   */
  async #recordRecovery(historyChecked: boolean): Promise<void> {
    const formerPrimary = !isRecoveryState((this.#control as ControlData).state);
    if (formerPrimary && !historyChecked) {
      throw new WalshipError(
        'WAL_DIVERGED',
        `${this.#storage.description} belonged to a primary, and its upstream could not compare its WAL with its own (it no longer has the WAL before ${formatLsn((this.#log as WalLog).insertLsn)}): it may hold WAL its upstream never had. Bootstrap this standby in an empty directory`,
      );
    }
    await this.#setControlState('in-recovery');
    if (formerPrimary) this.#debug("this former primary's WAL is a prefix of its upstream's: it is a standby now");
  }

  /**
   * Runs `write`, a control-file update that moves the node onto a new timeline. When it fails
   * its outcome is unknown (the new control data may be on disk, or come back after a
   * restart): the standby neither goes on as it was nor acts as if it had moved, it stops, and
   * its next open finds what the directory is (PostgreSQL panics on a failed `pg_control` write).
   */
  async #recordOrStop(write: () => Promise<unknown>): Promise<void> {
    try {
      await write();
    } catch (err) {
      const error = isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err });
      this.#fail(error);
      throw error;
    }
  }

  /** Records the node's state in the control file (crash-safe: the old or the new state survives). */
  async #setControlState(state: NodeState): Promise<void> {
    await this.#core.updateControl((current) => ({ ...current, state }));
  }

  #fail(error: WalshipError): void {
    if (this.failure !== null || this.#lifecycle.closing) return;
    this.#debug.error('standby stopped: %s', error.message);
    this.#abort.abort();
    this.#conn?.destroy();
    this.#setState({ kind: 'failed', error });
    this.#core.applier.fail(error);
    this.#consistency.fail(error);
    this.emitSafely('failed', { error });
  }

  /**
   * Moves to `next` (failed and closed are final); `state:change` fires when the kind changes
   * (a new connection while still connecting is not a change).
   */
  #setState(next: RecoveryState): void {
    const current = this.#state;
    if (current.kind === 'failed' || current.kind === 'closed' || current.kind === 'promoted') return;
    this.#state = next;
    if (current.kind !== next.kind) this.emitSafely('state:change', { state: next.kind });
  }
}
