import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { isWalshipError, Primary, TcpTransport, WalLog, type Application, type Lsn, type Transport } from '../../src/index.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { MemoryNetwork, MemoryStorage } from '../../src/testing/index.js';
import { PlainApp, RecordingApp } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, readAll, within } from '../helpers/wal.js';
import { TRUST_REPL, eventually, nextEvent } from '../helpers/primary-helpers.js';

const SEGMENT = 64 * 1024;
const CHILD = fileURLToPath(new URL('../fixtures/primary-shutdown-child.mjs', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** A WalReceiver streaming from `address` into `replica`. */
async function startStandby(transport: Transport, address: string, replica: WalLog, extra: { password?: string } = {}) {
  const conn = await connectReplication({ transport, address, user: 'repl', applicationName: 's1', ...extra });
  const receiver = new WalReceiver(conn, replica, { statusIntervalMs: 60_000 });
  // Its end is expected (the primary closes); what matters is what reached the replica.
  const running = receiver.run().catch((err: unknown) => err);
  return { receiver, running };
}

function batches(records: Awaited<ReturnType<typeof readAll>>): Array<[Lsn, string[]]> {
  return records.map((r) => [r.lsn, r.entries.map((e) => Buffer.from(e.data).toString('hex'))]);
}

/** The log's durable bytes from its oldest segment on, as a sender ships them. */
async function allBytes(log: WalLog): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of log.readBytes(log.oldestLsn)) chunks.push(chunk.data);
  return Buffer.concat(chunks);
}

