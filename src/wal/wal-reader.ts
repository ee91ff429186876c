import { WalCorruptError, WalshipError, abortError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { StorageFile } from '../storage/storage.js';
import {
  RECORD_HEADER_SIZE,
  RECORD_RESTORE_POINT,
  RECORD_SEGMENT_END,
  SEGMENT_HEADER_SIZE,
  align,
  checkFormatVersion,
  checkRecordCrc,
  checkRecordHeader,
  decodeEntries,
  decodeRestorePoint,
  isMarkerType,
  readCommitTime,
  readRecordHeader,
  readSegmentHeader,
  type WalEntry,
} from './record.js';
import { SegmentWindow } from './segment-window.js';
import { assertNotRemoved, awaitMore } from './tail.js';
import type { WalLog } from './wal-log.js';

/** Options of {@link WalLog.read}. */
export interface ReadOptions {
  /** Keep waiting at the end of the durable log for new records. @defaultValue false */
  follow?: boolean;
  /** Stops the iteration with an `ABORTED` error. */
  signal?: AbortSignal;
  /**
   * Bytes read from disk at a time. Entry data are views into these chunks (into copies of
   * their records with `ownEntries`).
   * @defaultValue 1 MiB
   */
  chunkSize?: number;
  /**
   * Read every chunk into the same buffer instead of a new one: less memory traffic and
   * garbage, but entry data are then valid only until the next record is read (copy what
   * you keep). Replay uses it, with `ownEntries` unless the application borrows its entries.
   * @defaultValue false
   */
  reuseBuffers?: boolean;
  /**
   * Copy each batch record out of the read buffer into one new buffer of its own, and decode
   * its entries as views into that copy: the caller may keep them (with or without
   * `reuseBuffers`). One allocation and one copy per batch, where copying the decoded entries
   * afterwards costs a view per entry twice (replay hands the application such entries). The
   * copy holds the record's headers and channel names too: an entry kept keeps them alive.
   * @defaultValue false
   */
  ownEntries?: boolean;
  /**
   * Also yield restore points ({@link RestorePointRecord}, `kind: 'restore-point'`), in LSN
   * order among the batches. Without it only batches are yielded. @defaultValue false
   */
  restorePoints?: boolean;
  /**
   * With `follow`: called each time the reader has returned every complete record that is
   * durable and starts waiting for more (a standby's replay has caught up with what it received).
   */
  onWait?: () => void;
}

/** A committed batch read back from the log. */
export interface WalRecord {
  /** A batch of entries, appended and committed together. */
  readonly kind: 'batch';
  /** Where the record starts. */
  readonly lsn: Lsn;
  /** Where it ends (the next record's LSN, unless a segment ends first). */
  readonly endLsn: Lsn;
  /** The timeline it was read from. */
  readonly timeline: number;
  /** The batch's entries, in append order. */
  readonly entries: readonly WalEntry[];
  /**
   * When the batch was committed on the primary: milliseconds since the epoch (its clock at
   * append, stored in microseconds); `null` for a batch of on-disk format 1, which has none.
   */
  readonly commitTime: number | null;
}

/** A named restore point read back from the log (see {@link WalLog.appendRestorePoint}). */
export interface RestorePointRecord {
  /** A named restore point ({@link Primary.createRestorePoint}). */
  readonly kind: 'restore-point';
  /** Where the record starts. */
  readonly lsn: Lsn;
  /** Where it ends. */
  readonly endLsn: Lsn;
  /** The timeline it was read from. */
  readonly timeline: number;
  /** Its name: 1 to 64 UTF-8 bytes. */
  readonly name: string;
  /** When it was made on the primary: milliseconds since the epoch. */
  readonly time: number;
}

const DEFAULT_CHUNK = 1024 * 1024;

/**
 * Reads records in LSN order from the segment files, never past the durable end
 * (`flushedLsn`), and optionally waits at the end for more. Bytes of a segment that was
 * removed (or recycled) while being read are never trusted: after each read the reader
 * checks that the segment is still part of the log, else it ends with `WAL_REMOVED`.
 */
export class WalReader {
  #file: StorageFile | null = null;
  #window: SegmentWindow | null = null;
  #segno = -1;
  /** The format version of the open segment (how its records are laid out). */
  #version = 0;
  /** The log's history when the open segment was entered. */
  #history: WalLog['history'] | null = null;
  /** Where reading stopped (or stands): the next record's position. */
  position: Lsn;

  constructor(
    private readonly log: WalLog,
    private readonly from: Lsn,
    private readonly options: ReadOptions,
  ) {
    this.position = from;
  }

  async *records(): AsyncGenerator<WalRecord | RestorePointRecord, void, undefined> {
    const { log } = this;
    const { signal, follow = false, restorePoints = false, onWait } = this.options;
    const waitFor = (lsn: Lsn): Promise<boolean> => {
      if (follow) onWait?.();
      return awaitMore(log, lsn, follow, signal);
    };
    const size = log.segmentSize;
    let pos = this.from;
    if (pos % size === 0) pos += SEGMENT_HEADER_SIZE;
    if (pos % size < SEGMENT_HEADER_SIZE) {
      throw new WalshipError('INVALID_ARGUMENT', `${formatLsn(this.from)} is inside a segment header, not at a record`);
    }
    try {
      for (;;) {
        if (signal?.aborted) throw abortError(signal);
        assertNotRemoved(this.log, pos);
        // On a replica, never past what the primary said is durable (see WalLog.readableLsn).
        const horizon = log.readableLsn;
        this.position = pos;
        if (pos >= horizon) {
          if (!(await waitFor(pos))) return;
          continue;
        }
        const segno = Math.floor(pos / size);
        const offset = pos - segno * size;
        if (offset === 0) {
          pos += SEGMENT_HEADER_SIZE;
          continue;
        }
        if (size - offset < RECORD_HEADER_SIZE) {
          pos = (segno + 1) * size + SEGMENT_HEADER_SIZE;
          continue;
        }
        // On a replica the durable end can fall inside a record: the rest is still to come.
        if (pos + RECORD_HEADER_SIZE > horizon) {
          if (!(await waitFor(horizon))) return;
          continue;
        }
        // After a timeline switch the segment may live in another timeline's file: open it anew.
        const window = this.#segno === segno && this.#window !== null && this.#history === log.history ? this.#window : await this.#enter(segno, pos);
        const limit = Math.min(size, horizon - segno * size);
        if (!window.has(offset, RECORD_HEADER_SIZE)) await this.#ensure(window, segno, offset, RECORD_HEADER_SIZE, limit);
        const header = readRecordHeader(window.buf, window.index(offset));
        const reason = checkRecordHeader(header, pos, size - offset);
        if (reason === null && pos + header.length > horizon) {
          if (!(await waitFor(horizon))) return;
          continue;
        }
        if (reason !== null) {
          if (pos === this.from && header.lsn !== pos) {
            throw new WalshipError('INVALID_ARGUMENT', `no record starts at ${formatLsn(pos)}`);
          }
          throw new WalCorruptError(log.segmentName(pos), offset, reason);
        }
        if (!window.has(offset, header.length)) await this.#ensure(window, segno, offset, header.length, limit);
        const index = window.index(offset);
        if (!checkRecordCrc(window.buf, index, header)) {
          throw new WalCorruptError(log.segmentName(pos), offset, 'record checksum mismatch');
        }
        if (header.type === RECORD_SEGMENT_END) {
          pos = (segno + 1) * size + SEGMENT_HEADER_SIZE;
          continue;
        }
        if (isMarkerType(header.type)) {
          pos += RECORD_HEADER_SIZE;
          continue;
        }
        const endLsn = pos + align(header.length);
        if (header.type === RECORD_RESTORE_POINT) {
          const point = decodeRestorePoint(window.buf, index, header, this.#version);
          if (point === null) throw new WalCorruptError(log.segmentName(pos), offset, `malformed restore point record (format version ${this.#version})`);
          if (restorePoints) yield { kind: 'restore-point', lsn: pos, endLsn, timeline: log.timelineAt(pos), name: point.name, time: point.micros / 1000 };
          pos = endLsn;
          continue;
        }
        const entries = this.options.ownEntries === true ? decodeEntries(copyOf(window.buf, index, header.length), 0, header, this.#version) : decodeEntries(window.buf, index, header, this.#version);
        if (entries === null) throw new WalCorruptError(log.segmentName(pos), offset, 'record payload does not match its entry count');
        const micros = readCommitTime(window.buf, index, this.#version);
        yield { kind: 'batch', lsn: pos, endLsn, timeline: log.timelineAt(pos), entries, commitTime: micros === null ? null : micros / 1000 };
        pos = endLsn;
      }
    } finally {
      await this.#file?.close().catch(() => undefined);
      this.#file = null;
    }
  }



  /** Opens segment `segno` (checking its header) unless it is already open. */
  async #enter(segno: number, pos: Lsn): Promise<SegmentWindow> {
    await this.#file?.close().catch(() => undefined);
    this.#file = null;
    this.#window = null;
    const name = this.log.segmentName(pos);
    let file: StorageFile;
    try {
      file = await this.log.storage.open(name, { readOnly: true });
    } catch (err) {
      assertNotRemoved(this.log, pos);
      throw new WalshipError('WAL_IO', `opening segment ${name} failed: ${(err as Error).message}`, { cause: err });
    }
    this.#file = file;
    this.#segno = segno;
    this.#history = this.log.history;
    const base = segno * this.log.segmentSize;
    // A follower's next records were usually written a moment ago: copied from the writer's memory, not read back.
    const copyWritten = (target: Buffer, offset: number, length: number): boolean => this.log.copyWritten(target, base + offset, length);
    const window = new SegmentWindow(file, this.log.segmentSize, this.options.chunkSize ?? DEFAULT_CHUNK, this.options.reuseBuffers !== true, copyWritten);
    await this.#ensure(window, segno, 0, SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE);
    const header = readSegmentHeader(window.buf, window.index(0));
    // A segment where a timeline began keeps its parent's header (its first bytes are the parent's).
    if (header === null || header.startLsn !== segno * this.log.segmentSize || header.timeline !== this.log.timelineAt(segno * this.log.segmentSize)) {
      throw new WalCorruptError(name, 0, 'segment header missing or damaged');
    }
    // A replica's later segments come from upstream after its open checked the others.
    checkFormatVersion(header.formatVersion, name);
    this.#version = header.formatVersion;
    this.#window = window;
    return window;
  }

  async #ensure(window: SegmentWindow, segno: number, offset: number, length: number, limit: number): Promise<void> {
    let complete: boolean;
    try {
      complete = await window.ensure(offset, length, Math.max(limit, offset + length));
    } catch (err) {
      assertNotRemoved(this.log, segno * this.log.segmentSize);
      const name = this.log.segmentName(segno * this.log.segmentSize);
      throw new WalshipError('WAL_IO', `reading segment ${name} failed: ${(err as Error).message}`, { cause: err });
    }
    // A segment removed or recycled during the read may have handed us foreign bytes.
    assertNotRemoved(this.log, segno * this.log.segmentSize);
    if (!complete) throw new WalCorruptError(this.log.segmentName(segno * this.log.segmentSize), offset, 'segment file is shorter than the log');
  }
}

/** `length` bytes of `buf` from `index`, in a buffer of their own (`Buffer.copy`: `Buffer.from` of the view measured slower). */
function copyOf(buf: Buffer, index: number, length: number): Buffer {
  const copy = Buffer.allocUnsafe(length);
  buf.copy(copy, 0, index, index + length);
  return copy;
}
