import { commitChannel } from '../diagnostics.js';
import { WalshipError } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { createLogger, type Logger } from '../logger.js';
import { formatLsn, type Lsn } from '../lsn.js';
import { ownedEntries } from '../node/applier.js';
import type { FailedEvent, NodeCore } from '../node/node-core.js';
import { SyncRep, type SyncStandbysEvent, type SyncWaitMode } from '../replication/sync-rep.js';
import type { SyncStandbyConfig } from '../replication/sync-standby-names.js';
import type { WalEntry } from '../wal/record.js';
import type { AppendResult, EntryInput, WalLog } from '../wal/wal-log.js';
import { CommitMetrics, type CommitLevelMetrics } from './commit-metrics.js';
import { currentScheduler } from '../scheduler.js';

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

/** Every commit level, weakest first. */
export const SYNCHRONOUS_COMMIT_LEVELS = ['off', 'local', 'remote_write', 'on', 'remote_apply'] as const satisfies readonly SynchronousCommit[];

/** What each level waits for the synchronous standbys to have done, if anything. */
const SYNC_WAIT_MODES: Readonly<Record<SynchronousCommit, SyncWaitMode | null>> = Object.freeze({
  off: null,
  local: null,
  remote_write: 'write',
  on: 'flush',
  remote_apply: 'apply',
});

/** Options of `Primary.commit`. */
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

/** What `Primary.commit` resolves with. */
export interface CommitResult {
  /** The position right after the batch: wait for it on a standby with `waitForReplay(lsn)`. */
  readonly lsn: Lsn;
  /** Where the batch's record starts. */
  readonly startLsn: Lsn;
  /**
   * Its commit time, as every node's application receives it (`CommittedBatch.commitTime`):
   * milliseconds since the epoch, from the primary's `clock`. Commits appended together (no
   * `await` between them, e.g. the committers one flush woke) share one. A standby's `recoveryTarget: { time: commitTime }` stops right after it (and
   * any other commit of the same time).
   */
  readonly commitTime: number;
}

/** What `Primary.createRestorePoint` resolves with. */
export interface RestorePointResult {
  /** The position right after the restore point's record (where `recoveryTarget: { name }` stops). */
  readonly lsn: Lsn;
  /** When it was made, by the primary's `clock`: milliseconds since the epoch. */
  readonly time: number;
}

/** The message on the `walship:commit` diagnostics channel: a commit resolved. */
export interface CommitDiagnostic {
  /** The primary's log (compare with `primary.wal` to tell primaries apart). */
  readonly wal: WalLog;
  /** The level it was committed at. */
  readonly level: SynchronousCommit;
  /** The position right after the batch (as `CommitResult.lsn`). */
  readonly lsn: Lsn;
  /** Where the batch's record starts. */
  readonly startLsn: Lsn;
  /** From the `commit()` call to its resolution, in milliseconds. */
  readonly durationMs: number;
}

/** Payload of `apply:error`. */
export interface ApplyErrorEvent {
  /** `APPLY_FAILED`, with the application's exception as `cause`. */
  readonly error: WalshipError;
}

/** Events of the {@link WriterRole}, passed on by `Primary`. */
export interface WriterEvents {
  /** The application's `apply` threw; the writer stops applying and committing. */
  'apply:error': (event: ApplyErrorEvent) => void;
  /** The writer stopped for good. */
  failed: (event: FailedEvent) => void;
  /** The set of synchronous (or quorum) standbys that commits wait for changed. */
  'sync:standbys': (event: SyncStandbysEvent) => void;
}

/** The events `Primary` passes on from its writer role. */
export const WRITER_EVENT_NAMES = ['apply:error', 'failed', 'sync:standbys'] as const satisfies readonly (keyof WriterEvents)[];

interface Pending {
  readonly result: AppendResult;
  readonly entries: readonly WalEntry[];
  /** The entries are walship's own copy (the applier need not copy them again). */
  readonly copied: boolean;
  flushed: boolean;
  dropped: unknown;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * The writer role over a {@link NodeCore} (PostgreSQL's backends committing, and the
 * synchronous-replication wait): commits append batches to the WAL (group-committed by the
 * WalLog), the core's applier applies them in LSN order once durable, and commits at the
 * remote levels wait for the synchronous standbys. It trusts its input: `Primary` validates.
 */
export class WriterRole extends SafeEmitter<WriterEvents> {
  readonly kind = 'writer';
  readonly syncRep: SyncRep;
  readonly #core: NodeCore;
  readonly #log: WalLog;
  readonly #debug: Logger;
  readonly #queue: Pending[] = [];
  /** The batch whose apply is running (taken off the queue). */
  #applyingHead: Pending | null = null;
  #draining = false;
  /** Settled by the drain once no commit is queued and no apply runs (see {@link whenIdle}). */
  #idle: { promise: Promise<void>; resolve: () => void } | null = null;
  #failure: WalshipError | null = null;
  /** The default commit level; {@link reload} changes it. */
  #synchronousCommit: SynchronousCommit;
  readonly #metrics = new CommitMetrics(SYNCHRONOUS_COMMIT_LEVELS);
  /** Per level, the rejection handler that counts the error and passes it on (made once, not per commit). */
  readonly #countRejected: Readonly<Record<SynchronousCommit, (err: unknown) => never>>;

