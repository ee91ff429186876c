import crc32c from 'fast-crc32c';
import { ERROR_CODES, WalshipError, type ErrorCode } from '../errors.js';
import type { Lsn } from '../lsn.js';
import { FRAME_HEADER_BYTES, type Frame } from './frame-reader.js';

/**
 * The messages of walship's replication protocol, modelled on PostgreSQL's streaming
 * replication protocol, and their binary encoding. Pure encode/decode, no I/O; framing is
 * described in `frame-reader.ts`.
 *
 * Encoding of fields (all integers big-endian):
 * - u8, u16, u32: unsigned integers; booleans are a u8 that must be 0 or 1.
 * - LSNs, times and byte counts: u64 that must be at most 2^53 − 1 (`Number.MAX_SAFE_INTEGER`),
 *   so they are exact as JavaScript numbers. Times are microseconds since the Unix epoch.
 * - strings: u16 byte length, then that many bytes of well-formed UTF-8.
 * - byte fields: u32 length, then the bytes.
 * Every variable-length field has a cap (see {@link PROTOCOL_LIMITS}), and a message's body
 * must be consumed exactly.
 *
 * The layout of each message is its row in `SPECS` below: the fields in wire order.
 */

/** The protocol version this code speaks. Peers must agree on `major`; `minor` additions are backwards compatible. */
export const PROTOCOL_VERSION = Object.freeze({
  /** Changes when a message changes incompatibly; peers of different majors refuse each other. */
  major: 2,
  /** Changes when a compatible addition is made (1: `flushRequest`). */
  minor: 1,
});

/** Which side of a connection sends a message: clients are standbys, servers are primaries (or cascading standbys). */
export type ProtocolSide = 'client' | 'server';

/** Caps on variable-length fields, in bytes unless named a count. */
export const PROTOCOL_LIMITS = Object.freeze({
  /** User and application names, base backup labels, timeline history file names. */
  maxNameBytes: 255,
  /** Replication slot names and startup option keys (PostgreSQL's identifier limit). */
  maxSlotNameBytes: 63,
  /** Startup option values. */
  maxOptionValueBytes: 1024,
  /** Number of startup options. */
  maxOptions: 32,
  /** SASL mechanism names. */
  maxMechanismBytes: 32,
  /** Number of SASL mechanisms a server offers. */
  maxMechanisms: 8,
  /** SASL messages. */
  maxSaslBytes: 1024,
  /** Hot standby feedback horizons. */
  maxFeedbackBytes: 1024,
  /** Error message text. */
  maxErrorMessageBytes: 4096,
  /** Error codes: upper-case ASCII identifiers. */
  maxErrorCodeBytes: 63,
  /** Timeline history file content. */
  maxHistoryBytes: 1024 * 1024,
  /** WAL bytes in one `walData` message. */
  maxWalDataBytes: 16 * 1024 * 1024,
  /** Bytes in one `baseBackupChunk` message. */
  maxChunkBytes: 4 * 1024 * 1024,
});

// ---------------------------------------------------------------------------------------
// Client → server

/**
 * First message of a connection. Its layout is frozen across major versions, so a server
 * can always decode it and answer a version it does not speak with a `PROTOCOL_VERSION` error
 * naming both versions; {@link decodeMessage} therefore accepts any version numbers here.
 */
export interface StartupMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'startup';
  /** The {@link PROTOCOL_VERSION} major version the client speaks; the server refuses another with `PROTOCOL_VERSION`. */
  readonly protocolMajor: number;
  /** The client's minor version (informational: minor versions are compatible). */
  readonly protocolMinor: number;
  /** The user to authenticate as (1–255 bytes). */
  readonly user: string;
  /** Shown in the server's status and matched by synchronous standby names (≤ 255 bytes). */
  readonly applicationName: string;
  /** Extension settings: up to 32 pairs with distinct, non-empty keys (≤ 63 bytes) and values ≤ 1 KiB. */
  readonly options: readonly StartupOption[];
}

/** One extension setting of a {@link StartupMessage}. */
export interface StartupOption {
  /** The setting's name: 1–63 bytes, distinct within a startup message. */
  readonly key: string;
  /** The setting's value (≤ 1 KiB). */
  readonly value: string;
}

/** The client's first SASL message (SCRAM client-first-message). */
export interface SaslInitialResponseMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'saslInitialResponse';
  /** The chosen mechanism, one the server offered (1–32 bytes). */
  readonly mechanism: string;
  /** The mechanism's first message (≤ 1 KiB). */
  readonly data: Uint8Array;
}

/** A later client SASL message (SCRAM client-final-message). */
export interface SaslResponseMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'saslResponse';
  /** The mechanism's next message (≤ 1 KiB). */
  readonly data: Uint8Array;
}

/** Asks for the server's system id, timeline and flush LSN (IDENTIFY_SYSTEM). */
export interface IdentifySystemMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'identifySystem';
}

/** Asks for the history file of a timeline (TIMELINE_HISTORY). */
export interface TimelineHistoryMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'timelineHistory';
  /** The timeline whose history file is wanted (≥ 1). */
  readonly timeline: number;
}

