import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { segmentFileName, type Primary } from '../../src/index.js';
import { CLUSTER_DEFAULTS, createCluster, seededRandom } from '../../src/testing/index.js';
import { CRASH_MODES } from '../helpers/crashes.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, commitMany, sameSequence, replayedTo, copyOf } from '../helpers/standby-harness.js';


describe('cascading standbys: A → B → C', () => {
  it('C bootstraps by base backup from B and receives every commit of A, in order, exactly once; A sees only B', async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    const a = await cluster.primary('a', { application: appA });
    const appB = new RecordingApp();
    const appC = new RecordingApp();
    const b = await cluster.standby('b', { upstream: a, application: appB, listen: true });
    assert.equal(b.address, 'b:1', 'B listens');
    await commitMany(a, 0, 40);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    const c = await cluster.standby('c', { upstream: b, application: appC });
    await commitMany(a, 40, 60);
    await replayedTo(c, a.currentLsn, 'C to catch up through B');
    assert.equal(appC.restores, 1, 'C started from a base backup (of B)');
    sameSequence(appC.applied, appA.applied, "C's applied sequence");
    sameSequence(appB.applied, appA.applied, "B's applied sequence");
    assert.deepEqual(a.replicationStatus().map((r) => r.applicationName), ['b'], 'the primary sees only its direct standby');
    await within(until(() => b.replicationStatus()[0]?.replayLsn === a.currentLsn), HANG_MS, "B's row for C");
    const row = b.replicationStatus()[0];
    assert.equal(row?.applicationName, 'c', "B shows C's row");
    assert.equal(row?.state, 'streaming');
    assert.equal(row?.syncState, 'async', 'a cascaded standby is asynchronous');
  });

  it('with A stopped, B keeps serving reads and streams to C all that B has; C resumes when A and B go on', async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    let a = await cluster.primary('a', { application: appA });
    const appB = new RecordingApp();
    const appC = new RecordingApp();
    const b = await cluster.standby('b', { upstream: a, application: appB, listen: true });
    await commitMany(a, 0, 30);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    await a.close();
    assert.ok(b.readable, 'B still serves reads with its upstream down');
    const c = await cluster.standby('c', { upstream: b, application: appC });
    await replayedTo(c, b.replayLsn ?? 0, 'C to replay all that B has');
    await within(until(() => c.receiveLsn === b.receiveLsn), HANG_MS, 'C to receive all that B has');
    sameSequence(appC.applied, appB.applied, 'C holds what B holds');
    // A comes back (from its own storage); both follow it again.
    const appA2 = new RecordingApp();
    a = await cluster.primary('a', { application: appA2 });
    await commitMany(a, 30, 20);
    await replayedTo(c, a.currentLsn, 'C to follow A again through B');
    sameSequence(appC.applied, appA2.applied, "C's applied sequence");
  });

  it('B restarts mid-stream and C resumes with no gap and no duplicate', async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    const a = await cluster.primary('a', { application: appA });
    let b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    const appC = new RecordingApp();
    const c = await cluster.standby('c', { upstream: b, application: appC });
    for (let round = 0; round < 4; round++) {
      const committing = commitMany(a, round * 25, 25);
      await new Promise((resolve) => setTimeout(resolve, 2));
      await b.close();
      // The same name: B's storage and address.
      b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
      await committing;
    }
    await replayedTo(c, a.currentLsn, 'C to catch up after B restarted four times');
    sameSequence(appC.applied, appA.applied, "C's applied sequence");
  });

  it("a slot on B holds B's WAL for a stopped C through B's restartpoints; without it C would have to bootstrap again", async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    const a = await cluster.primary('a', { application: appA });
    const appB = new RecordingApp();
    const b = await cluster.standby('b', { upstream: a, application: appB, listen: true });
    const withSlot = { upstream: b, connection: { slotName: 'c_slot', createSlot: true } };
    let c = await cluster.standby('c', { ...withSlot, application: new RecordingApp() });
    await commitMany(a, 0, 20);
    await replayedTo(c, a.currentLsn, 'C to catch up');
    assert.deepEqual(b.slots().map((s) => s.slotName), ['c_slot'], "C's slot lives on B");
    const cAt = a.currentLsn;
    await c.close();
    // Far more WAL than one segment, and restartpoints on B that would remove it.
    await commitMany(a, 20, 400, 900);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    await b.checkpoint();
    const row = b.slots()[0];
    assert.ok(row !== undefined && row.restartLsn !== null && row.restartLsn <= cAt, `the slot still holds where C stopped: ${JSON.stringify(row)} vs ${cAt}`);
    assert.notEqual(row.walStatus, 'lost', "B's restartpoint kept the WAL C needs");
    const appC2 = new RecordingApp();
    c = await cluster.standby('c', { ...withSlot, application: appC2 });
    let rebootstrapped = false;
    c.on('rebootstrap', () => (rebootstrapped = true));
    await replayedTo(c, a.currentLsn, 'C to resume from its slot');
    assert.equal(rebootstrapped, false, 'C did not have to bootstrap again');
    assert.equal(appC2.restores, 1, 'C resumed from its own last restartpoint (its base backup), not a new one');
    sameSequence(appC2.applied, appA.applied, "C's applied sequence");
  });

  it('a downstream ahead of its upstream waits for it to catch up, then streams on', async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    const a = await cluster.primary('a', { application: appA });
    let b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    const appC = new RecordingApp();
    // C first follows A directly, and gets ahead of a stopped B.
    let c = await cluster.standby('c', { upstream: a, application: appC });
    await commitMany(a, 0, 20);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    await b.close();
    await commitMany(a, 20, 30);
    await replayedTo(c, a.currentLsn, 'C to get ahead of B');
    await c.close();
    // C now follows B, which is behind it until B catches up with A.
    const appC2 = new RecordingApp();
    c = await cluster.standby('c', { upstream: cluster.address('b'), application: appC2 });
    const waits: string[] = [];
    c.on('primary:disconnected', ({ error }) => {
      if (error !== null) waits.push(error.message);
    });
    b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true, walSenderTimeoutMs: 60_000 });
    await commitMany(a, 50, 10);
    await replayedTo(c, a.currentLsn, 'C to stream on through B');
    assert.notEqual(c.state, 'failed', 'C never failed');
    sameSequence(appC2.applied, appA.applied, "C's applied sequence");
    // Whether C met B still behind it depends on timing; either way it only waited, never failed.
    assert.ok(waits.every((m) => /behind this standby|nothing listens|no local state|closed|bootstrapping/.test(m)), `C only waited for B: ${waits.join('; ')}`);
  });

  it('a cascading standby ignores synchronousStandbyNames: a commit on A waits only for A’s own standbys', async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    const a: Primary = await cluster.primary('a', { application: appA, synchronousStandbyNames: 'FIRST 1 (b, c)' });
    const b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    const c = await cluster.standby('c', { upstream: b, application: new RecordingApp() });
    const { lsn } = await within(a.commit([Buffer.from('sync')]), HANG_MS, 'a synchronous commit');
    await replayedTo(c, lsn, 'C to replay it');
    assert.deepEqual(
      a.replicationStatus().map((r) => [r.applicationName, r.syncState]),
      [['b', 'sync']],
      'only B is a synchronous standby of A; C, behind B, is not seen by A',
    );
    assert.deepEqual(b.replicationStatus().map((r) => r.syncState), ['async']);
  });

  it("a crash at every storage step of B's restartpoint keeps the segment C's slot on B restarts from", async (t) => {
    const SEGMENT = CLUSTER_DEFAULTS.segmentSize;
    const cluster = createCluster(t);
    const a = await cluster.primary('a', { application: new RecordingApp() });
    const storageB = cluster.storage('b');
    const b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    const c = await cluster.standby('c', { upstream: b, application: new RecordingApp(), connection: { slotName: 'c_slot', createSlot: true } });
    await commitMany(a, 0, 20);
    await replayedTo(c, a.currentLsn, 'C to catch up');
    await c.close();
    const held = b.slots()[0]?.restartLsn ?? null;
    assert.ok(held !== null, "C's slot on B holds WAL");
    const lastBatch = await commitMany(a, 20, 300, 900);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    await b.close();
    await a.close();
    const needed = segmentFileName(1, Math.floor(held / SEGMENT), SEGMENT);
    assert.ok(storageB.fileNames().includes(needed), "before the restartpoint B has C's restart segment");
    const segmentsBefore = storageB.fileNames().filter((n) => /^[0-9A-F]{24}$/.test(n)).length;
    assert.ok(segmentsBefore > 4, `B holds several segments (${segmentsBefore})`);

    for (const [modeIndex, mode] of CRASH_MODES.entries()) {
      for (let k = 1; ; k++) {
        const what = `crash ${JSON.stringify(mode)} before operation ${k}`;
        assert.ok(k < 300, `${what}: the restartpoint never completes`);
        const storage = await copyOf(storageB);
        // B alone (its upstream is down): only its slot and its own settings decide what it keeps.
        const node = await cluster.standby('b', { upstream: cluster.address('a'), application: new RecordingApp(), storage });
        // Replayed to its end, so that the restartpoint is far past C's slot.
        await replayedTo(node, lastBatch, `${what}: the node to replay its WAL`);
        const random = seededRandom(k * 7919 + modeIndex);
        const crashed = storage.crashAfter(k, { ...mode, random });
        const outcome = await node.checkpoint().then(
          () => null,
          (err: unknown) => err,
        );
        const fired = await Promise.race([crashed, new Promise<null>((resolve) => setImmediate(() => resolve(null)))]);
        const completed = fired === null;
        if (completed) assert.equal(outcome, null, `${what}: with no crash the restartpoint succeeds (${String(outcome)})`);
        const survivor = fired ?? storage.crash({ ...mode, random });
        await within(node.close().catch(() => undefined), HANG_MS, `${what}: closing the crashed node`);
        assert.ok(survivor.fileNames().includes(needed), `${what}: C's restart segment survives`);
        const reopened = await cluster.standby('b', { upstream: cluster.address('a'), application: new RecordingApp(), storage: survivor });
        const slot = reopened.slots().find((row) => row.slotName === 'c_slot');
        assert.ok(slot !== undefined && slot.restartLsn !== null && slot.restartLsn <= held, `${what}: the slot still holds from ${held}`);
        assert.notEqual(slot.walStatus, 'lost', `${what}: the slot is not lost`);
        await reopened.close();
        if (completed) break;
      }
    }
  });
});

