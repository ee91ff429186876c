// One node of the SIGKILL test in a process of its own:
//   node-process.ts primary <dir> <listen address> <run>   a primary under load: four writers commit
//                                                          rows at 'on', printing "ack <key>" once each resolves
//   node-process.ts standby <dir> <primary address>        the synchronous standby 'replica1'
// It prints "ready <address>" (a primary) or "consistent" (a standby). SIGTERM stops it cleanly:
// a primary stops its writers, commits one last row at remote_apply (so the standby has applied
// everything before it) and closes.
import { TcpTransport } from 'walship';
import { SqlitePrimary, SqliteStandby } from '../src/sqlite-node.js';

const [role, dir, address, run] = process.argv.slice(2);
if (dir === undefined || address === undefined) throw new Error('usage: node-process.ts primary|standby <dir> <address> [run]');
const transport = new TcpTransport();
const password = 's3cret-pw';
const WRITERS = 4;

if (role === 'primary') {
  const auth = { users: { repl: { password } }, rules: [{ user: 'repl', address: '127.0.0.1/32', method: 'scram-sha-256' as const }] };
  const primary = await SqlitePrimary.open({ dir, listen: { transport, address }, auth, synchronousStandbyNames: 'replica1' });
  await primary.execute({ sql: 'CREATE TABLE IF NOT EXISTS events (key TEXT NOT NULL)' }, { synchronousCommit: 'local' });
  console.log(`ready ${primary.address}`);
  let stopping = false;
  const writer = async (w: number): Promise<void> => {
    for (let i = 0; !stopping; i++) {
      const key = `${run}-${w}-${i}`;
      // No unique constraint: a batch applied twice shows as a key found twice.
      await primary.execute({ sql: 'INSERT INTO events (key) VALUES (?)', params: [key] }, { synchronousCommit: 'on' });
      console.log(`ack ${key}`);
    }
  };
  const writers = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
  process.once('SIGTERM', () => {
    stopping = true;
    void (async () => {
      await writers;
      await primary.execute({ sql: 'INSERT INTO events (key) VALUES (?)', params: [`${run}-last`] }, { synchronousCommit: 'remote_apply' });
      await primary.close();
      process.exit(0);
    })();
  });
} else if (role === 'standby') {
  const standby = await SqliteStandby.open({
    dir,
    primary: { transport, address, user: 'repl', password, applicationName: 'replica1' },
    retryMaxDelayMs: 200, // reconnect soon after the primary comes back
  });
  await standby.standby.waitForConsistent();
  console.log('consistent');
  process.once('SIGTERM', () => {
    void standby.close().then(() => process.exit(0));
  });
} else {
  throw new Error(`unknown role ${role}`);
}
