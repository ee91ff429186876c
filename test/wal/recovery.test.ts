import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalCorruptError, WalLog, isWalshipError, type AppendResult } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { mulberry32 } from '../helpers/random.js';
import { SMALL_SEGMENT, openLog, payload, readAll, texts } from '../helpers/wal.js';

/** Appends each text as its own record and flushes after each group, so later records carry later flush stamps. */
async function appendGroups(log: WalLog, groups: string[][]): Promise<AppendResult[]> {
  const results: AppendResult[] = [];
  for (const group of groups) {
    for (const text of group) results.push(log.append(Buffer.from(text)));
    await log.flush();
  }
  return results;
}

/**
 * The disk as a power loss leaves it right after the last flush: no clean close, so no
 * shutdown record. Damage placed in the last flush is then indistinguishable from a torn write.
 */
async function powerLoss(storage: MemoryStorage, log: WalLog): Promise<MemoryStorage> {
  const survivor = storage.crash({ unsyncedWrites: 'keep', unsyncedMetadata: 'keep' });
  await log.close().catch(() => undefined);
  return survivor;
}

function at(results: AppendResult[], i: number): AppendResult {
  const result = results[i];
  assert.ok(result !== undefined);
  return result;
}

function segmentOffset(lsn: number): number {
  return lsn % SMALL_SEGMENT;
}

function flipByte(storage: MemoryStorage, log: WalLog, lsn: number): void {
  storage.corrupt(log.segmentName(lsn), segmentOffset(lsn), (b) => b ^ 0x40);
}

