import { WalshipError } from '../errors.js';
import { isLsn, type Lsn } from '../lsn.js';
import { syncPriorityOf, type SyncStandbyConfig } from './sync-standby-names.js';
import type { WalSenderState } from './wal-sender.js';

/**
 * The choice of synchronous standbys, and how far waiting commits may be released, by the
 * rules of PostgreSQL 15's `syncrep.c` (`SyncRepGetCandidateStandbys`,
 * `SyncRepGetSyncRecPtr`, `SyncRepGetOldestSyncRecPtr`, `SyncRepGetNthLatestSyncRecPtr`) and
 * of `pg_stat_get_wal_senders` for the `sync_state` column.
 *
 * Pure functions of the configuration and of the connected standbys' last reports, in
 * O(k log k) for k connected standbys (at most `maxWalSenders`), whatever the number of waiting
 * commits. {@link syncDecision} is the one called on each status report.
 */

/** A WAL sender's state: {@link WalSenderState}, plus `backup` for a base backup connection. */
export type SyncSenderState = WalSenderState | 'backup';

/** One connected standby, as its WAL sender last saw it. */
export interface SyncStandbyInput {
  /**
   * The WAL sender's slot: a small non-negative integer, unique among connected standbys, that
   * stays the same for the whole connection (PostgreSQL's index in `WalSndCtl->walsnds`; a new
   * connection takes the lowest free slot). Between standbys of equal priority the lower slot
   * wins, as in PostgreSQL.
   */
  readonly slot: number;
  /** The name the standby connected with, matched against `synchronousStandbyNames`. */
  readonly applicationName: string;
  /** The sender's state: only a `streaming` (or `stopping`) standby can be synchronous, as in PostgreSQL. */
  readonly state: SyncSenderState;
  /** The last reported positions; `null` (or 0, PostgreSQL's invalid position) while unknown. */
  readonly writeLsn: Lsn | null;
  /** The position the standby last reported flushed; `null` or 0 while unknown. */
  readonly flushLsn: Lsn | null;
  /** The position the standby last reported applied; `null` or 0 while unknown. */
  readonly applyLsn: Lsn | null;
  /**
   * True for a WAL sender of a standby that is itself streaming from a standby. Such senders
   * are never synchronous (priority 0), as in PostgreSQL, where synchronous replication is
   * not cascaded; a primary has none.
   */
  readonly cascaded?: boolean;
}

/** `pg_stat_replication.sync_state`. */
export type SyncState = 'async' | 'potential' | 'sync' | 'quorum';

/** One standby's row of {@link syncStates}. */
export interface StandbySyncStatus {
  /** The standby's WAL sender slot, as in {@link SyncStandbyInput.slot}. */
  readonly slot: number;
  /** The name the standby connected with. */
  readonly applicationName: string;
  /** `pg_stat_replication.sync_priority`: 0 for an asynchronous standby. */
  readonly syncPriority: number;
  /** `sync` or `quorum` when its confirmations release commits now, `potential` when it would take over from one, `async` otherwise. */
  readonly syncState: SyncState;
}

/** How far waiting commits may be released, per wait mode; `null` when none may be. */
export interface SyncReleasePositions {
  /** For commits waiting for the standbys to write (`remote_write`). */
  readonly write: Lsn | null;
  /** For commits waiting for the standbys to flush (`on`). */
  readonly flush: Lsn | null;
  /** For commits waiting for the standbys to apply (`remote_apply`). */
  readonly apply: Lsn | null;
}

const NO_RELEASE: SyncReleasePositions = Object.freeze({ write: null, flush: null, apply: null });
const SENDER_STATES: ReadonlySet<string> = new Set(['startup', 'catchup', 'streaming', 'stopping', 'backup']);

/**
 * The standbys that count as synchronous now (PostgreSQL's `SyncRepGetCandidateStandbys`).
 *
 * A standby is a candidate when its sender is `streaming` or `stopping`, it is listed
 * (priority above 0, never when cascaded) and it has reported a valid flush position. Under
 * `ANY` every candidate is returned. Under `FIRST`, when there are more than `num` candidates,
 * the `num` of best priority are returned, ties going to the lower slot; otherwise all of them
 * (fewer than `num` means commits cannot be released). The result is in priority order, then
 * slot order, and holds the caller's own objects.
 */
