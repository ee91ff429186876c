import { WalshipError, abortError, isWalshipError } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { createLogger, type Logger } from '../logger.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { MessageStream } from '../protocol/message-stream.js';
import type { FlushRequestMessage, KeepaliveMessage, WalDataMessage } from '../protocol/messages.js';
import { assertNotRemoved } from '../wal/tail.js';
import { switchPointOf } from '../wal/timeline-history.js';
import { verifyHistory, type HistoryCheck } from './history-check.js';
import { LagTracker, type Lags } from './lag-tracker.js';
import type { WalLog } from '../wal/wal-log.js';
import { clearTimer, currentScheduler, type SchedulerTimer } from '../scheduler.js';

/** A sender's state, as `pg_stat_replication.state` names them. */
export type WalSenderState = 'startup' | 'catchup' | 'streaming' | 'stopping';

/** What the standby last reported (`pg_stat_replication`'s write/flush/replay positions). */
export interface StandbyProgress {
  readonly writeLsn: Lsn;
  readonly flushLsn: Lsn;
  readonly applyLsn: Lsn;
  /** When the report arrived (ms since the epoch). */
  readonly replyTime: number;
}

/** Options of {@link WalSender}. */
export interface WalSenderOptions {
  /** End a standby's connection after this long without any message from it. @defaultValue 60 000 */
  readonly walSenderTimeoutMs?: number;
  /** WAL bytes per message. @defaultValue 1 MiB */
  readonly maxMessageBytes?: number;
  /** The standby's lineage check from START_REPLICATION; none by default. */
  readonly historyCheck?: HistoryCheck;
  /** Where this node's log begins to hold the cluster's WAL (see {@link verifyHistory}). @defaultValue 0 */
  readonly historyFrom?: Lsn;
  /** The timeline to stream; an ancestor of the log's ends at its switch point. @defaultValue the log's timeline */
  readonly timeline?: number;
  /**
   * Send WAL as soon as it is written, while the primary's fdatasync runs, instead of once it
   * is durable. Every message still carries the durable end (`walEnd`), and a keepalive goes
   * out whenever the durable end passes what was sent, so the standby (which must accept
   * early WAL, see `StandbyOptions.acceptEarlyWal`) never applies, forwards or confirms WAL
   * the primary could still lose. Only for a primary's log. @defaultValue false
   */
  readonly earlySend?: boolean;
  /**
   * The standby flushes on request (it said so, see `flush-requests.ts`): the highest position
   * a commit waits for it to write (`write`), or to flush or apply (`flush`), asked for with a
   * `flushRequest` before the next message whenever either moved (0 while it is not asked:
   * see `SyncRep.asks`). Null for a standby that flushes every message. @defaultValue null
   */
  readonly wanted?: ((what: 'write' | 'flush') => Lsn) | null;
  /**
   * The standby flushes on request at this pace (its `flushDelayMs`, see `sendPaceOf`): while
   * it streams and is not asked (`needed` says so), the WAL written and the durable end go to
   * it at most once every `sendPaceMs` (the first message after a quiet spell at once). 0
   * sends everything at once. @defaultValue 0
   */
  readonly sendPaceMs?: number;
  /** Whether commits need this standby's confirmations now (a `sync` member, or an asked `quorum` one): it is then never paced. @defaultValue always */
  readonly needed?: () => boolean;
  readonly logPrefix?: string;
}

/** Where a streamed timeline ended, and which one follows (PostgreSQL's end-of-timeline result). */
export interface EndOfTimeline {
  readonly nextTimeline: number;
  readonly switchLsn: Lsn;
}

/** Events of a {@link WalSender}. */
export interface WalSenderEvents {
  'state:change': (event: { readonly state: WalSenderState }) => void;
  'standby:progress': (event: StandbyProgress & Lags) => void;
}

const DEFAULTS = {
  walSenderTimeoutMs: 60_000,
  maxMessageBytes: 1024 * 1024,
  historyCheck: { checkFrom: null, checkCrc: 0 } as HistoryCheck,
  historyFrom: 0,
  timeline: 0,
  earlySend: false,
  wanted: null,
  sendPaceMs: 0,
  needed: (): boolean => true,
};

/**
 * Streams a primary's durable WAL (with `earlySend`, its written WAL) to one standby over an authenticated connection, from the
 * LSN the standby asked for: `catchup` until it has sent up to the log's flushed end, then
 * `streaming` from the live tail. Sending waits for the connection to drain, so a slow or
 * stalled standby costs at most the transport's buffers plus one message in flight. A
 * keepalive asking for a reply goes out when the standby has been silent for half of
 * `walSenderTimeoutMs`; after the whole timeout the connection is ended.
 */
