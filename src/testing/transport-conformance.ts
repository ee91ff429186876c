import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { WalshipError, isWalshipError } from '../errors.js';
import type { Listener, PeerInfo, Transport } from '../transport/transport.js';
import { conformanceRunner, describeError, handled, within, type ConformanceAdapters } from './conformance-runner.js';
import { seededRandom } from './seeded-random.js';

export type { ConformanceAdapters, ConformanceIt, ConformanceTestFn } from './conformance-runner.js';

/** Optional behaviours; a case that needs one that is off is registered as skipped. */
export interface TransportCapabilities {
  /** `connect` honours its `signal` (aborted before, or while pending). @defaultValue true */
  abortConnect?: boolean;
  /** `listen` rejects when its `signal` is already aborted. @defaultValue true */
  abortListen?: boolean;
}

/** How {@link transportConformance} gets transports and addresses to test. */
export interface TransportConformanceHarness {
  /** Shown in the suite's name. @defaultValue 'transport' */
  name?: string;
  /** A fresh transport; called once per case, which uses it both to listen and to connect. */
  createTransport(): Transport | Promise<Transport>;
  /** An address to listen on, e.g. `'127.0.0.1:0'`; called for every listener. */
  listenAddress(): string;
  /**
   * An address where a connect stays pending (never accepted, never refused), for the
   * case that aborts a pending connect. Without it that case is skipped.
   */
  unreachableAddress?(transport: Transport): string | Promise<string>;
  /** Called after every case, passed or failed, with the transport it used. */
  cleanup?(transport: Transport): void | Promise<void>;
  /** What the transport cannot do; the cases needing it are registered as skipped. @defaultValue everything */
  capabilities?: TransportCapabilities;
  /** Bytes sent in the ordering and integrity case, both directions together. @defaultValue 256 MiB */
  volumeBytes?: number;
  /** Connections opened at once in the concurrency case. @defaultValue 50 */
  connections?: number;
  /** Deadline of every wait for an event, and the longest a transfer may go without progress. @defaultValue 10000 */
  timeoutMs?: number;
  /** The most a writer may accept while its peer does not read. @defaultValue 16 MiB */
  maxBufferedBytes?: number;
}

/** Defaults of the numeric {@link TransportConformanceHarness} settings. */
export const TRANSPORT_CONFORMANCE_DEFAULTS = Object.freeze({
  /** 256 MiB through one connection. */
  volumeBytes: 256 * 1024 * 1024,
  /** 50 connections at once. */
  connections: 50,
  /** 10 s for each wait. */
  timeoutMs: 10_000,
  /** 16 MiB accepted by a writer whose peer does not read. */
  maxBufferedBytes: 16 * 1024 * 1024,
});

/** How long `drain` may stay away before the writer counts as stopped by backpressure. */
const QUIET_MS = 250;
/** After a quiet spell, how much longer 'drain' must stay away before the writer counts as stopped. */
const SETTLED_MS = 1500;
const MAX_CHUNK = 1024 * 1024;
const POOL_BYTES = 2 * MAX_CHUNK;
const CONCURRENT_BYTES = 32 * 1024;

interface Config {
  readonly volumeBytes: number;
  readonly connections: number;
  readonly timeoutMs: number;
  readonly maxBufferedBytes: number;
}

/**
 * Registers the transport conformance suite: the behaviour walship relies on from every
 * {@link Transport}. Run it from a test file of your transport:
 *
 * ```ts
 * import { transportConformance } from 'walship/testing';
 * transportConformance({
 *   name: 'MyTransport',
 *   createTransport: () => new MyTransport(),
 *   listenAddress: () => '127.0.0.1:0',
 * });
 * ```
 *
 * Cases: bytes arrive in order and intact in both directions at once (mixed chunk sizes,
 * checked by hash); a writer whose peer stops reading is stopped by backpressure and
 * everything arrives once the peer reads again; an end or a destroy on either side is
 * seen by the other exactly once; connect rejects when its signal aborts (pending, or
 * before the call); connecting to a closed address rejects; concurrent connections never
 * cross data; a closed listener refuses new connects and keeps existing streams; listen
 * rejects with an aborted signal. Every wait has a deadline and every case releases its
 * listeners and streams, even when it fails.
 */
