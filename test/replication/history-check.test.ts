import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError, type WalLog } from '../../src/index.js';
import { HISTORY_CHECK_BYTES, historyCheckOf, verifyHistory } from '../../src/replication/history-check.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { SMALL_SEGMENT, openLog, payload } from '../helpers/wal.js';

/** A log with `count` batches of `size` bytes, flushed; one clock for all, so that the same batches make the same bytes. */
async function logWith(count: number, size: number, salt = 0): Promise<WalLog> {
  const log = await openLog(new MemoryStorage(), { clock: () => 1_700_000_000_000 });
  for (let i = 0; i < count; i++) log.append([payload(i + salt, size)]);
  await log.flush();
  return log;
}

function codeOf(err: unknown): string {
  return isWalshipError(err) ? err.code : String(err);
}

describe('lineage check of START_REPLICATION', () => {
  it('the same history verifies, at any start position, within one segment and at most 64 KiB back', async () => {
    const upstream = await logWith(300, 900);
    const downstream = await logWith(300, 900);
    for (const start of [upstream.oldestLsn + 10, SMALL_SEGMENT * 2, SMALL_SEGMENT * 2 + 33, upstream.flushedLsn - 5, upstream.flushedLsn]) {
      const check = await historyCheckOf(downstream, start, 0);
      assert.ok(check.checkFrom !== null, `a check at ${start}`);
      assert.ok(start - check.checkFrom <= HISTORY_CHECK_BYTES, 'at most 64 KiB back');
      assert.equal(Math.floor(check.checkFrom / SMALL_SEGMENT), Math.floor((start - 1) / SMALL_SEGMENT), 'within the segment of the byte before the start');
      assert.equal(await verifyHistory(upstream, 0, start, check), true, `the same history at ${start}`);
    }
    await Promise.all([upstream.close(), downstream.close()]);
  });

  it('one different byte is WAL_DIVERGED', async () => {
    const upstream = await logWith(40, 500);
    const other = await logWith(40, 500);
    other.append([Buffer.from('x')]);
    upstream.append([Buffer.from('y')]);
    await Promise.all([other.flush(), upstream.flush()]);
    const check = await historyCheckOf(other, other.flushedLsn, 0);
    await assert.rejects(verifyHistory(upstream, 0, other.flushedLsn, check), (err: unknown) => codeOf(err) === 'WAL_DIVERGED');
    await Promise.all([upstream.close(), other.close()]);
  });

  it('nothing to compare: no check sent, bytes before where the log holds the cluster’s WAL, removed bytes', async () => {
    const upstream = await logWith(200, 900);
    const start = upstream.flushedLsn;
    assert.equal(await verifyHistory(upstream, 0, start, { checkFrom: null, checkCrc: 0 }), null, 'no check');
    const check = await historyCheckOf(upstream, start, start - 100);
    assert.equal(check.checkFrom, start - 100, 'a standby compares only bytes it received');
    assert.equal(await verifyHistory(upstream, start - 50, start, check), null, 'nor does the upstream compare bytes it did not receive');
    assert.deepEqual(await historyCheckOf(upstream, start, start), { checkFrom: null, checkCrc: 0 }, 'nothing before the start');
    const early = await historyCheckOf(upstream, SMALL_SEGMENT + 500, 0);
    await upstream.removeSegmentsBefore(SMALL_SEGMENT * 2);
    assert.equal(await verifyHistory(upstream, 0, SMALL_SEGMENT + 500, early), null, 'removed bytes cannot be compared');
    await upstream.close();
  });

  it('a peer cannot make the upstream read more than 64 KiB, nor bytes it has not flushed: PROTOCOL_ERROR', async () => {
    const upstream = await logWith(200, 900);
    const end = upstream.flushedLsn;
    for (const [from, to] of [
      [end - HISTORY_CHECK_BYTES - 1, end],
      [end, end],
      [end - 10, end + 10],
    ] as const) {
      await assert.rejects(verifyHistory(upstream, 0, to, { checkFrom: from, checkCrc: 0 }), (err: unknown) => codeOf(err) === 'PROTOCOL_ERROR', `${from}..${to}`);
    }
    await upstream.close();
  });
});
