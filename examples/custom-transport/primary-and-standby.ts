import { Primary, Standby, type CommittedBatch } from 'walship';
import { UnixSocketTransport } from './unix-socket-transport.js';

const app = (node: string) => ({
  apply: ({ entries }: CommittedBatch) => console.log(node, 'applied', entries.map((e) => Buffer.from(e.data).toString()).join(' ')),
  snapshot: async () => Buffer.alloc(0), // the standby bootstraps from a base backup of this
  restore: async () => {},
});
const socket = './primary.sock'; // a path on this host: at most about 100 bytes

const primary = await Primary.open({
  dir: './data/a', application: app('primary'),
  listen: { transport: new UnixSocketTransport(), address: socket },
  // A Unix socket peer has no IP address: only rules for address 'all' match it.
  auth: { users: { repl: { password: 's3cret-pw' } },
          rules: [{ user: 'repl', address: 'all', method: 'scram-sha-256' }] },
});
const standby = await Standby.open({
  dir: './data/b', application: app('standby'),
  primary: { transport: new UnixSocketTransport(), address: socket,
             user: 'repl', password: 's3cret-pw', applicationName: 'b' }, // applicationName is required
});
await standby.waitForConsistent();
const { lsn } = await primary.commit(Buffer.from('over a Unix socket'));
await standby.waitForReplay(lsn);
console.log('replicated:', primary.replicationStatus().map((row) => `${row.applicationName} ${row.state} ${row.clientAddress ?? 'no IP address'}`).join());
await Promise.all([standby.close(), primary.close()]);
