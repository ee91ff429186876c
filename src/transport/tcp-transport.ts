import { X509Certificate } from 'node:crypto';
import { isIP, isIPv6, createServer as createNetServer, connect as netConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  connect as tlsConnect,
  createSecureContext,
  createServer as createTlsServer,
  type SecureContext,
  type SecureContextOptions,
  type SecureVersion,
  type TLSSocket,
} from 'node:tls';
import { WalshipError, abortError, errnoCode } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { compileOptions, withDefaults, type OptionsValidator } from '../options.js';
import type { Listener, PeerInfo, Transport } from './transport.js';

/** A PEM-encoded key or certificate: a string or the bytes of one. */
export type Pem = string | Buffer;

/**
 * TLS settings of a {@link TcpTransport}. The same object serves both ends: a listening
 * transport needs `key` and `cert`; a connecting one needs only `ca` (or nothing, to trust
 * the system's CA store), plus `key` and `cert` when the server asks for client certificates.
 */
export interface TcpTlsOptions {
  /** Private key (PEM) of this end's certificate. Required to listen; give it with `cert`. */
  key?: Pem;
  /** This end's certificate chain (PEM). Required to listen; give it with `key`. */
  cert?: Pem;
  /** Passphrase of an encrypted `key`. */
  passphrase?: string;
  /**
   * Certificate authorities that this end trusts to sign the peer's certificate: the
   * server's on a client, the clients' on a server that sets `requestCert`.
   * @defaultValue the system's (Node's) CA store
   */
  ca?: Pem | readonly Pem[];
  /**
   * Refuse a peer whose certificate cannot be verified: on a client, a server certificate
   * that is not signed by `ca` or does not match the server name; on a server with
   * `requestCert`, a missing or untrusted client certificate. Setting `false` is the only
   * way to connect unverified; `NODE_TLS_REJECT_UNAUTHORIZED` does not change it.
   * @defaultValue true
   */
  rejectUnauthorized?: boolean;
  /**
   * Client: the name the server's certificate must carry, and the SNI name sent.
   * @defaultValue the host of the address (an IP address is checked against the
   * certificate's IP entries and not sent as SNI)
   */
  servername?: string;
  /**
   * Server: ask clients for a certificate, verified against `ca` (and refused when missing
   * or untrusted unless `rejectUnauthorized` is `false`).
   * @defaultValue false
   */
  requestCert?: boolean;
  /**
   * The oldest TLS version accepted.
   * @defaultValue Node's default, `'TLSv1.2'`
   */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
}

/** Options of {@link TcpTransport}. */
export interface TcpTransportOptions {
  /**
   * Time allowed for a connect: the TCP connect plus, with TLS, the handshake. On a
   * listening TLS transport, also the time a client gets to finish its handshake.
   * @defaultValue 10 000
   */
  connectTimeoutMs?: number;
  /**
   * Enable TCP keepalive on every connection, so that a peer that vanished is noticed
   * even when no data flows.
   * @defaultValue true
   */
  keepAlive?: boolean;
  /**
   * Idle time before the first keepalive probe. Node counts whole seconds; 0 keeps the
   * operating system's default.
   * @defaultValue 10 000
   */
  keepAliveInitialDelayMs?: number;
  /**
   * Disable Nagle's algorithm, so small messages (acknowledgements, keepalives) leave at once.
   * @defaultValue true
   */
  noDelay?: boolean;
  /** Encrypt with TLS; verification of the server is on by default. Without it, plain TCP. */
  tls?: TcpTlsOptions;
  /** A prefix for this transport's `debug` lines (`walship:transport:tcp`). */
  logPrefix?: string;
}

/** Defaults of {@link TcpTransportOptions}. */
export const TCP_TRANSPORT_DEFAULTS = Object.freeze({
  /** A connect fails with `TIMEOUT` after 10 s. */
  connectTimeoutMs: 10_000,
  /** TCP keepalive is on, so a vanished peer is noticed even on an idle connection. */
  keepAlive: true,
  /** The first keepalive probe goes after 10 s of silence. */
  keepAliveInitialDelayMs: 10_000,
  /** Nagle's algorithm is off: small messages (status updates, keepalives) go out at once. */
  noDelay: true,
});

/** Defaults of {@link TcpTlsOptions}. */
export const TCP_TLS_DEFAULTS = Object.freeze({
  /** Untrusted or missing certificates are refused. */
  rejectUnauthorized: true,
  /** A server does not ask clients for certificates. */
  requestCert: false,
});

