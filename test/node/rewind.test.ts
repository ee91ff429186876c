import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { Application, Primary, RewindEvent } from '../../src/index.js';
import { createCluster, type Cluster } from '../../src/testing/index.js';
import { PlainApp, RecordingApp, type AppliedBatch } from '../helpers/apps.js';
import { HANG_MS, commitMany, nextEvent, receivedTo, replayedTo } from '../helpers/standby-harness.js';
import { within } from '../helpers/wal.js';

function texts(batches: readonly AppliedBatch[]): string[] {
  return batches.map((b) => b.entries.join('+'));
}

function discardedTexts(event: RewindEvent): string[] {
  return event.batches.map((b) => b.entries.map((e) => Buffer.from(e.data).toString('hex')).join('+'));
}

/**
 * P and its standby S1 (listening); S1 receives `shared` commits, then is cut off while P
 * commits `tail` more that S1 never gets; P dies (immediately), S1 is promoted, the network
 * heals. Returns the new primary (closed when the test ends) and S1's application.
 */
async function oldPrimaryWithTail(
  t: TestContext,
  cluster: Cluster,
  options: { shared: number; tail: number; s1App?: Application },
): Promise<{ primary: Primary; app1: Application }> {
  const p = await cluster.primary('p', { application: new RecordingApp() });
  const app1 = options.s1App ?? new RecordingApp();
  const s1 = await cluster.standby('s1', { upstream: p, application: app1, listen: true });
  await receivedTo(s1, await commitMany(p, 0, options.shared));
  cluster.network.partition(['s1'], ['p']);
  await commitMany(p, 20, options.tail);
  await p.close({ signal: AbortSignal.abort() });
  const primary = await s1.promote();
  t.after(() => primary.close());
  cluster.network.heal();
  return { primary, app1 };
}

