import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { errnoCode, isWalshipError } from '../../src/errors.js';
import { transportConformance } from '../../src/testing/transport-conformance.js';
import { MemoryNetwork, MemoryTransport } from '../../src/transport/memory-transport.js';
import type { Listener, PeerInfo, Transport } from '../../src/transport/transport.js';
import { mulberry32 } from '../helpers/random.js';

/** A listener behind a stalled link: a connect to it is neither accepted nor refused. */
async function blackHole(transport: Transport): Promise<{ address: string; listener: Listener }> {
  const { network } = transport as MemoryTransport;
  const listener = await network.transport('black-hole').listen('black-hole', () => {});
  network.stall('black-hole');
  return { address: 'black-hole', listener };
}

function memoryHarness(name: string, setup: (network: MemoryNetwork) => void, volumeBytes?: number) {
  const blackHoles = new Map<Transport, Listener>();
  return {
    name,
    createTransport: () => {
      const transport = new MemoryTransport();
      setup(transport.network);
      return transport;
    },
    listenAddress: () => 'server:0',
    async unreachableAddress(transport: Transport) {
      const { address, listener } = await blackHole(transport);
      blackHoles.set(transport, listener);
      return address;
    },
    async cleanup(transport: Transport) {
      await blackHoles.get(transport)?.close();
    },
    ...(volumeBytes === undefined ? {} : { volumeBytes }),
  };
}

transportConformance(memoryHarness('MemoryTransport', () => {}));
// Again through the latency timers, which the first run never arms.
transportConformance(memoryHarness('MemoryTransport with 1 ms latency', (network) => network.latency(1), 16 * 1024 * 1024));

// ---------------------------------------------------------------------------------------

const DEADLINE_MS = 5000;

function within<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * A few turns of the event loop. Without latency or bandwidth limits a memory stream
 * delivers on the next turn, so nothing arriving within these turns means it was held.
 */
async function settle(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Everything a stream receives, as it arrives. */
class Received {
  readonly chunks: Buffer[] = [];
  readonly times: number[] = [];
  bytes = 0;
  readonly ended: Promise<void>;

  constructor(readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.times.push(performance.now());
      this.bytes += chunk.length;
    });
    this.ended = once(stream, 'end').then(() => undefined);
    this.ended.catch(() => {});
  }

  text(): string {
    return Buffer.concat(this.chunks).toString();
  }

  /** Resolves once at least `bytes` bytes have arrived. */
  async atLeast(bytes: number, what: string): Promise<void> {
    await within(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.bytes < bytes) return;
          this.stream.off('data', check);
          resolve();
        };
        this.stream.on('data', check);
        check();
      }),
      what,
    );
  }
}

interface Connected {
  client: Duplex;
  server: Duplex;
  peer: PeerInfo;
  atServer: Received;
  atClient: Received;
}

/** Streams and listeners to release after each test, whatever happens. */
const open = new Set<Duplex>();
const listeners = new Set<Listener>();

async function cleanup(): Promise<void> {
  for (const stream of open) stream.destroy();
  open.clear();
  for (const listener of listeners) await listener.close();
  listeners.clear();
}

/** A listener whose accepted streams queue up for {@link connectPair}. */
interface Accepting {
  readonly address: string;
  readonly listener: Listener;
  next(): Promise<{ stream: Duplex; peer: PeerInfo }>;
}

async function listenOn(transport: MemoryTransport, address: string): Promise<Accepting> {
  const queue: Array<{ stream: Duplex; peer: PeerInfo }> = [];
  let wake: (() => void) | undefined;
  const listener = await transport.listen(address, (stream, peer) => {
    open.add(stream);
    queue.push({ stream, peer });
    wake?.();
  });
  listeners.add(listener);
  return {
    address: listener.address,
    listener,
    next: () =>
      within(
        new Promise((resolve) => {
          const check = (): void => {
            const accepted = queue.shift();
            if (accepted === undefined) return;
            wake = undefined;
            resolve(accepted);
          };
          wake = check;
          check();
        }),
        `a connection accepted on ${listener.address}`,
      ),
  };
}

