import crc32c from 'fast-crc32c';
import type { Lsn } from '../lsn.js';

/**
 * The on-disk format of WAL records and segment headers (format version 1).
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
 * | 8 | 1 | type: 1 batch, 2 segment end, 3 clean shutdown, 4 end of recovery |
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
 * Batch payload: for each entry, a 4-byte data length, a 1-byte channel length (0: no
 * channel), the channel's UTF-8 bytes, then the data.
 *
 * Segment header (32 bytes): CRC-32C of bytes 4..32, magic `WALS`, format version (2
 * bytes), log2 of the segment size (1 byte), a zero byte, timeline (4), the segment's
 * start LSN (8), eight zero bytes (reserved).
 */

/** Size of a record header. */
export const RECORD_HEADER_SIZE = 32;
/** Size of a segment header. */
export const SEGMENT_HEADER_SIZE = 32;
/** Records start at multiples of this. */
export const RECORD_ALIGNMENT = 8;
/** The on-disk format version this code writes and reads. */
export const FORMAT_VERSION = 1;
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

/** Whether `type` is a record without entries (segment end, shutdown, end of recovery). */
export function isMarkerType(type: number): boolean {
  return type === RECORD_SEGMENT_END || type === RECORD_SHUTDOWN || type === RECORD_END_OF_RECOVERY;
}

const SEGMENT_MAGIC = 0x534c4157; // 'WALS' read as little-endian u32
const ENTRY_HEADER_SIZE = 5;
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

/**
 * Decodes the entries of a verified batch record. The entries' data are views into `buf`
 * (no copies). Returns `null` when the payload does not parse exactly into `entryCount`
 * entries, which for a record with a valid CRC means a format error.
 */
export function decodeEntries(buf: Buffer, offset: number, header: RecordHeader): WalEntry[] | null {
  const end = offset + header.length;
  const entries: WalEntry[] = new Array(header.entryCount);
  let at = offset + RECORD_HEADER_SIZE;
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
