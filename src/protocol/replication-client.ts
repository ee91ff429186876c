import { WalshipError, isWalshipError } from '../errors.js';
import type { Transport } from '../transport/transport.js';
import { clientHandshake } from './handshake.js';
import { MessageStream } from './message-stream.js';
import type { StartupOption } from './messages.js';

/** Options of {@link connectReplication}. */
export interface ConnectReplicationOptions {
  readonly transport: Transport;
  readonly address: string;
  readonly user: string;
  /** The password, when the server asks for SCRAM-SHA-256. Never logged or reported. */
  readonly password?: string;
  /** How this standby is known to the server (`pg_stat_replication.application_name`). */
  readonly applicationName: string;
  readonly options?: readonly StartupOption[];
  /**
   * `'scram-sha-256'` refuses a server that does not prove it knows the verifier.
   * @defaultValue `'scram-sha-256'` when a password is given, else `'none'`
   */
  readonly requireAuth?: 'scram-sha-256' | 'none';
  /** Limit for the handshake after the transport connected. @defaultValue 10 000 */
  readonly handshakeTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * Connects to a replication server and authenticates. Resolves with the message stream,
 * ready for commands. Transport failures are `CONNECTION_FAILED` or `TIMEOUT` (transient);
 * a refused login is `AUTH_FAILED`; a server on another protocol version, `PROTOCOL_VERSION`.
 */
export async function connectReplication(options: ConnectReplicationOptions): Promise<MessageStream<'client'>> {
  const { transport, address, signal } = options;
  let stream;
  try {
    stream = await transport.connect(address, signal === undefined ? {} : { signal });
  } catch (err) {
    if (isWalshipError(err)) throw err;
    throw new WalshipError('CONNECTION_FAILED', `could not connect to ${address} over ${transport.name}: ${(err as Error).message}`, { cause: err, transient: true });
  }
  const conn = new MessageStream(stream, 'client');
  await clientHandshake(conn, {
    user: options.user,
    applicationName: options.applicationName,
    timeoutMs: options.handshakeTimeoutMs ?? 10_000,
    ...(options.password === undefined ? {} : { password: options.password }),
    ...(options.options === undefined ? {} : { options: options.options }),
    ...(options.requireAuth === undefined ? {} : { requireAuth: options.requireAuth }),
    ...(signal === undefined ? {} : { signal }),
  });
  return conn;
}