export function transportConformance(harness: TransportConformanceHarness, adapters: ConformanceAdapters = {}): void {
  checkHarness(harness);
  const runner = conformanceRunner(adapters, 'transportConformance');
  const config: Config = {
    volumeBytes: harness.volumeBytes ?? TRANSPORT_CONFORMANCE_DEFAULTS.volumeBytes,
    connections: harness.connections ?? TRANSPORT_CONFORMANCE_DEFAULTS.connections,
    timeoutMs: harness.timeoutMs ?? TRANSPORT_CONFORMANCE_DEFAULTS.timeoutMs,
    maxBufferedBytes: harness.maxBufferedBytes ?? TRANSPORT_CONFORMANCE_DEFAULTS.maxBufferedBytes,
  };
  const abortConnect = harness.capabilities?.abortConnect ?? true;
  const abortListen = harness.capabilities?.abortListen ?? true;

  const run = (body: (ctx: CaseContext) => Promise<void>) => async (): Promise<void> => {
    const transport = await harness.createTransport();
    const ctx = new CaseContext(transport, harness, config);
    let failed = true;
    try {
      await body(ctx);
      failed = false;
    } finally {
      // A cleanup failure must not hide the case's own failure.
      const problem = await ctx.dispose();
      if (!failed && problem !== undefined) throw problem;
    }
  };
  const register = (name: string, skip: string | false, body: (ctx: CaseContext) => Promise<void>): void => runner.register(name, skip, run(body));

  runner.describe(`transport conformance: ${harness.name ?? 'transport'}`, () => {
    register('connects, exchanges bytes and describes the peer', false, basicExchange);
    register('carries bytes in order and intact in both directions at once', false, orderingAndIntegrity);
    register("a reader that stops reading stops the writer's buffering; all arrives once it reads", false, backpressure);
    register('end from the client is seen by the server exactly once', false, (ctx) => closeCase(ctx, 'client', 'end'));
    register('end from the server is seen by the client exactly once', false, (ctx) => closeCase(ctx, 'server', 'end'));
    register('destroy from the client closes the server side exactly once', false, (ctx) => closeCase(ctx, 'client', 'destroy'));
    register('destroy from the server closes the client side exactly once', false, (ctx) => closeCase(ctx, 'server', 'destroy'));
    register(
      'connect rejects when its signal aborts while it is pending',
      !abortConnect ? 'capabilities.abortConnect is false' : harness.unreachableAddress === undefined ? 'the harness has no unreachableAddress()' : false,
      abortPendingConnect,
    );
    register('connect rejects with an already aborted signal', abortConnect ? false : 'capabilities.abortConnect is false', abortedConnect);
    register('connect to an address nobody listens on rejects', false, refusedConnect);
    register('concurrent connections never cross data', false, concurrentConnections);
    register('a closed listener refuses new connects and keeps existing streams', false, listenerClose);
    register('listen rejects with an already aborted signal', abortListen ? false : 'capabilities.abortListen is false', abortedListen);
  });
}

// ---------------------------------------------------------------------------------------
// Cases

async function basicExchange(ctx: CaseContext): Promise<void> {
  const listener = await ctx.listen();
  assert.equal(typeof listener.address, 'string', 'Listener.address must be a string');
  assert.notEqual(listener.address, '', 'Listener.address must not be empty');
  const { client, server, peer } = await ctx.pair(listener);
  assert.equal(peer.transport, ctx.transport.name, 'PeerInfo.transport must be the transport name');
  assert.equal(typeof peer.description, 'string', 'PeerInfo.description must be a string');
  assert.notEqual(peer.description, '', 'PeerInfo.description must not be empty');
  if (peer.remoteAddress !== undefined) {
    assert.notEqual(isIP(peer.remoteAddress), 0, `PeerInfo.remoteAddress must be an IP address, got ${peer.remoteAddress}`);
  }
  await ctx.roundTrip(client.stream, server.stream, 'ping');
  await ctx.roundTrip(server.stream, client.stream, 'pong');
  await ctx.closeBoth(client, server);
}

