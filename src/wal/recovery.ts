import { WalCorruptError, WalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { Storage, StorageFile } from '../storage/storage.js';
import {
  FORMAT_VERSION,
  RECORD_BATCH,
  RECORD_ALIGNMENT,
  RECORD_HEADER_SIZE,
  RECORD_SEGMENT_END,
  SEGMENT_HEADER_SIZE,
  align,
  checkRecordCrc,
  checkRecordHeader,
  decodeEntries,
  readRecordHeader,
  readSegmentHeader,
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
  /** Segments past the end that hold bytes of the discarded tail and must be deleted. */
  staleSegments: number[];
  /** Bytes of the discarded tail in the end segment, to be zeroed: `[endLsn, zeroTo)`. */
  zeroTo: Lsn;
}

const CHUNK = 4 * 1024 * 1024;

/**
 * Finds the end of valid WAL in the segments `segnos` (sorted; each in the file of the
 * timeline that holds it on `history`'s path) by reading every record from the oldest
 * segment on.
 *
 * The first position that does not hold a valid record ends the log, unless a valid record
 * after it was appended when that position was already durable (its flushed stamp is past
 * the position): then the bad bytes are damage to acknowledged data and recovery refuses
 * with `WAL_CORRUPT`, naming segment and offset. Otherwise they are a torn tail, written
 * in the last, unacknowledged flush, and are discarded. With `trustStamps` false (a
 * replica, whose records carry its upstream's stamps) the first bad position always ends
 * the log: what follows is fetched again from upstream.
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
    return { endLsn: start, durableStamp: 0, staleSegments: [], zeroTo: start };
  }
  const present = new Set(segnos);
  const fileName = (segno: number): string => segmentFileName(segmentTimeline(history, segno, segmentSize), segno, segmentSize);
  let durableStamp = 0;
  let end = segmentStart(first, segmentSize);
  let failure = 'segment header missing or damaged';
  let tornLength = 0;

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
      if (!(await window.ensure(0, SEGMENT_HEADER_SIZE)) || !validHeader(window.buf, 0, segmentSize, timelineOf(history, base), base, fileName(segno))) {
        failure = 'segment header missing or damaged';
        break;
      }
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
        if (!(await window.ensure(offset, header.length)) || !checkRecordCrc(window.buf, window.index(offset), header)) {
          failure = 'record checksum mismatch';
          break walk;
        }
        if (header.type === RECORD_BATCH && decodeEntries(window.buf, window.index(offset), header) === null) {
          throw new WalCorruptError(fileName(segno), offset, 'record payload does not match its entry count');
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

  // The log ends at `end`. Look past it for records that prove the bad bytes were durable.
  const staleSegments: number[] = [];
  let zeroTo = end + tornLength;
  const endSegno = Math.floor(end / segmentSize);
  for (const segno of segnos) {
    if (segno < endSegno) continue;
    const base = segmentStart(segno, segmentSize);
    const from = segno === endSegno ? end - base + 8 : 0;
    const file = await storage.open(fileName(segno), { readOnly: true });
    try {
      const found = await scanForRecords(file, segmentSize, base, from);
      // A replica's records carry its upstream's stamps, which prove nothing about this disk.
      const proof = trustStamps ? found.find((record) => record.flushedLsn > end) : undefined;
      if (proof !== undefined) {
        throw new WalCorruptError(
          fileName(endSegno),
          end - segmentStart(endSegno, segmentSize),
          `${failure}; valid records follow (e.g. at ${formatLsn(proof.lsn)}) that were written after this position was durable`,
        );
      }
      if (segno === endSegno) {
        for (const record of found) zeroTo = Math.max(zeroTo, record.end);
      } else if (found.length > 0 || (await hasOwnHeader(file, timelineOf(history, base), base))) {
        staleSegments.push(segno);
      }
    } finally {
      await file.close();
    }
  }
  zeroTo = Math.min(zeroTo, segmentStart(endSegno + 1, segmentSize));
  return { endLsn: end, durableStamp, staleSegments, zeroTo };
}

/**
 * Whether a segment header is this segment's: `timeline` is the one current at the segment's
 * start (a segment where a timeline began keeps its parent's header: its first bytes are the
 * parent's, copied).
 */
function validHeader(buf: Buffer, index: number, segmentSize: number, timeline: number, base: Lsn, name: string): boolean {
  const header = readSegmentHeader(buf, index);
  if (header === null) return false;
  if (header.formatVersion !== FORMAT_VERSION) {
    throw new WalshipError('WAL_FORMAT', `segment ${name} has on-disk format version ${header.formatVersion}; this walship reads version ${FORMAT_VERSION}`);
  }
  if (header.segmentSize !== segmentSize) {
    throw new WalshipError('WAL_FORMAT', `segment ${name} was written with segment size ${header.segmentSize}, not ${segmentSize}`);
  }
  return header.timeline === timeline && header.startLsn === base;
}

async function hasOwnHeader(file: StorageFile, timeline: number, base: Lsn): Promise<boolean> {
  const buf = Buffer.alloc(SEGMENT_HEADER_SIZE);
  if ((await file.read(buf, 0, SEGMENT_HEADER_SIZE, 0)) < SEGMENT_HEADER_SIZE) return false;
  const header = readSegmentHeader(buf, 0);
  return header !== null && header.timeline === timeline && header.startLsn === base;
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
    let candidate = -1;
    for (; offset <= last; offset += RECORD_ALIGNMENT) {
      // Cheap filter first: the low word of the record's own LSN field.
      if (buf.readUInt32LE(window.index(offset) + 16) === (base + offset) % 0x1_0000_0000) {
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
