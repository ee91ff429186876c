import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { describe, it } from 'node:test';
import {
  MIN_SEGMENT_SIZE,
  Primary,
  type Standby,
  TcpTransport,
  isWalshipError,
  segmentFileName,
  type Lsn,
  type ReplicationSlotRow,
  type SlotInvalidatedEvent,
  type WalStatus,
} from '../../src/index.js';
import { createCluster, MemoryNetwork, MemoryStorage, seededRandom, type Cluster, type CrashOptions, type TeardownContext } from '../../src/testing/index.js';
import { RecordingApp, type AppliedBatch } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, within } from '../helpers/wal.js';
import { DurableApp, TRUST_REPL, eventually, expectMessage, rawStandby, receiveUntil, report } from '../helpers/primary-helpers.js';
import { HANG_MS, caughtUp, named, record, sameSequence } from '../helpers/standby-harness.js';
import { CRASH_MODES } from '../helpers/crashes.js';

// WAL retention on the primary, end to end (#5): what checkpoints remove and keep for
// replication slots and for standbys without one, a crash at every storage step of a
// checkpoint, and walStatus as a real stopped standby's slot falls behind.

const SEGMENT = MIN_SEGMENT_SIZE;
const at = (segno: number, offset = 0): Lsn => segno * SEGMENT + offset;
const segOf = (lsn: Lsn): number => Math.floor(lsn / SEGMENT);
const segName = (segno: number): string => segmentFileName(1, segno, SEGMENT);
const SEGMENT_NAME = /^[0-9A-F]{24}$/;

/** Commits 8 KB batches until the flushed WAL reaches `lsn`, calling `after` after each. */
async function commitUntil(primary: Primary, lsn: Lsn, after: () => void = () => undefined): Promise<void> {
  for (let i = 0; primary.flushLsn < lsn; i++) {
    await primary.commit(payload(i, 8000));
    after();
  }
}

function slot(primary: Primary, name: string): ReplicationSlotRow {
  const row = primary.slots().find((r) => r.slotName === name);
  assert.ok(row !== undefined, `slot ${name} expected among ${JSON.stringify(primary.slots().map((r) => r.slotName))}`);
  return row;
}

