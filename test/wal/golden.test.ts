import assert from 'node:assert/strict';
import { cp, readFile, readdir, writeFile } from 'node:fs/promises';
import crc32c from 'fast-crc32c';
import { describe, it } from 'node:test';
import { Primary, WalLog, formatLsn, isWalshipError } from '../../src/index.js';
import { branchHistory, parseTimelineHistory } from '../../src/wal/timeline-history.js';
import { timelineTwoRecords } from '../fixtures/timeline2-records.js';
import { RecordingApp } from '../helpers/apps.js';
import { goldenRecords } from '../fixtures/wal-v1-records.js';
import { goldenV2Records } from '../fixtures/wal-v2-records.js';
import { tempDir } from '../helpers/temp-dir.js';
import { readAll } from '../helpers/wal.js';
import { readSegmentHeader } from '../../src/wal/record.js';

/** The format version in the header of segment file `name` of `dir`. */
async function segmentVersion(dir: string, name: string): Promise<number | undefined> {
  return readSegmentHeader(await readFile(`${dir}/${name}`), 0)?.formatVersion;
}

describe('golden on-disk fixtures', () => {
  it('reads format version 1 exactly as it was written, and appends after it', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await cp(new URL('../fixtures/wal-v1', import.meta.url), dir, { recursive: true });
      const log = await WalLog.open({ dir });
      assert.equal(log.segmentSize, 64 * 1024);
      const records = await readAll(log);
      const expected = goldenRecords();
      assert.deepEqual(
        records.map((r) => r.entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel }))),
        expected.map((batch) => batch.map((e) => ({ data: Buffer.from(e.data), channel: e.channel }))),
      );
      // Positions are part of the format: the first record, and the one after the segment switch.
      assert.equal(formatLsn(records[0]?.lsn ?? 0), '0/10020');
      assert.equal(formatLsn(records.at(-2)?.lsn ?? 0), '0/20020');
      assert.equal(formatLsn(records.at(-1)?.lsn ?? 0), '0/22378');
      assert.equal(formatLsn(log.insertLsn), formatLsn(records.at(-1)?.endLsn ?? 0));
      assert.equal(formatLsn(log.insertLsn), '0/223C0');
      assert.ok(records.every((r) => r.commitTime === null), 'format 1 has no commit times');
      log.append(Buffer.from('new'));
      await log.close();
    } finally {
      await cleanup();
    }
  });

  it('reads format version 2 exactly as it was written: commit times and restore points', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await cp(new URL('../fixtures/wal-v2', import.meta.url), dir, { recursive: true });
      assert.equal(await segmentVersion(dir, '000000010000000000000001'), 2);
      const log = await WalLog.open({ dir });
      assert.equal(log.segmentSize, 64 * 1024);
      const read = [];
      for await (const r of log.read(log.oldestLsn, { restorePoints: true })) read.push(r);
      const expected = goldenV2Records();
      assert.deepEqual(
        read.map((r) =>
          r.kind === 'batch'
            ? { kind: r.kind, entries: r.entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })), commitTime: r.commitTime }
            : { kind: r.kind, name: r.name, time: r.time },
        ),
        expected.map((r) =>
          r.kind === 'batch'
            ? { kind: r.kind, entries: r.entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })), commitTime: r.commitTime }
            : r,
        ),
      );
      // Positions are part of the format: the first record, a restore point, the one after the segment switch.
      assert.deepEqual(
        [read[0], read[2], read.at(-4), read.at(-1)].map((r) => formatLsn(r?.lsn ?? 0)),
        ['0/10020', '0/100A8', '0/20020', '0/22420'],
      );
      assert.equal(formatLsn(log.insertLsn), '0/22490', 'after the last batch, the shutdown record');
      // Without being asked for them a reader yields batches only.
      assert.equal((await readAll(log)).length, expected.filter((r) => r.kind === 'batch').length);
      log.append(Buffer.from('new'));
      await log.close();
    } finally {
      await cleanup();
    }
  });

  it('continues a format-1 log in a new format-2 segment: the last format-1 segment is ended, and both read back', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await cp(new URL('../fixtures/wal-v1', import.meta.url), dir, { recursive: true });
      const log = await WalLog.open({ dir, clock: () => Date.UTC(2025, 5, 1) });
      assert.equal(formatLsn(log.insertLsn), '0/223C0', 'the format-1 log ends inside its segment 2');
      const appended = log.append(Buffer.from('written after the upgrade'));
      const point = log.appendRestorePoint('after-upgrade');
      assert.equal(formatLsn(appended.lsn), '0/30020', 'the first format-2 record starts segment 3, after its header');
      assert.equal(appended.commitTime, Date.UTC(2025, 5, 1));
      assert.ok(point.lsn === appended.endLsn);
      await log.close();
      assert.equal(await segmentVersion(dir, '000000010000000000000002'), 1);
      assert.equal(await segmentVersion(dir, '000000010000000000000003'), 2);

      const reopened = await WalLog.open({ dir });
      const read = [];
      for await (const r of reopened.read(reopened.oldestLsn, { restorePoints: true })) read.push(r);
      const batches = read.filter((r) => r.kind === 'batch');
      assert.equal(batches.length, goldenRecords().length + 1);
      assert.ok(batches.slice(0, -1).every((r) => r.commitTime === null), 'the format-1 batches have no commit time');
      assert.equal(batches.at(-1)?.commitTime, Date.UTC(2025, 5, 1));
      assert.deepEqual(read.at(-1), { kind: 'restore-point', lsn: point.lsn, endLsn: point.endLsn, timeline: 1, name: 'after-upgrade', time: Date.UTC(2025, 5, 1) });

      // A replica that receives these bytes verbatim (as a standby does) reads both formats too.
      const { dir: replicaDir, cleanup: cleanupReplica } = await tempDir();
      try {
        const replica = await WalLog.open({ dir: replicaDir, segmentSize: 64 * 1024, role: 'replica' });
        for await (const chunk of reopened.readBytes(replica.insertLsn)) replica.writeBytes(chunk.startLsn, chunk.data);
        await replica.flush();
        const copied = [];
        for await (const r of replica.read(replica.oldestLsn, { restorePoints: true })) copied.push(r);
        assert.deepEqual(
          copied.map((r) => [r.kind, r.lsn, r.kind === 'batch' ? r.commitTime : r.name]),
          read.map((r) => [r.kind, r.lsn, r.kind === 'batch' ? r.commitTime : r.name]),
        );
        await replica.close();
      } finally {
        await cleanupReplica();
      }
      await reopened.close();
    } finally {
      await cleanup();
    }
  });

  it('refuses a segment of a later format version with WAL_FORMAT, at open and when a replica receives one', async () => {
    const { dir, cleanup } = await tempDir();
    const { dir: replicaDir, cleanup: cleanupReplica } = await tempDir();
    try {
      await cp(new URL('../fixtures/wal-v2', import.meta.url), dir, { recursive: true });
      const first = await readFile(`${dir}/000000010000000000000001`);
      const second = await readFile(`${dir}/000000010000000000000002`);
      second.writeUInt16LE(3, 8);
      second.writeUInt32LE(crc32c.calculate(second.subarray(4, 32)), 0);
      await writeFile(`${dir}/000000010000000000000002`, second);
      await assert.rejects(WalLog.open({ dir }), (err) => isWalshipError(err, 'WAL_FORMAT') && /version 3; this walship reads versions 1 to 2/.test(err.message));

      // A replica checked its segments at open; one received later is checked when it is read.
      const replica = await WalLog.open({ dir: replicaDir, segmentSize: 64 * 1024, role: 'replica' });
      replica.writeBytes(64 * 1024, first);
      replica.writeBytes(2 * 64 * 1024, second.subarray(0, 0x2490));
      await replica.flush();
      const reading = (async () => {
        for await (const record of replica.read(replica.oldestLsn)) void record;
      })();
      await assert.rejects(reading, (err) => isWalshipError(err, 'WAL_FORMAT'));
      await replica.close();
    } finally {
      await cleanupReplica();
      await cleanup();
    }
  });

  it('a replica of a format-1 log promoted: its end-of-recovery record goes into the format-1 segment, its first batch into a new one', async () => {
    const { dir, cleanup } = await tempDir();
    const { dir: replicaDir, cleanup: cleanupReplica } = await tempDir();
    try {
      await cp(new URL('../fixtures/wal-v1', import.meta.url), dir, { recursive: true });
      const source = await WalLog.open({ dir });
      const replica = await WalLog.open({ dir: replicaDir, segmentSize: 64 * 1024, role: 'replica', clock: () => 1_750_000_000_000 });
      for await (const chunk of source.readBytes(replica.insertLsn)) replica.writeBytes(chunk.startLsn, chunk.data);
      await replica.flush();
      await source.close();
      const { end } = await replica.endOfRecords(replica.oldestLsn);
      const endOfRecovery = await replica.beginTimeline(branchHistory(replica.history, end, 'promoted by the test'));
      assert.equal(endOfRecovery, end + 32, 'the end-of-recovery record (the same in both formats) follows at once');
      const first = replica.append(Buffer.from('first on timeline 2'));
      assert.equal(formatLsn(first.lsn), '0/30020', 'the first batch starts a format-2 segment');
      await replica.close();
      assert.equal(await segmentVersion(replicaDir, '000000020000000000000002'), 1);
      assert.equal(await segmentVersion(replicaDir, '000000020000000000000003'), 2);
      const reopened = await WalLog.open({ dir: replicaDir });
      const records = await readAll(reopened);
      assert.equal(records.length, goldenRecords().length + 1);
      assert.deepEqual([records.at(-1)?.timeline, records.at(-1)?.commitTime], [2, 1_750_000_000_000]);
      await reopened.close();
    } finally {
      await cleanupReplica();
      await cleanup();
    }
  });

  it('reads a timeline-2 data directory: both timelines along the history, the old switch segment set aside', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await cp(new URL('../fixtures/timeline2', import.meta.url), dir, { recursive: true });
      const history = parseTimelineHistory(2, await readFile(`${dir}/00000002.history`, 'utf8'));
      assert.deepEqual(history.entries.map((e) => [e.timeline, formatLsn(e.switchLsn), e.reason]), [[1, '0/2FA18', 'promoted by the golden fixture']]);
      const { before, after } = timelineTwoRecords();
      // The last batch of timeline 1 had arrived only in part: the promotion cut it.
      const expected = [...before.slice(0, -1), ...after].map((batch) => Buffer.from(batch[0] ?? []).toString());
      const log = await WalLog.open({ dir });
      assert.equal(log.timeline, 2);
      const records = await readAll(log);
      assert.deepEqual(records.map((r) => Buffer.from(r.entries[0]?.data ?? []).toString()), expected);
      assert.ok(records.every((r) => r.timeline === (r.lsn < 0x2fa18 ? 1 : 2)));
      assert.equal(log.segmentName(0x2fa18), '000000020000000000000002');
      assert.equal(log.segmentName(0x1ffff), '000000010000000000000001');
      await log.close();

      const app = new RecordingApp();
      const primary = await Primary.open({ dir, application: app });
      assert.equal(primary.timeline, 2);
      assert.deepEqual(app.applied.map((b) => Buffer.from(b.entries[0] ?? '', 'hex').toString()), expected);
      await primary.commit([Buffer.from('three')]);
      await primary.close();
      assert.ok((await readdir(dir)).includes('000000010000000000000002.partial'));
    } finally {
      await cleanup();
    }
  });
});
