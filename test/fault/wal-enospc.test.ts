import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MIN_SEGMENT_SIZE,
  Primary,
  WalLog,
  isWalshipError,
  type Lsn,
  type Storage,
  type StorageFile,
  type StorageOpenOptions,
  type WalErrorEvent,
} from '../../src/index.js';
import { MemoryStorage, seededRandom, type MemoryStorageFault, type MemoryStorageFaultOperation } from '../../src/testing/index.js';
import { TAIL_BLOCK_SIZE } from '../../src/wal/wal-writer.js';
import { RecordingApp, type AppliedBatch } from '../helpers/apps.js';
import { CRASH_MODES } from '../helpers/crashes.js';
import { payload } from '../helpers/wal.js';

// A full disk (issue #13, item 5): ENOSPC anywhere on the way of an append (the WAL write,
// creating the next segment: open, zero-fill, sync, rename, directory sync) fails the commits
// that needed the space with a transient WAL_IO, keeps the primary running, and loses
// nothing: once space is back, commits go on at the same LSN, and after a power loss exactly
// the acknowledged batches are there.

const SEGMENT = MIN_SEGMENT_SIZE;
const hex = (data: Uint8Array): string => Buffer.from(data).toString('hex');

/**
 * The workload: steps of batches committed together. It writes into segment 1 (created in
 * the foreground, segment 2 ahead of need), fills it, crosses into segment 2 in the middle of
 * a step (its first batch still fits in segment 1), and crosses into segment 3.
 */
const STEPS: readonly (readonly number[])[] = [[1000], [20_000], [20_000], [20_000], [2000, 8000, 3000], [30_000], [30_000], [500]];

/** Hooks on a storage's calls, for counting them or changing what they do. */
interface Hooks {
  /** Called before every call that a MemoryStorage fault of this operation would match. */
  before?(operation: MemoryStorageFaultOperation, name: string): void;
  /** Replaces a file's write (gets the inner file's). */
  write?(file: StorageFile, data: Uint8Array, position: number): Promise<void>;
}

/** `inner` with `hooks` around its calls (no writev: writes go one by one, as MemoryStorage's). */
function hooked(inner: Storage, hooks: Hooks): Storage {
  const before = (operation: MemoryStorageFaultOperation, name: string): void => hooks.before?.(operation, name);
  return {
    description: inner.description,
    prepare: () => inner.prepare(),
    list: () => inner.list(),
    lock: () => inner.lock(),
    rename(from, to) {
      before('rename', from);
      return inner.rename(from, to);
    },
    remove(name) {
      before('remove', name);
      return inner.remove(name);
    },
    syncDirectory() {
      before('syncDirectory', '');
      return inner.syncDirectory();
    },
    async open(name: string, options?: StorageOpenOptions): Promise<StorageFile> {
      before('open', name);
      const file = await inner.open(name, options);
      return {
        name: file.name,
        read(buffer, offset, length, position) {
          before('read', name);
          return file.read(buffer, offset, length, position);
        },
        write(data, position) {
          before('write', name);
          return hooks.write === undefined ? file.write(data, position) : hooks.write(file, data, position);
        },
        datasync() {
          before('datasync', name);
          return file.datasync();
        },
        allocate(size, options) {
          before('allocate', name);
          return file.allocate(size, options);
        },
        size: () => file.size(),
        close: () => file.close(),
      };
    },
  };
}

/** Each write starts a block, or goes on where the one before it ended (MemoryStorage has no writev). */
function assertRoundsStartBlocks(writes: readonly { position: number; length: number }[]): void {
  let end = -1;
  for (const { position, length } of writes) {
    assert.ok(position % TAIL_BLOCK_SIZE === 0 || position === end, `a write at ${position} neither starts a block nor follows the one before (ending at ${end})`);
    end = position + length;
  }
}

/** One run of the workload, with `fault` injected right after the primary opened. */
interface Case {
  fault: MemoryStorageFault;
  /** Cut the power as soon as commits failed (before the retry), or after the whole workload. */
  crashAt: 'failure' | 'end';
  seed: number;
}

