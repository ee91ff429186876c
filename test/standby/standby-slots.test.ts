import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  isWalshipError,
  type Primary,
  SlotManager,
  Standby,
  type ErrorCode,
  type Lsn,
  type ReplicationSlotRow,
  type Snapshot,
  type StandbyPrimaryOptions,
} from '../../src/index.js';
import { createReplicationSlot, dropReplicationSlot } from '../../src/protocol/index.js';
import { createCluster, MemoryNetwork, MemoryStorage, type Cluster, type ClusterOptions } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { payload, within } from '../helpers/wal.js';
import { eventually, rawStandby } from '../helpers/primary-helpers.js';
import { HANG_MS, nextEvent } from '../helpers/standby-harness.js';

// Slots a standby manages itself over the replication protocol (createSlot, close({ dropSlot })),
// and a standby bootstrapping again when the primary no longer has the WAL it needs (#5).

const SEGMENT = 64 * 1024;
/** The tools' hand-driven connections come in as `repl` without a password. */
const TRUST: ClusterOptions = { auth: 'trust', segmentSize: SEGMENT };

/** Commits 8 KB batches until the WAL reaches `lsn`. */
async function commitUntil(primary: Primary, lsn: Lsn): Promise<void> {
  for (let i = 0; primary.flushLsn < lsn; i++) await primary.commit(payload(i, 8000));
}

function slotRow(primary: Primary, name: string): ReplicationSlotRow | undefined {
  return primary.slots().find((r) => r.slotName === name);
}

async function rejectsCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => isWalshipError(err, code) || assert.fail(`expected ${code}, got ${String(err)}`));
}

/** Waits until the standby has replayed everything the primary has committed. */
async function replayedAll(standby: Standby, primary: Primary, what: string): Promise<void> {
  await within(standby.waitForReplay(primary.currentLsn), HANG_MS, what);
}

/** Standby `s1` that streamed 2 segments' worth of WAL, caught up, and was stopped. */
async function caughtUpThenStopped(cluster: Cluster, primary: Primary, app: RecordingApp, connection: Partial<StandbyPrimaryOptions> = {}): Promise<void> {
  await commitUntil(primary, 2 * SEGMENT);
  const standby = await cluster.standby('s1', { upstream: primary, application: app, connection });
  await replayedAll(standby, primary, 'the standby to catch up');
  await standby.close();
}

describe('slot commands over the replication protocol', () => {
  it('creates and drops slots, refusing bad requests without ending the connection', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    await commitUntil(primary, 3 * SEGMENT);
    const conn = await rawStandby(cluster.transport('tool'), cluster.address(primary), 'tool');
    const created = await createReplicationSlot(conn, 'from_tool', { reserveWal: true });
    assert.deepEqual(created, { slotName: 'from_tool', restartLsn: primary.appliedLsn }, 'reserves WAL from where the application applied');
    assert.equal(slotRow(primary, 'from_tool')?.restartLsn, primary.appliedLsn, 'the primary lists the slot');
    assert.deepEqual(await createReplicationSlot(conn, 'lazy'), { slotName: 'lazy', restartLsn: null }, 'without reserveWal nothing is reserved');

    await rejectsCode(createReplicationSlot(conn, 'from_tool'), 'SLOT_EXISTS');
    await rejectsCode(createReplicationSlot(conn, 'Bad-Name'), 'INVALID_SLOT_NAME');
    await rejectsCode(dropReplicationSlot(conn, 'nope'), 'SLOT_NOT_FOUND');
    // Each refusal left the connection usable.
    conn.send({ kind: 'identifySystem' });
    const identity = await within(conn.next(), HANG_MS, 'identifySystemResult');
    assert.equal(identity?.kind, 'identifySystemResult', 'the connection still answers commands');
    assert.equal((await conn.next())?.kind, 'readyForCommand', 'and is ready for the next');

    await dropReplicationSlot(conn, 'lazy');
    assert.deepEqual(primary.slots().map((r) => r.slotName), ['from_tool'], 'dropped over the protocol');
    conn.destroy();
  });

  it('DROP … WAIT waits until the standby using the slot leaves; without WAIT it is SLOT_ACTIVE', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), connection: { slotName: 'held', createSlot: true } });
    await commitUntil(primary, 2 * SEGMENT);
    await replayedAll(standby, primary, 'the standby to catch up');
    await eventually(() => slotRow(primary, 'held')?.active === true, HANG_MS, 'the standby to stream with its slot');
    const conn = await rawStandby(cluster.transport('tool'), cluster.address(primary), 'tool');
    await rejectsCode(dropReplicationSlot(conn, 'held'), 'SLOT_ACTIVE');
    let dropped = false;
    const drop = dropReplicationSlot(conn, 'held', { wait: true }).then(() => (dropped = true));
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(dropped, false, 'the drop waits while the slot is in use');
    await standby.close();
    await within(drop, HANG_MS, 'the drop to finish once the standby left');
    assert.equal(slotRow(primary, 'held'), undefined, 'the slot is gone');
    conn.destroy();
  });
});