/** Starts streaming WAL (START_REPLICATION). */
export interface StartReplicationMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'startReplication';
  /** The replication slot to stream from (≤ 63 bytes); `''` streams without a slot. */
  readonly slotName: string;
  /** Where streaming starts: a walship standby asks from the end of its flushed WAL. */
  readonly startLsn: Lsn;
  /** The timeline to stream, which the server must have in its history (≥ 1). */
  readonly timeline: number;
  /**
   * The lineage check: where the standby's last WAL bytes before `startLsn` begin (at most
   * 64 KiB back, within one segment), `null` when it has none. The server streams only when
   * its own bytes over `[checkFrom, startLsn)` have the CRC-32C `checkCrc`: WAL another node
   * wrote at the same positions is never continued.
   */
  readonly checkFrom: Lsn | null;
  /** CRC-32C of the standby's WAL bytes over `[checkFrom, startLsn)`; 0 when `checkFrom` is `null`. */
  readonly checkCrc: number;
}

/**
 * Creates a physical replication slot on the server (CREATE_REPLICATION_SLOT … PHYSICAL);
 * answered with {@link ReplicationSlotCreatedMessage} and `readyForCommand`.
 */
export interface CreateReplicationSlotMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'createReplicationSlot';
  /** 1 to 63 bytes: lower-case letters, digits and underscore (checked by the server). */
  readonly slotName: string;
  /** Reserve WAL at once (RESERVE_WAL), instead of where the first standby using it starts. */
  readonly reserveWal: boolean;
  /**
   * With `reserveWal`: reserve from this position (a standby that already has WAL up to
   * here), which the server must still have; `null` lets the server choose.
   */
  readonly reserveFrom: Lsn | null;
}

/** Drops a replication slot on the server (DROP_REPLICATION_SLOT); answered with `readyForCommand`. */
export interface DropReplicationSlotMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'dropReplicationSlot';
  /** The slot to drop: 1 to 63 bytes. */
  readonly slotName: string;
  /** Wait until the slot is no longer in use (WAIT), instead of failing with `SLOT_ACTIVE`. */
  readonly wait: boolean;
}

/** Asks for a base backup (BASE_BACKUP). */
export interface BaseBackupMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'baseBackup';
  /** A label recorded with the backup (≤ 255 bytes). */
  readonly label: string;
  /** Bytes per second the server may send; 0 means unlimited. */
  readonly maxRate: number;
}

/** The standby's progress: what it has written, flushed and applied. */
export interface StandbyStatusUpdateMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'standbyStatusUpdate';
  /** End of the WAL the standby has written (not necessarily flushed). */
  readonly writeLsn: Lsn;
  /** End of the WAL the standby has flushed to its disk; a slot's `restartLsn` follows it. */
  readonly flushLsn: Lsn;
  /** End of the WAL the standby's application has applied. */
  readonly applyLsn: Lsn;
  /** Microseconds since the Unix epoch. */
  readonly sendTime: number;
  /** Asks the server to reply with a keepalive at once. */
  readonly replyRequested: boolean;
}

/** Tells the server what the standby still needs kept (an application-defined horizon). */
export interface HotStandbyFeedbackMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'hotStandbyFeedback';
  /** Microseconds since the Unix epoch. */
  readonly sendTime: number;
  /** Application-defined (≤ 1 KiB). */
  readonly horizon: Uint8Array;
}

/** Ends the connection cleanly. */
export interface TerminateMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'terminate';
}

// ---------------------------------------------------------------------------------------
// Server → client

/** Authentication succeeded. */
export interface AuthOkMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'authOk';
}

/** The client must authenticate with SASL using one of these mechanisms (1–8). */
export interface AuthSaslMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'authSasl';
  /** The mechanisms the server accepts (each 1–32 bytes); walship offers `SCRAM-SHA-256`. */
  readonly mechanisms: readonly string[];
}

/** A SASL challenge (SCRAM server-first-message). */
export interface AuthSaslContinueMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'authSaslContinue';
  /** The mechanism's challenge (≤ 1 KiB). */
  readonly data: Uint8Array;
}

/** The last SASL message (SCRAM server-final-message, which proves the server knows the verifier). */
export interface AuthSaslFinalMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'authSaslFinal';
  /** The mechanism's last message (≤ 1 KiB); the client checks it before trusting the server. */
  readonly data: Uint8Array;
}

/**
 * An error; the server closes the connection after sending it. On the wire the code is any
 * upper-case identifier; a code this version does not know (from a newer peer) decodes as
 * `PROTOCOL_ERROR`, with the original code at the start of the message, so that newer
 * servers never break older clients.
 */
export interface ErrorMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'error';
  /** The error's code; one this version does not know arrives as `PROTOCOL_ERROR`. */
  readonly code: ErrorCode;
  /** ≤ 4 KiB. */
  readonly message: string;
}

/** The server waits for the next command. */
export interface ReadyForCommandMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'readyForCommand';
}

/** The answer to {@link IdentifySystemMessage}. */
export interface IdentifySystemResultMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'identifySystemResult';
  /** The cluster's identity: 16 lower-case hexadecimal characters. */
  readonly systemId: string;
  /** The server's current timeline. */
  readonly timeline: number;
  /** The end of the WAL the server has flushed (on a standby: what it has received and flushed). */
  readonly flushLsn: Lsn;
  /** The WAL's segment size: a standby's log must use the same to hold the same bytes. */
  readonly segmentSize: number;
}

