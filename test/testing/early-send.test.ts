import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Standby } from '../../src/index.js';
import type { CheckResult, CommitRecord, SimulatedCluster, SimulationOptions } from '../../src/testing/index.js';
import { registerInjectedBugs, withInjectedBug, type InjectedBug } from './injected-bugs.js';

// Early WAL (a primary's `earlySend`, its standbys' `acceptEarlyWal`): WAL leaves the primary
// while its fdatasync runs. The simulator's slow disk keeps that fdatasync pending, so the
// standby really holds WAL the primary may still lose. Each rule of the design is a deliberate
// bug here (written into walship's source as it loads, see injected-bugs.ts), and each test runs
// its scenario with the bug off (everything holds) and on (the checker, or the scenario's own
// assertion, sees the rule broken).
//
// walship is imported only after the hooks that load the bugs are in place.
registerInjectedBugs();
const { createCluster, runScenario } = await import('../../src/testing/index.js');

/** Generated scenarios run with early WAL (their faults include slow disks); 1,500 seeds ran clean while it was built. */
const SWEEP_SEEDS = 100;

interface Outcome {
  readonly check: CheckResult;
  readonly observed: string | null;
  /** How many commits were acknowledged. */
  readonly acknowledged: number;
}

const OPTIONS: SimulationOptions = { seed: 21, standbys: 1, earlySend: true, synchronousStandbyNames: 'FIRST 1 (s1)', crash: { unsyncedWrites: 'lose' } };

async function onCluster(options: SimulationOptions, fn: (cluster: SimulatedCluster) => Promise<string | null>): Promise<Outcome> {
  const cluster = await createCluster(options);
  try {
    const observed = await fn(cluster);
    return { check: cluster.check(), observed, acknowledged: cluster.commits.filter((c) => c.outcome === 'acknowledged').length };
  } finally {
    await cluster.close();
  }
}

async function bothWays(bug: InjectedBug, scenario: () => Promise<Outcome>): Promise<{ clean: Outcome; bugged: Outcome }> {
  const clean = await scenario();
  const bugged = await withInjectedBug(bug, scenario);
  return { clean, bugged };
}

function assertClean(outcome: Outcome, what: string): void {
  assert.ok(outcome.check.ok, `${what}: without the bug the checker must find nothing:\n${outcome.check.report}`);
}

function assertCaught(outcome: Outcome, rule: string, what: string): void {
  const rules = outcome.check.violations.map((v) => v.rule);
  assert.ok(rules.includes(rule), `${what}: expected a '${rule}' violation, got ${rules.join(', ') || 'none'}:\n${outcome.check.report}`);
}

