import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { format } from 'node:util';
import createDebug from 'debug';
import { NodeStorage, isWalshipError, type ErrorCode } from '../../src/index.js';
import type { RetentionState } from '../../src/slots/retention.js';
import { MAX_PERSISTED_SLOT_BYTES, MAX_SLOTS_FILE_BYTES, SLOTS_FILE, readSlotsFile, writeSlotsFile, type PersistedSlot } from '../../src/slots/slot-file.js';
import { MAX_REPLICATION_SLOTS_CAP, SLOT_DEFAULTS, SlotManager } from '../../src/slots/slot-manager.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { tempDir } from '../helpers/temp-dir.js';

// maxReplicationSlots (#13): slots are bounded in number, so that walship.slots always stays
// readable by walship, and a directory with more slots than allowed still opens with all of them.

const WAL: RetentionState = { segmentSize: 1000, currentLsn: 9200, oldestLsn: 0, checkpointLsn: 9000, walKeepSize: 0, maxSlotWalKeepSize: -1 };
const MAX_LSN = Number.MAX_SAFE_INTEGER;

async function rejectsCode(promise: Promise<unknown>, code: ErrorCode, what = ''): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isWalshipError(err, code), `${what} expected ${code}, got ${String(err)}`);
    return true;
  });
}

function names(slots: SlotManager): string[] {
  return slots.list(WAL).map((r) => r.slotName);
}

/** A 63-character slot name (the longest) ending in `i`. */
function longName(i: number): string {
  return `s${String(i).padStart(62, '0')}`;
}

/** Runs `fn` with the `walship:slots` logs captured. */
async function withLogs<T>(fn: (logged: string[]) => Promise<T>): Promise<T> {
  const logged: string[] = [];
  const previous = { log: createDebug.log, namespaces: createDebug.disable() };
  createDebug.enable('walship:slots*');
  createDebug.log = (...args: unknown[]) => logged.push(format(...args));
  try {
    return await fn(logged);
  } finally {
    createDebug.log = previous.log;
    createDebug.enable(previous.namespaces);
  }
}

