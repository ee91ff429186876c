import { EventEmitter } from 'eventemitter3';
import { WalshipError, abortError, errnoCode, isWalshipError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { assertLsn, formatLsn, type Lsn } from '../lsn.js';
import { compileOptions, withDefaults, type OptionsValidator } from '../options.js';
import { NodeStorage } from '../storage/node-storage.js';
import { isStorage, type Storage, type StorageLock, type StorageWriteError } from '../storage/storage.js';
import {
  MAX_CHANNEL_BYTES,
  RECORD_BATCH,
  RECORD_HEADER_SIZE,
  RECORD_SEGMENT_END,
  RECORD_SHUTDOWN,
  SEGMENT_HEADER_SIZE,
  align,
  readSegmentHeader,
  sealRecord,
  writeEntry,
  writeSegmentHeader,
  type WalEntry,
} from './record.js';
import { recoverEnd } from './recovery.js';
import { SegmentFiles } from './segment-files.js';
import { DEFAULT_SEGMENT_SIZE, SEGMENT_SIZES, parseSegmentFileName, segmentFileName } from './segment-name.js';
import { readWalBytes, type ReadBytesOptions, type WalChunk } from './wal-byte-reader.js';
import { WalReader, type ReadOptions, type WalRecord } from './wal-reader.js';

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
   * The timeline whose segments this log writes and reads.
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
   * `replica` makes a log that receives its bytes from upstream through
   * {@link WalLog.writeBytes} (a standby's): `append()` is refused with `READ_ONLY`, nothing of
   * its own is ever written into it (no shutdown record), so it stays byte-identical to its
   * source, and recovery ends it at the first bad record, since its records' stamps are its
   * upstream's: what follows is fetched again from upstream. Its new segments are created
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
}

/** Defaults of {@link WalLogOptions}. */
export const WAL_LOG_DEFAULTS = Object.freeze({
  sync: 'fdatasync' as SyncMode,
  recycleSegments: 4,
  role: 'primary' as 'primary' | 'replica',
});

/** JSON schema of the JSON-describable {@link WalLogOptions} (`storage` is checked by a type guard). */
export const walLogOptionsSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    dir: { type: 'string', minLength: 1 },
    storage: {},
    segmentSize: { enum: [...SEGMENT_SIZES] },
    timeline: { type: 'integer', minimum: 1, maximum: 0xffffffff },
    sync: { enum: ['fdatasync', 'none'] },
    recycleSegments: { type: 'integer', minimum: 0, maximum: 1024 },
    role: { enum: ['primary', 'replica'] },
    startLsn: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    logPrefix: { type: 'string' },
  },
});

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
}

/** Payload of the `flush` event. */
export interface FlushEvent {
  /** The new durable end of the log. */
  readonly flushedLsn: Lsn;
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

/** Payload of the `error` event. */
export interface WalErrorEvent {
  readonly error: WalshipError;
  /** True when the log stopped (fail-stop); false when only some appends failed. */
  readonly fatal: boolean;
}

/** Events of a {@link WalLog}. */
export interface WalLogEvents {
  flush: (event: FlushEvent) => void;
  /** Bytes were handed to the OS (a standby reports its write position on it: `remote_write`). */
  write: (event: WriteEvent) => void;
  'segment:removed': (event: SegmentRemovedEvent) => void;
  error: (event: WalErrorEvent) => void;
}

/** One entry to append: bytes, or bytes with a channel tag. */
export type EntryInput = Uint8Array | WalEntry;

interface Run {
  startLsn: Lsn;
  buf: Buffer;
  used: number;
  /** Ends with a segment-end record: the rest of its segment is unused. */
  endsSegment: boolean;
  /** Bytes from upstream, held as the caller's buffer: never appended to, never reused. */
  raw: boolean;
}

interface Waiter {
  lsn: Lsn;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const RUN_SIZE = 1024 * 1024;
/** Pending bytes that make the writer start a background write even without a flush request. */
const WRITE_THRESHOLD = 1024 * 1024;

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
export class WalLog extends EventEmitter<WalLogEvents> {
  /** The segment size in bytes. */
  readonly segmentSize: number;
  /** The timeline this log writes. */
  readonly timeline: number;
  /** The sync mode. */
  readonly sync: SyncMode;
  /** `replica` when the log receives its bytes from upstream (see {@link WalLogOptions.role}). */
  readonly role: 'primary' | 'replica';
  /** Where the files live. */
  readonly storage: Storage;
  /** Largest record (header and payload) that fits in one segment. */
  readonly maxRecordSize: number;

