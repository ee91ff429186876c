import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { Primary, TcpTransport, type Application, type CommittedBatch } from '../../src/index.js';
import { readControlFile } from '../../src/node/control-file.js';
import { NodeStorage } from '../../src/index.js';
import { createCluster, type ClusterOptions } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, nextEvent, receivedTo } from '../helpers/standby-harness.js';

const TCP: ClusterOptions = { transport: () => new TcpTransport(), listenAddress: () => '127.0.0.1:0' };

/** No snapshot hooks: replays the local WAL from its beginning at every open. Keeps the batches' texts. */
class TextApp implements Application {
  readonly texts: string[] = [];
  apply(batch: CommittedBatch): void {
    this.texts.push(Buffer.from(batch.entries[0]?.data ?? []).toString().replace(/\0+$/, ''));
  }
}

function batch(i: number): Buffer {
  const data = Buffer.alloc(3000);
  data.write(`c${i}`);
  return data;
}

describe('point-in-time recovery over TCP with real directories', () => {
  it('a standby stops at a restore point: shuts down there, twice, then promotes there; the promoted directory reopens with the WAL up to the target and its new timeline', async (t) => {
    const a = await tempDir();
    const b = await tempDir();
    const cluster = createCluster(t, TCP);
    try {
      const p = await cluster.primary('p', { application: new RecordingApp(), dir: a.dir });
      for (let i = 0; i < 10; i++) await p.commit([batch(i)]);
      const point = await p.createRestorePoint('before-migration');
      for (let i = 10; i < 60; i++) await p.commit([batch(i)]);
      const expected = Array.from({ length: 10 }, (_, i) => `c${i}`);

      for (let round = 0; round < 2; round++) {
        const app = new TextApp();
        const s = await cluster.standby('s', { upstream: p, application: app, dir: b.dir, recoveryTarget: { name: 'before-migration' }, recoveryTargetAction: 'shutdown' });
        if (round === 0) await receivedTo(s, point.lsn);
        await within(until(() => s.state === 'closed'), HANG_MS, `the shutdown at the restore point, round ${round}`);
        assert.deepEqual(app.texts, expected, `round ${round}: replay stopped right after the restore point`);
        assert.equal((await readControlFile(new NodeStorage(b.dir)))?.state, 'shut-down-in-recovery');
      }

      const app = new TextApp();
      const s = await cluster.standby('s', { upstream: p, application: app, dir: b.dir, recoveryTarget: { name: 'before-migration' }, recoveryTargetAction: 'promote' });
      const promoted = await within(nextEvent(s, 'promoted'), HANG_MS, 'the promotion at the restore point');
      assert.equal(promoted.switchLsn, point.lsn);
      assert.deepEqual(app.texts, expected);
      await promoted.primary.commit([Buffer.from('after promotion')]);
      await promoted.primary.close();
      const files = await readdir(b.dir);
      assert.ok(files.some((f) => f.endsWith('.diverged')), 'the WAL received past the target was set aside');
      assert.ok(files.includes('00000002.history'));

      const reopenedApp = new TextApp();
      const reopened = await Primary.open({ dir: b.dir, application: reopenedApp });
      assert.equal(reopened.timeline, 2);
      assert.deepEqual(reopenedApp.texts, [...expected, 'after promotion']);
      await reopened.close();
    } finally {
      await cluster.close();
      await a.cleanup();
      await b.cleanup();
    }
  });
});
