/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) the way PostgreSQL speaks it, as pure state machines:
 * messages go in and come out as strings, and whoever carries them (the replication
 * handshake) decides how they travel. Like PostgreSQL:
 *
 * - there is no channel binding (the GS2 header is `n,,`; `y,,` is accepted because walship
 *   never offers SCRAM-SHA-256-PLUS); TLS, when wanted, is the transport's business;
 * - the user name inside the SCRAM messages is ignored: the server authenticates the user
 *   named in the startup message, given to it separately;
 * - passwords are prepared with SASLprep, and a password that SASLprep refuses is used as
 *   its raw UTF-8 bytes, so verifiers agree with PostgreSQL's;
 * - an unknown user gets a mock exchange with a stable fake salt and fails exactly like a
 *   wrong password, so a client cannot probe which users exist.
 *
 * Errors name the message and the attribute at fault, never a password, a key or a proof.
 * @module
 */
import { createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { inspect, promisify } from 'node:util';
import { WalshipError } from '../errors.js';
import { currentScheduler } from '../scheduler.js';
import { saslprep } from './saslprep.js';

/** The SASL mechanism name the handshake announces. */
export const SCRAM_MECHANISM = 'SCRAM-SHA-256';

/** Iteration count of new verifiers and of mock exchanges (PostgreSQL's default). */
export const SCRAM_DEFAULT_ITERATIONS = 4096;

/**
 * Lowest iteration count walship accepts, in a verifier or from a server: RFC 7677's
 * minimum. Verifiers with fewer (PostgreSQL allows it) are refused when they are loaded.
 */
export const SCRAM_MIN_ITERATIONS = 4096;

/**
 * Highest iteration count walship accepts. A malicious server could otherwise make a
 * standby burn CPU for minutes per connection attempt; 10 million takes a few seconds,
 * far above any sane setting (OWASP suggests 600,000 for PBKDF2-HMAC-SHA-256).
 */
export const SCRAM_MAX_ITERATIONS = 10_000_000;

/** Cap on each SCRAM message, in UTF-8 bytes; real ones are under 200. */
export const SCRAM_MAX_MESSAGE_BYTES = 1024;

const KEY_BYTES = 32;
const DEFAULT_SALT_BYTES = 16;
/** Salts are sent in server-first-message, which must stay under the message cap. */
const MAX_SALT_BYTES = 256;
/** PostgreSQL sends 18 random bytes in base64 (24 characters) for each half of the nonce. */
const NONCE_RAW_BYTES = 18;
const MAX_NONCE_CHARS = 128;
const MOCK_SECRET_MIN_BYTES = 16;
/** Attribute letters RFC 5802 defines; an extension may not reuse them. */
const RESERVED_ATTRIBUTES = 'acimnprsve';

const pbkdf2OnPool = promisify(pbkdf2);

/**
 * PBKDF2-SHA-256 on libuv's thread pool; under virtual time on this thread, since a result
 * from the pool would arrive at a moment the simulation cannot order.
 */
async function pbkdf2Async(password: Buffer, salt: Buffer, iterations: number, keyBytes: number, digest: string): Promise<Buffer> {
  return currentScheduler().virtual ? pbkdf2Sync(password, salt, iterations, keyBytes, digest) : pbkdf2OnPool(password, salt, iterations, keyBytes, digest);
}
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const LONE_SURROGATE = /\p{Cs}/u;
/** RFC 5802 `printable`: ASCII 0x21-0x7E except ",". */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
/** RFC 5802 `saslname`: "," and "=" only as the escapes =2C and =3D. */
const SASLNAME = /^(?:[^,=]|=2C|=3D)*$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A SCRAM-SHA-256 verifier (PostgreSQL's "SCRAM secret"), as {@link parseScramVerifier} returns it. */
export interface ParsedVerifier {
  /** PBKDF2 iterations the password was hashed with. */
  readonly iterations: number;
  /** The salt the client hashes the password with (sent in the server-first-message). */
  readonly salt: Buffer;
  /** SHA-256 of the client key (32 bytes): checks the client's proof. */
  readonly storedKey: Buffer;
  /** The server key (32 bytes): signs the server-final-message, proving the server knows the verifier. */
  readonly serverKey: Buffer;
}

/** Options of {@link scramVerifier}. */
export interface ScramVerifierOptions {
  /** PBKDF2 iterations, from {@link SCRAM_MIN_ITERATIONS} to {@link SCRAM_MAX_ITERATIONS}. @defaultValue 4096 */
  iterations?: number;
  /** Salt, 1 to 256 bytes. @defaultValue 16 random bytes */
  salt?: Uint8Array;
}

/** Options of {@link ScramClient}. */
export interface ScramClientOptions {
  /** Sent as `n=`; servers ignore it (PostgreSQL's libpq sends it empty). @defaultValue '' */
  user?: string;
  /** The client nonce, for tests only: 1 to 128 printable ASCII characters other than ",". @defaultValue 24 random base64 characters */
  nonce?: string;
}

/** Options of {@link ScramServer}. */
export interface ScramServerOptions {
  /** The user being authenticated; a mock exchange derives its fake salt from it. @defaultValue '' */
  user?: string;
  /**
   * Secret mixed into mock salts, at least 16 bytes. Keep it stable (persist it) if an unknown
   * user's salt must not change across restarts. @defaultValue random, once per process
   */
  mockSecret?: Uint8Array;
  /** Iteration count a mock exchange announces; match your real verifiers. @defaultValue 4096 */
  mockIterations?: number;
  /** The server's half of the nonce, for tests only. @defaultValue 24 random base64 characters */
  nonce?: string;
}

/** The outcome of {@link ScramServer.serverFinal}: the message to send, and whether the client proved the password. */
export type ScramServerFinal =
  | {
      /** The client proved it knows the password. */
      readonly ok: true;
      /** The server-final-message with the server's signature (`v=…`), to send. */
      readonly message: string;
    }
  | {
      /** The proof was wrong, or the user unknown (the two look the same to the client). */
      readonly ok: false;
      /** The server-final-message `e=invalid-proof`, to send. */
      readonly message: string;
    };

type ClientState = 'start' | 'first-sent' | 'computing' | 'final-sent' | 'done' | 'failed';
type ServerState = 'start' | 'first-sent' | 'done' | 'failed';

/**
 * Computes a verifier in PostgreSQL's stored format,
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, so hosts can keep verifiers
 * instead of passwords. PostgreSQL's own verifiers (`pg_authid.rolpassword`) work as they are.
 */
export async function scramVerifier(password: string | Uint8Array, options: ScramVerifierOptions = {}): Promise<string> {
  checkOptionKeys(options, ['iterations', 'salt'], 'scramVerifier');
  const iterations = options.iterations ?? SCRAM_DEFAULT_ITERATIONS;
  checkIterations(iterations, 'scramVerifier.iterations');
  let salt: Buffer;
  if (options.salt === undefined) {
    salt = randomBytes(DEFAULT_SALT_BYTES);
  } else {
    if (!(options.salt instanceof Uint8Array) || options.salt.byteLength < 1 || options.salt.byteLength > MAX_SALT_BYTES) {
      throw new WalshipError('INVALID_OPTIONS', `scramVerifier.salt must be a Uint8Array of 1 to ${MAX_SALT_BYTES} bytes`);
    }
    salt = Buffer.from(options.salt);
  }
  const prepared = preparePassword(password);
  const salted = await pbkdf2Async(prepared, salt, iterations, KEY_BYTES, 'sha256');
  prepared.fill(0);
  const storedKey = sha256(hmac(salted, 'Client Key'));
  const serverKey = hmac(salted, 'Server Key');
  salted.fill(0);
  return `${SCRAM_MECHANISM}$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/**
 * Parses a verifier in PostgreSQL's format. Throws `INVALID_OPTIONS` saying what is wrong
 * (never echoing the verifier). The result redacts its keys in `JSON.stringify` and
 * `util.inspect`.
 */
export function parseScramVerifier(text: string): ParsedVerifier {
  const invalid = (reason: string): WalshipError =>
    new WalshipError('INVALID_OPTIONS', `invalid SCRAM verifier: ${reason} (expected ${SCRAM_MECHANISM}$<iterations>:<salt>$<StoredKey>:<ServerKey>)`);
  if (typeof text !== 'string') throw invalid('it is not a string');
  if (!text.startsWith(`${SCRAM_MECHANISM}$`)) throw invalid(`it does not start with "${SCRAM_MECHANISM}$"`);
  const fields = /^SCRAM-SHA-256\$([^$:]*):([^$:]*)\$([^$:]*):([^$:]*)$/.exec(text);
  if (fields === null) throw invalid('its fields are not separated as expected');
  const [, iterationsText = '', saltText = '', storedText = '', serverText = ''] = fields;
  const iterations = /^[0-9]{1,10}$/.test(iterationsText) ? Number(iterationsText) : Number.NaN;
  if (!(iterations >= SCRAM_MIN_ITERATIONS && iterations <= SCRAM_MAX_ITERATIONS)) {
    throw invalid(`the iteration count must be an integer from ${SCRAM_MIN_ITERATIONS} to ${SCRAM_MAX_ITERATIONS}`);
  }
  const salt = decodeBase64(saltText);
  if (salt === null || salt.length < 1 || salt.length > MAX_SALT_BYTES) throw invalid(`the salt must be 1 to ${MAX_SALT_BYTES} bytes in base64`);
  const storedKey = decodeBase64(storedText);
  if (storedKey === null || storedKey.length !== KEY_BYTES) throw invalid(`the StoredKey must be ${KEY_BYTES} bytes in base64`);
  const serverKey = decodeBase64(serverText);
  if (serverKey === null || serverKey.length !== KEY_BYTES) throw invalid(`the ServerKey must be ${KEY_BYTES} bytes in base64`);
  return redactedVerifier(iterations, salt, storedKey, serverKey);
}

/**
 * The client (standby) side. One instance per attempt:
 * `clientFirst()` → send; receive server-first → `await clientFinal(it)` → send; receive
 * server-final → `verifyServerFinal(it)`, which throws `AUTH_FAILED` unless the server proved
 * it holds the verifier (mutual authentication). Any error ends the exchange.
 */
export class ScramClient {
  readonly #password: Buffer;
  readonly #nonce: string;
  readonly #clientFirstBare: string;
  #state: ClientState = 'start';
  #serverSignature: Buffer | undefined;

  constructor(password: string | Uint8Array, options: ScramClientOptions = {}) {
    checkOptionKeys(options, ['user', 'nonce'], 'ScramClient');
    const user = options.user ?? '';
    if (typeof user !== 'string' || user.includes('\0') || LONE_SURROGATE.test(user)) {
      throw new WalshipError('INVALID_OPTIONS', 'ScramClient.user must be a well-formed string without NUL characters');
    }
    this.#nonce = options.nonce === undefined ? randomNonce() : checkNonceOption(options.nonce, 'ScramClient.nonce');
    this.#clientFirstBare = `n=${user.replaceAll('=', '=3D').replaceAll(',', '=2C')},r=${this.#nonce}`;
    if (Buffer.byteLength(this.#clientFirstBare) + 3 > SCRAM_MAX_MESSAGE_BYTES) {
      throw new WalshipError('INVALID_OPTIONS', `ScramClient.user is too long: client-first-message must fit in ${SCRAM_MAX_MESSAGE_BYTES} bytes`);
    }
    this.#password = preparePassword(password);
  }

  /** client-first-message: `n,,n=<user>,r=<client nonce>`. */
  clientFirst(): string {
    this.#expect('start', 'clientFirst');
    this.#state = 'first-sent';
    return `n,,${this.#clientFirstBare}`;
  }

  /**
   * Checks server-first-message (nonce extends ours, salt is base64, iteration count within
   * {@link SCRAM_MIN_ITERATIONS}..{@link SCRAM_MAX_ITERATIONS}) and returns
   * client-final-message with the proof. Throws `PROTOCOL_ERROR` on a malformed message.
   */
  async clientFinal(serverFirst: string | Uint8Array): Promise<string> {
    this.#expect('first-sent', 'clientFinal');
    this.#state = 'computing';
    try {
      const message = readMessage(serverFirst, 'server-first-message');
      const parts = message.split(',');
      if (parts[0]?.startsWith('m=')) throw malformed('server-first-message', 'the server requires an extension walship does not support');
      const nonce = attribute(parts, 0, 'r', 'server-first-message');
      const saltText = attribute(parts, 1, 's', 'server-first-message');
      const iterationsText = attribute(parts, 2, 'i', 'server-first-message');
      checkExtensions(parts.slice(3), 'server-first-message');
      if (nonce.length <= this.#nonce.length || !nonce.startsWith(this.#nonce)) {
        throw malformed('server-first-message', 'the nonce does not extend the client nonce');
      }
      if (nonce.length > 2 * MAX_NONCE_CHARS || !PRINTABLE.test(nonce)) {
        throw malformed('server-first-message', `the server nonce must be at most ${MAX_NONCE_CHARS} printable characters`);
      }
      const salt = decodeBase64(saltText);
      if (salt === null || salt.length < 1 || salt.length > MAX_SALT_BYTES) {
        throw malformed('server-first-message', `the salt must be 1 to ${MAX_SALT_BYTES} bytes in base64`);
      }
      const iterations = /^[1-9][0-9]{0,9}$/.test(iterationsText) ? Number(iterationsText) : Number.NaN;
      if (!(iterations >= SCRAM_MIN_ITERATIONS && iterations <= SCRAM_MAX_ITERATIONS)) {
        throw malformed('server-first-message', `the iteration count must be an integer from ${SCRAM_MIN_ITERATIONS} to ${SCRAM_MAX_ITERATIONS}`);
      }

      const salted = await pbkdf2Async(this.#password, salt, iterations, KEY_BYTES, 'sha256');
      // The password is needed for one proof only; don't keep it in memory longer.
      this.#password.fill(0);
      const withoutProof = `c=${Buffer.from('n,,').toString('base64')},r=${nonce}`;
      const authMessage = `${this.#clientFirstBare},${message},${withoutProof}`;
      const clientKey = hmac(salted, 'Client Key');
      const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
      this.#serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
      salted.fill(0);
      clientKey.fill(0);
      this.#state = 'final-sent';
      return `${withoutProof},p=${proof.toString('base64')}`;
    } catch (err) {
      this.#state = 'failed';
      throw err;
    }
  }

  /**
   * Checks server-final-message. Throws `AUTH_FAILED` when the server reports an error
   * (`e=...`, e.g. a wrong password) or its signature is wrong (it does not hold this user's
   * verifier: an impostor); `PROTOCOL_ERROR` when the message is malformed.
   */
  verifyServerFinal(serverFinal: string | Uint8Array): void {
    this.#expect('final-sent', 'verifyServerFinal');
    try {
      const message = readMessage(serverFinal, 'server-final-message');
      const parts = message.split(',');
      const first = parseAttribute(parts[0] ?? '', 'server-final-message');
      if (first.name === 'e') {
        throw new WalshipError('AUTH_FAILED', `the server rejected the SCRAM authentication: ${sanitize(first.value)}`);
      }
      const signatureText = attribute(parts, 0, 'v', 'server-final-message');
      checkExtensions(parts.slice(1), 'server-final-message');
      const signature = decodeBase64(signatureText);
      if (signature === null || signature.length !== KEY_BYTES) {
        throw malformed('server-final-message', `the server signature must be ${KEY_BYTES} bytes in base64`);
      }
      const expected = this.#serverSignature;
      if (expected === undefined || !timingSafeEqual(signature, expected)) {
        throw new WalshipError('AUTH_FAILED', "the server's SCRAM signature is wrong: it does not hold this user's verifier");
      }
      this.#state = 'done';
    } catch (err) {
      this.#state = 'failed';
      throw err;
    }
  }

  #expect(state: ClientState, call: string): void {
    if (this.#state !== state) throw outOfOrder(call, this.#state);
  }
}

/**
 * The server (primary) side. One instance per attempt:
 * receive client-first → `serverFirst(it)` → send; receive client-final → `serverFinal(it)`
 * → send `message`, and let the client in only when `ok` is true. With a `null` verifier
 * (unknown user, or no SCRAM verifier), it runs a mock exchange that always ends with
 * `ok: false` and looks exactly like a wrong password. Malformed messages throw
 * `PROTOCOL_ERROR` and end the exchange.
 */
export class ScramServer {
  readonly #iterations: number;
  readonly #salt: Buffer;
  readonly #storedKey: Buffer;
  readonly #serverKey: Buffer;
  /** True for a mock exchange: the proof is still checked, so timing tells nothing, but it fails. */
  readonly #doomed: boolean;
  readonly #nonce: string;
  #state: ServerState = 'start';
  #gs2Header = '';
  #clientNonce = '';
  #clientFirstBare = '';
  #serverFirst = '';

  constructor(verifier: ParsedVerifier | null, options: ScramServerOptions = {}) {
    checkOptionKeys(options, ['user', 'mockSecret', 'mockIterations', 'nonce'], 'ScramServer');
    const user = options.user ?? '';
    if (typeof user !== 'string') throw new WalshipError('INVALID_OPTIONS', 'ScramServer.user must be a string');
    const mockSecret = options.mockSecret ?? processMockSecret();
    if (!(mockSecret instanceof Uint8Array) || mockSecret.byteLength < MOCK_SECRET_MIN_BYTES) {
      throw new WalshipError('INVALID_OPTIONS', `ScramServer.mockSecret must be a Uint8Array of at least ${MOCK_SECRET_MIN_BYTES} bytes`);
    }
    const mockIterations = options.mockIterations ?? SCRAM_DEFAULT_ITERATIONS;
    checkIterations(mockIterations, 'ScramServer.mockIterations');
    this.#nonce = options.nonce === undefined ? randomNonce() : checkNonceOption(options.nonce, 'ScramServer.nonce');

    if (verifier === null) {
      this.#doomed = true;
      this.#iterations = mockIterations;
      this.#salt = mockSalt(mockSecret, user);
      this.#storedKey = Buffer.alloc(KEY_BYTES);
      this.#serverKey = Buffer.alloc(KEY_BYTES);
    } else {
      checkVerifier(verifier);
      this.#doomed = false;
      this.#iterations = verifier.iterations;
      this.#salt = Buffer.from(verifier.salt);
      this.#storedKey = Buffer.from(verifier.storedKey);
      this.#serverKey = Buffer.from(verifier.serverKey);
    }
  }

  /** Parses client-first-message and returns server-first-message: `r=<nonce>,s=<salt>,i=<iterations>`. */
  serverFirst(clientFirst: string | Uint8Array): string {
    if (this.#state !== 'start') throw outOfOrder('serverFirst', this.#state);
    try {
      const message = readMessage(clientFirst, 'client-first-message');
      const parts = message.split(',');
      const flag = parts[0] ?? '';
      if (flag.startsWith('p=')) {
        throw malformed('client-first-message', 'the client requires channel binding, which walship does not offer');
      }
      if (flag !== 'n' && flag !== 'y') throw malformed('client-first-message', 'the GS2 header must start with "n" or "y"');
      if (parts.length < 2) throw malformed('client-first-message', 'the GS2 header is incomplete');
      if (parts[1] !== '') {
        throw malformed('client-first-message', parts[1]?.startsWith('a=') ? 'authorization identities are not supported' : 'the GS2 header is malformed');
      }
      const bare = parts.slice(2);
      if (bare[0]?.startsWith('m=')) throw malformed('client-first-message', 'mandatory extensions are not supported');
      // The user name is not used (the startup message names the user) but must be well formed.
      if (!SASLNAME.test(attribute(bare, 0, 'n', 'client-first-message'))) {
        throw malformed('client-first-message', 'the user name has a bad "=" escape');
      }
      const nonce = attribute(bare, 1, 'r', 'client-first-message');
      if (nonce.length > MAX_NONCE_CHARS || !PRINTABLE.test(nonce)) {
        throw malformed('client-first-message', `the nonce must be 1 to ${MAX_NONCE_CHARS} printable characters`);
      }
      checkExtensions(bare.slice(2), 'client-first-message');

      this.#gs2Header = `${flag},,`;
      this.#clientNonce = nonce;
      this.#clientFirstBare = message.slice(this.#gs2Header.length);
      this.#serverFirst = `r=${nonce}${this.#nonce},s=${this.#salt.toString('base64')},i=${this.#iterations}`;
      this.#state = 'first-sent';
      return this.#serverFirst;
    } catch (err) {
      this.#state = 'failed';
      throw err;
    }
  }

  /**
   * Parses client-final-message and checks the proof. A right proof gives
   * `{ ok: true, message: 'v=<server signature>' }`; a wrong one, or any mock exchange,
   * gives `{ ok: false, message: 'e=invalid-proof' }`.
   */
  serverFinal(clientFinal: string | Uint8Array): ScramServerFinal {
    if (this.#state !== 'first-sent') throw outOfOrder('serverFinal', this.#state);
    try {
      const message = readMessage(clientFinal, 'client-final-message');
      const parts = message.split(',');
      const binding = attribute(parts, 0, 'c', 'client-final-message');
      if (binding !== Buffer.from(this.#gs2Header).toString('base64')) {
        throw malformed('client-final-message', 'the channel-binding attribute does not repeat the GS2 header');
      }
      const nonce = attribute(parts, 1, 'r', 'client-final-message');
      const expectedNonce = Buffer.from(this.#clientNonce + this.#nonce);
      const nonceBytes = Buffer.from(nonce);
      if (nonceBytes.length !== expectedNonce.length || !timingSafeEqual(nonceBytes, expectedNonce)) {
        throw malformed('client-final-message', 'the nonce does not match');
      }
      const last = parts.length - 1;
      const proofText = attribute(parts, Math.max(last, 2), 'p', 'client-final-message');
      checkExtensions(parts.slice(2, last), 'client-final-message');
      const proof = decodeBase64(proofText);
      if (proof === null || proof.length !== KEY_BYTES) {
        throw malformed('client-final-message', `the proof must be ${KEY_BYTES} bytes in base64`);
      }

      // The proof is the last attribute and values hold no ",", so this cuts ",p=<proof>".
      const withoutProof = message.slice(0, message.lastIndexOf(','));
      const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
      // Computed in mock exchanges too, so the time taken does not tell whether the user exists.
      const clientKey = xor(proof, hmac(this.#storedKey, authMessage));
      const proven = timingSafeEqual(sha256(clientKey), this.#storedKey);
      this.#state = 'done';
      if (!proven || this.#doomed) return { ok: false, message: 'e=invalid-proof' };
      return { ok: true, message: `v=${hmac(this.#serverKey, authMessage).toString('base64')}` };
    } catch (err) {
      this.#state = 'failed';
      throw err;
    }
  }
}

/** The bytes PBKDF2 hashes: the SASLprep form when there is one, else the raw UTF-8 bytes. */
function preparePassword(password: string | Uint8Array): Buffer {
  if (typeof password === 'string') {
    if (password.length === 0) throw new WalshipError('INVALID_ARGUMENT', 'the password is empty');
    if (LONE_SURROGATE.test(password)) throw new WalshipError('INVALID_ARGUMENT', 'the password is not well-formed Unicode (it has a lone surrogate)');
    return Buffer.from(saslprep(password) ?? password, 'utf8');
  }
  if (password instanceof Uint8Array) {
    if (password.byteLength === 0) throw new WalshipError('INVALID_ARGUMENT', 'the password is empty');
    let text: string;
    try {
      text = UTF8.decode(password);
    } catch {
      // Not UTF-8: PostgreSQL hashes such passwords as they are.
      return Buffer.from(password);
    }
    const prepared = saslprep(text);
    return prepared === null ? Buffer.from(password) : Buffer.from(prepared, 'utf8');
  }
  throw new WalshipError('INVALID_ARGUMENT', 'the password must be a string or a Uint8Array');
}

function redactedVerifier(iterations: number, salt: Buffer, storedKey: Buffer, serverKey: Buffer): ParsedVerifier {
  const verifier = { iterations, salt, storedKey, serverKey };
  const shown = { mechanism: SCRAM_MECHANISM, iterations, keys: '[redacted]' };
  // Non-enumerable, so deepEqual and spreading see only the four fields.
  Object.defineProperties(verifier, {
    toJSON: { value: () => ({ ...shown }) },
    [inspect.custom]: { value: (_depth: number, options: object) => `ParsedVerifier ${inspect(shown, options)}` },
  });
  return Object.freeze(verifier);
}

function checkVerifier(verifier: ParsedVerifier): void {
  const ok =
    typeof verifier === 'object' &&
    verifier !== null &&
    Number.isInteger(verifier.iterations) &&
    verifier.iterations >= SCRAM_MIN_ITERATIONS &&
    verifier.iterations <= SCRAM_MAX_ITERATIONS &&
    verifier.salt instanceof Uint8Array &&
    verifier.salt.byteLength >= 1 &&
    verifier.salt.byteLength <= MAX_SALT_BYTES &&
    verifier.storedKey instanceof Uint8Array &&
    verifier.storedKey.byteLength === KEY_BYTES &&
    verifier.serverKey instanceof Uint8Array &&
    verifier.serverKey.byteLength === KEY_BYTES;
  if (!ok) throw new WalshipError('INVALID_ARGUMENT', 'the verifier must be a ParsedVerifier, as parseScramVerifier returns');
}

let mockSecretOfProcess: Buffer | undefined;

/** One random secret per process: unknown users' salts stay stable until a restart. */
/** @internal The per-process secret behind mock salts, unless a `mockSecret` is given. */
export function processMockSecret(): Buffer {
  mockSecretOfProcess ??= randomBytes(32);
  return mockSecretOfProcess;
}

/**
 * @internal Like PostgreSQL's scram_mock_salt: a salt of the usual length, stable per user,
 * unguessable without the secret. Plain passwords get their salt the same way, so known and
 * unknown users look alike even across reloads.
 */
export function mockSalt(secret: Uint8Array, user: string): Buffer {
  return hmac(secret, `walship scram mock salt\0${user}`).subarray(0, DEFAULT_SALT_BYTES);
}

/** Checks size and encoding before anything else looks at a message from the peer. */
function readMessage(input: string | Uint8Array, name: string): string {
  let text: string;
  if (typeof input === 'string') {
    if (input.length > SCRAM_MAX_MESSAGE_BYTES || Buffer.byteLength(input) > SCRAM_MAX_MESSAGE_BYTES) throw tooLarge(name);
    if (LONE_SURROGATE.test(input)) throw malformed(name, 'it is not valid UTF-8');
    text = input;
  } else if (input instanceof Uint8Array) {
    if (input.byteLength > SCRAM_MAX_MESSAGE_BYTES) throw tooLarge(name);
    try {
      text = UTF8.decode(input);
    } catch {
      throw malformed(name, 'it is not valid UTF-8');
    }
  } else {
    throw new WalshipError('INVALID_ARGUMENT', `the SCRAM ${name} must be a string or a Uint8Array`);
  }
  if (text.length === 0) throw malformed(name, 'it is empty');
  if (text.includes('\0')) throw malformed(name, 'it contains a NUL character');
  return text;
}

interface Attribute {
  name: string;
  value: string;
}

/** RFC 5802 `attr-val`: one ASCII letter, "=", the value. */
function parseAttribute(part: string, message: string): Attribute {
  const name = part.charAt(0);
  if (!/^[A-Za-z]$/.test(name) || part.charAt(1) !== '=') throw malformed(message, 'expected an attribute ("<letter>=<value>")');
  return { name, value: part.slice(2) };
}

/** The value of attribute `name`, which must be at `parts[index]`. */
function attribute(parts: readonly string[], index: number, name: string, message: string): string {
  const part = parts[index];
  if (part === undefined) throw malformed(message, `attribute "${name}" is missing`);
  const found = parseAttribute(part, message);
  if (found.name !== name) throw malformed(message, `expected attribute "${name}" but found "${found.name}"`);
  return found.value;
}

/** Optional extensions are ignored (RFC 5802), but must be well formed and not repeat a SCRAM attribute. */
function checkExtensions(parts: readonly string[], message: string): void {
  for (const part of parts) {
    const { name, value } = parseAttribute(part, message);
    if (RESERVED_ATTRIBUTES.includes(name)) throw malformed(message, `unexpected attribute "${name}"`);
    if (value.length === 0) throw malformed(message, `extension "${name}" has no value`);
  }
}

/** Strict base64 (RFC 4648 with padding, canonical): Buffer.from alone accepts anything. */
function decodeBase64(text: string): Buffer | null {
  if (!BASE64.test(text)) return null;
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : null;
}

function randomNonce(): string {
  return randomBytes(NONCE_RAW_BYTES).toString('base64');
}

function checkNonceOption(nonce: unknown, name: string): string {
  if (typeof nonce !== 'string' || nonce.length > MAX_NONCE_CHARS || !PRINTABLE.test(nonce)) {
    throw new WalshipError('INVALID_OPTIONS', `${name} must be 1 to ${MAX_NONCE_CHARS} printable ASCII characters other than ","`);
  }
  return nonce;
}

function checkIterations(iterations: unknown, name: string): void {
  if (!Number.isInteger(iterations) || (iterations as number) < SCRAM_MIN_ITERATIONS || (iterations as number) > SCRAM_MAX_ITERATIONS) {
    throw new WalshipError('INVALID_OPTIONS', `${name} must be an integer from ${SCRAM_MIN_ITERATIONS} to ${SCRAM_MAX_ITERATIONS}`);
  }
}

function checkOptionKeys(options: unknown, allowed: readonly string[], name: string): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new WalshipError('INVALID_OPTIONS', `${name} options must be an object`);
  }
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw new WalshipError('INVALID_OPTIONS', `${name} has unknown option "${sanitize(key)}"`);
  }
}

function hmac(key: Uint8Array, data: string | Uint8Array): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] ?? 0) ^ (b[i] ?? 0);
  return out;
}

/** Peer-supplied text for an error message: printable ASCII only, and short. */
function sanitize(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 64 ? `${clean.slice(0, 64)}…` : clean;
}

function malformed(message: string, reason: string): WalshipError {
  return new WalshipError('PROTOCOL_ERROR', `malformed SCRAM ${message}: ${reason}`);
}

function tooLarge(message: string): WalshipError {
  return new WalshipError('PROTOCOL_ERROR', `SCRAM ${message} is larger than ${SCRAM_MAX_MESSAGE_BYTES} bytes`);
}

function outOfOrder(call: string, state: string): WalshipError {
  return new WalshipError('PROTOCOL_ERROR', `SCRAM exchange out of order: ${call}() called in state "${state}"`);
}