async function connectPair(from: MemoryTransport, accepting: Accepting): Promise<Connected> {
  const client = await within(from.connect(accepting.address), `connect to ${accepting.address}`);
  open.add(client);
  const { stream: server, peer } = await accepting.next();
  return { client, server, peer, atServer: new Received(server), atClient: new Received(client) };
}

/** Resolves on 'close', whatever errors come before it (unlike events.once). */
function closed(stream: Duplex): Promise<void> {
  return stream.closed ? Promise.resolve() : new Promise((resolve) => stream.once('close', () => resolve()));
}

const isCode = (code: Parameters<typeof isWalshipError>[1]) => (err: unknown) => isWalshipError(err, code);

describe('MemoryTransport', () => {
  it('works standalone as endpoint "local", binding ":0" addresses to free ones', async (t) => {
    t.after(cleanup);
    const transport = new MemoryTransport();
    assert.equal(transport.name, 'memory');
    assert.equal(transport.endpoint, 'local');
    const first = await listenOn(transport, 'primary:0');
    const second = await listenOn(transport, 'primary:0');
    assert.match(first.address, /^primary:\d+$/);
    assert.notEqual(first.address, second.address);
    const { client, server, peer, atServer, atClient } = await connectPair(transport, first);
    assert.deepEqual(peer, { transport: 'memory', remoteAddress: '127.0.0.1', description: 'memory local' });
    client.write('hello');
    server.write('world');
    await atServer.atLeast(5, 'hello');
    await atClient.atLeast(5, 'world');
    assert.equal(atServer.text(), 'hello');
    assert.equal(atClient.text(), 'world');
    client.end();
    await within(Promise.all([closed(client), closed(server)]), 'both sides to close');
    assert.equal(transport.network.connectionCount, 0);
  });

  it('delivers a destroy to the peer as an end after the data in flight, without an error', async (t) => {
    t.after(cleanup);
    const transport = new MemoryTransport();
    const { client, server, atServer } = await connectPair(transport, await listenOn(transport, 'p'));
    const errors: unknown[] = [];
    server.on('error', (err) => errors.push(err));
    client.write('last words');
    client.destroy();
    await within(atServer.ended, "the server's 'end'");
    await within(closed(server), "the server's 'close'");
    assert.equal(atServer.text(), 'last words');
    assert.deepEqual(errors, []);
  });

  it('reports the connecting endpoint and its IP address, IPv6 or none, to the listener', async (t) => {
    t.after(cleanup);
    const network = new MemoryNetwork();
    const primary = network.transport('primary');
    const listener = await listenOn(primary, 'primary:7001');
    const cases: Array<[MemoryTransport, PeerInfo]> = [
      [network.transport('s1', { ip: '10.0.0.2' }), { transport: 'memory', remoteAddress: '10.0.0.2', description: 'memory s1' }],
      [new MemoryTransport({ network, endpoint: 's2', ip: 'fd00::2' }), { transport: 'memory', remoteAddress: 'fd00::2', description: 'memory s2' }],
      [network.transport('s3', { ip: null }), { transport: 'memory', description: 'memory s3' }],
    ];
    for (const [from, expected] of cases) {
      const { peer } = await connectPair(from, listener);
      assert.deepEqual(peer, expected);
    }
  });

  it('fails connects to an address nobody listens on, or only in another network', async (t) => {
    t.after(cleanup);
    const network = new MemoryNetwork();
    await listenOn(network.transport('a'), 'here');
    for (const [transport, address] of [
      [network.transport('b'), 'nowhere'],
      [new MemoryTransport(), 'here'],
    ] as const) {
      const err = await transport.connect(address).then(
        () => assert.fail('connect resolved'),
        (e: unknown) => e,
      );
      assert.ok(isWalshipError(err, 'CONNECTION_FAILED'));
      assert.equal(err.transient, true);
      assert.equal(errnoCode(err.cause), 'ECONNREFUSED');
    }
  });

  it('refuses a second listener on an address until the first one closes', async (t) => {
    t.after(cleanup);
    const transport = new MemoryTransport();
    const first = await listenOn(transport, 'taken');
    const err = await transport.listen('taken', () => {}).then(
      () => assert.fail('listen resolved'),
      (e: unknown) => e,
    );
    assert.ok(isWalshipError(err, 'CONNECTION_FAILED'));
    assert.equal(errnoCode(err.cause), 'EADDRINUSE');
    await first.listener.close();
    await first.listener.close();
    const second = await listenOn(transport, 'taken');
    await connectPair(transport, second);
  });

  it('rejects with ABORTED when the signal is aborted before connect or listen', async () => {
    const transport = new MemoryTransport();
    const signal = AbortSignal.abort(new Error('stop'));
    await assert.rejects(transport.connect('anywhere', { signal }), isCode('ABORTED'));
    await assert.rejects(transport.listen('anywhere', () => {}, { signal }), isCode('ABORTED'));
    // Nothing was bound.
    await assert.rejects(transport.connect('anywhere'), isCode('CONNECTION_FAILED'));
  });

  it('rejects bad options and arguments with coded errors', async () => {
    for (const options of [{ ip: 'localhost' }, { endpoint: '' }, { network: {} }, { color: 'red' }]) {
      assert.throws(() => new MemoryTransport(options as never), isCode('INVALID_OPTIONS'), JSON.stringify(options));
    }
    for (const options of [{ bufferBytes: 0 }, { bufferBytes: 1.5 }, { buffer: 1 }]) {
      assert.throws(() => new MemoryNetwork(options as never), isCode('INVALID_OPTIONS'), JSON.stringify(options));
    }
    const transport = new MemoryTransport();
    await assert.rejects(transport.connect(''), isCode('INVALID_ARGUMENT'));
    await assert.rejects(transport.connect('a', { signal: 'x' } as never), isCode('INVALID_ARGUMENT'));
    await assert.rejects(transport.connect('a', { timeout: 1 } as never), isCode('INVALID_ARGUMENT'));
    await assert.rejects(transport.listen('a', 'handler' as never), isCode('INVALID_ARGUMENT'));
    const { network } = transport;
    assert.throws(() => network.latency(-1), isCode('INVALID_ARGUMENT'));
    assert.throws(() => network.latency(Number.NaN), isCode('INVALID_ARGUMENT'));
    assert.throws(() => network.bandwidth(0), isCode('INVALID_ARGUMENT'));
    assert.throws(() => network.stall(undefined, 'b'), isCode('INVALID_ARGUMENT'));
    assert.throws(() => network.stall(''), isCode('INVALID_ARGUMENT'));
    assert.throws(() => network.partition(['a'], []), isCode('INVALID_ARGUMENT'));
    assert.throws(() => network.partition(['a', 'b'], ['b']), isCode('INVALID_ARGUMENT'));
  });

  it('stops a writer whose peer does not read after a bounded number of bytes', async (t) => {
    t.after(cleanup);
    const network = new MemoryNetwork({ bufferBytes: 4096 });
    const transport = network.transport('a');
    const listener = await transport.listen('sink', (stream) => {
      open.add(stream);
      sink = stream; // never read
    });
    listeners.add(listener);
    let sink: Duplex | undefined;
    const client = await transport.connect('sink');
    open.add(client);
    let accepted = 0;
    let drains = 0;
    client.on('drain', () => drains++);
    const chunk = Buffer.alloc(1000, 1);
    // Writes as a well-behaved writer does: until write() says stop, then waits for 'drain'.
    for (let round = 0; round < 3; round++) {
      while (!client.writableNeedDrain) {
        client.write(chunk);
        accepted += chunk.length;
      }
      await settle();
    }
    // The network's buffer, plus the chunk it holds beyond it, plus Node's writable buffer.
    assert.ok(accepted <= 4096 + chunk.length + client.writableHighWaterMark, `accepted ${accepted} bytes`);
    assert.equal(drains, 0, "'drain' came while the peer did not read");
    const atServer = new Received(sink as Duplex);
    await atServer.atLeast(accepted, 'the held-back bytes');
    assert.equal(atServer.bytes, accepted);
  });

  describe('latency', () => {
    it('delays delivery, keeps order, and acts on existing streams', async (t) => {
      t.after(cleanup);
      const transport = new MemoryTransport();
      const { client, server, atServer, atClient } = await connectPair(transport, await listenOn(transport, 'p'));
      transport.network.latency(100);
      const start = performance.now();
      for (const letter of 'abcdefgh') client.write(letter);
      await atServer.atLeast(8, 'the delayed bytes');
      assert.equal(atServer.text(), 'abcdefgh');
      // The network delivers no sooner than the latency after the write (one clock for both).
      assert.ok((atServer.times[0] as number) - start >= 99, `arrived after ${(atServer.times[0] as number) - start} ms`);
      // An end is delayed too.
      const endStart = performance.now();
      server.end();
      await within(atClient.ended, "the client's 'end'");
      assert.ok(performance.now() - endStart >= 99);
    });

    it('applies only to the selected link, and latency(0) releases what is in flight', async (t) => {
      t.after(cleanup);
      const network = new MemoryNetwork();
      const listener = await listenOn(network.transport('primary'), 'primary');
      const slow = await connectPair(network.transport('s1'), listener);
      const fast = await connectPair(network.transport('s2'), listener);
      network.latency(60_000, 's1', 'primary');
      slow.client.write('slow');
      fast.client.write('fast');
      await fast.atServer.atLeast(4, 'bytes on the link without latency');
      await settle();
      assert.equal(slow.atServer.bytes, 0);
      network.latency(0);
      await slow.atServer.atLeast(4, 'the bytes in flight once the latency is removed');
      assert.equal(slow.atServer.text(), 'slow');
    });
  });

  describe('bandwidth', () => {
    it('limits throughput without losing or reordering data', async (t) => {
      t.after(cleanup);
      const transport = new MemoryTransport();
      const { client, atServer } = await connectPair(transport, await listenOn(transport, 'p'));
      const rate = 100 * 1024;
      transport.network.bandwidth(rate);
      const random = mulberry32(7);
      const data = Buffer.from(Array.from({ length: 50 * 1024 }, () => Math.floor(random() * 256)));
      const start = performance.now();
      for (let offset = 0; offset < data.length; offset += 5000) client.write(data.subarray(offset, offset + 5000));
      await atServer.atLeast(data.length, 'the rate-limited bytes');
      const elapsed = performance.now() - start;
      // 50 KiB at 100 KiB/s in slices of rate/50 bytes: the last slice goes out after >= 480 ms.
      assert.ok(elapsed >= 400, `50 KiB took only ${elapsed.toFixed(0)} ms at 100 KiB/s`);
      assert.equal(createHash('sha256').update(Buffer.concat(atServer.chunks)).digest('hex'), createHash('sha256').update(data).digest('hex'));
    });

    it('bandwidth(Infinity) lifts the limit on what is in flight', async (t) => {
      t.after(cleanup);
      const transport = new MemoryTransport();
      const { client, atServer } = await connectPair(transport, await listenOn(transport, 'p'));
      transport.network.bandwidth(10);
      client.write(Buffer.alloc(10_000, 3));
      await atServer.atLeast(1, 'the first slice');
      transport.network.bandwidth(Infinity);
      await atServer.atLeast(10_000, 'the rest at full speed');
      assert.equal(atServer.bytes, 10_000);
    });
  });

  describe('stall and resume', () => {
    it('stops delivery without closing, then carries on where it stopped', async (t) => {
      t.after(cleanup);
      const transport = new MemoryTransport();
      const { client, server, atServer } = await connectPair(transport, await listenOn(transport, 'p'));
      transport.network.stall();
      const random = mulberry32(3);
      const data = Buffer.from(Array.from({ length: 20_000 }, () => Math.floor(random() * 256)));
      for (let offset = 0; offset < data.length; offset += 1000) client.write(data.subarray(offset, offset + 1000));
      client.end();
      await settle();
      assert.equal(atServer.bytes, 0);
      assert.equal(server.readableEnded, false);
      assert.equal(client.destroyed, false);
      transport.network.resume();
      await within(atServer.ended, "the server's 'end' after resume");
      assert.ok(Buffer.concat(atServer.chunks).equals(data));
    });

    it('hides a destroy from the peer until resume (half-open)', async (t) => {
      t.after(cleanup);
      const transport = new MemoryTransport();
      const { client, server, atClient } = await connectPair(transport, await listenOn(transport, 'p'));
      transport.network.stall();
      server.destroy();
      await settle();
      assert.equal(client.destroyed, false);
      assert.equal(client.write('into the void'), true);
      transport.network.resume();
      await within(atClient.ended, "the client's 'end' after resume");
      await within(closed(client), "the client's 'close' after resume");
    });

    it('keeps a connect across a stalled link pending until resume, or until its signal aborts', async (t) => {
      t.after(cleanup);
      const network = new MemoryNetwork();
      const listener = await listenOn(network.transport('primary'), 'primary');
      network.stall('primary', 's1');
      let settled = false;
      const connecting = network.transport('s1').connect('primary').finally(() => (settled = true));
      const controller = new AbortController();
      const aborted = network.transport('s1').connect('primary', { signal: controller.signal });
      // Another link is not stalled.
      await connectPair(network.transport('s2'), listener);
      await settle();
      assert.equal(settled, false);
      controller.abort();
      await assert.rejects(within(aborted, 'the aborted connect'), isCode('ABORTED'));
      network.resume('s1');
      const stream = await within(connecting, 'the connect after resume');
      open.add(stream);
    });

    it('fails a pending connect when its listener closes, a partition cuts it off, or its link is reset', async (t) => {
      t.after(cleanup);
      const network = new MemoryNetwork();
      const transport = network.transport('s1');
      const hold = async (address: string): Promise<{ listener: Listener; connecting: Promise<Duplex> }> => {
        const listener = await network.transport(address).listen(address, () => {});
        listeners.add(listener);
        network.stall(address);
        const connecting = transport.connect(address);
        connecting.catch(() => {});
        return { listener, connecting };
      };
      const closing = await hold('closing');
      const partitioned = await hold('partitioned');
      const reset = await hold('reset');
      await settle();
      await closing.listener.close();
      network.partition(['s1'], ['partitioned']);
      assert.equal(network.reset('reset'), 0);
      for (const [what, { connecting }, code] of [
        ['listener closed', closing, 'ECONNREFUSED'],
        ['partition', partitioned, 'EHOSTUNREACH'],
        ['reset', reset, 'ECONNRESET'],
      ] as const) {
        const err = await within(connecting, what).then(
          () => assert.fail(`the connect resolved after: ${what}`),
          (e: unknown) => e,
        );
        assert.ok(isWalshipError(err, 'CONNECTION_FAILED'), what);
        assert.equal(errnoCode(err.cause), code, what);
      }
    });

    it('stalls only the selected link', async (t) => {
      t.after(cleanup);
      const network = new MemoryNetwork();
      const listener = await listenOn(network.transport('primary'), 'primary');
      const s1 = await connectPair(network.transport('s1'), listener);
      const s2 = await connectPair(network.transport('s2'), listener);
      network.stall('s1');
      s1.client.write('one');
      s2.client.write('two');
      await s2.atServer.atLeast(3, 'bytes on the link that is not stalled');
      await settle();
      assert.equal(s1.atServer.bytes, 0);
      network.resume('s1', 'primary');
      await s1.atServer.atLeast(3, 'bytes after resume');
    });
  });

  describe('reset', () => {
    it('errors both sides with ECONNRESET and closes them, on the selected links only', async (t) => {
      t.after(cleanup);
      const network = new MemoryNetwork();
      const listener = await listenOn(network.transport('primary'), 'primary');
      const s1 = await connectPair(network.transport('s1'), listener);
      const s2 = await connectPair(network.transport('s2'), listener);
      const errors = [s1.client, s1.server].map((stream) => within(once(stream, 'error'), "'error' after reset"));
      const closes = [s1.client, s1.server].map((stream) => within(closed(stream), "'close' after reset"));
      assert.equal(network.reset('s1'), 1);
      for (const [err] of await Promise.all(errors)) assert.equal(errnoCode(err), 'ECONNRESET');
      await Promise.all(closes);
      s2.client.write('still here');
      await s2.atServer.atLeast(10, 'bytes on the stream that was not reset');
      assert.equal(network.connectionCount, 1);
      // The network is not broken: new connections work.
      await connectPair(network.transport('s1'), listener);
    });
  });

  describe('partition and heal', () => {
    it('refuses connects across groups, stalls streams across them, and heal restores both', async (t) => {
      t.after(cleanup);
      const network = new MemoryNetwork();
      const listener = await listenOn(network.transport('primary'), 'primary');
      const standbyListener = await listenOn(network.transport('s1'), 's1');
      const across = await connectPair(network.transport('s1'), listener);
      network.partition(['primary'], ['s1', 's2']);
      for (const [from, address] of [
        ['s1', 'primary'],
        ['s2', 'primary'],
        ['primary', 's1'],
      ] as const) {
        const err = await network.transport(from).connect(address).then(
          () => assert.fail(`connect from ${from} to ${address} resolved`),
          (e: unknown) => e,
        );
        assert.ok(isWalshipError(err, 'CONNECTION_FAILED'), `${from} to ${address}`);
        assert.equal(err.transient, true);
      }
      // Within a group, and to endpoints outside the partition, all is well.
      await connectPair(network.transport('s2'), standbyListener);
      await connectPair(network.transport('s3'), listener);
      across.client.write('across');
      await settle();
      assert.equal(across.atServer.bytes, 0);
      network.heal();
      await across.atServer.atLeast(6, 'the stalled bytes after heal');
      await connectPair(network.transport('s1'), listener);
    });
  });

  it('hands the connection to the listener before connect() resolves', async (t) => {
    t.after(cleanup);
    const transport = new MemoryTransport();
    let accepted = 0;
    listeners.add(await transport.listen('p', (stream) => (open.add(stream), accepted++)));
    open.add(await transport.connect('p'));
    assert.equal(accepted, 1);
  });

  it("an exception from the listener's handler costs that connection, not the process", async () => {
    const transport = new MemoryTransport();
    let calls = 0;
    const listener = await transport.listen('p', (stream) => {
      calls++;
      if (calls === 1) throw new Error('handler bug');
      open.add(stream);
    });
    listeners.add(listener);
    await assert.rejects(transport.connect('p'), (err) => isWalshipError(err, 'CONNECTION_FAILED'));
    // The listener keeps serving.
    open.add(await transport.connect('p'));
    assert.equal(calls, 2);
  });

  it('leaves no timer behind once streams with data in flight are destroyed', async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
    const before = timers();
    const transport = new MemoryTransport();
    transport.network.latency(60_000);
    let server: Duplex | undefined;
    await transport.listen('p', (stream) => (server = stream));
    const client = await transport.connect('p');
    await settle();
    server?.resume();
    client.write('in flight');
    await settle();
    assert.equal(timers(), before + 1, 'the latency timer of the data in flight');
    client.destroy();
    server?.destroy();
    await settle();
    assert.equal(timers(), before);
    assert.equal(transport.network.connectionCount, 0);
  });
});
