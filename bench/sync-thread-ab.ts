/**
 * Group commit with the WAL's fdatasync on the sync thread against libuv's pool, in one
 * process, the two logs taking turns run by run (issue #17):
 *
 *   npx tsx bench/sync-thread-ab.ts [--rounds 60] [--ms 200]
 *
 * Two steady-state logs (as in section 2) in two directories under `os.tmpdir()`, one with
 * `NodeStorage({ commitSync: 'thread' })` and one with `'pool'`; each round runs 1 and 16
 * committers on each for `--ms`, in an order that alternates, and the table gives the
 * medians over rounds and the median of the per-round ratios (thread ÷ pool). Short runs and
 * many rounds: this virtual disk's latency drifts within a second by more than the two differ.
 * First, 1 committer committing on the two logs in turn, commit by commit.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { WalLog } from '../src/index.js';
import { LatencyRecorder, median } from './stats.js';
import { openSteadyLog, restock } from './steady-log.js';
import { measureCommits } from './wal-cases.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, ms: { type: 'string' } } });
const ROUNDS = Number(values.rounds ?? 60);
const DURATION_MS = Number(values.ms ?? 200);

async function main(): Promise<void> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-sync-thread-'));
  const logs: Record<'thread' | 'pool', WalLog | undefined> = { thread: undefined, pool: undefined };
  const dirs = { thread: path.join(root, 'thread'), pool: path.join(root, 'pool') };
  type Figures = { p50: number[]; p99: number[]; rate: number[] };
  const figures = new Map<string, Figures>();
  const alternating = { thread: [] as number[], pool: [] as number[] };
  const record = (key: string, r: { p50Us: number; p99Us: number; opsPerSec: number }): void => {
    const f = figures.get(key) ?? { p50: [], p99: [], rate: [] };
    f.p50.push(r.p50Us);
    f.p99.push(r.p99Us);
    f.rate.push(r.opsPerSec);
    figures.set(key, f);
  };
  try {
    logs.thread = await openSteadyLog(dirs.thread, 'fdatasync', { commitSync: 'thread' });
    logs.pool = await openSteadyLog(dirs.pool, 'fdatasync', { commitSync: 'pool' });
    for (const committers of [1, 16]) {
      for (const kind of ['thread', 'pool'] as const) await measureCommits(logs[kind]!, { committers, recordSize: 100, durationMs: 200 });
    }
    // 1 committer, the two logs taking turns commit by commit: both see the same disk.
    const data = Buffer.alloc(100, 0x17);
    for (let round = 0; round < ROUNDS; round++) {
      const samples = { thread: new LatencyRecorder(), pool: new LatencyRecorder() };
      const end = performance.now() + DURATION_MS;
      for (let turn = 0; performance.now() < end; turn++) {
        for (const kind of turn % 2 === 0 ? (['thread', 'pool'] as const) : (['pool', 'thread'] as const)) {
          const started = performance.now();
          const log = logs[kind]!;
          await log.waitForFlush(log.append(data).endLsn);
          samples[kind].add((performance.now() - started) * 1000);
        }
      }
      for (const kind of ['thread', 'pool'] as const) alternating[kind].push(samples[kind].percentiles([0.5])[0]!);
    }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['thread', 'pool'] as const) : (['pool', 'thread'] as const);
      for (const committers of [1, 16]) {
        for (const kind of order) {
          const log = logs[kind]!;
          record(`${kind} ${committers}`, await measureCommits(log, { committers, recordSize: 100, durationMs: DURATION_MS }));
          if (round % 10 === 9) await restock(log, dirs[kind]);
        }
      }
    }
  } finally {
    await logs.thread?.close();
    await logs.pool?.close();
    await fs.rm(root, { recursive: true, force: true });
  }
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  const range = (xs: number[]): string => `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`;
  const ratios = alternating.thread.map((p, i) => p / alternating.pool[i]!);
  console.log(
    `1 committer, commits alternating between the two logs: p50 ${fmt(median(alternating.thread))} µs on the thread, ${fmt(median(alternating.pool))} µs on the pool; ` +
      `thread ÷ pool ${median(ratios).toFixed(2)}× (median of ${ROUNDS} per-round ratios, ${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`,
  );
  console.log(`group commit, 100 B records, ${ROUNDS} rounds of ${DURATION_MS} ms per case, ${os.tmpdir()}, Node ${process.version}`);
  console.log('| committers | fdatasync on | commits/s (min–max) | p50 µs | p99 µs | thread ÷ pool: commits/s, p50 (medians of per-round ratios) |');
  console.log('| ---: | --- | ---: | ---: | ---: | --- |');
  for (const committers of [1, 16]) {
    const thread = figures.get(`thread ${committers}`)!;
    const pool = figures.get(`pool ${committers}`)!;
    const rateRatio = median(thread.rate.map((r, i) => r / pool.rate[i]!));
    const p50Ratio = median(thread.p50.map((p, i) => p / pool.p50[i]!));
    for (const [name, f] of [['sync thread', thread], ['libuv pool', pool]] as const) {
      const ratios = name === 'sync thread' ? `${rateRatio.toFixed(2)}×, ${p50Ratio.toFixed(2)}×` : '';
      console.log(`| ${committers} | ${name} | ${fmt(median(f.rate))} (${range(f.rate)}) | ${fmt(median(f.p50))} | ${fmt(median(f.p99))} | ${ratios} |`);
    }
  }
}

await main();
