import type { Duplex } from 'node:stream';
import { WalshipError, abortError, isWalshipError } from '../errors.js';
import { FrameReader, type FramePiece } from './frame-reader.js';
import {
  MESSAGE_TYPES,
  PROTOCOL_LIMITS,
  decodeMessage,
  encodeMessageParts,
  type ClientMessage,
  type ServerMessage,
  type WalDataMessage,
} from './messages.js';
import { clearTimer, currentScheduler, type SchedulerTimer } from '../scheduler.js';

const WAL_DATA_TYPE = MESSAGE_TYPES.walData;
/** startLsn, walEnd and sendTime (u64 each) and the data's u32 length. */
const WAL_DATA_HEADER_BYTES = 28;

/** Options of {@link MessageStream}. */
export interface MessageStreamOptions {
  /** Largest frame accepted from the peer. @defaultValue 16 MiB + 64 */
  maxFrameBytes?: number;
  /**
   * Decoded messages held ahead of the reader before the stream is paused, counted by what
   * they hold (twice the frame plus 256 bytes). Beyond it, at most the rest of one received chunk stays
   * undecoded and a frame still arriving at most `maxFrameBytes`. @defaultValue 4 MiB
   */
  readAheadBytes?: number;
}

/** The messages one side of a connection receives: a server gets client messages, and the reverse. */
export type Incoming<Side> = Side extends 'server' ? ClientMessage : ServerMessage;
/** The messages one side of a connection sends. */
export type Outgoing<Side> = Side extends 'server' ? ServerMessage : ClientMessage;

const DEFAULT_READ_AHEAD = 4 * 1024 * 1024;

/** How long after {@link MessageStream.destroy} with `closeSoon` the stream is destroyed. */
const CLOSE_SOON_MS = 20;

/**
 * Protocol messages over a transport's byte stream, for one side of a connection: `server`
 * reads client messages and sends server messages, `client` the reverse.
 *
 * Reading is pull-based: {@link next} returns the next message. Received frames are decoded
 * only while fewer than `readAheadBytes` of messages wait unread; then the stream is paused
 * and the rest of the chunk stays undecoded until the reader catches up, so a slow consumer,
 * or a peer that sends without reading, bounds memory (see {@link setReadAhead}). A
 * malformed frame fails the connection with `PROTOCOL_ERROR`: the peer is told (best
 * effort) and the stream destroyed; nothing else is affected.
 */
export class MessageStream<Side extends 'client' | 'server'> {
  readonly #stream: Duplex;
  readonly #side: Side;
  readonly #reader: FrameReader;
  #readAhead: number;
  readonly #queue: Incoming<Side>[] = [];
  /** What each queued message counts for (parallel to #queue). */
  readonly #queueSizes: number[] = [];
  #queuedBytes = 0;
  #waiter: { resolve: (msg: Incoming<Side> | null) => void; reject: (err: unknown) => void } | null = null;
  #failure: WalshipError | null = null;
  #ended = false;
  /** The header of the WAL data frame being received in pieces. */
  #pieceHead: WalDataMessage | null = null;
  /** A destroy with `closeSoon` was asked for: the stream is destroyed {@link CLOSE_SOON_MS} later, and nothing is sent meanwhile. */
  #closingSoon = false;
  /** Resolves once the underlying stream has closed. */
  readonly closed: Promise<void>;