export function syncStandbys<T extends SyncStandbyInput>(config: SyncStandbyConfig | null, standbys: readonly T[]): T[] {
  checkStandbys(standbys);
  return chooseSync(config, standbys).map((c) => c.standby);
}

/**
 * Each standby's `sync_priority` and `sync_state` as `pg_stat_replication` would show them,
 * in the order given: `async` for priority 0 (not listed, cascaded, or no valid flush position
 * reported yet, which PostgreSQL shows as priority 0 too); `sync` (under `FIRST`) or `quorum`
 * (under `ANY`) for the standbys {@link syncStandbys} returns; `potential` for the other
 * listed ones, e.g. one still in `catchup`, or under `FIRST` one of lower priority than the
 * `num` chosen.
 */
export function syncStates(config: SyncStandbyConfig | null, standbys: readonly SyncStandbyInput[]): StandbySyncStatus[] {
  checkStandbys(standbys);
  return statesOf(config, standbys, chooseSync(config, standbys));
}

/**
 * What one status report decides (for {@link SyncRep}), from one choice: the standbys commits
 * wait for, in slot order (the `sync` or `quorum` rows of {@link syncStates}); `needed`, those
 * whose confirmations a commit needs at the least, also in slot order (every member under
 * `FIRST`; under `ANY n` the `n` of the lowest slots, since every quorum member has priority 1:
 * see `flush-requests.ts`); and {@link releasePositions}. It runs on every report, so it trusts
 * its caller's input (no checks) and builds no rows.
 */
export function syncDecision<T extends SyncStandbyInput>(config: SyncStandbyConfig | null, standbys: readonly T[]): { members: T[]; needed: T[]; release: SyncReleasePositions } {
  const chosen = chooseSync(config, standbys);
  const release = releaseOf(config, chosen);
  const members = chosen.map((c) => c.standby);
  // Under FIRST (or ANY with no more members than it needs) every member is needed: the same array.
  const needed = config?.method === 'any' && members.length > config.num ? members.slice(0, config.num) : members;
  if (members.length > 1) members.sort((a, b) => a.slot - b.slot);
  if (needed !== members && needed.length > 1) needed.sort((a, b) => a.slot - b.slot);
  return { members, needed, release };
}

/** A standby as a member of the synchronous set: its slot and name, nothing that changes with its reports. */
export type SyncMember = Pick<SyncStandbyInput, 'slot' | 'applicationName'>;

/** Whether two member lists of {@link syncDecision} name the same standbys: the same slots and application names, in order. */
export function sameSyncSet(a: readonly SyncMember[], b: readonly SyncMember[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as SyncMember;
    const y = b[i] as SyncMember;
    if (x.slot !== y.slot || x.applicationName !== y.applicationName) return false;
  }
  return true;
}

function statesOf(config: SyncStandbyConfig | null, standbys: readonly SyncStandbyInput[], candidates: readonly Candidate<SyncStandbyInput>[]): StandbySyncStatus[] {
  const chosen = new Set(candidates.map((c) => c.standby.slot));
  const label: SyncState = config?.method === 'any' ? 'quorum' : 'sync';
  return standbys.map((s) => {
    const syncPriority = valid(s.flushLsn) ? priorityOf(config, s) : 0;
    const syncState: SyncState = syncPriority === 0 ? 'async' : chosen.has(s.slot) ? label : 'potential';
    return { slot: s.slot, applicationName: s.applicationName, syncPriority, syncState };
  });
}

/**
 * How far waiting commits may be released (PostgreSQL's `SyncRepGetSyncRecPtr`): all `null`
 * while synchronous replication is off or fewer than `num` standbys are candidates (waiting
 * commits keep waiting). Under `FIRST` each position is the lowest among the chosen
 * synchronous standbys; under `ANY` it is the `num`-th highest among all candidates, each
 * of write, flush and apply taken separately (so the three may come from different standbys).
 * An unknown write or apply position counts as 0 and so releases nothing in its mode.
 *
 * PostgreSQL only ever moves the released positions forward (`walsndctl->lsn[mode]`); so must
 * the caller, since a standby may be replaced by one that is further behind.
 */
