/**
 * Early WAL, before and after, interleaved (issue #17's lever "replicate while the primary's
 * fdatasync runs"): two setups of bench section 6's `FIRST 1 (s1)` (a Primary here, its standby
 * in a peer process, TcpTransport on loopback, fdatasync on both sides), one without
 * `earlySend` and one with it (its standby with `acceptEarlyWal`), measured in turn at `on`
 * with 1 and 16 committers, round after round, so that both see the same machine load.
 *
 *   npm run build && npx tsx bench/early-send-ab.ts [rounds=5] [ms per case=2000]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SyncRepSetup } from './sync-rep-cases.js';
import type { RunResult } from './stats.js';

const rounds = Number(process.argv[2] ?? 5);
const durationMs = Number(process.argv[3] ?? 2000);
const dir = await mkdtemp(path.join(os.tmpdir(), 'walship-early-send-'));

/** Opens a setup with BENCH_EARLY_SEND as given: the primary reads it at open, the peer process inherits it. */
async function open(name: string, early: boolean): Promise<SyncRepSetup> {
  process.env.BENCH_EARLY_SEND = early ? '1' : '0';
  return SyncRepSetup.open(path.join(dir, name), 'FIRST 1 (s1)', 1);
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const setups = { before: await open('before', false), after: await open('after', true) };
const results = new Map<string, RunResult[]>();
try {
  for (const setup of Object.values(setups)) {
    await setup.settle();
    await setup.measure('on', 16, 500);
  }
  for (let round = 1; round <= rounds; round++) {
    // Alternate which goes first, so neither always follows the other.
    const order = round % 2 === 1 ? (['before', 'after'] as const) : (['after', 'before'] as const);
    for (const committers of [1, 16]) {
      for (const which of order) {
        await setups[which].settle();
        const result = await setups[which].measure('on', committers, durationMs);
        const key = `${which} ${committers}`;
        results.set(key, [...(results.get(key) ?? []), result]);
        console.error(`round ${round}: ${key}: ${Math.round(result.opsPerSec)}/s, p50 ${Math.round(result.p50Us)} µs`);
      }
    }
  }
} finally {
  for (const setup of Object.values(setups)) await setup.close();
  await rm(dir, { recursive: true, force: true });
}
console.log(`FIRST 1 (s1), on, ${rounds} interleaved rounds of ${durationMs} ms per case; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log('| committers | earlySend | commits/s median (min–max) | p50 µs median | p99 µs median |');
console.log('| --- | --- | --- | --- | --- |');
for (const committers of [1, 16]) {
  for (const which of ['before', 'after'] as const) {
    const runs = results.get(`${which} ${committers}`) ?? [];
    const ops = runs.map((r) => r.opsPerSec);
    console.log(
      `| ${committers} | ${which === 'after' ? 'on' : 'off'} | ${Math.round(median(ops))} (${Math.round(Math.min(...ops))}–${Math.round(Math.max(...ops))}) | ${Math.round(median(runs.map((r) => r.p50Us)))} | ${Math.round(median(runs.map((r) => r.p99Us)))} |`,
    );
  }
}
