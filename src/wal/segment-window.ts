import type { StorageFile } from '../storage/storage.js';

/**
 * A sliding window of bytes over one segment file, read in large chunks. `ensure` makes
 * a byte range available; `buf[index(offset)]` is then the byte at `offset` in the segment.
 *
 * With `fresh` the window never reuses its buffer, so views handed out earlier (entry data)
 * stay valid; without it one buffer is reused (recovery scans). With `copyWritten` a range the
 * log's writer still holds in memory (WAL written a moment ago) is copied from there instead
 * of read from the file.
 */
export class SegmentWindow {
  buf: Buffer = Buffer.alloc(0);
  #start = 0;
  #length = 0;

  constructor(
    private readonly file: StorageFile,
    private readonly segmentSize: number,
    private readonly chunkSize: number,
    private readonly fresh: boolean,
    /** Copies segment bytes `[offset, offset + length)` into `target` from memory, or returns false. */
    private readonly copyWritten?: (target: Buffer, offset: number, length: number) => boolean,
  ) {}

  /** Segment offset just past the bytes the window holds. */
  get end(): number {
    return this.#start + this.#length;
  }

  /** Index into `buf` of segment offset `offset` (which must be inside the window). */
  index(offset: number): number {
    return offset - this.#start;
  }

  /** Whether `[offset, offset + length)` is already in the window. */
  has(offset: number, length: number): boolean {
    return offset >= this.#start && offset + length <= this.#start + this.#length;
  }

  /**
   * Makes `[offset, offset + length)` available, reading at most up to `limit` (a segment
   * offset, default the segment's end). Resolves false when the file ends before that.
   */
  async ensure(offset: number, length: number, limit = this.segmentSize): Promise<boolean> {
    if (offset >= this.#start && offset + length <= this.#start + this.#length) return true;
    const want = Math.max(length, Math.min(this.chunkSize, limit - offset));
    if (this.fresh || this.buf.length < want) this.buf = Buffer.allocUnsafe(Math.max(want, this.fresh ? 0 : this.chunkSize));
    const read = this.copyWritten?.(this.buf, offset, want) === true ? want : await this.file.read(this.buf, 0, want, offset);
    this.#start = offset;
    this.#length = read;
    return read >= length;
  }

  /** Forgets the window's contents (after the file changed underneath it). */
  reset(): void {
    this.#length = 0;
  }
}
