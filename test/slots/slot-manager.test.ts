import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NodeStorage, isWalshipError, type ErrorCode, type Storage } from '../../src/index.js';
import type { RetentionState } from '../../src/slots/retention.js';
import { SLOTS_FILE } from '../../src/slots/slot-file.js';
import { SlotManager, WAL_REMOVED_REASON } from '../../src/slots/slot-manager.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { tempDir } from '../helpers/temp-dir.js';
import { reportCrashPoints, runToPowerLoss, sweepCrashPoints, type CrashPoint } from '../helpers/crashes.js';
import { encodeJsonFile, putFile } from '../helpers/json-file.js';

/** A WAL far from every slot in these tests: only list() needs one, for walStatus. */
const WAL: RetentionState = {
  segmentSize: 1000,
  currentLsn: 9200,
  oldestLsn: 0,
  checkpointLsn: 9000,
  walKeepSize: 0,
  maxSlotWalKeepSize: -1,
};


/** A clock that ticks one second per reading, from a fixed start. */
function fakeClock(): () => Date {
  let t = Date.UTC(2024, 0, 1);
  return () => new Date((t += 1000));
}

/** One slot's persisted columns: name, restartLsn, invalidationReason. */
type Row = [string, number | null, string | null];

/** What a slots file holds: the persisted columns of every slot. */
function stored(slots: SlotManager): Row[] {
  return slots.list(WAL).map((r) => [r.slotName, r.restartLsn, r.invalidationReason]);
}

function throwsCode(fn: () => unknown, code: ErrorCode, what = ''): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isWalshipError(err, code), `${what} expected ${code}, got ${String(err)}`);
    return true;
  });
}

async function rejectsCode(promise: Promise<unknown>, code: ErrorCode, what = ''): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isWalshipError(err, code), `${what} expected ${code}, got ${String(err)}`);
    return true;
  });
}



/**
 * A view of `inner` whose first `operation` waits until `open()` is called; `reached`
 * resolves when it starts waiting. Lets a test look at a manager in the middle of a write.
 */
function gated(inner: MemoryStorage, operation: 'rename' | 'syncDirectory'): { storage: Storage; reached: Promise<void>; open: () => void } {
  let arrive!: () => void;
  let open!: () => void;
  const reached = new Promise<void>((resolve) => (arrive = resolve));
  const opened = new Promise<void>((resolve) => (open = resolve));
  let first = true;
  const wait = async (): Promise<void> => {
    if (!first) return;
    first = false;
    arrive();
    await opened;
  };
  const storage: Storage = {
    description: inner.description,
    prepare: () => inner.prepare(),
    list: () => inner.list(),
    open: (name, options) => inner.open(name, options),
    rename: async (from, to) => {
      if (operation === 'rename') await wait();
      return inner.rename(from, to);
    },
    remove: (name) => inner.remove(name),
    syncDirectory: async () => {
      if (operation === 'syncDirectory') await wait();
      return inner.syncDirectory();
    },
    lock: () => inner.lock(),
  };
  return { storage, reached, open };
}