/** The answer to {@link CreateReplicationSlotMessage}. */
export interface ReplicationSlotCreatedMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'replicationSlotCreated';
  /** The slot's name, as asked. */
  readonly slotName: string;
  /** Where the slot holds WAL from; `null` when it has not reserved any yet. */
  readonly restartLsn: Lsn | null;
}

/** The answer to {@link TimelineHistoryMessage}. */
export interface TimelineHistoryResultMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'timelineHistoryResult';
  /** The timeline the history file belongs to. */
  readonly timeline: number;
  /** ≤ 255 bytes. */
  readonly fileName: string;
  /** ≤ 1 MiB. */
  readonly content: Uint8Array;
}

/** Streaming has started at `startLsn` on `timeline`; `walData` and `keepalive` follow. */
export interface ReplicationStartedMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'replicationStarted';
  /** The timeline being streamed. */
  readonly timeline: number;
  /** Where the stream starts; the first `walData` begins here. */
  readonly startLsn: Lsn;
  /**
   * Whether the server compared the standby's last bytes with its own (they matched, or it
   * would have refused with `WAL_DIVERGED`); false when there was nothing to compare, or the
   * server no longer has those bytes.
   */
  readonly historyChecked: boolean;
}

/** WAL bytes starting at `startLsn` (PostgreSQL's XLogData). */
export interface WalDataMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'walData';
  /** LSN of the first byte of `data`; each message continues where the previous one ended. */
  readonly startLsn: Lsn;
  /** The server's current end of WAL, which may be ahead of this message's data. */
  readonly walEnd: Lsn;
  /** Microseconds since the Unix epoch. */
  readonly sendTime: number;
  /** ≤ 16 MiB, possibly empty; `startLsn + data.length` is at most 2^53. */
  readonly data: Uint8Array;
}

/** The server is alive (PostgreSQL's primary keepalive message). */
export interface KeepaliveMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'keepalive';
  /** The server's current end of WAL. */
  readonly walEnd: Lsn;
  /** Microseconds since the Unix epoch. */
  readonly sendTime: number;
  /** The client should answer with a `standbyStatusUpdate` at once. */
  readonly replyRequested: boolean;
}

/**
 * Write the WAL up to `writeLsn` at once, and make the WAL up to `flushLsn` durable at once:
 * commits wait for this standby to write (`remote_write`), or to flush or apply, that far.
 * Sent only to a standby that said in its startup options that it flushes on request (see
 * `FLUSH_ON_REQUEST_OPTION`); the first one, sent when streaming starts, tells it that this
 * server will ask, and from then on it paces the flushes nobody asked for.
 */
export interface FlushRequestMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'flushRequest';
  /** The position to write at once; 0 asks for nothing yet. */
  readonly writeLsn: Lsn;
  /** The position to make durable at once; 0 asks for nothing yet. */
  readonly flushLsn: Lsn;
}

/** The streamed timeline ended at `switchLsn`; history continues on `nextTimeline`. */
export interface EndOfTimelineMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'endOfTimeline';
  /** The timeline that follows the one that ended. */
  readonly nextTimeline: number;
  /** Where the ended timeline stops and `nextTimeline` branches off; the standby's WAL must end here to follow. */
  readonly switchLsn: Lsn;
}

/** A base backup starts; `baseBackupChunk` messages and one `baseBackupEnd` follow. */
export interface BaseBackupBeginMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'baseBackupBegin';
  /** The snapshot includes every batch before this LSN. */
  readonly startLsn: Lsn;
  /** The timeline the backup was taken on. */
  readonly timeline: number;
  /** ≤ 255 bytes. */
  readonly label: string;
  /** The snapshot's size, or `null` when the server does not know it in advance. */
  readonly totalBytes: number | null;
}

/** A piece of the snapshot at byte `offset`, with its CRC-32C (see {@link baseBackupChunk}). */
export interface BaseBackupChunkMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'baseBackupChunk';
  /** Byte offset of `data` in the snapshot; chunks arrive in order without gaps. */
  readonly offset: number;
  /** CRC-32C of `data`; checked by both {@link encodeMessage} and {@link decodeMessage}. */
  readonly crc32c: number;
  /** ≤ 4 MiB. */
  readonly data: Uint8Array;
}

/** The base backup is complete. */
export interface BaseBackupEndMessage {
  /** Selects the message type: its type byte is {@link MESSAGE_TYPES}`[kind]`. */
  readonly kind: 'baseBackupEnd';
  /** The snapshot's size: the sum of the chunks' lengths. */
  readonly totalBytes: number;
  /** SHA-256 of the whole snapshot (32 bytes). */
  readonly sha256: Uint8Array;
  /** Replay must reach this LSN before the restored state is consistent. */
  readonly endLsn: Lsn;
}

/** A message a client (standby) sends. */
export type ClientMessage =
  | StartupMessage
  | SaslInitialResponseMessage
  | SaslResponseMessage
  | IdentifySystemMessage
  | TimelineHistoryMessage
  | StartReplicationMessage
  | CreateReplicationSlotMessage
  | DropReplicationSlotMessage
  | BaseBackupMessage
  | StandbyStatusUpdateMessage
  | HotStandbyFeedbackMessage
  | TerminateMessage;

