import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Primary, isWalshipError } from 'walship';
import { transportConformance } from 'walship/testing';
import { UnixSocketTransport } from './unix-socket-transport.js';

// The example, proven by the suite that its README tells transport authors to run, and its
// README's use of it run as shown. Socket paths must be short (about 100 bytes), so they live
// in one temporary directory with short names.
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

  it('nodes check its addresses when they open: a bad one is INVALID_OPTIONS at once', async () => {
    const application = { apply: () => {} };
    const tooLong = join(dir, 'x'.repeat(120));
    await assert.rejects(
      Primary.open({ dir: join(dir, 'never'), application, listen: { transport: new UnixSocketTransport(), address: tooLong } }),
      (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS') && /at most 103 bytes/.test(err.message),
    );
    assert.deepEqual(await readdir(dir).then((names) => names.filter((n) => n === 'never')), [], 'nothing was created');
  });

  it("the README's primary and standby (primary-and-standby.ts) run as shown", async () => {
    const example = await readFile(new URL('primary-and-standby.ts', import.meta.url), 'utf8');
    const readme = await readFile(new URL('README.md', import.meta.url), 'utf8');
    const shown = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]).find((block) => block?.includes('new UnixSocketTransport()'));
    assert.equal(shown, example, 'the README shows primary-and-standby.ts as it is');
    const cwd = mkdtempSync(join(dir, 'run-'));
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--conditions=walship-source', '--import', import.meta.resolve('tsx'), fileURLToPath(new URL('primary-and-standby.ts', import.meta.url))],
      { cwd, timeout: 60_000 },
    );
    assert.match(stdout, /^primary applied over a Unix socket$/m, stdout);
    assert.match(stdout, /^standby applied over a Unix socket$/m, stdout);
    assert.match(stdout, /^replicated: b streaming no IP address$/m, stdout);
    assert.deepEqual(await readdir(cwd), ['data'], 'the socket file is gone after close');
  });
});
