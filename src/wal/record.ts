import crc32c from 'fast-crc32c';
import { WalshipError } from '../errors.js';
import type { Lsn } from '../lsn.js';

/**
 * The on-disk format of WAL records and segment headers (format version 2; version 1 is still
 * read).
 *
 * The log is one byte stream addressed by LSN. Each segment starts with a 32-byte segment
 * header; records follow, each 8-byte aligned. A record never spans segments: a record that
 * does not fit in what is left of a segment is preceded by a segment-end record and starts
 * after the next segment's header.
 *
 * Record header (32 bytes, little-endian):
 *
 * | offset | size | field |
 * | --- | --- | --- |
 * | 0 | 4 | CRC-32C of bytes 4 .. length (rest of the header and the payload) |
 * | 4 | 4 | length: header + payload, without alignment padding |
 * | 8 | 1 | type: 1 batch, 2 segment end, 3 clean shutdown, 4 end of recovery, 5 restore point |
 * | 9 | 3 | zero (reserved) |
 * | 12 | 4 | number of entries |
 * | 16 | 8 | the record's own LSN |
 * | 24 | 8 | the log's flushed LSN when the record was appended |
 *
 * The record's own LSN makes every record self-identifying: stale bytes of a recycled or
 * truncated segment never pass as a record at another position. The flushed LSN lets
 * recovery tell a torn tail (bad bytes that were never acknowledged) from damage to data
 * that had been made durable before a later record was written.
 *
 * Batch payload: in version 2, the commit time (8 bytes: microseconds since the Unix epoch,
 * as PostgreSQL's commit timestamp, which counts microseconds since 2000); then, for each
 * entry, a 4-byte data length, a 1-byte channel length (0: no channel), the channel's UTF-8
 * bytes, then the data. A version-1 batch has no commit time: its entries start right after
 * the header.
 *
 * Restore-point payload (type 5, version 2 only; PostgreSQL's `XLOG_RESTORE_POINT`): the time
 * it was made (8 bytes, microseconds since the epoch), the name's length in UTF-8 bytes (1
 * byte, 1 to {@link MAX_RESTORE_POINT_NAME_BYTES}), the name. It carries no entries.
 *
 * Segment header (32 bytes): CRC-32C of bytes 4..32, magic `WALS`, format version (2
 * bytes), log2 of the segment size (1 byte), a zero byte, timeline (4), the segment's
 * start LSN (8), eight zero bytes (reserved). The version says how the segment's records
 * are laid out, so one log may hold version-1 segments followed by version-2 ones (a log
 * written before an upgrade): the writer never puts a version-2 record into a version-1
 * segment, it starts the next segment first.
 */

/** Size of a record header. */
export const RECORD_HEADER_SIZE = 32;
/** Size of a segment header. */
export const SEGMENT_HEADER_SIZE = 32;
/** Records start at multiples of this. */
export const RECORD_ALIGNMENT = 8;
/** The on-disk format version this code writes. */
export const FORMAT_VERSION = 2;
/** The oldest on-disk format version this code reads. */
export const OLDEST_FORMAT_VERSION = 1;
/** Size of a version-2 batch's commit time, ahead of its entries. */
export const COMMIT_TIME_SIZE = 8;
/** Longest restore-point name in UTF-8 bytes: PostgreSQL's `MAXFNAMELEN` (64; PostgreSQL keeps one byte of it for a terminating zero, walship needs none). */
export const MAX_RESTORE_POINT_NAME_BYTES = 64;
/** Longest channel name in UTF-8 bytes. */
export const MAX_CHANNEL_BYTES = 255;

/** Record type: a committed batch of entries. */
export const RECORD_BATCH = 1;
/** Record type: the rest of this segment is unused; the log continues in the next segment. */
export const RECORD_SEGMENT_END = 2;
/**
 * Record type: a clean shutdown. It carries no entries; its flushed stamp covers everything
 * before it, so after a clean close damage anywhere in the log, the last flush included,
 * is recognised as corruption and not mistaken for a torn write.
 */
