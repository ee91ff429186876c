import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { Socket as NetSocket, createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { afterEach, before, describe, it } from 'node:test';
import { isWalshipError, type ErrorCode } from '../../src/errors.js';
import { transportConformance } from '../../src/testing/transport-conformance.js';
import {
  TCP_TLS_DEFAULTS,
  TCP_TRANSPORT_DEFAULTS,
  TcpTransport,
  formatTcpAddress,
  parseTcpAddress,
  type TcpTlsOptions,
} from '../../src/transport/tcp-transport.js';
import type { Listener, PeerInfo, Transport } from '../../src/transport/transport.js';
import { createTlsFixtures, type TlsFixtures } from '../helpers/tls-fixtures.js';

/** Generous deadline for anything that should happen promptly, even on a busy machine. */
const DEADLINE_MS = 10_000;

/** Resolves with `promise`, or fails the test if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when `stream` has closed (whether or not with an error). */
function closed(stream: Duplex): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return within(new Promise<void>((resolve) => stream.once('close', () => resolve())), 'a stream to close');
}

/** Reads from `stream` until `length` bytes have arrived. */
function readBytes(stream: Duplex, length: number): Promise<Buffer> {
  return within(
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let got = 0;
      const onData = (chunk: Buffer): void => {
        chunks.push(chunk);
        got += chunk.length;
        if (got >= length) {
          stream.off('data', onData);
          stream.off('error', reject);
          stream.off('close', onClose);
          stream.pause();
          resolve(Buffer.concat(chunks));
        }
      };
      const onClose = (): void => reject(new Error(`stream closed after ${got} of ${length} bytes`));
      stream.on('data', onData);
      stream.once('error', reject);
      stream.once('close', onClose);
    }),
    `${length} bytes`,
  );
}

/** Asserts that `promise` rejects with a WalshipError of `code`; returns the error. */
async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<Error & { code: ErrorCode; transient: boolean }> {
  const err = await within(
    promise.then(
      () => assert.fail(`expected ${code}, but it succeeded`),
      (e: unknown) => e,
    ),
    `a ${code} error`,
  );
  assert.ok(isWalshipError(err, code), `expected ${code}, got ${String(err)}`);
  if (message !== undefined) assert.match(err.message, message);
  return err;
}

function throwsWith(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isWalshipError(err, code), `expected ${code}, got ${String(err)}`);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  });
}

/** Everything a test opened, closed after it whatever happened. */
const opened = { streams: new Set<Duplex>(), listeners: new Set<Listener>(), servers: new Set<Server>() };
afterEach(async () => {
  for (const stream of opened.streams) stream.destroy();
  await Promise.all([...opened.listeners].map((l) => l.close()));
  await Promise.all([...opened.servers].map((s) => new Promise((resolve) => s.close(resolve))));
  opened.streams.clear();
  opened.listeners.clear();
  opened.servers.clear();
});

function track<T extends Duplex>(stream: T): T {
  opened.streams.add(stream);
  stream.on('error', () => {}); // tests assert on the errors they expect through other paths
  return stream;
}

interface Accepted {
  readonly stream: Duplex;
  readonly peer: PeerInfo;
}

interface EchoServer {
  readonly listener: Listener;
  /** Peers seen so far, in order. */
  readonly peers: PeerInfo[];
  /** Resolves with the next accepted connection not yet taken. */
  nextPeer(): Promise<Accepted>;
}

/** A queue of things that arrive in callbacks, taken one by one with a deadline. */
function arrivals<T>(what: string): { push(item: T): void; next(): Promise<T> } {
  const items: T[] = [];
  const waiting: Array<(item: T) => void> = [];
  return {
    push(item) {
      const waiter = waiting.shift();
      if (waiter === undefined) items.push(item);
      else waiter(item);
    },
    next() {
      const item = items.shift();
      if (item !== undefined) return Promise.resolve(item);
      return within(new Promise((resolve) => waiting.push(resolve)), what);
    },
  };
}

