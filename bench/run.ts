/**
 * walship's benchmark suite: `npm run bench`, `npm run bench -- --quick`, `--verbose`,
 * `--section N` (only section N; repeatable).
 *
 * Measures walship on real files next to the machine's raw limits, measured in the same
 * run on the same directory: page-cache write speed for unsynced appends, and one
 * writer's write + fdatasync rate for group commit. Every case runs a few times after a
 * warm-up and the median is reported; raw and walship runs are interleaved, and targets
 * are checked on per-run ratios, so that drift in the disk's speed affects both sides
 * alike. Exits 0 whether or not the targets are met: it is a benchmark, not a test.
 */
import { rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { describeEnvironment } from './environment.js';
import { fanOutSection, printFanOutSection } from './fanout-section.js';
import { PREALLOCATED_SIZE, createZeroFilled, measureRawBufferedWrite, measureRawPromotion, measureRawSequentialSync, measureRawSync } from './raw-disk.js';
import { median, pairedRatios, percentileOfSorted, summarize, type CaseSummary, type RunResult } from './stats.js';
import { BENCH_RECYCLE_SEGMENTS, openSteadyLog, restock } from './steady-log.js';
import { formatCompact, formatInt, formatMBps, formatRatio, formatTable, type Row } from './table.js';
import { YIELD_EVERY, measureAppends, measureCommits } from './wal-cases.js';
import { createTlsFixtures } from '../test/helpers/tls-fixtures.js';
import { ROWS_PER_BATCH, ROW_BYTES, applyLatency, catchUp, killPeers, rawCatchUp, replicationThroughput, type CatchUpResult } from './replication-cases.js';
import { StalledError, cascadedCatchUp, throughput, type ThroughputRun } from './cascade-cases.js';
import { MESSAGE_BYTES, rawRoundTrips, rawThroughput, walshipRoundTrips, walshipThroughput, type TlsSetup } from './transport-cases.js';
import { REMOTE_LEVELS, SYNC_LEVELS, SYNC_REP_ENTRY_BYTES, SyncRepSetup } from './sync-rep-cases.js';
import { LOAD_ENTRY_BYTES, LOAD_RATE, LOAD_WARM_MS, WARM_BATCHES, postgresUnavailable, promotion, runPostgres, stopPostgres, type PromotionCase, type PromotionRun } from './promote-cases.js';
import {
  SEGMENT_BYTES,
  archiveLag,
  archiveThroughput,
  prepareArchiveSource,
  prepareRestoreSource,
  rawArchiveCopy,
  archiveRecovery,
  type ArchiveLagRun,
  type ArchiveRun,
  type RestoreRun,
} from './archive-cases.js';

interface Settings {
  readonly name: 'full' | 'quick';
  /** Measured runs of each append case, after one warm-up run. */
  readonly appendRuns: number;
  readonly smallRecords: number;
  readonly largeRecords: number;
  /** Measured runs of each commit and raw fdatasync case, after a warm-up. */
  readonly commitRuns: number;
  readonly commitMs: number;
  readonly warmupMs: number;
  /** Bytes per transport throughput run, and measured runs per transport case. */
  readonly transportBytes: number;
  readonly transportRuns: number;
  readonly roundTripMs: number;
  /** Replication: bytes of rows per throughput run, WAL a stopped standby falls behind, latency run length, runs. */
  readonly replicationBytes: number;
  readonly catchUpBytes: number;
  readonly latencyMs: number;
  readonly replicationRuns: number;
  /** Synchronous replication: length of each measured case, and rounds. */
  readonly syncRepMs: number;
  readonly syncRepRuns: number;
  /**
   * Cascading: bytes of rows per throughput run, WAL the standbys catch up (and the raw pipes
   * carry), and rounds: an even number, as each pair alternates which side runs first.
   */
  readonly cascadeBytes: number;
  readonly cascadeCatchUpBytes: number;
  readonly cascadeRuns: number;
  /** Promotion: rounds, and promotions per case in each (walship's, the raw limit's and PostgreSQL's alike). */
  readonly promoteRounds: number;
  readonly promotionsPerRound: number;
  /**
   * Archiving: complete 16 MiB segments archived per throughput run, and rounds (each side
   * once, alternating which goes first); how long the archive-only standby's trickle runs;
   * rounds of recovery from the archive beside the streaming catch-up (`catchUpBytes` each).
   */
  readonly archiveSegments: number;
  readonly archiveRounds: number;
  readonly archiveLagMs: number;
  readonly restoreRounds: number;
  /** Fan-out: bytes of rows per run, and rounds (each runs 0, 1, 3 and 8 standbys). */
  readonly fanOutBytes: number;
  readonly fanOutRounds: number;
  readonly verbose: boolean;
  /** The sections to run (1–10); sections 2 and 3 are measured together. */
  readonly sections: ReadonlySet<number>;
}

const FULL = {
  name: 'full',
  appendRuns: 5,
  smallRecords: 350_000, // 53 MB on disk at 152 bytes per 100-byte record
  largeRecords: 12_000, // 50 MB on disk at 4,144 bytes per 4 KiB record
  commitRuns: 3,
  commitMs: 3000,
  warmupMs: 500,
  transportBytes: 1024 * 1024 * 1024,
  transportRuns: 5,
  roundTripMs: 2000,
  replicationBytes: 512 * 1024 * 1024,
  catchUpBytes: 1024 * 1024 * 1024,
  latencyMs: 5000,
  replicationRuns: 3,
  syncRepMs: 2000,
  syncRepRuns: 3,
  cascadeBytes: 256 * 1024 * 1024,
  cascadeCatchUpBytes: 256 * 1024 * 1024,
  cascadeRuns: 6,
  promoteRounds: 4,
  promotionsPerRound: 5,
  archiveSegments: 32, // 512 MiB
  archiveRounds: 6,
  archiveLagMs: 20_000,
  restoreRounds: 3,
  fanOutBytes: 256 * 1024 * 1024,
  fanOutRounds: 3,
} as const;

const QUICK = {
  name: 'quick',
  appendRuns: 3,
  smallRecords: 150_000,
  largeRecords: 5_000,
  commitRuns: 3,
  commitMs: 1000,
  warmupMs: 200,
  transportBytes: 256 * 1024 * 1024,
  transportRuns: 3,
  roundTripMs: 500,
  replicationBytes: 128 * 1024 * 1024,
  catchUpBytes: 256 * 1024 * 1024,
  latencyMs: 2000,
  replicationRuns: 1,
  syncRepMs: 1000,
  syncRepRuns: 1,
  cascadeBytes: 64 * 1024 * 1024,
  cascadeCatchUpBytes: 64 * 1024 * 1024,
  cascadeRuns: 4,
  promoteRounds: 2,
  promotionsPerRound: 3,
  archiveSegments: 8, // 128 MiB
  archiveRounds: 2,
  archiveLagMs: 8_000,
  restoreRounds: 2,
  fanOutBytes: 64 * 1024 * 1024,
  fanOutRounds: 2,
} as const;

const SMALL = 100;
const LARGE = 4096;
const COMMIT_RECORD = 100;
const RAW_SYNC_WRITE = 8 * 1024;
const RAW_BUFFERED_CHUNK = 1024 * 1024;
/** Size of the file the raw buffered writes go round, and how much they write per run. */
const RAW_BUFFERED_FILE = 48 * RAW_BUFFERED_CHUNK;
const RAW_BUFFERED_BYTES = 4 * RAW_BUFFERED_FILE;
/** Committer counts, in the order they are reported. */
const COMMITTERS = [1, 16, 64] as const;
/** The order they run in each round: 1 right after the raw run it is compared with. */
const COMMITTER_RUN_ORDER = [1, 64, 16] as const;

const TARGET_APPENDS = 1_000_000;
const TARGET_GROUP_COMMIT = 30;
const TARGET_SINGLE_P50 = 1.3;
const TARGET_TRANSPORT = 0.85;
const TARGET_CATCH_UP = 700e6;
/** PostgreSQL 15 on this machine (issue #4): a standby stopped while ~1 GB of WAL (1 KB rows) accumulated. */
const PG_CATCH_UP = { overall: 350e6, receive: 730e6, replay: 360e6 };
const LATENCY_RATE = 1000;

const HEADERS: Row = ['case', 'ops/s', 'MB/s', 'p50 µs', 'p99 µs', 'vs limit'];

const SECTIONS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] as const;

const USAGE = `usage: npm run bench [-- [--quick] [--verbose] [--section N ...]]
  --quick      fewer records and 1 s commit runs (about 5 minutes instead of about 16)
  --verbose    also print every measured run, not only the medians
  --section N  run only section N (1–10; repeat it for several); 2 and 3 are measured
               together, so either runs both. Section 7 (cascading) alone takes about
               1.5 minutes, under a minute with --quick. Section 8 (promotion) also runs
               bench/pg/pg-promote.ts (PostgreSQL 15) when run as root with PostgreSQL 15
               installed (BENCH_SKIP_PG=1 skips it). Section 9 (archiving) alone takes
               about 2.5 minutes, under a minute with --quick. Section 10 (fan-out to
               0, 1, 3 and 8 standbys) about 3 minutes, one with --quick`;

function parseSettings(): Settings {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      section: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const sections = new Set<number>(SECTIONS);
  if (values.section !== undefined) {
    sections.clear();
    for (const text of values.section) {
      const n = Number(text);
      if (!SECTIONS.includes(n as (typeof SECTIONS)[number])) {
        console.error(`unknown section '${text}': sections are ${SECTIONS.join(', ')}\n${USAGE}`);
        process.exit(2);
      }
      sections.add(n);
      // Sections 2 and 3 come from the same interleaved rounds.
      if (n === 2 || n === 3) sections.add(2).add(3);
    }
  }
  return { ...(values.quick === true ? QUICK : FULL), verbose: values.verbose === true, sections };
}

