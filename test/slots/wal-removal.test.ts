import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog, isWalshipError, segmentFileName, type ErrorCode, type Storage } from '../../src/index.js';
import { decideRetention, type RetentionState } from '../../src/slots/retention.js';
import { SlotManager, WAL_REMOVED_REASON } from '../../src/slots/slot-manager.js';
import { MemoryStorage, seededRandom } from '../../src/testing/index.js';
import { CRASH_MODES } from '../helpers/crashes.js';

// How slots and WAL removal fit together on one storage: the order that keeps every slot's
// WAL through a crash at any point.

const S = 64 * 1024;
const at = (segno: number, offset = 0): number => segno * S + offset;


/** A log on `storage` with segments 1 to 8 flushed (and segment 9 begun). */
async function filledLog(storage: Storage): Promise<WalLog> {
  const log = await WalLog.open({ storage, segmentSize: S, recycleSegments: 0 });
  while (log.insertLsn < at(9, 100)) log.append(Buffer.alloc(20_000, 7));
  await log.flush();
  return log;
}

/** The retention inputs at this log's current position, with the checkpoint there too. */
function stateOf(log: WalLog, overrides: Partial<RetentionState> = {}): RetentionState {
  return {
    segmentSize: S,
    currentLsn: log.flushedLsn,
    oldestLsn: log.oldestLsn,
    checkpointLsn: log.flushedLsn,
    walKeepSize: 0,
    maxSlotWalKeepSize: -1,
    ...overrides,
  };
}

function hasSegment(storage: MemoryStorage, lsn: number): boolean {
  return storage.fileNames().includes(segmentFileName(1, Math.floor(lsn / S), S));
}

async function rejectsCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => isWalshipError(err, code) || assert.fail(`expected ${code}, got ${String(err)}`));
}