async function runCase({ fault, crashAt, seed }: Case): Promise<void> {
  const what = `${JSON.stringify(fault)}, crash at ${crashAt}, seed ${seed}`;
  const storage = new MemoryStorage();
  const primary = await Primary.open({ storage, application: new RecordingApp(), segmentSize: SEGMENT });
  const walErrors: WalErrorEvent[] = [];
  primary.on('wal:error', (event) => walErrors.push(event));
  const cancel = storage.injectFault(fault);
  const acknowledged: AppliedBatch[] = [];
  /** The batches of a step that failed with an unknown outcome (a failed fsync stops the primary). */
  let inDoubt: AppliedBatch[] = [];
  let n = 0;
  steps: for (const step of STEPS) {
    let batches = step.map((size) => payload(n++, size));
    // Once: a step whose commits fail (they fail from one batch on) is retried once space is back.
    for (let attempt = 0; batches.length > 0; attempt++) {
      const ends: Lsn[] = [];
      const results = await Promise.allSettled(
        batches.map((batch) => {
          const committed = primary.commit(batch);
          ends.push(primary.currentLsn); // the end of the record just appended
          return committed;
        }),
      );
      const firstFailed = results.findIndex((r) => r.status === 'rejected');
      const failedFrom = firstFailed === -1 ? results.length : firstFailed;
      for (const [i, result] of results.entries()) {
        if (i < failedFrom) {
          assert.equal(result.status, 'fulfilled', `${what}: commits fail from the first failed one on, never before it`);
          assert.equal(result.value.lsn, ends[i], `${what}: a commit lands where it was appended`);
          acknowledged.push({ lsn: ends[i] as Lsn, entries: [hex(batches[i] as Buffer)] });
        } else {
          assert.equal(result.status, 'rejected', `${what}: every commit after a failed one fails too`);
        }
      }
      if (failedFrom === results.length) continue steps;
      assert.equal(attempt, 0, `${what}: the retry, with space back, succeeds`);
      const error = (results[failedFrom] as PromiseRejectedResult).reason as unknown;
      if (isWalshipError(error, 'WAL_SYNC_FAILED')) {
        // A failed fdatasync of a segment is fail-stop, as the README promises for any fsync:
        // the primary stops and the outcome of the commits waiting for it is unknown.
        assert.equal(fault.operation, 'datasync', `${what}: only a failed fsync stops the primary (${String(error)})`);
        assert.ok(primary.failure !== null, `${what}: the primary stopped`);
        assert.ok(walErrors.some((e) => e.fatal), `${what}: a fatal wal:error`);
        inDoubt = batches.slice(failedFrom).map((batch, i) => ({ lsn: ends[failedFrom + i] as Lsn, entries: [hex(batch)] }));
        break steps;
      }
      for (const result of results.slice(failedFrom)) {
        const reason = (result as PromiseRejectedResult).reason as unknown;
        assert.ok(isWalshipError(reason, 'WAL_IO'), `${what}: a transient WAL_IO, got ${String(reason)}`);
        assert.equal(reason.transient, true, `${what}: transient`);
        assert.equal((reason.cause as { code?: string } | undefined)?.code, 'ENOSPC', `${what}: the cause is the ENOSPC`);
      }
      assert.equal(primary.failure, null, `${what}: the primary keeps running`);
      assert.equal(primary.wal.closed, false, `${what}: the log stays open`);
      assert.ok(walErrors.length > 0 && walErrors.every((e) => !e.fatal), `${what}: wal:error events, none fatal`);
      cancel();
      if (crashAt === 'failure') break steps;
      // Space is back: the same batches again land exactly where the failed ones were.
      const retried = batches.slice(failedFrom);
      const expected = ends.slice(failedFrom);
      const retryEnds: Lsn[] = [];
      const retryResults = await Promise.allSettled(
        retried.map((batch) => {
          const committed = primary.commit(batch);
          retryEnds.push(primary.currentLsn);
          return committed;
        }),
      );
      assert.deepEqual(retryEnds, expected, `${what}: the retried commits land at the LSNs of the failed ones`);
      for (const [i, result] of retryResults.entries()) {
        assert.equal(result.status, 'fulfilled', `${what}: a retried commit succeeds (${result.status === 'rejected' ? String(result.reason) : ''})`);
        acknowledged.push({ lsn: expected[i] as Lsn, entries: [hex(retried[i] as Buffer)] });
      }
      continue steps;
    }
  }
  cancel();
  if (primary.failure === null) {
    const inLog: AppliedBatch[] = [];
    for await (const record of primary.wal.read(primary.wal.oldestLsn)) inLog.push({ lsn: record.endLsn, entries: record.entries.map((e) => hex(e.data)) });
    assert.deepEqual(inLog, acknowledged, `${what}: the log holds exactly the acknowledged batches`);
  }

  const survivor = storage.crash({ ...CRASH_MODES[seed % CRASH_MODES.length], random: seededRandom(seed) });
  await primary.close().catch(() => undefined); // its disk is gone
  const app = new RecordingApp();
  const reopened = await Primary.open({ storage: survivor, application: app, segmentSize: SEGMENT });
  try {
    assert.deepEqual(app.applied.slice(0, acknowledged.length), acknowledged, `${what}: every acknowledged batch survives the power loss`);
    const extra = app.applied.slice(acknowledged.length);
    assert.deepEqual(extra, inDoubt.slice(0, extra.length), `${what}: nothing else comes back, except batches whose fsync failed`);
    const last = app.applied.at(-1)?.lsn ?? 0;
    const after = await reopened.commit(Buffer.from('after the restart'));
    assert.ok(after.lsn > last, `${what}: commits go on after the restart`);
  } finally {
    await reopened.close();
  }
}

