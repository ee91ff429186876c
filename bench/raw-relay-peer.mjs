/**
 * The middle process of the raw two-hop limit (bench/replication-cases.ts `rawCatchUp` with
 * `relay`): `node bench/raw-relay-peer.mjs <upstream port>` listens on a loopback port of its
 * own and sends it over IPC (`{ port }`); once its downstream has connected, it connects to
 * the upstream port and writes every chunk it reads there to the downstream socket, pausing
 * the upstream while the downstream's buffer is full (socket → process → socket, no
 * walship). When the upstream ends it ends the downstream, reports `{ cpu }` over IPC and
 * exits. It also exits when its IPC channel closes (the benchmark ended or was killed).
 */
import net from 'node:net';

process.on('disconnect', () => process.exit(0));
const upstreamPort = Number(process.argv[2]);
const server = net.createServer();
server.once('connection', (downstream) => {
  server.close();
  const upstream = net.connect(upstreamPort, '127.0.0.1');
  upstream.on('data', (data) => {
    if (!downstream.write(data)) {
      upstream.pause();
      downstream.once('drain', () => upstream.resume());
    }
  });
  upstream.on('end', () => downstream.end(() => process.send({ cpu: process.cpuUsage() }, () => process.exit(0))));
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
