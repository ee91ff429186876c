import { WalshipError, isWalshipError } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { createLogger, type Logger } from '../logger.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { MessageStream } from '../protocol/message-stream.js';
import type { WalLog } from '../wal/wal-log.js';
import { streamStart } from './early-wal.js';
import { FlushPacing } from './flush-requests.js';
import { historyCheckOf } from './history-check.js';
import { SendTimes } from './send-times.js';
import { nowMicros } from './wal-sender.js';
import { clearTimer, currentScheduler, type SchedulerTimer } from '../scheduler.js';

/** Received WAL not yet durable beyond which the receiver stops reading, until half of it is. */
const MAX_UNFLUSHED_BYTES = 32 * 1024 * 1024;
/** The flush of early WAL (see {@link WalReceiver}'s flush rounds): one object, not one per flush. */
const BACKGROUND = Object.freeze({ background: true });

/** Options of {@link WalReceiver}. */
export interface WalReceiverOptions {
  /** Report progress at least this often, as `wal_receiver_status_interval`. @defaultValue 10 000 */
  readonly statusIntervalMs?: number;
  /**
   * `wal_receiver_timeout`: after half of it without any message from the sender, ask it for
   * a reply (a status update with `replyRequested`, which it answers with a keepalive); after
   * all of it, end the connection with a transient `TIMEOUT`. 0 disables. @defaultValue 60 000
   */
  readonly receiverTimeoutMs?: number;
  /** The replication slot to stream from; none by default. */
  readonly slotName?: string;
  /** The position the application has applied, reported as the apply LSN. @defaultValue the flushed position */
  readonly appliedLsn?: () => Lsn;
  /**
   * Where to remember the sender's send time of each WAL message received. Pass one that
   * outlives the connection (a standby keeps one across reconnects). @defaultValue a new one
   */
  readonly sendTimes?: SendTimes;
  /**
   * Where the log begins to hold the upstream's bytes (a standby bootstrapped from a base
   * backup holds none before the backup's position): the lineage check sent with
   * START_REPLICATION compares only bytes from here on. @defaultValue 0
   */
  readonly historyFrom?: Lsn;
  /**
   * Runs once the sender has accepted START_REPLICATION and before any WAL is written: a
   * standby records there that its directory is a standby's, so that no upstream WAL ever
   * lands in a directory that still says otherwise. A rejection ends the receiver with it.
   */
  readonly beforeStreaming?: (event: { readonly startLsn: Lsn; readonly historyChecked: boolean }) => Promise<void>;
  /**
   * The sender ended the streamed timeline at `switchLsn` (everything before it is received and
   * flushed): the standby moves its log onto `nextTimeline` (fetching its history over the
   * connection) and resolves true to stream it on the same connection, or false to end the
   * receiver. Without it the receiver ends there.
   */
  readonly onEndOfTimeline?: (event: { readonly nextTimeline: number; readonly switchLsn: Lsn }) => Promise<boolean>;
  /**
   * The standby accepts early WAL (see `early-wal.ts`): the log's readers are bounded by the
   * durable end the sender reports, and each start is at that bound, the tail past it compared with what arrives.
   * Without it the bound is set only if a sender ships WAL past its durable end anyway.
   * @defaultValue false
   */
  readonly acceptEarlyWal?: boolean;
  /**
   * When the sender asks for the flushes commits wait for (see `flush-requests.ts`; the
   * standby said it flushes on request), WAL nobody asked for is made durable at most this
   * often: at once when the last flush is older, else when it is. 0 flushes every message at
   * once, as without requests. @defaultValue 0
   */
  readonly flushDelayMs?: number;
  readonly logPrefix?: string;
}

/** Events of a {@link WalReceiver}. */
export interface WalReceiverEvents {
  /**
   * The sender accepted START_REPLICATION: streaming has begun. `historyChecked`: the sender
   * compared this log's last bytes with its own, and they are the same history.
   */
  'streaming:started': (event: { readonly startLsn: Lsn; readonly historyChecked: boolean }) => void;
  /** New WAL is durable in the local log. */
  'wal:flushed': (event: { readonly flushLsn: Lsn }) => void;
}

