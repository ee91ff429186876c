import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NodeStorage, WalLog, type StorageFile, type StorageOpenOptions, type Transport, type WalRecord } from '../../src/index.js';
import { compileAuth } from '../../src/protocol/auth-rules.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { ReplicationServer } from '../../src/protocol/replication-server.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { WalSender } from '../../src/replication/wal-sender.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import { TcpTransport } from '../../src/transport/tcp-transport.js';
import { tempDir } from '../helpers/temp-dir.js';
import { SMALL_SEGMENT, openLog, payload, readAll, turnsUntil, within } from '../helpers/wal.js';

/** A primary's WalLog served over `transport`: every session that asks to stream gets a WalSender. */
async function servePrimary(log: WalLog, transport: Transport, address: string, walSenderTimeoutMs = 5000) {
  const server = new ReplicationServer({
    transport,
    address,
    auth: await compileAuth({ users: { repl: { password: 'pw-1234567' } }, rules: [{ user: 'repl', address: 'all', method: 'scram-sha-256' }] }),
  });
  const senders = new Set<WalSender>();
  server.on('session', (session) => {
    void (async () => {
      const request = await session.conn.next().catch(() => null);
      if (request?.kind !== 'startReplication') return session.conn.destroy();
      const sender = new WalSender(session.conn, log, request.startLsn, { walSenderTimeoutMs });
      senders.add(sender);
      await sender.run().catch(() => undefined);
      senders.delete(sender);
    })();
  });
  const bound = await server.listen();
  return {
    address: bound,
    senders,
    close: async () => {
      await server.close();
      await Promise.all([...senders].map((s) => s.stop()));
    },
  };
}

async function startReceiver(replica: WalLog, transport: Transport, address: string, statusIntervalMs = 50): Promise<{ receiver: WalReceiver; conn: MessageStream<'client'>; running: Promise<void> }> {
  const conn = await connectReplication({ transport, address, user: 'repl', password: 'pw-1234567', applicationName: 's1' });
  const receiver = new WalReceiver(conn, replica, { statusIntervalMs });
  return { receiver, conn, running: receiver.run() };
}

function same(actual: WalRecord[], expected: WalRecord[]): void {
  assert.deepEqual(
    actual.map((r) => [r.lsn, r.entries.map((e) => Buffer.from(e.data).toString('hex'))]),
    expected.map((r) => [r.lsn, r.entries.map((e) => Buffer.from(e.data).toString('hex'))]),
  );
}

async function caughtUp(replica: WalLog, primary: WalLog): Promise<void> {
  while (replica.flushedLsn < primary.flushedLsn) await new Promise((resolve) => setTimeout(resolve, 2));
}

/** A NodeStorage that counts the read-only files opened and not yet closed (a sender's reads). */
class ReaderCountingStorage extends NodeStorage {
  openReaders = 0;

  override async open(name: string, options: StorageOpenOptions = {}): Promise<StorageFile> {
    const file = await super.open(name, options);
    if (options.readOnly !== true) return file;
    this.openReaders++;
    let closed = false;
    const close = file.close.bind(file);
    file.close = async () => {
      if (!closed) this.openReaders--;
      closed = true;
      await close();
    };
    return file;
  }
}

