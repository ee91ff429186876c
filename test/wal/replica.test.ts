import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { WalLog, isWalshipError, type WalChunk, type WalRecord } from '../../src/index.js';
import { MemoryStorage, seededRandom } from '../../src/testing/index.js';
import { SMALL_SEGMENT, countReaderFileReads, openLog, payload, readAll, within } from '../helpers/wal.js';

/** A primary log with `count` records (of payloads below `maxSize` bytes), flushed, and its durable bytes. */
async function primaryBytes(count: number, seed: number, maxSize = 9000): Promise<{ records: WalRecord[]; bytes: Buffer; start: number }> {
  const random = seededRandom(seed);
  const primary = await openLog(new MemoryStorage());
  for (let i = 0; i < count; i++) {
    const size = Math.floor(random() * maxSize);
    primary.append(random() < 0.3 ? [payload(i, size), { data: payload(i + 1, 3), channel: 'c' }] : payload(i, size));
    // Frequent flushes give later records stamps past earlier positions, as in real life:
    // stamps a replica must not take as proof of its own durability.
    if (random() < 0.7) await primary.flush();
  }
  await primary.flush();
  const chunks: WalChunk[] = [];
  for await (const chunk of primary.readBytes(primary.oldestLsn)) chunks.push(chunk);
  const records = await readAll(primary);
  const start = primary.oldestLsn;
  await primary.close();
  return { records, bytes: Buffer.concat(chunks.map((c) => c.data)), start };
}

function sameRecords(actual: WalRecord[], expected: WalRecord[]): void {
  assert.deepEqual(
    actual.map((r) => [r.lsn, r.endLsn, r.entries.map((e) => [Buffer.from(e.data).toString('hex'), e.channel ?? null])]),
    expected.map((r) => [r.lsn, r.endLsn, r.entries.map((e) => [Buffer.from(e.data).toString('hex'), e.channel ?? null])]),
  );
}

