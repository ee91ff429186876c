import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog } from '../../src/index.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import { payload, turnsUntil } from '../helpers/wal.js';
import { holdDatasyncs } from '../helpers/hold-datasyncs.js';
import { stopReceiver, walServer } from '../helpers/wal-server.js';

const MIB = 1024 * 1024;
/** wal-receiver.ts's MAX_UNFLUSHED_BYTES. */
const BOUND = 32 * MIB;
/** WalSender's default maxMessageBytes: the receiver may take one more message before it stops. */
const MESSAGE = 1 * MIB;


function until(condition: () => boolean, what: string): Promise<void> {
  return turnsUntil(condition, 20_000, what);
}

describe('WalReceiver', () => {
  it('stops reading while too much received WAL is not durable, and catches up once it is', async () => {
    const net = new MemoryNetwork();
    const primary = await WalLog.open({ storage: new MemoryStorage(), segmentSize: 16 * MIB });
    for (let i = 0; i < 48; i++) primary.append(payload(i, MIB - 1000));
    await primary.flush();
    const { server, address } = await walServer(net, primary);

    const storage = new MemoryStorage();
    const replica = await WalLog.open({ storage, segmentSize: 16 * MIB, role: 'replica' });
    const gate = holdDatasyncs(storage);
    let peak = 0;
    const writeBytes = replica.writeBytes.bind(replica);
    replica.writeBytes = (lsn, data) => {
      const end = writeBytes(lsn, data);
      peak = Math.max(peak, end - replica.flushedLsn);
      return end;
    };
    const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
    const receiver = new WalReceiver(conn, replica);
    const running = receiver.run();
    try {
      await until(() => replica.insertLsn - replica.flushedLsn > BOUND, 'the bound to be reached');
      // Every chance to read more: the receiver must not.
      for (let i = 0; i < 500; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.ok(replica.insertLsn < primary.flushedLsn, 'the receiver stopped reading');
      assert.ok(peak <= BOUND + MESSAGE, `${peak} bytes not durable at most`);

      gate.stop();
      await until(() => replica.flushedLsn >= primary.flushedLsn, 'the catch-up');
      assert.ok(peak <= BOUND + MESSAGE, `${peak} bytes not durable at most`);
    } finally {
      gate.stop();
      await stopReceiver(receiver, running, server, replica, primary);
    }
  });
});