describe('streaming WAL from a primary log to a replica log', () => {
  it('over MemoryTransport: history, the live tail, and a resume after a connection reset', async () => {
    const net = new MemoryNetwork();
    const primary = await openLog(new MemoryStorage());
    for (let i = 0; i < 30; i++) primary.append(payload(i, 3000 + i));
    await primary.flush();
    const served = await servePrimary(primary, net.transport('primary'), 'primary:1');
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    let standby = await startReceiver(replica, net.transport('standby'), served.address);
    await within(caughtUp(replica, primary), 10_000, 'catch-up');
    // The live tail.
    for (let i = 30; i < 60; i++) await primary.waitForFlush(primary.append(payload(i, 5000)));
    await within(caughtUp(replica, primary), 10_000, 'the live tail');
    // The connection breaks mid-stream; a new receiver resumes where the replica's log ends.
    for (let i = 60; i < 90; i++) primary.append(payload(i, 7000));
    const flushing = primary.flush();
    net.reset();
    await standby.running.catch(() => undefined);
    await flushing;
    standby = await startReceiver(replica, net.transport('standby'), served.address);
    await within(caughtUp(replica, primary), 10_000, 'the resume');
    same(await readAll(replica), await readAll(primary));
    await standby.receiver.stop();
    await served.close();
    await replica.close();
    await primary.close();
  });

  it('a sender that times out a stuck standby mid-catch-up closes the segment file its read-ahead holds', async () => {
    const a = await tempDir();
    const storage = new ReaderCountingStorage(a.dir);
    const primary = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT });
    // Far more WAL (48 MB) than the socket buffers and the client's read-ahead hold: the
    // sender blocks on a full socket, its next chunk read.
    for (let i = 0; i < 6000; i++) primary.append(payload(i, 8000));
    await primary.flush();
    const served = await servePrimary(primary, new TcpTransport(), '127.0.0.1:0', 300);
    // A standby that asks for everything, then never reads nor reports.
    const conn = await connectReplication({ transport: new TcpTransport(), address: served.address, user: 'repl', password: 'pw-1234567', applicationName: 'stuck' });
    try {
      conn.send({ kind: 'startReplication', slotName: '', startLsn: primary.oldestLsn, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
      assert.equal((await conn.next())?.kind, 'replicationStarted');
      const [sender] = served.senders;
      assert.ok(sender !== undefined);
      await turnsUntil(() => served.senders.size === 0, 10_000, 'the sender to time out');
      // It stopped mid-catch-up (else its read-ahead would have ended waiting for WAL, closing the file anyway).
      assert.ok(sender.sentLsn < primary.flushedLsn, `the sender sent everything (${sender.sentLsn}): the test did not block it`);
      await turnsUntil(() => storage.openReaders === 0, 5_000, 'the segment file it read to be closed');
    } finally {
      conn.destroy();
      await served.close();
      await primary.close();
      await a.cleanup();
    }
  });

  it('over TcpTransport with real files', async () => {
    const a = await tempDir();
    const b = await tempDir();
    const primary = await WalLog.open({ dir: a.dir, segmentSize: SMALL_SEGMENT });
    const served = await servePrimary(primary, new TcpTransport(), '127.0.0.1:0');
    const replica = await WalLog.open({ dir: b.dir, segmentSize: SMALL_SEGMENT, role: 'replica' });
    const standby = await startReceiver(replica, new TcpTransport(), served.address);
    try {
      for (let i = 0; i < 200; i++) {
        const result = primary.append([payload(i, 500 + i * 10), { data: payload(i, 4), channel: 'orders' }]);
        if (i % 10 === 9) await primary.waitForFlush(result);
      }
      await primary.flush();
      await within(caughtUp(replica, primary), 20_000, 'the replica to catch up');
      same(await readAll(replica), await readAll(primary));
    } finally {
      await standby.receiver.stop();
      await served.close();
      await replica.close();
      await primary.close();
    }
    // The replica's copy survives a reopen as it is.
    const reopened = await WalLog.open({ dir: b.dir, role: 'replica' });
    assert.equal((await readAll(reopened)).length, 200);
    await reopened.close();
    await a.cleanup();
    await b.cleanup();
  });

  it('a sender reports the standby’s write, flush and apply positions and reaches streaming', async () => {
    const net = new MemoryNetwork();
    const primary = await openLog(new MemoryStorage());
    primary.append(payload(1, 100));
    await primary.flush();
    const served = await servePrimary(primary, net.transport('primary'), 'p:1');
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    const standby = await startReceiver(replica, net.transport('standby'), served.address);
    await within(caughtUp(replica, primary), 10_000, 'catch-up');
    const sender = await within(
      (async () => {
        for (;;) {
          const [s] = served.senders;
          if (s?.progress !== null && s?.progress !== undefined && s.progress.flushLsn >= primary.flushedLsn) return s;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })(),
      10_000,
      'the standby to report its flush position',
    );
    assert.equal(sender.state, 'streaming');
    assert.equal(sender.sentLsn, primary.flushedLsn);
    assert.equal(sender.progress?.writeLsn, primary.flushedLsn);
    await standby.receiver.stop();
    await served.close();
    await replica.close();
    await primary.close();
  });

  it('a standby with nothing to receive reports its positions as soon as it streams, not after statusIntervalMs', async (t) => {
    // Neither the status interval nor the sender's keepalive (half its timeout) comes within the
    // test's deadline: only the initial report (PostgreSQL's walreceiver sends one) can.
    const net = new MemoryNetwork();
    const primary = await openLog(new MemoryStorage());
    const served = await servePrimary(primary, net.transport('primary'), 'p:1', 600_000);
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    const standby = await startReceiver(replica, net.transport('standby'), served.address, 600_000);
    let polling = true; // a failed wait must not leave its loop running
    t.after(async () => {
      polling = false;
      await standby.receiver.stop();
      await served.close();
      await replica.close();
      await primary.close();
    });
    const progress = await within(
      (async () => {
        while (polling) {
          const progress = [...served.senders][0]?.progress;
          if (progress !== null && progress !== undefined) return progress;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        return null;
      })(),
      20_000,
      'the first status report',
    );
    assert.equal(progress?.flushLsn, replica.flushedLsn, "the report gives the standby's flushed end");
  });
});
