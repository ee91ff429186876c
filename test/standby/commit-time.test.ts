import assert from 'node:assert/strict';
import { cp } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { Primary, Standby, isWalshipError } from '../../src/index.js';
import { createCluster, MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp, TimedApp } from '../helpers/apps.js';
import { HANG_MS, receivedTo, replayedTo } from '../helpers/standby-harness.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';

/** A settable clock: `now` is what it returns. */
function settableClock(start: number): { now: number; clock: () => number } {
  const c = { now: start, clock: () => c.now };
  return c;
}

describe('commit times', () => {
  it("travel with the WAL: the primary's and the standby's applications get the commit time each commit resolved with", async (t) => {
    const cluster = createCluster(t);
    const time = settableClock(Date.UTC(2025, 0, 1));
    const primaryApp = new TimedApp();
    const p = await cluster.primary('p', { application: primaryApp, clock: time.clock });
    const standbyClock = settableClock(Date.UTC(2025, 0, 1));
    const app = new TimedApp();
    const s = await cluster.standby('s', { upstream: p, application: app, clock: standbyClock.clock });
    assert.ok(s.lastReplayTimestamp === null && s.replayDelayMs === null, 'no time before a batch was replayed');
    // Bootstrapped (from a base backup of nothing yet) before the commits: each is replayed.
    await s.waitForConsistent({ timeoutMs: HANG_MS });
    const commits = [];
    for (let i = 0; i < 20; i++) {
      time.now += 1000 + i;
      commits.push(await p.commit([Buffer.from(`batch ${i}`)]));
    }
    assert.deepEqual(commits.map((c) => c.commitTime), commits.map((_, i) => Date.UTC(2025, 0, 1) + 1000 * (i + 1) + (i * (i + 1)) / 2));
    await replayedTo(s, commits.at(-1)?.lsn ?? 0, 'the standby to replay');
    for (const c of commits) {
      assert.equal(primaryApp.commitTimes.get(c.lsn), c.commitTime, 'the primary applies its own commit time');
      assert.equal(app.commitTimes.get(c.lsn), c.commitTime, "the standby applies the primary's commit time");
    }
    assert.equal(replayTime(s), commits.at(-1)?.commitTime);
    await within(until(() => s.replayDelayMs === 0), HANG_MS, 'replay to be caught up');

    // Replay held back: the delay is the standby's clock minus the last replayed commit's time.
    let release!: () => void;
    app.gate = new Promise<void>((resolve) => (release = resolve));
    time.now += 5000;
    const held = await p.commit([Buffer.from('held back')]);
    await receivedTo(s, held.lsn);
    standbyClock.now = (commits.at(-1)?.commitTime ?? 0) + 7000;
    await within(until(() => s.replayDelayMs === 7000), HANG_MS, 'the delay to show the held-back batch');
    app.gate = null;
    release();
    await replayedTo(s, held.lsn, 'the held-back batch');
    assert.equal(replayTime(s), held.commitTime);
    await within(until(() => s.replayDelayMs === 0), HANG_MS, 'replay to catch up again');
  });

  it('come back from local WAL after a restart, before anything new is received', async (t) => {
    const cluster = createCluster(t);
    const time = settableClock(Date.UTC(2025, 0, 2));
    const p = await cluster.primary('p', { application: new RecordingApp(), clock: time.clock });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    await s.waitForConsistent({ timeoutMs: HANG_MS });
    time.now += 123;
    const { lsn, commitTime } = await p.commit([Buffer.from('one')]);
    await replayedTo(s, lsn, 'the standby to replay');
    await s.close();
    await p.close();
    // Reopened without its primary: it restores its base backup and replays its local WAL after it.
    const reopened = await Standby.open({
      storage: cluster.storage('s'),
      application: new RecordingApp(),
      primary: { transport: cluster.transport('s'), address: cluster.address('p'), user: cluster.user, password: cluster.password, applicationName: 's' },
      retryMinDelayMs: 5,
      retryMaxDelayMs: 50,
    });
    t.after(() => reopened.close());
    await replayedTo(reopened, lsn, 'the reopened standby to replay its local WAL');
    assert.equal(replayTime(reopened), commitTime);
  });

  it('a primary with WAL of format 1 (an upgraded node): its old batches reach the standby with no commit time, and lastReplayTimestamp falls back to the send time for them', async (t) => {
    const { dir, cleanup } = await tempDir();
    t.after(cleanup);
    await cp(new URL('../fixtures/timeline2', import.meta.url), dir, { recursive: true });
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { dir, application: new RecordingApp() });
    const before = Date.now();
    const app = new TimedApp();
    // No restore hook: it streams the primary's WAL from its beginning, format 1 first.
    (app as { restore?: unknown }).restore = undefined;
    const s = await cluster.standby('s', { upstream: p, application: app });
    await replayedTo(s, p.appliedLsn, 'the old batches');
    assert.ok([...app.commitTimes.values()].every((time) => time === null), 'format-1 batches have no commit time');
    const fallback = replayTime(s);
    assert.ok(fallback !== undefined && fallback >= before && fallback <= Date.now(), `the send time of their WAL (${String(fallback)})`);
    const next = await p.commit([Buffer.from('format 2')]);
    await replayedTo(s, next.lsn, 'the new batch');
    assert.equal(app.commitTimes.get(next.lsn), next.commitTime);
    assert.equal(replayTime(s), next.commitTime);
  });

  it('refuse a clock that is not a function, and one that returns no time', async () => {
    for (const open of [
      () => Primary.open({ storage: new MemoryStorage(), application: new RecordingApp(), clock: 5 as unknown as () => number }),
      () => Standby.open({ storage: new MemoryStorage(), application: new RecordingApp(), clock: 'now' as unknown as () => number, primary: { transport: { connect() {}, listen() {} } as never, address: 'x:1', user: 'u', applicationName: 's' } }),
    ]) {
      await assert.rejects(open(), (err) => isWalshipError(err, 'INVALID_OPTIONS') && /clock/.test(err.message));
    }
    const p = await Primary.open({ storage: new MemoryStorage(), application: new RecordingApp(), clock: () => Number.NaN });
    await assert.rejects(p.commit([Buffer.from('x')]), (err) => isWalshipError(err, 'INVALID_ARGUMENT') && /clock/.test(err.message));
    await p.close();
  });
});

/** The standby's `lastReplayTimestamp` in ms (a call, which assertions on the property do not narrow). */
function replayTime(standby: Standby): number | undefined {
  return standby.lastReplayTimestamp?.getTime();
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}
