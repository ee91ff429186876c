import assert from 'node:assert/strict';
import { format } from 'node:util';
import { afterEach, beforeEach, describe, it } from 'node:test';
import createDebug from 'debug';
import { SafeEmitter } from '../src/events.js';
import type { Logger } from '../src/logger.js';
import { ReplicationServer } from '../src/protocol/replication-server.js';
import { WalReceiver } from '../src/replication/wal-receiver.js';
import { WalSender } from '../src/replication/wal-sender.js';
import { WalService } from '../src/replication/wal-service.js';
import { MemoryStorage } from '../src/testing/index.js';
import { openLog, readAll, texts, within } from './helpers/wal.js';

interface ProbeEvents {
  ping: (n: number) => void;
}

/** A SafeEmitter whose `emitSafely` a test can call, logging `.error` calls into `errors`. */
class Probe extends SafeEmitter<ProbeEvents> {
  readonly errors: unknown[][] = [];

  constructor(withLog = true) {
    super();
    if (withLog) {
      const log = Object.assign(() => undefined, {
        error: (...args: unknown[]) => this.errors.push(args),
        trace: () => undefined,
      });
      this.emitterLog = log as unknown as Logger;
    }
  }

  ping(n: number): void {
    this.emitSafely('ping', n);
  }
}

describe('SafeEmitter.emitSafely', () => {
  it('logs a throwing listener on emitterLog.error instead of throwing it into the caller', () => {
    const probe = new Probe();
    probe.on('ping', () => {
      throw new Error('boom');
    });
    assert.doesNotThrow(() => probe.ping(1), 'a listener exception must not unwind out of emitSafely');
    assert.deepEqual(probe.errors, [['a %s listener threw: %s', 'ping', 'boom']], 'the exception is logged once, in the shared format');
  });

  it('logs a thrown non-Error by its string form', () => {
    const probe = new Probe();
    probe.on('ping', () => {
      throw 'plain string';
    });
    probe.ping(1);
    assert.deepEqual(probe.errors, [['a %s listener threw: %s', 'ping', 'plain string']], 'a non-Error is logged with String()');
  });

  it('swallows the exception when no emitterLog is set', () => {
    const probe = new Probe(false);
    probe.on('ping', () => {
      throw new Error('boom');
    });
    assert.doesNotThrow(() => probe.ping(1), 'no logger must not turn the exception back into a throw');
  });

  it('still delivers later emits, to the throwing listener and to others', () => {
    const probe = new Probe();
    const thrower: number[] = [];
    const others: number[] = [];
    probe.on('ping', (n) => {
      thrower.push(n);
      if (n === 1) throw new Error('only the first');
    });
    probe.ping(1);
    probe.on('ping', (n) => others.push(n));
    probe.ping(2);
    probe.ping(3);
    assert.deepEqual(thrower, [1, 2, 3], 'the throwing listener stays registered and hears every emit');
    assert.deepEqual(others, [2, 3], 'a listener added after the throw hears every later emit');
    assert.equal(probe.errors.length, 1, 'only the one throwing call is logged');
  });

  it('fires a once listener once, even when it throws', () => {
    const probe = new Probe();
    const quiet: number[] = [];
    const loud: number[] = [];
    probe.once('ping', (n) => quiet.push(n));
    probe.ping(1);
    probe.ping(2);
    assert.deepEqual(quiet, [1], 'a once listener hears only the first emit');
    probe.once('ping', (n) => {
      loud.push(n);
      throw new Error('once and loud');
    });
    probe.ping(3);
    probe.ping(4);
    assert.deepEqual(loud, [3], 'a throwing once listener is removed like any other once listener');
    assert.equal(probe.listenerCount('ping'), 0, 'no once listener is left behind');
    assert.equal(probe.errors.length, 1, 'the throwing once listener is logged once');
  });
});