/** Largest delay `setTimeout` honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The literal behind {@link tcpTransportOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const tcpTransportSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    connectTimeoutMs: { type: 'integer', minimum: 1, maximum: MAX_TIMER_MS },
    keepAlive: { type: 'boolean' },
    keepAliveInitialDelayMs: { type: 'integer', minimum: 0, maximum: MAX_TIMER_MS },
    noDelay: { type: 'boolean' },
    logPrefix: { type: 'string' },
    tls: {
      type: 'object',
      additionalProperties: false,
      properties: {
        key: {},
        cert: {},
        passphrase: { type: 'string' },
        ca: {},
        rejectUnauthorized: { type: 'boolean' },
        servername: { type: 'string', minLength: 1 },
        requestCert: { type: 'boolean' },
        minVersion: { enum: ['TLSv1.2', 'TLSv1.3'] },
      },
    },
  },
});

/**
 * JSON schema of {@link TcpTransportOptions}. `key`, `cert` and `ca` may be Buffers, which
 * JSON Schema cannot describe; they are checked by type guards.
 */
export const tcpTransportOptionsSchema: typeof tcpTransportSchema = tcpTransportSchema;

const validateOptions: OptionsValidator<TcpTransportOptions> = compileOptions('TcpTransport', tcpTransportOptionsSchema);

/** True when `value` is a PEM string or a Buffer holding one. */
export function isPem(value: unknown): value is Pem {
  return typeof value === 'string' || Buffer.isBuffer(value);
}

/** True when `value` is what {@link TcpTlsOptions.ca} accepts: a PEM or a non-empty array of them. */
export function isPemList(value: unknown): value is Pem | readonly Pem[] {
  return isPem(value) || (Array.isArray(value) && value.length > 0 && value.every(isPem));
}

/** A parsed `host:port` or `[ipv6]:port` address. */
export interface TcpAddress {
  /** Host name or IP address, without brackets. */
  readonly host: string;
  /** The TCP port, 0–65535 (0 to listen on a free port; never to connect). */
  readonly port: number;
}

const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

/**
 * Parses a {@link TcpTransport} address: `host:port` (a host name or an IPv4 address) or
 * `[ipv6]:port`. Throws `INVALID_ARGUMENT` for anything else.
 */
export function parseTcpAddress(address: string): TcpAddress {
  if (typeof address !== 'string') {
    throw new WalshipError('INVALID_ARGUMENT', `a TCP address must be a string like "127.0.0.1:5432", got ${typeof address}`);
  }
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(address);
  const plain = bracketed === null ? /^([^:[\]]+):(\d{1,5})$/.exec(address) : null;
  const match = bracketed ?? plain;
  const host = match?.[1];
  const port = Number(match?.[2]);
  const hostOk =
    host !== undefined &&
    (bracketed !== null ? isIPv6(host) : isIP(host) === 4 || (HOST_NAME.test(host) && !/^[\d.]+$/.test(host)));
  if (!hostOk || !Number.isInteger(port) || port > 65_535) {
    throw new WalshipError(
      'INVALID_ARGUMENT',
      `invalid TCP address ${JSON.stringify(address)}: expected "host:port" or "[ipv6]:port" with a port from 0 to 65535`,
    );
  }
  return { host, port };
}

