import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MIN_SEGMENT_SIZE, Primary, Standby, segmentFileName, type Lsn } from '../../src/index.js';
import { createCluster, MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { holdDatasyncs } from '../helpers/hold-datasyncs.js';
import { TestArchive } from '../helpers/test-archive.js';
import { HANG_MS, codeOf, commitMany, named, record, replayedTo, sameSequence } from '../helpers/standby-harness.js';
import { within } from '../helpers/wal.js';
import { readControlFile } from '../../src/node/control-file.js';

// Standbys that restore WAL from an archive (#14): archive-only (file-based log shipping),
// archive then stream, back to the archive when the primary no longer has the WAL.

const SEGMENT = MIN_SEGMENT_SIZE;
const segName = (segno: number, timeline = 1): string => segmentFileName(timeline, segno, SEGMENT);

async function archivingPrimary(archive: TestArchive, storage = new MemoryStorage()): Promise<{ primary: Primary; app: RecordingApp; storage: MemoryStorage }> {
  const app = new RecordingApp();
  const primary = await Primary.open({ storage, application: app, segmentSize: SEGMENT, synchronousCommit: 'local', archive: { mode: 'on', archiver: archive } });
  return { primary, app, storage };
}

/**
 * An archiving primary (closed after the test), `commitsFirst` commits, then a base backup:
 * the directory an archive-only standby opens on.
 */
async function backedUpPrimary(
  t: { after(fn: () => Promise<void>): unknown },
  archive: TestArchive,
  commitsFirst = 0,
): Promise<{ primary: Primary; app: RecordingApp; backup: MemoryStorage; backupLsn: Lsn }> {
  const { primary, app } = await archivingPrimary(archive);
  t.after(() => primary.close());
  if (commitsFirst > 0) await commitMany(primary, 0, commitsFirst);
  const backup = new MemoryStorage();
  const { lsn: backupLsn } = await primary.baseBackup({ storage: backup });
  return { primary, app, backup, backupLsn };
}

/** Waits (with the hang guard) until `condition` holds, polling every 5 ms. */
async function waitUntil(condition: () => boolean, what: string): Promise<void> {
  await within(
    (async () => {
      while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
    })(),
    HANG_MS,
    what,
  );
}

/** The highest segment end the archive holds, on timeline 1. */
function archivedEnd(archive: TestArchive): Lsn {
  let end = 0;
  for (const name of archive.files.keys()) {
    if (!/^[0-9A-F]{24}$/.test(name)) continue;
    const segno = Number.parseInt(name.slice(16), 16) + Number.parseInt(name.slice(8, 16), 16) * (2 ** 32 / SEGMENT);
    end = Math.max(end, (segno + 1) * SEGMENT);
  }
  return end;
}

describe('Standby restoring from an archive', () => {
  it('an archive-only standby catches up from a base backup and follows, never ahead of the archive', async (t) => {
    const archive = new TestArchive();
    const { primary, app, backup, backupLsn } = await backedUpPrimary(t, archive, 20);
    const standbyApp = new RecordingApp();
    const standby = await Standby.open({ storage: backup, application: standbyApp, restore: archive, restoreIntervalMs: 10 });
    t.after(() => standby.close());
    const events = record(standby);
    // Whatever it has replayed was in the archive (never data from a segment not yet archived).
    let overrun: string | null = null;
    const check = setInterval(() => {
      const replayed = standby.replayLsn ?? 0;
      if (replayed > Math.max(backupLsn, archivedEnd(archive)) && overrun === null) overrun = `replayed ${replayed} past the archive's end ${archivedEnd(archive)}`;
    }, 1);
    t.after(() => clearInterval(check));
    const end = await commitMany(primary, 20, 300);
    assert.ok((standby.replayLsn ?? 0) < end, 'not everything is archived yet');
    await primary.switchWal();
    await replayedTo(standby, end, 'the standby to restore up to the switched segment');
    const more = await commitMany(primary, 320, 100);
    await primary.switchWal();
    await replayedTo(standby, more, 'the standby to follow the next segments');
    clearInterval(check);
    assert.equal(overrun, null);
    sameSequence(standbyApp.applied, app.applied, 'the snapshot, then every restored batch');
    assert.equal(standby.state, 'restoring');
    assert.ok(named(events, 'archive:restored').length >= 3);
    assert.deepEqual(named(events, 'primary:connected'), []);
  });

  it('an archive-only standby needs a base backup: an empty directory is BASE_BACKUP_REQUIRED', async () => {
    assert.equal(await codeOf(Standby.open({ storage: new MemoryStorage(), application: new RecordingApp(), restore: new TestArchive() })), 'BASE_BACKUP_REQUIRED');
    assert.equal(await codeOf(Standby.open({ storage: new MemoryStorage(), application: new RecordingApp() } as never)), 'INVALID_OPTIONS');
    assert.equal(await codeOf(Standby.open({ storage: new MemoryStorage(), application: new RecordingApp(), restore: {} as never })), 'INVALID_OPTIONS');
  });

  it('a damaged segment in the archive is refused whole (ARCHIVE_FAILED) and restored once the archive holds a good copy', async (t) => {
    const archive = new TestArchive();
    const { primary, app, backup } = await backedUpPrimary(t, archive, 5);
    const end = await commitMany(primary, 5, 200);
    await primary.switchWal();
    const damagedName = segName(Math.floor(end / SEGMENT));
    await waitUntil(() => archive.files.has(damagedName), 'the last segment archived');
    const good = archive.files.get(damagedName) as Buffer;
    const bad = Buffer.from(good);
    // In the payload of the segment's first record (past the segment's last record nothing is checked: nothing is used).
    bad[100] = (bad[100] as number) ^ 0xff;
    archive.files.set(damagedName, bad);
    const standbyApp = new RecordingApp();
    const standby = await Standby.open({ storage: backup, application: standbyApp, restore: archive, restoreIntervalMs: 10 });
    t.after(() => standby.close());
    await waitUntil(() => standby.lastError?.code === 'ARCHIVE_FAILED', 'the damaged segment refused');
    assert.match(standby.lastError?.message ?? '', new RegExp(damagedName));
    assert.ok((standby.replayLsn ?? 0) < Math.floor(end / SEGMENT) * SEGMENT + 1, 'nothing of the damaged segment applied');
    archive.files.set(damagedName, good);
    await replayedTo(standby, end, 'the good copy restored');
    sameSequence(standbyApp.applied, app.applied);
  });

  it('archive + streaming: a standby keeps up through a lost primary connection, and through WAL_REMOVED from the archive', async (t) => {
    const cluster = createCluster(t);
    const archive = new TestArchive();
    const app = new RecordingApp();
    const primary = await cluster.primary('p', { application: app, synchronousCommit: 'local', archive: { mode: 'on', archiver: archive } });
    await commitMany(primary, 0, 10);
    const standbyApp = new RecordingApp();
    const storage = cluster.storage('s1');
    let standby = await cluster.standby('s1', { upstream: primary, application: standbyApp, restore: archive, restoreIntervalMs: 10 });
    let end = await commitMany(primary, 10, 50);
    await replayedTo(standby, end, 'streaming');
    // The standby goes away; the primary moves on, archives, and removes the WAL it no longer needs.
    await standby.close();
    end = await commitMany(primary, 60, 400);
    await primary.switchWal();
    await waitUntil(() => primary.archiverStatus().pendingCount === 0 && archivedEnd(archive) >= end, 'everything archived');
    await primary.checkpoint(primary.appliedLsn);
    assert.ok(primary.wal.oldestLsn > (standby.receiveLsn ?? 0), 'the primary no longer has what the standby needs');
    standby = await cluster.standby('s1', { upstream: primary, application: standbyApp, storage, restore: archive, restoreIntervalMs: 10 });
    const events = record(standby);
    const after = await commitMany(primary, 460, 20);
    await replayedTo(standby, after, 'restored from the archive, then streamed');
    assert.deepEqual(named(events, 'rebootstrap'), [], 'never bootstrapped again');
    assert.ok(named(events, 'archive:restored').length > 0);
    assert.equal(standby.state, 'streaming');
    sameSequence(standbyApp.applied, app.applied);
  });

  it("archive.mode 'always' on a standby archives what it receives; one archive shared with the primary holds each segment once", async (t) => {
    const cluster = createCluster(t);
    const archive = new TestArchive();
    const primary = await cluster.primary('p', { application: new RecordingApp(), synchronousCommit: 'local', archive: { mode: 'on', archiver: archive } });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), archive: { mode: 'always', archiver: archive } });
    await standby.waitForConsistent();
    const end = await commitMany(primary, 0, 400);
    await primary.switchWal();
    await replayedTo(standby, end, 'streaming');
    const last = segName(Math.floor(end / SEGMENT));
    await waitUntil(() => standby.archiverStatus().lastArchivedWal === last && primary.archiverStatus().lastArchivedWal === last, 'both archived the last segment');
    assert.equal(primary.archiverStatus().failedCount, 0);
    assert.equal(standby.archiverStatus().failedCount, 0, 'identical puts succeed');
    assert.ok(standby.archiverStatus().archivedCount >= 3, JSON.stringify(standby.archiverStatus()) + JSON.stringify(archive.puts));
    const puts = new Map<string, number>();
    for (const name of archive.puts) puts.set(name, (puts.get(name) ?? 0) + 1);
    assert.ok([...puts.values()].every((n) => n <= 2), 'each node put each segment once');
  });

  it("archive.mode 'always' with early WAL: a segment the primary confirms after the standby flushed it is archived", async (t) => {
    const cluster = createCluster(t);
    const own = new TestArchive();
    // The primary's syncs are slow: the standby has flushed what it was sent early well before
    // the primary says it is durable.
    const slow = new MemoryStorage();
    slow.slowDatasync(20);
    const primary = await cluster.primary('p', { storage: slow, application: new RecordingApp(), synchronousCommit: 'local', earlySend: true });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), acceptEarlyWal: true, archive: { mode: 'always', archiver: own } });
    await standby.waitForConsistent();
    // Each round ends a segment and then goes quiet: no later WAL (and no later flush) comes to
    // mark it complete on the standby, only the primary's word that it is durable.
    for (let round = 0; round < 5; round++) {
      const end = await commitMany(primary, round * 10, 10);
      await primary.switchWal();
      await replayedTo(standby, end, `round ${round}`);
      const last = segName(Math.floor(end / SEGMENT));
      await waitUntil(() => standby.archiverStatus().lastArchivedWal === last, `round ${round}: the standby archived ${last}`);
    }
    assert.equal(standby.archiverStatus().failedCount, 0);
  });

  it("archive.mode 'always' with early WAL: a restarted standby archives no segment its primary has not confirmed", async (t) => {
    const cluster = createCluster(t);
    const own = new TestArchive();
    const primaryStorage = new MemoryStorage();
    const gate = holdDatasyncs(primaryStorage, { holding: false });
    const primary = await cluster.primary('p', { storage: primaryStorage, application: new RecordingApp(), synchronousCommit: 'local', earlySend: true });
    const options = { upstream: primary, application: new RecordingApp(), acceptEarlyWal: true, archive: { mode: 'always' as const, archiver: own } };
    let standby = await cluster.standby('s1', options);
    await standby.waitForConsistent();
    await replayedTo(standby, await commitMany(primary, 0, 10), 'streaming');
    // The primary's syncs hang: a segment ends and reaches the standby, which flushes it, but
    // the primary never says it is durable before the standby stops.
    gate.hold();
    t.after(() => gate.stop());
    const committing = commitMany(primary, 10, 10);
    const segno = Math.floor(primary.currentLsn / SEGMENT);
    const switching = primary.switchWal();
    await waitUntil(() => (standby.receiveLsn ?? 0) >= (segno + 1) * SEGMENT, 'the standby to flush the unconfirmed segment');
    await standby.close();
    // Opened again, its archiver must not take that segment for a complete one.
    standby = await cluster.standby('s1', options);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(own.files.has(segName(segno)), false, 'a segment the primary never confirmed was archived');
    // Once the primary confirms it, it is archived.
    gate.stop();
    await committing;
    await switching;
    await waitUntil(() => own.files.has(segName(segno)), `${segName(segno)} to be archived once confirmed`);
  });

  it("archive.mode 'on' on a standby archives nothing it receives", async (t) => {
    const cluster = createCluster(t);
    const archive = new TestArchive();
    const primary = await cluster.primary('p', { application: new RecordingApp(), synchronousCommit: 'local' });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), archive: { mode: 'on', archiver: archive } });
    const end = await commitMany(primary, 0, 300);
    await replayedTo(standby, end, 'streaming');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(archive.files.size, 0);
    assert.equal(standby.archiverStatus().pendingCount, 0);
  });
});

