import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog, isWalshipError, parseSegmentFileName, type Storage, type WalRecord } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { COMMIT_TIME_SIZE, MAX_CHANNEL_BYTES } from '../../src/wal/record.js';
import { SMALL_SEGMENT, openLog, payload, readAll, storageKinds, texts, within } from '../helpers/wal.js';

for (const kind of storageKinds) {
  describe(`WalLog on ${kind.name}`, () => {
    async function withLog(
      test: (log: WalLog, storage: Storage) => Promise<void>,
      options: Parameters<typeof openLog>[1] = {},
    ): Promise<void> {
      const { storage, cleanup } = await kind.make();
      const log = await openLog(storage, options);
      try {
        await test(log, storage);
      } finally {
        await log.close();
        await cleanup();
      }
    }

    it('appends, flushes and reads back batches in order, with channels', () =>
      withLog(async (log) => {
        const first = log.append(Buffer.from('a'));
        const second = log.append([Buffer.from('b'), { data: Buffer.from('c'), channel: 'orders' }]);
        const third = log.append({ data: Buffer.from('d'), channel: 'ünïcode' });
        assert.ok(first.lsn < first.endLsn && first.endLsn <= second.lsn && second.endLsn <= third.lsn);
        assert.equal(first.endLsn % 8, 0);
        assert.equal(log.flushedLsn < third.endLsn, true);
        assert.equal(await log.flush(), third.endLsn);
        assert.equal(log.flushedLsn, third.endLsn);
        const records = await readAll(log);
        assert.deepEqual(
          records.map((r) => [r.lsn, r.endLsn, r.timeline]),
          [first, second, third].map((a) => [a.lsn, a.endLsn, 1]),
        );
        assert.deepEqual(texts(records), ['a', 'b', 'c', 'd']);
        assert.deepEqual(
          records.flatMap((r) => r.entries.map((e) => e.channel ?? null)),
          [null, null, 'orders', 'ünïcode'],
        );
      }));

    it('starts a new log in segment 1, as PostgreSQL does', () =>
      withLog(async (log) => {
        assert.equal(log.insertLsn, SMALL_SEGMENT);
        const { lsn } = log.append(Buffer.from('x'));
        assert.equal(lsn, SMALL_SEGMENT + 32);
        assert.equal(log.segmentName(lsn), '000000010000000000000001');
      }));

    it('reads records across many segment boundaries, including records that fill a segment', () =>
      withLog(async (log) => {
        const sizes = [10, 5000, 30_000, 64 * 1024 - 32 - 32 - COMMIT_TIME_SIZE - 5, 1, 20_000, 40_000, 7, 33_000, 33_000, 100];
        const appended = sizes.map((size, i) => ({ data: payload(i, size), at: log.append(payload(i, size)) }));
        await log.flush();
        const records = await readAll(log);
        assert.equal(records.length, sizes.length);
        records.forEach((record, i) => {
          assert.equal(record.lsn, appended[i]?.at.lsn);
          assert.deepEqual(Buffer.from(record.entries[0]?.data ?? []), appended[i]?.data);
        });
        // The largest record takes a whole segment after its header.
        const largest = appended[3]?.at;
        assert.ok(largest !== undefined && largest.lsn % SMALL_SEGMENT === 32 && largest.endLsn % SMALL_SEGMENT === 0);
        assert.equal(Math.floor(log.insertLsn / SMALL_SEGMENT), 5);
        // Reading from the middle of the log starts at that record.
        const tail = await readAll(log, appended[5]?.at.lsn);
        assert.equal(tail.length, sizes.length - 5);
      }));

    it('refuses a record larger than a segment with RECORD_TOO_LARGE and stays usable', () =>
      withLog(async (log) => {
        assert.equal(log.maxRecordSize, SMALL_SEGMENT - 32);
        const fits = log.append(Buffer.alloc(log.maxRecordSize - 32 - COMMIT_TIME_SIZE - 5));
        assert.throws(() => log.append(Buffer.alloc(log.maxRecordSize - 32 - COMMIT_TIME_SIZE - 4)), (err) => isWalshipError(err, 'RECORD_TOO_LARGE'));
        assert.throws(
          () => log.append([Buffer.alloc(40_000), Buffer.alloc(40_000)]),
          (err) => isWalshipError(err, 'RECORD_TOO_LARGE'),
        );
        const after = log.append(Buffer.from('after'));
        await log.flush();
        const records = await readAll(log);
        assert.deepEqual(records.map((r) => r.lsn), [fits.lsn, after.lsn]);
      }));

    it('reads back after a reopen the largest record it accepts (the longest channel included); one byte more is RECORD_TOO_LARGE', async () => {
      const { storage, cleanup } = await kind.make();
      try {
        const log = await openLog(storage);
        const channel = 'c'.repeat(MAX_CHANNEL_BYTES);
        // A record header and the commit time, then one entry: its 5-byte header, the channel, the data.
        const data = Buffer.alloc(log.maxRecordSize - 32 - COMMIT_TIME_SIZE - 5 - MAX_CHANNEL_BYTES, 7);
        assert.throws(() => log.append({ data: Buffer.alloc(data.length + 1), channel }), (err) => isWalshipError(err, 'RECORD_TOO_LARGE'));
        log.append(Buffer.from('before'));
        const largest = log.append({ data, channel });
        assert.equal(largest.endLsn - largest.lsn, log.maxRecordSize, 'the record fills a whole segment after its header');
        log.append(Buffer.from('after'));
        await log.flush();
        await log.close();
        const reopened = await openLog(storage);
        try {
          const records = await readAll(reopened);
          assert.deepEqual(records.map((r) => r.entries.length), [1, 1, 1]);
          const entry = records[1]?.entries[0];
          assert.equal(entry?.channel, channel);
          assert.ok(entry !== undefined && Buffer.from(entry.data).equals(data), 'the data reads back whole');
          assert.deepEqual(texts([records[0], records[2]] as WalRecord[]), ['before', 'after']);
        } finally {
          await reopened.close();
        }
      } finally {
        await cleanup();
      }
    });

    it('rejects bad entries with INVALID_ARGUMENT and appends nothing', () =>
      withLog(async (log) => {
        const before = log.insertLsn;
        const bad: unknown[] = [[], ['text'], [{ data: 'text' }], [{ data: Buffer.from('x'), channel: '' }], [{ data: Buffer.from('x'), channel: 'x'.repeat(256) }], [{ data: Buffer.from('x'), channel: 7 }], null, 'text'];
        for (const batch of bad) {
          assert.throws(() => log.append(batch as Uint8Array), (err) => isWalshipError(err, 'INVALID_ARGUMENT'), JSON.stringify(batch));
        }
        assert.equal(log.insertLsn, before);
      }));

    it('group-commits concurrent committers: everyone resolves, with far fewer syncs than commits', () =>
      withLog(async (log, storage) => {
        let syncs = 0;
        const countSyncs = countDatasyncs(storage, () => syncs++);
        const committers = 64;
        const rounds = 10;
        const done: number[] = [];
        await Promise.all(
          Array.from({ length: committers }, async (_, c) => {
            for (let r = 0; r < rounds; r++) {
              const { endLsn } = log.append(Buffer.from(`${c}:${r}`));
              await log.waitForFlush(endLsn);
              assert.ok(log.flushedLsn >= endLsn);
              done.push(endLsn);
            }
          }),
        );
        countSyncs.restore();
        assert.equal(done.length, committers * rounds);
        assert.ok(syncs > 0 && syncs <= rounds * 4, `expected group commit, got ${syncs} syncs for ${done.length} commits`);
        const records = await readAll(log);
        assert.equal(records.length, committers * rounds);
        assert.deepEqual(new Set(texts(records)).size, committers * rounds);
      }));

    it('follows the live tail: a reader waits for records not yet written', () =>
      withLog(async (log) => {
        log.append(Buffer.from('old'));
        await log.flush();
        const controller = new AbortController();
        const seen: string[] = [];
        const reader = (async () => {
          for await (const record of log.read(log.oldestLsn, { follow: true, signal: controller.signal })) {
            seen.push(...texts([record]));
            if (seen.length === 3) return;
          }
        })();
        await within(waitUntil(() => seen.length === 1), 5000, 'the reader to see history');
        log.append(Buffer.from('new1'));
        // Not flushed yet: the reader must not see it.
        await new Promise((resolve) => setImmediate(resolve));
        log.append([Buffer.alloc(60_000)]);
        await log.flush();
        await within(reader, 5000, 'the reader to see the live tail');
        assert.deepEqual(seen.slice(0, 2), ['old', 'new1']);
      }));

    it('ownEntries: every batch read into reused buffers is handed out in a copy of its own, which stays intact', () =>
      withLog(async (log) => {
        // Batches of varied sizes and channels over many 4 KiB read chunks, so reused chunks would show.
        const batches = Array.from({ length: 60 }, (_, i) => [payload(i, 20 + ((i * 97) % 900)), { data: payload(i + 1000, 1 + (i % 50)), channel: `c${i % 3}` }]);
        for (const batch of batches) log.append(batch);
        await log.flush();
        const keep = async (ownEntries: boolean): Promise<WalRecord[]> => {
          const kept: WalRecord[] = [];
          for await (const record of log.read(log.oldestLsn, { reuseBuffers: true, chunkSize: 4096, ownEntries })) kept.push(record);
          return kept;
        };
        const bytes = (records: readonly WalRecord[]): string[][] => records.map((r) => r.entries.map((e) => `${e.channel ?? ''}:${Buffer.from(e.data).toString('hex')}`));
        const expected = batches.map((batch) => batch.map((e) => ('channel' in e ? `${e.channel}:${e.data.toString('hex')}` : `:${e.toString('hex')}`)));
        assert.deepEqual(bytes(await keep(true)), expected);
        // The control: the same records kept without ownEntries are views into the reused chunks.
        assert.notDeepEqual(bytes(await keep(false)), expected);
      }));

    it('aborts a flush wait through its signal with ABORTED; the record is still flushed', () =>
      withLog(async (log) => {
        const controller = new AbortController();
        const { endLsn } = log.append(Buffer.from('x'));
        controller.abort(new Error('client went away'));
        await assert.rejects(log.waitForFlush(endLsn, { signal: controller.signal }), (err) => isWalshipError(err, 'ABORTED'));
        const later = new AbortController();
        const wait = log.waitForFlush(endLsn, { signal: later.signal });
        await wait;
        later.abort();
        assert.ok(log.flushedLsn >= endLsn);
      }));

    it('aborts a waiting reader through its signal with ABORTED', () =>
      withLog(async (log) => {
        const controller = new AbortController();
        const reader = (async () => {
          for await (const _ of log.read(log.insertLsn, { follow: true, signal: controller.signal })) {
            assert.fail('no record expected');
          }
        })();
        setImmediate(() => controller.abort(new Error('stop')));
        await assert.rejects(reader, (err) => isWalshipError(err, 'ABORTED'));
      }));

    it('ends a following reader when the log closes', async () => {
      const { storage, cleanup } = await kind.make();
      const log = await openLog(storage);
      const records: WalRecord[] = [];
      const reader = (async () => {
        for await (const record of log.read(log.insertLsn, { follow: true })) records.push(record);
      })();
      log.append(Buffer.from('last'));
      await log.close();
      await within(reader, 5000, 'the reader to end');
      assert.deepEqual(texts(records), ['last']);
      await cleanup();
    });

    it('refuses to read from a position that is not a record', () =>
      withLog(async (log) => {
        const { lsn } = log.append(Buffer.from('abcdefgh'.repeat(10)));
        await log.flush();
        await assert.rejects(readAll(log, lsn + 8), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
        await assert.rejects(readAll(log, log.oldestLsn + 8), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
      }));

    it('reopens where it left off and keeps appending', async () => {
      const { storage, cleanup } = await kind.make();
      let log = await openLog(storage);
      for (let i = 0; i < 100; i++) log.append(payload(i, 1000 + i));
      await log.close();
      log = await WalLog.open({ storage }); // segment size comes from disk
      assert.equal(log.segmentSize, SMALL_SEGMENT);
      const end = log.insertLsn;
      const next = log.append(Buffer.from('more'));
      assert.equal(next.lsn, end % SMALL_SEGMENT === 0 ? end + 32 : end);
      await log.close();
      log = await WalLog.open({ storage });
      const records = await readAll(log);
      assert.equal(records.length, 101);
      assert.deepEqual(Buffer.from(records[57]?.entries[0]?.data ?? []), payload(57, 1057));
      await assert.rejects(WalLog.open({ storage, segmentSize: SMALL_SEGMENT * 2 }), (err) => isWalshipError(err, 'WAL_LOCKED'));
      await log.close();
      await assert.rejects(WalLog.open({ storage, segmentSize: SMALL_SEGMENT * 2 }), (err) => isWalshipError(err, 'WAL_FORMAT'));
      await cleanup();
    });

    it('refuses a second open of the same directory with WAL_LOCKED, and allows it after close', async () => {
      const { storage, cleanup } = await kind.make();
      const log = await openLog(storage);
      await assert.rejects(openLog(storage), (err) => isWalshipError(err, 'WAL_LOCKED'));
      await log.close();
      const again = await openLog(storage);
      await again.close();
      await cleanup();
    });

    it('removes whole segments below an LSN, never the insert segment, and recycles files', () =>
      withLog(async (log, storage) => {
        const at = Array.from({ length: 40 }, (_, i) => log.append(payload(i, 10_000)));
        await log.flush();
        const middle = at[20]?.lsn ?? 0;
        const removed = await log.removeSegmentsBefore(middle);
        assert.ok(removed.length >= 2);
        assert.equal(log.oldestLsn, Math.floor(middle / SMALL_SEGMENT) * SMALL_SEGMENT);
        const records = await readAll(log);
        assert.equal(records[records.length - 1]?.lsn, at[39]?.lsn);
        assert.ok(records.some((r) => r.lsn === middle));
        await assert.rejects(readAll(log, at[0]?.lsn), (err) => isWalshipError(err, 'WAL_REMOVED'));
        // Removing everything keeps the segment holding the insert position.
        await log.removeSegmentsBefore(log.insertLsn + 10 * SMALL_SEGMENT);
        assert.equal(log.oldestLsn, Math.floor(log.insertLsn / SMALL_SEGMENT) * SMALL_SEGMENT);
        const names = (await storage.list()).filter((n) => /^[0-9A-F]{24}$/.test(n));
        assert.ok(names.length <= 1 + 1 + 4, `at most the live segment, one prepared and four recycled: ${names.join(' ')}`);
        // Appends continue into recycled files, and the log reads back correctly after reopen.
        const more = Array.from({ length: 30 }, (_, i) => log.append(payload(100 + i, 10_000)));
        await log.flush();
        assert.deepEqual((await readAll(log)).slice(-30).map((r) => r.lsn), more.map((m) => m.lsn));
      }, { maxRecycleSegments: 4 }));

    it('after a burst keeps as many spare files as the WAL written between removals, within recycleSegments and maxRecycleSegments; a reopen reads only their headers', async () => {
      const { storage, cleanup } = await kind.make();
      const segmentNames = async (): Promise<string[]> => (await storage.list()).filter((n) => /^[0-9A-F]{24}$/.test(n));
      const fill = async (log: WalLog, segments: number): Promise<void> => {
        const target = log.insertLsn + segments * SMALL_SEGMENT;
        while (log.insertLsn < target) await log.waitForFlush(log.append(Buffer.alloc(20_000, 0x62)));
      };
      try {
        let log = await openLog(storage, { recycleSegments: 2, maxRecycleSegments: 6 });
        const opened = log.insertLsn;
        // A burst of about 4 segments: as many spare files after it (counting the one prepared ahead).
        await fill(log, 4);
        const burst = Math.ceil((log.insertLsn - opened) / SMALL_SEGMENT);
        await log.removeSegmentsBefore(log.insertLsn);
        let names = await segmentNames();
        const future = (list: string[]): number => list.filter((n) => (parseSegmentFileName(n, SMALL_SEGMENT)?.segno ?? 0) > Math.floor(log.insertLsn / SMALL_SEGMENT)).length;
        assert.ok(burst >= 4 && burst < 6);
        assert.equal(future(names), burst, `${burst} spare files after a burst of ${burst} segments: ${names.join(' ')}`);
        // A burst of 10: at most maxRecycleSegments.
        await fill(log, 10);
        await log.removeSegmentsBefore(log.insertLsn);
        names = await segmentNames();
        assert.equal(future(names), 6, `maxRecycleSegments caps them: ${names.join(' ')}`);
        await log.close();
        // A reopen reads the spare files' first bytes only, not each whole file.
        let bytesRead = 0;
        const open = storage.open.bind(storage);
        storage.open = async (name, options) => {
          const file = await open(name, options);
          const read = file.read.bind(file);
          file.read = async (buffer, offset, length, position) => {
            const n = await read(buffer, offset, length, position);
            bytesRead += n;
            return n;
          };
          return file;
        };
        log = await openLog(storage, { recycleSegments: 2, maxRecycleSegments: 6 });
        storage.open = open;
        assert.equal(future(await segmentNames()), 6);
        assert.ok(bytesRead < 3 * SMALL_SEGMENT, `${bytesRead} bytes read at open, with 6 spare files of ${SMALL_SEGMENT} bytes`);
        // Appends go on into the spare files, and read back.
        const more = Array.from({ length: 20 }, (_, i) => log.append(payload(200 + i, 20_000)));
        await log.flush();
        assert.deepEqual((await readAll(log, more[0]?.lsn)).map((r) => r.lsn), more.map((m) => m.lsn));
        await log.close();
      } finally {
        await cleanup();
      }
    });

    it('rejects calls after close with WAL_CLOSED; close is idempotent', async () => {
      const { storage, cleanup } = await kind.make();
      const log = await openLog(storage);
      const { endLsn } = log.append(Buffer.from('x'));
      await Promise.all([log.close(), log.close()]);
      assert.ok(log.closed);
      assert.ok(log.flushedLsn >= endLsn, 'close flushes what was appended');
      assert.throws(() => log.append(Buffer.from('y')), (err) => isWalshipError(err, 'WAL_CLOSED'));
      assert.throws(() => log.read(log.oldestLsn), (err) => isWalshipError(err, 'WAL_CLOSED'));
      await assert.rejects(log.removeSegmentsBefore(0), (err) => isWalshipError(err, 'WAL_CLOSED'));
      await cleanup();
    });

    it('seal(): writes the shutdown record, refuses appends with WAL_CLOSED; readers, followers too, end there', () =>
      withLog(async (log) => {
        const a = log.append(Buffer.from('a'));
        // Followers started before the seal: records and raw bytes.
        const records = (async () => {
          const seen: string[] = [];
          for await (const record of log.read(a.lsn, { follow: true })) seen.push(...texts([record]));
          return seen;
        })();
        const bytes = (async () => {
          let end = log.oldestLsn;
          for await (const chunk of log.readBytes(log.oldestLsn, { follow: true })) {
            assert.equal(chunk.startLsn, end);
            end += chunk.data.length;
          }
          return end;
        })();
        const b = log.append(Buffer.from('b'));
        const seals = [log.seal(), log.seal()];
        assert.equal(seals[0], seals[1], 'concurrent seals share one promise');
        assert.throws(() => log.append(Buffer.from('late')), (err) => isWalshipError(err, 'WAL_CLOSED'));
        await Promise.all(seals);
        assert.equal(log.sealed, true);
        assert.equal(log.closed, false);
        // Everything appended is durable, followed by the 32-byte shutdown record.
        assert.equal(log.flushedLsn, b.endLsn + 32);
        assert.equal(log.insertLsn, log.flushedLsn);
        assert.deepEqual(await within(records, 10_000, 'the record follower to end'), ['a', 'b']);
        assert.equal(await within(bytes, 10_000, 'the byte follower to end'), log.flushedLsn);
        // New readers work, and a follower from the end ends at once.
        assert.deepEqual(texts(await readAll(log)), ['a', 'b']);
        const tail = [];
        for await (const chunk of log.readBytes(log.flushedLsn, { follow: true })) tail.push(chunk);
        assert.deepEqual(tail, []);
        assert.throws(() => log.append(Buffer.from('late')), (err) => isWalshipError(err, 'WAL_CLOSED'));
        await log.seal();
        await log.close();
        assert.equal(log.closed, true);
        assert.equal(log.sealed, false);
        assert.equal(log.flushedLsn, b.endLsn + 32, 'close wrote no second shutdown record');
        await assert.rejects(log.seal(), (err) => isWalshipError(err, 'WAL_CLOSED'));
      }));

    it('seal() of a log without appends since it was opened writes nothing, as close() does', () =>
      withLog(async (log) => {
        const start = log.insertLsn;
        await log.seal();
        assert.equal(log.flushedLsn, start);
        assert.equal(log.insertLsn, start);
      }));

    it('a sealed-then-closed log is on disk exactly what a closed one is, and reopens the same', async () => {
      const results: { files: Map<string, string>; records: string[]; end: number }[] = [];
      for (const seal of [true, false]) {
        const { storage, cleanup } = await kind.make();
        try {
          // One clock for both runs: the records' commit times are part of the bytes compared.
          const log = await openLog(storage, { clock: () => 1_700_000_000_000 });
          for (let i = 0; i < 10; i++) log.append(payload(i, 9000));
          await log.flush();
          log.append(Buffer.from('unflushed'));
          if (seal) await log.seal();
          await log.close();
          const files = new Map<string, string>();
          for (const name of (await storage.list()).filter((n) => n !== 'walship.lock').sort()) {
            const file = await storage.open(name, { readOnly: true });
            const buf = Buffer.alloc(await file.size());
            await file.read(buf, 0, buf.length, 0);
            await file.close();
            files.set(name, buf.toString('hex'));
          }
          const reopened = await openLog(storage);
          results.push({ files, records: texts(await readAll(reopened)), end: reopened.insertLsn });
          await reopened.close();
        } finally {
          await cleanup();
        }
      }
      const [sealed, closed] = results;
      assert.deepEqual([...(sealed?.files.keys() ?? [])], [...(closed?.files.keys() ?? [])]);
      assert.ok(
        [...(sealed?.files ?? [])].every(([name, hex]) => closed?.files.get(name) === hex),
        'every file has the same bytes',
      );
      assert.equal(sealed?.end, closed?.end);
      assert.deepEqual(sealed?.records, closed?.records);
      assert.equal(sealed?.records.at(-1), 'unflushed');
    });

    it('with sync none, flushes without fdatasync and still reads back', () =>
      withLog(
        async (log, storage) => {
          let syncs = 0;
          const counter = countDatasyncs(storage, () => syncs++);
          for (let i = 0; i < 1000; i++) log.append(payload(i, 100));
          await log.flush();
          counter.restore();
          assert.equal(syncs, 0);
          assert.equal((await readAll(log)).length, 1000);
        },
        { sync: 'none' },
      ));
  });
}

describe('WalLog options', () => {
  it('rejects invalid options with INVALID_OPTIONS naming the field, creating nothing', async () => {
    const storage = new MemoryStorage();
    const cases: [unknown, RegExp][] = [
      [{ storage, segmentSize: 1000 }, /segmentSize/],
      [{ storage, segmentSize: 32 * 1024 }, /segmentSize/],
      [{ storage, sync: 'sometimes' }, /sync/],
      [{ storage, timeline: 0 }, /timeline/],
      [{ storage, segmentsize: 65536 }, /segmentsize/],
      [{ storage: {} }, /storage/],
      [{}, /dir and WalLog.storage/],
      [{ storage, dir: '/tmp/x' }, /dir and WalLog.storage/],
    ];
    for (const [options, pattern] of cases) {
      await assert.rejects(
        WalLog.open(options as never),
        (err) => isWalshipError(err, 'INVALID_OPTIONS') && pattern.test((err as Error).message),
        JSON.stringify(options),
      );
    }
    assert.deepEqual(storage.fileNames(), []);
  });
});

/** Counts datasync calls on the segment files the storage opens from now on (not on new segments being prepared). */
function countDatasyncs(storage: Storage, onSync: () => void): { restore: () => void } {
  const open = storage.open.bind(storage);
  let active = true;
  storage.open = async (name, options) => {
    const file = await open(name, options);
    if (name.endsWith('.tmp')) return file;
    const datasync = file.datasync.bind(file);
    file.datasync = async () => {
      if (active) onSync();
      await datasync();
    };
    return file;
  };
  return {
    restore: () => {
      active = false;
      storage.open = open;
    },
  };
}

async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}
