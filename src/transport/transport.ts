import type { Duplex } from 'node:stream';

/**
 * A transport yields ordered, reliable byte streams between two endpoints. Framing,
 * authentication and the replication protocol are walship's and sit above it, so anything
 * that carries bytes (TCP, TLS, a Unix socket, a WebSocket stream, an SSH channel) becomes
 * a transport in a few lines.
 *
 * Contract, checked by `transportConformance()` from `walship/testing`:
 * - bytes arrive in order, complete and unaltered;
 * - a stream honours backpressure (a peer that stops reading stops the writer's buffering
 *   beyond a bound);
 * - ending or destroying one side is seen by the other side exactly once (`end` or `close`,
 *   and an `error` only for real failures);
 * - `connect` rejects when its signal aborts, and `listen`'s `Listener.close()` stops
 *   accepting and releases the address.
 */
export interface Transport {
  /** A short name for logs and errors: `'tcp'`, `'memory'`, `'my-quic'`. */
  readonly name: string;
  /**
   * Accepts connections at `address`, calling `onConnection` for each. Resolves once the
   * transport is accepting; `Listener.address` is the address actually bound (a port 0 is
   * resolved). Aborting `signal` before that rejects and binds nothing.
   */
  listen(address: string, onConnection: (stream: Duplex, peer: PeerInfo) => void, options?: { signal?: AbortSignal }): Promise<Listener>;
  /** Opens a stream to `address`; rejects if it cannot, or when `signal` aborts first. */
  connect(address: string, options?: { signal?: AbortSignal }): Promise<Duplex>;
  /**
   * Optional: throws when `address` is not in this transport's address syntax. Nodes call it
   * when they open, so that a typo is `INVALID_OPTIONS` at once instead of a standby retrying
   * for ever. Transports without it accept any string until they connect.
   */
  checkAddress?(address: string): void;
}

/** Who is on the other end of an accepted stream. */
export interface PeerInfo {
  /** The transport's name. */
  readonly transport: string;
  /**
   * The peer's IP address (`'127.0.0.1'`, `'::1'`) when the transport has one: the
   * authentication rules match it against CIDR ranges. Transports without IP addresses
   * (Unix sockets, in-process pipes) leave it undefined; only rules with address `'all'`
   * match such peers.
   */
  readonly remoteAddress?: string;
  /** The peer's port, when the transport has ports. */
  readonly remotePort?: number;
  /**
   * Whether the stream is encrypted (TLS) and, where the server asks for client
   * certificates, the client's certificate verified. It says nothing about the client's
   * identity otherwise: authentication decides that.
   */
  readonly secure?: boolean;
  /** A description for logs, e.g. `'tcp 127.0.0.1:53122'`. */
  readonly description: string;
}

/** A listening endpoint, from {@link Transport.listen}. */
export interface Listener {
  /** The bound address, in the transport's address syntax (port 0 resolved). */
  readonly address: string;
  /** Stops accepting new connections and releases the address. Existing streams stay open. Idempotent. */
  close(): Promise<void>;
}