export const RECORD_SHUTDOWN = 3;
/**
 * Record type: the end of recovery, the first record a promoted standby writes on its new
 * timeline (PostgreSQL's `XLOG_END_OF_RECOVERY`). It carries no entries; it makes the new
 * timeline's WAL differ from every other node's right from the switch point, so a standby
 * that kept the old timeline's bytes past it is told apart by the lineage check.
 */
export const RECORD_END_OF_RECOVERY = 4;
/**
 * Record type: a named restore point (PostgreSQL's `pg_create_restore_point`), a place a
 * standby can stop replaying at (`recoveryTarget: { name }`). It carries no entries: readers
 * hand it to replay's target check only, never to the application. Format version 2.
 */
export const RECORD_RESTORE_POINT = 5;

/** Whether `type` is a record without entries (segment end, shutdown, end of recovery). */
export function isMarkerType(type: number): boolean {
  return type === RECORD_SEGMENT_END || type === RECORD_SHUTDOWN || type === RECORD_END_OF_RECOVERY;
}

const SEGMENT_MAGIC = 0x534c4157; // 'WALS' read as little-endian u32
const ENTRY_HEADER_SIZE = 5;
/** A restore point's payload before its name: time (8), name length (1). */
const RESTORE_POINT_FIXED = 9;
const TWO_32 = 0x1_0000_0000;

/** One entry of a committed batch. */
export interface WalEntry {
  /** The application's bytes. */
  readonly data: Uint8Array;
  /** An application-defined channel tag (for logical replication), if any. */
  readonly channel?: string;
}

/** Rounds `n` up to the record alignment. */
export function align(n: number): number {
  return (n + RECORD_ALIGNMENT - 1) & ~(RECORD_ALIGNMENT - 1);
}

function writeU64(buf: Buffer, offset: number, value: number): void {
  const high = Math.floor(value / TWO_32);
  buf.writeUInt32LE(value - high * TWO_32, offset);
  buf.writeUInt32LE(high, offset + 4);
}

function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset) + buf.readUInt32LE(offset + 4) * TWO_32;
}

/** Encoded payload size of one entry whose channel takes `channelBytes` bytes. */
export function entrySize(dataLength: number, channelBytes: number): number {
  return ENTRY_HEADER_SIZE + channelBytes + dataLength;
}

/**
 * Writes a record header at `offset` of `buf` (the payload must already be in place after
 * it) and seals it with its CRC. Returns the aligned size; padding bytes are zeroed.
 */
export function sealRecord(
  buf: Buffer,
  offset: number,
  type: number,
  payloadLength: number,
  entryCount: number,
  lsn: Lsn,
  flushedLsn: Lsn,
): number {
  const length = RECORD_HEADER_SIZE + payloadLength;
  buf.writeUInt32LE(length, offset + 4);
  buf.writeUInt32LE(type, offset + 8); // type byte followed by three zero bytes
  buf.writeUInt32LE(entryCount, offset + 12);
  writeU64(buf, offset + 16, lsn);
  writeU64(buf, offset + 24, flushedLsn);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(offset + 4, offset + length)), offset);
  const padded = align(length);
  if (padded > length) buf.fill(0, offset + length, offset + padded);
  return padded;
}

/** Writes one entry's payload at `offset`; returns the offset after it. */
export function writeEntry(buf: Buffer, offset: number, data: Uint8Array, channel: string | undefined, channelBytes: number): number {
  buf.writeUInt32LE(data.length, offset);
  buf[offset + 4] = channelBytes;
  let at = offset + ENTRY_HEADER_SIZE;
  if (channel !== undefined) at += buf.write(channel, at, 'utf8');
  buf.set(data, at);
  return at + data.length;
}

/** The parsed, unverified header fields of a record. */
export interface RecordHeader {
  crc: number;
  length: number;
  type: number;
  entryCount: number;
  lsn: Lsn;
  flushedLsn: Lsn;
}

/** Reads a record header at `offset` (at least {@link RECORD_HEADER_SIZE} bytes must be there). */
export function readRecordHeader(buf: Buffer, offset: number): RecordHeader {
  return {
    crc: buf.readUInt32LE(offset),
    length: buf.readUInt32LE(offset + 4),
    type: buf.readUInt32LE(offset + 8),
    entryCount: buf.readUInt32LE(offset + 12),
    lsn: readU64(buf, offset + 16),
    flushedLsn: readU64(buf, offset + 24),
  };
}

