import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Primary, Standby, formatLsn, type CommitOptions, type Lsn, type PrimaryOptions, type StandbyOptions, type WaitOptions } from 'walship';
import { SqliteApplication } from './sqlite-application.js';
import { encodeTransaction, type SqlStatement, type SqlValue } from './sql-change.js';

/** Where a node keeps what: `<dir>/wal` is walship's data directory, `<dir>/db.sqlite` the database. */
function layout(dir: string): { wal: string; database: string } {
  mkdirSync(dir, { recursive: true });
  return { wal: join(dir, 'wal'), database: join(dir, 'db.sqlite') };
}

/** What {@link SqlitePrimary.execute} resolves with. */
export interface ExecuteResult {
  /** The position right after the transaction: `SqliteStandby.waitForReplay(lsn)` waits for it. */
  readonly lsn: Lsn;
  /** Its commit time, the same on every node. */
  readonly commitTime: number | null;
  /** Rows inserted, updated or deleted by its statements. */
  readonly changes: number;
  /** The rowid of the last row inserted. */
  readonly lastInsertRowid: number | bigint;
}

/**
 * A transaction SQLite refused on every node alike (a constraint, a syntax error): it is in
 * the WAL, as a batch that changed nothing.
 */
export class TransactionRolledBackError extends Error {
  /** SQLite's code, e.g. `SQLITE_CONSTRAINT_PRIMARYKEY`. */
  readonly code: string;
  /** Where the (empty) batch ended. */
  readonly lsn: Lsn;

  constructor(error: Error, lsn: Lsn) {
    super(`the transaction was rolled back on every node: ${error.message}`, { cause: error });
    this.name = 'TransactionRolledBackError';
    this.code = (error as { code?: string }).code ?? 'INVALID_ARGUMENT';
    this.lsn = lsn;
  }
}

/** Options of {@link SqlitePrimary.open}: a `Primary`'s, with `dir` holding both the WAL and the database. */
export type SqlitePrimaryOptions = Omit<PrimaryOptions, 'dir' | 'storage' | 'application'> & { readonly dir: string };

/** Options of {@link SqliteStandby.open}: a `Standby`'s, with `dir` holding both the WAL and the database. */
export type SqliteStandbyOptions = Omit<StandbyOptions, 'dir' | 'storage' | 'application'> & { readonly dir: string };

/** A walship primary whose application is a SQLite database: writes go through {@link execute}. */
export class SqlitePrimary {
  /** The walship node, for everything else (`replicationStatus()`, `checkpoint()`, …). */
  readonly primary: Primary;
  /** The database. */
  readonly db: SqliteApplication;

  private constructor(primary: Primary, db: SqliteApplication) {
    this.primary = primary;
    this.db = db;
  }

  /** Opens the database, then the primary, which replays the WAL after the database's applied LSN. */
  static async open(options: SqlitePrimaryOptions): Promise<SqlitePrimary> {
    const { dir, ...rest } = options;
    const { wal, database } = layout(dir);
    const db = new SqliteApplication(database);
    try {
      return new SqlitePrimary(await Primary.open({ ...rest, dir: wal, application: db }), db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Where standbys connect. */
  get address(): string | null {
    return this.primary.address;
  }

  /**
   * Commits one transaction (one statement or several, all or none) as one WAL entry at the
   * given level, and resolves once it is applied here and durable as that level asks
   * (`remote_apply`: applied by the synchronous standbys too; `off`: applied here, durable
   * soon after, as walship's `off` is). Rejects with
   * {@link TransactionRolledBackError} when SQLite refused it, which it did on every node.
   */
  async execute(statements: SqlStatement | readonly SqlStatement[], options: CommitOptions = {}): Promise<ExecuteResult> {
    const tx = { id: randomUUID(), statements: isStatementList(statements) ? statements : [statements] };
    const entry = encodeTransaction(tx);
    this.db.expectOutcome(tx.id);
    try {
      const { lsn, commitTime } = await this.primary.commit(entry, options);
      // At every level but 'off', commit() resolves after the primary's own application applied
      // the batch; at 'off' it resolves once the batch is in the log, so wait for the apply here
      // (it rejects if the primary stops first: the outcome is then unknown, not "not applied").
      await this.primary.waitForApply(lsn);
      const outcome = this.db.takeOutcome(tx.id);
      if (outcome === null) throw new Error(`transaction ${tx.id} was committed at ${formatLsn(lsn)} but not applied`);
      if (!outcome.ok) throw new TransactionRolledBackError(outcome.error, lsn);
      return { lsn, commitTime, changes: outcome.changes, lastInsertRowid: outcome.lastInsertRowid };
    } finally {
      this.db.takeOutcome(tx.id);
    }
  }

  /** Reads from the primary's database. */
  query<Row = Record<string, unknown>>(sql: string, params?: readonly SqlValue[]): Row[] {
    return this.db.query<Row>(sql, params);
  }

  /** Closes the primary (fast shutdown: standbys get the rest of the WAL), then the database. */
  async close(): Promise<void> {
    await this.primary.close();
    this.db.close();
  }
}

/** A walship standby whose application is a SQLite database: read-only, kept up to date by replication. */
export class SqliteStandby {
  /** The walship node (`waitForConsistent()`, `replayLsn`, `promote()`, …). */
  readonly standby: Standby;
  /** The database. */
  readonly db: SqliteApplication;

  private constructor(standby: Standby, db: SqliteApplication) {
    this.standby = standby;
    this.db = db;
  }

  /** Opens the database, then the standby: on an empty `dir` it bootstraps from a base backup of the primary's database. */
  static async open(options: SqliteStandbyOptions): Promise<SqliteStandby> {
    const { dir, ...rest } = options;
    const { wal, database } = layout(dir);
    const db = new SqliteApplication(database);
    try {
      return new SqliteStandby(await Standby.open({ ...rest, dir: wal, application: db }), db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Read-your-writes: resolves once this standby has applied everything up to `lsn`. */
  async waitForReplay(lsn: Lsn, options?: WaitOptions): Promise<void> {
    await this.standby.waitForReplay(lsn, options);
  }

  /** Reads from the standby's database. */
  query<Row = Record<string, unknown>>(sql: string, params?: readonly SqlValue[]): Row[] {
    return this.db.query<Row>(sql, params);
  }

  /** Closes the standby, then the database. */
  async close(): Promise<void> {
    await this.standby.close();
    this.db.close();
  }
}

function isStatementList(value: SqlStatement | readonly SqlStatement[]): value is readonly SqlStatement[] {
  return Array.isArray(value);
}
