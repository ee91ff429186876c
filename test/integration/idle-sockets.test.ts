import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { Primary, Standby, TcpTransport } from '../../src/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';

// Issue #13: about 70 sockets that never sent a byte used to fill the 64 places for
// connections authenticating, and honest standby logins were refused while they were held.

/** A TCP connection from `localAddress` (any 127.0.0.0/8 address on Linux) that never sends a byte. */
async function idleSocket(address: string, localAddress: string): Promise<Socket> {
  const colon = address.lastIndexOf(':');
  const socket = connect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), localAddress });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  // It reads (and drops) what it is sent, so that it sees the primary close it.
  socket.resume();
  return socket;
}

describe('idle sockets cannot keep a standby out', () => {
  it('with 200 idle sockets from 200 addresses and 50 more from its own, a standby still bootstraps and streams', async (t) => {
    const { dir, cleanup } = await tempDir();
    const sockets: Socket[] = [];
    t.after(async () => {
      for (const s of sockets) s.destroy();
      await cleanup();
    });
    {
      const primary = await Primary.open({
        dir: `${dir}/p`,
        application: new RecordingApp(),
        listen: { transport: new TcpTransport(), address: '127.0.0.1:0' },
        auth: { users: { repl: { password: 'secret' } }, rules: [{ user: 'repl', address: '127.0.0.0/8', method: 'scram-sha-256' }] },
        // Idle sockets would hold their places this long if nothing made them give way.
        handshakeTimeoutMs: 600_000,
      });
      const address = primary.address as string;
      for (let i = 0; i < 200; i++) sockets.push(await idleSocket(address, `127.0.${1 + Math.floor(i / 200)}.${2 + (i % 200)}`));
      for (let i = 0; i < 50; i++) sockets.push(await idleSocket(address, '127.0.0.1'));
      // Each newcomer took the place of the longest silent: 64 are held at most, 8 of them from 127.0.0.1.
      const held = (): Socket[] => sockets.filter((s) => !s.readableEnded);
      await within(until(() => held().length <= 64), 10_000, 'the primary to let idle sockets go');
      assert.ok(held().filter((s) => s.localAddress === '127.0.0.1').length <= 8);
      await primary.commit([Buffer.from('before the standby')]);
      const app = new RecordingApp();
      const standby = await Standby.open({
        dir: `${dir}/s`,
        application: app,
        primary: { transport: new TcpTransport(), address, user: 'repl', password: 'secret', applicationName: 's1' },
      });
      const { lsn } = await primary.commit([Buffer.from('after it connected')]);
      await within(standby.waitForReplay(lsn), 30_000, 'the standby to replay');
      assert.equal(app.applied.length, 2);
      await standby.close();
      await primary.close();
    }
  });
});