describe('Timelines through the archive', () => {
  it('a promotion archives its history file and the .partial segment; an archive-only standby follows the new timeline; a second promotion elsewhere picks a higher timeline', async (t) => {
    const cluster = createCluster(t);
    const archive = new TestArchive();
    const app = new RecordingApp();
    const p = await cluster.primary('p', { application: app, synchronousCommit: 'local', archive: { mode: 'on', archiver: archive } });
    const s1App = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: s1App, restore: archive, archive: { mode: 'on', archiver: archive } });
    const s2 = await cluster.standby('s2', { upstream: p, application: new RecordingApp(), restore: archive, archive: { mode: 'on', archiver: archive } });
    await Promise.all([s1.waitForConsistent(), s2.waitForConsistent()]);
    await commitMany(p, 0, 5);
    const backup = new MemoryStorage();
    await p.baseBackup({ storage: backup });
    const s3App = new RecordingApp();
    const s3 = await Standby.open({ storage: backup, application: s3App, restore: archive, restoreIntervalMs: 10 });
    t.after(() => s3.close());
    const s3Events = record(s3);
    const end = await commitMany(p, 5, 300);
    await replayedTo(s1, end, 's1 to replay');
    await replayedTo(s2, end, 's2 to replay');
    await p.close();
    const primary = await within(s1.promote(), HANG_MS, 'the promotion of s1');
    t.after(() => primary.close());
    assert.equal(primary.timeline, 2);
    const switchLsn = primary.wal.history.entries[0]?.switchLsn as Lsn;
    const after = await commitMany(primary, 1000, 200);
    await primary.switchWal();
    const partial = `${segName(Math.floor(switchLsn / SEGMENT))}.partial`;
    await waitUntil(() => archive.files.has('00000002.history') && archive.files.has(partial), 'the history file and the .partial segment archived');
    // The history file went before any segment of timeline 2.
    const historyAt = archive.puts.indexOf('00000002.history');
    const firstTimeline2 = archive.puts.findIndex((name) => name.startsWith('00000002') && name !== '00000002.history');
    assert.ok(historyAt >= 0 && historyAt < firstTimeline2, `history at ${historyAt}, first segment of timeline 2 at ${firstTimeline2}`);
    // The archive-only standby follows timeline 2 at the switch point and replays its commits.
    await replayedTo(s3, after, 's3 to restore timeline 2');
    assert.equal(s3.timeline, 2);
    assert.deepEqual(named(s3Events, 'timeline:switch'), [{ timeline: 2, switchLsn }]);
    sameSequence(s3App.applied, s1App.applied.filter((b) => b.lsn <= after));
    // s2 never saw timeline 2; promoted too (a split brain), it picks one past what the archive holds.
    const other = await within(s2.promote(), HANG_MS, 'the promotion of s2');
    t.after(() => other.close());
    assert.equal(other.timeline, 3);
  });

  it('archiveCleanup removes the archived segments before the restartpoint, keeps history files, and the standby restarts from what is left', async (t) => {
    const archive = new TestArchive();
    const { primary, app, backup } = await backedUpPrimary(t, archive, 5);
    archive.files.set('00000009.history', Buffer.from('kept'));
    let end = await commitMany(primary, 5, 500);
    await primary.switchWal();
    const standbyApp = new RecordingApp();
    let standby = await Standby.open({ storage: backup, application: standbyApp, restore: archive, restoreIntervalMs: 10, archiveCleanup: true });
    await replayedTo(standby, end, 'restored');
    const { lsn } = await standby.checkpoint();
    const keep = Math.floor(lsn / SEGMENT);
    const segments = [...archive.files.keys()].filter((name) => /^[0-9A-F]{24}$/.test(name)).sort();
    assert.equal(segments[0], segName(keep), 'everything before the restartpoint segment removed, that one kept');
    assert.ok(archive.removed.length > 0);
    assert.ok(archive.files.has('00000009.history'), 'history files stay');
    await standby.close();
    end = await commitMany(primary, 505, 100);
    await primary.switchWal();
    standby = await Standby.open({ storage: backup, application: standbyApp, restore: archive, restoreIntervalMs: 10 });
    t.after(() => standby.close());
    await replayedTo(standby, end, 'restarted from what the archive kept');
    sameSequence(standbyApp.applied, app.applied);
  });

  it('archiveCleanup as a function is told the oldest segment to keep; true without remove() is INVALID_OPTIONS', async (t) => {
    const archive = new TestArchive();
    const { primary, backup } = await backedUpPrimary(t, archive);
    const end = await commitMany(primary, 0, 200);
    await primary.switchWal();
    const told: string[] = [];
    const standby = await Standby.open({ storage: backup, application: new RecordingApp(), restore: archive, restoreIntervalMs: 10, archiveCleanup: ({ keepSegment }) => void told.push(keepSegment) });
    t.after(() => standby.close());
    await replayedTo(standby, end, 'restored');
    const { lsn } = await standby.checkpoint();
    assert.deepEqual(told, [segName(Math.floor(lsn / SEGMENT))]);
    assert.equal(archive.removed.length, 0);
    const { remove: _, ...withoutRemove } = { ...archive, get: archive.get.bind(archive), put: archive.put.bind(archive), list: archive.list.bind(archive), remove: undefined };
    assert.equal(await codeOf(Standby.open({ storage: new MemoryStorage(), application: new RecordingApp(), restore: withoutRemove, archiveCleanup: true })), 'INVALID_OPTIONS');
  });
});

