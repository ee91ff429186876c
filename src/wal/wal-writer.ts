import type { EventEmitter } from 'eventemitter3';
import { walFlushChannel } from '../diagnostics.js';
import { WalshipError, errnoCode, isWalshipError } from '../errors.js';
import type { Logger } from '../logger.js';
import { formatLsn, type Lsn } from '../lsn.js';
import { LsnWaiters } from '../lsn-waiters.js';
import type { StorageFile, StorageWriteError } from '../storage/storage.js';
import {
  COMMIT_TIME_SIZE,
  FORMAT_VERSION,
  RECORD_BATCH,
  RECORD_HEADER_SIZE,
  RECORD_RESTORE_POINT,
  RECORD_SEGMENT_END,
  SEGMENT_HEADER_SIZE,
  sealRecord,
  writeCommitTime,
  writeEntry,
  writeRestorePoint,
  writeSegmentHeader,
} from './record.js';
import type { SegmentFiles } from './segment-files.js';
import type { AppendResult, EntryInput, SyncMode, WalFlushDiagnostic, WalLog, WalLogEvents, WalStats } from './wal-log.js';
import { currentScheduler } from '../scheduler.js';

interface Run {
  startLsn: Lsn;
  buf: Buffer;
  used: number;
  /** Ends with a segment-end record: the rest of its segment is unused. */
  endsSegment: boolean;
  /** Bytes from upstream, held as the caller's buffer: never appended to, never reused. */
  raw: boolean;
}

const RUN_SIZE = 1024 * 1024;
/** The latest commit time a record can hold: 2^53 − 1 microseconds after the epoch (the year 2255). */
const MAX_CLOCK_MS = Math.floor(Number.MAX_SAFE_INTEGER / 1000);
/** Pending bytes that make the writer start a background write even without a flush request. */
const WRITE_THRESHOLD = 1024 * 1024;
/**
 * Every write starts at a multiple of this (the usual file-system block and page size): the
 * written part of the block where the last write ended is written again, from memory, ahead
 * of the new bytes (see {@link WalWriter}).
 */
export const TAIL_BLOCK_SIZE = 4096;

/** The events a {@link WalWriter} raises through its log. */
type WriterEvent = 'flush' | 'write' | 'error';

/** What a {@link WalWriter} needs from the log it writes for. */
export interface WalWriterInit {
  /** The log this writer writes for: named in the `walship:wal:flush` diagnostics messages. */
  readonly owner: WalLog;
  readonly files: SegmentFiles;
  readonly log: Logger;
  readonly segmentSize: number;
  readonly timeline: number;
  readonly sync: SyncMode;
  /** The end of WAL found by recovery: where inserting, writing and flushing start. */
  readonly endLsn: Lsn;
  /** The format version of the segment holding `endLsn` (the one a new segment gets when it starts there). */
  readonly endSegmentVersion: number;
  /** The wall clock commit times come from: milliseconds since the epoch, as `Date.now()`. */
  readonly clock: () => number;
  /** Emits one of the log's events; must not throw (listener exceptions are the log's to catch). */
  readonly emit: <E extends WriterEvent>(event: E, ...args: EventEmitter.EventArgs<WalLogEvents, E>) => void;
  /** The flushed end moved, or the writer stopped: readers waiting at the tail look again. */
  readonly notifyTail: () => void;
  /** Bytes were written (not yet durable): wakes the readers of written bytes (an early sender); true if it woke one. */
  readonly notifyWritten: () => boolean;
  /** The writer stopped on a fatal error (fail-stop): the log stops too, before waiters hear of it. */
  readonly stopped: (error: WalshipError) => void;
}

/** The hint of a sync only background waiters need (see `StorageFile.datasync`): one object, not one per sync. */
const NOT_URGENT = Object.freeze({ urgent: false });
/**
 * A sync round covering more bytes than this is never made on the event loop's thread, even
 * where urgent syncs hold it (`StorageFile.syncBlocks`): it takes milliseconds, against the
 * tens of microseconds a hop to another thread costs, and meanwhile the process could read
 * its socket (a standby catching up) or go on appending.
 */
export const BLOCKING_SYNC_MAX_BYTES = 1024 * 1024;

/**
 * The write side of a {@link WalLog}: the insert position and the buffers of appended
 * records (PostgreSQL's WAL buffers, filled by `XLogInsertRecord`), and the group-commit
 * writer that hands them to the OS and makes them durable (`XLogWrite` and `XLogFlush`).
 *
 * Appends only buffer. A write round hands everything pending to the OS, one pwritev per
 * segment, and one fdatasync per round makes it durable for every committer waiting at the
 * time; the next round's bytes are written while that sync runs, except that nothing is
 * written into a segment before the segments below it are durable. Flush waiters sit in an
 * {@link LsnWaiters} heap, so a flush releases the k it reaches in O(k log n).
 *
 * Like PostgreSQL, which writes its last WAL page again in full with each write, a write
 * starts at the beginning of the 4 KiB block holding the written end: the block's earlier
 * bytes, already flushed, go out again from memory ahead of the new ones. A file system that
 * loses a block when a write into it fails (seen with ext4 without a journal on a thin device)
 * gets it back, whole, from the next write that succeeds, before anything after it counts
 * as durable.
 *
 * `ENOSPC`, from a write or from preparing the segment it goes to, drops the records from
 * the failed write's start on and the log goes on from there (see {@link #dropFrom}); any
 * other write or preparation failure and any sync failure stops it.
 * @internal
 */
