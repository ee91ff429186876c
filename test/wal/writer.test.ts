import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { WalLog, isWalshipError, type AppendResult, type WalChunk } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, readAll, turnsUntil } from '../helpers/wal.js';
import { holdDatasyncs } from '../helpers/hold-datasyncs.js';

const SEGMENT = 4 * 1024 * 1024;


function until(condition: () => boolean, what: string): Promise<void> {
  return turnsUntil(condition, 5000, what);
}

/** Appends records of 100 kB until more than `bytes` are pending: enough for a write of their own. */
function appendMoreThan(log: WalLog, bytes: number): AppendResult {
  let last: AppendResult | undefined;
  for (let i = 1; log.pendingBytes <= bytes; i++) last = log.append(payload(i, 100_000));
  return last as AppendResult;
}

describe('the WAL writer', () => {
  it('writes on while an fdatasync runs; that sync acknowledges only what was written before it began', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: SEGMENT });
    const start = log.flushedLsn;
    const gate = holdDatasyncs(storage);
    try {
      const a = log.append(payload(0, 1000));
      let aFlushed = false;
      const flushedA = log.waitForFlush(a).then(() => {
        aFlushed = true;
      });
      await until(() => gate.waiting === 1, 'the first fdatasync');

      // More arrives while that sync is held: enough to be written before the sync ends.
      const b = appendMoreThan(log, 1024 * 1024);
      let bFlushed = false;
      const flushedB = log.waitForFlush(b).then(() => {
        bFlushed = true;
      });
      await until(() => log.writtenLsn >= b.endLsn, 'the write during the sync');
      assert.equal(log.flushedLsn, start);
      assert.equal(aFlushed, false);

      gate.release();
      await flushedA;
      assert.equal(log.flushedLsn, a.endLsn, 'the first sync does not cover what was written during it');
      // The second sync, of the same segment, is the one that makes the rest durable.
      await until(() => gate.waiting === 1, 'the second fdatasync');
      assert.equal(bFlushed, false);
      gate.stop();
      await flushedB;
      assert.equal(log.flushedLsn, b.endLsn);

      // Power loss right after: every acknowledged record is there.
      const survivor = storage.crash({ unsyncedWrites: 'lose' });
      const again = await WalLog.open({ storage: survivor, segmentSize: SEGMENT });
      assert.equal((await readAll(again)).at(-1)?.endLsn, b.endLsn);
      await again.close();
    } finally {
      gate.stop();
      await log.close().catch(() => undefined);
    }
  });

  it('a failed fdatasync while the next bytes are written stops the log; nothing after it is acknowledged', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: SEGMENT });
    const start = log.flushedLsn;
    const gate = holdDatasyncs(storage);
    try {
      const flushedA = log.waitForFlush(log.append(payload(0, 1000)));
      await until(() => gate.waiting === 1, 'the first fdatasync');
      const b = appendMoreThan(log, 1024 * 1024);
      const flushedB = log.waitForFlush(b);
      await until(() => log.writtenLsn >= b.endLsn, 'the write during the sync');

      gate.release(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
      await assert.rejects(flushedA, (err) => isWalshipError(err, 'WAL_SYNC_FAILED'));
      await assert.rejects(flushedB, (err) => isWalshipError(err, 'WAL_SYNC_FAILED'));
      assert.equal(log.flushedLsn, start);
      assert.ok(isWalshipError(log.failure, 'WAL_SYNC_FAILED'));
      assert.throws(() => log.append(payload(99, 10)), (err) => isWalshipError(err, 'WAL_CLOSED'));
    } finally {
      gate.stop();
      await log.close().catch(() => undefined);
    }
  });
});

describe('segment allocation on real files', () => {
  it('a primary zero-fills its segments; a replica creates them sparse and reads them back after reopening', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const segmentSize = 1024 * 1024;
      const primary = await WalLog.open({ dir: join(dir, 'p'), segmentSize });
      for (let i = 0; i < 3; i++) primary.append(payload(i, 5000));
      await primary.flush();
      const chunks: WalChunk[] = [];
      for await (const chunk of primary.readBytes(primary.oldestLsn)) chunks.push(chunk);
      const expected = await readAll(primary);
      const name = primary.segmentName(primary.oldestLsn);
      await primary.close();

      const replica = await WalLog.open({ dir: join(dir, 'r'), segmentSize, role: 'replica' });
      for (const chunk of chunks) replica.writeBytes(chunk.startLsn, chunk.data);
      await replica.flush();
      await replica.close();

      // st_blocks counts the 512-byte units actually on disk.
      const allocated = async (side: string): Promise<number> => (await stat(join(dir, side, name))).blocks * 512;
      assert.ok((await allocated('p')) >= segmentSize, 'the primary segment is zero-filled');
      assert.ok((await allocated('r')) < segmentSize / 2, 'the replica segment is sparse');
      assert.equal((await stat(join(dir, 'r', name))).size, segmentSize);

      const again = await WalLog.open({ dir: join(dir, 'r'), segmentSize, role: 'replica' });
      assert.deepEqual(
        (await readAll(again)).map((r) => [r.lsn, Buffer.from(r.entries[0]?.data ?? []).toString('hex')]),
        expected.map((r) => [r.lsn, Buffer.from(r.entries[0]?.data ?? []).toString('hex')]),
      );
      await again.close();
    } finally {
      await cleanup();
    }
  });
});
