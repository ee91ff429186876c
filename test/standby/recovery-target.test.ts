import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, Standby, formatLsn, segmentFileName, isWalshipError, type Application, type CommitResult, type CommittedBatch, type Lsn, type StandbyOptions } from '../../src/index.js';
import { readControlFile, writeControlFile } from '../../src/node/control-file.js';
import { MemoryStorage, createCluster, type Cluster } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { TestArchive } from '../helpers/test-archive.js';
import { HANG_MS, codeOf, nextEvent, receivedTo, replayedTo } from '../helpers/standby-harness.js';
import { within } from '../helpers/wal.js';

/**
 * An application without snapshot hooks: a standby of it streams the WAL from its beginning,
 * so every batch reaches it through replay (and the recovery target's check), and a reopened
 * one replays everything again up to its target. It keeps each batch's text and commit time.
 */
class ListApp implements Application {
  readonly applied: { lsn: Lsn; text: string; commitTime: number | null }[] = [];
  apply(batch: CommittedBatch): void {
    const last = this.applied.at(-1);
    if (last !== undefined && batch.lsn <= last.lsn) throw new Error(`batch ${batch.lsn} applied out of order after ${last.lsn}`);
    this.applied.push({ lsn: batch.lsn, text: Buffer.from(batch.entries[0]?.data ?? []).toString(), commitTime: batch.commitTime });
  }
  get texts(): string[] {
    return this.applied.map((b) => b.text);
  }
}

/** Commits batches `c<from>` … `c<to - 1>` one by one (each with its own commit time). */
async function commitRange(primary: Primary, from: number, to: number, size = 600): Promise<CommitResult[]> {
  const results: CommitResult[] = [];
  for (let i = from; i < to; i++) results.push(await primary.commit([Buffer.concat([Buffer.from(`c${i}`), Buffer.alloc(Math.max(0, size - 4), 0)]).subarray(0, Math.max(size, 4))]));
  return results;
}

/** The names `c<from>` … `c<to - 1>`. */
function names(from: number, to: number): string[] {
  return Array.from({ length: to - from }, (_, i) => `c${from + i}`);
}

/** The text of a batch the test committed: its name, without the padding. */
function name(text: string): string {
  return text.replace(/\0+$/, '');
}

/** Opens `s` on the cluster streaming from `upstream`, with a {@link ListApp}. */
async function standbyWith(cluster: Cluster, nameOf: string, upstream: Primary, options: Partial<StandbyOptions> = {}): Promise<{ standby: Standby; app: ListApp }> {
  const app = new ListApp();
  const standby = await cluster.standby(nameOf, { upstream, application: app, ...options });
  return { standby, app };
}

/** Waits until the standby reports `closed` (its `shutdown` action). */
async function closedBySelf(standby: Standby, what: string): Promise<void> {
  await within(until(() => standby.state === 'closed'), HANG_MS, what);
}

