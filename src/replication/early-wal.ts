import type { Lsn } from '../lsn.js';
import type { StartupOption } from '../protocol/messages.js';
import type { WalLog } from '../wal/wal-log.js';

/**
 * Early WAL: a primary with `earlySend` ships WAL while its own fdatasync runs (a Raft leader
 * writes its log in parallel with replication), to standbys that said they accept it. Such WAL
 * may still be lost by the primary, which after a restart can write other WAL at the same
 * positions. The standby's rules: it writes and fsyncs what it receives, but reads (replay,
 * cascading, archiving) and confirms (status reports) nothing past the highest durable end the
 * primary told it (`WalLog.readableLsn`); each new stream starts at that point
 * ({@link streamStart}), and the receiver compares the tail it holds past it with what arrives,
 * cutting the log at the first byte that differs; after its own restart that point is
 * {@link restartBound}.
 */

/** The startup option a standby sends to say it follows the rules above. */
export const EARLY_WAL_OPTION: StartupOption = Object.freeze({ key: 'walship.early_wal', value: 'accept' });

/** Whether a standby's startup options accept early WAL. */
export function acceptsEarlyWal(options: readonly StartupOption[]): boolean {
  return options.some((option) => option.key === EARLY_WAL_OPTION.key && option.value === EARLY_WAL_OPTION.value);
}

/**
 * Where a stream into `log` starts: its end, or, when it holds WAL past what the primary said
 * is durable, that bound (the receiver compares the tail with what comes).
 */
export function streamStart(log: WalLog): Lsn {
  const bound = log.upstreamDurableLsn;
  return bound !== null && bound < log.insertLsn ? bound : log.insertLsn;
}

/**
 * After a standby's restart, the highest position of its replica log known durable on the
 * primary without asking it: the highest flush stamp of its records (each says what was
 * durable on the primary when it was appended), the position its application had applied
 * (replay never passes what the primary confirmed), and the start of its timeline (a
 * promotion begins one at its durable end); never past the log's end.
 */
export function restartBound(log: WalLog, applied: Lsn): Lsn {
  const entries = log.history.entries;
  const timelineStart = entries.length === 0 ? 0 : entries[entries.length - 1]!.switchLsn;
  return Math.min(log.insertLsn, Math.max(log.recoveredStamp, applied, timelineStart));
}