async function orderingAndIntegrity(ctx: CaseContext): Promise<void> {
  const listener = await ctx.listen();
  const { client, server } = await ctx.pair(listener);
  const up = Math.floor(ctx.config.volumeBytes / 2);
  const down = ctx.config.volumeBytes - up;
  const atServer = ctx.receive(server.stream, 'the client’s bytes at the server');
  const atClient = ctx.receive(client.stream, 'the server’s bytes at the client');
  const [sentUp, sentDown] = await Promise.all([
    ctx.send(client.stream, mixedChunks(0x5eed0001, up), 'the client'),
    ctx.send(server.stream, mixedChunks(0x5eed0002, down), 'the server'),
  ]);
  // Ends wait for both senders: a side that sees the peer's end stops writing, as a
  // net.Socket does by default.
  client.stream.end();
  server.stream.end();
  const [gotUp, gotDown] = await Promise.all([atServer, atClient]);
  assert.equal(gotUp.bytes, sentUp.bytes, 'the server must receive exactly the bytes the client sent');
  assert.equal(gotUp.digest, sentUp.digest, 'the server must receive the client’s bytes in order and unaltered');
  assert.equal(gotDown.bytes, sentDown.bytes, 'the client must receive exactly the bytes the server sent');
  assert.equal(gotDown.digest, sentDown.digest, 'the client must receive the server’s bytes in order and unaltered');
  await ctx.closed(client, server);
}

async function backpressure(ctx: CaseContext): Promise<void> {
  const listener = await ctx.listen();
  const { client, server } = await ctx.pair(listener);
  server.stream.pause();
  const hash = createHash('sha256');
  const pool = chunkPool();
  const limit = ctx.config.maxBufferedBytes;
  let accepted = 0;
  for (let i = 0; ; i++) {
    const chunk = pool.subarray((i * 4099) % MAX_CHUNK, ((i * 4099) % MAX_CHUNK) + 64 * 1024);
    hash.update(chunk);
    accepted += chunk.length;
    const more = client.stream.write(chunk);
    if (accepted > limit) {
      assert.fail(`the writer accepted more than ${limit} bytes while its peer was not reading: its buffering is unbounded`);
    }
    if (more) continue;
    // Stopped for real once 'drain' stays away, and still away a while later: a transport
    // that confirms writes slowly but queues them without bound keeps draining, so it goes
    // round this loop until the byte limit above (or the case deadline) catches it.
    if (await ctx.eventWithin(client.stream, 'drain', QUIET_MS)) continue;
    if (!(await ctx.eventWithin(client.stream, 'drain', SETTLED_MS))) break;
  }
  const received = ctx.receive(server.stream, 'the held-back bytes at the server');
  client.stream.end();
  const got = await received;
  assert.equal(got.bytes, accepted, 'every byte accepted while the reader was paused must arrive once it reads');
  assert.equal(got.digest, hash.digest('hex'), 'the held-back bytes must arrive in order and unaltered');
  server.stream.end();
  await ctx.closed(client, server);
}

