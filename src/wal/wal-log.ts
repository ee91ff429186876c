import { checksumImplementation } from '../checksum.js';
import { WalCorruptError, WalshipError, abortError, errnoCode, isWalshipError } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { createLogger, type Logger } from '../logger.js';
import { assertLsn, formatLsn, type Lsn } from '../lsn.js';
import { compileOptions, withDefaults, type OptionsValidator } from '../options.js';
import { NodeStorage } from '../storage/node-storage.js';
import { isStorage, type Storage, type StorageLock } from '../storage/storage.js';
import {
  COMMIT_TIME_SIZE,
  FORMAT_VERSION,
  MAX_CHANNEL_BYTES,
  MAX_RESTORE_POINT_NAME_BYTES,
  RECORD_END_OF_RECOVERY,
  RECORD_HEADER_SIZE,
  RECORD_SHUTDOWN,
  SEGMENT_HEADER_SIZE,
  align,
  readSegmentHeader,
  restorePointPayloadSize,
  type WalEntry,
} from './record.js';
import { recoverEnd } from './recovery.js';
import { RecycleEstimate } from './recycle-estimate.js';
import { SegmentFiles, copySegmentPrefix } from './segment-files.js';
import { DEFAULT_SEGMENT_SIZE, SEGMENT_SIZES, parseSegmentFileName, parseWalFileName, segmentFileName } from './segment-name.js';
import { historyFileName, readTimelineHistory, segmentTimeline, timelineOf, writeTimelineHistory, type TimelineHistory } from './timeline-history.js';
import { readWalBytes, type ReadBytesOptions, type WalChunk } from './wal-byte-reader.js';
import { WalReader, type ReadOptions, type RestorePointRecord, type WalRecord } from './wal-reader.js';
import { WalWriter } from './wal-writer.js';
import { clearTimer, currentScheduler, schedulerClock, type SchedulerTimer } from '../scheduler.js';

/** How appended records are made durable. */
export type SyncMode = 'fdatasync' | 'none';

/** Options of {@link WalLog.open}. Give `dir` or `storage`. */
export interface WalLogOptions {
  /** Directory of the segment files (created if missing); shorthand for `storage: new NodeStorage(dir)`. */
  dir?: string;
  /** Where the segment files live; {@link MemoryStorage} for simulations. */
  storage?: Storage;
  /**
   * Segment size in bytes: a power of two from 64 KiB to 1 GiB. An existing log keeps the
   * size it was created with; asking for another is a `WAL_FORMAT` error.
   * @defaultValue 16 MiB for a new log
   */
  segmentSize?: number;
  /**
   * The timeline whose segments this log writes and reads. Its history file
   * (`0000000N.history`, written by a promotion) must be in the storage for a timeline after
   * 1: it says which timeline's file holds each older segment.
   * @defaultValue the highest timeline on disk, or 1
   */
  timeline?: number;
  /**
   * `fdatasync` makes every flush durable. `none` skips syncing and is unsafe: a power loss
   * or OS crash can lose acknowledged records. Use it for tests and benchmarks only.
   * @defaultValue 'fdatasync'
   */
  sync?: SyncMode;
  /**
   * How many removed segment files to keep, renamed to future segment names, so that new
   * segments need no allocation. 0 deletes removed segments.
   * @defaultValue 4
   */
  recycleSegments?: number;
  /**
   * The most removed segment files kept for reuse (PostgreSQL's `max_wal_size`, counted in
   * segments). After a burst of WAL, {@link WalLog.removeSegmentsBefore} keeps as many as
   * the log wrote between its last removals (PostgreSQL's estimate), at least
   * `recycleSegments` and at most this, so that the next burst writes into allocated files
   * whose pages may still be cached. Each spare file takes a segment's size on disk.
   * @defaultValue 64
   */
  maxRecycleSegments?: number;
  /**
   * `replica` makes a log that receives its bytes from upstream through
   * {@link WalLog.writeBytes} (a standby's): `append()` is refused with `READ_ONLY`, nothing of
   * its own is ever written into it (no shutdown record), so it stays byte-identical to its
   * source, and recovery ends it at the first bad record of its last segment, since its
   * records' stamps are its upstream's: what follows is fetched again from upstream (a bad
   * spot followed by a later segment holding WAL is `WAL_CORRUPT`, as on a primary). Its new segments are created
   * sparse rather than zero-filled, since catching up writes every byte of them anyway.
   * @defaultValue 'primary'
   */
  role?: 'primary' | 'replica';
  /**
   * For a new, empty log: begin in the segment holding this LSN instead of segment 1 (a
   * standby that starts from a base backup receives WAL from that segment on). Ignored when
   * the log already has segments.
   */
  startLsn?: Lsn;
  /** A prefix for this log's `debug` lines, to tell several logs in one process apart. */
  logPrefix?: string;
  /**
   * The wall clock that batches' commit times (and restore points' times) come from:
   * milliseconds since the epoch. Read once per run of synchronous code: the records appended
   * with no `await` between them (a loop of appends, the committers one flush wakes) share
   * its time; an `await` in between reads it anew. @defaultValue `Date.now`
   */
  clock?: () => number;
}

/** Defaults of {@link WalLogOptions}. */
export const WAL_LOG_DEFAULTS = Object.freeze({
  /** Every flush is made durable with fdatasync. */
  sync: 'fdatasync' as SyncMode,
  /** At least four removed segment files are kept for reuse. */
  recycleSegments: 4,
  /** At most 64 after a burst (1 GiB of 16 MiB segments, PostgreSQL's default `max_wal_size`). */
  maxRecycleSegments: 64,
  /** A log that appends its own records. */
  role: 'primary' as 'primary' | 'replica',
});

/** The literal behind {@link walLogOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const walLogSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    dir: { type: 'string', minLength: 1 },
    storage: {},
    segmentSize: { enum: [...SEGMENT_SIZES] },
    timeline: { type: 'integer', minimum: 1, maximum: 0xffffffff },
    sync: { enum: ['fdatasync', 'none'] },
    recycleSegments: { type: 'integer', minimum: 0, maximum: 1024 },
    maxRecycleSegments: { type: 'integer', minimum: 0, maximum: 1024 },
    role: { enum: ['primary', 'replica'] },
    startLsn: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    logPrefix: { type: 'string' },
    clock: {},
  },
});

/** JSON schema of the JSON-describable {@link WalLogOptions} (`storage` is checked by a type guard). */
export const walLogOptionsSchema: typeof walLogSchema = walLogSchema;

/**
 * How long after a switch the files it leaves for later are written: the old timeline's
 * `.partial` copy and the new timeline's history file. Not during the switch, nor under the
 * first commits after it, whose fdatasyncs would wait for the same journal commit.
 */
const AFTER_SWITCH_DELAY_MS = 1000;

const validateOptions: OptionsValidator<WalLogOptions> = compileOptions('WalLog', walLogOptionsSchema);

/** Where an appended record landed. */
export interface AppendResult {
  /** The record's LSN: where it starts; readers can start here. */
  readonly lsn: Lsn;
  /** Where the record ends: what {@link WalLog.waitForFlush} waits for. */
  readonly endLsn: Lsn;
  /**
   * How many times the log had dropped failed appends (see `ENOSPC`) when this record was
   * appended. Passing the whole result to {@link WalLog.waitForFlush} lets it tell this
   * record from a later one that reused its LSNs after such a drop.
   */
  readonly generation: number;
  /**
   * The commit time stamped into the record: milliseconds since the epoch, from the log's
   * `clock` (whole milliseconds with `Date.now`; the format keeps microseconds).
   */
  readonly commitTime: number;
}

/** Payload of the `flush` event. */
export interface FlushEvent {
  /** The new durable end of the log. */
  readonly flushedLsn: Lsn;
}

/** Payload of a replica log's `readable` event. */
export interface ReadableEvent {
  /** The new readable end ({@link WalLog.readableLsn}). */
  readonly readableLsn: Lsn;
}

/**
 * What a log's writer has done since the log was opened ({@link WalLog.stats}; PostgreSQL's
 * `pg_stat_wal`). Counters only grow.
 */
export interface WalStats {
  /** WAL bytes handed to the OS: how far the written end moved (a segment's unused end counts when a segment-end record closes it). */
  readonly bytesWritten: number;
  /** Write calls (one `pwritev` per segment per write round). */
  readonly writes: number;
  /** `fdatasync` calls on the log's segments (none with `sync: 'none'` but at close). */
  readonly syncs: number;
  /** Time spent in those `fdatasync` calls, in seconds. */
  readonly syncSeconds: number;
}