describe('components log a throwing listener on their own error channel', () => {
  /** What `debug` printed, by namespace, while the `walship:*` channels are enabled. */
  let lines: { namespace: string; text: string }[] = [];
  let previousNamespaces = '';
  const originalLog = createDebug.log;

  beforeEach(() => {
    lines = [];
    previousNamespaces = createDebug.disable();
    createDebug.enable('walship:*');
    createDebug.log = function (this: { namespace: string }, ...args: unknown[]) {
      lines.push({ namespace: this.namespace, text: format(...args) });
    };
  });

  afterEach(() => {
    createDebug.log = originalLog;
    createDebug.disable();
    if (previousNamespaces !== '') createDebug.enable(previousNamespaces);
  });

  function errorsOn(namespace: string): string[] {
    return lines.filter((l) => l.namespace === namespace).map((l) => l.text);
  }

  it('WalLog: a throwing `write` listener is logged on walship:wal:error and the log goes on writing', async () => {
    const log = await openLog(new MemoryStorage());
    const heard: number[] = [];
    log.on('write', ({ writtenLsn }) => {
      heard.push(writtenLsn);
      throw new Error('a careless write listener');
    });
    // `write` is announced a turn of the event loop after the write: wait until it covers the flush.
    const heardUpTo = (lsn: number): Promise<void> =>
      within(
        (async () => {
          while ((heard.at(-1) ?? -1) < lsn) await new Promise((resolve) => setImmediate(resolve));
        })(),
        5_000,
        `a write event reaching ${lsn}`,
      );
    await log.waitForFlush(log.append(Buffer.from('a')));
    await heardUpTo(log.flushedLsn);
    await log.waitForFlush(log.append(Buffer.from('b')));
    await heardUpTo(log.flushedLsn);
    assert.deepEqual(texts(await readAll(log)), ['a', 'b'], 'both appends are durable and readable');
    assert.ok(heard.length >= 2, `the write listener heard the second write after throwing on the first (heard ${heard.length})`);
    const errors = errorsOn('walship:wal:error');
    assert.equal(errors.length, heard.length, `each throw is logged once on walship:wal:error (got ${JSON.stringify(errors)})`);
    assert.ok(errors.every((e) => e.includes('a write listener threw: a careless write listener')), `the log lines carry the event and message: ${JSON.stringify(errors)}`);
    await log.close();
  });

  // The other components need a live connection to emit for real; their wiring (which logger
  // `emitSafely` reports to) is checked by calling it directly on a fresh instance.
  const components: { name: string; namespace: string; make: () => unknown }[] = [
    {
      name: 'ReplicationServer',
      namespace: 'walship:server:error',
      make: () => new ReplicationServer({ transport: null, address: 'x', auth: null } as never),
    },
    {
      name: 'WalService',
      namespace: 'walship:service:error',
      make: () => new WalService({} as never, { transport: null, address: 'x', auth: null } as never),
    },
    { name: 'WalSender', namespace: 'walship:sender:error', make: () => new WalSender(null as never, null as never, 0) },
    { name: 'WalReceiver', namespace: 'walship:standby:receiver:error', make: () => new WalReceiver(null as never, { role: 'replica' } as never) },
  ];
  for (const { name, namespace, make } of components) {
    it(`${name}: logged on ${namespace}`, () => {
      const emitter = make() as unknown as { on(e: string, fn: () => void): void; emitSafely(e: string, payload: unknown): void };
      emitter.on('probe', () => {
        throw new Error(`${name} listener failed`);
      });
      assert.doesNotThrow(() => emitter.emitSafely('probe', {}), `${name}: the exception must not unwind out of emitSafely`);
      const errors = errorsOn(namespace);
      assert.equal(errors.length, 1, `${name}: one line on ${namespace} (got ${JSON.stringify(lines)})`);
      assert.ok(errors[0]?.includes(`a probe listener threw: ${name} listener failed`), `${name}: the line carries the event and message: ${errors[0]}`);
    });
  }
});
