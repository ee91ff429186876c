import { EventEmitter } from 'eventemitter3';
import { WalshipError, isWalshipError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { MessageStream } from '../protocol/message-stream.js';
import type { WalLog } from '../wal/wal-log.js';
import { nowMicros } from './wal-sender.js';

/** Received WAL not yet durable beyond which the receiver stops reading, until half of it is. */
const MAX_UNFLUSHED_BYTES = 32 * 1024 * 1024;

/** Options of {@link WalReceiver}. */
export interface WalReceiverOptions {
  /** Report progress at least this often, as `wal_receiver_status_interval`. @defaultValue 10 000 */
  readonly statusIntervalMs?: number;
  /** The replication slot to stream from; none by default. */
  readonly slotName?: string;
  /** The position the application has applied, reported as the apply LSN. @defaultValue the flushed position */
  readonly appliedLsn?: () => Lsn;
  readonly logPrefix?: string;
}

/** Events of a {@link WalReceiver}. */
export interface WalReceiverEvents {
  /** New WAL is durable in the local log. */
  'wal:flushed': (event: { readonly flushLsn: Lsn }) => void;
}

/**
 * Receives WAL from a primary (or a cascading standby) into a replica {@link WalLog}: asks to
 * stream from the log's own end, writes every `walData` at its LSN, makes it durable, and
 * reports write, flush and apply positions after each flush, every `statusIntervalMs`, and
 * whenever the sender asks. WAL that does not continue exactly where the log ends is a
 * protocol error: nothing is ever written out of place. While more than 32 MiB of received
 * WAL is not yet durable it stops reading, so a slow disk holds the sender back instead of
 * filling memory.
 */
export class WalReceiver extends EventEmitter<WalReceiverEvents> {
  readonly #conn: MessageStream<'client'>;
  readonly #log: WalLog;
  readonly #options: WalReceiverOptions & { statusIntervalMs: number };
  readonly #debug: Logger;
  #done: Promise<void> | null = null;
  #stopped = false;

  constructor(conn: MessageStream<'client'>, log: WalLog, options: WalReceiverOptions = {}) {
    super();
    if (log.role !== 'replica') throw new WalshipError('INVALID_ARGUMENT', 'a WalReceiver writes into a replica log');
    this.#conn = conn;
    this.#log = log;
    this.#options = { statusIntervalMs: 10_000, ...options };
    this.#debug = createLogger('standby:receiver', options.logPrefix);
  }

  /** Streams until the connection ends or {@link stop}; rejects with the connection's error. */
  run(): Promise<void> {
    this.#done ??= this.#run();
    return this.#done;
  }

  /** Tells the sender we are done and ends the connection. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#conn.send({ kind: 'terminate' });
    await this.#conn.end().catch(() => undefined);
    await this.#done?.catch(() => undefined);
  }

  async #run(): Promise<void> {
    const log = this.#log;
    this.#conn.send({ kind: 'startReplication', slotName: this.#options.slotName ?? '', startLsn: log.insertLsn, timeline: log.timeline });
    const started = await this.#conn.next();
    if (started === null) throw new WalshipError('CONNECTION_FAILED', 'the sender closed the connection before streaming', { transient: true });
    if (started.kind === 'error') throw new WalshipError(started.code, started.message);
    if (started.kind !== 'replicationStarted') throw new WalshipError('PROTOCOL_ERROR', `unexpected ${started.kind} message; expected replicationStarted`);
    const status = setInterval(() => this.#report(false), this.#options.statusIntervalMs);
    let flushing: Promise<void> | null = null;
    const flushDone = (): void => {
      flushing = null;
    };
    try {
      for (;;) {
        const message = await this.#conn.next();
        if (message === null) return;
        if (message.kind === 'walData') {
          if (message.startLsn !== log.insertLsn) {
            throw new WalshipError('PROTOCOL_ERROR', `WAL data starts at ${formatLsn(message.startLsn)}, but the log continues at ${formatLsn(log.insertLsn)}`);
          }
          log.writeBytes(message.startLsn, message.data);
          flushing ??= this.#flushAll().finally(flushDone);
          // Bounded memory: stop reading (TCP then holds the sender back) while too much of
          // the received WAL is not durable yet.
          if (log.insertLsn - log.flushedLsn > MAX_UNFLUSHED_BYTES) await log.waitForFlush(log.insertLsn - MAX_UNFLUSHED_BYTES / 2);
        } else if (message.kind === 'keepalive') {
          if (message.replyRequested) this.#report(false);
        } else if (message.kind === 'error') {
          throw new WalshipError(message.code, message.message);
        } else if (message.kind !== 'endOfTimeline') {
          throw new WalshipError('PROTOCOL_ERROR', `unexpected ${message.kind} message while streaming`);
        } else {
          return;
        }
      }
    } catch (err) {
      if (this.#stopped) return;
      const error = isWalshipError(err) ? err : new WalshipError('CONNECTION_FAILED', String(err), { cause: err });
      this.#debug.error('receiver stopped: %s', error.message);
      this.#conn.destroy();
      throw error;
    } finally {
      clearInterval(status);
      await (flushing as Promise<void> | null)?.catch(() => undefined);
    }
  }

  /**
   * Flushes until everything written is durable, reporting after each flush: one flush at a
   * time, and WAL that arrives meanwhile joins the next one.
   */
  async #flushAll(): Promise<void> {
    try {
      while (this.#log.flushedLsn < this.#log.insertLsn) {
        const flushLsn = await this.#log.flush();
        this.#report(false);
        this.#safeEmit('wal:flushed', { flushLsn });
      }
    } catch (err) {
      this.#conn.fail(isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err }));
    }
  }

  #report(replyRequested: boolean): void {
    const flushLsn = this.#log.flushedLsn;
    this.#conn.send({
      kind: 'standbyStatusUpdate',
      writeLsn: this.#log.writtenLsn,
      flushLsn,
      applyLsn: this.#options.appliedLsn?.() ?? flushLsn,
      sendTime: nowMicros(),
      replyRequested,
    });
  }

  #safeEmit<E extends keyof WalReceiverEvents>(event: E, payload: Parameters<WalReceiverEvents[E]>[0]): void {
    try {
      (this.emit as (event: E, payload: unknown) => boolean)(event, payload);
    } catch (err) {
      this.#debug.error('a %s listener threw: %s', event, (err as Error).message);
    }
  }
}
