import type { Application } from '../application.js';
import { isApplication } from '../application.js';
import { WalshipError } from '../errors.js';
import { NodeStorage } from '../storage/node-storage.js';
import { isStorage, type Storage } from '../storage/storage.js';
import { compileOptions, type OptionsValidator } from '../options.js';
import { authOptionsSchema, type AuthOptions } from '../protocol/auth-rules.js';
import type { AuthenticationLimits } from '../protocol/replication-server.js';
import { RETENTION_DEFAULTS } from '../slots/retention.js';
import { MAX_REPLICATION_SLOTS_CAP, SLOT_DEFAULTS } from '../slots/slot-manager.js';
import type { Transport } from '../transport/transport.js';
import { SEGMENT_SIZES } from '../wal/segment-name.js';
import type { SyncMode } from '../wal/wal-log.js';
import { isArchiver } from '../archive/archiver.js';
import type { EntryBuffers } from './applier.js';
import { archiveOptionsSchema, type ArchiveOptions } from './wal-archiver.js';

/** Options every node has: where its files live, the application, and how its WAL is written. */
export interface NodeOptions {
  /** The data directory (WAL segments, control file, snapshots, slots); created if missing. */
  readonly dir?: string;
  /** Where the node's files live; `MemoryStorage` for simulations. */
  readonly storage?: Storage;
  /** The state machine that applies committed batches. */
  readonly application: Application;
  /**
   * What `apply` receives as `entry.data`: `'owned'` buffers the application may keep after
   * `apply` returns (one copy per batch), or `'borrowed'` views valid only during `apply`
   * (no copy). @defaultValue 'owned'
   */
  readonly entryBuffers?: EntryBuffers;
  /** `none` skips fsync: unsafe, for tests and benchmarks. @defaultValue 'fdatasync' */
  readonly sync?: SyncMode;
  /** Removed segments kept for reuse, at least. @defaultValue 4 */
  readonly recycleSegments?: number;
  /**
   * Removed segments kept for reuse, at most: after a burst of WAL a node keeps as many as it
   * wrote between its last two checkpoints (PostgreSQL's `max_wal_size`, in segments).
   * @defaultValue 64
   */
  readonly maxRecycleSegments?: number;
  /** A prefix for this node's `debug` lines. */
  readonly logPrefix?: string;
  /**
   * Continuous archiving (PostgreSQL's `archive_mode`, `archive_command`, `archive_timeout`):
   * the node puts its completed WAL segments and timeline history files into `archiver`, and
   * removes no WAL until the archive holds it. @defaultValue `{ mode: 'off' }`
   */
  readonly archive?: ArchiveOptions;
  /**
   * The wall clock, in milliseconds since the epoch: batches' commit times come from it (on a
   * primary, and on a standby once promoted), and a standby's `replayDelayMs` measures against
   * it. Tests inject one to control time. @defaultValue `Date.now`
   */
  readonly clock?: () => number;
}