async function closeCase(ctx: CaseContext, actorName: 'client' | 'server', action: 'end' | 'destroy'): Promise<void> {
  const listener = await ctx.listen();
  const pair = await ctx.pair(listener);
  await ctx.roundTrip(pair.client.stream, pair.server.stream, 'hello');
  await ctx.roundTrip(pair.server.stream, pair.client.stream, 'hello');
  const actor = pair[actorName];
  const other = actorName === 'client' ? pair.server : pair.client;
  const otherName = actorName === 'client' ? 'server' : 'client';
  for (const side of [actor, other]) {
    side.stream.resume();
    side.endOnEnd = true; // for transports that allow half-open streams, as a polite app would
  }
  if (action === 'end') {
    actor.stream.end();
    await ctx.wait(other.ended, `'end' on the ${otherName} after the ${actorName} ended`);
    await ctx.wait(actor.ended, `'end' on the ${actorName} after the ${otherName} ended in turn`);
  } else {
    actor.stream.destroy();
  }
  await ctx.wait(other.closed, `'close' on the ${otherName} after the ${actorName} called ${action}()`);
  await ctx.wait(actor.closed, `'close' on the ${actorName} after it called ${action}()`);
  // A duplicate event would come from the same teardown, within a few turns of the loop.
  await settle();
  assert.equal(other.count.close, 1, `the ${otherName} must emit 'close' exactly once`);
  assert.equal(actor.count.close, 1, `the ${actorName} must emit 'close' exactly once`);
  if (action === 'end') {
    assert.equal(other.count.end, 1, `the ${otherName} must emit 'end' exactly once`);
    assert.equal(actor.count.end, 1, `the ${actorName} must emit 'end' exactly once`);
    assert.deepEqual(other.errors, [], `a graceful end must not make the ${otherName} emit 'error'`);
    assert.deepEqual(actor.errors, [], `a graceful end must not make the ${actorName} emit 'error'`);
  } else {
    assert.ok(other.count.end <= 1, `the ${otherName} must emit 'end' at most once`);
    assert.ok(other.errors.length <= 1, `the ${otherName} must emit 'error' at most once, got ${other.errors.length}`);
    assert.deepEqual(actor.errors, [], `destroy() without an error must not make the ${actorName} emit 'error'`);
  }
}

async function abortPendingConnect(ctx: CaseContext): Promise<void> {
  const unreachable = ctx.harness.unreachableAddress as NonNullable<TransportConformanceHarness['unreachableAddress']>;
  const address = await ctx.wait(Promise.resolve(unreachable.call(ctx.harness, ctx.transport)), 'unreachableAddress()');
  const controller = new AbortController();
  const outcome = ctx.outcome(ctx.transport.connect(address, { signal: controller.signal }));
  await settle();
  if (outcome.settled) {
    assert.fail(`connect to unreachableAddress() "${address}" settled before the abort; it must name an address that never answers`);
  }
  controller.abort();
  const err = await ctx.rejection(outcome.promise, `connect to "${address}" after its signal aborted`);
  assertAbortError(err, controller.signal, 'connect');
}

async function abortedConnect(ctx: CaseContext): Promise<void> {
  const listener = await ctx.listen();
  const signal = AbortSignal.abort();
  const err = await ctx.rejection(ctx.transport.connect(listener.address, { signal }), 'connect with an aborted signal');
  assertAbortError(err, signal, 'connect');
}

async function refusedConnect(ctx: CaseContext): Promise<void> {
  const listener = await ctx.listen();
  const address = listener.address;
  await ctx.wait(listener.close(), 'Listener.close()');
  await ctx.rejection(ctx.transport.connect(address), `connect to "${address}" where nobody listens`);
}

async function concurrentConnections(ctx: CaseContext): Promise<void> {
  const count = ctx.config.connections;
  const seen = new Map<number, number>();
  const problems: string[] = [];
  const serverDone: Promise<void>[] = [];
  const listener = await ctx.listen((side) => {
    // Echo as the bytes come, and check them once the client ends.
    side.stream.pipe(side.stream);
    const parts: Buffer[] = [];
    side.stream.on('data', (chunk: Buffer) => parts.push(chunk));
    serverDone.push(
      side.ended.then(() => {
        const data = Buffer.concat(parts);
        const id = data.length >= 4 ? data.readUInt32BE(0) : -1;
        seen.set(id, (seen.get(id) ?? 0) + 1);
        if (!data.equals(taggedPayload(id))) problems.push(`the server side of connection ${id} received bytes that are not its own`);
      }),
    );
  });
  const ids = Array.from({ length: count }, (_, i) => i + 1);
  await Promise.all(
    ids.map(async (id) => {
      const client = await ctx.connect(listener.address);
      const payload = taggedPayload(id);
      const echoed = ctx.readExactly(client.stream, payload.length, `the echo of connection ${id}`);
      const random = seededRandom(id);
      for (let offset = 0; offset < payload.length; ) {
        const size = 1 + Math.floor(random() * 4096);
        await ctx.write(client.stream, payload.subarray(offset, offset + size), `connection ${id}`);
        offset += size;
        // Yield, so that the connections' chunks interleave.
        await new Promise((resolve) => setImmediate(resolve));
      }
      const back = await echoed;
      if (!back.equals(payload)) problems.push(`connection ${id} got back bytes that are not its own`);
      client.stream.end();
      await ctx.wait(client.closed, `'close' on connection ${id}`);
    }),
  );
  // Every client saw its echo end, so every server side has ended by now.
  await ctx.wait(Promise.all(serverDone), "'end' on the server sides");
  assert.deepEqual(problems, [], 'no connection may see another connection’s bytes');
  assert.equal(serverDone.length, count, `the listener must accept exactly ${count} connections`);
  for (const id of ids) assert.equal(seen.get(id), 1, `connection ${id} must reach the server exactly once`);
}

