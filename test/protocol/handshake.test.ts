import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createServer } from 'node:net';
import { format, inspect } from 'node:util';
import createDebug from 'debug';
import { isWalshipError, type WalshipError } from '../../src/index.js';
import { compileAuth, type AuthOptions } from '../../src/protocol/auth-rules.js';
import { encodeMessage, PROTOCOL_VERSION } from '../../src/protocol/messages.js';
import { MessageStream } from '../../src/protocol/message-stream.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { ReplicationServer, type AuthFailedEvent, type ConnectionErrorEvent, type ServerSession } from '../../src/protocol/replication-server.js';
import { scramVerifier } from '../../src/protocol/scram.js';
import { MemoryNetwork, type MemoryTransport } from '../../src/transport/memory-transport.js';
import { TcpTransport } from '../../src/transport/tcp-transport.js';
import { createTlsFixtures } from '../helpers/tls-fixtures.js';
import { within } from '../helpers/wal.js';

const PASSWORD = 's3cret-pässword';

interface Harness {
  net: MemoryNetwork;
  server: ReplicationServer;
  sessions: ServerSession[];
  failures: AuthFailedEvent[];
  errors: ConnectionErrorEvent[];
  client(ip?: string | null): MemoryTransport;
  close(): Promise<void>;
}

async function startServer(auth: AuthOptions | undefined): Promise<Harness> {
  const net = new MemoryNetwork();
  const server = new ReplicationServer({
    transport: net.transport('primary'),
    address: 'primary:7001',
    auth: await compileAuth(auth),
    authFailureDelayMs: 20,
    handshakeTimeoutMs: 2000,
  });
  const harness: Harness = {
    net,
    server,
    sessions: [],
    failures: [],
    errors: [],
    client: (ip = '127.0.0.1') => net.transport(`standby-${Math.random()}`, { ip }),
    close: async () => {
      await server.close();
      for (const session of harness.sessions) session.conn.destroy();
    },
  };
  server.on('session', (s) => harness.sessions.push(s));
  server.on('auth:failed', (e) => harness.failures.push(e));
  server.on('connection:error', (e) => harness.errors.push(e));
  await server.listen();
  return harness;
}

function login(h: Harness, options: { user?: string; password?: string; ip?: string | null } = {}) {
  return connectReplication({
    transport: h.client(options.ip),
    address: 'primary:7001',
    user: options.user ?? 'repl',
    applicationName: 's1',
    ...(options.password === undefined ? {} : { password: options.password }),
    handshakeTimeoutMs: 2000,
  });
}

const authFailed = (err: unknown): boolean => isWalshipError(err, 'AUTH_FAILED');

