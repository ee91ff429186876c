/**
 * The serving side of BASE_BACKUP (what PostgreSQL's walsender does for `pg_basebackup`):
 * the application's snapshot sent over a replication connection as `baseBackupBegin`,
 * `baseBackupChunk`… and `baseBackupEnd`, at most `MAX_RATE` bytes per second. The
 * connection's bookkeeping (its `backup` state, the position it holds WAL from) stays with
 * the `WalService` that answers the command (wal-service.ts).
 * @module
 */
import { createHash } from 'node:crypto';
import type { SnapshotData } from '../application.js';
import { WalshipError, abortError, isWalshipError } from '../errors.js';
import { baseBackupChunk } from '../protocol/messages.js';
import type { MessageStream } from '../protocol/message-stream.js';
import type { BaseBackupData, WalSource } from './wal-source.js';
import { currentScheduler } from '../scheduler.js';

const BACKUP_CHUNK_BYTES = 1024 * 1024;
/** PostgreSQL's `MAX_RATE` range (32 kB/s .. 1 GB/s), in bytes per second; 0 means unlimited. */
export const BASE_BACKUP_MAX_RATE = Object.freeze({ min: 32 * 1024, max: 1024 * 1024 * 1024 });

/**
 * Refuses a `maxRate` outside PostgreSQL's `MAX_RATE` range with `INVALID_ARGUMENT`: the
 * standby is told and the connection fails. Called before anything of the backup begins.
 */
export function checkMaxRate(conn: MessageStream<'server'>, maxRate: number): void {
  if (maxRate !== 0 && (maxRate < BASE_BACKUP_MAX_RATE.min || maxRate > BASE_BACKUP_MAX_RATE.max)) {
    const error = new WalshipError(
      'INVALID_ARGUMENT',
      `maxRate ${maxRate} is out of the range of valid values (${BASE_BACKUP_MAX_RATE.min} .. ${BASE_BACKUP_MAX_RATE.max} bytes per second, or 0 for no limit)`,
    );
    conn.fail(error);
    throw error;
  }
}

/** Options of {@link sendBaseBackup}. */
export interface SendBaseBackupOptions {
  /** The standby's label for the backup, sent back in `baseBackupBegin`. */
  readonly label: string;
  /** `MAX_RATE`, in bytes per second (0: unlimited), already accepted by {@link checkMaxRate}. */
  readonly maxRate: number;
  /** Stops the backup (the node shuts down): it then fails with `ABORTED` unless the connection failed first. */
  readonly signal: AbortSignal;
  /**
   * A standby that reads nothing of the backup for this long fails it with `TIMEOUT` (the
   * backup holds WAL from its position: a client must not hold it by not reading).
   */
  readonly drainTimeoutMs: number;
  /** The snapshot was taken: called before anything of it is sent (the WAL from its position must be kept). */
  readonly onSnapshot?: (backup: BaseBackupData) => void;
}

/**
 * Answers BASE_BACKUP on `conn`: takes a snapshot from `source` and sends it in chunks,
 * waiting for the transport to drain (at most `drainTimeoutMs` each time) and pacing itself
 * to `maxRate`, then the size and
 * SHA-256 of what was sent. A failure the standby must hear about (no snapshot, a failing
 * application stream, a size other than announced) fails the connection with it before it
 * is thrown.
 */
export async function sendBaseBackup(conn: MessageStream<'server'>, source: Pick<WalSource, 'baseBackup'>, options: SendBaseBackupOptions): Promise<void> {
  const { label, maxRate, signal } = options;
  /** Why the backup cannot go on: the connection's failure, or the shutdown. */
  const stopped = (): WalshipError => conn.failure ?? new WalshipError('ABORTED', 'the base backup was cancelled by shutdown');
  let pieces: ReturnType<typeof snapshotPieces> | null = null;
  try {
    let backup: BaseBackupData;
    try {
      backup = await source.baseBackup();
    } catch (err) {
      const error = isWalshipError(err, 'BASE_BACKUP_FAILED') || isWalshipError(err, 'BASE_BACKUP_UNAVAILABLE')
        ? err
        : new WalshipError('BASE_BACKUP_FAILED', `could not take a base backup: ${(err as Error).message}`, { cause: err });
      conn.fail(error);
      throw error;
    }
    options.onSnapshot?.(backup);
    conn.send({ kind: 'baseBackupBegin', startLsn: backup.lsn, timeline: backup.timeline, label, totalBytes: backup.size });
    const hash = createHash('sha256');
    const began = currentScheduler().now();
    let offset = 0;
    pieces = snapshotPieces(backup.data, signal);
    for (;;) {
      let piece: Uint8Array | null;
      try {
        piece = await pieces.next();
      } catch (err) {
        if (signal.aborted || conn.failure !== null) throw stopped();
        // The application's stream failed: the standby must hear why, not just lose the connection.
        const error = new WalshipError('BASE_BACKUP_FAILED', `the application's snapshot stream failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
        conn.fail(error);
        throw error;
      }
      if (piece === null) break;
      for (let at = 0; at < piece.length; at += BACKUP_CHUNK_BYTES) {
        if (signal.aborted || conn.failure !== null) throw stopped();
        const data = piece.subarray(at, Math.min(piece.length, at + BACKUP_CHUNK_BYTES));
        hash.update(data);
        const fits = conn.send(baseBackupChunk(offset, data));
        offset += data.length;
        if (!fits) {
          try {
            await conn.drained({ timeoutMs: options.drainTimeoutMs });
          } catch (err) {
            conn.fail(err as WalshipError);
            throw err;
          }
        }
        if (maxRate > 0) {
          const due = began + (offset / maxRate) * 1000;
          if (due > currentScheduler().now()) await currentScheduler().sleep(due - currentScheduler().now(), { signal }).catch(() => undefined);
        }
      }
    }
    if (backup.size !== null && backup.size !== offset) {
      const error = new WalshipError('BASE_BACKUP_FAILED', `the snapshot announced ${backup.size} bytes but yielded ${offset}`);
      conn.fail(error);
      throw error;
    }
    conn.send({ kind: 'baseBackupEnd', totalBytes: offset, sha256: hash.digest(), endLsn: backup.lsn });
  } finally {
    pieces?.close();
  }
}

/**
 * The snapshot's pieces one at a time (null at the end), each wait raced with `signal`: an
 * application stream that never yields must not hold up shutdown. Anything that is not a
 * `Uint8Array` counts as the stream failing. `close()` lets the application's stream go.
 */
function snapshotPieces(data: SnapshotData, signal: AbortSignal): { next(): Promise<Uint8Array | null>; close(): void } {
  if (data instanceof Uint8Array) {
    let done = false;
    return { next: async () => (done ? null : ((done = true), data)), close: () => undefined };
  }
  const iterator = data[Symbol.asyncIterator]();
  let finished = false;
  return {
    async next() {
      if (signal.aborted) throw abortError(signal);
      const next = iterator.next();
      // Once the abort wins the race, a late failure of the stream concerns no one.
      next.catch(() => undefined);
      let onAbort!: () => void;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(abortError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      try {
        const step = await Promise.race([next, aborted]);
        if (step.done === true) {
          finished = true;
          return null;
        }
        if (!(step.value instanceof Uint8Array)) throw new TypeError(`a snapshot piece must be a Uint8Array, got ${typeof step.value}`);
        return step.value;
      } catch (err) {
        if (!signal.aborted) finished = true;
        throw err;
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    },
    close() {
      // Not awaited: a stream stuck in next() may never answer.
      if (!finished) void Promise.resolve(iterator.return?.()).catch(() => undefined);
      finished = true;
    },
  };
}