/** Listens with `transport` and echoes every byte back. */
async function echoServer(transport: TcpTransport, address: string): Promise<EchoServer> {
  const peers: PeerInfo[] = [];
  const accepted = arrivals<Accepted>('an accepted connection');
  const listener = await transport.listen(address, (stream, peer) => {
    track(stream);
    peers.push(peer);
    stream.pipe(stream);
    accepted.push({ stream, peer });
  });
  opened.listeners.add(listener);
  return { listener, peers, nextPeer: () => accepted.next() };
}

async function connectTracked(transport: TcpTransport, address: string): Promise<Duplex> {
  return track(await transport.connect(address));
}

async function roundTrip(stream: Duplex, text = 'hello walship'): Promise<void> {
  stream.write(text);
  assert.equal((await readBytes(stream, text.length)).toString(), text);
}

/** A plain TCP server that accepts connections, discards what it receives and never says a word. */
async function silentServer(host = '127.0.0.1'): Promise<{ address: string; accepted(): Promise<Socket> }> {
  const accepted = arrivals<Socket>('a connection to the silent server');
  const server = createServer((socket) => {
    socket.on('error', () => {});
    socket.resume();
    opened.streams.add(socket);
    accepted.push(socket);
  });
  opened.servers.add(server);
  server.listen(0, host);
  await within(once(server, 'listening'), 'a silent server to listen');
  const bound = server.address();
  assert.ok(bound !== null && typeof bound === 'object');
  return { address: formatTcpAddress(bound.address, bound.port), accepted: () => accepted.next() };
}

/** A port on 127.0.0.1 that nothing listens on (it was bound a moment ago and released). */
async function closedPort(): Promise<string> {
  const listener = await new TcpTransport().listen('127.0.0.1:0', () => {});
  await listener.close();
  return listener.address;
}

async function hasIpv6Loopback(): Promise<boolean> {
  try {
    const listener = await new TcpTransport().listen('[::1]:0', () => {});
    await listener.close();
    return true;
  } catch {
    return false;
  }
}
let fixturesPromise: Promise<TlsFixtures> | undefined;
function tlsFixtures(): Promise<TlsFixtures> {
  fixturesPromise ??= createTlsFixtures();
  return fixturesPromise;
}

const ipv6 = await hasIpv6Loopback();
const NO_IPV6 = ipv6 ? false : 'this machine has no IPv6 loopback (::1)';

// ---------------------------------------------------------------------------------------
// The conformance suite. Volumes are moderate so that the whole file stays within seconds.

const MiB = 1024 * 1024;

/**
 * A loopback address whose TCP connects hang: a listener in a stopped child process, with
 * its accept queue (backlog 1: Linux queues backlog + 1 connections) filled. Linux drops
 * SYNs to a full accept queue, so the next connect waits in SYN_SENT until aborted.
 */
