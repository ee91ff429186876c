/** Free loopback TCP ports, found at run time (other benchmarks and test runs share this machine). */
import net from 'node:net';

/**
 * `count` distinct ports on 127.0.0.1 that were free a moment ago: all are bound at once (so
 * none is handed out twice), then released for PostgreSQL to take. Another process could take
 * one in between; PostgreSQL then fails to start and says so in its log.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
    }
    return servers.map((server) => (server.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}
