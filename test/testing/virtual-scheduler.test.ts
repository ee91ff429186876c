import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clearTimer, currentScheduler, REAL_SCHEDULER } from '../../src/scheduler.js';
import { VirtualScheduler } from '../../src/testing/index.js';

describe('VirtualScheduler', () => {
  it('fires timers earliest first, ties in the order they were set, and jumps the clock to each', async () => {
    const clock = new VirtualScheduler({ startTime: 1_000 });
    const fired: string[] = [];
    const done = new Promise<void>((resolve) => {
      clock.setTimeout(() => fired.push(`b@${clock.monotonic()}`), 50);
      clock.setTimeout(() => fired.push(`a@${clock.monotonic()}`), 10);
      clock.setTimeout(() => fired.push(`c@${clock.monotonic()}`), 50);
      clock.setImmediate(() => fired.push(`now@${clock.monotonic()}`));
      clock.setTimeout(resolve, 3_600_000);
    });
    await done;
    assert.deepEqual(fired, ['now@0', 'a@10', 'b@50', 'c@50']);
    assert.equal(clock.now(), 1_000 + 3_600_000, 'an hour passed in no real time');
  });

  it('runs intervals until cleared, and a cleared timer never fires', async () => {
    const clock = new VirtualScheduler();
    const ticks: number[] = [];
    const cancelled = clock.setTimeout(() => ticks.push(-1), 5);
    clearTimer(cancelled);
    await new Promise<void>((resolve) => {
      const interval = clock.setInterval(() => {
        ticks.push(clock.monotonic());
        if (ticks.length === 3) {
          clearTimer(interval);
          resolve();
        }
      }, 100);
    });
    await clock.sleep(1_000);
    assert.deepEqual(ticks, [100, 200, 300]);
  });

  it('sleep rejects with an AbortError when its signal aborts, and timeoutSignal aborts in virtual time', async () => {
    const clock = new VirtualScheduler();
    const signal = clock.timeoutSignal(200);
    await assert.rejects(clock.sleep(10_000, { signal }), (err: Error) => err.name === 'AbortError');
    assert.equal(clock.monotonic(), 200);
    assert.equal((signal.reason as DOMException).name, 'TimeoutError');
  });

  it('is the current scheduler of everything run on it, and only there', async () => {
    const clock = new VirtualScheduler();
    assert.equal(currentScheduler(), REAL_SCHEDULER);
    const seen = await clock.run(async () => {
      await Promise.resolve();
      const inTimer = await new Promise((resolve) => currentScheduler().setTimeout(() => resolve(currentScheduler()), 5));
      return [currentScheduler(), inTimer];
    });
    assert.deepEqual(seen, [clock, clock]);
    assert.equal(currentScheduler(), REAL_SCHEDULER);
  });

  it('gives the same order of events on every run of the same work', async () => {
    const run = async (): Promise<string> => {
      const clock = new VirtualScheduler();
      const log: string[] = [];
      await clock.run(async () => {
        const workers = [3, 1, 2].map(async (n) => {
          for (let i = 0; i < 5; i++) {
            await currentScheduler().sleep(n * 7);
            log.push(`${n}:${i}@${clock.monotonic()}`);
            await Promise.resolve();
          }
        });
        await Promise.all(workers);
      });
      return log.join(' ');
    };
    assert.equal(await run(), await run());
  });

  it('stop() drops pending timers for good', async () => {
    const clock = new VirtualScheduler();
    let fired = false;
    clock.setTimeout(() => (fired = true), 1);
    clock.stop();
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(fired, false);
    assert.equal(clock.pending, 0);
  });
});
