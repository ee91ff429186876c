import { WalshipError, isWalshipError } from '../errors.js';
import type { PeerInfo } from '../transport/transport.js';
import type { CompiledAuth } from './auth-rules.js';
import type { MessageStream } from './message-stream.js';
import { PROTOCOL_VERSION, type StartupOption } from './messages.js';
import { SCRAM_MECHANISM, ScramClient } from './scram.js';
import { clearTimer, currentScheduler, type SchedulerTimer } from '../scheduler.js';

/** Who authenticated on a server-side connection. */
export interface AuthenticatedPeer {
  /** The user the peer authenticated as (from its startup message). */
  readonly user: string;
  /** The name the peer gave itself, matched by `synchronousStandbyNames`; may be `''`. */
  readonly applicationName: string;
  /** The extension settings of the peer's startup message. */
  readonly options: readonly StartupOption[];
  /** The method of the rule that let the peer in. */
  readonly method: 'scram-sha-256' | 'trust';
}

/** Why authentication failed; for the server's own event and log only, never sent to the client. */
export type AuthFailureReason = 'no matching rule' | 'rejected by rule' | 'unknown user' | 'wrong password';

/** Details of a failed authentication, as the server's `auth:failed` event reports them. */
export interface AuthFailure {
  /** The user the peer claimed to be. */
  readonly user: string;
  /** Where the connection came from. */
  readonly peer: PeerInfo;
  /** Why it failed. The client is only told `AUTH_FAILED`. */
  readonly reason: AuthFailureReason;
  /** Index of the rule that applied, or -1 when none matched. */
  readonly ruleIndex: number;
}

/** Options of {@link serverHandshake}. */
export interface ServerHandshakeOptions {
  readonly auth: CompiledAuth;
  /** The whole handshake must finish within this time. */
  readonly timeoutMs: number;
  /** Failures are answered after this delay, to slow down password guessing. */
  readonly failureDelayMs: number;
  /** Called (before the delayed answer) when authentication fails. */
  readonly onFailure: (failure: AuthFailure) => void;
  /** Called for each handshake message received from the client. */
  readonly onMessage?: () => void;
}

/** The one message every authentication failure gets, so a client learns nothing about why. */
function authFailedError(user: string): WalshipError {
  return new WalshipError('AUTH_FAILED', `authentication failed for user "${user}"`);
}

/**
 * The server's side of a connection's start: protocol version, then authentication by the
 * first matching rule (SCRAM-SHA-256, trust or reject). Resolves with the authenticated
 * peer after sending `authOk` and `readyForCommand`. On failure the client is sent one
 * coded error (after `failureDelayMs` for authentication failures), the connection is
 * closed, and the promise rejects.
 */
export async function serverHandshake(
  conn: MessageStream<'server'>,
  peer: PeerInfo,
  options: ServerHandshakeOptions,
): Promise<AuthenticatedPeer> {
  const deadline = currentScheduler().now() + options.timeoutMs;
  const next = async () => {
    const message = await conn.next({ timeoutMs: Math.max(1, deadline - currentScheduler().now()) });
    if (message === null) throw new WalshipError('CONNECTION_FAILED', 'the client closed the connection during the handshake', { transient: true });
    options.onMessage?.();
    return message;
  };
  try {
    const startup = await next();
    if (startup.kind !== 'startup') throw outOfOrder(startup.kind, 'startup');
    if (startup.protocolMajor !== PROTOCOL_VERSION.major) {
      throw new WalshipError(
        'PROTOCOL_VERSION',
        `the client speaks replication protocol ${startup.protocolMajor}.${startup.protocolMinor}; this server speaks ${PROTOCOL_VERSION.major}.${PROTOCOL_VERSION.minor}`,
      );
    }
    const { user, applicationName } = startup;
    const rejectWith = async (reason: AuthFailureReason, ruleIndex: number): Promise<never> => {
      options.onFailure({ user, peer, reason, ruleIndex });
      await delay(options.failureDelayMs, conn.closed);
      throw authFailedError(user);
    };

    const match = options.auth.match(user, peer.remoteAddress);
    if (match.method === 'reject') return await rejectWith(match.ruleIndex < 0 ? 'no matching rule' : 'rejected by rule', match.ruleIndex);
    if (match.method === 'scram-sha-256') {
      const verifier = options.auth.verifier(user);
      conn.send({ kind: 'authSasl', mechanisms: [SCRAM_MECHANISM] });
      const initial = await next();
      if (initial.kind !== 'saslInitialResponse') throw outOfOrder(initial.kind, 'saslInitialResponse');
      if (initial.mechanism !== SCRAM_MECHANISM) {
        throw new WalshipError('PROTOCOL_ERROR', `unsupported SASL mechanism "${initial.mechanism}"; the server offers ${SCRAM_MECHANISM}`);
      }
      // An unknown user gets a mock exchange that fails at the end, like a wrong password.
      const scram = options.auth.scramServer(user);
      conn.send({ kind: 'authSaslContinue', data: Buffer.from(scram.serverFirst(Buffer.from(initial.data))) });
      const response = await next();
      if (response.kind !== 'saslResponse') throw outOfOrder(response.kind, 'saslResponse');
      const final = scram.serverFinal(Buffer.from(response.data));
      if (!final.ok) return await rejectWith(verifier === null ? 'unknown user' : 'wrong password', match.ruleIndex);
      conn.send({ kind: 'authSaslFinal', data: Buffer.from(final.message) });
    }
    conn.send({ kind: 'authOk' });
    conn.send({ kind: 'readyForCommand' });
    return { user, applicationName, options: startup.options, method: match.method };
  } catch (err) {
    const error = isWalshipError(err) ? err : new WalshipError('PROTOCOL_ERROR', `handshake failed: ${(err as Error).message}`, { cause: err });
    conn.fail(error);
    throw error;
  }
}

