import { EventEmitter } from 'eventemitter3';
import { WalshipError, isWalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import { LsnWaiters } from '../lsn-waiters.js';
import type { SyncStandbyConfig } from './sync-standby-names.js';
import { sameSyncSet, syncDecision, syncStates, type StandbySyncStatus, type SyncMember, type SyncStandbyInput } from './sync-standbys.js';

/** What a synchronous commit waits for its standbys to have done: written, flushed or applied. */
export type SyncWaitMode = 'write' | 'flush' | 'apply';

/** Payload of `sync:standbys`. */
export interface SyncStandbysEvent {
  /** The application names of the standbys commits now wait for (`sync` or `quorum`), in sender order. */
  readonly standbys: readonly string[];
}

/** Events of {@link SyncRep}. */
export interface SyncRepEvents {
  /** The set of synchronous (or quorum) standbys changed. */
  'sync:standbys': (event: SyncStandbysEvent) => void;
}

/** Options of a wait for synchronous standbys. */
export interface SyncWaitOptions {
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

/**
 * Synchronous replication's waiting commits (PostgreSQL's `syncrep.c`). Commits wait in one
 * min-heap per mode ({@link LsnWaiters}): a standby's status report recomputes the release
 * positions from the connected standbys (O(k log k) in their number) and releases, in LSN
 * order, exactly the commits those positions reach, at O(log n) each; no report ever scans
 * the waiting commits. Released positions only move forward, as PostgreSQL's do.
 */
export class SyncRep extends EventEmitter<SyncRepEvents> {
  #config: SyncStandbyConfig | null;
  readonly #waiters: Record<SyncWaitMode, LsnWaiters> = { write: new LsnWaiters(0), flush: new LsnWaiters(0), apply: new LsnWaiters(0) };
  /** The standbys commits wait for, as last announced with `sync:standbys`. */
  #members: readonly SyncMember[] = [];
  /** Those of them asked for what commits wait for (see {@link wantedBy}). */
  #asked: readonly SyncMember[] = [];
  #canceled: WalshipError | null = null;
  #writeWanted: Lsn = 0;
  #flushWanted: Lsn = 0;

  constructor(config: SyncStandbyConfig | null) {
    super();
    this.#config = config;
  }

  /** The configuration in force; `null` when synchronous replication is off. */
  get config(): SyncStandbyConfig | null {
    return this.#config;
  }

  /**
   * What the sender of the standby in sender slot `slot`, named `applicationName`, asks it to
   * write (`write`), or to flush (`flush`), at once (see `flush-requests.ts`): the highest
   * position a commit waits (or is about to wait) for the standbys to write, or to flush or
   * apply, when this standby's confirmations are needed for commits now: a `sync` member, or,
   * under `ANY n`, one of the `n` `quorum` members of the lowest sender slots (the others'
   * confirmations count as much, but a commit needs only `n`; asked, all of them would make
   * every commit's WAL durable on each of their disks at once). 0 for any other.
   */
  wantedBy(slot: number, applicationName: string, what: 'write' | 'flush'): Lsn {
    const wanted = what === 'write' ? this.#writeWanted : this.#flushWanted;
    return wanted !== 0 && this.asks(slot, applicationName) ? wanted : 0;
  }

  /** Whether commits need the confirmations of the standby in sender slot `slot`, named `applicationName`, now: it is asked (see {@link wantedBy}). */
  asks(slot: number, applicationName: string): boolean {
    for (const member of this.#asked) if (member.slot === slot && member.applicationName === applicationName) return true;
    return false;
  }

  /**
   * A commit appended up to `lsn` will wait for the standbys in `mode`. Said when it is
   * appended, before its WAL is sent, so that the request goes out with that WAL.
   */
  want(lsn: Lsn, mode: SyncWaitMode): void {
    if (mode === 'write') this.#writeWanted = Math.max(this.#writeWanted, lsn);
    else this.#flushWanted = Math.max(this.#flushWanted, lsn);
  }

  /**
   * Whether standby reports matter now: synchronous replication is on, or its being turned
   * off has yet to be announced (`sync:standbys` with no standbys).
   */
  get listening(): boolean {
    return this.#config !== null || this.#members.length > 0;
  }

  /** Commits waiting, per mode. */
  get waiting(): Record<SyncWaitMode, number> {
    return { write: this.#waiters.write.size, flush: this.#waiters.flush.size, apply: this.#waiters.apply.size };
  }

  /**
   * Resolves once the synchronous standbys have reached `lsn` in `mode`; at once when
   * synchronous replication is off. `signal`, `timeoutMs` and {@link cancelAll} end the wait
   * with `SYNC_REP_CANCELED`.
   */
  wait(lsn: Lsn, mode: SyncWaitMode, options: SyncWaitOptions = {}): Promise<void> {
    if (this.#canceled !== null) return Promise.reject(this.#canceled);
    if (this.#config === null) return Promise.resolve();
    return this.#waiters[mode].wait(lsn, options).catch((err: unknown) => {
      if (isWalshipError(err, 'SYNC_REP_CANCELED')) throw err;
      const why = isWalshipError(err, 'TIMEOUT') ? `after ${options.timeoutMs} ms` : 'by its signal';
      throw new WalshipError(
        'SYNC_REP_CANCELED',
        `canceled the wait for synchronous replication ${why}: the batch ending at ${formatLsn(lsn)} is committed locally but might not have been replicated to the standby`,
        { cause: err },
      );
    });
  }

  /**
   * Recomputes from the connected standbys' last reports (call it on each status report and
   * whenever a standby connects, changes state or leaves): releases the commits the positions
   * now reach, and emits `sync:standbys` when the set of synchronous standbys changed. Returns
   * whether the standbys asked for what commits wait for changed (see {@link wantedBy}): each
   * sender then asks its standby at once, not with its next message.
   */
  update(standbys: readonly SyncStandbyInput[]): boolean {
    if (!this.listening) return false;
    const { members, needed, release } = syncDecision(this.#config, standbys);
    if (release.write !== null) this.#waiters.write.advance(release.write);
    if (release.flush !== null) this.#waiters.flush.advance(release.flush);
    if (release.apply !== null) this.#waiters.apply.advance(release.apply);
    const askedChanged = !sameSyncSet(needed, this.#asked);
    // Kept as names and slots only: the caller's objects change with each report.
    if (askedChanged) this.#asked = needed.map(({ slot, applicationName }) => ({ slot, applicationName }));
    if (!sameSyncSet(members, this.#members)) {
      this.#members = members.map(({ slot, applicationName }) => ({ slot, applicationName }));
      this.emit('sync:standbys', { standbys: members.map((s) => s.applicationName) });
    }
    return askedChanged;
  }

  /** `sync_priority` and `sync_state` of each standby, as `pg_stat_replication` shows them. */
  states(standbys: readonly SyncStandbyInput[]): StandbySyncStatus[] {
    return syncStates(this.#config, standbys);
  }

  /**
   * A new configuration, in force at once: `null` (synchronous replication off) releases every
   * waiting commit; otherwise {@link update} with the standbys re-evaluates the waiters.
   * Returns {@link update}'s answer: whether the standbys asked changed.
   */
  reload(config: SyncStandbyConfig | null, standbys: readonly SyncStandbyInput[]): boolean {
    this.#config = config;
    if (config === null) for (const waiters of Object.values(this.#waiters)) waiters.releaseAll();
    return this.update(standbys);
  }

  /** Ends every wait, and every later one, with `SYNC_REP_CANCELED` (shutdown). */
  cancelAll(reason: string): void {
    this.#canceled = new WalshipError(
      'SYNC_REP_CANCELED',
      `canceled the wait for synchronous replication (${reason}): the commit is committed locally but might not have been replicated to the standby`,
    );
    for (const waiters of Object.values(this.#waiters)) waiters.fail(this.#canceled);
  }
}
