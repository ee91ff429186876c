import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { COMMIT_LATENCY_BUCKETS, isWalshipError, type PrimaryMetrics, type SynchronousCommit } from '../../src/index.js';
import { createCluster, MemoryArchive } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { eventually, rawStandby, receiveUntil, report } from '../helpers/primary-helpers.js';
import { HANG_MS } from '../helpers/standby-harness.js';
import { payload } from '../helpers/wal.js';

// primary.metrics() and standby.metrics(): the figures are the node's own (commit counters per
// level, WAL writer counters, standbys' lag, slots' retained WAL, archiver counters).

describe('Primary.metrics()', () => {
  it('counts the commits of each level, with a latency histogram holding each of them once', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    const counts: Partial<Record<SynchronousCommit, number>> = { on: 5, local: 3, off: 2 };
    for (const [level, n] of Object.entries(counts) as [SynchronousCommit, number][]) {
      for (let i = 0; i < n; i++) await primary.commit(payload(i, 100), { synchronousCommit: level });
    }
    const { commits } = primary.metrics();
    for (const level of ['off', 'local', 'remote_write', 'on', 'remote_apply'] as const) {
      const expected = counts[level] ?? 0;
      const m = commits[level];
      assert.equal(m.commits, expected, `${level}: commits`);
      assert.equal(m.errors, 0, `${level}: errors`);
      assert.equal(m.latency.count, expected, `${level}: histogram count`);
      assert.equal(m.latency.buckets.length, COMMIT_LATENCY_BUCKETS.length + 1, `${level}: one bucket per bound, and +Inf`);
      assert.deepEqual(m.latency.buckets.map((b) => b.le), [...COMMIT_LATENCY_BUCKETS, Infinity], `${level}: the fixed bounds`);
      assert.equal(m.latency.buckets.at(-1)?.count, expected, `${level}: +Inf holds every commit`);
      for (let i = 1; i < m.latency.buckets.length; i++) {
        assert.ok((m.latency.buckets[i]?.count ?? -1) >= (m.latency.buckets[i - 1]?.count ?? 0), `${level}: buckets are cumulative`);
      }
      assert.ok(m.latency.sum >= 0 && (expected > 0 || m.latency.sum === 0), `${level}: sum of latencies`);
    }
  });

  it('counts commits that reject as errors of their level, not as commits', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    await assert.rejects(primary.commit('not bytes' as never, { synchronousCommit: 'local' }), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    // Appended, then the wait stops at once: committed, yet the call rejected.
    await assert.rejects(primary.commit(payload(1, 10), { synchronousCommit: 'on', signal: AbortSignal.abort() }), (err) => isWalshipError(err, 'ABORTED'));
    await primary.commit(payload(2, 10), { synchronousCommit: 'on' });
    const { commits } = primary.metrics();
    assert.equal(commits.local.errors, 1, 'the entry that was not bytes');
    assert.equal(commits.local.commits, 0, 'no local commit resolved');
    assert.equal(commits.on.errors, 1, 'the aborted wait');
    assert.equal(commits.on.commits, 1, 'the commit that resolved');
    assert.equal(commits.on.latency.count, 1, 'only resolved commits are in the histogram');
  });

  it("counts the WAL writer's bytes, writes and fdatasyncs", async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    const before = primary.metrics().wal;
    const n = 4;
    // One after the other at `local`: each commit waits for a flush of its own.
    for (let i = 0; i < n; i++) await primary.commit(payload(i, 1000), { synchronousCommit: 'local' });
    const after = primary.metrics().wal;
    assert.equal(after.bytesWritten - before.bytesWritten, after.writtenLsn - before.writtenLsn, 'bytes written are how far the written end moved');
    assert.ok(after.writtenLsn - before.writtenLsn >= n * 1000, 'every batch was written');
    assert.ok(after.writes - before.writes >= n, `a write per commit waited for (${after.writes - before.writes})`);
    assert.ok(after.syncs - before.syncs >= n, `an fdatasync per commit waited for (${after.syncs - before.syncs})`);
    assert.ok(after.syncSeconds >= before.syncSeconds, 'sync time only grows');
    assert.equal(after.flushedLsn, primary.flushLsn, 'positions are the log’s');
    assert.equal(after.insertLsn, primary.currentLsn, 'positions are the log’s');
  });

  it('reports a connected standby’s lag in bytes behind the flushed WAL, and in seconds once it reported', async (t) => {
    const cluster = createCluster(t, { auth: 'trust' });
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const conn = await rawStandby(cluster.transport('raw'), cluster.address(primary), 'raw');
    t.after(() => conn.destroy());
    const start = primary.flushLsn;
    conn.send({ kind: 'startReplication', slotName: '', startLsn: start, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
    let end = start;
    for (let i = 0; i < 3; i++) end = (await primary.commit(payload(i, 2000), { synchronousCommit: 'local' })).lsn;
    const received = await receiveUntil(conn, start, primary.flushLsn);
    // Written everything, flushed and applied nothing of it.
    report(conn, received, start, start);
    await eventually(() => primary.metrics().standbys[0]?.writeLagBytes === 0, HANG_MS, 'the report to arrive');
    const [row] = primary.metrics().standbys;
    assert.ok(row !== undefined, 'one standby');
    assert.equal(row.applicationName, 'raw');
    assert.equal(row.flushLagBytes, primary.flushLsn - start, 'flush lag: everything since it started');
    assert.equal(row.replayLagBytes, primary.flushLsn - start, 'replay lag: likewise');
    assert.ok(end <= primary.flushLsn, 'the commits are durable');
    assert.equal(typeof row.writeLagSeconds, 'number', 'the write consumed lag samples: a lag in seconds');
    assert.ok((row.writeLagSeconds ?? -1) >= 0, 'a lag is not negative');
    assert.equal(row.flushLagSeconds, null, 'no flush reported yet: no flush lag');
    // Gone before the cluster closes the primary, which would wait for it to confirm the end.
    conn.destroy();
  });

  it('reports the WAL a slot holds back', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    const slot = await primary.createSlot('held', { reserveWal: true });
    for (let i = 0; i < 5; i++) await primary.commit(payload(i, 3000), { synchronousCommit: 'local' });
    const [m] = primary.metrics().slots;
    assert.ok(m !== undefined && slot.restartLsn !== null, 'the slot and its reservation');
    assert.equal(m.slotName, 'held');
    assert.equal(m.active, false);
    assert.equal(m.restartLsn, slot.restartLsn);
    assert.equal(m.retainedBytes, primary.flushLsn - slot.restartLsn, 'the flushed end minus the restart position');
    assert.ok((m.retainedBytes ?? 0) > 15_000, 'the five batches at least');
  });

  it("carries the archiver's counters", async (t) => {
    const cluster = createCluster(t);
    const archiver = new MemoryArchive();
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false, archive: { mode: 'on', archiver } });
    await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
    await primary.switchWal();
    await eventually(() => primary.metrics().archiver.archivedCount >= 1, HANG_MS, 'a segment archived');
    const m: PrimaryMetrics = primary.metrics();
    assert.equal(m.archiver.mode, 'on');
    assert.equal(m.archiver.archivedCount, primary.archiverStatus().archivedCount);
    assert.equal(m.archiver.failedCount, 0);
    assert.equal(typeof m.archiver.lastArchivedTime, 'number', 'seconds since the epoch');
  });
});

