/**
 * `npm run bench:pg`: PostgreSQL 15 and walship side by side on this machine, in one run
 * (issue #17). See bench/README.md, "PostgreSQL side by side (issue #17)", for the method.
 *
 * Starts a throw-away PostgreSQL primary with two streaming standbys (s1, s2) and a walship
 * primary with two standbys in processes of their own, fsync on everywhere, and runs the same
 * workloads on each in interleaved rounds; measures the machine's limits in the same run;
 * checks that every standby ends each case with exactly the primary's data; prints one table.
 * Exits 1 when a standby's data differs (or the run fails), 2 on a bad command line, 3 when
 * PostgreSQL cannot run here; 0 otherwise, whether or not a target is met (a benchmark, not a
 * test).
 */
import { rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeEnvironment } from '../environment.js';
import { promotion } from '../promote-cases.js';
import { killPeers } from '../replication-cases.js';
import { median } from '../stats.js';
import { formatInt } from '../table.js';
import { ANY_1, BULK_ROWS, BULK_ROW_BYTES, FIRST_1, FIRST_2, commitCases, labelOf, type BenchCase } from './cases.js';
import { cleanupNow, onCleanup } from './cleanup.js';
import { quietDisk } from './exec.js';
import { bulkLimit, catchUpLimit, commitLimit, promotionLimit, type MeasuredLimits } from './limit-model.js';
import { measureLimits } from './limits.js';
import { floorPlan, measureNodeFloor, type FloorPlan } from './node-floor.js';
import { PgCluster, postgresPrerequisites, postgresVersion } from './pg-cluster.js';
import { PgPromoter } from './pg-promote.js';
import { withCpuPerUnit, type Side } from './process-cpu.js';
import { PgWorkloads } from './pg-workloads.js';
import { formatCpuReport, formatFloorReport, formatReport, tally, type CaseResult, type CpuResult, type CpuRun } from './report.js';
import { USAGE, UsageError, parseBenchPgArgs, type BenchPgSettings } from './settings.js';
import { WalshipCluster } from './walship-cluster.js';

const STANDBYS = ['s1', 's2'] as const;
/** The standby that is stopped and restarted behind (not the synchronous one, as in PostgreSQL's practice). */
const CATCH_UP_STANDBY = 's2';
/** No load: bench:pg's promotion row is the idle case (section 8 of npm run bench also runs the loaded, cascading and re-pointed ones). */
const IDLE = { rate: 0, clients: 1, warmMs: 0 };

/** One measured pair of a case: a figure from each side, from the same round. */
interface Sides {
  readonly pg: number[];
  readonly walship: number[];
}

const keyOf = (c: BenchCase): string => JSON.stringify(c);

function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else process.stderr.write(`${text}\n`);
}

class Run {
  readonly settings: BenchPgSettings;
  readonly pg: PgCluster;
  readonly pgWork: PgWorkloads;
  readonly walship: WalshipCluster;
  readonly promoter: PgPromoter;
  readonly base: string;
  readonly figures = new Map<string, Sides>();
  /** The bare-Node floor's figure per round of each case that has one. */
  readonly floors = new Map<string, number[]>();
  /** Commit cases: each side's CPU per commit, per round. */
  readonly cpu = new Map<string, { case: BenchCase; pg: CpuRun[]; walship: CpuRun[] }>();
  /** Correctness failures: a standby whose data differs from its primary's. */
  readonly problems: string[] = [];
  readonly verbose: string[] = [];

  constructor(settings: BenchPgSettings, base: string, pg: PgCluster, pgWork: PgWorkloads, walship: WalshipCluster, promoter: PgPromoter) {
    this.settings = settings;
    this.base = base;
    this.pg = pg;
    this.pgWork = pgWork;
    this.walship = walship;
    this.promoter = promoter;
  }