/** The message on the `walship:wal:flush` diagnostics channel: a log's durable end advanced. */
export interface WalFlushDiagnostic {
  /** The log (compare with `primary.wal` to tell nodes apart). */
  readonly wal: WalLog;
  /** The new durable end. */
  readonly flushedLsn: Lsn;
  /** How far it moved: the bytes this flush made durable. */
  readonly bytes: number;
  /** Time the `fdatasync` round behind it took, in milliseconds (0 with `sync: 'none'`). */
  readonly syncMs: number;
}

/** Payload of the `write` event. */
export interface WriteEvent {
  /** The new end of what was handed to the OS (not necessarily durable yet). */
  readonly writtenLsn: Lsn;
}

/** Payload of the `segment:removed` event. */
export interface SegmentRemovedEvent {
  /** File names of the removed segments. */
  readonly segments: readonly string[];
}

/** Payload of the `file:kept` event. */
export interface FileKeptEvent {
  /** The file's name: a timeline history file (`0000000N.history`) or a `.partial` segment. */
  readonly name: string;
}

/** Payload of the `error` event. */
export interface WalErrorEvent {
  /** `WAL_SYNC_FAILED` or another storage failure when `fatal`; `WAL_IO` (transient, e.g. `ENOSPC`) when not. */
  readonly error: WalshipError;
  /** True when the log stopped (fail-stop); false when only some appends failed. */
  readonly fatal: boolean;
}

/** Events of a {@link WalLog}. */
export interface WalLogEvents {
  /** The log is flushed up to `flushedLsn` (durable, unless `sync` is `'none'`). */
  flush: (event: FlushEvent) => void;
  /** Bytes were handed to the OS (a standby reports its write position on it: `remote_write`). */
  write: (event: WriteEvent) => void;
  /**
   * A replica's readable end moved because its upstream said more of its WAL is durable
   * ({@link WalLog.confirmUpstreamDurable}); a flush that moves it emits `flush` only, and
   * setting or lifting the bound ({@link WalLog.boundUpstreamDurable}: a stream's start, a
   * promotion) emits nothing. With early WAL a standby often flushes WAL before it hears that
   * it is durable, so the word, not the flush, completes a segment for its archiver.
   */
  readable: (event: ReadableEvent) => void;
  /** Segment files were removed or recycled ({@link WalLog.removeSegmentsBefore}), or old timelines' `.partial` copies removed. */
  'segment:removed': (event: SegmentRemovedEvent) => void;
  /** A timeline switch's history file, or the old timeline's `.partial` segment, is durable in the directory (for the archiver). */
  'file:kept': (event: FileKeptEvent) => void;
  /** Appends failed: after a failed fsync the log stopped (`fatal`, later calls reject with `WAL_CLOSED`); otherwise only the appends from the failure on were dropped and the log goes on. */
  error: (event: WalErrorEvent) => void;
}

/** One entry to append: bytes, or bytes with a channel tag. */
export type EntryInput = Uint8Array | WalEntry;

/** `sealing`/`sealed`: {@link WalLog.seal} refuses appends; readers go on (see there). */
type State = 'open' | 'sealing' | 'sealed' | 'closing' | 'closed' | 'failed';

/**
 * A segmented, checksummed write-ahead log with group commit.
 *
 * `append()` assigns the next LSN synchronously and buffers the record; `flush()` and
 * `waitForFlush(lsn)` resolve once it is durable. Every committer waiting at the same time
 * shares one write and one fdatasync. Readers iterate records from any LSN, across
 * segments, and can follow the live tail.
 */
export class WalLog extends SafeEmitter<WalLogEvents> {
  /** The segment size in bytes. */
  readonly segmentSize: number;
  /** The sync mode. */
  readonly sync: SyncMode;
  /** Where the files live. */
  readonly storage: Storage;
  /** Largest record (header and payload) that fits in one segment. */
  readonly maxRecordSize: number;

  #state: State = 'open';
  #role: 'primary' | 'replica';
  /** The history of the log's timeline: which timeline's file holds each segment. */
  #history: TimelineHistory;
  #closing: Promise<void> | null = null;
  #sealing: Promise<void> | null = null;
  readonly #lock: StorageLock;
  readonly #files: SegmentFiles;
  readonly #log: Logger;
  /** The insert position, the pending records, and the group-commit writer. */
  readonly #writer: WalWriter;
  #oldestSegno: number;
  #tailWatchers = new Set<() => void>();
  /** How many of {@link #tailWatchers} wait for written bytes (early senders). */
  #writtenWatchers = 0;
  /** File work that goes on after the call that started it (see {@link #keepPartial}); close waits for it. */
  readonly #background = new Set<Promise<void>>();
  /** The `.partial` copy waiting to start (see {@link #keepPartial}). */
  #pendingPartial: SchedulerTimer | null = null;
  /** The `.partial` copy being made in the background (see {@link #keepPartial}), if any. */
  #copyingPartial: string | null = null;
  /** The history file a switch left to write (see {@link historyFileWritten}), until it is on disk. */
  #historyFile: PendingHistoryFile | null = null;
  /** The end of WAL when the log was opened: a clean close writes a shutdown record only after appends. */
  readonly #openedAt: Lsn;
  /** The highest flush stamp of a valid record found when the log was opened (see {@link recoveredStamp}). */
  readonly #recoveredStamp: Lsn;
  /**
   * A replica's bound on what readers see: the highest position known durable on the
   * primary (see {@link readableLsn}); null when everything flushed is.
   */
  #upstreamDurable: Lsn | null = null;
  /** See {@link keptLsn}. */
  #kept: Lsn | null = null;
  /** How many removed segment files {@link removeSegmentsBefore} keeps for reuse. */
  readonly #recycling: RecycleEstimate;

