/**
 * A simulated standby's replay delay is measured on the cluster's virtual clock, also when the
 * caller reads it outside the cluster's own calls (a test, a metrics scrape): read on Node's
 * real clock it was the months between the virtual and the real date.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { Application, CommittedBatch, Snapshot } from '../../../src/application.js';
import type { Standby } from '../../../src/standby.js';
import { createCluster, KvApplication } from '../../../src/testing/index.js';

/** A key-value application whose replay waits, once `gate` is set, until it resolves. */
class GatedKv implements Application {
  readonly #kv = new KvApplication();
  gate: Promise<void> | null = null;

  apply(batch: CommittedBatch): void | Promise<void> {
    if (this.gate === null) return this.#kv.apply(batch);
    return this.gate.then(() => this.#kv.apply(batch));
  }

  snapshot(): Promise<Uint8Array> {
    return this.#kv.snapshot();
  }

  restore(snapshot: Snapshot): Promise<void> {
    return this.#kv.restore(snapshot);
  }
}

it("a simulated standby's replayDelayMs and replay lag in seconds are virtual, read from outside the cluster's calls", async (t) => {
  const gated = new GatedKv();
  const cluster = await createCluster({ t, standbys: 1, synchronousStandbyNames: '', application: (name) => (name === 's1' ? gated : new KvApplication()) });
  await cluster.commit();
  await cluster.waitForCatchup('s1');
  let open: () => void = () => undefined;
  gated.gate = new Promise<void>((resolve) => (open = resolve));
  await cluster.sleep(1_000);
  await cluster.commit();
  await cluster.waitForCatchup('s1', { mode: 'flush' });
  await cluster.sleep(1_000);
  const standby = cluster.node('s1') as Standby;
  const delay = standby.replayDelayMs;
  // The first batch was committed at least 2 virtual seconds ago, and within the run.
  assert.ok(delay !== null && delay >= 2_000 && delay <= cluster.scheduler.monotonic(), `replayDelayMs ${String(delay)} lies within the run's ${cluster.scheduler.monotonic()} virtual ms`);
  const lag = standby.metrics().replayLagSeconds;
  assert.ok(lag !== null && lag * 1000 >= 2_000 && lag * 1000 <= cluster.scheduler.monotonic(), `replayLagSeconds ${String(lag)} lies within the run's virtual time`);
  open();
  await cluster.waitForCatchup('s1');
  assert.equal(standby.replayDelayMs, 0, 'caught up, the delay is 0');
});