export class WalSender extends SafeEmitter<WalSenderEvents> {
  readonly #conn: MessageStream<'server'>;
  readonly #log: WalLog;
  readonly #options: { -readonly [K in keyof Required<Omit<WalSenderOptions, 'logPrefix'>>]: Required<Omit<WalSenderOptions, 'logPrefix'>>[K] };
  /** Set when the sending reached the end of the streamed timeline. */
  #endOfTimeline: EndOfTimeline | null = null;
  readonly #debug: Logger;
  readonly #abort = new AbortController();
  readonly #startLsn: Lsn;
  #state: WalSenderState = 'startup';
  #sentLsn: Lsn;
  #progress: StandbyProgress | null = null;
  #lastHeard = currentScheduler().now();
  readonly #lag = new LagTracker();
  #done: Promise<EndOfTimeline | null> | null = null;
  /** Set when the standby went silent for `walSenderTimeoutMs`: run() rejects with it. */
  #timedOut: WalshipError | null = null;
  /** The durable end the last message carried: an early sender tells the standby when it moves past it. */
  #toldDurable: Lsn = 0;
  /** The write and flush positions last asked for (`wanted`); -1 before the first request, which says requests will come. */
  #askedWrite: Lsn = -1;
  #askedFlush: Lsn = -1;
  /** When the last message with WAL or the durable end went (monotonic ms), for `sendPaceMs`. */
  #lastSentAt = Number.NEGATIVE_INFINITY;
  /** Ends the paced sender's pause early (see {@link #pause}); null while it does not pause. */
  #wakePause: (() => void) | null = null;
  /** A paced standby's word on the durable end, due at its pace (early sending only). */
  #durableTimer: SchedulerTimer | null = null;

  constructor(conn: MessageStream<'server'>, log: WalLog, startLsn: Lsn, options: WalSenderOptions = {}) {
    super();
    this.#conn = conn;
    this.#log = log;
    this.#startLsn = this.#sentLsn = startLsn;
    this.#options = { ...DEFAULTS, ...options };
    this.#debug = createLogger('sender', options.logPrefix);
    this.emitterLog = this.#debug;
  }

  get state(): WalSenderState {
    return this.#state;
  }

  /** The timeline this sender streams. */
  get timeline(): number {
    return this.#timeline;
  }

  /** Where the standby asked to start: it needs the WAL from here until it reports a flush. */
  get startLsn(): Lsn {
    return this.#startLsn;
  }

  /** End of the WAL sent so far. */
  get sentLsn(): Lsn {
    return this.#sentLsn;
  }

  /** The standby's last report, if any. */
  get progress(): StandbyProgress | null {
    return this.#progress;
  }

  /** Write, flush and replay lag as of the standby's last report. */
  get lags(): Lags {
    return this.#lag.lags;
  }

