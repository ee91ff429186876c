import { WalshipError, isWalshipError } from '../errors.js';
import type { Transport } from '../transport/transport.js';
import { clientHandshake } from './handshake.js';
import { MessageStream } from './message-stream.js';
import type { Lsn } from '../lsn.js';
import type { ServerMessage, StartupOption } from './messages.js';

/** Options of {@link connectReplication}. */
export interface ConnectReplicationOptions {
  /** The transport to connect over. */
  readonly transport: Transport;
  /** The server's address, in the transport's format (`'host:port'` for TCP). */
  readonly address: string;
  /** The user to authenticate as (1–255 bytes), matched by the server's rules. */
  readonly user: string;
  /** The password, when the server asks for SCRAM-SHA-256. Never logged or reported. */
  readonly password?: string;
  /** How this standby is known to the server (`pg_stat_replication.application_name`). */
  readonly applicationName: string;
  /** Extension settings sent in the startup message (up to 32; keys ≤ 63 bytes, values ≤ 1 KiB). */
  readonly options?: readonly StartupOption[];
  /**
   * `'scram-sha-256'` refuses a server that does not prove it knows the verifier.
   * @defaultValue `'scram-sha-256'` when a password is given, else `'none'`
   */
  readonly requireAuth?: 'scram-sha-256' | 'none';
  /** Limit for the handshake after the transport connected. @defaultValue 10 000 */
  readonly handshakeTimeoutMs?: number;
  /** Cancels the connect and the handshake. */
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

/** What CREATE_REPLICATION_SLOT answered. */
export interface CreatedSlot {
  /** The slot's name, as asked. */
  readonly slotName: string;
  /** Where the slot holds WAL from; `null` when it reserves none until a standby streams with it. */
  readonly restartLsn: Lsn | null;
}

/**
 * CREATE_REPLICATION_SLOT on an authenticated connection: a physical slot on the server,
 * reserving WAL at once when `reserveWal` (from `reserveFrom` if given: `WAL_REMOVED` when
 * the server no longer has it). The server's refusal (`INVALID_SLOT_NAME`,
 * `SLOT_EXISTS`, …) is thrown with its code and leaves the connection usable.
 */
export async function createReplicationSlot(
  conn: MessageStream<'client'>,
  slotName: string,
  options: { reserveWal?: boolean; reserveFrom?: Lsn; timeoutMs?: number } = {},
): Promise<CreatedSlot> {
  conn.send({ kind: 'createReplicationSlot', slotName, reserveWal: options.reserveWal === true, reserveFrom: options.reserveFrom ?? null });
  const answer = await commandAnswer(conn, 'replicationSlotCreated', options.timeoutMs);
  return { slotName: answer.slotName, restartLsn: answer.restartLsn };
}

/**
 * DROP_REPLICATION_SLOT on an authenticated connection. With `wait`, the server waits until
 * no standby uses the slot; without, a slot in use is `SLOT_ACTIVE`. A refusal leaves the
 * connection usable.
 */
export async function dropReplicationSlot(conn: MessageStream<'client'>, slotName: string, options: { wait?: boolean; timeoutMs?: number } = {}): Promise<void> {
  conn.send({ kind: 'dropReplicationSlot', slotName, wait: options.wait === true });
  await commandAnswer(conn, null, options.timeoutMs);
}

/**
 * TIMELINE_HISTORY on an authenticated connection: the server's history file of `timeline`
 * (its name and bytes). A timeline the server has no history of is `INVALID_ARGUMENT`, and
 * the connection stays usable.
 */
export async function fetchTimelineHistory(conn: MessageStream<'client'>, timeline: number, options: { timeoutMs?: number } = {}): Promise<{ fileName: string; content: Uint8Array }> {
  conn.send({ kind: 'timelineHistory', timeline });
  const answer = await commandAnswer(conn, 'timelineHistoryResult', options.timeoutMs);
  return { fileName: answer.fileName, content: answer.content };
}

/** How long to wait for the server's next message, and who it is in error messages. */
export interface ReplyOptions {
  /** Limit for each message. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** The server as error messages name it. @defaultValue 'the server' */
  readonly peer?: string;
}

/**
 * The server's next message, `error` messages included; the end of the connection is a
 * transient `CONNECTION_FAILED`. Rejects as {@link MessageStream.next} does on a timeout,
 * an abort or a failed connection.
 */
async function receiveMessage(conn: MessageStream<'client'>, options: ReplyOptions): Promise<ServerMessage> {
  const { timeoutMs, signal } = options;
  const message = await conn.next(signal === undefined ? { timeoutMs } : { signal, timeoutMs });
  if (message === null) throw new WalshipError('CONNECTION_FAILED', `${options.peer ?? 'the server'} closed the connection`, { transient: true });
  return message;
}

/** The server's next message; an `error` it sent is thrown with the server's code. */
export async function nextMessage(conn: MessageStream<'client'>, options: ReplyOptions): Promise<ServerMessage> {
  const message = await receiveMessage(conn, options);
  if (message.kind === 'error') throw new WalshipError(message.code, `${options.peer ?? 'the server'} reported: ${message.message}`);
  return message;
}

/** The server's next message, which must be a `kind` (`PROTOCOL_ERROR`); an `error` is thrown as {@link nextMessage} does. */
export async function expectMessage<K extends ServerMessage['kind']>(conn: MessageStream<'client'>, kind: K, options: ReplyOptions): Promise<Extract<ServerMessage, { kind: K }>> {
  const message = await nextMessage(conn, options);
  if (message.kind !== kind) throw new WalshipError('PROTOCOL_ERROR', `unexpected ${message.kind} message; expected ${kind}`);
  return message as Extract<ServerMessage, { kind: K }>;
}

/**
 * Reads a command's answer (`kind`, or nothing for `null`) and the `readyForCommand` after
 * it. An error the server sent followed by `readyForCommand` is the command's failure.
 */
async function commandAnswer<K extends ServerMessage['kind']>(conn: MessageStream<'client'>, kind: K | null, timeoutMs = 60_000): Promise<Extract<ServerMessage, { kind: K }>> {
  let message = await receiveMessage(conn, { timeoutMs });
  if (message.kind === 'error') {
    const error = new WalshipError(message.code, `the server reported: ${message.message}`);
    // A refused command is followed by readyForCommand; a fatal error by the end of the connection.
    const after = await conn.next({ timeoutMs }).catch(() => null);
    if (after !== null && after.kind !== 'readyForCommand') throw new WalshipError('PROTOCOL_ERROR', `unexpected ${after.kind} message after an error; expected readyForCommand`);
    throw error;
  }
  let answer = message;
  if (kind !== null) {
    if (message.kind !== kind) throw new WalshipError('PROTOCOL_ERROR', `unexpected ${message.kind} message; expected ${kind}`);
    message = await receiveMessage(conn, { timeoutMs });
  }
  if (message.kind !== 'readyForCommand') throw new WalshipError('PROTOCOL_ERROR', `unexpected ${message.kind} message; expected readyForCommand`);
  if (kind === null) answer = message;
  return answer as Extract<ServerMessage, { kind: K }>;
}
