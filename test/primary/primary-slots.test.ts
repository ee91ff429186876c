import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError, segmentFileName, type ErrorCode, type Lsn, type Primary, type ReplicationSlotRow, type SlotInvalidatedEvent } from '../../src/index.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import { createCluster, type Cluster, type MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { payload, within } from '../helpers/wal.js';
import { HANG_MS } from '../helpers/standby-harness.js';
import { eventually, expectMessage, nextEvent, rawStandby, receiveUntil, report } from '../helpers/primary-helpers.js';

// Replication slots on the primary (#5): the public slot API, streaming with a slot, and
// what slots do to WAL removal at checkpoints.

const SEGMENT = 64 * 1024;
/** A new WAL begins in segment 1. */
const B = SEGMENT;

/** Commits 8 KB batches until the WAL reaches `lsn`. */
async function commitUntil(primary: Primary, lsn: Lsn): Promise<void> {
  for (let i = 0; primary.flushLsn < lsn; i++) await primary.commit(payload(i, 8000));
}

function slot(primary: Primary, name: string): ReplicationSlotRow {
  const row = primary.slots().find((r) => r.slotName === name);
  assert.ok(row !== undefined, `slot ${name} expected`);
  return row;
}

function hasSegmentOf(storage: MemoryStorage, lsn: Lsn): boolean {
  return storage.fileNames().includes(segmentFileName(1, Math.floor(lsn / SEGMENT), SEGMENT));
}

async function rejectsCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => isWalshipError(err, code) || assert.fail(`expected ${code}, got ${String(err)}`));
}

/** Starts streaming with `slotName` from `startLsn` and waits for the primary's answer. */
async function startWithSlot(primary: Primary, cluster: Cluster, name: string, slotName: string, startLsn: Lsn): Promise<MessageStream<'client'>> {
  const conn = await rawStandby(cluster.transport(name), cluster.address(primary), name);
  conn.send({ kind: 'startReplication', slotName, startLsn, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
  return conn;
}

/** The error message the connection ends with (WAL data and keepalives before it are skipped). */
async function errorOf(conn: MessageStream<'client'>, ms = 20_000): Promise<{ code: string; message: string }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const message = await within(conn.next(), Math.max(1, deadline - Date.now()), 'an error message');
    if (message === null) throw new Error('the connection ended without an error message');
    if (message.kind === 'error') return { code: message.code, message: message.message };
  }
}