describe('recovery', () => {
  it('keeps everything on a clean reopen; the zeroed space after the last record ends the log', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    const results = await appendGroups(log, [['a', 'b'], ['c']]);
    await log.close();
    const reopened = await openLog(storage);
    // A clean close ends the log with a 32-byte shutdown record.
    assert.equal(reopened.insertLsn, at(results, 2).endLsn + 32);
    assert.deepEqual(texts(await readAll(reopened)), ['a', 'b', 'c']);
    await reopened.close();
  });

  it('truncates a last record with a bad checksum and appends after the last good record', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    const results = await appendGroups(log, [['a'], ['b'], ['torn record payload']]);
    const disk = await powerLoss(storage, log);
    flipByte(disk, log, at(results, 2).lsn + 40);
    const reopened = await openLog(disk);
    assert.equal(reopened.insertLsn, at(results, 2).lsn);
    assert.deepEqual(texts(await readAll(reopened)), ['a', 'b']);
    const next = reopened.append(Buffer.from('next'));
    assert.equal(next.lsn, at(results, 2).lsn);
    await reopened.close();
    const again = await openLog(disk);
    assert.deepEqual(texts(await readAll(again)), ['a', 'b', 'next']);
    await again.close();
  });

  it('truncates a short write (the end of the last record never reached the disk)', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    const results = await appendGroups(log, [['first'], ['x'.repeat(3000)]]);
    const disk = await powerLoss(storage, log);
    const last = at(results, 1);
    for (let lsn = last.lsn + 1024; lsn < last.endLsn; lsn++) disk.corrupt(log.segmentName(lsn), segmentOffset(lsn), () => 0);
    const reopened = await openLog(disk);
    assert.deepEqual(texts(await readAll(reopened)), ['first']);
    assert.equal(reopened.insertLsn, last.lsn);
    await reopened.close();
  });

  it('refuses a damaged record followed by records written after it was durable: WAL_CORRUPT with segment and offset', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    const results = await appendGroups(log, [['a'], ['b'], ['c'], ['d']]);
    await log.close();
    const damaged = at(results, 1);
    flipByte(storage, log, damaged.lsn + 33);
    const before = storage.fileNames().map((name) => [name, Buffer.from(storage.readFile(name))]);
    await assert.rejects(openLog(storage), (err) => {
      assert.ok(err instanceof WalCorruptError);
      assert.equal(err.code, 'WAL_CORRUPT');
      assert.equal(err.segment, '000000010000000000000001');
      assert.equal(err.offset, segmentOffset(damaged.lsn));
      assert.match(err.message, /000000010000000000000001 at offset \d+/);
      return true;
    });
    // Nothing was truncated or rewritten, and the lock was released.
    assert.deepEqual(storage.fileNames().map((name) => [name, Buffer.from(storage.readFile(name))]), before);
    await assert.rejects(openLog(storage), (err) => isWalshipError(err, 'WAL_CORRUPT'));
  });

  it('after a clean close, damage in the last flush is corruption too (the shutdown record proves it was durable)', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    // Ten records in one flush: each only claims what was durable before that flush.
    const results = await appendGroups(log, [['first'], Array.from({ length: 10 }, (_, i) => `batch ${i}`)]);
    await log.close();
    flipByte(storage, log, at(results, 3).lsn + 33);
    await assert.rejects(openLog(storage), (err) => {
      assert.ok(err instanceof WalCorruptError);
      assert.equal(err.offset, segmentOffset(at(results, 3).lsn));
      return true;
    });
  });

  it('refuses damage in an earlier segment, and a damaged or missing segment in the middle', async () => {
    for (const damage of ['record', 'header', 'missing'] as const) {
      const storage = new MemoryStorage();
      const log = await openLog(storage);
      const groups = Array.from({ length: 12 }, (_, i) => [payload(i, 20_000).toString('hex').slice(0, 20_000)]);
      const results = await appendGroups(log, groups);
      await log.close();
      const second = '000000010000000000000002';
      if (damage === 'record') {
        const victim = results.find((r) => log.segmentName(r.lsn) === second);
        assert.ok(victim !== undefined);
        flipByte(storage, log, victim.lsn + 100);
      } else if (damage === 'header') {
        storage.corrupt(second, 20, (b) => b ^ 1);
      } else {
        await storage.remove(second);
      }
      await assert.rejects(openLog(storage), (err) => {
        assert.ok(err instanceof WalCorruptError, damage);
        assert.equal(err.segment, second);
        if (damage !== 'record') assert.equal(err.offset, 0);
        return true;
      });
    }
  });

  it('discards valid records of an unacknowledged write that follow a hole, and never resurrects them', async () => {
    // a is durable; b, c, d went out in one flush, so they only claim a as durable. A hole in
    // b (out-of-order writeback during a power loss) makes c and d a torn tail too.
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    const results = await appendGroups(log, [['a'], ['b'.repeat(100), 'c'.repeat(100), 'd'.repeat(100)]]);
    const disk = await powerLoss(storage, log);
    flipByte(disk, log, at(results, 1).lsn + 50);
    const reopened = await openLog(disk);
    assert.deepEqual(texts(await readAll(reopened)), ['a']);
    // A record of b's size now lands where b was, ending exactly where c starts: c and d
    // must not come back after it.
    const x = reopened.append(Buffer.from('x'.repeat(100)));
    assert.equal(x.endLsn, at(results, 2).lsn);
    await reopened.flush();
    const survivor = disk.crash({ unsyncedWrites: 'lose' });
    const again = await openLog(survivor);
    assert.deepEqual(texts(await readAll(again)), ['a', 'x'.repeat(100)]);
    await again.close();
    await reopened.close().catch(() => undefined);
  });

  it('refuses a hole followed by a later segment: a segment is durable before the next is written, so that is no torn tail', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    // One flush whose records fill the first segment and run into the second.
    const results = await appendGroups(log, [['a'], Array.from({ length: 8 }, (_, i) => payload(i, 12_000).toString('latin1'))]);
    const disk = await powerLoss(storage, log);
    const first = at(results, 1);
    const last = at(results, 8);
    assert.notEqual(log.segmentName(first.lsn), log.segmentName(last.lsn));
    flipByte(disk, log, first.lsn + 64);
    const before = disk.fileNames().map((name) => [name, Buffer.from(disk.readFile(name))]);
    await assert.rejects(openLog(disk), (err) => {
      assert.ok(err instanceof WalCorruptError, String(err));
      assert.equal(err.segment, log.segmentName(first.lsn));
      assert.equal(err.offset, segmentOffset(first.lsn));
      assert.match(err.message, new RegExp(`${log.segmentName(last.lsn)}.* after it holds? valid WAL`));
      return true;
    });
    assert.deepEqual(disk.fileNames().map((name) => [name, Buffer.from(disk.readFile(name))]), before, 'nothing was deleted or rewritten');
  });

  it('a power loss during a flush that crosses into the next segment leaves a torn tail in the last segment only', async () => {
    for (let crashAt = 1; crashAt <= 40; crashAt++) {
      for (const unsyncedWrites of ['lose', 'sectors', 'torn'] as const) {
        const storage = new MemoryStorage();
        const log = await openLog(storage);
        const durable = await appendGroups(log, [['durable']]);
        const crashed = storage.crashAfter(crashAt, { unsyncedWrites, random: mulberry32(crashAt) });
        let acknowledged = 1;
        try {
          // 30 records of 6 KB in one flush: three segments.
          for (let i = 0; i < 30; i++) log.append(payload(i, 6000));
          await log.flush();
          acknowledged = 31;
        } catch {
          // The power went out.
        }
        try {
          storage.crash({ unsyncedWrites, random: mulberry32(crashAt) });
        } catch {
          // Already crashed.
        }
        const survivor = await crashed;
        await log.close().catch(() => undefined);
        const reopened = await openLog(survivor);
        const records = await readAll(reopened);
        assert.ok(records.length >= acknowledged, `crash at ${crashAt} (${unsyncedWrites}): ${records.length} records, ${acknowledged} acknowledged`);
        assert.equal(records[0]?.endLsn, at(durable, 0).endLsn);
        records.slice(1).forEach((record, i) => assert.deepEqual(Buffer.from(record.entries[0]?.data ?? []), payload(i, 6000), `record ${i + 1}`));
        await reopened.close();
      }
    }
  });

  it('recovers after a power loss that keeps unsynced sectors out of order', async () => {
    for (let seed = 1; seed <= 30; seed++) {
      const storage = new MemoryStorage();
      const log = await openLog(storage);
      const durable = await appendGroups(log, [['durable-1'], ['durable-2']]);
      // Written but never synced: the fdatasync after the next write fails.
      storage.injectFault({ operation: 'datasync', code: 'EIO' });
      for (let i = 0; i < 20; i++) log.append(payload(i, 3000));
      await assert.rejects(log.flush(), (err) => isWalshipError(err, 'WAL_SYNC_FAILED'));
      const survivor = storage.crash({ unsyncedWrites: 'sectors', random: mulberry32(seed) });
      await log.close();
      const reopened = await WalLog.open({ storage: survivor });
      const records = await readAll(reopened);
      assert.deepEqual(texts(records.slice(0, 2)), ['durable-1', 'durable-2']);
      assert.equal(records[1]?.endLsn, at(durable, 1).endLsn);
      records.slice(2).forEach((record, i) => assert.deepEqual(Buffer.from(record.entries[0]?.data ?? []), payload(i, 3000)));
      await reopened.close();
    }
  });
});