/** Progress on stderr, only when it is a terminal; the report itself goes to stdout. */
function progress(message: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2K  … ${message}`);
}

function clearProgress(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[2K');
}

function cells(label: string, r: RunResult, vsLimit: string): Row {
  return [label, formatInt(r.opsPerSec), formatMBps(r.bytesPerSec), formatInt(r.p50Us), formatInt(r.p99Us), vsLimit];
}

/** The median row of a case, followed by one row per run with --verbose. */
function rows(label: string, summary: CaseSummary, vsLimit: string, settings: Settings, perRun: readonly string[] = []): Row[] {
  const out = [cells(label, summary.median, vsLimit)];
  if (settings.verbose) summary.runs.forEach((r, i) => out.push(cells(`  run ${i + 1}`, r, perRun[i] ?? '')));
  return out;
}

function spread(label: string, summary: CaseSummary): string {
  const ops = summary.runs.map((r) => r.opsPerSec);
  return `${label} ${formatCompact(Math.min(...ops))}–${formatCompact(Math.max(...ops))}`;
}

function ratioList(ratios: readonly number[], digits = 2): string {
  return ratios.map((r) => formatRatio(r, digits)).join(', ');
}

// ---- 1. append throughput ----

interface AppendResults {
  readonly raw: CaseSummary;
  readonly small: CaseSummary;
  readonly large: CaseSummary;
  /** Per run: payload MB/s ÷ raw page-cache MB/s of the same round. */
  readonly smallVsRaw: readonly number[];
  readonly largeVsRaw: readonly number[];
}

async function appendSection(base: string, settings: Settings): Promise<AppendResults> {
  const dir = path.join(base, 'append-wal');
  const rawFile = path.join(base, 'raw-buffered');
  progress('append: preparing a steady-state log (sync none) and a pre-allocated file');
  await createZeroFilled(rawFile, RAW_BUFFERED_FILE);
  const log = await openSteadyLog(dir, 'none');
  const raw: RunResult[] = [];
  const small: RunResult[] = [];
  const large: RunResult[] = [];
  try {
    for (let run = 0; run <= settings.appendRuns; run++) {
      const label = run === 0 ? 'warm-up' : `run ${run}/${settings.appendRuns}`;
      progress(`append: raw buffered write, ${label}`);
      const r = await measureRawBufferedWrite({
        file: rawFile,
        fileSize: RAW_BUFFERED_FILE,
        totalBytes: RAW_BUFFERED_BYTES,
        chunkSize: RAW_BUFFERED_CHUNK,
      });
      await restock(log, dir);
      progress(`append: ${SMALL} B records, ${label}`);
      const s = await measureAppends(log, SMALL, settings.smallRecords);
      await restock(log, dir);
      progress(`append: 4 KiB records, ${label}`);
      const l = await measureAppends(log, LARGE, settings.largeRecords);
      if (run > 0) {
        raw.push(r);
        small.push(s);
        large.push(l);
      }
    }
  } finally {
    await log.close();
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(rawFile, { force: true });
  }
  const bps = (runs: readonly RunResult[]): number[] => runs.map((r) => r.bytesPerSec);
  return {
    raw: summarize(raw),
    small: summarize(small),
    large: summarize(large),
    smallVsRaw: pairedRatios(bps(small), bps(raw)),
    largeVsRaw: pairedRatios(bps(large), bps(raw)),
  };
}

function printAppendSection(results: AppendResults, settings: Settings): void {
  const count = (n: number): string => n.toLocaleString('en-US');
  const met = results.small.median.opsPerSec >= TARGET_APPENDS;
  console.log(`\n1. Append throughput — sync 'none', await setImmediate every ${count(YIELD_EVERY)} appends, time includes the final flush()`);
  console.log(
    formatTable(HEADERS, [
      ...rows('raw: 1 MiB pwrite into page cache, no sync', results.raw, 'limit', settings),
      ...rows(
        `walship: ${count(settings.smallRecords)} × 100 B records`,
        results.small,
        `${formatRatio(median(results.smallVsRaw))} MB/s`,
        settings,
        results.smallVsRaw.map((r) => formatRatio(r)),
      ),
      ...rows(
        `walship: ${count(settings.largeRecords)} × 4 KiB records`,
        results.large,
        `${formatRatio(median(results.largeVsRaw))} MB/s`,
        settings,
        results.largeVsRaw.map((r) => formatRatio(r)),
      ),
    ]),
  );
  console.log(
    [
      `   limit: ${RAW_BUFFERED_BYTES / 2 ** 20} MiB of buffered 1 MiB writes going round a cached ${RAW_BUFFERED_FILE / 2 ** 20} MiB file (walship's writer issues ≤ 1 MiB writes).`,
      '   MB/s counts payload bytes; each record also carries 45 bytes of headers and commit time, padded to 8 bytes',
      '   (100 B → 152 B on disk, 4 KiB → 4,144 B). p50/p99 do not apply: appends are not awaited one by one.',
      `   ops/s range over ${settings.appendRuns} runs: ${[spread('raw', results.raw), spread('100 B', results.small), spread('4 KiB', results.large)].join(', ')}`,
      `   target: ≥ ${formatInt(TARGET_APPENDS)} appends/s of 100 B records — ${met ? 'met' : 'NOT MET'}`,
    ].join('\n'),
  );
}

// ---- 2. group commit and 3. raw fdatasync, measured interleaved ----

interface CommitResults {
  readonly rawPreallocated: CaseSummary;
  readonly rawGrowing: CaseSummary;
  readonly committers: ReadonlyMap<number, CaseSummary>;
  /** Per committer count, per run: commits/s ÷ raw pre-allocated ops/s of the same round. */
  readonly rateVsRaw: ReadonlyMap<number, readonly number[]>;
  /** Per run: 1-committer p50 ÷ raw pre-allocated p50 of the same round. */
  readonly singleP50VsRaw: readonly number[];
  /** Per run: growing ÷ pre-allocated raw ops/s. */
  readonly growingVsPreallocated: readonly number[];
  /** Fewest future segments that were ready before a measured walship run. */
  readonly minSpareSegments: number;
}

async function commitSection(base: string, settings: Settings): Promise<CommitResults> {
  const dir = path.join(base, 'commit-wal');
  const preallocated = path.join(base, 'raw-preallocated');
  const growing = path.join(base, 'raw-growing');
  const durationMs = settings.commitMs;
  const rawPreallocatedRun = (ms: number): Promise<RunResult> =>
    measureRawSync({ file: preallocated, writeSize: RAW_SYNC_WRITE, durationMs: ms, wrapAt: PREALLOCATED_SIZE });
  progress('commit: preparing a steady-state log (sync fdatasync) and a pre-allocated file');
  await createZeroFilled(preallocated, PREALLOCATED_SIZE);
  const log = await openSteadyLog(dir, 'fdatasync');
  const rawPre: RunResult[] = [];
  const rawGrow: RunResult[] = [];
  const wal = new Map<number, RunResult[]>(COMMITTERS.map((c) => [c, []]));
  let minSpareSegments = Number.POSITIVE_INFINITY;
  try {
    progress('commit: warm-up');
    await rawPreallocatedRun(settings.warmupMs);
    for (const committers of COMMITTER_RUN_ORDER) {
      await restock(log, dir);
      await measureCommits(log, { committers, recordSize: COMMIT_RECORD, durationMs: settings.warmupMs });
    }
    for (let run = 1; run <= settings.commitRuns; run++) {
      const label = `run ${run}/${settings.commitRuns}`;
      progress(`raw fdatasync, pre-allocated file, ${label}`);
      rawPre.push(await rawPreallocatedRun(durationMs));
      for (const committers of COMMITTER_RUN_ORDER) {
        minSpareSegments = Math.min(minSpareSegments, await restock(log, dir));
        progress(`commit: ${committers} committer(s), ${label}`);
        wal.get(committers)?.push(await measureCommits(log, { committers, recordSize: COMMIT_RECORD, durationMs }));
      }
      progress(`raw fdatasync, growing file, ${label}`);
      rawGrow.push(await measureRawSync({ file: growing, writeSize: RAW_SYNC_WRITE, durationMs }));
      await fs.rm(growing, { force: true });
    }
  } finally {
    await log.close();
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(preallocated, { force: true });
    await fs.rm(growing, { force: true });
  }
  const walRuns = (c: number): RunResult[] => wal.get(c) ?? [];
  const ops = (runs: readonly RunResult[]): number[] => runs.map((r) => r.opsPerSec);
  return {
    rawPreallocated: summarize(rawPre),
    rawGrowing: summarize(rawGrow),
    committers: new Map(COMMITTERS.map((c) => [c, summarize(walRuns(c))])),
    rateVsRaw: new Map(COMMITTERS.map((c) => [c, pairedRatios(ops(walRuns(c)), ops(rawPre))])),
    singleP50VsRaw: pairedRatios(
      walRuns(1).map((r) => r.p50Us),
      rawPre.map((r) => r.p50Us),
    ),
    growingVsPreallocated: pairedRatios(ops(rawGrow), ops(rawPre)),
    minSpareSegments,
  };
}

function printCommitSections(results: CommitResults, settings: Settings): void {
  const seconds = settings.commitMs / 1000;
  console.log(`\n2. Group commit — sync 'fdatasync', 100 B records, append() + waitForFlush(endLsn) per commit, ${seconds} s per run`);
  const table: Row[] = [];
  for (const c of COMMITTERS) {
    const summary = results.committers.get(c);
    const rates = results.rateVsRaw.get(c) ?? [];
    if (summary === undefined) continue;
    const digits = c === 1 ? 2 : 1;
    let vs = `${formatRatio(median(rates), digits)} raw ops/s`;
    let perRun = rates.map((r) => `${formatRatio(r, digits)} raw ops/s`);
    if (c === 1) {
      vs += `, p50 ${formatRatio(median(results.singleP50VsRaw))} raw`;
      perRun = perRun.map((text, i) => `${text}, p50 ${formatRatio(results.singleP50VsRaw[i] ?? Number.NaN)} raw`);
    }
    table.push(...rows(`walship: ${c} committer${c === 1 ? '' : 's'}`, summary, vs, settings, perRun));
  }
  console.log(formatTable(HEADERS, table));
  const perRound = COMMITTERS.map((c) => {
    const m = results.committers.get(c)?.median;
    return m === undefined ? '' : `${c}: ${formatInt(m.syncsPerSec)}/s (${(m.opsPerSec / m.syncsPerSec).toFixed(1)} commits each)`;
  });
  console.log(
    [
      '   limit: the raw pre-allocated fdatasync rate (section 3), measured in the same rounds; "vs limit" is the',
      `   median of the per-round ratios. p50/p99: one commit, append() to waitForFlush() resolving.`,
      `   group-commit rounds (one write + one fdatasync): ${perRound.join(', ')}`,
      `   steady-state log: ${BENCH_RECYCLE_SEGMENTS} recycled segments kept, at least ${results.minSpareSegments} ready before each run, so no run creates a segment.`,
      `   ops/s range over ${settings.commitRuns} runs: ${COMMITTERS.map((c) => {
        const s = results.committers.get(c);
        return s === undefined ? '' : spread(`${c}c`, s);
      }).join(', ')}`,
    ].join('\n'),
  );

  console.log(`\n3. Raw fdatasync limit — one writer, ${RAW_SYNC_WRITE / 1024} KiB write at the next offset + datasync(), same directory, ${seconds} s per run`);
  console.log(
    formatTable(HEADERS, [
      ...rows(`raw: pre-allocated ${PREALLOCATED_SIZE / 2 ** 20} MiB file (zero-filled)`, results.rawPreallocated, 'limit', settings),
      ...rows(
        'raw: growing file (appends extend it)',
        results.rawGrowing,
        `${formatRatio(median(results.growingVsPreallocated))} ops/s`,
        settings,
        results.growingVsPreallocated.map((r) => `${formatRatio(r)} ops/s`),
      ),
    ]),
  );
  console.log(
    [
      `   The pre-allocated file is like walship's segments (zero-filled or recycled): overwrites only, so fdatasync`,
      `   writes data, not allocation metadata. A growing file also commits metadata on every fdatasync; for context.`,
      `   ops/s range over ${settings.commitRuns} runs: ${spread('pre-allocated', results.rawPreallocated)}, ${spread('growing', results.rawGrowing)}`,
    ].join('\n'),
  );
}

// ---- transports ----

interface TransportResults {
  readonly rawThroughput: CaseSummary;
  readonly tcpThroughput: CaseSummary;
  readonly tlsThroughput: CaseSummary | null;
  readonly rawRoundTrips: CaseSummary;
  readonly tcpRoundTrips: CaseSummary;
  readonly tlsRoundTrips: CaseSummary | null;
  /** Per round: walship TCP throughput / raw throughput of the same round. */
  readonly tcpVsRaw: number[];
  readonly tlsVsRaw: number[];
  readonly tlsNote: string | null;
}

async function transportSection(settings: Settings): Promise<TransportResults> {
  let tls: TlsSetup | null = null;
  let tlsNote: string | null = null;
  try {
    const certs = await createTlsFixtures();
    tls = { server: { key: certs.server.key, cert: certs.server.cert }, client: { ca: certs.ca } };
  } catch (err) {
    tlsNote = `TLS rows skipped: could not generate certificates with openssl (${(err as Error).message})`;
  }
  const runs = { raw: [] as RunResult[], tcp: [] as RunResult[], tls: [] as RunResult[], rawRt: [] as RunResult[], tcpRt: [] as RunResult[], tlsRt: [] as RunResult[] };
  const tcpVsRaw: number[] = [];
  const tlsVsRaw: number[] = [];
  const warm = Math.min(settings.transportBytes, 64 * 1024 * 1024);
  progress('transports: warm-up');
  await rawThroughput(warm);
  await walshipThroughput(warm);
  if (tls !== null) await walshipThroughput(warm, tls);
  for (let round = 0; round < settings.transportRuns; round++) {
    progress(`transports: round ${round + 1}/${settings.transportRuns}`);
    const raw = await rawThroughput(settings.transportBytes);
    const tcp = await walshipThroughput(settings.transportBytes);
    runs.raw.push(raw);
    runs.tcp.push(tcp);
    tcpVsRaw.push(tcp.bytesPerSec / raw.bytesPerSec);
    if (tls !== null) {
      const secure = await walshipThroughput(settings.transportBytes, tls);
      runs.tls.push(secure);
      tlsVsRaw.push(secure.bytesPerSec / raw.bytesPerSec);
    }
    runs.rawRt.push(await rawRoundTrips(settings.roundTripMs));
    runs.tcpRt.push(await walshipRoundTrips(settings.roundTripMs));
    if (tls !== null) runs.tlsRt.push(await walshipRoundTrips(settings.roundTripMs, tls));
  }
  return {
    rawThroughput: summarize(runs.raw),
    tcpThroughput: summarize(runs.tcp),
    tlsThroughput: tls === null ? null : summarize(runs.tls),
    rawRoundTrips: summarize(runs.rawRt),
    tcpRoundTrips: summarize(runs.tcpRt),
    tlsRoundTrips: tls === null ? null : summarize(runs.tlsRt),
    tcpVsRaw,
    tlsVsRaw,
    tlsNote,
  };
}