/** A message a server (primary) sends. */
export type ServerMessage =
  | AuthOkMessage
  | AuthSaslMessage
  | AuthSaslContinueMessage
  | AuthSaslFinalMessage
  | ErrorMessage
  | ReadyForCommandMessage
  | IdentifySystemResultMessage
  | ReplicationSlotCreatedMessage
  | TimelineHistoryResultMessage
  | ReplicationStartedMessage
  | WalDataMessage
  | KeepaliveMessage
  | FlushRequestMessage
  | EndOfTimelineMessage
  | BaseBackupBeginMessage
  | BaseBackupChunkMessage
  | BaseBackupEndMessage;

/** Any protocol message. */
export type Message = ClientMessage | ServerMessage;

/** The `kind` of a message. */
export type MessageKind = Message['kind'];

// ---------------------------------------------------------------------------------------
// Field codecs

const TWO_32 = 0x1_0000_0000;
/** Largest high word of a u64 that stays ≤ 2^53 − 1. */
const MAX_SAFE_HIGH = 0x1f_ffff;
/** Byte fields at least this long are passed by {@link encodeMessageParts} as views instead of copied. */
const VIEW_THRESHOLD = 512;
const SYSTEM_ID = /^[0-9a-f]{16}$/;
const ERROR_CODE = /^[A-Z][A-Z0-9_]*$/;
/** With the `u` flag, `\p{Cs}` matches only unpaired surrogates, which UTF-8 cannot carry. */
const LONE_SURROGATE = /\p{Cs}/u;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Encoding state: which field is being checked, and how many bytes go out as separate views. */
interface Sizer {
  viewBytes: number;
  splitViews: boolean;
  fail(problem: string): never;
}

/** Writes a frame whose size has been computed and whose values have been checked. */
class Writer {
  readonly parts: Buffer[] = [];
  pos = 0;
  #partStart = 0;

  constructor(
    readonly buf: Buffer,
    readonly splitViews: boolean,
  ) {}

  u8(value: number): void {
    this.pos = this.buf.writeUInt8(value, this.pos);
  }

  u16(value: number): void {
    this.pos = this.buf.writeUInt16BE(value, this.pos);
  }

  u32(value: number): void {
    this.pos = this.buf.writeUInt32BE(value, this.pos);
  }

  u64(value: number): void {
    const high = Math.floor(value / TWO_32);
    this.u32(high);
    this.u32(value - high * TWO_32);
  }

  string(value: string): void {
    const length = this.buf.write(value, this.pos + 2, 'utf8');
    this.u16(length);
    this.pos += length;
  }