  private constructor(init: {
    storage: Storage;
    lock: StorageLock;
    files: SegmentFiles;
    log: Logger;
    segmentSize: number;
    history: TimelineHistory;
    sync: SyncMode;
    role: 'primary' | 'replica';
    endLsn: Lsn;
    endSegmentVersion: number;
    oldestSegno: number;
    clock: () => number;
    recoveredStamp: Lsn;
    recycling: RecycleEstimate;
  }) {
    super();
    this.storage = init.storage;
    this.#lock = init.lock;
    this.#files = init.files;
    this.#log = init.log;
    this.emitterLog = init.log;
    this.segmentSize = init.segmentSize;
    this.#history = init.history;
    this.sync = init.sync;
    this.#role = init.role;
    this.maxRecordSize = init.segmentSize - SEGMENT_HEADER_SIZE;
    this.#writer = new WalWriter({
      owner: this,
      files: init.files,
      log: init.log,
      segmentSize: init.segmentSize,
      timeline: init.history.timeline,
      sync: init.sync,
      endLsn: init.endLsn,
      endSegmentVersion: init.endSegmentVersion,
      clock: init.clock,
      emit: (event, ...args) => this.emitSafely(event, ...args),
      notifyTail: () => this.#notifyTail(),
      notifyWritten: () => {
        const waiting = this.#writtenWatchers;
        this.#notifyTail();
        return this.#writtenWatchers < waiting;
      },
      stopped: () => {
        this.#state = 'failed';
      },
    });
    this.#oldestSegno = init.oldestSegno;
    this.#openedAt = init.endLsn;
    this.#recoveredStamp = init.recoveredStamp;
    this.#recycling = init.recycling;
  }

  /**
   * Opens (or creates) a log: takes the directory lock, finds the end of valid WAL,
   * discards a torn tail, and refuses damage in the middle with `WAL_CORRUPT`: a damaged
   * record before one written after it was durable, or a missing or damaged segment followed
   * by a segment that holds WAL. Refusing changes nothing on disk; no segment is ever deleted
   * at open except an ancestor timeline's empty ones past its switch point.
   */
  static async open(options: WalLogOptions): Promise<WalLog> {
    validateOptions(options);
    checksumImplementation(); // says once, on `walship:checksum`, when checksums run without the native addon
    if (options.storage !== undefined && !isStorage(options.storage)) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid WalLog options: WalLog.storage must implement the Storage interface');
    }
    if ((options.dir === undefined) === (options.storage === undefined)) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid WalLog options: give exactly one of WalLog.dir and WalLog.storage');
    }
    if (options.clock !== undefined && typeof options.clock !== 'function') {
      throw new WalshipError('INVALID_OPTIONS', 'invalid WalLog options: WalLog.clock must be a function returning milliseconds since the epoch');
    }
    const config = withDefaults(WAL_LOG_DEFAULTS, options);
    const storage = options.storage ?? new NodeStorage(options.dir as string);
    const log = createLogger('wal', config.logPrefix);
    await wrapIo(() => storage.prepare(), `preparing ${storage.description}`);
    const lock = await storage.lock();
    try {
      return await WalLog.#recover(storage, lock, log, config);
    } catch (err) {
      await lock.release().catch(() => undefined);
      throw err;
    }
  }

  static async #recover(
    storage: Storage,
    lock: StorageLock,
    log: Logger,
    config: WalLogOptions & typeof WAL_LOG_DEFAULTS,
  ): Promise<WalLog> {
    const names = await wrapIo(() => storage.list(), 'listing segments');
    for (const name of names.filter((n) => n.endsWith('.tmp'))) {
      await wrapIo(() => storage.remove(name), `removing ${name}`);
    }
    const segmentSize = config.segmentSize ?? (await detectSegmentSize(storage, names)) ?? DEFAULT_SEGMENT_SIZE;
    const parsed = names.flatMap((name) => parseSegmentFileName(name, segmentSize) ?? []);
    const timeline = config.timeline ?? Math.max(1, ...parsed.map((p) => p.timeline));
    const history = await wrapIo(() => readTimelineHistory(storage, timeline), 'reading the timeline history');
    if (history === null) {
      throw new WalshipError('WAL_CORRUPT', `${historyFileName(timeline)} is missing in ${storage.description}: timeline ${timeline}'s history says where its WAL came from`);
    }
    const placed = (await setAsideSuperseded(storage, names, history, segmentSize, log))
      ? (await wrapIo(() => storage.list(), 'listing segments')).flatMap((name) => parseSegmentFileName(name, segmentSize) ?? [])
      : parsed;
    // Only the files on this timeline's path: older timelines' WAL past their switch points is not this log's.
    const segnos = placed
      .filter((p) => p.timeline === segmentTimeline(history, p.segno, segmentSize))
      .map((p) => p.segno)
      .sort((a, b) => a - b);

    const firstSegno = config.startLsn === undefined ? 1 : Math.floor(config.startLsn / segmentSize);
    if (firstSegno < 1) throw new WalshipError('INVALID_OPTIONS', 'invalid WalLog options: WalLog.startLsn must lie in segment 1 or later');
    const found = await wrapIo(
      () => recoverEnd(storage, segnos, segmentSize, history, config.role === 'primary', firstSegno),
      'recovering',
    );
    const files = new SegmentFiles(storage, segmentSize, history, log, config.role === 'replica');
    for (const segno of segnos) files.present.add(segno);
    const endSegno = Math.floor(found.endLsn / segmentSize);
    if (found.zeroTo > found.endLsn) {
      log('zeroing the discarded tail %s..%s', formatLsn(found.endLsn), formatLsn(found.zeroTo));
      await wrapIo(async () => {
        const file = await files.forWrite(endSegno);
        await file.write(Buffer.alloc(found.zeroTo - found.endLsn), found.endLsn - endSegno * segmentSize);
        await file.datasync();
      }, 'zeroing the torn tail');
    }
    // Bytes a crashed process wrote may still sit unsynced in the page cache: sync what is
    // past the last position known durable before calling it flushed.
    const firstUnsure = Math.floor(found.durableStamp / segmentSize);
    for (const segno of segnos) {
      if (segno < firstUnsure || segno > endSegno || !files.present.has(segno)) continue;
      await wrapIo(async () => (await files.forWrite(segno)).datasync(), 'syncing recovered segments');
      if (segno < endSegno) await files.closeWriter(segno);
    }
    const oldestSegno = segnos.find((s) => files.present.has(s) && s <= endSegno) ?? endSegno;
    log('opened %s: segment size %d, timeline %d, end of WAL %s', storage.description, segmentSize, timeline, formatLsn(found.endLsn));
    return new WalLog({
      storage,
      lock,
      files,
      log,
      segmentSize,
      history,
      sync: config.sync,
      role: config.role,
      endLsn: found.endLsn,
      endSegmentVersion: found.endVersion,
      oldestSegno,
      clock: config.clock ?? schedulerClock(currentScheduler()),
      recoveredStamp: found.durableStamp,
      recycling: new RecycleEstimate({ segmentSize, min: config.recycleSegments, max: config.maxRecycleSegments, openedAt: found.endLsn }),
    });
  }

  /** The next insert position: where the next appended record (or its segment header) goes. */
  get insertLsn(): Lsn {
    return this.#writer.insertLsn;
  }

  /** End of the bytes handed to the operating system. */
  get writtenLsn(): Lsn {
    return this.#writer.writtenLsn;
  }

  /**
   * Copies the written bytes `[lsn, lsn + length)` into `target` when the writer still holds
   * them in memory (the last block it wrote); false when they must be read from the segment.
   * @internal
   */
  copyWritten(target: Buffer, lsn: Lsn, length: number): boolean {
    return this.#writer.copyWritten(target, lsn, length);
  }

  /** End of the durable log: every record ending at or below it survives a crash. */
  get flushedLsn(): Lsn {
    return this.#writer.flushedLsn;
  }

  /**
   * End of what readers see (replay, cascading senders, a standby's archiver): the flushed
   * end, but on a replica never past the highest position known durable on the primary
   * ({@link boundUpstreamDurable}). WAL an early-sending primary shipped before its own
   * fdatasync returned is durable here but may still be lost there; it stays unread until
   * the primary says it is durable.
   */
  get readableLsn(): Lsn {
    const flushed = this.#writer.flushedLsn;
    return this.#upstreamDurable === null ? flushed : Math.min(flushed, this.#upstreamDurable);
  }

  /** The replica's bound on readers (see {@link readableLsn}); null when there is none. */
  get upstreamDurableLsn(): Lsn | null {
    return this.#upstreamDurable;
  }

  /**
   * The highest flush stamp of any valid record when the log was opened: every position below
   * it was durable on the node that wrote the record (on a replica, its primary).
   */
  get recoveredStamp(): Lsn {
    return this.#recoveredStamp;
  }

  /**
   * Sets the replica's bound on readers to `lsn` (lower or higher than before), or lifts it
   * (`null`): readers see nothing past it until {@link confirmUpstreamDurable} moves it on.
   * A reader already past a lowered bound is the caller's to stop.
   */
  boundUpstreamDurable(lsn: Lsn | null): void {
    if (lsn !== null) assertLsn(lsn);
    this.#upstreamDurable = lsn;
    this.#notifyTail();
  }

  /**
   * A replica's WAL up to here (past {@link upstreamDurableLsn}) may hold what this node
   * confirmed to its primary before a restart: a promotion keeps it. Null when there is none;
   * lowered by a cut ({@link cutBack}, {@link discardFrom}).
   */
  get keptLsn(): Lsn | null {
    return this.#kept;
  }

  /** Sets {@link keptLsn} (a replica reopened with WAL past its bound), or clears it. */
  keep(lsn: Lsn | null): void {
    if (lsn !== null) assertLsn(lsn);
    this.#kept = lsn;
  }

  /**
   * The primary says everything up to `lsn` is durable there: a bound set by
   * {@link boundUpstreamDurable} moves up to it (never down), and `readable` is emitted when
   * that moves the readable end. Without a bound, nothing changes.
   */
  confirmUpstreamDurable(lsn: Lsn): void {
    if (this.#upstreamDurable === null || lsn <= this.#upstreamDurable) return;
    const before = this.readableLsn;
    this.#upstreamDurable = lsn;
    this.#notifyTail();
    const readableLsn = this.readableLsn;
    if (readableLsn > before) this.emitSafely('readable', { readableLsn });
  }

  /** Bytes written, writes and fdatasyncs since the log was opened (see {@link WalStats}). */
  stats(): WalStats {
    return this.#writer.stats();
  }

  /** Start of the oldest segment still on disk; readers can start here or later. */
  get oldestLsn(): Lsn {
    return this.#oldestSegno * this.segmentSize;
  }

  /** Bytes appended but not yet handed to the operating system. */
  get pendingBytes(): number {
    return this.#writer.pendingBytes;
  }

  /** True once the log is closed (or closing) or stopped after a fatal error; a sealed log is not closed. */
  get closed(): boolean {
    return this.#state !== 'open' && !this.#isSealed();
  }

  /** True once {@link seal} was called (and the log is not closed): no appends, readers go on. */
  get sealed(): boolean {
    return this.#isSealed();
  }

  /** The fatal error that stopped the log, if any. */
  get failure(): WalshipError | null {
    return this.#writer.failure;
  }

  /** The timeline this log writes (a replica: the one it receives). */
  get timeline(): number {
    return this.#history.timeline;
  }

  /** The history of {@link timeline}: its ancestors and where it left each. */
  get history(): TimelineHistory {
    return this.#history;
  }

  /** `replica` when the log receives its bytes from upstream (see {@link WalLogOptions.role}). */
  get role(): 'primary' | 'replica' {
    return this.#role;
  }

  /** The timeline WAL at `lsn` belongs to, on this log's history. */
  timelineAt(lsn: Lsn): number {
    return timelineOf(this.#history, lsn);
  }

  /** The file name of the segment holding `lsn` (on the timeline whose file holds it). */
  segmentName(lsn: Lsn): string {
    return this.#files.name(Math.floor(lsn / this.segmentSize));
  }

  /**
   * Appends one committed batch as a single record and returns its position at once. The
   * record is durable once {@link waitForFlush} with its `endLsn` (or {@link flush}) resolves.
   * A batch is one or more entries: `Uint8Array`s, or `{ data, channel }` objects.
   */
  append(batch: EntryInput | readonly EntryInput[]): AppendResult {
    this.#assertOpen();
    if (this.role === 'replica') throw new WalshipError('READ_ONLY', 'this log is a replica: it only receives WAL from upstream (writeBytes)');
    const single = batch instanceof Uint8Array || !Array.isArray(batch);
    const entries = single ? [batch as EntryInput] : (batch as readonly EntryInput[]);
    if (entries.length === 0) throw new WalshipError('INVALID_ARGUMENT', 'append needs at least one entry');

    let payload = COMMIT_TIME_SIZE;
    for (let i = 0; i < entries.length; i++) payload += this.#entrySize(entries[i], i);
    const length = RECORD_HEADER_SIZE + payload;
    const padded = align(length);
    if (padded > this.maxRecordSize) {
      throw new WalshipError(
        'RECORD_TOO_LARGE',
        `a record of ${length} bytes does not fit in a ${this.segmentSize}-byte segment (at most ${this.maxRecordSize} bytes); split the batch or use a larger segmentSize`,
      );
    }

    return this.#writer.append(entries, payload, padded, this.#writer.commitMicros());
  }

  /**
   * Appends a named restore point (PostgreSQL's `pg_create_restore_point`): a record without
   * entries that a standby can stop replaying at (`recoveryTarget: { name }`); readers skip it
   * unless asked for restore points. The name is 1 to 64 UTF-8 bytes (`INVALID_ARGUMENT`);
   * names need not be unique (a target stops at the first). Durable like a batch: once
   * {@link waitForFlush} with the result resolves.
   */
  appendRestorePoint(name: string): AppendResult {
    this.#assertOpen();
    if (this.role === 'replica') throw new WalshipError('READ_ONLY', 'this log is a replica: it only receives WAL from upstream (writeBytes)');
    const nameBytes = checkRestorePointName(name);
    const payload = restorePointPayloadSize(nameBytes);
    return this.#writer.appendRestorePoint(name, nameBytes, payload, align(RECORD_HEADER_SIZE + payload), this.#writer.commitMicros());
  }

  #entrySize(entry: EntryInput | undefined, index: number): number {
    if (entry instanceof Uint8Array) return 5 + entry.length;
    if (typeof entry !== 'object' || entry === null || !(entry.data instanceof Uint8Array)) {
      throw new WalshipError('INVALID_ARGUMENT', `entry ${index} must be a Uint8Array or { data: Uint8Array, channel?: string }`);
    }
    let channelBytes = 0;
    if (entry.channel !== undefined) {
      if (typeof entry.channel !== 'string') throw new WalshipError('INVALID_ARGUMENT', `entry ${index}: channel must be a string`);
      channelBytes = Buffer.byteLength(entry.channel);
      if (channelBytes === 0 || channelBytes > MAX_CHANNEL_BYTES) {
        throw new WalshipError('INVALID_ARGUMENT', `entry ${index}: channel must be 1 to ${MAX_CHANNEL_BYTES} UTF-8 bytes`);
      }
    }
    return 5 + channelBytes + entry.data.length;
  }

  /**
   * Appends bytes received from upstream at `startLsn`, which must be this log's
   * {@link insertLsn}, on a replica log. The bytes are written as they are (they may end
   * inside a record: readers wait for the rest) and are durable once {@link waitForFlush}
   * with the returned LSN, or {@link flush}, resolves. `data` is kept, not copied: it must
   * not change until then. Returns the new insert position.
   */
  writeBytes(startLsn: Lsn, data: Uint8Array): Lsn {
    assertLsn(startLsn, 'startLsn');
    this.#assertOpen();
    if (this.role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'writeBytes is for replica logs; a primary appends records');
    if (!(data instanceof Uint8Array)) throw new WalshipError('INVALID_ARGUMENT', 'writeBytes needs a Uint8Array');
    if (startLsn !== this.#writer.insertLsn) {
      throw new WalshipError('INVALID_ARGUMENT', `WAL bytes start at ${formatLsn(startLsn)}, but this log continues at ${formatLsn(this.#writer.insertLsn)}`);
    }
    if (data.length === 0) return this.#writer.insertLsn;
    return this.#writer.appendBytes(Buffer.from(data.buffer, data.byteOffset, data.length));
  }

  /**
   * Writes the bytes received up to `lsn` to the OS soon, without waiting for a flush (a
   * standby's write that a `remote_write` commit waits for; `write` follows). Replica logs only.
   */
  writeSoon(lsn: Lsn): void {
    this.#assertOpen();
    if (this.role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'writeSoon is for replica logs');
    this.#writer.writeSoon(lsn);
  }

  /**
   * Ends the current segment early and makes it durable, so that it can be archived now
   * (PostgreSQL's `pg_switch_wal`, and `archive_timeout`): the next record starts the next
   * segment. Resolves with the end of the segment that was ended, or `null` when the segment
   * held no record yet (nothing to switch from). Only on a primary log.
   */
  async switchSegment(): Promise<Lsn | null> {
    this.#assertOpen();
    if (this.role === 'replica') throw new WalshipError('READ_ONLY', 'this log is a replica: it ends its segments where its upstream did');
    if (!this.#writer.switchSegment()) return null;
    const end = this.#writer.insertLsn;
    await this.waitForFlush(end);
    return end;
  }

  /** Makes everything appended so far durable; resolves with the new flushed LSN. `background`: as in {@link waitForFlush}. */
  async flush(options: { signal?: AbortSignal; background?: boolean } = {}): Promise<Lsn> {
    await this.waitForFlush(this.#writer.insertLsn, options);
    return this.#writer.flushedLsn;
  }

  /**
   * Resolves once the log is durable up to `target` (the result of {@link append}, or an
   * LSN such as its `endLsn`), starting a flush if needed. Rejects if the records fail to
   * reach the disk, or the LSN is past everything appended. Pass the append result rather
   * than a bare LSN when appends can fail with `ENOSPC`: after such a failure the dropped
   * LSNs are reused, and only the result tells the dropped record from its successor.
   * `background`: nobody waits on this now (an asynchronous commit's apply), so the sync need
   * not be urgent (see `StorageFile.datasync`). `replicated`: the waiter waits for a standby
   * next (a synchronous commit), so an early sender may ship the WAL before a sync that holds
   * the event loop, rather than after it.
   */
  waitForFlush(target: Lsn | AppendResult, options: { signal?: AbortSignal; background?: boolean; replicated?: boolean } = {}): Promise<void> {
    const lsn = typeof target === 'number' ? target : target?.endLsn;
    assertLsn(lsn);
    if (typeof target === 'object') {
      // A drop after this append, from below its end, means the record was never written.
      const dropped = this.#writer.droppedError(target.generation, lsn);
      if (dropped !== undefined) return Promise.reject(dropped);
    }
    if (lsn <= this.#writer.flushedLsn) return Promise.resolve();
    if (this.#writer.failure !== null) return Promise.reject(this.#closedError());
    if (this.#state === 'closed') return Promise.reject(this.#closedError());
    const insertLsn = this.#writer.insertLsn;
    if (lsn > insertLsn) {
      return Promise.reject(
        new WalshipError('INVALID_ARGUMENT', `cannot wait for ${formatLsn(lsn)}: nothing has been appended past ${formatLsn(insertLsn)}`),
      );
    }
    if (options.signal?.aborted) return Promise.reject(abortError(options.signal));
    return this.#writer.waitForFlush(lsn, options);
  }

  /**
   * Iterates the records from `from` (a record's LSN, or a segment start such as
   * {@link oldestLsn}) in order. With `follow`, waits at the end of the durable log for
   * new records until the log closes or `signal` aborts.
   */
  read(from: Lsn, options: ReadOptions & { restorePoints: true }): AsyncIterableIterator<WalRecord | RestorePointRecord>;
  read(from: Lsn, options?: ReadOptions): AsyncIterableIterator<WalRecord>;
  read(from: Lsn, options: ReadOptions = {}): AsyncIterableIterator<WalRecord | RestorePointRecord> {
    assertLsn(from, 'from');
    this.#assertReadable();
    return new WalReader(this, from, options).records();
  }

  /**
   * Iterates the durable WAL bytes from `from` (any LSN from {@link oldestLsn} on) exactly as
   * they are on disk, as a WAL sender ships them: a receiver that writes them at the same
   * LSNs holds the same log. With `follow`, waits at the end for more.
   */
  readBytes(from: Lsn, options: ReadBytesOptions = {}): AsyncIterableIterator<WalChunk> {
    assertLsn(from, 'from');
    this.#assertReadable();
    return readWalBytes(this, from, options);
  }

  /**
   * Removes every whole segment that ends at or below `lsn` and returns their file names.
   * The segment holding the insert position and anything not yet flushed are never removed.
   * Removed files are renamed to future segment names while fewer spare files wait than the
   * log expects to need ({@link WalLogOptions.maxRecycleSegments}); the rest are deleted.
   */
  async removeSegmentsBefore(lsn: Lsn): Promise<string[]> {
    assertLsn(lsn);
    this.#assertOpen();
    const insertSegno = Math.floor(this.#writer.insertLsn / this.segmentSize);
    const flushedSegno = Math.floor(this.#writer.flushedLsn / this.segmentSize);
    const limit = Math.min(Math.floor(lsn / this.segmentSize), insertSegno, flushedSegno);
    // A removal that failed part-way (ENOSPC on a recycling rename) left files to remove still.
    if (limit <= this.#oldestSegno && ![...this.#files.present].some((s) => s < limit)) return [];
    // Readers check this after every read, so they never trust bytes of a recycled file.
    this.#oldestSegno = Math.max(this.#oldestSegno, limit);
    this.#writer.forgetSegmentsBelow(limit);
    const spare = this.#recycling.spareSegments(this.#writer.insertLsn);
    const removed = await wrapIo(() => this.#files.removeBelow(limit, insertSegno, spare), 'removing segments');
    if (removed.length > 0) {
      this.#log('removed %d segments below %s', removed.length, formatLsn(limit * this.segmentSize));
      this.emitSafely('segment:removed', { segments: removed });
    }
    return removed;
  }

  /**
   * Removes the `.partial` segments (a promotion's copy of the old timeline's last segment)
   * of segments that end at or below `lsn`, except those `keep` names (the archiver's still
   * to put), as PostgreSQL's checkpoints remove them; returns their names. Their bytes below
   * the switch point are also in the new timeline's segment.
   */
  async removePartialsBefore(lsn: Lsn, keep: (name: string) => boolean): Promise<string[]> {
    assertLsn(lsn);
    this.#assertOpen();
    const limit = Math.floor(lsn / this.segmentSize);
    const names = await wrapIo(() => this.storage.list(), 'listing segments');
    const gone = names.filter((name) => {
      const file = parseWalFileName(name, this.segmentSize);
      // Not one being made: until it is done, the archiver has not heard of it.
      return file?.kind === 'partial' && file.segno < limit && name !== this.#copyingPartial && !keep(name);
    });
    if (gone.length === 0) return [];
    for (const name of gone) await wrapIo(() => this.storage.remove(name), `removing ${name}`);
    await wrapIo(() => this.storage.syncDirectory(), 'syncing the WAL directory');
    this.#log('removed %o', gone);
    this.emitSafely('segment:removed', { segments: gone });
    return gone;
  }

  // ---- timelines ----

  /**
   * The end of the complete records from `from` (a record's start, or a segment start, at or
   * below the end): where a new timeline can begin; and the end of the last batch before it.
   * On a replica the received bytes may end inside a record; that partial record is not part of it.
   */
  async endOfRecords(from: Lsn): Promise<{
    /** The end of the last complete record. */
    end: Lsn;
    /** The end of the last batch before `end`; the search's start (`from`, or the oldest LSN kept) when there is none. */
    lastBatchEnd: Lsn;
  }> {
    this.#assertReadable();
    await this.#writer.drain();
    const start = Math.max(from, this.oldestLsn);
    const reader = new WalReader(this, start, { reuseBuffers: true });
    let lastBatchEnd = start;
    for await (const record of reader.records()) lastBatchEnd = record.endLsn;
    let end = reader.position;
    // The reader steps over a segment header it has not seen whole: the new timeline writes its own.
    if (end % this.segmentSize === SEGMENT_HEADER_SIZE && this.#writer.flushedLsn < end) end -= SEGMENT_HEADER_SIZE;
    return { end, lastBatchEnd };
  }

  /**
   * Promotion's step in the log (PostgreSQL's `XLogInitNewTimeLine` and end-of-recovery
   * record): a replica log becomes a primary one on `history.timeline`, whose parent must be
   * this log's timeline, left at a switch point no later than the end of the complete records
   * (see {@link endOfRecords}). The segment holding the switch point moves to the new
   * timeline's file name (renamed, not copied: its bytes below the switch point are the
   * parent's), bytes past the switch point (a partial record from upstream) are overwritten,
   * segments prepared beyond it are removed, and an end-of-recovery record is the new
   * timeline's first record (flushed by the writer's next round, which the first commit joins:
   * it is not waited for). The caller records the new timeline (the control file) before
   * calling this. The rename is not synced: an open redoes it if a crash lost it, and a
   * directory whose control file still names the old timeline gets the segment back at open
   * (`removeAbandonedTimelines`). Resolves with the end of the
   * end-of-recovery record; a copy of the old timeline's segment up to the switch point is
   * then kept aside as `<old name>.partial` in the background. `segmentVersion` is what
   * {@link prepareTimelineSwitch} resolved with, when the caller ran it ahead (a promotion runs
   * it while it writes the control file); else the switch segment's header is read here.
   */
  async beginTimeline(history: TimelineHistory, segmentVersion?: number): Promise<Lsn> {
    this.#assertOpen();
    if (this.#role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'only a replica log begins a new timeline (a primary is already writing its own)');
    const switchLsn = this.#switchPointOf(history);
    await this.#writer.drain();
    if (switchLsn > this.#writer.flushedLsn) {
      throw new WalshipError('INVALID_ARGUMENT', `timeline ${history.timeline} cannot begin at ${formatLsn(switchLsn)}, past the end of the WAL at ${formatLsn(this.#writer.flushedLsn)}`);
    }
    const parent = this.timeline;
    // The new timeline's first records go into the switch segment only if it has the current format.
    const version = segmentVersion ?? (await this.#segmentVersionAt(switchLsn));
    this.#writeHistoryFile(history);
    await this.#switchFiles(history, switchLsn, version);
    this.#role = 'primary';
    // A primary's readers stop at its own durable end.
    this.#upstreamDurable = null;
    this.#kept = null;
    this.#files.sparse = false;
    // The writer's handle on the renamed segment opens now, while the caller goes on.
    this.#files.forWrite(Math.floor(switchLsn / this.segmentSize)).catch(() => undefined);
    this.#writer.appendMarker(RECORD_END_OF_RECOVERY);
    // Flushed by the writer's next round, not waited for here: the first commit's round (a
    // commit made in this turn joins it) makes both durable with one write and one fdatasync.
    // A crash before that leaves what a crash right after the control-file write leaves, the
    // new timeline with no record of its own yet, which an open takes as it is.
    const end = this.#writer.insertLsn;
    this.#writer.waitForFlush(end).catch(() => undefined);
    this.#log('timeline %d began at %s', history.timeline, formatLsn(switchLsn));
    this.#keepPartial(parent, switchLsn);
    return end;
  }

  /**
   * A replica follows its upstream onto `history.timeline` at the switch point, which must be
   * this log's end: the segment holding it moves to the new timeline's file name (as in
   * {@link beginTimeline}, after the caller recorded the new timeline), and what is received
   * next is written on the new timeline.
   */
  async followTimeline(history: TimelineHistory): Promise<void> {
    this.#assertOpen();
    if (this.#role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'only a replica log follows its upstream onto a new timeline');
    const switchLsn = this.#switchPointOf(history);
    await this.#writer.drain();
    if (switchLsn !== this.#writer.insertLsn) {
      throw new WalshipError('INVALID_ARGUMENT', `timeline ${history.timeline} begins at ${formatLsn(switchLsn)}, but this log ends at ${formatLsn(this.#writer.insertLsn)}`);
    }
    this.#writeHistoryFile(history);
    await this.#switchFiles(history, switchLsn);
    // The old timeline ended durably at the switch point; what the new one's primary made
    // durable, it says afresh (a bound heard from the old primary says nothing about it).
    if (this.#upstreamDurable !== null) this.#upstreamDurable = switchLsn;
    this.#log('following timeline %d from %s', history.timeline, formatLsn(switchLsn));
  }

  /**
   * Resolves once the current timeline's history file is durable: at once, unless a switch
   * ({@link beginTimeline}, {@link followTimeline}) left it to write (it is written now if it
   * has not been yet, and again if that failed; a failure rejects, `WAL_IO`). Call it before
   * recording a timeline past this one: its history extends this file.
   */
  async historyFileWritten(): Promise<void> {
    const pending = this.#historyFile;
    if (pending === null) return;
    let error = await this.#startHistoryFile(pending);
    if (error !== null) {
      pending.writing = null;
      error = await this.#startHistoryFile(pending);
    }
    if (error !== null) throw error;
    if (this.#historyFile === pending) this.#historyFile = null;
  }

  /**
   * Leaves the history file of the timeline a switch moves onto to write a moment later: its
   * content is recorded already (the caller's control file, from which an open rebuilds a file
   * a crash lost), and until the file is there the history is served from memory.
   */
  #writeHistoryFile(history: TimelineHistory): void {
    if (this.#historyFile !== null) void this.#startHistoryFile(this.#historyFile);
    const pending: PendingHistoryFile = { history, timer: null, writing: null };
    pending.timer = currentScheduler().setTimeout(() => void this.#startHistoryFile(pending), AFTER_SWITCH_DELAY_MS);
    pending.timer.unref();
    this.#historyFile = pending;
  }

  /** Starts writing `pending` unless it is under way; resolves with the error when it failed, else null. {@link close} waits for it. */
  #startHistoryFile(pending: PendingHistoryFile): Promise<unknown> {
    if (pending.timer !== null) clearTimer(pending.timer);
    pending.timer = null;
    if (pending.writing === null) {
      const { history } = pending;
      const writing = writeTimelineHistory(this.storage, history).then(
        () => {
          this.emitSafely('file:kept', { name: historyFileName(history.timeline) });
          return null;
        },
        (error: unknown) => {
          this.#log.error('writing %s: %s', historyFileName(history.timeline), describe(error));
          return error;
        },
      );
      pending.writing = writing;
      const done = writing.then(() => undefined);
      this.#background.add(done);
      void done.finally(() => this.#background.delete(done));
    }
    return pending.writing;
  }

  /**
   * Removes the segments past the one holding `lsn` (and that one when `lsn` is its start):
   * segments prepared ahead, or holding a partial record from upstream, none of which a new
   * timeline beginning at `lsn` keeps. Not synced: the caller's next directory sync (a
   * promotion's control-file write) makes it durable, and a crash that brings them back leaves
   * files past the end of the WAL, which nothing reads.
   */
  async removeSegmentsPast(lsn: Lsn): Promise<void> {
    const segno = Math.floor(lsn / this.segmentSize);
    // At a segment start the new timeline writes the segment afresh, header and all.
    const firstGone = lsn % this.segmentSize === 0 ? segno : segno + 1;
    await wrapIo(() => this.#files.removeFrom(firstGone), 'removing segments past the switch point');
  }

  /**
   * Keeps the old timeline's last segment up to the switch point as `<name>.partial`
   * (PostgreSQL keeps it the same way, for archives), copied from the new timeline's file in the
   * background a moment after the promotion; {@link close} waits for a copy under way. A
   * crash or close before it is done leaves it to the next {@link open}; meanwhile the same
   * bytes are in the new timeline's file.
   */
  #keepPartial(parent: number, switchLsn: Lsn): void {
    const segno = Math.floor(switchLsn / this.segmentSize);
    const within = switchLsn - segno * this.segmentSize;
    if (within === 0) return;
    const name = segmentFileName(parent, segno, this.segmentSize);
    const source = this.#files.name(segno);
    // A moment later: the copy's writes and sync would slow the new primary's first commits.
    const timer = currentScheduler().setTimeout(() => {
      this.#pendingPartial = null;
      if (this.#state !== 'open' && !this.#isSealed()) return;
      this.#copyingPartial = `${name}.partial`;
      const copying = copySegmentPrefix(this.storage, source, `${name}.partial`, within, this.segmentSize, true).then(
        () => this.emitSafely('file:kept', { name: `${name}.partial` }),
        (err: unknown) => this.#log.error('keeping %s.partial: %s', name, describe(err)),
      );
      this.#background.add(copying);
      void copying.finally(() => {
        this.#background.delete(copying);
        this.#copyingPartial = null;
      });
    }, AFTER_SWITCH_DELAY_MS);
    timer.unref();
    this.#pendingPartial = timer;
  }

  /**
   * Renames the files of older timelines that the current one superseded to `<name>.partial`:
   * the segment holding a switch point, still under its old timeline's name, when a newer
   * timeline's file holds that segment (a directory written before walship moved such
   * segments, or by hand). They are never read as WAL again. {@link open} does this too.
   */
  async setAsideSuperseded(): Promise<void> {
    const names = await wrapIo(() => this.storage.list(), 'listing segments');
    await setAsideSuperseded(this.storage, names, this.#history, this.segmentSize, this.#log);
  }

  /** The switch point of `history` away from this log's timeline (its last ancestor must be this timeline). */
  #switchPointOf(history: TimelineHistory): Lsn {
    const last = history.entries.at(-1);
    if (last === undefined || last.timeline !== this.timeline || history.timeline <= this.timeline) {
      throw new WalshipError('INVALID_ARGUMENT', `timeline ${history.timeline}'s history does not branch from this log's timeline ${this.timeline}`);
    }
    return last.switchLsn;
  }

  /**
   * Moves the log onto `history` at `switchLsn`: removes the old timeline's segments past the
   * switch point's (prepared ahead, or holding a partial record), renames the switch segment
   * to the new timeline's name, and restarts the writer there. No directory sync: the
   * caller's control-file write (before) and the open's repair (`removeAbandonedTimelines`)
   * make the rename safe.
   */
  async #switchFiles(history: TimelineHistory, switchLsn: Lsn, segmentVersion = FORMAT_VERSION): Promise<void> {
    const segno = Math.floor(switchLsn / this.segmentSize);
    // Through the files' queue: a segment being prepared ahead (under the old timeline's name)
    // when the switch began is removed with the others, not left listed under a name it lacks.
    const writtenLsn = this.#writer.writtenLsn;
    await wrapIo(() => this.#files.switchTimeline(history, switchLsn, writtenLsn), `moving the WAL onto timeline ${history.timeline} at ${formatLsn(switchLsn)}`);
    this.#history = history;
    // The next segment is prepared when the writer reaches it: a background zero-fill now would
    // compete with the promotion's own syncs.
    this.#writer.restartAt(switchLsn, history.timeline, segno, segmentVersion);
    this.#notifyTail();
  }

  /**
   * What {@link beginTimeline} at `switchLsn` can do ahead, changing nothing on disk: closes the
   * writer's handle on the switch segment (a later write reopens it) and resolves with the
   * segment's format version, for `beginTimeline`. A promotion runs it alongside its
   * control-file write, so that the steps after that write are only the rename and the
   * end-of-recovery record.
   */
  async prepareTimelineSwitch(switchLsn: Lsn): Promise<number> {
    this.#assertOpen();
    await this.#files.closeWriter(Math.floor(switchLsn / this.segmentSize));
    return this.#segmentVersionAt(switchLsn);
  }

  /** The format version of the segment holding `lsn`, read from its header (the current one at a segment start, where a new header goes). */
  async #segmentVersionAt(lsn: Lsn): Promise<number> {
    if (lsn % this.segmentSize === 0) return FORMAT_VERSION;
    const name = this.segmentName(lsn);
    const buf = Buffer.alloc(SEGMENT_HEADER_SIZE);
    const header = await wrapIo(async () => {
      const file = await this.storage.open(name, { readOnly: true });
      try {
        return (await file.read(buf, 0, SEGMENT_HEADER_SIZE, 0)) === SEGMENT_HEADER_SIZE ? readSegmentHeader(buf, 0) : null;
      } finally {
        await file.close();
      }
    }, `reading the header of ${name}`);
    if (header === null) throw new WalCorruptError(name, 0, 'segment header missing or damaged');
    return header.formatVersion;
  }

  /**
   * Cuts a replica log back to `lsn`, a record boundary known durable on the primary, when its
   * end lies past it: the WAL an early-sending primary shipped but never said was durable
   * (the primary may have lost it, and may write other WAL there after its restart). Unlike a
   * rewind's {@link discardFrom} nothing is set aside (nothing past `lsn` was applied or
   * forwarded): later segments are removed from the highest down, the rest of `lsn`'s segment
   * is zeroed, all durably. Readers must not be past `lsn` (they stop at {@link readableLsn}).
   */
  async cutBack(lsn: Lsn): Promise<void> {
    assertLsn(lsn);
    this.#assertOpen();
    if (this.#role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'only a replica log is cut back');
    await this.#writer.drain();
    const end = this.#writer.insertLsn;
    if (lsn >= end) return;
    if (lsn < this.oldestLsn) throw new WalshipError('WAL_REMOVED', `cannot cut the log back to ${formatLsn(lsn)}: its WAL begins at ${formatLsn(this.oldestLsn)}`);
    const size = this.segmentSize;
    const segno = Math.floor(lsn / size);
    const within = lsn - segno * size;
    await wrapIo(async () => {
      await this.#files.removeFrom(within === 0 ? segno : segno + 1);
      if (within > 0) {
        const file = await this.#files.forWrite(segno);
        await file.write(Buffer.alloc(size - within), within);
        await file.datasync();
      }
      await this.storage.syncDirectory();
    }, 'cutting back the unconfirmed WAL');
    this.#writer.restartAt(lsn, this.timeline);
    if (this.#upstreamDurable !== null) this.#upstreamDurable = Math.min(this.#upstreamDurable, lsn);
    if (this.#kept !== null) this.#kept = Math.min(this.#kept, lsn);
    this.#log('cut back the unconfirmed WAL from %s to %s', formatLsn(end), formatLsn(lsn));
  }

  /**
   * A rewind (walship's `pg_rewind`): a replica log whose end lies past `lsn`, a record
   * boundary of the WAL it shares with its upstream, is cut back to `lsn`. Nothing is deleted:
   * the segments past `lsn`'s are renamed `<name>.diverged`, and the segment holding `lsn` is
   * copied to `<name>.diverged` before its bytes past `lsn` are zeroed, all durably. Readers
   * must be stopped first. Resolves with the names set aside.
   */
  async discardFrom(lsn: Lsn): Promise<string[]> {
    assertLsn(lsn);
    this.#assertOpen();
    if (this.#role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'only a replica log is cut back (a rewind)');
    await this.#writer.drain();
    const end = this.#writer.insertLsn;
    if (lsn >= end) return [];
    if (lsn < this.oldestLsn) throw new WalshipError('WAL_REMOVED', `cannot cut the log back to ${formatLsn(lsn)}: its WAL begins at ${formatLsn(this.oldestLsn)}`);
    const size = this.segmentSize;
    const segno = Math.floor(lsn / size);
    const within = lsn - segno * size;
    const aside: string[] = [];
    await wrapIo(async () => {
      // The highest first: a crash that keeps only some of the renames leaves no hole in the WAL.
      for (const s of [...this.#files.present].filter((s) => s > segno || (s === segno && within === 0)).sort((a, b) => b - a)) {
        await this.#files.closeWriter(s);
        this.#files.present.delete(s);
        const name = this.#files.name(s);
        await this.storage.rename(name, `${name}.diverged`);
        aside.push(name);
      }
      if (within > 0) {
        const name = this.#files.name(segno);
        await copySegmentPrefix(this.storage, name, `${name}.diverged`, size, size, true);
        const file = await this.#files.forWrite(segno);
        await file.write(Buffer.alloc(size - within), within);
        await file.datasync();
        aside.push(name);
      }
      await this.storage.syncDirectory();
    }, 'setting the discarded WAL aside');
    this.#writer.restartAt(lsn, this.timeline);
    if (this.#upstreamDurable !== null) this.#upstreamDurable = Math.min(this.#upstreamDurable, lsn);
    if (this.#kept !== null) this.#kept = Math.min(this.#kept, lsn);
    aside.sort();
    this.#log('cut back from %s to %s; set aside %o', formatLsn(end), formatLsn(lsn), aside);
    return aside;
  }

  /**
   * Ends writing without closing (a primary's shutdown checkpoint, shipped to its standbys
   * before they disconnect): refuses further appends with `WAL_CLOSED`, flushes what was
   * appended, and, on a primary log that took appends since it was opened, appends and
   * flushes the shutdown record that {@link close} would write. Readers, new and running,
   * keep working; followers end at the sealed end instead of waiting. A later
   * {@link close} writes no second shutdown record, so a sealed-then-closed log is on disk
   * exactly like a closed one. Idempotent; concurrent calls share one promise. Rejects like
   * `close` when appends were lost (`WAL_IO` after `ENOSPC`) or the log stopped, and with
   * `WAL_CLOSED` once `close()` was called.
   */
  seal(): Promise<void> {
    if (this.#closing !== null) return Promise.reject(this.#closedError());
    if (this.#sealing === null) {
      if (this.#state !== 'open') return Promise.reject(this.#closedError());
      this.#sealing = this.#seal();
    }
    return this.#sealing;
  }

  async #seal(): Promise<void> {
    this.#state = 'sealing';
    try {
      await this.#writeShutdown();
    } finally {
      if (this.#state === 'sealing') this.#state = 'sealed';
      // Followers waiting at the end learn that nothing more will come.
      this.#notifyTail();
    }
  }

  #isSealed(): boolean {
    return this.#state === 'sealing' || this.#state === 'sealed';
  }

  /**
   * Flushes what was appended, closes every file and releases the directory lock.
   * Idempotent; concurrent calls share one promise.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** {@link close}, so that `await using log = await WalLog.open(…)` closes the log. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    let error: unknown = null;
    // A seal wrote the shutdown record already (its error went to the seal's caller).
    await this.#sealing?.catch(() => undefined);
    if (this.#state === 'sealed') this.#state = 'closing';
    if (this.#state === 'open') {
      this.#state = 'closing';
      try {
        await this.#writeShutdown();
      } catch (err) {
        error = err;
      }
    }
    if (this.#state !== 'failed') this.#state = 'closed';
    if (this.#pendingPartial !== null) clearTimer(this.#pendingPartial);
    // The history file is the directory's (the next open would write it otherwise): written now.
    if (this.#historyFile !== null) void this.#startHistoryFile(this.#historyFile);
    await Promise.all(this.#background);
    this.#writer.close(this.#closedError());
    this.#notifyTail();
    await this.#files.close();
    await this.#lock.release().catch((err: unknown) => this.#log.error('releasing the lock failed: %s', describe(err)));
    this.#log('closed');
    if (error !== null) throw error;
  }

  /**
   * Close's (and seal's) writing: drains, then seals the log with a shutdown record, whose
   * stamp proves everything before it was durable. Throws when appends were dropped meanwhile.
   */
  async #writeShutdown(): Promise<void> {
    const generation = this.#writer.generation;
    await this.#writer.drain();
    if (this.role === 'primary' && this.#writer.insertLsn > this.#openedAt && this.#writer.generation === generation) {
      this.#writer.appendMarker(RECORD_SHUTDOWN);
      await this.#writer.drain();
    }
    // Appends dropped while closing (ENOSPC) were lost: close must say so.
    if (this.#writer.generation > generation) throw this.#writer.lastDropError;
  }

  #assertOpen(): void {
    if (this.#state !== 'open') throw this.#closedError();
  }

  #assertReadable(): void {
    if (this.#state !== 'open' && !this.#isSealed()) throw this.#closedError();
  }

  #closedError(): WalshipError {
    const failure = this.#writer.failure;
    if (failure !== null) return new WalshipError('WAL_CLOSED', `the log stopped after an error: ${failure.message}`, { cause: failure });
    if (this.#isSealed()) return new WalshipError('WAL_CLOSED', 'the log is sealed (shut down): it takes no more appends');
    return new WalshipError('WAL_CLOSED', 'the log is closed');
  }

  // ---- the live tail, for readers ----

  /**
   * Resolves when the readable end ({@link readableLsn}; with `horizon: 'written'`, the
   * written end) moves past `lsn` or the log moves to a new timeline (true), or
   * the log is sealed or closes (false).
   * Rejects with the failure if the log stopped, or `ABORTED` if `signal` aborts.
   * @internal
   */
  waitForTail(lsn: Lsn, signal?: AbortSignal, horizon: 'readable' | 'written' = 'readable'): Promise<boolean> {
    const end = (): Lsn => (horizon === 'written' ? this.#writer.writtenLsn : this.readableLsn);
    if (end() > lsn) return Promise.resolve(true);
    if (this.#writer.failure !== null) return Promise.reject(this.#closedError());
    if (this.#state === 'closed' || this.#state === 'sealed') return Promise.resolve(false);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const history = this.#history;
    return new Promise<boolean>((resolve, reject) => {
      const written = horizon === 'written' ? 1 : 0;
      const stopWatching = (): void => {
        if (this.#tailWatchers.delete(check)) this.#writtenWatchers -= written;
      };
      const onAbort = (): void => {
        stopWatching();
        reject(abortError(signal as AbortSignal));
      };
      const check = (): void => {
        const switched = this.#history !== history;
        if (end() <= lsn && !switched && this.#state !== 'closed' && this.#state !== 'sealed' && this.#writer.failure === null) return;
        stopWatching();
        signal?.removeEventListener('abort', onAbort);
        if (this.#writer.failure !== null) reject(this.#closedError());
        // A new timeline: readers look again (a sender of the old one stops at its end).
        else resolve(end() > lsn || switched);
      };
      this.#tailWatchers.add(check);
      this.#writtenWatchers += written;
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #notifyTail(): void {
    for (const check of [...this.#tailWatchers]) check();
  }
}

async function wrapIo<T>(operation: () => Promise<T>, what: string): Promise<T> {
  try {
    return await operation();
  } catch (err) {
    if (isWalshipError(err)) throw err;
    throw new WalshipError('WAL_IO', `${what} failed: ${describe(err)}`, { cause: err, transient: errnoCode(err) === 'ENOSPC' });
  }
}

/** A history file a switch left to write: waiting for its timer, or being written. */
interface PendingHistoryFile {
  readonly history: TimelineHistory;
  timer: SchedulerTimer | null;
  writing: Promise<unknown> | null;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A restore point's name's UTF-8 length, checked: 1 to {@link MAX_RESTORE_POINT_NAME_BYTES}
 * bytes of well-formed text (a lone surrogate would not read back as it was written).
 */
export function checkRestorePointName(name: unknown): number {
  if (typeof name !== 'string') throw new WalshipError('INVALID_ARGUMENT', 'a restore point name must be a string');
  const bytes = Buffer.byteLength(name);
  if (bytes === 0 || bytes > MAX_RESTORE_POINT_NAME_BYTES) {
    throw new WalshipError('INVALID_ARGUMENT', `a restore point name must be 1 to ${MAX_RESTORE_POINT_NAME_BYTES} UTF-8 bytes; ${JSON.stringify(name.slice(0, 80))} takes ${bytes}`);
  }
  if (Buffer.from(name).toString() !== name) throw new WalshipError('INVALID_ARGUMENT', 'a restore point name must be well-formed Unicode (no lone surrogates)');
  return bytes;
}

/**
 * Puts each switch segment of `history` in its place: the segment holding a switch point
 * belongs in the newer timeline's file. When that file is missing and the older timeline's is
 * there (a promotion or a switch recorded in the control file, whose rename of the segment a
 * crash undid), the older one is renamed into place; when both are there, the older one is
 * set aside as `<name>.partial`. A missing `.partial` (a crash before the promotion's
 * background copy finished) is copied from the newer file up to the switch point. Files of an
 * ancestor timeline past its switch point's segment are removed. Synced before the log is
 * used. Resolves whether a segment file was moved, set aside or removed.
 */
async function setAsideSuperseded(storage: Storage, names: readonly string[], history: TimelineHistory, segmentSize: number, log: Logger): Promise<boolean> {
  let changed = false;
  const parsed = names.flatMap((name) => parseSegmentFileName(name, segmentSize) ?? []);
  const has = (timeline: number, segno: number): boolean => parsed.some((p) => p.timeline === timeline && p.segno === segno);
  // An ancestor's files past its switch point's segment (removed below) must hold no WAL of
  // their own: checked before anything is changed.
  const pastSwitch: { name: string; timeline: number }[] = [];
  for (const { timeline, segno } of parsed) {
    const entry = history.entries.find((e) => e.timeline === timeline);
    if (entry === undefined || segno <= Math.floor(entry.switchLsn / segmentSize)) continue;
    const name = segmentFileName(timeline, segno, segmentSize);
    if (await wrapIo(() => holdsOwnHeader(storage, name, segno * segmentSize), `reading ${name}`)) {
      throw new WalCorruptError(
        name,
        0,
        `it holds WAL of timeline ${timeline} past the point where timeline ${history.timeline}'s history left it (${formatLsn(entry.switchLsn)}); nothing was changed: if that WAL is not needed, move the file aside (e.g. to ${name}.diverged)`,
      );
    }
    pastSwitch.push({ name, timeline });
  }
  for (const entry of history.entries) {
    const segno = Math.floor(entry.switchLsn / segmentSize);
    const within = entry.switchLsn % segmentSize;
    const holder = segmentTimeline(history, segno, segmentSize);
    if (holder === entry.timeline) continue;
    const name = segmentFileName(entry.timeline, segno, segmentSize);
    const target = segmentFileName(holder, segno, segmentSize);
    if (has(entry.timeline, segno)) {
      if (within !== 0 && !has(holder, segno)) {
        await wrapIo(() => storage.rename(name, target), `moving ${name} to ${target}`);
        log('moved the switch segment %s to %s', name, target);
      } else {
        await wrapIo(() => storage.rename(name, `${name}.partial`), `setting ${name} aside`);
        log('set the superseded segment %s aside as %s.partial', name, name);
        continue;
      }
      changed = true;
    }
    if (within !== 0 && !names.includes(`${name}.partial`) && (has(holder, segno) || changed)) {
      await wrapIo(() => copySegmentPrefix(storage, target, `${name}.partial`, within, segmentSize, true), `keeping ${name}.partial`);
      log('kept the old timeline\'s switch segment as %s.partial', name);
    }
  }
  // An ancestor's files past its switch point's segment hold none of the history (segments
  // prepared ahead, or a partial record from upstream): removed before the switch was
  // recorded, but not durably, so a crash may bring them back. One with WAL of its own (its own
  // segment header) is none of those: refused, not deleted (a rewind sets such WAL aside first).
  for (const { name, timeline } of pastSwitch) {
    await wrapIo(() => storage.remove(name), `removing ${name}`);
    log('removed %s, past the switch point of timeline %d', name, timeline);
    changed = true;
  }
  if (changed) await wrapIo(() => storage.syncDirectory(), 'syncing the directory');
  return changed;
}

/** Whether segment file `name` starts with a valid segment header of its own position. */
async function holdsOwnHeader(storage: Storage, name: string, base: Lsn): Promise<boolean> {
  const buf = Buffer.alloc(SEGMENT_HEADER_SIZE);
  const file = await storage.open(name, { readOnly: true });
  try {
    if ((await file.read(buf, 0, SEGMENT_HEADER_SIZE, 0)) < SEGMENT_HEADER_SIZE) return false;
  } finally {
    await file.close();
  }
  return readSegmentHeader(buf, 0)?.startLsn === base;
}

/**
 * The segment size recorded in the first readable segment header among `names` (a directory's
 * listing), if any. A file removed since the listing (a running node's checkpoint, an archive
 * cleanup) is skipped: the next name is tried.
 */
export async function detectSegmentSize(storage: Storage, names: readonly string[]): Promise<number | undefined> {
  const buf = Buffer.alloc(SEGMENT_HEADER_SIZE);
  for (const name of names.filter((n) => /^[0-9A-F]{24}$/.test(n)).sort()) {
    let file;
    try {
      file = await storage.open(name, { readOnly: true });
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue;
      throw err;
    }
    try {
      if ((await file.read(buf, 0, SEGMENT_HEADER_SIZE, 0)) < SEGMENT_HEADER_SIZE) continue;
      const header = readSegmentHeader(buf, 0);
      if (header !== null && SEGMENT_SIZES.includes(header.segmentSize)) return header.segmentSize;
    } finally {
      await file.close();
    }
  }
  return undefined;
}
