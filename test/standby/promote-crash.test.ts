import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { Primary, segmentFileName, type Listener, type Lsn, type PeerInfo, type Standby, type Transport } from '../../src/index.js';
import { readControlFile } from '../../src/node/control-file.js';
import { CLUSTER_DEFAULTS, MemoryNetwork, createCluster, type Cluster, type MemoryStorage } from '../../src/testing/index.js';
import { parseTimelineHistory } from '../../src/wal/timeline-history.js';
import { CRASH_MODES, reportCrashPoints, sweepCrashPoints, type CrashSweepPlan } from '../helpers/crashes.js';
import { RecordingApp, until, type AppliedBatch } from '../helpers/apps.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, codeOf, commitMany, copyOf, promoteWithPowerLoss, receivedTo, replayedTo, sameSequence } from '../helpers/standby-harness.js';

// A crash at any storage operation of Standby.promote() leaves a directory that opens as
// that standby (control file "in recovery" on timeline 1) or as the promoted primary ("in
// production" on timeline 2): never neither, never both. Each crash point promotes a fresh
// copy of a closed standby's directory with `crashAfter(k)` scheduled, for k = 1, 2, … until a
// promotion completes, in each crash mode of test/helpers/crashes.ts, and opens the survivor.

const SEGMENT = CLUSTER_DEFAULTS.segmentSize;
/** A batch of one entry of `n` bytes takes a record of 32 (header) + 8 (commit time) + 5 (entry header) + n bytes. */
const ONE_ENTRY_OVERHEAD = 45;
/** The segment header that begins every segment. */
const SEGMENT_HEADER = 32;

/** What a promotion of the standby's directory starts from, and what must survive it. */
interface Subject {
  /** Every batch at or below the switch point, in order: what the standby replays, and the promoted primary holds. */
  readonly batches: readonly AppliedBatch[];
  /** The end of the standby's complete records: the switch point of a promotion. */
  readonly switchLsn: Lsn;
}

/** A standby opened for one crash point, replayed to the switch point and idle, not yet promoting. */
interface Attempt {
  readonly node: Standby;
  readonly storage: MemoryStorage;
}

/**
 * Promotes a standby opened by `open` with a crash scheduled before its k-th storage
 * operation, for every k until a promotion completes (each mode ends there: the k with no
 * crash is the promotion that finished, followed by a power loss), in every crash mode, and
 * checks each survivor; modes outside `plan.every` try every `plan.stride`-th k. Each mode
 * must meet both outcomes. Returns how many crash points were tried.
 */
async function sweep(cluster: Cluster, subject: Subject, plan: CrashSweepPlan, open: (what: string) => Promise<Attempt>): Promise<number> {
  const outcomes = CRASH_MODES.map(() => new Set<string>());
  const points = await sweepCrashPoints({ maxOperations: 1000, ...plan }, async (point) => {
    const what = `${point.what} of the promotion`;
    const { node, storage } = await open(what);
    const { completed, survivor } = await promoteWithPowerLoss(node, storage, point.operation, point.crash, what, ({ error, completed }) => {
      if (completed) assert.equal(error, null, `${what}: with no crash the promotion succeeds (${String(error)})`);
    });
    outcomes[point.modeIndex]?.add(await checkSurvivor(cluster, survivor, subject, what));
    return { completed };
  });
  for (const [modeIndex, mode] of CRASH_MODES.entries()) {
    assert.deepEqual([...(outcomes[modeIndex] ?? [])].sort(), ['primary', 'standby'], `${JSON.stringify(mode)}: early crashes leave the standby, late ones the primary`);
  }
  return points;
}

/**
 * The survivor of a crash during a promotion is exactly one of: the standby it was (it opens
 * as a standby, replays every batch, is refused as a primary, and can promote again), or the
 * promoted primary on timeline 2 (it opens as a primary with every batch and the old
 * timeline's switch segment set aside, and takes commits that survive a restart).
 */
