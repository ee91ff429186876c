import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog, isWalshipError, type WalshipError } from '../../src/index.js';
import { compileAuth } from '../../src/protocol/auth-rules.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import type { ClientMessage } from '../../src/protocol/messages.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { ReplicationServer } from '../../src/protocol/replication-server.js';
import { SendTimes } from '../../src/replication/send-times.js';
import { WalReceiver, type WalReceiverOptions } from '../../src/replication/wal-receiver.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import { openLog, payload, readAll, within } from '../helpers/wal.js';

/** A generous guard: a wait that should take well under a second fails instead of hanging. */
const HANG_MS = 30_000;

type Script = (conn: MessageStream<'server'>, startLsn: number, heard: ClientMessage[]) => Promise<void>;

/**
 * A hand-driven sender: answers START_REPLICATION with `replicationStarted`, then runs
 * `script`, while every message the receiver sends is collected in `heard`.
 */
async function scriptedSender(script: Script) {
  const net = new MemoryNetwork();
  const server = new ReplicationServer({
    transport: net.transport('primary'),
    address: 'primary:1',
    auth: await compileAuth({ rules: [{ user: 'all', address: 'all', method: 'trust' }] }),
  });
  const heard: ClientMessage[] = [];
  let finished!: () => void;
  /** Resolves when the receiver's connection has ended, as seen by the sender. */
  const ended = new Promise<void>((resolve) => (finished = resolve));
  server.on('session', (session) => {
    const conn = session.conn;
    void (async () => {
      const request = await conn.next().catch(() => null);
      if (request?.kind !== 'startReplication') return conn.destroy();
      conn.send({ kind: 'replicationStarted', timeline: request.timeline, startLsn: request.startLsn, historyChecked: false });
      const listening = (async () => {
        for (;;) {
          const message = await conn.next().catch(() => null);
          if (message === null) return;
          heard.push(message);
        }
      })();
      await script(conn, request.startLsn, heard);
      await listening;
    })().finally(finished);
  });
  const address = await server.listen();
  return {
    heard,
    ended,
    async receiver(replica: WalLog, options: WalReceiverOptions) {
      const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
      return new WalReceiver(conn, replica, options);
    },
    close: () => server.close(),
  };
}

/** Resolves once `condition` holds, polling on the event loop (no deadline of its own). */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 2));
}

function statusUpdates(heard: readonly ClientMessage[]) {
  return heard.filter((m): m is Extract<ClientMessage, { kind: 'standbyStatusUpdate' }> => m.kind === 'standbyStatusUpdate');
}

