import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { NodeStorage, TcpTransport } from '../../src/index.js';
import { readControlFile } from '../../src/node/control-file.js';
import { createCluster, type ClusterOptions } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, within } from '../helpers/wal.js';
import { HANG_MS, caughtUp, codeOf, commitMany, named, nextEvent, record, sameSequence } from '../helpers/standby-harness.js';

const TCP: ClusterOptions = { transport: () => new TcpTransport(), listenAddress: () => '127.0.0.1:0' };

describe('Standby over TcpTransport with real directories', () => {
  it('bootstraps an empty directory, streams, survives restarts mid-stream, and keeps the same history as the primary', async (t) => {
    const a = await tempDir();
    const b = await tempDir();
    const cluster = createCluster(t, TCP);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, dir: a.dir });
    try {
      for (let i = 0; i < 40; i++) await primary.commit([payload(i, 30_000)]);
      let app = new RecordingApp();
      let standby = await cluster.standby('s1', { upstream: primary, application: app, dir: b.dir });
      const events = record(standby);
      await within(nextEvent(standby, 'consistent'), HANG_MS, 'consistent');
      assert.ok(named(events, 'base-backup:progress').length >= 2, 'a multi-chunk base backup');
      assert.equal(app.restores, 1);
      for (let round = 0; round < 3; round++) {
        const before = papp.applied.length;
        const committing = commitMany(primary, 1000 * (round + 1), 60, 3000);
        // Closed while batches are still flowing.
        await within(until(() => app.applied.length > before + 10), HANG_MS, 'some of the new batches');
        await standby.close();
        await committing;
        app = new RecordingApp();
        standby = await cluster.standby('s1', { upstream: primary, application: app, dir: b.dir });
        assert.equal(app.restores, 1, 'restored from the local copy of the base backup');
      }
      await caughtUp(standby, primary);
      sameSequence(app.applied, papp.applied);
      assert.equal(standby.systemId, primary.systemId);
      assert.equal(standby.state, 'streaming');
      await within(until(() => standby.receiveLsn === primary.flushLsn), HANG_MS, 'receive');
      // The primary sees it streaming and reports its positions.
      await within(until(() => primary.replicationStatus()[0]?.replayLsn === primary.currentLsn), HANG_MS, 'the standby to report its replay position');
      const [row] = primary.replicationStatus();
      assert.equal(row?.applicationName, 's1');
      assert.equal(row?.state, 'streaming');
      await standby.close();
      const names = await readdir(b.dir);
      assert.ok(!names.includes('snapshot.partial'));
      assert.equal(names.filter((n) => n.startsWith('snapshot-')).length, 1);
    } finally {
      await cluster.close();
      await a.cleanup();
      await b.cleanup();
    }
  });

  it('seeded with primary.baseBackup({ dir }): starts from the copied files and catches up', async (t) => {
    const a = await tempDir();
    const b = await tempDir();
    const cluster = createCluster(t, TCP);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, dir: a.dir });
    try {
      await commitMany(primary, 0, 50);
      const seeded = await primary.baseBackup({ dir: b.dir });
      assert.deepEqual((await readControlFile(new NodeStorage(b.dir)))?.checkpoint, { lsn: seeded.lsn, snapshot: true });
      await commitMany(primary, 50, 50);
      const app = new RecordingApp();
      const standby = await cluster.standby('s1', { upstream: primary, application: app, dir: b.dir });
      const events = record(standby);
      assert.equal(app.restores, 1);
      assert.equal(standby.replayLsn, seeded.lsn);
      await caughtUp(standby, primary);
      sameSequence(app.applied, papp.applied);
      assert.deepEqual(named(events, 'base-backup:done'), []);
      // A second standby cannot open the same directory while the first has it.
      assert.equal(await codeOf(cluster.standby('s2', { upstream: primary, application: new RecordingApp(), dir: b.dir })), 'WAL_LOCKED');
      await standby.close();
    } finally {
      await cluster.close();
      await a.cleanup();
      await b.cleanup();
    }
  });
});