describe('Standby.metrics()', () => {
  it('reports state, positions, replay lag and the WAL it wrote; the primary sees it as a standby', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), synchronousStandbyNames: 's1' });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    const before = standby.metrics();
    assert.equal(before.role, 'standby');
    let lsn = 0;
    for (let i = 0; i < 4; i++) lsn = (await primary.commit(payload(i, 1500), { synchronousCommit: 'remote_apply' })).lsn;
    await standby.waitForReplay(lsn, { timeoutMs: HANG_MS });
    const m = standby.metrics();
    assert.equal(m.state, 'streaming');
    assert.equal(m.timeline, 1);
    assert.equal(m.systemId, primary.systemId);
    assert.equal(m.consistent, true);
    assert.equal(m.readable, true);
    assert.equal(m.replayedLsn, standby.replayLsn);
    assert.ok((m.replayedLsn ?? 0) >= lsn, 'replayed the commits');
    assert.ok((m.flushedLsn ?? 0) >= (m.replayedLsn ?? Infinity), 'flushed at least what it replayed');
    assert.ok((m.receivedLsn ?? 0) >= (m.flushedLsn ?? Infinity), 'received at least what it flushed');
    assert.equal(m.replayLagBytes, (m.flushedLsn ?? 0) - (m.replayedLsn ?? 0));
    assert.ok(m.wal !== null && m.wal.bytesWritten > 6000 && m.wal.syncs > 0, 'its writer wrote and synced the WAL it received');

    const p = primary.metrics();
    assert.equal(p.commits.remote_apply.commits, 4);
    const row = p.standbys.find((s) => s.applicationName === 's1');
    assert.ok(row !== undefined, 'the primary lists s1');
    assert.equal(row.syncState, 'sync');
    assert.equal(row.state, 'streaming');
    assert.equal(typeof row.replayLagBytes, 'number', 'a lag in bytes once s1 reported');
  });

  it('has no WAL figures before it bootstrapped', async (t) => {
    const cluster = createCluster(t);
    const standby = await cluster.standby('lonely', { upstream: cluster.address('nobody'), application: new RecordingApp() });
    const m = standby.metrics();
    assert.equal(m.wal, null);
    assert.equal(m.replayedLsn, null);
    assert.equal(m.replayLagBytes, null);
    assert.deepEqual(m.slots, []);
    assert.notEqual(m.state, 'streaming');
  });
});
