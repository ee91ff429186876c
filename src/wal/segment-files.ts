import type { Logger } from '../logger.js';
import type { Lsn } from '../lsn.js';
import type { Storage, StorageFile } from '../storage/storage.js';
import { segmentFileName } from './segment-name.js';
import { segmentTimeline, type TimelineHistory } from './timeline-history.js';

/**
 * The segment files on one timeline's path on disk (each segment in the file of the timeline
 * that holds it, see {@link segmentTimeline}): creating them ahead of need (zero-filled, so
 * later fdatasyncs write data only, not allocation metadata, or sparse: see
 * {@link SegmentFiles.sparse}), recycling removed ones into future names instead of deleting
 * them, and keeping the writer's file handles.
 *
 * Every create, rename and remove goes through one queue, so they never interleave, and
 * each is followed by a directory fsync before the segment is used or reported gone. A
 * timeline switch ({@link SegmentFiles.switchTimeline}) goes through it too, since it changes
 * the names: a creation started before it (a segment prepared ahead) has its file, under the
 * old timeline's name, by the time the switch removes the files past the switch point.
 */
export class SegmentFiles {
  /** Segment numbers with a file on disk: the log's own segments plus prepared future ones. */
  readonly present = new Set<number>();
  readonly #writers = new Map<number, Promise<StorageFile>>();
  readonly #preparing = new Map<number, Promise<void>>();
  #queue: Promise<unknown> = Promise.resolve();
  /** Segments below this number have been removed. */
  #floor = 0;
  #history: TimelineHistory;

  constructor(
    readonly storage: Storage,
    readonly segmentSize: number,
    history: TimelineHistory,
    private readonly log: Logger,
    /**
     * Create segments as holes instead of writing their zeros. A replica catching up writes
     * whole segments at disk speed, and zero-filling first would write every byte twice.
     */
    public sparse = false,
  ) {
    this.#history = history;
  }

  /** The history of the log's timeline: which file holds which segment (see {@link switchTimeline}). */
  get history(): TimelineHistory {
    return this.#history;
  }

  name(segno: number): string {
    return segmentFileName(segmentTimeline(this.#history, segno, this.segmentSize), segno, this.segmentSize);
  }

  /** The writer's handle on segment `segno`, creating the file first if needed. */
  async forWrite(segno: number): Promise<StorageFile> {
    let handle = this.#writers.get(segno);
    if (handle === undefined) {
      handle = this.prepare(segno).then(() => this.storage.open(this.name(segno), { commitPath: true }));
      this.#writers.set(segno, handle);
      handle.catch(() => this.#writers.delete(segno));
    }
    return handle;
  }

  /** Closes the writer's handle on `segno`, if open. */
  async closeWriter(segno: number): Promise<void> {
    const handle = this.#writers.get(segno);
    if (handle === undefined) return;
    this.#writers.delete(segno);
    await (await handle.catch(() => null))?.close();
  }

  /** Starts creating `segno` in the background; a failure is logged and retried by {@link forWrite}. */
  prepareAhead(segno: number): void {
    this.prepare(segno).catch((err: unknown) => this.log('preparing segment %s failed: %s', this.name(segno), err));
  }

  /** Ensures segment `segno` exists on disk with its full size, durably. */
  prepare(segno: number): Promise<void> {
    if (this.present.has(segno)) return Promise.resolve();
    if (segno < this.#floor) {
      // A removed segment is never brought back (e.g. by a late sync of a dirty one).
      return Promise.reject(new Error(`segment ${this.name(segno)} was removed`));
    }
    let pending = this.#preparing.get(segno);
    if (pending === undefined) {
      // Forgotten within the operation, before the next one in the queue (a removal) runs: a
      // settled preparation never answers for a file removed since.
      pending = this.#serialized(async () => {
        try {
          await this.#create(segno);
        } finally {
          this.#preparing.delete(segno);
        }
      });
      this.#preparing.set(segno, pending);
    }
    return pending;
  }

  async #create(segno: number): Promise<void> {
    if (this.present.has(segno)) return;
    const name = this.name(segno);
    const temp = `${name}.tmp`;
    const file = await this.storage.open(temp, { create: true });
    try {
      await file.allocate(this.segmentSize, { sparse: this.sparse });
      await file.datasync();
    } catch (err) {
      await file.close().catch(() => undefined);
      await this.storage.remove(temp).catch(() => undefined);
      throw err;
    }
    await file.close();
    // A failure from here on leaves the full temporary file for the next attempt, which then
    // needs no new space (a disk full of WAL may have none to give).
    await this.storage.rename(temp, name);
    try {
      await this.storage.syncDirectory();
    } catch (err) {
      // The name may not be durable, and a later sync that succeeds need not cover a change
      // an earlier one failed on: back under the temporary name, so the next attempt renames
      // (and syncs) afresh.
      await this.storage.rename(name, temp).catch(() => undefined);
      throw err;
    }
    this.present.add(segno);
    this.log('created segment %s', name);
  }