async function checkSurvivor(cluster: Cluster, survivor: MemoryStorage, subject: Subject, what: string): Promise<'standby' | 'primary'> {
  const control = await readControlFile(survivor);
  assert.ok(control !== null, `${what}: the control file survives`);
  const lastBatch = subject.batches.at(-1)?.lsn ?? 0;
  if (control.state === 'in-recovery' || control.state === 'shut-down-in-recovery') {
    assert.equal(control.timeline, 1, `${what}: a standby's directory is on timeline 1`);
    assert.equal(await codeOf(Primary.open({ storage: survivor, application: new RecordingApp() })), 'STANDBY_DIRECTORY', `${what}: not a primary's directory`);
    const app = new RecordingApp();
    // Its upstream is gone (nothing listens there): it holds only what it had.
    const standby = await cluster.standby('s', { upstream: cluster.address('p'), application: app, storage: survivor });
    await within(standby.waitForReplay(lastBatch), HANG_MS, `${what}: the surviving standby to replay`);
    sameSequence(app.applied, subject.batches, `${what}: the surviving standby's batches`);
    assert.equal(standby.receiveLsn, subject.switchLsn, `${what}: the surviving standby's WAL ends at its last complete record`);
    assert.deepEqual(survivor.fileNames().filter((n) => n.startsWith('00000002')), [], `${what}: what the interrupted promotion wrote of timeline 2 is gone`);
    // It can try again, and then it is the primary.
    const primary = await within(standby.promote(), HANG_MS, `${what}: promoting the surviving standby`);
    try {
      assert.equal(primary.timeline, 2, `${what}: promoted again onto timeline 2`);
      assert.equal(primary.wal.history.entries[0]?.switchLsn, subject.switchLsn, `${what}: the second promotion's switch point`);
      await primary.commit([Buffer.from('after a second promotion')]);
      sameSequence(app.applied.slice(0, -1), subject.batches, `${what}: the second promotion's batches`);
    } finally {
      await primary.close();
    }
    return 'standby';
  }
  assert.equal(control.state, 'in-production', `${what}: the control file says standby or primary`);
  assert.equal(control.timeline, 2, `${what}: a promoted primary's directory is on timeline 2`);
  assert.deepEqual(control.switchedFrom && [control.switchedFrom.timeline, control.switchedFrom.switchLsn], [1, subject.switchLsn], `${what}: the control file records where timeline 2 branched`);
  const app = new RecordingApp();
  let primary = await Primary.open({ storage: survivor, application: app });
  try {
    // Written after the control file, in the background, or rebuilt by the open from it.
    assert.ok(survivor.fileNames().includes('00000002.history'), `${what}: the history file of timeline 2 is there`);
    const history = parseTimelineHistory(2, Buffer.from(survivor.readFile('00000002.history')).toString());
    assert.deepEqual(history.entries.map((e) => [e.timeline, e.switchLsn]), [[1, subject.switchLsn]], `${what}: timeline 2 branches at the end of the complete records`);
    assert.equal(primary.timeline, 2, `${what}: the primary opens on timeline 2`);
    sameSequence(app.applied, subject.batches, `${what}: the promoted primary's batches`);
    const switchSegno = Math.floor(subject.switchLsn / SEGMENT);
    const left = survivor.fileNames().filter((n) => /^00000001[0-9A-F]{16}$/.test(n) && Number.parseInt(n.slice(16), 16) >= switchSegno);
    assert.deepEqual(left, [], `${what}: no timeline-1 file of the switch segment or later is left to read`);
    if (subject.switchLsn % SEGMENT !== 0) {
      assert.ok(survivor.fileNames().includes(`${segmentFileName(1, switchSegno, SEGMENT)}.partial`), `${what}: the old timeline's switch segment is set aside`);
    }
    await primary.commit([Buffer.from('after the crash')]);
  } finally {
    await primary.close();
  }
  const again = new RecordingApp();
  primary = await Primary.open({ storage: survivor, application: again });
  try {
    assert.equal(primary.timeline, 2);
    assert.equal(again.applied.length, subject.batches.length + 1);
    sameSequence(again.applied, app.applied, `${what}: the promoted primary after a restart`);
  } finally {
    await primary.close();
  }
  return 'primary';
}