describe('rewind', () => {
  it('a standby ahead of the promoted one rewinds from its snapshot and reports exactly what it discarded', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const app1 = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: app1, listen: true });
    const app2 = new RecordingApp();
    const s2 = await cluster.standby('s2', { upstream: p, application: app2 });
    await receivedTo(s1, await commitMany(p, 0, 5));
    cluster.network.partition(['s1'], ['p']);
    const ahead = await commitMany(p, 10, 4);
    await replayedTo(s2, ahead, 's2 to apply what s1 never got');
    const onlyS2 = texts(app2.applied).filter((x) => !texts(app1.applied).includes(x));
    assert.equal(onlyS2.length, 4);
    await p.close({ signal: AbortSignal.abort() });
    const primary = await s1.promote();
    t.after(() => primary.close());
    const rewound = nextEvent(s2, 'rewind');
    s2.reconfigure({ primary: { transport: cluster.transport('s2'), address: cluster.address('s1'), user: cluster.user, password: cluster.password, applicationName: 's2' } });
    const event = (await within(rewound, HANG_MS, 'the rewind')) as RewindEvent;
    assert.equal(event.timeline, 1);
    assert.equal(event.switchLsn, primary.wal.history.entries[0]?.switchLsn);
    assert.equal(event.restoredFrom, 'snapshot');
    assert.equal(event.complete, true);
    assert.deepEqual(discardedTexts(event), onlyS2, 'exactly the batches the new primary never had');
    await replayedTo(s2, await commitMany(primary, 100, 5), 's2 to follow timeline 2');
    assert.ok(event.setAside.length > 0 && event.setAside.every((name) => cluster.storage('s2').fileNames().includes(`${name}.diverged`)), 'set aside, not deleted');
    assert.equal(s2.timeline, 2);
    assert.deepEqual(texts(app2.applied), texts(app1.applied), "s2's state is the new primary's");
  });

  it('the old primary rejoins as a standby: its unconfirmed tail is reported, its state becomes the new primary’s', async (t) => {
    const cluster = createCluster(t);
    const appP = new RecordingApp();
    const p = await cluster.primary('p', { application: appP });
    const app1 = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: app1, listen: true });
    await receivedTo(s1, await commitMany(p, 0, 8));
    await p.checkpoint();
    await receivedTo(s1, await commitMany(p, 8, 4));
    cluster.network.partition(['s1'], ['p']);
    // Asynchronous commits S1 never received: the tail the old primary loses.
    await commitMany(p, 20, 3);
    const unconfirmed = texts(appP.applied).slice(-3);
    await p.close({ signal: AbortSignal.abort() });
    const primary = await s1.promote();
    t.after(() => primary.close());
    cluster.network.heal();
    await commitMany(primary, 100, 3);

    const rejoinApp = new RecordingApp();
    const rejoined = await cluster.standby('p', { upstream: cluster.address('s1'), application: rejoinApp });
    const event = (await within(nextEvent(rejoined, 'rewind'), HANG_MS, 'the rewind')) as RewindEvent;
    assert.deepEqual(discardedTexts(event), unconfirmed);
    assert.equal(event.restoredFrom, 'snapshot', 'from its checkpoint before the switch point');
    await replayedTo(rejoined, await commitMany(primary, 200, 3), 'the old primary to follow the new one');
    assert.equal(rejoined.timeline, 2);
    assert.deepEqual(texts(rejoinApp.applied), texts(app1.applied));
  });

  it('without a snapshot before the switch point it takes a base backup from the new primary', async (t) => {
    const cluster = createCluster(t);
    const app1 = new RecordingApp();
    const { primary } = await oldPrimaryWithTail(t, cluster, { shared: 6, tail: 2, s1App: app1 });
    const rejoinApp = new RecordingApp();
    const rejoined = await cluster.standby('p', { upstream: cluster.address('s1'), application: rejoinApp });
    const event = (await within(nextEvent(rejoined, 'rewind'), HANG_MS, 'the rewind')) as RewindEvent;
    assert.equal(event.restoredFrom, 'base-backup');
    assert.equal(event.batches.length, 2);
    await replayedTo(rejoined, await commitMany(primary, 100, 3), 'the rejoined node to follow');
    assert.deepEqual(texts(rejoinApp.applied), texts(app1.applied));
    assert.ok(cluster.storage('p').fileNames().some((n) => n.endsWith('.diverged')), 'the discarded WAL is kept');
  });

  it("stops (BASE_BACKUP_REQUIRED) rather than replay on top of its state when the new primary cannot make a base backup", async (t) => {
    const cluster = createCluster(t);
    // No snapshot() hook on the standby that becomes primary: it cannot make base backups.
    await oldPrimaryWithTail(t, cluster, { shared: 6, tail: 2, s1App: new PlainApp() });
    const app = new RecordingApp();
    const rejoined = await cluster.standby('p', { upstream: cluster.address('s1'), application: app });
    await within(nextEvent(rejoined, 'failed'), HANG_MS, 'the refusal');
    assert.equal(rejoined.failure?.code, 'BASE_BACKUP_REQUIRED');
    assert.ok(cluster.storage('p').fileNames().some((n) => n.endsWith('.diverged')), 'the discarded WAL is kept');
  });

  it("with synchronous_commit 'on' and a sync standby, no acknowledged commit is ever discarded", async (t) => {
    const cluster = createCluster(t);
    const appP = new RecordingApp();
    const p = await cluster.primary('p', { application: appP, synchronousStandbyNames: 'FIRST 1 (s1)' });
    const app1 = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: app1, listen: true });
    const acknowledged: string[] = [];
    for (let i = 0; i < 10; i++) {
      await p.commit([Buffer.from(`sync ${i}`)]);
      acknowledged.push(Buffer.from(`sync ${i}`).toString('hex'));
    }
    cluster.network.partition(['s1'], ['p']);
    // In the WAL, never acknowledged: they wait for S1 until the primary dies.
    const waiting = [0, 1].map((i) => p.commit([Buffer.from(`unacknowledged ${i}`)]).catch(() => null));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await p.close({ signal: AbortSignal.abort() });
    assert.deepEqual(await Promise.all(waiting), [null, null], 'never acknowledged');
    const primary = await s1.promote();
    t.after(() => primary.close());
    cluster.network.heal();
    const rejoinApp = new RecordingApp();
    const rejoined = await cluster.standby('p', { upstream: cluster.address('s1'), application: rejoinApp });
    const event = (await within(nextEvent(rejoined, 'rewind'), HANG_MS, 'the rewind')) as RewindEvent;
    assert.deepEqual(discardedTexts(event).filter((x) => acknowledged.includes(x)), [], 'no acknowledged commit discarded');
    for (const a of acknowledged) assert.ok(texts(app1.applied).includes(a), 'every acknowledged commit is on the new primary');
    await replayedTo(rejoined, await commitMany(primary, 100, 2), 'the rejoined node to follow');
    assert.deepEqual(texts(rejoinApp.applied), texts(app1.applied));
  });

  it('with rewind: false a former primary stops with TIMELINE_DIVERGED and keeps its directory', async (t) => {
    const cluster = createCluster(t);
    await oldPrimaryWithTail(t, cluster, { shared: 4, tail: 2 });
    const before = cluster.storage('p').fileNames().sort();
    const rejoined = await cluster.standby('p', { upstream: cluster.address('s1'), application: new RecordingApp(), rewind: false });
    await within(nextEvent(rejoined, 'failed'), HANG_MS, 'the refusal');
    assert.equal(rejoined.failure?.code, 'TIMELINE_DIVERGED');
    await rejoined.close();
    assert.deepEqual(cluster.storage('p').fileNames().sort(), before, 'nothing written, cut or removed');
  });
});
