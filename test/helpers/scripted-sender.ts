import { compileAuth } from '../../src/protocol/auth-rules.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import type { ClientMessage } from '../../src/protocol/messages.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { ReplicationServer } from '../../src/protocol/replication-server.js';
import { WalReceiver, type WalReceiverOptions } from '../../src/replication/wal-receiver.js';
import type { WalLog } from '../../src/wal/wal-log.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';

/** What a {@link scriptedSender} does once streaming has started. */
export type Script = (conn: MessageStream<'server'>, startLsn: number, heard: ClientMessage[]) => Promise<void>;

/**
 * A hand-driven sender: answers START_REPLICATION with `replicationStarted`, then runs
 * `script`, while every message the receiver sends is collected in `heard`.
 */
export async function scriptedSender(script: Script) {
  const net = new MemoryNetwork();
  const server = new ReplicationServer({
    transport: net.transport('primary'),
    address: 'primary:1',
    auth: await compileAuth({ rules: [{ user: 'all', address: 'all', method: 'trust' }] }),
  });
  const heard: ClientMessage[] = [];
  let finished!: () => void;
  /** Resolves when the receiver's connection has ended, as seen by the sender. */
  const ended = new Promise<void>((resolve) => (finished = resolve));
  server.on('session', (session) => {
    const conn = session.conn;
    void (async () => {
      const request = await conn.next().catch(() => null);
      if (request?.kind !== 'startReplication') return conn.destroy();
      conn.send({ kind: 'replicationStarted', timeline: request.timeline, startLsn: request.startLsn, historyChecked: false });
      const listening = (async () => {
        for (;;) {
          const message = await conn.next().catch(() => null);
          if (message === null) return;
          heard.push(message);
        }
      })();
      await script(conn, request.startLsn, heard);
      await listening;
    })().finally(finished);
  });
  const address = await server.listen();
  return {
    heard,
    ended,
    /** A receiver into `replica` over a new connection to this sender. */
    async receiver(replica: WalLog, options: WalReceiverOptions) {
      return new WalReceiver(await this.connection(), replica, options);
    },
    /** A new authenticated connection to this sender, as a standby named s1. */
    connection: () => connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' }),
    close: () => server.close(),
  };
}

/** Resolves once `condition` holds, polling on the event loop (no deadline of its own). */
export async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 2));
}

/** The status updates among what a standby sent. */
export function statusUpdates(heard: readonly ClientMessage[]) {
  return heard.filter((m): m is Extract<ClientMessage, { kind: 'standbyStatusUpdate' }> => m.kind === 'standbyStatusUpdate');
}