  /**
   * Removes every segment below `segno` and returns their names. While fewer than
   * `spare` files wait beyond `insertSegno`, removed files are renamed to the next
   * future segment numbers, so new segments need no allocation; the rest are deleted.
   */
  removeBelow(segno: number, insertSegno: number, spare: number): Promise<string[]> {
    this.#floor = Math.max(this.#floor, segno);
    return this.#serialized(async () => {
      const doomed = [...this.present].filter((s) => s < segno).sort((a, b) => a - b);
      if (doomed.length === 0) return [];
      for (const s of doomed) await this.closeWriter(s);
      const names: string[] = [];
      const recycled: number[] = [];
      for (const s of doomed) {
        const name = this.name(s);
        const highest = Math.max(insertSegno, ...this.present, ...recycled);
        const future = [...this.present].filter((p) => p > insertSegno).length + recycled.length;
        // Recycle into names past everything on disk, never over a live segment.
        if (future < spare) {
          await this.storage.rename(name, this.name(highest + 1));
          recycled.push(highest + 1);
          this.log('recycled segment %s as %s', name, this.name(highest + 1));
        } else {
          await this.storage.remove(name);
          this.log('removed segment %s', name);
        }
        // Only now: after a failure (ENOSPC on a rename) the rest stay listed, for the next call.
        this.present.delete(s);
        names.push(name);
      }
      await this.storage.syncDirectory();
      // Only now may the writer use a recycled file: its new name survives a power loss.
      for (const s of recycled) this.present.add(s);
      return names;
    });
  }

  /**
   * Deletes the segment files from `segno` on (past the end of the WAL: a promotion's, prepared
   * past its switch point), including one whose creation was under way when this was called.
   * Not synced: a crash may bring them back, which is only for files that hold nothing needed.
   */
  removeFrom(segno: number): Promise<void> {
    return this.#serialized(() => this.#removeFrom(segno));
  }

  /**
   * The highest first: a crash that keeps only some of the removals leaves no hole below a
   * segment still there (recovery refuses a hole followed by WAL). In the queue: what is
   * present includes every creation queued before.
   */
  async #removeFrom(segno: number, below = Number.POSITIVE_INFINITY): Promise<void> {
    for (const s of [...this.present].filter((p) => p >= segno && p < below).sort((a, b) => b - a)) {
      this.present.delete(s);
      await this.closeWriter(s);
      await this.storage.remove(this.name(s));
    }
  }

  /**
   * Moves the files onto `history`, whose timeline begins at `switchLsn` (this log's end, or
   * the end of its complete records): removes the segments past the one holding `switchLsn`
   * (and that one when `switchLsn` is its start: the new timeline writes it afresh) up to the
   * one holding `writtenLsn`, renames the one holding `switchLsn` to the new timeline's name,
   * and from then on names files by `history`. The files past the one holding `writtenLsn`
   * hold no WAL of their positions (spare files, or one prepared ahead): they are renamed
   * onto the new timeline too, kept for reuse as PostgreSQL's end of recovery recycles them;
   * a rename costs a fraction of deleting a file of a segment's size (64 spare files of
   * 16 MiB: 0.5 ms against 336 ms on this project's machine).
   * In the queue, so a segment being prepared ahead, under the old timeline's name, is
   * created before this looks for files to remove, and one prepared later gets the new name:
   * the writer never finds a segment listed in {@link present} that is not on disk under
   * {@link name}. No directory sync (see `WalLog.beginTimeline` for what makes it safe).
   */
  switchTimeline(history: TimelineHistory, switchLsn: Lsn, writtenLsn: Lsn): Promise<void> {
    return this.#serialized(async () => {
      const segno = Math.floor(switchLsn / this.segmentSize);
      const within = switchLsn - segno * this.segmentSize;
      const spareFrom = Math.max(segno + 1, Math.floor(writtenLsn / this.segmentSize) + 1);
      await this.#removeFrom(within === 0 ? segno : segno + 1, spareFrom);
      for (const s of [...this.present].filter((p) => p >= spareFrom).sort((a, b) => a - b)) {
        await this.closeWriter(s);
        await this.storage.rename(this.name(s), segmentFileName(history.timeline, s, this.segmentSize));
      }
      await this.closeWriter(segno);
      if (within > 0) {
        const from = this.name(segno);
        const to = segmentFileName(history.timeline, segno, this.segmentSize);
        await this.storage.rename(from, to);
        this.present.add(segno);
        this.log('moved segment %s to %s', from, to);
      }
      this.#history = history;
    });
  }

  /** Waits for queued file operations and closes every handle. */
  async close(): Promise<void> {
    await this.#queue.catch(() => undefined);
    await Promise.all([...this.#preparing.values()].map((p) => p.catch(() => undefined)));
    for (const segno of [...this.#writers.keys()]) await this.closeWriter(segno).catch(() => undefined);
  }

  #serialized<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(operation, operation);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}

/**
 * Copies the first `length` bytes of segment file `from` into a new segment file `to`, durably:
 * a temporary file of the whole segment size, synced, renamed into place, the directory synced.
 */
export async function copySegmentPrefix(storage: Storage, from: string, to: string, length: number, segmentSize: number, sparse: boolean): Promise<void> {
  const buf = Buffer.alloc(length);
  const source = await storage.open(from, { readOnly: true });
  try {
    if ((await source.read(buf, 0, length, 0)) !== length) throw new Error(`segment ${from} is shorter than ${length} bytes`);
  } finally {
    await source.close();
  }
  const temp = `${to}.tmp`;
  const file = await storage.open(temp, { create: true });
  try {
    await file.allocate(segmentSize, { sparse });
    await file.write(buf, 0);
    await file.datasync();
  } finally {
    await file.close();
  }
  await storage.rename(temp, to);
  await storage.syncDirectory();
}
