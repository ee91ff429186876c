import type { Lsn } from '../lsn.js';
import type { WalEntry } from '../wal/record.js';
import type { WalLog } from '../wal/wal-log.js';

/** What a rewind reports: the batches it discards (see the recovery role's `#rewind`). */

/** A batch a rewind discarded: where it was, and its entries (copies the application may keep). */
export interface DiscardedBatch {
  /** Where the batch started in the discarded WAL. */
  readonly lsn: Lsn;
  /** Where it ended. */
  readonly endLsn: Lsn;
  /** Its entries, in append order, as `apply` would have received them. */
  readonly entries: readonly WalEntry[];
  /** When it was committed (milliseconds since the epoch); `null` for a batch of on-disk format 1. */
  readonly commitTime: number | null;
}

/** Payload of `rewind`. */
export interface RewindEvent {
  /** The timeline the discarded WAL was written on. */
  readonly timeline: number;
  /** Where the upstream's history left that timeline: everything from here was discarded. */
  readonly switchLsn: Lsn;
  /** Where the discarded WAL ended. */
  readonly endLsn: Lsn;
  /** The discarded batches, in LSN order (at most 64 MiB of entries; see `complete`). */
  readonly batches: readonly DiscardedBatch[];
  /**
   * False when the batches listed are not all that was discarded: there was more than 64 MiB
   * (the rest is in the set-aside files), or the application held batches past the switch
   * point that this node's WAL never had (its state came from a base backup taken past them).
   */
  readonly complete: boolean;
  /** The segments holding the discarded WAL, each set aside as `<name>.diverged` (kept, never replayed). */
  readonly setAside: readonly string[];
  /**
   * How the application got back onto the shared history: it had applied nothing discarded
   * (`wal`), its newest local snapshot at or below `switchLsn` and the WAL after it
   * (`snapshot`), or a base backup from the upstream (`base-backup`; `rebootstrap` follows).
   */
  readonly restoredFrom: 'wal' | 'snapshot' | 'base-backup';
}

/** At most this many bytes of discarded entries are reported by `rewind`. */
const MAX_REWIND_REPORT_BYTES = 64 * 1024 * 1024;

/** The batches of `log` from `from` (a record boundary) to its end, up to {@link MAX_REWIND_REPORT_BYTES}. */
export async function discardedBatches(log: WalLog, from: Lsn): Promise<{ batches: DiscardedBatch[]; complete: boolean }> {
  const batches: DiscardedBatch[] = [];
  let bytes = 0;
  for await (const record of log.read(from)) {
    const size = record.entries.reduce((n, e) => n + e.data.length, 0);
    if (bytes + size > MAX_REWIND_REPORT_BYTES) return { batches, complete: false };
    bytes += size;
    batches.push({ lsn: record.lsn, endLsn: record.endLsn, entries: record.entries.map((e) => ({ ...e, data: Buffer.from(e.data) })), commitTime: record.commitTime });
  }
  return { batches, complete: true };
}