describe('Standby createSlot and close({ dropSlot })', () => {
  it('creates its slot before the base backup, reuses it after a restart, and drops it when leaving', async (t) => {
    const cluster = createCluster(t, TRUST);
    const app = new RecordingApp();
    const primary = await cluster.primary('primary', { application: app, recycleSegments: 0 });
    await commitUntil(primary, 2 * SEGMENT);
    const standbyApp = new RecordingApp();
    let standby = await cluster.standby('s1', { upstream: primary, application: standbyApp, connection: { slotName: 'sb1', createSlot: true } });
    const created = await within(nextEvent(standby, 'slot:created'), HANG_MS, 'slot:created');
    assert.equal(created.slotName, 'sb1', 'the event names the slot');
    assert.ok(created.restartLsn !== null && created.restartLsn <= primary.appliedLsn, 'the slot reserved WAL at once');
    await replayedAll(standby, primary, 'the standby to catch up');
    assert.equal(standbyApp.restores, 1, 'the new standby bootstrapped from a base backup');
    await eventually(() => slotRow(primary, 'sb1')?.activeApplicationName === 's1', HANG_MS, 'the standby to stream with the slot it created');
    await standby.close();

    // Down for a while: the slot keeps the WAL, checkpoints notwithstanding.
    await commitUntil(primary, 6 * SEGMENT);
    await primary.checkpoint();
    const again: string[] = [];
    standby = await cluster.standby('s1', { upstream: primary, application: standbyApp, connection: { slotName: 'sb1', createSlot: true } });
    standby.on('slot:created', (e) => again.push(e.slotName));
    standby.on('rebootstrap', () => again.push('rebootstrap'));
    await replayedAll(standby, primary, 'the restarted standby to catch up');
    assert.deepEqual(again, [], 'an existing slot is used as it is, and nothing was bootstrapped again');
    assert.equal(standbyApp.applied.length, app.applied.length, 'the standby applied every batch');

    await standby.close({ dropSlot: true });
    assert.equal(slotRow(primary, 'sb1'), undefined, 'close({ dropSlot: true }) dropped the slot on the primary');
  });

  it('refuses createSlot without slotName', async () => {
    const net = new MemoryNetwork();
    await rejectsCode(
      Standby.open({
        storage: new MemoryStorage(),
        application: new RecordingApp(),
        primary: { transport: net.transport('s1'), address: 'primary:0', user: 'repl', applicationName: 's1', createSlot: true },
      }),
      'INVALID_OPTIONS',
    );
  });
});