  constructor(core: NodeCore, log: WalLog, settings: { synchronousCommit: SynchronousCommit; syncConfig: SyncStandbyConfig | null; logPrefix?: string }) {
    super();
    this.#core = core;
    this.#log = log;
    this.#synchronousCommit = settings.synchronousCommit;
    this.#debug = createLogger('writer', settings.logPrefix);
    this.emitterLog = this.#debug;
    this.syncRep = new SyncRep(settings.syncConfig);
    this.syncRep.on('sync:standbys', (event) => this.emitSafely('sync:standbys', event));
    const counter = (level: SynchronousCommit) => (err: unknown): never => {
      this.#metrics.rejected(level);
      throw err;
    };
    this.#countRejected = { off: counter('off'), local: counter('local'), remote_write: counter('remote_write'), on: counter('on'), remote_apply: counter('remote_apply') };
  }

  /** Commits, errors and latencies per level since the writer started. */
  commitMetrics(): Record<SynchronousCommit, CommitLevelMetrics> {
    return this.#metrics.snapshot();
  }

  /** Why the writer stopped, if it did. */
  get failure(): WalshipError | null {
    return this.#failure;
  }

  /** The default commit level. */
  get synchronousCommit(): SynchronousCommit {
    return this.#synchronousCommit;
  }

