import type { Duplex } from 'node:stream';
import { WalshipError, isWalshipError } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { createLogger, type Logger } from '../logger.js';
import type { Listener, PeerInfo, Transport } from '../transport/transport.js';
import type { CompiledAuth } from './auth-rules.js';
import { serverHandshake, type AuthFailure, type AuthenticatedPeer } from './handshake.js';
import { MessageStream } from './message-stream.js';
import { currentScheduler } from '../scheduler.js';

/** An authenticated replication connection, handed to the code that serves its commands. */
export interface ServerSession extends AuthenticatedPeer {
  /** Where the connection came from. */
  readonly peer: PeerInfo;
  /** The authenticated connection, ready for commands; the session's owner closes it. */
  readonly conn: MessageStream<'server'>;
}

/** Payload of `auth:failed`: who failed, why (never sent to the client), and how often from that address. */
export interface AuthFailedEvent extends AuthFailure {
  /** Failures from this address since the server started (or since it was last forgotten). */
  readonly failuresFromAddress: number;
}

/** Payload of `connection:error`: a connection that ended with an error before or during its handshake. */
export interface ConnectionErrorEvent {
  /** Where the connection came from. */
  readonly peer: PeerInfo;
  /** Why it ended: `AUTH_FAILED` (after its `auth:failed` event), `TIMEOUT` (a handshake too slow), `PROTOCOL_ERROR`, `PROTOCOL_VERSION`, `CONNECTION_FAILED`. */
  readonly error: WalshipError;
}

/** Events of a {@link ReplicationServer}. */
export interface ReplicationServerEvents {
  /** A peer authenticated; the listener owns `session.conn` from here on. */
  session: (session: ServerSession) => void;
  /** A peer failed to authenticate; it is told `AUTH_FAILED` after `authFailureDelayMs`. */
  'auth:failed': (event: AuthFailedEvent) => void;
  /** A connection ended with an error before or during its handshake. */
  'connection:error': (event: ConnectionErrorEvent) => void;
}

/** Limits on connections that have not authenticated yet (a primary's and a cascading standby's options). */
export interface AuthenticationLimits {
  /** The whole handshake must finish within this time (`authentication_timeout`). @defaultValue 10 000 */
  readonly handshakeTimeoutMs?: number;
  /** Delay before an authentication failure is answered. @defaultValue 250 */
  readonly authFailureDelayMs?: number;
  /**
   * Connections authenticating at once. A new connection beyond it takes the place of the one
   * that has done least: one already refused (waiting out `authFailureDelayMs`), else the one
   * that got least far in the handshake and has been silent longest. @defaultValue 64
   */
  readonly maxAuthenticatingConnections?: number;
  /** Connections authenticating at once from one address; beyond it, as above among that address's. @defaultValue 8 */
  readonly maxAuthenticatingPerAddress?: number;
}

/** Options of {@link ReplicationServer}. */
export interface ReplicationServerOptions extends AuthenticationLimits {
  /** The transport to listen on. */
  readonly transport: Transport;
  /** The address to listen on, in the transport's format (`'host:port'` for TCP). */
  readonly address: string;
  /** Who may connect, from {@link compileAuth}. */
  readonly auth: CompiledAuth;
  /** Put in front of this server's `walship:server` debug lines, to tell two nodes in one process apart. */
  readonly logPrefix?: string;
}

/** A connection authenticating: how far it got, for choosing which one makes room. */
interface Pending {
  readonly conn: MessageStream<'server'>;
  readonly address: string;
  /** Handshake messages received from the client. */
  received: number;
  /** When the client last sent a byte (or connected). */
  heardAt: number;
  /** Authentication failed: only its delayed answer is left. */
  refused: boolean;
}

/** Largest frame a client may send: its biggest message (a startup with every option) is about 40 KiB. */
const MAX_CLIENT_FRAME_BYTES = 64 * 1024;

/**
 * What an authenticated session may have decoded and waiting (commands, status updates,
 * feedback): far more than a standby ever sends ahead of the server.
 */
export const SESSION_READ_AHEAD_BYTES = 256 * 1024;

/** Whether `a` has done less than `b` toward authenticating (it gives way first). */
function leastDone(a: Pending, b: Pending): boolean {
  if (a.refused !== b.refused) return a.refused;
  if (a.received !== b.received) return a.received < b.received;
  return a.heardAt < b.heardAt;
}

/** How many addresses' failure counts are remembered; the oldest are forgotten first. */
const MAX_TRACKED_ADDRESSES = 10_000;

/**
 * Accepts replication connections on a transport, authenticates each (in parallel, each
 * bounded by the handshake timeout) and emits the authenticated ones as `session`. A
 * connection that sends garbage or fails to authenticate ends alone, with an event and a
 * log line; the server and every other connection carry on.
 */
export class ReplicationServer extends SafeEmitter<ReplicationServerEvents> {
  readonly #options: Required<Omit<ReplicationServerOptions, 'logPrefix'>>;
  readonly #log: Logger;
  readonly #handshaking = new Map<MessageStream<'server'>, Pending>();
  readonly #failures = new Map<string, number>();
  #listener: Listener | null = null;
  #closing: Promise<void> | null = null;