function printTransportSection(results: TransportResults, settings: Settings): void {
  const rt = (summary: CaseSummary): string => formatRatio(summary.median.opsPerSec / results.rawRoundTrips.median.opsPerSec);
  const table: Row[] = [
    ...rows(`raw node:net socket, ${MESSAGE_BYTES / 1024} KiB writes`, results.rawThroughput, 'limit', settings),
    ...rows('walship TcpTransport, 64 KiB walData', results.tcpThroughput, `${formatRatio(median(results.tcpVsRaw))} MB/s`, settings),
  ];
  if (results.tlsThroughput !== null) {
    table.push(...rows('walship TcpTransport + TLS, 64 KiB walData', results.tlsThroughput, `${formatRatio(median(results.tlsVsRaw))} MB/s`, settings));
  }
  table.push(
    ...rows('raw node:net socket, 64 B ping-pong', results.rawRoundTrips, 'limit', settings),
    ...rows('walship TcpTransport, status update → keepalive', results.tcpRoundTrips, `${rt(results.tcpRoundTrips)} ops/s`, settings),
  );
  if (results.tlsRoundTrips !== null) {
    table.push(...rows('walship TcpTransport + TLS, status update → keepalive', results.tlsRoundTrips, `${rt(results.tlsRoundTrips)} ops/s`, settings));
  }
  console.log(`\n4. Transports on loopback (the far side in its own process; ${formatInt(settings.transportBytes / 1024 / 1024)} MiB per throughput run)`);
  console.log(formatTable(HEADERS, table));
  console.log(
    [
      '   Throughput: 64 KiB raw writes, or walData frames of 64 KiB (33-byte header + data); MB/s counts payload bytes.',
      '   Round trips: one request, wait for the reply, repeat; p50/p99 are per round trip.',
      `   per-round TCP/raw throughput ratios: ${ratioList(results.tcpVsRaw)}${results.tlsVsRaw.length > 0 ? `; TLS/raw: ${ratioList(results.tlsVsRaw)}` : ''}`,
      ...(results.tlsNote === null ? [] : [`   ${results.tlsNote}`]),
    ].join('\n'),
  );
}

// ---- 5. replication ----

interface ReplicationResults {
  readonly rawSocket: CaseSummary;
  readonly rawDisk: CaseSummary;
  readonly rawSync: CaseSummary;
  readonly toOne: CaseSummary;
  readonly toThree: CaseSummary;
  readonly catchUps: readonly CatchUpResult[];
  readonly rawCatchUps: readonly CatchUpResult[];
  readonly latency: CaseSummary;
}

async function replicationSection(base: string, settings: Settings): Promise<ReplicationResults> {
  const raw = { socket: [] as RunResult[], disk: [] as RunResult[], sync: [] as RunResult[] };
  const runs = { one: [] as RunResult[], three: [] as RunResult[], latency: [] as RunResult[] };
  const catchUps: CatchUpResult[] = [];
  const rawCatchUps: CatchUpResult[] = [];
  progress('replication: warm-up');
  await replicationThroughput(base, 1, Math.min(settings.replicationBytes, 64 * 1024 * 1024));
  for (let run = 1; run <= settings.replicationRuns; run++) {
    const label = `run ${run}/${settings.replicationRuns}`;
    progress(`replication: raw limits, ${label}`);
    raw.socket.push(await rawThroughput(settings.replicationBytes));
    raw.disk.push(await measureRawSequentialSync({ file: path.join(base, 'raw-sequential'), totalBytes: settings.replicationBytes, chunkSize: 1024 * 1024, syncEvery: 8 * 1024 * 1024 }));
    raw.sync.push(await measureRawSync({ file: path.join(base, 'raw-sync'), writeSize: RAW_SYNC_WRITE, durationMs: 1000 }));
    await fs.rm(path.join(base, 'raw-sync'), { force: true });
    progress(`replication: → 1 standby, ${label}`);
    runs.one.push(await replicationThroughput(base, 1, settings.replicationBytes));
    progress(`replication: → 3 standbys, ${label}`);
    runs.three.push(await replicationThroughput(base, 3, settings.replicationBytes));
    progress(`replication: raw catch-up limit (file → socket → file + fdatasync), ${label}`);
    rawCatchUps.push(await rawCatchUp(base, settings.catchUpBytes));
    progress(`replication: catch-up of a standby ${settings.catchUpBytes / 2 ** 20} MiB behind, ${label}`);
    catchUps.push(await catchUp(base, settings.catchUpBytes));
    progress(`replication: apply latency at ${LATENCY_RATE} commits/s, ${label}`);
    runs.latency.push(await applyLatency(base, LATENCY_RATE, settings.latencyMs));
  }
  return {
    rawSocket: summarize(raw.socket),
    rawDisk: summarize(raw.disk),
    rawSync: summarize(raw.sync),
    toOne: summarize(runs.one),
    toThree: summarize(runs.three),
    catchUps,
    rawCatchUps,
    latency: summarize(runs.latency),
  };
}

function medianCatchUp(results: ReplicationResults, key: 'receiveBytesPerSec' | 'replayBytesPerSec'): number {
  return median(results.catchUps.map((c) => c[key]));
}

/** Per run: walship's replayed catch-up MB/s ÷ the raw pipe's MB/s measured right before it. */
function catchUpVsRaw(results: ReplicationResults): number[] {
  return pairedRatios(
    results.catchUps.map((c) => c.replayBytesPerSec),
    results.rawCatchUps.map((c) => c.receiveBytesPerSec),
  );
}

function printReplicationSection(results: ReplicationResults, settings: Settings): void {
  const socket = results.rawSocket.median.bytesPerSec;
  const disk = results.rawDisk.median.bytesPerSec;
  const vsLimits = (r: RunResult): string => `${formatRatio(r.bytesPerSec / Math.min(socket, disk))} of min(socket, disk)`;
  const rawPipe = median(results.rawCatchUps.map((c) => c.receiveBytesPerSec));
  const catchRow = (label: string, bps: number): Row => [label, '', formatMBps(bps), '', '', `${formatRatio(bps / rawPipe)} raw pipe; PG ${formatMBps(label.includes('receive') ? PG_CATCH_UP.receive : PG_CATCH_UP.overall)}`];
  const batch = `${ROWS_PER_BATCH} × ${ROW_BYTES / 1024} KiB rows`;
  console.log(`
5. Replication — Primary → standbys in a second process over TcpTransport (loopback), fdatasync on both sides, asynchronous`);
  console.log(
    formatTable(HEADERS, [
      ...rows(`raw: node:net socket, 64 KiB writes`, results.rawSocket, 'limit', settings),
      ...rows(`raw: 1 MiB writes + fdatasync every 8 MiB`, results.rawDisk, 'limit', settings),
      ...rows(`raw: ${RAW_SYNC_WRITE / 1024} KiB write + fdatasync`, results.rawSync, 'limit', settings),
      ...rows(`walship → 1 standby, batches of ${batch}`, results.toOne, vsLimits(results.toOne.median), settings),
      ...rows(`walship → 3 standbys, batches of ${batch}`, results.toThree, vsLimits(results.toThree.median), settings),
      ['raw: file → socket → second process → file, fdatasync every 8 MiB', '', formatMBps(rawPipe), '', '', 'limit (catch-up)'],
      catchRow(`catch-up ${settings.catchUpBytes / 2 ** 20} MiB behind: received`, medianCatchUp(results, 'receiveBytesPerSec')),
      catchRow(`catch-up ${settings.catchUpBytes / 2 ** 20} MiB behind: replayed`, medianCatchUp(results, 'replayBytesPerSec')),
      ...rows(`apply latency at ${LATENCY_RATE} commits/s (commit → standby apply)`, results.latency, `p50 ${formatRatio(results.latency.median.p50Us / results.rawSync.median.p50Us, 1)} raw fdatasync`, settings),
    ]),
  );
  console.log(
    [
      `   Throughput: 64 committers on the primary (synchronousCommit 'local'), timed until every standby has applied the last batch.`,
      `   Catch-up: a bootstrapped standby is stopped, the primary commits ${settings.catchUpBytes / 2 ** 20} MiB of rows, the standby restarts; MB/s of WAL`,
      `   until it has received (flushed) and replayed the primary's end. PostgreSQL 15 here: ${formatMBps(PG_CATCH_UP.overall)} overall (receive ${formatMBps(PG_CATCH_UP.receive)}, replay ${formatMBps(PG_CATCH_UP.replay)}).`,
      `   Latency: each batch carries its commit time; the standby's application records when it applied it. The path holds two`,
      `   fdatasyncs (primary, standby), so one raw fdatasync p50 (${formatInt(results.rawSync.median.p50Us)} µs) is not reachable; it is the unit, not the limit.`,
      `   catch-up per run (raw pipe / walship received / replayed MB/s): ${results.catchUps
        .map((c, i) => `${formatMBps(results.rawCatchUps[i]?.receiveBytesPerSec ?? Number.NaN)} / ${formatMBps(c.receiveBytesPerSec)} / ${formatMBps(c.replayBytesPerSec)}`)
        .join(', ')}; replayed ÷ raw per run: ${ratioList(catchUpVsRaw(results))}`,
      `   CPU seconds per catch-up run (primary + standby process; 2 cores): ${results.catchUps
        .map((c) => `${c.primaryCpuSeconds.toFixed(1)} + ${c.standbyCpuSeconds.toFixed(1)} in ${c.seconds.toFixed(1)} s`)
        .join(', ')}; raw pipe: ${results.rawCatchUps.map((c) => `${c.primaryCpuSeconds.toFixed(1)} + ${c.standbyCpuSeconds.toFixed(1)}`).join(', ')}`,
    ].join('\n'),
  );
}

function replicationTargets(results: ReplicationResults): Target[] {
  const replay = medianCatchUp(results, 'replayBytesPerSec');
  return [
    {
      description: `catch-up of a standby behind by a lot of WAL ≥ ${formatMBps(TARGET_CATCH_UP)} MB/s until replayed, fdatasync on`,
      met: replay >= TARGET_CATCH_UP,
      measured: `${formatMBps(replay)} MB/s replayed, ${formatMBps(medianCatchUp(results, 'receiveBytesPerSec'))} MB/s received (PostgreSQL 15: ${formatMBps(PG_CATCH_UP.overall)} / ${formatMBps(PG_CATCH_UP.receive)}); ${formatRatio(median(catchUpVsRaw(results)))} of the raw pipe measured alongside`,
    },
  ];
}

// ---- 6. synchronous replication ----

type SyncLevel = (typeof SYNC_LEVELS)[number];