const stoppedListeners = new Set<{ child: ChildProcess; fillers: Socket[] }>();
async function unreachableForTcp(host: string): Promise<string> {
  const child = spawn(process.execPath, [
    '-e',
    `const s = require('node:net').createServer(); s.listen({ port: 0, host: '${host}', backlog: 1 }, () => console.log(s.address().port));`,
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  const entry = { child, fillers: [] as Socket[] };
  stoppedListeners.add(entry);
  const [line] = (await within(once(child.stdout as NodeJS.ReadableStream, 'data'), 'the listener child to start')) as [Buffer];
  const port = Number(line.toString().trim());
  child.kill('SIGSTOP');
  for (let i = 0; i < 3; i++) {
    const filler = netConnect(port, host);
    filler.on('error', () => {});
    entry.fillers.push(filler);
    // The first two fit the queue; the third only makes sure it is full.
    if (i < 2) await within(once(filler, 'connect'), 'a filler connection');
  }
  return formatTcpAddress(host, port);
}
async function closeStoppedListeners(): Promise<void> {
  const entries = [...stoppedListeners];
  stoppedListeners.clear();
  for (const { child, fillers } of entries) {
    for (const filler of fillers) filler.destroy();
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await within(exited, 'the listener child to exit');
  }
}

transportConformance({
  name: 'TcpTransport over 127.0.0.1',
  createTransport: () => new TcpTransport(),
  listenAddress: () => '127.0.0.1:0',
  ...(process.platform === 'linux' ? { unreachableAddress: () => unreachableForTcp('127.0.0.1'), cleanup: closeStoppedListeners } : {}),
  volumeBytes: 256 * MiB,
});

if (ipv6) {
  transportConformance({
    name: 'TcpTransport over [::1]',
    createTransport: () => new TcpTransport(),
    listenAddress: () => '[::1]:0',
    ...(process.platform === 'linux' ? { unreachableAddress: () => unreachableForTcp('::1'), cleanup: closeStoppedListeners } : {}),
    volumeBytes: 16 * MiB,
  });
} else {
  it('transport conformance: TcpTransport over [::1]', { skip: NO_IPV6 }, () => {});
}

/** Plain TCP servers that accept and never answer a TLS handshake: a pending TLS connect. */
const silentServers = new Map<Server, Set<Socket>>();
async function unreachableForTls(): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    socket.on('error', () => {});
    socket.resume();
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  silentServers.set(server, sockets);
  server.listen(0, '127.0.0.1');
  await within(once(server, 'listening'), 'a silent server to listen');
  const bound = server.address();
  assert.ok(bound !== null && typeof bound === 'object');
  return formatTcpAddress(bound.address, bound.port);
}
async function closeSilentServers(): Promise<void> {
  const servers = [...silentServers];
  silentServers.clear();
  await Promise.all(
    servers.map(([server, sockets]) => {
      const closing = new Promise((resolve) => server.close(resolve));
      for (const socket of sockets) socket.destroy(); // net.Server.close() waits for them
      return within(closing, 'a silent server to close');
    }),
  );
}

transportConformance({
  name: 'TcpTransport with TLS',
  createTransport: async () => {
    const fx = await tlsFixtures();
    return new TcpTransport({ tls: { ...fx.server, ca: fx.ca } });
  },
  listenAddress: () => '127.0.0.1:0',
  unreachableAddress: unreachableForTls,
  cleanup: closeSilentServers,
  volumeBytes: 64 * MiB,
});

transportConformance({
  name: 'TcpTransport with TLS and client certificates',
  createTransport: async (): Promise<Transport> => {
    const fx = await tlsFixtures();
    const server = new TcpTransport({ tls: { ...fx.server, ca: fx.ca, requestCert: true } });
    const client = new TcpTransport({ tls: { ...fx.client, ca: fx.ca } });
    return { name: server.name, listen: server.listen.bind(server), connect: client.connect.bind(client) };
  },
  listenAddress: () => '127.0.0.1:0',
  unreachableAddress: unreachableForTls,
  cleanup: closeSilentServers,
  volumeBytes: 8 * MiB,
});

// ---------------------------------------------------------------------------------------
// TcpTransport's own behaviour.

describe('TcpTransport options', () => {
  it('has frozen defaults', () => {
    assert.ok(Object.isFrozen(TCP_TRANSPORT_DEFAULTS));
    assert.ok(Object.isFrozen(TCP_TLS_DEFAULTS));
    assert.deepEqual(TCP_TRANSPORT_DEFAULTS, { connectTimeoutMs: 10_000, keepAlive: true, keepAliveInitialDelayMs: 10_000, noDelay: true });
    assert.equal(TCP_TLS_DEFAULTS.rejectUnauthorized, true);
    const transport = new TcpTransport();
    assert.equal(transport.name, 'tcp');
    assert.equal(transport.secure, false);
  });

  it('refuses invalid options with INVALID_OPTIONS naming the field', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ conectTimeoutMs: 5 }, /TcpTransport has unknown option "conectTimeoutMs"/],
      [{ connectTimeoutMs: 0 }, /TcpTransport\.connectTimeoutMs must be >= 1/],
      [{ connectTimeoutMs: 1.5 }, /TcpTransport\.connectTimeoutMs must be integer/],
      [{ keepAlive: 'yes' }, /TcpTransport\.keepAlive must be boolean/],
      [{ keepAliveInitialDelayMs: -1 }, /TcpTransport\.keepAliveInitialDelayMs must be >= 0/],
      [{ noDelay: 1 }, /TcpTransport\.noDelay must be boolean/],
      [{ tls: true }, /TcpTransport\.tls must be object/],
      [{ tls: { rejectUnauthorised: false } }, /TcpTransport\.tls has unknown option "rejectUnauthorised"/],
      [{ tls: { rejectUnauthorized: 'no' } }, /TcpTransport\.tls\.rejectUnauthorized must be boolean/],
      [{ tls: { servername: '' } }, /TcpTransport\.tls\.servername/],
      [{ tls: { minVersion: 'TLSv1' } }, /TcpTransport\.tls\.minVersion must be one of "TLSv1\.2", "TLSv1\.3"/],
      [{ tls: { key: 42, cert: 'x' } }, /TcpTransport\.tls\.key must be a PEM string or a Buffer/],
      [{ tls: { key: 'x', cert: {} } }, /TcpTransport\.tls\.cert must be a PEM string or a Buffer/],
      [{ tls: { ca: [] } }, /TcpTransport\.tls\.ca must be/],
      [{ tls: { ca: ['x', 1] } }, /TcpTransport\.tls\.ca must be/],
      [{ tls: { cert: 'x' } }, /TcpTransport\.tls\.key and TcpTransport\.tls\.cert must be given together/],
      [{ tls: { ca: 'not a certificate' } }, /TcpTransport\.tls\.ca\[0\] is not a certificate/],
      [{ tls: { key: 'not a key', cert: 'not a certificate' } }, /TcpTransport\.tls: /],
    ];
    for (const [options, message] of cases) {
      throwsWith(() => new TcpTransport(options as never), 'INVALID_OPTIONS', message);
    }
  });

  it('does not touch the caller’s options object', () => {
    const options = Object.freeze({ tls: Object.freeze({ ca: 'x' }) });
    // The PEM is invalid, so this throws, but only after reading a frozen object without writing it.
    throwsWith(() => new TcpTransport(options), 'INVALID_OPTIONS');
    const plain = { keepAlive: false };
    new TcpTransport(plain);
    assert.deepEqual(plain, { keepAlive: false });
  });
});

