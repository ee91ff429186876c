import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalCorruptError, WalLog, type Storage } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { FORMAT_VERSION, RECORD_HEADER_SIZE } from '../../src/wal/record.js';
import { segmentFileName } from '../../src/wal/segment-name.js';
import { FIRST_TIMELINE_HISTORY, branchHistory, readTimelineHistory, writeTimelineHistory, type TimelineHistory } from '../../src/wal/timeline-history.js';
import { switchedFromOf, type ControlData } from '../../src/node/control-file.js';
import { removeAbandonedTimelines, restoreTimelineHistory } from '../../src/node/local-state.js';
import { SMALL_SEGMENT, openLog, payload, readAll, storageKinds, texts } from '../helpers/wal.js';

/** Appends `count` batches named `${prefix}i` of `size` bytes and flushes them. */
async function appendMany(log: WalLog, prefix: string, count: number, size = 3000): Promise<void> {
  for (let i = 0; i < count; i++) log.append(Buffer.concat([Buffer.from(`${prefix}${i}:`), payload(i, size)]));
  await log.flush();
}

/** Copies `source`'s durable bytes from `from` up to `to` into the replica, as a receiver does. */
async function ship(source: WalLog, replica: WalLog, to: number, timeline = source.timeline): Promise<void> {
  for await (const chunk of source.readBytes(replica.insertLsn, { timeline })) {
    const end = Math.min(chunk.startLsn + chunk.data.length, to);
    if (end <= chunk.startLsn) break;
    replica.writeBytes(chunk.startLsn, chunk.data.subarray(0, end - chunk.startLsn));
    if (end === to) break;
  }
  await replica.flush();
}

/**
 * A replica of `batches` batches ('a0', 'a1', …) just promoted onto timeline 2, and its primary.
 * With `historyFirst` its history file is written before the switch (as the tests of the
 * abandoned-timeline repair need); without, the log writes it later, as promotion does.
 */
async function promotedReplica(options: { batches?: number; historyFirst?: boolean } = {}): Promise<{ primary: WalLog; replica: WalLog; storage: MemoryStorage; history: TimelineHistory }> {
  const storage = new MemoryStorage();
  const primary = await openLog(new MemoryStorage());
  await appendMany(primary, 'a', options.batches ?? 5);
  const replica = await openLog(storage, { role: 'replica' });
  await ship(primary, replica, primary.flushedLsn);
  const history = branchHistory(replica.history, replica.insertLsn, 'test promotion');
  if (options.historyFirst === true) await writeTimelineHistory(storage, history);
  await replica.beginTimeline(history);
  return { primary, replica, storage, history };
}

function prefixOf(records: readonly { entries: readonly { data: Uint8Array }[] }[]): string[] {
  return texts(records as never).map((t) => t.slice(0, t.indexOf(':')));
}

/** Promotes `replica` onto timeline 2 at the end of its complete records, as Standby.promote does. */
async function promote(storage: Storage, replica: WalLog): Promise<TimelineHistory> {
  const { end: switchLsn } = await replica.endOfRecords(replica.oldestLsn);
  const history = branchHistory(replica.history, switchLsn, 'test promotion');
  await writeTimelineHistory(storage, history);
  await replica.beginTimeline(history);
  return history;
}

/** Holds the fdatasyncs of files named `name` opened from `storage` until released. */
function holdDatasyncsOf(storage: Storage, name: string): { readonly waiting: number; release(): void } {
  const held: (() => void)[] = [];
  const open = storage.open.bind(storage);
  storage.open = async (fileName, options) => {
    const file = await open(fileName, options);
    if (fileName !== name) return file;
    const datasync = file.datasync.bind(file);
    file.datasync = async () => {
      await new Promise<void>((go) => held.push(go));
      await datasync();
    };
    return file;
  };
  return {
    get waiting() {
      return held.length;
    },
    release() {
      for (const go of held.splice(0)) go();
    },
  };
}