/** The setups, each one Primary (its `synchronousStandbyNames`) with each standby in a peer process of its own. */
const SYNC_SETUPS: readonly { readonly names: string; readonly standbys: number; readonly levels: readonly SyncLevel[] }[] = [
  { names: 'FIRST 1 (s1)', standbys: 1, levels: SYNC_LEVELS },
  { names: 'ANY 1 (s1, s2)', standbys: 2, levels: REMOTE_LEVELS },
  { names: 'FIRST 2 (s1, s2)', standbys: 2, levels: REMOTE_LEVELS },
];
const SYNC_COMMITTERS = [1, 16] as const;
/** Issue #6: walship's commits/s ≥ this many times PostgreSQL 15's, level for level, per committer count. */
const TARGET_VS_PG: Readonly<Record<number, number>> = { 1: 2, 16: 3 };
/** PostgreSQL 15 on this machine (issue #6): median commits/s at 1 and 16 clients, one 100-byte insert per transaction. */
const PG_SYNC_REP: Readonly<Record<string, Partial<Record<SyncLevel, readonly [number, number]>>>> = {
  'FIRST 1 (s1)': { off: [13_400, 62_700], local: [3_480, 18_000], remote_write: [2_680, 15_600], on: [2_020, 13_600], remote_apply: [2_000, 12_800] },
  'ANY 1 (s1, s2)': { on: [1_660, 11_750] },
  'FIRST 2 (s1, s2)': { on: [1_620, 10_450] },
};
/** The fdatasync rate and latency of the disk in PostgreSQL's run (issue #6). */
const PG_FDATASYNC = { opsPerSec: 7_300, p50Us: 138 };
const SYNC_RAW_SYNC_MS = 1000;
const SYNC_ROUND_TRIP_MS = 500;

const syncKey = (names: string, level: SyncLevel, committers: number): string => `${names} | ${level} | ${committers}`;

function pgSyncRep(names: string, level: SyncLevel, committers: number): number {
  const figures = PG_SYNC_REP[names]?.[level];
  if (figures === undefined) return Number.NaN;
  return committers === 1 ? figures[0] : figures[1];
}

interface SyncRepResults {
  readonly rawSync: CaseSummary;
  readonly rawRoundTrip: CaseSummary;
  /** Per {@link syncKey}. */
  readonly cases: ReadonlyMap<string, CaseSummary>;
  /** Per setup and level (remote levels, and local as the control): commits the standbys had not confirmed when they resolved. */
  readonly waitChecks: readonly { readonly names: string; readonly level: SyncLevel; readonly unconfirmed: number }[];
}
/** Commits per level of the check that the remote levels wait. */
const SYNC_WAIT_CHECK_COMMITS = 100;

async function syncRepSection(base: string, settings: Settings): Promise<SyncRepResults> {
  const dir = path.join(base, 'sync-rep');
  const rawFile = path.join(base, 'sync-rep-raw-preallocated');
  const runs = new Map<string, RunResult[]>();
  const rawSync: RunResult[] = [];
  const rawRoundTrip: RunResult[] = [];
  const setups: SyncRepSetup[] = [];
  const waitChecks: { names: string; level: SyncLevel; unconfirmed: number }[] = [];
  try {
    progress('sync rep: pre-allocated file for the raw fdatasync limit');
    await createZeroFilled(rawFile, PREALLOCATED_SIZE);
    for (const [i, s] of SYNC_SETUPS.entries()) {
      progress(`sync rep: opening a primary with '${s.names}' and ${s.standbys} standby(s), each in a peer process`);
      setups.push(await SyncRepSetup.open(path.join(dir, `setup${i + 1}`), s.names, s.standbys));
    }
    progress('sync rep: warm-up');
    await measureRawSync({ file: rawFile, writeSize: RAW_SYNC_WRITE, durationMs: settings.warmupMs, wrapAt: PREALLOCATED_SIZE });
    for (const [i, setup] of setups.entries()) {
      for (const level of SYNC_SETUPS[i]?.levels ?? []) {
        await setup.settle();
        await setup.measure(level, 16, settings.warmupMs);
      }
      progress(`sync rep: checking that the remote levels wait for the standbys under '${setup.names}'`);
      for (const level of ['local', ...REMOTE_LEVELS] as const) {
        await setup.settle();
        waitChecks.push({ names: setup.names, level, unconfirmed: await setup.unconfirmedCommits(level, SYNC_WAIT_CHECK_COMMITS) });
      }
    }
    for (let run = 1; run <= settings.syncRepRuns; run++) {
      const label = `run ${run}/${settings.syncRepRuns}`;
      progress(`sync rep: raw fdatasync and socket round trips, ${label}`);
      rawSync.push(await measureRawSync({ file: rawFile, writeSize: RAW_SYNC_WRITE, durationMs: SYNC_RAW_SYNC_MS, wrapAt: PREALLOCATED_SIZE }));
      rawRoundTrip.push(await rawRoundTrips(SYNC_ROUND_TRIP_MS));
      for (const [i, setup] of setups.entries()) {
        for (const level of SYNC_SETUPS[i]?.levels ?? []) {
          for (const committers of SYNC_COMMITTERS) {
            await setup.settle();
            progress(`sync rep: '${setup.names}', ${level}, ${committers} committer(s), ${label}`);
            const key = syncKey(setup.names, level, committers);
            const result = await setup.measure(level, committers, settings.syncRepMs);
            runs.set(key, [...(runs.get(key) ?? []), result]);
          }
        }
      }
    }
  } finally {
    for (const setup of setups) await setup.close().catch((err: unknown) => console.error(`closing '${setup.names}': ${(err as Error).message}`));
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(rawFile, { force: true });
  }
  return {
    rawSync: summarize(rawSync),
    rawRoundTrip: summarize(rawRoundTrip),
    cases: new Map([...runs].map(([key, r]) => [key, summarize(r)])),
    waitChecks,
  };
}

function printSyncRepSection(results: SyncRepResults, settings: Settings): void {
  const headers: Row = ['case', 'commits/s', 'p50 µs', 'p99 µs', 'PG 15 commits/s', 'vs PG 15', 'target'];
  const raw = results.rawSync.median;
  const line = (label: string, r: RunResult, pg: number, target: string): Row => [
    label,
    formatInt(r.opsPerSec),
    formatInt(r.p50Us),
    formatInt(r.p99Us),
    formatInt(pg),
    formatRatio(r.opsPerSec / pg),
    target,
  ];
  const table: Row[] = [
    [`raw: ${RAW_SYNC_WRITE / 1024} KiB write + fdatasync, pre-allocated (limit)`, formatInt(raw.opsPerSec), formatInt(raw.p50Us), formatInt(raw.p99Us), '', '', ''],
    ...(settings.verbose ? results.rawSync.runs.map((r, i) => line(`  run ${i + 1}`, r, PG_FDATASYNC.opsPerSec, '').slice(0, 4)) : []),
    ['raw: node:net 64 B ping-pong (limit)', formatInt(results.rawRoundTrip.median.opsPerSec), formatInt(results.rawRoundTrip.median.p50Us), formatInt(results.rawRoundTrip.median.p99Us), '', '', ''],
  ];
  const notes: string[] = [];
  for (const setup of SYNC_SETUPS) {
    for (const level of setup.levels) {
      for (const committers of SYNC_COMMITTERS) {
        const summary = results.cases.get(syncKey(setup.names, level, committers));
        if (summary === undefined) continue;
        const pg = pgSyncRep(setup.names, level, committers);
        const goal = TARGET_VS_PG[committers] ?? Number.NaN;
        const target = Number.isNaN(pg) ? '' : `≥ ${goal}×: ${summary.median.opsPerSec / pg >= goal ? 'met' : 'NOT MET'}`;
        const label = `${setup.names}, ${level}, ${committers} committer${committers === 1 ? '' : 's'}`;
        table.push(line(label, summary.median, pg, target));
        if (settings.verbose) summary.runs.forEach((r, i) => table.push(line(`  run ${i + 1}`, r, pg, '')));
      }
    }
  }
  // Whether the remote levels wait is checked directly (waitChecks), not inferred from their
  // speed: with a standby streaming, local itself runs well below the raw fdatasync rate.
  for (const setup of SYNC_SETUPS) {
    for (const committers of SYNC_COMMITTERS) {
      const write = results.cases.get(syncKey(setup.names, 'remote_write', committers))?.median.opsPerSec ?? Number.NaN;
      const on = results.cases.get(syncKey(setup.names, 'on', committers))?.median.opsPerSec ?? Number.NaN;
      if (committers === 1 && write <= 1.1 * on) {
        notes.push(`   '${setup.names}': remote_write (${formatInt(write)}/s) is no faster than on (${formatInt(on)}/s) at 1 committer (PostgreSQL: ${formatRatio(2_680 / 2_020)} faster with one standby, where its walreceiver replies after writing, before its fdatasync).`);
      }
    }
  }
  const failedChecks = results.waitChecks.filter((c) => c.level !== 'local' && c.unconfirmed > 0);
  const localCheck = results.waitChecks.filter((c) => c.level === 'local').map((c) => c.unconfirmed);
  notes.unshift(
    failedChecks.length === 0
      ? `   wait check: of ${SYNC_WAIT_CHECK_COMMITS} commits per remote level and setup, every one had been confirmed by the standbys it waits for when it resolved`
      : `   WAIT CHECK FAILED: commits resolved before the standbys confirmed them: ${failedChecks.map((c) => `'${c.names}' ${c.level} ${c.unconfirmed}/${SYNC_WAIT_CHECK_COMMITS}`).join(', ')}`,
    `   (replicationStatus() read after each commit; control: at local, ${localCheck.join(' / ')} of ${SYNC_WAIT_CHECK_COMMITS} were not yet flushed by the standbys).`,
  );
  const flushLine = SYNC_SETUPS.flatMap((setup) =>
    setup.levels.map((level) => {
      const m = results.cases.get(syncKey(setup.names, level, 16))?.median;
      return m === undefined ? '' : `${setup.names} ${level} ${(m.opsPerSec / m.syncsPerSec).toFixed(1)}`;
    }),
  ).filter((s) => s !== '');
  console.log(
    `\n6. Synchronous replication — Primary → standbys, each in a process of its own, over TcpTransport (loopback), fdatasync on both sides; one ${SYNC_REP_ENTRY_BYTES} B entry per commit, ${settings.syncRepMs / 1000} s per case`,
  );
  console.log(formatTable(headers, table));
  console.log(
    [
      `   One Primary per setup (its synchronousStandbyNames); the level is set per commit (commit(entry, { synchronousCommit })).`,
      `   Committers loop on await commit(); p50/p99: one commit, call to resolution. At off a commit resolves without I/O, so each`,
      `   committer yields one event-loop turn (setImmediate) after it; the turn is not counted in its latency. Between cases, untimed:`,
      `   the standbys replay everything, the primary checkpoints (its segments are recycled), and every standby is sync/quorum again.`,
      `   limits (same run, median of ${settings.syncRepRuns} round(s)): one raw 8 KiB write at the next offset + fdatasync through node:fs, ${formatInt(raw.p50Us)} µs p50,`,
      `   ${formatInt(raw.opsPerSec)}/s (PostgreSQL's run quotes pg_test_fsync: ${formatInt(PG_FDATASYNC.opsPerSec)}/s, ${PG_FDATASYNC.p50Us} µs, one 8 KiB block rewritten in place from C;`,
      `   npm run bench:pg prints this machine's figure for it and runs PostgreSQL's cases side by side);`,
      `   one loopback round trip ${formatInt(results.rawRoundTrip.median.p50Us)} µs p50. A commit at on pays at least one fdatasync on each side and one round trip.`,
      `   PostgreSQL 15 (issue #6): median commits/s, 1 client / 16 clients, one 100-byte insert per transaction. Targets: ≥ ${TARGET_VS_PG[1]}× at 1`,
      `   committer, ≥ ${TARGET_VS_PG[16]}× at 16, level for level, where PostgreSQL has a figure.`,
      `   commits per primary WAL flush at 16 committers: ${flushLine.join(', ')}`,
      ...notes,
    ].join('\n'),
  );
}