describe('Primary: replication slots', () => {
  it('creates, lists, advances and drops slots, with coded errors', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, listen: false });
    await commitUntil(primary, B + 20_000);
    const created = await primary.createSlot('plain');
    assert.equal(created.restartLsn, null);
    await primary.createSlot('reserved', { reserveWal: true });
    const rows = primary.slots();
    assert.deepEqual(rows.map((r) => r.slotName), ['plain', 'reserved']);
    const plain = slot(primary, 'plain');
    assert.equal(plain.slotType, 'physical');
    assert.equal(plain.active, false);
    assert.equal(plain.activeApplicationName, null);
    assert.equal(plain.restartLsn, null);
    assert.equal(plain.walStatus, null);
    assert.ok(plain.inactiveSince instanceof Date);
    const reserved = slot(primary, 'reserved');
    assert.equal(reserved.restartLsn, primary.flushLsn);
    assert.equal(reserved.walStatus, 'reserved');
    assert.equal(reserved.safeWalSize, null);

    // Advancing never passes the flushed end, and never goes back.
    const start = primary.flushLsn;
    assert.equal(await primary.advanceSlot('plain', start - 100), start - 100);
    assert.equal(await primary.advanceSlot('plain', start - 5000), start - 100);
    assert.equal(await primary.advanceSlot('plain', start + 1_000_000), start);
    assert.equal(slot(primary, 'plain').restartLsn, start);

    await rejectsCode(primary.createSlot('Bad-Name'), 'INVALID_SLOT_NAME');
    await rejectsCode(primary.createSlot('x'.repeat(64)), 'INVALID_SLOT_NAME');
    await rejectsCode(primary.createSlot('plain'), 'SLOT_EXISTS');
    await rejectsCode(primary.createSlot('other', { reserveWal: 'yes' } as never), 'INVALID_OPTIONS');
    await rejectsCode(primary.dropSlot('nope'), 'SLOT_NOT_FOUND');
    await rejectsCode(primary.advanceSlot('nope', 0), 'SLOT_NOT_FOUND');

    await primary.dropSlot('plain');
    assert.deepEqual(primary.slots().map((r) => r.slotName), ['reserved']);
    await primary.close();
    await rejectsCode(primary.createSlot('late'), 'WAL_CLOSED');
  });

  it('validates walKeepSize and maxSlotWalKeepSize', async (t) => {
    const cluster = createCluster(t);
    const application = new RecordingApp();
    await rejectsCode(cluster.primary('primary', { application, walKeepSize: -1 }), 'INVALID_OPTIONS');
    await rejectsCode(cluster.primary('primary', { application, maxSlotWalKeepSize: -2 }), 'INVALID_OPTIONS');
    await rejectsCode(cluster.primary('primary', { application, walKeepSize: 1.5 }), 'INVALID_OPTIONS');
  });

  it('slots survive a restart and a crash with their restartLsn', async (t) => {
    const cluster = createCluster(t);
    const storage = cluster.storage('primary');
    const first = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, listen: false });
    await commitUntil(first, B + 30_000);
    await first.createSlot('kept', { reserveWal: true });
    await first.createSlot('later');
    await first.advanceSlot('later', B + 1000);
    const keptAt = slot(first, 'kept').restartLsn;
    await first.close();

    const second = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, listen: false });
    assert.deepEqual(
      second.slots().map((r) => [r.slotName, r.restartLsn, r.active]),
      [
        ['kept', keptAt, false],
        ['later', B + 1000, false],
      ],
    );
    await commitUntil(second, B + 60_000);
    await second.advanceSlot('later', B + 50_000);
    // Power loss with the primary still running: the advance was persisted when it resolved.
    const survivor = storage.crash({ unsyncedWrites: 'lose', unsyncedMetadata: 'lose' });
    await second.close().catch(() => undefined);

    const third = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, listen: false, storage: survivor });
    assert.deepEqual(
      third.slots().map((r) => [r.slotName, r.restartLsn]),
      [
        ['kept', keptAt],
        ['later', B + 50_000],
      ],
    );
  });

  it('a standby streaming with a slot advances restartLsn to its flush position, never beyond', async (t) => {
    const cluster = createCluster(t, { auth: 'trust' });
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    await commitUntil(primary, B + 40_000);
    await primary.createSlot('s1_slot');
    const start = primary.flushLsn;
    const conn = await startWithSlot(primary, cluster, 's1', 's1_slot', B + 4096);
    await expectMessage(conn, 'replicationStarted');
    // Reserved where the standby asked to start.
    await eventually(() => slot(primary, 's1_slot').active, 10_000, 'the slot in use');
    assert.equal(slot(primary, 's1_slot').restartLsn, B + 4096);
    assert.equal(slot(primary, 's1_slot').activeApplicationName, 's1');
    assert.equal(slot(primary, 's1_slot').inactiveSince, null);
    const end = await receiveUntil(conn, B + 4096, start);

    report(conn, end, B + 20_000, B + 10_000);
    await eventually(() => slot(primary, 's1_slot').restartLsn === B + 20_000, 10_000, 'restartLsn at the reported flush');
    // The write position is not enough: only the flush position moves the slot.
    report(conn, end, B + 20_000, B + 20_000);
    report(conn, end, end, end);
    await eventually(() => slot(primary, 's1_slot').restartLsn === end, 10_000, 'restartLsn at the end');
    // A report beyond what was sent moves the slot only to what was sent.
    report(conn, end + 100_000, end + 100_000, end + 100_000);
    await eventually(() => primary.replicationStatus()[0]?.flushLsn === end + 100_000, 10_000, 'the bogus report');
    assert.equal(slot(primary, 's1_slot').restartLsn, end);
    assert.equal(primary.replicationStatus().length, 1);

    // While in use it can be neither advanced nor dropped.
    await rejectsCode(primary.advanceSlot('s1_slot', end), 'SLOT_ACTIVE');
    await rejectsCode(primary.dropSlot('s1_slot'), 'SLOT_ACTIVE');

    // A second consumer is told SLOT_ACTIVE.
    const second = await startWithSlot(primary, cluster, 's2', 's1_slot', end);
    const refused = await errorOf(second);
    assert.equal(refused.code, 'SLOT_ACTIVE');
    assert.equal(slot(primary, 's1_slot').activeApplicationName, 's1');
    // An unknown slot is SLOT_NOT_FOUND.
    const third = await startWithSlot(primary, cluster, 's3', 'no_such_slot', end);
    assert.equal((await errorOf(third)).code, 'SLOT_NOT_FOUND');

    // Leaving releases the slot.
    conn.send({ kind: 'terminate' });
    await eventually(() => !slot(primary, 's1_slot').active, 10_000, 'the slot released');
    assert.ok(slot(primary, 's1_slot').inactiveSince instanceof Date);
    await primary.dropSlot('s1_slot');
  });

  it("a stopped consumer's slot holds its WAL across checkpoints; a later stream from it succeeds", async (t) => {
    const cluster = createCluster(t, { auth: 'trust' });
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    const storage = cluster.storage('primary');
    await commitUntil(primary, B + 30_000);
    await primary.createSlot('s1_slot');
    const conn = await startWithSlot(primary, cluster, 's1', 's1_slot', B);
    await expectMessage(conn, 'replicationStarted');
    const flushed = await receiveUntil(conn, B, primary.flushLsn);
    report(conn, flushed, flushed, flushed);
    await eventually(() => slot(primary, 's1_slot').restartLsn === flushed, 10_000, 'the slot advanced');
    conn.send({ kind: 'terminate' });
    await eventually(() => !slot(primary, 's1_slot').active, 10_000, 'the slot released');

    // The standby is down while the primary writes several segments and checkpoints.
    await commitUntil(primary, B + 6 * SEGMENT);
    await primary.checkpoint(primary.appliedLsn);
    await commitUntil(primary, B + 8 * SEGMENT);
    await primary.checkpoint(primary.appliedLsn);
    assert.ok(hasSegmentOf(storage, flushed), 'the segment of restartLsn is kept');
    assert.ok(primary.wal.oldestLsn <= flushed);
    assert.equal(slot(primary, 's1_slot').walStatus, 'extended');

    const back = await startWithSlot(primary, cluster, 's1', 's1_slot', flushed);
    await expectMessage(back, 'replicationStarted');
    const caughtUp = await receiveUntil(back, flushed, primary.flushLsn);
    assert.equal(caughtUp, primary.flushLsn);
    report(back, caughtUp, caughtUp, caughtUp);
    await eventually(() => slot(primary, 's1_slot').restartLsn === caughtUp, 10_000, 'the slot caught up');
    back.send({ kind: 'terminate' });
    await eventually(() => !slot(primary, 's1_slot').active, 10_000, 'the slot released');

    // Once the slot moved on, the next checkpoint removes what it held.
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(hasSegmentOf(storage, flushed), false, 'the old segment is removed once the slot advanced');
  });

  it('with maxSlotWalKeepSize, a checkpoint invalidates a stopped consumer\'s slot and removes the WAL; streaming from it is WAL_REMOVED', async (t) => {
    const cluster = createCluster(t, { auth: 'trust' });
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, maxSlotWalKeepSize: 2 * SEGMENT });
    const storage = cluster.storage('primary');
    await commitUntil(primary, B + 10_000);
    await primary.createSlot('dead', { reserveWal: true });
    const held = slot(primary, 'dead').restartLsn as Lsn;
    await commitUntil(primary, B + 2 * SEGMENT);
    // No checkpoint yet: crash recovery needs all of the WAL anyway.
    assert.equal(slot(primary, 'dead').walStatus, 'reserved');
    assert.ok((slot(primary, 'dead').safeWalSize ?? 0) > 0);
    await commitUntil(primary, B + 6 * SEGMENT);
    assert.equal(slot(primary, 'dead').walStatus, 'unreserved');
    assert.ok((slot(primary, 'dead').safeWalSize ?? 1) <= 0);

    const invalidated = nextEvent(primary, 'slot:invalidated');
    await primary.checkpoint(primary.appliedLsn);
    const event: SlotInvalidatedEvent = await within(invalidated, 10_000, 'slot:invalidated');
    assert.deepEqual({ ...event }, { slotName: 'dead', reason: 'wal_removed', restartLsn: held });
    const row = slot(primary, 'dead');
    assert.equal(row.walStatus, 'lost');
    assert.equal(row.restartLsn, null);
    assert.equal(row.invalidationReason, 'wal_removed');
    assert.equal(hasSegmentOf(storage, held), false, 'the WAL is removed');
    assert.ok(primary.wal.oldestLsn > held);

    const conn = await startWithSlot(primary, cluster, 's1', 'dead', held);
    const error = await errorOf(conn);
    assert.equal(error.code, 'WAL_REMOVED');
    assert.match(error.message, /wal_removed/);

    // The lost slot survives a restart as lost.
    await primary.close();
    const reopened = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    assert.equal(slot(reopened, 'dead').walStatus, 'lost');
  });

  it('a connected consumer too far behind is terminated with WAL_REMOVED when its slot is invalidated', async (t) => {
    const cluster = createCluster(t, { auth: 'trust' });
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0, maxSlotWalKeepSize: 2 * SEGMENT });
    const storage = cluster.storage('primary');
    await commitUntil(primary, B + 10_000);
    await primary.createSlot('stuck');
    const start = primary.flushLsn;
    const conn = await startWithSlot(primary, cluster, 's1', 'stuck', start);
    await expectMessage(conn, 'replicationStarted');
    report(conn, start, start, start);
    await eventually(() => slot(primary, 'stuck').active && slot(primary, 'stuck').restartLsn === start, 10_000, 'the slot in use');
    const disconnected = nextEvent(primary, 'standby:disconnected');
    const invalidated = nextEvent(primary, 'slot:invalidated');
    // It reads the WAL but never reports a flush again.
    const reading = errorOf(conn, 60_000);
    await commitUntil(primary, B + 6 * SEGMENT);
    await primary.checkpoint(primary.appliedLsn);
    assert.equal((await within(invalidated, 10_000, 'slot:invalidated')).slotName, 'stuck');
    assert.equal((await reading).code, 'WAL_REMOVED');
    const left = await within(disconnected, 10_000, 'standby:disconnected');
    assert.ok(isWalshipError(left.error, 'WAL_REMOVED'));
    await eventually(() => !slot(primary, 'stuck').active, 10_000, 'the slot released');
    assert.equal(slot(primary, 'stuck').walStatus, 'lost');
    assert.equal(hasSegmentOf(storage, start), false, 'its WAL is removed');
  });

  it('a real Standby streaming with slotName keeps its WAL while it is down and catches up after a checkpoint', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), recycleSegments: 0 });
    const pstorage = cluster.storage('primary');
    await primary.createSlot('node_a_slot');
    for (let i = 0; i < 5; i++) await primary.commit(payload(i, 8000));
    const withSlot = { upstream: primary, connection: { slotName: 'node_a_slot' } };
    let standby = await cluster.standby('s1', { ...withSlot, application: new RecordingApp() });
    const { lsn } = await primary.commit(payload(99, 8000));
    await within(standby.waitForReplay(lsn), HANG_MS, 'replay');
    await eventually(() => slot(primary, 'node_a_slot').restartLsn === lsn, HANG_MS, 'the slot at the standby flush');
    assert.equal(slot(primary, 'node_a_slot').activeApplicationName, 's1');
    await standby.close();
    await eventually(() => !slot(primary, 'node_a_slot').active, HANG_MS, 'the slot released');
    const held = slot(primary, 'node_a_slot').restartLsn as Lsn;

    await commitUntil(primary, held + 5 * SEGMENT);
    await primary.checkpoint(primary.appliedLsn);
    assert.ok(hasSegmentOf(pstorage, held), 'the slot keeps the standby\'s WAL');

    standby = await cluster.standby('s1', { ...withSlot, application: new RecordingApp() });
    await within(standby.waitForReplay(primary.flushLsn), HANG_MS, 'catch-up after the checkpoint');
    await eventually(() => slot(primary, 'node_a_slot').restartLsn === primary.flushLsn, HANG_MS, 'the slot caught up');
    await standby.close();
  });
});
