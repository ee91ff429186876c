/**
 * PostgreSQL's side of the workloads, run with its own tools: pgbench with one 100-byte insert
 * per transaction at a `synchronous_commit` level (its figures include pgbench's round trip to
 * the server, which walship's in-process committers do not pay: that is how each is used),
 * bulk inserts of 1,000-row transactions, and a standby restarted 1 GiB behind.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { BULK_ROWS, BULK_ROW_BYTES, ENTRY_BYTES } from './cases.js';
import { runPg } from './exec.js';
import type { CommitLevel } from './limit-model.js';
import type { PgCluster } from './pg-cluster.js';

/** pgbench's "tps = …" figure (PostgreSQL 15 prints it without the initial connection time); NaN when absent. */
export function parsePgbenchTps(output: string): number {
  const match = /^tps = ([\d.]+)/m.exec(output);
  return match === null ? Number.NaN : Number(match[1]);
}

export class PgWorkloads {
  readonly #cluster: PgCluster;
  readonly #insert: string;
  readonly #bulk: string;

  private constructor(cluster: PgCluster, insert: string, bulk: string) {
    this.#cluster = cluster;
    this.#insert = insert;
    this.#bulk = bulk;
  }

  /** Writes pgbench's scripts into the cluster's directory. */
  static async prepare(cluster: PgCluster): Promise<PgWorkloads> {
    const insert = path.join(cluster.dir, 'insert.sql');
    const bulk = path.join(cluster.dir, 'bulk.sql');
    await fs.writeFile(insert, `insert into t values (1, repeat('x', ${ENTRY_BYTES}));\n`, { mode: 0o644 });
    await fs.writeFile(bulk, `insert into t select g, repeat('x', ${BULK_ROW_BYTES}) from generate_series(1, ${BULK_ROWS}) g;\n`, { mode: 0o644 });
    return new PgWorkloads(cluster, insert, bulk);
  }

  async #pgbench(script: string, level: CommitLevel, clients: number, seconds: number): Promise<number> {
    const { stdout } = await runPg(
      'pgbench',
      ['-h', '127.0.0.1', '-p', String(this.#cluster.port), '-U', 'postgres', '-n', '-f', script, '-c', String(clients), '-j', String(clients), '-T', String(seconds), 'postgres'],
      { env: { ...process.env, PGOPTIONS: `-c synchronous_commit=${level}` }, timeoutMs: (seconds + 120) * 1000 },
    );
    const tps = parsePgbenchTps(stdout);
    if (!Number.isFinite(tps)) throw new Error(`pgbench printed no tps: ${stdout.slice(-300)}`);
    return tps;
  }

  /** `clients` pgbench clients, one 100-byte insert per transaction at `level`, for `seconds`: commits/s. */
  commits(level: CommitLevel, clients: number, seconds: number): Promise<number> {
    return this.#pgbench(this.#insert, level, clients, seconds);
  }

  /** One client inserting {@link BULK_ROWS} rows of {@link BULK_ROW_BYTES} per transaction at `on` for `seconds`: payload bytes/s. */
  async bulk(seconds: number): Promise<number> {
    return (await this.#pgbench(this.#bulk, 'on', 1, seconds)) * BULK_ROWS * BULK_ROW_BYTES;
  }

  /**
   * Catch-up: standby `name` is stopped (fast), the primary inserts 1 KB rows in 100,000-row
   * statements until its WAL is `bytes` ahead (untimed), then the standby starts again; timed
   * from `pg_ctl start` until it has replayed the primary's end. WAL bytes/s.
   */
  async catchUp(name: string, bytes: number): Promise<number> {
    const cluster = this.#cluster;
    await cluster.stop(name, 'fast');
    const from = await cluster.currentLsn();
    for (;;) {
      await cluster.psql("insert into t select g, repeat('x', 1000) from generate_series(1, 100000) g");
      if (Number(await cluster.psql(`select pg_wal_lsn_diff(pg_current_wal_lsn(), '${from}')::bigint`)) >= bytes) break;
    }
    const to = await cluster.currentLsn();
    const walBytes = Number(await cluster.psql(`select pg_wal_lsn_diff('${to}', '${from}')::bigint`));
    const started = performance.now();
    await cluster.restart(name, { wait: false });
    await cluster.waitReplayed(name, to);
    return walBytes / ((performance.now() - started) / 1000);
  }

  /**
   * Untimed, between cases: waits until every running standby has replayed the primary's
   * current end, checkpoints (the primary, then each standby: a restartpoint), and resolves
   * with one line per standby whose `count(*)` of t differs from the primary's (empty when all
   * hold exactly the primary's rows).
   */
  async settleAndVerify(standbys: readonly string[]): Promise<string[]> {
    const cluster = this.#cluster;
    // pgbench's clients may leave at -T with an INSERT sent and not answered: its backend
    // still commits it. The count below must come after the last of them.
    for (let i = 0; i < 500; i++) {
      const others = await cluster.psql("select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()");
      if (others === '0') break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // After a case at synchronous_commit off the last commits' WAL may still sit in the
    // primary's buffers, past pg_current_wal_lsn() (the write position): one commit at `local`
    // that wrote WAL (a row in a table of its own; a bare xid's commit is not flushed) writes
    // and flushes all of it first.
    await cluster.psql('create table if not exists bench_settle (x int); set synchronous_commit = local; insert into bench_settle values (1)');
    const end = await cluster.currentLsn();
    for (const name of standbys) await cluster.waitReplayed(name, end);
    const rows = await cluster.rowCount();
    const problems: string[] = [];
    for (const name of standbys) {
      const theirs = await cluster.rowCount(name);
      if (theirs !== rows) problems.push(`PostgreSQL standby ${name} has ${theirs} rows in t, the primary ${rows}`);
    }
    await cluster.psql('checkpoint');
    // And a restartpoint on each standby once it replayed that checkpoint: their replayed pages
    // are written now, untimed, not by their checkpointer during a later case.
    const checkpointed = await cluster.currentLsn();
    for (const name of standbys) {
      await cluster.waitReplayed(name, checkpointed);
      await cluster.psql('checkpoint', name);
    }
    return problems;
  }
}