function syncRepTargets(results: SyncRepResults): Target[] {
  return SYNC_COMMITTERS.map((committers) => {
    const goal = TARGET_VS_PG[committers] ?? Number.NaN;
    const ratios: string[] = [];
    let met = true;
    for (const setup of SYNC_SETUPS) {
      for (const level of setup.levels) {
        const pg = pgSyncRep(setup.names, level, committers);
        if (Number.isNaN(pg)) continue;
        const ratio = (results.cases.get(syncKey(setup.names, level, committers))?.median.opsPerSec ?? Number.NaN) / pg;
        if (!(ratio >= goal)) met = false;
        ratios.push(`${setup.standbys === 1 ? '' : `${setup.names} `}${level} ${formatRatio(ratio)}`);
      }
    }
    return {
      description: `${committers} committer${committers === 1 ? '' : 's'}: commits/s ≥ ${goal}× PostgreSQL 15, level for level`,
      met,
      measured: ratios.join(', '),
    };
  });
}

// ---- 7. cascading ----

interface CascadeResults {
  /** Raw file → socket → process → file (one hop), and with a relay process in between (two hops). */
  readonly rawOneHop: readonly CatchUpResult[];
  readonly rawTwoHops: readonly CatchUpResult[];
  /** Throughput A → B (replayed on B), A → B → C (replayed on C), and B's replay in the cascaded runs. */
  readonly direct: CaseSummary;
  readonly cascaded: CaseSummary;
  readonly cascadedB: CaseSummary;
  readonly directRuns: readonly ThroughputRun[];
  readonly cascadedRuns: readonly ThroughputRun[];
  /** Catch-up of D from A, and of C through B, per round. */
  readonly catchUpDirect: readonly CatchUpResult[];
  readonly catchUpCascaded: readonly CatchUpResult[];
  /** Upstream connections that ended during measured runs (all standbys): 0 in a clean run. */
  readonly disconnects: number;
  /** Runs in which a standby stalled short of the end (measured again): what happened. */
  readonly stalls: readonly string[];
}

/** Times a run is tried when a standby stalls in it (see {@link StalledError}). */
const STALL_ATTEMPTS = 3;

async function cascadeSection(base: string, settings: Settings): Promise<CascadeResults> {
  const rawOneHop: CatchUpResult[] = [];
  const rawTwoHops: CatchUpResult[] = [];
  const direct: ThroughputRun[] = [];
  const cascaded: ThroughputRun[] = [];
  const catchUpDirect: CatchUpResult[] = [];
  const catchUpCascaded: CatchUpResult[] = [];
  let disconnects = 0;
  const stalls: string[] = [];
  /** Runs `measure` again, fresh, when a standby stalls in it; the stall is reported. */
  const unstalled = async <T>(label: string, measure: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await measure();
      } catch (err) {
        if (!(err instanceof StalledError) || attempt === STALL_ATTEMPTS) throw err;
        stalls.push(`${label}: ${err.message}`);
      }
    }
  };
  progress('cascading: warm-up');
  await rawCatchUp(base, settings.cascadeCatchUpBytes);
  await rawCatchUp(base, settings.cascadeCatchUpBytes, { relay: true });
  await unstalled('warm-up', () => throughput(base, Math.min(settings.cascadeBytes, 32 * 1024 * 1024), true));
  for (let run = 1; run <= settings.cascadeRuns; run++) {
    const label = `run ${run}/${settings.cascadeRuns}`;
    // Each pair runs one way round in odd rounds and the other in even ones, so that a drift
    // of the machine within a round does not favour one side of the ratio.
    const swap = run % 2 === 0;
    const pair = async <A, B>(first: () => Promise<A>, second: () => Promise<B>): Promise<[A, B]> => {
      if (!swap) {
        const a = await first();
        return [a, await second()];
      }
      const b = await second();
      return [await first(), b];
    };
    const step =
      <T>(what: string, measure: () => Promise<T>) =>
      (): Promise<T> => {
        progress(`cascading: ${what}, ${label}`);
        return unstalled(`${what}, ${label}`, measure);
      };
    const [one, two] = await pair(
      step('raw pipe, one hop', () => rawCatchUp(base, settings.cascadeCatchUpBytes)),
      step('raw pipe through a relay process, two hops', () => rawCatchUp(base, settings.cascadeCatchUpBytes, { relay: true })),
    );
    rawOneHop.push(one);
    rawTwoHops.push(two);
    const [d, c] = await pair(
      step('throughput A → B', () => throughput(base, settings.cascadeBytes, false)),
      step('throughput A → B → C', () => throughput(base, settings.cascadeBytes, true)),
    );
    direct.push(d);
    cascaded.push(c);
    disconnects += d.disconnects + c.disconnects;
    progress(`cascading: catch-up ${settings.cascadeCatchUpBytes / 2 ** 20} MiB behind, A → D and A → B → C, ${label}`);
    const caught = await unstalled(`catch-up, ${label}`, () => cascadedCatchUp(base, settings.cascadeCatchUpBytes, swap));
    catchUpDirect.push(caught.direct);
    catchUpCascaded.push(caught.cascaded);
    disconnects += caught.disconnects;
  }
  return {
    rawOneHop,
    rawTwoHops,
    direct: summarize(direct.map((r) => r.replayed)),
    cascaded: summarize(cascaded.map((r) => r.replayed)),
    cascadedB: summarize(cascaded.map((r) => r.replayedOnB)),
    directRuns: direct,
    cascadedRuns: cascaded,
    catchUpDirect,
    catchUpCascaded,
    disconnects,
    stalls,
  };
}

/** Per round: the raw pipe's two-hop ÷ one-hop MB/s, the cost of one more hop without walship. */
function rawHopRatios(results: CascadeResults): number[] {
  return pairedRatios(
    results.rawTwoHops.map((c) => c.receiveBytesPerSec),
    results.rawOneHop.map((c) => c.receiveBytesPerSec),
  );
}

/** Per round: walship's cascaded ÷ direct MB/s, throughput (replayed) or catch-up (received or replayed). */
function walshipHopRatios(results: CascadeResults, what: 'throughput' | 'receiveBytesPerSec' | 'replayBytesPerSec'): number[] {
  if (what === 'throughput') {
    return pairedRatios(
      results.cascaded.runs.map((r) => r.bytesPerSec),
      results.direct.runs.map((r) => r.bytesPerSec),
    );
  }
  return pairedRatios(
    results.catchUpCascaded.map((c) => c[what]),
    results.catchUpDirect.map((c) => c[what]),
  );
}

function printCascadeSection(results: CascadeResults, settings: Settings): void {
  const mib = `${settings.cascadeCatchUpBytes / 2 ** 20} MiB`;
  const mbps = (list: readonly CatchUpResult[], key: 'receiveBytesPerSec' | 'replayBytesPerSec'): number => median(list.map((c) => c[key]));
  const hop = (ratios: readonly number[]): string => `${formatRatio(median(ratios))} (hop)`;
  const bytesRow = (label: string, bps: number, vs: string): Row => [label, '', formatMBps(bps), '', '', vs];
  const batch = `${ROWS_PER_BATCH} × ${ROW_BYTES / 1024} KiB rows`;
  const rawOne = mbps(results.rawOneHop, 'receiveBytesPerSec');
  console.log(`
7. Cascading — Primary A → standby B → standby C, each in a process of its own, over TcpTransport (loopback), fdatasync everywhere, asynchronous`);
  console.log(
    formatTable(HEADERS, [
      bytesRow(`raw: file → socket → process → file, fdatasync every 8 MiB (one hop), ${mib}`, rawOne, 'limit'),
      bytesRow(`raw: the same through a relay process (socket → process → socket, two hops)`, mbps(results.rawTwoHops, 'receiveBytesPerSec'), hop(rawHopRatios(results))),
      ...rows(`walship A → B, batches of ${batch}, replayed on B`, results.direct, 'direct', settings),
      ...rows(`walship A → B → C, the same, replayed on C`, results.cascaded, hop(walshipHopRatios(results, 'throughput')), settings),
      bytesRow(`catch-up ${mib} behind, A → D: received`, mbps(results.catchUpDirect, 'receiveBytesPerSec'), `${formatRatio(mbps(results.catchUpDirect, 'receiveBytesPerSec') / rawOne)} raw one hop`),
      bytesRow(`catch-up ${mib} behind, A → D: replayed`, mbps(results.catchUpDirect, 'replayBytesPerSec'), `${formatRatio(mbps(results.catchUpDirect, 'replayBytesPerSec') / rawOne)} raw one hop`),
      bytesRow(`catch-up ${mib} behind, through B (A → B → C): received`, mbps(results.catchUpCascaded, 'receiveBytesPerSec'), hop(walshipHopRatios(results, 'receiveBytesPerSec'))),
      bytesRow(`catch-up ${mib} behind, through B (A → B → C): replayed`, mbps(results.catchUpCascaded, 'replayBytesPerSec'), hop(walshipHopRatios(results, 'replayBytesPerSec'))),
    ]),
  );
  const perRound = (list: readonly CatchUpResult[], key: 'receiveBytesPerSec' | 'replayBytesPerSec'): string => list.map((c) => formatMBps(c[key])).join(', ');
  const cpu = (list: readonly CatchUpResult[]): string =>
    list.map((c) => `${[c.primaryCpuSeconds, c.relayCpuSeconds, c.standbyCpuSeconds].filter((x) => x !== undefined).map((x) => x.toFixed(1)).join(' + ')} in ${c.seconds.toFixed(1)} s`).join(', ');
  const throughputCpu = (list: readonly ThroughputRun[]): string => list.map((r) => `${r.cpuSeconds.map((x) => x.toFixed(1)).join(' + ')} in ${r.seconds.toFixed(1)} s`).join(', ');
  console.log(
    [
      `   "(hop)": the median of the per-round ratios two hops ÷ one hop (raw), cascaded ÷ direct (walship): what the extra hop leaves.`,
      `   Throughput: 64 committers on A commit ${settings.cascadeBytes / 2 ** 20} MiB of rows (synchronousCommit 'local'), timed until B (direct) or C (cascaded)`,
      `   has applied the last batch; C bootstraps by base backup from B before the run. In the cascaded runs B itself replayed at`,
      `   ${formatMBps(results.cascadedB.median.bytesPerSec)} MB/s, and C had replayed the last batch ${results.cascadedRuns.map((r) => formatInt(r.behindBMs)).join(', ')} ms after B.`,
      `   Catch-up: C (bootstrapped from B) and D (bootstrapped from A) are stopped, A commits ${mib} of rows, B replays them; then D`,
      `   restarts and catches up from A, and C restarts and catches up through B (the order alternates by round); MB/s of WAL.`,
      `   Raw: the same bytes as section 5's raw pipe; two hops puts a process that reads one socket and writes a second in between.`,
      `   Rounds alternate which side of each pair runs first. ${settings.cascadeRuns} round(s); medians.`,
      `   per round, raw MB/s one hop / two hops: ${results.rawOneHop.map((c, i) => `${formatMBps(c.receiveBytesPerSec)} / ${formatMBps(results.rawTwoHops[i]?.receiveBytesPerSec ?? Number.NaN)}`).join(', ')}; ratios ${ratioList(rawHopRatios(results))}`,
      `   per round, throughput MB/s direct / cascaded: ${results.direct.runs.map((r, i) => `${formatMBps(r.bytesPerSec)} / ${formatMBps(results.cascaded.runs[i]?.bytesPerSec ?? Number.NaN)}`).join(', ')}; ratios ${ratioList(walshipHopRatios(results, 'throughput'))}`,
      `   per round, catch-up received MB/s direct: ${perRound(results.catchUpDirect, 'receiveBytesPerSec')}; cascaded: ${perRound(results.catchUpCascaded, 'receiveBytesPerSec')}`,
      `   per round, catch-up replayed MB/s direct: ${perRound(results.catchUpDirect, 'replayBytesPerSec')}; cascaded: ${perRound(results.catchUpCascaded, 'replayBytesPerSec')}; ratios ${ratioList(walshipHopRatios(results, 'replayBytesPerSec'))}`,
      `   CPU seconds per throughput run (2 cores): direct (A + B) ${throughputCpu(results.directRuns)}; cascaded (A + B + C) ${throughputCpu(results.cascadedRuns)}`,
      `   CPU seconds per catch-up (sender [+ relay] + receiver; 2 cores): direct (A + D) ${cpu(results.catchUpDirect)}; cascaded (A + B + C) ${cpu(results.catchUpCascaded)}`,
      `   raw (sender [+ relay] + writer): one hop ${cpu(results.rawOneHop)}; two hops ${cpu(results.rawTwoHops)}`,
      `   upstream connections that ended during the measured runs: ${results.disconnects}`,
      results.stalls.length === 0
        ? '   standbys that stalled short of the end: none'
        : `   STALLED, so measured again (no position moved for 10 s; see bench/README.md): ${results.stalls.join('; ')}`,
    ].join('\n'),
  );
}

