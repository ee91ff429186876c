import { WalshipError, isWalshipError } from '../errors.js';
import { createLogger } from '../logger.js';
import { assertLsn, formatLsn, type Lsn } from '../lsn.js';
import { currentScheduler, schedulerClock } from '../scheduler.js';
import type { Storage } from '../storage/storage.js';
import { decideRetention, slotAvailability, type RetentionDecision, type RetentionState, type SlotAvailability, type SlotHold } from './retention.js';
import { INVALIDATION_REASON, SLOT_NAME, readSlotsFile, writeSlotsFile, type PersistedSlot } from './slot-file.js';

/**
 * The most replication slots a node may be configured for (the greatest `maxReplicationSlots`):
 * that many slots with the longest names and reasons take under a fifth of what the slots
 * file's reader accepts (`MAX_PERSISTED_SLOT_BYTES` × 1024 = 180 KiB of 1 MiB).
 */
export const MAX_REPLICATION_SLOTS_CAP = 1024;

/** Defaults of {@link SlotManagerOptions}. */
export const SLOT_DEFAULTS = Object.freeze({
  /** PostgreSQL's `max_replication_slots` default. */
  maxReplicationSlots: 10,
});

/** Options of {@link SlotManager.open}. */
export interface SlotManagerOptions {
  /** The clock for `inactiveSince`. @defaultValue the wall clock of the scheduler it was opened on (`new Date()` outside a simulation) */
  readonly now?: () => Date;
  /**
   * The most slots the node keeps (PostgreSQL's `max_replication_slots`): creating one more is
   * `SLOT_LIMIT_REACHED`. An integer from 0 to {@link MAX_REPLICATION_SLOTS_CAP}. A file holding
   * more slots (the limit was lowered) still opens with every slot; none can be created until
   * enough are dropped. @defaultValue 10
   */
  readonly maxReplicationSlots?: number;
  /** A prefix for the `walship:slots` log lines (the node's `logPrefix`). */
  readonly logPrefix?: string;
}

const OPTION_NAMES: readonly string[] = ['now', 'maxReplicationSlots', 'logPrefix'];

/** Options of {@link SlotManager.create}. */
export interface NewSlotOptions {
  /**
   * Reserve WAL from this position at once (PostgreSQL's `immediately_reserve`; pass the
   * current position). Without it the slot holds nothing until its first advance.
   */
  readonly reserveAt?: Lsn;
}

/** Where {@link SlotManager.advance} may move a slot. */
export interface AdvanceTarget {
  /**
   * The bound the slot never passes: for a standby's slot the flush position the standby
   * reported, for an administrative advance the node's own flushed position.
   */
  readonly flushLsn: Lsn;
  /** Where to move to, if short of `flushLsn`. @defaultValue `flushLsn` */
  readonly lsn?: Lsn;
}

/** A slot as stored (the columns of `pg_replication_slots` that need no WAL positions). */
export interface SlotInfo {
  /** The slot's name: 1–63 lower-case letters, digits and underscores. */
  readonly slotName: string;
  /** Always `'physical'`: a slot holds WAL bytes, not decoded changes. */
  readonly slotType: 'physical';
  /** True while a connection (a streaming standby) holds the slot. */
  readonly active: boolean;
  /** The application name of the connection holding the slot; null when inactive. */
  readonly activeApplicationName: string | null;
  /** The oldest WAL the slot's consumer still needs; null until reserved and once lost. */
  readonly restartLsn: Lsn | null;
  /** Since when no connection has held the slot (since the open for slots found on disk); null while active. */
  readonly inactiveSince: Date | null;
  /** Why the slot was invalidated (`wal_removed`, …); null while usable. */
  readonly invalidationReason: string | null;
}

/** A row of `primary.slots()`, shaped like PostgreSQL's `pg_replication_slots`. */
export interface ReplicationSlotRow extends SlotInfo, SlotAvailability {}

