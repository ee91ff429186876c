import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Standby, isWalshipError, type CommittedBatch, type Snapshot, type StandbyOptions } from '../../src/index.js';
import { CONTROL_FILE, readControlFile } from '../../src/node/control-file.js';
import { nowMicros } from '../../src/replication/wal-sender.js';
import { createCluster, MemoryNetwork, MemoryStorage } from '../../src/testing/index.js';
import { GatedApp, PlainApp, RecordingApp, until } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, within } from '../helpers/wal.js';
import {
  HANG_MS,
  caughtUp,
  codeOf,
  commitMany,
  contents,
  named,
  nextEvent,
  record,
  sameSequence,
} from '../helpers/standby-harness.js';

/** Counts what happens to a recording app. */
class CountingApp extends RecordingApp {
  applies = 0;
  restoredFrom: Snapshot[] = [];
  override apply(batch: CommittedBatch): void {
    this.recordBatch(batch);
    this.applies++;
  }
  override async restore(snapshot: Snapshot): Promise<void> {
    this.restoredFrom.push(snapshot);
    await super.restore(snapshot);
  }
}

describe('Standby', () => {
  it('refuses invalid options with INVALID_OPTIONS naming the field, and creates nothing', async () => {
    const { dir, cleanup } = await tempDir();
    const net = new MemoryNetwork();
    const target = join(dir, 'standby');
    const good: StandbyOptions = {
      dir: target,
      application: new RecordingApp(),
      primary: { transport: net.transport('s'), address: 'p:1', user: 'repl', password: 'pw-1234567', applicationName: 's1' },
      statusIntervalMs: 100,
      retryMinDelayMs: 5,
      retryMaxDelayMs: 50,
    };
    const p = good.primary;
    const cases: Array<[string, unknown, RegExp]> = [
      ['an unknown option', { ...good, hotStandbyy: true }, /hotStandbyy/],
      ['an unknown primary option', { ...good, primary: { ...p, pasword: 'x' } }, /pasword/],
      ['no primary', { ...good, primary: undefined }, /primary/],
      ['no application', { ...good, application: undefined }, /application/],
      ['an application without apply', { ...good, application: { restore: async () => undefined } }, /application/],
      ['both dir and storage', { ...good, storage: new MemoryStorage() }, /dir.*storage|storage.*dir/],
      ['neither dir nor storage', { ...good, dir: undefined }, /dir.*storage|storage.*dir/],
      ['an empty address', { ...good, primary: { ...p, address: '' } }, /address/],
      ['no user', { ...good, primary: { ...p, user: undefined } }, /user/],
      ['no applicationName', { ...good, primary: { ...p, applicationName: undefined } }, /applicationName/],
      ['a transport that is not one', { ...good, primary: { ...p, transport: {} } }, /transport/],
      ['a bad slot name', { ...good, primary: { ...p, slotName: 'Bad-Name' } }, /slotName/],
      ['a bad requireAuth', { ...good, primary: { ...p, requireAuth: 'md5' } }, /requireAuth/],
      ['a string hotStandby', { ...good, hotStandby: 'yes' }, /hotStandby/],
      ['a zero statusIntervalMs', { ...good, statusIntervalMs: 0 }, /statusIntervalMs/],
      ['a fractional retryMinDelayMs', { ...good, retryMinDelayMs: 1.5 }, /retryMinDelayMs/],
      ['retryMinDelayMs above retryMaxDelayMs', { ...good, retryMinDelayMs: 100, retryMaxDelayMs: 10 }, /retryMinDelayMs/],
      ['a bad sync mode', { ...good, sync: 'always' }, /sync/],
      ['a negative connectTimeoutMs', { ...good, primary: { ...p, connectTimeoutMs: -1 } }, /connectTimeoutMs/],
      ['a storage that is not one', { ...good, dir: undefined, storage: { open() {} } }, /storage/],
    ];
    try {
      for (const [what, options, field] of cases) {
        await assert.rejects(Standby.open(options as StandbyOptions), (err: unknown) => {
          assert.ok(isWalshipError(err, 'INVALID_OPTIONS'), `${what}: ${String(err)}`);
          assert.match((err as Error).message, field, what);
          return true;
        });
        assert.equal(existsSync(target), false, `${what}: the directory was created`);
      }
      assert.equal(net.connectionCount, 0);
    } finally {
      await cleanup();
    }
  });

  it('bootstraps an empty directory from a base backup, then streams: the same applied sequence as the primary', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    // About 3 MiB of snapshot (the app's JSON history): several chunks, several progress events.
    for (let i = 0; i < 90; i++) await primary.commit([payload(i, 16 * 1024)]);
    const storage = cluster.storage('s1');
    const app = new CountingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    const events = record(standby);
    // Before the bootstrap the standby knows nothing.
    assert.equal(standby.systemId, null);
    assert.equal(standby.timeline, null);
    assert.equal(standby.receiveLsn, null);
    assert.equal(standby.replayLsn, null);
    assert.equal(standby.lastReplayTimestamp, null);
    assert.equal(standby.consistent, false);
    assert.equal(standby.readable, false);
    assert.equal(standby.state, 'connecting');
    const consistent = await within(nextEvent(standby, 'consistent'), HANG_MS, 'consistent');
    const backupLsn = primary.currentLsn;
    assert.equal(consistent.lsn, backupLsn);
    await within(nextEvent(standby, 'wal:caught-up'), HANG_MS, 'caught up');
    // On the clock the primary stamps the WAL it sends with.
    const before = nowMicros() / 1000;
    const last = await commitMany(primary, 1000, 40);
    await within(standby.waitForReplay(last), HANG_MS, 'replay of the live tail');
    const after = nowMicros() / 1000;
    sameSequence(app.applied, papp.applied);
    assert.equal(app.restores, 1);
    assert.equal(app.restoredFrom[0]?.lsn, backupLsn);
    assert.equal(app.applies, 40, 'only the batches after the base backup were applied');

    const progress = named(events, 'base-backup:progress') as Array<{ receivedBytes: number; totalBytes: number | null }>;
    const done = named(events, 'base-backup:done');
    assert.equal(done.length, 1);
    const size = done[0]?.['size'] as number;
    assert.equal(app.restoredFrom[0]?.size, size);
    assert.ok(size > 2 * 1024 * 1024, `a multi-chunk backup (${size} bytes)`);
    assert.ok(progress.length >= 3, `${progress.length} progress events`);
    for (let i = 1; i < progress.length; i++) assert.ok((progress[i]?.receivedBytes ?? 0) > (progress[i - 1]?.receivedBytes ?? 0), 'monotone progress');
    assert.equal(progress.at(-1)?.receivedBytes, size);
    for (const p of progress) assert.ok(p.totalBytes === size || p.totalBytes === null);
    assert.equal(done[0]?.['lsn'], backupLsn);
    const order = events.map((e) => (e.name === 'state:change' ? `state:${String(e.payload['state'])}` : e.name)).filter((n, i, all) => n !== all[i - 1]);
    assert.deepEqual(order.slice(0, 6), ['primary:connected', 'state:base-backup', 'base-backup:progress', 'base-backup:done', 'consistent', 'state:streaming']);

    assert.equal(standby.state, 'streaming');
    assert.equal(standby.systemId, primary.systemId);
    assert.equal(standby.timeline, primary.timeline);
    assert.equal(standby.replayLsn, primary.currentLsn);
    await until(() => standby.receiveLsn === primary.flushLsn);
    assert.ok(standby.consistent && standby.readable);
    const at = (standby.lastReplayTimestamp as Date | null)?.getTime() ?? null;
    assert.ok(at !== null && at >= Math.floor(before) && at <= after, 'lastReplayTimestamp is when the primary sent the last batch replayed');
    const control = await readControlFile(storage);
    assert.deepEqual(control?.checkpoint, { lsn: backupLsn, snapshot: true });
    assert.equal(control?.systemId, primary.systemId);
    assert.deepEqual(named(events, 'primary:disconnected'), []);
    await standby.close();
    assert.equal(standby.state, 'closed');
    assert.equal(standby.readable, false);
    await primary.close();
  });

  it('without a restore hook, streams the WAL from its beginning and applies all of it', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 300, 900);
    const app = new PlainApp();
    const storage = cluster.storage('s1');
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    const events = record(standby);
    await caughtUp(standby, primary);
    await commitMany(primary, 300, 50);
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    assert.deepEqual(named(events, 'base-backup:progress'), []);
    assert.equal(named(events, 'consistent').length, 1);
    assert.ok(standby.readable);
    assert.ok(!storage.fileNames().some((n) => n.startsWith('snapshot')));
    await standby.close();
    await primary.close();
  });

  it('without a restore hook, fails with BASE_BACKUP_REQUIRED once the primary removed its early WAL', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, recycleSegments: 0 });
    await commitMany(primary, 0, 300, 900);
    await primary.checkpoint();
    assert.ok(primary.wal.oldestLsn > 65536, 'the primary removed its first segments');
    const standby = await cluster.standby('s1', { upstream: primary, application: new PlainApp() });
    const events = record(standby);
    const failed = await within(nextEvent(standby, 'failed'), HANG_MS, 'the failure');
    assert.equal(failed.error.code, 'BASE_BACKUP_REQUIRED');
    assert.equal(standby.state, 'failed');
    assert.equal(standby.failure?.code, 'BASE_BACKUP_REQUIRED');
    assert.deepEqual(
      named(events, 'primary:disconnected').map((e) => [(e['error'] as { code: string }).code, e['retryInMs']]),
      [['BASE_BACKUP_REQUIRED', null]],
    );
    assert.equal(await codeOf(standby.waitForReplay(primary.currentLsn)), 'BASE_BACKUP_REQUIRED');
    await standby.close();
    // The directory is left as it was: reopened with a restore hook, it bootstraps from a base backup.
    const app = new RecordingApp();
    const again = await cluster.standby('s1', { upstream: primary, application: app });
    await caughtUp(again, primary, 'the bootstrap after fixing the application');
    sameSequence(app.applied, papp.applied);
    await again.close();
    await primary.close();
  });

  it('seeded by primary.baseBackup() files: starts from the local snapshot without asking for a backup, and catches up', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 120);
    const storage = cluster.storage('s1');
    const seeded = await primary.baseBackup({ storage });
    assert.equal(seeded.lsn, primary.currentLsn);
    await commitMany(primary, 120, 80);
    const app = new CountingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    const events = record(standby);
    // Restored from the local snapshot while opening, before any connection.
    assert.equal(app.restores, 1);
    assert.equal(app.restoredFrom[0]?.lsn, seeded.lsn);
    assert.equal(standby.systemId, primary.systemId);
    assert.equal(standby.replayLsn, seeded.lsn);
    assert.equal(standby.consistent, true);
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    assert.equal(app.applies, 80);
    assert.deepEqual(named(events, 'base-backup:progress'), []);
    assert.deepEqual(named(events, 'base-backup:done'), []);
    assert.ok(!events.some((e) => e.name === 'state:change' && e.payload['state'] === 'base-backup'));
    await standby.close();
    await primary.close();
  });

  it('a commit on a standby is READ_ONLY, before and after the bootstrap and after close', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    assert.equal(await codeOf(standby.commit([Buffer.from('x')])), 'READ_ONLY');
    await within(nextEvent(standby, 'consistent'), HANG_MS, 'consistent');
    assert.equal(await codeOf(standby.commit([Buffer.from('x')])), 'READ_ONLY');
    await standby.close();
    assert.equal(await codeOf(standby.commit([Buffer.from('x')])), 'READ_ONLY');
    await primary.close();
  });

  it('close() is idempotent, shared by concurrent callers, and later waits are WAL_CLOSED', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    const lsn = await commitMany(primary, 0, 5);
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await within(standby.waitForReplay(lsn), HANG_MS, 'replay');
    const waiting = standby.waitForReplay(lsn + 1_000_000);
    const a = standby.close();
    const b = standby.close();
    assert.equal(a, b);
    await a;
    assert.equal(await codeOf(waiting), 'WAL_CLOSED');
    assert.equal(await codeOf(standby.waitForReplay(lsn + 1)), 'WAL_CLOSED');
    await standby[Symbol.asyncDispose]();
    assert.equal(standby.state, 'closed');
    await primary.close();
  });

  it('a standby pointed at another cluster fails with SYSTEM_ID_MISMATCH and writes nothing', async (t) => {
    const cluster = createCluster(t);
    const a = await cluster.primary('a', { application: new RecordingApp() });
    const b = await cluster.primary('b', { application: new RecordingApp() });
    await commitMany(a, 0, 30);
    await commitMany(b, 0, 60);
    const storage = cluster.storage('s1');
    const first = await cluster.standby('s1', { upstream: a, application: new RecordingApp() });
    await caughtUp(first, a);
    await until(() => first.receiveLsn === a.flushLsn);
    await first.close();
    const before = contents(storage);

    const standby = await cluster.standby('s1', { upstream: b, application: new RecordingApp() });
    const events = record(standby);
    const receiveLsn = standby.receiveLsn;
    const replayLsn = standby.replayLsn;
    const failed = await within(nextEvent(standby, 'failed'), HANG_MS, 'the failure');
    assert.equal(failed.error.code, 'SYSTEM_ID_MISMATCH');
    assert.match(failed.error.message, new RegExp(b.systemId));
    assert.equal(standby.state, 'failed');
    assert.equal(standby.systemId, a.systemId);
    assert.equal(standby.receiveLsn, receiveLsn);
    assert.equal(standby.replayLsn, replayLsn);
    assert.deepEqual(
      named(events, 'primary:disconnected').map((e) => [(e['error'] as { code: string }).code, e['retryInMs']]),
      [['SYSTEM_ID_MISMATCH', null]],
    );
    assert.equal(await codeOf(standby.waitForReplay(b.currentLsn)), 'SYSTEM_ID_MISMATCH');
    await standby.close();
    assert.deepEqual(contents(storage), before, 'the files are unchanged');
    await a.close();
    await b.close();
  });

  it('a wrong password: AUTH_FAILED disconnects, retried with a doubling delay up to the cap; close() stops it', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    let authFailures = 0;
    primary.on('auth:failed', () => authFailures++);
    const storage = cluster.storage('s1');
    const standby = await cluster.standby('s1', {
      upstream: primary,
      application: new RecordingApp(),
      retryMinDelayMs: 10,
      retryMaxDelayMs: 60,
      connection: { password: 'wrong-password' },
    });
    const events = record(standby);
    await within(until(() => named(events, 'primary:disconnected').length >= 6), HANG_MS, 'six failed attempts');
    const disconnects = named(events, 'primary:disconnected').slice(0, 6);
    assert.deepEqual(
      disconnects.map((e) => (e['error'] as { code: string } | null)?.code),
      Array(6).fill('AUTH_FAILED'),
    );
    assert.deepEqual(disconnects.map((e) => e['retryInMs']), [10, 20, 40, 60, 60, 60]);
    assert.ok(!(disconnects[0]?.['error'] as Error).message.includes('wrong-password'), 'the password is never reported');
    assert.ok(authFailures >= 6);
    assert.ok(['connecting', 'disconnected'].includes(standby.state));
    assert.equal(standby.failure, null);
    await standby.close();
    const seen = events.length;
    const failures = authFailures;
    assert.equal(standby.state, 'closed');
    // Nothing runs after close: no more attempts, even after several retry periods.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(events.length, seen);
    assert.equal(authFailures, failures);
    assert.ok(!storage.fileNames().includes(CONTROL_FILE), 'an unauthenticated standby wrote nothing');
    await primary.close();
  });

  it('hot standby: waitForReplay resolves once the batch is applied; TIMEOUT; ABORTED', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    const first = await commitMany(primary, 0, 10);
    const app = new GatedApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    await within(standby.waitForReplay(first), HANG_MS, 'the first batches');
    assert.ok(standby.readable);
    await standby.waitForReplay(first); // already reached: resolves at once
    await standby.waitForReplay(0);

    let open!: () => void;
    app.gate = new Promise((resolve) => (open = resolve));
    const { lsn } = await primary.commit([Buffer.from('read your writes')]);
    let resolved = false;
    const waiting = standby.waitForReplay(lsn).then(() => {
      resolved = true;
      assert.equal(app.lastLsn, lsn, 'the batch is applied when the wait resolves');
    });
    await until(() => (standby.receiveLsn ?? 0) >= lsn);
    assert.equal(await codeOf(standby.waitForReplay(lsn, { timeoutMs: 20 })), 'TIMEOUT');
    const abort = new AbortController();
    abort.abort(new Error('the client went away'));
    assert.equal(await codeOf(standby.waitForReplay(lsn, { signal: abort.signal })), 'ABORTED');
    const later = new AbortController();
    const aborting = standby.waitForReplay(lsn, { signal: later.signal });
    later.abort();
    assert.equal(await codeOf(aborting), 'ABORTED');
    assert.equal(resolved, false);
    assert.ok((standby.replayLsn ?? 0) < lsn);
    app.gate = null;
    open();
    await within(waiting, HANG_MS, 'the wait');
    assert.equal(standby.replayLsn, lsn);
    assert.equal(await codeOf(standby.waitForReplay(-1)), 'INVALID_LSN');
    await standby.close();
    await primary.close();
  });

  it('warm standby: replays but serves nothing — no consistent event, HOT_STANDBY_OFF, not readable', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 20);
    const app = new RecordingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app, hotStandby: false });
    const events = record(standby);
    await commitMany(primary, 20, 20);
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    assert.deepEqual(named(events, 'consistent'), []);
    assert.equal(standby.readable, false);
    assert.equal(await codeOf(standby.waitForReplay(primary.currentLsn)), 'HOT_STANDBY_OFF');
    assert.equal(await codeOf(standby.commit([Buffer.from('x')])), 'READ_ONLY');
    await standby.close();
    await primary.close();
  });

  it('an apply that throws stops replay at that batch (apply:error, APPLY_FAILED, failed); reopened with a fixed app, the batch is applied', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 10);
    const app = new RecordingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    const events = record(standby);
    await caughtUp(standby, primary);
    const good = await commitMany(primary, 10, 5);
    const { lsn: bad } = await primary.commit([Buffer.from('poison')]);
    app.failAt = bad;
    await commitMany(primary, 100, 5);
    const error = (await within(nextEvent(standby, 'apply:error'), HANG_MS, 'apply:error')).error;
    assert.equal(error.code, 'APPLY_FAILED');
    assert.match(String((error.cause as Error).message), /refusing the batch/);
    await until(() => standby.state === 'failed');
    assert.equal(standby.failure?.code, 'APPLY_FAILED');
    assert.equal(named(events, 'failed').length, 1);
    assert.equal(standby.replayLsn, good, 'replay stopped right before the failing batch');
    assert.equal(app.lastLsn, good);
    assert.equal(standby.readable, false);
    assert.equal(await codeOf(standby.waitForReplay(bad)), 'APPLY_FAILED');
    await standby.close();

    const fixed = new RecordingApp();
    const again = await cluster.standby('s1', { upstream: primary, application: fixed });
    await caughtUp(again, primary);
    sameSequence(fixed.applied, papp.applied);
    assert.ok(fixed.applied.some((b) => b.lsn === bad), 'the failed batch was applied after the restart');
    await again.close();
    await primary.close();
  });

  it('a restore() that throws during the bootstrap stops the standby with APPLY_FAILED instead of fetching backups forever', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    await commitMany(primary, 0, 10);
    let backups = 0;
    primary.on('sender:state', ({ state }) => (backups += state === 'backup' ? 1 : 0));
    class BrokenRestore extends RecordingApp {
      override async restore(): Promise<void> {
        throw new Error('cannot load this state');
      }
    }
    const standby = await cluster.standby('s1', { upstream: primary, application: new BrokenRestore() });
    const failed = await within(nextEvent(standby, 'failed'), HANG_MS, 'the failure');
    assert.equal(failed.error.code, 'APPLY_FAILED');
    assert.match(failed.error.message, /restore\(\)/);
    assert.equal((failed.error.cause as Error).message, 'cannot load this state');
    assert.equal(standby.state, 'failed');
    assert.equal(backups, 1);
    await standby.close();
    // The backup is kept: reopened with a working application, the standby starts from it.
    const app = new RecordingApp();
    const again = await cluster.standby('s1', { upstream: primary, application: app });
    assert.equal(app.restores, 1);
    await caughtUp(again, primary);
    assert.equal(backups, 1);
    await again.close();
    await primary.close();
  });

  it('two standbys opened on one new directory: one bootstraps it, the other stops with WAL_LOCKED', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    for (let i = 0; i < 40; i++) await primary.commit([payload(i, 16 * 1024)]);
    const storage = cluster.storage('s1');
    const apps = [new RecordingApp(), new RecordingApp()];
    // Both open while the primary cannot be reached yet, then race to bootstrap the directory.
    cluster.network.stall('s1');
    const standbys: Standby[] = [];
    for (const app of apps) standbys.push(await cluster.standby('s1', { upstream: primary, application: app }));
    cluster.network.resume('s1');
    await within(until(() => standbys.every((s) => s.state === 'failed' || (s.replayLsn ?? 0) >= primary.currentLsn)), HANG_MS, 'both to settle');
    const states = standbys.map((s) => s.failure?.code ?? s.state).sort();
    assert.deepEqual(states, ['WAL_LOCKED', 'streaming']);
    const winner = standbys.findIndex((s) => s.failure === null);
    sameSequence((apps[winner] as RecordingApp).applied, papp.applied);
    assert.equal(storage.fileNames().filter((n) => n.startsWith('snapshot')).length, 1);
    // While the winner runs, a third open of the directory is refused at once.
    assert.equal(await codeOf(cluster.standby('s1', { upstream: primary, application: new RecordingApp() })), 'WAL_LOCKED');
    await Promise.all(standbys.map((s) => s.close()));
    const app = new RecordingApp();
    const again = await cluster.standby('s1', { upstream: primary, application: app });
    await caughtUp(again, primary);
    sameSequence(app.applied, papp.applied);
    await again.close();
    await primary.close();
  });

  it('checkpoint() (a restartpoint) stores a snapshot; a restart restores it and replays only what follows', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, recycleSegments: 0 });
    await commitMany(primary, 0, 20);
    const storage = cluster.storage('s1');
    const app = new RecordingApp();
    // No spare files after the burst: the count of segment files shows what was removed.
    const standby = await cluster.standby('s1', { upstream: primary, application: app, maxRecycleSegments: 4 });
    await caughtUp(standby, primary);
    const backup = (await readControlFile(storage))?.checkpoint?.lsn;
    await commitMany(primary, 20, 300, 900);
    await caughtUp(standby, primary);
    await until(() => standby.receiveLsn === primary.flushLsn);
    const segmentsBefore = storage.fileNames().filter((n) => /^[0-9A-F]{24}$/.test(n));
    assert.equal(await codeOf(standby.checkpoint(primary.currentLsn + 1000)), 'INVALID_ARGUMENT');
    const restartpoint = await standby.checkpoint();
    assert.deepEqual(restartpoint, { lsn: primary.currentLsn, snapshot: true });
    assert.deepEqual((await readControlFile(storage))?.checkpoint, restartpoint);
    const segmentsAfter = storage.fileNames().filter((n) => /^[0-9A-F]{24}$/.test(n));
    assert.ok(segmentsAfter.length < segmentsBefore.length, `old WAL removed (${segmentsBefore.length} → ${segmentsAfter.length})`);
    const snapshots = storage.fileNames().filter((n) => n.startsWith('snapshot'));
    assert.equal(snapshots.length, 1, `only the restartpoint's snapshot is kept: ${snapshots.join(', ')}`);
    assert.notEqual(backup, restartpoint.lsn);
    await commitMany(primary, 400, 25);
    await caughtUp(standby, primary);
    await standby.close();

    const restarted = new CountingApp();
    const again = await cluster.standby('s1', { upstream: primary, application: restarted });
    assert.equal(restarted.restoredFrom[0]?.lsn, restartpoint.lsn);
    await caughtUp(again, primary);
    sameSequence(restarted.applied, papp.applied);
    assert.equal(restarted.applies, 25, 'only the batches after the restartpoint were replayed');
    await again.close();
    await primary.close();
  });

  it('checkpoint() is refused before the bootstrap, without a snapshot hook, and after close', async (t) => {
    const cluster = createCluster(t);
    const nowhere = await cluster.standby('s0', { upstream: 'nowhere:1', application: new RecordingApp() });
    assert.equal(await codeOf(nowhere.checkpoint()), 'INVALID_ARGUMENT');
    await nowhere.close();

    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    const lsn = await commitMany(primary, 0, 5);
    const plain = await cluster.standby('s1', { upstream: primary, application: new PlainApp() });
    await within(plain.waitForReplay(lsn), HANG_MS, 'replay');
    assert.equal(await codeOf(plain.checkpoint()), 'INVALID_ARGUMENT');
    assert.deepEqual(await plain.checkpoint(lsn), { lsn, snapshot: false });
    await plain.close();
    assert.equal(await codeOf(plain.checkpoint(lsn)), 'WAL_CLOSED');
    await primary.close();
  });
});