/** Runs the shutdown child with `args`; `message(key)` waits for its JSON line holding `key`. */
function startChild(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // One iterator for all reads: leaving a for-await loop would close the interface.
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const message = (key: string) =>
    within(
      (async () => {
        for (let line = await lines.next(); line.done !== true; line = await lines.next()) {
          const parsed = JSON.parse(line.value) as Record<string, unknown>;
          if (key in parsed) return parsed;
        }
        throw new Error(`the child ended without "${key}": ${stderr}`);
      })(),
      60_000,
      `the child's "${key}"`,
    );
  return {
    message,
    /** Resolves once the child exited by itself (a hang guard fails the wait otherwise). */
    exited: async () => {
      const result = await within(exited, 30_000, 'the child to exit by itself');
      return { ...result, stderr };
    },
    /** Kills the child if it is still running (a failed test must not leave it spinning). */
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

describe('Primary fast shutdown', () => {
  it('close() sends the remaining WAL to a connected standby before it closes', async () => {
    const net = new MemoryNetwork();
    const storage = new MemoryStorage();
    const primary = await Primary.open({ storage, application: new PlainApp(), segmentSize: SEGMENT, listen: { transport: net.transport('primary'), address: 'primary:0' }, auth: TRUST_REPL });
    const replica = await WalLog.open({ storage: new MemoryStorage(), role: 'replica', segmentSize: SEGMENT });
    const standby = await startStandby(net.transport('s1'), primary.address as string, replica);
    await eventually(() => primary.replicationStatus()[0]?.state === 'streaming', 10_000, 'streaming');
    // A slow link: 2 MB take about two seconds, so the standby is behind when close() starts.
    net.bandwidth(1_000_000, 's1');
    let last: Lsn = 0;
    for (let i = 0; i < 100; i++) last = (await primary.commit(payload(i, 20_000), { synchronousCommit: 'off' })).lsn;
    assert.ok(replica.flushedLsn < last, 'the standby is behind when close() starts');
    const states: string[] = [];
    primary.on('sender:state', ({ state }) => states.push(state));
    await within(primary.close(), 30_000, 'close');
    // Everything, the shutdown record after the last commit included (PostgreSQL ships its shutdown checkpoint).
    assert.ok(primary.flushLsn > last, 'the closed WAL ends with its shutdown record');
    assert.equal(replica.flushedLsn, primary.flushLsn, `the standby flushed ${replica.flushedLsn} of ${primary.flushLsn}`);
    assert.deepEqual(states, ['stopping']);
    await within(standby.running, 10_000, 'the receiver to end');
    assert.equal(primary.replicationStatus().length, 0);
    // Byte for byte the same log, and the same batches.
    const reopened = await WalLog.open({ storage, segmentSize: SEGMENT });
    assert.equal(reopened.flushedLsn, replica.flushedLsn);
    assert.ok((await allBytes(replica)).equals(await allBytes(reopened)), 'the standby holds the same bytes');
    assert.deepEqual(batches(await readAll(replica)), batches(await readAll(reopened)));
    await reopened.close();
    await replica.close();
  });

  it('a stalled standby holds close() up for at most walSenderTimeoutMs', async () => {
    const net = new MemoryNetwork();
    const app = new RecordingApp();
    const primary = await Primary.open({
      storage: new MemoryStorage(),
      application: app,
      segmentSize: SEGMENT,
      listen: { transport: net.transport('primary'), address: 'primary:0' },
      auth: TRUST_REPL,
      walSenderTimeoutMs: 300,
    });
    const replica = await WalLog.open({ storage: new MemoryStorage(), role: 'replica', segmentSize: SEGMENT });
    const standby = await startStandby(net.transport('s1'), primary.address as string, replica);
    await eventually(() => primary.replicationStatus()[0]?.state === 'streaming', 10_000, 'streaming');
    net.stall('s1');
    const disconnected = nextEvent(primary, 'standby:disconnected');
    const { lsn } = await primary.commit(payload(1, 5000));
    await within(primary.close(), 20_000, 'close with a stalled standby');
    await within(disconnected, 10_000, 'standby:disconnected');
    assert.equal(app.lastLsn, lsn, 'local commits were not held up');
    net.resume();
    await within(standby.running, 10_000, 'the receiver to end');
    await replica.close();
  });

  it('over TCP with real directories: streams, reports the peer address, and ships the tail on close', async () => {
    const a = await tempDir();
    const b = await tempDir();
    try {
      const primary = await Primary.open({
        dir: a.dir,
        application: new PlainApp(),
        segmentSize: SEGMENT,
        listen: { transport: new TcpTransport(), address: '127.0.0.1:0' },
        auth: { users: { repl: { password: 'tcp-secret-1' } }, rules: [{ user: 'repl', address: '127.0.0.0/8', method: 'scram-sha-256' }] },
      });
      assert.match(primary.address ?? '', /^127\.0\.0\.1:\d+$/);
      for (let i = 0; i < 100; i++) await primary.commit([payload(i, 100 + ((i * 397) % 4000)), { data: payload(i, 8), channel: 'c' }]);
      const replica = await WalLog.open({ dir: b.dir, role: 'replica', segmentSize: SEGMENT });
      const standby = await startStandby(new TcpTransport(), primary.address as string, replica, { password: 'tcp-secret-1' });
      for (let i = 100; i < 200; i++) await primary.commit(payload(i, 3000));
      await eventually(() => primary.replicationStatus()[0]?.flushLsn === primary.flushLsn, 20_000, 'the standby to catch up');
      const row = primary.replicationStatus()[0];
      assert.equal(row?.state, 'streaming');
      assert.match(row?.clientAddress ?? '', /127\.0\.0\.1$/);
      let last: Lsn = 0;
      for (let i = 200; i < 300; i++) last = (await primary.commit(payload(i, 3000), { synchronousCommit: 'off' })).lsn;
      await within(primary.close(), 30_000, 'close');
      assert.ok(primary.flushLsn > last, 'the closed WAL ends with its shutdown record');
      assert.equal(replica.flushedLsn, primary.flushLsn, `the standby flushed ${replica.flushedLsn} of ${primary.flushLsn}`);
      await within(standby.running, 10_000, 'the receiver to end');
      await replica.close();
      const primaryLog = await WalLog.open({ dir: a.dir });
      const replicaLog = await WalLog.open({ dir: b.dir, role: 'replica' });
      const records = await readAll(replicaLog);
      assert.equal(records.length, 300);
      assert.deepEqual(batches(records), batches(await readAll(primaryLog)));
      await primaryLog.close();
      await replicaLog.close();
    } finally {
      await a.cleanup();
      await b.cleanup();
    }
  });

  it('a process with a primary and a connected standby exits on its own after close()', async () => {
    const data = await tempDir();
    const standbyDir = await tempDir();
    const child = startChild([data.dir]);
    let replica: WalLog | null = null;
    try {
      const { address } = (await child.message('address')) as { address: string };
      replica = await WalLog.open({ dir: standbyDir.dir, role: 'replica', segmentSize: SEGMENT });
      const standby = await startStandby(new TcpTransport(), address, replica);
      const { lastLsn, flushLsn } = (await child.message('closed')) as { lastLsn: number; flushLsn: number };
      const { code, signal, stderr } = await child.exited();
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, stderr);
      assert.ok(flushLsn > lastLsn, 'the closed WAL ends with its shutdown record');
      assert.equal(replica.flushedLsn, flushLsn, `the standby flushed ${replica.flushedLsn} of ${flushLsn}`);
      const ended = await within(standby.running, 10_000, 'the receiver to end');
      assert.ok(ended === undefined || isWalshipError(ended), String(ended));
    } finally {
      child.kill();
      await replica?.close();
      await data.cleanup();
      await standbyDir.cleanup();
    }
  });

  it('close() returns when a commit waits for its fdatasync while a later one fails with ENOSPC during close', async () => {
    // In a child process: a close() that spins would starve this process's timers too.
    const child = startChild(['-', 'enospc-in-close']);
    try {
      const done = (await child.message('closed')) as { commits: number; fits: { lsn?: Lsn }; spills: { code?: string }; records: number; end: Lsn };
      const { code, signal, stderr } = await child.exited();
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, stderr);
      assert.ok(done.fits.lsn !== undefined, `the commit that fits was acknowledged: ${JSON.stringify(done.fits)}`);
      assert.equal(done.spills.code, 'WAL_IO');
      // The reopened log holds the acknowledged commits, the last one at the end; nothing of the failed one.
      assert.equal(done.records, done.commits + 1);
      assert.equal(done.end, done.fits.lsn);
    } finally {
      child.kill();
    }
  });

  it('close() waits for an asynchronous apply in progress', async () => {
    const events: string[] = [];
    const app: Application = {
      async apply() {
        events.push('apply started');
        // Long enough that a close() that does not wait would be done first.
        await new Promise((resolve) => setTimeout(resolve, 300));
        events.push('apply finished');
      },
    };
    const primary = await Primary.open({ storage: new MemoryStorage(), application: app, segmentSize: SEGMENT });
    const commit = primary.commit(Buffer.from('x')).then(() => events.push('commit resolved'));
    await eventually(() => events.includes('apply started'), 10_000, 'the apply to start');
    await within(primary.close(), 20_000, 'close');
    events.push('closed');
    await commit;
    assert.deepEqual(events, ['apply started', 'apply finished', 'commit resolved', 'closed']);
  });

  it('close() closes the WAL (and releases its lock) even when stopping the listener fails, then reports that', async () => {
    const net = new MemoryNetwork();
    const inner = net.transport('primary');
    const transport: Transport = {
      name: 'listener-close-fails',
      connect: (address, options) => inner.connect(address, options),
      listen: async (address, onConnection, options) => {
        const listener = await inner.listen(address, onConnection, options);
        return {
          address: listener.address,
          close: async () => {
            await listener.close();
            throw new Error('the listener would not close');
          },
        };
      },
    };
    const storage = new MemoryStorage();
    const primary = await Primary.open({ storage, application: new PlainApp(), segmentSize: SEGMENT, listen: { transport, address: 'primary:0' }, auth: TRUST_REPL });
    const { lsn } = await primary.commit(payload(1, 100));
    await assert.rejects(within(primary.close(), 20_000, 'close'), /the listener would not close/);
    assert.ok(primary.wal.closed);
    // The lock was released and the WAL closed cleanly: the directory opens again, with the commit.
    const app = new PlainApp();
    const reopened = await within(Primary.open({ storage, application: app, segmentSize: SEGMENT }), 20_000, 'reopening');
    assert.deepEqual(app.applied.map((b) => b.lsn), [lsn]);
    await reopened.close();
  });
});
