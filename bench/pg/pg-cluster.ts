/**
 * A throw-away PostgreSQL 15 cluster on this machine: a primary and streaming standbys, each
 * in a directory of its own under the run's temp dir, on loopback ports found free at run
 * time, fsync on, the servers running as the postgres OS user. Everything it starts is
 * stopped (`pg_ctl stop -m immediate`) however the run ends: see {@link onCleanup}.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { onCleanup } from './cleanup.js';
import { PG_BIN, PG_USER, asPostgres, run, runPg, sleep } from './exec.js';
import { freePorts } from './free-port.js';

/** Why PostgreSQL cannot run here (printed, then the run exits non-zero), or null when it can. */
export function postgresPrerequisites(): string | null {
  if (!existsSync(path.join(PG_BIN, 'pg_ctl')) || !existsSync(path.join(PG_BIN, 'pgbench'))) {
    return `PostgreSQL 15 is not installed (no ${PG_BIN}/pg_ctl or pgbench). Install it with:\n  apt-get install -y postgresql    # Debian 12 (bookworm) ships PostgreSQL 15; pgbench, pg_basebackup and pg_test_fsync come with it`;
  }
  if (process.getuid?.() !== 0) {
    return `PostgreSQL's servers must run as an OS user of their own (${PG_USER}; initdb and postgres refuse root), which this harness switches to with runuser: run it as root (for example: sudo npm run bench:pg).`;
  }
  if (spawnSync('id', ['-u', PG_USER]).status !== 0) return `there is no '${PG_USER}' OS user (the postgresql package creates it): install PostgreSQL with apt-get install -y postgresql.`;
  return null;
}

