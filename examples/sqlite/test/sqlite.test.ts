import Database from 'better-sqlite3';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { TcpTransport, isWalshipError } from 'walship';
import { encodeTransaction, type SqlStatement } from '../src/sql-change.js';
import { SqlitePrimary, SqliteStandby, TransactionRolledBackError } from '../src/sqlite-node.js';

const tsx = import.meta.resolve('tsx');
const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));
const NODE_ARGS = ['--conditions=walship-source', '--import', tsx];
const DEADLINE_MS = 90_000;

const password = 's3cret-pw';
const auth = { users: { repl: { password } }, rules: [{ user: 'repl', address: '127.0.0.1/32', method: 'scram-sha-256' as const }] };

/** Runs a test's cleanups after it, the last one registered first (node:test runs `after` hooks in order). */
function cleanups(t: TestContext): (cleanup: () => unknown) => void {
  const stack: Array<() => unknown> = [];
  t.after(async () => {
    for (const cleanup of stack.reverse()) await cleanup();
  });
  return (cleanup) => stack.push(cleanup);
}

/** A temporary directory, removed after the test. */
async function tempDir(defer: (cleanup: () => unknown) => void): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'walship-sqlite-'));
  defer(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

type Account = { name: string; balance: number };

describe('examples/sqlite', () => {
  it('runs its demo (src/main.ts): rows on the standby, a rollback on every node, no replay after a restart', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [...NODE_ARGS, here('../src/main.ts')], { timeout: DEADLINE_MS });
    assert.match(stdout, /^standby after remote_apply: \[\{"name":"alice","balance":100\},\{"name":"bob","balance":0\}\]$/m, stdout);
    assert.match(stdout, /^transfer committed at 0\/[0-9A-F]+; standby: \[\{"name":"alice","balance":70\},\{"name":"bob","balance":30\}\]$/m, stdout);
    assert.match(stdout, /^rolled back everywhere \(SQLITE_CONSTRAINT_CHECK\); standby: \[\{"name":"alice","balance":70\},\{"name":"bob","balance":30\}\]$/m, stdout);
    assert.match(stdout, /^after a restart: batches replayed on the primary 0, on the standby 0$/m, stdout);
    assert.match(stdout, /"name":"carol","balance":5/, stdout);
  });

  it('a primary and a standby over TCP: the standby bootstraps from the database, rows appear on it, a restart replays nothing', async (t) => {
    const defer = cleanups(t);
    const dir = await tempDir(defer);
    const transport = new TcpTransport();
    const openPrimary = (address: string) => SqlitePrimary.open({ dir: join(dir, 'a'), listen: { transport, address }, auth, synchronousStandbyNames: 'replica1' });
    let primary = await openPrimary('127.0.0.1:0');
    defer(() => primary.close());
    // Before any standby: 'local' does not wait for one. The rows reach the standby in its base backup.
    await primary.execute(
      [{ sql: 'CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)' }, { sql: 'INSERT INTO accounts VALUES (?, ?)', params: ['alice', 100] }],
      { synchronousCommit: 'local' },
    );
    const address = primary.address;
    assert.ok(address !== null, 'the primary listens');
    const connection = { transport, address, user: 'repl', password, applicationName: 'replica1' };
    let standby = await SqliteStandby.open({ dir: join(dir, 'b'), primary: connection });
    defer(() => standby.close());
    await standby.standby.waitForConsistent({ timeoutMs: DEADLINE_MS });
    assert.deepEqual(standby.query('SELECT * FROM accounts'), [{ name: 'alice', balance: 100 }], 'the base backup carried the row');
    assert.equal(standby.db.batchesApplied, 0, 'nothing was replayed on top of the base backup');
    assert.ok((standby.db.appliedLsn() ?? 0) > 0, 'the restored database records the LSN it is at');

    // Fifty transactions at once, each at 'on', then one at remote_apply.
    const inserted = await Promise.all(
      Array.from({ length: 50 }, (_, i) => primary.execute({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: [`user${i}`, i] }, { synchronousCommit: 'on' })),
    );
    assert.deepEqual(inserted.map((r) => r.changes), Array(50).fill(1), 'each inserted one row');
    const { lsn } = await primary.execute({ sql: 'UPDATE accounts SET balance = balance + 1' }, { synchronousCommit: 'remote_apply' });
    const everything = 'SELECT * FROM accounts ORDER BY name';
    assert.equal(standby.query(everything).length, 51, 'remote_apply: the rows are on the standby when execute resolves');
    assert.deepEqual(standby.query(everything), primary.query(everything), 'the standby holds what the primary holds');
    assert.equal(standby.db.appliedLsn(), lsn, "the standby's applied LSN is the last transaction's");
    assert.equal(primary.db.appliedLsn(), lsn, "so is the primary's");

    // Refused by SQLite: rolled back on both nodes, which go on.
    const duplicate = await primary.execute({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: ['alice', 1] }).then(
      () => assert.fail('a duplicate primary key must be refused'),
      (err: unknown) => err,
    );
    assert.ok(duplicate instanceof TransactionRolledBackError, `rolled back: ${String(duplicate)}`);
    assert.equal(duplicate.code, 'SQLITE_CONSTRAINT_PRIMARYKEY', 'with SQLite’s code');
    await standby.waitForReplay(duplicate.lsn, { timeoutMs: DEADLINE_MS });
    assert.deepEqual(standby.query<Account>('SELECT * FROM accounts WHERE name = ?', ['alice']), [{ name: 'alice', balance: 101 }], 'unchanged on the standby');
    assert.equal(standby.db.appliedLsn(), duplicate.lsn, 'the refused batch counts as applied there too');
    // Bad input is refused before anything is committed.
    const before = primary.primary.currentLsn;
    await assert.rejects(primary.execute({ sql: 'SELECT * FROM accounts' }), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'), 'a read is no change');
    await assert.rejects(primary.execute({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: ['x', Number.NaN] }), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'), 'NaN is no parameter');
    assert.equal(primary.primary.currentLsn, before, 'nothing was written');
    assert.throws(() => standby.query('DELETE FROM accounts'), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'), 'query() only reads');

    // A restart: each database knows where it is, so walship replays nothing.
    const appliedBefore = { primary: primary.db.appliedLsn(), standby: standby.db.appliedLsn() };
    await standby.close();
    await primary.close();
    primary = await openPrimary(address);
    standby = await SqliteStandby.open({ dir: join(dir, 'b'), primary: connection });
    await standby.standby.waitForConsistent({ timeoutMs: DEADLINE_MS });
    assert.deepEqual({ primary: primary.db.batchesApplied, standby: standby.db.batchesApplied }, { primary: 0, standby: 0 }, 'no batch was applied again');
    assert.deepEqual({ primary: primary.db.appliedLsn(), standby: standby.db.appliedLsn() }, appliedBefore, 'the applied LSNs survived');
    const { lsn: after } = await primary.execute({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: ['carol', 5] });
    await standby.waitForReplay(after, { timeoutMs: DEADLINE_MS });
    assert.equal(standby.query(everything).length, 52, 'replication goes on');
    assert.equal(standby.db.batchesApplied, 1, 'the standby applied exactly the new transaction');
  });

  it("synchronousCommit 'off' (per call, and as the primary's default): execute resolves with the outcome, the row is there once", async (t) => {
    const defer = cleanups(t);
    const dir = await tempDir(defer);
    // 'off' resolves commit() before the batch is even durable, let alone applied here.
    const perCall = await SqlitePrimary.open({ dir: join(dir, 'a') });
    defer(() => perCall.close());
    const byDefault = await SqlitePrimary.open({ dir: join(dir, 'b'), synchronousCommit: 'off' });
    defer(() => byDefault.close());
    for (const [name, node, options] of [['per call', perCall, { synchronousCommit: 'off' }], ['by default', byDefault, {}]] as const) {
      await node.execute({ sql: 'CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)' }, options);
      const inserted = await Promise.all(['alice', 'bob', 'carol'].map((who, i) => node.execute({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: [who, i] }, options)));
      assert.deepEqual(inserted.map((r) => r.changes), [1, 1, 1], `${name}: each insert reports its row`);
      assert.deepEqual(inserted.map((r) => r.lastInsertRowid), [1, 2, 3], `${name}: and its rowid`);
      const duplicate = await node.execute({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: ['alice', 9] }, options).then(
        () => assert.fail(`${name}: a duplicate primary key must be refused`),
        (err: unknown) => err,
      );
      assert.ok(duplicate instanceof TransactionRolledBackError, `${name}: rolled back: ${String(duplicate)}`);
      assert.equal(duplicate.code, 'SQLITE_CONSTRAINT_PRIMARYKEY', `${name}: with SQLite's code`);
      assert.deepEqual(node.query('SELECT name, balance FROM accounts ORDER BY name'), [
        { name: 'alice', balance: 0 },
        { name: 'bob', balance: 1 },
        { name: 'carol', balance: 2 },
      ], `${name}: each row once`);
      assert.equal(node.primary.failure, null, `${name}: the primary runs on`);
    }
  });

  it('a statement that rolls back the whole SQLite transaction (OR ROLLBACK in any spelling, RAISE(ROLLBACK)) is refused on every node alike; the nodes go on, restarts apply cleanly', async (t) => {
    const defer = cleanups(t);
    const dir = await tempDir(defer);
    const transport = new TcpTransport();
    const openPrimary = (address: string) => SqlitePrimary.open({ dir: join(dir, 'a'), listen: { transport, address }, auth, synchronousStandbyNames: 'replica1' });
    let primary = await openPrimary('127.0.0.1:0');
    defer(() => primary.close());
    await primary.execute(
      [
        { sql: 'CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)' },
        { sql: 'INSERT INTO accounts VALUES (?, ?)', params: ['alice', 100] },
        { sql: 'CREATE TABLE guarded (x INTEGER)' },
        { sql: "CREATE TRIGGER guard BEFORE INSERT ON guarded BEGIN SELECT RAISE(ROLLBACK, 'guarded takes no rows'); END" },
      ],
      { synchronousCommit: 'local' },
    );
    const address = primary.address;
    assert.ok(address !== null, 'the primary listens');
    const connection = { transport, address, user: 'repl', password, applicationName: 'replica1' };
    const openStandby = () => SqliteStandby.open({ dir: join(dir, 'b'), primary: connection });
    let standby = await openStandby();
    defer(() => standby.close());
    await standby.standby.waitForConsistent({ timeoutMs: DEADLINE_MS });

    const refused = async (statement: SqlStatement, code: string, level: 'on' | 'remote_apply' | 'local'): Promise<TransactionRolledBackError> => {
      const err = await primary.execute(statement, { synchronousCommit: level }).then(
        () => assert.fail(`${statement.sql} must be refused`),
        (error: unknown) => error,
      );
      assert.ok(err instanceof TransactionRolledBackError, `${statement.sql}: rolled back, not ${String(err)}`);
      assert.equal(err.code, code, `${statement.sql}: with SQLite's code`);
      return err;
    };
    // A comment between OR and ROLLBACK: SQLite's ON CONFLICT ROLLBACK ends the whole transaction.
    await refused({ sql: 'INSERT OR/**/ROLLBACK INTO accounts VALUES (?, ?)', params: ['alice', 1] }, 'SQLITE_CONSTRAINT_PRIMARYKEY', 'on');
    // A trigger's RAISE(ROLLBACK) does the same.
    await refused({ sql: 'INSERT INTO guarded VALUES (?)', params: [1] }, 'SQLITE_CONSTRAINT_TRIGGER', 'remote_apply');
    // Such an entry between others in one batch: the others apply, on both nodes.
    const insert = (name: string): SqlStatement => ({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: [name, 1] });
    const batch = [insert('bob'), { sql: 'INSERT INTO guarded VALUES (2)' }, insert('carol'), { sql: "INSERT OR -- a line comment\nROLLBACK INTO accounts VALUES ('bob', 2)" }, insert('dave')];
    await primary.primary.commit(
      batch.map((statement, i) => encodeTransaction({ id: `batch-${i}`, statements: [statement] })),
      { synchronousCommit: 'remote_apply' },
    );

    const everything = 'SELECT (SELECT json_group_array(name) FROM (SELECT name FROM accounts ORDER BY name)) AS accounts, (SELECT count(*) FROM guarded) AS guarded';
    const expected = [{ accounts: '["alice","bob","carol","dave"]', guarded: 0 }];
    const check = (when: string): void => {
      assert.equal(primary.primary.failure, null, `${when}: the primary runs on`);
      assert.equal(standby.standby.failure, null, `${when}: the standby runs on`);
      assert.deepEqual(primary.query(everything), expected, `${when}: the primary's rows`);
      assert.deepEqual(standby.query(everything), expected, `${when}: the standby holds what the primary holds`);
      assert.equal(standby.db.appliedLsn(), primary.db.appliedLsn(), `${when}: both applied the same WAL`);
    };
    check('after the refusals');

    // The standby away: it applies such entries when it is back, from the stream.
    await standby.close();
    const later = await refused({ sql: 'INSERT INTO guarded VALUES (3)' }, 'SQLITE_CONSTRAINT_TRIGGER', 'local');
    standby = await openStandby();
    await standby.waitForReplay(later.lsn, { timeoutMs: DEADLINE_MS });
    check('after the standby applied a refusal on its return');

    // Both restarted: the databases are where the WAL says, nothing fails on the way back.
    await standby.close();
    await primary.close();
    primary = await openPrimary(address);
    standby = await openStandby();
    await standby.standby.waitForConsistent({ timeoutMs: DEADLINE_MS });
    check('after a restart of both');
    const { lsn } = await primary.execute(insert('erin'), { synchronousCommit: 'remote_apply' });
    assert.equal(standby.db.appliedLsn(), lsn, 'replication goes on');
    assert.deepEqual(standby.query('SELECT count(*) AS n FROM accounts'), [{ n: 5 }], 'with the new row');
  });

  for (const victim of ['primary', 'standby'] as const) {
    it(`a SIGKILL of the ${victim} mid-load loses no acknowledged 'on' commit and applies none twice`, async (t) => {
      const defer = cleanups(t);
      const dir = await tempDir(defer);
      const [a, b] = [join(dir, 'a'), join(dir, 'b')];
      const primaries = [startNode(defer, 'primary', a, '127.0.0.1:0', 'run1')];
      const address = (await primaries[0]!.waitForLine(/^ready (.+)$/))[1]!;
      const standbys = [startNode(defer, 'standby', b, address)];
      await standbys[0]!.waitForLine(/^consistent$/);
      await primaries[0]!.waitForAcks(200);

      const killed = victim === 'primary' ? primaries[0]! : standbys[0]!;
      await killed.kill('SIGKILL');
      if (victim === 'primary') {
        primaries.push(startNode(defer, 'primary', a, address, 'run2'));
        await primaries[1]!.waitForLine(/^ready /);
        await primaries[1]!.waitForAcks(100); // the standby is back: 'on' commits need it
      } else {
        const acked = primaries[0]!.acks.length;
        standbys.push(startNode(defer, 'standby', b, address));
        await standbys[1]!.waitForLine(/^consistent$/);
        await primaries[0]!.waitForAcks(acked + 100);
      }
      // A clean stop: the primary's last row is at remote_apply, so the standby applied everything.
      assert.equal(await primaries.at(-1)!.kill('SIGTERM'), 0, 'the primary closed cleanly');
      assert.equal(await standbys.at(-1)!.kill('SIGTERM'), 0, 'the standby closed cleanly');

      const acked = primaries.flatMap((p) => p.acks);
      const rows = { primary: keyCounts(join(a, 'db.sqlite')), standby: keyCounts(join(b, 'db.sqlite')) };
      for (const [node, counts] of Object.entries(rows)) {
        const twice = [...counts].filter(([, n]) => n > 1);
        assert.deepEqual(twice, [], `${node}: no transaction applied twice`);
        const lost = acked.filter((key) => !counts.has(key));
        assert.deepEqual(lost, [], `${node}: every acknowledged commit is there (${acked.length} acknowledged)`);
      }
      assert.deepEqual([...rows.standby.keys()].sort(), [...rows.primary.keys()].sort(), 'the standby holds what the primary holds');
    });
  }
});

/** How many times each key is in a node's `events` table. */
function keyCounts(path: string): Map<string, number> {
  const db = new Database(path, { readonly: true });
  try {
    const rows = db.prepare<[], { key: string; n: number }>('SELECT key, count(*) AS n FROM events GROUP BY key').all();
    return new Map(rows.map((r) => [r.key, r.n]));
  } finally {
    db.close();
  }
}

interface NodeProcess {
  /** The keys whose commits were acknowledged, in order. */
  readonly acks: string[];
  waitForLine(pattern: RegExp): Promise<RegExpMatchArray>;
  waitForAcks(count: number): Promise<void>;
  /** Sends `signal` and resolves with the exit code (null when killed by the signal). */
  kill(signal: NodeJS.Signals): Promise<number | null>;
}

/** Starts test/node-process.ts; it is killed after the test if still running. */
function startNode(defer: (cleanup: () => unknown) => void, ...args: string[]): NodeProcess {
  const child: ChildProcess = spawn(process.execPath, [...NODE_ARGS, here('node-process.ts'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  defer(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return exited;
  });
  const lines: string[] = [];
  const acks: string[] = [];
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const changed = new Set<() => void>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (line.startsWith('ack ')) acks.push(line.slice(4));
    else lines.push(line);
    for (const check of changed) check();
  });
  void exited.then(() => {
    for (const check of changed) check();
  });
  /** Resolves with `found()`'s first non-null answer; fails on the deadline or when the process ends first. */
  const until = <T>(what: string, found: () => T | null): Promise<T> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const value = found();
        const ended = child.exitCode !== null || child.signalCode !== null;
        if (value === null && !ended) return;
        changed.delete(check);
        clearTimeout(timer);
        if (value !== null) resolve(value);
        else reject(new Error(`${args[0]} ended (${child.exitCode ?? child.signalCode}) before ${what}; stderr:\n${stderr}`));
      };
      const timer = setTimeout(() => {
        changed.delete(check);
        reject(new Error(`${args[0]}: no ${what} within ${DEADLINE_MS} ms; stderr:\n${stderr}`));
      }, DEADLINE_MS);
      changed.add(check);
      check();
    });
  return {
    acks,
    waitForLine: (pattern) => until(`a line matching ${pattern}`, () => lines.map((l) => pattern.exec(l)).find((m) => m !== null) ?? null),
    waitForAcks: async (count) => {
      await until(`${count} acknowledged commits`, () => (acks.length >= count ? true : null));
    },
    kill: async (signal) => {
      child.kill(signal);
      return exited;
    },
  };
}
