import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalshipError, type Standby, type Storage } from '../../src/index.js';
import { CONTROL_FILE, readControlFile } from '../../src/node/control-file.js';
import { MessageStream } from '../../src/protocol/message-stream.js';
import { nowMicros } from '../../src/replication/wal-sender.js';
import { createCluster, type MemoryStorage } from '../../src/testing/index.js';
import { GatedApp, PlainApp, RecordingApp, until } from '../helpers/apps.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, caughtUp, commitMany, named, nextEvent, record, sameSequence, type Recorded } from '../helpers/standby-harness.js';

/** A promise the test opens by hand. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** `mem` seen through a Storage whose methods the test may replace. */
function wrapped(mem: MemoryStorage): Storage {
  const storage = Object.create(mem) as Storage;
  for (const k of ['prepare', 'list', 'open', 'rename', 'remove', 'syncDirectory', 'lock'] as const) {
    (storage as unknown as Record<string, unknown>)[k] = (mem[k] as (...args: unknown[]) => unknown).bind(mem);
  }
  return storage;
}

const FOREVER = 2_147_483_647;

/** The code the standby stopped with, or 'retried' once it has disconnected twice. */
async function stoppedOrRetried(standby: Standby, events: Recorded[]): Promise<string> {
  await until(() => standby.failure !== null || named(events, 'primary:disconnected').length >= 2);
  return standby.failure?.code ?? 'retried';
}

