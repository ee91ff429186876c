/**
 * Tests of the transport conformance suite itself: it must pass a correct transport and
 * fail each deliberately broken one on the cases that cover its defect.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError } from '../../src/errors.js';
import {
  transportConformance,
  type ConformanceAdapters,
  type TransportConformanceHarness,
} from '../../src/testing/transport-conformance.js';
import { MemoryTransport, type MemoryNetwork } from '../../src/transport/memory-transport.js';
import type { Listener, Transport } from '../../src/transport/transport.js';
import {
  BrokenTransport,
  closingTwice,
  crossing,
  dropping,
  ignoringAbort,
  leakyListener,
  reordering,
  silentEnd,
  unbounded,
} from './broken-transports.js';
import { describeFailures, runRecorded, type Outcome } from '../helpers/conformance-outcome.js';

const CASES = {
  basic: 'connects, exchanges bytes and describes the peer',
  ordering: 'carries bytes in order and intact in both directions at once',
  backpressure: "a reader that stops reading stops the writer's buffering; all arrives once it reads",
  endFromClient: 'end from the client is seen by the server exactly once',
  endFromServer: 'end from the server is seen by the client exactly once',
  destroyFromClient: 'destroy from the client closes the server side exactly once',
  destroyFromServer: 'destroy from the server closes the client side exactly once',
  abortPending: 'connect rejects when its signal aborts while it is pending',
  abortedConnect: 'connect rejects with an already aborted signal',
  refused: 'connect to an address nobody listens on rejects',
  concurrent: 'concurrent connections never cross data',
  listenerClose: 'a closed listener refuses new connects and keeps existing streams',
  abortedListen: 'listen rejects with an already aborted signal',
} as const;
type CaseKey = keyof typeof CASES;
const ALL_CASES = Object.values(CASES);

function networkOf(transport: Transport): MemoryNetwork {
  if (transport instanceof MemoryTransport) return transport.network;
  if (transport instanceof BrokenTransport) return transport.inner.network;
  throw new Error(`not a memory-based transport: ${transport.name}`);
}

/** A harness over memory-based transports, small enough for fast runs, that remembers what it created. */
function harness(make: () => Transport): TransportConformanceHarness & { created: Transport[] } {
  const created: Transport[] = [];
  const blackHoles = new Map<Transport, Listener>();
  return {
    created,
    name: 'self-test',
    createTransport: () => {
      const transport = make();
      created.push(transport);
      return transport;
    },
    listenAddress: () => 'server:0',
    async unreachableAddress(transport) {
      // A listener behind a stalled link: a connect to it is neither accepted nor refused.
      const network = networkOf(transport);
      blackHoles.set(transport, await network.transport('black-hole').listen('black-hole', () => {}));
      network.stall('black-hole');
      return 'black-hole';
    },
    async cleanup(transport) {
      await blackHoles.get(transport)?.close();
    },
    volumeBytes: 4 * 1024 * 1024,
    connections: 20,
    timeoutMs: 2000,
  };
}

/** Runs the suite with adapters that record each case's outcome instead of registering tests. */
function runSuite(options: TransportConformanceHarness): Promise<Outcome> {
  return runRecorded((adapters) => transportConformance(options, adapters));
}

/** Every stream a case opened is gone once the case has finished, passed or failed. */
async function assertNoOpenConnections(transports: readonly Transport[]): Promise<void> {
  // A connect that wrongly succeeded in the last case hands its server side over on the
  // next tick; the case destroys it then.
  await new Promise((resolve) => setImmediate(resolve));
  for (const transport of transports) {
    assert.equal(networkOf(transport).connectionCount, 0, `a case left connections open on ${transport.name}`);
  }
}

const BROKEN: ReadonlyArray<{ make: () => BrokenTransport; defect: string; fails: readonly CaseKey[] }> = [
  { make: reordering, defect: 'swaps chunks now and then', fails: ['ordering', 'concurrent'] },
  { make: dropping, defect: 'drops a chunk now and then', fails: ['ordering', 'concurrent'] },
  { make: unbounded, defect: 'ignores backpressure and buffers without bound', fails: ['backpressure'] },
  {
    make: closingTwice,
    defect: "emits 'close' twice",
    fails: ['endFromClient', 'endFromServer', 'destroyFromClient', 'destroyFromServer'],
  },
  {
    make: silentEnd,
    defect: 'never tells the other side about an end',
    fails: ['basic', 'ordering', 'backpressure', 'endFromClient', 'endFromServer', 'concurrent', 'listenerClose'],
  },
  { make: ignoringAbort, defect: 'ignores abort signals', fails: ['abortPending', 'abortedConnect', 'abortedListen'] },
  { make: crossing, defect: 'crosses data between connections', fails: ['concurrent'] },
  { make: leakyListener, defect: 'keeps accepting after Listener.close()', fails: ['refused', 'listenerClose'] },
];

