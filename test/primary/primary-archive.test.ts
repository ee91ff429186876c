import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MIN_SEGMENT_SIZE,
  Primary,
  WalshipError,
  segmentFileName,
  type ArchiveFailedEvent,
  type Archiver,
  type ArchiveOptions,
  type Lsn,
} from '../../src/index.js';
import { MemoryStorage, seededRandom } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { eventually } from '../helpers/primary-helpers.js';
import { payload } from '../helpers/wal.js';
import { TestArchive } from '../helpers/test-archive.js';

// Continuous archiving on a primary (#14): every completed segment goes to the archive, in
// order, survives restarts and crashes as pending work, and no WAL is removed before it is
// archived; failures are retried and reported; archive.timeoutMs ends segments.

const SEGMENT = MIN_SEGMENT_SIZE;
const segName = (segno: number, timeline = 1): string => segmentFileName(timeline, segno, SEGMENT);
const WAIT_MS = 20_000;

function openPrimary(storage: MemoryStorage, archiver: Archiver, options: Partial<ArchiveOptions> = {}): Promise<Primary> {
  return Primary.open({
    storage,
    application: new RecordingApp(),
    segmentSize: SEGMENT,
    synchronousCommit: 'local',
    archive: { mode: 'on', archiver, ...options },
  });
}

