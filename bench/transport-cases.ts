/**
 * Transport benchmark cases over loopback, with the far side in its own process
 * (bench/transport-peer.mjs, on the compiled package) as a standby would be: bulk throughput of 64 KiB messages from
 * a listening sender (the primary's role) to a connecting receiver, and request/reply round
 * trips. Each walship case (framed protocol over `TcpTransport`, with or without TLS) has
 * a raw `node:net` counterpart: the limit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type * as Walship from '../src/index.js';
import type * as WalshipProtocol from '../src/protocol/index.js';
import type { TcpTransportOptions } from '../src/index.js';
import { LatencyRecorder, type RunResult } from './stats.js';

// The compiled package (npm run bench builds it first), as applications run it: at these
// rates the per-call cost of tsx's on-the-fly transform would show in the figures.
const { TcpTransport } = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof Walship;
const { MessageStream } = (await import(new URL('../dist/protocol/index.js', import.meta.url).href)) as typeof WalshipProtocol;

/** Size of one message: a raw write, or a walData frame including its 33-byte header. */
export const MESSAGE_BYTES = 64 * 1024;
const WAL_DATA_HEADER = 33;

/** TLS settings of one case: the server's and the client's `tls` options. */
export interface TlsSetup {
  readonly server: NonNullable<TcpTransportOptions['tls']>;
  readonly client: NonNullable<TcpTransportOptions['tls']>;
}

const PEER = fileURLToPath(new URL('./transport-peer.mjs', import.meta.url));

/** The far side runs the compiled package with plain node, as applications do. */
function startPeer(args: string[]): ChildProcess {
  return spawn(process.execPath, [PEER, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
}

async function peerAddress(peer: ChildProcess): Promise<string> {
  const [line] = (await once(peer.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  return line.toString().trim();
}

/** Raw `node:net`: writes `totalBytes` in 64 KiB buffers; timed from the first write to the receiver's answer. */
export async function rawThroughput(totalBytes: number): Promise<RunResult> {
  const chunk = Buffer.alloc(MESSAGE_BYTES, 0x5a);
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const connected = once(server, 'connection') as Promise<[net.Socket]>;
  const peer = startPeer(['raw-receive', `127.0.0.1:${port}`, String(totalBytes)]);
  const [socket] = await connected;
  socket.setNoDelay(true);
  const answered = once(socket, 'data');
  const started = performance.now();
  for (let sent = 0; sent < totalBytes; sent += MESSAGE_BYTES) {
    if (!socket.write(chunk)) await once(socket, 'drain');
  }
  await answered;
  const seconds = (performance.now() - started) / 1000;
  socket.destroy();
  await Promise.all([once(peer, 'exit'), new Promise((resolve) => server.close(resolve))]);
  return throughputResult(totalBytes, seconds);
}

/** walship: `walData` frames of 64 KiB through a {@link MessageStream}, honouring backpressure. */
export async function walshipThroughput(totalBytes: number, tls?: TlsSetup): Promise<RunResult> {
  const data = Buffer.alloc(MESSAGE_BYTES - WAL_DATA_HEADER, 0x5a);
  let accept: (stream: Duplex) => void = () => undefined;
  const accepted = new Promise<Duplex>((resolve) => (accept = resolve));
  const listener = await new TcpTransport(tls === undefined ? {} : { tls: tls.server }).listen('127.0.0.1:0', (stream) => accept(stream));
  const peer = startPeer(['walship-receive', listener.address, String(totalBytes), tls === undefined ? '' : JSON.stringify(tls.client)]);
  const conn = new MessageStream(await accepted, 'server');
  const answered = conn.next();
  const started = performance.now();
  let lsn = 0;
  for (let sent = 0; sent < totalBytes; sent += data.length) {
    if (!conn.send({ kind: 'walData', startLsn: lsn, walEnd: lsn + data.length, sendTime: 0, data })) await conn.drained();
    lsn += data.length;
  }
  const reply = await answered;
  const seconds = (performance.now() - started) / 1000;
  if (reply?.kind !== 'standbyStatusUpdate') throw new Error(`unexpected ${reply?.kind ?? 'end of stream'}`);
  conn.destroy();
  await Promise.all([once(peer, 'exit'), listener.close()]);
  return throughputResult(totalBytes, seconds);
}

/** Raw `node:net` ping-pong of 64-byte messages for `durationMs`. */
export async function rawRoundTrips(durationMs: number): Promise<RunResult> {
  const peer = startPeer(['raw-echo']);
  const address = await peerAddress(peer);
  const socket = net.connect(Number(address.slice(address.lastIndexOf(':') + 1)), '127.0.0.1');
  socket.setNoDelay(true);
  await once(socket, 'connect');
  const ping = Buffer.alloc(64, 1);
  let pending: (() => void) | null = null;
  let buffered = 0;
  socket.on('data', (data: Buffer) => {
    buffered += data.length;
    if (buffered >= ping.length && pending !== null) {
      buffered -= ping.length;
      const resolve = pending;
      pending = null;
      resolve();
    }
  });
  const result = await timedLoop(durationMs, () => {
    const answered = new Promise<void>((resolve) => (pending = resolve));
    socket.write(ping);
    return answered;
  });
  socket.destroy();
  await once(peer, 'exit');
  return result;
}

/** walship: a status update asking for a reply, answered with a keepalive, for `durationMs`. */
export async function walshipRoundTrips(durationMs: number, tls?: TlsSetup): Promise<RunResult> {
  const peer = startPeer(['walship-echo', tls === undefined ? '' : JSON.stringify(tls.server)]);
  const address = await peerAddress(peer);
  const conn = new MessageStream(await new TcpTransport(tls === undefined ? {} : { tls: tls.client }).connect(address), 'client');
  let lsn = 0;
  const result = await timedLoop(durationMs, async () => {
    lsn += 8;
    conn.send({ kind: 'standbyStatusUpdate', writeLsn: lsn, flushLsn: lsn, applyLsn: lsn, sendTime: 0, replyRequested: true });
    const reply = await conn.next();
    if (reply?.kind !== 'keepalive') throw new Error(`unexpected ${reply?.kind ?? 'end of stream'}`);
  });
  conn.destroy();
  await once(peer, 'exit');
  return result;
}

async function timedLoop(durationMs: number, once: () => Promise<void>): Promise<RunResult> {
  const latencies = new LatencyRecorder();
  const started = performance.now();
  const deadline = started + durationMs;
  let count = 0;
  for (let now = started; now < deadline; now = performance.now()) {
    await once();
    latencies.add((performance.now() - now) * 1000);
    count++;
  }
  const seconds = (performance.now() - started) / 1000;
  const [p50, p99] = latencies.percentiles([0.5, 0.99]);
  return { opsPerSec: count / seconds, bytesPerSec: Number.NaN, p50Us: p50 ?? Number.NaN, p99Us: p99 ?? Number.NaN, syncsPerSec: Number.NaN };
}

function throughputResult(bytes: number, seconds: number): RunResult {
  return {
    opsPerSec: bytes / MESSAGE_BYTES / seconds,
    bytesPerSec: bytes / seconds,
    p50Us: Number.NaN,
    p99Us: Number.NaN,
    syncsPerSec: Number.NaN,
  };
}