  #record(c: BenchCase, side: keyof Sides, value: number): void {
    const key = keyOf(c);
    const sides = this.figures.get(key) ?? { pg: [], walship: [] };
    sides[side].push(value);
    this.figures.set(key, sides);
  }

  /** Runs a commit case's measurement on `side`, noting that side's CPU per commit. */
  async #withCpu(c: BenchCase, side: Side, measure: () => Promise<number>): Promise<number> {
    const { value, cpuUsPerUnit, cores } = await withCpuPerUnit(side, this.settings.caseSeconds, measure);
    const key = keyOf(c);
    const entry = this.cpu.get(key) ?? { case: c, pg: [], walship: [] };
    entry[side].push({ usPerCommit: cpuUsPerUnit, cores });
    this.cpu.set(key, entry);
    return value;
  }

  #check(problems: readonly string[], what: string): void {
    for (const p of problems) {
      const line = `${what}: ${p}`;
      this.problems.push(line);
      console.error(`\n!!! CORRECTNESS: ${line}`);
    }
  }

  /**
   * One case on both sides, PostgreSQL first when `pgFirst`; each side starts on a quiet disk
   * ({@link quietDisk}) and settles and checks its standbys after.
   */
  async pair(c: BenchCase, pgFirst: boolean, measurePg: () => Promise<number>, measureWalship: () => Promise<number>): Promise<void> {
    const sides: [keyof Sides, () => Promise<void>][] = [
      [
        'pg',
        async () => {
          const value = await measurePg();
          this.#check(await this.pgWork.settleAndVerify(STANDBYS.filter((s) => this.pg.running(s))), labelOf(c));
          this.#record(c, 'pg', value);
        },
      ],
      [
        'walship',
        async () => {
          const value = await measureWalship();
          await this.walship.settle();
          this.#check(await this.walship.verify(), labelOf(c));
          this.#record(c, 'walship', value);
        },
      ],
    ];
    if (!pgFirst) sides.reverse();
    for (const [, measure] of sides) {
      await quietDisk();
      await measure();
    }
  }

  /** The bare-Node floor of a case (node-floor.ts), on a quiet disk, in a directory of its own. */
  async #floor(c: BenchCase, plan: FloorPlan): Promise<void> {
    await quietDisk();
    const rate = await measureNodeFloor(path.join(this.base, 'node-floor'), plan, this.settings.caseSeconds);
    const key = keyOf(c);
    this.floors.set(key, [...(this.floors.get(key) ?? []), rate]);
  }

  async setNames(names: string): Promise<void> {
    await this.pg.setSynchronousStandbyNames(names, STANDBYS);
    await this.walship.setSynchronousStandbyNames(names);
  }

  async round(round: number): Promise<void> {
    const s = this.settings;
    const pgFirst = round % 2 === 1;
    const label = `round ${round}/${s.rounds}`;
    for (const names of [FIRST_1, ANY_1, FIRST_2]) {
      await this.setNames(names);
      for (const c of commitCases()) {
        if (c.kind !== 'commit' || c.names !== names) continue;
        progress(`${label}: ${labelOf(c)}`);
        const plan = floorPlan(c, s.flushDelayMs);
        // The floor runs before the pair in even rounds and after it in odd ones.
        if (plan !== null && !pgFirst) await this.#floor(c, plan);
        await this.pair(
          c,
          pgFirst,
          () => this.#withCpu(c, 'pg', () => this.pgWork.commits(c.level, c.committers, s.caseSeconds)),
          () => this.#withCpu(c, 'walship', () => this.walship.commits(c.level, c.committers, s.caseSeconds)),
        );
        if (plan !== null && pgFirst) await this.#floor(c, plan);
      }
    }
    await this.setNames(FIRST_1);
    const bulk: BenchCase = { kind: 'bulk', rowsPerCommit: BULK_ROWS, rowBytes: BULK_ROW_BYTES };
    progress(`${label}: ${labelOf(bulk)}`);
    await this.pair(bulk, pgFirst, () => this.pgWork.bulk(s.bulkSeconds).then((b) => b / 1e6), () => this.walship.bulk(s.bulkSeconds).then((b) => b / 1e6));
    const catchUp: BenchCase = { kind: 'catch-up', bytes: s.catchUpBytes, quick: s.quick };
    progress(`${label}: ${labelOf(catchUp)}`);
    await this.pair(
      catchUp,
      pgFirst,
      () => this.pgWork.catchUp(CATCH_UP_STANDBY, s.catchUpBytes).then((b) => b / 1e6),
      () => this.walship.catchUp(CATCH_UP_STANDBY, s.catchUpBytes).then((b) => b / 1e6),
    );
    // Promotion: each side's promotions of this round alternate; the round's figure is their median.
    const promo: BenchCase = { kind: 'promotion' };
    const pgTimes: number[] = [];
    const walshipTimes: number[] = [];
    for (let i = 1; i <= s.promotionsPerRound; i++) {
      progress(`${label}: promotion ${i}/${s.promotionsPerRound}`);
      const pgSide = async (): Promise<void> => {
        await quietDisk();
        pgTimes.push((await this.promoter.promote('idle', IDLE)).totalMs);
      };
      const walshipSide = async (): Promise<void> => {
        await quietDisk();
        walshipTimes.push((await promotion(this.base, 'idle')).firstCommitMs);
      };
      if ((round + i) % 2 === 0) {
        await pgSide();
        await walshipSide();
      } else {
        await walshipSide();
        await pgSide();
      }
    }
    this.#record(promo, 'pg', median(pgTimes));
    this.#record(promo, 'walship', median(walshipTimes));
    this.verbose.push(`${label}: promotion ms PG ${pgTimes.map((t) => t.toFixed(1)).join(', ')}; walship ${walshipTimes.map((t) => t.toFixed(1)).join(', ')}`);
  }

  /** Each commit case's CPU per commit on both sides, in the table's order. */
  cpuResults(): CpuResult[] {
    return commitCases().map((c) => this.cpu.get(keyOf(c)) ?? { case: c, pg: [], walship: [] });
  }

  results(limits: MeasuredLimits): CaseResult[] {
    const s = this.settings;
    const cases: BenchCase[] = [
      ...commitCases(),
      { kind: 'bulk', rowsPerCommit: BULK_ROWS, rowBytes: BULK_ROW_BYTES },
      { kind: 'catch-up', bytes: s.catchUpBytes, quick: s.quick },
      { kind: 'promotion' },
    ];
    return cases.map((c) => {
      const sides = this.figures.get(keyOf(c)) ?? { pg: [], walship: [] };
      const limit =
        c.kind === 'commit'
          ? commitLimit(c.level, c.committers, limits)
          : c.kind === 'bulk'
            ? bulkLimit(1 + STANDBYS.length, limits)
            : c.kind === 'catch-up'
              ? catchUpLimit(limits)
              : promotionLimit(limits);
      const floor = this.floors.get(keyOf(c));
      return { case: c, pg: sides.pg, walship: sides.walship, limit, ...(floor === undefined ? {} : { floor }) };
    });
  }
}