describe('bootstrapping again after WAL_REMOVED', () => {
  it('a standby whose slot was invalidated re-creates it, bootstraps from a base backup and says so', async (t) => {
    const cluster = createCluster(t, TRUST);
    const app = new RecordingApp();
    const primary = await cluster.primary('primary', { application: app, recycleSegments: 0, maxSlotWalKeepSize: 2 * SEGMENT });
    await commitUntil(primary, 2 * SEGMENT);
    const standbyApp = new RecordingApp();
    let standby = await cluster.standby('s1', { upstream: primary, application: standbyApp, connection: { slotName: 'sb1', createSlot: true } });
    await replayedAll(standby, primary, 'the standby to catch up');
    await standby.checkpoint();
    await standby.close();

    const invalidated = new Promise((resolve) => primary.once('slot:invalidated', resolve));
    for (let i = 0; i < 4; i++) {
      await commitUntil(primary, primary.flushLsn + 2 * SEGMENT);
      await primary.checkpoint();
    }
    await within(invalidated, HANG_MS, 'slot:invalidated');
    assert.equal(slotRow(primary, 'sb1')?.walStatus, 'lost', 'the slot is lost');

    standby = await cluster.standby('s1', { upstream: primary, application: standbyApp, connection: { slotName: 'sb1', createSlot: true } });
    const events: string[] = [];
    standby.on('rebootstrap', (e) => events.push(`rebootstrap ${e.error.code}`));
    standby.on('slot:created', () => events.push('slot:created'));
    await eventually(() => events.length >= 2, HANG_MS, 'the standby to bootstrap again');
    await replayedAll(standby, primary, 'the standby to catch up after bootstrapping again');
    assert.deepEqual(events, ['rebootstrap WAL_REMOVED', 'slot:created'], 'it said why, then re-created its slot');
    // Restored: from the first backup, from its checkpoint at the reopen, from the second backup.
    assert.equal(standbyApp.restores, 3, 'the state came from a second base backup');
    assert.deepEqual(standbyApp.applied, app.applied, 'the standby has exactly the primary state');
    await eventually(() => slotRow(primary, 'sb1')?.active === true, HANG_MS, 'the standby to stream with its new slot');
    assert.equal(slotRow(primary, 'sb1')?.walStatus, 'reserved', 'the new slot holds WAL again');
    await standby.close();
  });

  it('a standby without a slot that fell behind walKeepSize bootstraps again', async (t) => {
    const cluster = createCluster(t, TRUST);
    const app = new RecordingApp();
    const primary = await cluster.primary('primary', { application: app, recycleSegments: 0 });
    await commitUntil(primary, 2 * SEGMENT);
    const standbyApp = new RecordingApp();
    let standby = await cluster.standby('s1', { upstream: primary, application: standbyApp });
    await replayedAll(standby, primary, 'the standby to catch up');
    await standby.close();
    await commitUntil(primary, 6 * SEGMENT);
    await primary.checkpoint();

    standby = await cluster.standby('s1', { upstream: primary, application: standbyApp });
    const rebootstrap = within(nextEvent(standby, 'rebootstrap'), HANG_MS, 'rebootstrap');
    assert.equal((await rebootstrap).error.code, 'WAL_REMOVED', 'the reason is the removed WAL');
    await replayedAll(standby, primary, 'the standby to catch up after bootstrapping again');
    assert.deepEqual(standbyApp.applied, app.applied, 'the standby has exactly the primary state');
    await standby.close();
    // The directory was rebuilt: it reopens as an ordinary standby.
    standby = await cluster.standby('s1', { upstream: primary, application: standbyApp });
    standby.on('rebootstrap', () => assert.fail('the rebuilt directory must not bootstrap again'));
    await commitUntil(primary, primary.flushLsn + 1000);
    await replayedAll(standby, primary, 'the reopened standby to catch up');
    // Restored: from the first backup, from it again at the reopen, from the second backup,
    // and now from that one (the directory's own checkpoint), with no further bootstrap.
    assert.equal(standbyApp.restores, 4, 'reopening restored from its own checkpointed state');
    await standby.close();
  });

  it('with an invalidated slot it did not create, it stops after one attempt with a clear WAL_REMOVED', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, maxSlotWalKeepSize: 2 * SEGMENT });
    await primary.createSlot('given');
    await caughtUpThenStopped(cluster, primary, new RecordingApp(), { slotName: 'given' });
    for (let i = 0; i < 4; i++) {
      await commitUntil(primary, primary.flushLsn + 2 * SEGMENT);
      await primary.checkpoint();
    }
    assert.equal(slotRow(primary, 'given')?.walStatus, 'lost', 'the slot is lost');
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), connection: { slotName: 'given' } });
    let rebootstraps = 0;
    standby.on('rebootstrap', () => rebootstraps++);
    const failed = await within(nextEvent(standby, 'failed'), HANG_MS, 'failed');
    assert.equal(failed.error.code, 'WAL_REMOVED', 'it stops with WAL_REMOVED');
    assert.match(failed.error.message, /drop and recreate it/, 'saying what to do');
    assert.equal(rebootstraps, 1, 'after bootstrapping again once');
    await standby.close();
  });

  it('with an invalidated slot it did not create while the WAL is still there, it stops without discarding anything', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, maxSlotWalKeepSize: 2 * SEGMENT });
    const app = new RecordingApp();
    let holder: Awaited<ReturnType<typeof rawStandby>> | null = null;
    try {
      await primary.createSlot('given');
      await caughtUpThenStopped(cluster, primary, app, { slotName: 'given' });
      const resumeAt = primary.flushLsn;
      // Another standby, connected without a slot and reading from there, keeps that WAL on
      // the primary while the slot, past maxSlotWalKeepSize, may no longer.
      holder = await rawStandby(cluster.transport('holder'), cluster.address(primary), 'holder');
      const conn = holder;
      conn.send({ kind: 'startReplication', slotName: '', startLsn: resumeAt, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
      void (async () => {
        while ((await conn.next().catch(() => null)) !== null);
      })();
      await eventually(() => primary.replicationStatus().some((r) => r.applicationName === 'holder' && r.sentLsn !== null), HANG_MS, 'the holder to stream');
      for (let i = 0; i < 3; i++) {
        await commitUntil(primary, primary.flushLsn + 2 * SEGMENT);
        await primary.checkpoint();
      }
      assert.equal(slotRow(primary, 'given')?.walStatus, 'lost', 'the slot is lost');
      assert.ok(primary.wal.oldestLsn <= resumeAt, 'walKeepSize kept the WAL the standby needs');
      let standby = await cluster.standby('s1', { upstream: primary, application: app, connection: { slotName: 'given' } });
      let rebootstraps = 0;
      standby.on('rebootstrap', () => rebootstraps++);
      const failed = await within(nextEvent(standby, 'failed'), HANG_MS, 'failed');
      assert.equal(failed.error.code, 'WAL_REMOVED', 'it stops with WAL_REMOVED');
      assert.match(failed.error.message, /replication slot "given" that refuses .*drop and recreate it/, 'naming the slot and what to do');
      assert.equal(rebootstraps, 0, 'nothing was discarded');
      await standby.close();

      // Its local state is intact: without the lost slot it resumes where it was.
      await primary.dropSlot('given');
      const restores = app.restores;
      standby = await cluster.standby('s1', { upstream: primary, application: app });
      standby.on('rebootstrap', () => assert.fail('the standby resumes without a new bootstrap'));
      await replayedAll(standby, primary, 'the standby to resume from its own WAL');
      assert.ok(app.restores <= restores + 1, 'it resumed from its own state (at most its local checkpoint was restored)');
    } finally {
      holder?.destroy();
    }
  });
});