async function listenerClose(ctx: CaseContext): Promise<void> {
  const listener = await ctx.listen();
  const { client, server } = await ctx.pair(listener);
  await ctx.roundTrip(client.stream, server.stream, 'before');
  await ctx.wait(listener.close(), 'Listener.close()');
  await ctx.wait(listener.close(), 'a second, idempotent Listener.close()');
  await ctx.rejection(ctx.transport.connect(listener.address), 'connect after Listener.close()');
  // The address is free again: listening on it succeeds at once.
  const again = await ctx.wait(ctx.transport.listen(listener.address, (stream) => stream.destroy()), 'listen() again on the closed address');
  await ctx.wait(again.close(), 'Listener.close() of the second listener');
  await ctx.roundTrip(client.stream, server.stream, 'after, client to server');
  await ctx.roundTrip(server.stream, client.stream, 'after, server to client');
  await ctx.closeBoth(client, server);
}

async function abortedListen(ctx: CaseContext): Promise<void> {
  const signal = AbortSignal.abort();
  const listening = ctx.transport.listen(ctx.harness.listenAddress(), (stream) => ctx.track(stream), { signal });
  const err = await ctx.rejection(listening, 'listen with an aborted signal');
  assertAbortError(err, signal, 'listen');
}

function assertAbortError(err: unknown, signal: AbortSignal, what: string): void {
  const abortLike =
    isWalshipError(err, 'ABORTED') || err === signal.reason || (err instanceof Error && err.name === 'AbortError');
  assert.ok(abortLike, `${what} must reject with an abort error (WalshipError ABORTED, or an AbortError), got ${describeError(err)}`);
}

// ---------------------------------------------------------------------------------------
// Per-case context: tracks what a case opens and releases it all, whatever happens.

/** One side of a connection, with its events counted from the start. */
interface Side {
  readonly stream: Duplex;
  readonly count: { end: number; close: number; error: number };
  readonly errors: unknown[];
  readonly ended: Promise<void>;
  readonly closed: Promise<void>;
  /** End the writable side when the readable side ends (for half-open transports). */
  endOnEnd: boolean;
}

interface Pair {
  readonly client: Side;
  readonly server: Side;
  readonly peer: PeerInfo;
}

class CaseContext {
  readonly #streams = new Set<Duplex>();
  readonly #listeners = new Set<Listener>();
  readonly #accepted: Array<{ side: Side; peer: PeerInfo }> = [];
  #onAccept: (() => void) | undefined;
  #disposed = false;

  constructor(
    readonly transport: Transport,
    readonly harness: TransportConformanceHarness,
    readonly config: Config,
  ) {}

  /** Listens at a fresh address; accepted streams go to `onAccept`, or else are queued for {@link pair}. */
  async listen(onAccept?: (side: Side, peer: PeerInfo) => void): Promise<Listener> {
    const listener = await this.wait(
      this.transport.listen(this.harness.listenAddress(), (stream, peer) => {
        const side = this.side(stream);
        if (onAccept !== undefined) return onAccept(side, peer);
        this.#accepted.push({ side, peer });
        this.#onAccept?.();
      }),
      'listen()',
    );
    if (this.#disposed) {
      await listener.close();
      throw new Error('the case ended while listen() was pending');
    }
    this.#listeners.add(listener);
    return listener;
  }

