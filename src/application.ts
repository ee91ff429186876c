import type { Lsn } from './lsn.js';
import type { WalEntry } from './wal/record.js';

/**
 * One committed batch as the application receives it, on the primary and on every standby
 * alike, in LSN order and exactly once.
 *
 * Positions in the `Primary`/`Standby` API are ends, as in PostgreSQL
 * (`pg_current_wal_lsn()` after a commit, `pg_last_wal_replay_lsn()`): a batch's `lsn` is the
 * position right after it, so "replay has reached `lsn`" means "this batch is applied".
 */
export interface CommittedBatch {
  /** Where the log stands once this batch is in it (the end of its record). */
  readonly lsn: Lsn;
  /** Where the batch's record starts. */
  readonly startLsn: Lsn;
  /** The timeline it was committed on. */
  readonly timeline: number;
  /**
   * When it was committed on the primary (PostgreSQL's commit timestamp): milliseconds since
   * the epoch, as `Date.now()` gives (`new Date(batch.commitTime)` makes a `Date`), from the
   * primary's `clock` when it appended the batch; the same on the primary, every standby and in
   * replay after a restart, since the WAL carries it. `null` for a batch written by a walship
   * before on-disk format 2, which recorded none.
   */
  readonly commitTime: number | null;
  /**
   * The entries, in commit order. With the default `entryBuffers: 'owned'` their `data` are
   * the application's to keep after `apply` returns (one buffer per batch, never reused by
   * walship), on a primary, a standby and in replay after a restart alike; with
   * `entryBuffers: 'borrowed'` they are views valid only during `apply`.
   */
  readonly entries: readonly WalEntry[];
}

/** What {@link Application.snapshot} returns: the state's bytes, whole or as a stream of chunks. */
export type SnapshotData = Uint8Array | AsyncIterable<Uint8Array>;

/** A snapshot handed to {@link Application.restore}. */
export interface Snapshot {
  /** The state includes every batch up to this position; replay continues from here. */
  readonly lsn: Lsn;
  /** The timeline `lsn` is on. */
  readonly timeline: number;
  /** Size in bytes. */
  readonly size: number;
  /** The snapshot's bytes in chunks, read from a checksummed local file. */
  chunks(): AsyncIterable<Uint8Array>;
  /** The whole snapshot in one buffer. */
  bytes(): Promise<Buffer>;
}

/**
 * The host application's state machine. walship calls `apply` with committed batches in LSN
 * order, exactly once, on the primary and on every standby; how the application's state
 * survives a restart decides where replay starts (see the README, "Replication: `Primary` and `Standby`"):
 *
 * 1. `appliedLsn()` (state kept durably by the application): replay starts after it.
 * 2. Otherwise the latest local checkpoint: a snapshot taken by `checkpoint()` is restored
 *    with `restore()`, or a position recorded by `checkpoint(lsn)` is where the application
 *    says its state is durable; replay starts there.
 * 3. Otherwise replay starts at the oldest WAL.
 */
export interface Application {
  /**
   * Applies one committed batch. A returned promise is awaited before the next batch. An
   * exception stops replay (a coded `APPLY_FAILED` error and an `apply:error` event); the
   * batch is applied again after a restart, never skipped.
   */
  apply(batch: CommittedBatch): void | Promise<void>;
  /** For applications that keep their state durably: the `lsn` of the last batch applied, or `null` for none. */
  appliedLsn?(): Lsn | null | Promise<Lsn | null>;
  /**
   * The application's state as of the last batch applied. walship applies nothing while the
   * returned promise is pending; when it resolves to a stream, the stream must yield the
   * state as of that moment. Used by checkpoints and base backups.
   */
  snapshot?(): Promise<SnapshotData>;
  /** Replaces the whole state with a snapshot (a base backup, or the latest local checkpoint on open). */
  restore?(snapshot: Snapshot): Promise<void>;
}

/** Checks an `application` option at run time (it is not JSON, so the schema cannot). */
export function isApplication(value: unknown): value is Application {
  if (typeof value !== 'object' || value === null) return false;
  const app = value as Record<string, unknown>;
  if (typeof app['apply'] !== 'function') return false;
  return ['appliedLsn', 'snapshot', 'restore'].every((hook) => app[hook] === undefined || typeof app[hook] === 'function');
}
