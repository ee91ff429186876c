import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog } from '../../src/index.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import { holdDatasyncs } from '../helpers/hold-datasyncs.js';
import { stopReceiver, walServer } from '../helpers/wal-server.js';
import { within } from '../helpers/wal.js';

const MIB = 1024 * 1024;

describe('WalReceiver flush rounds', () => {
  it('WAL handed over in the turn in which a flush round ends is flushed too (a standby never stalls short of its upstream)', async () => {
    const net = new MemoryNetwork();
    const primary = await WalLog.open({ storage: new MemoryStorage(), segmentSize: 16 * MIB });
    for (let i = 0; i < 4; i++) primary.append([Buffer.alloc(20_000, i)]);
    await primary.flush();
    // 32 KiB messages: the 80 KB of WAL goes out as several walData messages.
    const { server, address } = await walServer(net, primary, { maxMessageBytes: 32 * 1024 });
    const replicaStorage = new MemoryStorage();
    const replica = await WalLog.open({ storage: replicaStorage, segmentSize: 16 * MIB, role: 'replica' });
    // The replica's fdatasyncs wait until the last walData has arrived, so that a flush round
    // is in flight when it is handed over.
    const gate = holdDatasyncs(replicaStorage);
    const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
    // The last walData is handed to the receiver from the replica's 'flush' listener: in the
    // very turn in which the round's last check finds everything flushed.
    const next = conn.next.bind(conn);
    let handedOver = false;
    conn.next = (options) =>
      new Promise((resolve, reject) => {
        next(options).then((message) => {
          if (message?.kind !== 'walData' || message.startLsn + message.data.length < primary.flushedLsn) {
            resolve(message);
            return;
          }
          replica.once('flush', () => {
            handedOver = true;
            resolve(message);
          });
          gate.stop();
        }, reject);
      });
    const receiver = new WalReceiver(conn, replica, { statusIntervalMs: 100 });
    const running = receiver.run();
    try {
      await within(
        (async () => {
          while (replica.flushedLsn < primary.flushedLsn) await new Promise((resolve) => setTimeout(resolve, 5));
        })(),
        10_000,
        'the replica to flush all that it received',
      );
      assert.ok(handedOver, 'the last message was handed over from a flush listener');
      assert.equal(replica.flushedLsn, primary.flushedLsn, "the replica holds all of the primary's WAL, durably");
    } finally {
      await stopReceiver(receiver, running, replica, primary, server);
    }
  });
});
