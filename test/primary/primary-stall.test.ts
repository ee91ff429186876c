import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Primary, WalLog, type Lsn } from '../../src/index.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { MemoryNetwork } from '../../src/testing/index.js';
import { DigestApp } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';
import { TRUST_REPL, eventually, observedTransport } from '../helpers/primary-helpers.js';

const MIB = 1024 * 1024;
const MESSAGE_BYTES = 256 * 1024;
const BATCH_BYTES = 64 * 1024;
const TOTAL_BYTES = 24 * MIB;

/** A full garbage collection, when this V8 lets us ask for one (tests do not run with --expose-gc). */
function collector(): (() => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : null;
  } catch {
    return null;
  }
}

/** Bytes this process holds for JavaScript: the heap plus Buffers' memory, after a full GC. */
function heldBytes(gc: () => void): number {
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

describe('Primary with a stalled standby', () => {
  it('commits at full speed and holds only the in-flight bound for the standby', async () => {
    const gc = collector();
    const a = await tempDir();
    const b = await tempDir();
    const net = new MemoryNetwork();
    const { transport, accepted } = observedTransport(net.transport('primary'));
    const app = new DigestApp();
    const primary = await Primary.open({
      dir: a.dir,
      application: app,
      segmentSize: 4 * MIB,
      // Durability is not what this test is about; the disk's speed should not matter.
      sync: 'none',
      synchronousCommit: 'local',
      maxWalMessageBytes: MESSAGE_BYTES,
      walSenderTimeoutMs: 600_000,
      listen: { transport, address: 'primary:0' },
      auth: TRUST_REPL,
    });
    const replica = await WalLog.open({ dir: b.dir, role: 'replica', segmentSize: 4 * MIB, sync: 'none' });
    try {
      const conn = await connectReplication({ transport: net.transport('s1'), address: primary.address as string, user: 'repl', applicationName: 'stalled' });
      const receiver = new WalReceiver(conn, replica, { statusIntervalMs: 100 });
      const running = receiver.run().catch((err: unknown) => err);
      await primary.commit(Buffer.alloc(100));
      await eventually(() => primary.replicationStatus()[0]?.flushLsn === primary.flushLsn, 20_000, 'the standby to stream');
      const stream = accepted[0];
      assert.ok(stream !== undefined);

      net.stall('s1');
      const before = gc === null ? 0 : heldBytes(gc);
      let peakWritable = 0;
      let last: Lsn = 0;
      const data = Buffer.alloc(BATCH_BYTES, 7);
      for (let written = 0; written < TOTAL_BYTES; written += 16 * BATCH_BYTES) {
        // Sixteen at a time, so group commit has something to group.
        const results = await within(
          Promise.all(Array.from({ length: 16 }, () => primary.commit(data))),
          60_000,
          'commits with a stalled standby',
        );
        last = results.at(-1)?.lsn ?? last;
        peakWritable = Math.max(peakWritable, stream.writableLength);
      }
      const after = gc === null ? 0 : heldBytes(gc);
      assert.equal(primary.appliedLsn, last, 'every commit was applied locally');
      assert.ok(replica.flushedLsn < TOTAL_BYTES / 2, 'the standby really was stalled');

      // What waits for the standby: at most one message beyond the stream's buffer ...
      assert.ok(peakWritable <= 2 * MESSAGE_BYTES, `${peakWritable} bytes buffered for the standby`);
      assert.ok(stream.writableLength <= 2 * MESSAGE_BYTES);
      // ... so the process holds nowhere near the 24 MiB committed meanwhile.
      if (gc !== null) assert.ok(after - before < 8 * MIB, `held memory grew by ${((after - before) / MIB).toFixed(1)} MiB`);

      // Resumed, it catches up with everything, in order.
      net.resume('s1');
      await eventually(() => replica.flushedLsn >= last, 60_000, 'the standby to catch up');
      await receiver.stop();
      await running;
    } finally {
      // A standby still stalled would hold close() up for walSenderTimeoutMs.
      net.resume();
      await within(primary.close(), 30_000, 'close');
      await replica.close();
      await a.cleanup();
      await b.cleanup();
    }
  });
});