describe('authentication', () => {
  it('lets a user in with the right password (SCRAM-SHA-256, plain password configured)', async () => {
    const h = await startServer({ users: { repl: { password: PASSWORD } }, rules: [{ user: 'repl', address: '127.0.0.0/8', method: 'scram-sha-256' }] });
    const conn = await login(h, { password: PASSWORD });
    await within(waitFor(() => h.sessions.length === 1), 2000, 'the session');
    assert.equal(h.sessions[0]?.user, 'repl');
    assert.equal(h.sessions[0]?.applicationName, 's1');
    assert.equal(h.sessions[0]?.method, 'scram-sha-256');
    conn.destroy();
    await h.close();
  });

  it('accepts a stored verifier instead of a password', async () => {
    const verifier = await scramVerifier(PASSWORD);
    const h = await startServer({ users: { repl: { verifier } }, rules: [{ user: 'all', address: 'all', method: 'scram-sha-256' }] });
    (await login(h, { password: PASSWORD })).destroy();
    await h.close();
  });

  it('refuses a wrong password and an unknown user alike, after a delay, counting per address', async () => {
    const h = await startServer({ users: { repl: { password: PASSWORD } }, rules: [{ user: 'all', address: 'all', method: 'scram-sha-256' }] });
    const wrong = await login(h, { password: 'guess' }).catch((err: WalshipError) => err);
    const unknown = await login(h, { user: 'mallory', password: 'guess' }).catch((err: WalshipError) => err);
    assert.ok(authFailed(wrong) && authFailed(unknown), 'both refused with AUTH_FAILED');
    // The client learns nothing about why: same code, same message shape.
    assert.equal((wrong as WalshipError).message, 'authentication failed for user "repl"');
    assert.equal((unknown as WalshipError).message, 'authentication failed for user "mallory"');
    assert.deepEqual(h.failures.map((f) => [f.user, f.reason, f.failuresFromAddress]), [
      ['repl', 'wrong password', 1],
      ['mallory', 'unknown user', 2],
    ]);
    assert.equal(h.server.authFailures('127.0.0.1'), 2);
    assert.equal(h.sessions.length, 0);
    await h.close();
  });

  it('applies the first matching rule: trust, reject, no match, IPv4 and IPv6 CIDRs, all', async () => {
    const h = await startServer({
      users: { repl: { password: PASSWORD } },
      rules: [
        { user: 'repl', address: '10.0.0.0/8', method: 'reject' },
        { user: 'repl', address: '127.0.0.1', method: 'trust' },
        { user: 'repl', address: 'fd00::/8', method: 'scram-sha-256' },
        { user: 'all', address: '192.168.1.0/24', method: 'trust' },
      ],
    });
    await assert.rejects(login(h, { ip: '10.1.2.3', password: PASSWORD }), authFailed); // reject rule
    (await login(h, { ip: '127.0.0.1' })).destroy(); // trust: no password needed
    (await login(h, { ip: 'fd00::7', password: PASSWORD })).destroy(); // IPv6 CIDR
    await assert.rejects(login(h, { ip: 'fd00::7', password: 'nope' }), authFailed);
    (await login(h, { ip: '192.168.1.77', user: 'anyone' })).destroy(); // 'all' users
    await assert.rejects(login(h, { ip: '172.16.0.1', password: PASSWORD }), authFailed); // no rule
    await assert.rejects(login(h, { ip: null, password: PASSWORD }), authFailed); // no IP: only 'all' addresses match
    assert.deepEqual(h.failures.map((f) => [f.reason, f.ruleIndex]), [
      ['rejected by rule', 0],
      ['wrong password', 2],
      ['no matching rule', -1],
      ['no matching rule', -1],
    ]);
    await h.close();
  });

  it('lets no one in without auth configured', async () => {
    const h = await startServer(undefined);
    await assert.rejects(login(h, { password: PASSWORD }), authFailed);
    await h.close();
  });

  it('never puts credentials in errors, events or logs of failures', async () => {
    const logged: string[] = [];
    const previous = { log: createDebug.log, namespaces: createDebug.disable() };
    createDebug.enable('walship:*');
    createDebug.log = (...args: unknown[]) => logged.push(format(...args));
    try {
      const h = await startServer({ users: { repl: { password: PASSWORD } }, rules: [{ user: 'all', address: 'all', method: 'scram-sha-256' }] });
      const err = await login(h, { password: 'hunter2-guess' }).catch((e: unknown) => e);
      const text = [String(err), (err as Error).stack, inspect(h.failures, { depth: 5 }), inspect(h.server, { depth: 5 }), ...logged].join('\n');
      assert.ok(logged.some((line) => line.includes('authentication failed')), 'the failure was logged');
      assert.ok(!text.includes(PASSWORD) && !text.includes('hunter2-guess'), 'no password in any report');
      await h.close();
    } finally {
      createDebug.log = previous.log;
      createDebug.enable(previous.namespaces);
    }
  });

  it('verifies the server too: a server that does not know the verifier is refused by the client', async () => {
    // The server holds a verifier for another password: it cannot produce the right server signature.
    const h = await startServer({ users: { repl: { password: 'another' } }, rules: [{ user: 'all', address: 'all', method: 'scram-sha-256' }] });
    await assert.rejects(login(h, { password: PASSWORD }), authFailed);
    await h.close();
  });
});

