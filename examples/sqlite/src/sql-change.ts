import { WalshipError } from 'walship';

/** A value bound to a `?` parameter: what survives JSON unchanged on every node. */
export type SqlValue = string | number | null;

/** One SQL statement that changes the database, with its parameters. */
export interface SqlStatement {
  readonly sql: string;
  readonly params?: readonly SqlValue[];
}

/**
 * One transaction as it travels in the WAL (one WAL entry): its statements, applied all or
 * none, and an id by which the primary's writer finds out how it ended.
 */
export interface SqlTransaction {
  readonly id: string;
  readonly statements: readonly SqlStatement[];
}

// Statement-based replication: every node runs the same statements on the same state, so they
// must not depend on anything else. Transaction control, ATTACH and PRAGMA would break the one
// SQLite transaction per WAL batch that keeps the rows and the applied LSN together.
const CHANGE = /^\s*(insert|update|delete|replace|create|drop|alter|with)\b/i;
// OR ROLLBACK (ON CONFLICT ROLLBACK) would end the batch's transaction: refused here when spelled
// plainly, as a courtesy (nothing is written); any other spelling, or a trigger's RAISE(ROLLBACK),
// is refused alike on every node by SqliteApplication.apply. walship_applied is where the applied LSN lives.
const FORBIDDEN = /\b(or|conflict)\s+rollback\b|\bwalship_applied\b/i;
const MAX_STATEMENTS = 1000;

/** Checks a transaction from the caller; throws `INVALID_ARGUMENT` naming what is wrong. */
export function checkTransaction(tx: SqlTransaction): void {
  const bad = (why: string): never => {
    throw new WalshipError('INVALID_ARGUMENT', `a SQL transaction ${why}`);
  };
  if (!Array.isArray(tx.statements) || tx.statements.length === 0) bad('needs at least one statement');
  if (tx.statements.length > MAX_STATEMENTS) bad(`has at most ${MAX_STATEMENTS} statements`);
  tx.statements.forEach((statement, i) => {
    if (typeof statement?.sql !== 'string' || !CHANGE.test(statement.sql)) {
      bad(`statement ${i} must be INSERT, UPDATE, DELETE, REPLACE, CREATE, DROP, ALTER or WITH; reads go through query()`);
    }
    if (FORBIDDEN.test(statement.sql)) bad(`statement ${i} may not use OR ROLLBACK or touch walship_applied`);
    const params: unknown = statement.params ?? [];
    if (!Array.isArray(params)) bad(`statement ${i}: params must be an array`);
    for (const value of params as unknown[]) {
      const ok = value === null || typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
      if (!ok) bad(`statement ${i}: a parameter is ${String(value)}; parameters are strings, finite numbers or null`);
    }
  });
}

/** The WAL entry of a transaction. */
export function encodeTransaction(tx: SqlTransaction): Uint8Array {
  checkTransaction(tx);
  return Buffer.from(JSON.stringify({ id: tx.id, statements: tx.statements.map(({ sql, params }) => ({ sql, params: params ?? [] })) }));
}

/**
 * A transaction read back from the WAL. An entry that is not one (written by other code) is
 * refused the same way on every node, so it is rolled back everywhere alike.
 */
export function decodeTransaction(data: Uint8Array): SqlTransaction {
  let tx: SqlTransaction;
  try {
    tx = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8')) as SqlTransaction;
  } catch (err) {
    throw new WalshipError('INVALID_ARGUMENT', 'a WAL entry is not a SQL transaction (not JSON)', { cause: err });
  }
  if (typeof tx !== 'object' || tx === null || typeof tx.id !== 'string') throw new WalshipError('INVALID_ARGUMENT', 'a WAL entry is not a SQL transaction (no id)');
  checkTransaction(tx);
  return tx;
}
