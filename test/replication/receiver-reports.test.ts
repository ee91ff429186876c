import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog } from '../../src/index.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import { holdDatasyncs, type DatasyncHold } from '../helpers/hold-datasyncs.js';
import { stopReceiver, walServer } from '../helpers/wal-server.js';
import { recordDatasyncs, turnsUntil } from '../helpers/wal.js';

function until(condition: () => boolean, what: string): Promise<void> {
  return turnsUntil(condition, 20_000, what);
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A primary log whose fdatasyncs wait for the test, with one durable record ('before') written through the gate. */
async function heldPrimary(): Promise<{ primary: WalLog; gate: DatasyncHold; before: number }> {
  const storage = new MemoryStorage();
  const gate = holdDatasyncs(storage);
  const primary = await WalLog.open({ storage, segmentSize: 1024 * 1024 });
  const before = primary.append(Buffer.from('before')).endLsn;
  const flushed = primary.waitForFlush(before);
  while (primary.flushedLsn < before) {
    gate.release();
    await turns(1);
  }
  await flushed;
  return { primary, gate, before };
}

/** A replication server whose senders stream `primary` with early WAL; every status report a standby sends lands in `reports`. */
function earlySenders(net: MemoryNetwork, primary: WalLog, reports: { writeLsn: number; flushLsn: number }[]): ReturnType<typeof walServer> {
  return walServer(net, primary, { earlySend: true }, (sender) => sender.on('standby:progress', ({ writeLsn, flushLsn }) => reports.push({ writeLsn, flushLsn })));
}

describe('WalReceiver status reports', () => {
  it("early WAL: where syncs hold the event loop, a flush past the sender's durable end is not an urgent one (so it never holds the sender's word); a flush of WAL the sender called durable is", async () => {
    const net = new MemoryNetwork();
    const { primary, gate } = await heldPrimary();
    const reports: { writeLsn: number; flushLsn: number }[] = [];
    const { server, address } = await earlySenders(net, primary, reports);
    // syncBlocks: as NodeStorage's with commitSync 'inline', whose urgent syncs hold the loop.
    const replicaStorage = new MemoryStorage({ syncBlocks: true });
    const urgency = recordDatasyncs(replicaStorage);
    const replica = await WalLog.open({ storage: replicaStorage, segmentSize: 1024 * 1024, role: 'replica' });
    const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
    const receiver = new WalReceiver(conn, replica, { acceptEarlyWal: true });
    const running = receiver.run();
    try {
      await until(() => reports.some((r) => r.flushLsn >= primary.flushedLsn), 'the first report');
      assert.ok(urgency.length > 0 && urgency.every((u) => u), `WAL the sender called durable: urgent syncs (${JSON.stringify(urgency)})`);
      urgency.length = 0;
      const { endLsn } = primary.append(Buffer.from('early'));
      void primary.waitForFlush(endLsn).catch(() => undefined);
      await until(() => replica.flushedLsn >= endLsn, "the standby's flush");
      assert.ok(primary.flushedLsn < endLsn, 'not durable on the primary yet');
      assert.deepEqual(urgency, [false], 'early WAL: one sync, not urgent');
      gate.stop();
      await until(() => reports.some((r) => r.flushLsn >= endLsn), 'the confirmation');
    } finally {
      gate.stop();
      await stopReceiver(receiver, running, server, replica, primary);
    }
  });

  it("early WAL: a flush past the sender's durable end reports nothing new and sends no report; the sender's word that it is durable does", async () => {
    const net = new MemoryNetwork();
    // The primary's fdatasyncs wait for the test.
    const { primary, gate } = await heldPrimary();
    const reports: { writeLsn: number; flushLsn: number }[] = [];
    const { server, address } = await earlySenders(net, primary, reports);
    const replica = await WalLog.open({ storage: new MemoryStorage(), segmentSize: 1024 * 1024, role: 'replica' });
    const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
    const receiver = new WalReceiver(conn, replica, { acceptEarlyWal: true });
    const running = receiver.run();
    try {
      await until(() => reports.some((r) => r.flushLsn >= primary.flushedLsn), 'the first report');
      // Written on the primary, not durable there: sent early, written and flushed by the standby.
      await turns(50);
      const reportsBefore = reports.length;
      const { endLsn } = primary.append(Buffer.from('early'));
      void primary.waitForFlush(endLsn).catch(() => undefined);
      await until(() => replica.flushedLsn >= endLsn, "the standby's flush");
      assert.ok(primary.flushedLsn < endLsn, 'not durable on the primary yet');
      await turns(50);
      // Written and flushed, but neither may be reported past the primary's durable end.
      assert.equal(reports.length, reportsBefore, `no report while nothing reportable moved: ${JSON.stringify(reports.slice(reportsBefore))}`);
      gate.stop();
      await until(() => reports.some((r) => r.flushLsn >= endLsn), 'the confirmation');
      await turns(50);
      assert.deepEqual(reports.slice(reportsBefore), [{ writeLsn: endLsn, flushLsn: endLsn }], 'then one report: written and flushed');
    } finally {
      gate.stop();
      await stopReceiver(receiver, running, server, replica, primary);
    }
  });

  it("early WAL: the sender's word that WAL is durable reports it written at once, while the standby's own fdatasync still runs", async () => {
    const net = new MemoryNetwork();
    const { primary, gate: primaryGate, before } = await heldPrimary();
    const reports: { writeLsn: number; flushLsn: number }[] = [];
    const { server, address } = await earlySenders(net, primary, reports);
    // The standby's fdatasyncs wait for the test.
    const replicaStorage = new MemoryStorage();
    const gate = holdDatasyncs(replicaStorage);
    const replica = await WalLog.open({ storage: replicaStorage, segmentSize: 1024 * 1024, role: 'replica' });
    const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
    // No periodic report: only the sender's word can report the write in time.
    const receiver = new WalReceiver(conn, replica, { acceptEarlyWal: true, statusIntervalMs: 600_000 });
    const running = receiver.run();
    try {
      while (replica.flushedLsn < before) {
        gate.release();
        await turns(1);
      }
      // Sent early, written by the standby (its fdatasync held) before the primary's is done.
      const { endLsn } = primary.append(Buffer.from('next'));
      const durable = primary.waitForFlush(endLsn);
      await until(() => replica.writtenLsn >= endLsn, "the standby's write");
      await turns(50);
      assert.ok(reports.every((r) => r.writeLsn < endLsn), 'nothing reported past the durable end');
      primaryGate.stop();
      await durable;
      await until(() => reports.some((r) => r.writeLsn >= endLsn), 'a report of the write');
      assert.ok(replica.flushedLsn < endLsn, "the standby's fdatasync has not returned");
      assert.ok(reports.every((r) => r.flushLsn < endLsn), 'nothing reported flushed');
      gate.stop();
      await until(() => reports.some((r) => r.flushLsn >= endLsn), 'then the flush');
    } finally {
      gate.stop();
      primaryGate.stop();
      await stopReceiver(receiver, running, server, replica, primary);
    }
  });
});