describe('Standby: timeouts, checkpoints, bootstrap recovery, permanent errors, monitoring', () => {
  it('wal_receiver_timeout: a half-open link to a quiet primary ends with a transient TIMEOUT; once the link works again the standby reconnects and catches up', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, walSenderTimeoutMs: 10_000 });
    const first = await commitMany(primary, 0, 10);
    const app = new RecordingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app, walReceiverTimeoutMs: 1000 });
    const events = record(standby);
    await within(standby.waitForReplay(first), HANG_MS, 'replay');
    assert.equal(standby.state, 'streaming');
    // Nothing goes through any more, and nothing says so: no end, no reset.
    cluster.network.stall('s1');
    const disconnected = await within(nextEvent(standby, 'primary:disconnected'), HANG_MS, 'the standby to notice the dead link');
    assert.equal(disconnected.error?.code, 'TIMEOUT');
    assert.equal(disconnected.error?.transient, true);
    assert.notEqual(disconnected.retryInMs, null);
    assert.equal(standby.failure, null);
    assert.ok(['connecting', 'disconnected'].includes(standby.state), standby.state);
    await commitMany(primary, 10, 10);
    cluster.network.resume('s1');
    await caughtUp(standby, primary, 'the catch-up after the link came back');
    sameSequence(app.applied, papp.applied);
    assert.equal(standby.state, 'streaming');
    assert.ok(named(events, 'primary:connected').length >= 1);
    await standby.close();
    await primary.close();
  });

  it('overlapping checkpoints run one at a time: the control file never goes back to an older one, and the standby reopens', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp, recycleSegments: 0 });
    const mem = cluster.storage('s1');
    const storage = wrapped(mem);
    // A slow disk, on demand: the next control-file write stops at its first step until released.
    let hold: { promise: Promise<void>; open: () => void } | null = null;
    let held = false;
    storage.open = async (name, options) => {
      if (hold !== null && name === CONTROL_FILE && options?.readOnly !== true) {
        const h = hold;
        hold = null;
        held = true;
        await h.promise;
      }
      return mem.open(name, options);
    };
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), storage, recycleSegments: 0 });
    let last = await commitMany(primary, 0, 40, 4000);
    await within(standby.waitForReplay(last), HANG_MS, 'replay');
    const slow = gate();
    hold = slow;
    const earlier = standby.checkpoint(); // a snapshot here; its control-file write is held
    await within(until(() => held), HANG_MS, 'the first checkpoint to reach its control-file write');
    last = await commitMany(primary, 40, 60, 4000);
    await within(standby.waitForReplay(last), HANG_MS, 'replay');
    const later = standby.checkpoint(last);
    slow.open();
    const [a, b] = await within(Promise.all([earlier, later]), HANG_MS, 'both checkpoints');
    assert.equal(a.snapshot, true);
    assert.ok(a.lsn < last);
    assert.deepEqual(b, { lsn: last, snapshot: false });
    assert.deepEqual((await readControlFile(mem))?.checkpoint, b, 'the control file holds the later checkpoint');
    await standby.close();
    const app = new RecordingApp();
    const again = await cluster.standby('s1', { upstream: primary, application: app });
    await commitMany(primary, 100, 5);
    await caughtUp(again, primary, 'the reopened standby');
    await again.close();
    await primary.close();
  });

  it('close() waits for a checkpoint in progress before it closes the WAL', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    const mem = cluster.storage('s1');
    const storage = wrapped(mem);
    let hold: { promise: Promise<void>; open: () => void } | null = null;
    let held = false;
    storage.open = async (name, options) => {
      if (hold !== null && name === CONTROL_FILE && options?.readOnly !== true) {
        const h = hold;
        hold = null;
        held = true;
        await h.promise;
      }
      return mem.open(name, options);
    };
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), storage });
    const last = await commitMany(primary, 0, 20);
    await within(standby.waitForReplay(last), HANG_MS, 'replay');
    const slow = gate();
    hold = slow;
    const order: string[] = [];
    const checkpoint = standby.checkpoint().then(
      (c) => order.push(`checkpoint ${c.lsn}`),
      (err: unknown) => order.push(`checkpoint failed: ${String(err)}`),
    );
    await within(until(() => held), HANG_MS, 'the checkpoint to reach its control-file write');
    const closing = standby.close().then(() => order.push('closed'));
    // Every chance for close() to finish early: it must not.
    for (let i = 0; i < 200; i++) await new Promise((resolve) => setImmediate(resolve));
    order.push('released');
    slow.open();
    await within(Promise.all([checkpoint, closing]), HANG_MS, 'the checkpoint and close()');
    assert.deepEqual(order, ['released', `checkpoint ${last}`, 'closed']);
    assert.deepEqual((await readControlFile(mem))?.checkpoint, { lsn: last, snapshot: true });
    await primary.close();
  });

  it('a bootstrap that wrote its control file and then failed on a transient error is finished on the next attempt, not refused as WAL_LOCKED', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 30);
    const mem = cluster.storage('s1');
    const storage = wrapped(mem);
    // The first directory listing after the control file exists (the bootstrap's clean-up) fails once.
    let failed = false;
    storage.list = async () => {
      if (!failed && mem.fileNames().includes(CONTROL_FILE)) {
        failed = true;
        throw Object.assign(new Error('EIO: i/o error, scandir (injected)'), { code: 'EIO' });
      }
      return mem.list();
    };
    const app = new RecordingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app, storage });
    const events = record(standby);
    await caughtUp(standby, primary, 'the standby to get going after the failure');
    assert.ok(failed, 'the failure was injected');
    const disconnects = named(events, 'primary:disconnected').map((e) => (e['error'] as WalshipError | null)?.code);
    assert.deepEqual(disconnects, ['WAL_IO']);
    assert.equal(standby.failure, null);
    assert.equal(named(events, 'base-backup:done').length, 1, 'one base backup');
    assert.equal(app.restores, 1);
    await commitMany(primary, 30, 10);
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    await standby.close();
    await primary.close();
  });

  it("a primary whose application has no snapshot() hook: a standby with restore() streams the primary's WAL from its beginning instead of retrying forever", async (t) => {
    const cluster = createCluster(t);
    const papp = new PlainApp();
    const primary = await cluster.primary('primary', { application: papp });
    await commitMany(primary, 0, 50);
    const storage = cluster.storage('s1');
    const app = new RecordingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app, retryMinDelayMs: 5, retryMaxDelayMs: 10 });
    const events = record(standby);
    await caughtUp(standby, primary, 'the bootstrap from the WAL');
    await commitMany(primary, 50, 20);
    await caughtUp(standby, primary);
    sameSequence(app.applied, papp.applied);
    assert.equal(app.restores, 0);
    assert.deepEqual(named(events, 'base-backup:done'), []);
    assert.deepEqual(named(events, 'primary:disconnected'), [], 'the fallback is not a failure');
    assert.equal((await readControlFile(storage))?.checkpoint, null);
    await standby.close();
    await primary.close();
  });

  it('… and when that primary no longer has its early WAL: BASE_BACKUP_REQUIRED, for good, nothing kept', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new PlainApp(), recycleSegments: 0 });
    const last = await commitMany(primary, 0, 300, 900);
    await primary.checkpoint(last);
    assert.ok(primary.wal.oldestLsn > 65536, 'the primary removed its first segments');
    const storage = cluster.storage('s1');
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), retryMinDelayMs: 5, retryMaxDelayMs: 10 });
    const events = record(standby);
    const settled = await within(stoppedOrRetried(standby, events), HANG_MS, 'the standby to stop or retry');
    assert.equal(settled, 'BASE_BACKUP_REQUIRED');
    assert.match(standby.failure?.message ?? '', /snapshot\(\) hook/);
    await standby.close();
    assert.deepEqual(storage.fileNames().filter((n) => n.startsWith('snapshot') || n.startsWith('walship.control')), []);
    await primary.close();
  });

  it('a primary that speaks another protocol version: PROTOCOL_VERSION stops the standby at once', async (t) => {
    const cluster = createCluster(t);
    let connections = 0;
    const listener = await cluster.transport('primary').listen(cluster.address('primary'), (stream) => {
      connections++;
      const conn = new MessageStream(stream, 'server');
      void conn.next().then(
        () => conn.fail(new WalshipError('PROTOCOL_VERSION', 'the client speaks replication protocol 1.0; this server speaks 2.0')),
        () => conn.destroy(),
      );
    });
    const standby = await cluster.standby('s1', { upstream: cluster.address('primary'), application: new RecordingApp() });
    const events = record(standby);
    const settled = await within(stoppedOrRetried(standby, events), HANG_MS, 'the standby to stop or retry');
    assert.equal(settled, 'PROTOCOL_VERSION');
    assert.equal(standby.state, 'failed');
    assert.equal(connections, 1);
    await standby.close();
    await listener.close();
  });

  it('a restarted hot standby: `consistent` reaches a listener attached right after `await Standby.open()`', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    const last = await commitMany(primary, 0, 20);
    const first = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await within(first.waitForReplay(last), HANG_MS, 'replay');
    await first.close();

    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    const seen: number[] = [];
    standby.on('consistent', ({ lsn }) => seen.push(lsn));
    assert.equal(standby.consistent, true, 'consistent already (restored from the local snapshot)');
    await within(standby.waitForConsistent(), HANG_MS, 'waitForConsistent');
    await within(until(() => seen.length > 0), HANG_MS, 'the consistent event');
    await commitMany(primary, 20, 5);
    await caughtUp(standby, primary);
    assert.deepEqual(seen, [last], 'once, at the restored position');
    await standby.close();
    await primary.close();
  });

  it('lastReplayTimestamp is the commit time of the batch replayed, not when the standby replayed it; a restart finds it again in the local WAL', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    await commitMany(primary, 0, 10);
    const app = new GatedApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    await caughtUp(standby, primary);
    const slow = gate();
    app.gate = slow.promise;
    const { lsn, commitTime } = await primary.commit([Buffer.from('late to apply')]);
    await within(until(() => (standby.receiveLsn ?? 0) >= lsn), HANG_MS, 'receipt');
    const received = nowMicros();
    // Replay happens clearly later than the commit.
    await within(until(() => nowMicros() > received + 200_000), HANG_MS, 'the clock to move');
    app.gate = null;
    slow.open();
    await within(standby.waitForReplay(lsn), HANG_MS, 'replay');
    assert.equal(standby.lastReplayTimestamp?.getTime(), commitTime, 'the commit time, as the WAL carries it');
    await standby.close();

    // Restarted without a snapshot, a standby replays its whole local WAL: the commit times are in it.
    const plain = await cluster.standby('s2', { upstream: primary, application: new PlainApp() });
    await caughtUp(plain, primary);
    await plain.close();
    const restarted = await cluster.standby('s2', { upstream: primary, application: new PlainApp() });
    await caughtUp(restarted, primary, 'the local replay');
    assert.equal(restarted.lastReplayTimestamp?.getTime(), commitTime, 'known from the local WAL');
    const next = await primary.commit([Buffer.from('after the restart')]);
    await caughtUp(restarted, primary);
    assert.equal((restarted.lastReplayTimestamp as Date | null)?.getTime(), next.commitTime);
    await restarted.close();
    await primary.close();
  });

  it('tells the primary its apply position as soon as replay catches up, without waiting for the status interval', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), walSenderTimeoutMs: FOREVER });
    await commitMany(primary, 0, 5);
    const app = new GatedApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app, statusIntervalMs: FOREVER, walReceiverTimeoutMs: FOREVER });
    await caughtUp(standby, primary);
    const slow = gate();
    app.gate = slow.promise;
    const { lsn } = await primary.commit([Buffer.from('apply me')]);
    const row = () => primary.replicationStatus()[0];
    // The report after the flush: flushed, not applied yet.
    await within(until(() => (row()?.flushLsn ?? 0) >= lsn), HANG_MS, 'the flush report');
    assert.ok((row()?.replayLsn ?? 0) < lsn);
    app.gate = null;
    slow.open();
    await within(standby.waitForReplay(lsn), HANG_MS, 'replay');
    await within(until(() => row()?.replayLsn === lsn), HANG_MS, 'the primary to learn the apply position');
    await standby.close();
    await primary.close();
  });
});
