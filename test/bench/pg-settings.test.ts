import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { cleanupNow, onCleanup } from '../../bench/pg/cleanup.js';
import { freePorts } from '../../bench/pg/free-port.js';
import { parsePgTestFsync } from '../../bench/pg/limits.js';
import { parsePgbenchTps } from '../../bench/pg/pg-workloads.js';
import { MIN_ROUNDS, UsageError, parseBenchPgArgs } from '../../bench/pg/settings.js';

describe('bench:pg command line', () => {
  it('a full run by default: 1 GiB catch-up, 3 rounds', () => {
    const s = parseBenchPgArgs([]);
    assert.ok(s !== 'help');
    assert.equal(s.quick, false);
    assert.equal(s.rounds, MIN_ROUNDS);
    assert.equal(s.catchUpBytes, 2 ** 30);
    assert.equal(s.earlySend, false, 'walship as the library defaults: no early WAL');
    assert.equal(s.commitSync, 'pool', "walship as the library defaults: the WAL's fdatasync on libuv's pool");
  });

  it("--flush-delay takes the standbys' flushDelayMs, 0 to 1000 ms; without it, the library's default", () => {
    assert.equal((parseBenchPgArgs([]) as { flushDelayMs: number | null }).flushDelayMs, null);
    for (const ms of ['0', '5', '1000']) assert.equal((parseBenchPgArgs(['--flush-delay', ms]) as { flushDelayMs: number | null }).flushDelayMs, Number(ms));
    for (const bad of ['', '-1', '1001', '2.5', 'x']) assert.throws(() => parseBenchPgArgs(['--flush-delay', bad]), UsageError, bad);
  });

  it('--commit-sync takes pool, thread or inline', () => {
    for (const mode of ['pool', 'thread', 'inline']) assert.equal((parseBenchPgArgs(['--commit-sync', mode]) as { commitSync: string }).commitSync, mode);
    for (const bad of ['', 'sync', 'INLINE']) assert.throws(() => parseBenchPgArgs(['--commit-sync', bad]), UsageError, bad);
  });

  it('--early-send runs walship with early WAL', () => {
    assert.equal((parseBenchPgArgs(['--early-send']) as { earlySend: boolean }).earlySend, true);
  });

  it('--quick shortens the run but keeps at least 3 rounds', () => {
    const s = parseBenchPgArgs(['--quick']);
    assert.ok(s !== 'help');
    assert.equal(s.quick, true);
    assert.ok(s.catchUpBytes < 2 ** 30);
    assert.ok(s.rounds >= 3);
    assert.ok(s.caseSeconds < (parseBenchPgArgs([]) as { caseSeconds: number }).caseSeconds);
  });

  it('--rounds takes a whole number of at least 3', () => {
    assert.equal((parseBenchPgArgs(['--rounds', '5']) as { rounds: number }).rounds, 5);
    for (const bad of ['2', '0', 'x', '3.5', '-1']) assert.throws(() => parseBenchPgArgs(['--rounds', bad]), UsageError, bad);
  });

  it('rejects unknown options and positionals; --help asks for the usage', () => {
    assert.throws(() => parseBenchPgArgs(['--fast']), UsageError);
    assert.throws(() => parseBenchPgArgs(['quick']), UsageError);
    assert.equal(parseBenchPgArgs(['--help']), 'help');
  });
});

describe('bench:pg helpers', () => {
  it('free ports are distinct and can be bound', async () => {
    const ports = await freePorts(3);
    assert.equal(new Set(ports).size, 3);
    for (const port of ports) {
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("reads pg_test_fsync's one-write fdatasync line, not the two-write one", () => {
    const output = [
      'Compare file sync methods using one 8kB write:',
      '        open_datasync                      3085.861 ops/sec     324 usecs/op',
      '        fdatasync                          2554.783 ops/sec     391 usecs/op',
      'Compare file sync methods using two 8kB writes:',
      '        fdatasync                          4483.787 ops/sec     223 usecs/op',
    ].join('\n');
    assert.equal(parsePgTestFsync(output), 391);
    assert.ok(Number.isNaN(parsePgTestFsync('fdatasync n/a')));
  });

  it("reads pgbench's tps", () => {
    assert.equal(parsePgbenchTps('latency average = 0.4 ms\ntps = 2499.123456 (without initial connection time)\n'), 2499.123456);
    assert.ok(Number.isNaN(parsePgbenchTps('error')));
  });

  it('clean-up runs newest first, skips what was unregistered, and goes on past a failure', () => {
    const ran: string[] = [];
    const originalError = console.error;
    const printed: string[] = [];
    console.error = (message: string) => void printed.push(message);
    try {
      onCleanup(() => ran.push('directory'));
      onCleanup(() => {
        throw new Error('pg_ctl failed');
      });
      const forget = onCleanup(() => ran.push('stopped already'));
      onCleanup(() => ran.push('server'));
      forget();
      cleanupNow();
      cleanupNow();
    } finally {
      console.error = originalError;
    }
    assert.deepEqual(ran, ['server', 'directory']);
    assert.deepEqual(printed, ['cleanup: pg_ctl failed']);
  });
});
