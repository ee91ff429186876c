import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ReplicationStatusRow } from '../../src/replication/wal-source.js';
import { parseSynchronousStandbyNames } from '../../src/replication/sync-standby-names.js';
import { DurabilityChecker } from '../../src/testing/simulation/durability-checker.js';
import { createCluster, KvApplication, runScenario, SimulatedCluster, type CommitRecord } from '../../src/testing/index.js';

describe('a simulated cluster', () => {
  it('loses no commit acknowledged at on across a failover to its synchronous standby, and the old primary rejoins', async (t) => {
    const cluster = await createCluster({ t, seed: 3, standbys: 2, synchronousStandbyNames: 'FIRST 1 (s1)' });
    const before = await cluster.commit({ count: 5 });
    assert.deepEqual(
      before.map((c) => [c.outcome, c.confirmers]),
      before.map(() => ['acknowledged', ['s1']]),
    );
    assert.equal(await cluster.failover(), 's1');
    cluster.reload('FIRST 1 (s2)');
    const after = await cluster.commit({ count: 3 });
    assert.ok(after.every((c) => c.outcome === 'acknowledged' && c.timeline === 2));
    await cluster.rejoin('p');
    await cluster.settle();
    const result = cluster.check();
    assert.ok(result.ok, result.report);
    for (const name of cluster.names) {
      const kv = cluster.application(name) as KvApplication;
      assert.equal(kv.get('k8'), 'v8', `${name} holds the last commit`);
    }
    assert.equal(cluster.applied('p').length, 8);
  });

  it('runs on virtual time: ten minutes of status reports and heartbeats pass at once', async (t) => {
    const cluster = await createCluster({ t, standbys: 1 });
    const started = cluster.scheduler.monotonic();
    const fired = cluster.scheduler.eventsFired;
    await cluster.sleep(600_000);
    assert.equal(cluster.scheduler.monotonic() - started, 600_000);
    assert.ok(cluster.scheduler.eventsFired - fired > 1_200, 'a status report every 500 ms');
    assert.equal((await cluster.commit())[0]?.outcome, 'acknowledged');
  });

  it('replays the same run from the same seed, step for step, delays and partitions included', async () => {
    // Seeds whose steps include latency, partitions and stalls: network faults once armed real timers.
    const seeds = [2, 5, 9, 13, 15];
    const run = async (seed: number): Promise<string> => {
      const result = await runScenario({ seed, steps: 40, shrink: false });
      return JSON.stringify([result.steps, result.commits, result.virtualMs, result.ok]);
    };
    const first: string[] = [];
    for (const seed of seeds) first.push(await run(seed));
    const ops = first.flatMap((text) => (JSON.parse(text) as [{ op: string }[]])[0].map((step) => step.op));
    for (const op of ['delay', 'partition', 'stall', 'crash', 'failover']) assert.ok(ops.includes(op), `the seeds cover ${op}`);
    // Run concurrently the second time: the runs must not depend on what else the process does.
    assert.deepEqual(await Promise.all(seeds.map(run)), first);
    const replayed = await runScenario({ seed: seeds[0]!, steps: (JSON.parse(first[0]!) as [never[]])[0] });
    assert.ok(replayed.ok, replayed.report);
  });

  it('a commit that waits for a standby that is cut off stays pending, and is unknown after the primary crashes', async (t) => {
    const cluster = await createCluster({ t, standbys: 1, synchronousStandbyNames: 'FIRST 1 (s1)' });
    cluster.partition('p', 's1');
    await cluster.sleep(100);
    const [waiting] = await cluster.commit({ level: 'on' });
    assert.equal(waiting?.outcome, 'pending');
    await cluster.crash('p');
    assert.equal(waiting?.outcome, 'unknown');
    await cluster.restart('p');
    await cluster.settle();
    assert.ok(cluster.check().ok);
  });

  it('records at most maxSteps steps and commit calls: the record of a run lives in memory', async (t) => {
    const cluster = await createCluster({ t, standbys: 0, maxSteps: 10 });
    await cluster.commit({ count: 4 });
    await cluster.sleep(1);
    await assert.rejects(cluster.commit({ count: 4 }), { code: 'INVALID_ARGUMENT', message: /maxSteps is 10/ });
    assert.equal(cluster.commits.length, 4, 'the refused step made no commit');
    await cluster.commit({ count: 3 });
    assert.equal(cluster.commits.length, 7);
    assert.throws(() => cluster.heal(), { code: 'INVALID_ARGUMENT' });
  });

  it('closes with the test that created it, and refuses steps once closed', async () => {
    let teardown: (() => Promise<void>) | undefined;
    const cluster = await createCluster({ t: { after: (fn) => (teardown = fn) }, standbys: 0 });
    assert.ok(cluster instanceof SimulatedCluster);
    await teardown!();
    await assert.rejects(cluster.commit(), { code: 'INVALID_ARGUMENT' });
  });
});