/** A slot that {@link SlotManager.planWalRemoval} invalidated. */
export interface InvalidatedSlot {
  /** The slot's name. */
  readonly slotName: string;
  /** The restart position it held, now given up. */
  readonly restartLsn: Lsn;
  /** Who held it when it was invalidated: that connection must be ended. */
  readonly activeApplicationName: string | null;
}

/** The outcome of {@link SlotManager.planWalRemoval}. */
export interface WalRemovalPlan extends RetentionDecision {
  /** The slots invalidated, durably, so that `keepFromLsn` could move past them. */
  readonly invalidated: readonly InvalidatedSlot[];
}

/** The reason recorded for slots that {@link SlotManager.planWalRemoval} invalidates (PostgreSQL's). */
export const WAL_REMOVED_REASON = 'wal_removed';

interface Holder {
  readonly applicationName: string | null;
}

interface Slot {
  readonly name: string;
  restartLsn: Lsn | null;
  invalidationReason: string | null;
  holder: Holder | null;
  inactiveSince: Date | null;
}

/** The holder a drop puts on its slot while the drop is written, so nobody acquires it meanwhile. */
const DROPPING: Holder = Object.freeze({ applicationName: null });

/**
 * A node's physical replication slots, persisted crash-safely in one file of its storage.
 *
 * Getters are synchronous. `create`, `drop`, `invalidate`, `flush` and `planWalRemoval` queue
 * one after the other and resolve once their result is durable; a slot exists once its
 * creation resolved. `acquire`, `release` and `advance` change memory only: like PostgreSQL,
 * which saves advanced slots at checkpoints, a moved `restartLsn` is persisted by the next
 * `flush()` or `planWalRemoval()` ({@link SlotManager.dirty} tells whether one is due).
 *
 * The ordering that keeps a crash safe: WAL may be removed only below what every slot holds
 * on disk, not just in memory (after a crash the disk's `restartLsn` is the one that counts).
 * {@link SlotManager.planWalRemoval} does it all in order: persist the advanced positions,
 * decide from what is durable, invalidate durably the slots that must go, and only then hand
 * out the position below which segments may be removed.
 */
