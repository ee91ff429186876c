/**
 * Who may replicate, in the spirit of PostgreSQL's pg_hba.conf lines for the `replication`
 * database: users with SCRAM-SHA-256 verifiers, and ordered rules
 * `{ user, address, method }` where the first match wins and no match rejects.
 *
 * Address matching, decided here and documented in the README's auth section:
 * - `all` matches every peer, including one without an IP address (an in-memory transport,
 *   a Unix socket); a peer without one (or with something that is not an IP) matches only `all`.
 * - A network address with host bits set (`10.1.2.3/8`) is accepted and masked to
 *   `10.0.0.0/8`, as PostgreSQL does.
 * - An IPv4 rule also matches IPv4-mapped IPv6 peers (`::ffff:127.0.0.1` matches
 *   `127.0.0.0/8`); an IPv6 rule matches IPv6 peers only (`::/0` does not match `10.0.0.5`),
 *   as in PostgreSQL. A zone (`fe80::1%eth0`) is ignored in peer addresses and refused in rules.
 * @module
 */
import { isIPv4, isIPv6 } from 'node:net';
import { inspect } from 'node:util';
import { WalshipError } from '../errors.js';
import { compileOptions, type OptionsValidator } from '../options.js';
import {
  SCRAM_DEFAULT_ITERATIONS,
  ScramServer,
  mockSalt,
  parseScramVerifier,
  processMockSecret,
  scramVerifier,
  type ParsedVerifier,
} from './scram.js';

/** How a matching peer authenticates. */
export type AuthMethod = 'scram-sha-256' | 'trust' | 'reject';

/** One pg_hba-like rule. */
export interface AuthRule {
  /** A user name, or `'all'`. */
  user: string;
  /** `'all'`, an IPv4 or IPv6 address (one host), or a CIDR block such as `'10.0.0.0/8'` or `'fd00::/8'`. */
  address: string;
  /** How a matching peer authenticates: `'scram-sha-256'` with a password, `'trust'` without one, or `'reject'`. */
  method: AuthMethod;
}

/** Users by name, each with exactly one of a plain `password` or a SCRAM `verifier` (see `scramVerifier`). */
export type AuthUsers = Record<
  string,
  {
    /** The plain password, turned into a verifier when the configuration is compiled; never logged. */
    password?: string;
    /** A SCRAM-SHA-256 verifier (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), so the password itself is not stored. */
    verifier?: string;
  }
>;

/** The `auth` option. Leaving it out lets no one in. */
export interface AuthOptions {
  /** Who can authenticate with a password. A rule that names a user absent here never admits them by password. */
  users?: AuthUsers;
  /** Tried in order; the first rule matching the user and the peer's address decides, and no match rejects. */
  rules?: AuthRule[];
}

/** Options of {@link compileAuth} that are not part of the configuration itself. */
export interface CompileAuthOptions {
  /**
   * Secret behind the fake salts of unknown users, at least 16 bytes. Persist it if those
   * salts must survive restarts. @defaultValue random, once per process
   */
  mockSecret?: Uint8Array;
}

/** The rule that decided, or `ruleIndex: -1` when none matched (which rejects). */
export type AuthMatch =
  | {
      /** The matching rule's method. */
      method: AuthMethod;
      /** The matching rule's position in `rules`, from 0. */
      ruleIndex: number;
    }
  | {
      /** No rule matched, which rejects. */
      method: 'reject';
      /** -1: no rule matched. */
      ruleIndex: -1;
    };

/** The literal behind {@link authOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const authSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    users: {
      type: 'object',
      propertyNames: { type: 'string', minLength: 1 },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        properties: {
          password: { type: 'string', minLength: 1 },
          verifier: { type: 'string' },
        },
      },
    },
    rules: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['user', 'address', 'method'],
        properties: {
          user: { type: 'string', minLength: 1 },
          address: { type: 'string', minLength: 1 },
          method: { enum: ['scram-sha-256', 'trust', 'reject'] },
        },
      },
    },
  },
} as const;

/** JSON schema of the `auth` option, for embedding in a component's options schema. */
export const authOptionsSchema: typeof authSchema = authSchema;

const validateAuthOptions: OptionsValidator<AuthOptions> = compileOptions('auth', authOptionsSchema);

/** A parsed address: `bits` is the network, already masked, 4 bytes for IPv4 and 16 for IPv6. */
type Network = { kind: 'all' } | { kind: 'ipv4' | 'ipv6'; bits: Uint8Array; prefix: number };

interface CompiledRule {
  readonly rule: Readonly<AuthRule>;
  readonly network: Network;
}

