import { WalshipError } from '../errors.js';
import { compileOptions, withDefaults, type OptionsValidator } from '../options.js';

/**
 * Framing of the replication protocol. Every message on the wire is
 *
 * | size | field |
 * | --- | --- |
 * | 4 | length of what follows (type byte + body), unsigned big-endian, at least 1 |
 * | 1 | message type |
 * | length − 1 | body |
 *
 * The length comes first (unlike PostgreSQL, where the type does) so that a reader can
 * bound a frame before it has seen anything else of it.
 */

/** One frame: a message type byte and its body. */
export interface Frame {
  /** The message type byte (0–255). */
  readonly type: number;
  /** The body, without the length and type. Often a view into a chunk given to {@link FrameReader.push}. */
  readonly body: Buffer;
}

/**
 * Part of a frame that {@link FrameReader.nextPiece} hands out before the whole frame has
 * arrived: the frame's fixed-size header, and a view of the body bytes after it that are
 * here so far. Pieces of one frame come in order; the last has `last: true`.
 */
export interface FramePiece {
  /** The message type byte (0–255). */
  readonly type: number;
  /** The first `headerBytes` of the body (the same buffer for every piece of a frame). */
  readonly header: Buffer;
  /** Where `data` starts within the body after the header. */
  readonly offset: number;
  /** Body bytes after the header in this piece (at least one), a view of a received chunk. */
  readonly data: Buffer;
  /** Body bytes after the header in the whole frame. */
  readonly total: number;
  /** True on the frame's last piece: `offset + data.length === total`. */
  readonly last: boolean;
}

/** Bytes before the body of a frame: the u32 length and the type byte. */
export const FRAME_HEADER_BYTES = 5;

/** Options of {@link FrameReader}. */
export interface FrameReaderOptions {
  /**
   * Largest declared frame length (type byte + body) accepted; a longer one is a
   * `PROTOCOL_ERROR` raised as soon as its 4 length bytes arrive.
   * @defaultValue 16 MiB + 64: the largest WAL data message plus its header.
   */
  readonly maxFrameBytes?: number;
}

/** Defaults of {@link FrameReaderOptions}. */
export const FRAME_READER_DEFAULTS = Object.freeze({
  /** 16 MiB + 64 bytes: the largest `walData` message with its header. */
  maxFrameBytes: 16 * 1024 * 1024 + 64,
});

/** The literal behind {@link frameReaderOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const frameReaderSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    maxFrameBytes: { type: 'integer', minimum: 1, maximum: 0xffffffff },
  },
});

/** JSON schema of {@link FrameReaderOptions}. */
export const frameReaderOptionsSchema: typeof frameReaderSchema = frameReaderSchema;

const validateOptions: OptionsValidator<FrameReaderOptions> = compileOptions('FrameReader', frameReaderOptionsSchema);

/** Consumed chunks are dropped from the front of the list in batches, so removal stays O(1) amortised. */
const COMPACT_AFTER = 64;

/**
 * Splits a byte stream into frames, incrementally: {@link push} what arrives, then take
 * frames with {@link next} (or iterate) until it returns `null`.
 *
 * Chunks are kept as a list and only the bytes of one frame are ever joined, so feeding
 * a frame in many small pieces costs linear time. A frame that lies within one chunk is
 * returned as a view of that chunk without copying, so chunks must not be modified after
 * they are pushed (socket and stream chunks never are).
 *
 * Memory: a declared length above `maxFrameBytes`, or zero, fails as soon as the length
 * is read, before any of the frame is buffered. Callers bound what is buffered beyond the
 * current frame by reading {@link bufferedBytes} (e.g. pausing the stream above a limit).
 *
 * Any error is final: the buffered bytes are released and every later call throws it again.
 */
export class FrameReader implements Iterable<Frame> {
  readonly #maxFrameBytes: number;
  #chunks: Buffer[] = [];
  /** Index in `#chunks` of the first chunk with unread bytes. */
  #head = 0;
  /** Bytes of `#chunks[#head]` already read. */
  #headOffset = 0;
  #buffered = 0;
  /** Declared length of the frame being assembled, once its length field has been read. */
  #frameLength = -1;
  #error: WalshipError | undefined;
  /** The frame being handed out in pieces by {@link nextPiece}, if any. */
  #piece: { type: number; header: Buffer; total: number; remaining: number } | null = null;

  constructor(options: FrameReaderOptions = {}) {
    validateOptions(options);
    this.#maxFrameBytes = withDefaults(FRAME_READER_DEFAULTS, options).maxFrameBytes;
  }

  /** Bytes received and not yet returned as frames (including a length field already read). */
  get bufferedBytes(): number {
    return this.#frameLength < 0 || this.#piece !== null ? this.#buffered : this.#buffered + 4;
  }