describe('protocol errors end only the offending connection', () => {
  it('answers a different major protocol version with PROTOCOL_VERSION naming both', async () => {
    const h = await startServer({ rules: [{ user: 'all', address: 'all', method: 'trust' }] });
    const stream = await h.client().connect('primary:7001');
    const conn = new MessageStream(stream, 'client');
    conn.send({ kind: 'startup', protocolMajor: PROTOCOL_VERSION.major + 1, protocolMinor: 3, user: 'repl', applicationName: 's1', options: [] });
    const reply = await within(conn.next(), 2000, 'the error');
    assert.equal(reply?.kind, 'error');
    assert.ok(reply?.kind === 'error' && reply.code === 'PROTOCOL_VERSION');
    const expected = new RegExp(`${PROTOCOL_VERSION.major + 1}\\.3.*${PROTOCOL_VERSION.major}\\.${PROTOCOL_VERSION.minor}`);
    assert.match(reply.kind === 'error' ? reply.message : '', expected, 'the message names both versions');
    await h.close();
  });

  it('drops a connection that sends garbage or messages out of order, while others carry on', async () => {
    const h = await startServer({ rules: [{ user: 'all', address: 'all', method: 'trust' }] });
    const good = await login(h);
    // Garbage: an oversized length field.
    const bad = await h.client().connect('primary:7001');
    bad.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x53]));
    // Out of order: a command before the startup message.
    const early = await h.client().connect('primary:7001');
    early.write(encodeMessage({ kind: 'identifySystem' }));
    await within(waitFor(() => h.errors.length === 2), 2000, 'both bad connections to fail');
    assert.deepEqual(h.errors.map((e) => e.error.code).sort(), ['PROTOCOL_ERROR', 'PROTOCOL_ERROR']);
    // The good session still works.
    const session = h.sessions[0];
    assert.ok(session !== undefined, 'the good session exists');
    session.conn.send({ kind: 'keepalive', walEnd: 1, sendTime: 2, replyRequested: false });
    assert.equal((await within(good.next(), 2000, 'the keepalive'))?.kind, 'keepalive');
    good.destroy();
    await h.close();
  });

  it('times out a client that never finishes its handshake', async () => {
    const net = new MemoryNetwork();
    const server = new ReplicationServer({
      transport: net.transport('primary'),
      address: 'p',
      auth: await compileAuth({ rules: [{ user: 'all', address: 'all', method: 'trust' }] }),
      handshakeTimeoutMs: 50,
    });
    const errors: ConnectionErrorEvent[] = [];
    server.on('connection:error', (e) => errors.push(e));
    await server.listen();
    const silent = await net.transport('c').connect('p');
    await within(waitFor(() => errors.length === 1), 2000, 'the timeout');
    assert.equal(errors[0]?.error.code, 'TIMEOUT');
    silent.destroy();
    await server.close();
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('authentication over real TCP and TLS', () => {
  it('matches IPv4 and IPv6 peers against CIDR rules, with SCRAM over TLS', async () => {
    const fx = await createTlsFixtures();
    const auth = await compileAuth({
      users: { repl: { password: PASSWORD } },
      rules: [
        { user: 'repl', address: '127.0.0.0/8', method: 'scram-sha-256' },
        { user: 'repl', address: '::1/128', method: 'reject' },
      ],
    });
    for (const secure of [false, true]) {
      const serverTransport = new TcpTransport(secure ? { tls: { key: fx.server.key, cert: fx.server.cert } } : {});
      const clientTransport = new TcpTransport(secure ? { tls: { ca: fx.ca } } : {});
      for (const host of (await hasIpv6Loopback()) ? ['127.0.0.1', '[::1]'] : ['127.0.0.1']) {
        const server = new ReplicationServer({ transport: serverTransport, address: `${host}:0`, auth, authFailureDelayMs: 10 });
        const sessions: ServerSession[] = [];
        const failures: AuthFailedEvent[] = [];
        server.on('session', (s) => sessions.push(s));
        server.on('auth:failed', (e) => failures.push(e));
        const address = await server.listen();
        const attempt = connectReplication({ transport: clientTransport, address, user: 'repl', password: PASSWORD, applicationName: 's1' });
        if (host === '127.0.0.1') {
          const conn = await attempt;
          await within(waitFor(() => sessions.length === 1), 5000, 'the session');
          assert.equal(sessions[0]?.peer.remoteAddress, '127.0.0.1');
          assert.equal(sessions[0]?.peer.secure, secure);
          conn.destroy();
          sessions[0]?.conn.destroy();
        } else {
          await assert.rejects(attempt, authFailed);
          assert.deepEqual(failures.map((f) => [f.reason, f.ruleIndex, f.peer.remoteAddress]), [['rejected by rule', 1, '::1']]);
        }
        await server.close();
      }
    }
  });

  it('a client that does not trust the server certificate never sends its password', async () => {
    const fx = await createTlsFixtures();
    const server = new ReplicationServer({
      transport: new TcpTransport({ tls: fx.selfSigned }),
      address: '127.0.0.1:0',
      auth: await compileAuth({ users: { repl: { password: PASSWORD } }, rules: [{ user: 'all', address: 'all', method: 'scram-sha-256' }] }),
    });
    const sessions: ServerSession[] = [];
    server.on('session', (s) => sessions.push(s));
    const address = await server.listen();
    await assert.rejects(
      connectReplication({ transport: new TcpTransport({ tls: { ca: fx.ca } }), address, user: 'repl', password: PASSWORD, applicationName: 's1' }),
      (err) => isWalshipError(err, 'TLS_FAILED'),
    );
    assert.equal(sessions.length, 0);
    await server.close();
  });
});

async function hasIpv6Loopback(): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
}

describe('protocol hardening', () => {
  it('a client with a password refuses a server that skips SCRAM (trust or impostor), unless told otherwise', async () => {
    const h = await startServer({ rules: [{ user: 'all', address: 'all', method: 'trust' }] });
    await assert.rejects(login(h, { password: PASSWORD }), authFailed);
    const conn = await connectReplication({ transport: h.client(), address: 'primary:7001', user: 'repl', password: PASSWORD, applicationName: 's1', requireAuth: 'none' });
    conn.destroy();
    await h.close();
  });

  it('cuts off a peer that declares a huge frame before authenticating', async () => {
    const h = await startServer({ rules: [{ user: 'all', address: 'all', method: 'trust' }] });
    const stream = await h.client().connect('primary:7001');
    stream.on('error', () => {});
    const header = Buffer.alloc(5);
    header.writeUInt32BE(10 * 1024 * 1024, 0);
    header[4] = 'S'.charCodeAt(0);
    stream.write(header);
    await within(waitFor(() => h.errors.length === 1), 2000, 'the connection to be cut off');
    assert.equal(h.errors[0]?.error.code, 'PROTOCOL_ERROR');
    stream.destroy();
    await h.close();
  });

  describe('connections authenticating at once', () => {
    async function limitedServer(limits: { maxAuthenticatingConnections?: number; maxAuthenticatingPerAddress?: number }) {
      const net = new MemoryNetwork();
      const server = new ReplicationServer({
        transport: net.transport('primary'),
        address: 'p',
        auth: await compileAuth({ users: { repl: { password: 'pw' } }, rules: [{ user: 'repl', address: 'all', method: 'scram-sha-256' }] }),
        handshakeTimeoutMs: 60_000,
        authFailureDelayMs: 60_000,
        ...limits,
      });
      const errors: ConnectionErrorEvent[] = [];
      const sessions: ServerSession[] = [];
      server.on('connection:error', (e) => errors.push(e));
      server.on('session', (session) => sessions.push(session));
      await server.listen();
      /** A connection from `ip` that sends nothing; `closed` says once the server dropped it. */
      const silent = async (ip: string) => {
        const stream = await net.transport(`c${Math.random()}`, { ip }).connect('p');
        stream.on('error', () => {});
        let closed = false;
        stream.on('close', () => (closed = true));
        stream.resume();
        return { stream, closed: () => closed };
      };
      const login = (ip: string, password = 'pw') =>
        connectReplication({ transport: net.transport(`s${Math.random()}`, { ip }), address: 'p', user: 'repl', password, applicationName: 'standby' });
      return { server, errors, sessions, silent, login };
    }

    it('a standby gets in however many silent sockets are held: the longest silent gives way', async () => {
      const h = await limitedServer({ maxAuthenticatingConnections: 4, maxAuthenticatingPerAddress: 100 });
      const idle: Array<Awaited<ReturnType<typeof h.silent>>> = [];
      for (let i = 0; i < 20; i++) idle.push(await h.silent(`10.0.0.${i}`));
      // Room was made for each newcomer: the oldest silent ones are gone, four are left.
      await within(waitFor(() => idle.filter((c) => c.closed()).length === 16), 2000, 'the oldest silent sockets to be dropped');
      assert.deepEqual(
        idle.map((c) => c.closed()),
        idle.map((_, i) => i < 16),
      );
      assert.ok(h.errors.every((e) => e.error.code === 'CONNECTION_FAILED' && /gave way/.test(e.error.message)));
      for (let i = 0; i < 5; i++) {
        const conn = await within(h.login('10.1.0.1'), 5000, 'a standby to log in');
        await conn.end();
      }
      assert.equal(h.sessions.length, 5);
      for (const c of idle) c.stream.destroy();
      await h.server.close();
    });

    it('one address holds at most maxAuthenticatingPerAddress; its own oldest give way, not other addresses', async () => {
      const h = await limitedServer({ maxAuthenticatingConnections: 64, maxAuthenticatingPerAddress: 3 });
      const other = await h.silent('10.0.0.9');
      const idle: Array<Awaited<ReturnType<typeof h.silent>>> = [];
      for (let i = 0; i < 10; i++) idle.push(await h.silent('10.0.0.1'));
      await within(waitFor(() => idle.filter((c) => c.closed()).length === 7), 2000, 'the address to be held to three');
      assert.equal(other.closed(), false, 'another address keeps its connection');
      const conn = await within(h.login('10.0.0.1'), 5000, 'a standby behind the same address to log in');
      await conn.end();
      for (const c of [other, ...idle]) c.stream.destroy();
      await h.server.close();
    });

    it('a connection already refused gives way before one that is still authenticating', async () => {
      const h = await limitedServer({ maxAuthenticatingConnections: 2, maxAuthenticatingPerAddress: 100 });
      // A wrong password: refused, its answer delayed (authFailureDelayMs) while it holds a place.
      const guessing = h.login('10.0.0.1', 'wrong').then(
        () => null,
        (err: unknown) => err,
      );
      await within(waitFor(() => h.server.authFailures('10.0.0.1') === 1), 5000, 'the failed login');
      // A silent one arrives later than the refused one, yet the refused one goes first.
      const idle = await h.silent('10.0.0.2');
      const conn = await within(h.login('10.0.0.3'), 5000, 'a standby to log in');
      const error = await within(guessing, 5000, 'the refused login to end');
      assert.ok(isWalshipError(error as Error, 'CONNECTION_FAILED'), String(error));
      assert.equal(idle.closed(), false);
      await conn.end();
      idle.stream.destroy();
      await h.server.close();
    });
  });

  it('a message larger than the read-ahead bound still arrives (no stall while it is assembled)', async () => {
    const { PassThrough } = await import('node:stream');
    const { encodeMessage, baseBackupChunk } = await import('../../src/protocol/messages.js');
    const stream = new PassThrough();
    const conn = new MessageStream(stream, 'client', { readAheadBytes: 1024 });
    const frame = encodeMessage(baseBackupChunk(0, Buffer.alloc(8192, 3)));
    for (let at = 0; at < frame.length; at += 1000) stream.write(frame.subarray(at, at + 1000));
    const message = await within(conn.next(), 2000, 'the large message');
    assert.equal(message?.kind, 'baseBackupChunk');
  });
});