describe('WalReceiver: wal_receiver_timeout, reportNow, send times', () => {
  it('a silent sender: one request for a reply at half of receiverTimeoutMs, then a transient TIMEOUT ends the connection', async () => {
    // The sender streams nothing and answers nothing: a half-open connection.
    const sender = await scriptedSender(async () => undefined);
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    const receiver = await sender.receiver(replica, { statusIntervalMs: 3_600_000, receiverTimeoutMs: 200 });
    let error: WalshipError | null = null;
    await within(
      receiver.run().then(
        () => assert.fail('run() resolved'),
        (err: unknown) => {
          error = err as WalshipError;
        },
      ),
      HANG_MS,
      'the receiver to give up',
    );
    assert.ok(isWalshipError(error, 'TIMEOUT'), String(error));
    assert.equal((error as WalshipError | null)?.transient, true);
    await within(sender.ended, HANG_MS, 'the sender to see the connection end');
    const updates = statusUpdates(sender.heard);
    assert.deepEqual(
      updates.map((u) => u.replyRequested),
      [false, true],
      'the initial report as streaming starts, then exactly one status update, asking for a reply',
    );
    await sender.close();
    await replica.close();
  });

  it('a sender that answers each request for a reply with a keepalive keeps the connection, though it sends no WAL', async () => {
    const sender = await scriptedSender(async (conn, startLsn, heard) => {
      let answered = 0;
      while (!conn.stream.destroyed) {
        const pending = statusUpdates(heard).filter((u) => u.replyRequested).length;
        for (; answered < pending; answered++) conn.send({ kind: 'keepalive', walEnd: startLsn, sendTime: 0, replyRequested: false });
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    });
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    const timeoutMs = 1500;
    const receiver = await sender.receiver(replica, { statusIntervalMs: 3_600_000, receiverTimeoutMs: timeoutMs });
    let settled: unknown = null;
    const running = receiver.run().then(
      () => (settled = 'resolved'),
      (err: unknown) => (settled = err),
    );
    // Each request comes after half the timeout of silence: three of them span more than the
    // whole timeout, which the receiver survives only because every keepalive counts.
    await within(until(() => statusUpdates(sender.heard).filter((u) => u.replyRequested).length >= 3 || settled !== null), HANG_MS, 'three requests for a reply');
    assert.equal(settled, null, `the receiver ended: ${String(settled)}`);
    const [initial, ...later] = statusUpdates(sender.heard);
    assert.equal(initial?.replyRequested, false, 'the initial report as streaming starts');
    assert.ok(later.every((u) => u.replyRequested), 'no other status update was sent');
    await receiver.stop();
    await within(running, HANG_MS, 'the receiver to stop');
    assert.equal(settled, 'resolved');
    await sender.close();
    await replica.close();
  });

  it('reportNow() sends the write, flush and apply positions at once', async () => {
    const primary = await openLog(new MemoryStorage());
    for (let i = 0; i < 5; i++) primary.append(payload(i, 500));
    await primary.flush();
    const sender = await scriptedSender(async (conn, startLsn) => {
      for await (const { startLsn: at, data } of primary.readBytes(startLsn)) conn.send({ kind: 'walData', startLsn: at, walEnd: primary.flushedLsn, sendTime: 0, data });
    });
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    let applied = replica.oldestLsn;
    const receiver = await sender.receiver(replica, { statusIntervalMs: 3_600_000, receiverTimeoutMs: 0, appliedLsn: () => applied });
    const running = receiver.run();
    // The report after the flush tells the flush position, with nothing applied yet.
    await within(until(() => statusUpdates(sender.heard).some((u) => u.flushLsn === primary.flushedLsn)), HANG_MS, 'the report after the flush');
    const before = statusUpdates(sender.heard).length;
    assert.ok(statusUpdates(sender.heard).every((u) => u.applyLsn === replica.oldestLsn));
    applied = primary.flushedLsn;
    receiver.reportNow();
    await within(until(() => statusUpdates(sender.heard).length > before), HANG_MS, 'the report');
    const last = statusUpdates(sender.heard).at(-1);
    assert.deepEqual(
      { write: last?.writeLsn, flush: last?.flushLsn, apply: last?.applyLsn, replyRequested: last?.replyRequested },
      { write: primary.flushedLsn, flush: primary.flushedLsn, apply: primary.flushedLsn, replyRequested: false },
    );
    await receiver.stop();
    await running;
    await sender.close();
    await replica.close();
    await primary.close();
  });

  it('remembers the send time of each WAL message it receives, for the end of each record', async () => {
    const primary = await openLog(new MemoryStorage());
    for (let i = 0; i < 40; i++) primary.append(payload(i, 700 + i * 37));
    await primary.flush();
    const sent: Array<{ end: number; time: number }> = [];
    const sender = await scriptedSender(async (conn, startLsn) => {
      // Small messages, so records span messages; each gets its own (made-up) send time.
      let n = 0;
      for await (const { startLsn: at, data } of primary.readBytes(startLsn, { maxChunkBytes: 1000 })) {
        const time = 1_700_000_000_000_000 + ++n * 1000;
        sent.push({ end: at + data.length, time });
        conn.send({ kind: 'walData', startLsn: at, walEnd: primary.flushedLsn, sendTime: time, data });
      }
    });
    const replica = await openLog(new MemoryStorage(), { role: 'replica' });
    const sendTimes = new SendTimes();
    const receiver = await sender.receiver(replica, { statusIntervalMs: 3_600_000, sendTimes });
    assert.equal(receiver.sendTimes, sendTimes);
    const running = receiver.run();
    await within(until(() => replica.flushedLsn === primary.flushedLsn), HANG_MS, 'the WAL');
    const records = await readAll(replica);
    assert.equal(records.length, 40);
    assert.ok(sent.length > 40, `${sent.length} messages`);
    for (const record of records) {
      const carrier = sent.find((m) => m.end >= record.endLsn);
      assert.equal(sendTimes.timeFor(record.endLsn), carrier?.time, `record ending at ${record.endLsn}`);
    }
    await receiver.stop();
    await running;
    await sender.close();
    await replica.close();
    await primary.close();
  });
});

describe('SendTimes', () => {
  it('answers with the message that carried an LSN, null before the first one, and forgets what lookups passed', () => {
    const times = new SendTimes(8);
    assert.equal(times.timeFor(100), null);
    times.record(100, 200, 1);
    times.record(200, 300, 2);
    times.record(300, 400, 3);
    assert.equal(times.timeFor(100), null, 'WAL up to where the first message starts was not received here');
    assert.equal(times.timeFor(150), 1);
    assert.equal(times.timeFor(200), 1, 'a record ending exactly at a message end was carried by that message');
    assert.equal(times.timeFor(201), 2);
    assert.equal(times.size, 2, 'the first message is forgotten');
    assert.equal(times.timeFor(400), 3);
    assert.equal(times.timeFor(401), null, 'beyond what was received');
    times.record(400, 500, 4);
    assert.equal(times.timeFor(450), 4, 'contiguous with what was forgotten');
  });

  it('stays bounded: when full, the two oldest merge into one with the earlier time', () => {
    const times = new SendTimes(4);
    for (let i = 0; i < 10; i++) times.record(i * 10, i * 10 + 10, 1000 + i);
    assert.equal(times.size, 4);
    // Messages 0..6 merged into one (ending at 70) with message 0's time; 7, 8, 9 as they were.
    assert.equal(times.timeFor(5), 1000);
    assert.equal(times.timeFor(65), 1000);
    assert.equal(times.timeFor(70), 1000);
    assert.equal(times.timeFor(75), 1007);
    assert.equal(times.timeFor(100), 1009);
  });

  it('starts afresh on WAL that does not continue the last message', () => {
    const times = new SendTimes(4);
    times.record(0, 10, 1);
    times.record(20, 30, 2);
    assert.equal(times.size, 1);
    assert.equal(times.timeFor(10), null);
    assert.equal(times.timeFor(25), 2);
    assert.throws(() => new SendTimes(1), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });
});