/** A peer's address as the rules see it: IPv4 bytes (own or mapped), IPv6 bytes, or neither. */
interface Peer {
  v4?: Uint8Array;
  v6?: Uint8Array;
}

const INTERNAL = Symbol('CompiledAuth');

/**
 * Validated rules and verifiers, ready for each connection. Plain passwords were turned into
 * verifiers by {@link compileAuth} and are not kept. `JSON.stringify` and `util.inspect` show
 * user names and rules only, never a credential.
 */
export class CompiledAuth {
  readonly #rules: readonly CompiledRule[];
  readonly #verifiers: ReadonlyMap<string, ParsedVerifier>;
  readonly #mockSecret: Uint8Array | undefined;
  readonly #mockIterations: number;

  /** @internal Use {@link compileAuth}. */
  constructor(token: typeof INTERNAL, rules: CompiledRule[], verifiers: Map<string, ParsedVerifier>, mockSecret: Uint8Array | undefined) {
    if (token !== INTERNAL) throw new WalshipError('INVALID_ARGUMENT', 'use compileAuth() to create a CompiledAuth');
    this.#rules = rules;
    this.#verifiers = verifiers;
    this.#mockSecret = mockSecret;
    this.#mockIterations = mostCommonIterations(verifiers);
  }

  /**
   * The first rule matching `user` and `remoteAddress`. `remoteAddress` is the peer's IP as
   * `net.Socket.remoteAddress` gives it; `undefined` (or anything that is not an IP) matches
   * only rules whose address is `all`.
   */
  match(user: string, remoteAddress: string | undefined): AuthMatch {
    if (typeof user !== 'string') throw new WalshipError('INVALID_ARGUMENT', 'user must be a string');
    if (remoteAddress !== undefined && typeof remoteAddress !== 'string') {
      throw new WalshipError('INVALID_ARGUMENT', 'remoteAddress must be a string or undefined');
    }
    const peer = parsePeer(remoteAddress);
    for (const [ruleIndex, { rule, network }] of this.#rules.entries()) {
      if ((rule.user === 'all' || rule.user === user) && networkMatches(network, peer)) {
        return { method: rule.method, ruleIndex };
      }
    }
    return { method: 'reject', ruleIndex: -1 };
  }

  /** The user's verifier, or `null` for a user that is not configured. */
  verifier(user: string): ParsedVerifier | null {
    return this.#verifiers.get(user) ?? null;
  }

