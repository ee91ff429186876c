// A SQLite database replicated by walship: a primary and a synchronous standby over TCP, each
// with its own database file, in a new temporary directory (or the one given as argument).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { TcpTransport, formatLsn } from 'walship';
import { SqlitePrimary, SqliteStandby, TransactionRolledBackError } from './sqlite-node.js';

const keep = process.argv[2];
const dir = keep === undefined ? await mkdtemp(join(tmpdir(), 'walship-sqlite-')) : resolve(keep);
const auth = { users: { repl: { password: 's3cret-pw' } }, rules: [{ user: 'repl', address: '127.0.0.1/32', method: 'scram-sha-256' as const }] };
const transport = new TcpTransport();

// Commits at 'on' (the default) wait until the standby named replica1 has the WAL on its disk.
let primary = await SqlitePrimary.open({ dir: join(dir, 'primary'), listen: { transport, address: '127.0.0.1:0' }, auth, synchronousStandbyNames: 'replica1' });
const connection = { transport, address: primary.address ?? '', user: 'repl', password: 's3cret-pw', applicationName: 'replica1' };
let standby = await SqliteStandby.open({ dir: join(dir, 'standby'), primary: connection });
await standby.standby.waitForConsistent(); // bootstrapped from a base backup of the primary's database

// remote_apply: resolves once the standby has applied it, so it is readable there at once.
await primary.execute(
  [
    { sql: 'CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))' },
    { sql: 'INSERT INTO accounts VALUES (?, ?), (?, ?)', params: ['alice', 100, 'bob', 0] },
  ],
  { synchronousCommit: 'remote_apply' },
);
console.log('standby after remote_apply:', JSON.stringify(standby.query('SELECT * FROM accounts ORDER BY name')));

// on: durable on both disks when it resolves; read-your-writes on the standby with waitForReplay.
const transfer = [
  { sql: 'UPDATE accounts SET balance = balance - ? WHERE name = ?', params: [30, 'alice'] },
  { sql: 'UPDATE accounts SET balance = balance + ? WHERE name = ?', params: [30, 'bob'] },
];
const { lsn } = await primary.execute(transfer, { synchronousCommit: 'on' });
await standby.waitForReplay(lsn);
console.log(`transfer committed at ${formatLsn(lsn)}; standby:`, JSON.stringify(standby.query('SELECT * FROM accounts ORDER BY name')));

// A transaction SQLite refuses is rolled back on every node alike, and the nodes go on.
try {
  await primary.execute([transfer[1]!, { sql: 'UPDATE accounts SET balance = balance - ? WHERE name = ?', params: [500, 'alice'] }]);
} catch (err) {
  if (!(err instanceof TransactionRolledBackError)) throw err;
  await standby.waitForReplay(err.lsn);
  console.log(`rolled back everywhere (${err.code}); standby:`, JSON.stringify(standby.query('SELECT * FROM accounts ORDER BY name')));
}

// A restart replays nothing: each database knows the LSN it has applied (appliedLsn()).
await standby.close();
await primary.close();
primary = await SqlitePrimary.open({ dir: join(dir, 'primary'), listen: { transport, address: connection.address }, auth, synchronousStandbyNames: 'replica1' });
standby = await SqliteStandby.open({ dir: join(dir, 'standby'), primary: connection });
await standby.standby.waitForConsistent();
console.log(`after a restart: batches replayed on the primary ${primary.db.batchesApplied}, on the standby ${standby.db.batchesApplied}`);
const { lsn: last } = await primary.execute({ sql: 'INSERT INTO accounts VALUES (?, ?)', params: ['carol', 5] });
await standby.waitForReplay(last);
console.log('standby:', JSON.stringify(standby.query('SELECT * FROM accounts ORDER BY name')));

await standby.close();
await primary.close();
if (keep === undefined) await rm(dir, { recursive: true, force: true });
else console.log(`the data directories are in ${dir}`);
