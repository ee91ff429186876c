import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog, isWalshipError, type Storage } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { SMALL_SEGMENT, openLog, payload, readAll, texts } from '../helpers/wal.js';

describe('WalLog edge cases found in review', () => {
  it('with sync none, removing segments and closing keeps the records after the removal point', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage, { sync: 'none' });
    const results = Array.from({ length: 60 }, (_, i) => log.append(payload(i, 4000)));
    await log.flush();
    const keepFrom = results[40]?.lsn ?? 0;
    await log.removeSegmentsBefore(keepFrom);
    await log.close();
    const reopened = await openLog(storage);
    const records = await readAll(reopened);
    assert.equal(records.at(-1)?.lsn, results[59]?.lsn);
    assert.ok(records.some((r) => r.lsn === keepFrom), 'the record at the removal point survives');
    await reopened.close();
  });

  it('after ENOSPC, the result of a dropped append never resolves, even once its LSNs are reused', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    log.append(Buffer.from('before'));
    await log.flush();
    storage.injectFault({ operation: 'write', code: 'ENOSPC' });
    const dropped = log.append(Buffer.from('dropped'));
    await assert.rejects(log.flush(), (err) => isWalshipError(err, 'WAL_IO'));
    // A later record takes the same LSNs and is flushed.
    const successor = log.append(Buffer.from('successor'));
    assert.equal(successor.lsn, dropped.lsn);
    await log.waitForFlush(successor);
    await assert.rejects(log.waitForFlush(dropped), (err) => isWalshipError(err, 'WAL_IO') && err.transient);
    assert.deepEqual(texts(await readAll(log)), ['before', 'successor']);
    await log.close();
  });

  it('close() rejects when its final flush loses appends to a full disk', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    log.append(Buffer.from('kept'));
    await log.flush();
    storage.injectFault({ operation: 'write', code: 'ENOSPC' });
    log.append(Buffer.from('lost'));
    await assert.rejects(log.close(), (err) => isWalshipError(err, 'WAL_IO'));
    const reopened = await openLog(storage);
    assert.deepEqual(texts(await readAll(reopened)), ['kept']);
    await reopened.close();
  });

  it('close() rejects when its final fdatasync fails', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    await log.waitForFlush(log.append(Buffer.from('first')));
    log.append(Buffer.from('x'));
    storage.injectFault({ operation: 'datasync', code: 'EIO', file: /^[0-9A-F]{24}$/ });
    await assert.rejects(log.close(), (err) => isWalshipError(err, 'WAL_SYNC_FAILED'));
  });

  it('a listener that throws does not stop the writer', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    log.on('flush', () => {
      throw new Error('a careless listener');
    });
    await log.waitForFlush(log.append(Buffer.from('a')));
    await log.waitForFlush(log.append(Buffer.from('b')));
    assert.deepEqual(texts(await readAll(log)), ['a', 'b']);
    await log.close();
  });

  it('never acknowledges a commit in a recycled segment before its new name is durable', async () => {
    const memory = new MemoryStorage();
    let gate: Promise<void> | null = null;
    let openGate: () => void = () => undefined;
    // The same storage, but a directory fsync can be held back, as a slow disk would.
    const storage: Storage = {
      get description() {
        return memory.description;
      },
      prepare: () => memory.prepare(),
      list: () => memory.list(),
      open: (name, options) => memory.open(name, options),
      rename: (from, to) => memory.rename(from, to),
      remove: (name) => memory.remove(name),
      lock: () => memory.lock(),
      syncDirectory: async () => {
        if (gate !== null) await gate;
        return memory.syncDirectory();
      },
    };
    const log = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT, recycleSegments: 4 });
    while (Math.floor(log.insertLsn / SMALL_SEGMENT) < 5) await log.waitForFlush(log.append(payload(1, 4000)));
    await log.flush();
    gate = new Promise((resolve) => (openGate = resolve));
    const removal = log.removeSegmentsBefore(log.insertLsn);
    const acknowledged: number[] = [];
    const commits = Array.from({ length: 40 }, (_, i) => {
      const result = log.append(payload(100 + i, 4000));
      return log.waitForFlush(result).then(() => acknowledged.push(result.endLsn));
    });
    // Give the writer every chance to run while the directory fsync is held back.
    for (let i = 0; i < 200; i++) await new Promise((resolve) => setImmediate(resolve));
    const survivor = memory.crash({ unsyncedMetadata: 'lose', unsyncedWrites: 'lose' });
    openGate();
    await removal.catch(() => undefined);
    await Promise.allSettled(commits);
    await log.close().catch(() => undefined);
    const reopened = await WalLog.open({ storage: survivor, segmentSize: SMALL_SEGMENT });
    const ends = new Set((await readAll(reopened)).map((r) => r.endLsn));
    for (const endLsn of acknowledged) assert.ok(ends.has(endLsn), `acknowledged record ending at ${endLsn} survives`);
    await reopened.close();
  });
});