describe('TcpTransport addresses', () => {
  it('parses host:port and [ipv6]:port', () => {
    assert.deepEqual(parseTcpAddress('127.0.0.1:5432'), { host: '127.0.0.1', port: 5432 });
    assert.deepEqual(parseTcpAddress('localhost:0'), { host: 'localhost', port: 0 });
    assert.deepEqual(parseTcpAddress('db-1.example.com:65535'), { host: 'db-1.example.com', port: 65535 });
    assert.deepEqual(parseTcpAddress('[::1]:7001'), { host: '::1', port: 7001 });
    assert.deepEqual(parseTcpAddress('[fe80::1%lo]:7001'), { host: 'fe80::1%lo', port: 7001 });
    assert.equal(formatTcpAddress('::1', 7001), '[::1]:7001');
    assert.equal(formatTcpAddress('10.0.0.1', 7001), '10.0.0.1:7001');
  });

  it('refuses invalid addresses with INVALID_ARGUMENT, in listen and connect', async () => {
    const transport = new TcpTransport();
    const bad = ['', '127.0.0.1', ':5432', '::1:5432', '[::1]', '[::1]5432', '[127.0.0.1]:80', '[::1]:', 'localhost:65536',
      'localhost:-1', 'localhost:80x', 'local host:80', 'localhost:1:2', '-bad-:80', 'tcp://localhost:80', '999.0.0.1:80', '127.1:80'];
    for (const address of bad) {
      throwsWith(() => parseTcpAddress(address), 'INVALID_ARGUMENT', /invalid TCP address/);
      await rejectsWith(transport.listen(address, () => {}), 'INVALID_ARGUMENT');
      await rejectsWith(transport.connect(address), 'INVALID_ARGUMENT');
    }
    await rejectsWith(transport.connect('127.0.0.1:0'), 'INVALID_ARGUMENT', /port 0/);
    await rejectsWith(transport.listen('127.0.0.1:0', 'nope' as never), 'INVALID_ARGUMENT');
  });

  it('resolves port 0 in listener.address over IPv4', async () => {
    const transport = new TcpTransport();
    const server = await echoServer(transport, '127.0.0.1:0');
    const match = /^127\.0\.0\.1:(\d+)$/.exec(server.listener.address);
    assert.ok(match, server.listener.address);
    assert.notEqual(Number(match[1]), 0);
    const stream = await connectTracked(transport, server.listener.address);
    const { peer } = await server.nextPeer();
    await roundTrip(stream);
    assert.equal(peer.transport, 'tcp');
    assert.equal(peer.remoteAddress, '127.0.0.1');
    assert.equal(peer.remotePort, (stream as Socket).localPort);
    assert.equal(peer.secure, false);
    assert.equal(peer.description, `tcp 127.0.0.1:${peer.remotePort}`);
  });

  it('resolves port 0 in listener.address over IPv6, in brackets', { skip: NO_IPV6 }, async () => {
    const transport = new TcpTransport();
    const server = await echoServer(transport, '[::1]:0');
    assert.match(server.listener.address, /^\[::1\]:[1-9]\d*$/);
    const stream = await connectTracked(transport, server.listener.address);
    const { peer } = await server.nextPeer();
    await roundTrip(stream);
    assert.equal(peer.remoteAddress, '::1');
    assert.equal(peer.description, `tcp [::1]:${peer.remotePort}`);
  });

  it('connects by host name', async () => {
    const transport = new TcpTransport();
    const server = await echoServer(transport, '127.0.0.1:0');
    const { port } = parseTcpAddress(server.listener.address);
    await roundTrip(await connectTracked(transport, `localhost:${port}`));
  });

  it('sets no-delay and keepalive on both ends', async () => {
    const calls: Array<{ socket: Socket; method: string; args: unknown[] }> = [];
    const proto = NetSocket.prototype;
    const { setNoDelay, setKeepAlive } = proto;
    proto.setNoDelay = function (this: Socket, ...args: Parameters<Socket['setNoDelay']>) {
      calls.push({ socket: this, method: 'setNoDelay', args });
      return setNoDelay.apply(this, args);
    };
    proto.setKeepAlive = function (this: Socket, ...args: Parameters<Socket['setKeepAlive']>) {
      calls.push({ socket: this, method: 'setKeepAlive', args });
      return setKeepAlive.apply(this, args);
    };
    try {
      const transport = new TcpTransport({ keepAliveInitialDelayMs: 5000 });
      const server = await echoServer(transport, '127.0.0.1:0');
      const stream = await connectTracked(transport, server.listener.address);
      const { stream: accepted } = await server.nextPeer();
      for (const socket of [stream, accepted]) {
        const mine = calls.filter((c) => c.socket === socket).map(({ method, args }) => ({ method, args }));
        assert.deepEqual(mine, [
          { method: 'setNoDelay', args: [true] },
          { method: 'setKeepAlive', args: [true, 5000] },
        ]);
      }
      await roundTrip(stream);
    } finally {
      proto.setNoDelay = setNoDelay;
      proto.setKeepAlive = setKeepAlive;
    }
  });
});