/** How many calls of each fault operation the workload makes, without faults. */
async function countOperations(): Promise<Map<MemoryStorageFaultOperation, number>> {
  const counts = new Map<MemoryStorageFaultOperation, number>();
  let counting = false;
  const storage = hooked(new MemoryStorage(), {
    before: (operation) => {
      if (counting) counts.set(operation, (counts.get(operation) ?? 0) + 1);
    },
  });
  const primary = await Primary.open({ storage, application: new RecordingApp(), segmentSize: SEGMENT });
  counting = true;
  let n = 0;
  for (const step of STEPS) await Promise.all(step.map((size) => primary.commit(payload(n++, size))));
  counting = false;
  assert.ok(Math.floor(primary.currentLsn / SEGMENT) === 3, 'the workload reaches segment 3');
  await primary.close();
  return counts;
}

/** The faults of the sweep for one operation: once, and until cleared; writes also cut short. */
function variants(operation: MemoryStorageFaultOperation): Omit<MemoryStorageFault, 'nth'>[] {
  const base = { operation, code: 'ENOSPC' } as const;
  if (operation === 'write') {
    // Until cleared, a write cut short would fail its own undo too: see the test below.
    return [
      { ...base, times: Infinity },
      { ...base, bytesWritten: 100 },
      { ...base, bytesWritten: 1 << 30 },
    ];
  }
  if (operation === 'allocate') {
    // A zero-fill that stops part-way reports the zeros it wrote (the bug of #13: they were
    // taken for WAL bytes, "undone", and the log stopped).
    return [
      { ...base, times: Infinity, bytesWritten: TAIL_BLOCK_SIZE + 5 },
      { ...base, bytesWritten: 5000 },
    ];
  }
  return [{ ...base, times: Infinity }, { ...base }];
}

describe('ENOSPC at every storage call of a segment switch', () => {
  it('fails only the commits that needed the space, transiently; they go on at the same LSN; a power loss keeps exactly the acknowledged batches', async () => {
    const counts = await countOperations();
    const operations: MemoryStorageFaultOperation[] = ['write', 'allocate', 'datasync', 'rename', 'open', 'syncDirectory'];
    let seed = 0;
    let cases = 0;
    for (const operation of operations) {
      const calls = counts.get(operation) ?? 0;
      assert.ok(calls > 0, `the workload calls ${operation}`);
      for (let nth = 1; nth <= calls; nth++) {
        for (const variant of variants(operation)) {
          for (const crashAt of ['failure', 'end'] as const) {
            await runCase({ fault: { ...variant, nth }, crashAt, seed: seed++ });
            cases++;
          }
        }
      }
    }
    assert.ok(cases > 100, `the sweep ran ${cases} cases`);
  });
});

