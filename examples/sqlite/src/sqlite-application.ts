import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { closeSync, createReadStream, fsyncSync, openSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { WalshipError, type Application, type CommittedBatch, type Lsn, type Snapshot, type SnapshotData } from 'walship';
import { decodeTransaction, type SqlValue } from './sql-change.js';

/** How one replicated transaction ended: the same on every node, since every node runs it on the same state. */
export type TransactionOutcome =
  | { readonly ok: true; readonly changes: number; readonly lastInsertRowid: number | bigint }
  | { readonly ok: false; readonly error: Error };

/** The prepared statements of one open database. */
interface Connection {
  readonly db: Database.Database;
  readonly getApplied: Database.Statement<[], { lsn: number }>;
  readonly setApplied: Database.Statement<[number]>;
}

/**
 * A SQLite database as a walship {@link Application}: every committed batch is applied in one
 * SQLite transaction that also records the batch's LSN, so the rows and `appliedLsn()` are
 * durable together. After a restart (or a crash) walship replays only the batches after that
 * LSN: none is applied twice and none is lost.
 *
 * Each WAL entry is one SQL transaction (`sql-change.ts`). A transaction that SQLite refuses
 * for a reason that depends only on the statements and the state (a constraint, a syntax
 * error, a missing table) is rolled back the same way on every node, and the batch still
 * counts as applied; any other failure (a full disk, an I/O error) throws, so walship stops
 * the node and applies the batch again after a restart, never skipping it.
 */
export class SqliteApplication implements Application {
  /** The database file. */
  readonly path: string;
  #conn: Connection;
  /** Outcomes the primary's writers wait for, by transaction id: at most one per commit in flight. */
  readonly #awaited = new Map<string, TransactionOutcome | null>();
  #batchesApplied = 0;

  /** Opens (or creates) the database at `path`. */
  constructor(path: string) {
    this.path = path;
    removeLeftovers(path);
    this.#conn = connect(path);
  }

  /** Batches applied since this object was created: replay after a restart included. */
  get batchesApplied(): number {
    return this.#batchesApplied;
  }

  /**
   * Applies one committed batch in one SQLite transaction, together with its LSN.
   *
   * A statement can end that transaction itself: `ON CONFLICT ROLLBACK` (`INSERT OR ROLLBACK`,
   * or a table's constraint declared so) and a trigger's `RAISE(ROLLBACK, …)` roll back
   * everything since `BEGIN`, the earlier entries of the batch included. No check of the SQL
   * text can rule them out (a comment between `OR` and `ROLLBACK`, a trigger created earlier),
   * so apply() copes with them: the entry that did it is marked refused and the batch starts
   * over from `BEGIN`, its earlier entries applied again on the same state (so with the same
   * outcomes) and the refused one skipped. Every node meets the same entries on the same state,
   * so every node refuses the same ones, and the batch still commits with its LSN.
   */
  apply(batch: CommittedBatch): void {
    // Entries (by index) whose statements rolled back the whole transaction, with the error.
    const endedTransaction = new Map<number, Applied>();
    let outcomes: Applied[] | null = null;
    // Each pass either commits or marks one more entry: at most entries + 1 passes.
    while (outcomes === null) outcomes = this.#applyBatch(batch, endedTransaction);
    this.#batchesApplied++;
    for (const { id, outcome } of outcomes) if (this.#awaited.has(id)) this.#awaited.set(id, outcome);
  }

  /**
   * One pass of {@link apply}: the batch's entries (those in `endedTransaction` skipped as
   * refused) and its LSN in one SQLite transaction. Returns the outcomes once committed, or
   * null when an entry rolled back the transaction (it is then added to `endedTransaction`).
   * Throws, leaving nothing applied, on a failure that is this machine's (I/O, disk full).
   */
  #applyBatch(batch: CommittedBatch, endedTransaction: Map<number, Applied>): Applied[] | null {
    const { db, setApplied } = this.#conn;
    db.exec('BEGIN');
    try {
      const outcomes: Applied[] = [];
      for (const [i, entry] of batch.entries.entries()) {
        const applied = endedTransaction.get(i) ?? this.#applyOne(entry.data);
        if (!db.inTransaction) {
          endedTransaction.set(i, applied);
          return null;
        }
        outcomes.push(applied);
      }
      setApplied.run(batch.lsn);
      db.exec('COMMIT');
      return outcomes;
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw err;
    }
  }

  /** The LSN of the last batch applied, from the same database as the rows. */
  appliedLsn(): Lsn | null {
    return this.#conn.getApplied.get()?.lsn ?? null;
  }

  /**
   * A copy of the database for a base backup or a checkpoint. walship applies nothing until
   * this resolves, so the copy is the state at exactly the LSN walship records for it; it goes
   * to a file beside the database and is streamed from there, so memory stays bounded.
   */
  async snapshot(): Promise<SnapshotData> {
    const file = `${this.path}.snapshot-${randomUUID()}`;
    await this.#conn.db.backup(file);
    return streamThenRemove(file);
  }

  /**
   * Replaces the database with a snapshot (a standby's base backup). The snapshot's applied
   * LSN is set to `snapshot.lsn`, where walship continues, before the file replaces the
   * database; the old database's WAL files go first, so SQLite never applies them to it.
   */
  async restore(snapshot: Snapshot): Promise<void> {
    const incoming = `${this.path}.restore`;
    const file = await open(incoming, 'w');
    try {
      for await (const chunk of snapshot.chunks()) await file.write(chunk);
      await file.sync();
    } finally {
      await file.close();
    }
    const restored = connect(incoming);
    restored.setApplied.run(snapshot.lsn);
    restored.db.close();
    // From here on synchronous: no query() can reach a closed database.
    this.#conn.db.close();
    for (const suffix of ['-wal', '-shm']) rmSync(this.path + suffix, { force: true });
    renameSync(incoming, this.path);
    syncDirectory(dirname(this.path));
    this.#conn = connect(this.path);
  }

  /** Runs a read-only statement and returns its rows. Writes go through the primary's `execute()`. */
  query<Row = Record<string, unknown>>(sql: string, params: readonly SqlValue[] = []): Row[] {
    const statement = this.#conn.db.prepare(sql);
    if (!statement.readonly) throw new WalshipError('INVALID_ARGUMENT', 'query() only reads: write through SqlitePrimary.execute(), which replicates the change');
    return statement.all(...params) as Row[];
  }

  /** The primary's writer is about to commit transaction `id` and wants to know how it ends. */
  expectOutcome(id: string): void {
    this.#awaited.set(id, null);
  }

  /** How transaction `id` ended (null if it was not applied yet); forgets it. */
  takeOutcome(id: string): TransactionOutcome | null {
    const outcome = this.#awaited.get(id) ?? null;
    this.#awaited.delete(id);
    return outcome;
  }

  /** Closes the database; again does nothing. */
  close(): void {
    if (this.#conn.db.open) this.#conn.db.close();
  }

  /**
   * One transaction inside the batch's SQLite transaction, behind a savepoint it can roll back
   * to. When its statements rolled back the batch's transaction as well (see {@link apply}),
   * it returns with `db.inTransaction` false, and the caller starts the batch over.
   */
  #applyOne(data: Uint8Array): Applied {
    const { db } = this.#conn;
    let tx;
    try {
      tx = decodeTransaction(data);
    } catch (err) {
      return { id: '', outcome: { ok: false, error: err as Error } };
    }
    db.exec('SAVEPOINT walship_tx');
    try {
      let changes = 0;
      let lastInsertRowid: number | bigint = 0;
      for (const { sql, params = [] } of tx.statements) {
        const info = db.prepare(sql).run(...params);
        changes += info.changes;
        lastInsertRowid = info.lastInsertRowid;
      }
      db.exec('RELEASE walship_tx');
      return { id: tx.id, outcome: { ok: true, changes, lastInsertRowid } };
    } catch (err) {
      if (!refusedByStatements(err)) throw err;
      // A statement that rolled back to BEGIN itself took the savepoint with it.
      if (db.inTransaction) {
        db.exec('ROLLBACK TO walship_tx');
        db.exec('RELEASE walship_tx');
      }
      return { id: tx.id, outcome: { ok: false, error: err as Error } };
    }
  }
}

/** One entry of a batch, applied: its transaction's id ('' when it is none) and how it ended. */
interface Applied {
  readonly id: string;
  readonly outcome: TransactionOutcome;
}

/**
 * Whether SQLite refused the statements for a reason that every node meets alike (the
 * statements and the state decide it), rather than for one of this machine's (I/O, disk full,
 * out of memory), which must not be replicated as "rolled back".
 */
function refusedByStatements(err: unknown): boolean {
  if (err instanceof Database.SqliteError) return /^SQLITE_(CONSTRAINT|ERROR|MISMATCH|RANGE|TOOBIG)/.test(err.code);
  // better-sqlite3's own checks of a statement and its parameters (too few values, a statement that returns rows).
  return err instanceof RangeError || err instanceof TypeError;
}

/** Opens a database with the settings every node uses. */
function connect(path: string): Connection {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    // Each apply is durable when it returns: walship may let go of the WAL before a
    // checkpoint(lsn) that the applied LSN vouches for.
    db.pragma('synchronous = FULL');
    db.exec('CREATE TABLE IF NOT EXISTS walship_applied (id INTEGER PRIMARY KEY CHECK (id = 1), lsn INTEGER NOT NULL)');
    return {
      db,
      getApplied: db.prepare<[], { lsn: number }>('SELECT lsn FROM walship_applied WHERE id = 1'),
      setApplied: db.prepare<[number]>('INSERT INTO walship_applied (id, lsn) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET lsn = excluded.lsn'),
    };
  } catch (err) {
    db.close();
    throw err;
  }
}

/** The snapshot file's bytes, in chunks; the file is removed once read (or given up). */
async function* streamThenRemove(file: string): AsyncIterable<Uint8Array> {
  try {
    yield* createReadStream(file) as AsyncIterable<Buffer>;
  } finally {
    await rm(file, { force: true });
  }
}

/** Removes snapshot and restore files that a crash left beside the database. */
function removeLeftovers(path: string): void {
  const name = basename(path);
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return; // no directory yet: better-sqlite3 reports it when opening
  }
  for (const other of names) {
    if (other.startsWith(`${name}.snapshot-`) || other.startsWith(`${name}.restore`)) rmSync(join(dirname(path), other), { force: true });
  }
}

/** Makes a rename in `dir` durable. */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