// The runs wait out deadlines of the broken transports, so they too run side by side.
describe('transportConformance against known transports', { concurrency: true }, () => {
  it('passes MemoryTransport on every case', async () => {
    const options = harness(() => new MemoryTransport());
    const outcome = await runSuite(options);
    assert.deepEqual([...outcome.failed.keys()], [], `failures:${describeFailures(outcome)}`);
    assert.deepEqual(outcome.passed, ALL_CASES);
    await assertNoOpenConnections(options.created);
  });

  it('passes a faithful wrapper of MemoryTransport, the base of the broken ones', async () => {
    const options = harness(() => new BrokenTransport('faithful'));
    const outcome = await runSuite(options);
    assert.deepEqual([...outcome.failed.keys()], [], `failures:${describeFailures(outcome)}`);
    assert.deepEqual(outcome.passed, ALL_CASES);
  });

  for (const { make, defect, fails } of BROKEN) {
    it(`fails a transport that ${defect}, on exactly the cases that cover it`, async () => {
      const options = harness(make);
      const outcome = await runSuite(options);
      const expected = fails.map((key) => CASES[key]);
      assert.deepEqual([...outcome.failed.keys()], expected, `failures:${describeFailures(outcome)}`);
      assert.deepEqual(outcome.passed, ALL_CASES.filter((name) => !expected.includes(name as never)));
      await assertNoOpenConnections(options.created);
    });
  }
});

describe('transportConformance registration', () => {
  /** Registers the suite with the given `it` and returns the names it registered, in order. */
  function register(options: Partial<TransportConformanceHarness>, it: NonNullable<ConformanceAdapters['it']>): void {
    const suites: string[] = [];
    transportConformance(
      { createTransport: () => new MemoryTransport(), listenAddress: () => 'server:0', ...options },
      { describe: (name, fn) => (suites.push(name), fn()), it },
    );
    assert.deepEqual(suites, [`transport conformance: ${options.name ?? 'transport'}`]);
  }

  it('without a skip function on the adapter, registers a case it cannot run under a name saying why, with an empty body', async () => {
    const registered = new Map<string, () => unknown>();
    register({ name: 'x', capabilities: { abortConnect: false } }, (name, fn) => void registered.set(name, fn));
    assert.equal(registered.size, ALL_CASES.length);
    const skipped = [...registered.keys()].filter((name) => name.startsWith('[skipped: '));
    assert.deepEqual(skipped, [
      `[skipped: capabilities.abortConnect is false] ${CASES.abortPending}`,
      `[skipped: capabilities.abortConnect is false] ${CASES.abortedConnect}`,
    ]);
    for (const name of skipped) await registered.get(name)?.();
  });

  it('with a skip function on the adapter, registers such cases through it', () => {
    const run: string[] = [];
    const skipped: string[] = [];
    const it = Object.assign((name: string) => void run.push(name), { skip: (name: string) => void skipped.push(name) });
    register({ capabilities: { abortListen: false } }, it);
    assert.deepEqual(skipped, [
      `[skipped: the harness has no unreachableAddress()] ${CASES.abortPending}`,
      `[skipped: capabilities.abortListen is false] ${CASES.abortedListen}`,
    ]);
    assert.equal(run.length, ALL_CASES.length - 2);
  });

  it('rejects a malformed harness or adapters with INVALID_ARGUMENT', () => {
    const noop = (): void => {};
    const bad: unknown[] = [
      null,
      { listenAddress: () => 'a' },
      { createTransport: () => new MemoryTransport() },
      { createTransport: () => new MemoryTransport(), listenAddress: () => 'a', volumeBytes: 0 },
      { createTransport: () => new MemoryTransport(), listenAddress: () => 'a', timeoutMs: 1.5 },
      { createTransport: () => new MemoryTransport(), listenAddress: () => 'a', capabilities: { abortConect: false } },
      { createTransport: () => new MemoryTransport(), listenAddress: () => 'a', unreachableAddress: 'b' },
    ];
    for (const value of bad) {
      assert.throws(
        () => transportConformance(value as TransportConformanceHarness, { describe: noop, it: noop }),
        (err) => isWalshipError(err, 'INVALID_ARGUMENT'),
        JSON.stringify(value),
      );
    }
    assert.throws(
      () => transportConformance({ createTransport: () => new MemoryTransport(), listenAddress: () => 'a' }, { describe: 'x' as never, it: noop }),
      (err) => isWalshipError(err, 'INVALID_ARGUMENT'),
    );
  });
});