/**
 * Waits until the standby has bootstrapped (from a base backup of the still empty primary)
 * and streams: the batches committed next reach it as WAL, which it replays at every open.
 */
async function streaming(standby: Standby): Promise<void> {
  await within(until(() => standby.state === 'streaming'), HANG_MS, 'the standby to stream');
}

/** Resolves once `value()` has not changed for 20 ms. */
async function settled(value: () => unknown): Promise<void> {
  for (let last = value(), since = Date.now(); Date.now() - since < 20; ) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    const now = value();
    if (now !== last) [last, since] = [now, Date.now()];
  }
}

/** A primary P and a standby S streaming from it (bootstrapped from P while still empty). */
async function streamingPair(t: TestContext): Promise<{ cluster: Cluster; appP: RecordingApp; p: Primary; storageS: MemoryStorage; s: Standby }> {
  const cluster = createCluster(t);
  const appP = new RecordingApp();
  const p = await cluster.primary('p', { application: appP });
  const storageS = cluster.storage('s');
  const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
  await streaming(s);
  return { cluster, appP, p, storageS, s };
}

/** Opens copies of a closed standby's directory, its upstream gone. */
function reopening(cluster: Cluster, closed: MemoryStorage, subject: Subject): (what: string) => Promise<Attempt> {
  return async (what) => {
    const storage = await copyOf(closed);
    const node = await cluster.standby('s', { upstream: cluster.address('p'), application: new RecordingApp(), storage });
    await within(node.waitForReplay(subject.batches.at(-1)?.lsn ?? 0), HANG_MS, `${what}: the standby to replay its WAL`);
    return { node, storage };
  };
}

/**
 * A transport whose connections deliver what they receive in small pieces, a millisecond
 * apart, and stop delivering for good at a point the test chooses, in the middle of a WAL
 * message: the first time once `hold()` says so, which also fixes how many bytes were let
 * through (`budget`); from then on after exactly that many bytes, so that every later
 * connection (the same exchange of the same nodes' copies) stops at the same WAL position.
 */
class ValveTransport implements Transport {
  readonly name = 'valve';
  hold: () => boolean = () => false;
  /** Bytes a connection delivers before it stops, once known. */
  budget: number | null = null;
  /** Whether a connection has stopped delivering. */
  held = false;

  constructor(private readonly inner: Transport) {}

  listen(address: string, onConnection: (stream: Duplex, peer: PeerInfo) => void, options?: { signal?: AbortSignal }): Promise<Listener> {
    return this.inner.listen(address, onConnection, options);
  }

