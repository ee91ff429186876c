import { isIP } from 'node:net';
import { Duplex } from 'node:stream';
import { WalshipError, abortError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { compileOptions, withDefaults, type OptionsValidator } from '../options.js';
import type { Listener, PeerInfo, Transport } from './transport.js';
import { clearTimer, currentScheduler, type SchedulerTimer } from '../scheduler.js';

/** Options of the {@link MemoryNetwork} constructor. */
export interface MemoryNetworkOptions {
  /**
   * Bytes in flight per direction of a stream (what a socket's send and receive buffers
   * hold), on top of each stream's own `highWaterMark`. A peer that stops reading stops
   * the writer once this much is queued.
   * @defaultValue 65536
   */
  bufferBytes?: number;
  /** A prefix for this network's `debug` lines (`walship:transport:memory`). */
  logPrefix?: string;
}

/** Options of {@link MemoryNetwork.transport}. */
export interface MemoryEndpointOptions {
  /**
   * The IP address this endpoint connects from: the listening side sees it as
   * {@link PeerInfo.remoteAddress}, so authentication rules with CIDR ranges can be tested.
   * `null` gives peers no address at all, like a Unix socket.
   * @defaultValue '127.0.0.1'
   */
  ip?: string | null;
}

/** Options of the {@link MemoryTransport} constructor. */
export interface MemoryTransportOptions extends MemoryEndpointOptions {
  /** The network to join. @defaultValue a new network of its own */
  network?: MemoryNetwork;
  /** This endpoint's name, which fault controls and partitions refer to. @defaultValue 'local' */
  endpoint?: string;
}

/** Defaults of {@link MemoryNetworkOptions}. */
export const MEMORY_NETWORK_DEFAULTS = Object.freeze({
  /** 64 KiB in flight per direction of a stream. */
  bufferBytes: 64 * 1024,
});

/** The literal behind {@link memoryNetworkOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const memoryNetworkSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    bufferBytes: { type: 'integer', minimum: 1, maximum: 1024 * 1024 * 1024 },
    logPrefix: { type: 'string' },
  },
});

/** JSON schema of {@link MemoryNetworkOptions}. */
export const memoryNetworkOptionsSchema: typeof memoryNetworkSchema = memoryNetworkSchema;

/** The literal behind {@link memoryTransportOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const memoryTransportSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    network: {},
    endpoint: { type: 'string', minLength: 1 },
    ip: { type: ['string', 'null'] },
  },
});

/** JSON schema of the JSON-describable {@link MemoryTransportOptions} (`network` is checked by a type guard). */
export const memoryTransportOptionsSchema: typeof memoryTransportSchema = memoryTransportSchema;

const validateNetworkOptions: OptionsValidator<MemoryNetworkOptions> = compileOptions('MemoryNetwork', memoryNetworkOptionsSchema);
const validateTransportOptions: OptionsValidator<MemoryTransportOptions> = compileOptions(
  'MemoryTransport',
  memoryTransportOptionsSchema,
);

/** What the fault controls currently impose on the link between two endpoints. */
interface LinkState {
  readonly stalled: boolean;
  readonly latencyMs: number;
  readonly bytesPerSecond: number;
}

/** A fault setting for the links that `a` and `b` select (see {@link linkMatches}). */
interface Rule<T> {
  readonly a: string | undefined;
  readonly b: string | undefined;
  readonly value: T;
}

interface ListenerEntry {
  readonly address: string;
  readonly endpoint: string;
  readonly onConnection: (stream: Duplex, peer: PeerInfo) => void;
}

interface PendingConnect {
  readonly from: MemoryTransport;
  readonly address: string;
  resolve(stream: Duplex): void;
  reject(err: unknown): void;
}

/** What a connection needs from its network. */
interface LinkSource {
  readonly bufferBytes: number;
  /** Bumped by every change of the fault controls. */
  version(): number;
  state(x: string, y: string): LinkState;
  forget(connection: Connection): void;
}

/** The network's entry points for {@link MemoryTransport}, kept off its public surface. */
let internals: {
  listen(network: MemoryNetwork, from: MemoryTransport, address: string, onConnection: ListenerEntry['onConnection']): Listener & AsyncDisposable;
  connect(network: MemoryNetwork, from: MemoryTransport, address: string, signal: AbortSignal | undefined): Promise<Duplex>;
};

/**
 * An in-process network that {@link MemoryTransport} endpoints share: a registry of
 * listening addresses plus fault controls that act on the links between endpoints, for
 * tests and simulations.
 *
 * Fault controls select links by endpoint name: with no names, every link; with one name,
 * every link that has that endpoint at either end; with two, the link between those two
 * (both directions). When several settings of one kind select a link, the latest wins.
 * They act at once on existing streams and on new ones.
 *
 * ```ts
 * const net = new MemoryNetwork();
 * const primary = net.transport('primary');
 * const standby = net.transport('s1', { ip: '10.0.0.2' });
 * await primary.listen('primary:7001', onConnection);
 * const stream = await standby.connect('primary:7001');
 * net.partition(['primary'], ['s1']);   // new connects fail, `stream` stalls
 * net.heal();                           // `stream` carries on
 * ```
 */
export class MemoryNetwork {
  /** Bytes in flight per direction of each stream. */
  readonly bufferBytes: number;
  readonly #log: Logger;
  readonly #listeners = new Map<string, ListenerEntry>();
  readonly #connections = new Set<Connection>();
  readonly #pending = new Set<PendingConnect>();
  #latency: Rule<number>[] = [];
  #bandwidth: Rule<number>[] = [];
  #stalls: Rule<boolean>[] = [];
  #partitions: Array<{ readonly a: ReadonlySet<string>; readonly b: ReadonlySet<string> }> = [];
  #version = 0;
  #nextPort = 1;
  readonly #links: LinkSource;

  static {
    internals = {
      listen: (network, from, address, onConnection) => network.#listen(from, address, onConnection),
      connect: (network, from, address, signal) => network.#connect(from, address, signal),
    };
  }

  constructor(options: MemoryNetworkOptions = {}) {
    validateNetworkOptions(options);
    const config = withDefaults(MEMORY_NETWORK_DEFAULTS, options);
    this.bufferBytes = config.bufferBytes;
    this.#log = createLogger('transport:memory', config.logPrefix);
    this.#links = {
      bufferBytes: config.bufferBytes,
      version: () => this.#version,
      state: (x, y) => this.#linkState(x, y),
      forget: (connection) => void this.#connections.delete(connection),
    };
  }

  /** A transport for the endpoint `name` on this network. */
  transport(name: string, options: MemoryEndpointOptions = {}): MemoryTransport {
    return new MemoryTransport({ ...options, network: this, endpoint: name });
  }

  /** Open connections (not yet closed on both sides). */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /**
   * Delays every chunk (and every end) by `ms` in each direction of the selected links.
   * Order is kept. `latency(0)` removes all latency.
   */
  latency(ms: number, endpointA?: string, endpointB?: string): void {
    if (!Number.isFinite(ms) || ms < 0) throw argumentError(`latency must be a finite number of milliseconds >= 0, got ${String(ms)}`);
    this.#latency = addRule(this.#latency, selector(endpointA, endpointB), ms);
    this.#changed(`latency ${ms} ms`, endpointA, endpointB);
  }

  /**
   * Limits each direction of each stream on the selected links to `bytesPerSecond`;
   * data beyond it waits, none is lost. `bandwidth(Infinity)` removes all limits.
   */
  bandwidth(bytesPerSecond: number, endpointA?: string, endpointB?: string): void {
    if (!(bytesPerSecond > 0)) throw argumentError(`bandwidth must be a number of bytes per second > 0 (Infinity for no limit), got ${String(bytesPerSecond)}`);
    this.#bandwidth = addRule(this.#bandwidth, selector(endpointA, endpointB), bytesPerSecond);
    this.#changed(`bandwidth ${bytesPerSecond} B/s`, endpointA, endpointB);
  }

  /**
   * Stops delivering on the selected links without closing anything, as a hung peer or a
   * black-holed route does: writers fill the buffers and then see backpressure, ends and
   * destroys are not seen by the other side, and new connects stay pending (until
   * {@link resume}, or until their signal aborts).
   */
  stall(endpointA?: string, endpointB?: string): void {
    this.#stalls = addRule(this.#stalls, selector(endpointA, endpointB), true);
    this.#changed('stall', endpointA, endpointB);
  }

  /** Undoes {@link stall} for the selected links; with no names, for all of them. */
  resume(endpointA?: string, endpointB?: string): void {
    this.#stalls = addRule(this.#stalls, selector(endpointA, endpointB), false);
    this.#changed('resume', endpointA, endpointB);
  }

  /**
   * Abruptly resets every open stream on the selected links: both sides emit an `error`
   * with code `'ECONNRESET'` and close; data in flight is lost. Pending connects on those
   * links fail with `CONNECTION_FAILED`. Returns how many streams were reset.
   */
  reset(endpointA?: string, endpointB?: string): number {
    const sel = selector(endpointA, endpointB);
    let count = 0;
    for (const connection of [...this.#connections]) {
      if (!linkMatches(sel, connection.client, connection.server)) continue;
      connection.reset();
      this.#connections.delete(connection);
      count++;
    }
    for (const pending of [...this.#pending]) {
      const target = this.#listeners.get(pending.address);
      if (target === undefined || !linkMatches(sel, pending.from.endpoint, target.endpoint)) continue;
      this.#pending.delete(pending);
      pending.reject(connectionFailed(`memory: connection to "${pending.address}" was reset`, systemError('ECONNRESET', 'connect', pending.address)));
    }
    this.#log('reset %d streams between %s and %s', count, endpointA ?? '*', endpointB ?? '*');
    return count;
  }

  /**
   * Splits the network: connects between an endpoint of `groupA` and one of `groupB` fail
   * at once with a transient `CONNECTION_FAILED` (the address is unreachable), and existing
   * streams between them stall until {@link heal}. Partitions add up.
   */
  partition(groupA: readonly string[], groupB: readonly string[]): void {
    const a = endpointGroup(groupA, 'groupA');
    const b = endpointGroup(groupB, 'groupB');
    for (const name of a) {
      if (b.has(name)) throw argumentError(`endpoint "${name}" is in both groups of the partition`);
    }
    this.#partitions.push({ a, b });
    this.#changed(`partition [${[...a].join(', ')}] | [${[...b].join(', ')}]`, undefined, undefined);
  }

  /** Removes every partition; the streams they stalled carry on (unless stalled by {@link stall}). */
  heal(): void {
    this.#partitions = [];
    this.#changed('heal', undefined, undefined);
  }

  #linkState(x: string, y: string): LinkState {
    return {
      stalled: lastMatch(this.#stalls, x, y, false) || this.#partitioned(x, y),
      latencyMs: lastMatch(this.#latency, x, y, 0),
      bytesPerSecond: lastMatch(this.#bandwidth, x, y, Infinity),
    };
  }

  #listen(from: MemoryTransport, address: string, onConnection: ListenerEntry['onConnection']): Listener & AsyncDisposable {
    const bound = address.endsWith(':0') ? this.#freeAddress(address.slice(0, -1)) : address;
    if (this.#listeners.has(bound)) {
      // As TcpTransport does for EADDRINUSE: transient, since the address may be freed.
      throw new WalshipError('CONNECTION_FAILED', `memory: cannot listen on "${bound}": address already in use`, {
        cause: systemError('EADDRINUSE', 'listen', bound),
        transient: true,
      });
    }
    const entry: ListenerEntry = { address: bound, endpoint: from.endpoint, onConnection };
    this.#listeners.set(bound, entry);
    this.#log('%s listens on %s', from.endpoint, bound);
    let closed = false;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      if (this.#listeners.get(bound) === entry) this.#listeners.delete(bound);
      this.#log('%s stopped listening on %s', from.endpoint, bound);
      this.#retryPending();
    };
    return { address: bound, close, [Symbol.asyncDispose]: close };
  }

  #connect(from: MemoryTransport, address: string, signal: AbortSignal | undefined): Promise<Duplex> {
    return new Promise<Duplex>((resolve, reject) => {
      const onAbort = (): void => {
        if (!this.#pending.delete(pending)) return;
        reject(abortError(signal as AbortSignal));
      };
      const pending: PendingConnect = {
        from,
        address,
        resolve: (stream) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(stream);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (this.#attempt(pending)) return;
      this.#pending.add(pending);
      this.#log('connect from %s to %s is pending on a stalled link', from.endpoint, address);
    });
  }

  /** Settles `pending` and returns true, or returns false when its link is stalled. */
  #attempt(pending: PendingConnect): boolean {
    const { from, address } = pending;
    const target = this.#listeners.get(address);
    if (target === undefined) {
      pending.reject(connectionFailed(`memory: nothing listens on "${address}"`, systemError('ECONNREFUSED', 'connect', address)));
      return true;
    }
    if (this.#partitioned(from.endpoint, target.endpoint)) {
      pending.reject(
        connectionFailed(
          `memory: "${address}" is unreachable from endpoint "${from.endpoint}" (network partition)`,
          systemError('EHOSTUNREACH', 'connect', address),
        ),
      );
      return true;
    }
    if (this.#linkState(from.endpoint, target.endpoint).stalled) return false;
    const connection = new Connection(this.#links, from.endpoint, target.endpoint);
    this.#connections.add(connection);
    const peer: PeerInfo = {
      transport: 'memory',
      ...(from.ip === null ? {} : { remoteAddress: from.ip }),
      description: `memory ${from.endpoint}`,
    };
    this.#log('%s connected to %s (%s)', from.endpoint, address, target.endpoint);
    // The listener sees the connection before connect() resolves, which keeps simulations
    // deterministic.
    try {
      target.onConnection(connection.serverSide, peer);
    } catch (err) {
      // Nobody holds the client side yet: closing quietly avoids unhandled 'error' events.
      connection.clientSide.destroy();
      connection.serverSide.destroy();
      pending.reject(connectionFailed(`memory: the listener on "${address}" failed`, systemError('ECONNRESET', 'connect', address)));
      // Like TcpTransport: the handler's exception costs that connection, never the process.
      this.#log.error('onConnection threw for %s: %s', peer.description, err instanceof Error ? err.message : String(err));
      return true;
    }
    pending.resolve(connection.clientSide);
    return true;
  }

  #retryPending(): void {
    for (const pending of [...this.#pending]) {
      // A listener's handler may change the faults, and so retry, while this loop runs.
      if (!this.#pending.delete(pending)) continue;
      if (!this.#attempt(pending)) this.#pending.add(pending);
    }
  }

  #changed(what: string, a: string | undefined, b: string | undefined): void {
    this.#version++;
    this.#log('%s between %s and %s', what, a ?? '*', b ?? '*');
    for (const connection of this.#connections) connection.kick();
    this.#retryPending();
  }

  #partitioned(x: string, y: string): boolean {
    return this.#partitions.some(({ a, b }) => (a.has(x) && b.has(y)) || (a.has(y) && b.has(x)));
  }

  #freeAddress(prefix: string): string {
    while (this.#listeners.has(`${prefix}${this.#nextPort}`)) this.#nextPort++;
    return `${prefix}${this.#nextPort++}`;
  }
}

/**
 * An in-process {@link Transport} for tests and simulations: streams are real Node
 * `Duplex` pairs with bounded buffers and backpressure, `end`/`close` semantics like a TCP
 * socket (`allowHalfOpen` off), and run-time faults through its {@link MemoryNetwork}.
 *
 * Addresses are any non-empty string (`'primary'`, `'s1:7001'`); listening on an address
 * ending in `:0` binds a free one, as port 0 does for TCP.
 *
 * `new MemoryTransport()` makes a network of its own (endpoint `'local'`); transports that
 * must reach each other share one: `network.transport('a')`, or
 * `new MemoryTransport({ network, endpoint: 'a' })`.
 */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  /** The network this endpoint belongs to; its fault controls act on this transport's streams. */
  readonly network: MemoryNetwork;
  /** This endpoint's name. */
  readonly endpoint: string;
  /** The address peers see for this endpoint, or `null` for none. */
  readonly ip: string | null;

  constructor(options: MemoryTransportOptions = {}) {
    validateTransportOptions(options);
    if (options.network !== undefined && !(options.network instanceof MemoryNetwork)) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid MemoryTransport options: MemoryTransport.network must be a MemoryNetwork');
    }
    if (typeof options.ip === 'string' && isIP(options.ip) === 0) {
      throw new WalshipError('INVALID_OPTIONS', `invalid MemoryTransport options: MemoryTransport.ip must be an IPv4 or IPv6 address, got "${options.ip}"`);
    }
    this.network = options.network ?? new MemoryNetwork();
    this.endpoint = options.endpoint ?? 'local';
    this.ip = options.ip === undefined ? '127.0.0.1' : options.ip;
  }

  async listen(
    address: string,
    onConnection: (stream: Duplex, peer: PeerInfo) => void,
    options: { signal?: AbortSignal } = {},
  ): Promise<Listener & AsyncDisposable> {
    checkAddress(address);
    if (typeof onConnection !== 'function') throw argumentError('onConnection must be a function');
    const signal = checkSignal(options);
    if (signal?.aborted) throw abortError(signal);
    return internals.listen(this.network, this, address, onConnection);
  }

  async connect(address: string, options: { signal?: AbortSignal } = {}): Promise<Duplex> {
    checkAddress(address);
    const signal = checkSignal(options);
    if (signal?.aborted) throw abortError(signal);
    return internals.connect(this.network, this, address, signal);
  }
}

/** One stream: a pair of {@link MemoryStream}s and a {@link Pipe} for each direction. */
class Connection {
  readonly clientSide: MemoryStream;
  readonly serverSide: MemoryStream;
  readonly #toServer: Pipe;
  readonly #toClient: Pipe;
  #state: LinkState;
  #version: number;
  #open = 2;

  constructor(
    readonly links: LinkSource,
    readonly client: string,
    readonly server: string,
  ) {
    this.clientSide = new MemoryStream();
    this.serverSide = new MemoryStream();
    this.#toServer = new Pipe(this, this.clientSide, this.serverSide);
    this.#toClient = new Pipe(this, this.serverSide, this.clientSide);
    this.clientSide.attach(this.#toServer, this.#toClient, () => this.#sideClosed());
    this.serverSide.attach(this.#toClient, this.#toServer, () => this.#sideClosed());
    this.#state = links.state(client, server);
    this.#version = links.version();
  }

  /** The faults on this connection's link, recomputed only after the controls changed. */
  link(): LinkState {
    if (this.#version !== this.links.version()) {
      this.#state = this.links.state(this.client, this.server);
      this.#version = this.links.version();
    }
    return this.#state;
  }

  /** The fault controls changed: re-evaluate both directions. */
  kick(): void {
    this.#toServer.schedule();
    this.#toClient.schedule();
  }

  reset(): void {
    this.#toServer.clear();
    this.#toClient.clear();
    // Each side gets its own error object, as two sockets would.
    this.clientSide.destroy(systemError('ECONNRESET', 'read'));
    this.serverSide.destroy(systemError('ECONNRESET', 'read'));
  }

  #sideClosed(): void {
    if (--this.#open === 0) this.links.forget(this);
  }
}

type Item = { readonly chunk: Buffer; offset: number; readonly at: number } | { readonly chunk: null; readonly at: number };

/**
 * One direction of a connection: what the sender wrote and the receiver has not been
 * given yet. Holds at most `bufferBytes` before the sender's write callback waits, and
 * delivers in order subject to stalls, latency and bandwidth.
 */
class Pipe {
  readonly #queue: Item[] = [];
  #queuedBytes = 0;
  #held: ((err?: Error | null) => void) | undefined;
  /** The receiver asked for data and has not said "enough" since (`push` returned false). */
  #wanted = false;
  #finQueued = false;
  /** A pump is scheduled; one that comes after `clear()` finds nothing to do. */
  #pumpScheduled = false;
  #timer: SchedulerTimer | undefined;
  /** When the bandwidth limit lets the next byte through (the scheduler's monotonic ms). */
  #freeAt = 0;

  constructor(
    readonly connection: Connection,
    readonly from: MemoryStream,
    readonly to: MemoryStream,
  ) {}

  /** The sender's `_write`. */
  write(chunk: Buffer, callback: (err?: Error | null) => void): void {
    if (this.to.destroyed) {
      // The peer is gone: like a socket whose peer vanished, the bytes go nowhere.
      callback();
      return;
    }
    // Copied, as a kernel would: the caller may reuse its buffer once the write completes.
    this.#queue.push({ chunk: Buffer.from(chunk), offset: 0, at: currentScheduler().monotonic() });
    this.#queuedBytes += chunk.length;
    if (this.#queuedBytes <= this.connection.links.bufferBytes) callback();
    else this.#held = callback;
    this.schedule();
  }

  /** The sender ended or was destroyed: the receiver sees the end after the data in flight. */
  fin(): void {
    if (this.#finQueued || this.to.destroyed) return;
    this.#finQueued = true;
    this.#queue.push({ chunk: null, at: currentScheduler().monotonic() });
    this.schedule();
  }

  /** The receiver's `_read`. */
  want(): void {
    this.#wanted = true;
    this.schedule();
  }

  /** Pumps on a later turn, so that writes and reads never recurse into each other. */
  schedule(): void {
    if (this.#pumpScheduled || this.#queue.length === 0) return;
    this.#pumpScheduled = true;
    currentScheduler().setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /** Drops everything in flight (reset, or the receiver is gone) and stops all timers. */
  clear(): void {
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#finQueued = true;
    if (this.#timer !== undefined) clearTimer(this.#timer);
    this.#timer = undefined;
  }

  /** Completes the sender's pending write, if any. */
  releaseHeld(): void {
    const held = this.#held;
    this.#held = undefined;
    held?.();
  }

  #pump(): void {
    if (this.#timer !== undefined) clearTimer(this.#timer);
    this.#timer = undefined;
    while (this.#queue.length > 0) {
      if (this.to.destroyed) {
        this.clear();
        this.releaseHeld();
        return;
      }
      const link = this.connection.link();
      if (link.stalled) return;
      const head = this.#queue[0] as Item;
      const now = currentScheduler().monotonic();
      const due = head.at + link.latencyMs;
      if (now < due) return this.#wake(due - now);
      if (head.chunk === null) {
        this.#queue.shift();
        this.to.push(null);
        continue;
      }
      if (!this.#wanted) return;
      let size = head.chunk.length - head.offset;
      if (link.bytesPerSecond !== Infinity) {
        if (now < this.#freeAt) return this.#wake(this.#freeAt - now);
        // Slices of ~20 ms worth keep delivery smooth instead of one burst per chunk.
        size = Math.min(size, Math.max(1, Math.floor(link.bytesPerSecond / 50)));
        this.#freeAt = Math.max(this.#freeAt, now) + (size / link.bytesPerSecond) * 1000;
      }
      const piece = head.chunk.subarray(head.offset, head.offset + size);
      head.offset += size;
      if (head.offset === head.chunk.length) this.#queue.shift();
      this.#queuedBytes -= size;
      if (this.#queuedBytes <= this.connection.links.bufferBytes) this.releaseHeld();
      // In flowing mode push() runs the reader's 'data' handlers right here; they may
      // destroy streams or change faults, which the loop re-checks.
      if (!this.to.push(piece)) this.#wanted = false;
    }
  }

  #wake(ms: number): void {
    this.#timer = currentScheduler().setTimeout(() => {
      this.#timer = undefined;
      this.#pump();
    }, Math.ceil(ms));
  }
}

/** One side of a memory connection. */
class MemoryStream extends Duplex {
  #out: Pipe | undefined;
  #in: Pipe | undefined;
  #onClosed: (() => void) | undefined;

  constructor() {
    // Like a net.Socket: receiving the peer's end ends this side too.
    super({ allowHalfOpen: false });
  }

  attach(out: Pipe, incoming: Pipe, onClosed: () => void): void {
    this.#out = out;
    this.#in = incoming;
    this.#onClosed = onClosed;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    (this.#out as Pipe).write(chunk, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    (this.#out as Pipe).fin();
    callback();
  }

  override _read(): void {
    (this.#in as Pipe).want();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Like closing a socket: data already sent still arrives, followed by an end; what
    // the peer sends from now on goes nowhere.
    this.#out?.fin();
    this.#out?.releaseHeld();
    this.#in?.clear();
    this.#in?.releaseHeld();
    const onClosed = this.#onClosed;
    this.#onClosed = undefined;
    onClosed?.();
    callback(err);
  }
}

function selector(a: string | undefined, b: string | undefined): { a: string | undefined; b: string | undefined } {
  if (a !== undefined) checkEndpoint(a, 'endpointA');
  if (b !== undefined) {
    if (a === undefined) throw argumentError('endpointB needs endpointA');
    checkEndpoint(b, 'endpointB');
  }
  return { a, b };
}

/** No names select every link, one name every link touching it, two names the link between them. */
function linkMatches(sel: { a: string | undefined; b: string | undefined }, x: string, y: string): boolean {
  if (sel.a === undefined) return true;
  if (sel.b === undefined) return x === sel.a || y === sel.a;
  return (x === sel.a && y === sel.b) || (x === sel.b && y === sel.a);
}

function addRule<T>(rules: Rule<T>[], sel: { a: string | undefined; b: string | undefined }, value: T): Rule<T>[] {
  // A rule for every link makes all earlier ones moot.
  if (sel.a === undefined) return [{ ...sel, value }];
  return [...rules, { ...sel, value }];
}

function lastMatch<T>(rules: readonly Rule<T>[], x: string, y: string, fallback: T): T {
  for (let i = rules.length - 1; i >= 0; i--) {
    const rule = rules[i] as Rule<T>;
    if (linkMatches(rule, x, y)) return rule.value;
  }
  return fallback;
}

function endpointGroup(group: readonly string[], what: string): ReadonlySet<string> {
  if (!Array.isArray(group) || group.length === 0) throw argumentError(`${what} must be a non-empty array of endpoint names`);
  for (const name of group) checkEndpoint(name, what);
  return new Set(group);
}

function checkEndpoint(name: unknown, what: string): void {
  if (typeof name !== 'string' || name === '') throw argumentError(`${what} must be a non-empty endpoint name`);
}

function checkAddress(address: unknown): asserts address is string {
  if (typeof address !== 'string' || address === '') throw argumentError('a memory address must be a non-empty string');
}

function checkSignal(options: { signal?: AbortSignal }): AbortSignal | undefined {
  if (typeof options !== 'object' || options === null) throw argumentError('options must be an object');
  for (const key of Object.keys(options)) {
    if (key !== 'signal') throw argumentError(`options has an unknown key "${key}" (allowed: signal)`);
  }
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw argumentError('options.signal must be an AbortSignal');
  return signal;
}

function argumentError(message: string): WalshipError {
  return new WalshipError('INVALID_ARGUMENT', message);
}

function connectionFailed(message: string, cause: Error): WalshipError {
  return new WalshipError('CONNECTION_FAILED', message, { cause, transient: true });
}

/** An error shaped like Node's system errors, for code that checks `err.code`. */
function systemError(code: string, syscall: string, address?: string): Error & { code: string; syscall: string } {
  const err = new Error(`${syscall} ${code}${address === undefined ? '' : ` ${address}`}`);
  return Object.assign(err, { code, syscall }, address === undefined ? {} : { address });
}
