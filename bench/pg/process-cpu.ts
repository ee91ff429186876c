/**
 * The CPU each side of `npm run bench:pg` spends on a case, every process counted: on this
 * machine (2 vCPUs, three nodes) CPU per commit bounds a 1-committer cycle as much as the disk
 * does, so the table's notes give it for each side, measured in the same run as the rates.
 *
 * - PostgreSQL: every process named `postgres` (its primary and standbys: backends,
 *   walsenders, walreceivers, startup processes, writers; also the promotion clusters, idle
 *   meanwhile) and pgbench, counted when this process has waited for it (the children's time
 *   of `/proc/self/stat`, which includes `runuser`'s child).
 * - walship: this process (the primary, and the bench's committers, as pgbench on the other
 *   side) and its `node` children (the standbys' processes).
 *
 * Linux only (`/proc`); elsewhere every figure is NaN and the table shows '–'.
 */
import { readFileSync, readdirSync } from 'node:fs';

/** `/proc/<pid>/stat` counts in clock ticks: USER_HZ, 100 on Linux whatever the kernel's HZ. */
const TICKS_PER_SECOND = 100;

/** The fields of a `/proc/<pid>/stat` line that the CPU accounting needs; times in clock ticks. */
export interface ProcStat {
  readonly pid: number;
  readonly comm: string;
  readonly ppid: number;
  readonly utime: number;
  readonly stime: number;
  /** User and system time of waited-for children (and theirs). */
  readonly cutime: number;
  readonly cstime: number;
}

/**
 * Parses one `/proc/<pid>/stat` line; null when it is not one. The command name sits in
 * parentheses and may hold spaces and parentheses itself, so fields are counted from the last ')'.
 */
export function parseProcStat(line: string): ProcStat | null {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const pid = Number(line.slice(0, open).trim());
  // After ')': state (field 3), ppid (4), … utime (14), stime (15), cutime (16), cstime (17).
  const fields = line.slice(close + 2).trim().split(' ');
  const at = (field: number): number => Number(fields[field - 3]);
  const stat = { pid, comm: line.slice(open + 1, close), ppid: at(4), utime: at(14), stime: at(15), cutime: at(16), cstime: at(17) };
  return [stat.pid, stat.ppid, stat.utime, stat.stime, stat.cutime, stat.cstime].every(Number.isInteger) ? stat : null;
}

export type Side = 'pg' | 'walship';

/** The ticks of `side` among `stats` (see the module's comment); `self` is this process. */
export function sideTicks(side: Side, stats: readonly ProcStat[], self: number): number {
  let ticks = 0;
  for (const s of stats) {
    if (side === 'pg') {
      if (s.comm === 'postgres') ticks += s.utime + s.stime;
      else if (s.pid === self) ticks += s.cutime + s.cstime;
    } else if (s.pid === self || (s.ppid === self && s.comm === 'node')) {
      ticks += s.utime + s.stime;
    }
  }
  return ticks;
}

function readStats(): ProcStat[] {
  const stats: ProcStat[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = parseProcStat(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      if (stat !== null) stats.push(stat);
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return stats;
}

/** CPU milliseconds `side` has used so far (a counter: subtract two readings); NaN without `/proc`. */
export function sideCpuMs(side: Side): number {
  try {
    return (sideTicks(side, readStats(), process.pid) * 1000) / TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}

/** Runs `measure` (a rate over `seconds`) and returns it with `side`'s CPU per unit of it, µs. */
export async function withCpuPerUnit(side: Side, seconds: number, measure: () => Promise<number>): Promise<{ value: number; cpuUsPerUnit: number; cores: number }> {
  const before = sideCpuMs(side);
  const started = performance.now();
  const value = await measure();
  const cpuMs = sideCpuMs(side) - before;
  const wallMs = performance.now() - started;
  return { value, cpuUsPerUnit: (cpuMs * 1000) / (value * seconds), cores: cpuMs / wallMs };
}