function cascadeTargets(results: CascadeResults): Target[] {
  const raw = rawHopRatios(results);
  const rawMedian = median(raw);
  const line = (what: string, ratios: readonly number[]): Target => ({
    description: `the extra hop costs walship no more than the raw relay: ${what} cascaded ÷ direct ≥ raw two hops ÷ one hop`,
    met: median(ratios) >= rawMedian,
    measured: `${formatRatio(median(ratios))} vs ${formatRatio(rawMedian)} (per round: ${ratioList(ratios)} vs ${ratioList(raw)})`,
  });
  return [line('throughput', walshipHopRatios(results, 'throughput')), line('catch-up (replayed)', walshipHopRatios(results, 'replayBytesPerSec'))];
}

// ---- 8. promotion ----

/** Issue #12: promote → first accepted commit ≥ this many times faster than PostgreSQL 15 measured in the same run (p50). */
const TARGET_PROMOTE_VS_PG = 7;
/** PostgreSQL 15 on this machine (issue #12): `pg_ctl promote` → first accepted write, median and range, ms. */
const PG_PROMOTE_ISSUE = { p50: 37.6, min: 29, max: 44 };
/** The raw promotion's files: a history file's and a control file's size, and one WAL record (a 100-byte entry). */
const RAW_PROMOTION = { controlBytes: 300, recordBytes: 152 };

interface PromotionResults {
  readonly runs: ReadonlyMap<PromotionCase, readonly PromotionRun[]>;
  /** The raw promotion's samples, ms. */
  readonly raw: readonly number[];
  /** PostgreSQL's samples by bench/pg/pg-promote.ts's keys, ms; empty when it did not run. */
  readonly pg: ReadonlyMap<string, readonly number[]>;
  readonly pgLines: readonly string[];
  /** Why PostgreSQL did not run (or stopped), or null. */
  readonly pgNote: string | null;
  /** Why S2 did not follow the new timeline, when it did not (the follow case then stops). */
  readonly followError: string | null;
}

async function promotionSection(base: string, settings: Settings): Promise<PromotionResults> {
  const kinds: readonly PromotionCase[] = ['idle', 'loaded', 'follow'];
  const runs = new Map<PromotionCase, PromotionRun[]>(kinds.map((k) => [k, []]));
  const raw: number[] = [];
  const pg = new Map<string, number[]>();
  const pgLines: string[] = [];
  let pgNote = postgresUnavailable();
  let followError: string | null = null;
  const rawDir = path.join(base, 'raw-promotion');
  await fs.mkdir(rawDir, { recursive: true });
  const preallocated = path.join(rawDir, 'wal');
  await createZeroFilled(preallocated, PREALLOCATED_SIZE);
  const rawSamples = (samples: number): Promise<number[]> => measureRawPromotion({ dir: rawDir, preallocated, samples, ...RAW_PROMOTION });
  try {
    progress('promotion: warm-up');
    await rawSamples(3);
    await promotion(base, 'idle');
    await promotion(base, 'loaded');
    for (let round = 1; round <= settings.promoteRounds; round++) {
      for (let i = 1; i <= settings.promotionsPerRound; i++) {
        const label = `round ${round}/${settings.promoteRounds}, promotion ${i}/${settings.promotionsPerRound}`;
        raw.push(...(await rawSamples(1)));
        for (const kind of kinds) {
          if (kind === 'follow' && followError !== null) continue;
          progress(`promotion: ${kind}, ${label}`);
          const run = await promotion(base, kind);
          runs.get(kind)?.push(run);
          if (run.followError !== null) followError = run.followError;
        }
      }
      if (pgNote === null) {
        progress(`promotion: PostgreSQL 15 (bench/pg/pg-promote.ts, ${settings.promotionsPerRound} per case), round ${round}/${settings.promoteRounds}`);
        try {
          const result = await runPostgres(settings.promotionsPerRound);
          for (const [key, values] of result.samples) pg.set(key, [...(pg.get(key) ?? []), ...values]);
          pgLines.push(...result.lines.map((line) => `round ${round}: ${line}`));
        } catch (err) {
          pgNote = `PostgreSQL's promotions failed in round ${round}: ${(err as Error).message}`;
        }
      }
    }
  } finally {
    await fs.rm(rawDir, { recursive: true, force: true });
  }
  return { runs, raw, pg, pgLines, pgNote, followError };
}

interface Spread {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
}

/** Nearest-rank p50 and p99, min and max of `values` (ms). */
function spreadOf(values: readonly number[]): Spread {
  const sorted = Float64Array.from(values).sort();
  return { n: sorted.length, p50: percentileOfSorted(sorted, 0.5), p99: percentileOfSorted(sorted, 0.99), min: sorted[0] ?? Number.NaN, max: sorted[sorted.length - 1] ?? Number.NaN };
}

const ms = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '–');

function promotionFigures(results: PromotionResults): {
  idle: Spread;
  loaded: Spread;
  follow: Spread;
  promoteOnly: Spread;
  raw: Spread;
  pgIdle: Spread;
  pgLoaded: Spread;
} {
  const of = (kind: PromotionCase, pick: (r: PromotionRun) => number | null): Spread =>
    spreadOf((results.runs.get(kind) ?? []).flatMap((r) => pick(r) ?? []));
  return {
    idle: of('idle', (r) => r.firstCommitMs),
    loaded: of('loaded', (r) => r.firstCommitMs),
    follow: of('follow', (r) => r.followMs),
    promoteOnly: of('idle', (r) => r.promoteMs),
    raw: spreadOf(results.raw),
    pgIdle: spreadOf(results.pg.get('idle') ?? []),
    pgLoaded: spreadOf(results.pg.get('loaded') ?? []),
  };
}

function printPromotionSection(results: PromotionResults, settings: Settings): void {
  const f = promotionFigures(results);
  const pgOf = (key: string): Spread => spreadOf(results.pg.get(key) ?? []);
  const vs = (pgSpread: Spread, mine: Spread): string => (pgSpread.n === 0 || mine.n === 0 ? '' : `${formatRatio(pgSpread.p50 / mine.p50, 1)} PG`);
  const both = (...parts: string[]): string => parts.filter((p) => p !== '').join('; ');
  const row = (label: string, s: Spread, note: string): Row => [label, String(s.n), ms(s.p50), ms(s.p99), ms(s.min), ms(s.max), note];
  const pgFollow = pgOf('cascade-follow');
  const table: Row[] = [
    row(`raw: control file (${RAW_PROMOTION.controlBytes} B written in place twice, each fdatasynced) + one ${RAW_PROMOTION.recordBytes} B record + fdatasync`, f.raw, 'limit'),
    row(`walship, idle standby: promote() → first commit resolved`, f.idle, both(`${formatRatio(f.idle.p50 / f.raw.p50, 1)} raw`, vs(f.pgIdle, f.idle))),
    row(`walship, standby receiving ${formatInt(LOAD_RATE)} commits/s: the same`, f.loaded, both(`${formatRatio(f.loaded.p50 / f.raw.p50, 1)} raw`, vs(f.pgLoaded, f.loaded))),
    row(`walship, cascading S2 of S: promote() → S2 applied S's first commit`, f.follow, vs(pgFollow, f.follow)),
  ];
  if (results.pg.size > 0) {
    table.push(
      row('PostgreSQL 15, idle standby: pg_ctl promote -W → first INSERT accepted', f.pgIdle, ''),
      row(`PostgreSQL 15, standby receiving ${formatInt(LOAD_RATE)} inserts/s (pgbench -R): the same`, f.pgLoaded, ''),
      row('PostgreSQL 15, cascading S2 of S: pg_ctl promote → the row visible on S2', pgFollow, ''),
      row('PostgreSQL 15, primary stopped, S2 re-pointed at S: the same', pgOf('repoint-follow'), 'for context'),
    );
  }
  console.log(`\n8. Promotion — Primary P (this process) → standby S (peer process), TcpTransport on loopback, real files, fdatasync; ms`);
  console.log(formatTable(['case', 'n', 'p50', 'p99', 'min', 'max', 'vs'], table));
  const all = (kind: PromotionCase): readonly PromotionRun[] => results.runs.get(kind) ?? [];
  const loaded = all('loaded');
  const follow = all('follow');
  const notes = [
    `   Each promotion in fresh directories: P opened, S bootstrapped from it (base backup), ${WARM_BATCHES} batches of 8 × 1 KiB committed and replayed; P stays up`,
    `   (idle: committing nothing). Timed in S's process from calling promote() to the first commit([100 B], { synchronousCommit: 'local' }) on the`,
    `   Primary it resolved with having resolved. ${settings.promoteRounds} round(s) of ${settings.promotionsPerRound} promotions per case, cases interleaved; "vs" is PG's p50 ÷ walship's (× faster).`,
    `   promote() alone (idle): p50 ${ms(f.promoteOnly.p50)}, p99 ${ms(f.promoteOnly.p99)} ms; the first commit after it: p50 ${ms(spreadOf(all('idle').map((r) => r.firstCommitMs - r.promoteMs)).p50)} ms.`,
    `   Loaded: P commits ${formatInt(LOAD_RATE)}/s (one ${LOAD_ENTRY_BYTES} B entry each, 'local', open-loop from this process) from ${LOAD_WARM_MS} ms before the promotion; P took ${formatInt(spreadOf(loaded.map((r) => r.loadRate)).min)}–${formatInt(
      spreadOf(loaded.map((r) => r.loadRate)).max,
    )} commits/s; received but not replayed when S began promoting: p50 ${formatInt(spreadOf(loaded.map((r) => r.backlog)).p50)} B, max ${formatInt(spreadOf(loaded.map((r) => r.backlog)).max)} B.`,
    `   Follow: S listens, S2 streams from S (cascading); the first commit on S carries the promotion's start time, S2's application records when it applied it`,
    `   (two processes' clocks); waitForReplay(lsn) on S2 confirms it. After S's commit resolved: p50 ${ms(spreadOf(follow.flatMap((r) => r.followAfterCommitMs ?? [])).p50)} ms. S's own promote → commit with S2 attached: p50 ${ms(spreadOf(follow.map((r) => r.firstCommitMs)).p50)} ms.`,
    `   raw: the minimum durable work of a promotion (the control file's two copies in place, one record) with plain node:fs calls in the bench's directory.`,
  ];
  if (results.followError !== null) notes.push(`   S2 DID NOT FOLLOW the new timeline (so the follow case stopped after its first try): ${results.followError}`);
  if (results.pg.size > 0) {
    notes.push(
      `   PostgreSQL: bench/pg/pg-promote.ts (a fresh pg_basebackup per promotion, fsync on, the primary up; the clock starts just before pg_ctl promote -W,`,
      `   a libpq client retries the INSERT every 200 µs on an open connection). pg_ctl itself: p50 ${ms(pgOf('idle-pgctl').p50)} ms. pgbench's -R ${formatInt(LOAD_RATE)} inserts on the primary`,
      `   in the loaded case; after S's first INSERT, the row visible on S2: cascading p50 ${ms(pgOf('cascade-follow-after-commit').p50)} ms, re-pointed p50 ${ms(pgOf('repoint-follow-after-commit').p50)} ms.`,
      `   PostgreSQL 15 in the issue: ${PG_PROMOTE_ISSUE.p50} ms (${PG_PROMOTE_ISSUE.min}–${PG_PROMOTE_ISSUE.max}).`,
    );
  }
  if (results.pgNote !== null) notes.push(`   PostgreSQL not run in this run (${results.pgNote}): compared with the issue's ${PG_PROMOTE_ISSUE.p50} ms instead.`);
  if (settings.verbose) {
    for (const kind of ['idle', 'loaded', 'follow'] as const) {
      notes.push(
        `   walship ${kind}, promote → commit ms: ${all(kind)
          .map((r) => ms(r.firstCommitMs) + (kind === 'follow' ? ` (S2 ${ms(r.followMs ?? Number.NaN)})` : kind === 'loaded' ? ` (backlog ${formatInt(r.backlog)} B)` : ''))
          .join(', ')}`,
      );
    }
    notes.push(`   raw ms: ${results.raw.map(ms).join(', ')}`, ...results.pgLines.map((line) => `   PG ${line}`));
  }
  console.log(notes.join('\n'));
}

