import type { Duplex } from 'node:stream';
import type { Listener, PeerInfo, Transport } from '../../src/index.js';

/**
 * Wraps a transport so a test can cut every connection it made, as a network failure
 * would: `kill()` destroys the client ends of all open connections.
 */
export class KillableTransport implements Transport {
  readonly name: string;
  readonly #open = new Set<Duplex>();
  kills = 0;

  constructor(private readonly inner: Transport) {
    this.name = `killable-${inner.name}`;
  }

  listen(address: string, onConnection: (stream: Duplex, peer: PeerInfo) => void, options?: { signal?: AbortSignal }): Promise<Listener> {
    return this.inner.listen(address, onConnection, options);
  }

  async connect(address: string, options?: { signal?: AbortSignal }): Promise<Duplex> {
    const stream = await this.inner.connect(address, options);
    this.#open.add(stream);
    stream.once('close', () => this.#open.delete(stream));
    return stream;
  }

  /** Destroys every open connection; returns how many there were. */
  kill(): number {
    const n = this.#open.size;
    for (const stream of this.#open) stream.destroy(new Error('connection killed by the test'));
    this.#open.clear();
    if (n > 0) this.kills++;
    return n;
  }
}
