import type { WalLog } from '../../src/index.js';
import { compileAuth } from '../../src/protocol/auth-rules.js';
import { ReplicationServer } from '../../src/protocol/replication-server.js';
import { WalSender, type WalSenderOptions } from '../../src/replication/wal-sender.js';
import type { MemoryNetwork } from '../../src/transport/memory-transport.js';

/**
 * A replication server on `net` (address `primary:1`, every user trusted) that streams `log`
 * to each standby from the position its START_REPLICATION asks for; `onSender` sees each
 * sender before it runs. Resolves with the server and the address it listens on.
 */
export async function walServer(
  net: MemoryNetwork,
  log: WalLog,
  options: WalSenderOptions = {},
  onSender: (sender: WalSender) => void = () => undefined,
): Promise<{ server: ReplicationServer; address: string }> {
  const server = new ReplicationServer({
    transport: net.transport('primary'),
    address: 'primary:1',
    auth: await compileAuth({ rules: [{ user: 'all', address: 'all', method: 'trust' }] }),
  });
  server.on('session', (session) => {
    void (async () => {
      const request = await session.conn.next().catch(() => null);
      if (request?.kind !== 'startReplication') return;
      const sender = new WalSender(session.conn, log, request.startLsn, options);
      onSender(sender);
      await sender.run().catch(() => undefined);
    })();
  });
  return { server, address: await server.listen() };
}

/**
 * The end of a test with a receiver streaming from {@link walServer}: stops `receiver`, waits
 * for its `run()` (`running`) to end whatever its outcome, then closes each of `closables`
 * in the order given (the server, the logs).
 */
export async function stopReceiver(receiver: { stop(): Promise<void> }, running: Promise<unknown>, ...closables: { close(): Promise<unknown> }[]): Promise<void> {
  await receiver.stop();
  await running.catch(() => undefined);
  for (const closable of closables) await closable.close();
}