  /**
   * Commits one atomic batch at `level` (see `Primary.commit`). Rejects at once, without
   * appending, after a failure.
   */
  commit(entries: EntryInput | readonly EntryInput[], level: SynchronousCommit, options: CommitOptions): Promise<CommitResult> {
    const started = currentScheduler().monotonic();
    if (this.#failure !== null) {
      this.#metrics.rejected(level);
      return Promise.reject(this.#failure);
    }
    let result: AppendResult;
    try {
      result = this.#log.append(entries);
    } catch (err) {
      this.#metrics.rejected(level);
      return Promise.reject(err);
    }
    const committed = { lsn: result.endLsn, startLsn: result.lsn, commitTime: result.commitTime };
    let batch = (Array.isArray(entries) ? entries : [entries as EntryInput]).map(toEntry);
    // The caller may reuse its buffers once commit() settles; when that can happen before the
    // batch is applied, apply a copy (taken now), so the application sees what the WAL holds.
    const copied = level === 'off' || options.signal !== undefined;
    if (copied) batch = ownedEntries(batch);
    const mode = this.#standbyWait(level);
    const replicated = mode !== null;
    if (replicated) this.syncRep.want(result.endLsn, mode);
    const applied = new Promise<void>((resolve, reject) => {
      const pending: Pending = { result, entries: batch, copied, flushed: false, dropped: null, resolve, reject };
      this.#queue.push(pending);
      // At `off` nobody waits for this flush: it need not be an urgent sync.
      this.#log.waitForFlush(result, level === 'off' ? { background: true } : { replicated }).then(
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
      return Promise.resolve(this.#resolved(level, started, committed));
    }
    const { signal } = options;
    const rejected = this.#countRejected[level];
    if (replicated) {
      const local = signal === undefined ? applied : localWait(applied, signal, result.endLsn);
      // Registered once durable and applied here: standbys confirm only WAL this node said is
      // durable (early WAL included), so none can have confirmed it earlier, and a cancel from
      // then on means "committed locally".
      return local.then(() => this.syncRep.wait(result.endLsn, mode, options)).then(() => this.#resolved(level, started, committed), rejected);
    }
    if (signal === undefined) return applied.then(() => this.#resolved(level, started, committed), rejected);
    return localWait(applied, signal, result.endLsn).then(() => this.#resolved(level, started, committed), rejected);
  }

  /** What a commit at `level` waits for from the standbys once durable here; null when none (a local level, or synchronous replication off). */
  #standbyWait(level: SynchronousCommit): SyncWaitMode | null {
    return this.syncRep.config === null ? null : SYNC_WAIT_MODES[level];
  }

  /** Counts a commit that resolved (and publishes it on `walship:commit` when someone listens); returns its result. */
  #resolved(level: SynchronousCommit, started: number, committed: CommitResult): CommitResult {
    const ms = currentScheduler().monotonic() - started;
    this.#metrics.resolved(level, ms / 1000);
    if (commitChannel.hasSubscribers && !this.#debug.quiet) {
      const message: CommitDiagnostic = { wal: this.#log, level, lsn: committed.lsn, startLsn: committed.startLsn, durationMs: ms };
      commitChannel.publish(message);
    }
    return committed;
  }

  /**
   * Writes a named restore point (see `Primary.createRestorePoint`): resolves once it is
   * durable, and, when the default commit level waits for synchronous standbys, once they have
   * written (`remote_write`) or flushed it (`on`, and `remote_apply`: a restore point is not
   * applied, so its flush is what counts). Rejects at once after a failure; an invalid name is
   * `INVALID_ARGUMENT`, with nothing written.
   */
  async createRestorePoint(name: string): Promise<RestorePointResult> {
    if (this.#failure !== null) throw this.#failure;
    const result = this.#log.appendRestorePoint(name);
    // A restore point is not applied: at remote_apply its flush is what counts.
    const wait = this.#standbyWait(this.#synchronousCommit);
    const mode = wait === 'apply' ? 'flush' : wait;
    const replicated = mode !== null;
    if (replicated) this.syncRep.want(result.endLsn, mode);
    await this.#log.waitForFlush(result, { replicated });
    if (replicated) await this.syncRep.wait(result.endLsn, mode, {});
    this.#debug('restore point "%s" created at %s', name, formatLsn(result.lsn));
    return { lsn: result.endLsn, time: result.commitTime };
  }

  /**
   * PostgreSQL's reload of `synchronous_standby_names` and `synchronous_commit`: waiting
   * commits are re-evaluated at once (`config` null releases all of them).
   */
  reload(settings: { synchronousCommit?: SynchronousCommit; syncConfig?: SyncStandbyConfig | null }): void {
    if (settings.synchronousCommit !== undefined) this.#synchronousCommit = settings.synchronousCommit;
    if (settings.syncConfig !== undefined) {
      this.#debug('synchronousStandbyNames is now %s', settings.syncConfig === null ? "'' (off)" : settings.syncConfig.text);
      // A standby asked now may hold, or be held from, WAL a commit waits for: its sender asks at once.
      if (this.syncRep.reload(settings.syncConfig, this.#core.service?.syncInputs() ?? [])) this.#core.service?.askAgain();
    }
  }

  /** Commits waiting for standbys stop waiting (`SYNC_REP_CANCELED`): they are committed locally. */
  cancelSyncWaits(why: string): void {
    this.syncRep.cancelAll(why);
  }

  /** Resolves once no commit is queued and no apply runs (at once if so now). */
  whenIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    if (this.#idle === null) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.#idle = { promise, resolve };
    }
    return this.#idle.promise;
  }

  /**
   * An immediate shutdown: every commit still waiting to be applied, the one being applied
   * included, is rejected with `error` (what is durable stays in the WAL).
   */
  abandon(error: WalshipError): void {
    const waiting = [...(this.#applyingHead === null ? [] : [this.#applyingHead]), ...this.#queue.splice(0)];
    for (const pending of waiting) pending.reject(error);
    this.#checkIdle();
  }

  /** Stops the writer for good: every waiting and later commit gets `error`. */
  fail(error: WalshipError): void {
    if (this.#failure !== null) return;
    this.#failure = error;
    this.#debug.error('writer stopped: %s', error.message);
    for (const pending of this.#queue.splice(0)) pending.reject(error);
    this.#core.applier.fail(error);
    this.syncRep.cancelAll(`the primary stopped: ${error.message}`);
    this.#checkIdle();
    this.emitSafely('failed', { error });
  }

  #isIdle(): boolean {
    return this.#queue.length === 0 && !this.#draining;
  }

  /** Settles {@link whenIdle}'s promise when the writer has become idle. */
  #checkIdle(): void {
    if (this.#idle === null || !this.#isIdle()) return;
    const { resolve } = this.#idle;
    this.#idle = null;
    resolve();
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
    const applier = this.#core.applier;
    for (let head = this.#queue[0]; head !== undefined && (head.flushed || head.dropped !== null); head = this.#queue[0]) {
      if (this.#failure !== null) return;
      this.#queue.shift();
      if (head.dropped !== null) {
        head.reject(head.dropped);
        continue;
      }
      const { result } = head;
      this.#applyingHead = head;
      try {
        await applier.apply({ lsn: result.endLsn, startLsn: result.lsn, timeline: this.#log.timeline, entries: head.entries, commitTime: result.commitTime }, { private: head.copied });
      } catch (err) {
        const error = err as WalshipError;
        head.reject(error);
        this.emitSafely('apply:error', { error });
        this.fail(error);
        return;
      } finally {
        this.#applyingHead = null;
      }
      head.resolve();
    }
  }
}

/** `applied`, or `ABORTED` as soon as `signal` fires (the batch stays committed). */
function localWait(applied: Promise<void>, signal: AbortSignal, endLsn: Lsn): Promise<void> {
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

function abortedWait(signal: AbortSignal, lsn: Lsn): WalshipError {
  return new WalshipError('ABORTED', `stopped waiting for the commit at ${formatLsn(lsn)}; it is in the log and will be applied`, { cause: signal.reason });
}

function toEntry(entry: EntryInput): WalEntry {
  return entry instanceof Uint8Array ? { data: entry } : entry;
}