function describeLimits(l: MeasuredLimits): string[] {
  return [
    `  F  one 8 KiB write + fdatasync from Node, p50: ${formatInt(l.fdatasyncUs)} µs (pg_test_fsync, from C: ${formatInt(l.pgTestFsyncUs)} µs/op)`,
    `  F∥ the same while 2 other processes each write + fdatasync a file of their own beside it (a commit's 3 copies on this one disk), p50: ${formatInt(l.sharedFdatasyncUs)} µs`,
    `  R  a 64-byte loopback TCP round trip between two processes, p50: ${formatInt(l.roundTripUs)} µs`,
    `  disk: sequential 1 MiB writes, fdatasync every 8 MiB: ${(l.sequentialBytesPerSec / 1e6).toFixed(0)} MB/s; raw promotion (control file ×2 + one record, fdatasynced): ${l.promotionMs.toFixed(2)} ms`,
  ];
}

async function main(): Promise<number> {
  let settings: BenchPgSettings | 'help';
  try {
    settings = parseBenchPgArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (settings === 'help') {
    console.log(USAGE);
    return 0;
  }
  const missing = postgresPrerequisites();
  if (missing !== null) {
    console.error(`npm run bench:pg cannot run: ${missing}`);
    return 3;
  }
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-bench-pg-'));
  // The postgres user must reach its directories under it.
  await fs.chmod(base, 0o755);
  onCleanup(() => rmSync(base, { recursive: true, force: true }));
  onCleanup(killPeers);
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\ninterrupted (${signal}): stopping PostgreSQL and the peers, removing ${base}`);
    // The cleanup blocks the event loop (pg_ctl stop, synchronously). Under tsx, whose parent
    // process kills a child that has not told it within 30 ms that it handles the signal, the
    // loop must first get to send that note; a second signal meanwhile is ignored (still a listener).
    setTimeout(() => {
      cleanupNow();
      process.exit(130);
    }, 100);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const started = performance.now();
  const env = describeEnvironment(base, fileURLToPath(new URL('../..', import.meta.url)));
  console.log(`walship vs PostgreSQL 15, side by side (${settings.quick ? '--quick' : 'full'} run, ${settings.rounds} interleaved rounds${settings.earlySend ? '; walship with early WAL' : ''}${settings.commitSync === 'pool' ? '' : `; walship's WAL fdatasync: commitSync '${settings.commitSync}'`}${settings.flushDelayMs === null ? '' : `; standbys' flushDelayMs ${settings.flushDelayMs}`})`);
  for (const [key, value] of [
    ['date', new Date().toISOString()],
    ['walship', env.commit],
    ['postgres', await postgresVersion()],
    ['node', env.node],
    ['cpu', `${env.cpu}, ${env.cores} cores; load average ${os.loadavg().map((l) => l.toFixed(2)).join(', ')} at the start`],
    ['memory', env.memory],
    ['os', env.os],
    ['temp dir', `${base} on ${env.filesystem}`],
  ] as const) {
    console.log(`  ${key.padEnd(9)} ${value}`);
  }

  let run: Run | null = null;
  let walship: WalshipCluster | null = null;
  let pg: PgCluster | null = null;
  let promoter: PgPromoter | null = null;
  try {
    progress('starting PostgreSQL: a primary and standbys s1, s2');
    pg = await PgCluster.start(path.join(base, 'pg'), STANDBYS);
    const pgWork = await PgWorkloads.prepare(pg);
    progress('measuring the limits (pg_test_fsync, Node fdatasync alone and beside two others, loopback round trip, disk, raw promotion)');
    const limits = await measureLimits({ dir: path.join(base, 'limits'), pgDir: pg.dir, quick: settings.quick, fsyncTestSeconds: settings.fsyncTestSeconds });
    progress('starting walship: a primary and standbys s1, s2 in processes of their own');
    walship = await WalshipCluster.open(path.join(base, 'walship'), STANDBYS, FIRST_1, { earlySend: settings.earlySend, commitSync: settings.commitSync, flushDelayMs: settings.flushDelayMs });
    promoter = await PgPromoter.open(path.join(base, 'pg-promote'));
    run = new Run(settings, base, pg, pgWork, walship, promoter);
    for (let round = 1; round <= settings.rounds; round++) await run.round(round);
    progress('');
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');

    const results = run.results(limits);
    console.log(`\nLimits measured in this run:`);
    console.log(describeLimits(limits).join('\n'));
    console.log(`\n${formatReport(results)}`);
    console.log(`\nCPU per commit, every process of each side (PostgreSQL: its postgres processes and pgbench; walship: the bench's process, where the primary and its committers run, and the standbys' processes); medians, cores busy in parentheses:`);
    console.log(formatCpuReport(run.cpuResults()));
    console.log(
      `\nThe bare-Node floor at 1 committer, measured in the same rounds (bench/pg/node-floor.ts: three Node processes doing only a commit's work, early WAL, walship's protocol${settings.flushDelayMs === null ? '' : ` and its standbys' flush delay of ${settings.flushDelayMs} ms`}); medians, ratios per round:`,
    );
    console.log(formatFloorReport(results));
    console.log(
      [
        '',
        `  Medians of ${settings.rounds} rounds (min–max); in each round every case ran once on each side, PostgreSQL first in odd rounds, walship first in even ones; each side began on a quiet disk (sync first, untimed).`,
        `  "walship ÷ PG" is the median of the per-round ratios (× faster; for promotion PG's ms ÷ walship's). Commit cases: ${settings.caseSeconds} s each; PostgreSQL`,
        `  through pgbench (one 100-byte insert per transaction; its round trip to the server included), walship committing in the primary's process.`,
        `  Limit model (commit rows): "serial" is today's path, F + R (+ F); "parallel" sends while the primary's fdatasync runs, max(F, R + F); n committers`,
        `  cannot beat n commits per commit latency. On this one disk the parallel path's three fdatasyncs overlap: with F∥ for F, one commit at on takes`,
        `  R + F∥ = ${formatInt(limits.roundTripUs + limits.sharedFdatasyncUs)} µs (${formatInt(1e6 / (limits.roundTripUs + limits.sharedFdatasyncUs))} commits/s at 1 committer).`,
        `  Bulk: the disk's sequential rate over the 3 copies (primary, s1, s2) that share it. Catch-up: the disk's rate.`,
        `  Promotion: median of ${settings.promotionsPerRound} idle promotions per round (PostgreSQL: pg_ctl promote -W → first INSERT accepted; walship: promote() → first commit).`,
        `  Correctness: after every case each side's standbys replayed the primary's end; walship's standbys' digests (batch count, CRC-32C over every entry in`,
        `  order, last position) and PostgreSQL's standbys' count(*) were compared with the primary's.`,
      ].join('\n'),
    );
    if (settings.verbose) {
      for (const r of results) {
        const floor = r.floor === undefined ? '' : `; bare-Node floor ${r.floor.map((v) => v.toFixed(1)).join(', ')}`;
        console.log(`  ${labelOf(r.case)}: PG ${r.pg.map((v) => v.toFixed(1)).join(', ')}; walship ${r.walship.map((v) => v.toFixed(1)).join(', ')}${floor}`);
      }
      for (const line of run.verbose) console.log(`  ${line}`);
    }
    const { met, notMet } = tally(results);
    console.log(`\nTargets (issue #17): ${met} met, ${notMet} NOT MET.`);
    if (run.problems.length > 0) {
      console.log(`\n!!! CORRECTNESS FAILURES (${run.problems.length}): a standby did not hold exactly its primary's data:`);
      for (const p of run.problems) console.log(`!!!   ${p}`);
    } else {
      console.log('Correctness: every standby held exactly its primary\'s data after every case.');
    }
    console.log(`finished in ${((performance.now() - started) / 1000).toFixed(0)} s; load average at the end ${os.loadavg().map((l) => l.toFixed(2)).join(', ')}`);
    return run.problems.length > 0 ? 1 : 0;
  } finally {
    progress('stopping PostgreSQL and walship');
    await walship?.close().catch((err: unknown) => console.error(`closing walship: ${(err as Error).message}`));
    await promoter?.close().catch(() => undefined);
    await pg?.close().catch(() => undefined);
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    cleanupNow();
  }
}

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`\nnpm run bench:pg failed: ${(err as Error).stack ?? String(err)}`);
  cleanupNow();
  process.exitCode = 1;
}