describe('TcpTransport connect failures', () => {
  it('a closed port is CONNECTION_FAILED, transient, with the cause kept', async () => {
    const address = await closedPort();
    const err = await rejectsWith(new TcpTransport().connect(address), 'CONNECTION_FAILED', new RegExp(address.replaceAll('.', '\\.')));
    assert.equal(err.transient, true);
    assert.equal((err.cause as { code?: string }).code, 'ECONNREFUSED');
  });

  it('a handshake that never completes is TIMEOUT after connectTimeoutMs, and the socket is destroyed', async (t) => {
    const fixtures = await tlsFixtures();
    const silent = await silentServer();
    const transport = new TcpTransport({ connectTimeoutMs: 200, tls: { ca: fixtures.ca } });
    const started = Date.now();
    const pending = transport.connect(silent.address);
    const accepted = await silent.accepted();
    const err = await rejectsWith(pending, 'TIMEOUT', /TLS handshake .* timed out after 200 ms/);
    assert.equal(err.transient, true);
    assert.ok(Date.now() - started >= 190, 'not before the time limit');
    await closed(accepted); // the client's socket was destroyed, so the server sees it go
    t.diagnostic(`timed out after ${Date.now() - started} ms`);
  });

  it('aborting a pending connect rejects with ABORTED and destroys the socket', async () => {
    const fixtures = await tlsFixtures();
    const silent = await silentServer();
    const transport = new TcpTransport({ tls: { ca: fixtures.ca } });
    const controller = new AbortController();
    const pending = transport.connect(silent.address, { signal: controller.signal });
    const accepted = await silent.accepted();
    const reason = new Error('changed my mind');
    controller.abort(reason);
    const err = await rejectsWith(pending, 'ABORTED');
    assert.equal(err.cause, reason);
    await closed(accepted);
  });

  it('an already aborted signal rejects connect and listen without opening anything', async () => {
    const transport = new TcpTransport();
    const signal = AbortSignal.abort();
    const server = await echoServer(transport, '127.0.0.1:0');
    await rejectsWith(transport.connect(server.listener.address, { signal }), 'ABORTED');
    const err = await rejectsWith(transport.listen('127.0.0.1:0', () => {}, { signal }), 'ABORTED');
    assert.equal(err.cause, signal.reason);
    assert.deepEqual(server.peers, []);
  });

  it('listening on an address in use is CONNECTION_FAILED', async () => {
    const transport = new TcpTransport();
    const server = await echoServer(transport, '127.0.0.1:0');
    const err = await rejectsWith(transport.listen(server.listener.address, () => {}), 'CONNECTION_FAILED', /cannot listen/);
    assert.equal((err.cause as { code?: string }).code, 'EADDRINUSE');
    assert.equal(err.transient, true);
  });
});

