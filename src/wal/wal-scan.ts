import { errnoCode } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { Storage, StorageFile } from '../storage/storage.js';
import {
  FORMAT_VERSION,
  OLDEST_FORMAT_VERSION,
  RECORD_BATCH,
  RECORD_END_OF_RECOVERY,
  RECORD_HEADER_SIZE,
  RECORD_RESTORE_POINT,
  RECORD_SEGMENT_END,
  RECORD_SHUTDOWN,
  SEGMENT_HEADER_SIZE,
  align,
  checkRecordCrc,
  checkRecordHeader,
  decodeEntries,
  decodeRestorePoint,
  readCommitTime,
  readRecordHeader,
  readSegmentHeader,
} from './record.js';
import { segmentFileName, segmentStart } from './segment-name.js';
import { SegmentWindow } from './segment-window.js';
import { segmentTimeline, timelineOf, type TimelineHistory } from './timeline-history.js';

/**
 * A read-only walk over a log's segment files that reports every record, of every type, as
 * it is on disk, and where and why the walk stopped (PostgreSQL's `pg_waldump`). Unlike
 * `WalReader` it needs no open `WalLog`: it takes no lock, writes nothing, and reads beside a
 * running node, whose files may change underneath it (a record being written reads as the end).
 * It decodes with the functions of `record.ts`, and checks each record as `recoverEnd` does.
 */

/** What a record is, by its type byte (see `record.ts`). */
export type RecordKind = 'batch' | 'segment-end' | 'shutdown' | 'end-of-recovery' | 'restore-point';

/** The {@link RecordKind} of a record type byte; `null` for a type walship does not write. */
export function recordKindOf(type: number): RecordKind | null {
  switch (type) {
    case RECORD_BATCH:
      return 'batch';
    case RECORD_SEGMENT_END:
      return 'segment-end';
    case RECORD_SHUTDOWN:
      return 'shutdown';
    case RECORD_END_OF_RECOVERY:
      return 'end-of-recovery';
    case RECORD_RESTORE_POINT:
      return 'restore-point';
    default:
      return null;
  }
}

/** One valid record (its header checks and CRC passed, its payload parsed). */
export interface ScannedRecord {
  readonly kind: 'record';
  readonly recordKind: RecordKind;
  /** Where the record starts. */
  readonly lsn: Lsn;
  /** Its length in bytes (header and payload, without the alignment padding). */
  readonly length: number;
  /** Entries of a batch (0 for every other kind). */
  readonly entryCount: number;
  /** Bytes of entry data in a batch (channels and entry headers not counted). */
  readonly dataBytes: number;
  /** The log's flushed position when the record was appended (its durability stamp). */
  readonly flushedLsn: Lsn;
  /** The timeline the record belongs to on the scanned history. */
  readonly timeline: number;
  /** The segment file holding it, and its offset there. */
  readonly segment: string;
  readonly offset: number;
  /** The segment's on-disk format version. */
  readonly formatVersion: number;
  /** A batch's commit time (milliseconds since the epoch); `null` otherwise and in format 1. */
  readonly commitTime: number | null;
  /** A restore point's name and time (milliseconds since the epoch); `null` for other kinds. */
  readonly restorePoint: { readonly name: string; readonly time: number } | null;
}

/** Where the walk found no valid record, and why (the last item a scan yields). */
export interface ScanStop {
  readonly kind: 'stop';
  /** The first position without a valid record. */
  readonly lsn: Lsn;
  readonly segment: string;
  readonly offset: number;
  readonly reason: string;
}

/** Options of {@link scanWal}. */
export interface WalScanOptions {
  readonly storage: Storage;
  readonly segmentSize: number;
  /** The history whose path the walk follows (which timeline's file holds each segment). */
  readonly history: TimelineHistory;
  /** Where to start: the walk begins at this position's segment and yields no record before it. */
  readonly from: Lsn;
  /** Stop, without a {@link ScanStop}, before the first record at or past this position. */
  readonly to?: Lsn;
}

const CHUNK = 1024 * 1024;

/**
 * Yields the valid records from the segment of `from` on, in LSN order (those before `from`
 * are read but not yielded: records never span segments, so the segment's start is the one
 * place known to begin a record), then one {@link ScanStop} at the first position that does
 * not hold a valid record, unless `to` came first. Whether the stop is the log's end or damage
 * is not decided here: `recoverEnd` decides it as a node's open would.
 */
