/**
 * Every error walship throws or emits is a {@link WalshipError} with a stable `code`.
 * Codes are the contract; messages may change between versions.
 */

/** What an error code means and what to do about it, as the README's table gives them. */
export interface ErrorCodeInfo {
  /** When the code is thrown or emitted. */
  readonly when: string;
  /** What to do about it, and what state the failed call left behind. */
  readonly action: string;
}

/** {@link ERROR_CODES} with its literal type, from which {@link ErrorCode} is derived. */
const CODES = {
  INVALID_OPTIONS: {
    when: 'An options object failed validation: an unknown key, a wrong type or a value out of range. The message names the field.',
    action: 'Fix the named option. Nothing was opened or created.',
  },
  INVALID_ARGUMENT: {
    when: 'A method was called with an argument of the wrong type or shape (e.g. an entry that is not a Uint8Array).',
    action: 'Fix the call. The log is unchanged.',
  },
  INVALID_LSN: {
    when: "A string is not a valid LSN in PostgreSQL's `X/Y` form, or a number is not an LSN (a non-negative safe integer).",
    action: 'Pass an LSN produced by walship or formatted as `X/Y` in hexadecimal.',
  },
  ABORTED: {
    when: 'A wait or a read was cancelled through its AbortSignal.',
    action: 'None; the `cause` is the signal’s reason.',
  },
  RECORD_TOO_LARGE: {
    when: 'An appended batch does not fit in one WAL segment (records never span segments).',
    action: 'Split the batch, or open the log with a larger `segmentSize`. Nothing was appended.',
  },
  FILE_TOO_LARGE: {
    when: 'walship refused to write one of its own files because it could not read it back: a timeline history file over 1 MiB (a promotion, or a switch to an upstream’s new timeline, on a history that can grow no more), `walship.slots` over 1 MiB, or a control-file copy over 8 KiB. Nothing was written or recorded.',
    action: 'A standby whose promotion or timeline switch failed so goes on as it was; its timeline’s history is full (hundreds of promotions or more), so build a new cluster from a new primary in an empty directory. For `walship.slots` (a directory of older walship holding more slots than `maxReplicationSlots`), drop slots.',
  },
  READ_ONLY: {
    when: 'A write was attempted on a log (or node) that only receives WAL from upstream: a replica log, a standby.',
    action: 'Write on the primary; a standby becomes writable only when promoted.',
  },
  WAL_LOCKED: {
    when: 'The WAL directory is already open, in this process or in another one.',
    action: 'Close the other instance first. A lock left by a process that has died (or by an earlier run of a restarted container) is taken over automatically.',
  },
  WAL_CLOSED: {
    when: 'A call was made on a log that is closed, or that stopped after a fatal error.',
    action: 'Open the log again; recovery keeps every record whose flush resolved.',
  },
  WAL_IO: {
    when: 'A storage call failed, e.g. `ENOSPC` (disk full) while writing WAL or creating a segment. The original error is the `cause`.',
    action: 'For `ENOSPC` free space and retry (the error is transient); the appends that needed the space failed and the log stays readable.',
  },
  WAL_SYNC_FAILED: {
    when: 'An fsync/fdatasync failed. The log stops (fail-stop) and no waiting flush is acknowledged.',
    action: 'Check the device, then reopen the log; never assume the unflushed records are safe.',
  },
  WAL_CORRUPT: {
    when: 'A record or segment header failed its checksum or checks and valid WAL follows it, or a segment file is missing between segments that hold WAL: damage in the middle of the log, never a torn tail. `segment` and `offset` name the place (the message names the intact segments after it). Also a damaged control file, history file or snapshot, or a missing one that the node needs.',
    action: 'Nothing was changed on disk. Restore the named file (from a standby, an archive or a backup) and open again. A standby can instead be given an empty directory: it bootstraps from its upstream. To give up the WAL after a missing or damaged segment instead (its commits are lost), move the later segments the message names out of the directory. walship never skips or applies a damaged record.',
  },
  WAL_REMOVED: {
    when: 'A read asked for WAL in a segment that has already been removed.',
    action: 'Start from `oldestLsn` or later, or fetch the history elsewhere (a base backup, the archive).',
  },
  ARCHIVE_CONFLICT: {
    when: 'An archiver was asked to put a file under a name that already holds different content: two clusters (or two timelines that were never told apart) share one archive, or an archived file was changed.',
    action: 'Nothing was overwritten. Give each cluster its own archive; if a file in the archive was damaged, compare it with the node’s copy and remove the wrong one by hand.',
  },
  ARCHIVE_FAILED: {
    when: 'A call to an archiver failed (its error is the `cause`): a put, get or list threw, or took longer than its deadline. Archiving retries with back-off; a standby restoring from the archive tries again at its next poll.',
    action: 'Check the archive (credentials, space, network). Commits go on; WAL not yet archived stays on the primary’s disk until it is (see `archiverStatus()`).',
  },
  CONNECTION_FAILED: {
    when: 'A transport could not connect (refused, unreachable, reset) or a connection broke. The original error is the `cause`.',
    action: 'Transient: retry with back-off (standbys do this by themselves).',
  },
  TIMEOUT: {
    when: 'A connect or handshake did not complete within its time limit, or a standby heard nothing from its primary for `walReceiverTimeoutMs` (or a primary from its standby for `walSenderTimeoutMs`).',
    action: 'Transient: check the network and the peer, then retry (standbys reconnect by themselves).',
  },
  TLS_FAILED: {
    when: 'A TLS handshake failed, e.g. the server’s certificate is not trusted or does not match its name, or a required client certificate is missing.',
    action: 'Fix the certificates or the `ca` option; walship never falls back to an unverified connection.',
  },
  PROTOCOL_ERROR: {
    when: 'A peer sent a malformed, oversized, unknown or out-of-order message. Only that connection is closed.',
    action: 'Check that both ends run compatible walship versions; the process and other connections carry on.',
  },
  PROTOCOL_VERSION: {
    when: 'The peers speak different replication protocol versions; the message names both.',
    action: 'Upgrade the older side. A standby stops instead of retrying.',
  },
  AUTH_FAILED: {
    when: 'Authentication failed: wrong password, unknown user, no matching rule or a `reject` rule. The reason is never told to the client.',
    action: 'Check the user, the password and `auth.rules` on the server (its `auth:failed` event says which rule applied).',
  },
  WAL_FORMAT: {
    when: 'A segment was written by an unsupported on-disk format version or with a different segment size than requested.',
    action: 'Open it with the matching `segmentSize`, or with the walship version that wrote it.',
  },
  SYSTEM_ID_MISMATCH: {
    when: 'A standby reached a primary whose system id differs from its own: they belong to different clusters.',
    action: 'Point the standby at the right primary, or give it an empty directory so it bootstraps from this one. Nothing was written.',
  },
  STANDBY_DIRECTORY: {
    when: "`Primary.open` was given a standby's data directory (its control file says it is in recovery). Writing there would fork the cluster's history at the same positions.",
    action: 'Open it with `Standby.open`; to make it writable, promote the standby. Nothing was written.',
  },
  CONTROL_FILE_MISSING: {
    when: '`Primary.open` or `Standby.open` found no `walship.control` in a directory that holds a node\'s files (WAL segments, snapshots, timeline history files, slots): the control file was deleted or lost. Opening it as a new node would give its WAL a new system id (every standby would stop with `SYSTEM_ID_MISMATCH`), or discard it. The message says what was found.',
    action: 'Nothing was written. For a primary, rebuild the control file from the WAL with `rebuildControlFile({ dir, systemId })`, the system id being its standbys\' (`standby.systemId`), then open it again. Give a standby an empty directory: it bootstraps from its upstream. To start a new cluster, empty the directory.',
  },
  WAL_DIVERGED: {
    when: "A standby's WAL is not on its upstream's history: the bytes it holds before the position it streams from differ from the upstream's at the same positions (another node wrote there), or a former primary's directory was opened as a standby and its WAL cannot be shown to be a prefix of its upstream's.",
    action: 'The standby stops and keeps its directory as it is. Give it an empty directory (it bootstraps from its upstream), or point it at the node whose history it holds.',
  },
  TIMELINE_DIVERGED: {
    when: "A standby's upstream is on a newer timeline that left this standby's timeline at a switch point, and the standby had already applied WAL past it on the old timeline (a former primary's unconfirmed tail, or an asynchronous standby ahead of the promoted one), with `rewind: false`.",
    action: 'The standby stops with its directory untouched. Reopen it with `rewind: true` (the default) to discard that WAL (reported by the `rewind` event, kept aside on disk), or bootstrap it in an empty directory.',
  },
  TIMELINE_MISMATCH: {
    when: "A standby's upstream is on a timeline behind the standby's own, or on a timeline whose history does not contain the standby's (a revived old primary, or a node of another branch): following it would undo a promotion.",
    action: 'The standby does not follow it and keeps retrying (with several addresses, the next one). Point it at the newest primary, or give it an empty directory.',
  },
  NOT_IN_RECOVERY: {
    when: '`promote()` was called on a standby that is no longer in recovery (it was promoted already), or a standby that was promoted was used after its `Primary` took over.',
    action: 'Use the `Primary` that `promote()` resolved with (the `promoted` event carries it too).',
  },
  NOT_CONSISTENT: {
    when: '`promote()` was called before the standby reached a consistent state: it has not bootstrapped yet, or has not replayed up to the end of its base backup. Promoting would expose a state no primary ever had.',
    action: 'Wait for `consistent` (or `waitForConsistent()`) and promote again; the standby goes on streaming meanwhile.',
  },
  RECOVERY_TARGET_BEFORE_CONSISTENT: {
    when: "A standby's replay reached its `recoveryTarget` before its state was consistent: the target lies before the end of the base backup the standby started from (PostgreSQL's \"requested recovery stop point is before consistent recovery point\"). The standby stops (`failed`); nothing past the target was applied.",
    action: 'Reopen the standby with a later target (at or after its `consistent` point), or bootstrap it from a base backup taken before the target.',
  },
  TOO_MANY_WAL_SENDERS: {
    when: 'A standby connected while the primary already ran `maxWalSenders` WAL senders (streaming or base backups).',
    action: 'Transient: the standby retries by itself. Raise `maxWalSenders` if more standbys should connect at once.',
  },
  BASE_BACKUP_REQUIRED: {
    when: 'A new standby cannot start from the primary\'s WAL alone (its oldest WAL is gone) and cannot get a base backup: its application has no `restore` hook, or the primary\'s has no `snapshot` hook.',
    action: 'Give the application `snapshot` (on the primary) and `restore` (on the standby) hooks, or seed the standby with `primary.baseBackup()`.',
  },
  BASE_BACKUP_UNAVAILABLE: {
    when: "A base backup was asked of a primary whose application has no `snapshot` hook, so it cannot make one.",
    action: 'A new standby streams the WAL from its beginning instead; give the primary\'s application a `snapshot` hook to serve base backups.',
  },
  BASE_BACKUP_FAILED: {
    when: 'A base backup could not be taken or received: the application\'s `snapshot` threw, or the data did not match its size or checksum.',
    action: 'The standby keeps nothing of the failed attempt and retries; fix the failing hook.',
  },
  APPLY_FAILED: {
    when: 'The application\'s `apply` threw. Replay stops on that node; the batch is the `cause`\'s context.',
    action: 'Fix the application and reopen the node: the same batch is applied again, never skipped.',
  },
  HOT_STANDBY_OFF: {
    when: 'A read-side call (such as `waitForReplay`) was made on a warm standby (`hotStandby: false`), which serves nothing until promoted.',
    action: 'Open the standby with `hotStandby: true` to serve reads.',
  },
  INVALID_SLOT_NAME: {
    when: 'A replication slot name is not 1 to 63 lower-case letters, digits or underscores.',
    action: 'Choose a name such as `node_a_slot`. Nothing was created or changed.',
  },
  SLOT_EXISTS: {
    when: 'A replication slot was created with the name of one that already exists.',
    action: 'Use the existing slot, or drop it first if it belongs to a standby that is gone.',
  },
  SLOT_ACTIVE: {
    when: 'A replication slot is in use by another connection: a second standby tried to stream from it, or it was dropped or advanced while in use.',
    action: 'Give each standby its own slot; to drop or advance a slot, stop the standby using it first (its name is in `activeApplicationName`).',
  },
  SLOT_NOT_FOUND: {
    when: 'No replication slot has the given name.',
    action: 'Create the slot first (`createSlot`), or check the name against the list of slots.',
  },
  SLOT_LIMIT_REACHED: {
    when: 'A replication slot was to be created (`createSlot`, or CREATE_REPLICATION_SLOT from a standby or a tool) while the node already has `maxReplicationSlots` slots (PostgreSQL’s “all replication slots are in use”).',
    action: 'Drop a slot that is no longer needed, or raise `maxReplicationSlots`. Nothing was created; a replication connection that asked stays usable.',
  },
  SYNC_REP_CANCELED: {
    when: 'A commit stopped waiting for its synchronous standbys (its `signal` or `timeoutMs`, or the primary shutting down). The batch is committed locally and will stay committed, but the standbys have not confirmed it (PostgreSQL’s “canceling wait for synchronous replication” warning); it is never rolled back.',
    action: 'Treat the batch as durable on the primary only. Wait for it elsewhere (`waitForReplay` on a standby) if you need it replicated, and check that enough synchronous standbys are connected.',
  },
} as const satisfies Record<string, ErrorCodeInfo>;