  /**
   * Fast shutdown's last step: sends what is durable up to `endLsn`, waits (at most
   * `timeoutMs`) for the standby to report it flushed, then ends the connection, as a
   * PostgreSQL walsender does before it exits.
   */
  async finish(endLsn: Lsn, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.#state !== 'startup') this.#setState('stopping');
    // A paced standby gets the last WAL now.
    this.#hurry();
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if ((this.#progress?.flushLsn ?? -1) < endLsn && this.#conn.failure === null && !this.#abort.signal.aborted && signal?.aborted !== true) return;
        clearTimer(timer);
        this.off('standby:progress', check);
        signal?.removeEventListener('abort', check);
        resolve();
      };
      const timer = currentScheduler().setTimeout(() => {
        this.off('standby:progress', check);
        signal?.removeEventListener('abort', check);
        resolve();
      }, timeoutMs);
      // Immediate shutdown: stop waiting for the standby's confirmation at once.
      signal?.addEventListener('abort', check, { once: true });
      this.on('standby:progress', check);
      this.#done?.then(check, check);
      check();
    });
    await this.stop();
  }

  /**
   * Tells the standby where streaming starts and runs until the connection ends, the
   * standby terminates, or {@link stop}; resolves then with null. When the streamed timeline
   * ends (an ancestor's switch point, or the log moved to a new timeline) it resolves with
   * where and what follows, leaving the connection open for the next command. Rejects with
   * the connection's error.
   */
  run(): Promise<EndOfTimeline | null> {
    this.#done ??= this.#run();
    return this.#done;
  }

  /** Stops sending (fast shutdown: what is flushed has been handed to the connection) and ends the connection. */
  async stop(): Promise<void> {
    if (this.#state !== 'startup') this.#setState('stopping');
    this.#abort.abort();
    await this.#done?.catch(() => undefined);
    await this.#conn.end().catch(() => undefined);
  }

  async #run(): Promise<EndOfTimeline | null> {
    try {
      assertNotRemoved(this.#log, this.#sentLsn);
    } catch (error) {
      this.#conn.fail(error as WalshipError);
      throw error;
    }
    if (this.#sentLsn > this.#log.readableLsn) {
      const error = new WalshipError(
        'INVALID_ARGUMENT',
        `requested starting point ${formatLsn(this.#sentLsn)} is ahead of the WAL flush position ${formatLsn(this.#log.readableLsn)}`,
      );
      this.#conn.fail(error);
      throw error;
    }
    let historyChecked: boolean;
    try {
      // Never continue a standby whose last bytes are not this node's: its WAL has another history.
      historyChecked = (await verifyHistory(this.#log, this.#options.historyFrom, this.#sentLsn, this.#options.historyCheck)) === true;
    } catch (err) {
      const error = isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err });
      this.#debug.error('refusing to stream from %s: %s', formatLsn(this.#sentLsn), error.message);
      this.#conn.fail(error);
      throw error;
    }
    this.#conn.send({ kind: 'replicationStarted', timeline: this.#timeline, startLsn: this.#sentLsn, historyChecked });
    const asked = this.#flushRequest();
    if (asked !== null) this.#conn.send(asked);
    this.#setState(this.#sentLsn < this.#log.readableLsn ? 'catchup' : 'streaming');
    const heartbeat = currentScheduler().setInterval(() => this.#heartbeat(), Math.max(10, this.#options.walSenderTimeoutMs / 4));
    // Early sending: WAL went out before it was durable; the standby learns at once when it is
    // (a paced one at its pace).
    const onFlush = (): void => {
      if (this.#sentLsn <= this.#toldDurable || this.#conn.failure !== null || this.#abort.signal.aborted) return;
      if (this.#paced()) this.#tellDurableAtPace();
      else this.#keepalive(false);
    };
    if (this.#options.earlySend) this.#log.on('flush', onFlush);
    const listening = this.#listen();
    const sending = this.#send();
    try {
      try {
        // The log's end (sealed at shutdown) ends the sending, not the connection: the standby
        // still reports that it flushed the last WAL, which stop() (after finish()) waits for.
        // The end of the timeline ends both: the connection goes back to commands.
        await Promise.race([sending.then(() => (this.#endOfTimeline === null ? listening : undefined)), listening]);
      } catch (err) {
        // stop() aborts on purpose; a timeout aborts too, but is the connection's error.
        if (!this.#abort.signal.aborted) {
          const error = isWalshipError(err) ? err : new WalshipError('CONNECTION_FAILED', String(err), { cause: err });
          this.#debug.error('sender stopped: %s', error.message);
          throw error;
        }
      }
      if (this.#timedOut !== null) throw this.#timedOut;
    } finally {
      clearTimer(heartbeat);
      clearTimer(this.#durableTimer);
      this.#durableTimer = null;
      this.#log.off('flush', onFlush);
      this.#abort.abort();
      if (this.#endOfTimeline === null) this.#conn.destroy();
      await Promise.all([sending.catch(() => undefined), listening.catch(() => undefined)]);
    }
    if (this.#endOfTimeline !== null) this.#debug('timeline %d ended at %s; timeline %d follows', this.#timeline, formatLsn(this.#endOfTimeline.switchLsn), this.#endOfTimeline.nextTimeline);
    return this.#endOfTimeline;
  }

  async #send(): Promise<void> {
    const chunks = this.#log.readBytes(this.#sentLsn, {
      follow: true,
      signal: this.#abort.signal,
      maxChunkBytes: this.#options.maxMessageBytes,
      timeline: this.#timeline,
      unflushed: this.#options.earlySend,
    });
    // Read ahead: the next chunk comes off the disk while this one drains into the socket, so
    // a catching-up standby never waits for a read. At most two messages are held.
    let next: ReturnType<typeof chunks.next> | null = chunks.next();
    try {
      for (;;) {
        const chunk = await (next ?? chunks.next());
        if (chunk.done === true) {
          this.#endOfTimeline = this.#timelineEnd();
          return;
        }
        // A paced standby's next chunk is read after the pause, when it has all of what was written.
        const paced = this.#paced();
        next = paced ? null : chunks.next();
        const { startLsn, data } = chunk.value;
        // The durable end (a cascading standby's: what its primary confirmed), which an early
        // sender's data may run ahead of.
        const walEnd = this.#log.readableLsn;
        this.#toldDurable = walEnd;
        const walData: WalDataMessage = { kind: 'walData', startLsn, walEnd, sendTime: nowMicros(), data };
        const asked = this.#flushRequest();
        const fits = asked === null ? this.#conn.send(walData) : this.#conn.sendBoth(asked, walData);
        this.#sentLsn = startLsn + data.length;
        this.#lastSentAt = currentScheduler().monotonic();
        // As PostgreSQL's walsender: the flushed end, timed when first seen, approximates when
        // that WAL was flushed, so a standby catching up shows how far behind it really is.
        this.#lag.sent(walEnd, currentScheduler().now());
        if (this.#state === 'catchup' && this.#sentLsn >= this.#log.readableLsn) this.#setState('streaming');
        // Backpressure: a standby that stops reading stops us here.
        if (!fits) await this.#conn.drained();
        if (this.#conn.failure !== null) throw this.#conn.failure;
        if (paced) {
          // Only once it has everything so far: a standby behind (more than a chunk came within
          // a pace) gets the rest at once, so the pace never caps its throughput.
          if (this.#sentLsn >= (this.#options.earlySend ? this.#log.writtenLsn : this.#log.readableLsn)) await this.#pause();
          next = chunks.next();
        }
      }
    } finally {
      // The read-ahead's outcome no longer matters. One waiting for WAL ends with the abort
      // signal; one that already read its chunk waits at its yield, holding the segment file
      // open, until the reader is ended (which closes the file). No read-ahead: the reader is ended now.
      if (next === null) void chunks.return?.(undefined)?.catch(() => undefined);
      else void next.then(() => chunks.return?.(undefined)).catch(() => undefined);
    }
  }

  /** The streamed timeline (0 in the options: the log's timeline when streaming starts). */
  get #timeline(): number {
    if (this.#options.timeline === 0) this.#options.timeline = this.#log.timeline;
    return this.#options.timeline;
  }

  /** Where the streamed timeline ended, once everything up to its switch point was sent; null while it goes on. */
  #timelineEnd(): EndOfTimeline | null {
    const history = this.#log.history;
    const switchLsn = switchPointOf(history, this.#timeline);
    if (switchLsn === null || switchLsn === undefined || this.#sentLsn < switchLsn) return null;
    const index = history.entries.findIndex((e) => e.timeline === this.#timeline);
    return { nextTimeline: history.entries[index + 1]?.timeline ?? history.timeline, switchLsn };
  }

  /** Reads the standby's messages until it terminates or the connection ends. */
  async #listen(): Promise<void> {
    const signal = this.#abort.signal;
    // One abort listener for the whole loop, not one per message: reports come several per commit.
    const onAbort = (): void => this.#conn.interrupt(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        if (signal.aborted) throw abortError(signal);
        const message = await this.#conn.next();
        const replyTime = currentScheduler().now();
        this.#lastHeard = replyTime;
        if (message === null || message.kind === 'terminate') return;
        if (message.kind === 'standbyStatusUpdate') {
          const { writeLsn, flushLsn, applyLsn } = message;
          this.#progress = { writeLsn, flushLsn, applyLsn, replyTime };
          const { writeLagMs, flushLagMs, replayLagMs } = this.#lag.reported(writeLsn, flushLsn, applyLsn, this.#sentLsn, replyTime);
          this.emitSafely('standby:progress', { writeLsn, flushLsn, applyLsn, replyTime, writeLagMs, flushLagMs, replayLagMs });
          if (message.replyRequested) this.#keepalive(false);
        } else if (message.kind !== 'hotStandbyFeedback') {
          throw new WalshipError('PROTOCOL_ERROR', `unexpected ${message.kind} message while streaming`);
        }
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  #heartbeat(): void {
    const silent = currentScheduler().now() - this.#lastHeard;
    if (silent >= this.#options.walSenderTimeoutMs) {
      this.#debug.error('terminating walsender: no reply from the standby for %d ms', silent);
      this.#timedOut = new WalshipError('TIMEOUT', `terminating walsender process due to replication timeout (${silent} ms)`, { transient: true });
      this.#conn.fail(this.#timedOut);
      this.#abort.abort();
    } else if (silent >= this.#options.walSenderTimeoutMs / 2) {
      this.#keepalive(true);
    }
  }

  #keepalive(replyRequested: boolean): void {
    const walEnd = this.#log.readableLsn;
    this.#toldDurable = walEnd;
    this.#lastSentAt = currentScheduler().monotonic();
    const keepalive: KeepaliveMessage = { kind: 'keepalive', walEnd, sendTime: nowMicros(), replyRequested };
    const asked = this.#flushRequest();
    if (asked === null) this.#conn.send(keepalive);
    else this.#conn.sendBoth(asked, keepalive);
  }

  /**
   * Sends a `flushRequest` now when what commits wait for from this standby moved (it became a
   * `sync` or `quorum` member, say, after their WAL was sent): they need not wait for its next
   * message, or its paced flush. Does nothing for a standby that is not asked, or before
   * streaming starts.
   */
  askNow(): void {
    if (this.#state === 'startup' || this.#conn.failure !== null || this.#abort.signal.aborted) return;
    const asked = this.#flushRequest();
    if (asked !== null) this.#conn.send(asked);
    // A standby commits now need is not paced: what its pace held goes now.
    if (!this.#paced()) this.#hurry();
  }

  /**
   * Whether WAL and the durable end wait for the standby's pace now: it flushes on request
   * (`sendPaceMs`), streams (not in catch-up, not stopping), and is not asked (`needed`).
   */
  #paced(): boolean {
    return this.#options.sendPaceMs > 0 && this.#state === 'streaming' && !this.#options.needed();
  }

  /**
   * Waits until `sendPaceMs` after the last message, or until {@link #hurry} or the abort. Not
   * at all when the standby is no longer paced: {@link askNow} or `finish()` may have come while
   * the last send waited for the socket to drain, before there was a pause to end.
   */
  #pause(): Promise<void> {
    const waitMs = this.#lastSentAt + this.#options.sendPaceMs - currentScheduler().monotonic();
    if (waitMs <= 0 || this.#abort.signal.aborted || !this.#paced()) return Promise.resolve();
    return new Promise((resolve) => {
      const signal = this.#abort.signal;
      const wake = (): void => {
        clearTimer(timer);
        signal.removeEventListener('abort', wake);
        this.#wakePause = null;
        resolve();
      };
      const timer = currentScheduler().setTimeout(wake, waitMs);
      signal.addEventListener('abort', wake, { once: true });
      this.#wakePause = wake;
    });
  }

  /** Early sending to a paced standby: the durable end goes with its next message, or on its own at the pace. */
  #tellDurableAtPace(): void {
    if (this.#durableTimer !== null) return;
    const waitMs = Math.max(0, this.#lastSentAt + this.#options.sendPaceMs - currentScheduler().monotonic());
    this.#durableTimer = currentScheduler().setTimeout(() => {
      this.#durableTimer = null;
      if (this.#durableNews()) this.#keepalive(false);
    }, waitMs);
  }

  /** Whether the standby has WAL past the durable end it was told, and there is more durable to tell (a `walData` may have told it meanwhile). */
  #durableNews(): boolean {
    return this.#sentLsn > this.#toldDurable && this.#log.readableLsn > this.#toldDurable && this.#conn.failure === null && !this.#abort.signal.aborted;
  }

  /** Ends the pace's waits: the WAL it held, and the durable end, go now. */
  #hurry(): void {
    this.#wakePause?.();
    if (this.#durableTimer === null) return;
    clearTimer(this.#durableTimer);
    this.#durableTimer = null;
    if (this.#durableNews()) this.#keepalive(false);
  }

  /** The request for the position commits now wait for, when it moved since the last one (the first always goes); null otherwise. */
  #flushRequest(): FlushRequestMessage | null {
    const wanted = this.#options.wanted;
    if (wanted === null) return null;
    const flushLsn = wanted('flush');
    // A flush writes too: the write asked for is never behind the flush.
    const writeLsn = Math.max(wanted('write'), flushLsn);
    if (writeLsn <= this.#askedWrite && flushLsn <= this.#askedFlush) return null;
    this.#askedWrite = Math.max(writeLsn, this.#askedWrite);
    this.#askedFlush = Math.max(flushLsn, this.#askedFlush);
    return { kind: 'flushRequest', writeLsn: this.#askedWrite, flushLsn: this.#askedFlush };
  }

  #setState(state: WalSenderState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.emitSafely('state:change', { state });
  }
}

/** Microseconds since the Unix epoch, the protocol's time unit. */
export function nowMicros(): number {
  const scheduler = currentScheduler();
  // Microseconds, as PostgreSQL's messages carry; virtual time has only its own clock.
  return scheduler.virtual ? scheduler.now() * 1000 : Math.round((performance.timeOrigin + performance.now()) * 1000);
}