export function releasePositions(config: SyncStandbyConfig | null, standbys: readonly SyncStandbyInput[]): SyncReleasePositions {
  checkStandbys(standbys);
  return releaseOf(config, chooseSync(config, standbys));
}

function releaseOf(config: SyncStandbyConfig | null, chosen: readonly Candidate<SyncStandbyInput>[]): SyncReleasePositions {
  if (config === null || chosen.length < config.num) return NO_RELEASE;
  if (config.method === 'first') {
    let write = Number.MAX_SAFE_INTEGER;
    let flush = Number.MAX_SAFE_INTEGER;
    let apply = Number.MAX_SAFE_INTEGER;
    for (const { standby } of chosen) {
      write = Math.min(write, standby.writeLsn ?? 0);
      flush = Math.min(flush, standby.flushLsn ?? 0);
      apply = Math.min(apply, standby.applyLsn ?? 0);
    }
    return { write, flush, apply };
  }
  const writes = chosen.map((c) => c.standby.writeLsn ?? 0);
  const flushes = chosen.map((c) => c.standby.flushLsn ?? 0);
  const applies = chosen.map((c) => c.standby.applyLsn ?? 0);
  return { write: nthHighest(writes, config.num), flush: nthHighest(flushes, config.num), apply: nthHighest(applies, config.num) };
}

interface Candidate<T> {
  readonly standby: T;
  readonly priority: number;
}

function chooseSync<T extends SyncStandbyInput>(config: SyncStandbyConfig | null, standbys: readonly T[]): Candidate<T>[] {
  if (config === null) return [];
  const candidates: Candidate<T>[] = [];
  for (const standby of standbys) {
    if (standby.state !== 'streaming' && standby.state !== 'stopping') continue;
    if (!valid(standby.flushLsn)) continue;
    const priority = priorityOf(config, standby);
    if (priority === 0) continue;
    candidates.push({ standby, priority });
  }
  candidates.sort((a, b) => a.priority - b.priority || a.standby.slot - b.standby.slot);
  if (config.method === 'first' && candidates.length > config.num) candidates.length = config.num;
  return candidates;
}

function priorityOf(config: SyncStandbyConfig | null, standby: SyncStandbyInput): number {
  return standby.cascaded === true ? 0 : syncPriorityOf(config, standby.applicationName);
}

/** A known position: PostgreSQL's `InvalidXLogRecPtr` is 0. */
function valid(lsn: Lsn | null): boolean {
  return lsn !== null && lsn !== 0;
}

function nthHighest(values: number[], n: number): Lsn {
  values.sort((a, b) => b - a);
  return values[n - 1] as Lsn;
}

function checkStandbys(standbys: readonly SyncStandbyInput[]): void {
  if (!Array.isArray(standbys)) throw new WalshipError('INVALID_ARGUMENT', 'standbys must be an array');
  const slots = new Set<number>();
  for (const s of standbys) {
    if (typeof s !== 'object' || s === null) throw new WalshipError('INVALID_ARGUMENT', 'each standby must be an object');
    if (!Number.isSafeInteger(s.slot) || s.slot < 0) throw new WalshipError('INVALID_ARGUMENT', `a standby's slot must be a non-negative integer, got ${String(s.slot)}`);
    if (slots.has(s.slot)) throw new WalshipError('INVALID_ARGUMENT', `two standbys have slot ${s.slot}; slots must be unique`);
    slots.add(s.slot);
    if (typeof s.applicationName !== 'string') throw new WalshipError('INVALID_ARGUMENT', `standby in slot ${s.slot}: applicationName must be a string`);
    if (!SENDER_STATES.has(s.state)) throw new WalshipError('INVALID_ARGUMENT', `standby in slot ${s.slot}: unknown state ${JSON.stringify(s.state)}`);
    for (const field of ['writeLsn', 'flushLsn', 'applyLsn'] as const) {
      const lsn = s[field];
      if (lsn !== null && !isLsn(lsn)) throw new WalshipError('INVALID_LSN', `standby in slot ${s.slot}: ${field} must be an LSN or null, got ${String(lsn)}`);
    }
  }
}