  #state: State = 'open';
  #failure: WalshipError | null = null;
  #closing: Promise<void> | null = null;
  #sealing: Promise<void> | null = null;
  readonly #lock: StorageLock;
  readonly #files: SegmentFiles;
  readonly #log: Logger;

  #insertLsn: Lsn;
  #writtenLsn: Lsn;
  /** A `write` event is scheduled; the written end it last announced. */
  #writeAnnounced = false;
  #announcedWrittenLsn: Lsn = -1;
  #flushedLsn: Lsn;
  /** Highest LSN made durable by a real fdatasync; stamped into records (see record.ts). */
  #syncedLsn: Lsn;
  #oldestSegno: number;

  #runs: Run[] = [];
  #pendingBytes = 0;
  #spare: Buffer[] = [];
  #waiters: Waiter[] = [];
  #tailWatchers = new Set<() => void>();
  #writerScheduled = false;
  #writer: Promise<void> | null = null;
  /** The writer's fdatasync in flight, if any. */
  #syncing: Promise<void> | null = null;
  /** Set while the writer waits for its sync: lets new pending bytes wake it. */
  #wakeWriter: (() => void) | null = null;
  #dirty = new Set<number>();
  /** The end of WAL when the log was opened: a clean close writes a shutdown record only after appends. */
  readonly #openedAt: Lsn;
  /** Every drop of failed appends: from which LSN on, and why (rare: ENOSPC only). */
  #drops: { lsn: Lsn; error: WalshipError }[] = [];
  #lastWrittenSegno = -1;

  private constructor(init: {
    storage: Storage;
    lock: StorageLock;
    files: SegmentFiles;
    log: Logger;
    segmentSize: number;
    timeline: number;
    sync: SyncMode;
    role: 'primary' | 'replica';
    endLsn: Lsn;
    oldestSegno: number;
  }) {
    super();
    this.storage = init.storage;
    this.#lock = init.lock;
    this.#files = init.files;
    this.#log = init.log;
    this.segmentSize = init.segmentSize;
    this.timeline = init.timeline;
    this.sync = init.sync;
    this.role = init.role;
    this.maxRecordSize = init.segmentSize - SEGMENT_HEADER_SIZE;
    this.#insertLsn = this.#writtenLsn = this.#flushedLsn = this.#syncedLsn = init.endLsn;
    this.#oldestSegno = init.oldestSegno;
    this.#openedAt = init.endLsn;
  }

  /**
   * Opens (or creates) a log: takes the directory lock, finds the end of valid WAL,
   * discards a torn tail, and refuses damage in the middle with `WAL_CORRUPT`.
   */
  static async open(options: WalLogOptions): Promise<WalLog> {
    validateOptions(options);
    if (options.storage !== undefined && !isStorage(options.storage)) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid WalLog options: WalLog.storage must implement the Storage interface');
    }
    if ((options.dir === undefined) === (options.storage === undefined)) {
      throw new WalshipError('INVALID_OPTIONS', 'invalid WalLog options: give exactly one of WalLog.dir and WalLog.storage');
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
    const segnos = parsed.filter((p) => p.timeline === timeline).map((p) => p.segno).sort((a, b) => a - b);

    const firstSegno = config.startLsn === undefined ? 1 : Math.floor(config.startLsn / segmentSize);
    if (firstSegno < 1) throw new WalshipError('INVALID_OPTIONS', 'invalid WalLog options: WalLog.startLsn must lie in segment 1 or later');
    const found = await wrapIo(
      () => recoverEnd(storage, segnos, segmentSize, timeline, config.role === 'primary', firstSegno),
      'recovering',
    );
    const files = new SegmentFiles(storage, segmentSize, timeline, config.recycleSegments, log, config.role === 'replica');
    for (const segno of segnos) files.present.add(segno);
    if (found.staleSegments.length > 0) {
      log('removing segments %o past the end of WAL', found.staleSegments);
      await wrapIo(() => files.removeExact(found.staleSegments), 'removing stale segments');
    }
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
      timeline,
      sync: config.sync,
      role: config.role,
      endLsn: found.endLsn,
      oldestSegno,
    });
  }