describe('SlotManager', () => {
  it('validates slot names on every call that takes one', async () => {
    const slots = await SlotManager.open(new MemoryStorage());
    for (const good of ['a', '0', 'node_a_slot', '_', 'x'.repeat(63)]) {
      await slots.create(good);
      assert.ok(slots.has(good), good);
    }
    const bad: unknown[] = ['', 'x'.repeat(64), 'Node', 'a-b', 'a b', 'a.b', 'é', 'slot\n', 42, null, undefined];
    for (const name of bad) {
      const what = JSON.stringify(name) ?? String(name);
      await rejectsCode(slots.create(name as string), 'INVALID_SLOT_NAME', what);
      await rejectsCode(slots.drop(name as string), 'INVALID_SLOT_NAME', what);
      await rejectsCode(slots.invalidate(name as string, 'x'), 'INVALID_SLOT_NAME', what);
      throwsCode(() => slots.acquire(name as string, 's1'), 'INVALID_SLOT_NAME', what);
      throwsCode(() => slots.release(name as string), 'INVALID_SLOT_NAME', what);
      throwsCode(() => slots.advance(name as string, { flushLsn: 1 }), 'INVALID_SLOT_NAME', what);
    }
    assert.equal(slots.list(WAL).length, 5);
  });

  it('creates slots shaped like pg_replication_slots rows, reserved or not; a name is taken once', async () => {
    const slots = await SlotManager.open(new MemoryStorage(), { now: fakeClock() });
    assert.deepEqual(slots.list(WAL), []);
    const created = await slots.create('plain');
    assert.deepEqual(created, {
      slotName: 'plain',
      slotType: 'physical',
      active: false,
      activeApplicationName: null,
      restartLsn: null,
      inactiveSince: new Date(Date.UTC(2024, 0, 1, 0, 0, 2)), // the clock's first reading was the open
      invalidationReason: null,
    });
    await slots.create('reserved', { reserveAt: 8500 });
    assert.deepEqual(slots.list({ ...WAL, maxSlotWalKeepSize: 4000 }), [
      { ...created, walStatus: null, safeWalSize: null },
      {
        ...created,
        slotName: 'reserved',
        restartLsn: 8500,
        inactiveSince: new Date(Date.UTC(2024, 0, 1, 0, 0, 3)),
        walStatus: 'extended', // behind the checkpoint's segment (9), within its allowance
        safeWalSize: 3800,
      },
    ]);
    await rejectsCode(slots.create('plain'), 'SLOT_EXISTS');
    await rejectsCode(slots.create('plain', { reserveAt: 1 }), 'SLOT_EXISTS');
    await rejectsCode(slots.create('other', { reserveAt: -1 }), 'INVALID_LSN');
    await rejectsCode(slots.create('other', { reserve: true } as never), 'INVALID_ARGUMENT');
    // Two creates of one name at once: the first wins, the second finds it.
    const results = await Promise.allSettled([slots.create('twin'), slots.create('twin')]);
    assert.equal(results[0].status, 'fulfilled');
    assert.ok(results[1].status === 'rejected' && isWalshipError(results[1].reason, 'SLOT_EXISTS'), 'the second create is SLOT_EXISTS');
    // get() returns copies: changing them changes nothing.
    const got = slots.get('plain');
    (got.inactiveSince as Date).setTime(0);
    assert.notEqual(slots.get('plain').inactiveSince?.getTime(), 0);
    throwsCode(() => slots.get('missing'), 'SLOT_NOT_FOUND');
  });

  it('lets one connection at a time hold a slot, and records who and since when', async () => {
    const slots = await SlotManager.open(new MemoryStorage(), { now: fakeClock() });
    await slots.create('s', { reserveAt: 100 });
    const handle = slots.acquire('s', 'standby_1');
    assert.equal(handle.slotName, 's');
    assert.equal(handle.applicationName, 'standby_1');
    assert.equal(handle.released, false);
    assert.deepEqual(
      [slots.get('s').active, slots.get('s').activeApplicationName, slots.get('s').inactiveSince],
      [true, 'standby_1', null],
    );
    assert.throws(
      () => slots.acquire('s', 'standby_2'),
      (err: unknown) => isWalshipError(err, 'SLOT_ACTIVE') && /standby_1/.test((err as Error).message),
    );
    throwsCode(() => slots.acquire('nope', 'x'), 'SLOT_NOT_FOUND');
    throwsCode(() => slots.acquire('s', 7 as never), 'INVALID_ARGUMENT');
    handle.release();
    assert.equal(handle.released, true);
    const released = slots.get('s');
    assert.deepEqual([released.active, released.activeApplicationName], [false, null]);
    assert.deepEqual(released.inactiveSince, new Date(Date.UTC(2024, 0, 1, 0, 0, 3)));
    handle.release(); // harmless twice
    // The next holder is not disturbed by the old handle.
    const next = slots.acquire('s', 'standby_2');
    handle.release();
    assert.equal(slots.get('s').activeApplicationName, 'standby_2');
    throwsCode(() => handle.advance(500), 'INVALID_ARGUMENT');
    assert.equal(slots.get('s').restartLsn, 100);
    // release(name) frees it whoever holds it; on an inactive slot it does nothing.
    slots.release('s');
    assert.equal(next.released, true);
    const since = slots.get('s').inactiveSince;
    slots.release('s');
    assert.deepEqual(slots.get('s').inactiveSince, since);
    throwsCode(() => slots.release('nope'), 'SLOT_NOT_FOUND');
  });

  it('drops inactive slots only', async () => {
    const storage = new MemoryStorage();
    const gate = gated(storage, 'rename');
    const slots = await SlotManager.open(gate.storage);
    await rejectsCode(slots.drop('nope'), 'SLOT_NOT_FOUND');
    // Set up with a first manager; the gate pauses the first rename of the second one.
    const setup = await SlotManager.open(storage);
    await setup.create('a', { reserveAt: 10 });
    await setup.create('b');
    const reopened = await SlotManager.open(gate.storage);
    const handle = reopened.acquire('a', 's1');
    await rejectsCode(reopened.drop('a'), 'SLOT_ACTIVE');
    handle.release();
    // While a drop is being written, nobody can take the slot, and it still holds its WAL.
    const dropping = reopened.drop('a');
    await gate.reached;
    throwsCode(() => reopened.acquire('a', 's1'), 'SLOT_ACTIVE');
    assert.deepEqual(reopened.get('a').active, true);
    assert.deepEqual(reopened.retentionHolds(), [
      { name: 'a', restartLsn: 10 },
      { name: 'b', restartLsn: null },
    ]);
    gate.open();
    await dropping;
    assert.equal(reopened.has('a'), false);
    assert.deepEqual(reopened.retentionHolds(), [{ name: 'b', restartLsn: null }]);
    throwsCode(() => reopened.acquire('a', 's1'), 'SLOT_NOT_FOUND');
    await rejectsCode(reopened.drop('a'), 'SLOT_NOT_FOUND');
    assert.deepEqual(stored(await SlotManager.open(storage)), [['b', null, null]]);
  });

  it('advances only forward, never past the flush position, and reserves a slot that had not', async () => {
    const slots = await SlotManager.open(new MemoryStorage());
    await slots.create('s');
    assert.equal(slots.dirty, false);
    // The first advance reserves, at the bound if the target is beyond it.
    assert.equal(slots.advance('s', { lsn: 5000, flushLsn: 3000 }), 3000);
    assert.equal(slots.dirty, true);
    assert.equal(slots.advance('s', { flushLsn: 2000 }), 3000, 'never back');
    assert.equal(slots.advance('s', { lsn: 2500, flushLsn: 9000 }), 3000, 'never back, with a target');
    assert.equal(slots.advance('s', { lsn: 4000, flushLsn: 9000 }), 4000);
    assert.equal(slots.advance('s', { flushLsn: 4500 }), 4500);
    throwsCode(() => slots.advance('s', { flushLsn: -1 }), 'INVALID_LSN');
    throwsCode(() => slots.advance('s', { flushLsn: 9000, lsn: 1.5 }), 'INVALID_LSN');
    throwsCode(() => slots.advance('nope', { flushLsn: 1 }), 'SLOT_NOT_FOUND');
    // A held slot moves only through its handle, by the standby's reported flush position.
    const handle = slots.acquire('s', 's1');
    throwsCode(() => slots.advance('s', { flushLsn: 9000 }), 'SLOT_ACTIVE');
    assert.equal(handle.advance(4000), 4500);
    assert.equal(handle.advance(6000), 6000);
    assert.equal(handle.restartLsn, 6000);
    assert.equal(slots.get('s').restartLsn, 6000);
    await slots.flush();
    assert.equal(slots.dirty, false);
  });

  it('invalidates durably: the slot holds nothing, cannot be used, and says why', async () => {
    const storage = new MemoryStorage();
    const slots = await SlotManager.open(storage);
    await slots.create('s', { reserveAt: 1000 });
    const handle = slots.acquire('s', 's1');
    await slots.invalidate('s', 'wal_removed');
    assert.equal(handle.invalidationReason, 'wal_removed');
    throwsCode(() => handle.advance(5000), 'WAL_REMOVED');
    handle.release();
    assert.throws(
      () => slots.acquire('s', 's1'),
      (err: unknown) => isWalshipError(err, 'WAL_REMOVED') && /wal_removed/.test((err as Error).message),
    );
    throwsCode(() => slots.advance('s', { flushLsn: 5000 }), 'WAL_REMOVED');
    await slots.invalidate('s', 'another_reason'); // a no-op: the first reason stays
    const [row] = slots.list(WAL);
    assert.deepEqual([row?.restartLsn, row?.invalidationReason, row?.walStatus, row?.safeWalSize], [null, 'wal_removed', 'lost', null]);
    assert.deepEqual(slots.retentionHolds(), [{ name: 's', restartLsn: null }]);
    assert.deepEqual(stored(await SlotManager.open(storage)), [['s', null, 'wal_removed']]);
    await rejectsCode(slots.invalidate('nope', 'x'), 'SLOT_NOT_FOUND');
    // A reason is 1 to 63 of a name's characters, as PostgreSQL's: its place in the file is bounded.
    for (const reason of ['', 'another reason', 'r'.repeat(64), 'Wal_removed', 7]) {
      await rejectsCode(slots.invalidate('s', reason as string), 'INVALID_ARGUMENT');
    }
    // A lost slot can still be dropped.
    await slots.drop('s');
    assert.deepEqual(slots.list(WAL), []);
  });

  it('keeps slots across a reopen, on real files and in memory; activity is not kept', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      for (const storage of [new NodeStorage(dir), new MemoryStorage()]) {
        await storage.prepare();
        const slots = await SlotManager.open(storage);
        await slots.create('a', { reserveAt: 100 });
        await slots.create('b');
        await slots.create('c', { reserveAt: 7 });
        slots.acquire('a', 's1').advance(2500);
        await slots.invalidate('c', 'wal_removed');
        await slots.flush();
        const clock = fakeClock();
        const reopened = await SlotManager.open(storage, { now: clock });
        assert.deepEqual(stored(reopened), [
          ['a', 2500, null],
          ['b', null, null],
          ['c', null, 'wal_removed'],
        ]);
        // Like PostgreSQL, every slot found at start is inactive since the start.
        const startedAt = new Date(Date.UTC(2024, 0, 1, 0, 0, 1));
        assert.ok(reopened.list(WAL).every((r) => !r.active && r.inactiveSince?.getTime() === startedAt.getTime()), 'inactive since the open');
        assert.deepEqual((await storage.list()).filter((n) => n.startsWith(SLOTS_FILE)), [SLOTS_FILE]);
      }
    } finally {
      await cleanup();
    }
  });

  it('rejects bad options', async () => {
    await rejectsCode(SlotManager.open(new MemoryStorage(), { clock: 1 } as never), 'INVALID_OPTIONS');
    await rejectsCode(SlotManager.open(new MemoryStorage(), { now: 1 } as never), 'INVALID_OPTIONS');
  });

  describe('its file', () => {
    it('a flipped byte anywhere is WAL_CORRUPT', async () => {
      const storage = new MemoryStorage();
      const slots = await SlotManager.open(storage);
      await slots.create('a', { reserveAt: 123_456 });
      await slots.create('b');
      const size = storage.readFile(SLOTS_FILE).length;
      for (let offset = 0; offset < size; offset++) {
        for (const mask of [0x01, 0x80]) {
          storage.corrupt(SLOTS_FILE, offset, (b) => b ^ mask);
          await rejectsCode(SlotManager.open(storage), 'WAL_CORRUPT', `offset ${offset}`);
          storage.corrupt(SLOTS_FILE, offset, (b) => b ^ mask);
        }
      }
      assert.deepEqual(stored(await SlotManager.open(storage)), [
        ['a', 123_456, null],
        ['b', null, null],
      ]);
    });

    it('a truncated, garbled or wrongly shaped file is WAL_CORRUPT; another format is WAL_FORMAT', async () => {
      const slot = { name: 'a', restartLsn: 5, invalidationReason: null };
      const good = encodeJsonFile(JSON.stringify({ format: 1, slots: [slot] }));
      const cases: Array<[string, Uint8Array, ErrorCode]> = [
        ['empty', Buffer.alloc(0), 'WAL_CORRUPT'],
        ['header only', good.subarray(0, 8), 'WAL_CORRUPT'],
        ['truncated', good.subarray(0, good.length - 2), 'WAL_CORRUPT'],
        ['zeros', Buffer.alloc(good.length), 'WAL_CORRUPT'],
        ['oversized', Buffer.alloc(2 * 1024 * 1024), 'WAL_CORRUPT'],
        ['not JSON', encodeJsonFile('{ nope'), 'WAL_CORRUPT'],
        ['no slots array', encodeJsonFile(JSON.stringify({ format: 1 })), 'WAL_CORRUPT'],
        ['a bad name', encodeJsonFile(JSON.stringify({ format: 1, slots: [{ ...slot, name: 'A' }] })), 'WAL_CORRUPT'],
        ['a negative LSN', encodeJsonFile(JSON.stringify({ format: 1, slots: [{ ...slot, restartLsn: -1 }] })), 'WAL_CORRUPT'],
        ['lost yet holding WAL', encodeJsonFile(JSON.stringify({ format: 1, slots: [{ ...slot, invalidationReason: 'x' }] })), 'WAL_CORRUPT'],
        ['a name twice', encodeJsonFile(JSON.stringify({ format: 1, slots: [slot, slot] })), 'WAL_CORRUPT'],
        ['another format', encodeJsonFile(JSON.stringify({ format: 2, slots: [] })), 'WAL_FORMAT'],
      ];
      for (const [what, bytes, code] of cases) {
        const storage = new MemoryStorage();
        await putFile(storage, SLOTS_FILE, bytes);
        await rejectsCode(SlotManager.open(storage), code, what);
      }
      const storage = new MemoryStorage();
      await putFile(storage, SLOTS_FILE, good);
      assert.deepEqual(stored(await SlotManager.open(storage)), [['a', 5, null]]);
    });

    it('a failing read is WAL_IO', async () => {
      const storage = new MemoryStorage();
      await (await SlotManager.open(storage)).create('a');
      for (const operation of ['open', 'read'] as const) {
        storage.injectFault({ operation, code: 'EIO' });
        await rejectsCode(SlotManager.open(storage), 'WAL_IO', operation);
      }
    });

    it('a failed write is WAL_IO with the cause, changes nothing in memory, and keeps holding what it wrote', async () => {
      for (const operation of ['remove', 'open', 'write', 'datasync', 'rename', 'syncDirectory'] as const) {
        const storage = new MemoryStorage();
        const slots = await SlotManager.open(storage);
        await slots.create('a', { reserveAt: 5000 });
        // A first write leaves no temporary file to remove: make one so 'remove' is exercised.
        await putFile(storage, `${SLOTS_FILE}.tmp`, Buffer.from('stale'));
        storage.injectFault({ operation, code: operation === 'write' ? 'ENOSPC' : 'EIO' });
        await assert.rejects(slots.create('b', { reserveAt: 1000 }), (err: unknown) => {
          assert.ok(isWalshipError(err, 'WAL_IO'), `${operation}: ${String(err)}`);
          assert.equal((err as Error & { transient: boolean }).transient, operation === 'write');
          assert.ok(((err as Error).cause as { code?: string }).code !== undefined, 'the cause is kept');
          return true;
        });
        assert.equal(slots.has('b'), false, operation);
        // The new file may be on disk (the rename happened before syncDirectory failed): its
        // reservation holds WAL until a later write settles the content.
        assert.deepEqual(slots.retentionHolds(), [
          { name: 'a', restartLsn: 5000 },
          { name: 'b', restartLsn: 1000 },
        ]);
        assert.equal(slots.dirty, true);
        await slots.flush();
        assert.equal(slots.dirty, false);
        assert.deepEqual(slots.retentionHolds(), [{ name: 'a', restartLsn: 5000 }]);
        assert.deepEqual(stored(await SlotManager.open(storage)), [['a', 5000, null]]);
        // A failed drop leaves the slot usable.
        storage.injectFault({ operation, code: 'EIO' });
        await rejectsCode(slots.drop('a'), 'WAL_IO', operation);
        slots.acquire('a', 's1').release();
        await slots.drop('a');
      }
    });
  });

  describe('crash safety', () => {
    /** Each mutation from one starting state, and the state it leads to. */
    const MUTATIONS: Array<{ what: string; run: (s: SlotManager) => Promise<unknown>; after: Array<[string, number | null, string | null]> }> = [
      { what: 'create, reserved', run: (s) => s.create('b', { reserveAt: 7000 }), after: [['a', 3000, null], ['b', 7000, null], ['lost', null, 'wal_removed']] },
      { what: 'create, not reserved', run: (s) => s.create('c'), after: [['a', 3000, null], ['c', null, null], ['lost', null, 'wal_removed']] },
      { what: 'drop', run: (s) => s.drop('a'), after: [['lost', null, 'wal_removed']] },
      { what: 'drop of a lost slot', run: (s) => s.drop('lost'), after: [['a', 3000, null]] },
      { what: 'invalidate', run: (s) => s.invalidate('a', 'test'), after: [['a', null, 'test'], ['lost', null, 'wal_removed']] },
      {
        what: 'flush of an advance',
        run: (s) => {
          s.advance('a', { flushLsn: 8000 });
          return s.flush();
        },
        after: [['a', 8000, null], ['lost', null, 'wal_removed']],
      },
      {
        what: 'planWalRemoval invalidating a slot',
        run: (s) => s.planWalRemoval({ ...WAL, currentLsn: 9500, checkpointLsn: 9500, maxSlotWalKeepSize: 2000 }),
        after: [['a', null, WAL_REMOVED_REASON], ['lost', null, 'wal_removed']],
      },
    ];
    const BEFORE: Array<[string, number | null, string | null]> = [['a', 3000, null], ['lost', null, 'wal_removed']];

    /** Opens the survivor of a crash: it holds `found`, leaves no stray file, and takes changes, through one more crash too. */
    async function checkContinues(survivor: MemoryStorage, found: Row[], point: CrashPoint): Promise<void> {
      const what = `${point.what}, then`;
      const again = await SlotManager.open(survivor);
      assert.deepEqual(stored(again), found, `${what}: reopened, it holds what it held`);
      // A second crash within the next change ('z' sorts after every other name).
      const second = await runToPowerLoss(survivor, { ...point, operation: 1 + (point.operation % 8), what }, async () => {
        await (await SlotManager.open(survivor)).create('z');
      });
      const afterSecond = stored(await SlotManager.open(second.survivor));
      const allowed = second.completed ? [[...found, ['z', null, null]]] : [found, [...found, ['z', null, null]]];
      assert.ok(allowed.some((a) => JSON.stringify(a) === JSON.stringify(afterSecond)), `${what} a crash in a create: ${JSON.stringify(afterSecond)}`);
      // A leftover temporary file does not disturb the next change.
      await (await SlotManager.open(second.survivor)).create('zz');
      assert.deepEqual(stored(await SlotManager.open(second.survivor)), [...afterSecond, ['zz', null, null]], `${what}: the next change`);
      assert.deepEqual(second.survivor.fileNames(), [SLOTS_FILE], `${what}: only the slots file is left`);
    }

    it('a crash at any step of any change leaves the old or the new slots', async (t) => {
      let points = 0;
      for (const { what: change, run, after } of MUTATIONS) {
        points += await sweepCrashPoints({ maxOperations: 100 }, async (point) => {
          const what = `${change}, ${point.what}`;
          const storage = new MemoryStorage();
          const setup = await SlotManager.open(storage);
          await setup.create('a', { reserveAt: 3000 });
          await setup.create('lost', { reserveAt: 10 });
          await setup.invalidate('lost', 'wal_removed');
          const slots = await SlotManager.open(storage);
          const { survivor, completed, error } = await runToPowerLoss(storage, point, () => run(slots));
          if (completed) assert.equal(error, null, `${what}: with no crash the change succeeds`);
          else if (error !== null) assert.ok(isWalshipError(error, 'WAL_IO'), `${what}: a failed change is WAL_IO, got ${String(error)}`);
          // Never a damaged file: the old slots or the new ones.
          const found = stored(await SlotManager.open(survivor));
          const allowed = completed ? [after] : [BEFORE, after];
          assert.ok(allowed.some((a) => JSON.stringify(a) === JSON.stringify(found)), `${what}: ${JSON.stringify(found)}`);
          await checkContinues(survivor, found, { ...point, what });
          return { completed };
        });
      }
      reportCrashPoints(t, points);
    });

    it('a crash at any step of a life of several slots (open, creates, a flushed advance, drops, invalidations) leaves the state before or after the change under way', async (t) => {
      /** The changes in order, on the node's own slots file, from opening it on. */
      const LIFE: Array<{ what: string; run: (s: SlotManager) => Promise<unknown> }> = [
        { what: 'create a, reserved', run: (s) => s.create('a', { reserveAt: 3000 }) },
        { what: 'create b, reserved', run: (s) => s.create('b', { reserveAt: 5000 }) },
        { what: 'create c', run: (s) => s.create('c') },
        {
          what: 'advance a, flush',
          run: (s) => {
            s.advance('a', { flushLsn: 6000 });
            return s.flush();
          },
        },
        { what: 'drop b', run: (s) => s.drop('b') },
        { what: 'invalidate c', run: (s) => s.invalidate('c', 'idle_timeout') },
        { what: 'create d, reserved', run: (s) => s.create('d', { reserveAt: 8000 }) },
        {
          what: 'advance d, flush',
          run: (s) => {
            s.advance('d', { flushLsn: 9100 });
            return s.flush();
          },
        },
        { what: 'planWalRemoval invalidating a', run: (s) => s.planWalRemoval({ ...WAL, currentLsn: 9500, checkpointLsn: 9500, maxSlotWalKeepSize: 2000 }) },
        { what: 'drop c', run: (s) => s.drop('c') },
        { what: 'drop a', run: (s) => s.drop('a') },
      ];
      // What the slots file holds after each change (the first: before any).
      const STATES: Row[][] = [
        [],
        [['a', 3000, null]],
        [['a', 3000, null], ['b', 5000, null]],
        [['a', 3000, null], ['b', 5000, null], ['c', null, null]],
        [['a', 6000, null], ['b', 5000, null], ['c', null, null]],
        [['a', 6000, null], ['c', null, null]],
        [['a', 6000, null], ['c', null, 'idle_timeout']],
        [['a', 6000, null], ['c', null, 'idle_timeout'], ['d', 8000, null]],
        [['a', 6000, null], ['c', null, 'idle_timeout'], ['d', 9100, null]],
        [['a', null, WAL_REMOVED_REASON], ['c', null, 'idle_timeout'], ['d', 9100, null]],
        [['a', null, WAL_REMOVED_REASON], ['d', 9100, null]],
        [['d', 9100, null]],
      ];
      const points = await sweepCrashPoints({ maxOperations: 200 }, async (point) => {
        const storage = new MemoryStorage();
        let done = 0;
        const { survivor, completed, error } = await runToPowerLoss(storage, point, async () => {
          const slots = await SlotManager.open(storage);
          for (const { what, run } of LIFE) {
            await run(slots);
            done++;
            assert.deepEqual(stored(slots), STATES[done], `${point.what}: after ${what}`);
          }
        });
        if (completed) assert.equal(error, null, `${point.what}: with no crash the changes succeed`);
        const found = stored(await SlotManager.open(survivor));
        const allowed = completed ? [STATES[done]] : [STATES[done], STATES[done + 1]];
        const during = LIFE[done]?.what ?? 'the end';
        assert.ok(allowed.some((a) => JSON.stringify(a) === JSON.stringify(found)), `${point.what} (during ${during}): ${JSON.stringify(found)}`);
        await checkContinues(survivor, found, point);
        return { completed };
      });
      reportCrashPoints(t, points);
    });
  });
});