describe('recovery targets (point-in-time recovery)', () => {
  it('{ lsn } inclusive, pause: applies up to and including the commit ending there, never past it while more WAL arrives; resumeReplay() goes on', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const first = await commitRange(p, 0, 10);
    const target = first[4] as CommitResult;
    const { standby: s, app } = await standbyWith(cluster, 's', p, { recoveryTarget: { lsn: target.lsn } });
    const reached = await within(nextEvent(s, 'recovery-target:reached'), HANG_MS, 'the target');
    assert.deepEqual(app.texts.map(name), names(0, 5), 'c4 ends at the target: applied, and nothing after it');
    assert.equal(reached.lsn, target.lsn);
    assert.equal(reached.replayLsn, target.lsn);
    assert.equal(reached.action, 'pause');
    assert.match(reached.reason, /recovery target LSN .* \(inclusive\) reached/);
    assert.ok(s.replayPaused && s.readable, 'paused, and readable');
    assert.equal(s.replayLsn, target.lsn);

    // Much more WAL, across segments: received, never applied.
    const more = await commitRange(p, 10, 250, 700);
    await receivedTo(s, p.flushLsn);
    assert.ok((s.receiveLsn ?? 0) - target.lsn > 2 * 64 * 1024, 'more than two segments past the target received');
    assert.deepEqual(app.texts.map(name), names(0, 5), 'still nothing past the target');
    assert.equal(s.replayLsn, target.lsn);
    assert.ok((s.replayDelayMs ?? -1) >= 0, 'replay is behind in time while paused with WAL past the target');
    await assert.rejects(within(s.waitForReplay(first[5]?.lsn ?? 0, { timeoutMs: 50 }), HANG_MS, 'a wait'), (err) => isWalshipError(err, 'TIMEOUT'));

    s.resumeReplay();
    assert.equal(s.replayPaused, false);
    await replayedTo(s, more.at(-1)?.lsn ?? 0, 'replay to go on past the target');
    assert.deepEqual(app.texts.map(name), names(0, 250));
    s.resumeReplay(); // idempotent
  });

  it('{ lsn } exclusive as X/Y text, promote: the new timeline begins right before the commit at the LSN, and what was received past it is set aside, never applied', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const first = await commitRange(p, 0, 10);
    const target = first[4] as CommitResult;
    const { standby: s, app } = await standbyWith(cluster, 's', p, { recoveryTarget: { lsn: formatLsn(target.lsn) }, recoveryTargetInclusive: false, recoveryTargetAction: 'promote' });
    const reachedEvent = nextEvent(s, 'recovery-target:reached');
    const promoted = await within(nextEvent(s, 'promoted'), HANG_MS, 'the promotion at the target');
    t.after(() => promoted.primary.close());
    const reached = await reachedEvent;
    assert.equal(reached.action, 'promote');
    assert.equal(reached.lsn, target.startLsn, 'stopped right before c4');
    assert.equal(promoted.switchLsn, target.startLsn, 'the new timeline begins at the target, not at the end of what was received');
    assert.equal(promoted.timeline, 2);
    assert.deepEqual(app.texts.map(name), names(0, 4));
    const storage = cluster.storage('s');
    assert.ok(storage.fileNames().some((n) => n.endsWith('.diverged')), 'the WAL received past the target is kept aside');

    const after = await promoted.primary.commit([Buffer.from('after promotion')]);
    assert.ok(after.lsn > target.startLsn);
    assert.deepEqual(app.texts.map(name), [...names(0, 4), 'after promotion']);
    await promoted.primary.close();
    const reopenedApp = new ListApp();
    const reopened = await Primary.open({ storage, application: reopenedApp });
    assert.equal(reopened.timeline, 2);
    assert.deepEqual(reopenedApp.texts.map(name), [...names(0, 4), 'after promotion'], 'after a restart: the WAL up to the target, then the new timeline');
    await reopened.close();
  });

  it('{ time } inclusive and exclusive, shutdown: stops by commit time and closes itself; reopened, it stops at the same place and closes again', async (t) => {
    const cluster = createCluster(t);
    let now = Date.UTC(2025, 2, 1);
    const p = await cluster.primary('p', { application: new RecordingApp(), clock: () => now });
    const commits: CommitResult[] = [];
    for (let i = 0; i < 10; i++) {
      now += 1000;
      commits.push(...(await commitRange(p, i, i + 1)));
    }
    const at = commits[5] as CommitResult;
    assert.equal(at.commitTime, Date.UTC(2025, 2, 1) + 6000);
    for (const [inclusive, expected, time] of [
      [true, names(0, 6), new Date(at.commitTime)],
      [false, names(0, 5), new Date(at.commitTime).toISOString()],
    ] as const) {
      for (let round = 0; round < 2; round++) {
        const nodeName = `s-${String(inclusive)}`;
        const { standby: s, app } = await standbyWith(cluster, nodeName, p, { recoveryTarget: { time }, recoveryTargetInclusive: inclusive, recoveryTargetAction: 'shutdown' });
        await closedBySelf(s, `the ${inclusive ? 'inclusive' : 'exclusive'} standby to shut down at its target`);
        assert.deepEqual(app.texts.map(name), expected, `${inclusive ? 'inclusive' : 'exclusive'}, round ${round}`);
        assert.ok(app.applied.every((b) => (b.commitTime ?? 0) <= at.commitTime), 'no batch committed after the target time');
        assert.equal((await readControlFile(cluster.storage(nodeName)))?.state, 'shut-down-in-recovery', 'a clean shutdown');
      }
    }
  });

  it('{ name }: stops right after the restore point (not at another name), and promote() while paused begins the new timeline there', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    await commitRange(p, 0, 2);
    await p.createRestorePoint('nightly');
    await commitRange(p, 2, 4);
    const point = await p.createRestorePoint('before-migration');
    await commitRange(p, 4, 30);
    const { standby: s, app } = await standbyWith(cluster, 's', p, { recoveryTarget: { name: 'before-migration' } });
    const reached = await within(nextEvent(s, 'recovery-target:reached'), HANG_MS, 'the restore point');
    assert.equal(reached.lsn, point.lsn, 'right after the restore point');
    assert.deepEqual(app.texts.map(name), names(0, 4));
    await receivedTo(s, p.flushLsn);
    assert.deepEqual(app.texts.map(name), names(0, 4), 'nothing more while paused');
    const primary = await within(s.promote(), HANG_MS, 'the promotion while paused');
    t.after(() => primary.close());
    assert.deepEqual(primary.wal.history.entries.map((e) => [e.timeline, e.switchLsn]), [[1, point.lsn]], 'the new timeline begins right after the restore point');
    await primary.commit([Buffer.from('after promotion')]);
    assert.deepEqual(app.texts.map(name), [...names(0, 4), 'after promotion']);
  });

  it("'immediate', promote: a standby started from a base backup stops at once at its consistent point, and promotes there once it has the WAL up to it", async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const before = await commitRange(p, 0, 20);
    const app = new RecordingApp();
    const s = await cluster.standby('s', { upstream: p, application: app, recoveryTarget: 'immediate', recoveryTargetAction: 'promote' });
    const promoted = await within(nextEvent(s, 'promoted'), HANG_MS, 'the promotion at the consistent point');
    t.after(() => promoted.primary.close());
    assert.equal(app.restores, 1, 'from a base backup');
    assert.equal(promoted.switchLsn, before.at(-1)?.lsn, 'the base backup held every commit; the new timeline begins right after them');
    await commitRange(p, 20, 25);
    assert.equal(app.applied.length, 20, 'nothing of the old primary after the target');
  });

  it('a target not reached yet is waited for: everything before it is applied as it arrives', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const { standby: s, app } = await standbyWith(cluster, 's', p, { recoveryTarget: { name: 'not yet' } });
    const commits = await commitRange(p, 0, 20);
    await replayedTo(s, commits.at(-1)?.lsn ?? 0, 'replay up to the end');
    assert.equal(s.replayPaused, false);
    assert.deepEqual(app.texts.map(name), names(0, 20));
    const point = await p.createRestorePoint('not yet');
    await commitRange(p, 20, 22);
    const reached = await within(nextEvent(s, 'recovery-target:reached'), HANG_MS, 'the restore point once made');
    assert.equal(reached.lsn, point.lsn);
    assert.deepEqual(app.texts.map(name), names(0, 20));
  });

  it('a target before the consistent point stops the standby with RECOVERY_TARGET_BEFORE_CONSISTENT', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const commits = await commitRange(p, 0, 10);
    const { standby: s } = await standbyWith(cluster, 's', p);
    await replayedTo(s, commits.at(-1)?.lsn ?? 0, 'replay');
    await s.close();
    // As if the standby had started from a base backup ending at c7.
    const storage = cluster.storage('s');
    const control = await readControlFile(storage);
    assert.ok(control !== null);
    await writeControlFile(storage, { ...control, consistentLsn: commits[7]?.lsn ?? 0 });
    const { standby: again, app } = await standbyWith(cluster, 's', p, { recoveryTarget: { lsn: commits[3]?.lsn ?? 0 } });
    const failed = await within(nextEvent(again, 'failed'), HANG_MS, 'the refusal');
    assert.equal(failed.error.code, 'RECOVERY_TARGET_BEFORE_CONSISTENT');
    assert.deepEqual(app.texts.map(name), names(0, 4), 'nothing past the target was applied');
    assert.equal(again.state, 'failed');
  });

  it('a restore from a base backup plus the archive stops at the target: promote at a restore point, pause at a time', async (t) => {
    const archive = new TestArchive();
    let now = Date.UTC(2025, 5, 1);
    const appP = new RecordingApp();
    const p = await Primary.open({ storage: new MemoryStorage(), application: appP, segmentSize: 64 * 1024, synchronousCommit: 'local', clock: () => now, archive: { mode: 'on', archiver: archive } });
    t.after(() => p.close());
    await commitRange(p, 0, 5);
    const backups = [new MemoryStorage(), new MemoryStorage()];
    for (const backup of backups) await p.baseBackup({ storage: backup });
    const commits: CommitResult[] = [];
    for (let i = 5; i < 40; i++) {
      now += 1000;
      commits.push(...(await commitRange(p, i, i + 1, 3000)));
      if (i === 20) await p.createRestorePoint('before-migration');
    }
    await p.switchWal();
    const last = segmentFileName(1, Math.floor((p.currentLsn - 1) / (64 * 1024)), 64 * 1024);
    await within(until(() => archive.files.has(last)), HANG_MS, 'the archive to hold every segment');

    // Restore to the restore point, then promote: the classic point-in-time recovery.
    const app = new RecordingApp();
    const restored = await Standby.open({ storage: backups[0] as MemoryStorage, application: app, restore: archive, restoreIntervalMs: 10, recoveryTarget: { name: 'before-migration' }, recoveryTargetAction: 'promote' });
    t.after(() => restored.close());
    const promoted = await within(nextEvent(restored, 'promoted'), HANG_MS, 'the promotion at the restore point');
    t.after(() => promoted.primary.close());
    assert.deepEqual(app.applied.map((b) => name(Buffer.from(b.entries[0] ?? '', 'hex').toString())), names(0, 21), 'the base backup, then the archive up to the restore point');
    assert.equal(promoted.timeline, 2);

    // Restore to a time, and pause there (readable).
    const timed = new RecordingApp();
    const at = commits[10] as CommitResult;
    const paused = await Standby.open({ storage: backups[1] as MemoryStorage, application: timed, restore: archive, restoreIntervalMs: 10, recoveryTarget: { time: at.commitTime } });
    t.after(() => paused.close());
    const reached = await within(nextEvent(paused, 'recovery-target:reached'), HANG_MS, 'the target time');
    assert.equal(reached.replayLsn, at.lsn);
    assert.ok(paused.readable && paused.replayPaused);
    assert.deepEqual(timed.applied.map((b) => name(Buffer.from(b.entries[0] ?? '', 'hex').toString())), names(0, 16));
  });

  it('refuses a bad target with INVALID_OPTIONS, naming the option, and resumeReplay() on a closed or promoted standby', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const bad: unknown[] = [
      { recoveryTarget: { lsn: 'zz' } },
      { recoveryTarget: { lsn: -1 } },
      { recoveryTarget: { lsn: 1.5 } },
      { recoveryTarget: { time: 'not a date' } },
      { recoveryTarget: { time: new Date(Number.NaN) } },
      { recoveryTarget: { time: -5 } },
      { recoveryTarget: { time: {} } },
      { recoveryTarget: { name: '' } },
      { recoveryTarget: { name: 'x'.repeat(65) } },
      { recoveryTarget: { name: 'a', lsn: 5 } },
      { recoveryTarget: 'latest' },
      { recoveryTarget: { xid: 5 } },
      { recoveryTargetAction: 'stop' },
      { recoveryTargetInclusive: 'yes' },
    ];
    for (const options of bad) {
      const code = await codeOf(cluster.standby('bad', { upstream: p, application: new ListApp(), ...(options as Partial<StandbyOptions>) }));
      assert.equal(code, 'INVALID_OPTIONS', JSON.stringify(options));
    }
    await assert.rejects(
      cluster.standby('bad', { upstream: p, application: new ListApp(), recoveryTarget: { name: 'ü'.repeat(33) } }),
      (err) => isWalshipError(err, 'INVALID_OPTIONS') && /recoveryTarget\.name/.test(err.message),
    );
    const { standby: s } = await standbyWith(cluster, 's', p, { recoveryTarget: 'immediate' });
    await within(until(() => s.replayPaused), HANG_MS, 'the immediate stop');
    await s.close();
    assert.throws(() => s.resumeReplay(), (err) => isWalshipError(err, 'WAL_CLOSED'));
  });
});