/** Options of {@link clientHandshake}. */
export interface ClientHandshakeOptions {
  readonly user: string;
  /** Needed when the server asks for SCRAM-SHA-256. */
  readonly password?: string;
  readonly applicationName: string;
  readonly options?: readonly StartupOption[];
  /**
   * The authentication the client insists on. `'scram-sha-256'` refuses a server that lets
   * it in without proving that it knows the password's verifier (a `trust` rule, or an
   * impostor). @defaultValue `'scram-sha-256'` when a password is given, else `'none'`
   */
  readonly requireAuth?: 'scram-sha-256' | 'none';
  /** The whole handshake must finish within this time. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

/**
 * The client's side of a connection's start: sends the startup message, authenticates
 * with SCRAM-SHA-256 when asked (verifying the server's signature: a server that does not
 * know the verifier is refused), and resolves once the server is ready for commands.
 */
export async function clientHandshake(conn: MessageStream<'client'>, options: ClientHandshakeOptions): Promise<void> {
  const deadline = currentScheduler().now() + options.timeoutMs;
  const next = async () => {
    const message = await conn.next({ timeoutMs: Math.max(1, deadline - currentScheduler().now()), ...(options.signal === undefined ? {} : { signal: options.signal }) });
    if (message === null) throw new WalshipError('CONNECTION_FAILED', 'the server closed the connection during the handshake', { transient: true });
    if (message.kind === 'error') throw new WalshipError(message.code, message.message);
    return message;
  };
  try {
    conn.send({
      kind: 'startup',
      protocolMajor: PROTOCOL_VERSION.major,
      protocolMinor: PROTOCOL_VERSION.minor,
      user: options.user,
      applicationName: options.applicationName,
      options: options.options ?? [],
    });
    let message = await next();
    const requireScram = (options.requireAuth ?? (options.password === undefined ? 'none' : 'scram-sha-256')) === 'scram-sha-256';
    if (requireScram && message.kind !== 'authSasl') {
      throw new WalshipError('AUTH_FAILED', 'the server did not authenticate itself with SCRAM-SHA-256, which this client requires (requireAuth)');
    }
    if (message.kind === 'authSasl') {
      if (!message.mechanisms.includes(SCRAM_MECHANISM)) {
        throw new WalshipError('AUTH_FAILED', `the server offers no mechanism this client supports (${message.mechanisms.join(', ')})`);
      }
      if (options.password === undefined) throw new WalshipError('AUTH_FAILED', 'the server asks for a password and none was configured');
      const scram = new ScramClient(options.password);
      conn.send({ kind: 'saslInitialResponse', mechanism: SCRAM_MECHANISM, data: Buffer.from(scram.clientFirst()) });
      const first = await next();
      if (first.kind !== 'authSaslContinue') throw outOfOrder(first.kind, 'authSaslContinue');
      conn.send({ kind: 'saslResponse', data: Buffer.from(await scram.clientFinal(Buffer.from(first.data))) });
      const final = await next();
      if (final.kind !== 'authSaslFinal') throw outOfOrder(final.kind, 'authSaslFinal');
      scram.verifyServerFinal(Buffer.from(final.data));
      message = await next();
    }
    if (message.kind !== 'authOk') throw outOfOrder(message.kind, 'authOk');
    const ready = await next();
    if (ready.kind !== 'readyForCommand') throw outOfOrder(ready.kind, 'readyForCommand');
  } catch (err) {
    conn.destroy();
    throw err;
  }
}

function outOfOrder(got: string, expected: string): WalshipError {
  return new WalshipError('PROTOCOL_ERROR', `unexpected ${got} message during the handshake; expected ${expected}`);
}

/** Waits `ms`, or less if `cutShort` settles first (the connection closed): no timer outlives it. */
function delay(ms: number, cutShort: Promise<void>): Promise<void> {
  let timer: SchedulerTimer | undefined;
  return Promise.race([new Promise<void>((resolve) => (timer = currentScheduler().setTimeout(resolve, ms))), cutShort]).finally(() => clearTimer(timer));
}