/** Options of a node that serves standbys: a primary, or a cascading standby. */
export interface ServeOptions {
  /** Where standbys connect. Without it the node serves no one. */
  readonly listen?: {
    /** The transport standbys connect over. */
    readonly transport: Transport;
    /** The address to listen on, in the transport's format (`'host:port'` for TCP; port 0 picks a free one). */
    readonly address: string;
  };
  /** Who may connect for replication. Leaving it out lets no one in. */
  readonly auth?: AuthOptions;
  /** Standby connections allowed at once (`max_wal_senders`). @defaultValue 10 */
  readonly maxWalSenders?: number;
  /** End a standby's connection after this long without a message from it (`wal_sender_timeout`). @defaultValue 60 000 */
  readonly walSenderTimeoutMs?: number;
  /** WAL bytes per message to a standby; also about the bytes in flight per standby beyond the transport's buffer. @defaultValue 1 MiB */
  readonly maxWalMessageBytes?: number;
  /** Limit for a standby's authentication (`authentication_timeout`). @defaultValue 10 000 */
  readonly handshakeTimeoutMs?: number;
  /** Delay before a failed authentication is answered. @defaultValue 250 */
  readonly authFailureDelayMs?: number;
  /**
   * Connections authenticating at once. A new connection beyond it takes the place of the one
   * that has done least (one already refused, else the one least far in its handshake and
   * silent longest), so idle sockets never keep a standby out. @defaultValue 64
   */
  readonly maxAuthenticatingConnections?: number;
  /** Connections authenticating at once from one address (beyond it, that address's give way as above). @defaultValue 8 */
  readonly maxAuthenticatingPerAddress?: number;
  /**
   * Bytes of WAL behind the current position that checkpoints (restartpoints) always keep,
   * slot or no slot (`wal_keep_size`). @defaultValue 0
   */
  readonly walKeepSize?: number;
  /**
   * The most WAL, in bytes behind the current position, that replication slots may hold
   * (`max_slot_wal_keep_size`); a slot further behind is invalidated at the checkpoint that
   * would remove its WAL. −1 is unlimited. @defaultValue −1
   */
  readonly maxSlotWalKeepSize?: number;
  /**
   * The most replication slots the node keeps (`max_replication_slots`), created locally
   * (`createSlot`) or by standbys and tools over the protocol (CREATE_REPLICATION_SLOT): one
   * more is `SLOT_LIMIT_REACHED`. At most 1024, which keeps `walship.slots` far below what it
   * reads back. A directory already holding more (the limit was lowered) opens with every
   * slot; none can be created until enough are dropped. @defaultValue 10
   */
  readonly maxReplicationSlots?: number;
}

/** Defaults of {@link ServeOptions} and {@link NodeOptions}. */
export const SERVE_DEFAULTS = Object.freeze({
  /** `apply` gets buffers it may keep. */
  entryBuffers: 'owned' as EntryBuffers,
  /** Ten standby connections at once. */
  maxWalSenders: 10,
  /** A silent standby is disconnected after 60 s. */
  walSenderTimeoutMs: 60_000,
  /** 1 MiB of WAL per message. */
  maxWalMessageBytes: 1024 * 1024,
  /** No WAL kept for standbys beyond what slots and archiving need. */
  walKeepSize: RETENTION_DEFAULTS.walKeepSize,
  /** −1: slots may hold any amount of WAL. */
  maxSlotWalKeepSize: RETENTION_DEFAULTS.maxSlotWalKeepSize,
  /** Ten replication slots. */
  maxReplicationSlots: SLOT_DEFAULTS.maxReplicationSlots,
});

/** The schema parts `Primary` and `Standby` share. Objects with methods are checked by type guards. */
export const nodeStorageSchema = {
  dir: { type: 'string', minLength: 1 },
  storage: {},
  application: {},
  segmentSize: { enum: [...SEGMENT_SIZES] },
  sync: { enum: ['fdatasync', 'none'] },
  recycleSegments: { type: 'integer', minimum: 0, maximum: 1024 },
  maxRecycleSegments: { type: 'integer', minimum: 0, maximum: 1024 },
  logPrefix: { type: 'string' },
} as const;

/** A transport and an address: where a node listens, or where a standby connects. */
export const endpointSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['transport', 'address'],
  properties: { transport: {}, address: { type: 'string', minLength: 1 } },
} as const;

/** The schema parts of {@link NodeOptions}: `Primary` and `Standby` alike. */
export const nodeSchema = {
  dir: nodeStorageSchema.dir,
  storage: nodeStorageSchema.storage,
  application: nodeStorageSchema.application,
  entryBuffers: { enum: ['owned', 'borrowed'] },
  sync: nodeStorageSchema.sync,
  recycleSegments: nodeStorageSchema.recycleSegments,
  maxRecycleSegments: nodeStorageSchema.maxRecycleSegments,
  logPrefix: nodeStorageSchema.logPrefix,
  archive: archiveOptionsSchema,
  clock: {},
} as const;

