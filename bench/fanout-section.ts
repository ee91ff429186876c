/**
 * Section 10, fan-out (issue #17): what each additional asynchronous standby costs the
 * primary. A `Primary` in this process commits the same rows (section 5's batches of 8 rows
 * of 1 KiB, 64 committers, `local`) with 0, 1, 3 and 8 standbys streaming from it; the
 * standbys run in one peer process (bench/replication-peer.mjs). Each run is timed until every
 * standby has replayed the last batch, and measures this process's CPU time (all threads:
 * the committers, the WAL writer, one sender per standby) and its memory, sampled every 20
 * ms. A standby's cost is the run's figure less the run without standbys of the same round,
 * divided by the number of standbys: flat means each standby costs the same, whatever their
 * number.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Peer, ROWS_PER_BATCH, ROW_BYTES, commitBytes, openPrimary } from './replication-cases.js';
import { median } from './stats.js';
import { formatMBps, formatTable, type Row } from './table.js';

/** The standby counts, in the order each round runs them. */
export const FAN_OUT_STANDBYS = [0, 1, 3, 8] as const;
const SAMPLE_MS = 20;
const MiB = 1024 * 1024;

/** One run with `standbys` standbys. */
export interface FanOutRun {
  readonly standbys: number;
  readonly seconds: number;
  /** Rows per second until every standby replayed them (committed, with none). */
  readonly bytesPerSec: number;
  /** This process's CPU time (user + system, every thread) over the run. */
  readonly cpuSeconds: number;
  /** Highest RSS, and highest heap used + ArrayBuffers (the senders' buffers), over the run. */
  readonly peakRss: number;
  readonly peakHeapAndBuffers: number;
}

export interface FanOutResults {
  readonly bytes: number;
  readonly rounds: readonly (readonly FanOutRun[])[];
}

const now = (): number => performance.timeOrigin + performance.now();

/** One run: a fresh primary, `standbys` standbys in a peer process, `bytes` of rows. */
async function fanOutRun(base: string, standbys: number, bytes: number): Promise<FanOutRun> {
  const dir = path.join(base, `fan-out-${standbys}`);
  const primary = await openPrimary(path.join(dir, 'primary'));
  const peer = standbys === 0 ? null : await Peer.start();
  let peakRss = 0;
  let peakHeapAndBuffers = 0;
  const sample = (): void => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeapAndBuffers = Math.max(peakHeapAndBuffers, m.heapUsed + m.arrayBuffers);
  };
  try {
    const dirs = Array.from({ length: standbys }, (_, i) => path.join(dir, `standby${i + 1}`));
    await peer?.ask({ cmd: 'open', address: primary.address, dirs });
    const sampler = setInterval(sample, SAMPLE_MS);
    const cpuBefore = process.cpuUsage();
    const started = now();
    try {
      await commitBytes(primary, bytes);
      const done = peer === null ? now() : (await peer.ask<{ replayedAt: number }>({ cmd: 'wait', lsn: primary.currentLsn })).replayedAt;
      const cpu = process.cpuUsage(cpuBefore);
      sample();
      const seconds = (done - started) / 1000;
      const rowBytes = Math.ceil(bytes / (ROW_BYTES * ROWS_PER_BATCH)) * ROW_BYTES * ROWS_PER_BATCH;
      return { standbys, seconds, bytesPerSec: rowBytes / seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, peakRss, peakHeapAndBuffers };
    } finally {
      clearInterval(sampler);
    }
  } finally {
    await peer?.close();
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** `rounds` rounds of runs with 0, 1, 3 and 8 standbys, after a warm-up run with one. */
export async function fanOutSection(base: string, settings: { readonly bytes: number; readonly rounds: number }, progress: (message: string) => void): Promise<FanOutResults> {
  progress('fan-out: warm-up');
  await fanOutRun(base, 1, Math.min(settings.bytes, 32 * MiB));
  const rounds: FanOutRun[][] = [];
  for (let round = 1; round <= settings.rounds; round++) {
    const runs: FanOutRun[] = [];
    for (const standbys of FAN_OUT_STANDBYS) {
      progress(`fan-out: → ${standbys} standby${standbys === 1 ? '' : 's'}, round ${round}/${settings.rounds}`);
      runs.push(await fanOutRun(base, standbys, settings.bytes));
    }
    rounds.push(runs);
  }
  return { bytes: settings.bytes, rounds };
}

/** Per round, one standby's cost in a run: (run − the same round's run without standbys) ÷ standbys. */
export function perStandby(rounds: FanOutResults['rounds'], standbys: number, measure: (run: FanOutRun) => number): number[] {
  return rounds.map((runs) => {
    const alone = runs.find((r) => r.standbys === 0);
    const run = runs.find((r) => r.standbys === standbys);
    if (alone === undefined || run === undefined || standbys === 0) return Number.NaN;
    return (measure(run) - measure(alone)) / standbys;
  });
}

const spread = (values: readonly number[], format: (x: number) => string): string => {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return '–';
  return `${format(median(finite))} (${format(Math.min(...finite))}–${format(Math.max(...finite))})`;
};

export function printFanOutSection(results: FanOutResults): void {
  const mib = results.bytes / MiB;
  const cpuPerMiB = (run: FanOutRun): number => (run.cpuSeconds * 1000) / mib;
  const rows: Row[] = FAN_OUT_STANDBYS.map((standbys) => {
    const runs = results.rounds.map((round) => round.find((r) => r.standbys === standbys)!);
    const costCpu = perStandby(results.rounds, standbys, cpuPerMiB);
    const costMemory = perStandby(results.rounds, standbys, (run) => run.peakHeapAndBuffers / MiB);
    return [
      `→ ${standbys} standby${standbys === 1 ? '' : 's'}`,
      formatMBps(median(runs.map((r) => r.bytesPerSec))),
      spread(runs.map(cpuPerMiB), (x) => x.toFixed(2)),
      standbys === 0 ? '' : spread(costCpu, (x) => x.toFixed(2)),
      spread(runs.map((r) => r.peakRss / MiB), (x) => x.toFixed(0)),
      spread(runs.map((r) => r.peakHeapAndBuffers / MiB), (x) => x.toFixed(0)),
      standbys === 0 ? '' : spread(costMemory, (x) => x.toFixed(1)),
    ];
  });
  console.log(`\n10. Fan-out: the primary's cost per asynchronous standby (${mib} MiB of rows per run, ${results.rounds.length} round${results.rounds.length === 1 ? '' : 's'}; medians, (min–max))`);
  console.log(formatTable(['case', 'MB/s', 'CPU ms/MiB', 'per standby', 'peak RSS MiB', 'heap+buffers MiB', 'per standby'], rows));
  console.log(
    [
      '   The primary\'s process: 64 committers, the WAL writer and one sender per standby; the standbys share one other process.',
      '   "per standby": (the run − the same round\'s run without standbys) ÷ standbys. MB/s until every standby replayed, for context:',
      '   on 2 cores the standbys\' own work and fdatasyncs compete with the primary.',
    ].join('\n'),
  );
}