describe('archive.timeoutMs and an archive-only standby', () => {
  it('under a trickle of commits that never fills a segment, archive.timeoutMs ends segments so that an archive-only standby replays every commit', async (t) => {
    const archive = new TestArchive();
    const app = new RecordingApp();
    const primary = await Primary.open({ storage: new MemoryStorage(), application: app, segmentSize: SEGMENT, synchronousCommit: 'local', archive: { mode: 'on', archiver: archive, timeoutMs: 30 } });
    t.after(() => primary.close());
    const backup = new MemoryStorage();
    await primary.baseBackup({ storage: backup });
    const standbyApp = new RecordingApp();
    const standby = await Standby.open({ storage: backup, application: standbyApp, restore: archive, restoreIntervalMs: 10 });
    t.after(() => standby.close());
    for (let i = 0; i < 4; i++) {
      const { lsn } = await primary.commit(Buffer.from(`trickle ${i}`));
      // Each commit alone in its segment would wait for ~64 KiB more WAL without the timeout.
      await replayedTo(standby, lsn, `trickle commit ${i} on the archive-only standby`);
    }
    sameSequence(standbyApp.applied, app.applied);
    assert.ok(primary.archiverStatus().archivedCount >= 4);
  });
});

describe('Promoting a standby that restores from an archive', () => {
  it('restores what the archive holds before it promotes (PostgreSQL does too): the new primary has every archived commit', async (t) => {
    const archive = new TestArchive();
    const { primary, app, backup } = await backedUpPrimary(t, archive);
    const standbyApp = new RecordingApp();
    // It looks in the archive once at open, then not for a minute.
    const standby = await Standby.open({ storage: backup, application: standbyApp, restore: archive, restoreIntervalMs: 60_000 });
    const end = await commitMany(primary, 0, 300);
    await primary.switchWal();
    await waitUntil(() => primary.archiverStatus().pendingCount === 0 && archivedEnd(archive) > end, 'everything archived');
    assert.ok((standby.replayLsn ?? 0) < end, 'the standby has not looked again yet');
    await primary.close();
    const promoted = await within(standby.promote(), HANG_MS, 'the promotion');
    t.after(() => promoted.close());
    assert.ok(promoted.wal.history.entries[0]?.switchLsn !== undefined && promoted.wal.history.entries[0].switchLsn > end);
    sameSequence(standbyApp.applied, app.applied);
  });
});