export class WalWriter {
  readonly #files: SegmentFiles;
  readonly #log: Logger;
  readonly #segmentSize: number;
  #timeline: number;
  readonly #sync: SyncMode;
  readonly #emit: WalWriterInit['emit'];
  readonly #notifyTail: () => void;
  readonly #notifyWritten: () => boolean;
  readonly #stopped: (error: WalshipError) => void;

  #insertLsn: Lsn;
  #writtenLsn: Lsn;
  /** A `write` event is scheduled; the written end it last announced. */
  #writeAnnounced = false;
  #announcedWrittenLsn: Lsn = -1;
  /** Highest LSN made durable by a real fdatasync; stamped into records (see record.ts). */
  #syncedLsn: Lsn;
  /** The flush waiters; their position is the flushed end of the log. */
  readonly #flushed: LsnWaiters;
  #failure: WalshipError | null = null;
  /** The log closed: no write round starts any more. */
  #closed = false;

  #runs: Run[] = [];
  #pendingBytes = 0;
  #spare: Buffer[] = [];
  #scheduled = false;
  /** The highest LSN a waiter that is not a background one (see {@link waitForFlush}) waited for: syncs up to it are urgent. */
  #urgentUntil = 0;
  /** The highest LSN a waiter that also waits for a standby waited for (see {@link #timedSync}). */
  #replicatedUntil = 0;
  #loop: Promise<void> | null = null;
  /** The writer's fdatasync in flight, if any. */
  #syncing: Promise<void> | null = null;
  /** Set while the writer waits for its sync: lets new pending bytes wake it. */
  #wake: (() => void) | null = null;
  /** Appended bytes up to here go to the OS without waiting for a flush ({@link writeSoon}). */
  #writeWanted: Lsn = 0;
  #dirty = new Set<number>();
  /** The bytes from the start of the block holding {@link #tailLsn} up to it (see {@link TAIL_BLOCK_SIZE}). */
  readonly #tail = Buffer.alloc(TAIL_BLOCK_SIZE);
  /** Where the bytes in {@link #tail} end: the written end, or -1 when they are to be read from the file. */
  #tailLsn: Lsn = -1;
  /** Every drop of failed appends: from which LSN on, and why (rare: ENOSPC only). */
  #drops: { lsn: Lsn; error: WalshipError }[] = [];
  #lastWrittenSegno = -1;
  /** The format version of the segment the insert position is in: records of this version go only into segments of it. */
  #segmentVersion: number;
  readonly #clock: () => number;
  /** The commit time of the synchronous run appending now (microseconds), or -1: read once per run, not per record. */
  #runMicros = -1;
  readonly #forgetRunTime = (): void => {
    this.#runMicros = -1;
  };
  readonly #owner: WalLog;
  // Counters for WalLog.stats(): plain numbers, so counting allocates nothing.
  #statBytesWritten = 0;
  /** Bytes written since the last sync round began (not the padding a segment-end record skips): what the next round syncs. */
  #bytesSinceSync = 0;
  #statWrites = 0;
  #statSyncs = 0;
  #statSyncMs = 0;
  /** Time the last sync round spent in fdatasync (for the flush diagnostics message). */
  #lastSyncRoundMs = 0;

  constructor(init: WalWriterInit) {
    this.#owner = init.owner;
    this.#files = init.files;
    this.#log = init.log;
    this.#segmentSize = init.segmentSize;
    this.#timeline = init.timeline;
    this.#sync = init.sync;
    this.#emit = init.emit;
    this.#notifyTail = init.notifyTail;
    this.#notifyWritten = init.notifyWritten;
    this.#stopped = init.stopped;
    this.#insertLsn = this.#writtenLsn = this.#syncedLsn = init.endLsn;
    this.#flushed = new LsnWaiters(init.endLsn);
    this.#segmentVersion = init.endSegmentVersion;
    this.#clock = init.clock;
  }

  /** What the writer has done since the log was opened (see `WalLog.stats`). */
  stats(): WalStats {
    return { bytesWritten: this.#statBytesWritten, writes: this.#statWrites, syncs: this.#statSyncs, syncSeconds: this.#statSyncMs / 1000 };
  }

  /** The next insert position. */
  get insertLsn(): Lsn {
    return this.#insertLsn;
  }

  /** End of the bytes handed to the operating system. */
  get writtenLsn(): Lsn {
    return this.#writtenLsn;
  }

  /** End of the durable log. */
  get flushedLsn(): Lsn {
    return this.#flushed.position;
  }

  /** Bytes appended but not yet handed to the operating system. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** The fatal error that stopped the writer, if any. */
  get failure(): WalshipError | null {
    return this.#failure;
  }

  /** How many times failed appends were dropped (see {@link AppendResult.generation}). */
  get generation(): number {
    return this.#drops.length;
  }

  /** The error of the latest drop, if any. */
  get lastDropError(): WalshipError | undefined {
    return this.#drops[this.#drops.length - 1]?.error;
  }

  /**
   * The error of a drop since `generation` from below `endLsn`: a record appended at that
   * generation and ending at `endLsn` was never written (its LSNs may have been reused since).
   */
  droppedError(generation: number, endLsn: Lsn): WalshipError | undefined {
    return this.#drops.slice(generation).find((d) => d.lsn < endLsn)?.error;
  }

  // ---- appending: records go into the pending runs ----

  /**
   * The commit time to stamp into a record appended now, in microseconds since the epoch: the
   * clock is read once per run of synchronous code (forgotten at the next microtask), so the
   * commits appended together (the committers one flush wakes, a loop of appends) share one
   * time and cost one clock call, while a commit after an `await` gets a time of its own.
   */
  commitMicros(): number {
    if (this.#runMicros < 0) {
      const ms = this.#clock();
      if (!(ms >= 0 && ms <= MAX_CLOCK_MS)) {
        throw new WalshipError('INVALID_ARGUMENT', `the WAL's clock returned ${String(ms)}; it must return milliseconds since the epoch (as Date.now())`);
      }
      this.#runMicros = Math.round(ms * 1000);
      queueMicrotask(this.#forgetRunTime);
    }
    return this.#runMicros;
  }

  /**
   * Buffers one batch record of `entries` (their encoded sizes and the commit time add up to
   * `payload`; the record takes `padded` bytes, which fit in a segment) stamped with
   * `micros`, and returns where it landed.
   */
  append(entries: readonly EntryInput[], payload: number, padded: number, micros: number): AppendResult {
    const lsn = this.#reserve(padded, true);
    const run = this.#runFor(padded);
    const start = run.used;
    writeCommitTime(run.buf, start, micros);
    let at = start + RECORD_HEADER_SIZE + COMMIT_TIME_SIZE;
    for (const entry of entries) {
      if (entry instanceof Uint8Array) {
        at = writeEntry(run.buf, at, entry, undefined, 0);
      } else {
        const channelBytes = entry.channel === undefined ? 0 : Buffer.byteLength(entry.channel);
        at = writeEntry(run.buf, at, entry.data, entry.channel, channelBytes);
      }
    }
    sealRecord(run.buf, start, RECORD_BATCH, payload, entries.length, lsn, this.#syncedLsn);
    run.used += padded;
    this.#pendingBytes += padded;
    this.#insertLsn = lsn + padded;
    if (this.#pendingBytes >= WRITE_THRESHOLD) this.#schedule();
    return { lsn, endLsn: lsn + padded, generation: this.#drops.length, commitTime: micros / 1000 };
  }

  /**
   * Buffers a restore-point record named `name` (`nameBytes` UTF-8 bytes; its payload takes
   * `payload` bytes and the record `padded`) made at `micros`; returns where it landed.
   */
  appendRestorePoint(name: string, nameBytes: number, payload: number, padded: number, micros: number): AppendResult {
    const lsn = this.#reserve(padded, true);
    const run = this.#runFor(padded);
    writeRestorePoint(run.buf, run.used, micros, name, nameBytes);
    sealRecord(run.buf, run.used, RECORD_RESTORE_POINT, payload, 0, lsn, this.#syncedLsn);
    run.used += padded;
    this.#pendingBytes += padded;
    this.#insertLsn = lsn + padded;
    return { lsn, endLsn: lsn + padded, generation: this.#drops.length, commitTime: micros / 1000 };
  }

  /** Buffers a record without entries (a shutdown marker); its layout is the same in every format version. */
  appendMarker(type: number): void {
    const lsn = this.#reserve(RECORD_HEADER_SIZE, false);
    const run = this.#runFor(RECORD_HEADER_SIZE);
    sealRecord(run.buf, run.used, type, 0, 0, lsn, this.#syncedLsn);
    run.used += RECORD_HEADER_SIZE;
    this.#pendingBytes += RECORD_HEADER_SIZE;
    this.#insertLsn = lsn + RECORD_HEADER_SIZE;
  }

  /**
   * Ends the segment holding the insert position early (PostgreSQL's `XLOG_SWITCH`, for
   * `archive_timeout`): a segment-end record, after which the next record starts the next
   * segment. False, and nothing buffered, when the segment holds no record yet.
   */
  switchSegment(): boolean {
    const offset = this.#insertLsn % this.#segmentSize;
    if (offset <= SEGMENT_HEADER_SIZE) return false;
    this.#insertLsn += this.#endSegment(this.#segmentSize - offset);
    return true;
  }

  /**
   * Buffers the end of the segment at the insert position, whose last `room` bytes stay
   * unused: a segment-end record (the next segment starts a new run), or zeros when fewer
   * bytes are left than a header, which readers skip. Returns `room`; the caller moves the
   * insert position.
   */
  #endSegment(room: number): number {
    if (room >= RECORD_HEADER_SIZE) {
      const run = this.#runFor(RECORD_HEADER_SIZE);
      sealRecord(run.buf, run.used, RECORD_SEGMENT_END, 0, 0, this.#insertLsn, this.#syncedLsn);
      run.used += RECORD_HEADER_SIZE;
      run.endsSegment = true;
      this.#pendingBytes += RECORD_HEADER_SIZE;
    } else {
      const run = this.#runFor(room);
      run.buf.fill(0, run.used, run.used + room);
      run.used += room;
      this.#pendingBytes += room;
    }
    return room;
  }

  /**
   * Buffers bytes from upstream at the insert position, as they are: `buf` is kept, not
   * copied. Returns the new insert position.
   */
  appendBytes(buf: Buffer): Lsn {
    this.#runs.push({ startLsn: this.#insertLsn, buf, used: buf.length, endsSegment: false, raw: true });
    this.#pendingBytes += buf.length;
    this.#insertLsn += buf.length;
    if (this.#pendingBytes >= WRITE_THRESHOLD) this.#schedule();
    return this.#insertLsn;
  }

  /**
   * Moves the insert position to where a record of `padded` bytes fits and returns that
   * position, buffering a segment-end record and the next segment's header when it moves.
   * A record of the current format (`current`: a batch, a restore point) never goes into a
   * segment of an older format (a log written before an upgrade): that segment is ended first.
   */
  #reserve(padded: number, current: boolean): Lsn {
    let lsn = this.#insertLsn;
    let offset = lsn % this.#segmentSize;
    const room = this.#segmentSize - offset;
    if (offset !== 0 && (room < padded || (current && this.#segmentVersion !== FORMAT_VERSION))) {
      lsn += this.#endSegment(room);
      offset = 0;
      this.#insertLsn = lsn;
    }
    if (offset === 0) {
      const run = this.#runFor(SEGMENT_HEADER_SIZE + padded);
      writeSegmentHeader(run.buf, run.used, this.#segmentSize, this.#timeline, lsn);
      this.#segmentVersion = FORMAT_VERSION;
      run.used += SEGMENT_HEADER_SIZE;
      this.#pendingBytes += SEGMENT_HEADER_SIZE;
      lsn += SEGMENT_HEADER_SIZE;
    }
    this.#insertLsn = lsn;
    return lsn;
  }

  /** The run to append `bytes` to: the last one if it has room, else a new one. */
  #runFor(bytes: number): Run {
    const last = this.#runs[this.#runs.length - 1];
    if (last !== undefined && !last.endsSegment && !last.raw && last.startLsn + last.used === this.#insertLsn && last.buf.length - last.used >= bytes) {
      return last;
    }
    const run = this.#newRun(this.#insertLsn, bytes);
    this.#runs.push(run);
    return run;
  }

  #newRun(startLsn: Lsn, atLeast: number): Run {
    const spare = this.#spare.pop();
    const buf = spare !== undefined && spare.length >= atLeast ? spare : Buffer.allocUnsafe(Math.max(RUN_SIZE, atLeast));
    return { startLsn, buf, used: 0, endsSegment: false, raw: false };
  }

  // ---- waiting for durability ----

  /**
   * Resolves once the log is durable up to `lsn` (past the flushed end, at most the insert
   * position; the log checks), starting a flush. Rejects if the records fail to reach the
   * disk or are dropped, or with `ABORTED` if `signal` aborts.
   */
  waitForFlush(lsn: Lsn, options: { signal?: AbortSignal; background?: boolean; replicated?: boolean } = {}): Promise<void> {
    const { signal } = options;
    const flushed = this.#flushed.wait(lsn, signal === undefined ? {} : { signal });
    if (options.background !== true) this.#urgentUntil = Math.max(this.#urgentUntil, lsn);
    if (options.replicated === true) this.#replicatedUntil = Math.max(this.#replicatedUntil, lsn);
    this.#schedule();
    return flushed;
  }

  /**
   * Hands what is appended up to `lsn` (no further than the insert position) to the OS in the
   * next write round, without waiting for a flush: a standby's write that a `remote_write`
   * commit waits for. The `write` event follows; no fdatasync is started for it.
   */
  writeSoon(lsn: Lsn): void {
    const until = Math.min(lsn, this.#insertLsn);
    if (until <= this.#writtenLsn || until <= this.#writeWanted) return;
    this.#writeWanted = until;
    this.#schedule();
  }

  /** Writes and syncs everything pending, whatever the sync mode (close makes data durable). */
  async drain(): Promise<void> {
    while (this.#loop !== null) await this.#loop;
    if (this.#insertLsn > this.flushedLsn || this.#syncedLsn < this.#writtenLsn) {
      this.#loop = this.#writeLoop(true);
      await this.#loop;
    }
    if (this.#failure !== null) throw this.#failure;
  }

  /**
   * Moves the writer to `timeline`, continuing at `lsn` (promotion: the end of the valid WAL,
   * all of it durable); `preparedSegno` is a segment whose successor is not to be prepared
   * ahead when the writer first writes into it; `segmentVersion` is the format version of the
   * segment holding `lsn`. Bytes past `lsn` (a partial record from upstream) are forgotten; new
   * segments get headers of `timeline`. Nothing may be pending: the caller drained first.
   */
  restartAt(lsn: Lsn, timeline: number, preparedSegno = -1, segmentVersion = FORMAT_VERSION): void {
    if (this.#runs.length > 0 || this.#loop !== null || lsn > this.flushedLsn) {
      throw new WalshipError('INVALID_ARGUMENT', `the writer can restart only at a durable position with nothing pending (asked ${formatLsn(lsn)})`);
    }
    this.#timeline = timeline;
    this.#segmentVersion = segmentVersion;
    this.#insertLsn = this.#writtenLsn = this.#syncedLsn = lsn;
    this.#urgentUntil = Math.min(this.#urgentUntil, lsn);
    this.#replicatedUntil = Math.min(this.#replicatedUntil, lsn);
    this.#writeWanted = Math.min(this.#writeWanted, lsn);
    this.#announcedWrittenLsn = Math.min(this.#announcedWrittenLsn, lsn);
    this.#flushed.rewind(lsn);
    this.#dirty.clear();
    this.#tailLsn = -1;
    // Writing into `preparedSegno` starts no preparation of the next segment.
    this.#lastWrittenSegno = preparedSegno;
  }

  /** Segments below `segno` were removed: they need no sync any more (with sync 'none' they may still be dirty). */
  forgetSegmentsBelow(segno: number): void {
    for (const dirty of this.#dirty) if (dirty < segno) this.#dirty.delete(dirty);
  }

  /** The log closed: rejects every flush waiter with `error`; no write round starts any more. */
  close(error: WalshipError): void {
    this.#closed = true;
    this.#flushed.fail(error);
  }

  // ---- the writer: one write and one fdatasync for every committer waiting together ----

  #schedule(): void {
    // A writer waiting on a sync only acts on a full write's worth of bytes (it re-checks
    // everything when the sync ends), so new committers alone need not wake it.
    if (this.#pendingBytes >= WRITE_THRESHOLD || this.#writeWanted > this.#writtenLsn) this.#wake?.();
    if (this.#scheduled || this.#loop !== null || this.#failure !== null) return;
    this.#scheduled = true;
    // Let every committer of this turn of the event loop append before the write starts.
    currentScheduler().setImmediate(() => {
      this.#scheduled = false;
      if (this.#loop === null && !this.#closed) this.#loop = this.#writeLoop(false);
    });
  }

  async #writeLoop(forceSync: boolean): Promise<void> {
    try {
      await this.#writeRounds(forceSync);
    } catch (err) {
      // Anything unexpected in the writer stops the log rather than escaping unhandled.
      this.#fail(isWalshipError(err) ? err : new WalshipError('WAL_IO', `the WAL writer failed: ${describe(err)}`, { cause: err }));
    } finally {
      this.#loop = null;
      if (this.#flushed.size > 0 || this.#pendingBytes >= WRITE_THRESHOLD || (this.#writeWanted > this.#writtenLsn && this.#runs.length > 0)) this.#schedule();
    }
  }

  /**
   * Writes and syncs in rounds until nothing is left to do. A round's fdatasync runs while
   * the next round's bytes are written, so the disk need not wait for the writer; a sync
   * covers only what was written before it started, and one runs at a time.
   */
  async #writeRounds(forceSync: boolean): Promise<void> {
    try {
      for (;;) {
        if (this.#failure !== null) return;
        const wantSync = forceSync || this.#flushed.size > 0;
        if (wantSync && this.#syncing === null && this.#needsSync(forceSync)) {
          this.#syncing = this.#syncRound(forceSync).finally(() => {
            this.#syncing = null;
          });
        }
        // While a sync runs, small writes gain nothing: they wait for the next sync anyway.
        if (this.#runs.length > 0 && (this.#pendingBytes >= WRITE_THRESHOLD || this.#writeWanted > this.#writtenLsn || (wantSync && this.#syncing === null))) {
          const runs = this.#runs;
          this.#runs = [];
          this.#pendingBytes = 0;
          await this.#writeRuns(runs);
          if (!wantSync) this.#advanceFlushed(false);
        } else if (this.#syncing !== null) {
          // Wake for new bytes to write as well: the disk should not wait for them after the sync.
          const syncing = this.#syncing;
          await new Promise<void>((resolve) => {
            this.#wake = resolve;
            void syncing.then(resolve);
          });
          this.#wake = null;
        } else {
          return;
        }
      }
    } finally {
      await this.#syncing;
    }
  }

  /**
   * Emits `write` for what was just written, one turn of the event loop later: by then the
   * writer has handed the fdatasync to the thread pool, so a listener's work (a standby's
   * report on the socket) runs alongside the sync instead of delaying its start.
   */
  #announceWritten(): void {
    if (this.#writeAnnounced) return;
    this.#writeAnnounced = true;
    currentScheduler().setImmediate(() => {
      this.#writeAnnounced = false;
      this.#announceWrittenNow();
    });
  }

  /**
   * Emits `write` now if the written end moved since the last one (the scheduled one then has
   * nothing to say), and wakes the readers of written bytes; returns whether it woke one.
   */
  #announceWrittenNow(): boolean {
    if (this.#writtenLsn <= this.#announcedWrittenLsn) return false;
    this.#announcedWrittenLsn = this.#writtenLsn;
    this.#emit('write', { writtenLsn: this.#writtenLsn });
    return this.#notifyWritten();
  }

  /** One sync of what is written now, then acknowledges it; never rejects (failures stop the log). */
  async #syncRound(force: boolean): Promise<void> {
    try {
      await this.#syncWritten(force);
      this.#advanceFlushed(true);
    } catch (err) {
      this.#fail(isWalshipError(err) ? err : new WalshipError('WAL_IO', `the WAL writer failed: ${describe(err)}`, { cause: err }));
    }
  }

  #needsSync(force: boolean): boolean {
    return this.#sync === 'fdatasync' || force ? this.#syncedLsn < this.#writtenLsn : this.flushedLsn < this.#writtenLsn;
  }

  /**
   * Hands the runs to the OS: the pieces that follow each other in one segment go out in one
   * pwritev when the storage has it, so however much is pending, one call per segment.
   */
  async #writeRuns(runs: Run[]): Promise<void> {
    let batch: Buffer[] = [];
    let batchLsn = 0;
    let batchBytes = 0;
    let batchEndsSegment = false;
    const flush = async (): Promise<boolean> => {
      if (batch.length === 0) return true;
      // The segments before this one are durable before a byte of it is written (see #syncBefore).
      if (!(await this.#syncBefore(Math.floor(batchLsn / this.#segmentSize)))) return false;
      if (!(await this.#writeBatch(batchLsn, batch, batchBytes))) return false;
      const before = this.#writtenLsn;
      this.#writtenLsn = batchLsn + batchBytes;
      // After a segment-end record the rest of the segment counts as written.
      if (batchEndsSegment) this.#writtenLsn = Math.ceil(this.#writtenLsn / this.#segmentSize) * this.#segmentSize;
      this.#statBytesWritten += this.#writtenLsn - before;
      this.#bytesSinceSync += batchBytes;
      batch = [];
      batchBytes = 0;
      batchEndsSegment = false;
      return true;
    };
    for (const run of runs) {
      let offset = 0;
      while (offset < run.used) {
        const lsn = run.startLsn + offset;
        const within = lsn % this.#segmentSize;
        const length = Math.min(run.used - offset, this.#segmentSize - within);
        // A piece joins the batch only where the batch ends, in the same segment.
        if (batch.length > 0 && (batchLsn + batchBytes !== lsn || within === 0) && !(await flush())) return;
        if (batch.length === 0) batchLsn = lsn;
        batch.push(run.buf.subarray(offset, offset + length));
        batchBytes += length;
        offset += length;
      }
      if (run.endsSegment) {
        batchEndsSegment = true;
        if (!(await flush())) return;
      }
    }
    if (!(await flush())) return;
    this.#announceWritten();
    for (const run of runs) if (!run.raw && run.buf.length === RUN_SIZE && this.#spare.length < 4) this.#spare.push(run.buf);
  }

  /**
   * Makes everything written before segment `segno` durable before the writer writes into it:
   * PostgreSQL's `XLogWrite` fsyncs a finished segment before it writes the next one, and its
   * walreceiver flushes when it moves to the next segment. So a crash tears only the last
   * segment that holds WAL, and recovery can tell a torn tail (nothing valid after it) from
   * damage followed by intact segments (`WAL_CORRUPT`), on a replica too, whose records carry
   * its upstream's flush stamps. Costs at most one extra fdatasync per segment. With `sync:
   * 'none'` nothing is synced and nothing is promised. Resolves false if the log stopped.
   */
  async #syncBefore(segno: number): Promise<boolean> {
    if (this.#sync !== 'fdatasync') return true;
    // Writes are contiguous: what lies before the segment was written already.
    const needed = Math.min(segno * this.#segmentSize, this.#writtenLsn);
    while (this.#syncedLsn < needed) {
      if (this.#failure !== null) return false;
      if (this.#syncing === null) {
        this.#syncing = this.#syncRound(false).finally(() => {
          this.#syncing = null;
        });
      }
      await this.#syncing;
    }
    return this.#failure === null;
  }

  /**
   * Writes `pieces` (`bytes` in all, within one segment) at `lsn`, behind the written part of
   * the block they begin in. False when they were not written: the records from `lsn` on were
   * dropped, or the log stopped.
   */
  async #writeBatch(lsn: Lsn, pieces: readonly Buffer[], bytes: number): Promise<boolean> {
    const segno = Math.floor(lsn / this.#segmentSize);
    const within = lsn - segno * this.#segmentSize;
    let file: StorageFile;
    try {
      file = await this.#files.forWrite(segno);
    } catch (err) {
      // Creating the segment failed (a zero-fill, a rename): nothing of these records reached
      // any file, whatever the error says it wrote.
      this.#segmentUnavailable(lsn, err);
      return false;
    }
    if (segno !== this.#lastWrittenSegno) {
      this.#lastWrittenSegno = segno;
      this.#files.prepareAhead(segno + 1);
    }
    this.#dirty.add(segno);
    const prefix = await this.#blockBefore(file, lsn, within);
    this.#statWrites++;
    try {
      await writeAll(file, prefix === null || prefix.length === 0 ? pieces : [prefix, ...pieces], within - (prefix?.length ?? 0));
    } catch (err) {
      const reached = ((err as StorageWriteError).bytesWritten ?? 0) - (prefix?.length ?? 0);
      await this.#writeFailed(file, lsn, prefix ?? Buffer.alloc(0), Math.max(0, reached), err);
      return false;
    }
    this.#keepTail(lsn, pieces, bytes, prefix !== null);
    return true;
  }

  /**
   * The written bytes of the block that `lsn` (at `within` in `file`) falls in, before it: from
   * memory, or read back once after an open or a restart. Null when they cannot be read: the
   * new bytes then go out alone, as they did before walship rewrote the block.
   */
  async #blockBefore(file: StorageFile, lsn: Lsn, within: number): Promise<Buffer | null> {
    const length = lsn % TAIL_BLOCK_SIZE;
    if (this.#tailLsn === lsn || length === 0) return this.#tail.subarray(0, length);
    // The read below overwrites #tail: until it is done, nothing is handed out of it (copyWritten).
    this.#tailLsn = -1;
    try {
      if ((await file.read(this.#tail, 0, length, within - length)) === length) {
        this.#tailLsn = lsn;
        return this.#tail.subarray(0, length);
      }
    } catch (err) {
      this.#log('reading back the start of the block at %s failed: %s', formatLsn(lsn - length), describe(err));
    }
    this.#tailLsn = -1;
    return null;
  }

  /**
   * Copies the written bytes `[lsn, lsn + length)` into `target` from memory when they all lie
   * in the last block written (the WAL a sender streams the moment it is written); false when
   * they do not, and they must be read from the file. What is in memory is what the last
   * successful write put in the file.
   */
  copyWritten(target: Buffer, lsn: Lsn, length: number): boolean {
    const end = this.#tailLsn;
    if (end < 0 || lsn < end - (end % TAIL_BLOCK_SIZE) || lsn + length > end) return false;
    const from = lsn % TAIL_BLOCK_SIZE;
    this.#tail.copy(target, 0, from, from + length);
    return true;
  }

  /** `pieces` were written from `lsn`, ending at `lsn + bytes`: keeps the written part of the block the end falls in. */
  #keepTail(lsn: Lsn, pieces: readonly Buffer[], bytes: number, hadPrefix: boolean): void {
    const end = lsn + bytes;
    const blockStart = end - (end % TAIL_BLOCK_SIZE);
    // Where the block starts in the pieces; before them, its bytes are the prefix, in #tail already.
    let skip = blockStart - lsn;
    let into = 0;
    if (skip < 0) {
      if (!hadPrefix) {
        this.#tailLsn = -1;
        return;
      }
      into = -skip;
      skip = 0;
    }
    for (const piece of pieces) {
      if (skip >= piece.length) {
        skip -= piece.length;
        continue;
      }
      into += piece.copy(this.#tail, into, skip);
      skip = 0;
    }
    this.#tailLsn = end;
  }

  /**
   * Segment `lsn` falls in could not be created or opened. With `ENOSPC` the records from
   * `lsn` on fail and the log goes on from there; any other failure stops the log.
   */
  #segmentUnavailable(lsn: Lsn, err: unknown): void {
    const name = this.#files.name(Math.floor(lsn / this.#segmentSize));
    if (errnoCode(err) !== 'ENOSPC') {
      this.#fail(isWalshipError(err) ? err : new WalshipError('WAL_IO', `preparing segment ${name} failed: ${describe(err)}`, { cause: err }));
      return;
    }
    const message = `no space left to prepare segment ${name}; the records from ${formatLsn(lsn)} on were not appended`;
    this.#dropFrom(lsn, new WalshipError('WAL_IO', message, { cause: err, transient: true }));
  }

  /**
   * The write of the records from `lsn` (behind `prefix`, the block's earlier bytes) failed
   * after `reached` of their bytes got into `file`. With `ENOSPC` those bytes are overwritten
   * with zeros, `prefix` again ahead of them, and synced before the records are reported
   * failed, so they can never come back, not even after a crash; then the records from `lsn`
   * on are dropped. Any other write error stops the log.
   *
   * The undo writes only where the failed write wrote, so a file system that overwrites in
   * place needs no new space for it. When it fails all the same (a copy-on-write file system
   * can need space for any write), the bytes stay in the file and the records may come back:
   * their outcome is unknown, and the log stops (fatal) rather than report them not appended.
   */
  async #writeFailed(file: StorageFile, lsn: Lsn, prefix: Buffer, reached: number, err: unknown): Promise<void> {
    const segno = Math.floor(lsn / this.#segmentSize);
    const name = this.#files.name(segno);
    if (errnoCode(err) !== 'ENOSPC') {
      this.#fail(new WalshipError('WAL_IO', `writing segment ${name} failed: ${describe(err)}`, { cause: err }));
      return;
    }
    if (reached > 0) {
      try {
        const zeros = Buffer.alloc(reached);
        await writeAll(file, prefix.length > 0 ? [prefix, zeros] : [zeros], lsn - segno * this.#segmentSize - prefix.length);
      } catch (undoErr) {
        this.#fail(new WalshipError('WAL_IO', `could not undo a partial write in ${name}: ${describe(undoErr)}`, { cause: undoErr }));
        return;
      }
      if (this.#sync === 'fdatasync') {
        try {
          await this.#timedSync(file, true);
        } catch (syncErr) {
          this.#fail(new WalshipError('WAL_SYNC_FAILED', `fdatasync of segment ${name} failed; the log has stopped: ${describe(syncErr)}`, { cause: syncErr }));
          return;
        }
      }
    }
    const message = `no space left to write segment ${name}; the records from ${formatLsn(lsn)} on were not appended`;
    this.#dropFrom(lsn, new WalshipError('WAL_IO', message, { cause: err, transient: true }));
  }

  /**
   * Appends from `lsn` on failed with `error` (transient: `ENOSPC`): their records are
   * dropped, pending and later ones alike, and the log goes on from `lsn`, which it reuses.
   */
  #dropFrom(lsn: Lsn, error: WalshipError): void {
    this.#log.error('%s', error.message);
    this.#drops.push({ lsn, error });
    // Everything from `lsn` on is dropped: the failed runs and whatever was appended since.
    this.#runs = [];
    this.#pendingBytes = 0;
    this.#insertLsn = lsn;
    this.#urgentUntil = Math.min(this.#urgentUntil, lsn);
    this.#replicatedUntil = Math.min(this.#replicatedUntil, lsn);
    this.#writeWanted = Math.min(this.#writeWanted, lsn);
    // Their LSNs will be reused: a waiter past `lsn` must fail now, not be released by the
    // flush of a later record that lands there.
    this.#flushed.rejectPast(lsn, error);
    this.#emit('error', { error, fatal: false });
  }

  async #syncWritten(force: boolean): Promise<void> {
    if (this.#failure !== null) return;
    const target = this.#writtenLsn;
    const currentSegno = Math.floor(target / this.#segmentSize);
    const roundBytes = this.#bytesSinceSync;
    this.#bytesSinceSync = 0;
    if (this.#sync === 'none' && !force) {
      // Nothing to sync until close; just let go of the handles of finished segments.
      for (const segno of this.#dirty) if (segno < currentSegno) await this.#files.closeWriter(segno);
      return;
    }
    // A sync that no waiter but background ones (commits at `off`) needs is not urgent, nor,
    // as far as where it runs is concerned, one of a large round (see BLOCKING_SYNC_MAX_BYTES).
    const urgent = (force || this.#urgentUntil > this.#syncedLsn) && roundBytes <= BLOCKING_SYNC_MAX_BYTES;
    // Writes made while this sync runs mark their segments dirty again for the next one.
    const dirty = [...this.#dirty].sort((a, b) => a - b);
    this.#dirty.clear();
    const roundMsBefore = this.#statSyncMs;
    for (const segno of dirty) {
      const name = this.#files.name(segno);
      try {
        await this.#timedSync(await this.#files.forWrite(segno), urgent);
      } catch (err) {
        // Fail-stop: after a failed fsync the kernel may have dropped the dirty pages, so
        // retrying could "succeed" without the data. Nothing waiting is acknowledged.
        this.#fail(new WalshipError('WAL_SYNC_FAILED', `fdatasync of segment ${name} failed; the log has stopped: ${describe(err)}`, { cause: err }));
        return;
      }
      if (segno < currentSegno) await this.#files.closeWriter(segno);
    }
    this.#lastSyncRoundMs = this.#statSyncMs - roundMsBefore;
    this.#syncedLsn = target;
  }

  /** One fdatasync of the log's segments, counted and timed for {@link stats}. */
  async #timedSync(file: StorageFile, urgent: boolean): Promise<void> {
    // A sync that holds the event loop would hold the `write` announcement too (a standby's
    // write report, which remote_write commits wait for): announce before it. While a commit
    // waiting for this or a later sync also waits for a standby, an early sender it woke gets
    // the event loop first, so the WAL goes out while the sync runs; when only local commits
    // wait, they are not made to wait for the sends.
    if (urgent && file.syncBlocks === true && this.#announceWrittenNow() && this.#replicatedUntil > this.#syncedLsn) await nextTurn();
    const started = currentScheduler().monotonic();
    try {
      await (urgent ? file.datasync() : file.datasync(NOT_URGENT));
    } finally {
      this.#statSyncs++;
      this.#statSyncMs += currentScheduler().monotonic() - started;
    }
  }

  #advanceFlushed(synced: boolean): void {
    if (this.#failure !== null) return;
    const durable = this.#sync === 'none' ? this.#writtenLsn : this.#syncedLsn;
    if (!synced && this.#sync === 'fdatasync') return;
    const previous = this.flushedLsn;
    if (durable <= previous) return;
    // Releases the waiters it reaches, in LSN order, without looking at the others.
    this.#flushed.advance(durable);
    this.#notifyTail();
    this.#emit('flush', { flushedLsn: durable });
    if (walFlushChannel.hasSubscribers && !this.#log.quiet) {
      const message: WalFlushDiagnostic = { wal: this.#owner, flushedLsn: durable, bytes: durable - previous, syncMs: synced ? this.#lastSyncRoundMs : 0 };
      walFlushChannel.publish(message);
    }
  }

  #fail(error: WalshipError): void {
    if (this.#failure !== null) return;
    this.#failure = error;
    this.#stopped(error);
    this.#runs = [];
    this.#pendingBytes = 0;
    this.#log.error('log stopped: %s', error.message);
    this.#flushed.fail(error);
    this.#notifyTail();
    this.#emit('error', { error, fatal: true });
  }
}

/**
 * Writes `buffers` back to back at `position`: one pwritev when the storage has it, else one
 * write each, with the storage's failure contract (`bytesWritten` counts from `position`).
 */
async function writeAll(file: StorageFile, buffers: readonly Buffer[], position: number): Promise<void> {
  if (buffers.length > 1 && file.writev !== undefined) {
    await file.writev(buffers, position);
    return;
  }
  let done = 0;
  for (const buffer of buffers) {
    try {
      await file.write(buffer, position + done);
    } catch (err) {
      // Count from `position`, as writev would.
      (err as StorageWriteError).bytesWritten = done + ((err as StorageWriteError).bytesWritten ?? 0);
      throw err;
    }
    done += buffer.length;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Resolves on the next turn of the event loop, once every promise reaction queued now has run. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => currentScheduler().setImmediate(resolve));
}