/** The schema parts of {@link ServeOptions}: a primary's and a cascading standby's. */
export const serveSchema = {
  listen: endpointSchema,
  auth: authOptionsSchema,
  maxWalSenders: { type: 'integer', minimum: 0, maximum: 1024 },
  walSenderTimeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
  maxWalMessageBytes: { type: 'integer', minimum: 4096, maximum: 16 * 1024 * 1024 },
  handshakeTimeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
  authFailureDelayMs: { type: 'integer', minimum: 0, maximum: 60_000 },
  maxAuthenticatingConnections: { type: 'integer', minimum: 1, maximum: 65_536 },
  maxAuthenticatingPerAddress: { type: 'integer', minimum: 1, maximum: 65_536 },
  walKeepSize: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
  maxSlotWalKeepSize: { type: 'integer', minimum: -1, maximum: Number.MAX_SAFE_INTEGER },
  maxReplicationSlots: { type: 'integer', minimum: 0, maximum: MAX_REPLICATION_SLOTS_CAP },
} as const;

/** Options of `createSlot()` on a primary or a cascading standby. */
export interface CreateSlotOptions {
  /** Reserve WAL at once, from where the application has applied (else at the slot's first use). @defaultValue false */
  readonly reserveWal?: boolean;
}

/** JSON schema of {@link CreateSlotOptions}. */
export const createSlotOptionsSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: { reserveWal: { type: 'boolean' } },
});

export const validateCreateSlot: OptionsValidator<CreateSlotOptions> = compileOptions('createSlot()', createSlotOptionsSchema);

/** The checks a JSON schema cannot make: exactly one of dir/storage, and the objects' shapes. */
export function checkNodeObjects(what: string, options: { dir?: string; storage?: unknown; application?: unknown; archive?: ArchiveOptions; clock?: unknown }): void {
  if ((options.dir === undefined) === (options.storage === undefined)) {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: give exactly one of "dir" and "storage"`);
  }
  if (options.storage !== undefined && !isStorage(options.storage)) {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: ${what}.storage must implement Storage`);
  }
  if (options.clock !== undefined && typeof options.clock !== 'function') {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: ${what}.clock must be a function returning milliseconds since the epoch (as Date.now)`);
  }
  if (!isApplication(options.application)) {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: ${what}.application must be an object with an apply() method (and optional appliedLsn, snapshot, restore functions)`);
  }
  const archive = options.archive;
  if (archive !== undefined && archive.mode !== 'off' && !isArchiver(archive.archiver)) {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: ${what}.archive.archiver must implement Archiver (put, get, list, and optional remove) when archive.mode is "${archive.mode}"`);
  }
}

/**
 * Checks that `endpoint.transport` is a transport and, when the transport can tell
 * (`checkAddress`), that `endpoint.address` is in its syntax; `INVALID_OPTIONS` names the option.
 */
export function checkEndpoint(what: string, endpoint: { transport: unknown; address: string | readonly string[] }): void {
  const t = endpoint.transport as Partial<Transport> | null;
  if (typeof t !== 'object' || t === null || typeof t.connect !== 'function' || typeof t.listen !== 'function') {
    throw new WalshipError('INVALID_OPTIONS', `invalid options: ${what}.transport must be a Transport (with connect() and listen())`);
  }
  if (t.checkAddress !== undefined && typeof t.checkAddress !== 'function') {
    throw new WalshipError('INVALID_OPTIONS', `invalid options: ${what}.transport.checkAddress must be a function`);
  }
  const addresses = typeof endpoint.address === 'string' ? endpoint.address.split(',').map((a) => a.trim()) : endpoint.address;
  if (addresses.length === 0 || addresses.some((a) => a === '')) throw new WalshipError('INVALID_OPTIONS', `invalid options: ${what}.address has an empty address`);
  try {
    for (const address of addresses) t.checkAddress?.(address);
  } catch (err) {
    throw new WalshipError('INVALID_OPTIONS', `invalid options: ${what}.address: ${(err as Error).message}`, { cause: err });
  }
}

export function storageOf(options: { dir?: string; storage?: Storage }): Storage {
  return options.storage ?? new NodeStorage(options.dir as string);
}

/** The authentication limits among a node's options, as the replication server takes them. */
export function authenticationLimitsOf(options: ServeOptions): AuthenticationLimits {
  const limits: { -readonly [K in keyof AuthenticationLimits]: AuthenticationLimits[K] } = {};
  for (const key of ['handshakeTimeoutMs', 'authFailureDelayMs', 'maxAuthenticatingConnections', 'maxAuthenticatingPerAddress'] as const) {
    if (options[key] !== undefined) limits[key] = options[key];
  }
  return limits;
}