/** The uid and gid of the postgres user, to hand it the cluster's directory. */
function postgresIds(): { uid: number; gid: number } {
  const id = (flag: string): number => Number(spawnSync('id', [flag, PG_USER], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** How long to wait for a standby to stream or to replay a position. */
const WAIT_MS = 120_000;

interface Node {
  readonly name: string;
  readonly dir: string;
  readonly port: number;
  running: boolean;
  /** Unregisters the node's cleanup once it is stopped. */
  forget: () => void;
}

export class PgCluster {
  readonly dir: string;
  readonly #nodes = new Map<string, Node>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** The primary's port. */
  get port(): number {
    return this.#node('primary').port;
  }

  /** The port of node `name`. */
  portOf(name: string): number {
    return this.#node(name).port;
  }

  /** The data directory of node `name`. */
  dataDir(name: string): string {
    return this.#node(name).dir;
  }

  /**
   * Creates `dir` (owned by postgres), initdb's and starts the primary, creates `tables` (SQL),
   * then a fresh standby per name in `standbys` (pg_basebackup -R -X stream,
   * `application_name` = its name).
   */
  static async start(dir: string, standbys: readonly string[], tables: readonly string[] = ['create table t (id bigint, v text)']): Promise<PgCluster> {
    await fs.mkdir(dir, { recursive: true });
    const { uid, gid } = postgresIds();
    await fs.chown(dir, uid, gid);
    const cluster = new PgCluster(dir);
    const [port] = await freePorts(1);
    const primaryDir = path.join(dir, 'primary');
    await runPg('initdb', ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '--no-instructions']);
    await fs.appendFile(
      path.join(primaryDir, 'postgresql.conf'),
      [
        "listen_addresses = '127.0.0.1'",
        `port = ${port}`,
        // No Unix socket: every client connects over loopback TCP, like walship's standbys.
        "unix_socket_directories = ''",
        'wal_level = replica',
        'max_wal_senders = 10',
        // Keep the WAL a stopped standby needs to catch up 1 GiB (walship: walKeepSize, the same 4 GiB).
        'wal_keep_size = 4GB',
        'max_wal_size = 4GB',
        'checkpoint_timeout = 30min',
        'hot_standby = on',
        'fsync = on',
        'synchronous_commit = on',
        "synchronous_standby_names = ''",
        '',
      ].join('\n'),
    );
    await fs.appendFile(path.join(primaryDir, 'pg_hba.conf'), 'host replication all 127.0.0.1/32 trust\n');
    await cluster.#startNode({ name: 'primary', dir: primaryDir, port: port as number, running: false, forget: () => undefined });
    for (const table of tables) await cluster.psql(table);
    for (const name of standbys) await cluster.addStandby(name);
    return cluster;
  }

  /** Runs `sql` on node `name` (default the primary); resolves with its unaligned output. */
  async psql(sql: string, name = 'primary'): Promise<string> {
    const { stdout } = await runPg('psql', ['-h', '127.0.0.1', '-p', String(this.#node(name).port), '-U', 'postgres', '-d', 'postgres', '-Atq', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
    return stdout.trim();
  }

  /**
   * A fresh standby `name` on a free port: a base backup of the primary, streaming from
   * `upstream` (default the primary; another standby for cascading), started.
   */
  async addStandby(name: string, upstream = 'primary'): Promise<void> {
    const existing = this.#nodes.get(name);
    if (existing !== undefined) await this.remove(name);
    const dir = path.join(this.dir, name);
    const [port] = await freePorts(1);
    await runPg('pg_basebackup', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-D', dir, '-R', '-X', 'stream', '-c', 'fast']);
    const auto = path.join(dir, 'postgresql.auto.conf');
    const upstreamPort = this.#node(upstream).port;
    const conf = (await fs.readFile(auto, 'utf8'))
      .replace(`port=${this.port} `, `port=${upstreamPort} `)
      .replace("primary_conninfo = '", `primary_conninfo = 'application_name=${name} `);
    await fs.writeFile(auto, conf);
    await fs.appendFile(path.join(dir, 'postgresql.conf'), `port = ${port}\n`);
    await this.#startNode({ name, dir, port: port as number, running: false, forget: () => undefined });
  }

  async #startNode(node: Node): Promise<void> {
    this.#nodes.set(node.name, node);
    this.#stopOnCleanup(node);
    await runPg('pg_ctl', ['-D', node.dir, '-l', `${node.dir}.log`, '-w', '-t', '120', 'start']).catch(async (err: unknown) => {
      const log = await fs.readFile(`${node.dir}.log`, 'utf8').catch(() => '');
      throw new Error(`PostgreSQL node ${node.name} did not start: ${(err as Error).message}\n${log.split('\n').slice(-8).join('\n')}`);
    });
  }

  /** Marks `node` running and registers its immediate stop with the run's clean-up (synchronous: it may run from a signal handler). */
  #stopOnCleanup(node: Node): void {
    node.running = true;
    node.forget = onCleanup(() => {
      const [command, argv] = asPostgres('pg_ctl', ['-D', node.dir, '-m', 'immediate', '-w', 'stop']);
      spawnSync(command, argv, { stdio: 'ignore', timeout: 30_000 });
    });
  }

  /** Stops node `name` (`fast`: a clean shutdown; `immediate`: a crash). */
  async stop(name: string, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    const node = this.#node(name);
    if (!node.running) return;
    await runPg('pg_ctl', ['-D', node.dir, '-m', mode, '-w', 'stop']);
    node.running = false;
    node.forget();
  }

  /** Starts node `name` again (after {@link stop}); with `wait: false` returns once pg_ctl has launched it. */
  async restart(name: string, { wait = true }: { wait?: boolean } = {}): Promise<void> {
    const node = this.#node(name);
    if (node.running) return;
    this.#stopOnCleanup(node);
    await runPg('pg_ctl', ['-D', node.dir, '-l', `${node.dir}.log`, ...(wait ? ['-w', '-t', '120'] : ['-W']), 'start']);
  }

  /** Stops node `name` at once and removes its directory. */
  async remove(name: string): Promise<void> {
    const node = this.#node(name);
    if (node.running) await this.stop(name, 'immediate');
    this.#nodes.delete(name);
    await fs.rm(node.dir, { recursive: true, force: true });
    await fs.rm(`${node.dir}.log`, { force: true });
  }

  /** Whether node `name` is running. */
  running(name: string): boolean {
    return this.#nodes.get(name)?.running === true;
  }

  /**
   * Sets `synchronous_standby_names` on the primary (ALTER SYSTEM, reload) and waits until
   * pg_stat_replication shows the standbys `names` lists streaming with the expected sync_state
   * (`sync` under FIRST, `quorum` under ANY, `async` for '').
   */
  async setSynchronousStandbyNames(names: string, standbys: readonly string[]): Promise<void> {
    await this.psql(`alter system set synchronous_standby_names = '${names}'`);
    await this.psql('select pg_reload_conf()');
    const wanted = names === '' ? 'async' : /^\s*ANY\b/i.test(names) ? 'quorum' : null;
    const listed = new Set(/\(([^)]*)\)/.exec(names)?.[1]?.split(',').map((s) => s.trim()) ?? []);
    const count = Number(/^\s*(?:FIRST|ANY)\s+(\d+)/i.exec(names)?.[1] ?? 0);
    await this.#until(async () => {
      const rows = (await this.psql("select application_name, state, sync_state from pg_stat_replication where state = 'streaming'"))
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => line.split('|'));
      return standbys.every((name) => {
        const row = rows.find((r) => r[0] === name);
        if (row === undefined) return false;
        if (wanted !== null) return !listed.has(name) || row[2] === wanted;
        // FIRST n: the first n listed are sync, the rest potential.
        const rank = [...listed].indexOf(name);
        return rank < 0 || row[2] === (rank < count ? 'sync' : 'potential');
      });
    }, `standbys ${standbys.join(', ')} streaming under '${names}'`);
  }

  /** The primary's current WAL position (`pg_current_wal_lsn()`), as text. */
  currentLsn(): Promise<string> {
    return this.psql('select pg_current_wal_lsn()');
  }

  /** Waits until standby `name` has replayed `lsn` (while it starts, a failed query counts as not yet). */
  async waitReplayed(name: string, lsn: string): Promise<void> {
    await this.#until(async () => (await this.psql(`select pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '${lsn}') >= 0`, name).catch(() => '')) === 't', `${name} to replay ${lsn}`);
  }

  /** Waits until `name` streams from the server named `from`. */
  async waitStreaming(from: string, name: string): Promise<void> {
    await this.#until(
      async () => (await this.psql(`select count(*) from pg_stat_replication where application_name = '${name}' and state = 'streaming'`, from)) === '1',
      `${name} to stream from ${from}`,
    );
  }

  /** `select count(*) from t` on node `name`. */
  async rowCount(name = 'primary'): Promise<number> {
    return Number(await this.psql('select count(*) from t', name));
  }

  async #until(condition: () => Promise<boolean>, what: string): Promise<void> {
    const deadline = performance.now() + WAIT_MS;
    while (!(await condition())) {
      if (performance.now() > deadline) throw new Error(`PostgreSQL: gave up after ${WAIT_MS / 1000} s waiting for ${what}`);
      await sleep(20);
    }
  }

  #node(name: string): Node {
    const node = this.#nodes.get(name);
    if (node === undefined) throw new Error(`no PostgreSQL node '${name}'`);
    return node;
  }

  /** Stops every node (immediate: nothing in them is kept) and removes the cluster's directory. */
  async close(): Promise<void> {
    for (const name of [...this.#nodes.keys()].reverse()) {
      const node = this.#node(name);
      if (node.running) await this.stop(name, 'immediate').catch(() => undefined);
    }
    this.#nodes.clear();
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

/** PostgreSQL's version string (`postgres --version`). */
export async function postgresVersion(): Promise<string> {
  const { stdout } = await run(path.join(PG_BIN, 'postgres'), ['--version']);
  return stdout.trim();
}
