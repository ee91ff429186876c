import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, isWalshipError, type RestorePointRecord, type WalRecord } from '../../src/index.js';
import { MemoryStorage, createCluster } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { HANG_MS, replayedTo } from '../helpers/standby-harness.js';
import { within } from '../helpers/wal.js';

describe('Primary.createRestorePoint', () => {
  it('writes a named, timed, durable record that no application ever sees as a batch', async (t) => {
    const cluster = createCluster(t);
    const time = Date.UTC(2025, 4, 1);
    const app = new RecordingApp();
    const p = await cluster.primary('p', { application: app, clock: () => time });
    const standbyApp = new RecordingApp();
    const s = await cluster.standby('s', { upstream: p, application: standbyApp });
    await s.waitForConsistent({ timeoutMs: HANG_MS });
    await p.commit([Buffer.from('one')]);
    const point = await p.createRestorePoint('before-migration');
    assert.deepEqual(point, { lsn: p.currentLsn, time });
    assert.ok(p.flushLsn >= point.lsn, 'durable once it resolves');
    const two = await p.commit([Buffer.from('two')]);
    await replayedTo(s, two.lsn, 'the standby');
    for (const a of [app, standbyApp]) {
      assert.deepEqual(a.applied.map((b) => Buffer.from(b.entries[0] ?? '', 'hex').toString()), ['one', 'two'], 'the restore point is not a batch');
    }
    await s.close();
    await p.close();

    const reopened = await Primary.open({ storage: cluster.storage('p'), application: new RecordingApp() });
    const records: (WalRecord | RestorePointRecord)[] = [];
    for await (const r of reopened.wal.read(reopened.wal.oldestLsn, { restorePoints: true })) records.push(r);
    assert.deepEqual(
      records.map((r) => (r.kind === 'batch' ? r.kind : `${r.name}@${r.time}`)),
      ['batch', `before-migration@${time}`, 'batch'],
    );
    assert.equal(records[1]?.endLsn, point.lsn);
    await reopened.close();
  });

  it('refuses a name that is not 1 to 64 UTF-8 bytes of well-formed text with INVALID_ARGUMENT, writing nothing; a closed primary with WAL_CLOSED', async () => {
    const p = await Primary.open({ storage: new MemoryStorage(), application: new RecordingApp() });
    const before = p.currentLsn;
    for (const name of ['', 'x'.repeat(65), 'é'.repeat(33), '\ud800', 5, null]) {
      await assert.rejects(p.createRestorePoint(name as string), (err) => isWalshipError(err, 'INVALID_ARGUMENT'), JSON.stringify(name));
    }
    assert.equal(p.currentLsn, before, 'nothing appended');
    await p.createRestorePoint('x'.repeat(64));
    await p.createRestorePoint('é'.repeat(32));
    await p.close();
    await assert.rejects(p.createRestorePoint('late'), (err) => isWalshipError(err, 'WAL_CLOSED'));
  });

  it('waits for the synchronous standbys when the default commit level does', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp(), synchronousStandbyNames: 's1', synchronousCommit: 'remote_apply' });
    let resolved = false;
    const pending = p.createRestorePoint('needs-s1').then((r) => {
      resolved = true;
      return r;
    });
    // Durable locally, and still waiting.
    await within(until(() => p.flushLsn >= p.currentLsn), HANG_MS, 'the local flush');
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(resolved, false, 'not confirmed without the synchronous standby');
    const s = await cluster.standby('s1', { upstream: p, application: new RecordingApp() });
    // remote_apply counts the standby's flush: a restore point is never applied.
    const point = await within(pending, HANG_MS, 'the synchronous standby to confirm the restore point');
    assert.ok((s.receiveLsn ?? 0) >= point.lsn);
  });
});