  async connect(address: string, options?: { signal?: AbortSignal }): Promise<Duplex> {
    const inner = await this.inner.connect(address, options);
    const pieces: Buffer[] = [];
    let delivered = 0;
    let pumping = false;
    let ended = false;
    const outer = new Duplex({
      write: (chunk: Buffer, _encoding, callback) => void inner.write(chunk, callback),
      final: (callback) => {
        inner.end();
        callback();
      },
      read: () => undefined,
      destroy: (err, callback) => {
        inner.destroy(err ?? undefined);
        callback(err);
      },
    });
    const pump = async (): Promise<void> => {
      if (pumping) return;
      pumping = true;
      while (!this.held && pieces.length > 0 && !outer.destroyed) {
        let piece = pieces.shift() as Buffer;
        if (this.budget === null && this.hold()) this.budget = delivered;
        if (this.budget !== null && delivered + piece.length >= this.budget) {
          piece = piece.subarray(0, this.budget - delivered);
          this.held = true;
        }
        delivered += piece.length;
        if (piece.length > 0) outer.push(piece);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      pumping = false;
      if (ended && !this.held) outer.push(null);
    };
    inner.on('data', (chunk: Buffer) => {
      for (let at = 0; at < chunk.length; at += 2048) pieces.push(chunk.subarray(at, at + 2048));
      void pump();
    });
    inner.on('end', () => {
      ended = true;
      void pump();
    });
    inner.on('error', (err) => outer.destroy(err));
    inner.on('close', () => {
      if (!outer.destroyed) outer.destroy();
    });
    return outer;
  }
}

/**
 * The third and fourth tests: a live standby whose WAL ends inside a record when it promotes
 * (the record arrived in part), mid-segment or, with `atSegmentStart`, in a segment that holds
 * only its header and that part (the switch point then lies right after the header). Each
 * crash point opens a primary and the standby on copies of their closed directories; the
 * standby streams through a {@link ValveTransport} that stops at the same point every time.
 */
async function partialRecord(t: TestContext, atSegmentStart: boolean, plan: CrashSweepPlan): Promise<void> {
  const network = new MemoryNetwork();
  const valve = new ValveTransport(network.transport('s'));
  const cluster = createCluster(t, { network, transport: (name) => (name === 's' ? valve : network.transport(name)) });
  const appP = new RecordingApp();
  const p = await cluster.primary('p', { application: appP });
  const storageS = cluster.storage('s');
  const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
  await streaming(s);
  await commitMany(p, 0, 100);
  if (atSegmentStart) {
    if (SEGMENT - (p.currentLsn % SEGMENT) < ONE_ENTRY_OVERHEAD + 64) await commitMany(p, 100, 1, 100);
    await p.commit([Buffer.alloc(SEGMENT - (p.currentLsn % SEGMENT) - ONE_ENTRY_OVERHEAD, 0x5a)]);
    assert.equal(p.currentLsn % SEGMENT, 0, 'a batch ends the segment');
  }
  const complete = p.currentLsn;
  await replayedTo(s, complete, 'the standby to replay');
  await receivedTo(s, complete, 'the standby to receive everything');
  await s.close();
  // Records of 10 KB, sent to the standby below in WAL messages of 4 KiB.
  const big: Lsn[] = [];
  for (let i = 0; i < 4; i++) big.push((await p.commit([Buffer.alloc(10_000, 0x61 + i)])).lsn);
  await p.close();
  const closedS = await copyOf(storageS);
  const closedP = await copyOf(cluster.storage('p'));
  // The standby stops receiving inside the first big record (or the second): it arrived in part.
  const switchLsn = atSegmentStart ? complete + SEGMENT_HEADER : (big[0] as Lsn);
  const next = atSegmentStart ? (big[0] as Lsn) : (big[1] as Lsn);
  const target = switchLsn + 2000;
  const subject = { batches: appP.applied.filter((b) => b.lsn <= switchLsn), switchLsn };
  let receivedAt: Lsn | null = null;

  const open = async (what: string): Promise<Attempt> => {
    const primary = await cluster.primary('p', { application: new RecordingApp(), storage: await copyOf(closedP), maxWalMessageBytes: 4096 });
    const storage = await copyOf(closedS);
    let opened: Standby | null = null;
    valve.held = false;
    valve.hold = () => (opened?.receiveLsn ?? 0) > target;
    const node = await cluster.standby('s', { upstream: primary, application: new RecordingApp(), storage });
    opened = node;
    await within(until(() => valve.held, 1), HANG_MS, `${what}: the standby to stop receiving`);
    // It flushes what it was let through: the first time until that stops changing, then up to where it did then.
    const flushed = receivedAt === null ? settled(() => node.receiveLsn) : until(() => (node.receiveLsn ?? 0) >= (receivedAt ?? 0), 1);
    await within(flushed, HANG_MS, `${what}: the standby to flush what it received`);
    const at = node.receiveLsn as Lsn;
    assert.ok(at > switchLsn && at < next, `${what}: the standby's WAL ends inside a record (${at}, after ${switchLsn})`);
    // The same point every time: the crash points are the same operations.
    receivedAt ??= at;
    assert.equal(at, receivedAt, `${what}: the standby stops where it did before`);
    await within(node.waitForReplay(subject.batches.at(-1)?.lsn ?? 0), HANG_MS, `${what}: the standby to replay its complete records`);
    // The primary goes away (without waiting for the stalled standby).
    await primary.close({ signal: AbortSignal.abort() });
    await within(until(() => node.state !== 'streaming', 1), HANG_MS, `${what}: the standby to notice`);
    return { node, storage };
  };
  const points = await sweep(cluster, subject, plan, open);
  reportCrashPoints(t, points, `the standby's WAL ended at ${String(receivedAt)}, inside the record after ${switchLsn}`);
}

describe('a crash at every storage step of Standby.promote', () => {
  // Run time (about 15 s on two cores, some 600 crash points): a crash point of the first
  // two tests costs about 15 ms (a standby opened on a copy, its promotion, the survivor
  // opened two or three times), one of the last two about 45 ms (a primary opened too, and
  // WAL streamed). So the mid-segment test tries every operation in every crash mode; the
  // others every operation in one or two modes (CRASH_MODES[0]: everything unsynced lost;
  // CRASH_MODES[4]: torn writes, a prefix of the metadata changes) and every third or fourth
  // operation in the others. Each mode still ends with a promotion that completes (then a
  // power loss), and meets both outcomes.

  it('leaves the standby or the promoted primary, never neither and never both (switch point mid-segment)', async (t) => {
    const { cluster, appP, p, storageS, s } = await streamingPair(t);
    await commitMany(p, 0, 120);
    assert.ok(p.currentLsn > SEGMENT * 2, `the WAL spans more than one segment (${p.currentLsn})`);
    await replayedTo(s, p.currentLsn, 'the standby to replay');
    await receivedTo(s, p.flushLsn, 'the standby to receive everything');
    await p.close();
    // The primary's shutdown record reaches the standby: its WAL ends where the primary's does.
    const switchLsn = p.currentLsn;
    await receivedTo(s, switchLsn, 'the standby to receive the shutdown record');
    await s.close();
    assert.notEqual(switchLsn % SEGMENT, 0, 'the switch point lies inside a segment');
    const subject = { batches: appP.applied, switchLsn };
    const points = await sweep(cluster, subject, { seed: 1 }, reopening(cluster, await copyOf(storageS), subject));
    reportCrashPoints(t, points);
  });

  it('leaves the standby or the promoted primary (switch point at a segment boundary)', async (t) => {
    const { cluster, appP, p, storageS, s } = await streamingPair(t);
    await commitMany(p, 0, 100);
    // One batch whose record ends exactly at the end of the segment.
    if (SEGMENT - (p.currentLsn % SEGMENT) < ONE_ENTRY_OVERHEAD + 64) await commitMany(p, 100, 1, 100);
    await p.commit([Buffer.alloc(SEGMENT - (p.currentLsn % SEGMENT) - ONE_ENTRY_OVERHEAD, 0x5a)]);
    const switchLsn = p.currentLsn;
    assert.equal(switchLsn % SEGMENT, 0, `the WAL ends at a segment boundary (${switchLsn})`);
    assert.ok(switchLsn >= SEGMENT * 2, 'the WAL spans more than one segment');
    await replayedTo(s, switchLsn, 'the standby to replay');
    await receivedTo(s, switchLsn, 'the standby to receive everything');
    // The standby stops first: it never receives the primary's shutdown record.
    await s.close();
    await p.close();
    const subject = { batches: appP.applied, switchLsn };
    const points = await sweep(cluster, subject, { every: [0, 4], stride: 3, seed: 2 }, reopening(cluster, await copyOf(storageS), subject));
    reportCrashPoints(t, points);
  });

  it('leaves the standby or the promoted primary when the last record arrived only in part', async (t) => {
    await partialRecord(t, false, { every: [4], stride: 4, seed: 3 });
  });

  it('leaves the standby or the promoted primary when a segment holds only its header and part of a record', async (t) => {
    await partialRecord(t, true, { every: [0], stride: 4, seed: 4 });
  });
});
