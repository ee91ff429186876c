import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/index.js';
import { compileAuth } from '../../src/protocol/auth-rules.js';
import { clientHandshake, serverHandshake } from '../../src/protocol/handshake.js';
import { MessageStream } from '../../src/protocol/message-stream.js';
import { PROTOCOL_VERSION, encodeMessage, type ClientMessage, type ServerMessage } from '../../src/protocol/messages.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import type { PeerInfo } from '../../src/transport/transport.js';
import { within } from '../helpers/wal.js';

/** Valid frames a peer might send, to splice and mutate. */
const clientFrames: Buffer[] = (
  [
    { kind: 'startup', protocolMajor: PROTOCOL_VERSION.major, protocolMinor: 0, user: 'repl', applicationName: 's1', options: [] },
    { kind: 'saslInitialResponse', mechanism: 'SCRAM-SHA-256', data: Buffer.from('n,,n=,r=abcdefghijklmnopqrstuvwx') },
    { kind: 'saslResponse', data: Buffer.from('c=biws,r=abc,p=AAAA') },
    { kind: 'identifySystem' },
    { kind: 'standbyStatusUpdate', writeLsn: 1, flushLsn: 1, applyLsn: 1, sendTime: 1, replyRequested: true },
    { kind: 'terminate' },
  ] satisfies ClientMessage[]
).map((m) => encodeMessage(m));

const serverFrames: Buffer[] = (
  [
    { kind: 'authSasl', mechanisms: ['SCRAM-SHA-256'] },
    { kind: 'authSaslContinue', data: Buffer.from('r=abcdefghijklmnopqrstuvwxyz,s=QSXCR+Q6sek8bf92,i=4096') },
    { kind: 'authSaslFinal', data: Buffer.from('v=AAAA') },
    { kind: 'authOk' },
    { kind: 'readyForCommand' },
    { kind: 'error', code: 'AUTH_FAILED', message: 'no' },
    { kind: 'keepalive', walEnd: 1, sendTime: 1, replyRequested: false },
  ] satisfies ServerMessage[]
).map((m) => encodeMessage(m));

/** Byte streams built from valid frames, then mutated: bit flips, truncation, splices, random bytes. */
function streamArb(frames: Buffer[]): fc.Arbitrary<Buffer[]> {
  const frame = fc.oneof(
    fc.constantFrom(...frames),
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.constantFrom(...frames), fc.nat(), fc.integer({ min: 0, max: 7 })).map(([f, at, bit]) => {
      const copy = Buffer.from(f);
      copy[at % copy.length] = (copy[at % copy.length] as number) ^ (1 << bit);
      return copy;
    }),
    fc.tuple(fc.constantFrom(...frames), fc.nat()).map(([f, n]) => f.subarray(0, n % f.length)),
  );
  return fc.array(frame, { minLength: 1, maxLength: 6 });
}

const PEER: PeerInfo = { transport: 'memory', remoteAddress: '127.0.0.1', description: 'memory fuzz' };

describe('handshake fuzzing (seeded)', () => {
  it('the server handshake fails only with coded errors, and always closes the connection', async () => {
    const auth = await compileAuth({
      users: { repl: { password: 'pw-1234567' } },
      rules: [
        { user: 'trusted', address: 'all', method: 'trust' },
        { user: 'all', address: 'all', method: 'scram-sha-256' },
      ],
    });
    await fc.assert(
      fc.asyncProperty(streamArb(clientFrames), fc.boolean(), async (chunks, endAfter) => {
        const net = new MemoryNetwork();
        let accepted!: (s: import('node:stream').Duplex) => void;
        const server = new Promise<import('node:stream').Duplex>((resolve) => (accepted = resolve));
        const listener = await net.transport('server').listen('p', (stream) => accepted(stream));
        const client = await net.transport('client').connect('p');
        client.on('error', () => {});
        client.resume();
        const conn = new MessageStream(await server, 'server');
        const outcome = serverHandshake(conn, PEER, { auth, timeoutMs: 200, failureDelayMs: 0, onFailure: () => {} }).then(
          () => null,
          (err: unknown) => err,
        );
        for (const chunk of chunks) client.write(chunk);
        if (endAfter) client.end();
        const err = await within(outcome, 5000, 'the handshake to settle');
        if (err !== null) {
          assert.ok(isWalshipError(err), `only coded errors escape, got ${String(err)}`);
          await within(conn.closed, 5000, 'the failed connection to close');
        }
        client.destroy();
        conn.destroy();
        await listener.close();
      }),
      { seed: 4711, numRuns: 150 },
    );
  });

  it('the client handshake fails only with coded errors', async () => {
    await fc.assert(
      fc.asyncProperty(streamArb(serverFrames), fc.boolean(), async (chunks, endAfter) => {
        const net = new MemoryNetwork();
        let accepted!: (s: import('node:stream').Duplex) => void;
        const server = new Promise<import('node:stream').Duplex>((resolve) => (accepted = resolve));
        const listener = await net.transport('server').listen('p', (stream) => accepted(stream));
        const conn = new MessageStream(await net.transport('client').connect('p'), 'client');
        const peer = await server;
        peer.on('error', () => {});
        peer.resume();
        const outcome = clientHandshake(conn, { user: 'repl', password: 'pw-1234567', applicationName: 's1', timeoutMs: 200 }).then(
          () => null,
          (err: unknown) => err,
        );
        for (const chunk of chunks) peer.write(chunk);
        if (endAfter) peer.end();
        const err = await within(outcome, 5000, 'the handshake to settle');
        if (err !== null) assert.ok(isWalshipError(err), `only coded errors escape, got ${String(err)}`);
        peer.destroy();
        conn.destroy();
        await listener.close();
      }),
      { seed: 815, numRuns: 150 },
    );
  });
});
