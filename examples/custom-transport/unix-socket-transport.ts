import { createConnection, createServer } from 'node:net';
import type { Duplex } from 'node:stream';
import { WalshipError, type Listener, type PeerInfo, type Transport } from 'walship';

/**
 * A walship transport over Unix domain sockets: for a primary and standbys on one host.
 * Addresses are socket paths (`/run/walship/primary.sock`). A `net.Socket` already is an
 * ordered, reliable byte stream with backpressure, so the transport only opens and accepts
 * sockets; framing, authentication and the protocol are walship's.
 */
export class UnixSocketTransport implements Transport {
  readonly name = 'unix';

  /** Nodes call this when they open, so a bad address is `INVALID_OPTIONS` at once, not a standby retrying for ever. */
  checkAddress(path: string): void {
    checkPath(path);
  }

  async listen(path: string, onConnection: (stream: Duplex, peer: PeerInfo) => void, options: { signal?: AbortSignal } = {}): Promise<Listener> {
    checkPath(path);
    if (options.signal?.aborted) throw aborted(options.signal);
    // A Unix socket peer has no IP address: only authentication rules for address 'all' match it.
    const server = createServer((socket) => onConnection(socket, { transport: this.name, description: `unix ${path}` }));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject); // e.g. EADDRINUSE: the path exists (remove a stale socket file first)
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', () => {}); // an accept error (EMFILE) must not crash the process
    let closed = false;
    return {
      address: path,
      // server.close() stops accepting and removes the socket file at once; its callback
      // would wait for every open connection to end, which Listener.close() must not do.
      close: async () => {
        if (!closed) server.close();
        closed = true;
      },
    };
  }

  async connect(path: string, options: { signal?: AbortSignal } = {}): Promise<Duplex> {
    checkPath(path);
    const { signal } = options;
    if (signal?.aborted) throw aborted(signal);
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const settle = (err?: WalshipError): void => {
        signal?.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        if (err === undefined) return resolve(socket);
        socket.destroy();
        reject(err);
      };
      const onAbort = (): void => settle(aborted(signal as AbortSignal));
      const onError = (err: Error): void =>
        settle(new WalshipError('CONNECTION_FAILED', `cannot connect to ${path}: ${err.message}`, { cause: err, transient: true }));
      socket.once('connect', () => settle());
      socket.once('error', onError);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

// sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
const MAX_PATH_BYTES = 103;

function checkPath(path: string): void {
  if (typeof path !== 'string' || path === '') throw new WalshipError('INVALID_ARGUMENT', 'a Unix socket address is a non-empty path');
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) {
    throw new WalshipError('INVALID_ARGUMENT', `a Unix socket path has at most ${MAX_PATH_BYTES} bytes (${path} has ${Buffer.byteLength(path)}): use a shorter or a relative one`);
  }
}

function aborted(signal: AbortSignal): WalshipError {
  return new WalshipError('ABORTED', 'the operation was aborted', { cause: signal.reason });
}