/** The code of the error `promise` rejects with, or null when it resolves. */
async function refusal(promise: Promise<unknown>): Promise<string | null> {
  try {
    await promise;
    return null;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

/**
 * p's disk turns slow and three commits are made: p writes them and sends them to s1 at once,
 * s1 makes them durable, but p's own fdatasync is still pending. Resolves with those commits,
 * once s1 holds all of their WAL.
 */
async function earlyWalOnS1(cluster: SimulatedCluster): Promise<CommitRecord[]> {
  await cluster.commit({ count: 2 });
  await cluster.waitForCatchup('s1', { mode: 'replay' });
  cluster.slowDisk('p', 5_000);
  const early = await cluster.commit({ count: 3 });
  const s1 = cluster.node('s1') as Standby;
  const p = cluster.primary!;
  assert.deepEqual(early.map((c) => c.outcome), ['pending', 'pending', 'pending'], "p's fdatasync has not returned");
  assert.equal(s1.receiveLsn, p.currentLsn, 's1 holds the early WAL, durably');
  assert.ok(p.flushLsn < p.currentLsn, 'which p has not made durable');
  return early;
}

/**
 * The primary loses the early WAL (a power loss while its fdatasync was pending), restarts, and
 * writes other WAL at the same positions; s1 reconnects and must end up with exactly p's WAL.
 * Resolves with s1's catch-up refusal, if any.
 */
function lostAndRewritten(): Promise<Outcome> {
  return onCluster(OPTIONS, async (cluster) => {
    await earlyWalOnS1(cluster);
    await cluster.crash('p');
    await cluster.restart('p');
    await cluster.commit({ count: 4 });
    return refusal(cluster.waitForCatchup('s1', { mode: 'replay' }));
  });
}

describe('early WAL: replicating while the primary fdatasyncs', () => {
  it("a standby holding WAL its primary lost and wrote over ends with exactly the primary's WAL and batches", async () => {
    const outcome = await lostAndRewritten();
    assertClean(outcome, 'lost and rewritten');
    assert.equal(outcome.observed, null, 's1 catches up with the restarted primary');
    assert.ok(outcome.acknowledged >= 6, `the commits before the crash and after the restart are acknowledged (${outcome.acknowledged})`);
  });

  it('a standby that lost power holding WAL its primary lost and wrote over compares it with the stream and cuts it where it differs', async () => {
    const outcome = await onCluster(OPTIONS, async (cluster) => {
      await earlyWalOnS1(cluster);
      await cluster.crash('p');
      await cluster.crash('s1');
      await cluster.restart('p');
      await cluster.commit({ level: 'local', count: 4 });
      await cluster.restart('s1');
      return refusal(cluster.waitForCatchup('s1', { mode: 'replay' }));
    });
    assertClean(outcome, 'both crashed');
    assert.equal(outcome.observed, null, 's1 catches up with the restarted primary');
  });

  it('a standby restarted with WAL it confirmed past its records\' stamps keeps it when promoted before it streams again', async () => {
    // Found by the generated scenarios (seed 221): s1 confirmed the commit (the primary's durable
    // end it heard covered it), restarted, and was promoted; the commit's record stamps only the
    // durable end before it, so s1's bound after the restart lies before the commit.
    const outcome = await onCluster({ ...OPTIONS, synchronousStandbyNames: 'ANY 1 (p, s1)' }, async (cluster) => {
      const [commit] = await cluster.commit({ level: 'remote_write' });
      assert.deepEqual(commit!.confirmers, ['s1']);
      await cluster.restart('s1');
      await cluster.commit({ level: 'on' });
      await cluster.promote('s1');
      return null;
    });
    assertClean(outcome, 'restarted and promoted');
  });

  it("apply-past-durable-end: a standby that replays early WAL applies batches the primary lost, a 'diverged-history'", async () => {
    const { clean, bugged } = await bothWays('apply-past-durable-end', lostAndRewritten);
    assertClean(clean, 'apply-past-durable-end');
    assertCaught(bugged, 'diverged-history', 'apply-past-durable-end');
  });

  it('keep-unconfirmed-tail: a standby that does not cut back the WAL its primary lost is refused by it for good', async () => {
    const { clean, bugged } = await bothWays('keep-unconfirmed-tail', lostAndRewritten);
    assertClean(clean, 'keep-unconfirmed-tail');
    assert.equal(clean.observed, null, 'as shipped, s1 cuts the lost WAL back and catches up');
    assert.notEqual(bugged.observed, null, 'with the bug, s1 keeps WAL the primary does not have, and never catches up');
  });

  it('apply-past-durable-end, cascading: a standby forwards early WAL downstream before the primary made it durable', async () => {
    // p → s1 → s2: s1 holds early WAL; s2 must get none of it until p says it is durable.
    const { clean, bugged } = await bothWays('apply-past-durable-end', () =>
      onCluster({ ...OPTIONS, standbys: 2, cascade: true }, async (cluster) => {
        await earlyWalOnS1(cluster);
        const forwarded = ((cluster.node('s2') as Standby).receiveLsn ?? 0) > cluster.primary!.flushLsn;
        await cluster.crash('p');
        await cluster.restart('p');
        await cluster.commit({ count: 4 });
        await cluster.settle();
        return forwarded ? 'forwarded' : 'held';
      }),
    );
    assertClean(clean, 'apply-past-durable-end, cascading');
    assert.equal(clean.observed, 'held', 'as shipped, s1 forwards nothing past the durable end it heard');
    assert.equal(bugged.observed, 'forwarded', 'with the bug, s2 receives the early WAL');
    assert.ok(!bugged.check.ok, `with the bug, the checker reports it:\n${bugged.check.report}`);
  });

  it('promote-keeps-unconfirmed-tail: a promotion without the cut makes WAL the primary never made durable part of the new timeline', async () => {
    const { clean, bugged } = await bothWays('promote-keeps-unconfirmed-tail', () =>
      onCluster(OPTIONS, async (cluster) => {
        const early = await earlyWalOnS1(cluster);
        assert.equal(await cluster.failover(), 's1');
        await cluster.commit({ level: 'local', count: 2 });
        const applied = new Set(cluster.applied('s1').map((batch) => batch.digest));
        return String(early.filter((c) => applied.has(c.digest)).length);
      }),
    );
    assertClean(clean, 'promote-keeps-unconfirmed-tail');
    assert.equal(clean.observed, '0', 'as shipped, the promoted s1 holds none of the WAL p never said was durable');
    assertClean(bugged, 'promote-keeps-unconfirmed-tail (those commits were never acknowledged)');
    assert.equal(bugged.observed, '3', 'with the bug, it applies all three');
  });

  it("confirm-unconfirmed-wal: a commit released on a standby's flush of WAL it did not know was durable is lost at failover, 'acknowledged-lost'", async () => {
    // Latency between p and s1: s1's flush report of the early WAL reaches p before p's own
    // fdatasync returns, and the durable end p sends after it is still on its way to s1 when
    // p loses power and s1 is promoted.
    const { clean, bugged } = await bothWays('confirm-unconfirmed-wal', () =>
      onCluster(OPTIONS, async (cluster) => {
        await cluster.commit({ count: 2 });
        await cluster.waitForCatchup('s1', { mode: 'replay' });
        cluster.delay('p', 's1', 5);
        cluster.slowDisk('p', 20);
        const [commit] = await cluster.commit();
        const outcome = commit!.outcome;
        await cluster.failover();
        await cluster.commit({ level: 'local' });
        return outcome;
      }),
    );
    assertClean(clean, 'confirm-unconfirmed-wal');
    assert.equal(clean.observed, 'acknowledged');
    assertCaught(bugged, 'acknowledged-lost', 'confirm-unconfirmed-wal');
  });

  for (const earlySend of [false, true]) {
    it(`generated scenarios with standbys that flush on request (flushDelayMs 5${earlySend ? ', early WAL' : ''}) break no guarantee (${SWEEP_SEEDS} seeds)`, async () => {
      const failed: string[] = [];
      for (let seed = 1; seed <= SWEEP_SEEDS; seed++) {
        const result = await runScenario({ seed, flushDelayMs: 5, earlySend, shrink: false });
        if (!result.ok) failed.push(result.report);
      }
      assert.deepEqual(failed, []);
    });
  }

  for (const syncBlocks of [false, true]) {
    it(`generated scenarios with early WAL and slow disks break no guarantee (${SWEEP_SEEDS} seeds${syncBlocks ? ', syncs that hold the event loop' : ''})`, async () => {
      const failed: string[] = [];
      let slowDisks = 0;
      for (let seed = 1; seed <= SWEEP_SEEDS; seed++) {
        const result = await runScenario({ seed, earlySend: true, shrink: false, ...(syncBlocks ? { syncBlocks } : {}) });
        slowDisks += result.steps.filter((step) => step.op === 'slowDisk').length;
        if (!result.ok) failed.push(result.report);
      }
      assert.deepEqual(failed, []);
      assert.ok(slowDisks > SWEEP_SEEDS, `the scenarios slowed disks (${slowDisks} times)`);
    });
  }
});