/** Formats a host and port as a {@link TcpTransport} address, bracketing IPv6 addresses. */
export function formatTcpAddress(host: string, port: number): string {
  return isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Errno codes that mean the network, not TLS, failed during a handshake. */
const NETWORK_ERRORS = new Set(['ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN']);

type Config = typeof TCP_TRANSPORT_DEFAULTS & Omit<TcpTransportOptions, 'tls'>;
type TlsConfig = typeof TCP_TLS_DEFAULTS & TcpTlsOptions;

/**
 * TCP transport, with optional TLS. Addresses are `host:port` or `[ipv6]:port`; listening
 * on port 0 binds a free port, shown in `Listener.address`.
 *
 * Accepted connections report the peer's address as the socket reports it: a server
 * listening on `[::]` sees IPv4 clients as IPv4-mapped addresses (`::ffff:127.0.0.1`),
 * and authentication rules match those against IPv4 ranges.
 *
 * With TLS, `connect` resolves and `onConnection` is called only after a successful
 * handshake. Under TLS 1.3 a client learns that the server refused its certificate only
 * after its handshake has finished, so such a refusal shows as the stream failing or
 * closing right after `connect` resolved.
 */
export class TcpTransport implements Transport {
  readonly name = 'tcp';

  /** Throws `INVALID_ARGUMENT` unless `address` is `host:port` or `[ipv6]:port` (see {@link parseTcpAddress}). */
  checkAddress(address: string): void {
    parseTcpAddress(address);
  }
  readonly #config: Config;
  readonly #tls: TlsConfig | undefined;
  readonly #clientContext: SecureContext | undefined;
  readonly #log: Logger;

  constructor(options: TcpTransportOptions = {}) {
    validateOptions(options);
    const tls = options.tls;
    if (tls !== undefined) {
      for (const field of ['key', 'cert'] as const) {
        if (tls[field] !== undefined && !isPem(tls[field])) {
          throw invalidOptions(`TcpTransport.tls.${field} must be a PEM string or a Buffer`);
        }
      }
      if (tls.ca !== undefined && !isPemList(tls.ca)) {
        throw invalidOptions('TcpTransport.tls.ca must be a PEM string, a Buffer or a non-empty array of them');
      }
      if (tls.ca !== undefined) checkCertificates(tls.ca);
      if ((tls.key === undefined) !== (tls.cert === undefined)) {
        throw invalidOptions('TcpTransport.tls.key and TcpTransport.tls.cert must be given together');
      }
    }
    const { tls: _tls, ...rest } = options;
    this.#config = withDefaults(TCP_TRANSPORT_DEFAULTS, rest);
    this.#tls = tls === undefined ? undefined : withDefaults(TCP_TLS_DEFAULTS, tls);
    this.#log = createLogger('transport:tcp', options.logPrefix);
    if (this.#tls !== undefined) {
      // Built once: checks the PEMs now, and spares every connect from parsing them again.
      try {
        this.#clientContext = createSecureContext(contextOptions(this.#tls));
      } catch (err) {
        throw new WalshipError('INVALID_OPTIONS', `invalid TcpTransport options: TcpTransport.tls: ${messageOf(err)}`, { cause: err });
      }
    }
  }

  /** Whether connections are encrypted with TLS. */
  get secure(): boolean {
    return this.#tls !== undefined;
  }

  async listen(
    address: string,
    onConnection: (stream: Duplex, peer: PeerInfo) => void,
    options: { signal?: AbortSignal } = {},
  ): Promise<Listener & AsyncDisposable> {
    const { host, port } = parseTcpAddress(address);
    if (typeof onConnection !== 'function') throw new WalshipError('INVALID_ARGUMENT', 'listen needs an onConnection function');
    const tls = this.#tls;
    if (tls !== undefined && (tls.key === undefined || tls.cert === undefined)) {
      throw invalidOptions('TcpTransport.tls.key and TcpTransport.tls.cert are required to listen with TLS');
    }
    const { signal } = options;
    if (signal?.aborted) throw abortError(signal);
    const server = tls === undefined ? createNetServer() : this.#createTlsServer(tls);
    const accepting = new AcceptingServer(server, this.#config, tls, onConnection, this.#log);
    await new Promise<void>((resolve, reject) => {
      const done = (err?: unknown): void => {
        server.off('listening', onListening);
        server.off('error', onError);
        signal?.removeEventListener('abort', onAbort);
        if (err === undefined) resolve();
        else {
          server.close();
          reject(err);
        }
      };
      const onListening = (): void => done();
      const onAbort = (): void => done(abortError(signal as AbortSignal));
      const onError = (err: unknown): void =>
        done(new WalshipError('CONNECTION_FAILED', `cannot listen on ${address}: ${messageOf(err)}`, { cause: err, transient: errnoCode(err) === 'EADDRINUSE' }));
      server.once('listening', onListening);
      server.once('error', onError);
      signal?.addEventListener('abort', onAbort, { once: true });
      server.listen({ host, port });
    });
    return accepting.listener();
  }

  async connect(address: string, options: { signal?: AbortSignal } = {}): Promise<Duplex> {
    const { host, port } = parseTcpAddress(address);
    if (port === 0) throw new WalshipError('INVALID_ARGUMENT', `cannot connect to port 0 (${address})`);
    const { signal } = options;
    if (signal?.aborted) throw abortError(signal);
    const config = this.#config;
    const tls = this.#tls;
    return new Promise<Duplex>((resolve, reject) => {
      let tcpConnected = false;
      const socket: Socket =
        tls === undefined
          ? netConnect({ host, port })
          : tlsConnect({
              host,
              port,
              secureContext: this.#clientContext as SecureContext,
              rejectUnauthorized: tls.rejectUnauthorized,
              // SNI carries names only; an IP address is checked against the certificate's IP entries.
              ...(tls.servername !== undefined ? { servername: tls.servername } : isIP(host) === 0 ? { servername: host } : {}),
            });
      configureSocket(socket, config);
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.off('connect', onTcpConnect);
        socket.off(tls === undefined ? 'connect' : 'secureConnect', onReady);
        socket.off('error', onError);
        socket.off('close', onClose);
      };
      const fail = (err: WalshipError): void => {
        cleanup();
        socket.on('error', ignore); // a late error of the destroyed socket must not go unhandled
        socket.destroy();
        this.#log('connect to %s failed: %s', address, err.message);
        reject(err);
      };
      const onTcpConnect = (): void => {
        tcpConnected = true;
      };
      const onReady = (): void => {
        cleanup();
        this.#log('connected to %s%s', address, tls === undefined ? '' : ' (tls)');
        resolve(socket);
      };
      const onError = (err: unknown): void => fail(connectError(address, err, tls !== undefined && tcpConnected));
      const onClose = (): void =>
        fail(new WalshipError('CONNECTION_FAILED', `connection to ${address} closed before it was established`, { transient: true }));
      const onAbort = (): void => fail(abortError(signal as AbortSignal));
      const timer = setTimeout(() => {
        const phase = tls !== undefined && tcpConnected ? 'TLS handshake' : 'connect';
        fail(new WalshipError('TIMEOUT', `${phase} to ${address} timed out after ${config.connectTimeoutMs} ms`, { transient: true }));
      }, config.connectTimeoutMs);
      socket.once('connect', onTcpConnect);
      socket.once(tls === undefined ? 'connect' : 'secureConnect', onReady);
      socket.on('error', onError);
      socket.once('close', onClose);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #createTlsServer(tls: TlsConfig): Server {
    return createTlsServer({
      ...contextOptions(tls),
      requestCert: tls.requestCert,
      rejectUnauthorized: tls.rejectUnauthorized,
      handshakeTimeout: this.#config.connectTimeoutMs,
    });
  }
}

/** Accepts connections for one `listen` call and hands them over once they are ready. */
class AcceptingServer {
  readonly #server: Server;
  readonly #config: Config;
  readonly #tls: boolean;
  readonly #requestCert: boolean;
  readonly #onConnection: (stream: Duplex, peer: PeerInfo) => void;
  readonly #log: Logger;
  /** TLS: accepted sockets whose handshake is in progress, by peer address and port. */
  readonly #handshaking = new Map<string, Socket>();
  #closing: Promise<void> | undefined;

  constructor(server: Server, config: Config, tls: TlsConfig | undefined, onConnection: (stream: Duplex, peer: PeerInfo) => void, log: Logger) {
    this.#server = server;
    this.#config = config;
    this.#tls = tls !== undefined;
    this.#requestCert = tls?.requestCert ?? false;
    this.#onConnection = onConnection;
    this.#log = log;
    // After listen, errors such as EMFILE on accept are logged; they must not crash the process.
    server.on('error', (err) => log.error('server error: %s', messageOf(err)));
    server.on('connection', (socket: Socket) => this.#onSocket(socket));
    if (tls !== undefined) {
      server.on('secureConnection', (socket: TLSSocket) => this.#onSecure(socket));
      server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
        log.error('TLS handshake with %s failed: %s', describePeer(socket), messageOf(err));
        socket.destroy();
      });
    }
  }

  listener(): Listener & AsyncDisposable {
    const bound = this.#server.address();
    const address = typeof bound === 'object' && bound !== null ? formatTcpAddress(bound.address, bound.port) : String(bound);
    this.#log('listening on %s%s', address, this.#tls ? ' (tls)' : '');
    const close = (): Promise<void> => this.#close(address);
    return { address, close, [Symbol.asyncDispose]: close };
  }

  #close(address: string): Promise<void> {
    this.#closing ??= (async () => {
      // Closes the listening socket at once; net.Server's own callback would also wait for
      // every accepted connection to end, which Listener.close() must not do.
      this.#server.close();
      for (const socket of this.#handshaking.values()) socket.destroy();
      this.#handshaking.clear();
      // libuv releases the closed handle in the close phase of the loop: two turns of the
      // check phase later it is gone, so nothing outlives close().
      await nextCheckPhase();
      await nextCheckPhase();
      this.#log('stopped listening on %s', address);
    })();
    return this.#closing;
  }

  #onSocket(socket: Socket): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    configureSocket(socket, this.#config);
    if (!this.#tls) {
      this.#deliver(socket, 'tcp', false);
      return;
    }
    const key = peerKey(socket);
    if (key === undefined) return; // already gone; the TLS server sees the failure
    this.#handshaking.set(key, socket);
    socket.once('close', () => {
      if (this.#handshaking.get(key) === socket) this.#handshaking.delete(key);
    });
  }

  #onSecure(socket: TLSSocket): void {
    const key = peerKey(socket);
    if (key !== undefined) this.#handshaking.delete(key);
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    // Encrypted, and the client's certificate verified when one was asked for (a server
    // with `rejectUnauthorized: false` also lets unverified clients in).
    this.#deliver(socket, 'tls', !this.#requestCert || socket.authorized);
  }

  #deliver(socket: Socket, kind: 'tcp' | 'tls', secure: boolean): void {
    const { remoteAddress, remotePort } = socket;
    const description = `${kind} ${describePeer(socket)}`;
    const peer: PeerInfo = {
      transport: 'tcp',
      ...(remoteAddress !== undefined ? { remoteAddress } : {}),
      ...(remotePort !== undefined ? { remotePort } : {}),
      secure,
      description,
    };
    this.#log('accepted %s', description);
    try {
      this.#onConnection(socket, peer);
    } catch (err) {
      this.#log.error('onConnection threw for %s: %s', description, messageOf(err));
      socket.destroy();
    }
  }
}