  /**
   * A {@link ScramServer} for `user`: the real exchange when the user has a verifier, else a
   * mock one whose salt and iteration count look like a real user's.
   */
  scramServer(user: string, options: { nonce?: string } = {}): ScramServer {
    return new ScramServer(this.verifier(user), {
      user,
      mockIterations: this.#mockIterations,
      ...(this.#mockSecret === undefined ? {} : { mockSecret: this.#mockSecret }),
      ...(options.nonce === undefined ? {} : { nonce: options.nonce }),
    });
  }

  /** User names and rules, without credentials. */
  toJSON(): {
    /** The names of the configured users. */
    users: string[];
    /** The rules, in order. */
    rules: AuthRule[];
  } {
    return { users: [...this.#verifiers.keys()], rules: this.#rules.map(({ rule }) => ({ ...rule })) };
  }

  /** What `console.log` and `util.inspect` show: {@link toJSON}'s users and rules, never a verifier. */
  [inspect.custom](_depth: number, options: object): string {
    return `CompiledAuth ${inspect(this.toJSON(), options)}`;
  }
}

/**
 * Validates the `auth` option and turns plain passwords into verifiers. Throws
 * `INVALID_OPTIONS` naming the offending user or rule index (`auth.rules.2.address`).
 * `undefined` compiles to no rules: everyone is rejected.
 */
export async function compileAuth(auth: AuthOptions | undefined, options: CompileAuthOptions = {}): Promise<CompiledAuth> {
  const mockSecret = options.mockSecret;
  if (mockSecret !== undefined && (!(mockSecret instanceof Uint8Array) || mockSecret.byteLength < 16)) {
    throw new WalshipError('INVALID_OPTIONS', 'compileAuth mockSecret must be a Uint8Array of at least 16 bytes');
  }
  if (auth === undefined) return new CompiledAuth(INTERNAL, [], new Map(), mockSecret);
  validateAuthOptions(auth);

  const rules = (auth.rules ?? []).map((rule, index): CompiledRule => {
    const network = parseNetwork(rule.address);
    if (network === null) {
      throw new WalshipError(
        'INVALID_OPTIONS',
        `invalid auth options: auth.rules.${index}.address must be "all", an IPv4 or IPv6 address, or a CIDR block such as "10.0.0.0/8" or "fd00::/8"`,
      );
    }
    return { rule: Object.freeze({ user: rule.user, address: rule.address, method: rule.method }), network };
  });

  const verifiers = new Map<string, ParsedVerifier>();
  for (const [user, entry] of Object.entries(auth.users ?? {})) {
    const path = `auth.users.${JSON.stringify(user)}`;
    if (user === 'all') throw new WalshipError('INVALID_OPTIONS', `invalid auth options: ${path}: "all" is reserved (in rules it means every user)`);
    if ((entry.password === undefined) === (entry.verifier === undefined)) {
      throw new WalshipError('INVALID_OPTIONS', `invalid auth options: ${path} must have exactly one of "password" or "verifier"`);
    }
    if (entry.verifier !== undefined) {
      try {
        verifiers.set(user, parseScramVerifier(entry.verifier));
      } catch (err) {
        // parseScramVerifier's message never echoes the verifier.
        throw new WalshipError('INVALID_OPTIONS', `invalid auth options: ${path}.verifier: ${(err as Error).message}`, { cause: err });
      }
    } else if (entry.password !== undefined) {
      // The salt is derived like an unknown user's mock salt: stable across reloads, so an
      // observer cannot tell configured users from unknown ones by watching salts.
      const salt = mockSalt(mockSecret ?? processMockSecret(), user);
      verifiers.set(user, parseScramVerifier(await scramVerifier(entry.password, { salt })));
    }
  }
  return new CompiledAuth(INTERNAL, rules, verifiers, mockSecret);
}

/** Unknown users should announce the iteration count most real users have. */
function mostCommonIterations(verifiers: ReadonlyMap<string, ParsedVerifier>): number {
  const counts = new Map<number, number>();
  let best = SCRAM_DEFAULT_ITERATIONS;
  let bestCount = 0;
  for (const { iterations } of verifiers.values()) {
    const count = (counts.get(iterations) ?? 0) + 1;
    counts.set(iterations, count);
    if (count > bestCount) {
      best = iterations;
      bestCount = count;
    }
  }
  return best;
}

/** `all`, an address, or `address/prefix`; `null` when invalid. */
function parseNetwork(text: string): Network | null {
  if (text === 'all') return { kind: 'all' };
  const slash = text.indexOf('/');
  const host = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? undefined : text.slice(slash + 1);
  const bytes = parseIp(host);
  if (bytes === null) return null;
  const kind = bytes.length === 4 ? 'ipv4' : 'ipv6';
  const maxPrefix = bytes.length * 8;
  let prefix = maxPrefix;
  if (prefixText !== undefined) {
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(prefixText)) return null;
    prefix = Number(prefixText);
    if (prefix > maxPrefix) return null;
  }
  return { kind, bits: mask(bytes, prefix), prefix };
}

function parsePeer(remoteAddress: string | undefined): Peer {
  if (remoteAddress === undefined) return {};
  // A link-local peer carries its zone ("fe80::1%eth0"); rules cannot name zones.
  const percent = remoteAddress.indexOf('%');
  const bytes = parseIp(percent === -1 ? remoteAddress : remoteAddress.slice(0, percent));
  if (bytes === null) return {};
  if (bytes.length === 4) return { v4: bytes };
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? { v6: bytes, v4: bytes.slice(12) } : { v6: bytes };
}

function networkMatches(network: Network, peer: Peer): boolean {
  if (network.kind === 'all') return true;
  const address = network.kind === 'ipv4' ? peer.v4 : peer.v6;
  if (address === undefined) return false;
  const masked = mask(address, network.prefix);
  return masked.every((byte, i) => byte === network.bits[i]);
}

function mask(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = (bytes[i] ?? 0) & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** 4 bytes for an IPv4 address, 16 for an IPv6 one (zones refused), `null` otherwise. */
function parseIp(text: string): Uint8Array | null {
  if (isIPv4(text)) return Uint8Array.from(text.split('.').map(Number));
  if (!isIPv6(text) || text.includes('%')) return null;
  // isIPv6 vouched for the syntax. A trailing dotted IPv4 part becomes two hex groups.
  let groupsText = text;
  const lastColon = text.lastIndexOf(':');
  const dotted = text.slice(lastColon + 1);
  if (dotted.includes('.')) {
    const [a = 0, b = 0, c = 0, d = 0] = dotted.split('.').map(Number);
    groupsText = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const split = (part: string): number[] => (part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16)));
  const doubleColon = groupsText.indexOf('::');
  let groups: number[];
  if (doubleColon === -1) {
    groups = split(groupsText);
  } else {
    const head = split(groupsText.slice(0, doubleColon));
    const rest = split(groupsText.slice(doubleColon + 2));
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  }
  if (groups.length !== 8) return null;
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}