  bytes(value: Uint8Array, withLength: boolean): void {
    if (withLength) this.u32(value.length);
    if (this.splitViews && value.length >= VIEW_THRESHOLD) {
      this.parts.push(this.buf.subarray(this.#partStart, this.pos), asBuffer(value));
      this.#partStart = this.pos;
    } else {
      this.buf.set(value, this.pos);
      this.pos += value.length;
    }
  }

  finish(): Buffer[] {
    if (this.#partStart < this.pos) this.parts.push(this.buf.subarray(this.#partStart, this.pos));
    return this.parts;
  }
}

/** Decoding state over one frame body. */
class Reader {
  pos = 0;
  field = '';

  constructor(
    readonly body: Buffer,
    readonly from: ProtocolSide,
    public kind: string,
  ) {}

  fail(problem: string): never {
    const what = this.field === '' ? '' : `${this.field} `;
    throw new WalshipError('PROTOCOL_ERROR', `invalid ${this.kind} message from the ${this.from}: ${what}${problem}`);
  }

  need(n: number): void {
    if (this.body.length - this.pos < n) this.fail(`is truncated (${n} bytes needed, ${this.body.length - this.pos} left)`);
  }

  u8(): number {
    this.need(1);
    return this.body[this.pos++] as number;
  }

  u16(): number {
    this.need(2);
    const value = this.body.readUInt16BE(this.pos);
    this.pos += 2;
    return value;
  }

  u32(): number {
    this.need(4);
    const value = this.body.readUInt32BE(this.pos);
    this.pos += 4;
    return value;
  }

  u64(): number {
    this.need(8);
    const high = this.body.readUInt32BE(this.pos);
    const low = this.body.readUInt32BE(this.pos + 4);
    if (high > MAX_SAFE_HIGH) this.fail('is above 2^53 - 1');
    this.pos += 8;
    return high * TWO_32 + low;
  }

  /** A view of the next `n` bytes; `n` must already be checked against the field's cap. */
  view(n: number): Buffer {
    this.need(n);
    const view = this.body.subarray(this.pos, this.pos + n);
    this.pos += n;
    return view;
  }
}

/** How one field is checked, sized, written and read. */
interface Codec<T> {
  /** Checks `value` (it may come from untyped callers) and returns its encoded size. */
  size(value: T, s: Sizer): number;
  write(w: Writer, value: T): void;
  /** Reads and checks a value; never allocates more than the field's cap. */
  read(r: Reader): T;
}

function isUint(value: unknown, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= max;
}

function uint(bytes: 1 | 2 | 4, min = 0): Codec<number> {
  const max = 2 ** (bytes * 8) - 1;
  return {
    size(value, s) {
      if (!isUint(value, max) || value < min) s.fail(`must be an integer from ${min} to ${max}, got ${describe(value)}`);
      return bytes;
    },
    write(w, value) {
      if (bytes === 1) w.u8(value);
      else if (bytes === 2) w.u16(value);
      else w.u32(value);
    },
    read(r) {
      const value = bytes === 1 ? r.u8() : bytes === 2 ? r.u16() : r.u32();
      if (value < min) r.fail(`must be at least ${min}, got ${value}`);
      return value;
    },
  };
}

const u16 = uint(2);
const u32 = uint(4);
/** Timelines start at 1, as in PostgreSQL. */
const timeline = uint(4, 1);

/** LSNs, times and byte offsets: u64 limited to safe integers. */
const u64: Codec<number> = {
  size(value, s) {
    if (!isUint(value, Number.MAX_SAFE_INTEGER)) s.fail(`must be an integer from 0 to 2^53 - 1, got ${describe(value)}`);
    return 8;
  },
  write: (w, value) => w.u64(value),
  read: (r) => r.u64(),
};

const bool: Codec<boolean> = {
  size(value, s) {
    if (typeof value !== 'boolean') s.fail(`must be a boolean, got ${describe(value)}`);
    return 1;
  },
  write: (w, value) => w.u8(value ? 1 : 0),
  read(r) {
    const value = r.u8();
    if (value > 1) r.fail(`must be 0 or 1, got ${value}`);
    return value === 1;
  },
};

function string(maxBytes: number, minBytes = 0, pattern?: RegExp): Codec<string> {
  return {
    size(value, s) {
      if (typeof value !== 'string') s.fail(`must be a string, got ${describe(value)}`);
      if (LONE_SURROGATE.test(value)) s.fail('contains an unpaired surrogate, which UTF-8 cannot encode');
      const length = Buffer.byteLength(value, 'utf8');
      if (length < minBytes || length > maxBytes) s.fail(`must be ${range(minBytes, maxBytes)} bytes of UTF-8, got ${length}`);
      if (pattern !== undefined && !pattern.test(value)) s.fail(`does not match ${String(pattern)}`);
      return 2 + length;
    },
    write: (w, value) => w.string(value),
    read(r) {
      const length = r.u16();
      if (length < minBytes || length > maxBytes) r.fail(`must be ${range(minBytes, maxBytes)} bytes, got ${length}`);
      const value = decodeUtf8(r, r.view(length));
      if (pattern !== undefined && !pattern.test(value)) r.fail(`does not match ${String(pattern)}`);
      return value;
    },
  };
}

function range(min: number, max: number): string {
  return min === max ? `exactly ${min}` : `${min} to ${max}`;
}

function decodeUtf8(r: Reader, view: Buffer): string {
  try {
    return utf8.decode(view);
  } catch {
    return r.fail('is not valid UTF-8');
  }
}

/** Byte fields: u32 length and bytes, or exactly `fixed` bytes without a length. Decoded as views of the frame. */
function bytes(maxBytes: number, fixed?: number): Codec<Uint8Array> {
  return {
    size(value, s) {
      if (!(value instanceof Uint8Array)) s.fail(`must be a Uint8Array, got ${describe(value)}`);
      if (fixed !== undefined) {
        if (value.length !== fixed) s.fail(`must be exactly ${fixed} bytes, got ${value.length}`);
      } else if (value.length > maxBytes) {
        s.fail(`must be at most ${maxBytes} bytes, got ${value.length}`);
      }
      if (s.splitViews && value.length >= VIEW_THRESHOLD) s.viewBytes += value.length;
      return (fixed === undefined ? 4 : 0) + value.length;
    },
    write: (w, value) => w.bytes(value, fixed === undefined),
    read(r) {
      if (fixed !== undefined) return r.view(fixed);
      const length = r.u32();
      if (length > maxBytes) r.fail(`must be at most ${maxBytes} bytes, got ${length}`);
      return r.view(length);
    },
  };
}

/** A u16 count (`min`..`max`) and that many items. */
function list<T>(item: Codec<T>, min: number, max: number): Codec<readonly T[]> {
  return {
    size(value, s) {
      if (!Array.isArray(value)) s.fail(`must be an array, got ${describe(value)}`);
      if (value.length < min || value.length > max) s.fail(`must have ${min} to ${max} items, got ${value.length}`);
      let size = 2;
      for (const v of value as readonly T[]) size += item.size(v, s);
      return size;
    },
    write(w, value) {
      w.u16(value.length);
      for (const v of value) item.write(w, v);
    },
    read(r) {
      const count = r.u16();
      if (count < min || count > max) r.fail(`must have ${min} to ${max} items, got ${count}`);
      const items: T[] = [];
      for (let i = 0; i < count; i++) items.push(item.read(r));
      return items;
    },
  };
}

const optionKey = string(PROTOCOL_LIMITS.maxSlotNameBytes, 1);
const optionValue = string(PROTOCOL_LIMITS.maxOptionValueBytes);
const startupOption: Codec<StartupOption> = {
  size(value, s) {
    if (typeof value !== 'object' || value === null) s.fail(`must be { key, value } objects, got ${describe(value)}`);
    return optionKey.size(value.key, s) + optionValue.size(value.value, s);
  },
  write(w, value) {
    optionKey.write(w, value.key);
    optionValue.write(w, value.value);
  },
  read: (r) => ({ key: optionKey.read(r), value: optionValue.read(r) }),
};

/** A u8 presence flag and a u64 that must be 0 when absent, so every value has one encoding. */
const optionalU64: Codec<number | null> = {
  size(value, s) {
    if (value !== null && !isUint(value, Number.MAX_SAFE_INTEGER)) {
      s.fail(`must be null or an integer from 0 to 2^53 - 1, got ${describe(value)}`);
    }
    return 9;
  },
  write(w, value) {
    w.u8(value === null ? 0 : 1);
    w.u64(value ?? 0);
  },
  read(r) {
    const present = r.u8();
    if (present > 1) r.fail(`has presence flag ${present}; must be 0 or 1`);
    const value = r.u64();
    if (present === 0 && value !== 0) r.fail('is absent but its value bytes are not zero');
    return present === 1 ? value : null;
  },
};

const wireErrorCode = string(PROTOCOL_LIMITS.maxErrorCodeBytes, 1, ERROR_CODE);
/** Sends only codes this version knows; receives any well-formed code (see {@link ErrorMessage}). */
const errorCode: Codec<ErrorCode> = {
  size(value, s) {
    if (typeof value !== 'string' || !Object.hasOwn(ERROR_CODES, value)) s.fail(`must be a key of ERROR_CODES, got ${describe(value)}`);
    return wireErrorCode.size(value, s);
  },
  write: (w, value) => wireErrorCode.write(w, value),
  read: (r) => wireErrorCode.read(r) as ErrorCode, // unknown codes are mapped after decoding
};

// ---------------------------------------------------------------------------------------
// The message table

type Fields<M> = { readonly [F in Exclude<keyof M, 'kind'>]-?: Codec<M[F]> };

interface Spec<M> {
  /** The type byte. */
  readonly type: number;
  readonly from: ProtocolSide;
  /** For messages sharing a type byte: a u32 at the start of the body that tells them apart. */
  readonly subcode?: number;
  /** The body's fields, in wire order. */
  readonly fields: Fields<M>;
  /** Checks across fields; returns the problem, naming the field, if any. */
  readonly check?: (msg: M) => string | undefined;
}

type SpecTable = { readonly [K in MessageKind]: Spec<Extract<Message, { kind: K }>> };

const code = (char: string): number => char.charCodeAt(0);
const L = PROTOCOL_LIMITS;

const SPECS: SpecTable = {
  // client → server
  startup: {
    type: code('S'),
    from: 'client',
    fields: {
      protocolMajor: u16,
      protocolMinor: u16,
      user: string(L.maxNameBytes, 1),
      applicationName: string(L.maxNameBytes),
      options: list(startupOption, 0, L.maxOptions),
    },
    check(msg) {
      const keys = new Set(msg.options.map((option) => option.key));
      return keys.size === msg.options.length ? undefined : 'options has duplicate keys';
    },
  },
  saslInitialResponse: {
    type: code('p'),
    from: 'client',
    fields: { mechanism: string(L.maxMechanismBytes, 1), data: bytes(L.maxSaslBytes) },
  },
  saslResponse: { type: code('q'), from: 'client', fields: { data: bytes(L.maxSaslBytes) } },
  identifySystem: { type: code('I'), from: 'client', fields: {} },
  timelineHistory: { type: code('T'), from: 'client', fields: { timeline } },
  startReplication: {
    type: code('R'),
    from: 'client',
    fields: { slotName: string(L.maxSlotNameBytes), startLsn: u64, timeline, checkFrom: optionalU64, checkCrc: u32 },
  },
  createReplicationSlot: { type: code('C'), from: 'client', fields: { slotName: string(L.maxSlotNameBytes, 1), reserveWal: bool, reserveFrom: optionalU64 } },
  dropReplicationSlot: { type: code('D'), from: 'client', fields: { slotName: string(L.maxSlotNameBytes, 1), wait: bool } },
  baseBackup: { type: code('B'), from: 'client', fields: { label: string(L.maxNameBytes), maxRate: u32 } },
  standbyStatusUpdate: {
    type: code('r'),
    from: 'client',
    fields: { writeLsn: u64, flushLsn: u64, applyLsn: u64, sendTime: u64, replyRequested: bool },
  },
  hotStandbyFeedback: { type: code('h'), from: 'client', fields: { sendTime: u64, horizon: bytes(L.maxFeedbackBytes) } },
  terminate: { type: code('X'), from: 'client', fields: {} },

  // server → client; sub-codes of 'A' follow PostgreSQL's authentication request codes
  authOk: { type: code('A'), from: 'server', subcode: 0, fields: {} },
  authSasl: {
    type: code('A'),
    from: 'server',
    subcode: 10,
    fields: { mechanisms: list(string(L.maxMechanismBytes, 1), 1, L.maxMechanisms) },
  },
  authSaslContinue: { type: code('A'), from: 'server', subcode: 11, fields: { data: bytes(L.maxSaslBytes) } },
  authSaslFinal: { type: code('A'), from: 'server', subcode: 12, fields: { data: bytes(L.maxSaslBytes) } },
  error: { type: code('E'), from: 'server', fields: { code: errorCode, message: string(L.maxErrorMessageBytes) } },
  readyForCommand: { type: code('Z'), from: 'server', fields: {} },
  identifySystemResult: {
    type: code('i'),
    from: 'server',
    fields: { systemId: string(16, 16, SYSTEM_ID), timeline, flushLsn: u64, segmentSize: u32 },
  },
  replicationSlotCreated: { type: code('o'), from: 'server', fields: { slotName: string(L.maxSlotNameBytes, 1), restartLsn: optionalU64 } },
  timelineHistoryResult: {
    type: code('t'),
    from: 'server',
    fields: { timeline, fileName: string(L.maxNameBytes), content: bytes(L.maxHistoryBytes) },
  },
  replicationStarted: { type: code('s'), from: 'server', fields: { timeline, startLsn: u64, historyChecked: bool } },
  walData: {
    type: code('w'),
    from: 'server',
    fields: { startLsn: u64, walEnd: u64, sendTime: u64, data: bytes(L.maxWalDataBytes) },
    // Subtracting keeps the comparison exact where a sum above 2^53 would round.
    check: (msg) => (msg.data.length > 2 ** 53 - msg.startLsn ? 'data ends beyond LSN 2^53' : undefined),
  },
  keepalive: { type: code('k'), from: 'server', fields: { walEnd: u64, sendTime: u64, replyRequested: bool } },
  flushRequest: { type: code('f'), from: 'server', fields: { writeLsn: u64, flushLsn: u64 } },
  endOfTimeline: { type: code('e'), from: 'server', fields: { nextTimeline: timeline, switchLsn: u64 } },
  baseBackupBegin: {
    type: code('b'),
    from: 'server',
    fields: { startLsn: u64, timeline, label: string(L.maxNameBytes), totalBytes: optionalU64 },
  },
  baseBackupChunk: {
    type: code('c'),
    from: 'server',
    fields: { offset: u64, crc32c: u32, data: bytes(L.maxChunkBytes) },
    check(msg) {
      if (msg.data.length > Number.MAX_SAFE_INTEGER - msg.offset) return 'data ends beyond offset 2^53 - 1';
      return checkChunk(msg) ? undefined : 'crc32c does not match the data';
    },
  },
  baseBackupEnd: {
    type: code('d'),
    from: 'server',
    fields: { totalBytes: u64, sha256: bytes(32, 32), endLsn: u64 },
  },
};

/** The type byte of each message kind (the `authentication` kinds share `'A'`). */
export const MESSAGE_TYPES: Readonly<Record<MessageKind, number>> = Object.freeze(
  Object.fromEntries(Object.entries(SPECS).map(([kind, spec]) => [kind, spec.type])) as Record<MessageKind, number>,
);

/** A table row prepared for the codec loops. */
interface Row {
  readonly kind: MessageKind;
  readonly spec: Spec<Message>;
  readonly fields: ReadonlyArray<readonly [string, Codec<unknown>]>;
}

/** Per side: type byte → row, or sub-code → row for shared type bytes. */
type TypeIndex = Map<number, Row | Map<number, Row>>;

const ROWS = new Map<MessageKind, Row>();
const BY_TYPE: Record<ProtocolSide, TypeIndex> = { client: new Map(), server: new Map() };

for (const [kind, spec] of Object.entries(SPECS) as Array<[MessageKind, Spec<Message>]>) {
  const row: Row = { kind, spec, fields: Object.entries(spec.fields) as Array<[string, Codec<unknown>]> };
  ROWS.set(kind, row);
  const index = BY_TYPE[spec.from];
  const other = BY_TYPE[spec.from === 'client' ? 'server' : 'client'];
  const existing = index.get(spec.type);
  // Type bytes are unique per direction, and never reused across directions, so a frame sent
  // the wrong way is always recognised as such.
  if (other.has(spec.type)) throw new Error(`type ${spec.type} is used in both directions`);
  if (spec.subcode === undefined) {
    if (existing !== undefined) throw new Error(`type ${spec.type} is used twice`);
    index.set(spec.type, row);
  } else {
    const sub = existing ?? new Map<number, Row>();
    if (!(sub instanceof Map) || sub.has(spec.subcode)) throw new Error(`type ${spec.type}/${spec.subcode} is used twice`);
    sub.set(spec.subcode, row);
    index.set(spec.type, sub);
  }
}

// ---------------------------------------------------------------------------------------
// Encoding and decoding

function lookupRow(msg: unknown): Row {
  const kind = (msg as { kind?: unknown } | null)?.kind;
  const row = typeof kind === 'string' ? ROWS.get(kind as MessageKind) : undefined;
  if (row === undefined) throw new WalshipError('INVALID_ARGUMENT', `cannot encode a message of unknown kind ${describe(kind)}`);
  return row;
}

function encode(msg: Message, splitViews: boolean): Buffer[] {
  const row = lookupRow(msg);
  const values = msg as unknown as Record<string, unknown>;
  let field = '';
  const sizer: Sizer = {
    viewBytes: 0,
    splitViews,
    fail(problem) {
      throw new WalshipError('INVALID_ARGUMENT', `cannot encode ${row.kind}: ${field} ${problem}`);
    },
  };
  let size = FRAME_HEADER_BYTES + (row.spec.subcode === undefined ? 0 : 4);
  for (const [name, codec] of row.fields) {
    field = name;
    size += codec.size(values[name], sizer);
  }
  const problem = row.spec.check?.(msg);
  if (problem !== undefined) throw new WalshipError('INVALID_ARGUMENT', `cannot encode ${row.kind}: ${problem}`);

  // Every byte of the buffer is written below, so uninitialised memory never leaks out.
  const w = new Writer(Buffer.allocUnsafe(size - sizer.viewBytes), splitViews);
  w.u32(size - 4);
  w.u8(row.spec.type);
  if (row.spec.subcode !== undefined) w.u32(row.spec.subcode);
  for (const [name, codec] of row.fields) codec.write(w, values[name]);
  if (w.pos !== w.buf.length) throw new Error(`walship bug: ${row.kind} wrote ${w.pos} of ${w.buf.length} bytes`);
  return w.finish();
}

/**
 * Encodes `msg` as one frame (length, type, body) in a single buffer.
 * Throws `INVALID_ARGUMENT`, naming the message kind and field, for any value the decoder
 * would reject, so what encodes always decodes to an equal message.
 */
export function encodeMessage(msg: Message): Buffer {
  const [frame] = encode(msg, false);
  return frame as Buffer;
}

/**
 * Encodes `msg` like {@link encodeMessage}, but returns the frame in parts to be written in
 * order (e.g. with `writev`): byte fields of 512 bytes or more, such as the data of
 * `walData`, are views of the caller's bytes rather than copies, so they must not change
 * until written. A `walData` with a large payload encodes as `[header, data]`.
 */
export function encodeMessageParts(msg: Message): Buffer[] {
  return encode(msg, true);
}

/**
 * Decodes a frame sent by `from`. Checks that the type is one `from` may send, every length
 * against its cap before reading, every value's range and enum, and that the body is used
 * up exactly; byte fields are views of `frame.body`. Throws only a `PROTOCOL_ERROR`
 * {@link WalshipError} whose message names the message kind and the field.
 *
 * A `startup` with any protocol version decodes (the handshake compares versions); an
 * `error` with a code this version does not know decodes as `PROTOCOL_ERROR` (see {@link ErrorMessage}).
 */
export function decodeMessage(frame: Frame, from: 'client'): ClientMessage;
export function decodeMessage(frame: Frame, from: 'server'): ServerMessage;
export function decodeMessage(frame: Frame, from: ProtocolSide): Message;
export function decodeMessage(frame: Frame, from: ProtocolSide): Message {
  const r = new Reader(frame.body, from, 'unknown');
  const row = findRow(r, frame.type);
  r.kind = row.kind;
  const msg: Record<string, unknown> = { kind: row.kind };
  for (const [name, codec] of row.fields) {
    r.field = name;
    msg[name] = codec.read(r);
  }
  r.field = '';
  const extra = frame.body.length - r.pos;
  if (extra !== 0) r.fail(`${extra} unexpected byte${extra === 1 ? '' : 's'} after the last field`);
  const decoded = msg as unknown as Message;
  const problem = row.spec.check?.(decoded);
  if (problem !== undefined) r.fail(problem);
  if (decoded.kind === 'error' && !Object.hasOwn(ERROR_CODES, decoded.code)) {
    return { kind: 'error', code: 'PROTOCOL_ERROR', message: `unknown error code ${decoded.code}: ${decoded.message}` };
  }
  return decoded;
}

function findRow(r: Reader, type: number): Row {
  const entry = BY_TYPE[r.from].get(type);
  if (entry === undefined) {
    const other = r.from === 'client' ? 'server' : 'client';
    const theirs = BY_TYPE[other].get(type);
    const problem =
      theirs === undefined
        ? `unknown message type ${typeName(type)} from the ${r.from}`
        : `message type ${typeName(type)} (${theirs instanceof Map ? 'authentication' : theirs.kind}) is sent by the ${other}, not by the ${r.from}`;
    throw new WalshipError('PROTOCOL_ERROR', problem);
  }
  if (!(entry instanceof Map)) return entry;
  r.kind = 'authentication';
  r.field = 'subcode';
  const subcode = r.u32();
  const row = entry.get(subcode);
  if (row === undefined) r.fail(`${subcode} is not one of ${[...entry.keys()].join(', ')}`);
  return row;
}

function typeName(type: number): string {
  return type > 0x20 && type < 0x7f ? `'${String.fromCharCode(type)}'` : `0x${type.toString(16).padStart(2, '0')}`;
}

/** Whether a chunk's `crc32c` matches its data. */
export function checkChunk(msg: BaseBackupChunkMessage): boolean {
  return crc32c.calculate(msg.data) === msg.crc32c;
}

/** A `baseBackupChunk` message for `data` at `offset`, with its CRC-32C computed. */
export function baseBackupChunk(offset: number, data: Uint8Array): BaseBackupChunkMessage {
  return { kind: 'baseBackupChunk', offset, crc32c: crc32c.calculate(data), data };
}

function asBuffer(value: Uint8Array): Buffer {
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value === null) return 'null';
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  return Array.isArray(value) ? 'an array' : typeof value;
}