describe('The .partial segment after a promotion', () => {
  for (const archiving of [false, true]) {
    it(`a checkpoint past it removes the .partial segment${archiving ? ' once it is archived, not before' : ''}`, async (t) => {
      const cluster = createCluster(t);
      const archive = new TestArchive();
      const p = await cluster.primary('p', { application: new RecordingApp(), synchronousCommit: 'local' });
      const s1 = await cluster.standby('s1', { upstream: p, application: new RecordingApp(), ...(archiving ? { archive: { mode: 'on' as const, archiver: archive } } : {}) });
      await s1.waitForConsistent();
      const end = await commitMany(p, 0, 150);
      await replayedTo(s1, end, 's1 to replay');
      await p.close();
      if (archiving) archive.failing = (name) => name.endsWith('.partial');
      const primary = await within(s1.promote(), HANG_MS, 'the promotion');
      t.after(() => primary.close());
      const switchLsn = primary.wal.history.entries[0]?.switchLsn as Lsn;
      const partial = `${segName(Math.floor(switchLsn / SEGMENT))}.partial`;
      const storage = cluster.storage('s1');
      await waitUntil(() => storage.fileNames().includes(partial), 'the .partial segment kept');
      await commitMany(primary, 1000, 300);
      if (archiving) {
        await waitUntil(() => primary.archiverStatus().lastFailedWal === partial, 'the .partial refused by the archive');
        await primary.checkpoint(primary.appliedLsn);
        assert.ok(storage.fileNames().includes(partial), 'kept while the archive does not hold it');
        archive.failing = null;
        await waitUntil(() => archive.files.has(partial), 'the .partial archived');
      }
      await primary.checkpoint(primary.appliedLsn);
      assert.ok(!storage.fileNames().includes(partial), 'removed by the checkpoint');
    });
  }
});

