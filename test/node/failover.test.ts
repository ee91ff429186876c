import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Primary, Standby } from '../../src/index.js';
import { createCluster } from '../../src/testing/index.js';
import { RecordingApp, until, type AppliedBatch } from '../helpers/apps.js';
import { HANG_MS, codeOf, commitMany, nextEvent, receivedTo, record, named, replayedTo, sameSequence } from '../helpers/standby-harness.js';
import { within } from '../helpers/wal.js';

function texts(batches: readonly AppliedBatch[]): string[] {
  return batches.map((b) => b.entries.join('+'));
}

/** Waits until `standby` has given up on its last connection attempt with `code` (it keeps retrying). */
async function lastErrorIs(standby: Standby, code: string): Promise<void> {
  await within(until(() => standby.lastError?.code === code || standby.state === 'failed'), HANG_MS, `lastError ${code}`);
  assert.equal(standby.lastError?.code, code, `${standby.failure?.message ?? standby.lastError?.message}`);
}

describe('failover', () => {
  it('a second standby finds the promoted one through its address list and follows timeline 2 with every commit', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const app1 = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: app1, listen: true });
    const app2 = new RecordingApp();
    const s2 = await cluster.standby('s2', { upstream: p, application: app2, connection: { address: [cluster.address('p'), cluster.address('s1')] } });
    const end = await commitMany(p, 0, 60);
    await receivedTo(s1, p.flushLsn);
    await replayedTo(s2, end, 's2 to replay');
    await p.close();
    const primary = await within(s1.promote(), HANG_MS, 'the promotion');
    t.after(() => primary.close());
    const switched = nextEvent(s2, 'timeline:switch');
    const after = await commitMany(primary, 100, 20);
    assert.deepEqual(await within(switched, HANG_MS, 's2 to follow'), { timeline: 2, switchLsn: primary.wal.history.entries[0]?.switchLsn });
    await replayedTo(s2, after, 's2 to replay the new timeline');
    assert.equal(s2.timeline, 2);
    assert.deepEqual(texts(app2.applied), texts(app1.applied), 's2 applied exactly what the new primary did');
  });

  it('a cascaded standby follows its promoted upstream over the same connection (A → B → C)', async (t) => {
    const cluster = createCluster(t);
    const a = await cluster.primary('a', { application: new RecordingApp() });
    const appB = new RecordingApp();
    const b = await cluster.standby('b', { upstream: a, application: appB, listen: true });
    const appC = new RecordingApp();
    const c = await cluster.standby('c', { upstream: b, application: appC });
    const end = await commitMany(a, 0, 30);
    await replayedTo(c, end, 'c to replay');
    await receivedTo(b, a.flushLsn);
    await a.close();
    const events = record(c);
    const primary = await within(b.promote(), HANG_MS, 'the promotion of b');
    t.after(() => primary.close());
    const after = await commitMany(primary, 100, 10);
    await replayedTo(c, after, 'c to replay timeline 2');
    assert.equal(c.timeline, 2);
    assert.deepEqual(named(events, 'primary:connected'), [], 'c never reconnected');
    assert.deepEqual(named(events, 'primary:disconnected'), [], 'c never lost its connection');
    assert.equal(named(events, 'timeline:switch').length, 1);
    assert.deepEqual(texts(appC.applied), texts(appB.applied));
    assert.deepEqual(primary.replicationStatus().map((row) => [row.applicationName, row.timeline]), [['c', 2]], 'the downstream connection carried over, now on timeline 2');
  });

  it('refuses to follow an upstream behind its timeline (TIMELINE_MISMATCH) and keeps retrying', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s1 = await cluster.standby('s1', { upstream: p, application: new RecordingApp(), listen: true });
    await receivedTo(s1, await commitMany(p, 0, 5));
    await p.close();
    const primary = await s1.promote();
    t.after(() => primary.close());
    const s2 = await cluster.standby('s2', { upstream: primary, application: new RecordingApp() });
    await replayedTo(s2, await commitMany(primary, 10, 5), 's2 to replay timeline 2');
    await s2.close();
    // The old primary comes back (still on timeline 1): a standby on timeline 2 never follows it.
    const revived = await cluster.primary('p', { application: new RecordingApp() });
    t.after(() => revived.close());
    const s2again = await cluster.standby('s2', { upstream: revived, application: new RecordingApp() });
    await lastErrorIs(s2again, 'TIMELINE_MISMATCH');
    assert.notEqual(s2again.state, 'failed');
    // With both addresses it picks the newest timeline.
    s2again.reconfigure({ primary: { transport: cluster.transport('s2'), address: `${cluster.address('p')},${cluster.address('s1')}`, user: cluster.user, password: cluster.password, applicationName: 's2' } });
    await replayedTo(s2again, await commitMany(primary, 20, 3), 's2 to stream from the new primary again');
  });

  // S2 holds, beyond R's future switch point, either WAL (it streamed it) or only application
  // state (it bootstrapped from a base backup taken there, its WAL before the point).
  for (const bootstrap of ['early', 'late'] as const) {
    it(`among several addresses it picks the one its history allows, not a node promoted elsewhere (${bootstrap === 'early' ? 'WAL' : 'a base backup'} past its switch point)`, async (t) => {
      const cluster = createCluster(t);
      const p = await cluster.primary('p', { application: new RecordingApp() });
      const rogue = await cluster.standby('r', { upstream: p, application: new RecordingApp(), listen: true });
      const app1 = new RecordingApp();
      const s1 = await cluster.standby('s1', { upstream: p, application: app1, listen: true });
      const app2 = new RecordingApp();
      // R is listed before S1: a standby stays with the upstream it chose, so P comes first.
      const openS2 = (): Promise<Standby> =>
        cluster.standby('s2', { upstream: p, application: app2, connection: { address: [cluster.address('p'), cluster.address('r'), cluster.address('s1')] } });
      let s2 = bootstrap === 'early' ? await openS2() : null;
      await receivedTo(rogue, await commitMany(p, 0, 5));
      // R falls behind; S1 and S2 get more: R's timeline 2 would leave timeline 1 before S2's end.
      cluster.network.partition(['r'], ['p']);
      const end = await commitMany(p, 10, 5);
      await receivedTo(s1, p.flushLsn);
      s2 ??= await openS2();
      await replayedTo(s2, end, 's2 to replay');
      await p.close({ signal: AbortSignal.abort() });
      const rogueAsPrimary = await rogue.promote();
      t.after(() => rogueAsPrimary.close());
      await commitMany(rogueAsPrimary, 100, 3);
      const primary = await s1.promote();
      t.after(() => primary.close());
      const events = record(s2);
      await replayedTo(s2, await commitMany(primary, 200, 3), 's2 to follow s1 (listed after r)');
      assert.equal(s2.timeline, 2);
      assert.deepEqual(named(events, 'rewind'), [], 'nothing was rewound');
      assert.deepEqual(texts(app2.applied).slice(-8), texts(app1.applied).slice(-8), "s2 holds s1's history, not r's");
      if (bootstrap === 'early') assert.deepEqual(texts(app2.applied), texts(app1.applied));
    });
  }

  it('a standby streaming from a node whose new timeline leaves before its state does not follow it over the connection: it rewinds its application', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const appR = new RecordingApp();
    const rogue = await cluster.standby('r', { upstream: p, application: appR, listen: true });
    await receivedTo(rogue, await commitMany(p, 0, 5));
    cluster.network.partition(['r'], ['p']);
    const end = await commitMany(p, 10, 5);
    const app2 = new RecordingApp();
    const s2 = await cluster.standby('s2', { upstream: p, application: app2 });
    await replayedTo(s2, end, 's2 to replay');
    await p.close({ signal: AbortSignal.abort() });
    // S2 streams from R while R is still a standby on timeline 1, behind S2's state.
    s2.reconfigure({ primary: { transport: cluster.transport('s2'), address: cluster.address('r'), user: cluster.user, password: cluster.password, applicationName: 's2' } });
    await within(until(() => s2.state === 'streaming'), HANG_MS, 's2 to stream from r');
    const events = record(s2);
    const rogueAsPrimary = await rogue.promote();
    t.after(() => rogueAsPrimary.close());
    const { lsn } = await rogueAsPrimary.commit([Buffer.from('on r')]);
    // (A position on R's timeline 2 can lie below S2's position on timeline 1: wait for the batch.)
    await within(until(() => app2.lastLsn === lsn && s2.timeline === 2), HANG_MS, "s2 to take r's history");
    assert.equal(named(events, 'rewind').length, 1, 'its application was taken back, with an event');
    sameSequence(app2.applied, appR.applied, "s2 holds r's history");
  });

  it('a standby that received WAL past the switch point stops with TIMELINE_DIVERGED, its directory untouched', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s1 = await cluster.standby('s1', { upstream: p, application: new RecordingApp(), listen: true });
    const s2 = await cluster.standby('s2', { upstream: p, application: new RecordingApp(), rewind: false });
    await receivedTo(s1, await commitMany(p, 0, 5));
    // S1 falls behind; S2 keeps receiving: S2 will hold WAL the promoted S1 never had.
    cluster.network.partition(['s1'], ['p']);
    const ahead = await commitMany(p, 10, 5);
    await replayedTo(s2, ahead, 's2 to apply what s1 never got');
    // Immediately: a fast shutdown would wait for the partitioned S1 to confirm.
    await p.close({ signal: AbortSignal.abort() });
    const primary = await s1.promote();
    t.after(() => primary.close());
    const before = await s2.checkpoint().then(() => cluster.storage('s2').fileNames().sort());
    s2.reconfigure({ primary: { transport: cluster.transport('s2'), address: cluster.address('s1'), user: cluster.user, password: cluster.password, applicationName: 's2' } });
    await within(nextEvent(s2, 'failed'), HANG_MS, 's2 to stop');
    assert.equal(s2.failure?.code, 'TIMELINE_DIVERGED');
    assert.match(s2.failure?.message ?? '', /past 0\/[0-9A-F]+, where the upstream's timeline 2 left timeline 1/);
    assert.deepEqual(cluster.storage('s2').fileNames().sort(), before, 'nothing written or removed');
  });

  it("recoveryTargetTimeline 'current' stays on its timeline", async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s1 = await cluster.standby('s1', { upstream: p, application: new RecordingApp(), listen: true });
    const s2 = await cluster.standby('s2', { upstream: s1, application: new RecordingApp(), recoveryTargetTimeline: 'current' });
    await replayedTo(s2, await commitMany(p, 0, 5), 's2 to replay');
    await receivedTo(s1, p.flushLsn);
    await p.close();
    const primary = await s1.promote();
    t.after(() => primary.close());
    await commitMany(primary, 10, 3);
    await lastErrorIs(s2, 'TIMELINE_MISMATCH');
    assert.equal(s2.timeline, 1);
    assert.equal(await codeOf(Promise.resolve().then(() => s2.reconfigure({ primary: { bogus: true } as never }))), 'INVALID_OPTIONS');
  });
});

export type { Primary };
