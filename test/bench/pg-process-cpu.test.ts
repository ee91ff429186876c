import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FIRST_1, type BenchCase } from '../../bench/pg/cases.js';
import { parseProcStat, sideCpuMs, sideTicks, type ProcStat } from '../../bench/pg/process-cpu.js';
import { formatCpuRow } from '../../bench/pg/report.js';

// A real line's shape: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
const statLine = (pid: number, comm: string, ppid: number, utime: number, stime: number, cutime: number, cstime: number): string =>
  `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1 4194560 1234 0 0 0 ${utime} ${stime} ${cutime} ${cstime} 20 0 1 0 100 1000000 200 18446744073709551615\n`;

const stat = (pid: number, comm: string, ppid: number, utime: number, stime: number, cutime = 0, cstime = 0): ProcStat => ({ pid, comm, ppid, utime, stime, cutime, cstime });

describe('bench:pg CPU accounting', () => {
  it('parses /proc/<pid>/stat, counting fields from the last parenthesis of the name', () => {
    assert.deepEqual(parseProcStat(statLine(42, 'postgres', 1, 310, 120, 7, 3)), stat(42, 'postgres', 1, 310, 120, 7, 3));
    // A name may hold spaces and parentheses (a process may name itself anything).
    assert.deepEqual(parseProcStat(statLine(7, 'a) b (c', 3, 1, 2, 3, 4)), stat(7, 'a) b (c', 3, 1, 2, 3, 4));
    assert.equal(parseProcStat('garbage'), null);
    assert.equal(parseProcStat('12 (x) S'), null);
  });

  it("counts each side's processes and nothing else", () => {
    const self = 100;
    const stats = [
      stat(self, 'node', 1, 500, 200, 40, 10), // the bench: walship's primary; its waited-for children (pgbench) are PostgreSQL's
      stat(101, 'node', self, 300, 100), // a walship standby's process
      stat(102, 'node', self, 250, 90),
      stat(103, 'node', 55, 1000, 1000), // another node process, not ours
      stat(200, 'postgres', 1, 80, 30), // postmaster
      stat(201, 'postgres', 200, 60, 20), // a backend
      stat(300, 'sh', self, 5, 5), // a running child of ours: neither side
    ];
    assert.equal(sideTicks('walship', stats, self), 500 + 200 + 300 + 100 + 250 + 90);
    assert.equal(sideTicks('pg', stats, self), 80 + 30 + 60 + 20 + 40 + 10);
  });

  it('reads a counter that grows while this process works', () => {
    const before = sideCpuMs('walship');
    if (Number.isNaN(before)) return; // no /proc here
    // Busy until the counter moves (ticks of 10 ms), for at most 2 s of wall time: a loaded machine may run us late, not never.
    const until = performance.now() + 2000;
    let after = before;
    while (after <= before && performance.now() < until) {
      const slice = performance.now() + 20;
      while (performance.now() < slice);
      after = sideCpuMs('walship');
    }
    assert.ok(after > before, 'busy work shows as CPU');
  });

  it('prints medians, cores and the ratio', () => {
    const c: BenchCase = { kind: 'commit', names: FIRST_1, level: 'on', committers: 1 };
    const row = formatCpuRow({
      case: c,
      pg: [
        { usPerCommit: 370, cores: 0.55 },
        { usPerCommit: 380, cores: 0.57 },
        { usPerCommit: 390, cores: 0.6 },
      ],
      walship: [
        { usPerCommit: 750, cores: 1.22 },
        { usPerCommit: 740, cores: 1.23 },
        { usPerCommit: 760, cores: 1.3 },
      ],
    });
    assert.deepEqual(row.slice(1), ['380 (0.57)', '750 (1.23)', '1.97×']);
    assert.deepEqual(formatCpuRow({ case: c, pg: [], walship: [] }).slice(1), ['–', '–', '–']);
  });
});
