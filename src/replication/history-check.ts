import crc32c from 'fast-crc32c';
import { WalshipError, isWalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { WalLog } from '../wal/wal-log.js';

/**
 * How many WAL bytes before its start position a standby asks its upstream to compare. Every
 * record carries its own LSN and the writer's flush position in its checksummed header, so
 * equal bytes at equal positions mean the same records, written by the same history.
 */
export const HISTORY_CHECK_BYTES = 64 * 1024;

/** What START_REPLICATION carries for the lineage check (see {@link historyCheckOf}). */
export interface HistoryCheck {
  /** Where the compared bytes begin; `null` when the standby has none before its start. */
  readonly checkFrom: Lsn | null;
  /** CRC-32C of the bytes from `checkFrom` up to the start position. */
  readonly checkCrc: number;
}

/**
 * The standby's side: its last WAL bytes before `startLsn`, at most
 * {@link HISTORY_CHECK_BYTES} and within one segment (the one holding the byte before
 * `startLsn`, which the upstream is most likely to still have). `startLsn` must be durable.
 * `ownFrom` is where the log's bytes begin to be the cluster's WAL: a standby bootstrapped
 * from a base backup holds nothing of it before the backup's position.
 *
 * PostgreSQL checks lineage with timeline history alone; walship also compares bytes, which
 * catches WAL another node wrote at the same positions on the same timeline.
 */
export async function historyCheckOf(log: WalLog, startLsn: Lsn, ownFrom: Lsn): Promise<HistoryCheck> {
  const from = checkStart(log, startLsn, ownFrom);
  if (from === null) return { checkFrom: null, checkCrc: 0 };
  const crc = await crcOf(log, from, startLsn);
  if (crc === null) return { checkFrom: null, checkCrc: 0 };
  return { checkFrom: from, checkCrc: crc };
}

/**
 * The upstream's side: whether its own bytes over `[checkFrom, startLsn)` have the CRC the
 * standby sent. `true`: the same history; `null`: nothing to compare (the standby sent no
 * check, or this node no longer has those bytes). Different bytes are `WAL_DIVERGED`. The
 * range must be durable here (`startLsn` at most the flushed end) and at most
 * {@link HISTORY_CHECK_BYTES} long, else `PROTOCOL_ERROR`: a peer cannot make it read more.
 */
export async function verifyHistory(log: WalLog, ownFrom: Lsn, startLsn: Lsn, check: HistoryCheck): Promise<true | null> {
  const { checkFrom } = check;
  if (checkFrom === null) return null;
  if (checkFrom >= startLsn || startLsn - checkFrom > HISTORY_CHECK_BYTES || startLsn > log.readableLsn) {
    throw new WalshipError('PROTOCOL_ERROR', `invalid lineage check range ${formatLsn(checkFrom)} … ${formatLsn(startLsn)}`);
  }
  if (checkFrom < Math.max(log.oldestLsn, ownFrom)) return null;
  const crc = await crcOf(log, checkFrom, startLsn);
  if (crc === null) return null;
  if (crc !== check.checkCrc) {
    throw new WalshipError(
      'WAL_DIVERGED',
      `the standby's WAL before ${formatLsn(startLsn)} differs from this node's at the same positions (${formatLsn(checkFrom)} … ${formatLsn(startLsn)}): it holds WAL that another node wrote, so it cannot continue from here`,
    );
  }
  return true;
}

/** Where the compared range begins, or null when the log has no bytes before `startLsn`. */
function checkStart(log: WalLog, startLsn: Lsn, ownFrom: Lsn): Lsn | null {
  const first = Math.max(log.oldestLsn, ownFrom);
  if (startLsn <= first) return null;
  const segmentStart = Math.floor((startLsn - 1) / log.segmentSize) * log.segmentSize;
  return Math.max(startLsn - HISTORY_CHECK_BYTES, segmentStart, first);
}

/** CRC-32C of the log's bytes over `[from, to)`, or null when some of them are gone. */
async function crcOf(log: WalLog, from: Lsn, to: Lsn): Promise<number | null> {
  let crc = 0;
  let at = from;
  try {
    // The callers bound the range (the standby's own durable end, the upstream's readable end):
    // a standby compares its bytes past what its primary confirmed, too.
    for await (const chunk of log.readBytes(from, { follow: false, maxChunkBytes: HISTORY_CHECK_BYTES, unflushed: true })) {
      const data = chunk.data.subarray(0, Math.min(chunk.data.length, to - chunk.startLsn));
      crc = crc32c.calculate(data, crc);
      at = chunk.startLsn + data.length;
      if (at >= to) break;
    }
  } catch (err) {
    if (isWalshipError(err, 'WAL_REMOVED')) return null;
    throw err;
  }
  return at === to ? crc : null;
}
