/**
 * The command line of `npm run bench:pg` and what each run length measures. Pure: no I/O, so
 * test/bench/pg-settings.test.ts checks it without PostgreSQL.
 */
import { parseArgs } from 'node:util';

export const USAGE = `usage: npm run bench:pg [-- [--quick] [--rounds N] [--verbose] [--early-send] [--commit-sync MODE] [--flush-delay MS]]
  --quick      a short run (about 5 minutes): shorter cases, a 256 MiB catch-up gap instead of
               1 GiB (the table says so), fewer promotions
  --rounds N   interleaved rounds per case (at least 3; default 3)
  --verbose    also print every measured run
  --early-send walship's primary sends WAL while its fdatasync runs (earlySend), its standbys
               accept it (acceptEarlyWal); off by default, as in the library
  --commit-sync MODE
               where walship's WAL fdatasync runs on the primary and the standbys (NodeStorage's
               commitSync): pool (the library's default), thread or inline
  --flush-delay MS
               walship's standbys' flushDelayMs: WAL no commit waits for is flushed at most
               every MS ms; 0 (the library's default) flushes every message at once, as
               PostgreSQL's walreceiver does
Needs PostgreSQL 15 (/usr/lib/postgresql/15/bin) and root (the servers run as the postgres OS user).`;

/** What one run measures; everything the cases need to know about its length. */
export interface BenchPgSettings {
  readonly quick: boolean;
  readonly verbose: boolean;
  /** walship with early WAL (`earlySend` on the primary, `acceptEarlyWal` on the standbys). */
  readonly earlySend: boolean;
  /** `NodeStorage`'s `commitSync` for walship's primary and standbys. */
  readonly commitSync: CommitSyncMode;
  /** The standbys' `flushDelayMs`; null: the library's default. */
  readonly flushDelayMs: number | null;
  /** Interleaved rounds: in each, every case runs once on PostgreSQL and once on walship. */
  readonly rounds: number;
  /** Seconds of each commit case (pgbench `-T` takes whole seconds). */
  readonly caseSeconds: number;
  /** Seconds of each bulk-WAL run. */
  readonly bulkSeconds: number;
  /** WAL the catch-up standby is behind when it restarts, bytes. */
  readonly catchUpBytes: number;
  /** Promotions per round on each side. */
  readonly promotionsPerRound: number;
  /** Seconds per test of `pg_test_fsync` (`-s`). */
  readonly fsyncTestSeconds: number;
}

/** The values of `--commit-sync` (`NodeStorage`'s `commitSync`). */
export const COMMIT_SYNC_MODES = ['pool', 'thread', 'inline'] as const;
export type CommitSyncMode = (typeof COMMIT_SYNC_MODES)[number];

/** The fewest rounds a figure's median and spread are taken over. */
export const MIN_ROUNDS = 3;
const GiB = 1024 ** 3;

/** A typed failure of the command line: the message is printed with {@link USAGE}. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Parses `argv` (the arguments after the script); throws {@link UsageError} on anything it does not know. */
export function parseBenchPgArgs(argv: readonly string[]): BenchPgSettings | 'help' {
  let values: { quick?: boolean; verbose?: boolean; rounds?: string; help?: boolean; 'early-send'?: boolean; 'commit-sync'?: string; 'flush-delay'?: string };
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        quick: { type: 'boolean' },
        verbose: { type: 'boolean' },
        rounds: { type: 'string' },
        'early-send': { type: 'boolean' },
        'commit-sync': { type: 'string' },
        'flush-delay': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help === true) return 'help';
  const quick = values.quick === true;
  let rounds = MIN_ROUNDS;
  if (values.rounds !== undefined) {
    if (!/^\d+$/.test(values.rounds) || Number(values.rounds) < MIN_ROUNDS || Number(values.rounds) > 50) {
      throw new UsageError(`--rounds must be a whole number from ${MIN_ROUNDS} to 50; got '${values.rounds}'`);
    }
    rounds = Number(values.rounds);
  }
  const commitSync = values['commit-sync'] ?? 'pool';
  if (!(COMMIT_SYNC_MODES as readonly string[]).includes(commitSync)) {
    throw new UsageError(`--commit-sync must be one of ${COMMIT_SYNC_MODES.join(', ')}; got '${commitSync}'`);
  }
  const flushDelay = values['flush-delay'];
  if (flushDelay !== undefined && (!/^\d+$/.test(flushDelay) || Number(flushDelay) > 1000)) {
    throw new UsageError(`--flush-delay must be a whole number of milliseconds from 0 to 1000; got '${flushDelay}'`);
  }
  return {
    quick,
    verbose: values.verbose === true,
    earlySend: values['early-send'] === true,
    commitSync: commitSync as CommitSyncMode,
    flushDelayMs: flushDelay === undefined ? null : Number(flushDelay),
    rounds,
    caseSeconds: quick ? 1 : 4,
    bulkSeconds: quick ? 2 : 4,
    catchUpBytes: quick ? GiB / 4 : GiB,
    promotionsPerRound: quick ? 2 : 4,
    fsyncTestSeconds: quick ? 1 : 2,
  };
}