  /** The next insert position: where the next appended record (or its segment header) goes. */
  get insertLsn(): Lsn {
    return this.#insertLsn;
  }

  /** End of the bytes handed to the operating system. */
  get writtenLsn(): Lsn {
    return this.#writtenLsn;
  }

  /** End of the durable log: every record ending at or below it survives a crash. */
  get flushedLsn(): Lsn {
    return this.#flushedLsn;
  }

  /** Start of the oldest segment still on disk; readers can start here or later. */
  get oldestLsn(): Lsn {
    return this.#oldestSegno * this.segmentSize;
  }

  /** Bytes appended but not yet handed to the operating system. */
  get pendingBytes(): number {
    return this.#pendingBytes;
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
    return this.#failure;
  }

  /** The file name of the segment holding `lsn`. */
  segmentName(lsn: Lsn): string {
    return segmentFileName(this.timeline, Math.floor(lsn / this.segmentSize), this.segmentSize);
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

    let payload = 0;
    for (let i = 0; i < entries.length; i++) payload += this.#entrySize(entries[i], i);
    const length = RECORD_HEADER_SIZE + payload;
    const padded = align(length);
    if (padded > this.maxRecordSize) {
      throw new WalshipError(
        'RECORD_TOO_LARGE',
        `a record of ${length} bytes does not fit in a ${this.segmentSize}-byte segment (at most ${this.maxRecordSize} bytes); split the batch or use a larger segmentSize`,
      );
    }

    const lsn = this.#reserve(padded);
    const run = this.#runFor(padded);
    const start = run.used;
    let at = start + RECORD_HEADER_SIZE;
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
    if (this.#pendingBytes >= WRITE_THRESHOLD) this.#scheduleWriter();
    return { lsn, endLsn: lsn + padded, generation: this.#drops.length };
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
   * Moves the insert position to where a record of `padded` bytes fits and returns that
   * position, buffering a segment-end record and the next segment's header when it moves.
   */
  #reserve(padded: number): Lsn {
    let lsn = this.#insertLsn;
    let offset = lsn % this.segmentSize;
    const room = this.segmentSize - offset;
    if (offset !== 0 && room < padded) {
      if (room >= RECORD_HEADER_SIZE) {
        // Mark the rest of the segment unused; the next segment starts a new run.
        const run = this.#runFor(RECORD_HEADER_SIZE);
        sealRecord(run.buf, run.used, RECORD_SEGMENT_END, 0, 0, lsn, this.#syncedLsn);
        run.used += RECORD_HEADER_SIZE;
        run.endsSegment = true;
        this.#pendingBytes += RECORD_HEADER_SIZE;
      } else {
        // Fewer bytes left than a header: readers skip them implicitly; pad with zeros.
        const run = this.#runFor(room);
        run.buf.fill(0, run.used, run.used + room);
        run.used += room;
        this.#pendingBytes += room;
      }
      lsn += room;
      offset = 0;
      this.#insertLsn = lsn;
    }
    if (offset === 0) {
      const run = this.#runFor(SEGMENT_HEADER_SIZE + padded);
      writeSegmentHeader(run.buf, run.used, this.segmentSize, this.timeline, lsn);
      run.used += SEGMENT_HEADER_SIZE;
      this.#pendingBytes += SEGMENT_HEADER_SIZE;
      lsn += SEGMENT_HEADER_SIZE;
    }
    this.#insertLsn = lsn;
    return lsn;
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
    if (startLsn !== this.#insertLsn) {
      throw new WalshipError('INVALID_ARGUMENT', `WAL bytes start at ${formatLsn(startLsn)}, but this log continues at ${formatLsn(this.#insertLsn)}`);
    }
    if (data.length === 0) return this.#insertLsn;
    const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
    this.#runs.push({ startLsn, buf, used: buf.length, endsSegment: false, raw: true });
    this.#pendingBytes += buf.length;
    this.#insertLsn += buf.length;
    if (this.#pendingBytes >= WRITE_THRESHOLD) this.#scheduleWriter();
    return this.#insertLsn;
  }

  /** Appends a record without entries (a shutdown marker) through the normal path. */
  #appendMarker(type: number): void {
    const lsn = this.#reserve(RECORD_HEADER_SIZE);
    const run = this.#runFor(RECORD_HEADER_SIZE);
    sealRecord(run.buf, run.used, type, 0, 0, lsn, this.#syncedLsn);
    run.used += RECORD_HEADER_SIZE;
    this.#pendingBytes += RECORD_HEADER_SIZE;
    this.#insertLsn = lsn + RECORD_HEADER_SIZE;
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

  /** Makes everything appended so far durable; resolves with the new flushed LSN. */
  async flush(options: { signal?: AbortSignal } = {}): Promise<Lsn> {
    await this.waitForFlush(this.#insertLsn, options);
    return this.#flushedLsn;
  }

  /**
   * Resolves once the log is durable up to `target` (the result of {@link append}, or an
   * LSN such as its `endLsn`), starting a flush if needed. Rejects if the records fail to
   * reach the disk, or the LSN is past everything appended. Pass the append result rather
   * than a bare LSN when appends can fail with `ENOSPC`: after such a failure the dropped
   * LSNs are reused, and only the result tells the dropped record from its successor.
   */
  waitForFlush(target: Lsn | AppendResult, options: { signal?: AbortSignal } = {}): Promise<void> {
    const lsn = typeof target === 'number' ? target : target?.endLsn;
    assertLsn(lsn);
    if (typeof target === 'object') {
      // A drop after this append, from below its end, means the record was never written.
      const drop = this.#drops.slice(target.generation).find((d) => d.lsn < lsn);
      if (drop !== undefined) return Promise.reject(drop.error);
    }
    if (lsn <= this.#flushedLsn) return Promise.resolve();
    if (this.#failure !== null) return Promise.reject(this.#closedError());
    if (this.#state === 'closed') return Promise.reject(this.#closedError());
    if (lsn > this.#insertLsn) {
      return Promise.reject(
        new WalshipError('INVALID_ARGUMENT', `cannot wait for ${formatLsn(lsn)}: nothing has been appended past ${formatLsn(this.#insertLsn)}`),
      );
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { lsn, resolve, reject };
      if (signal !== undefined) {
        const onAbort = (): void => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          reject(abortError(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.resolve = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        waiter.reject = (err) => {
          signal.removeEventListener('abort', onAbort);
          reject(err);
        };
      }
      this.#waiters.push(waiter);
      this.#scheduleWriter();
    });
  }

  /**
   * Iterates the records from `from` (a record's LSN, or a segment start such as
   * {@link oldestLsn}) in order. With `follow`, waits at the end of the durable log for
   * new records until the log closes or `signal` aborts.
   */
  read(from: Lsn, options: ReadOptions = {}): AsyncIterableIterator<WalRecord> {
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
   */
  async removeSegmentsBefore(lsn: Lsn): Promise<string[]> {
    assertLsn(lsn);
    this.#assertOpen();
    const insertSegno = Math.floor(this.#insertLsn / this.segmentSize);
    const flushedSegno = Math.floor(this.#flushedLsn / this.segmentSize);
    const limit = Math.min(Math.floor(lsn / this.segmentSize), insertSegno, flushedSegno);
    if (limit <= this.#oldestSegno) return [];
    // Readers check this after every read, so they never trust bytes of a recycled file.
    this.#oldestSegno = limit;
    // Removed segments need no sync any more (with sync 'none' they may still be dirty).
    for (const segno of this.#dirty) if (segno < limit) this.#dirty.delete(segno);
    const removed = await wrapIo(() => this.#files.removeBelow(limit, insertSegno), 'removing segments');
    if (removed.length > 0) {
      this.#log('removed %d segments below %s', removed.length, formatLsn(limit * this.segmentSize));
      this.#emitSafely('segment:removed', { segments: removed });
    }
    return removed;
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
    this.#rejectWaiters(() => this.#closedError());
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
    const drops = this.#drops.length;
    await this.#drain();
    if (this.role === 'primary' && this.#insertLsn > this.#openedAt && this.#drops.length === drops) {
      this.#appendMarker(RECORD_SHUTDOWN);
      await this.#drain();
    }
    // Appends dropped while closing (ENOSPC) were lost: close must say so.
    if (this.#drops.length > drops) throw this.#drops[this.#drops.length - 1]?.error;
  }

  /** Writes and syncs everything pending, whatever the sync mode (close makes data durable). */
  async #drain(): Promise<void> {
    while (this.#writer !== null) await this.#writer;
    if (this.#insertLsn > this.#flushedLsn || this.#syncedLsn < this.#writtenLsn) {
      this.#writer = this.#writeLoop(true);
      await this.#writer;
    }
    if (this.#failure !== null) throw this.#failure;
  }

  // ---- the writer: one write and one fdatasync for every committer waiting together ----

  #scheduleWriter(): void {
    // A writer waiting on a sync only acts on a full write's worth of bytes (it re-checks
    // everything when the sync ends), so new committers alone need not wake it.
    if (this.#pendingBytes >= WRITE_THRESHOLD) this.#wakeWriter?.();
    if (this.#writerScheduled || this.#writer !== null || this.#state === 'failed') return;
    this.#writerScheduled = true;
    // Let every committer of this turn of the event loop append before the write starts.
    setImmediate(() => {
      this.#writerScheduled = false;
      if (this.#writer === null && this.#state !== 'closed') this.#writer = this.#writeLoop(false);
    });
  }

  async #writeLoop(forceSync: boolean): Promise<void> {
    try {
      await this.#writeRounds(forceSync);
    } catch (err) {
      // Anything unexpected in the writer stops the log rather than escaping unhandled.
      this.#fail(isWalshipError(err) ? err : new WalshipError('WAL_IO', `the WAL writer failed: ${describe(err)}`, { cause: err }));
    } finally {
      this.#writer = null;
      if (this.#waiters.length > 0 || this.#pendingBytes >= WRITE_THRESHOLD) this.#scheduleWriter();
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
        const wantSync = forceSync || this.#waiters.length > 0;
        if (wantSync && this.#syncing === null && this.#needsSync(forceSync)) {
          this.#syncing = this.#syncRound(forceSync).finally(() => {
            this.#syncing = null;
          });
        }
        // While a sync runs, small writes gain nothing: they wait for the next sync anyway.
        if (this.#runs.length > 0 && (this.#pendingBytes >= WRITE_THRESHOLD || (wantSync && this.#syncing === null))) {
          const runs = this.#runs;
          this.#runs = [];
          this.#pendingBytes = 0;
          await this.#writeRuns(runs);
          if (!wantSync) this.#advanceFlushed(false);
        } else if (this.#syncing !== null) {
          // Wake for new bytes to write as well: the disk should not wait for them after the sync.
          const syncing = this.#syncing;
          await new Promise<void>((resolve) => {
            this.#wakeWriter = resolve;
            void syncing.then(resolve);
          });
          this.#wakeWriter = null;
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
    setImmediate(() => {
      this.#writeAnnounced = false;
      if (this.#writtenLsn > this.#announcedWrittenLsn) {
        this.#announcedWrittenLsn = this.#writtenLsn;
        this.#emitSafely('write', { writtenLsn: this.#writtenLsn });
      }
    });
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
    return this.sync === 'fdatasync' || force ? this.#syncedLsn < this.#writtenLsn : this.#flushedLsn < this.#writtenLsn;
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
      const segno = Math.floor(batchLsn / this.segmentSize);
      const within = batchLsn - segno * this.segmentSize;
      try {
        const file = await this.#files.forWrite(segno);
        if (segno !== this.#lastWrittenSegno) {
          this.#lastWrittenSegno = segno;
          this.#files.prepareAhead(segno + 1);
        }
        this.#dirty.add(segno);
        if (batch.length > 1 && file.writev !== undefined) {
          await file.writev(batch, within);
        } else {
          let done = 0;
          for (const piece of batch) {
            try {
              await file.write(piece, within + done);
            } catch (err) {
              // Count from the batch start, as writev would.
              (err as StorageWriteError).bytesWritten = done + ((err as StorageWriteError).bytesWritten ?? 0);
              throw err;
            }
            done += piece.length;
          }
        }
      } catch (err) {
        await this.#abandonFrom(batchLsn, err);
        return false;
      }
      this.#writtenLsn = batchLsn + batchBytes;
      // After a segment-end record the rest of the segment counts as written.
      if (batchEndsSegment) this.#writtenLsn = Math.ceil(this.#writtenLsn / this.segmentSize) * this.segmentSize;
      batch = [];
      batchBytes = 0;
      batchEndsSegment = false;
      return true;
    };
    for (const run of runs) {
      let offset = 0;
      while (offset < run.used) {
        const lsn = run.startLsn + offset;
        const within = lsn % this.segmentSize;
        const length = Math.min(run.used - offset, this.segmentSize - within);
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
   * A write failed at `lsn`. With `ENOSPC` the records from `lsn` on fail, bytes the write
   * got onto disk are zeroed so they never come back, and the log goes on from `lsn`. Any
   * other write error stops the log.
   */
  async #abandonFrom(lsn: Lsn, err: unknown): Promise<void> {
    const segno = Math.floor(lsn / this.segmentSize);
    const reached = (err as StorageWriteError).bytesWritten ?? 0;
    const name = segmentFileName(this.timeline, segno, this.segmentSize);
    if (errnoCode(err) !== 'ENOSPC') {
      this.#fail(new WalshipError('WAL_IO', `writing segment ${name} failed: ${describe(err)}`, { cause: err }));
      return;
    }
    if (reached > 0) {
      try {
        const file = await this.#files.forWrite(segno);
        await file.write(Buffer.alloc(reached), lsn - segno * this.segmentSize);
      } catch (zeroErr) {
        this.#fail(new WalshipError('WAL_IO', `could not undo a partial write in ${name}: ${describe(zeroErr)}`, { cause: zeroErr }));
        return;
      }
    }
    const error = new WalshipError('WAL_IO', `no space left to write segment ${name}; the records from ${formatLsn(lsn)} on were not appended`, {
      cause: err,
      transient: true,
    });
    this.#log.error('%s', error.message);
    this.#drops.push({ lsn, error });
    // Everything from `lsn` on is dropped: the failed runs and whatever was appended since.
    this.#runs = [];
    this.#pendingBytes = 0;
    this.#insertLsn = lsn;
    this.#waiters = this.#waiters.filter((waiter) => {
      if (waiter.lsn <= lsn) return true;
      waiter.reject(error);
      return false;
    });
    this.#emitSafely('error', { error, fatal: false });
  }

  async #syncWritten(force: boolean): Promise<void> {
    if (this.#failure !== null) return;
    const target = this.#writtenLsn;
    const currentSegno = Math.floor(target / this.segmentSize);
    if (this.sync === 'none' && !force) {
      // Nothing to sync until close; just let go of the handles of finished segments.
      for (const segno of this.#dirty) if (segno < currentSegno) await this.#files.closeWriter(segno);
      return;
    }
    // Writes made while this sync runs mark their segments dirty again for the next one.
    const dirty = [...this.#dirty].sort((a, b) => a - b);
    this.#dirty.clear();
    for (const segno of dirty) {
      const name = segmentFileName(this.timeline, segno, this.segmentSize);
      try {
        await (await this.#files.forWrite(segno)).datasync();
      } catch (err) {
        // Fail-stop: after a failed fsync the kernel may have dropped the dirty pages, so
        // retrying could "succeed" without the data. Nothing waiting is acknowledged.
        this.#fail(new WalshipError('WAL_SYNC_FAILED', `fdatasync of segment ${name} failed; the log has stopped: ${describe(err)}`, { cause: err }));
        return;
      }
      if (segno < currentSegno) await this.#files.closeWriter(segno);
    }
    this.#syncedLsn = target;
  }

  #advanceFlushed(synced: boolean): void {
    if (this.#failure !== null) return;
    const durable = this.sync === 'none' ? this.#writtenLsn : this.#syncedLsn;
    if (!synced && this.sync === 'fdatasync') return;
    if (durable <= this.#flushedLsn) return;
    this.#flushedLsn = durable;
    const ready: Waiter[] = [];
    this.#waiters = this.#waiters.filter((waiter) => {
      if (waiter.lsn > durable) return true;
      ready.push(waiter);
      return false;
    });
    for (const waiter of ready) waiter.resolve();
    this.#notifyTail();
    this.#emitSafely('flush', { flushedLsn: durable });
  }

  #fail(error: WalshipError): void {
    if (this.#failure !== null) return;
    this.#failure = error;
    this.#state = 'failed';
    this.#runs = [];
    this.#pendingBytes = 0;
    this.#log.error('log stopped: %s', error.message);
    this.#rejectWaiters(() => error);
    this.#notifyTail();
    this.#emitSafely('error', { error, fatal: true });
  }

  /** Listener exceptions must not break the writer (or crash the process from it). */
  #emitSafely<E extends keyof WalLogEvents>(event: E, payload: Parameters<WalLogEvents[E]>[0]): void {
    try {
      (this.emit as (event: E, payload: unknown) => boolean)(event, payload);
    } catch (err) {
      this.#log.error('a %s listener threw: %s', event, describe(err));
    }
  }

  #rejectWaiters(errorFor: () => unknown): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(errorFor());
  }

  #assertOpen(): void {
    if (this.#state !== 'open') throw this.#closedError();
  }

  #assertReadable(): void {
    if (this.#state !== 'open' && !this.#isSealed()) throw this.#closedError();
  }

  #closedError(): WalshipError {
    if (this.#failure !== null) {
      return new WalshipError('WAL_CLOSED', `the log stopped after an error: ${this.#failure.message}`, { cause: this.#failure });
    }
    if (this.#isSealed()) return new WalshipError('WAL_CLOSED', 'the log is sealed (shut down): it takes no more appends');
    return new WalshipError('WAL_CLOSED', 'the log is closed');
  }

  // ---- the live tail, for readers ----

  /**
   * Resolves when the flushed end moves past `lsn` (true), or the log is sealed or closes (false).
   * Rejects with the failure if the log stopped, or `ABORTED` if `signal` aborts.
   * @internal
   */
  waitForTail(lsn: Lsn, signal?: AbortSignal): Promise<boolean> {
    if (this.#flushedLsn > lsn) return Promise.resolve(true);
    if (this.#failure !== null) return Promise.reject(this.#closedError());
    if (this.#state === 'closed' || this.#state === 'sealed') return Promise.resolve(false);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<boolean>((resolve, reject) => {
      const onAbort = (): void => {
        this.#tailWatchers.delete(check);
        reject(abortError(signal as AbortSignal));
      };
      const check = (): void => {
        if (this.#flushedLsn <= lsn && this.#state !== 'closed' && this.#state !== 'sealed' && this.#failure === null) return;
        this.#tailWatchers.delete(check);
        signal?.removeEventListener('abort', onAbort);
        if (this.#failure !== null) reject(this.#closedError());
        else resolve(this.#flushedLsn > lsn);
      };
      this.#tailWatchers.add(check);
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

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The segment size recorded in the first readable segment header, if any. */
async function detectSegmentSize(storage: Storage, names: readonly string[]): Promise<number | undefined> {
  const buf = Buffer.alloc(SEGMENT_HEADER_SIZE);
  for (const name of names.filter((n) => /^[0-9A-F]{24}$/.test(n)).sort()) {
    const file = await storage.open(name, { readOnly: true });
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