  constructor(options: ReplicationServerOptions) {
    super();
    this.#options = { handshakeTimeoutMs: 10_000, authFailureDelayMs: 250, maxAuthenticatingConnections: 64, maxAuthenticatingPerAddress: 8, ...options };
    this.#log = createLogger('server', options.logPrefix);
    this.emitterLog = this.#log;
  }

  /** The bound address once listening. */
  get address(): string | null {
    return this.#listener?.address ?? null;
  }

  /** Authentication failures counted for `address`. */
  authFailures(address: string): number {
    return this.#failures.get(address) ?? 0;
  }

  /** Starts accepting connections. */
  async listen(options: { signal?: AbortSignal } = {}): Promise<string> {
    if (this.#closing !== null) throw new WalshipError('WAL_CLOSED', 'the replication server is closed');
    this.#listener = await this.#options.transport.listen(this.#options.address, (stream, peer) => this.#accept(stream, peer), options);
    this.#log('listening on %s (%s)', this.#listener.address, this.#options.transport.name);
    return this.#listener.address;
  }

  /** Stops accepting and drops connections still authenticating. Sessions already handed out are their owner's. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#listener?.close();
      for (const conn of this.#handshaking.keys()) conn.destroy();
      await Promise.all([...this.#handshaking.keys()].map((conn) => conn.closed));
    })();
    return this.#closing;
  }

  #accept(stream: Duplex, peer: PeerInfo): void {
    if (this.#closing !== null) {
      stream.destroy();
      return;
    }
    // No client message is anywhere near this big; a peer that declares more is cut off
    // before it can make an unauthenticated connection hold megabytes.
    // While it authenticates a peer gets one decoded message ahead: the handshake is strictly
    // question and answer, and whatever else it sends waits undecoded (a chunk at most).
    const conn = new MessageStream(stream, 'server', { maxFrameBytes: MAX_CLIENT_FRAME_BYTES, readAheadBytes: 0 });
    const pending: Pending = { conn, address: peer.remoteAddress ?? peer.description, received: 0, heardAt: currentScheduler().monotonic(), refused: false };
    this.#makeRoom(pending.address);
    this.#handshaking.set(conn, pending);
    const heard = (): void => {
      pending.heardAt = currentScheduler().monotonic();
    };
    stream.on('data', heard);
    serverHandshake(conn, peer, {
      auth: this.#options.auth,
      timeoutMs: this.#options.handshakeTimeoutMs,
      failureDelayMs: this.#options.authFailureDelayMs,
      onFailure: (failure) => {
        pending.refused = true;
        this.#onAuthFailure(failure);
      },
      onMessage: () => {
        pending.received++;
      },
    }).then(
      (authenticated) => {
        this.#handshaking.delete(conn);
        stream.off('data', heard);
        if (this.#closing !== null) {
          conn.destroy();
          return;
        }
        conn.setReadAhead(SESSION_READ_AHEAD_BYTES);
        this.#log('%s authenticated as %s (%s, application %s)', peer.description, authenticated.user, authenticated.method, authenticated.applicationName);
        this.emitSafely('session', { ...authenticated, peer, conn });
      },
      (err: unknown) => {
        this.#handshaking.delete(conn);
        const error = isWalshipError(err) ? err : new WalshipError('PROTOCOL_ERROR', String(err));
        if (error.code !== 'AUTH_FAILED') this.#log.error('connection from %s failed: %s', peer.description, error.message);
        this.emitSafely('connection:error', { peer, error });
      },
    );
  }

  /**
   * Makes room for a new connection from `address` when its address, or the server, has as
   * many authenticating as allowed: the connection that has done least gives way (one already
   * refused, then the fewest handshake messages received, then the longest silent), so that
   * sockets held open without a word never keep a standby out; an honest client answers each
   * step of the handshake at once.
   */
  #makeRoom(address: string): void {
    const all = [...this.#handshaking.values()];
    const fromAddress = all.filter((p) => p.address === address);
    const among =
      fromAddress.length >= this.#options.maxAuthenticatingPerAddress ? fromAddress : all.length >= this.#options.maxAuthenticatingConnections ? all : null;
    if (among === null || among.length === 0) return;
    const least = among.reduce((a, b) => (leastDone(b, a) ? b : a));
    this.#handshaking.delete(least.conn);
    const limit = among === fromAddress ? `${this.#options.maxAuthenticatingPerAddress} from ${address}` : `${this.#options.maxAuthenticatingConnections}`;
    const error = new WalshipError('CONNECTION_FAILED', `too many connections authenticating at once (${limit}): this one gave way to a newer one`, { transient: true });
    this.#log.error('dropped a connection from %s that was authenticating: %s', least.address, error.message);
    least.conn.fail(error);
  }

  #onAuthFailure(failure: AuthFailure): void {
    const key = failure.peer.remoteAddress ?? failure.peer.description;
    const count = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.delete(key);
    this.#failures.set(key, count);
    if (this.#failures.size > MAX_TRACKED_ADDRESSES) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    this.#log.error('authentication failed for user "%s" from %s: %s (failure %d from this address)', failure.user, failure.peer.description, failure.reason, count);
    this.emitSafely('auth:failed', { ...failure, failuresFromAddress: count });
  }
}