function promotionTargets(results: PromotionResults): Target[] {
  const f = promotionFigures(results);
  const line = (what: string, mine: Spread, pgSpread: Spread): Target => {
    const ranHere = pgSpread.n > 0;
    const pgP50 = ranHere ? pgSpread.p50 : PG_PROMOTE_ISSUE.p50;
    const ratio = pgP50 / mine.p50;
    return {
      description: `promote → first accepted commit, ${what}: p50 ≥ ${TARGET_PROMOTE_VS_PG}× faster than PostgreSQL 15 ${ranHere ? 'in the same run' : "(the issue's figure: not run here)"}`,
      met: ratio >= TARGET_PROMOTE_VS_PG,
      measured: `${formatRatio(ratio, 1)} (walship p50 ${ms(mine.p50)} ms, p99 ${ms(mine.p99)} ms; PostgreSQL p50 ${ms(pgP50)} ms${ranHere ? `, p99 ${ms(pgSpread.p99)} ms` : ''}; raw limit p50 ${ms(f.raw.p50)} ms)`,
    };
  };
  return [line('idle standby', f.idle, f.pgIdle), line(`standby receiving ${formatInt(LOAD_RATE)} commits/s`, f.loaded, f.pgLoaded)];
}

// ---- 9. archiving ----

/** The lag case: `archive.timeoutMs` on the primary, `restoreIntervalMs` on the archive-only standby, and the trickle. */
const ARCHIVE_TIMEOUT_MS = 1000;
const RESTORE_INTERVAL_MS = 100;
const TRICKLE_RATE = 10;
const TRICKLE_BYTES = 100;
/**
 * Idle time before each archive throughput run (untimed). Page-cache writes on this virtual
 * machine slowed 2–3× in some runs that came right after another run's 512 MiB (8 MiB
 * pwrites taking 28 ms instead of 4), which made the second side of every round the slower
 * one; a rest before each side lets both start alike.
 */
const ARCHIVE_REST_MS = 3000;

interface ArchivingResults {
  /** Case 1, per round: walship's archiver (from the open() call) and the raw copy. */
  readonly archived: readonly ArchiveRun[];
  readonly rawCopies: readonly ArchiveRun[];
  /** Case 2. */
  readonly lag: ArchiveLagRun;
  /** Case 3, per round: recovery from the archive, the streaming catch-up and the raw pipe. */
  readonly restores: readonly RestoreRun[];
  readonly catchUps: readonly CatchUpResult[];
  readonly rawPipes: readonly CatchUpResult[];
  readonly restoreSegments: number;
}

async function archivingSection(base: string, settings: Settings): Promise<ArchivingResults> {
  const archived: ArchiveRun[] = [];
  const rawCopies: ArchiveRun[] = [];
  const restores: RestoreRun[] = [];
  const catchUps: CatchUpResult[] = [];
  const rawPipes: CatchUpResult[] = [];
  /** Runs `first` then `second`, or the other way round in even rounds, so that drift within a round favours neither. */
  const alternate = async <A, B>(round: number, first: () => Promise<A>, second: () => Promise<B>): Promise<[A, B]> => {
    if (round % 2 === 1) {
      const a = await first();
      return [a, await second()];
    }
    const b = await second();
    return [await first(), b];
  };

  progress(`archiving: writing ${settings.archiveSegments} segments with archiving off`);
  const source = await prepareArchiveSource(base, settings.archiveSegments);
  const archiveDir = path.join(base, 'archive-fs');
  const rawDir = path.join(base, 'archive-raw');
  try {
    progress('archiving: warm-up');
    await archiveThroughput(source, archiveDir);
    await rawArchiveCopy(source, rawDir);
    const rest = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, ARCHIVE_REST_MS));
    for (let round = 1; round <= settings.archiveRounds; round++) {
      const label = `round ${round}/${settings.archiveRounds}`;
      const [walship, raw] = await alternate(
        round,
        async () => {
          progress(`archiving: ${settings.archiveSegments} segments into a FileSystemArchive, ${label}`);
          await rest();
          return archiveThroughput(source, archiveDir);
        },
        async () => {
          progress(`archiving: raw copy of the same segments, ${label}`);
          await rest();
          return rawArchiveCopy(source, rawDir);
        },
      );
      archived.push(walship);
      rawCopies.push(raw);
    }
  } finally {
    await fs.rm(source.dir, { recursive: true, force: true });
    await fs.rm(archiveDir, { recursive: true, force: true });
    await fs.rm(rawDir, { recursive: true, force: true });
  }

  progress(`archiving: archive-only standby under a trickle of ${TRICKLE_RATE} commits/s for ${settings.archiveLagMs / 1000} s`);
  const lag = await archiveLag(base, {
    timeoutMs: ARCHIVE_TIMEOUT_MS,
    restoreIntervalMs: RESTORE_INTERVAL_MS,
    rate: TRICKLE_RATE,
    entryBytes: TRICKLE_BYTES,
    durationMs: settings.archiveLagMs,
  });

  const mib = `${settings.catchUpBytes / 2 ** 20} MiB`;
  progress(`archiving: archiving ${mib} of WAL after a base backup`);
  const restoreSource = await prepareRestoreSource(base, settings.catchUpBytes);
  try {
    for (let round = 1; round <= settings.restoreRounds; round++) {
      const label = `round ${round}/${settings.restoreRounds}`;
      const [restored, [pipe, streamed]] = await alternate(
        round,
        () => {
          progress(`archiving: recovery of ${mib} from the archive, ${label}`);
          return archiveRecovery(base, restoreSource, RESTORE_INTERVAL_MS);
        },
        async (): Promise<[CatchUpResult, CatchUpResult]> => {
          progress(`archiving: raw pipe, ${label}`);
          const p = await rawCatchUp(base, settings.catchUpBytes);
          progress(`archiving: streaming catch-up of ${mib}, ${label}`);
          return [p, await catchUp(base, settings.catchUpBytes)];
        },
      );
      restores.push(restored);
      rawPipes.push(pipe);
      catchUps.push(streamed);
    }
  } finally {
    await fs.rm(path.dirname(restoreSource.archiveDir), { recursive: true, force: true });
  }
  return { archived, rawCopies, lag, restores, catchUps, rawPipes, restoreSegments: restoreSource.segments };
}

/** walship's archiver alone: from `open()` resolved (the WAL scanned, the archiver started) until all archived. */
const archiverAlone = (r: ArchiveRun): ArchiveRun => ({ ...r, seconds: r.seconds - r.openSeconds });

function archivingFigures(results: ArchivingResults): {
  raw: number;
  walship: number;
  alone: number;
  walshipVsRaw: number[];
  aloneVsRaw: number[];
  putMs: number;
  restoreVsStream: number[];
  restoreVsPipe: number[];
  streamVsPipe: number[];
  restore: number;
  stream: number;
  pipe: number;
  restoreSegmentMs: number;
  modelMs: number;
} {
  const bps = (runs: readonly ArchiveRun[]): number[] => runs.map((r) => r.bytes / r.seconds);
  const alone = results.archived.map(archiverAlone);
  const replay = (list: readonly CatchUpResult[]): number[] => list.map((c) => c.replayBytesPerSec);
  const restore = median(replay(results.restores));
  // One segment's put and one segment's restore (with its replay), at the medians of cases 1 and 3.
  const putMs = median(alone.map((r) => (r.seconds * 1000) / r.segments));
  const restoreSegmentMs = (SEGMENT_BYTES / restore) * 1000;
  return {
    raw: median(bps(results.rawCopies)),
    walship: median(bps(results.archived)),
    alone: median(bps(alone)),
    walshipVsRaw: pairedRatios(bps(results.archived), bps(results.rawCopies)),
    aloneVsRaw: pairedRatios(bps(alone), bps(results.rawCopies)),
    putMs,
    restoreVsStream: pairedRatios(replay(results.restores), replay(results.catchUps)),
    restoreVsPipe: pairedRatios(replay(results.restores), replay(results.rawPipes)),
    streamVsPipe: pairedRatios(replay(results.catchUps), replay(results.rawPipes)),
    restore,
    stream: median(replay(results.catchUps)),
    pipe: median(replay(results.rawPipes)),
    restoreSegmentMs,
    modelMs: ARCHIVE_TIMEOUT_MS + RESTORE_INTERVAL_MS + putMs + restoreSegmentMs,
  };
}

