import type { Archiver } from '../archive/archiver.js';
import { WalshipError, errnoCode, isWalshipError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Lsn } from '../lsn.js';
import type { Storage } from '../storage/storage.js';
import { SEGMENT_HEADER_SIZE } from '../wal/record.js';
import { parseWalFileName, type WalFileName } from '../wal/segment-name.js';
import { MAX_HISTORY_BYTES, historyFileName } from '../wal/timeline-history.js';
import type { FileKeptEvent, FlushEvent, SegmentRemovedEvent, WalLog } from '../wal/wal-log.js';
import { ArchiveStatus, type ArchiveMark } from './archive-status.js';
import { clearTimer, currentScheduler, type SchedulerTimer } from '../scheduler.js';

/**
 * `archive` options of a node (PostgreSQL's `archive_mode`, `archive_command` as an object,
 * `archive_timeout`).
 */
export interface ArchiveOptions {
  /**
   * `'on'`: a primary archives every WAL segment it completes, its timeline history files and,
   * after a promotion, the old timeline's `.partial` segment; a standby archives nothing
   * until it is promoted. `'always'`: a standby also archives every segment it receives
   * (streamed or restored) and the history files it follows. `'off'`: no archiving.
   */
  readonly mode: 'off' | 'on' | 'always';
  /** Where the files go. Required unless `mode` is `'off'`. */
  readonly archiver?: Archiver;
  /**
   * On a primary, the longest a segment with new WAL stays open before it is ended and
   * archived (`archive_timeout`): it bounds how far an archive-only standby can be behind.
   * Each switch archives a whole segment, so keep it at seconds or more. 0 never switches
   * early. @defaultValue 0
   */
  readonly timeoutMs?: number;
  /** The longest one archiver call may take before it counts as failed (and is retried). @defaultValue 60 000 */
  readonly callTimeoutMs?: number;
}

/** Defaults of {@link ArchiveOptions}. */
export const ARCHIVE_DEFAULTS = Object.freeze({
  /** Segments are never switched early to be archived. */
  timeoutMs: 0,
  /** An archiver call fails after 60 s. */
  callTimeoutMs: 60_000,
});

/** JSON schema of {@link ArchiveOptions} (the archiver itself is checked by `isArchiver`). */
export const archiveOptionsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['mode'],
  properties: {
    mode: { enum: ['off', 'on', 'always'] },
    archiver: {},
    timeoutMs: { type: 'integer', minimum: 0, maximum: 2_147_483_647 },
    callTimeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
  },
} as const;

/** What `archiverStatus()` returns (PostgreSQL's `pg_stat_archiver`, plus what is still to do). */
export interface ArchiverStatus {
  /** The node's archive mode ({@link ArchiveOptions.mode}). */
  readonly mode: 'off' | 'on' | 'always';
  /** Files archived since the node started. */
  readonly archivedCount: number;
  /** The file archived last (`last_archived_wal`); null before the first. */
  readonly lastArchivedWal: string | null;
  /** When it was archived; null before the first. */
  readonly lastArchivedTime: Date | null;
  /** Failed attempts since the node started (each retry that fails counts). */
  readonly failedCount: number;
  /** The file whose put failed last (`last_failed_wal`); null before any failure. */
  readonly lastFailedWal: string | null;
  /** When that put failed; null before any failure. */
  readonly lastFailedTime: Date | null;
  /** The last failure's error (`ARCHIVE_FAILED`, `ARCHIVE_CONFLICT`). */
  readonly lastFailedError: WalshipError | null;
  /** Files waiting to be archived. */
  readonly pendingCount: number;
  /** The oldest segment waiting to be archived: the WAL from it on stays on disk until it is. */
  readonly oldestPendingWal: string | null;
}

/** Payload of `archive:done`. */
export interface ArchiveDoneEvent {
  /** The file archived: a segment, a `.partial` segment or a history file. */
  readonly name: string;
}

/** Payload of `archive:failed`. */
export interface ArchiveFailedEvent {
  /** The file that could not be archived: a segment, a `.partial` segment or a history file. */
  readonly name: string;
  /** `ARCHIVE_FAILED` (the archiver's error is its `cause`) or `ARCHIVE_CONFLICT`. */
  readonly error: WalshipError;
  /** How many times in a row putting this file failed. */
  readonly attempts: number;
  /** When it is tried again. */
  readonly retryInMs: number;
}

