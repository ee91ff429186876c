/**
 * Transports with one deliberate defect each, for testing that the conformance suite
 * catches it. Each wraps a {@link MemoryTransport}'s streams in a {@link ProxyStream};
 * with no defect the wrapper is faithful (and must pass the whole suite), so a failure
 * of a broken one comes from its defect, not from the wrapping.
 */
import { Duplex } from 'node:stream';
import type { Listener, PeerInfo, Transport } from '../../src/transport/transport.js';
import { MemoryTransport } from '../../src/transport/memory-transport.js';

type Callback = (err?: Error | null) => void;

/** What a broken transport does differently; every hook is optional. */
export interface Defect {
  /** Writes `chunk` to the inner stream in its own way (the faithful way is `inner.write(chunk, callback)`). */
  write?(proxy: ProxyStream, chunk: Buffer, callback: Callback): void;
  /** Runs when the writable side ends, before the inner stream is ended; return false to not end it. */
  final?(proxy: ProxyStream): boolean;
  /** Called once per stream after it is created. */
  created?(proxy: ProxyStream): void;
  /** Options of the proxy stream (e.g. a huge `writableHighWaterMark`). */
  streamOptions?: { writableHighWaterMark?: number };
  /** Connects without passing the signal on. */
  ignoreSignals?: boolean;
  /** `Listener.close()` resolves without closing. */
  keepListening?: boolean;
}

/** A Duplex in front of another one, forwarding data, ends, errors and backpressure. */
export class ProxyStream extends Duplex {
  /** How many chunks were written so far. */
  writes = 0;
  #innerEnded = false;

  constructor(
    readonly inner: Duplex,
    readonly role: 'client' | 'server',
    private readonly defect: Defect,
  ) {
    super({ allowHalfOpen: false, ...defect.streamOptions });
    inner.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('end', () => {
      this.#innerEnded = true;
      this.push(null);
    });
    inner.on('error', (err) => this.destroy(err));
    // A close after a normal end lets the proxy finish on its own, keeping unread data.
    inner.on('close', () => {
      if (!this.#innerEnded) this.destroy();
    });
    defect.created?.(this);
  }

  override _read(): void {
    this.inner.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    this.writes++;
    if (this.defect.write !== undefined) this.defect.write(this, chunk, callback);
    else this.inner.write(chunk, callback);
  }

  override _final(callback: Callback): void {
    if (this.defect.final?.(this) !== false) this.inner.end();
    callback();
  }

  override _destroy(err: Error | null, callback: Callback): void {
    // After a normal end in both directions the inner stream closes on its own; destroying
    // it could cut off bytes it still has to deliver.
    if (err !== null || !this.writableFinished || !this.readableEnded) this.inner.destroy();
    callback(err);
  }
}

/** A transport over a fresh {@link MemoryTransport} whose streams have `defect`. */
export class BrokenTransport implements Transport {
  readonly inner = new MemoryTransport();

  constructor(
    readonly name: string,
    private readonly defect: Defect = {},
  ) {}

  async listen(address: string, onConnection: (stream: Duplex, peer: PeerInfo) => void, options: { signal?: AbortSignal } = {}): Promise<Listener> {
    const listener = await this.inner.listen(
      address,
      (stream, peer) => onConnection(new ProxyStream(stream, 'server', this.defect), { ...peer, transport: this.name }),
      this.defect.ignoreSignals === true ? {} : options,
    );
    if (this.defect.keepListening !== true) return listener;
    return { address: listener.address, close: async () => {} };
  }

  async connect(address: string, options: { signal?: AbortSignal } = {}): Promise<Duplex> {
    const stream = await this.inner.connect(address, this.defect.ignoreSignals === true ? {} : options);
    return new ProxyStream(stream, 'client', this.defect);
  }
}

/** Swaps every 7th chunk with the one after it. */
export function reordering(): BrokenTransport {
  const held = new WeakMap<ProxyStream, Buffer>();
  return new BrokenTransport('reordering', {
    write(proxy, chunk, callback) {
      const previous = held.get(proxy);
      if (previous !== undefined) {
        held.delete(proxy);
        proxy.inner.write(chunk);
        proxy.inner.write(previous, callback);
      } else if (proxy.writes % 7 === 0) {
        held.set(proxy, chunk);
        callback();
      } else {
        proxy.inner.write(chunk, callback);
      }
    },
    final(proxy) {
      const previous = held.get(proxy);
      if (previous !== undefined) proxy.inner.write(previous);
      return true;
    },
  });
}

/** Loses every 11th chunk, while telling the writer that it was sent. */
export function dropping(): BrokenTransport {
  return new BrokenTransport('dropping', {
    write(proxy, chunk, callback) {
      if (proxy.writes % 11 === 0) callback();
      else proxy.inner.write(chunk, callback);
    },
  });
}

/** Accepts every write at once and buffers it: write() never returns false. */
export function unbounded(): BrokenTransport {
  return new BrokenTransport('unbounded', {
    streamOptions: { writableHighWaterMark: 2 ** 30 },
    write(proxy, chunk, callback) {
      proxy.inner.write(chunk);
      callback();
    },
  });
}

/** Emits 'close' a second time. */
export function closingTwice(): BrokenTransport {
  return new BrokenTransport('closing-twice', {
    created(proxy) {
      proxy.once('close', () => setImmediate(() => proxy.emit('close')));
    },
  });
}

/** Never tells the other side that this side ended. */
export function silentEnd(): BrokenTransport {
  return new BrokenTransport('silent-end', { final: () => false });
}

/** Connects and listens as if no signal were given. */
export function ignoringAbort(): BrokenTransport {
  return new BrokenTransport('ignoring-abort', { ignoreSignals: true });
}

/** Writes every 13th chunk of a client to another open client connection. */
export function crossing(): BrokenTransport {
  const clients = new Set<ProxyStream>();
  return new BrokenTransport('crossing', {
    created(proxy) {
      if (proxy.role !== 'client') return;
      clients.add(proxy);
      proxy.once('close', () => clients.delete(proxy));
    },
    write(proxy, chunk, callback) {
      const other = proxy.role === 'client' && proxy.writes % 13 === 0 ? [...clients].find((c) => c !== proxy && !c.inner.writableEnded) : undefined;
      (other ?? proxy).inner.write(chunk, callback);
    },
  });
}

/** `Listener.close()` resolves, but the listener goes on accepting. */
export function leakyListener(): BrokenTransport {
  return new BrokenTransport('leaky-listener', { keepListening: true });
}
