/**
 * PostgreSQL 15's promotion to first commit (issue #12), for `npm run bench:pg` and for
 * section 8 of `npm run bench` (formerly bench/pg-promote.sh). A primary of its own, fsync on;
 * every promotion gets a fresh standby S (pg_basebackup -R -X stream). The clock starts just
 * before `pg_ctl promote -W` and stops when an INSERT on the promoted node commits: a small
 * libpq client (bench/pg/promote-client.c, compiled here with gcc) holds one connection to S,
 * spawns pg_ctl, then retries the INSERT every {@link POLL_US} µs until it is accepted (while
 * S is in recovery it fails with "read-only transaction"; an open session can write as soon
 * as recovery ends). Cases:
 *
 * - `idle`: S streams from a running, idle primary;
 * - `loaded`: the same while pgbench commits `rate` one-row inserts/s on the primary (`-R`),
 *   started `warmMs` before the promotion;
 * - `cascade`: a second standby S2 streams from S; after S's first accepted INSERT, the time
 *   until that row is visible on S2 (it follows the new timeline over its own connection);
 * - `repoint`: S and S2 both stream from the primary; the primary is stopped (a failover), S
 *   is promoted, and after its first INSERT S2 is re-pointed at S (ALTER SYSTEM SET
 *   primary_conninfo + reload; recovery_target_timeline 'latest', the default); the time
 *   until the row is visible on S2.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PG_BIN, run, runPg, sleep, startPg } from './exec.js';
import { PgCluster } from './pg-cluster.js';

export type PgPromotionCase = 'idle' | 'loaded' | 'cascade' | 'repoint';
export const PG_PROMOTION_CASES: readonly PgPromotionCase[] = ['idle', 'loaded', 'cascade', 'repoint'];

/** How often the client retries the INSERT (and probes S2), µs. */
const POLL_US = 200;
const CLIENT_SOURCE = fileURLToPath(new URL('./promote-client.c', import.meta.url));

/** What one promotion measured, ms. */
export interface PgPromotion {
  /** `pg_ctl promote -W` spawned → the first INSERT accepted: the measured figure. */
  readonly totalMs: number;
  /** pg_ctl promote -W itself. */
  readonly pgCtlMs: number;
  readonly attempts: number;
  /** cascade, repoint: the promotion's start → the row visible on S2. */
  readonly followMs?: number;
  /** The same from S's INSERT. */
  readonly followAfterCommitMs?: number;
  /** loaded: the lag and pgbench's rate. */
  readonly note: string;
}

/** The load of the loaded case: pgbench -R `rate` inserts/s by `clients` clients, from `warmMs` before the promotion. */
export interface PgLoad {
  readonly rate: number;
  readonly clients: number;
  readonly warmMs: number;
}

const conninfo = (port: number): string => `host=127.0.0.1 port=${port} user=postgres dbname=postgres`;

export class PgPromoter {
  readonly #cluster: PgCluster;
  readonly #client: string;
  readonly #loadScript: string;
  #id = 0;

  private constructor(cluster: PgCluster, client: string, loadScript: string) {
    this.#cluster = cluster;
    this.#client = client;
    this.#loadScript = loadScript;
  }

  /** Compiles the client and starts a primary of its own in `dir` (removed by {@link close}). */
  static async open(dir: string): Promise<PgPromoter> {
    const cluster = await PgCluster.start(dir, [], ['create table t (id int primary key, v text)', 'create table load (v text)']);
    try {
      const client = path.join(dir, 'promote-client');
      const pgConfig = (flag: string): string => execFileSync(path.join(PG_BIN, 'pg_config'), [flag], { encoding: 'utf8' }).trim();
      await run('gcc', ['-O2', '-o', client, CLIENT_SOURCE, `-I${pgConfig('--includedir')}`, `-L${pgConfig('--libdir')}`, '-lpq']).catch((err: unknown) => {
        throw new Error(`cannot compile bench/pg/promote-client.c (needs gcc and libpq-dev: apt-get install -y gcc libpq-dev): ${(err as Error).message}`);
      });
      const loadScript = path.join(dir, 'load.sql');
      await fs.writeFile(loadScript, "insert into load values (repeat('x', 100));\n", { mode: 0o644 });
      return new PgPromoter(cluster, client, loadScript);
    } catch (err) {
      await cluster.close().catch(() => undefined);
      throw err;
    }
  }