describe('TcpTransport listener', () => {
  it('close() stops accepting, keeps existing streams open, releases the address and is idempotent', async () => {
    const transport = new TcpTransport();
    const server = await echoServer(transport, '127.0.0.1:0');
    const stream = await connectTracked(transport, server.listener.address);
    await server.nextPeer();
    const first = server.listener.close();
    const second = server.listener.close();
    await within(Promise.all([first, second]), 'listener.close()');
    await within(server.listener.close(), 'a third close()');
    await roundTrip(stream, 'still open after close');
    await rejectsWith(transport.connect(server.listener.address), 'CONNECTION_FAILED');
    // The port is free again.
    const again = await transport.listen(server.listener.address, () => {});
    opened.listeners.add(again);
    assert.equal(again.address, server.listener.address);
  });

  it('an onConnection that throws costs only that connection', async () => {
    const transport = new TcpTransport();
    let calls = 0;
    const listener = await transport.listen('127.0.0.1:0', (stream) => {
      calls += 1;
      if (calls === 1) throw new Error('application bug');
      track(stream).pipe(stream);
    });
    opened.listeners.add(listener);
    const doomed = await connectTracked(transport, listener.address);
    await closed(doomed);
    await roundTrip(await connectTracked(transport, listener.address));
    assert.equal(calls, 2);
  });

  it('leaves no handle or timer behind', async () => {
    const fixtures = await tlsFixtures();
    // Counts of sockets, servers and timers; unrelated resources (and ones that earlier
    // tests are still releasing) may only go away, never come.
    const relevant = (): Map<string, number> => {
      const counts = new Map<string, number>();
      for (const r of process.getActiveResourcesInfo()) if (/TCP|TLS|Timeout|Pipe/.test(r)) counts.set(r, (counts.get(r) ?? 0) + 1);
      return counts;
    };
    const before = relevant();
    for (const transport of [new TcpTransport(), new TcpTransport({ tls: { ...fixtures.server, ca: fixtures.ca } })]) {
      const accepted: Duplex[] = [];
      const listener = await transport.listen('127.0.0.1:0', (stream) => {
        accepted.push(stream);
        stream.pipe(stream);
      });
      const stream = await transport.connect(listener.address);
      await roundTrip(stream);
      stream.end();
      await closed(stream);
      await Promise.all(accepted.map(closed));
      // A failed connect must not leave its socket or timer behind either.
      await rejectsWith(transport.connect(await closedPort()), 'CONNECTION_FAILED');
      await listener.close();
    }
    for (const [resource, count] of relevant()) {
      assert.ok(count <= (before.get(resource) ?? 0), `${count} ${resource} after, ${before.get(resource) ?? 0} before`);
    }
  });
});