export async function* scanWal(options: WalScanOptions): AsyncGenerator<ScannedRecord | ScanStop, void, undefined> {
  const { storage, segmentSize: size, history, from, to } = options;
  const past = (lsn: Lsn): boolean => to !== undefined && lsn >= to;
  for (let segno = Math.floor(from / size); ; segno++) {
    const base = segmentStart(segno, size);
    const name = segmentFileName(segmentTimeline(history, segno, size), segno, size);
    const stop = (offset: number, reason: string): ScanStop => ({ kind: 'stop', lsn: base + offset, segment: name, offset, reason });
    if (past(base + SEGMENT_HEADER_SIZE)) return;
    let file: StorageFile;
    try {
      file = await storage.open(name, { readOnly: true });
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      yield stop(0, 'segment file is missing');
      return;
    }
    try {
      const window = new SegmentWindow(file, size, CHUNK, false);
      if (!(await window.ensure(0, SEGMENT_HEADER_SIZE))) {
        yield stop(0, 'segment file is shorter than its header');
        return;
      }
      const header = readSegmentHeader(window.buf, 0);
      const problem =
        header === null
          ? 'segment header missing or damaged'
          : header.formatVersion < OLDEST_FORMAT_VERSION || header.formatVersion > FORMAT_VERSION
            ? `on-disk format version ${header.formatVersion}; this walship reads versions ${OLDEST_FORMAT_VERSION} to ${FORMAT_VERSION}`
            : header.segmentSize !== size
              ? `segment header says segment size ${header.segmentSize}, not ${size}`
              : header.startLsn !== base || header.timeline !== timelineOf(history, base)
                ? `segment header belongs to another segment (timeline ${header.timeline}, start ${formatLsn(header.startLsn)})`
                : null;
      if (header === null || problem !== null) {
        yield stop(0, problem ?? 'segment header missing or damaged');
        return;
      }
      const version = header.formatVersion;
      let offset = SEGMENT_HEADER_SIZE;
      while (offset + RECORD_HEADER_SIZE <= size) {
        const lsn = base + offset;
        if (past(lsn)) return;
        if (!(await window.ensure(offset, RECORD_HEADER_SIZE))) {
          yield stop(offset, 'segment file is short');
          return;
        }
        const record = readRecordHeader(window.buf, window.index(offset));
        const reason = checkRecordHeader(record, lsn, size - offset);
        if (reason !== null) {
          yield stop(offset, reason);
          return;
        }
        if (!(await window.ensure(offset, record.length))) {
          yield stop(offset, 'record runs past the end of the segment file');
          return;
        }
        const index = window.index(offset);
        if (!checkRecordCrc(window.buf, index, record)) {
          yield stop(offset, 'record checksum mismatch');
          return;
        }
        const kind = recordKindOf(record.type) as RecordKind;
        let dataBytes = 0;
        let restorePoint: ScannedRecord['restorePoint'] = null;
        if (kind === 'batch') {
          const entries = decodeEntries(window.buf, index, record, version);
          if (entries === null) {
            yield stop(offset, 'record payload does not match its entry count');
            return;
          }
          for (const entry of entries) dataBytes += entry.data.length;
        } else if (kind === 'restore-point') {
          const point = decodeRestorePoint(window.buf, index, record, version);
          if (point === null) {
            yield stop(offset, `malformed restore point record (format version ${version})`);
            return;
          }
          restorePoint = { name: point.name, time: point.micros / 1000 };
        }
        const micros = kind === 'batch' ? readCommitTime(window.buf, index, version) : null;
        if (lsn >= from) {
          yield {
            kind: 'record',
            recordKind: kind,
            lsn,
            length: record.length,
            entryCount: record.entryCount,
            dataBytes,
            flushedLsn: record.flushedLsn,
            timeline: timelineOf(history, lsn),
            segment: name,
            offset,
            formatVersion: version,
            commitTime: micros === null ? null : micros / 1000,
            restorePoint,
          };
        }
        if (kind === 'segment-end') break;
        offset += align(record.length);
      }
    } finally {
      await file.close().catch(() => undefined);
    }
  }
}