export class SlotManager {
  readonly #storage: Storage;
  readonly #now: () => Date;
  /** `maxReplicationSlots`. */
  readonly #limit: number;
  readonly #slots = new Map<string, Slot>();
  /** The file's content as last written successfully (or read). */
  #durable: readonly PersistedSlot[];
  /** Contents being written, or whose write failed: any of them may be what a crash leaves. */
  #uncertain: (readonly PersistedSlot[])[] = [];
  /** Every segment below this may be being removed: no slot may reserve WAL there any more. */
  #horizon: Lsn = 0;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(storage: Storage, durable: readonly PersistedSlot[], now: () => Date, limit: number) {
    this.#storage = storage;
    this.#now = now;
    this.#limit = limit;
    this.#durable = durable;
    const openedAt = now();
    for (const s of durable) {
      this.#slots.set(s.name, { ...s, holder: null, inactiveSince: openedAt });
    }
  }

  /**
   * Loads the slots of `storage` (none when it has no slots file). A damaged file is
   * `WAL_CORRUPT`. Every slot in the file is kept, even beyond `maxReplicationSlots`.
   */
  static async open(storage: Storage, options: SlotManagerOptions = {}): Promise<SlotManager> {
    const unknown = Object.keys(options).filter((k) => !OPTION_NAMES.includes(k));
    if (unknown.length > 0) throw new WalshipError('INVALID_OPTIONS', `SlotManager options has unknown option "${unknown[0]}"`);
    if (options.now !== undefined && typeof options.now !== 'function') {
      throw new WalshipError('INVALID_OPTIONS', 'SlotManager options.now must be a function returning a Date');
    }
    const limit: unknown = options.maxReplicationSlots === undefined ? SLOT_DEFAULTS.maxReplicationSlots : options.maxReplicationSlots;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0 || limit > MAX_REPLICATION_SLOTS_CAP) {
      throw new WalshipError('INVALID_OPTIONS', `SlotManager options.maxReplicationSlots must be an integer from 0 to ${MAX_REPLICATION_SLOTS_CAP}, got ${String(limit)}`);
    }
    if (options.logPrefix !== undefined && typeof options.logPrefix !== 'string') {
      throw new WalshipError('INVALID_OPTIONS', 'SlotManager options.logPrefix must be a string');
    }
    const durable = await readSlotsFile(storage);
    if (durable.length > limit) {
      // Never dropped: each may be all that keeps a standby's WAL. New ones wait until enough go.
      createLogger('slots', options.logPrefix).error(
        '%s holds %d replication slots, more than maxReplicationSlots (%d): all are kept, and no slot can be created until fewer than %d remain (drop some, or raise maxReplicationSlots)',
        storage.description,
        durable.length,
        limit,
        limit,
      );
    }
    // The clock of the node that opens it: a simulated node's slots record virtual times.
    const clock = schedulerClock(currentScheduler());
    return new SlotManager(storage, durable, options.now ?? (() => new Date(clock())), limit);
  }

  /** How many slots this node may have (`maxReplicationSlots`); {@link SlotManager.size} may exceed it after the limit was lowered. */
  get maxReplicationSlots(): number {
    return this.#limit;
  }

  /** How many slots exist (slots being dropped included, until the drop is durable). */
  get size(): number {
    return this.#slots.size;
  }

  /**
   * True when the file lags memory: a slot's `restartLsn` moved since it was last persisted,
   * or a write failed and left the file's content in doubt. {@link SlotManager.flush} settles it.
   */
  get dirty(): boolean {
    return this.#uncertain.length > 0 || !sameSlots(this.#snapshot(), this.#durable);
  }

  /** True when a slot of that name exists. */
  has(name: string): boolean {
    return this.#slots.has(name);
  }

  /** The slot named `name`; `SLOT_NOT_FOUND` when there is none. */
  get(name: string): SlotInfo {
    return info(this.#find(name));
  }

  /** Every slot, by name, with its `walStatus` and `safeWalSize` computed from `state`. */
  list(state: RetentionState): ReplicationSlotRow[] {
    return [...this.#slots.values()]
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .map((slot) => ({ ...info(slot), ...slotAvailability(state, slot.restartLsn, slot.invalidationReason !== null) }));
  }

  /**
   * What each slot holds for WAL retention: the oldest `restartLsn` it has in memory, in the
   * file on disk, or in a file being written (or whose write failed): after a crash, any of
   * those may be the one found. Slots being dropped keep holding until the drop is durable.
   */
  retentionHolds(): SlotHold[] {
    const oldest = new Map<string, Lsn | null>();
    const note = (name: string, lsn: Lsn | null): void => {
      const seen = oldest.get(name) ?? null;
      oldest.set(name, seen === null ? lsn : lsn === null ? seen : Math.min(seen, lsn));
    };
    for (const version of [this.#durable, ...this.#uncertain]) for (const s of version) note(s.name, s.restartLsn);
    for (const s of this.#slots.values()) note(s.name, s.restartLsn);
    return [...oldest].map(([name, restartLsn]) => ({ name, restartLsn }));
  }

  /**
   * Creates a slot, durably. `INVALID_SLOT_NAME`, `SLOT_EXISTS`; `SLOT_LIMIT_REACHED` when
   * `maxReplicationSlots` slots exist (nothing is written); `WAL_REMOVED` when `reserveAt` is
   * WAL being removed.
   */
  async create(name: string, options: NewSlotOptions = {}): Promise<SlotInfo> {
    assertSlotName(name);
    const unknown = Object.keys(options).filter((k) => k !== 'reserveAt');
    if (unknown.length > 0) throw new WalshipError('INVALID_ARGUMENT', `create() options has unknown option "${unknown[0]}"`);
    const reserveAt = options.reserveAt ?? null;
    if (reserveAt !== null) assertLsn(reserveAt, 'reserveAt');
    return this.#serially(async () => {
      if (this.#slots.has(name)) throw new WalshipError('SLOT_EXISTS', `replication slot "${name}" already exists`);
      // Counted here, in the queue: creates and drops before this one have settled.
      if (this.#slots.size >= this.#limit) {
        throw new WalshipError(
          'SLOT_LIMIT_REACHED',
          `cannot create replication slot "${name}": all replication slots are in use (${this.#slots.size} of maxReplicationSlots ${this.#limit}); drop one, or raise maxReplicationSlots`,
        );
      }
      if (reserveAt !== null) this.#assertReservable(name, reserveAt);
      await this.#persist([...this.#snapshot(), { name, restartLsn: reserveAt, invalidationReason: null }]);
      const slot: Slot = { name, restartLsn: reserveAt, invalidationReason: null, holder: null, inactiveSince: this.#now() };
      this.#slots.set(name, slot);
      return info(slot);
    });
  }

  /** Drops a slot, durably. `SLOT_NOT_FOUND`; `SLOT_ACTIVE` while a connection holds it. */
  async drop(name: string): Promise<void> {
    assertSlotName(name);
    return this.#serially(async () => {
      const slot = this.#find(name);
      this.#assertInactive(slot, 'dropped');
      slot.holder = DROPPING;
      try {
        await this.#persist(this.#snapshot().filter((s) => s.name !== name));
      } catch (err) {
        slot.holder = null;
        throw err;
      }
      this.#slots.delete(name);
    });
  }

  /**
   * Takes the slot for one streaming connection (one at a time: else `SLOT_ACTIVE`). A lost
   * slot is `WAL_REMOVED` with its reason. The handle advances and releases the slot.
   */
  acquire(name: string, applicationName: string): SlotHandle {
    assertSlotName(name);
    if (typeof applicationName !== 'string') {
      throw new WalshipError('INVALID_ARGUMENT', `acquire() needs the application name of the connection, got ${typeof applicationName}`);
    }
    const slot = this.#find(name);
    this.#assertInactive(slot, 'used');
    if (slot.invalidationReason !== null) throw lostError(slot);
    const holder: Holder = { applicationName };
    slot.holder = holder;
    slot.inactiveSince = null;
    // The handle works only while it holds this very slot (not a later one of the same name).
    const holds = (): boolean => slot.holder === holder && this.#slots.get(name) === slot;
    return {
      slotName: name,
      applicationName,
      get released() {
        return !holds();
      },
      get restartLsn() {
        return slot.restartLsn;
      },
      get invalidationReason() {
        return slot.invalidationReason;
      },
      advance: (flushLsn: Lsn): Lsn => {
        if (!holds()) throw new WalshipError('INVALID_ARGUMENT', `this handle of replication slot "${name}" was released`);
        return this.#advance(slot, { flushLsn });
      },
      release: (): void => {
        if (holds()) this.#release(slot);
      },
    };
  }

  /** Releases the slot from whichever connection holds it (records `inactiveSince`); harmless when inactive. */
  release(name: string): void {
    assertSlotName(name);
    const slot = this.#find(name);
    if (slot.holder === null || slot.holder === DROPPING) return;
    this.#release(slot);
  }

  /**
   * Moves an inactive slot's `restartLsn` forward to `target.lsn`, never past `target.flushLsn`
   * and never back; a slot that has not reserved WAL reserves there. Returns the new
   * `restartLsn`. In memory only: see {@link SlotManager.dirty}. `SLOT_ACTIVE` while a
   * connection holds it (the connection advances through its {@link SlotHandle}).
   */
  advance(name: string, target: AdvanceTarget): Lsn {
    assertSlotName(name);
    const slot = this.#find(name);
    this.#assertInactive(slot, 'advanced');
    return this.#advance(slot, target);
  }

  /**
   * Invalidates a slot, durably: it stops holding WAL, its `restartLsn` becomes null and
   * `invalidationReason` records why: 1 to 63 lower-case letters, digits and underscores, as
   * PostgreSQL's reasons (`wal_removed`, `idle_timeout`, …). Invalidating a lost slot again
   * changes nothing.
   */
  async invalidate(name: string, reason: string): Promise<void> {
    assertSlotName(name);
    if (typeof reason !== 'string' || !INVALIDATION_REASON.test(reason)) {
      throw new WalshipError('INVALID_ARGUMENT', 'invalidate() needs a reason of 1 to 63 lower-case letters, digits and underscores (such as wal_removed)');
    }
    return this.#serially(async () => {
      const slot = this.#find(name);
      if (slot.invalidationReason !== null) return;
      await this.#invalidate([slot], reason);
    });
  }

  /** Persists every slot's current `restartLsn` (call it at checkpoints); a no-op when nothing moved. */
  async flush(): Promise<void> {
    return this.#serially(async () => {
      if (this.dirty) await this.#persist(this.#snapshot());
    });
  }

  /**
   * The safe order for removing WAL: persists the slots' advanced positions, decides from
   * what is durable ({@link decideRetention}), durably invalidates the slots beyond
   * `maxSlotWalKeepSize` whose WAL would go, and only then resolves. The caller may then remove
   * every segment before `keepFromLsn`; from now on no slot may reserve WAL below it.
   * When this rejects, remove nothing.
   */
  async planWalRemoval(state: RetentionState): Promise<WalRemovalPlan> {
    return this.#serially(async () => {
      let decision: RetentionDecision;
      for (let round = 1; ; round++) {
        if (this.dirty) await this.#persist(this.#snapshot());
        decision = decideRetention(state, this.retentionHolds());
        // A slot that caught up while the flush was being written is not invalidated for the
        // older position it had on disk: persist again and decide again (a bounded number of times).
        const caughtUp = decision.invalidate.some((h) => {
          const now = this.#slots.get(h.name)?.restartLsn ?? null;
          return now !== null && h.restartLsn !== null && now > h.restartLsn;
        });
        if (!caughtUp || round === 3) break;
      }
      this.#horizon = Math.max(this.#horizon, decision.keepFromLsn);
      const doomed: Slot[] = [];
      const invalidated: InvalidatedSlot[] = [];
      for (const hold of decision.invalidate) {
        const slot = this.#slots.get(hold.name);
        if (slot === undefined || hold.restartLsn === null) continue;
        doomed.push(slot);
        invalidated.push({ slotName: slot.name, restartLsn: hold.restartLsn, activeApplicationName: slot.holder?.applicationName ?? null });
      }
      // Written even when only a failed create's slot was doomed: the write settles what is on disk.
      if (decision.invalidate.length > 0) await this.#invalidate(doomed, WAL_REMOVED_REASON);
      return { ...decision, invalidated };
    });
  }

  // Internals: their callers have validated the arguments.

  #advance(slot: Slot, target: AdvanceTarget): Lsn {
    assertLsn(target.flushLsn, 'flushLsn');
    if (target.lsn !== undefined) assertLsn(target.lsn, 'lsn');
    if (slot.invalidationReason !== null) throw lostError(slot);
    const to = Math.min(target.lsn ?? target.flushLsn, target.flushLsn);
    if (slot.restartLsn === null) {
      this.#assertReservable(slot.name, to);
      slot.restartLsn = to;
    } else if (to > slot.restartLsn) {
      slot.restartLsn = to;
    }
    return slot.restartLsn;
  }

  async #invalidate(slots: readonly Slot[], reason: string): Promise<void> {
    const names = new Set(slots.map((s) => s.name));
    await this.#persist(this.#snapshot().map((s) => (names.has(s.name) ? { name: s.name, restartLsn: null, invalidationReason: reason } : s)));
    for (const slot of slots) {
      slot.restartLsn = null;
      slot.invalidationReason = reason;
    }
  }

  #release(slot: Slot): void {
    slot.holder = null;
    slot.inactiveSince = this.#now();
  }

  /** Writes `content` as the slots file; until that succeeds, it and the old file may each be what a crash leaves. */
  async #persist(content: readonly PersistedSlot[]): Promise<void> {
    this.#uncertain.push(content);
    try {
      await writeSlotsFile(this.#storage, content);
    } catch (err) {
      // Refused before anything was written: that content cannot be what a crash leaves.
      if (isWalshipError(err, 'FILE_TOO_LARGE')) this.#uncertain.pop();
      throw err;
    }
    this.#durable = content;
    this.#uncertain = [];
  }

  /** Runs `task` after every earlier queued one, so file writes never overlap. */
  #serially<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #snapshot(): PersistedSlot[] {
    return [...this.#slots.values()].map((s) => ({ name: s.name, restartLsn: s.restartLsn, invalidationReason: s.invalidationReason }));
  }

  #find(name: string): Slot {
    const slot = this.#slots.get(name);
    if (slot === undefined) throw new WalshipError('SLOT_NOT_FOUND', `replication slot "${name}" does not exist`);
    return slot;
  }

  #assertInactive(slot: Slot, what: string): void {
    if (slot.holder === null) return;
    const by = slot.holder === DROPPING ? 'being dropped' : `active for "${slot.holder.applicationName ?? ''}"`;
    throw new WalshipError('SLOT_ACTIVE', `replication slot "${slot.name}" is ${by} and cannot be ${what}`);
  }

  #assertReservable(name: string, lsn: Lsn): void {
    if (lsn < this.#horizon) {
      throw new WalshipError(
        'WAL_REMOVED',
        `replication slot "${name}" cannot reserve WAL from ${formatLsn(lsn)}: the WAL before ${formatLsn(this.#horizon)} is being removed`,
      );
    }
  }
}