/**
 * Cheap first check of a record header at `offset` that claims to be at `lsn`, with
 * `room` bytes left in the segment: `null` when plausible, else why not. The CRC is
 * checked separately by {@link checkRecordCrc} once the whole record is in memory.
 */
export function checkRecordHeader(header: RecordHeader, lsn: Lsn, room: number): string | null {
  if (header.length === 0 && header.crc === 0 && header.lsn === 0) return 'zeroed space';
  if (header.lsn !== lsn) return `record claims position ${header.lsn}, not ${lsn}`;
  if (isMarkerType(header.type)) {
    if (header.length !== RECORD_HEADER_SIZE || header.entryCount !== 0) return 'malformed marker record';
    return header.flushedLsn > lsn ? 'flushed position beyond the record' : null;
  }
  if (header.type === RECORD_RESTORE_POINT) {
    const nameBytes = header.length - RECORD_HEADER_SIZE - RESTORE_POINT_FIXED;
    if (header.entryCount !== 0 || nameBytes < 1 || nameBytes > MAX_RESTORE_POINT_NAME_BYTES || header.length > room) return 'malformed restore point record';
    return header.flushedLsn > lsn ? 'flushed position beyond the record' : null;
  }
  if (header.type !== RECORD_BATCH) return `unknown record type ${header.type}`;
  if (header.length < RECORD_HEADER_SIZE || header.length > room) return `record length ${header.length} out of range`;
  if (header.entryCount === 0) return 'batch record without entries';
  if (header.flushedLsn > lsn) return 'flushed position beyond the record';
  return null;
}

/** True when the record at `offset` with the given header has an intact CRC. */
export function checkRecordCrc(buf: Buffer, offset: number, header: RecordHeader): boolean {
  return crc32c.calculate(buf.subarray(offset + 4, offset + header.length)) === header.crc;
}

/** Where a batch's first entry starts, from the record's start, in a segment of format `version`. */
export function entriesOffset(version: number): number {
  return version >= 2 ? RECORD_HEADER_SIZE + COMMIT_TIME_SIZE : RECORD_HEADER_SIZE;
}

/** Writes a version-2 batch's commit time (microseconds since the epoch) into the record starting at `offset`. */
export function writeCommitTime(buf: Buffer, offset: number, micros: number): void {
  writeU64(buf, offset + RECORD_HEADER_SIZE, micros);
}

/**
 * The commit time (microseconds since the epoch) of the verified batch record at `offset` in
 * a segment of format `version`: `null` in version 1, which has none.
 */
export function readCommitTime(buf: Buffer, offset: number, version: number): number | null {
  return version >= 2 ? readU64(buf, offset + RECORD_HEADER_SIZE) : null;
}

/**
 * Decodes the entries of a verified batch record in a segment of format `version`. The
 * entries' data are views into `buf` (no copies). Returns `null` when the payload does not
 * parse exactly into `entryCount` entries, which for a record with a valid CRC means a format
 * error.
 */
export function decodeEntries(buf: Buffer, offset: number, header: RecordHeader, version: number): WalEntry[] | null {
  const end = offset + header.length;
  let at = offset + entriesOffset(version);
  if (at > end) return null;
  const entries: WalEntry[] = new Array(header.entryCount);
  for (let i = 0; i < header.entryCount; i++) {
    if (at + ENTRY_HEADER_SIZE > end) return null;
    const dataLength = buf.readUInt32LE(at);
    const channelBytes = buf[at + 4] as number;
    at += ENTRY_HEADER_SIZE;
    if (at + channelBytes + dataLength > end) return null;
    if (channelBytes > 0) {
      const channel = buf.toString('utf8', at, at + channelBytes);
      at += channelBytes;
      entries[i] = { data: buf.subarray(at, at + dataLength), channel };
    } else {
      entries[i] = { data: buf.subarray(at, at + dataLength) };
    }
    at += dataLength;
  }
  return at === end ? entries : null;
}