describe('replica logs (a standby writing its upstream’s bytes)', () => {
  it('write upstream bytes in any pieces and read back the same records', async () => {
    const { records, bytes, start } = await primaryBytes(50, 1);
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    assert.equal(replica.insertLsn, start);
    const random = seededRandom(2);
    for (let at = 0; at < bytes.length; ) {
      const n = Math.min(bytes.length - at, 1 + Math.floor(random() * 20_000));
      replica.writeBytes(start + at, bytes.subarray(at, at + n));
      at += n;
    }
    await replica.flush();
    sameRecords(await readAll(replica), records);
    await replica.close();
  });

  it('refuses append with READ_ONLY and bytes at the wrong position with INVALID_ARGUMENT; no shutdown record is added', async () => {
    const storage = new MemoryStorage();
    const replica = await openLog(storage, { role: 'replica' });
    assert.throws(() => replica.append(Buffer.from('x')), (err) => isWalshipError(err, 'READ_ONLY'));
    assert.throws(() => replica.writeBytes(replica.insertLsn + 8, Buffer.alloc(8)), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    const { bytes, start } = await primaryBytes(3, 3);
    replica.writeBytes(start, bytes);
    await replica.close();
    const again = await openLog(storage, { role: 'replica' });
    assert.equal(again.insertLsn, start + bytes.length, 'byte-identical to upstream: nothing of its own after close');
    await again.close();
    const primary = await openLog(new MemoryStorage());
    assert.throws(() => primary.writeBytes(primary.insertLsn, Buffer.alloc(8)), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    await primary.close();
  });

  it('a following reader yields a record only once all of it is durable', async () => {
    const { records, bytes, start } = await primaryBytes(2, 4);
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    const seen: WalRecord[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (const record of replica.read(replica.oldestLsn, { follow: true, signal: controller.signal })) seen.push(record);
    })().catch(() => undefined);
    const firstEnd = (records[0] as WalRecord).endLsn - start;
    // Everything up to the middle of the second record.
    const middle = firstEnd + 40;
    await replica.waitForFlush(replica.writeBytes(start, bytes.subarray(0, middle)));
    await within(waitFor(() => seen.length === 1), 5000, 'the first record');
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(seen.length, 1, 'the half-written second record is not handed out');
    await replica.waitForFlush(replica.writeBytes(start + middle, bytes.subarray(middle)));
    await within(waitFor(() => seen.length === 2), 5000, 'the second record');
    controller.abort();
    await reading;
    await replica.close();
  });

  it('a following reader (replay) takes records written a moment ago from memory, the same records the files hold', async () => {
    const { records, bytes, start } = await primaryBytes(600, 6, 700);
    const storage = new MemoryStorage();
    const replica = await openLog(storage, { role: 'replica' });
    const files = countReaderFileReads(storage);
    const seen: WalRecord[] = [];
    const controller = new AbortController();
    const reading = (async () => {
      for await (const record of replica.read(replica.oldestLsn, { follow: true, signal: controller.signal })) seen.push(record);
    })().catch((err: unknown) => assert.ok(isWalshipError(err, 'ABORTED')));
    // As a standby receives a 1-committer stream: each record alone, flushed, then replayed.
    for (const [i, record] of records.entries()) {
      replica.writeBytes(replica.insertLsn, bytes.subarray(replica.insertLsn - start, record.endLsn - start));
      await replica.flush();
      await within(waitFor(() => seen.length === i + 1), 5000, `record ${i}`);
    }
    controller.abort();
    await reading;
    sameRecords(seen, records);
    assert.ok(replica.insertLsn > start + 2 * SMALL_SEGMENT, 'the records crossed segment ends');
    // Records crossing a 4 KiB block, and each segment's first, are read from the file.
    assert.ok(files.reads() < records.length / 2, `most records came from memory (${files.reads()} file reads for ${records.length} records)`);
    await replica.close();
  });

  it('recovers after power loss anywhere: never WAL_CORRUPT, keeps what was flushed, continues from its end', async () => {
    const { records, bytes, start } = await primaryBytes(60, 5);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 400 }),
        fc.constantFrom('lose' as const, 'keep' as const, 'torn' as const, 'sectors' as const),
        fc.integer({ min: 1, max: 2 ** 30 }),
        async (crashAt, unsyncedWrites, seed) => {
          const storage = new MemoryStorage();
          const replica = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT, role: 'replica' });
          const crashed = storage.crashAfter(crashAt, { unsyncedWrites, random: seededRandom(seed) });
          const random = seededRandom(seed + 1);
          let acknowledged = start;
          try {
            for (let at = 0; at < bytes.length; ) {
              const n = Math.min(bytes.length - at, 1 + Math.floor(random() * 30_000));
              const end = replica.writeBytes(start + at, bytes.subarray(at, at + n));
              at += n;
              if (random() < 0.5) {
                await replica.waitForFlush(end);
                acknowledged = end;
              }
            }
            await replica.flush();
            acknowledged = start + bytes.length;
          } catch {
            // The power went out.
          }
          try {
            storage.crash({ unsyncedWrites, random: seededRandom(seed) });
          } catch {
            // Already crashed.
          }
          const survivor = await crashed;
          await replica.close().catch(() => undefined);
          const recovered = await WalLog.open({ storage: survivor, segmentSize: SMALL_SEGMENT, role: 'replica' });
          const got = await readAll(recovered);
          // A prefix of upstream's records, holding every record that ended in flushed bytes.
          sameRecords(got, records.slice(0, got.length));
          const mustHave = records.filter((r) => r.endLsn <= acknowledged).length;
          assert.ok(got.length >= mustHave, `${got.length} records recovered, ${mustHave} were flushed`);
          // Fetch the rest from upstream, from where the replica's log ends.
          const from = recovered.insertLsn;
          recovered.writeBytes(from, bytes.subarray(from - start));
          await recovered.close();
          const complete = await WalLog.open({ storage: survivor, segmentSize: SMALL_SEGMENT, role: 'replica' });
          sameRecords(await readAll(complete), records);
          await complete.close();
        },
      ),
      { seed: 31337, numRuns: 120 },
    );
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 2));
}

describe('a new log starting later than segment 1', () => {
  it('begins in the segment holding startLsn; once written, reopening needs no startLsn', async () => {
    const storage = new MemoryStorage();
    const startLsn = 7 * SMALL_SEGMENT + 1234;
    const log = await openLog(storage, { role: 'replica', startLsn });
    assert.equal(log.insertLsn, 7 * SMALL_SEGMENT);
    assert.equal(log.oldestLsn, 7 * SMALL_SEGMENT);
    // Upstream's segment 7 begins with its header: ship a header-only segment start.
    const upstream = await openLog(new MemoryStorage(), { startLsn: 7 * SMALL_SEGMENT });
    upstream.append(Buffer.from('from segment 7'));
    await upstream.flush();
    for await (const chunk of upstream.readBytes(upstream.oldestLsn)) log.writeBytes(chunk.startLsn, chunk.data);
    await upstream.close();
    await log.close();
    const reopened = await openLog(storage, { role: 'replica' });
    assert.equal(reopened.oldestLsn, 7 * SMALL_SEGMENT);
    assert.deepEqual((await readAll(reopened)).map((r) => Buffer.from(r.entries[0]?.data ?? []).toString()), ['from segment 7']);
    await reopened.close();
    const primary = await openLog(new MemoryStorage(), { startLsn: 3 * SMALL_SEGMENT });
    const { lsn } = primary.append(Buffer.from('x'));
    assert.equal(lsn, 3 * SMALL_SEGMENT + 32);
    await primary.close();
    await assert.rejects(openLog(new MemoryStorage(), { startLsn: 5 }), (err) => isWalshipError(err, 'INVALID_OPTIONS'));
  });
});