describe('SlotManager: maxReplicationSlots', () => {
  it('refuses a slot beyond the limit (default 10) with SLOT_LIMIT_REACHED, writing nothing; a drop makes room', async () => {
    assert.equal(SLOT_DEFAULTS.maxReplicationSlots, 10);
    const storage = new MemoryStorage();
    const slots = await SlotManager.open(storage);
    assert.equal(slots.maxReplicationSlots, 10);
    for (let i = 0; i < 10; i++) await slots.create(`s${i}`, { reserveAt: 100 });
    const file = Buffer.from(storage.readFile(SLOTS_FILE));
    await assert.rejects(slots.create('eleventh', { reserveAt: 100 }), (err: unknown) => {
      assert.ok(isWalshipError(err, 'SLOT_LIMIT_REACHED'), `expected SLOT_LIMIT_REACHED, got ${String(err)}`);
      assert.match((err as Error).message, /all replication slots are in use/);
      assert.match((err as Error).message, /maxReplicationSlots/);
      return true;
    });
    // A taken name is SLOT_EXISTS first, as in PostgreSQL.
    await rejectsCode(slots.create('s3'), 'SLOT_EXISTS');
    assert.deepEqual(Buffer.from(storage.readFile(SLOTS_FILE)), file, 'the file is untouched');
    assert.equal(slots.size, 10);
    assert.equal(slots.has('eleventh'), false);
    assert.equal(slots.dirty, false, 'nothing is left in doubt');
    assert.deepEqual(names(await SlotManager.open(storage)), names(slots), 'a reopen finds the same ten');

    await slots.drop('s0');
    await slots.create('eleventh');
    assert.equal(slots.size, 10);
    await rejectsCode(slots.create('twelfth'), 'SLOT_LIMIT_REACHED');
  });

  it('counts creates and drops queued before it: of 25 concurrent creates, exactly the limit succeed', async () => {
    const storage = new MemoryStorage();
    const slots = await SlotManager.open(storage, { maxReplicationSlots: 7 });
    await slots.create('old');
    const results = await Promise.allSettled([slots.drop('old'), ...Array.from({ length: 25 }, (_, i) => slots.create(`c${i}`))]);
    const refused = results.filter((r) => r.status === 'rejected');
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1 + 7, 'the drop and seven creates');
    assert.ok(
      refused.every((r) => isWalshipError(r.reason, 'SLOT_LIMIT_REACHED')),
      `every refusal is SLOT_LIMIT_REACHED: ${refused.map((r) => String(r.reason)).join('; ')}`,
    );
    assert.equal((await readSlotsFile(storage)).length, 7, 'the file holds the seven');
  });

  it('maxReplicationSlots 0 allows no slot; bad values are INVALID_OPTIONS', async () => {
    const none = await SlotManager.open(new MemoryStorage(), { maxReplicationSlots: 0 });
    await rejectsCode(none.create('a'), 'SLOT_LIMIT_REACHED');
    for (const bad of [-1, MAX_REPLICATION_SLOTS_CAP + 1, 1.5, '10', null, Number.NaN]) {
      await rejectsCode(SlotManager.open(new MemoryStorage(), { maxReplicationSlots: bad as number }), 'INVALID_OPTIONS', String(bad));
    }
    await rejectsCode(SlotManager.open(new MemoryStorage(), { logPrefix: 3 as never }), 'INVALID_OPTIONS', 'logPrefix');
    assert.equal((await SlotManager.open(new MemoryStorage(), { maxReplicationSlots: MAX_REPLICATION_SLOTS_CAP })).maxReplicationSlots, MAX_REPLICATION_SLOTS_CAP);
  });

  it('opens a directory holding more slots than the limit with every slot, logs why, and refuses new ones until enough are dropped', async () => {
    const storage = new MemoryStorage();
    const before = await SlotManager.open(storage, { maxReplicationSlots: 20 });
    for (let i = 0; i < 15; i++) await before.create(`s${String(i).padStart(2, '0')}`, { reserveAt: 100 + i });
    const all = names(before);

    const lowered = await withLogs(async (logged) => {
      const slots = await SlotManager.open(storage, { maxReplicationSlots: 5, logPrefix: 'node_a' });
      const line = logged.find((l) => l.includes('more than maxReplicationSlots'));
      assert.ok(line !== undefined, `the open logs why no slot can be created: ${JSON.stringify(logged)}`);
      assert.match(line, /15 replication slots/);
      assert.match(line, /node_a/);
      return slots;
    });
    assert.deepEqual(names(lowered), all, 'every slot is kept');
    assert.equal(lowered.size, 15);
    await rejectsCode(lowered.create('new'), 'SLOT_LIMIT_REACHED');
    // The slots go on working: they advance and are persisted as before.
    lowered.advance('s03', { flushLsn: 5000 });
    await lowered.flush();
    assert.equal((await readSlotsFile(storage)).find((s) => s.name === 's03')?.restartLsn, 5000);
    for (let i = 0; i < 10; i++) await lowered.drop(`s${String(i).padStart(2, '0')}`);
    await rejectsCode(lowered.create('new'), 'SLOT_LIMIT_REACHED', 'five left: still full');
    await lowered.drop('s10');
    await lowered.create('new');
    assert.equal(lowered.size, 5);
  });

  it(`at the greatest limit (${MAX_REPLICATION_SLOTS_CAP}), slots with the longest names and fields take under a fifth of what the file's reader accepts, and reopen`, async () => {
    // The two longest shapes a slot can have: a 63-character name with the largest LSN, or
    // with a 63-character invalidation reason (restartLsn is then null).
    const reserved = (i: number): PersistedSlot => ({ name: longName(i), restartLsn: MAX_LSN, invalidationReason: null });
    const lost = (i: number): PersistedSlot => ({ name: longName(i), restartLsn: null, invalidationReason: 'r'.repeat(63) });
    const widest = Math.max(JSON.stringify(reserved(0)).length, JSON.stringify(lost(0)).length) + 1;
    assert.equal(widest, MAX_PERSISTED_SLOT_BYTES, 'MAX_PERSISTED_SLOT_BYTES is the widest slot');
    assert.ok(MAX_REPLICATION_SLOTS_CAP * MAX_PERSISTED_SLOT_BYTES + 64 < MAX_SLOTS_FILE_BYTES / 5, 'the cap keeps the file under a fifth of its bound');

    const { dir, cleanup } = await tempDir();
    try {
      for (const storage of [new MemoryStorage(), new NodeStorage(dir)]) {
        await storage.prepare();
        const slots = Array.from({ length: MAX_REPLICATION_SLOTS_CAP }, (_, i) => lost(i));
        await writeSlotsFile(storage, slots);
        const file = await storage.open(SLOTS_FILE, { readOnly: true });
        const size = await file.size();
        await file.close();
        assert.ok(size < MAX_SLOTS_FILE_BYTES / 5, `${size} bytes`);
        const reopened = await SlotManager.open(storage, { maxReplicationSlots: MAX_REPLICATION_SLOTS_CAP });
        assert.equal(reopened.size, MAX_REPLICATION_SLOTS_CAP);
        assert.deepEqual(reopened.list(WAL).map((r) => [r.slotName, r.restartLsn, r.invalidationReason]), slots.map((s) => [s.name, s.restartLsn, s.invalidationReason]));
        await rejectsCode(reopened.create('one_more'), 'SLOT_LIMIT_REACHED');
      }
    } finally {
      await cleanup();
    }
  });

  it(`${MAX_REPLICATION_SLOTS_CAP} slots created through the API with the longest names and LSNs reopen; the next is refused`, async () => {
    const storage = new MemoryStorage();
    const slots = await SlotManager.open(storage, { maxReplicationSlots: MAX_REPLICATION_SLOTS_CAP });
    for (let i = 0; i < MAX_REPLICATION_SLOTS_CAP; i++) await slots.create(longName(i), { reserveAt: MAX_LSN - i });
    await rejectsCode(slots.create('one_more'), 'SLOT_LIMIT_REACHED');
    const reopened = await SlotManager.open(storage, { maxReplicationSlots: MAX_REPLICATION_SLOTS_CAP });
    assert.equal(reopened.size, MAX_REPLICATION_SLOTS_CAP);
    assert.equal(reopened.get(longName(5)).restartLsn, MAX_LSN - 5);
  });
});

