import { WalCorruptError, WalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { Storage, StorageFile } from '../storage/storage.js';
import {
  FORMAT_VERSION,
  RECORD_BATCH,
  RECORD_RESTORE_POINT,
  RECORD_ALIGNMENT,
  RECORD_HEADER_SIZE,
  RECORD_SEGMENT_END,
  SEGMENT_HEADER_SIZE,
  align,
  checkFormatVersion,
  checkRecordCrc,
  checkRecordHeader,
  decodeEntries,
  decodeRestorePoint,
  readRecordHeader,
  readSegmentHeader,
  type SegmentHeader,
} from './record.js';
import { segmentFileName, segmentStart } from './segment-name.js';
import { SegmentWindow } from './segment-window.js';
import { segmentTimeline, timelineOf, type TimelineHistory } from './timeline-history.js';

/** What recovery found on disk. */
export interface RecoveryResult {
  /** The end of valid WAL: where the next record goes. */
  endLsn: Lsn;
  /** The highest "flushed at append" stamp of any valid record: everything below it was durable once. */
  durableStamp: Lsn;
  /** Bytes of the discarded tail in the end segment, to be zeroed: `[endLsn, zeroTo)`. */
  zeroTo: Lsn;
  /** The format version of the segment holding `endLsn` (the current one when `endLsn` is a segment start). */
  endVersion: number;
}

const CHUNK = 4 * 1024 * 1024;

/**
 * Finds the end of valid WAL in the segments `segnos` (sorted; each in the file of the
 * timeline that holds it on `history`'s path) by reading every record from the oldest
 * segment on.
 *
 * The first position that does not hold a valid record ends the log: a torn tail, written in
 * the last, unacknowledged flush, whose bytes are discarded (zeroed). Unless it is not the end:
 * - valid WAL (its own segment header, or a valid record) in a later segment: a segment is
 *   written only once the one before it is durable (`WalWriter`'s `#syncBefore`, PostgreSQL's
 *   rule), so a crash never leaves a hole before a later segment's WAL. A missing segment file,
 *   or a damaged header or record, followed by such a segment is `WAL_CORRUPT`, naming the
 *   place and the intact segments after it, on a primary and a replica alike.
 * - in the same segment, a valid record appended when that position was already durable (its
 *   flushed stamp is past the position): damage to acknowledged data, `WAL_CORRUPT`. With
 *   `trustStamps` false (a replica, whose records carry its upstream's stamps) this proof is
 *   not used: what follows in that segment is fetched again from upstream.
 * Recovery never deletes a segment: refusing changes nothing on disk.
 */
export async function recoverEnd(
  storage: Storage,
  segnos: readonly number[],
  segmentSize: number,
  history: TimelineHistory,
  trustStamps = true,
  firstSegno = 1,
): Promise<RecoveryResult> {
  const first = segnos[0];
  if (first === undefined) {
    const start = segmentStart(firstSegno, segmentSize);
    return { endLsn: start, durableStamp: 0, zeroTo: start, endVersion: FORMAT_VERSION };
  }
  const present = new Set(segnos);
  const fileName = (segno: number): string => segmentFileName(segmentTimeline(history, segno, segmentSize), segno, segmentSize);
  let durableStamp = 0;
  let end = segmentStart(first, segmentSize);
  let failure = 'segment header missing or damaged';
  let tornLength = 0;
  let version = FORMAT_VERSION;

  walk: for (let segno = first; ; segno++) {
    const base = segmentStart(segno, segmentSize);
    end = base;
    if (!present.has(segno)) {
      failure = 'segment file is missing';
      break;
    }
    const file = await storage.open(fileName(segno), { readOnly: true });
    try {
      const window = new SegmentWindow(file, segmentSize, CHUNK, false);
      const headerVersion = (await window.ensure(0, SEGMENT_HEADER_SIZE)) ? validHeader(window.buf, 0, segmentSize, timelineOf(history, base), base, fileName(segno)) : null;
      if (headerVersion === null) {
        failure = 'segment header missing or damaged';
        break;
      }
      version = headerVersion;
      let offset = SEGMENT_HEADER_SIZE;
      while (offset + RECORD_HEADER_SIZE <= segmentSize) {
        end = base + offset;
        if (!(await window.ensure(offset, RECORD_HEADER_SIZE))) {
          failure = 'segment file is short';
          break walk;
        }
        const header = readRecordHeader(window.buf, window.index(offset));
        const reason = checkRecordHeader(header, base + offset, segmentSize - offset);
        if (reason !== null) {
          failure = reason;
          break walk;
        }
        tornLength = align(header.length);
        // The same reasons as scanWal's (what `walship waldump` prints at its stop).
        if (!(await window.ensure(offset, header.length))) {
          failure = 'record runs past the end of the segment file';
          break walk;
        }
        if (!checkRecordCrc(window.buf, window.index(offset), header)) {
          failure = 'record checksum mismatch';
          break walk;
        }
        if (header.type === RECORD_BATCH && decodeEntries(window.buf, window.index(offset), header, version) === null) {
          throw new WalCorruptError(fileName(segno), offset, 'record payload does not match its entry count');
        }
        if (header.type === RECORD_RESTORE_POINT && decodeRestorePoint(window.buf, window.index(offset), header, version) === null) {
          throw new WalCorruptError(fileName(segno), offset, `malformed restore point record (format version ${version})`);
        }
        tornLength = 0;
        durableStamp = Math.max(durableStamp, header.flushedLsn);
        if (header.type === RECORD_SEGMENT_END) break;
        offset += align(header.length);
      }
    } finally {
      await file.close();
    }
  }

  const endSegno = Math.floor(end / segmentSize);
  // A segment is written only once the one before it is durable (the writer's #syncBefore), so
  // a torn tail lies in the last segment that holds WAL. Valid WAL in a later segment means the
  // log was cut short in the middle (a missing file, a damaged header or record), not torn by
  // a crash: refuse, changing nothing, rather than drop the intact segments after it.
  const intact: string[] = [];
  for (const segno of segnos) {
    if (segno <= endSegno) continue;
    const base = segmentStart(segno, segmentSize);
    const file = await storage.open(fileName(segno), { readOnly: true });
    try {
      const header = await readHeader(file);
      const own = header !== null && header.timeline === timelineOf(history, base) && header.startLsn === base;
      if (own || (!wasRecycled(header, base, segmentSize) && (await scanForRecords(file, segmentSize, base, 0)).length > 0)) {
        intact.push(fileName(segno));
      }
    } finally {
      await file.close();
    }
  }
  if (intact.length > 0) {
    throw new WalCorruptError(
      fileName(endSegno),
      end - segmentStart(endSegno, segmentSize),
      `${failure}, but ${describeSegments(intact)} after it hold${intact.length === 1 ? 's' : ''} valid WAL: the log is cut in the middle, not torn at its end by a crash; nothing was changed`,
    );
  }

  // Look past the end, in its segment, for records that prove the bad bytes were durable.
  let zeroTo = end + tornLength;
  if (present.has(endSegno)) {
    const base = segmentStart(endSegno, segmentSize);
    const file = await storage.open(fileName(endSegno), { readOnly: true });
    try {
      const found = await scanForRecords(file, segmentSize, base, end - base + 8);
      // A replica's records carry its upstream's stamps, which prove nothing about this disk.
      const proof = trustStamps ? found.find((record) => record.flushedLsn > end) : undefined;
      if (proof !== undefined) {
        throw new WalCorruptError(
          fileName(endSegno),
          end - base,
          `${failure}; valid records follow (e.g. at ${formatLsn(proof.lsn)}) that were written after this position was durable`,
        );
      }
      for (const record of found) zeroTo = Math.max(zeroTo, record.end);
    } finally {
      await file.close();
    }
  }
  zeroTo = Math.min(zeroTo, segmentStart(endSegno + 1, segmentSize));
  return { endLsn: end, durableStamp, zeroTo, endVersion: end % segmentSize === 0 ? FORMAT_VERSION : version };
}

/** File names for a message: all of a few, else the first and last few and how many. */
export function describeSegments(names: readonly string[]): string {
  if (names.length <= 6) return names.length === 1 ? `segment ${names[0]}` : `segments ${names.join(', ')}`;
  return `${names.length} segments (${names.slice(0, 3).join(', ')}, …, ${names.slice(-2).join(', ')})`;
}

/**
 * The format version of a segment header that is this segment's, else null: `timeline` is the
 * one current at the segment's start (a segment where a timeline began keeps its parent's
 * header: its first bytes are the parent's, copied). A version this walship cannot read, or
 * another segment size, is `WAL_FORMAT`.
 */
function validHeader(buf: Buffer, index: number, segmentSize: number, timeline: number, base: Lsn, name: string): number | null {
  const header = readSegmentHeader(buf, index);
  if (header === null) return null;
  checkFormatVersion(header.formatVersion, name);
  if (header.segmentSize !== segmentSize) {
    throw new WalshipError('WAL_FORMAT', `segment ${name} was written with segment size ${header.segmentSize}, not ${segmentSize}`);
  }
  return header.timeline === timeline && header.startLsn === base ? header.formatVersion : null;
}

/** The segment header at the start of `file`; null when there is none (never written, torn, zeros). */
async function readHeader(file: StorageFile): Promise<SegmentHeader | null> {
  const buf = Buffer.alloc(SEGMENT_HEADER_SIZE);
  if ((await file.read(buf, 0, SEGMENT_HEADER_SIZE, 0)) < SEGMENT_HEADER_SIZE) return null;
  return readSegmentHeader(buf, 0);
}

/**
 * Whether a file past the end of the WAL, whose segment starts at `base`, is a recycled file
 * never written since: its first block still holds the intact header of an earlier segment
 * (the one it was before its rename). Such a file holds no WAL of its new position, and
 * reading it whole to look for some would cost a segment's read at every open for every
 * spare file. A segment is written from its first block on, and only once the segment
 * before it is full and durable, so a write into it that a crash tore (its first block lost,
 * later ones kept) leaves the end of the WAL at its start: it is the end segment then, whose
 * tail recovery scans and zeroes, never a file past the end.
 */
function wasRecycled(header: SegmentHeader | null, base: Lsn, segmentSize: number): boolean {
  return header !== null && header.startLsn < base && header.startLsn % segmentSize === 0;
}

interface FoundRecord {
  lsn: Lsn;
  end: Lsn;
  flushedLsn: Lsn;
}

/**
 * Every valid, self-identifying record at 8-byte aligned offsets from `from` on. A record
 * names its own LSN, so stale bytes from a recycled segment never match.
 */
async function scanForRecords(file: StorageFile, segmentSize: number, base: Lsn, from: number): Promise<FoundRecord[]> {
  const found: FoundRecord[] = [];
  const window = new SegmentWindow(file, segmentSize, CHUNK, false);
  let offset = Math.max(align(from), SEGMENT_HEADER_SIZE);
  while (offset + RECORD_HEADER_SIZE <= segmentSize) {
    if (!(await window.ensure(offset, RECORD_HEADER_SIZE))) break;
    // Scan what the window holds without awaiting; only a candidate needs more reading.
    const buf = window.buf;
    const last = Math.min(window.end, segmentSize) - RECORD_HEADER_SIZE;
    const shift = window.index(offset) - offset + 16;
    let candidate = -1;
    // Cheap filter first: the low word of the record's own LSN field, and before it its low
    // byte (a whole segment of stale bytes is scanned at every open: one compare per step).
    for (; offset <= last; offset += RECORD_ALIGNMENT) {
      const lowWord = (base + offset) >>> 0;
      if (buf[offset + shift] === (lowWord & 0xff) && buf.readUInt32LE(offset + shift) === lowWord) {
        candidate = offset;
        break;
      }
    }
    if (candidate < 0) continue;
    const lsn = base + candidate;
    const header = readRecordHeader(window.buf, window.index(candidate));
    if (
      checkRecordHeader(header, lsn, segmentSize - candidate) === null &&
      (await window.ensure(candidate, header.length)) &&
      checkRecordCrc(window.buf, window.index(candidate), header)
    ) {
      found.push({ lsn, end: lsn + align(header.length), flushedLsn: header.flushedLsn });
    }
    offset = candidate + RECORD_ALIGNMENT;
  }
  return found;
}
