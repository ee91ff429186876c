import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, type Lsn } from '../../src/index.js';
import { readControlFile } from '../../src/node/control-file.js';
import { CLUSTER_DEFAULTS, createCluster, type Cluster, type MemoryStorage } from '../../src/testing/index.js';
import { CRASH_MODES, reportCrashPoints, sweepCrashPoints } from '../helpers/crashes.js';
import { RecordingApp, until, type AppliedBatch } from '../helpers/apps.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, commitMany, copyOf, promoteWithPowerLoss, receivedTo, replayedTo, sameSequence } from '../helpers/standby-harness.js';

// A crash at any storage operation of a promotion at a recovery target (a standby paused at a
// restore point, with more than two segments of WAL received past it) leaves the standby it
// was (it pauses at the same place again) or the primary promoted at the target: on timeline 2
// from the restore point on, holding the batches before it and never one of the WAL received
// past it, which no later open can read at its old positions.

const SEGMENT = CLUSTER_DEFAULTS.segmentSize;
const TARGET = { recoveryTarget: { name: 'before-migration' } } as const;

/** The closed standby's directory, the batches before the restore point, and the stop (right after the restore point). */
interface Subject {
  readonly closed: MemoryStorage;
  readonly batches: readonly AppliedBatch[];
  readonly stop: Lsn;
}

/** Opens a copy of the standby's directory, its upstream gone, paused at the restore point. */
async function pausedCopy(cluster: Cluster, subject: Subject, what: string): Promise<{ node: Awaited<ReturnType<Cluster['standby']>>; storage: MemoryStorage; app: RecordingApp }> {
  const storage = await copyOf(subject.closed);
  const app = new RecordingApp();
  const node = await cluster.standby('s', { upstream: cluster.address('p'), application: app, storage, ...TARGET });
  await within(until(() => node.replayPaused), HANG_MS, `${what}: the standby to pause at the restore point`);
  return { node, storage, app };
}

/** The survivor is that standby (paused at the same place) or the primary promoted there. */
async function checkSurvivor(cluster: Cluster, survivor: MemoryStorage, subject: Subject, what: string): Promise<'standby' | 'primary'> {
  const control = await readControlFile(survivor);
  assert.ok(control !== null, `${what}: the control file survives`);
  if (control.state === 'in-recovery' || control.state === 'shut-down-in-recovery') {
    assert.equal(control.timeline, 1, `${what}: a standby's directory is on timeline 1`);
    const app = new RecordingApp();
    const standby = await cluster.standby('s', { upstream: cluster.address('p'), application: app, storage: survivor, ...TARGET });
    try {
      await within(until(() => standby.replayPaused), HANG_MS, `${what}: the surviving standby to pause at the restore point`);
      sameSequence(app.applied, subject.batches, `${what}: the surviving standby's batches`);
      assert.ok((standby.receiveLsn ?? 0) >= subject.stop, `${what}: it holds the WAL up to the restore point`);
    } finally {
      await standby.close();
    }
    return 'standby';
  }
  assert.equal(control.state, 'in-production', `${what}: the control file says standby or primary`);
  assert.equal(control.timeline, 2, `${what}: a promoted primary's directory is on timeline 2`);
  assert.equal(control.switchedFrom?.switchLsn, subject.stop, `${what}: timeline 2 branched at the restore point`);
  const app = new RecordingApp();
  const primary = await Primary.open({ storage: survivor, application: app });
  try {
    sameSequence(app.applied, subject.batches, `${what}: the promoted primary holds the batches before the target and none after`);
    const switchSegno = Math.floor(subject.stop / SEGMENT);
    const left = survivor.fileNames().filter((n) => /^00000001[0-9A-F]{16}$/.test(n) && Number.parseInt(n.slice(16), 16) >= switchSegno);
    assert.deepEqual(left, [], `${what}: no timeline-1 file of the switch segment or later is left to read`);
    await primary.commit([Buffer.from('after the crash')]);
  } finally {
    await primary.close();
  }
  const again = new RecordingApp();
  const reopened = await Primary.open({ storage: survivor, application: again });
  try {
    assert.equal(again.applied.length, subject.batches.length + 1, `${what}: after a restart, the batches before the target and the new commit`);
    sameSequence(again.applied.slice(0, -1), subject.batches, `${what}: the reopened primary's batches`);
  } finally {
    await reopened.close();
  }
  return 'primary';
}

describe('a crash at every storage step of a promotion at a recovery target', () => {
  it('leaves the standby paused at the target or the primary promoted there, never a record received past the target on timeline 2', async (t) => {
    const cluster = createCluster(t);
    const appP = new RecordingApp();
    const p = await cluster.primary('p', { application: appP });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    await within(until(() => s.state === 'streaming'), HANG_MS, 'the standby to stream');
    await commitMany(p, 0, 40);
    const point = await p.createRestorePoint('before-migration');
    // More than two segments past the target: whole segments to set aside, and the rest of the switch segment.
    await commitMany(p, 40, 260);
    assert.ok(p.currentLsn - point.lsn > 2 * SEGMENT, 'more than two segments past the target');
    await replayedTo(s, p.appliedLsn, 'the standby to replay');
    await receivedTo(s, p.flushLsn);
    await s.close();
    await p.close();
    const subject: Subject = { closed: await copyOf(cluster.storage('s')), batches: appP.applied.filter((b) => b.lsn < point.lsn), stop: point.lsn };

    // Every operation in the first and the torn mode, every third in the others.
    const outcomes = CRASH_MODES.map(() => new Set<string>());
    const points = await sweepCrashPoints({ every: [0, 4], stride: 3, seed: 41, maxOperations: 1000 }, async (point) => {
      const what = `${point.what} of the promotion`;
      const { node, storage } = await pausedCopy(cluster, subject, what);
      const { completed, survivor } = await promoteWithPowerLoss(node, storage, point.operation, point.crash, what, ({ primary, error, completed }) => {
        if (completed) assert.equal(error, null, `${what}: with no crash the promotion succeeds (${String(error)})`);
        if (completed) assert.equal(primary?.wal.history.entries[0]?.switchLsn, subject.stop, `${what}: the new timeline begins at the target`);
      });
      outcomes[point.modeIndex]?.add(await checkSurvivor(cluster, survivor, subject, what));
      return { completed };
    });
    for (const [modeIndex, mode] of CRASH_MODES.entries()) {
      assert.deepEqual([...(outcomes[modeIndex] ?? [])].sort(), ['primary', 'standby'], `${JSON.stringify(mode)}: early crashes leave the standby, late ones the primary`);
    }
    reportCrashPoints(t, points);
  });
});
