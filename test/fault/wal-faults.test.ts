import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError, type WalErrorEvent } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { SMALL_SEGMENT, openLog, payload, readAll, texts } from '../helpers/wal.js';

describe('fsync failure', () => {
  it('stops the log: no waiter is acknowledged, later calls fail, flushed data survives', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    log.append(Buffer.from('safe'));
    await log.flush();
    const events: WalErrorEvent[] = [];
    log.on('error', (event) => events.push(event));

    storage.injectFault({ operation: 'datasync', code: 'EIO' });
    const doomed = log.append(Buffer.from('doomed'));
    const waits = [log.waitForFlush(doomed.endLsn), log.flush()];
    for (const wait of waits) await assert.rejects(wait, (err) => isWalshipError(err, 'WAL_SYNC_FAILED'));
    assert.ok(log.flushedLsn < doomed.endLsn, 'the flushed position never covers the failed sync');
    assert.equal(events.length, 1);
    assert.equal(events[0]?.fatal, true);
    assert.equal(events[0]?.error.code, 'WAL_SYNC_FAILED');
    assert.equal((events[0]?.error.cause as { code?: string }).code, 'EIO');

    // Fail-stop: no retry is made to look like success.
    assert.throws(() => log.append(Buffer.from('more')), (err) => isWalshipError(err, 'WAL_CLOSED'));
    await assert.rejects(log.waitForFlush(doomed.endLsn), (err) => isWalshipError(err, 'WAL_CLOSED'));
    assert.equal(log.failure?.code, 'WAL_SYNC_FAILED');
    await log.close();

    const survivor = storage.crash({ unsyncedWrites: 'lose' });
    const reopened = await openLog(survivor);
    assert.deepEqual(texts(await readAll(reopened)), ['safe']);
    reopened.append(Buffer.from('after'));
    await reopened.flush();
    assert.deepEqual(texts(await readAll(reopened)), ['safe', 'after']);
    await reopened.close();
  });
});

describe('disk full (ENOSPC)', () => {
  it('fails the appends that needed the space; the log goes on and never brings them back', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    log.append(Buffer.from('before'));
    await log.flush();
    const events: WalErrorEvent[] = [];
    log.on('error', (event) => events.push(event));

    storage.injectFault({ operation: 'write', code: 'ENOSPC', bytesWritten: 100 });
    const failed = [log.append(payload(1, 300)), log.append(payload(2, 300))];
    const results = await Promise.allSettled(failed.map((f) => log.waitForFlush(f.endLsn)));
    for (const result of results) {
      assert.equal(result.status, 'rejected');
      const err = (result as PromiseRejectedResult).reason;
      assert.ok(isWalshipError(err, 'WAL_IO'));
      assert.equal(err.transient, true);
      assert.equal((err.cause as { code?: string }).code, 'ENOSPC');
    }
    assert.deepEqual(events.map((e) => [e.error.code, e.fatal]), [['WAL_IO', false]]);
    assert.equal(log.closed, false);

    // The log continues from where the failed write began.
    const next = log.append(Buffer.from('after'));
    assert.equal(next.lsn, failed[0]?.lsn);
    await log.waitForFlush(next.endLsn);
    assert.deepEqual(texts(await readAll(log)), ['before', 'after']);

    // Even keeping every unsynced byte through a crash, the failed records stay gone.
    const survivor = storage.crash({ unsyncedWrites: 'keep' });
    await log.close().catch(() => undefined); // its disk is gone
    const reopened = await openLog(survivor);
    assert.deepEqual(texts(await readAll(reopened)), ['before', 'after']);
    await reopened.close();
  });

  it('fails the appends that needed a new segment when it cannot be allocated; the log stays readable', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    // Segment 2 cannot be allocated (not ahead of time, nor when it is needed).
    const cancel = storage.injectFault({ operation: 'allocate', code: 'ENOSPC', times: Infinity, file: /^000000010000000000000002/ });
    log.append(Buffer.from('first'));
    await log.flush();
    const fitting = Array.from({ length: 6 }, (_, i) => log.append(payload(i, 10_000)));
    await log.flush();
    const overflow = log.append(payload(99, 20_000));
    assert.ok(overflow.lsn >= 2 * SMALL_SEGMENT, 'the record needs segment 2');
    await assert.rejects(log.waitForFlush(overflow.endLsn), (err) => isWalshipError(err, 'WAL_IO') && err.transient);
    assert.equal(log.closed, false);
    assert.deepEqual((await readAll(log)).slice(1).map((r) => r.lsn), fitting.map((f) => f.lsn));

    // Space is back: appending works again, into segment 2.
    cancel();
    const retry = log.append(payload(100, 20_000));
    await log.waitForFlush(retry.endLsn);
    assert.ok(retry.lsn >= 2 * SMALL_SEGMENT);
    assert.equal((await readAll(log)).length, 8);
    await log.close();
    const reopened = await openLog(storage);
    assert.equal((await readAll(reopened)).length, 8);
    await reopened.close();
  });

  it('fails only the waiters past the drop: those of records written before it in the same round are released', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    const cancel = storage.injectFault({ operation: 'allocate', code: 'ENOSPC', times: Infinity, file: /^000000010000000000000002/ });
    // One write round: segment 1 is written, segment 2 cannot be allocated.
    const written = Array.from({ length: 6 }, (_, i) => log.append(payload(i, 10_000)));
    const overflow = log.append(payload(99, 20_000));
    assert.ok(overflow.lsn >= 2 * SMALL_SEGMENT, 'the record needs segment 2');
    const results = await Promise.allSettled([...written, overflow].map((result) => log.waitForFlush(result)));
    assert.deepEqual(results.map((r) => r.status), [...written.map(() => 'fulfilled'), 'rejected']);
    assert.ok(isWalshipError((results.at(-1) as PromiseRejectedResult).reason, 'WAL_IO'));
    assert.ok(log.flushedLsn >= (written.at(-1)?.endLsn ?? Infinity));
    assert.deepEqual((await readAll(log)).map((r) => r.lsn), written.map((w) => w.lsn));
    cancel(); // the shutdown record needs segment 2
    await log.close();
  });
});

describe('write failure other than ENOSPC', () => {
  it('stops the log with WAL_IO', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    log.append(Buffer.from('safe'));
    await log.flush();
    storage.injectFault({ operation: 'write', code: 'EIO' });
    const { endLsn } = log.append(Buffer.from('lost'));
    await assert.rejects(log.waitForFlush(endLsn), (err) => isWalshipError(err, 'WAL_IO') && !err.transient);
    assert.ok(log.closed);
    assert.throws(() => log.append(Buffer.from('x')), (err) => isWalshipError(err, 'WAL_CLOSED'));
    await log.close();
    const reopened = await openLog(storage);
    assert.deepEqual(texts(await readAll(reopened)).slice(0, 1), ['safe']);
    await reopened.close();
  });
});