  async connect(address: string): Promise<Side> {
    return this.side(await this.wait(this.transport.connect(address), `connect to "${address}"`));
  }

  /** Connects to `listener` and waits for the server's side of that connection. */
  async pair(listener: Listener): Promise<Pair> {
    const client = await this.connect(listener.address);
    const accepted = await this.wait(
      new Promise<{ side: Side; peer: PeerInfo }>((resolve) => {
        const check = (): void => {
          const next = this.#accepted.shift();
          if (next === undefined) return;
          this.#onAccept = undefined;
          resolve(next);
        };
        this.#onAccept = check;
        check();
      }),
      'the listener to accept the connection',
    );
    return { client, server: accepted.side, peer: accepted.peer };
  }

  /** Starts counting a stream's events and makes sure it is destroyed when the case ends. */
  side(stream: Duplex): Side {
    this.track(stream);
    let resolveEnded!: () => void;
    let resolveClosed!: () => void;
    const ended = new Promise<void>((resolve) => (resolveEnded = resolve));
    const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
    const side: Side = { stream, count: { end: 0, close: 0, error: 0 }, errors: [], ended, closed, endOnEnd: false };
    stream.on('end', () => {
      side.count.end++;
      resolveEnded();
      if (side.endOnEnd) stream.end();
    });
    stream.on('close', () => {
      side.count.close++;
      resolveClosed();
    });
    // Also keeps a broken transport's stray 'error' from crashing the process.
    stream.on('error', (err) => {
      side.count.error++;
      side.errors.push(err);
    });
    return side;
  }

