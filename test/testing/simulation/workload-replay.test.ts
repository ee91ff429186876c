import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KvApplication, createCluster, kvEntry, runScenario, type SimulationOptions } from '../../../src/testing/index.js';

// A simulated cluster runs the caller's own application on the caller's own entries (the
// `workload` option), and the replay line of its report carries the options the run started
// with, so that a failing test of one's own application replays as it ran.

/** Entries of commit call `id`: a key of their own, so the application's state names every call it applied. */
const workload = (id: number): Uint8Array[] => [kvEntry({ key: `transfer-${id}`, value: `${id}` })];

/** An application factory that keeps each node's latest instance. */
function applications(): { factory: (name: string) => KvApplication; latest: Map<string, KvApplication> } {
  const latest = new Map<string, KvApplication>();
  return {
    latest,
    factory: (name) => {
      const app = new KvApplication();
      latest.set(name, app);
      return app;
    },
  };
}

describe('simulated cluster: workload and replay', () => {
  it('commit() without entries commits the workload entries of each call number, on every node', async (t) => {
    const cluster = await createCluster({ t, standbys: 1, application: () => new KvApplication(), workload });
    const records = await cluster.commit({ count: 3 });
    assert.deepEqual(records.map((r) => r.outcome), ['acknowledged', 'acknowledged', 'acknowledged'], 'the three commits are acknowledged');
    await cluster.waitForCatchup('s1');
    for (const name of ['p', 's1']) {
      const app = cluster.application(name);
      assert.ok(app instanceof KvApplication, `${name} runs the KvApplication given`);
      assert.deepEqual([...app.entries()].sort(), [['transfer-1', '1'], ['transfer-2', '2'], ['transfer-3', '3']], `${name} applied the workload's entries`);
    }
    // Explicit entries still win over the workload.
    await cluster.commit({ entries: [kvEntry({ key: 'explicit', value: 'yes' })] });
    assert.equal((cluster.application('p') as KvApplication).get('explicit'), 'yes', 'explicit entries are committed as given');
    assert.equal((cluster.application('p') as KvApplication).get('transfer-4'), undefined, 'not the workload entries of call 4');
  });

  it("the replay line names the run's options, and replaying it commits the same entries to the same nodes", async (t) => {
    const original = applications();
    const options = { standbys: 2, synchronousStandbyNames: 'ANY 1 (s1, s2)', application: original.factory, workload } satisfies SimulationOptions;
    const cluster = await createCluster({ t, seed: 5, ...options });
    await cluster.commit({ count: 4 });
    assert.notEqual(await cluster.failover(), null, 'a standby was promoted');
    await cluster.commit({ count: 4 });
    await cluster.settle();
    const check = cluster.check();
    assert.ok(check.ok, check.report);
    const replayLine = check.report.split('\n').find((line) => line.includes('replay: '));
    assert.ok(replayLine !== undefined, `the report has a replay line:\n${check.report}`);
    assert.ok(
      replayLine.startsWith(`  replay: runScenario({ seed: 5, standbys: 2, synchronousStandbyNames: "ANY 1 (s1, s2)", application, workload, steps: ${JSON.stringify(cluster.steps)} })`),
      `the replay line carries the seed, the options and the steps:\n${replayLine}`,
    );

    const replayed = applications();
    const result = await runScenario({ ...options, application: replayed.factory, seed: 5, steps: cluster.steps });
    assert.ok(result.ok, result.report);
    assert.equal(result.commits.calls, cluster.commits.length, 'the replay made as many commit calls');
    assert.deepEqual([...replayed.latest.keys()].sort(), ['p', 's1', 's2'], 'every node ran the application');
    for (const [name, app] of original.latest) {
      const state = [...app.entries()].sort();
      assert.ok(state.length > 0, `${name} applied commits`);
      assert.deepEqual([...replayed.latest.get(name)!.entries()].sort(), state, `${name} holds the same state in the replay`);
    }
  });

  it("a cluster started with createCluster's defaults names its synchronous standbys in the replay line (runScenario's default differs)", async (t) => {
    const cluster = await createCluster({ t, standbys: 1 });
    await cluster.commit();
    assert.match(cluster.check().report, /replay: runScenario\(\{ seed: 1, standbys: 1, synchronousStandbyNames: "FIRST 1 \(s1\)", steps: \[/, 'the replay line names FIRST 1 (s1)');
  });
});
