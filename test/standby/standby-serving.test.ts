import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Standby, TcpTransport, isWalshipError } from '../../src/index.js';
import { MemoryStorage, createCluster } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, commitMany, sameSequence, replayedTo } from '../helpers/standby-harness.js';


describe('a standby serving standbys: its own slots and base backups', () => {
  it("createSlot, slots, advanceSlot and dropSlot on a standby, with the primary's codes; a downstream streams with the slot", async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    const a = await cluster.primary('a', { application: appA });
    const b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    await commitMany(a, 0, 20);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    const created = await b.createSlot('c_slot', { reserveWal: true });
    assert.equal(created.slotName, 'c_slot');
    assert.ok(created.restartLsn !== null && created.restartLsn <= (b.receiveLsn ?? 0), 'reserved within what B has');
    await assert.rejects(b.createSlot('c_slot'), (err: unknown) => isWalshipError(err, 'SLOT_EXISTS'), 'SLOT_EXISTS');
    await assert.rejects(b.createSlot('Bad-Name'), (err: unknown) => isWalshipError(err, 'INVALID_SLOT_NAME'), 'INVALID_SLOT_NAME');
    await assert.rejects(b.createSlot('x', { reserveWal: 1 } as never), (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'), 'options by schema');
    assert.deepEqual(b.slots().map((s) => [s.slotName, s.active]), [['c_slot', false]], "B's slots");
    assert.deepEqual(a.slots(), [], 'the primary has none of them');
    const advanced = await b.advanceSlot('c_slot', b.receiveLsn ?? 0);
    assert.equal(advanced, b.receiveLsn, 'advanced to where B has received');
    const appC = new RecordingApp();
    const c = await cluster.standby('c', { upstream: b, application: appC, connection: { slotName: 'c_slot' } });
    await commitMany(a, 20, 10);
    await replayedTo(c, a.currentLsn, 'C to stream with its slot on B');
    await within(until(() => b.slots()[0]?.active === true), HANG_MS, 'the slot to be in use');
    await assert.rejects(b.dropSlot('c_slot'), (err: unknown) => isWalshipError(err, 'SLOT_ACTIVE'), 'SLOT_ACTIVE while C streams');
    await c.close();
    await within(until(() => b.slots()[0]?.active === false), HANG_MS, 'the slot to be let go');
    await b.dropSlot('c_slot');
    assert.deepEqual(b.slots(), [], 'dropped');
    await assert.rejects(b.dropSlot('c_slot'), (err: unknown) => isWalshipError(err, 'SLOT_NOT_FOUND'), 'SLOT_NOT_FOUND');
  });

  it('baseBackup() from a standby writes a standby directory that opens and follows the cluster', async (t) => {
    const cluster = createCluster(t);
    const appA = new RecordingApp();
    const a = await cluster.primary('a', { application: appA });
    const b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    await commitMany(a, 0, 25);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    const target = new MemoryStorage();
    const backup = await b.baseBackup({ storage: target });
    assert.equal(backup.lsn, b.replayLsn, "the backup is B's state at its replay position");
    const appC = new RecordingApp();
    const c = await cluster.standby('c', { upstream: b, application: appC, storage: target });
    await commitMany(a, 25, 5);
    await replayedTo(c, a.currentLsn, 'C, seeded from B, to follow');
    assert.equal(appC.restores, 1, 'C restored the seeded snapshot, not a new backup');
    sameSequence(appC.applied, appA.applied, "C's applied sequence");
  });
});

describe('cascading over TCP with real directories: a slot on B holds WAL for a stopped C', () => {
  it("C stops; A commits many segments; B's restartpoint keeps C's WAL; C resumes from B without bootstrapping again", async (t) => {
    const { dir, cleanup } = await tempDir();
    t.after(cleanup);
    const cluster = createCluster(t, { transport: () => new TcpTransport(), listenAddress: () => '127.0.0.1:0' });
    const appA = new RecordingApp();
    const a = await cluster.primary('a', { application: appA, dir: `${dir}/a`, segmentSize: 1024 * 1024 });
    const b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true, dir: `${dir}/b` });
    const cOptions = { upstream: b, application: new RecordingApp(), dir: `${dir}/c`, connection: { slotName: 'c_slot', createSlot: true } } as const;
    let c: Standby = await cluster.standby('c', cOptions);
    await commitMany(a, 0, 50, 2000);
    await replayedTo(c, a.currentLsn, 'C to catch up');
    const cAt = a.currentLsn;
    await c.close();
    await commitMany(a, 50, 2000, 3000);
    await replayedTo(b, a.currentLsn, 'B to catch up');
    await b.checkpoint();
    const row = b.slots()[0];
    assert.ok(row !== undefined && row.restartLsn !== null && row.restartLsn <= cAt, "C's slot on B still holds where C stopped");
    assert.notEqual(row.walStatus, 'lost', 'and its WAL is kept');
    const appC = new RecordingApp();
    c = await cluster.standby('c2', { ...cOptions, application: appC });
    let rebootstrapped = false;
    c.on('rebootstrap', () => (rebootstrapped = true));
    await replayedTo(c, a.currentLsn, 'C to resume from its slot');
    assert.equal(rebootstrapped, false, 'C did not bootstrap again');
    sameSequence(appC.applied, appA.applied, "C's applied sequence");
    await cluster.close();
  });
});