/** Node's TLS silently ignores a `ca` without a certificate in it; a mistake must not go unnoticed. */
function checkCertificates(ca: Pem | readonly Pem[]): void {
  (isPem(ca) ? [ca] : ca).forEach((pem, i) => {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new WalshipError('INVALID_OPTIONS', `invalid TcpTransport options: TcpTransport.tls.ca[${i}] is not a certificate: ${messageOf(err)}`, { cause: err });
    }
  });
}

function configureSocket(socket: Socket, config: Config): void {
  socket.setNoDelay(config.noDelay);
  socket.setKeepAlive(config.keepAlive, config.keepAliveInitialDelayMs);
}

function contextOptions(tls: TlsConfig): SecureContextOptions {
  return {
    ...(tls.key !== undefined ? { key: tls.key } : {}),
    ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
    ...(tls.passphrase !== undefined ? { passphrase: tls.passphrase } : {}),
    ...(tls.ca !== undefined ? { ca: typeof tls.ca === 'string' || Buffer.isBuffer(tls.ca) ? tls.ca : [...tls.ca] } : {}),
    ...(tls.minVersion !== undefined ? { minVersion: tls.minVersion as SecureVersion } : {}),
  };
}

/** Maps a failure of a pending connect to a coded error. */
function connectError(address: string, err: unknown, duringHandshake: boolean): WalshipError {
  const code = errnoCode(err);
  if (duringHandshake && (code === undefined || !NETWORK_ERRORS.has(code))) {
    return new WalshipError('TLS_FAILED', `TLS handshake with ${address} failed: ${messageOf(err)}`, { cause: err });
  }
  return new WalshipError('CONNECTION_FAILED', `cannot connect to ${address}: ${messageOf(err)}`, { cause: err, transient: true });
}

function peerKey(socket: Socket): string | undefined {
  const { remoteAddress, remotePort } = socket;
  return remoteAddress === undefined || remotePort === undefined ? undefined : `${remoteAddress}|${remotePort}`;
}

function describePeer(socket: Socket): string {
  const { remoteAddress, remotePort } = socket;
  return remoteAddress === undefined || remotePort === undefined ? '(unknown peer)' : formatTcpAddress(remoteAddress, remotePort);
}

function nextCheckPhase(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function invalidOptions(problem: string): WalshipError {
  return new WalshipError('INVALID_OPTIONS', `invalid TcpTransport options: ${problem}`);
}

function messageOf(err: unknown): string {
  if (err instanceof Error) {
    const code = errnoCode(err);
    return code !== undefined && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

function ignore(): void {}