/** What the archiver needs of its node. */
export interface WalArchiverHost {
  readonly storage: Storage;
  readonly log: WalLog;
  readonly done: (event: ArchiveDoneEvent) => void;
  readonly failed: (event: ArchiveFailedEvent) => void;
}

/** The first retry of a failed put comes after this long; each further one after twice as long as the one before. */
export const ARCHIVE_RETRY_MIN_MS = 100;
/** Retries of a failed put are never further apart than this. */
export const ARCHIVE_RETRY_MAX_MS = 30_000;

interface Backoff {
  attempts: number;
  retryAt: number;
}

/**
 * The node's archiver (PostgreSQL's `pgarch`): puts each WAL file the node completes into
 * the archive, one at a time, in order: history files first (a timeline's history is in the
 * archive before any of its segments), then segments by position, then `.partial` segments.
 * What is still to archive survives restarts ({@link ArchiveStatus}); a checkpoint keeps every
 * segment from the oldest not yet archived ({@link keepFromLsn}). A failed put is retried with
 * back-off, its file only: a file that keeps failing (a conflict, say) holds back its own
 * timeline's segments if it is a history file, and nothing else. Commits never wait for it.
 */
export class WalArchiver {
  readonly #host: WalArchiverHost;
  readonly #archiver: Archiver;
  readonly #mode: 'on' | 'always';
  readonly #timeoutMs: number;
  readonly #callTimeoutMs: number;
  readonly #debug: Logger;
  #status: ArchiveStatus | null = null;
  /** Complete segments below this have been given a marker. */
  #markedBelow = 0;
  readonly #backoff = new Map<string, Backoff>();
  readonly #stop = new AbortController();
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  #marking: Promise<void> = Promise.resolve();
  /** Complete segments whose markers are still being written: held like pending ones. */
  readonly #unmarked = new Set<string>();
  #switchTimer: SchedulerTimer | null = null;
  #lastSegmentEndAt = currentScheduler().now();
  /** A segment's worth of bytes, reused for every put (bounded memory). */
  #buffer: Buffer | null = null;
  #archivedCount = 0;
  #lastArchived: { name: string; time: Date } | null = null;
  #failedCount = 0;
  #lastFailed: { name: string; time: Date; error: WalshipError } | null = null;
  readonly #onFlush = (event: FlushEvent): void => this.#segmentsComplete(event.flushedLsn);
  /** A standby's primary said more is durable: WAL flushed before may complete segments now. */
  readonly #onReadable = (): void => this.#segmentsComplete(this.#host.log.flushedLsn);
  readonly #onKept = (event: FileKeptEvent): void => this.#queueMark(event.name);
  readonly #onRemoved = (event: SegmentRemovedEvent): void => {
    for (const name of event.segments) this.#serial(() => this.#status?.forget(name));
  };

  constructor(host: WalArchiverHost, options: ArchiveOptions & { mode: 'on' | 'always'; archiver: Archiver }, debug: Logger) {
    this.#host = host;
    this.#archiver = options.archiver;
    this.#mode = options.mode;
    this.#timeoutMs = options.timeoutMs ?? ARCHIVE_DEFAULTS.timeoutMs;
    this.#callTimeoutMs = options.callTimeoutMs ?? ARCHIVE_DEFAULTS.callTimeoutMs;
    this.#debug = debug;
  }

  get mode(): 'on' | 'always' {
    return this.#mode;
  }

  /**
   * Reads what is still to archive, marks the files completed while the node was down, and
   * starts archiving. With `forgetFrom` (after a rewind cut the log back there), the marks of
   * segments from its segment on are dropped first: what they held is no longer this log's.
   */
  async start(forgetFrom?: Lsn): Promise<void> {
    const { storage, log } = this.#host;
    const names = await storage.list();
    const status = ArchiveStatus.load(storage, names);
    this.#status = status;
    // Markers of files that are gone (removed before their marker, or by hand) are dropped.
    const present = new Set(names);
    for (const [name] of [...status.entries()]) {
      const file = parseWalFileName(name, log.segmentSize);
      const discarded = forgetFrom !== undefined && file?.kind === 'segment' && file.segno >= Math.floor(forgetFrom / log.segmentSize);
      if (!present.has(name) || discarded) await status.forget(name);
    }
    const complete = Math.floor(log.readableLsn / log.segmentSize);
    for (const name of names) {
      if (ArchiveStatus.isMarker(name) || status.get(name) !== undefined) continue;
      const file = parseWalFileName(name, log.segmentSize);
      if (file === null) continue;
      // Only this log's own segments: files of other timelines are not its WAL.
      if (file.kind === 'segment' && (file.segno >= complete || log.segmentName(file.segno * log.segmentSize) !== name)) continue;
      await status.mark(name, this.#markFor());
    }
    this.#markedBelow = complete;
    log.on('flush', this.#onFlush);
    log.on('readable', this.#onReadable);
    log.on('file:kept', this.#onKept);
    log.on('segment:removed', this.#onRemoved);
    this.#loop = this.#run();
    this.#armSwitch();
  }

  /** Stops archiving; the put in progress is abandoned (what is left to do is on disk). */
  async stop(): Promise<void> {
    const { log } = this.#host;
    log.off('flush', this.#onFlush);
    log.off('readable', this.#onReadable);
    log.off('file:kept', this.#onKept);
    log.off('segment:removed', this.#onRemoved);
    if (this.#switchTimer !== null) clearTimer(this.#switchTimer);
    this.#switchTimer = null;
    this.#stop.abort();
    this.#wake?.();
    await this.#loop;
    await this.#marking.catch(() => undefined);
  }

  /**
   * The start of the oldest segment not yet archived (nor left to another node): a checkpoint
   * removes no WAL from there on. Infinity when nothing is pending.
   */
  keepFromLsn(): Lsn {
    const { log } = this.#host;
    let keep = Infinity;
    const pending = [...(this.#status?.entries() ?? [])].filter(([, mark]) => mark === 'ready').map(([name]) => name);
    for (const name of [...pending, ...this.#unmarked]) {
      const file = parseWalFileName(name, log.segmentSize);
      if (file?.kind === 'segment') keep = Math.min(keep, file.segno * log.segmentSize);
    }
    return keep;
  }

  /** Whether `name` is still to be archived (marked, or about to be). */
  pending(name: string): boolean {
    return this.#status?.get(name) === 'ready' || this.#unmarked.has(name);
  }

  status(): ArchiverStatus {
    const ready = this.#status?.ready() ?? [];
    const segments = ready.filter((name) => parseWalFileName(name, this.#host.log.segmentSize)?.kind === 'segment').sort();
    return {
      mode: this.#mode,
      archivedCount: this.#archivedCount,
      lastArchivedWal: this.#lastArchived?.name ?? null,
      lastArchivedTime: this.#lastArchived?.time ?? null,
      failedCount: this.#failedCount,
      lastFailedWal: this.#lastFailed?.name ?? null,
      lastFailedTime: this.#lastFailed?.time ?? null,
      lastFailedError: this.#lastFailed?.error ?? null,
      pendingCount: ready.length,
      oldestPendingWal: segments[0] ?? null,
    };
  }

  // ---- marking ----

  /** A primary, or a standby in `always` mode, archives what it completes; a standby in `on` mode leaves it to its upstream. */
  #markFor(): ArchiveMark {
    return this.#host.log.role === 'primary' || this.#mode === 'always' ? 'ready' : 'done';
  }

  /** Segments that the flushed end has passed are complete: each gets its marker. */
  #segmentsComplete(flushedLsn: Lsn): void {
    const { log } = this.#host;
    // A standby archives only what its primary said is durable (WalLog.readableLsn).
    const complete = Math.floor(Math.min(flushedLsn, log.readableLsn) / log.segmentSize);
    if (complete <= this.#markedBelow) return;
    const from = this.#markedBelow;
    this.#markedBelow = complete;
    this.#lastSegmentEndAt = currentScheduler().now();
    const names: string[] = [];
    for (let segno = from; segno < complete; segno++) names.push(log.segmentName(segno * log.segmentSize));
    for (const name of names) this.#unmarked.add(name);
    this.#serial(async () => {
      const status = this.#status as ArchiveStatus;
      try {
        for (const name of names) if (status.get(name) === undefined) await status.mark(name, this.#markFor());
      } finally {
        for (const name of names) this.#unmarked.delete(name);
      }
      this.#wake?.();
    });
  }

  #queueMark(name: string): void {
    this.#unmarked.add(name);
    this.#serial(async () => {
      const status = this.#status as ArchiveStatus;
      try {
        if (status.get(name) === undefined) await status.mark(name, this.#markFor());
      } finally {
        this.#unmarked.delete(name);
      }
      this.#wake?.();
    });
  }

  /** Marker changes run one at a time, in order; a failure is logged (the file is marked again at the next start). */
  #serial(step: () => Promise<void> | undefined): void {
    this.#marking = this.#marking
      .then(step)
      .catch((err: unknown) => this.#debug.error('archive status: %s', (err as Error).message));
  }

  // ---- archiving ----

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      await this.#marking;
      const next = this.#next();
      if (next === null) {
        await this.#sleep();
        continue;
      }
      try {
        await this.#archive(next);
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof MissingFile) {
          // Gone from the directory (a rewind set it aside): nothing left to archive.
          this.#debug.error('%s is no longer in the directory: not archived', next);
          this.#backoff.delete(next);
          await (this.#status as ArchiveStatus).forget(next).catch(() => undefined);
          continue;
        }
        this.#failure(next, err);
        continue;
      }
      this.#backoff.delete(next);
      this.#archivedCount++;
      this.#lastArchived = { name: next, time: new Date(currentScheduler().now()) };
      this.#debug('archived %s', next);
      this.#host.done({ name: next });
      // The archive holds it: a marker that fails to change now only means a put again later.
      await (this.#status as ArchiveStatus).mark(next, 'done').catch((err: unknown) => this.#debug.error('marking %s archived: %s', next, (err as Error).message));
    }
  }

  /** The next file to archive: history files, then segments in order, then `.partial` segments; none in back-off. */
  #next(): string | null {
    const { log } = this.#host;
    const status = this.#status as ArchiveStatus;
    const now = currentScheduler().now();
    let best: { name: string; key: [number, number, number] } | null = null;
    for (const name of status.ready()) {
      if ((this.#backoff.get(name)?.retryAt ?? 0) > now) continue;
      const file = parseWalFileName(name, log.segmentSize);
      if (file === null) continue;
      if (file.kind !== 'history' && !this.#historyArchived(file)) continue;
      const key = sortKey(file);
      if (best === null || compareKeys(key, best.key) < 0) best = { name, key };
    }
    return best?.name ?? null;
  }

  /** A timeline's history file is in the archive (or was left to another node) before its segments go. */
  #historyArchived(file: WalFileName): boolean {
    if (file.timeline === 1) return true;
    return (this.#status as ArchiveStatus).get(historyFileName(file.timeline)) === 'done';
  }

  /** Waits until there may be something to do: a new mark, the end of a back-off, or stop. */
  async #sleep(): Promise<void> {
    const status = this.#status as ArchiveStatus;
    const retryAt = Math.min(...[...this.#backoff].filter(([name]) => status.get(name) === 'ready').map(([, b]) => b.retryAt));
    await new Promise<void>((resolve) => {
      // Unreferenced, as every walship timer in the background: it never keeps the host's process alive.
      const timer = Number.isFinite(retryAt) ? currentScheduler().setTimeout(resolve, Math.max(0, retryAt - currentScheduler().now())).unref() : null;
      this.#wake = () => {
        if (timer !== null) clearTimer(timer);
        resolve();
      };
    });
    this.#wake = null;
  }

  async #archive(name: string): Promise<void> {
    const data = await this.#read(name);
    const deadline = currentScheduler().timeoutSignal(this.#callTimeoutMs);
    const signal = AbortSignal.any([this.#stop.signal, deadline]);
    // An archiver that ignores the signal is not waited for: not past the deadline, and not
    // once the node stops (close() never waits for it). Its buffer is then its own.
    let abandon: (error: WalshipError) => void = () => undefined;
    const abandoned = new Promise<never>((_, reject) => {
      abandon = (error) => {
        this.#buffer = null;
        reject(error);
      };
    });
    const timer = currentScheduler().setTimeout(() => abandon(new WalshipError('ARCHIVE_FAILED', `putting ${name} into the archive took longer than ${this.#callTimeoutMs} ms`)), this.#callTimeoutMs + 1000).unref();
    const onStop = (): void => abandon(new WalshipError('ARCHIVE_FAILED', `putting ${name} into the archive was abandoned: the node is closing`));
    this.#stop.signal.addEventListener('abort', onStop, { once: true });
    try {
      await Promise.race([this.#archiver.put(name, data, { signal }), abandoned]);
    } catch (err) {
      if (deadline.aborted && !this.#stop.signal.aborted && !isWalshipError(err, 'ARCHIVE_CONFLICT')) {
        throw new WalshipError('ARCHIVE_FAILED', `putting ${name} into the archive took longer than ${this.#callTimeoutMs} ms`, { cause: err });
      }
      throw err;
    } finally {
      clearTimer(timer);
      this.#stop.signal.removeEventListener('abort', onStop);
    }
  }

  /** The file's bytes: a segment into the reused buffer, a history or `.partial` file as it is. */
  async #read(name: string): Promise<Uint8Array> {
    const { storage, log } = this.#host;
    const file = await storage.open(name, { readOnly: true }).catch((err: unknown) => {
      throw errnoCode(err) === 'ENOENT' ? new MissingFile(name) : err;
    });
    try {
      const size = await file.size();
      // A segment or `.partial` is one segment long; a history file at most MAX_HISTORY_BYTES.
      const length = Math.min(size, Math.max(log.segmentSize, MAX_HISTORY_BYTES));
      if (this.#buffer === null || this.#buffer.length < length) this.#buffer = Buffer.allocUnsafe(Math.max(length, log.segmentSize));
      const read = await file.read(this.#buffer, 0, length, 0);
      return this.#buffer.subarray(0, read);
    } finally {
      await file.close();
    }
  }

  #failure(name: string, err: unknown): void {
    const error =
      isWalshipError(err) && (err.code === 'ARCHIVE_CONFLICT' || err.code === 'ARCHIVE_FAILED')
        ? err
        : new WalshipError('ARCHIVE_FAILED', `archiving ${name} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    const attempts = (this.#backoff.get(name)?.attempts ?? 0) + 1;
    const retryInMs = Math.min(ARCHIVE_RETRY_MIN_MS * 2 ** (attempts - 1), ARCHIVE_RETRY_MAX_MS);
    this.#backoff.set(name, { attempts, retryAt: currentScheduler().now() + retryInMs });
    this.#failedCount++;
    this.#lastFailed = { name, time: new Date(currentScheduler().now()), error };
    this.#debug.error('archiving %s failed (attempt %d, again in %d ms): %s', name, attempts, retryInMs, error.message);
    this.#host.failed({ name, error, attempts, retryInMs });
  }

  // ---- archive_timeout ----

  /** With `timeoutMs`, a primary ends a segment that has held new WAL for that long, so that it is archived. */
  #armSwitch(): void {
    if (this.#timeoutMs === 0 || this.#stop.signal.aborted) return;
    const due = this.#lastSegmentEndAt + this.#timeoutMs - currentScheduler().now();
    this.#switchTimer = currentScheduler().setTimeout(() => void this.#switchIfDue(), Math.max(due, 0));
    this.#switchTimer.unref();
  }

  async #switchIfDue(): Promise<void> {
    this.#switchTimer = null;
    const { log } = this.#host;
    try {
      const dueAt = this.#lastSegmentEndAt + this.#timeoutMs;
      const offset = log.insertLsn % log.segmentSize;
      if (currentScheduler().now() >= dueAt && log.role === 'primary' && !log.closed && offset > SEGMENT_HEADER_SIZE) {
        const end = await log.switchSegment();
        if (end !== null) this.#debug('archive timeout: ended the segment at %s', end);
      }
      // Nothing new: the next check is a whole timeout away.
      if (currentScheduler().now() >= dueAt) this.#lastSegmentEndAt = currentScheduler().now();
    } catch (err) {
      this.#debug.error('archive timeout: ending the segment failed: %s', (err as Error).message);
    } finally {
      this.#armSwitch();
    }
  }
}

/** The file to archive is no longer in the directory. */
class MissingFile extends Error {}

type SortKey = [number, number, number];

/** History files first (by timeline), then segments (by position, then timeline), then `.partial` segments. */
function sortKey(file: WalFileName): SortKey {
  if (file.kind === 'history') return [0, file.timeline, 0];
  return [file.kind === 'segment' ? 1 : 2, file.segno, file.timeline];
}

function compareKeys(a: SortKey, b: SortKey): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}