  /** Destroys `stream` when the case ends; at once if it already has (a straggler of a failed case). */
  track(stream: Duplex): void {
    if (this.#disposed) stream.destroy();
    else this.#streams.add(stream);
  }

  /** `promise`, or a failure naming `what` once the deadline passes. */
  wait<T>(promise: Promise<T>, what: string): Promise<T> {
    return handled(within(promise, this.config.timeoutMs, what));
  }

  /** The rejection of `promise`; fails if it resolves (destroying a stream it yields) or hangs. */
  async rejection(promise: Promise<unknown>, what: string): Promise<unknown> {
    const outcome = this.outcome(promise);
    try {
      await this.wait(outcome.promise, what);
    } catch (err) {
      if (outcome.settled) return err;
      throw err;
    }
    assert.fail(`${what} must reject, but it resolved`);
  }

  /** Follows a promise that may yield a stream, so that the stream is cleaned up whatever the case does. */
  outcome<T>(promise: Promise<T>): { promise: Promise<T>; readonly settled: boolean } {
    const state = { settled: false, promise };
    // Handled where it is made: a case that stops waiting must not leave an unhandled rejection behind.
    state.promise = handled(
      promise.then(
        (value) => {
          state.settled = true;
          if (isDuplex(value)) this.side(value);
          return value;
        },
        (err: unknown) => {
          state.settled = true;
          throw err;
        },
      ),
    );
    return state;
  }

  async write(stream: Duplex, chunk: Buffer, what: string): Promise<void> {
    if (!stream.write(chunk)) await this.wait(untilEvent(stream, 'drain'), `'drain' on ${what}`);
  }

  /** Writes mixed chunks, honouring backpressure, and returns what was sent. */
  async send(stream: Duplex, chunks: Iterable<Buffer>, who: string): Promise<{ bytes: number; digest: string }> {
    const hash = createHash('sha256');
    let bytes = 0;
    for (const chunk of chunks) {
      hash.update(chunk);
      bytes += chunk.length;
      await this.write(stream, chunk, `${who} after ${bytes} bytes`);
    }
    return { bytes, digest: hash.digest('hex') };
  }

  /** Reads until 'end', hashing as it goes; fails when no byte comes for `timeoutMs`. */
  receive(stream: Duplex, what: string): Promise<{ bytes: number; digest: string }> {
    const idleMs = this.config.timeoutMs;
    return handled(new Promise((resolve, reject) => {
      const hash = createHash('sha256');
      let bytes = 0;
      const timer = setTimeout(idle, idleMs);
      function idle(): void {
        done(new Error(`no progress for ${idleMs} ms receiving ${what} (${bytes} bytes so far, no 'end')`));
      }
      const onData = (chunk: Buffer): void => {
        hash.update(chunk);
        bytes += chunk.length;
        timer.refresh();
      };
      const onEnd = (): void => done(undefined);
      const onError = (err: unknown): void => done(new Error(`'error' while receiving ${what}: ${describeError(err)}`, { cause: err }));
      const onClose = (): void => done(new Error(`'close' without 'end' while receiving ${what} (${bytes} bytes)`));
      function done(err: Error | undefined): void {
        clearTimeout(timer);
        stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
        if (err === undefined) resolve({ bytes, digest: hash.digest('hex') });
        else reject(err);
      }
      stream.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
      // A 'data' listener alone does not restart a stream that was paused explicitly.
      stream.resume();
    }));
  }

  /** The next `length` bytes; fails when no byte comes for `timeoutMs`, or on more or fewer bytes. */
  readExactly(stream: Duplex, length: number, what: string): Promise<Buffer> {
    const idleMs = this.config.timeoutMs;
    return handled(
      new Promise<Buffer>((resolve, reject) => {
        const parts: Buffer[] = [];
        let got = 0;
        const timer = setTimeout(() => done(new Error(`no progress for ${idleMs} ms reading ${what} (${got} of ${length} bytes)`)), idleMs);
        const onData = (chunk: Buffer): void => {
          parts.push(chunk);
          got += chunk.length;
          timer.refresh();
          if (got >= length) done(undefined);
        };
        const onEnd = (): void => done(undefined);
        const onError = (err: unknown): void => done(new Error(`'error' while reading ${what}: ${describeError(err)}`, { cause: err }));
        const onClose = (): void => done(new Error(`'close' while reading ${what} (${got} of ${length} bytes)`));
        function done(err: Error | undefined): void {
          clearTimeout(timer);
          stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
          const data = Buffer.concat(parts);
          if (err !== undefined) reject(err);
          else if (data.length !== length) reject(new Error(`reading ${what}: expected ${length} bytes, got ${data.length}`));
          else resolve(data);
        }
        stream.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
        stream.resume();
      }),
    );
  }

  /** Sends `text` from `from` and checks that `to` receives exactly it. */
  async roundTrip(from: Duplex, to: Duplex, text: string): Promise<void> {
    const payload = Buffer.from(text);
    const reading = this.readExactly(to, payload.length, `"${text}"`);
    from.write(payload);
    assert.equal((await reading).toString(), text, `"${text}" must arrive unaltered`);
  }

  /** Ends both sides gracefully and waits until both are closed. */
  async closeBoth(client: Side, server: Side): Promise<void> {
    client.endOnEnd = true;
    server.endOnEnd = true;
    client.stream.end();
    await this.closed(client, server);
  }

  /** Waits until both sides are closed; reads on, since a side that does not read never sees 'end'. */
  async closed(client: Side, server: Side): Promise<void> {
    client.stream.resume();
    server.stream.resume();
    await this.wait(client.closed, "'close' on the client side");
    await this.wait(server.closed, "'close' on the server side");
  }

  /** True when `event` fires on `stream` within `ms`; false when it stays away (the expected case). */
  eventWithin(stream: Duplex, event: string, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(false), ms);
      const onEvent = (): void => finish(true);
      const finish = (value: boolean): void => {
        clearTimeout(timer);
        stream.off(event, onEvent);
        resolve(value);
      };
      stream.on(event, onEvent);
    });
  }

  /** Releases everything the case opened; returns the first problem instead of throwing it. */
  async dispose(): Promise<unknown> {
    this.#disposed = true;
    for (const stream of this.#streams) stream.destroy();
    let problem: unknown;
    for (const listener of this.#listeners) {
      try {
        await within(listener.close(), this.config.timeoutMs, 'Listener.close() in cleanup');
      } catch (err) {
        problem ??= err;
      }
    }
    try {
      await this.harness.cleanup?.(this.transport);
    } catch (err) {
      problem ??= err;
    }
    return problem;
  }
}