/** Payload size of a restore point whose name takes `nameBytes` UTF-8 bytes. */
export function restorePointPayloadSize(nameBytes: number): number {
  return RESTORE_POINT_FIXED + nameBytes;
}

/**
 * Writes a restore point's payload (its time in microseconds since the epoch, its name) after
 * the header of the record starting at `offset`; `nameBytes` is the name's UTF-8 length
 * (1 to {@link MAX_RESTORE_POINT_NAME_BYTES}, checked by the caller).
 */
export function writeRestorePoint(buf: Buffer, offset: number, micros: number, name: string, nameBytes: number): void {
  const at = offset + RECORD_HEADER_SIZE;
  writeU64(buf, at, micros);
  buf[at + 8] = nameBytes;
  buf.write(name, at + RESTORE_POINT_FIXED, 'utf8');
}

/** A restore point's name and time (microseconds since the epoch). */
export interface RestorePointPayload {
  readonly name: string;
  readonly micros: number;
}

/**
 * Decodes the verified restore-point record at `offset` in a segment of format `version`;
 * `null` when it does not parse (a restore point in a version-1 segment, a name length that
 * disagrees with the record's), which for a record with a valid CRC means a format error.
 */
export function decodeRestorePoint(buf: Buffer, offset: number, header: RecordHeader, version: number): RestorePointPayload | null {
  if (version < 2 || header.type !== RECORD_RESTORE_POINT) return null;
  const at = offset + RECORD_HEADER_SIZE;
  const nameBytes = buf[at + 8] as number;
  if (nameBytes < 1 || nameBytes > MAX_RESTORE_POINT_NAME_BYTES || header.length !== RECORD_HEADER_SIZE + RESTORE_POINT_FIXED + nameBytes) return null;
  return { name: buf.toString('utf8', at + RESTORE_POINT_FIXED, at + RESTORE_POINT_FIXED + nameBytes), micros: readU64(buf, at) };
}

/** Writes the header of the segment starting at `segmentStartLsn` into `buf` at `offset`. */
export function writeSegmentHeader(buf: Buffer, offset: number, segmentSize: number, timeline: number, segmentStartLsn: Lsn): void {
  buf.writeUInt32LE(SEGMENT_MAGIC, offset + 4);
  buf.writeUInt16LE(FORMAT_VERSION, offset + 8);
  buf[offset + 10] = Math.log2(segmentSize);
  buf[offset + 11] = 0;
  buf.writeUInt32LE(timeline, offset + 12);
  writeU64(buf, offset + 16, segmentStartLsn);
  buf.fill(0, offset + 24, offset + 32);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(offset + 4, offset + SEGMENT_HEADER_SIZE)), offset);
}

/** The fields of a segment header with an intact CRC and magic. */
export interface SegmentHeader {
  formatVersion: number;
  segmentSize: number;
  timeline: number;
  startLsn: Lsn;
}

/** Reads a segment header; `null` when the magic or CRC is wrong (never written, torn, or not ours). */
export function readSegmentHeader(buf: Buffer, offset: number): SegmentHeader | null {
  if (buf.readUInt32LE(offset + 4) !== SEGMENT_MAGIC) return null;
  if (crc32c.calculate(buf.subarray(offset + 4, offset + SEGMENT_HEADER_SIZE)) !== buf.readUInt32LE(offset)) return null;
  return {
    formatVersion: buf.readUInt16LE(offset + 8),
    segmentSize: 2 ** (buf[offset + 10] as number),
    timeline: buf.readUInt32LE(offset + 12),
    startLsn: readU64(buf, offset + 16),
  };
}

/** `WAL_FORMAT` for a segment (file `name`) whose format version this walship does not read. */
export function checkFormatVersion(version: number, name: string): void {
  if (version < OLDEST_FORMAT_VERSION || version > FORMAT_VERSION) {
    throw new WalshipError('WAL_FORMAT', `segment ${name} has on-disk format version ${version}; this walship reads versions ${OLDEST_FORMAT_VERSION} to ${FORMAT_VERSION}`);
  }
}
