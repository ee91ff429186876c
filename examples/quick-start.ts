import { Primary, Standby, TcpTransport, formatLsn, type CommittedBatch } from 'walship';

// The application: a state machine fed committed batches in LSN order, exactly once, on every node.
const app = (node: string) => ({
  apply: ({ lsn, entries }: CommittedBatch) => console.log(node, formatLsn(lsn), entries.map((e) => Buffer.from(e.data).toString()).join(' ')),
  snapshot: async () => Buffer.alloc(0), // its state (none here), for checkpoints and a new standby's base backup
  restore: async () => {},
});
const auth = { users: { repl: { password: 's3cret-pw' } }, rules: [{ user: 'repl', address: '127.0.0.1/32', method: 'scram-sha-256' as const }] };
const primary = await Primary.open({ dir: './data/a', segmentSize: 64 * 1024, // small WAL files for a demo (default 16 MiB)
  application: app('primary'), listen: { transport: new TcpTransport(), address: '127.0.0.1:0' }, auth });
const standby = await Standby.open({ dir: './data/b', application: app('standby'),
  primary: { transport: new TcpTransport(), address: primary.address!, user: 'repl', password: 's3cret-pw', applicationName: 's1' } });
await standby.waitForConsistent(); // bootstrapped (base backup) and ready to serve reads
const { lsn } = await primary.commit([Buffer.from('hello'), Buffer.from('world')]); // durable, applied on the primary
await standby.waitForReplay(lsn); // read-your-writes: the standby has applied it too
const [row] = primary.replicationStatus(); // pg_stat_replication: one row per standby
console.log(row?.applicationName, row?.state, formatLsn(standby.replayLsn ?? 0));
await Promise.all([primary.checkpoint(), standby.checkpoint()]); // a rerun starts here instead of replaying every batch
await Promise.all([standby.close(), primary.close()]);