  constructor(stream: Duplex, side: Side, options: MessageStreamOptions = {}) {
    this.#stream = stream;
    this.#side = side;
    this.#reader = new FrameReader(options.maxFrameBytes === undefined ? {} : { maxFrameBytes: options.maxFrameBytes });
    this.#readAhead = options.readAheadBytes ?? DEFAULT_READ_AHEAD;
    this.closed = new Promise((resolve) => stream.once('close', () => resolve()));
    stream.on('data', (chunk: Buffer) => this.#onData(chunk));
    stream.once('end', () => {
      this.#ended = true;
      this.#settle();
    });
    stream.once('close', () => {
      this.#ended = true;
      if (this.#failure === null && !this.#stream.readableEnded) {
        this.#failure = new WalshipError('CONNECTION_FAILED', 'the connection was closed by the peer', { transient: true });
      }
      this.#settle();
    });
    stream.on('error', (err: Error) => {
      this.#failure ??= isWalshipError(err)
        ? err
        : new WalshipError('CONNECTION_FAILED', `the connection failed: ${err.message}`, { cause: err, transient: true });
      this.#settle();
    });
  }

  /** The underlying byte stream. */
  get stream(): Duplex {
    return this.#stream;
  }

  /** The error that ended the connection, if any. */
  get failure(): WalshipError | null {
    return this.#failure;
  }

  /**
   * The next message from the peer, or `null` once the peer ended the stream cleanly.
   * Rejects with the connection's failure, `TIMEOUT` after `timeoutMs`, or `ABORTED`.
   */
  next(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<Incoming<Side> | null> {
    const queued = this.#dequeue();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (this.#ended) return Promise.resolve(null);
    if (this.#waiter !== null) return Promise.reject(new WalshipError('INVALID_ARGUMENT', 'next() is already waiting'));
    const { signal, timeoutMs } = options;
    if (signal === undefined && timeoutMs === undefined) {
      // The common case on a busy stream: no timer, no abort listener, nothing to clean up.
      return new Promise((resolve, reject) => {
        this.#waiter = { resolve, reject };
        this.#maybeResume();
      });
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      let timer: SchedulerTimer | undefined;
      const cleanup = (): void => {
        if (timer !== undefined) clearTimer(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#waiter = null;
      };
      const onAbort = (): void => {
        cleanup();
        reject(abortError(signal as AbortSignal));
      };
      if (timeoutMs !== undefined) {
        timer = currentScheduler().setTimeout(() => {
          cleanup();
          reject(new WalshipError('TIMEOUT', `no message from the peer within ${timeoutMs} ms`, { transient: true }));
        }, timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiter = {
        resolve: (msg) => {
          cleanup();
          resolve(msg);
        },
        reject: (err) => {
          cleanup();
          reject(err);
        },
      };
      this.#maybeResume();
    });
  }

  /**
   * Rejects a pending {@link next} with `error`, leaving the stream as it is (a later `next`
   * reads on). For a reader that stops on a signal it registered once, instead of passing the
   * signal to each `next`.
   */
  interrupt(error: unknown): void {
    const waiter = this.#waiter;
    if (waiter === null) return;
    this.#waiter = null;
    waiter.reject(error);
  }

  /**
   * Changes the read-ahead bound (`readAheadBytes`): a server keeps it small while a peer
   * authenticates, and sets what an authenticated session may queue afterwards.
   */
  setReadAhead(bytes: number): void {
    this.#readAhead = bytes;
    this.#fill();
    this.#maybeResume();
  }

  /** Decoded messages waiting for {@link next}, counted as for the read-ahead bound. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Sends a message; returns false when the stream's buffer is full (then await {@link drained}). */
  send(message: Outgoing<Side>): boolean {
    // Destroyed, or about to be (closeSoon): nothing more goes out.
    if (this.#closingSoon || this.#stream.destroyed || this.#stream.writableEnded) return false;
    const parts = encodeMessageParts(message);
    if (parts.length === 1) return this.#stream.write(parts[0] as Buffer);
    // One writev for the header and the payload view: no copy, and no tiny segment on the wire.
    this.#stream.cork();
    let ok = true;
    for (const part of parts) ok = this.#stream.write(part);
    process.nextTick(() => this.#stream.uncork());
    return ok;
  }

  /** Sends `first` and then `second` in one write to the stream (one segment on the wire, one wake-up of the peer); as {@link send}. */
  sendBoth(first: Outgoing<Side>, second: Outgoing<Side>): boolean {
    this.#stream.cork();
    this.send(first);
    const ok = this.send(second);
    process.nextTick(() => this.#stream.uncork());
    return ok;
  }

  /**
   * Resolves when the stream can take more data (at once if it can now, or once it closed).
   * With `timeoutMs`, rejects with a transient `TIMEOUT` when the peer has not read what was
   * sent by then.
   */
  drained(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#stream.writableNeedDrain || this.#stream.destroyed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let timer: SchedulerTimer | undefined;
      const done = (): void => {
        this.#stream.off('drain', settle);
        this.#stream.off('close', settle);
        if (timer !== undefined) clearTimer(timer);
      };
      const settle = (): void => {
        done();
        resolve();
      };
      this.#stream.on('drain', settle);
      this.#stream.on('close', settle);
      if (options.timeoutMs !== undefined) {
        timer = currentScheduler().setTimeout(() => {
          done();
          reject(new WalshipError('TIMEOUT', `the peer has not read what was sent within ${options.timeoutMs} ms`, { transient: true }));
        }, options.timeoutMs);
      }
    });
  }

  /** Ends the connection after what was sent; resolves when the stream has closed. */
  async end(): Promise<void> {
    // A peer that never closes its side must not hold us: the stream is destroyed once ours is flushed.
    if (this.#stream.writableFinished) this.#stream.destroy();
    else this.#stream.once('finish', () => this.#stream.destroy());
    if (!this.#stream.destroyed) this.#stream.end();
    await this.closed;
  }

  /** Fails the connection: tells the peer (when `error` is given and we are the server) and destroys the stream. */
  fail(error: WalshipError): void {
    this.#failure ??= error;
    if (this.#side === 'server' && !this.#stream.destroyed && !this.#stream.writableEnded) {
      const message = truncateUtf8(error.message, 4000);
      this.#stream.end(Buffer.concat(encodeMessageParts({ kind: 'error', code: error.code, message } as Outgoing<Side>)));
      this.#stream.once('finish', () => this.#stream.destroy());
      // A peer that does not read must not keep the stream: give the error a moment, then drop it.
      const timer = currentScheduler().setTimeout(() => this.#stream.destroy(), 1000);
      this.#stream.once('close', () => clearTimer(timer));
    } else {
      this.#stream.destroy();
    }
    this.#settle();
  }

  /**
   * Destroys the stream at once (with `closeSoon`, 20 ms later: nothing is
   * read or sent meanwhile). A pending or later {@link next} rejects at once (transient
   * `CONNECTION_FAILED`), not when the transport reports the close.
   */
  destroy(options: { closeSoon?: boolean } = {}): void {
    if (this.#closingSoon) {
      // Destroyed a moment later already (below).
    } else if (options.closeSoon === true && !this.#stream.destroyed) {
      // Closing a socket costs its caller a quarter of a millisecond and more (the FIN goes
      // through the kernel's loopback inside the call): a promotion has it done a moment
      // later, once its own steps are over. Nothing is read meanwhile.
      this.#closingSoon = true;
      this.#stream.pause();
      currentScheduler().setTimeout(() => this.#stream.destroy(), CLOSE_SOON_MS);
    } else {
      this.#stream.destroy();
    }
    this.#failure ??= new WalshipError('CONNECTION_FAILED', 'the connection was closed', { transient: true });
    this.#settle();
  }

  #onData(chunk: Buffer): void {
    if (this.#failure !== null) return;
    try {
      this.#reader.push(chunk);
    } catch (err) {
      this.#failDecoding(err);
      return;
    }
    this.#fill();
    // A frame still arriving does not count: it is bounded by maxFrameBytes, and pausing for
    // it could stall the stream before the frame completes.
    if (this.#queuedBytes > this.#readAhead) this.#stream.pause();
    this.#settle();
  }

  /** Decodes received frames into the queue while it is within the read-ahead bound. */
  #fill(): void {
    if (this.#failure !== null) return;
    try {
      while (this.#queuedBytes <= this.#readAhead) {
        if (this.#side === 'server') {
          const frame = this.#reader.next();
          if (frame === null) return;
          this.#enqueue(decodeMessage(frame, 'client') as Incoming<Side>, queuedSize(frame.body.length));
        } else {
          // WAL data is taken in pieces as it arrives: a frame spanning socket chunks is never copied.
          const item = this.#reader.nextPiece(WAL_DATA_TYPE, WAL_DATA_HEADER_BYTES);
          if (item === null) return;
          if ('header' in item) this.#enqueue(this.#walDataPiece(item) as Incoming<Side>, item.data.length + QUEUED_MESSAGE_BYTES);
          else this.#enqueue(decodeMessage(item, 'server') as Incoming<Side>, queuedSize(item.body.length));
        }
      }
    } catch (err) {
      this.#failDecoding(err);
    }
  }

  #failDecoding(err: unknown): void {
    this.fail(isWalshipError(err) ? err : new WalshipError('PROTOCOL_ERROR', `undecodable message: ${(err as Error).message}`, { cause: err }));
  }

  #enqueue(message: Incoming<Side>, size: number): void {
    this.#queue.push(message);
    this.#queueSizes.push(size);
    this.#queuedBytes += size;
  }

  /** The next queued message, if any; decoding and reading go on as the queue empties. */
  #dequeue(): Incoming<Side> | undefined {
    const message = this.#queue.shift();
    if (message === undefined) return undefined;
    this.#queuedBytes -= this.#queueSizes.shift() as number;
    this.#fill();
    this.#maybeResume();
    return message;
  }

  /** A `walData` message for one piece of a frame that is still arriving; its header is checked on the first piece. */
  #walDataPiece(piece: FramePiece): WalDataMessage {
    let head = this.#pieceHead;
    if (piece.offset === 0 || head === null) {
      head = decodeWalDataHeader(piece.header, piece.total);
      this.#pieceHead = head;
    }
    return { kind: 'walData', startLsn: head.startLsn + piece.offset, walEnd: head.walEnd, sendTime: head.sendTime, data: piece.data };
  }

  #maybeResume(): void {
    if (this.#failure === null && this.#stream.isPaused() && this.#queuedBytes <= this.#readAhead) this.#stream.resume();
  }

  #settle(): void {
    const waiter = this.#waiter;
    if (waiter === null) return;
    this.#waiter = null;
    const queued = this.#dequeue();
    if (queued !== undefined) {
      waiter.resolve(queued);
    } else if (this.#failure !== null) {
      waiter.reject(this.#failure);
    } else if (this.#ended) {
      waiter.resolve(null);
    } else {
      this.#waiter = waiter;
    }
  }
}

/** What any queued message counts for beyond its content: the object, its fields, its queue slot. */
const QUEUED_MESSAGE_BYTES = 256;

/**
 * What a decoded message from a frame body of `bodyBytes` counts for in the read-ahead bound:
 * twice the body (strings decode to up to two bytes a character, numbers to eight bytes each
 * from eight on the wire, arrays and views add their own) plus the object itself.
 */
function queuedSize(bodyBytes: number): number {
  return 2 * bodyBytes + QUEUED_MESSAGE_BYTES;
}

/** `text` cut to at most `maxBytes` UTF-8 bytes, on a character boundary. */
function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  let cut = Buffer.from(text).subarray(0, maxBytes - 3).toString('utf8');
  if (cut.endsWith('\uFFFD')) cut = cut.slice(0, -1);
  return `${cut}…`;
}

/**
 * Decodes and checks the header of a `walData` frame whose data (`total` bytes) arrives in
 * pieces, with the same rules as a whole frame.
 */
function decodeWalDataHeader(header: Buffer, total: number): WalDataMessage {
  const startLsn = readU64(header, 0, 'startLsn');
  const walEnd = readU64(header, 8, 'walEnd');
  const sendTime = readU64(header, 16, 'sendTime');
  const declared = header.readUInt32BE(24);
  if (declared !== total) {
    throw new WalshipError('PROTOCOL_ERROR', `invalid walData message: data declares ${declared} bytes but the frame holds ${total}`);
  }
  if (total > PROTOCOL_LIMITS.maxWalDataBytes) {
    throw new WalshipError('PROTOCOL_ERROR', `invalid walData message: data must be at most ${PROTOCOL_LIMITS.maxWalDataBytes} bytes, got ${total}`);
  }
  if (total > 2 ** 53 - startLsn) throw new WalshipError('PROTOCOL_ERROR', 'invalid walData message: data ends beyond LSN 2^53');
  return { kind: 'walData', startLsn, walEnd, sendTime, data: EMPTY };
}

/** A u64 that must stay below 2^53, as every LSN and time of the protocol must. */
function readU64(buf: Buffer, offset: number, field: string): number {
  const high = buf.readUInt32BE(offset);
  if (high > 0x1f_ffff) throw new WalshipError('PROTOCOL_ERROR', `invalid walData message: ${field} is beyond 2^53`);
  return high * 0x1_0000_0000 + buf.readUInt32BE(offset + 4);
}

const EMPTY = new Uint8Array(0);
