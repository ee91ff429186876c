import type { WalLog } from '../src/index.js';
import { LatencyRecorder, type RunResult } from './stats.js';
import { yieldToEventLoop } from './steady-log.js';

/** The append loop yields to the event loop this often, so the background writer can run. */
export const YIELD_EVERY = 1000;

/**
 * Appends `count` records of `recordSize` bytes in a loop, yielding every
 * {@link YIELD_EVERY} appends, then awaits `flush()`. The time includes the final flush.
 */
export async function measureAppends(log: WalLog, recordSize: number, count: number): Promise<RunResult> {
  const data = Buffer.alloc(recordSize, 0x42);
  const start = performance.now();
  for (let i = 1; i <= count; i++) {
    log.append(data);
    if (i % YIELD_EVERY === 0) await yieldToEventLoop();
  }
  await log.flush();
  const seconds = (performance.now() - start) / 1000;
  return {
    opsPerSec: count / seconds,
    bytesPerSec: (count * recordSize) / seconds,
    p50Us: Number.NaN,
    p99Us: Number.NaN,
    syncsPerSec: Number.NaN,
  };
}

/**
 * `committers` concurrent loops of `append(record)` + `waitForFlush(endLsn)` for
 * `durationMs`, each commit's latency recorded. A committer starts no commit after the
 * deadline; the time runs until the last commit resolves. `syncsPerSec` counts the log's
 * `flush` events: one per group-commit round.
 */
export async function measureCommits(log: WalLog, options: { committers: number; recordSize: number; durationMs: number }): Promise<RunResult> {
  const { committers, recordSize, durationMs } = options;
  const data = Buffer.alloc(recordSize, 0x17);
  const latencies = new LatencyRecorder();
  let rounds = 0;
  const onFlush = (): void => {
    rounds++;
  };
  log.on('flush', onFlush);
  const start = performance.now();
  const end = start + durationMs;
  const committer = async (): Promise<void> => {
    for (let now = performance.now(); now < end; ) {
      const { endLsn } = log.append(data);
      await log.waitForFlush(endLsn);
      const done = performance.now();
      latencies.add((done - now) * 1000);
      now = done;
    }
  };
  try {
    await Promise.all(Array.from({ length: committers }, committer));
  } finally {
    log.off('flush', onFlush);
  }
  const seconds = (performance.now() - start) / 1000;
  const [p50, p99] = latencies.percentiles([0.5, 0.99]);
  return {
    opsPerSec: latencies.count / seconds,
    bytesPerSec: (latencies.count * recordSize) / seconds,
    p50Us: p50 ?? Number.NaN,
    p99Us: p99 ?? Number.NaN,
    syncsPerSec: rounds / seconds,
  };
}
