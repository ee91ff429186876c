import type { Application, CommittedBatch, SnapshotData } from '../application.js';
import { WalshipError, isWalshipError } from '../errors.js';
import { LsnWaiters, type WaitOptions } from '../lsn-waiters.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { WalEntry } from '../wal/record.js';
import type { WalLog } from '../wal/wal-log.js';
import type { RecoveryTargetCheck, TargetStop } from './recovery-target.js';

/**
 * What the application's `apply` receives as `entry.data`. `owned` (the default): each batch's
 * entries live in one buffer of their own (one allocation per batch), which the application
 * may keep after `apply` returns, on every path alike. `borrowed`: views into walship's read
 * buffers (or the committing caller's buffers), valid only during `apply`; saves that copy.
 */
export type EntryBuffers = 'owned' | 'borrowed';

/** A batch to apply: its end (`lsn`), where its record starts, its timeline and its entries. */
export type ApplyBatch = CommittedBatch;

/** A snapshot of the application's state with the position it includes. */
export interface ApplicationSnapshot {
  readonly lsn: Lsn;
  readonly size: number | null;
  readonly data: SnapshotData;
}

/**
 * The one apply path of a node, primary or standby (PostgreSQL's startup process replaying
 * WAL, and a primary applying its own commits): batches reach the application in LSN order,
 * exactly once; the position it has applied is waitable; a snapshot pauses applying, lets the
 * batch in progress finish, and captures the state at a known position. The first `apply`
 * that throws stops it with `APPLY_FAILED` (nothing after that batch is applied).
 */
export class Applier {
  readonly #app: Application;
  readonly #entryBuffers: EntryBuffers;
  readonly #position: LsnWaiters;
  #applying: Promise<void> | null = null;
  #pause: Promise<void> | null = null;
  #caughtUp = false;
  readonly #onWait = (): void => {
    this.#caughtUp = true;
  };

  constructor(app: Application, position: Lsn, entryBuffers: EntryBuffers) {
    this.#app = app;
    this.#entryBuffers = entryBuffers;
    this.#position = new LsnWaiters(position);
  }

  /** The end of the last batch applied. */
  get position(): Lsn {
    return this.#position.position;
  }

  /** Resolves once everything up to `lsn` is applied. */
  wait(lsn: Lsn, options: WaitOptions = {}): Promise<void> {
    return this.#position.wait(lsn, options);
  }

  /** Sets the position (the application's state was replaced, e.g. restored from a snapshot). */
  reset(lsn: Lsn): void {
    this.#position.rewind(lsn);
    this.#position.advance(lsn);
  }

  /** Fails every wait, now and later. */
  fail(error: unknown): void {
    this.#position.fail(error);
  }

  /**
   * Applies one batch (after a snapshot in progress) and moves the position to its end.
   * `private`: the entries' buffers are already a copy no one else holds (no second copy).
   */
  async apply(batch: ApplyBatch, options: { private?: boolean } = {}): Promise<void> {
    while (this.#pause !== null) await this.#pause;
    const entries = this.#entryBuffers === 'owned' && options.private !== true ? ownedEntries(batch.entries) : batch.entries;
    this.#applying = applyTo(this.#app, { lsn: batch.lsn, startLsn: batch.startLsn, timeline: batch.timeline, entries, commitTime: batch.commitTime });
    try {
      await this.#applying;
    } finally {
      this.#applying = null;
    }
    this.#position.advance(batch.lsn);
  }

  /**
   * Applies every batch of `log` from `from` on, in LSN order. With `follow` it waits for new
   * WAL at the end (a standby's replay); without, it stops there (a primary's restart). With a
   * `target` (a standby's recovery target) this is where replay decides what to apply: it asks
   * the check at the start, before each record (restore points included) and after it, and
   * resolves with the first stop the check answers, having applied nothing past it; else with
   * null (the end, or the signal).
   */
  async follow(
    log: WalLog,
    from: Lsn,
    options: { follow: boolean; signal?: AbortSignal; onApplied?: (lsn: Lsn, commitTime: number | null) => void; target?: RecoveryTargetCheck },
  ): Promise<TargetStop | null> {
    const { target } = options;
    const atStart = target?.atStart(from) ?? null;
    if (atStart !== null) return atStart;
    // Read buffers are reused: `apply` gets each batch in a copy of its own (made by the
    // reader, one per record) unless the application borrows them.
    const owned = this.#entryBuffers === 'owned';
    const records = log.read(from, {
      follow: options.follow,
      reuseBuffers: true,
      ownEntries: owned,
      onWait: this.#onWait,
      restorePoints: target !== undefined,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    try {
      for await (const record of records) {
        this.#caughtUp = false;
        if (options.signal?.aborted === true) return null;
        const before = target?.before(record) ?? null;
        if (before !== null) return before;
        if (record.kind === 'batch') {
          await this.apply({ lsn: record.endLsn, startLsn: record.lsn, timeline: record.timeline, entries: record.entries, commitTime: record.commitTime }, { private: owned });
          options.onApplied?.(record.endLsn, record.commitTime);
        }
        const after = target?.after(record) ?? null;
        if (after !== null) return after;
      }
    } finally {
      this.#caughtUp = false;
    }
    return null;
  }

  /**
   * Whether {@link follow} has applied every complete record of its log and waits for more
   * (a standby's replay has caught up with the WAL it received).
   */
  get caughtUp(): boolean {
    return this.#caughtUp;
  }

  /**
   * Pauses applying (after the batch in progress) while the application takes its snapshot,
   * so the snapshot is the state at exactly {@link position}.
   */
  async snapshot(): Promise<ApplicationSnapshot> {
    const snapshot = this.#app.snapshot;
    if (snapshot === undefined) throw new WalshipError('INVALID_ARGUMENT', 'the application has no snapshot() hook');
    while (this.#pause !== null) await this.#pause;
    let resume!: () => void;
    this.#pause = new Promise((resolve) => (resume = resolve));
    try {
      await this.#applying?.catch(() => undefined);
      const lsn = this.position;
      const data = await snapshot.call(this.#app);
      return { lsn, size: data instanceof Uint8Array ? data.length : null, data };
    } finally {
      this.#pause = null;
      resume();
    }
  }
}

/** The application's `apply` threw: wrapped with the batch's position, the original as `cause`. */
export function applyFailed(batch: { lsn: Lsn; startLsn: Lsn }, err: unknown): WalshipError {
  if (isWalshipError(err, 'APPLY_FAILED')) return err;
  const why = err instanceof Error ? err.message : String(err);
  return new WalshipError('APPLY_FAILED', `the application failed to apply the batch at ${formatLsn(batch.startLsn)}: ${why}`, { cause: err });
}

/** Calls `apply`, awaiting only when it returned a promise (a synchronous apply costs no extra turn). */
async function applyTo(app: Application, batch: CommittedBatch): Promise<void> {
  try {
    const result = app.apply(batch);
    if (result !== undefined && typeof (result as Promise<void>).then === 'function') await result;
  } catch (err) {
    throw applyFailed(batch, err);
  }
}

/** The entries with their bytes copied into one new buffer: one allocation per batch. */
export function ownedEntries<E extends WalEntry>(entries: readonly E[]): WalEntry[] {
  let size = 0;
  for (const entry of entries) size += entry.data.length;
  const copy = Buffer.allocUnsafe(size);
  let at = 0;
  return entries.map((entry) => {
    copy.set(entry.data, at);
    const data = copy.subarray(at, (at += entry.data.length));
    return entry.channel === undefined ? { data } : { data, channel: entry.channel };
  });
}