describe('walship.slots: walship writes only what it reads back', () => {
  it('a file of exactly the reader\'s limit is written and read; one byte more is FILE_TOO_LARGE and leaves the old file', async () => {
    // Reasons of older walship were free text: only a file of such slots can come near the bound.
    const overhead = JSON.stringify({ format: 1, slots: [{ name: 'a', restartLsn: null, invalidationReason: '' }] }).length + 8;
    const exact: PersistedSlot[] = [{ name: 'a', restartLsn: null, invalidationReason: 'x'.repeat(MAX_SLOTS_FILE_BYTES - overhead) }];
    const { dir, cleanup } = await tempDir();
    try {
      for (const storage of [new MemoryStorage(), new NodeStorage(dir)]) {
        await storage.prepare();
        await writeSlotsFile(storage, exact);
        assert.deepEqual(await readSlotsFile(storage), exact, 'the largest file reads back');
        const tooLarge = [{ ...exact[0], invalidationReason: `${exact[0]?.invalidationReason ?? ''}x` } as PersistedSlot];
        await rejectsCode(writeSlotsFile(storage, tooLarge), 'FILE_TOO_LARGE');
        assert.deepEqual(await readSlotsFile(storage), exact, 'the old file stays');
        assert.deepEqual((await storage.list()).filter((n) => n.startsWith(SLOTS_FILE)), [SLOTS_FILE], 'no temporary file');
      }
    } finally {
      await cleanup();
    }
  });

  it('a SlotManager whose file cannot grow refuses the change with FILE_TOO_LARGE and keeps what it had', async () => {
    // Older walship had no slot limit: a directory can hold enough slots to fill the file.
    const storage = new MemoryStorage();
    const fileSize = (content: readonly PersistedSlot[]): number => JSON.stringify({ format: 1, slots: content }).length + 8;
    const legacy: PersistedSlot[] = [{ name: 'grows', restartLsn: null, invalidationReason: null }];
    for (let i = 0; fileSize(legacy) < MAX_SLOTS_FILE_BYTES - 2000; i++) legacy.push({ name: `s${i}`, restartLsn: null, invalidationReason: 'x'.repeat(1000) });
    // The last reason fills the file to 5 bytes short of the bound.
    const last = legacy.pop() as PersistedSlot;
    const room = MAX_SLOTS_FILE_BYTES - 5 - fileSize([...legacy, { ...last, invalidationReason: '' }]);
    legacy.push({ ...last, invalidationReason: 'x'.repeat(room) });
    assert.equal(fileSize(legacy), MAX_SLOTS_FILE_BYTES - 5);
    assert.ok(legacy.length < MAX_REPLICATION_SLOTS_CAP, 'fewer slots than the cap: the file is what refuses');
    await writeSlotsFile(storage, legacy);
    const slots = await SlotManager.open(storage, { maxReplicationSlots: MAX_REPLICATION_SLOTS_CAP });
    assert.equal(slots.size, legacy.length);
    const file = Buffer.from(storage.readFile(SLOTS_FILE));
    // A 16-digit restartLsn in place of null, and a new slot: past 1 MiB.
    slots.advance('grows', { flushLsn: MAX_LSN });
    await rejectsCode(slots.flush(), 'FILE_TOO_LARGE', 'flush');
    await rejectsCode(slots.create(longName(1), { reserveAt: MAX_LSN }), 'FILE_TOO_LARGE', 'create');
    assert.deepEqual(Buffer.from(storage.readFile(SLOTS_FILE)), file, 'the file is untouched');
    assert.equal(slots.has(longName(1)), false);
    assert.deepEqual(
      slots.retentionHolds().find((h) => h.name === longName(1)),
      undefined,
      'a refused write leaves nothing in doubt',
    );
    // Dropping makes room again.
    await slots.drop('s0');
    await slots.flush();
    assert.equal((await readSlotsFile(storage)).find((s) => s.name === 'grows')?.restartLsn, MAX_LSN);
  });
});