  /** One promotion of case `kind` on fresh standbys. */
  async promote(kind: PgPromotionCase, load: PgLoad): Promise<PgPromotion> {
    const cluster = this.#cluster;
    const id = ++this.#id;
    if (!cluster.running('primary')) await cluster.restart('primary');
    await cluster.addStandby('s');
    const clientArgs: string[] = [];
    if (kind === 'cascade') await cluster.addStandby('s2', 's');
    if (kind === 'repoint') await cluster.addStandby('s2');
    await cluster.waitStreaming('primary', 's');
    if (kind === 'cascade') await cluster.waitStreaming('s', 's2');
    if (kind === 'repoint') await cluster.waitStreaming('primary', 's2');
    let lsn = await cluster.currentLsn();
    await cluster.waitReplayed('s', lsn);
    if (kind === 'cascade' || kind === 'repoint') await cluster.waitReplayed('s2', lsn);
    let note = '';
    let pgbench: ReturnType<typeof startPg> | null = null;
    let pgbenchOut = '';
    try {
      if (kind === 'loaded') {
        // pgbench runs warm + 2 s; the promotion comes `warmMs` in.
        const seconds = Math.ceil(load.warmMs / 1000 + 2);
        pgbench = startPg('pgbench', ['-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', '-n', '-f', this.#loadScript, '-c', String(load.clients), '-j', '2', '-R', String(load.rate), '-T', String(seconds), 'postgres']);
        pgbench.stdout?.setEncoding('utf8').on('data', (chunk: string) => (pgbenchOut += chunk));
        await sleep(load.warmMs);
        note = ` lag at promotion: ${await cluster.psql('select pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())', 's')} B received not replayed`;
      }
      if (kind === 'repoint') {
        await cluster.stop('primary', 'fast');
        const { stdout } = await runPg('pg_controldata', ['-D', cluster.dataDir('primary')]);
        lsn = /^Latest checkpoint location:\s*(\S+)/m.exec(stdout)?.[1] ?? lsn;
        await cluster.waitReplayed('s', lsn);
        await cluster.waitReplayed('s2', lsn);
      }
      if (kind === 'cascade') clientArgs.push(conninfo(cluster.portOf('s2')));
      if (kind === 'repoint') clientArgs.push(conninfo(cluster.portOf('s2')), `${conninfo(cluster.portOf('s'))} application_name=s2`);
      const { stdout } = await runPg(this.#client, [path.join(PG_BIN, 'pg_ctl'), cluster.dataDir('s'), String(id), String(POLL_US), conninfo(cluster.portOf('s')), ...clientArgs]);
      const [total, pgctl, attempts, follow, after] = stdout.trim().split(/\s+/).map(Number);
      if (pgbench !== null) {
        const child = pgbench;
        await new Promise((resolve) => child.once('close', resolve));
        pgbench = null;
        note += `; pgbench ${/^tps = (\d+)/m.exec(pgbenchOut)?.[1] ?? '?'} tps`;
      }
      return {
        totalMs: total as number,
        pgCtlMs: pgctl as number,
        attempts: attempts as number,
        ...(follow === undefined ? {} : { followMs: follow, followAfterCommitMs: after as number }),
        note,
      };
    } finally {
      pgbench?.kill('SIGTERM');
      await cluster.remove('s');
      if (kind === 'cascade' || kind === 'repoint') await cluster.remove('s2');
    }
  }

  async close(): Promise<void> {
    await this.#cluster.close();
  }
}

/** What {@link runPostgresPromotions} measured: one line per promotion, and the samples (ms) by key (idle, idle-pgctl, cascade-follow, …). */
export interface PgPromotionRuns {
  readonly lines: readonly string[];
  readonly samples: ReadonlyMap<string, readonly number[]>;
}

/** `runs` promotions of each case in `cases`, in a primary of its own under `dir` (section 8 of `npm run bench`). */
export async function runPostgresPromotions(dir: string, runs: number, load: PgLoad, cases: readonly PgPromotionCase[] = PG_PROMOTION_CASES): Promise<PgPromotionRuns> {
  const promoter = await PgPromoter.open(dir);
  const samples = new Map<string, number[]>();
  const lines: string[] = [];
  const add = (key: string, value: number): void => void samples.set(key, [...(samples.get(key) ?? []), value]);
  try {
    for (const kind of cases) {
      for (let r = 1; r <= runs; r++) {
        const p = await promoter.promote(kind, load);
        add(kind, p.totalMs);
        add(`${kind}-pgctl`, p.pgCtlMs);
        let line = `${kind} run ${r}: promote → first accepted INSERT ${p.totalMs.toFixed(3)} ms (pg_ctl promote -W itself ${p.pgCtlMs.toFixed(3)} ms, ${p.attempts} attempts)`;
        if (p.followMs !== undefined && p.followAfterCommitMs !== undefined) {
          add(`${kind}-follow`, p.followMs);
          add(`${kind}-follow-after-commit`, p.followAfterCommitMs);
          line += `; row visible on S2 ${p.followMs.toFixed(3)} ms after the promote began, ${p.followAfterCommitMs.toFixed(3)} ms after its commit`;
        }
        lines.push(line + p.note);
      }
    }
  } finally {
    await promoter.close();
  }
  return { lines, samples };
}