function printArchivingSection(results: ArchivingResults, settings: Settings): void {
  const f = archivingFigures(results);
  const n = settings.archiveSegments;
  const mib = `${settings.catchUpBytes / 2 ** 20} MiB`;
  const lags = results.lag.lagsMs;
  const pct = (p: number): number => percentileOfSorted(lags, p);
  const row = (label: string, segmentsPerSec: number, bytesPerSec: number, p50: number, p99: number, max: number, vs: string): Row => [
    label,
    Number.isFinite(segmentsPerSec) ? segmentsPerSec.toFixed(1) : '',
    Number.isFinite(bytesPerSec) ? formatMBps(bytesPerSec) : '',
    Number.isFinite(p50) ? formatInt(p50) : '',
    Number.isFinite(p99) ? formatInt(p99) : '',
    Number.isFinite(max) ? formatInt(max) : '',
    vs,
  ];
  const segs = (bps: number): number => bps / SEGMENT_BYTES;
  const none = Number.NaN;
  console.log(`
9. Archiving (issue #14) — FileSystemArchive on the same disk, 16 MiB segments, fdatasync everywhere; standbys in a peer process`);
  console.log(
    formatTable(
      ['case', 'segments/s', 'MB/s', 'p50 ms', 'p99 ms', 'max ms', 'vs limit'],
      [
        row(`raw: ${n} segment files, each read, written to a temp file + fdatasync, renamed, dir fsynced`, segs(f.raw), f.raw, none, none, none, 'limit'),
        row(`walship: ${n} segments into a FileSystemArchive, open() → all archived`, segs(f.walship), f.walship, none, none, none, `${formatRatio(median(f.walshipVsRaw))} raw`),
        row(`walship: the same, the archiver alone (open() resolved → all archived)`, segs(f.alone), f.alone, none, none, none, `${formatRatio(median(f.aloneVsRaw))} raw`),
        row(
          `model: timeoutMs ${ARCHIVE_TIMEOUT_MS} + restoreIntervalMs ${RESTORE_INTERVAL_MS} + one put ${f.putMs.toFixed(0)} + one restore ${f.restoreSegmentMs.toFixed(0)}`,
          none,
          none,
          none,
          none,
          f.modelMs,
          'limit (lag)',
        ),
        row(
          `archive-only standby: commit → replayed, ${TRICKLE_RATE} commits/s of ${TRICKLE_BYTES} B`,
          none,
          none,
          pct(0.5),
          pct(0.99),
          lags[lags.length - 1] ?? none,
          `max ${formatRatio((lags[lags.length - 1] ?? none) / f.modelMs)} model`,
        ),
        row(`raw pipe (section 5's): file → socket → process → file, fdatasync every 8 MiB, ${mib}`, none, f.pipe, none, none, none, 'limit (catch-up)'),
        row(`streaming catch-up ${mib} behind: replayed`, none, f.stream, none, none, none, `${formatRatio(median(f.streamVsPipe))} raw pipe`),
        row(
          `recovery from the archive, ${mib}: replayed`,
          segs(f.restore),
          f.restore,
          none,
          none,
          none,
          `${formatRatio(median(f.restoreVsStream))} streaming, ${formatRatio(median(f.restoreVsPipe))} raw pipe`,
        ),
      ],
    ),
  );
  const mbps = (runs: readonly ArchiveRun[]): string => runs.map((r) => formatMBps(r.bytes / r.seconds)).join(', ');
  const percent = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(0)} %` : 'unknown (no fincore)');
  const minResident = (runs: readonly { sourceResident?: number; archiveResident?: number }[]): number => Math.min(...runs.map((r) => r.sourceResident ?? r.archiveResident ?? Number.NaN));
  const lag = results.lag;
  const putsDuringTrickle = Float64Array.from(lag.putMs).sort();
  const replayMB = (list: readonly CatchUpResult[]): string => list.map((c) => formatMBps(c.replayBytesPerSec)).join(', ');
  const cpu = (list: readonly CatchUpResult[], withPrimary: boolean): string =>
    list.map((c) => `${withPrimary ? `${c.primaryCpuSeconds.toFixed(1)} + ` : ''}${c.standbyCpuSeconds.toFixed(1)} in ${c.seconds.toFixed(1)} s`).join(', ');
  console.log(
    [
      `   1. A primary's directory with ${n} complete segments (${(n * SEGMENT_BYTES) / 2 ** 20} MiB, written with archiving off, then checkpointed so that open replays nothing)`,
      `   is opened with archive { mode: 'on', archiver: FileSystemArchive }: the archiver marks each segment ready and puts them one at a time.`,
      `   open() itself (recovery's scan of the WAL) took ${results.archived.map((r) => r.openSeconds.toFixed(2)).join(', ')} s; segments archived when it resolved: ${results.archived.map((r) => r.archivedAtOpen).join(', ')}.`,
      `   ${settings.archiveRounds} rounds after a warm-up, alternating which side goes first, each after ${ARCHIVE_REST_MS / 1000} s idle; "vs limit" is the median of the per-round ratios.`,
      `   per round MB/s, raw / walship / archiver alone: ${results.rawCopies.map((r, i) => `${formatMBps(r.bytes / r.seconds)} / ${formatMBps((results.archived[i]?.bytes ?? 0) / (results.archived[i]?.seconds ?? 0))} / ${formatMBps((results.archived[i]?.bytes ?? 0) / ((results.archived[i]?.seconds ?? 0) - (results.archived[i]?.openSeconds ?? 0)))}`).join(', ')}`,
      `   ratios to raw: open() → archived ${ratioList(f.walshipVsRaw)}; archiver alone ${ratioList(f.aloneVsRaw)}`,
      `   Page cache: both sides read the source segments just before their clock starts (no drop_caches here); resident then (fincore):`,
      `   walship ≥ ${percent(minResident(results.archived))}, raw ≥ ${percent(minResident(results.rawCopies))}. Writes into the archive directories are fresh files on the same disk, emptied before each run.`,
      `   2. Primary with archive { FileSystemArchive, timeoutMs: ${ARCHIVE_TIMEOUT_MS} }, archive-only standby (restore, restoreIntervalMs ${RESTORE_INTERVAL_MS}) on its base backup, in a peer process;`,
      `   ${lag.commits} commits of ${TRICKLE_BYTES} B at ${lag.rate.toFixed(1)}/s (open loop, 'local'), each stamped with its commit time; ${lag.segmentsArchived} segments archived meanwhile (one per timeout);`,
      `   the primary's puts during it: p50 ${percentileOfSorted(putsDuringTrickle, 0.5).toFixed(0)} ms, max ${(putsDuringTrickle[putsDuringTrickle.length - 1] ?? Number.NaN).toFixed(0)} ms. Lag min ${(lags[0] ?? Number.NaN).toFixed(0)} ms.`,
      `   Model: a commit waits for its segment's timeout (0 to ${ARCHIVE_TIMEOUT_MS} ms), the put, the standby's next look (0 to ${RESTORE_INTERVAL_MS} ms), and the restore + replay of 16 MiB`,
      `   (put: case 1's archiver alone per segment; restore: case 3's replayed rate per segment); expected p50 ≈ ${(ARCHIVE_TIMEOUT_MS / 2 + RESTORE_INTERVAL_MS / 2 + f.putMs + f.restoreSegmentMs).toFixed(0)} ms.`,
      `   3. Recovery: a base backup, then ${mib} of section 5's rows committed with archiving on (${results.restoreSegments} segments archived, written once, untimed);`,
      `   each round an archive-only standby in a peer process opens on a fresh copy of the backup and restores; timed from its open until it has replayed the last commit.`,
      `   The archive is read just before (resident ≥ ${percent(minResident(results.restores))}). Beside it, section 5's raw pipe and streaming catch-up of the same size, in the same round,`,
      `   alternating which goes first. ${settings.restoreRounds} rounds; per round MB/s replayed, archive / streaming / raw pipe: ${results.restores
        .map((r, i) => `${formatMBps(r.replayBytesPerSec)} / ${formatMBps(results.catchUps[i]?.replayBytesPerSec ?? Number.NaN)} / ${formatMBps(results.rawPipes[i]?.replayBytesPerSec ?? Number.NaN)}`)
        .join(', ')}`,
      `   archive ÷ streaming per round: ${ratioList(f.restoreVsStream)}; received (written + flushed) MB/s from the archive: ${results.restores.map((r) => formatMBps(r.receiveBytesPerSec)).join(', ')}`,
      `   CPU seconds: restoring standby ${cpu(results.restores, false)}; streaming (primary + standby) ${cpu(results.catchUps, true)}; raw pipe ${cpu(results.rawPipes, true)}`,
      ...(settings.verbose ? [`   walship runs MB/s: ${mbps(results.archived)}; raw: ${mbps(results.rawCopies)}; replayed ${replayMB(results.restores)}`, `   lags ms: ${lags.map((x) => x.toFixed(0)).join(' ')}`] : []),
    ].join('\n'),
  );
}

// ---- summary ----

interface Target {
  readonly description: string;
  readonly met: boolean;
  readonly measured: string;
}

function transportTargets(transports: TransportResults): Target[] {
  const ratio = median(transports.tcpVsRaw);
  return [
    {
      description: `TcpTransport throughput (no TLS) ≥ ${TARGET_TRANSPORT * 100}% of a raw socket`,
      met: ratio >= TARGET_TRANSPORT,
      measured: `${(ratio * 100).toFixed(0)}% (per round: ${ratioList(transports.tcpVsRaw)})`,
    },
  ];
}

function appendTargets(appends: AppendResults): Target[] {
  const small = appends.small.median.opsPerSec;
  return [
    {
      description: `100 B appends/s (sync 'none') ≥ ${formatInt(TARGET_APPENDS)}`,
      met: small >= TARGET_APPENDS,
      measured: `${formatInt(small)}/s`,
    },
  ];
}

function commitTargets(commits: CommitResults): Target[] {
  const groupRatios = commits.rateVsRaw.get(64) ?? [];
  const group = median(groupRatios);
  const single = median(commits.singleP50VsRaw);
  return [
    {
      description: `64 committers ≥ ${TARGET_GROUP_COMMIT}× the raw fdatasync rate`,
      met: group >= TARGET_GROUP_COMMIT,
      measured: `${formatRatio(group, 1)} (per round: ${ratioList(groupRatios, 1)}; medians ${formatInt(
        commits.committers.get(64)?.median.opsPerSec ?? Number.NaN,
      )} commits/s vs ${formatInt(commits.rawPreallocated.median.opsPerSec)} fdatasyncs/s)`,
    },
    {
      description: `1-committer p50 ≤ ${TARGET_SINGLE_P50}× one raw fdatasync p50`,
      met: single <= TARGET_SINGLE_P50,
      measured: `${formatRatio(single)} (per round: ${ratioList(commits.singleP50VsRaw)}; medians ${formatInt(
        commits.committers.get(1)?.median.p50Us ?? Number.NaN,
      )} µs vs ${formatInt(commits.rawPreallocated.median.p50Us)} µs)`,
    },
  ];
}

async function main(): Promise<void> {
  const settings = parseSettings();
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-bench-'));
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    clearProgress();
    killPeers();
    // Stopping PostgreSQL (section 8) blocks the event loop; under tsx, whose parent kills a
    // child that has not told it within 30 ms that it handles the signal, the loop must first
    // get to send that note. A second signal meanwhile is ignored (still a listener).
    setTimeout(() => {
      stopPostgres();
      rmSync(base, { recursive: true, force: true });
      console.error(`interrupted (${signal}); removed ${base}`);
      process.exit(130);
    }, 100);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const run = (n: number): boolean => settings.sections.has(n);
  try {
    const started = performance.now();
    const env = describeEnvironment(base, fileURLToPath(new URL('..', import.meta.url)));
    const only = settings.sections.size === SECTIONS.length ? '' : `, section${settings.sections.size === 1 ? '' : 's'} ${[...settings.sections].sort((a, b) => a - b).join(', ')} only`;
    console.log(`walship benchmark (${settings.name} run${only})`);
    const header: [string, string][] = [
      ['walship', env.commit],
      ['node', env.node],
      ['cpu', `${env.cpu}, ${env.cores} cores`],
      ['memory', env.memory],
      ['os', env.os],
      ['temp dir', `${base} on ${env.filesystem}`],
      ['method', `medians of each section's rounds after a warm-up (${settings.appendRuns} append, ${settings.commitRuns} commit, ${settings.cascadeRuns} cascading, ${settings.archiveRounds} archiving; promotion: p50/p99 of ${settings.promoteRounds * settings.promotionsPerRound} each); raw and walship runs interleaved`],
    ];
    for (const [key, value] of header) console.log(`  ${key.padEnd(9)} ${value}`);

    const appends = run(1) ? await appendSection(base, settings) : null;
    const commits = run(2) ? await commitSection(base, settings) : null;
    const transports = run(4) ? await transportSection(settings) : null;
    const replication = run(5) ? await replicationSection(base, settings) : null;
    const syncRep = run(6) ? await syncRepSection(base, settings) : null;
    const cascade = run(7) ? await cascadeSection(base, settings) : null;
    const promotions = run(8) ? await promotionSection(base, settings) : null;
    const archiving = run(9) ? await archivingSection(base, settings) : null;
    const fanOut = run(10) ? await fanOutSection(base, { bytes: settings.fanOutBytes, rounds: settings.fanOutRounds }, progress) : null;
    clearProgress();
    if (appends !== null) printAppendSection(appends, settings);
    if (commits !== null) printCommitSections(commits, settings);
    if (transports !== null) printTransportSection(transports, settings);
    if (replication !== null) printReplicationSection(replication, settings);
    if (syncRep !== null) printSyncRepSection(syncRep, settings);
    if (cascade !== null) printCascadeSection(cascade, settings);
    if (promotions !== null) printPromotionSection(promotions, settings);
    if (archiving !== null) printArchivingSection(archiving, settings);
    if (fanOut !== null) printFanOutSection(fanOut);

    const printTargets = (title: string, list: readonly Target[]): void => {
      if (list.length === 0) return;
      console.log(`\nTargets (${title})`);
      for (const t of list) console.log(`  ${t.met ? '[met]    ' : '[NOT MET]'} ${t.description}: ${t.measured}`);
    };
    printTargets('issue #2', [...(appends === null ? [] : appendTargets(appends)), ...(commits === null ? [] : commitTargets(commits))]);
    printTargets('issue #3', transports === null ? [] : transportTargets(transports));
    printTargets('issue #4', replication === null ? [] : replicationTargets(replication));
    printTargets('issue #6', syncRep === null ? [] : syncRepTargets(syncRep));
    printTargets('cascading', cascade === null ? [] : cascadeTargets(cascade));
    printTargets('issue #12', promotions === null ? [] : promotionTargets(promotions));
    console.log(`\nfinished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    clearProgress();
    killPeers();
    await fs.rm(base, { recursive: true, force: true });
  }
}

await main();
