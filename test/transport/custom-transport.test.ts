import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { UnixSocketTransport } from '../../examples/custom-transport/unix-socket-transport.js';
import { isWalshipError } from '../../src/errors.js';
import { transportConformance } from '../../src/testing/transport-conformance.js';

// The example of examples/custom-transport, proven by the suite that its README tells
// transport authors to run. Socket paths must be short (about 100 bytes), so they live in
// one temporary directory with short names.
const dir = mkdtempSync(join(tmpdir(), 'walship-unix-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let sockets = 0;
const socketPath = (): string => join(dir, `s${++sockets}.sock`);

transportConformance({
  name: 'UnixSocketTransport (examples/custom-transport)',
  createTransport: () => new UnixSocketTransport(),
  listenAddress: socketPath,
  // No unreachableAddress: a Unix socket connect is accepted or refused at once.
  volumeBytes: 64 * 1024 * 1024,
});

describe('UnixSocketTransport (examples/custom-transport)', () => {
  it('reports peers without an IP address', async () => {
    const transport = new UnixSocketTransport();
    const peers: unknown[] = [];
    const listener = await transport.listen(socketPath(), (stream, peer) => {
      peers.push(peer);
      stream.end();
    });
    try {
      const stream = await transport.connect(listener.address);
      stream.resume();
      await new Promise((resolve) => stream.once('close', resolve));
      assert.deepEqual(peers, [{ transport: 'unix', description: `unix ${listener.address}` }]);
    } finally {
      await listener.close();
    }
  });

  it('gives coded errors', async () => {
    const transport = new UnixSocketTransport();
    const missing = socketPath();
    await assert.rejects(transport.connect(missing), (err: unknown) => isWalshipError(err, 'CONNECTION_FAILED') && err.transient);
    await assert.rejects(transport.connect(''), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'));
    await assert.rejects(transport.listen(missing, () => {}, { signal: AbortSignal.abort() }), (err: unknown) => isWalshipError(err, 'ABORTED'));
  });
});