/**
 * Receives WAL from a primary (or a cascading standby) into a replica {@link WalLog}: asks to
 * stream from the log's own end, writes every `walData` at its LSN, makes it durable (at once,
 * or paced with `flushDelayMs`: see `flush-requests.ts`), and
 * reports write, flush and apply positions as soon as streaming starts, after each write or
 * flush that moved the write or flush position, every `statusIntervalMs`, whenever the sender
 * asks, and when told to ({@link reportNow}). A sender silent for
 * `receiverTimeoutMs` ends the connection (`TIMEOUT`), after one request for a reply at half
 * of it, as PostgreSQL's walreceiver does. WAL that does not continue exactly where the log ends is a
 * protocol error: nothing is ever written out of place. While more than 32 MiB of received
 * WAL is not yet durable it stops reading, so a slow disk holds the sender back instead of
 * filling memory.
 */
export class WalReceiver extends SafeEmitter<WalReceiverEvents> {
  readonly #conn: MessageStream<'client'>;
  readonly #log: WalLog;
  readonly #options: WalReceiverOptions & { statusIntervalMs: number; receiverTimeoutMs: number };
  readonly #debug: Logger;
  readonly #sendTimes: SendTimes;
  #done: Promise<void> | null = null;
  #stopped = false;
  /** The write position last reported: a report on each write only when it moved. */
  #reportedWriteLsn: Lsn = -1;
  /** Whether the sender has started streaming (status updates are only valid then). */
  #streaming = false;
  /** Whether the receiver is waiting for the sender (not busy with its own disk). */
  #reading = false;
  /** When the sender was last heard from, or the receiver last began to wait for it (ms). */
  #lastHeard = 0;
  /** Whether a reply was requested in the current silence. */
  #pinged = false;
  /** The flush round in progress, if any (see {@link #flushAll}). */
  #flushing: Promise<void> | null = null;
  /** The flush position last reported: a confirmation of the durable end reports when it moves it. */
  #reportedFlushLsn: Lsn = -1;
  /**
   * Early WAL: streaming started at the log's bound, before its end; the WAL up to here that
   * the log already holds is compared with what arrives, not written (see {@link #compare}).
   */
  #compareUntil: Lsn = -1;
  /** When received WAL is flushed: at once, or paced while the sender asks for what commits wait for. */
  readonly #pacing: FlushPacing;
  /** The paced flush due next, if one waits. */
  #flushTimer: SchedulerTimer | null = null;
  /** A flush failed (the connection fails with it): this receiver tries no other. */
  #flushFailed = false;

  constructor(conn: MessageStream<'client'>, log: WalLog, options: WalReceiverOptions = {}) {
    super();
    if (log.role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'a WalReceiver writes into a replica log');
    this.#conn = conn;
    this.#log = log;
    this.#options = { statusIntervalMs: 10_000, receiverTimeoutMs: 60_000, ...options };
    this.#sendTimes = options.sendTimes ?? new SendTimes();
    this.#pacing = new FlushPacing(options.flushDelayMs ?? 0);
    this.#debug = createLogger('standby:receiver', options.logPrefix);
    this.emitterLog = this.#debug;
  }

  /** The send times of the WAL received (see {@link SendTimes}). */
  get sendTimes(): SendTimes {
    return this.#sendTimes;
  }

