import type { Application, CommittedBatch } from '../application.js';
import { WalshipError, isWalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { WalEntry } from '../wal/record.js';
import type { WalLog } from '../wal/wal-log.js';

/** The application's `apply` threw: wrapped with the batch's position, the original as `cause`. */
export function applyFailed(batch: { lsn: Lsn; startLsn: Lsn }, err: unknown): WalshipError {
  if (isWalshipError(err, 'APPLY_FAILED')) return err;
  const why = err instanceof Error ? err.message : String(err);
  return new WalshipError('APPLY_FAILED', `the application failed to apply the batch at ${formatLsn(batch.startLsn)}: ${why}`, { cause: err });
}

/**
 * Calls `apply` for one batch, awaiting only when it returned a promise (a synchronous
 * apply costs no extra turn of the event loop per batch).
 */
export async function applyBatch(app: Application, lsn: Lsn, startLsn: Lsn, timeline: number, entries: readonly WalEntry[]): Promise<void> {
  const batch: CommittedBatch = { lsn, startLsn, timeline, entries };
  try {
    const result = app.apply(batch);
    if (result !== undefined && typeof (result as Promise<void>).then === 'function') await result;
  } catch (err) {
    throw applyFailed(batch, err);
  }
}

/**
 * Feeds the application every batch of `log` from `from` on, in LSN order, and reports each
 * applied position. With `follow` it waits for new WAL at the end; without, it stops there.
 * The first failing `apply` ends it with `APPLY_FAILED`; nothing after that batch is applied.
 */
export async function replay(
  log: WalLog,
  app: Application,
  from: Lsn,
  options: { follow: boolean; signal?: AbortSignal; onApplied: (lsn: Lsn) => void },
): Promise<void> {
  const records = log.read(from, { follow: options.follow, reuseBuffers: true, ...(options.signal === undefined ? {} : { signal: options.signal }) });
  for await (const record of records) {
    await applyBatch(app, record.endLsn, record.lsn, record.timeline, record.entries);
    options.onApplied(record.endLsn);
  }
}