/**
 * One connection's hold on a slot, from {@link SlotManager.acquire}. Only the holder advances
 * the slot, and only up to the flush position its standby reported.
 */
export interface SlotHandle {
  /** The held slot's name. */
  readonly slotName: string;
  /** The application name of the connection that holds the slot. */
  readonly applicationName: string;
  /** True once released (by this handle or by {@link SlotManager.release}). */
  readonly released: boolean;
  /** The slot's current restart position; `null` until reserved and once lost. */
  readonly restartLsn: Lsn | null;
  /** Non-null once the slot was invalidated while held: the connection must stop streaming. */
  readonly invalidationReason: string | null;
  /**
   * Records the flush position the standby reported: the slot's `restartLsn` moves up to it,
   * never past it and never back. Returns the new `restartLsn`; `WAL_REMOVED` once the slot
   * is lost.
   */
  advance(flushLsn: Lsn): Lsn;
  /** Gives the slot up (records `inactiveSince`); releasing twice is harmless. */
  release(): void;
}

/** Throws `INVALID_SLOT_NAME` unless `name` is 1–63 lower-case letters, digits and underscores. */
export function assertSlotName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !SLOT_NAME.test(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.length > 70 ? `${name.slice(0, 70)}…` : name) : typeof name;
    throw new WalshipError('INVALID_SLOT_NAME', `${shown} is not a valid replication slot name: use 1 to 63 lower-case letters, digits and underscores`);
  }
}

function info(slot: Slot): SlotInfo {
  return {
    slotName: slot.name,
    slotType: 'physical',
    active: slot.holder !== null,
    activeApplicationName: slot.holder?.applicationName ?? null,
    restartLsn: slot.restartLsn,
    inactiveSince: slot.inactiveSince === null ? null : new Date(slot.inactiveSince.getTime()),
    invalidationReason: slot.invalidationReason,
  };
}

function lostError(slot: Slot): WalshipError {
  return new WalshipError(
    'WAL_REMOVED',
    `replication slot "${slot.name}" was invalidated (${slot.invalidationReason ?? ''}): the WAL it held is gone; drop it and bootstrap the standby again`,
  );
}

function sameSlots(a: readonly PersistedSlot[], b: readonly PersistedSlot[]): boolean {
  if (a.length !== b.length) return false;
  const byName = new Map(b.map((s) => [s.name, s]));
  return a.every((s) => {
    const other = byName.get(s.name);
    return other !== undefined && other.restartLsn === s.restartLsn && other.invalidationReason === s.invalidationReason;
  });
}
