import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError, WalshipError } from '../src/index.js';
import { LsnWaiters } from '../src/lsn-waiters.js';
import { mulberry32 } from './helpers/random.js';
import { within } from './helpers/wal.js';

/** Whether `promise` has settled, without waiting for it. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  const marker = Symbol('pending');
  const winner = await Promise.race([promise.then(() => 'done', () => 'done'), new Promise((resolve) => setImmediate(() => resolve(marker)))]);
  return winner !== marker;
}

describe('LsnWaiters', () => {
  it('resolves at once for a position already reached, and never moves back', async () => {
    const waiters = new LsnWaiters(100);
    await waiters.wait(50);
    await waiters.wait(100);
    waiters.advance(40);
    assert.equal(waiters.position, 100);
    const later = waiters.wait(101);
    assert.equal(await settled(later), false);
    assert.equal(waiters.size, 1);
    waiters.advance(101);
    await later;
    assert.equal(waiters.size, 0);
  });

  it('releases waiters exactly when the position reaches them, in LSN order', async () => {
    const random = mulberry32(7);
    const waiters = new LsnWaiters(0);
    const released: number[] = [];
    let position = 0;
    const all: Promise<void>[] = [];
    for (let i = 0; i < 2000; i++) {
      const lsn = 1 + Math.floor(random() * 10_000);
      all.push(
        waiters.wait(lsn).then(() => {
          // Resolved only once the position has reached it.
          assert.ok(position >= lsn, `waiter for ${lsn} released at ${position}`);
          released.push(lsn);
        }),
      );
    }
    while (position < 10_000) {
      position = Math.min(10_000, position + 1 + Math.floor(random() * 500));
      waiters.advance(position);
      await new Promise((resolve) => setImmediate(resolve));
      // Everything at or below the position is out; nothing above it is.
      assert.equal(waiters.size, all.length - released.length);
    }
    await Promise.all(all);
    assert.deepEqual(released, [...released].sort((a, b) => a - b));
    assert.equal(released.length, 2000);
  });

  it('an abort rejects with ABORTED and leaves the other waiters alone', async () => {
    const waiters = new LsnWaiters(0);
    const already = new AbortController();
    already.abort(new Error('gone before'));
    await assert.rejects(waiters.wait(10, { signal: already.signal }), (err: unknown) => isWalshipError(err, 'ABORTED'));

    const controller = new AbortController();
    const aborted = waiters.wait(10, { signal: controller.signal });
    const kept = waiters.wait(10);
    controller.abort(new Error('user gave up'));
    await assert.rejects(aborted, (err: unknown) => isWalshipError(err, 'ABORTED') && (err.cause as Error).message === 'user gave up');
    assert.equal(waiters.size, 1);
    waiters.advance(10);
    await kept;
  });

  it('a timeout rejects with TIMEOUT naming the LSN', async () => {
    const waiters = new LsnWaiters(0);
    const waiting = waiters.wait(0x1_0000_0010, { timeoutMs: 20 });
    await assert.rejects(within(waiting, 10_000, 'the timeout'), (err: unknown) => isWalshipError(err, 'TIMEOUT') && /1\/10/.test(err.message));
    assert.equal(waiters.size, 0);
    // A waiter released before its timeout stays resolved.
    const quick = waiters.wait(5, { timeoutMs: 60_000 });
    waiters.advance(5);
    await quick;
  });

  it('fail() rejects every waiter and every later wait', async () => {
    const waiters = new LsnWaiters(0);
    const error = new WalshipError('WAL_CLOSED', 'closed');
    const pending = [waiters.wait(1), waiters.wait(2, { timeoutMs: 60_000 }), waiters.wait(3, { signal: new AbortController().signal })];
    waiters.fail(error);
    for (const p of pending) await assert.rejects(p, (err: unknown) => err === error);
    assert.equal(waiters.size, 0);
    await assert.rejects(waiters.wait(100), (err: unknown) => err === error);
    await assert.rejects(waiters.wait(0), (err: unknown) => err === error);
  });

  it('rejectPast() rejects the waiters past an LSN and keeps the others, and later waits, going', async () => {
    const waiters = new LsnWaiters(0);
    const error = new WalshipError('WAL_IO', 'dropped');
    const outcome = (p: Promise<void>): Promise<unknown> => p.then(() => 'resolved', (err: unknown) => err);
    const kept = [waiters.wait(5), waiters.wait(10)].map(outcome);
    const dropped = [waiters.wait(11), waiters.wait(20, { timeoutMs: 60_000 })].map(outcome);
    const controller = new AbortController();
    const aborted = outcome(waiters.wait(15, { signal: controller.signal }));
    controller.abort();
    assert.ok(isWalshipError(await aborted, 'ABORTED'));
    waiters.rejectPast(10, error);
    for (const p of dropped) assert.equal(await p, error);
    // The abandoned waiter went with the rebuild; the position did not move.
    assert.equal(waiters.size, 2);
    assert.equal(waiters.held, 2);
    assert.equal(waiters.position, 0);
    // The same LSNs waited for again are released normally, as are the kept waiters.
    const again = outcome(waiters.wait(20));
    waiters.advance(10);
    for (const p of kept) assert.equal(await p, 'resolved');
    assert.equal(await settled(again), false);
    waiters.advance(20);
    assert.equal(await again, 'resolved');
    assert.equal(waiters.held, 0);
  });

  it('mixed waits, aborts and advances keep the count of waiting ones exact', async () => {
    const random = mulberry32(11);
    const waiters = new LsnWaiters(0);
    const live = new Map<number, { lsn: number; controller: AbortController }>();
    const outcomes: Promise<void>[] = [];
    let position = 0;
    for (let id = 0; id < 5000; id++) {
      const roll = random();
      if (roll < 0.6) {
        const lsn = position + 1 + Math.floor(random() * 2000);
        const controller = new AbortController();
        live.set(id, { lsn, controller });
        outcomes.push(
          waiters.wait(lsn, { signal: controller.signal }).then(
            () => {
              assert.ok(position >= lsn);
              assert.ok(live.delete(id), 'released once, and never after an abort');
            },
            (err: unknown) => assert.ok(isWalshipError(err, 'ABORTED')),
          ),
        );
      } else if (roll < 0.85 && live.size > 0) {
        const ids = [...live.keys()];
        const victim = ids[Math.floor(random() * ids.length)] as number;
        live.get(victim)?.controller.abort();
        live.delete(victim);
      } else {
        position += Math.floor(random() * 300);
        waiters.advance(position);
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(waiters.size, live.size);
      }
    }
    position = Number.MAX_SAFE_INTEGER;
    waiters.advance(position);
    await Promise.all(outcomes);
    assert.equal(live.size, 0);
    assert.equal(waiters.size, 0);
    assert.equal(waiters.held, 0);
  });

  it('waiters abandoned on a far LSN do not pile up', async () => {
    const waiters = new LsnWaiters(0);
    const live = waiters.wait(1_000_000);
    for (let i = 0; i < 10_000; i++) {
      const controller = new AbortController();
      const waiting = waiters.wait(500_000 + i, { signal: controller.signal });
      controller.abort();
      await waiting.catch(() => undefined);
    }
    assert.equal(waiters.size, 1);
    // Abandoned waiters are compacted away in bulk: far fewer than the 10 000 given up are held.
    assert.ok(waiters.held <= 200, `${waiters.held} waiters held`);
    waiters.advance(999_999);
    assert.equal(await settled(live), false);
    waiters.advance(1_000_000);
    await live;
    assert.equal(waiters.size, 0);
  });
});