  /** Adds received bytes. Throws the reader's error if it has failed, or if this chunk starts an invalid frame. */
  push(chunk: Buffer): void {
    this.#throwIfFailed();
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    // Check the pending length as soon as it is complete, so a caller that pushes without
    // taking frames still learns of an oversized frame before buffering it.
    if (this.#frameLength < 0) this.#readLength();
  }

  /** The next complete frame, or `null` until more bytes are pushed. */
  next(): Frame | null {
    this.#throwIfFailed();
    if (this.#piece !== null) throw new WalshipError('INVALID_ARGUMENT', 'next() called while a frame is being read in pieces');
    if (this.#frameLength < 0 && !this.#readLength()) return null;
    const length = this.#frameLength;
    if (this.#buffered < length) return null;
    this.#frameLength = -1;
    const bytes = this.#take(length);
    return { type: bytes[0] as number, body: bytes.subarray(1) };
  }

  /**
   * Like {@link next}, but a frame of type `splitType` that does not lie within one received
   * chunk is handed out in pieces, each a view of one chunk, as its bytes come (once its
   * first `headerBytes` body bytes are here), so it is never copied into one buffer. Other
   * frames come whole; `null` when nothing can be handed out yet.
   */
  nextPiece(splitType: number, headerBytes: number): Frame | FramePiece | null {
    this.#throwIfFailed();
    const piece = this.#piece;
    if (piece !== null) {
      if (this.#buffered === 0) return null;
      const head = this.#chunks[this.#head] as Buffer;
      const count = Math.min(piece.remaining, head.length - this.#headOffset);
      const data = this.#take(count);
      const offset = piece.total - piece.remaining;
      piece.remaining -= count;
      const last = piece.remaining === 0;
      if (last) {
        this.#piece = null;
        this.#frameLength = -1;
      }
      return { type: piece.type, header: piece.header, offset, data, total: piece.total, last };
    }
    if (this.#frameLength < 0 && !this.#readLength()) return null;
    const length = this.#frameLength;
    if (this.#buffered === 0) return null;
    const head = this.#chunks[this.#head] as Buffer;
    // A frame inside one chunk is a view as it is; any other frame of this type is split.
    if (head.length - this.#headOffset >= length || head[this.#headOffset] !== splitType || length <= 1 + headerBytes) {
      return this.#buffered >= length ? this.next() : null;
    }
    if (this.#buffered < 1 + headerBytes) return null;
    const start = this.#take(1 + headerBytes);
    this.#piece = { type: splitType, header: start.subarray(1), total: length - 1 - headerBytes, remaining: length - 1 - headerBytes };
    return this.#buffered > 0 ? this.nextPiece(splitType, headerBytes) : null;
  }

  /** Yields the complete frames buffered so far. */
  *[Symbol.iterator](): IterableIterator<Frame> {
    for (let frame = this.next(); frame !== null; frame = this.next()) yield frame;
  }

  /** Reads and checks the next length field if all 4 bytes are here; returns whether it did. */
  #readLength(): boolean {
    if (this.#buffered < 4) return false;
    const first = this.#chunks[this.#head] as Buffer;
    let length: number;
    if (first.length - this.#headOffset >= 4) {
      length = first.readUInt32BE(this.#headOffset);
      this.#skip(4);
    } else {
      const field = this.#take(4);
      length = field.readUInt32BE(0);
    }
    if (length === 0) this.#fail('a frame declares length 0; it must include at least the type byte');
    if (length > this.#maxFrameBytes) {
      this.#fail(`a frame declares ${length} bytes, above the limit of ${this.#maxFrameBytes}`);
    }
    this.#frameLength = length;
    return true;
  }

  /** Removes `n` buffered bytes (n ≤ #buffered): a view when they lie in one chunk, else one copy. */
  #take(n: number): Buffer {
    const first = this.#chunks[this.#head] as Buffer;
    const available = first.length - this.#headOffset;
    if (available >= n) {
      const view = first.subarray(this.#headOffset, this.#headOffset + n);
      this.#skip(n);
      return view;
    }
    // `n` is a validated frame length and every byte of it is already buffered, so this
    // allocation never exceeds what the peer has actually sent.
    const joined = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[this.#head] as Buffer;
      const count = Math.min(chunk.length - this.#headOffset, n - filled);
      chunk.copy(joined, filled, this.#headOffset, this.#headOffset + count);
      filled += count;
      this.#skip(count);
    }
    return joined;
  }

  /** Advances past `n` bytes that all lie in the head chunk. */
  #skip(n: number): void {
    this.#buffered -= n;
    this.#headOffset += n;
    const chunk = this.#chunks[this.#head] as Buffer;
    if (this.#headOffset < chunk.length) return;
    this.#chunks[this.#head] = EMPTY; // release the chunk now, not at the next compaction
    this.#head++;
    this.#headOffset = 0;
    if (this.#head === this.#chunks.length) {
      this.#chunks = [];
      this.#head = 0;
    } else if (this.#head >= COMPACT_AFTER && this.#head * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }

  #fail(problem: string): never {
    this.#error = new WalshipError('PROTOCOL_ERROR', `invalid frame: ${problem}`);
    this.#chunks = [];
    this.#head = 0;
    this.#headOffset = 0;
    this.#buffered = 0;
    this.#frameLength = -1;
    this.#piece = null;
    throw this.#error;
  }

  #throwIfFailed(): void {
    if (this.#error !== undefined) throw this.#error;
  }
}

const EMPTY = Buffer.alloc(0);