describe('the durability checker', () => {
  const commit = (id: number, lsn: number, level: CommitRecord['level'] = 'on'): CommitRecord => ({
    id,
    step: id,
    node: 'p',
    level,
    digest: `d${id}`,
    calledAt: 0,
    outcome: 'acknowledged',
    lsn,
    timeline: 1,
    error: null,
    confirmers: [],
    needed: 0,
  });
  const row = (name: string, flush: number, write = flush, state = 'streaming'): ReplicationStatusRow => ({ applicationName: name, state, syncState: 'sync', writeLsn: write, flushLsn: flush, replayLsn: flush }) as unknown as ReplicationStatusRow;
  const batch = (c: CommitRecord): { lsn: number; timeline: number; digest: string } => ({ lsn: c.lsn!, timeline: 1, digest: c.digest });

  it('catches a commit released before its synchronous standby flushed it', () => {
    const checker = new DurabilityChecker();
    const c = commit(1, 100);
    checker.called(c);
    checker.acknowledged(c, [[row('s1', 50, 100)]], [parseSynchronousStandbyNames('FIRST 1 (s1)')], () => null);
    assert.deepEqual(checker.violations.map((v) => v.rule), ['released-early']);
    assert.match(checker.violations[0]!.message, /no synchronous configuration in force since its call had its confirmations \(last: 1 by 'FIRST 1 \(s1\)'; s1 sync at 0\/32\)/);
  });

  it('judges a release by priority under FIRST, by count under ANY, and by any configuration in force since the call', () => {
    const verdict = (rows: ReplicationStatusRow[], ...texts: string[]): string[] => {
      const checker = new DurabilityChecker();
      const c = commit(1, 100);
      checker.called(c);
      checker.acknowledged(c, [rows], texts.map((text) => parseSynchronousStandbyNames(text)), () => null);
      return checker.violations.map((v) => v.rule);
    };
    const s1Behind = [row('s1', 50), row('s2', 100)];
    assert.deepEqual(verdict(s1Behind, 'FIRST 1 (s1, s2)'), ['released-early'], 's1 has the better priority: its flush counts, not s2\'s');
    assert.deepEqual(verdict([row('s2', 100)], 'FIRST 1 (s1, s2)'), [], 's1 not connected: s2 is the synchronous one');
    assert.deepEqual(verdict(s1Behind, 'ANY 1 (s1, s2)'), []);
    assert.deepEqual(verdict(s1Behind, 'ANY 2 (s1, s2)'), ['released-early']);
    assert.deepEqual(verdict(s1Behind, 'FIRST 1 (s1)', 'ANY 1 (s1, s2)'), [], 'a reload to ANY 1 may have released it');
    assert.deepEqual(verdict([row('s3', 100)], 'FIRST 1 (s1, *)'), [], 'the wildcard names s3');
    assert.deepEqual(verdict([row('s3', 100)], 'FIRST 1 (s1, s2)'), ['released-early'], 'an unlisted standby confirms nothing');
    assert.deepEqual(verdict([row('s1', 0, 0, 'catchup'), row('s2', 100)], 'FIRST 1 (s1, s2)'), [], 's1 not streaming, nothing reported: not a candidate');
  });

  it('judges a release by the rows of any moment it could have happened (seed 57202: a step crashed the releasing standby before the callback ran)', () => {
    const verdict = (rowSets: ReplicationStatusRow[][]): string[] => {
      const checker = new DurabilityChecker();
      const c = commit(1, 100);
      checker.called(c);
      checker.acknowledged(c, rowSets, [parseSynchronousStandbyNames('FIRST 1 (s1, s2)')], () => null);
      assert.deepEqual(c.confirmers, checker.violations.length === 0 ? ['s2'] : []);
      return checker.violations.map((v) => v.rule);
    };
    assert.deepEqual(verdict([[], [row('s2', 100)]]), [], 's2 alone and caught up when a step began: a legitimate release');
    assert.deepEqual(verdict([[], [row('s1', 50), row('s2', 100)]]), ['released-early'], 's1 still ahead in priority at every moment');
  });

  it('owes, after a promotion, exactly the commits the promoted standby confirmed or that lie below them', () => {
    const checker = new DurabilityChecker();
    const [a, b, c] = [commit(1, 100), commit(2, 200), commit(3, 300)];
    for (const x of [a, b, c]) checker.called(x);
    checker.acknowledged(a, [[row('s1', 100), row('s2', 100)]], [parseSynchronousStandbyNames('ANY 1 (s1, s2)')], () => null);
    checker.acknowledged(b, [[row('s1', 200), row('s2', 100)]], [parseSynchronousStandbyNames('ANY 1 (s1, s2)')], () => null);
    checker.acknowledged(c, [[row('s1', 200), row('s2', 300)]], [parseSynchronousStandbyNames('ANY 1 (s1, s2)')], () => null);
    checker.promoted('s1', [batch(a), batch(b)]);
    assert.deepEqual(checker.violations, [], 'c was confirmed by s2 only: promoting s1 may lose it');
    assert.deepEqual(checker.allowedLosses.map((x) => x.id), [3]);
    const again = new DurabilityChecker();
    for (const x of [a, b]) again.acknowledged({ ...x }, [[row('s1', 200)]], [parseSynchronousStandbyNames('FIRST 1 (s1)')], () => null);
    again.promoted('s1', [batch(a)]);
    assert.deepEqual(again.violations.map((v) => v.rule), ['acknowledged-lost']);
    assert.match(again.violations[0]!.message, /commit #2, acknowledged at on by p .* is missing on s1 after its promotion/);
  });

  it('catches a batch no commit wrote, a standby off every primary history, and a rewind that hides a batch', () => {
    const checker = new DurabilityChecker();
    const [a, b] = [commit(1, 100), commit(2, 200)];
    checker.called(a);
    checker.called(b);
    checker.checkApplied('s1', [batch(a), { lsn: 150, timeline: 1, digest: 'nobody' }]);
    checker.checkPrefix('s2', [batch(b)], 'p', [[batch(a), batch(b)]]);
    checker.checkRewind('s3', { timeline: 1, switchLsn: 120, batches: [], complete: true }, [batch(a), batch(b)]);
    assert.deepEqual(checker.violations.map((v) => v.rule), ['phantom-batch', 'diverged-history', 'rewind-report']);
  });
});