/** The segment numbers of the files named in `names`, ascending. */
function segnosOf(names: readonly string[]): number[] {
  return names
    .filter((n) => SEGMENT_NAME.test(n))
    .map((n) => Number.parseInt(n.slice(16), 16))
    .sort((a, b) => a - b);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/**
 * Asserts that the segments are exactly `first`, `first + 1`, … up to the segment of `end`
 * (plus the next one, which the log may have created ahead of need).
 */
function assertSegmentsFrom(segments: readonly number[], first: number, end: Lsn, what: string): void {
  const last = segOf(end);
  const expected = segments.at(-1) === last + 1 ? range(first, last + 1) : range(first, last);
  assert.deepEqual(segments, expected, `${what}: segments ${segments.join(',')}, expected ${first} to ${last} (or ${last + 1})`);
}

/** Waits until `standby` has stopped for good; returns its failure's code. */
async function failureCode(standby: Standby, what: string): Promise<string> {
  await eventually(() => standby.state === 'failed', 20_000, what);
  const failure = standby.failure;
  assert.ok(failure !== null, `${what}: a failed standby has a failure`);
  return failure.code;
}

// ---------------------------------------------------------------------------------------
// Case 1: a crash at every storage step of a checkpoint


/**
 * - `held`: the slot's position was persisted at creation; the checkpoint removes the WAL before it.
 * - `advanced`: `advanceSlot()` moves it on (and persists it), then the checkpoint removes more.
 * - `streamed`: a standby's flush report moved it in memory only; the checkpoint persists it and removes.
 */
type Scenario = 'held' | 'advanced' | 'streamed';

/** Where slot `keep` is created, and where the advancing scenarios move it. */
const HELD_AT = at(4, 1000);
const MOVED_TO = at(6, 500);
/** The WAL written before the checkpoint under test. */
const WAL_END = at(8, 2000);

interface Prepared {
  readonly storage: MemoryStorage;
  readonly primary: Primary;
  readonly held: Lsn;
  /** The positions slot `keep` may be found at after a crash. */
  readonly allowed: readonly Lsn[];
  /** The steps under test: a checkpoint (after an advance, for `advanced`). */
  run(): Promise<unknown>;
}

async function prepare(scenario: Scenario, recycleSegments: number): Promise<Prepared> {
  const storage = new MemoryStorage();
  const net = scenario === 'streamed' ? new MemoryNetwork() : null;
  const primary = await Primary.open({
    storage,
    application: new RecordingApp(),
    segmentSize: SEGMENT,
    recycleSegments,
    ...(net === null ? {} : { listen: { transport: net.transport('primary'), address: 'primary:0' }, auth: TRUST_REPL }),
  });
  await commitUntil(primary, HELD_AT);
  await primary.createSlot('keep', { reserveWal: true });
  const held = slot(primary, 'keep').restartLsn;
  assert.ok(held !== null && segOf(held) === 4, `slot keep reserved in segment 4, got ${String(held)}`);
  await primary.createSlot('idle');
  await commitUntil(primary, WAL_END);
  const checkpoint = (): Promise<unknown> => primary.checkpoint(primary.appliedLsn);
  if (scenario === 'held') return { storage, primary, held, allowed: [held], run: checkpoint };
  if (scenario === 'advanced') {
    const run = async (): Promise<unknown> => {
      assert.equal(await primary.advanceSlot('keep', MOVED_TO), MOVED_TO, 'advanceSlot moves the slot');
      return checkpoint();
    };
    return { storage, primary, held, allowed: [held, MOVED_TO], run };
  }
  // A standby streams with the slot, reports a flush and leaves: the slot moved in memory only.
  assert.ok(net !== null, 'the streamed scenario listens');
  const conn = await rawStandby(net.transport('s1'), primary.address as string, 's1');
  conn.send({ kind: 'startReplication', slotName: 'keep', startLsn: held, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
  await expectMessage(conn, 'replicationStarted');
  const end = await receiveUntil(conn, held, primary.flushLsn);
  report(conn, end, MOVED_TO, MOVED_TO);
  await eventually(() => slot(primary, 'keep').restartLsn === MOVED_TO, HANG_MS, 'the slot advanced by the report');
  conn.send({ kind: 'terminate' });
  await eventually(() => !slot(primary, 'keep').active, HANG_MS, 'the slot released');
  return { storage, primary, held, allowed: [held, MOVED_TO], run: checkpoint };
}

/**
 * Opens a primary on what survived a crash and checks that every slot is there with WAL
 * from its restartLsn on: its segment exists and the WAL reads from there to the end.
 */
async function checkSurvivor(survivor: MemoryStorage, prepared: Prepared, recycleSegments: number, what: string): Promise<void> {
  let reopened: Primary;
  try {
    reopened = await Primary.open({ storage: survivor, application: new RecordingApp(), segmentSize: SEGMENT, recycleSegments });
  } catch (err) {
    assert.fail(`${what}: the primary does not reopen: ${isWalshipError(err) ? err.code : ''} ${String(err)}`);
  }
  try {
    const rows = reopened.slots();
    assert.deepEqual(rows.map((r) => r.slotName), ['idle', 'keep'], `${what}: both slots survive`);
    assert.equal(slot(reopened, 'idle').restartLsn, null, `${what}: slot idle still holds nothing`);
    const keep = slot(reopened, 'keep');
    assert.equal(keep.invalidationReason, null, `${what}: slot keep is not invalidated`);
    const restart = keep.restartLsn;
    assert.ok(restart !== null && prepared.allowed.includes(restart), `${what}: slot keep at ${String(restart)}, expected one of ${prepared.allowed.join(', ')}`);
    assert.ok(keep.walStatus !== 'lost' && keep.walStatus !== null, `${what}: slot keep's walStatus is ${String(keep.walStatus)}`);
    assert.ok(survivor.fileNames().includes(segName(segOf(restart))), `${what}: the segment of restartLsn ${restart} survives (files: ${survivor.fileNames().join(' ')})`);
    assert.ok(reopened.wal.oldestLsn <= restart, `${what}: the WAL starts at ${reopened.wal.oldestLsn}, after the slot's ${restart}`);
    assert.ok(reopened.flushLsn >= WAL_END, `${what}: committed WAL survives (end ${reopened.flushLsn})`);
    // What a standby streaming with the slot would be sent: every byte from restartLsn on.
    let pos = restart;
    try {
      for await (const chunk of reopened.wal.readBytes(restart)) {
        assert.equal(chunk.startLsn, pos, `${what}: WAL bytes are contiguous`);
        pos += chunk.data.length;
      }
      let records = 0;
      for await (const rec of reopened.wal.read(at(segOf(restart)))) {
        assert.ok(rec.lsn >= at(segOf(restart)), `${what}: records from the slot's segment on`);
        records++;
      }
      assert.ok(records > 0, `${what}: records are read from the slot's segment`);
    } catch (err) {
      assert.fail(`${what}: reading the WAL from ${restart} failed at ${pos}: ${isWalshipError(err) ? err.code : ''} ${String(err)}`);
    }
    assert.equal(pos, reopened.flushLsn, `${what}: the WAL reads from the slot to the end`);

    // The recovered node goes on: it writes into a new segment (a recycled file, maybe) and
    // checkpoints, and the slot still keeps its WAL.
    await commitUntil(reopened, at(9, 100));
    await reopened.checkpoint(reopened.appliedLsn);
    assert.equal(slot(reopened, 'keep').restartLsn, restart, `${what}: the slot stays where it was found`);
    assert.ok(reopened.wal.oldestLsn <= restart && survivor.fileNames().includes(segName(segOf(restart))), `${what}: the next checkpoint keeps the slot's segment`);
    let records = 0;
    for await (const rec of reopened.wal.read(at(segOf(restart)))) if (rec.endLsn <= reopened.flushLsn) records++;
    assert.ok(records > 0, `${what}: the WAL still reads from the slot's segment after the next checkpoint`);
  } finally {
    await reopened.close();
  }
}

/** Runs the scenario with a crash before its k-th storage operation, k = 1, 2, … until it completes first. */
async function crashAtEveryStep(scenario: Scenario, modeIndex: number, recycleSegments: number): Promise<number> {
  const mode = CRASH_MODES[modeIndex] as Omit<CrashOptions, 'random'>;
  for (let k = 1; ; k++) {
    const what = `${scenario}, crash ${JSON.stringify(mode)} before operation ${k}, recycleSegments ${recycleSegments}`;
    assert.ok(k < 200, `${what}: the checkpoint never completes`);
    const prepared = await prepare(scenario, recycleSegments);
    const random = seededRandom(k * 7919 + modeIndex * 131 + recycleSegments);
    const crashed = prepared.storage.crashAfter(k, { ...mode, random });
    const outcome = await prepared.run().then(
      () => null,
      (err: unknown) => err,
    );
    // The crash's promise resolves in the turn it fired; setImmediate runs after all of those.
    const fired = await Promise.race([crashed, new Promise<null>((resolve) => setImmediate(() => resolve(null)))]);
    const completed = fired === null;
    if (completed) assert.equal(outcome, null, `${what}: with no crash the steps succeed (${String(outcome)})`);
    // Completed: power fails right after instead.
    const survivor = fired ?? prepared.storage.crash({ ...mode, random });
    await within(prepared.primary.close().catch(() => undefined), HANG_MS, `${what}: closing the crashed primary`);
    await checkSurvivor(survivor, prepared, recycleSegments, what);
    if (completed) return k;
  }
}

// ---------------------------------------------------------------------------------------
// Cases 2 and 4 run on two set-ups: MemoryStorage over MemoryTransport, and real directories
// (NodeStorage) over loopback TCP.

interface Setup {
  /** The cluster of the test: nodes `primary` and `s1`. */
  readonly cluster: Cluster;
  /** Where `primary` and `s1` keep their files: a directory, or (none given) their cluster storage. */
  readonly primaryWhere: { dir?: string };
  readonly standbyWhere: { dir?: string };
  /** The primary's WAL segment numbers, from its storage's listing. */
  segments(): Promise<number[]>;
  /** Closes the cluster, then removes its directories. */
  cleanup(): Promise<void>;
}

const SETUPS: readonly { name: string; make(t: TeardownContext): Promise<Setup> }[] = [
  {
    name: 'MemoryStorage over MemoryTransport',
    async make(t) {
      const cluster = createCluster(t);
      return {
        cluster,
        primaryWhere: {},
        standbyWhere: {},
        segments: async () => segnosOf(await cluster.storage('primary').list()),
        cleanup: () => cluster.close(),
      };
    },
  },
  {
    name: 'directories over TCP',
    async make(t) {
      const a = await tempDir();
      const b = await tempDir();
      const cluster = createCluster(t, { transport: () => new TcpTransport(), listenAddress: () => '127.0.0.1:0' });
      return {
        cluster,
        primaryWhere: { dir: a.dir },
        standbyWhere: { dir: b.dir },
        segments: async () => segnosOf(await readdir(a.dir)),
        cleanup: async () => {
          await cluster.close();
          await a.cleanup();
          await b.cleanup();
        },
      };
    },
  },
];

/**
 * A standby without a slot streams up to segment 3 and stops; the primary writes four more
 * segments and checkpoints with `walKeepSize` (then `check` looks at the primary's WAL); the
 * standby is opened again on the same storage and `then` watches it.
 */
async function fallBehind(
  setup: Setup,
  walKeepSize: number,
  check: (primary: Primary, left: Lsn) => Promise<void>,
  then: (standby: Standby, primary: Primary, store: { applied: AppliedBatch[] }, papp: RecordingApp) => Promise<void>,
): Promise<void> {
  const { cluster } = setup;
  const papp = new RecordingApp();
  const primary = await cluster.primary('primary', { ...setup.primaryWhere, application: papp, segmentSize: SEGMENT, recycleSegments: 0, walKeepSize });
  await commitUntil(primary, at(3, 30_000));
  const store = { applied: [] as AppliedBatch[] };
  const standbyOptions = { ...setup.standbyWhere, upstream: primary };
  const first = await cluster.standby('s1', { ...standbyOptions, application: new DurableApp(store) });
  await caughtUp(first, primary, 'the standby to catch up before it stops');
  const left = first.receiveLsn;
  assert.ok(left !== null && segOf(left) === 3, `the standby stopped in segment 3, at ${String(left)}`);
  await first.close();
  await eventually(() => primary.replicationStatus().length === 0, HANG_MS, 'the primary to see the standby go');

  await commitUntil(primary, left + 4 * SEGMENT);
  await primary.checkpoint(primary.appliedLsn);
  await check(primary, left);

  const standby = await cluster.standby('s1', { ...standbyOptions, application: new DurableApp(store) });
  await then(standby, primary, store, papp);
}

describe('Primary: WAL retention', () => {
  for (const kind of SETUPS) {
    it(`without a slot, a standby further behind than walKeepSize stops with WAL_REMOVED (${kind.name})`, async (t) => {
      const setup = await kind.make(t);
      try {
        await fallBehind(
          setup,
          SEGMENT,
          async (primary, left) => {
            const segments = await setup.segments();
            assert.ok(!segments.includes(segOf(left)), `the checkpoint removed the standby's segment ${segOf(left)} (left: ${segments.join(',')})`);
            assert.ok(primary.wal.oldestLsn > left, `the primary's WAL starts at ${primary.wal.oldestLsn}, after the standby's ${left}`);
          },
          async (standby) => {
            const events = record(standby);
            assert.equal(await failureCode(standby, 'the standby to fail'), 'WAL_REMOVED', `the standby fails with WAL_REMOVED, not ${standby.failure?.message ?? ''}`);
            assert.equal(standby.state, 'failed', 'the standby stays failed');
            await eventually(() => named(events, 'failed').length === 1, HANG_MS, 'failed');
          },
        );
      } finally {
        await setup.cleanup();
      }
    });

    it(`without a slot, a walKeepSize that covers the gap lets the same standby catch up (${kind.name})`, async (t) => {
      const setup = await kind.make(t);
      try {
        await fallBehind(
          setup,
          5 * SEGMENT,
          async (primary, left) => {
            const segments = await setup.segments();
            // The checkpoint did remove WAL (segment 1), just not the standby's.
            assert.ok(!segments.includes(1), `the checkpoint removed segment 1 (left: ${segments.join(',')})`);
            assert.ok(segments.includes(segOf(left)), `walKeepSize keeps the standby's segment ${segOf(left)} (left: ${segments.join(',')})`);
            assert.ok(primary.wal.oldestLsn <= left, `the primary's WAL starts at ${primary.wal.oldestLsn}, at or before the standby's ${left}`);
          },
          async (standby, primary, store, papp) => {
            const events = record(standby);
            await caughtUp(standby, primary, 'the standby to catch up across the checkpoint');
            assert.equal(standby.failure, null, 'the standby did not fail');
            assert.deepEqual(named(events, 'failed'), [], 'no failed event');
            sameSequence(store.applied, papp.applied, 'the standby applied what the primary did');
          },
        );
      } finally {
        await setup.cleanup();
      }
    });

    it(`a stopped standby's slot keeps every segment while it is down; after it catches up a checkpoint releases them (${kind.name})`, async (t) => {
      const setup = await kind.make(t);
      const { cluster } = setup;
      const papp = new RecordingApp();
      const primary = await cluster.primary('primary', { ...setup.primaryWhere, application: papp, segmentSize: SEGMENT, recycleSegments: 0, maxRecycleSegments: 0 });
      try {
        await primary.createSlot('s1_slot');
        await commitUntil(primary, at(2, 20_000));
        const store = { applied: [] as AppliedBatch[] };
        const standbyOptions = { ...setup.standbyWhere, upstream: primary, connection: { slotName: 's1_slot' } };
        const first = await cluster.standby('s1', { ...standbyOptions, application: new DurableApp(store) });
        await caughtUp(first, primary, 'the standby to catch up before it stops');
        const flushed = primary.flushLsn;
        await eventually(() => slot(primary, 's1_slot').restartLsn === flushed, HANG_MS, 'the slot at the standby flush');
        await first.close();
        await eventually(() => !slot(primary, 's1_slot').active, HANG_MS, 'the slot released');
        const held = slot(primary, 's1_slot').restartLsn;
        assert.ok(held !== null && segOf(held) === 2, `the slot holds segment 2, at ${String(held)}`);

        // Down while the primary writes eight segments and checkpoints twice.
        await commitUntil(primary, held + 6 * SEGMENT);
        await primary.checkpoint(primary.appliedLsn);
        await commitUntil(primary, held + 8 * SEGMENT);
        await primary.checkpoint(primary.appliedLsn);
        const kept = await setup.segments();
        assertSegmentsFrom(kept, segOf(held), primary.flushLsn, 'the checkpoints removed segment 1 only: every segment from the slot\'s on is kept');
        assert.equal(slot(primary, 's1_slot').walStatus, 'extended', 'the slot alone keeps that WAL');

        const standby = await cluster.standby('s1', { ...standbyOptions, application: new DurableApp(store) });
        const events = record(standby);
        await caughtUp(standby, primary, 'the standby to catch up through the kept segments');
        assert.equal(standby.failure, null, 'no WAL_REMOVED');
        assert.deepEqual(named(events, 'failed'), [], 'no failed event');
        sameSequence(store.applied, papp.applied, 'the standby applied what the primary did');
        const end = primary.flushLsn;
        await eventually(() => slot(primary, 's1_slot').restartLsn === end, HANG_MS, 'the slot to follow the standby');

        await primary.checkpoint(primary.appliedLsn);
        const released = await setup.segments();
        assertSegmentsFrom(released, segOf(primary.appliedLsn), end, 'the checkpoint released the segments the slot held');
        assert.ok(released.length < kept.length, `fewer segments: ${released.length} after, ${kept.length} before`);
        assert.ok(!released.includes(segOf(held)), 'the segment the slot held is gone');
        assert.equal(slot(primary, 's1_slot').walStatus, 'reserved', 'the slot is back within what the node keeps anyway');
      } finally {
        await setup.cleanup();
      }
    });
  }

  it("a stopped Standby's slot goes reserved → extended → unreserved → lost, then the standby gets WAL_REMOVED", async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', {
      application: new RecordingApp(),
      segmentSize: SEGMENT,
      recycleSegments: 0,
      walKeepSize: SEGMENT,
      maxSlotWalKeepSize: 4 * SEGMENT,
    });
    const pstorage = cluster.storage('primary');
    const invalidations: SlotInvalidatedEvent[] = [];
    primary.on('slot:invalidated', (event) => invalidations.push(event));
    // Every walStatus the slot shows, each time it changes, looked at after every commit.
    const seen: (WalStatus | null)[] = [];
    const observe = (): ReplicationSlotRow => {
      const row = slot(primary, 's1_slot');
      if (seen.at(-1) !== row.walStatus) seen.push(row.walStatus);
      return row;
    };
    await primary.createSlot('s1_slot');
    await commitUntil(primary, at(1, 20_000));
    const store = { applied: [] as AppliedBatch[] };
    const standbyOptions = { upstream: primary, connection: { slotName: 's1_slot' } };
    const standby = await cluster.standby('s1', { ...standbyOptions, application: new DurableApp(store) });
    await commitUntil(primary, at(2, 10_000));
    await caughtUp(standby, primary, 'the standby to catch up');
    const flushed = primary.flushLsn;
    await eventually(() => slot(primary, 's1_slot').restartLsn === flushed, HANG_MS, 'the slot at the standby flush');
    await standby.close();
    await eventually(() => !slot(primary, 's1_slot').active, HANG_MS, 'the slot released');
    const held = slot(primary, 's1_slot').restartLsn as Lsn;
    const r = segOf(held);
    const fails = at(r + 5); // (r + 1) segments + maxSlotWalKeepSize: where safeWalSize reaches 0

    // The checkpoint is in the slot's segment: kept anyway.
    await primary.checkpoint(primary.appliedLsn);
    let row = observe();
    assert.equal(row.walStatus, 'reserved', 'reserved while the checkpoint keeps its WAL');
    assert.equal(row.safeWalSize, fails - primary.flushLsn, 'safeWalSize counts to maxSlotWalKeepSize past the slot\'s segment');

    // Two segments on, a checkpoint there and walKeepSize (one segment) no longer keep it: only the slot does.
    await commitUntil(primary, at(r + 2, SEGMENT / 2), observe);
    await primary.checkpoint(primary.appliedLsn);
    row = observe();
    assert.equal(row.walStatus, 'extended', 'extended: kept only for the slot, within maxSlotWalKeepSize');
    assert.ok((row.safeWalSize ?? 0) > 0 && row.safeWalSize === fails - primary.flushLsn, `safeWalSize ${String(row.safeWalSize)} still positive`);
    assert.ok(pstorage.fileNames().includes(segName(r)), 'the checkpoint kept the slot\'s segment');
    assert.ok(!pstorage.fileNames().includes(segName(r - 1)), 'and removed the one before it');
    assert.equal(row.restartLsn, held, 'restartLsn unchanged');

    // More than maxSlotWalKeepSize behind: unreserved, though no checkpoint removed anything yet.
    await commitUntil(primary, at(r + 5, 100), observe);
    row = observe();
    assert.equal(row.walStatus, 'unreserved', 'unreserved beyond maxSlotWalKeepSize');
    assert.ok(row.safeWalSize !== null && row.safeWalSize <= 0, `safeWalSize ${String(row.safeWalSize)} is not positive`);
    assert.equal(row.restartLsn, held, 'restartLsn unchanged while unreserved');
    assert.ok(pstorage.fileNames().includes(segName(r)), 'the slot\'s segment is still there');
    assert.equal(invalidations.length, 0, 'no slot:invalidated yet');

    // The next checkpoint takes it.
    await primary.checkpoint(primary.appliedLsn);
    row = observe();
    assert.equal(row.walStatus, 'lost', 'lost once the checkpoint removed its WAL');
    assert.equal(row.restartLsn, null, 'restartLsn is null once lost');
    assert.equal(row.safeWalSize, null, 'safeWalSize is null once lost');
    assert.equal(row.invalidationReason, 'wal_removed', 'the invalidation reason');
    assert.ok(!pstorage.fileNames().includes(segName(r)), 'the slot\'s segment is removed');
    assert.deepEqual(
      invalidations.map((e) => ({ slotName: e.slotName, reason: e.reason, restartLsn: e.restartLsn })),
      [{ slotName: 's1_slot', reason: 'wal_removed', restartLsn: held }],
      'one slot:invalidated with the position it held',
    );

    // Later checkpoints do not announce it again.
    await commitUntil(primary, at(r + 7, 100), observe);
    await primary.checkpoint(primary.appliedLsn);
    observe();
    assert.equal(invalidations.length, 1, 'slot:invalidated fired once');
    assert.deepEqual(seen, ['reserved', 'extended', 'unreserved', 'lost'], 'walStatus went through each state in order');

    // The standby comes back to a lost slot: WAL_REMOVED is fatal.
    const back = await cluster.standby('s1', { ...standbyOptions, application: new DurableApp(store) });
    assert.equal(await failureCode(back, 'the standby to fail on the lost slot'), 'WAL_REMOVED', `WAL_REMOVED, not ${back.failure?.message ?? ''}`);
    assert.equal(slot(primary, 's1_slot').active, false, 'the lost slot was not taken');
  });

  for (const scenario of ['held', 'advanced', 'streamed'] as const) {
    it(`a crash at any step of a checkpoint (${scenario} slot) leaves every slot with its WAL`, async () => {
      for (let m = 0; m < CRASH_MODES.length; m++) {
        // Recycling turns removals into renames: half the modes run with it.
        const steps = await crashAtEveryStep(scenario, m, m % 2 === 0 ? 0 : 4);
        assert.ok(steps > 5, `${scenario}: the checkpoint took ${steps - 1} storage operations; a crash was tried at each`);
      }
    });
  }
});
