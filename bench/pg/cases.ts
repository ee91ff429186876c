/**
 * The cases `npm run bench:pg` runs on both PostgreSQL and walship, and issue #17's target for
 * each. Pure data, so the table's tests can use it without PostgreSQL.
 */
import type { CommitLevel } from './limit-model.js';

/** The standby sets, in PostgreSQL's `synchronous_standby_names` syntax (walship takes the same). */
export const FIRST_1 = 'FIRST 1 (s1)';
export const ANY_1 = 'ANY 1 (s1, s2)';
export const FIRST_2 = 'FIRST 2 (s1, s2)';

export type BenchCase =
  | { readonly kind: 'commit'; readonly names: string; readonly level: CommitLevel; readonly committers: number }
  | { readonly kind: 'bulk'; readonly rowsPerCommit: number; readonly rowBytes: number }
  | { readonly kind: 'catch-up'; readonly bytes: number; readonly quick: boolean }
  | { readonly kind: 'promotion' };

/** One 100-byte row (entry) per commit, as in the issue. */
export const ENTRY_BYTES = 100;
/** Bulk WAL: commits of this many 1,000-byte rows (1 MB) each. */
export const BULK_ROWS = 1000;
export const BULK_ROW_BYTES = 1000;

/** Every commit case, in the order they run and are listed. */
export function commitCases(): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const committers of [1, 16]) {
    for (const level of ['off', 'local', 'remote_write', 'on', 'remote_apply'] as const) cases.push({ kind: 'commit', names: FIRST_1, level, committers });
    for (const names of [ANY_1, FIRST_2]) cases.push({ kind: 'commit', names, level: 'on', committers });
  }
  return cases;
}

/** Whether a higher figure is better (rates) or a lower one (times). */
export function higherIsBetter(c: BenchCase): boolean {
  return c.kind !== 'promotion';
}

/** The unit of a case's figure. */
export function unitOf(c: BenchCase): string {
  switch (c.kind) {
    case 'commit':
      return 'commits/s';
    case 'bulk':
      return 'MB/s rows';
    case 'catch-up':
      return 'MB/s WAL';
    case 'promotion':
      return 'ms p50';
  }
}

const MiB = 1024 * 1024;

/** The row's label. */
export function labelOf(c: BenchCase): string {
  switch (c.kind) {
    case 'commit':
      return `${c.level.padEnd(12)} ${c.names.padEnd(16)} ${String(c.committers).padStart(2)} committer${c.committers === 1 ? ' ' : 's'}`;
    case 'bulk':
      return `bulk WAL, ${c.rowsPerCommit} × ${c.rowBytes} B rows/commit, on`;
    case 'catch-up': {
      const size = c.bytes >= 1024 * MiB ? `${c.bytes / (1024 * MiB)} GiB` : `${c.bytes / MiB} MiB`;
      return `catch-up, ${size} behind${c.quick ? ' (--quick; target: 1 GiB)' : ''}`;
    }
    case 'promotion':
      return 'promotion → first commit';
  }
}

/** A target: PostgreSQL-relative (× faster), and for one row also a share of the parallel limit model. */
export interface Target {
  readonly minRatio: number;
  readonly minFractionOfParallelLimit?: number;
}

const REMOTE: readonly CommitLevel[] = ['remote_write', 'on', 'remote_apply'];

/** Issue #17's target for a case, or null where it sets none (16 committers at `off` and `local`, bulk WAL). */
export function targetOf(c: BenchCase): Target | null {
  switch (c.kind) {
    case 'commit':
      if (c.committers === 1) return c.level === 'on' && c.names === FIRST_1 ? { minRatio: 1.3, minFractionOfParallelLimit: 0.8 } : { minRatio: 1.2 };
      return REMOTE.includes(c.level) ? { minRatio: 3 } : null;
    case 'bulk':
      return null;
    case 'catch-up':
      // With --quick the gap is smaller, which the row's label says.
      return { minRatio: 1.5 };
    case 'promotion':
      return { minRatio: 7 };
  }
}
