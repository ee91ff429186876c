import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Primary, Snapshot } from '../../src/index.js';
import { CONTROL_FILE, readControlFile } from '../../src/node/control-file.js';
import { COPY_BYTES } from '../../src/storage/two-copy-file.js';
import { createCluster, MemoryStorage, seededRandom } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { payload, within } from '../helpers/wal.js';
import { HANG_MS, caughtUp, codeOf, commitMany, named, nextEvent, record, sameSequence } from '../helpers/standby-harness.js';

/** A recording app that checks every snapshot it is given is whole before using it. */
class CheckingApp extends RecordingApp {
  restoredSizes: number[] = [];
  override async restore(snapshot: Snapshot): Promise<void> {
    const bytes = await snapshot.bytes();
    assert.equal(bytes.length, snapshot.size);
    this.restoredSizes.push(snapshot.size);
    await super.restore(snapshot); // JSON.parse throws on a partial snapshot
  }
}

/** Commits in the background until stopped (or `limit` commits); resolves with how many it committed. */
function commitInBackground(primary: Primary, from: number, random: () => number, limit = Infinity): { stop: () => Promise<number> } {
  let stopped = false;
  const running = (async () => {
    let i = from;
    while (!stopped && i - from < limit) {
      await primary.commit([payload(i, 200 + Math.floor(random() * 3000))]);
      i++;
      if (i % 5 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    return i - from;
  })();
  return {
    stop: async () => {
      stopped = true;
      return running;
    },
  };
}

describe('Standby: interrupted base backups, reconnects and restarts', () => {
  it('a connection reset in the middle of a base backup leaves nothing behind; the standby starts again by itself', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    for (let i = 0; i < 100; i++) await primary.commit([payload(i, 16 * 1024)]);
    const storage = cluster.storage('s1');
    const app = new CheckingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app, retryMinDelayMs: 20 });
    const events = record(standby);
    let resets = 0;
    let filesAtDisconnect: string[] | null = null;
    standby.on('base-backup:progress', ({ receivedBytes, totalBytes }) => {
      if (resets === 0 && totalBytes !== null && receivedBytes < totalBytes) resets += cluster.network.reset('s1');
    });
    standby.once('primary:disconnected', () => (filesAtDisconnect = storage.fileNames()));
    await within(nextEvent(standby, 'consistent'), HANG_MS, 'the second base backup');
    assert.equal(resets, 1);
    assert.ok(filesAtDisconnect !== null);
    assert.deepEqual(
      (filesAtDisconnect as string[]).filter((n) => n.startsWith('snapshot') || n.startsWith('walship.control')),
      [],
      'no snapshot, partial snapshot or control file after the interrupted backup',
    );
    const disconnects = named(events, 'primary:disconnected');
    assert.equal(disconnects.length, 1);
    assert.equal((disconnects[0]?.['error'] as { transient?: boolean } | null)?.transient, true);
    assert.equal(named(events, 'base-backup:done').length, 1);
    assert.deepEqual(app.restoredSizes, [named(events, 'base-backup:done')[0]?.['size']]);
    await commitMany(primary, 1000, 30);
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    assert.deepEqual(
      storage.fileNames().filter((n) => n.startsWith('snapshot')),
      [`snapshot-00000001-${(await readControlFile(storage))?.checkpoint?.lsn.toString(16).toUpperCase().padStart(16, '0')}`],
    );
    await standby.close();
    await primary.close();
  });

  it('a crash of the standby at any point of its bootstrap and first streaming: reopened, it completes with the same history', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    for (let i = 0; i < 30; i++) await primary.commit([payload(i, 8 * 1024)]);
    let completedWithoutCrash = false;
    for (let n = 1; !completedWithoutCrash; n += n < 40 ? 1 : 7) {
      assert.ok(n < 1000, 'the bootstrap never completed');
      const storage = new MemoryStorage();
      const crashed = storage.crashAfter(n, { random: seededRandom(n) });
      const app = new CheckingApp();
      let survivor: MemoryStorage | null = null;
      void crashed.then((s) => (survivor = s));
      const writer = commitInBackground(primary, 10_000 * n, seededRandom(n), 30);
      const standby = await cluster.standby('s1', { upstream: primary, application: app, storage }).catch((err: unknown) => {
        assert.equal((err as { code?: string }).code, 'WAL_IO', `crash point ${n}: ${String(err)}`);
        return null;
      });
      if (standby !== null) {
        await within(
          until(() => survivor !== null || ((standby.replayLsn ?? 0) >= primary.currentLsn && standby.receiveLsn === primary.flushLsn)),
          HANG_MS,
          `crash point ${n}`,
        );
        await standby.close();
        assert.notEqual(standby.failure?.code, 'APPLY_FAILED', `crash point ${n}: ${standby.failure?.message}`);
      }
      await writer.stop();
      if (survivor === null) {
        completedWithoutCrash = true;
        survivor = storage.crash({ random: seededRandom(n) });
      }
      const after = survivor as MemoryStorage;
      const fixed = new CheckingApp();
      const again = await cluster.standby('s1', { upstream: primary, application: fixed, storage: after });
      await caughtUp(again, primary, `the reopened standby (crash point ${n})`);
      sameSequence(fixed.applied, papp.applied, `crash point ${n}`);
      assert.equal(fixed.restoredSizes.length, 1, `crash point ${n}: one restore`);
      const names = after.fileNames();
      assert.ok(!names.includes('snapshot.partial'), `crash point ${n}: ${names.join(', ')}`);
      assert.ok(names.includes(CONTROL_FILE));
      assert.equal(names.filter((f) => f.startsWith('snapshot-')).length, 1, `crash point ${n}: ${names.join(', ')}`);
      await again.close();
    }
    await primary.close();
  });

  it('connections killed again and again while commits flow: no gap, no duplicate, the same history; back-off restarts after progress', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, sync: 'none' });
    await commitMany(primary, 0, 50);
    const app = new RecordingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app, retryMinDelayMs: 2, retryMaxDelayMs: 10_000 });
    const events = record(standby);
    const random = seededRandom(42);
    let receivedAtConnect = -1;
    standby.on('primary:connected', () => (receivedAtConnect = standby.receiveLsn ?? -1));
    let kills = 0;
    // Bounded by kills, not by time: on a busy machine fewer commits find the connection streaming.
    for (let i = 0; i < 20_000 && kills < 25; i++) {
      await primary.commit([payload(i, 100 + Math.floor(random() * 4000))], { synchronousCommit: i % 4 === 0 ? 'on' : 'off' });
      if (i % 7 === 0) await new Promise((resolve) => setImmediate(resolve));
      // Kill the connection once it has carried some WAL.
      if (standby.state === 'streaming' && (standby.receiveLsn ?? -1) > receivedAtConnect && random() < 0.3) kills += cluster.network.reset('s1') > 0 ? 1 : 0;
    }
    assert.ok(kills >= 10, `only ${kills} connections were killed`);
    await primary.commit([Buffer.from('last')]);
    await caughtUp(standby, primary);
    assert.equal(standby.failure, null);
    sameSequence(app.applied, papp.applied);
    const retries = named(events, 'primary:disconnected').map((e) => e['retryInMs']);
    assert.ok(retries.length >= kills);
    assert.deepEqual(retries.filter((ms) => ms !== 2), [], 'each killed connection had carried WAL, so the back-off restarts at its minimum');
    await standby.close();
    await primary.close();
  });

  it('standby restarts mid-stream (close and reopen with a new application): the same history as the primary', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, sync: 'none' });
    await commitMany(primary, 0, 40);
    const random = seededRandom(7);
    const writer = commitInBackground(primary, 1000, random);
    let app = new CheckingApp();
    for (let round = 0; round < 8; round++) {
      app = new CheckingApp();
      const standby = await cluster.standby('s1', { upstream: primary, application: app });
      const target = primary.currentLsn;
      await within(
        until(() => (standby.replayLsn ?? 0) >= target || standby.state === 'failed'),
        HANG_MS,
        `round ${round}`,
      );
      assert.equal(standby.failure, null, `round ${round}`);
      if (round % 3 === 1) await standby.checkpoint();
      await standby.close();
      assert.equal(app.restoredSizes.length, 1, 'restored from the local snapshot (base backup or restartpoint)');
    }
    await writer.stop();
    app = new CheckingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    await standby.close();
    await primary.close();
  });

  it('keeps retrying while the primary is down and resumes when it is back', async (t) => {
    const cluster = createCluster(t);
    let papp = new RecordingApp();
    let primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 30);
    const options = { retryMinDelayMs: 5, retryMaxDelayMs: 20 };
    let app = new RecordingApp();
    let standby = await cluster.standby('s1', { upstream: cluster.address('primary'), application: app, ...options });
    await caughtUp(standby, primary);
    await within(until(() => standby.receiveLsn === primary.flushLsn), HANG_MS, 'receive');
    const history = papp.applied;
    await primary.close();
    // Restarted while its primary is down, the standby replays its local WAL by itself.
    await standby.close();
    app = new RecordingApp();
    standby = await cluster.standby('s1', { upstream: cluster.address('primary'), application: app, ...options });
    const events = record(standby);
    await within(until(() => app.applied.length === history.length), HANG_MS, 'local replay');
    sameSequence(app.applied, history);
    await within(until(() => named(events, 'primary:disconnected').length >= 4), HANG_MS, 'several failed reconnects');
    const codes = named(events, 'primary:disconnected').map((e) => (e['error'] as { code: string } | null)?.code);
    assert.ok(codes.every((c) => c === 'CONNECTION_FAILED'), codes.join(', '));
    assert.equal(standby.failure, null);
    papp = new RecordingApp();
    primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 100, 30);
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    await standby.close();
    await primary.close();
  });
  it('close() while connecting over a stalled link, and in the middle of a base backup, returns and leaves nothing half-written', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    for (let i = 0; i < 100; i++) await primary.commit([payload(i, 16 * 1024)]);
    cluster.network.stall('s1');
    const stalled = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await within(stalled.close(), HANG_MS, 'close() while connecting');
    assert.equal(stalled.state, 'closed');
    cluster.network.resume('s1');

    const storage = cluster.storage('s2');
    const app = new CheckingApp();
    const standby = await cluster.standby('s2', { upstream: primary, application: app });
    await within(nextEvent(standby, 'base-backup:progress', (p) => p.totalBytes !== null && p.receivedBytes < p.totalBytes), HANG_MS, 'progress');
    await within(standby.close(), HANG_MS, 'close() during the base backup');
    assert.equal(standby.state, 'closed');
    assert.deepEqual(app.restoredSizes, []);
    assert.deepEqual(storage.fileNames().filter((n) => n !== 'walship.lock'), [], 'no snapshot, partial or control file');
    // The primary let the interrupted backup go.
    await within(until(() => primary.replicationStatus().length === 0), HANG_MS, 'the primary to drop the session');
    await primary.close();
  });

  it('a primary whose snapshot() fails: BASE_BACKUP_FAILED, retried, nothing kept', async (t) => {
    const cluster = createCluster(t);
    const failing = {
      apply: () => undefined,
      snapshot: async (): Promise<never> => {
        throw new Error('the state is busy');
      },
    };
    const primary = await cluster.primary('primary', { application: failing });
    await commitMany(primary, 0, 5);
    const storage = cluster.storage('s1');
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), retryMinDelayMs: 5, retryMaxDelayMs: 10 });
    const events = record(standby);
    await within(until(() => named(events, 'primary:disconnected').length >= 3), HANG_MS, 'three attempts');
    for (const e of named(events, 'primary:disconnected')) assert.equal((e['error'] as { code: string }).code, 'BASE_BACKUP_FAILED');
    assert.equal(standby.failure, null);
    assert.deepEqual(storage.fileNames().filter((n) => n !== 'walship.lock'), []);
    await standby.close();
    await primary.close();
  });

  it('a damaged local snapshot or control file refuses the open (WAL_CORRUPT); a failing restore() is APPLY_FAILED; the directory stays usable', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 20);
    const storage = cluster.storage('s1');
    const first = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await caughtUp(first, primary);
    await first.close();
    const open = (app = new RecordingApp()) => cluster.standby('s1', { upstream: primary, application: app });
    const snapshot = storage.fileNames().find((n) => n.startsWith('snapshot-')) as string;
    storage.corrupt(snapshot, 100, (b) => b ^ 4);
    assert.equal(await codeOf(open()), 'WAL_CORRUPT');
    storage.corrupt(snapshot, 100, (b) => b ^ 4);
    // The control file keeps two copies: it takes both damaged to refuse the open.
    storage.corrupt(CONTROL_FILE, 20, (b) => b ^ 4);
    storage.corrupt(CONTROL_FILE, COPY_BYTES + 20, (b) => b ^ 4);
    assert.equal(await codeOf(open()), 'WAL_CORRUPT');
    storage.corrupt(CONTROL_FILE, 20, (b) => b ^ 4);
    storage.corrupt(CONTROL_FILE, COPY_BYTES + 20, (b) => b ^ 4);
    class Broken extends RecordingApp {
      override async restore(): Promise<void> {
        throw new Error('nope');
      }
    }
    assert.equal(await codeOf(open(new Broken())), 'APPLY_FAILED');
    const app = new RecordingApp();
    const again = await open(app);
    await caughtUp(again, primary);
    sameSequence(app.applied, papp.applied);
    await again.close();
    await primary.close();
  });
});