describe('timelines in the log', () => {
  for (const kind of storageKinds) {
    it(`a promoted replica continues on timeline 2 and reopens with both timelines' WAL (${kind.name})`, async () => {
      const { storage: primaryStorage, cleanup: c1 } = await kind.make();
      const { storage, cleanup: c2 } = await kind.make();
      try {
        const primary = await openLog(primaryStorage);
        await appendMany(primary, 'a', 50);
        const replica = await openLog(storage, { role: 'replica' });
        // Everything but the last 100 bytes: the last record arrives only in part.
        await ship(primary, replica, primary.flushedLsn - 100);
        const history = await promote(storage, replica);
        const switchLsn = history.entries[0]?.switchLsn as number;
        assert.ok(switchLsn < primary.flushedLsn - 100, 'the partial record is cut');
        assert.equal(replica.timeline, 2);
        assert.equal(replica.role, 'primary');
        await appendMany(replica, 'b', 40);
        const records = await readAll(replica);
        assert.deepEqual(prefixOf(records), [...Array.from({ length: 49 }, (_, i) => `a${i}`), ...Array.from({ length: 40 }, (_, i) => `b${i}`)]);
        assert.ok(records.every((r) => r.timeline === (r.lsn < switchLsn ? 1 : 2)));
        const switchSegno = Math.floor(switchLsn / SMALL_SEGMENT);
        const names = await storage.list();
        assert.ok(names.includes(segmentFileName(2, switchSegno, SMALL_SEGMENT)), 'the switch segment is moved to timeline 2');
        assert.ok(names.includes(segmentFileName(1, switchSegno - 1, SMALL_SEGMENT)), 'older segments keep their timeline-1 names');
        assert.ok(!names.some((n) => n.startsWith('00000001') && Number.parseInt(n.slice(16), 16) > switchSegno), 'no timeline-1 segment past the switch');
        await replica.setAsideSuperseded();
        assert.ok((await storage.list()).includes(`${segmentFileName(1, switchSegno, SMALL_SEGMENT)}.partial`));
        await replica.close();
        await primary.close();

        const again = await openLog(storage, { timeline: 2 });
        assert.deepEqual(prefixOf(await readAll(again)), prefixOf(records));
        again.append(Buffer.from('c0:'));
        await again.flush();
        await again.close();
      } finally {
        await c1();
        await c2();
      }
    });
  }

  it('the old timeline still opens as it was before the promotion was recorded', async () => {
    const { primary, replica, storage } = await promotedReplica({ batches: 30, historyFirst: true });
    await appendMany(replica, 'b', 5);
    await replica.close();
    // A crash before the control file said "timeline 2": the standby's open moves the switch
    // segment back (cutting the end-of-recovery record), and the directory is the standby it was.
    await removeAbandonedTimelines(storage, 1, SMALL_SEGMENT);
    const old = await openLog(storage, { role: 'replica', timeline: 1 });
    assert.equal(old.flushedLsn, primary.flushedLsn);
    assert.deepEqual(prefixOf(await readAll(old)), Array.from({ length: 30 }, (_, i) => `a${i}`));
    await old.close();
    await primary.close();
  });

  it('prepareTimelineSwitch writes nothing; a replica goes on receiving after it, and a switch given its version ends as one without', async () => {
    const storage = new MemoryStorage();
    const primary = await openLog(new MemoryStorage());
    await appendMany(primary, 'a', 30);
    const replica = await openLog(storage, { role: 'replica' });
    const half = Math.floor(primary.flushedLsn / 2);
    await ship(primary, replica, half);
    const snapshot = (): [string, string][] => storage.fileNames().map((name) => [name, Buffer.from(storage.readFile(name)).toString('hex')]);
    const before = snapshot();
    // A promotion that fails after this step (its control-file write) leaves a replica that streams on.
    assert.equal(await replica.prepareTimelineSwitch(replica.insertLsn), FORMAT_VERSION, "the switch segment's format");
    assert.deepEqual(snapshot(), before, 'nothing on disk changed');
    await ship(primary, replica, primary.flushedLsn);
    assert.equal(replica.flushedLsn, primary.flushedLsn, 'the writer reopened the segment whose handle was closed');
    const { end: switchLsn } = await replica.endOfRecords(replica.oldestLsn);
    const history = branchHistory(replica.history, switchLsn, 'test promotion');
    const version = await replica.prepareTimelineSwitch(switchLsn);
    const endOfRecovery = await replica.beginTimeline(history, version);
    assert.equal(endOfRecovery, switchLsn + RECORD_HEADER_SIZE, 'the end-of-recovery record follows the switch point');
    await appendMany(replica, 'b', 3);
    await replica.close();
    const reopened = await openLog(storage, { timeline: 2 });
    assert.deepEqual(prefixOf(await readAll(reopened)), [...Array.from({ length: 30 }, (_, i) => `a${i}`), 'b0', 'b1', 'b2']);
    await reopened.close();
    await primary.close();
  });

  it("an abandoned timeline's switch segment is never removed for want of its history file: refused, nothing changed", async () => {
    const { primary, replica, storage } = await promotedReplica({ batches: 30, historyFirst: true });
    await replica.close();
    await storage.remove('00000002.history');
    const before = storage.fileNames();
    await assert.rejects(removeAbandonedTimelines(storage, 1, SMALL_SEGMENT), (err) => {
      assert.ok(err instanceof WalCorruptError, String(err));
      assert.match(err.message, /00000002\.history is missing/);
      return true;
    });
    assert.deepEqual(storage.fileNames(), before, 'the segment holding timeline 1\'s WAL is still there');
    await primary.close();
  });

  it("an ancestor's file past its switch segment is removed at open only when it holds no WAL of its own", async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    const first = log.append(payload(0, 100));
    await appendMany(log, 'a', 30);
    await log.close();
    // Timeline 2 left timeline 1 in segment 1, but timeline 1's segment 2 holds WAL: not a
    // segment prepared ahead. Refused, and nothing is moved or removed.
    await writeTimelineHistory(storage, branchHistory(FIRST_TIMELINE_HISTORY, first.endLsn, 'test'));
    const before = storage.fileNames();
    const segment2 = segmentFileName(1, 2, SMALL_SEGMENT);
    await assert.rejects(openLog(storage, { timeline: 2 }), (err) => {
      assert.ok(err instanceof WalCorruptError, String(err));
      assert.equal(err.segment, segment2);
      return true;
    });
    assert.deepEqual(storage.fileNames(), before, 'nothing was moved or removed');
    // Without a header of its own (prepared ahead, zero-filled) it is removed as before.
    storage.corrupt(segment2, 4, () => 0);
    const moved = await openLog(storage, { timeline: 2 });
    assert.equal(storage.fileNames().includes(segment2), false);
    await moved.close();
  });

  it('a promotion while the next segment is being prepared ahead: the writer finds that segment under the new timeline\'s name', async () => {
    const primary = await openLog(new MemoryStorage());
    await appendMany(primary, 'a', 30);
    const storage = new MemoryStorage();
    // The replica's first write into segment 2 starts preparing segment 3, under timeline 1's
    // name; its sync is held, so the preparation is still under way when the promotion begins.
    const nextSegment = segmentFileName(1, 3, SMALL_SEGMENT);
    const hold = holdDatasyncsOf(storage, `${nextSegment}.tmp`);
    const replica = await openLog(storage, { role: 'replica' });
    await ship(primary, replica, primary.flushedLsn);
    assert.equal(Math.floor(replica.insertLsn / SMALL_SEGMENT), 2, 'the replica ends in segment 2');
    assert.equal(hold.waiting, 1, 'segment 3 is being prepared');
    const { end } = await replica.endOfRecords(replica.oldestLsn);
    const history = branchHistory(replica.history, end, 'test promotion');
    await writeTimelineHistory(storage, history);
    const promoting = replica.beginTimeline(history);
    // MemoryStorage settles in microtasks: by the next turn the switch went as far as it goes
    // without the held preparation, which then ends.
    await new Promise((resolve) => setImmediate(resolve));
    hold.release();
    await promoting;
    while (Math.floor(replica.insertLsn / SMALL_SEGMENT) < 4) replica.append(payload(2, 3000));
    await replica.flush();
    await replica.close();
    const names = storage.fileNames();
    assert.ok(names.includes(segmentFileName(2, 3, SMALL_SEGMENT)), 'segment 3 is written under timeline 2\'s name');
    assert.ok(!names.includes(nextSegment), 'no timeline-1 file past the switch segment');
    const again = await openLog(storage, { timeline: 2 });
    assert.equal(again.flushedLsn, replica.flushedLsn, 'the reopened log ends where the promoted one did');
    await again.close();
    await primary.close();
  });

  it('a promotion renames the spare files onto the new timeline (kept for reuse), removes the WAL past the switch point, and the log reopens', async () => {
    const primary = await openLog(new MemoryStorage());
    await appendMany(primary, 'a', 120);
    const storage = new MemoryStorage();
    const replica = await openLog(storage, { role: 'replica', recycleSegments: 3, maxRecycleSegments: 3 });
    await ship(primary, replica, primary.flushedLsn);
    // Spare files: the replica's old segments, recycled under future names.
    await replica.removeSegmentsBefore(Math.floor(replica.insertLsn / SMALL_SEGMENT) * SMALL_SEGMENT - SMALL_SEGMENT);
    const endSegno = Math.floor(replica.writtenLsn / SMALL_SEGMENT);
    const segnosOf = (timeline: number): number[] =>
      storage
        .fileNames()
        .filter((n) => /^[0-9A-F]{24}$/.test(n) && parseInt(n.slice(0, 8), 16) === timeline)
        .map((n) => parseInt(n.slice(16), 16))
        .sort((a, b) => a - b);
    const spares = segnosOf(1).filter((s) => s > endSegno);
    assert.ok(spares.length >= 3, `spare files past segment ${endSegno}: ${spares.join(',')}`);
    // The switch point two segments back: the WAL after it, in later segments, is the old timeline's only.
    const switchLsn = (await readAll(replica)).find((r) => r.lsn >= (endSegno - 2) * SMALL_SEGMENT + 100)?.lsn ?? 0;
    const switchSegno = Math.floor(switchLsn / SMALL_SEGMENT);
    assert.ok(switchSegno < endSegno);
    const history = branchHistory(replica.history, switchLsn, 'test promotion');
    await writeTimelineHistory(storage, history);
    await replica.beginTimeline(history);
    assert.deepEqual(segnosOf(2).filter((s) => s > endSegno), spares, 'the spare files, renamed onto timeline 2');
    assert.deepEqual(segnosOf(1).filter((s) => s > switchSegno), [], 'nothing of timeline 1 past the switch segment');
    assert.deepEqual(segnosOf(2).filter((s) => s > switchSegno && s <= endSegno), [], "the old timeline's WAL past the switch point is gone");
    // The new timeline writes on through the renamed files, and reads back after a reopen.
    const more: number[] = [];
    while (Math.floor(replica.insertLsn / SMALL_SEGMENT) <= (spares.at(-1) ?? 0)) more.push(replica.append(payload(7, 3000)).lsn);
    await replica.flush();
    await replica.close();
    const again = await openLog(storage, { timeline: 2 });
    const records = await readAll(again, switchLsn);
    assert.deepEqual(records.map((r) => r.lsn).slice(-more.length), more);
    assert.equal(again.flushedLsn, replica.flushedLsn);
    await again.close();
    await primary.close();
  });

  it('a switch at a segment boundary starts the segment afresh on the new timeline', async () => {
    const primaryStorage = new MemoryStorage();
    const storage = new MemoryStorage();
    const primary = await openLog(primaryStorage);
    // Fill segment 1 exactly: records until the next would spill into segment 2.
    while (Math.floor(primary.insertLsn / SMALL_SEGMENT) === 1) primary.append(payload(1, 4000));
    await primary.flush();
    const segment2 = 2 * SMALL_SEGMENT;
    const replica = await openLog(storage, { role: 'replica' });
    await ship(primary, replica, segment2);
    const history = await promote(storage, replica);
    assert.equal(history.entries[0]?.switchLsn, segment2);
    await appendMany(replica, 'b', 3);
    const names = await storage.list();
    assert.ok(names.includes(segmentFileName(2, 2, SMALL_SEGMENT)));
    assert.ok(!names.includes(segmentFileName(1, 2, SMALL_SEGMENT)));
    await replica.close();
    const again = await openLog(storage, { timeline: 2 });
    assert.deepEqual(prefixOf(await readAll(again, 2 * SMALL_SEGMENT)), ['b0', 'b1', 'b2']);
    await again.close();
    await primary.close();
  });

  it('a replica follows the new timeline at the switch point and holds the same bytes', async () => {
    const oldPrimaryStorage = new MemoryStorage();
    const newPrimaryStorage = new MemoryStorage();
    const followerStorage = new MemoryStorage();
    const oldPrimary = await openLog(oldPrimaryStorage);
    await appendMany(oldPrimary, 'a', 40);
    const newPrimary = await openLog(newPrimaryStorage, { role: 'replica' });
    await ship(oldPrimary, newPrimary, oldPrimary.flushedLsn);
    const follower = await openLog(followerStorage, { role: 'replica' });
    // The follower is behind: it gets the rest of timeline 1 from the new primary, historically.
    await ship(oldPrimary, follower, 10_000);
    const history = await promote(newPrimaryStorage, newPrimary);
    await appendMany(newPrimary, 'b', 30);
    const switchLsn = history.entries[0]?.switchLsn as number;

    await ship(newPrimary, follower, Number.MAX_SAFE_INTEGER, 1);
    assert.equal(follower.insertLsn, switchLsn, 'streaming timeline 1 stops at its switch point');
    await writeTimelineHistory(followerStorage, history);
    await follower.followTimeline(history);
    await ship(newPrimary, follower, Number.MAX_SAFE_INTEGER, 2);
    assert.equal(follower.flushedLsn, newPrimary.flushedLsn);
    assert.deepEqual(prefixOf(await readAll(follower)), prefixOf(await readAll(newPrimary)));
    const bytes = async (log: WalLog): Promise<Buffer> => {
      const chunks: Buffer[] = [];
      for await (const chunk of log.readBytes(log.oldestLsn)) chunks.push(chunk.data);
      return Buffer.concat(chunks);
    };
    assert.ok((await bytes(follower)).equals(await bytes(newPrimary)), 'byte-identical logs');
    for (const log of [follower, newPrimary, oldPrimary]) await log.close();
  });

  it('a reader following the log moves onto the new timeline without a gap', async () => {
    const oldPrimary = await openLog(new MemoryStorage());
    await appendMany(oldPrimary, 'a', 20);
    const storage = new MemoryStorage();
    const replica = await openLog(storage, { role: 'replica' });
    await ship(oldPrimary, replica, oldPrimary.flushedLsn);
    const seen: string[] = [];
    const abort = new AbortController();
    const reading = (async () => {
      for await (const record of replica.read(replica.oldestLsn, { follow: true, signal: abort.signal })) {
        seen.push(...prefixOf([record]));
        if (seen.length === 25) return;
      }
    })();
    await promote(storage, replica);
    await appendMany(replica, 'b', 5);
    await reading;
    assert.deepEqual(seen, [...Array.from({ length: 20 }, (_, i) => `a${i}`), ...Array.from({ length: 5 }, (_, i) => `b${i}`)]);
    await replica.close();
    await oldPrimary.close();
  });

  it('a timeline without its history file is refused', async () => {
    const storage = new MemoryStorage();
    const log = await openLog(storage);
    await appendMany(log, 'a', 2);
    await log.close();
    await assert.rejects(openLog(storage, { timeline: 3 }), { code: 'WAL_CORRUPT', message: /00000003\.history is missing/ });
  });

  it('a switch writes the new history file a moment later, at once when asked (historyFileWritten) or on close', async () => {
    for (const ask of [true, false]) {
      const { primary, replica, storage, history } = await promotedReplica();
      assert.ok(!storage.fileNames().includes('00000002.history'), 'not written during the switch');
      if (ask) {
        await replica.historyFileWritten();
        assert.ok(storage.fileNames().includes('00000002.history'));
      }
      await replica.close();
      assert.deepEqual(await readTimelineHistory(storage, 2), history);
      await primary.close();
    }
  });

  it('historyFileWritten writes the file again when the background write failed, and rejects while it cannot', async () => {
    const { primary, replica, storage, history } = await promotedReplica();
    const heal = storage.injectFault({ operation: 'open', code: 'EIO', file: /history/, times: Infinity });
    await assert.rejects(replica.historyFileWritten(), { code: 'WAL_IO' });
    await assert.rejects(replica.historyFileWritten(), { code: 'WAL_IO' });
    heal();
    await replica.historyFileWritten();
    assert.deepEqual(await readTimelineHistory(storage, 2), history);
    await replica.close();
    await primary.close();
  });

  it("restoreTimelineHistory rebuilds a history file a crash lost from the control file's switchedFrom and the parent's file", async () => {
    const storage = new MemoryStorage();
    const two = branchHistory(FIRST_TIMELINE_HISTORY, 1000, 'first');
    const three = branchHistory(two, 5000, 'second');
    await writeTimelineHistory(storage, two);
    const control: ControlData = { state: 'in-production', systemId: '0123456789abcdef', segmentSize: SMALL_SEGMENT, timeline: 3, checkpoint: null, consistentLsn: 0 };
    // Without switchedFrom (older walship, which wrote the file first), nothing is rebuilt.
    assert.equal(await restoreTimelineHistory(storage, control), false);
    const recorded = { ...control, ...switchedFromOf(three) };
    assert.equal(await restoreTimelineHistory(storage, recorded), true);
    assert.deepEqual(await readTimelineHistory(storage, 3), three);
    assert.equal(await restoreTimelineHistory(storage, recorded), false, 'a file that is there is kept');
    // Without the parent's file there is nothing to rebuild it from.
    const bare = new MemoryStorage();
    await assert.rejects(restoreTimelineHistory(bare, recorded), { code: 'WAL_CORRUPT', message: /00000003\.history and 00000002\.history are missing/ });
    // Timeline 2 branches from timeline 1, whose history is empty and has no file.
    const fromOne = { ...control, timeline: 2, ...switchedFromOf(two) };
    assert.equal(await restoreTimelineHistory(bare, fromOne), true);
    assert.deepEqual(await readTimelineHistory(bare, 2), two);
  });
});
