import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog, isWalshipError, segmentFileName, type WalChunk } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { SMALL_SEGMENT, countReaderFileReads, openLog, payload, readAll, turnsUntil, within } from '../helpers/wal.js';

async function collect(iterator: AsyncIterableIterator<WalChunk>): Promise<WalChunk[]> {
  const chunks: WalChunk[] = [];
  for await (const chunk of iterator) chunks.push(chunk);
  return chunks;
}

describe('WalLog.readBytes (what a WAL sender ships)', () => {
  it('hands out the durable bytes exactly as on disk, contiguous, never past the flushed end', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    for (let i = 0; i < 40; i++) log.append(payload(i, 5000 + i));
    await log.flush();
    log.append(Buffer.from('not yet flushed'));
    const chunks = await collect(log.readBytes(log.oldestLsn, { maxChunkBytes: 10_000 }));
    let pos = log.oldestLsn;
    for (const chunk of chunks) {
      assert.equal(chunk.startLsn, pos, 'chunks follow each other');
      assert.ok(chunk.data.length <= 10_000);
      const segno = Math.floor(pos / SMALL_SEGMENT);
      const file = storage.readFile(segmentFileName(1, segno, SMALL_SEGMENT));
      const offset = pos - segno * SMALL_SEGMENT;
      assert.deepEqual(chunk.data, Buffer.from(file.subarray(offset, offset + chunk.data.length)));
      pos += chunk.data.length;
    }
    assert.equal(pos, log.flushedLsn);
    await log.close();
  });

  it('shipped bytes written at the same positions make the same log (a standby’s copy)', async () => {
    const primary = await openLog(new MemoryStorage());
    const expected = Array.from({ length: 60 }, (_, i) => primary.append([payload(i, 3000), { data: payload(i, 7), channel: `c${i % 3}` }]));
    await primary.flush();
    // Resume mid-record too: a sender restarts wherever the standby's flush position is.
    const first = await collect(primary.readBytes(primary.oldestLsn, { maxChunkBytes: 777 }));
    const copy = new MemoryStorage();
    for (const { startLsn, data } of first) {
      const segno = Math.floor(startLsn / SMALL_SEGMENT);
      const file = await copy.open(segmentFileName(1, segno, SMALL_SEGMENT), { create: true });
      await file.allocate(SMALL_SEGMENT);
      await file.write(data, startLsn - segno * SMALL_SEGMENT);
      await file.close();
    }
    const standby = await WalLog.open({ storage: copy, segmentSize: SMALL_SEGMENT });
    const records = await readAll(standby);
    assert.deepEqual(records.map((r) => r.lsn), expected.map((e) => e.lsn));
    assert.deepEqual(records.map((r) => r.entries[1]?.channel), expected.map((_, i) => `c${i % 3}`));
    assert.equal(standby.insertLsn, primary.flushedLsn);
    await standby.close();
    await primary.close();
  });

  it('starts at any LSN, follows the live tail, and stops on abort', async () => {
    const log = await openLog(new MemoryStorage());
    const { endLsn } = log.append(Buffer.from('first'));
    await log.flush();
    const controller = new AbortController();
    const seen: WalChunk[] = [];
    const reading = (async () => {
      for await (const chunk of log.readBytes(endLsn - 3, { follow: true, signal: controller.signal })) {
        seen.push(chunk);
        if (seen.reduce((n, c) => n + c.data.length, 0) >= 3 + 40) controller.abort();
      }
    })();
    await new Promise((resolve) => setImmediate(resolve));
    await log.waitForFlush(log.append(Buffer.from('second record')));
    await assert.rejects(within(reading, 5000, 'the follower'), (err) => isWalshipError(err, 'ABORTED'));
    assert.equal(seen[0]?.startLsn, endLsn - 3);
    await log.close();
  });

  it('hands out WAL written a moment ago from memory, the bytes the segment holds', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    log.append(payload(0, 3000));
    await log.flush();
    const files = countReaderFileReads(storage);
    const chunks: WalChunk[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (const chunk of log.readBytes(log.insertLsn, { follow: true, unflushed: true, signal: controller.signal })) chunks.push(chunk);
    })().catch((err: unknown) => assert.ok(isWalshipError(err, 'ABORTED')));
    // Records of 100 to 700 bytes, into the block the last write left partly filled and across
    // block and segment ends (which a file read serves).
    for (let i = 1; i <= 400; i++) {
      const { endLsn } = log.append(payload(i, 100 + ((i * 37) % 600)));
      await log.flush();
      await turnsUntil(() => (chunks.at(-1)?.startLsn ?? 0) + (chunks.at(-1)?.data.length ?? 0) >= endLsn, 5000, 'the follower');
    }
    controller.abort();
    await reading;
    assert.ok(log.insertLsn > log.oldestLsn + 2 * SMALL_SEGMENT, 'the records crossed segment ends');
    assert.ok(files.reads() < chunks.length / 4, `most chunks came from memory (${files.reads()} file reads for ${chunks.length} chunks)`);
    for (const chunk of chunks) {
      const segno = Math.floor(chunk.startLsn / SMALL_SEGMENT);
      const file = storage.readFile(segmentFileName(1, segno, SMALL_SEGMENT));
      const offset = chunk.startLsn - segno * SMALL_SEGMENT;
      assert.deepEqual(chunk.data, Buffer.from(file.subarray(offset, offset + chunk.data.length)), `the bytes from ${chunk.startLsn}`);
    }
    await log.close();
  });

  it('refuses removed WAL with WAL_REMOVED', async () => {
    const log = await openLog(new MemoryStorage());
    for (let i = 0; i < 40; i++) log.append(payload(i, 5000));
    await log.flush();
    const start = log.oldestLsn;
    await log.removeSegmentsBefore(log.insertLsn);
    await assert.rejects(collect(log.readBytes(start)), (err) => isWalshipError(err, 'WAL_REMOVED'));
    await log.close();
  });
});
