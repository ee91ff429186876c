import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RewindEvent, Standby } from '../../src/index.js';
import { createCluster, type MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp, until, type AppliedBatch } from '../helpers/apps.js';
import { reportCrashPoints, sweepCrashPoints } from '../helpers/crashes.js';
import { HANG_MS, commitMany, copyOf, receivedTo } from '../helpers/standby-harness.js';
import { within } from '../helpers/wal.js';

function texts(batches: readonly AppliedBatch[]): string[] {
  return batches.map((b) => b.entries.join('+'));
}

describe('a crash at every storage step of a rewind', () => {
  it('the old primary, reopened after the crash, ends on the new timeline with its state, and the discarded batches were reported', async (t) => {
    const cluster = createCluster(t);
    const appP = new RecordingApp();
    const p = await cluster.primary('p', { application: appP });
    const app1 = new RecordingApp();
    const s1 = await cluster.standby('s1', { upstream: p, application: app1, listen: true });
    await receivedTo(s1, await commitMany(p, 0, 10));
    await p.checkpoint();
    await receivedTo(s1, await commitMany(p, 10, 5));
    cluster.network.partition(['s1'], ['p']);
    // Spans into the next segment: the rewind renames a whole segment and cuts one.
    const before = p.currentLsn;
    await commitMany(p, 100, 8, 9000);
    assert.notEqual(Math.floor(before / 65536), Math.floor(p.currentLsn / 65536), 'the tail spans two segments');
    const tail = texts(appP.applied).filter((x) => !texts(app1.applied).includes(x));
    assert.equal(tail.length, 8);
    await p.close({ signal: AbortSignal.abort() });
    const primary = await s1.promote();
    t.after(() => primary.close());
    cluster.network.heal();
    await commitMany(primary, 500, 5);
    const oldPrimary: MemoryStorage = await copyOf(cluster.storage('p'));

    const rejoin = async (storage: MemoryStorage, reported: string[]): Promise<{ node: Standby; app: RecordingApp }> => {
      const app = new RecordingApp();
      const node = await cluster.standby('p', { upstream: cluster.address('s1'), application: app, storage });
      node.on('rewind', (event: RewindEvent) => reported.push(...event.batches.map((b) => b.entries.map((e) => Buffer.from(e.data).toString('hex')).join('+'))));
      return { node, app };
    };
    const settled = (node: Standby): Promise<void> =>
      within(until(() => node.state === 'failed' || node.state === 'closed' || (node.timeline === 2 && (node.replayLsn ?? 0) >= primary.currentLsn)), HANG_MS, 'the rejoined node to catch up');

    // Every operation in the first crash mode (all unsynced changes lost) and the torn one;
    // every third in the others (about 25 ms a point: the sweep would take too long).
    const points = await sweepCrashPoints({ every: [0, 4], stride: 3, maxOperations: 400 }, async (point) => {
      const { what } = point;
      const storage = await copyOf(oldPrimary);
      const reported: string[] = [];
      const crashed = storage.crashAfter(point.operation, point.crash);
      const first = await rejoin(storage, reported).catch((err: unknown) => err as Error);
      const fired =
        first instanceof Error
          ? await Promise.race([crashed, new Promise<never>((_, reject) => setImmediate(() => reject(first)))])
          : await Promise.race([crashed, settled(first.node).then(() => null)]);
      if (!(first instanceof Error)) await within(first.node.close().catch(() => undefined), HANG_MS, `${what}: closing`);
      // The crash may also come while the node closes, after it caught up.
      const completed = !storage.crashed;
      if (completed) {
        if (first instanceof Error || fired !== null) throw new Error(`${what}: unreachable`);
        // No crash: the rewind completed within the operations before the crash point.
        assert.equal(first.node.failure, null, `${what}: ${first.node.failure?.message}`);
        assert.deepEqual(texts(first.app.applied), texts(app1.applied), `${what}: the state is the new primary's`);
        assert.deepEqual(reported, tail, `${what}: the discarded batches were reported`);
      }
      // After a crash, or a power loss after the closed node was rewound: it opens on the new timeline with the new primary's state.
      const survivor = completed ? storage.crash(point.crash) : await crashed;
      const second = await rejoin(survivor, reported);
      await settled(second.node);
      assert.equal(second.node.failure, null, `${what}: reopened, ${second.node.failure?.message}`);
      assert.equal(second.node.timeline, 2, `${what}: reopened, on the new timeline`);
      assert.deepEqual(texts(second.app.applied), texts(app1.applied), `${what}: reopened, the state is the new primary's`);
      for (const batch of tail) assert.ok(reported.includes(batch), `${what}: ${batch} was reported at least once`);
      assert.ok(survivor.fileNames().some((name) => name.endsWith('.diverged')), `${what}: the discarded WAL is set aside, not lost`);
      await second.node.close();
      return { completed };
    });
    reportCrashPoints(t, points);
  });
});
