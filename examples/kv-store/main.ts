// Runs one node of the key-value service:
//   KV_REPL_PASSWORD=… tsx main.ts primary --dir ./data/p --http-port 8080 --listen 127.0.0.1:5433 --sync-standbys s1
//   KV_REPL_PASSWORD=… tsx main.ts standby --dir ./data/s1 --http-port 8081 --primary 127.0.0.1:5433 --name s1
// Prints one JSON line once it serves ({ role, url, replicationAddress }); SIGINT or SIGTERM
// closes it cleanly.
import { parseArgs } from 'node:util';
import { startKvNode } from './kv-store.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string' },
    'http-host': { type: 'string', default: '127.0.0.1' },
    'http-port': { type: 'string', default: '0' },
    listen: { type: 'string', default: '127.0.0.1:0' },
    allow: { type: 'string', default: '127.0.0.1/32' },
    'sync-standbys': { type: 'string', default: '' },
    primary: { type: 'string' },
    name: { type: 'string', default: 's1' },
  },
});
const role = positionals[0];
const password = process.env['KV_REPL_PASSWORD'];
if ((role !== 'primary' && role !== 'standby') || values.dir === undefined || password === undefined || password === '') {
  console.error('usage: KV_REPL_PASSWORD=<password> tsx main.ts primary|standby --dir <dir> [--http-port n] [--listen host:port] [--sync-standbys names] [--primary host:port] [--name s1]');
  process.exit(2);
}

const node = await startKvNode({
  role,
  dir: values.dir,
  password,
  httpHost: values['http-host'],
  httpPort: Number(values['http-port']),
  listen: values.listen,
  allow: values.allow,
  synchronousStandbyNames: values['sync-standbys'],
  ...(values.primary === undefined ? {} : { primary: values.primary }),
  name: values.name,
});
console.log(JSON.stringify({ role: node.role, url: node.url, replicationAddress: node.replicationAddress }));

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  node.close().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error('closing:', err);
      process.exit(1);
    },
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