  /**
   * Sends a status update now (write, flush and apply positions), e.g. once the application
   * has applied everything flushed, so the sender learns the apply position without waiting
   * for the next `statusIntervalMs`. Does nothing before streaming starts or after it ended.
   */
  reportNow(): void {
    if (this.#streaming && !this.#stopped) this.#report(false);
  }

  /** Streams until the connection ends or {@link stop}; rejects with the connection's error. */
  run(): Promise<void> {
    this.#done ??= this.#run();
    return this.#done;
  }

  /**
   * Tells the sender we are done and ends the connection; resolves once it has closed and the
   * receiver wrote its last bytes. With `waitForClose: false` the connection is destroyed and
   * only the receiver is waited for (a promotion: nothing more from upstream is written, and
   * the socket's close need not hold it up).
   */
  async stop(options: { waitForClose?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    if (options.waitForClose === false) {
      this.#conn.destroy({ closeSoon: true });
    } else {
      this.#conn.send({ kind: 'terminate' });
      await this.#conn.end().catch(() => undefined);
    }
    await this.#done?.catch(() => undefined);
  }

  async #run(): Promise<void> {
    const log = this.#log;
    const timeoutMs = this.#options.receiverTimeoutMs;
    // One periodic check of the sender's silence (not a timer per message).
    const watchdog = timeoutMs > 0 ? currentScheduler().setInterval(() => this.#checkTimeout(), Math.max(10, Math.floor(timeoutMs / 4))) : undefined;
    let status: SchedulerTimer | undefined;
    // Written (not yet flushed) WAL is reported as soon as the log announces it, while its fdatasync runs,
    // as PostgreSQL's walreceiver does: commits waiting with remote_write need not wait for that fdatasync.
    // (Early WAL past the sender's durable end is reported once the sender says it is durable: #confirm.)
    const onWrite = (): void => {
      if (this.#streaming && !this.#stopped && this.#writeToReport() > this.#reportedWriteLsn) this.#report(false);
    };
    log.on('write', onWrite);
    // A write the log dropped (ENOSPC) may be one no flush waits for (asked to be written, or
    // paced): the stream ends, and the next one starts again from the log's end.
    const onLogError = ({ error }: { readonly error: WalshipError }): void => this.#conn.fail(error);
    log.on('error', onLogError);
    try {
      await this.#startStreaming();
      status = currentScheduler().setInterval(() => this.#report(false), this.#options.statusIntervalMs);
      for (;;) {
        const message = await this.#receive();
        if (message === null) return;
        if (message.kind === 'walData') {
          // Stopped: nothing more is written, whatever was already on its way.
          if (this.#stopped) return;
          const { startLsn, data } = this.#compareUntil > message.startLsn ? await this.#compare(message.startLsn, message.data) : message;
          if (this.#stopped) return;
          if (data.length === 0) {
            this.#confirm(message.walEnd);
            continue;
          }
          if (startLsn !== log.insertLsn) {
            throw new WalshipError('PROTOCOL_ERROR', `WAL data starts at ${formatLsn(startLsn)}, but the log continues at ${formatLsn(log.insertLsn)}`);
          }
          const end = startLsn + data.length;
          // WAL past the sender's durable end: held back from readers until it says more is
          // durable (a sender this standby did not ask for early WAL bounds it too).
          if (end > message.walEnd && log.upstreamDurableLsn === null) log.boundUpstreamDurable(Math.max(message.walEnd, startLsn));
          log.writeBytes(startLsn, data);
          this.#confirm(message.walEnd);
          this.#sendTimes.record(startLsn, end, message.sendTime);
          this.#writeIfRequested();
          this.#startFlushing();
          // Bounded memory: stop reading (TCP then holds the sender back) while too much of
          // the received WAL is not durable yet.
          if (log.insertLsn - log.flushedLsn > MAX_UNFLUSHED_BYTES) await log.waitForFlush(log.insertLsn - MAX_UNFLUSHED_BYTES / 2);
        } else if (message.kind === 'keepalive') {
          this.#confirm(message.walEnd);
          if (message.replyRequested) this.#report(false);
        } else if (message.kind === 'flushRequest') {
          // A request comes ahead of the WAL it asks for, which the walData that follows brings
          // (and starts the write or flush); one for WAL already here acts now.
          this.#pacing.request(message.writeLsn, message.flushLsn);
          this.#writeIfRequested();
          if (message.flushLsn <= log.insertLsn) this.#startFlushing();
        } else if (message.kind === 'error') {
          throw new WalshipError(message.code, message.message);
        } else if (message.kind !== 'endOfTimeline') {
          throw new WalshipError('PROTOCOL_ERROR', `unexpected ${message.kind} message while streaming`);
        } else {
          if (this.#stopped || !(await this.#endOfTimeline(message.nextTimeline, message.switchLsn))) return;
          await this.#startStreaming();
        }
      }
    } catch (err) {
      if (this.#stopped) return;
      const error = isWalshipError(err) ? err : new WalshipError('CONNECTION_FAILED', String(err), { cause: err });
      this.#debug.error('receiver stopped: %s', error.message);
      this.#conn.destroy();
      throw error;
    } finally {
      log.off('write', onWrite);
      log.off('error', onLogError);
      this.#streaming = false;
      clearTimer(watchdog);
      clearTimer(status);
      // Nothing received stays waiting for a paced flush: a promotion, say, applies it next.
      clearTimer(this.#flushTimer);
      this.#flushTimer = null;
      this.#pacing.reset();
      if (!this.#flushFailed) this.#startFlushing();
      await this.#flushing?.catch(() => undefined);
    }
  }

  /**
   * START_REPLICATION on the log's timeline from its end, with the lineage check of its last
   * bytes; resolves once the sender has started streaming.
   */
  async #startStreaming(): Promise<void> {
    const log = this.#log;
    // The lineage check covers only durable bytes: the start must be durable too.
    if (log.flushedLsn < log.insertLsn) await log.flush();
    // WAL past what the primary said is durable may be lost there, and other WAL written at its
    // positions after a restart: streaming starts at the bound, and what the log holds past it
    // is compared with what arrives, cut at the first byte that differs (a Raft follower's
    // truncation at the first conflicting entry). Cut before, it could take with it WAL this
    // standby confirmed in an earlier life, which a promotion meanwhile must keep.
    const bound = log.upstreamDurableLsn;
    const startLsn = streamStart(log);
    this.#compareUntil = log.insertLsn;
    const check = await historyCheckOf(log, startLsn, this.#options.historyFrom ?? 0);
    this.#conn.send({ kind: 'startReplication', slotName: this.#options.slotName ?? '', startLsn, timeline: log.timeline, ...check });
    const started = await this.#receive();
    if (started === null) throw new WalshipError('CONNECTION_FAILED', 'the sender closed the connection before streaming', { transient: true });
    if (started.kind === 'error') throw new WalshipError(started.code, started.message);
    if (started.kind !== 'replicationStarted') throw new WalshipError('PROTOCOL_ERROR', `unexpected ${started.kind} message; expected replicationStarted`);
    await this.#options.beforeStreaming?.({ startLsn: started.startLsn, historyChecked: started.historyChecked });
    // Everything before the start is the sender's durable WAL (it refuses a start past its
    // durable end); what follows is bounded until the sender says it is durable.
    if (this.#options.acceptEarlyWal === true || bound !== null) log.boundUpstreamDurable(startLsn);
    // A new sender: it says again whether it asks for flushes.
    this.#pacing.reset();
    this.#streaming = true;
    this.emitSafely('streaming:started', { startLsn: started.startLsn, historyChecked: started.historyChecked });
    // A first report at once, as PostgreSQL's walreceiver sends its initial reply: with nothing
    // to receive, the sender would otherwise know none of our positions (and a synchronous
    // standby would show as async) until statusIntervalMs.
    this.#report(false);
  }

  /**
   * The streamed timeline ended at `switchLsn`: once everything received is durable (and ends
   * exactly there), the standby moves onto `nextTimeline`. Resolves whether to stream it.
   */
  async #endOfTimeline(nextTimeline: number, switchLsn: Lsn): Promise<boolean> {
    const log = this.#log;
    this.#streaming = false;
    await this.#flushing?.catch(() => undefined);
    if (log.flushedLsn < log.insertLsn) await log.flush();
    if (log.insertLsn !== switchLsn || nextTimeline <= log.timeline) {
      throw new WalshipError('PROTOCOL_ERROR', `timeline ${log.timeline} ended at ${formatLsn(switchLsn)} (next: ${nextTimeline}), but this log ends at ${formatLsn(log.insertLsn)}`);
    }
    this.#report(false);
    this.#debug('timeline %d ended at %s; timeline %d follows', log.timeline, formatLsn(switchLsn), nextTimeline);
    return (await this.#options.onEndOfTimeline?.({ nextTimeline, switchLsn })) ?? false;
  }

  /** The next message from the sender; the silence watchdog counts only while we wait here. */
  async #receive(): ReturnType<MessageStream<'client'>['next']> {
    this.#lastHeard = currentScheduler().now();
    this.#reading = true;
    try {
      const message = await this.#conn.next();
      this.#lastHeard = currentScheduler().now();
      this.#pinged = false;
      return message;
    } finally {
      this.#reading = false;
    }
  }

  /**
   * The watchdog: the sender has been silent for half the timeout, ask it for a reply; for
   * all of it, end the connection. Time the receiver spends on its own disk (not reading)
   * is not the sender's silence.
   */
  #checkTimeout(): void {
    if (!this.#reading) return;
    const silent = currentScheduler().now() - this.#lastHeard;
    const timeoutMs = this.#options.receiverTimeoutMs;
    if (silent >= timeoutMs) {
      this.#debug.error('terminating walreceiver due to timeout: nothing from the sender for %d ms', silent);
      this.#conn.fail(new WalshipError('TIMEOUT', `terminating walreceiver due to timeout: nothing from the sender for ${silent} ms (receiverTimeoutMs ${timeoutMs})`, { transient: true }));
    } else if (silent >= timeoutMs / 2 && !this.#pinged && this.#streaming) {
      this.#pinged = true;
      this.#report(true);
    }
  }

  /** WAL a `remote_write` commit waits for goes to the OS at once, whether or not its flush waits (see `FlushPacing`). */
  #writeIfRequested(): void {
    const log = this.#log;
    if (this.#pacing.writeRequested > log.writtenLsn && log.insertLsn > log.writtenLsn) log.writeSoon(this.#pacing.writeRequested);
  }

  /**
   * Starts {@link #flushAll} unless it runs already or there is nothing to flush; a flush the
   * pacing holds back is started by a timer instead (one at a time).
   */
  #startFlushing(): void {
    if (this.#flushing !== null || this.#log.flushedLsn >= this.#log.insertLsn) return;
    const waitMs = this.#pacing.waitMs(this.#log.flushedLsn, currentScheduler().monotonic());
    if (waitMs === 0) {
      clearTimer(this.#flushTimer);
      this.#flushTimer = null;
      this.#flushing = this.#flushAll();
    } else {
      this.#flushTimer ??= currentScheduler().setTimeout(() => {
        this.#flushTimer = null;
        this.#startFlushing();
      }, waitMs);
    }
  }

  /**
   * Flushes until everything written is durable, reporting after each flush that moved a
   * reported position: one flush at a time, and WAL that arrives meanwhile joins the next one. It clears {@link #flushing} in the
   * same turn as its last check: WAL handed over after that check starts a new round, and
   * WAL handed over before it is seen by the check (never left written but unflushed).
   */
  async #flushAll(): Promise<void> {
    try {
      // Called only with something to flush: the first await comes before the finally below.
      // WAL that arrived during a flush joins the next one, unless the pacing holds it back.
      while (this.#log.flushedLsn < this.#log.insertLsn && this.#pacing.waitMs(this.#log.flushedLsn, currentScheduler().monotonic()) === 0) {
        this.#pacing.flushing(currentScheduler().monotonic());
        // Early WAL past the durable end the sender told: this sync alone confirms nothing,
        // the sender's next word does. So it is not an urgent one: with commitSync 'inline'
        // it would hold the event loop, that word, and the write report it sends at once.
        const early = this.#log.insertLsn > (this.#log.upstreamDurableLsn ?? Number.MAX_SAFE_INTEGER);
        const flushLsn = await this.#log.flush(early ? BACKGROUND : {});
        // With early WAL the flush is often past what the sender said is durable, and reports
        // nothing new; the sender's next word on its durable end then sends one (see #confirm).
        this.#reportIfMoved();
        this.emitSafely('wal:flushed', { flushLsn });
      }
    } catch (err) {
      this.#flushFailed = true;
      this.#conn.fail(isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err }));
    } finally {
      this.#flushing = null;
    }
    // Held back by the pacing: its timer starts the next round.
    if (!this.#flushFailed) this.#startFlushing();
  }

  /**
   * Early WAL: the part of `data` (WAL from `startLsn`) that this log already holds is compared
   * with it. The same bytes are skipped; at the first byte that differs the log is cut back
   * (the rest of its tail is WAL the primary lost and wrote over). Resolves with what is left
   * to write, from the log's end.
   */
  async #compare(startLsn: Lsn, data: Uint8Array): Promise<{ startLsn: Lsn; data: Uint8Array }> {
    const log = this.#log;
    const length = Math.min(data.length, this.#compareUntil - startLsn);
    let at = 0;
    for await (const chunk of log.readBytes(startLsn, { maxChunkBytes: length, unflushed: true })) {
      const own = chunk.data.subarray(0, length - at);
      for (let i = 0; i < own.length; i++) {
        if (own[i] === data[at + i]) continue;
        const divergedAt = startLsn + at + i;
        this.#debug('the WAL from %s is not the sender\'s (it was never durable there): cut back', formatLsn(divergedAt));
        await log.cutBack(divergedAt);
        this.#compareUntil = -1;
        return { startLsn: divergedAt, data: data.subarray(at + i) };
      }
      at += own.length;
      if (at >= length) break;
    }
    if (at < length) throw new WalshipError('WAL_IO', `the log's WAL from ${formatLsn(startLsn + at)} could not be read to compare it`);
    if (startLsn + length >= this.#compareUntil) this.#compareUntil = -1;
    return { startLsn: startLsn + length, data: data.subarray(length) };
  }

  /**
   * The sender's durable end: readers may go up to it, and a write or flush it confirms is
   * reported at once (a commit waiting for this standby waits for exactly that).
   */
  #confirm(walEnd: Lsn): void {
    const log = this.#log;
    if (log.upstreamDurableLsn === null) return;
    log.confirmUpstreamDurable(walEnd);
    if (this.#streaming && !this.#stopped) this.#reportIfMoved();
  }

  /** As PostgreSQL's walreceiver without `force`: a report only when its write or flush position moved. */
  #reportIfMoved(): void {
    if (this.#flushToReport() > this.#reportedFlushLsn || this.#writeToReport() > this.#reportedWriteLsn) this.#report(false);
  }

  /**
   * The write position to report. Never past the primary's durable end: a commit is released
   * only once the primary made it durable, and what this standby confirmed survives its
   * promotion.
   */
  #writeToReport(): Lsn {
    return Math.min(this.#log.writtenLsn, this.#log.upstreamDurableLsn ?? Number.MAX_SAFE_INTEGER);
  }

  /** The flush position to report: the durable WAL readers may use, bounded as {@link #writeToReport}. */
  #flushToReport(): Lsn {
    return this.#log.readableLsn;
  }

  #report(replyRequested: boolean): void {
    const flushLsn = this.#flushToReport();
    this.#reportedFlushLsn = flushLsn;
    this.#reportedWriteLsn = this.#writeToReport();
    this.#conn.send({
      kind: 'standbyStatusUpdate',
      writeLsn: this.#reportedWriteLsn,
      flushLsn,
      applyLsn: this.#options.appliedLsn?.() ?? flushLsn,
      sendTime: nowMicros(),
      replyRequested,
    });
  }
}
