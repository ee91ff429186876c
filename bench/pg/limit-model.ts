/**
 * The limit model of each row of `npm run bench:pg`: what this machine allows at best, from
 * the physical limits measured in the same run. Pure arithmetic, so
 * test/bench/pg-limit-model.test.ts checks it without PostgreSQL.
 *
 * For a commit case the model is the latency of one commit on the commit path, built from the
 * measured parts (F: one write + fdatasync from Node, p50; R: one loopback round trip, p50):
 *
 * - `serial`: today's walship path, where the primary sends WAL once it is durable locally:
 *   `local` F, `remote_write` F + R, `on` and `remote_apply` F + R + F (the standby's write and
 *   fdatasync, then its reply);
 * - `parallel`: the path of issue #17's first lever, WAL sent while the local fdatasync runs:
 *   `remote_write` max(F, R), `on` and `remote_apply` max(F, R + F).
 *
 * A closed loop of n committers cannot beat n commits per commit latency, so the limit in
 * commits/s is n × 10⁶ / latency µs. `off` has no I/O on its path: no model.
 */

/** The physical limits measured in the run. */
export interface MeasuredLimits {
  /** One 8 KiB write + fdatasync from Node on a pre-allocated file in the bench's directory, p50 µs. */
  readonly fdatasyncUs: number;
  /**
   * The same while two other processes write + fdatasync their own files in that directory
   * (F∥: the three copies of a commit on this one disk, overlapping as with early WAL), p50 µs.
   */
  readonly sharedFdatasyncUs: number;
  /** PostgreSQL's `pg_test_fsync`, one 8 kB write + fdatasync, µs per op (in the same directory). */
  readonly pgTestFsyncUs: number;
  /** A 64-byte ping-pong over loopback TCP between two processes, p50 µs. */
  readonly roundTripUs: number;
  /** Sequential 1 MiB writes with an fdatasync every 8 MiB, bytes/s. */
  readonly sequentialBytesPerSec: number;
  /** The minimum durable work of a promotion with plain node:fs calls (bench/raw-disk.ts), p50 ms. */
  readonly promotionMs: number;
}

export type CommitLevel = 'off' | 'local' | 'remote_write' | 'on' | 'remote_apply';

/** One row's limit: the value of each model, the unit, and how it was computed. */
export interface LimitModel {
  /** The formula, short, for the table. */
  readonly formula: string;
  /** Today's serial path; commits/s, MB/s or ms per the row's unit. */
  readonly serial: number;
  /** With replication while the primary's fdatasync runs; the same as `serial` where that changes nothing. */
  readonly parallel: number;
  /** Commit rows: the serial model's latency of one commit, µs. */
  readonly serialUs?: number;
  /** Commit rows: the parallel model's latency of one commit, µs. */
  readonly parallelUs?: number;
}

/** The limit of `committers` closed-loop committers at `level`; null at `off` (no I/O to bound it). */
export function commitLimit(level: CommitLevel, committers: number, limits: MeasuredLimits): LimitModel | null {
  const f = limits.fdatasyncUs;
  const r = limits.roundTripUs;
  let serialUs: number;
  let parallelUs: number;
  let formula: string;
  switch (level) {
    case 'off':
      return null;
    case 'local':
      serialUs = parallelUs = f;
      formula = 'F';
      break;
    case 'remote_write':
      serialUs = f + r;
      parallelUs = Math.max(f, r);
      formula = 'F+R | max(F,R)';
      break;
    case 'on':
    case 'remote_apply':
      serialUs = f + r + f;
      parallelUs = Math.max(f, r + f);
      formula = 'F+R+F | max(F,R+F)';
      break;
  }
  const perSecond = (us: number): number => (committers * 1e6) / us;
  return {
    formula: committers === 1 ? formula : `${committers}× ${formula}`,
    serial: perSecond(serialUs),
    parallel: perSecond(parallelUs),
    serialUs,
    parallelUs,
  };
}

/**
 * Bulk WAL: every copy (the primary's and each standby's) goes to the same disk here, so the
 * payload cannot go faster than the disk's sequential rate divided by the copies. MB/s.
 */
export function bulkLimit(copies: number, limits: MeasuredLimits): LimitModel {
  const mbps = limits.sequentialBytesPerSec / 1e6 / copies;
  return { formula: `disk ÷ ${copies}`, serial: mbps, parallel: mbps };
}

/** Catch-up: the standby writes and fdatasyncs every byte it is behind once. MB/s of WAL. */
export function catchUpLimit(limits: MeasuredLimits): LimitModel {
  const mbps = limits.sequentialBytesPerSec / 1e6;
  return { formula: 'disk', serial: mbps, parallel: mbps };
}

/** Promotion: the control file's update and the end-of-recovery record, durably. ms. */
export function promotionLimit(limits: MeasuredLimits): LimitModel {
  return { formula: 'raw promotion', serial: limits.promotionMs, parallel: limits.promotionMs };
}

/**
 * How close a measured figure is to a limit, as a fraction (1 = at the limit): for rates
 * (higher is better) measured ÷ limit, for times (lower is better) limit ÷ measured.
 */
export function fractionOfLimit(measured: number, limit: number, higherIsBetter: boolean): number {
  if (!(measured > 0) || !(limit > 0)) return Number.NaN;
  return higherIsBetter ? measured / limit : limit / measured;
}