/** Waits until an asynchronous condition holds. */
async function eventuallyAsync(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Commits 8 KB batches until the flushed WAL reaches `lsn`. */
async function commitUntil(primary: Primary, lsn: Lsn): Promise<void> {
  for (let i = 0; primary.flushLsn < lsn; i++) await primary.commit(payload(i, 8000));
}

/** The bytes of a file of `storage`. */
async function fileBytes(storage: MemoryStorage, name: string): Promise<Buffer> {
  const file = await storage.open(name, { readOnly: true });
  try {
    const size = await file.size();
    const buf = Buffer.alloc(size);
    await file.read(buf, 0, size, 0);
    return buf;
  } finally {
    await file.close();
  }
}

describe('Primary archiving (archive.mode on)', () => {
  it('puts every completed segment into the archive, in order, byte for byte, and marks it done', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    const primary = await openPrimary(storage, archive);
    try {
      const done: string[] = [];
      primary.on('archive:done', (event) => done.push(event.name));
      await commitUntil(primary, 4 * SEGMENT + 100);
      await eventually(() => archive.files.has(segName(3)), WAIT_MS, 'segment 3 archived');
      assert.deepEqual(archive.puts.slice(0, 4), [segName(0), segName(1), segName(2), segName(3)].slice(archive.puts[0] === segName(0) ? 0 : 1));
      assert.ok(!archive.files.has(segName(4)), 'the segment being written is not archived');
      for (const name of archive.files.keys()) {
        assert.ok((await fileBytes(storage, name)).equals(archive.files.get(name) as Buffer), `${name} archived byte for byte`);
      }
      const names = await storage.list();
      for (const name of archive.files.keys()) {
        assert.ok(names.includes(`${name}.done`), `${name}.done`);
        assert.ok(!names.includes(`${name}.ready`), `${name}.ready is gone`);
      }
      const status = primary.archiverStatus();
      assert.equal(status.mode, 'on');
      assert.equal(status.archivedCount, archive.files.size);
      assert.equal(status.lastArchivedWal, segName(3));
      assert.ok(status.lastArchivedTime instanceof Date);
      assert.equal(status.failedCount, 0);
      assert.equal(status.pendingCount, 0);
      assert.deepEqual(done, [...archive.files.keys()]);
    } finally {
      await primary.close();
    }
  });

  it('switchWal() ends the segment at once, so that its last commit is archived', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    const primary = await openPrimary(storage, archive);
    try {
      assert.equal(await primary.switchWal(), null, 'nothing to switch from in an empty segment');
      const { lsn } = await primary.commit(Buffer.from('last words'));
      const end = await primary.switchWal();
      assert.equal(end, SEGMENT * (Math.floor(lsn / SEGMENT) + 1));
      const name = segName(Math.floor(lsn / SEGMENT));
      await eventually(() => archive.files.has(name), WAIT_MS, `${name} archived`);
      assert.ok((archive.files.get(name) as Buffer).includes(Buffer.from('last words')));
      // The next commit starts the next segment.
      const next = await primary.commit(Buffer.from('next'));
      assert.equal(Math.floor(next.lsn / SEGMENT), Math.floor(lsn / SEGMENT) + 1);
    } finally {
      await primary.close();
    }
  });

  it('never removes a segment before it is archived: a checkpoint keeps it, and removes it once archived', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    const primary = await openPrimary(storage, archive);
    try {
      archive.hold();
      await commitUntil(primary, 6 * SEGMENT);
      const checkpoint = await primary.checkpoint(primary.flushLsn);
      assert.ok(checkpoint.lsn >= 6 * SEGMENT);
      let names = await storage.list();
      for (let segno = 0; segno < 6; segno++) assert.ok(names.includes(segName(segno)) || segno === 0, `${segName(segno)} kept while unarchived`);
      const status = primary.archiverStatus();
      assert.ok(status.pendingCount >= 5, `pending ${status.pendingCount}`);
      assert.ok(status.oldestPendingWal !== null && status.oldestPendingWal <= segName(1));
      archive.release();
      await eventually(() => archive.files.has(segName(5)), WAIT_MS, 'everything archived');
      await primary.checkpoint(primary.flushLsn);
      names = await storage.list();
      assert.ok(!names.includes(segName(2)), 'archived segments go at the next checkpoint');
      await eventuallyAsync(async () => !(await storage.list()).includes(`${segName(2)}.done`), 'and their markers with them');
    } finally {
      await primary.close();
    }
  });

  it('pending archive work survives a restart: the marked segments are put after the primary reopens', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    let primary = await openPrimary(storage, archive);
    archive.hold();
    await commitUntil(primary, 3 * SEGMENT + 10);
    await eventuallyAsync(async () => (await storage.list()).includes(`${segName(2)}.ready`), 'segment 2 ready');
    await primary.close();
    archive.release();
    assert.equal(archive.files.size, 0, 'nothing was archived before the close');
    const other = new TestArchive();
    primary = await openPrimary(storage, other);
    try {
      await eventually(() => other.files.has(segName(2)), WAIT_MS, 'segment 2 archived after the restart');
      assert.ok(other.files.has(segName(1)));
    } finally {
      await primary.close();
    }
  });

  for (const when of ['before the put', 'after the put, before its marker'] as const) {
    it(`a crash ${when} loses nothing: every completed segment reaches the archive`, async () => {
      const storage = new MemoryStorage();
      const archive = new TestArchive();
      const primary = await openPrimary(storage, archive);
      if (when === 'before the put') archive.hold();
      await commitUntil(primary, 3 * SEGMENT + 10);
      if (when === 'after the put, before its marker') await eventually(() => archive.files.has(segName(2)), WAIT_MS, 'segment 2 archived');
      else await eventuallyAsync(async () => (await storage.list()).some((n) => n.endsWith('.ready')), 'a segment ready');
      const crashed = storage.crash({ unsyncedMetadata: 'lose' });
      await primary.close({ signal: AbortSignal.abort() }).catch(() => undefined);
      archive.release();
      const reopened = await openPrimary(crashed, archive);
      try {
        await commitUntil(reopened, 5 * SEGMENT);
        await eventually(() => archive.files.has(segName(4)), WAIT_MS, 'segment 4 archived');
        for (let segno = 0; segno <= 4; segno++) {
          if (segno === 0 && !archive.files.has(segName(0))) continue;
          assert.ok(archive.files.has(segName(segno)), `${segName(segno)} in the archive`);
        }
        assert.equal(reopened.archiverStatus().failedCount, 0, 'a put again of identical content succeeds');
      } finally {
        await reopened.close();
      }
    });
  }

  it('an archiver that fails half its calls loses nothing, and reports the failures', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    const random = seededRandom(14);
    archive.failing = () => random() < 0.5;
    const primary = await openPrimary(storage, archive);
    try {
      const failures: ArchiveFailedEvent[] = [];
      primary.on('archive:failed', (event) => failures.push(event));
      await commitUntil(primary, 6 * SEGMENT + 10);
      // A failed file waits for its retry while later ones go on: all of them arrive.
      await eventually(() => [1, 2, 3, 4, 5].every((segno) => archive.files.has(segName(segno))), WAIT_MS, 'every completed segment archived');
      const status = primary.archiverStatus();
      assert.ok(status.failedCount > 0, 'failures counted');
      assert.equal(status.failedCount, failures.length);
      assert.equal(failures[0]?.error.code, 'ARCHIVE_FAILED');
      assert.ok(status.lastFailedWal !== null && status.lastFailedTime instanceof Date);
      assert.ok(failures.every((f) => f.retryInMs >= 100 && f.attempts >= 1));
      // Commits never waited: the WAL went on while puts failed.
      assert.ok(primary.flushLsn > 6 * SEGMENT);
    } finally {
      await primary.close();
    }
  });

  it('a permanently failing archiver never blocks commits; what it holds back is visible', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    archive.failing = () => true;
    const primary = await openPrimary(storage, archive);
    try {
      await commitUntil(primary, 4 * SEGMENT);
      await primary.checkpoint(primary.flushLsn);
      const status = primary.archiverStatus();
      assert.ok(status.pendingCount >= 3);
      assert.equal(status.oldestPendingWal, segName(1), 'the first segment (the WAL begins one segment in)');
      assert.ok((await storage.list()).includes(segName(1)), 'kept');
      assert.equal(archive.files.size, 0);
    } finally {
      await primary.close();
    }
  });

  it('a conflict (the archive holds different bytes under the name) is reported as ARCHIVE_CONFLICT and retried', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    archive.files.set(segName(1), Buffer.from('another cluster'));
    const primary = await openPrimary(storage, archive);
    try {
      const failure = new Promise<ArchiveFailedEvent>((resolve) => primary.once('archive:failed', resolve));
      await commitUntil(primary, 3 * SEGMENT);
      const event = await failure;
      assert.equal(event.name, segName(1));
      assert.equal(event.error.code, 'ARCHIVE_CONFLICT');
      // Segment 2 goes on regardless: one failing file holds back no other segment.
      await eventually(() => archive.files.has(segName(2)), WAIT_MS, 'segment 2 archived past the conflict');
      assert.equal((archive.files.get(segName(1)) as Buffer).toString(), 'another cluster', 'never overwritten');
      await primary.checkpoint(primary.flushLsn);
      assert.ok((await storage.list()).includes(segName(1)), 'the conflicting segment stays on disk');
    } finally {
      await primary.close();
    }
  });

  it('archive.timeoutMs ends a segment with new WAL after that long (archive_timeout), and leaves an idle one alone', async () => {
    const storage = new MemoryStorage();
    const archive = new TestArchive();
    const primary = await openPrimary(storage, archive, { timeoutMs: 50 });
    try {
      const { lsn } = await primary.commit(Buffer.from('a trickle'));
      const name = segName(Math.floor(lsn / SEGMENT));
      await eventually(() => archive.files.has(name), WAIT_MS, 'the segment archived after the timeout');
      const archived = archive.files.size;
      const insert = primary.currentLsn;
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(primary.currentLsn, insert, 'no switch without new WAL');
      assert.equal(archive.files.size, archived);
    } finally {
      await primary.close();
    }
  });

  it('refuses archive options without an archiver, and bad ones, with INVALID_OPTIONS', async () => {
    for (const archive of [{ mode: 'on' }, { mode: 'always', archiver: {} }, { mode: 'sometimes', archiver: new TestArchive() }, { mode: 'on', archiver: new TestArchive(), timeoutMs: -1 }]) {
      await assert.rejects(
        Primary.open({ storage: new MemoryStorage(), application: new RecordingApp(), archive: archive as ArchiveOptions }),
        (err: WalshipError) => err.code === 'INVALID_OPTIONS',
      );
    }
    const off = await Primary.open({ storage: new MemoryStorage(), application: new RecordingApp(), archive: { mode: 'off' } });
    assert.equal(off.archiverStatus().mode, 'off');
    await off.close();
  });
});