describe('ENOSPC on the WAL path', () => {
  it("a replica's write asked for at once (writeSoon) that fails with ENOSPC drops the bytes and stops asking: later bytes nobody asked for wait for a flush", async () => {
    const storage = new MemoryStorage();
    const replica = await WalLog.open({ storage, segmentSize: SEGMENT, role: 'replica' });
    const start = replica.insertLsn;
    const first = replica.writeBytes(start, Buffer.alloc(100, 1));
    await replica.flush();
    storage.injectFault({ operation: 'write', code: 'ENOSPC' });
    const errors: WalErrorEvent[] = [];
    replica.on('error', (event) => errors.push(event));
    const end = replica.writeBytes(first, Buffer.alloc(200, 2));
    replica.writeSoon(end);
    for (let i = 0; i < 20 && errors.length === 0; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(errors.length, 1, 'the write failed');
    assert.equal(replica.insertLsn, first, 'the bytes were dropped');
    // A write still wanted past the log's end would take the next bytes for wanted ones (and
    // reschedule the writer on every turn): bytes nobody asked to be written wait for a flush.
    const again = replica.writeBytes(first, Buffer.alloc(200, 3));
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(replica.writtenLsn, first, 'not written: nobody asked');
    await replica.flush();
    assert.equal(replica.flushedLsn, again);
    await replica.close();
  });

  it('a zero-fill of the next segment that runs out of space part-way is not taken for WAL bytes', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: SEGMENT });
    const events: WalErrorEvent[] = [];
    log.on('error', (event) => events.push(event));
    // Segment 2 can be zero-filled only part-way, ahead of need and when it is needed.
    const cancel = storage.injectFault({ operation: 'allocate', code: 'ENOSPC', times: Infinity, bytesWritten: 10_000, file: /^000000010000000000000002/ });
    const first = log.append(payload(0, 40_000));
    await log.waitForFlush(first);
    const switching = log.append(payload(1, 40_000));
    assert.equal(Math.floor(switching.lsn / SEGMENT), 2, 'the record needs segment 2');
    await assert.rejects(log.waitForFlush(switching), (err) => isWalshipError(err, 'WAL_IO') && err.transient);
    assert.deepEqual(events.map((e) => [e.error.code, e.fatal]), [['WAL_IO', false]]);
    assert.equal(log.closed, false);
    cancel();
    const retry = log.append(payload(1, 40_000));
    assert.equal(retry.lsn, switching.lsn, 'the retry takes the failed record’s place');
    await log.waitForFlush(retry);
    await log.close();
    const reopened = await WalLog.open({ storage, segmentSize: SEGMENT });
    const lsns: Lsn[] = [];
    for await (const record of reopened.read(reopened.oldestLsn)) lsns.push(record.lsn);
    assert.deepEqual(lsns, [first.lsn, retry.lsn]);
    await reopened.close();
  });

  it('a partial write whose undo fails too stops the log: the records may come back, so their outcome is unknown', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: SEGMENT });
    const safe = log.append(Buffer.from('safe'));
    await log.waitForFlush(safe);
    const events: WalErrorEvent[] = [];
    log.on('error', (event) => events.push(event));
    // A write round writes the block's earlier bytes (one call here: MemoryStorage has no
    // writev), then the record, which gets 100 bytes into the file; the undo, which writes
    // the earlier bytes again and then zeros over those 100, fails as well.
    storage.injectFault({ operation: 'write', code: 'ENOSPC', nth: 2, bytesWritten: 100 });
    storage.injectFault({ operation: 'write', code: 'ENOSPC', nth: 3 });
    const lost = log.append(payload(1, 300));
    await assert.rejects(log.waitForFlush(lost), (err) => isWalshipError(err, 'WAL_IO') && !err.transient && /could not undo/.test(err.message));
    assert.deepEqual(events.map((e) => e.fatal), [true]);
    assert.equal(log.closed, true);
    await log.close();
  });

  it('a recycling rename that fails with ENOSPC fails the removal transiently; appends go on, and the next removal finishes it', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: SEGMENT });
    for (let i = 0; Math.floor(log.insertLsn / SEGMENT) < 4; i++) await log.waitForFlush(log.append(payload(i, 20_000)));
    const segments = (): string[] => storage.fileNames().filter((name) => /^[0-9A-F]{24}$/.test(name));
    // The second of the three renames fails.
    storage.injectFault({ operation: 'rename', code: 'ENOSPC', nth: 2 });
    await assert.rejects(log.removeSegmentsBefore(4 * SEGMENT), (err) => isWalshipError(err, 'WAL_IO') && err.transient);
    assert.equal(log.closed, false);
    const next = log.append(Buffer.from('still appending'));
    await log.waitForFlush(next);
    // The segments the failed call left are removed by the next one.
    const removed = await log.removeSegmentsBefore(4 * SEGMENT);
    assert.equal(removed.length, 2, `the two segments left behind (${removed.join(', ')})`);
    const left = segments();
    assert.ok(left.every((name) => Number.parseInt(name.slice(16), 16) >= 4), `no segment below 4 is left: ${left.join(', ')}`);
    await log.close();
    const reopened = await WalLog.open({ storage, segmentSize: SEGMENT });
    assert.equal(reopened.oldestLsn, 4 * SEGMENT);
    const texts: string[] = [];
    for await (const record of reopened.read(reopened.oldestLsn)) texts.push(...record.entries.map((e) => Buffer.from(e.data).toString()));
    assert.ok(texts.includes('still appending'));
    await reopened.close();
  });

  it('rewrites the written part of the last block with each write, so a block the file system lost on a failed write comes back', async () => {
    // A file system that loses the block a failed write went to (ext4 without a journal on a
    // thin device), durably: here the failing write zeroes its whole 4 KiB block and syncs.
    const inner = new MemoryStorage();
    let loseBlock = false;
    const writes: { name: string; position: number; length: number }[] = [];
    const storage = hooked(inner, {
      async write(file, data, position) {
        writes.push({ name: file.name, position, length: data.length });
        if (!loseBlock) return file.write(data, position);
        loseBlock = false;
        const start = position - (position % TAIL_BLOCK_SIZE);
        await file.write(Buffer.alloc(TAIL_BLOCK_SIZE), start);
        await file.datasync();
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', bytesWritten: 0 });
      },
    });
    const log = await WalLog.open({ storage, segmentSize: SEGMENT });
    const a = log.append(Buffer.from('acknowledged before the failure'));
    await log.waitForFlush(a);
    assert.notEqual(a.endLsn % TAIL_BLOCK_SIZE, 0, 'the record ends inside a block');
    const written = writes.length;
    loseBlock = true;
    const b = log.append(Buffer.from('failed'));
    await assert.rejects(log.waitForFlush(b), (err) => isWalshipError(err, 'WAL_IO') && err.transient);
    const c = log.append(Buffer.from('after the failure'));
    assert.equal(c.lsn, b.lsn);
    await log.waitForFlush(c);

    const survivor = inner.crash({ unsyncedWrites: 'lose', unsyncedMetadata: 'lose' });
    await log.close().catch(() => undefined);
    const reopened = await WalLog.open({ storage: survivor, segmentSize: SEGMENT });
    const texts: string[] = [];
    for await (const record of reopened.read(reopened.oldestLsn)) texts.push(...record.entries.map((e) => Buffer.from(e.data).toString()));
    assert.deepEqual(texts, ['acknowledged before the failure', 'after the failure']);
    await reopened.close();
    assertRoundsStartBlocks(writes.slice(written));
  });

  it('reads the last block back once after an open, and rewrites it from then on', async () => {
    const inner = new MemoryStorage();
    const first = await WalLog.open({ storage: inner, segmentSize: SEGMENT });
    await first.waitForFlush(first.append(Buffer.from('one')));
    await first.close();
    let reads = 0;
    const writes: { position: number; length: number }[] = [];
    const storage = hooked(inner, {
      before: (operation) => {
        if (operation === 'read') reads++;
      },
      write: (file, data, position) => {
        writes.push({ position, length: data.length });
        return file.write(data, position);
      },
    });
    const log = await WalLog.open({ storage, segmentSize: SEGMENT });
    const readsAtOpen = reads;
    await log.waitForFlush(log.append(Buffer.from('two')));
    await log.waitForFlush(log.append(Buffer.from('three')));
    assert.equal(reads - readsAtOpen, 1, 'one read of the block start, at the first write');
    assert.equal(writes.length, 4, 'two rounds of two writes (no writev): the block start, then the record');
    assertRoundsStartBlocks(writes);
    await log.close();
    const reopened = await WalLog.open({ storage: inner, segmentSize: SEGMENT });
    const texts: string[] = [];
    for await (const record of reopened.read(reopened.oldestLsn)) texts.push(...record.entries.map((e) => Buffer.from(e.data).toString()));
    assert.deepEqual(texts, ['one', 'two', 'three']);
    await reopened.close();
  });
});