// ---------------------------------------------------------------------------------------
// Helpers

/** Resolves on `event`; rejects on 'error', or on 'close' before it. */
function untilEvent(stream: Duplex, event: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onEvent = (): void => finish(undefined);
    const onError = (err: unknown): void => finish(new Error(`'error' before '${event}': ${describeError(err)}`, { cause: err }));
    const onClose = (): void => finish(new Error(`'close' before '${event}'`));
    const finish = (err: Error | undefined): void => {
      stream.off(event, onEvent).off('error', onError).off('close', onClose);
      if (err === undefined) resolve();
      else reject(err);
    };
    stream.on(event, onEvent).on('error', onError).on('close', onClose);
  });
}

/** A few turns of the event loop: long enough for events of the same teardown, no fixed time. */
async function settle(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}

let pool: Buffer | undefined;

/** Pseudo-random bytes that the chunks are cut from: generated once, never written to. */
function chunkPool(): Buffer {
  if (pool === undefined) {
    pool = Buffer.alloc(POOL_BYTES);
    const random = seededRandom(0x9e3779b9);
    for (let i = 0; i < POOL_BYTES; i += 4) pool.writeUInt32LE(Math.floor(random() * 0x1_0000_0000), i);
  }
  return pool;
}

/** Chunks from 1 byte to 1 MiB, spread evenly on a log scale, `total` bytes in all. */
function* mixedChunks(seed: number, total: number): Generator<Buffer> {
  const random = seededRandom(seed);
  const bytes = chunkPool();
  for (let sent = 0; sent < total; ) {
    const size = Math.min(total - sent, Math.max(1, Math.floor(2 ** (random() * 20.01))), MAX_CHUNK);
    const offset = Math.floor(random() * (POOL_BYTES - size));
    yield bytes.subarray(offset, offset + size);
    sent += size;
  }
}

/** Connection `id`'s payload: its id, then bytes that depend on it. */
function taggedPayload(id: number): Buffer {
  const payload = Buffer.alloc(CONCURRENT_BYTES);
  payload.writeUInt32BE(id >>> 0, 0);
  const random = seededRandom(id * 7919 + 1);
  for (let i = 4; i < payload.length; i++) payload[i] = Math.floor(random() * 256);
  return payload;
}

function isDuplex(value: unknown): value is Duplex {
  return typeof value === 'object' && value !== null && typeof (value as Duplex).destroy === 'function' && typeof (value as Duplex).on === 'function';
}

function checkHarness(harness: TransportConformanceHarness): void {
  const fail = (problem: string): never => {
    throw new WalshipError('INVALID_ARGUMENT', `transportConformance harness: ${problem}`);
  };
  if (typeof harness !== 'object' || harness === null) fail('must be an object');
  if (typeof harness.createTransport !== 'function') fail('createTransport must be a function');
  if (typeof harness.listenAddress !== 'function') fail('listenAddress must be a function');
  for (const key of ['unreachableAddress', 'cleanup'] as const) {
    if (harness[key] !== undefined && typeof harness[key] !== 'function') fail(`${key} must be a function`);
  }
  if (harness.name !== undefined && typeof harness.name !== 'string') fail('name must be a string');
  const positive = (key: 'volumeBytes' | 'connections' | 'timeoutMs' | 'maxBufferedBytes'): void => {
    const value = harness[key];
    if (value !== undefined && !(Number.isSafeInteger(value) && value > 0)) fail(`${key} must be a positive integer, got ${String(value)}`);
  };
  positive('volumeBytes');
  positive('connections');
  positive('timeoutMs');
  positive('maxBufferedBytes');
  const capabilities = harness.capabilities ?? {};
  for (const [key, value] of Object.entries(capabilities)) {
    if (key !== 'abortConnect' && key !== 'abortListen') fail(`capabilities has an unknown key "${key}" (allowed: abortConnect, abortListen)`);
    if (typeof value !== 'boolean') fail(`capabilities.${key} must be a boolean`);
  }
}