describe('TcpTransport with TLS', () => {
  let fx: TlsFixtures;
  before(async () => {
    fx = await tlsFixtures();
  });

  const server = (tls: TcpTlsOptions = {}): TcpTransport => new TcpTransport({ tls: { ...fx.server, ...tls } });
  const client = (tls: TcpTlsOptions = {}): TcpTransport => new TcpTransport({ tls: { ca: fx.ca, ...tls } });

  it('verifies the server by name and by IP address, and reports a secure peer', async () => {
    const listening = await echoServer(server(), '127.0.0.1:0');
    const { port } = parseTcpAddress(listening.listener.address);
    for (const address of [`localhost:${port}`, `127.0.0.1:${port}`]) {
      const stream = await connectTracked(client(), address);
      assert.equal((stream as TLSSocket).authorized, true);
      const { peer } = await listening.nextPeer();
      await roundTrip(stream);
      assert.equal(peer.secure, true);
      assert.equal(peer.transport, 'tcp');
      assert.equal(peer.description, `tls 127.0.0.1:${peer.remotePort}`);
    }
    assert.equal(client().secure, true);
  });

  it('verifies the server over IPv6 against its IP entry', { skip: NO_IPV6 }, async () => {
    const listening = await echoServer(server(), '[::1]:0');
    await roundTrip(await connectTracked(client(), listening.listener.address));
  });

  it('refuses an untrusted (self-signed) server with TLS_FAILED, never falling back to plaintext', async () => {
    const listening = await echoServer(server(fx.selfSigned), '127.0.0.1:0');
    const err = await rejectsWith(client().connect(listening.listener.address), 'TLS_FAILED');
    assert.equal(err.transient, false);
    assert.equal((err.cause as { code?: string }).code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
    assert.deepEqual(listening.peers, []);
  });

  it('refuses a server whose certificate is for another name', async () => {
    const wrong = await echoServer(server(fx.wrongName), '127.0.0.1:0');
    const { port } = parseTcpAddress(wrong.listener.address);
    for (const address of [`localhost:${port}`, `127.0.0.1:${port}`]) {
      const err = await rejectsWith(client().connect(address), 'TLS_FAILED');
      assert.equal((err.cause as { code?: string }).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
    }
    // servername overrides the name checked.
    const right = await echoServer(server(), '127.0.0.1:0');
    const err = await rejectsWith(client({ servername: 'wrong.example' }).connect(right.listener.address), 'TLS_FAILED');
    assert.equal((err.cause as { code?: string }).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
    await roundTrip(await connectTracked(client({ servername: 'wrong.example' }), wrong.listener.address));
  });

  it('refuses a server when no ca is given and the system store does not know it', async () => {
    const listening = await echoServer(server(), '127.0.0.1:0');
    const err = await rejectsWith(new TcpTransport({ tls: {} }).connect(listening.listener.address), 'TLS_FAILED');
    assert.match(String((err.cause as { code?: string }).code), /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
  });

  it('connects to an unverified server only with an explicit rejectUnauthorized: false', async () => {
    const listening = await echoServer(server(fx.selfSigned), '127.0.0.1:0');
    const stream = await connectTracked(client({ rejectUnauthorized: false }), listening.listener.address);
    assert.equal((stream as TLSSocket).authorized, false);
    await roundTrip(stream);
  });

  it('refuses to talk TLS to a plaintext server', async () => {
    const plain = await echoServer(new TcpTransport(), '127.0.0.1:0');
    // The echo server sends the ClientHello back, which is no ServerHello.
    await rejectsWith(client({ rejectUnauthorized: false }).connect(plain.listener.address), 'TLS_FAILED');
  });

  it('a plaintext client gets nothing from a TLS server, which keeps serving', async () => {
    const listening = await echoServer(server(), '127.0.0.1:0');
    const plain = await connectTracked(new TcpTransport(), listening.listener.address);
    plain.write('hello, plaintext\r\n\r\n');
    plain.resume();
    await closed(plain);
    await roundTrip(await connectTracked(client(), listening.listener.address));
    assert.equal(listening.peers.length, 1);
  });

  it('a client that never finishes its handshake is dropped after connectTimeoutMs', async () => {
    const transport = new TcpTransport({ connectTimeoutMs: 200, tls: fx.server });
    const listening = await echoServer(transport, '127.0.0.1:0');
    const { host, port } = parseTcpAddress(listening.listener.address);
    const raw = track(netConnect({ host, port }));
    await closed(raw);
    await roundTrip(await connectTracked(client(), listening.listener.address));
  });

  it('Listener.close() drops handshakes in progress and keeps established streams', async () => {
    const listening = await echoServer(new TcpTransport({ connectTimeoutMs: 120_000, tls: fx.server }), '127.0.0.1:0');
    const { host, port } = parseTcpAddress(listening.listener.address);
    const stalled = track(netConnect({ host, port }));
    await within(once(stalled, 'connect'), 'a raw TCP connect');
    stalled.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])); // a TLS record header, and no record
    // The server accepts in order: once this later client is through, the stalled one is accepted too.
    const good = await connectTracked(client(), listening.listener.address);
    await listening.nextPeer();
    await listening.listener.close();
    await closed(stalled); // long before the two-minute handshake limit
    await roundTrip(good, 'established streams stay');
    assert.equal(listening.peers.length, 1);
  });

  it('listen with TLS needs a key and a certificate', async () => {
    await rejectsWith(client().listen('127.0.0.1:0', () => {}), 'INVALID_OPTIONS', /key and TcpTransport\.tls\.cert are required to listen/);
  });

  describe('client certificates', () => {
    /** Connects a client that the server must refuse: before or right after the handshake. */
    async function refused(transport: TcpTransport, address: string): Promise<void> {
      let stream: Duplex;
      try {
        stream = await within(transport.connect(address), 'a refused connect');
      } catch (err) {
        assert.ok(isWalshipError(err, 'TLS_FAILED') || isWalshipError(err, 'CONNECTION_FAILED'), String(err));
        return;
      }
      // TLS 1.3: the client's handshake completes before the server has checked its
      // certificate; the refusal arrives as an alert or a close.
      track(stream);
      stream.write('anyone there?');
      let received = 0;
      stream.on('data', (chunk: Buffer) => (received += chunk.length));
      await closed(stream);
      assert.equal(received, 0);
    }

    it('are required and verified: no certificate or an untrusted one is refused, and the server carries on', async () => {
      const listening = await echoServer(server({ requestCert: true, ca: fx.ca }), '127.0.0.1:0');
      const address = listening.listener.address;
      await refused(client(), address);
      await refused(client(fx.untrustedClient), address);
      const stream = await connectTracked(client(fx.client), address);
      const { peer } = await listening.nextPeer();
      await roundTrip(stream);
      assert.equal(peer.secure, true);
      assert.equal(listening.peers.length, 1, 'refused clients never reached onConnection');
      const again = await connectTracked(client(fx.client), address);
      await roundTrip(again);
      assert.equal(listening.peers.length, 2);
    });

    it('with rejectUnauthorized: false the server accepts any client and says whether it was verified', async () => {
      const listening = await echoServer(server({ requestCert: true, ca: fx.ca, rejectUnauthorized: false }), '127.0.0.1:0');
      await roundTrip(await connectTracked(client(), listening.listener.address));
      await roundTrip(await connectTracked(client(fx.client), listening.listener.address));
      assert.deepEqual(
        listening.peers.map((p) => p.secure),
        [false, true],
      );
    });
  });
});