describe('slots and WAL removal', () => {
  it('retention uses the persisted restartLsn: an advance lost in a crash still finds its WAL', async () => {
    const storage = new MemoryStorage();
    const log = await filledLog(storage);
    const slots = await SlotManager.open(storage);
    await slots.create('s', { reserveAt: at(2, 100) });
    // The standby reports it flushed up to segment 5: memory moves, the file does not yet.
    slots.acquire('s', 's1').advance(at(5, 10));
    assert.equal(slots.get('s').restartLsn, at(5, 10));
    assert.equal(slots.dirty, true);

    const state = stateOf(log);
    const decision = decideRetention(state, slots.retentionHolds());
    assert.equal(decision.keepFromSegno, 2);
    // The in-memory position alone would have let segments 2 to 4 go: this test can tell.
    assert.equal(decideRetention(state, [{ name: 's', restartLsn: slots.get('s').restartLsn }]).keepFromSegno, 5);
    await log.removeSegmentsBefore(decision.keepFromLsn);

    // Power loss before the slots were flushed.
    const survivor = storage.crash({ unsyncedWrites: 'lose', unsyncedMetadata: 'lose' });
    const reopened = await SlotManager.open(survivor);
    assert.equal(reopened.get('s').restartLsn, at(2, 100), 'the persisted position is the one found');
    assert.ok(hasSegment(survivor, at(2, 100)), 'and its segment is still there');
    assert.ok(!hasSegment(survivor, at(1)), 'older segments did go');
    const recovered = await WalLog.open({ storage: survivor, segmentSize: S });
    assert.ok(recovered.oldestLsn <= at(2, 100), 'the recovered log starts at or before the slot');
    await recovered.close();
  });

  it('planWalRemoval persists first, then invalidates slots beyond the limit, then lets WAL go', async () => {
    const storage = new MemoryStorage();
    const log = await filledLog(storage);
    const slots = await SlotManager.open(storage);
    await slots.create('behind', { reserveAt: at(1, 50) });
    await slots.create('steady', { reserveAt: at(3, 10) });
    await slots.create('fresh');
    const held = slots.acquire('behind', 'old_standby');
    slots.advance('steady', { flushLsn: at(6, 10) });

    // Slots may hold 3 segments' worth behind the current position (segment 9).
    const plan = await slots.planWalRemoval(stateOf(log, { maxSlotWalKeepSize: 3 * S }));
    assert.deepEqual(plan.invalidated, [{ slotName: 'behind', restartLsn: at(1, 50), activeApplicationName: 'old_standby' }]);
    assert.equal(plan.keepFromSegno, 6, 'the flushed advance of "steady" counts');
    assert.equal(slots.dirty, false);
    assert.equal(held.invalidationReason, WAL_REMOVED_REASON);
    assert.throws(() => held.advance(at(7)), (err: unknown) => isWalshipError(err, 'WAL_REMOVED'));
    const rows = slots.list(stateOf(log, { maxSlotWalKeepSize: 3 * S }));
    assert.deepEqual(
      rows.map((r) => [r.slotName, r.restartLsn, r.walStatus, r.invalidationReason]),
      [
        ['behind', null, 'lost', WAL_REMOVED_REASON],
        ['fresh', null, null, null],
        ['steady', at(6, 10), 'extended', null],
      ],
    );
    // All of that is on disk before the caller removes anything.
    assert.deepEqual(
      (await SlotManager.open(storage)).list(stateOf(log)).map((r) => [r.slotName, r.restartLsn, r.invalidationReason]),
      [
        ['behind', null, WAL_REMOVED_REASON],
        ['fresh', null, null],
        ['steady', at(6, 10), null],
      ],
    );
    await log.removeSegmentsBefore(plan.keepFromLsn);
    assert.equal(log.oldestLsn, at(6));

    // From now on nothing may reserve WAL that is being removed.
    await rejectsCode(slots.create('late', { reserveAt: at(5) }), 'WAL_REMOVED');
    assert.throws(() => slots.advance('fresh', { flushLsn: at(4) }), (err: unknown) => isWalshipError(err, 'WAL_REMOVED'));
    assert.equal(slots.advance('fresh', { flushLsn: at(6) }), at(6));
    await slots.create('late', { reserveAt: at(7) });
    await log.close();
  });

  it('a plan whose invalidation cannot be written rejects, and the slot keeps its WAL', async () => {
    const storage = new MemoryStorage();
    const log = await filledLog(storage);
    const slots = await SlotManager.open(storage);
    await slots.create('behind', { reserveAt: at(1, 50) });
    storage.injectFault({ operation: 'datasync', code: 'EIO' });
    await rejectsCode(slots.planWalRemoval(stateOf(log, { maxSlotWalKeepSize: S })), 'WAL_IO');
    assert.equal(slots.get('behind').restartLsn, at(1, 50));
    assert.equal(slots.get('behind').invalidationReason, null);
    assert.deepEqual(slots.retentionHolds(), [{ name: 'behind', restartLsn: at(1, 50) }]);
    // The next plan succeeds.
    const plan = await slots.planWalRemoval(stateOf(log, { maxSlotWalKeepSize: S }));
    assert.deepEqual(plan.invalidated.map((s) => s.slotName), ['behind']);
    await log.close();
  });

  it('a slot that catches up while the plan is being written is decided on its new position', async () => {
    const inner = new MemoryStorage();
    const log = await filledLog(inner);
    await (await SlotManager.open(inner)).create('s', { reserveAt: at(1, 50) });
    // Pause the plan's first write, just before its rename.
    let arrive!: () => void;
    let proceed!: () => void;
    const reached = new Promise<void>((resolve) => (arrive = resolve));
    const go = new Promise<void>((resolve) => (proceed = resolve));
    let paused = false;
    const storage: Storage = {
      description: inner.description,
      prepare: () => inner.prepare(),
      list: () => inner.list(),
      open: (name, options) => inner.open(name, options),
      rename: async (from, to) => {
        if (!paused) {
          paused = true;
          arrive();
          await go;
        }
        return inner.rename(from, to);
      },
      remove: (name) => inner.remove(name),
      syncDirectory: () => inner.syncDirectory(),
      lock: () => inner.lock(),
    };
    const slots = await SlotManager.open(storage);
    const handle = slots.acquire('s', 's1');
    handle.advance(at(1, 60)); // dirty: the plan flushes first
    const planning = slots.planWalRemoval(stateOf(log, { maxSlotWalKeepSize: 2 * S }));
    await reached;
    // Meanwhile the standby catches up to within the limit.
    handle.advance(at(8));
    proceed();
    const plan = await planning;
    assert.deepEqual(plan.invalidated, []);
    assert.equal(plan.keepFromSegno, 8);
    assert.equal(handle.invalidationReason, null);
    assert.equal((await SlotManager.open(inner)).get('s').restartLsn, at(8));
    await log.close();
  });

  for (const crash of CRASH_MODES) {
    it(`after a crash at any step of planning and removing, every slot's WAL is still there (${crash.unsyncedWrites}/${crash.unsyncedMetadata})`, async () => {
      let completed = false;
      for (let n = 1; !completed; n++) {
        assert.ok(n < 200, 'never completed');
        const storage = new MemoryStorage();
        const log = await filledLog(storage);
        const setup = await SlotManager.open(storage);
        await setup.create('behind', { reserveAt: at(1, 50) });
        await setup.create('steady', { reserveAt: at(3, 10) });
        await setup.create('fresh');
        const slots = await SlotManager.open(storage);
        slots.acquire('steady', 's1').advance(at(5, 10));
        slots.advance('fresh', { flushLsn: at(4, 20) });

        const crashed = storage.crashAfter(n, { ...crash, random: seededRandom(n) });
        const run = async (): Promise<number> => {
          // Slots may hold 6 segments' worth: back to segment 3, so only "behind" goes.
          const plan = await slots.planWalRemoval(stateOf(log, { maxSlotWalKeepSize: 6 * S }));
          await log.removeSegmentsBefore(plan.keepFromLsn);
          return plan.keepFromSegno;
        };
        const outcome = await run().then(
          (segno) => segno,
          () => null,
        );
        if (outcome !== null) {
          completed = true;
          assert.equal(outcome, 4, 'the plan kept "fresh" (segment 4) and invalidated "behind"');
          storage.crash({ ...crash, random: seededRandom(n) });
        }
        const survivor = await crashed;
        const found = await SlotManager.open(survivor);
        for (const row of found.list(stateOf(log))) {
          if (row.restartLsn !== null) {
            assert.ok(hasSegment(survivor, row.restartLsn), `crash before operation ${n}: ${row.slotName} at segment ${Math.floor(row.restartLsn / S)} lost its WAL`);
          }
        }
        if (completed) {
          assert.equal(found.get('behind').invalidationReason, WAL_REMOVED_REASON);
          assert.equal(found.get('steady').restartLsn, at(5, 10));
          assert.ok(!hasSegment(survivor, at(3)), 'segment 3 was removed');
        }
      }
    });
  }
});