describe('What the archive must match', () => {
  it("a segment whose bytes differ from the part of it the standby already holds is refused (another cluster's WAL under the same name)", async (t) => {
    const cluster = createCluster(t);
    const archive = new TestArchive();
    const p = await cluster.primary('p', { application: new RecordingApp(), synchronousCommit: 'local' });
    const storage = cluster.storage('s1');
    let s1 = await cluster.standby('s1', { upstream: p, application: new RecordingApp() });
    await s1.waitForConsistent();
    const end = await commitMany(p, 0, 150);
    await replayedTo(s1, end, 's1 to replay');
    const receiveLsn = s1.receiveLsn as Lsn;
    assert.ok(receiveLsn % SEGMENT > 1024, 'the standby ends inside a segment');
    await s1.close();
    // Another cluster's segment of the same number, a valid one, in the archive.
    const other = new TestArchive();
    const { primary: p2 } = await archivingPrimary(other);
    t.after(() => p2.close());
    const name = segName(Math.floor(receiveLsn / SEGMENT));
    while (!other.files.has(name)) {
      await commitMany(p2, 0, 50, 900);
      await p2.switchWal();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    archive.files.set(name, other.files.get(name) as Buffer);
    await p.close();
    s1 = await Standby.open({ storage, application: new RecordingApp(), restore: archive, restoreIntervalMs: 10 });
    t.after(() => s1.close());
    await waitUntil(() => s1.lastError?.code === 'ARCHIVE_FAILED', 'the foreign segment refused');
    assert.match(s1.lastError?.message ?? '', /differs from this standby's WAL/);
    assert.equal(s1.receiveLsn, receiveLsn, 'nothing of it written');
  });

  it("a former primary opened as an archive-only standby records itself as a standby before it moves onto the archive's new timeline, and not while it has nothing to compare", async (t) => {
    const cluster = createCluster(t);
    const archive = new TestArchive();
    const pApp = new RecordingApp();
    const p = await cluster.primary('p', { application: pApp, synchronousCommit: 'local' });
    const sApp = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: sApp, archive: { mode: 'on', archiver: archive } });
    await s1.waitForConsistent();
    const end = await commitMany(p, 0, 150);
    await replayedTo(s1, end, 's1 to replay');
    await p.close();
    const promoted = await within(s1.promote(), HANG_MS, 'the promotion');
    t.after(() => promoted.close());
    await waitUntil(() => archive.files.has('00000002.history'), 'the history file archived');
    // The old primary's directory, as an archive-only standby, while no segment of timeline 2 is archived.
    const oldStorage = cluster.storage('p');
    let old = await Standby.open({ storage: oldStorage, application: new RecordingApp(), restore: archive, restoreIntervalMs: 10 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await old.close();
    const control = await readControlFile(oldStorage);
    assert.equal(control?.timeline, 1, 'still on timeline 1');
    assert.equal(control?.state, 'shut-down', 'still a primary that was shut down');
    // Once the switch segment is archived, it compares, says "standby", follows, and replays timeline 2.
    const after = await commitMany(promoted, 1000, 30);
    await promoted.switchWal();
    const oldApp = new RecordingApp();
    old = await Standby.open({ storage: oldStorage, application: oldApp, restore: archive, restoreIntervalMs: 10 });
    t.after(() => old.close());
    await replayedTo(old, after, 'the old primary to replay timeline 2');
    assert.equal(old.timeline, 2);
    assert.equal((await readControlFile(oldStorage))?.state, 'in-recovery');
    sameSequence(oldApp.applied, sApp.applied.filter((b) => b.lsn <= after));
    assert.ok(pApp.applied.length > 0);
  });
});

describe('Archive and stream together', () => {
  it('a standby cut off from its primary (a partition) goes on from the archive, then streams again once the network heals', async (t) => {
    const cluster = createCluster(t);
    const archive = new TestArchive();
    const app = new RecordingApp();
    const p = await cluster.primary('p', { application: app, synchronousCommit: 'local', archive: { mode: 'on', archiver: archive } });
    const standbyApp = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: standbyApp, restore: archive, restoreIntervalMs: 10, walReceiverTimeoutMs: 300 });
    const events = record(s1);
    let end = await commitMany(p, 0, 50);
    await replayedTo(s1, end, 'streaming');
    cluster.network.partition(['s1'], ['p']);
    end = await commitMany(p, 50, 300);
    await p.switchWal();
    await replayedTo(s1, end, 'the standby to go on from the archive while cut off');
    assert.ok(named(events, 'archive:restored').length > 0, 'restored from the archive');
    assert.notEqual(s1.state, 'streaming');
    cluster.network.heal();
    end = await commitMany(p, 350, 20);
    await replayedTo(s1, end, 'streaming again');
    await waitUntil(() => s1.state === 'streaming', 'streaming again');
    sameSequence(standbyApp.applied, app.applied);
  });

  it("archive.mode 'always' on a standby archives what it restores too", async (t) => {
    const source = new TestArchive();
    const own = new TestArchive();
    const { primary, backup } = await backedUpPrimary(t, source);
    const end = await commitMany(primary, 0, 300);
    await primary.switchWal();
    const standby = await Standby.open({ storage: backup, application: new RecordingApp(), restore: source, restoreIntervalMs: 10, archive: { mode: 'always', archiver: own } });
    t.after(() => standby.close());
    await replayedTo(standby, end, 'restored');
    const last = segName(Math.floor(end / SEGMENT));
    await waitUntil(() => own.files.has(last), 'the restored segments archived again');
    assert.ok((own.files.get(last) as Buffer).equals(source.files.get(last) as Buffer), 'the same bytes');
  });
});