describe('slots on a standby for its own downstreams', () => {
  it('a SlotManager lives in a standby directory, across restarts and bootstrapping again', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    await commitUntil(primary, 2 * SEGMENT);
    const app = new RecordingApp();
    let standby = await cluster.standby('s1', { upstream: primary, application: app });
    await replayedAll(standby, primary, 'the standby to catch up');
    const slots = await SlotManager.open(cluster.storage('s1'));
    await slots.create('downstream', { reserveAt: standby.replayLsn as Lsn });
    await standby.close();

    await commitUntil(primary, 6 * SEGMENT);
    await primary.checkpoint();
    standby = await cluster.standby('s1', { upstream: primary, application: app });
    await within(nextEvent(standby, 'rebootstrap'), HANG_MS, 'rebootstrap');
    await replayedAll(standby, primary, 'the standby to catch up after bootstrapping again');
    const reopened = await SlotManager.open(cluster.storage('s1'));
    assert.ok(reopened.has('downstream'), "the standby's own slots survive its restart and its new bootstrap");
  });
});

describe('review regressions (slots and bootstrapping again)', () => {
  it('createSlot on a standby that already has WAL reserves from where it resumes', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    const app = new RecordingApp();
    await caughtUpThenStopped(cluster, primary, app);
    await commitUntil(primary, 5 * SEGMENT);

    const standby = await cluster.standby('s1', { upstream: primary, application: app, connection: { slotName: 'sb1', createSlot: true } });
    const resumeAt = standby.receiveLsn as Lsn;
    let rebootstraps = 0;
    standby.on('rebootstrap', () => rebootstraps++);
    // Cut off right after creating the slot, before streaming: only the slot holds the WAL.
    standby.once('slot:created', () => {
      cluster.network.partition(['s1'], ['primary']);
      cluster.network.reset('s1', 'primary');
    });
    const created = await within(nextEvent(standby, 'slot:created'), HANG_MS, 'slot:created');
    assert.equal(created.restartLsn, resumeAt, 'the slot reserves from the standby resume point, not the primary position');
    await primary.checkpoint();
    cluster.network.heal();
    await replayedAll(standby, primary, 'the standby to catch up through its slot');
    assert.equal(rebootstraps, 0, 'the slot kept the WAL: no bootstrapping again');
  });

  it('a second WAL_REMOVED after bootstrapping again against an idle primary bootstraps again', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    const app = new RecordingApp();
    await caughtUpThenStopped(cluster, primary, app);
    await commitUntil(primary, 6 * SEGMENT);
    await primary.checkpoint();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    await within(nextEvent(standby, 'rebootstrap'), HANG_MS, 'the first rebootstrap');
    await replayedAll(standby, primary, 'the standby to catch up after bootstrapping again');
    cluster.network.partition(['s1'], ['primary']);
    cluster.network.reset('s1', 'primary');
    await commitUntil(primary, primary.flushLsn + 6 * SEGMENT);
    await primary.checkpoint();
    const failed = nextEvent(standby, 'failed').then((e) => `failed: ${e.error.message}`);
    const again = nextEvent(standby, 'rebootstrap').then(() => 'bootstrapped again');
    cluster.network.heal();
    assert.equal(await within(Promise.race([failed, again]), HANG_MS, 'the outcome'), 'bootstrapped again', 'a new WAL_REMOVED is handled like the first');
    await replayedAll(standby, primary, 'the standby to catch up again');
  });

  it('while bootstrapping again the standby is not readable until consistent again', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    class ProbeApp extends RecordingApp {
      standby: Standby | null = null;
      readonly seen: string[] = [];
      override async restore(snapshot: Snapshot): Promise<void> {
        if (this.standby !== null) this.seen.push(`restore: readable=${this.standby.readable} consistent=${this.standby.consistent}`);
        await super.restore(snapshot);
      }
    }
    const app = new ProbeApp();
    await caughtUpThenStopped(cluster, primary, app);
    await commitUntil(primary, 6 * SEGMENT);
    await primary.checkpoint();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    app.standby = standby;
    const consistentAgain = nextEvent(standby, 'consistent');
    await within(nextEvent(standby, 'rebootstrap'), HANG_MS, 'rebootstrap');
    await within(consistentAgain, HANG_MS, 'consistent again');
    await replayedAll(standby, primary, 'the standby to catch up');
    assert.deepEqual(app.seen, ['restore: readable=false consistent=false'], 'the new state was restored while nothing was served');
    assert.equal(standby.readable, true, 'readable again once consistent');
  });

  it('close({ dropSlot: true }) after a plain close() still drops the slot', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    await commitUntil(primary, SEGMENT + 1000);
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), connection: { slotName: 'sb1', createSlot: true } });
    await replayedAll(standby, primary, 'the standby to catch up');
    const first = standby.close();
    await standby.close({ dropSlot: true });
    await first;
    assert.equal(slotRow(primary, 'sb1'), undefined, 'the slot was dropped');
    const bare = await cluster.standby('s2', { upstream: primary, application: new RecordingApp() });
    await rejectsCode(bare.close({ dropSlot: true }), 'INVALID_ARGUMENT');
  });
});