/**
 * A stable error code; see the README's table for each code's meaning.
 * @useDeclaredType
 */
export type ErrorCode = keyof typeof CODES;

/**
 * The registry of error codes: what each means and what to do about it.
 * The README's table of codes is checked against this object by a unit test.
 */
export const ERROR_CODES: Readonly<Record<ErrorCode, ErrorCodeInfo>> = CODES;

const BRAND = Symbol.for('walship.error');

/** Options accepted by the {@link WalshipError} constructor. */
export interface WalshipErrorOptions {
  /** The underlying error, kept for diagnosis. */
  cause?: unknown;
  /** Whether retrying the same operation later may succeed. */
  transient?: boolean;
}

/** The one error type of walship's public API. */
export class WalshipError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCode;
  /** True when retrying may succeed (e.g. after freeing disk space). */
  readonly transient: boolean;

  constructor(code: ErrorCode, message: string, options: WalshipErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.transient = options.transient ?? false;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** `'WalshipError'`, for stack traces and logs; test with {@link isWalshipError}, not the name. */
  override get name(): string {
    return 'WalshipError';
  }
}

/** A damaged record or segment header in the middle of the log. */
export class WalCorruptError extends WalshipError {
  /** File name of the damaged segment. */
  readonly segment: string;
  /** Byte offset of the damage within that segment. */
  readonly offset: number;

  constructor(segment: string, offset: number, reason: string, options: WalshipErrorOptions = {}) {
    super('WAL_CORRUPT', `WAL is corrupt in segment ${segment} at offset ${offset}: ${reason}`, options);
    this.segment = segment;
    this.offset = offset;
  }

  /** `'WalCorruptError'`, for stack traces and logs. */
  override get name(): string {
    return 'WalCorruptError';
  }
}

/**
 * True when `err` is a walship error (from any copy of the package), and, when `code`
 * is given, has that code.
 */
export function isWalshipError(err: unknown, code?: ErrorCode): err is WalshipError {
  if (typeof err !== 'object' || err === null) return false;
  if ((err as Record<symbol, unknown>)[BRAND] !== true) return false;
  return code === undefined || (err as { code?: unknown }).code === code;
}

/** Wraps a signal's abort reason as an `ABORTED` error. */
export function abortError(signal: AbortSignal): WalshipError {
  return new WalshipError('ABORTED', 'the operation was aborted', { cause: signal.reason });
}

/** The errno code of a Node system error, if it has one. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
