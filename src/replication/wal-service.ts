import { senderStateChannel } from '../diagnostics.js';
import { WalshipError, isWalshipError } from '../errors.js';
import { SafeEmitter } from '../events.js';
import { createLogger, type Logger } from '../logger.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { CompiledAuth } from '../protocol/auth-rules.js';
import type { CreateReplicationSlotMessage, DropReplicationSlotMessage, StartReplicationMessage } from '../protocol/messages.js';
import { ReplicationServer, type AuthenticationLimits, type ServerSession } from '../protocol/replication-server.js';
import type { SlotHandle } from '../slots/slot-manager.js';
import type { Transport } from '../transport/transport.js';
import { assertNotRemoved } from '../wal/tail.js';
import { checkMaxRate, sendBaseBackup } from './base-backup-sender.js';
import type { Lags } from './lag-tracker.js';
import type { SyncRep } from './sync-rep.js';
import type { SyncStandbyInput } from './sync-standbys.js';
import { WalSender, type EndOfTimeline, type WalSenderState } from './wal-sender.js';
import { acceptsEarlyWal } from './early-wal.js';
import { flushesOnRequest, sendPaceOf } from './flush-requests.js';
import { switchPointOf } from '../wal/timeline-history.js';
import type { ReplicationStatusRow, SenderStateDiagnostic, StandbyConnectionEvent, WalServiceEvents, WalSource } from './wal-source.js';
import { currentScheduler } from '../scheduler.js';

/** Options of {@link WalService}. */
export interface WalServiceOptions {
  readonly transport: Transport;
  readonly address: string;
  readonly auth: CompiledAuth;
  readonly maxWalSenders: number;
  readonly walSenderTimeoutMs: number;
  readonly maxMessageBytes: number;
  readonly authenticationLimits?: AuthenticationLimits;
  readonly logPrefix?: string;
  /** Synchronous replication: told of every standby report, connect and leave. */
  readonly syncRep?: SyncRep;
  /** Early WAL to standbys that accept it, while the log is a primary's (see `early-wal.ts`). */
  readonly earlySend?: boolean;
}

/** How often DROP_REPLICATION_SLOT … WAIT looks again whether the slot is still in use. */
const DROP_WAIT_POLL_MS = 50;
/** Errors that fail a slot command, not the connection: the standby can go on (PostgreSQL's ERROR). */
const SLOT_COMMAND_ERRORS = new Set([
  'INVALID_SLOT_NAME',
  'SLOT_EXISTS',
  'SLOT_ACTIVE',
  'SLOT_NOT_FOUND',
  'SLOT_LIMIT_REACHED',
  'FILE_TOO_LARGE',
  'INVALID_ARGUMENT',
  'WAL_REMOVED',
]);

interface Session {
  readonly info: ServerSession;
  /** The lowest index free when it connected (PostgreSQL's walsender slot): ties between sync standbys go to the lower. */
  readonly index: number;
  readonly started: Date;
  state: WalSenderState | 'backup';
  sender: WalSender | null;
  backup: AbortController | null;
  /** The position of the base backup sent on this connection: the standby streams from there next. */
  backupLsn: Lsn | null;
  /** The replication slot this connection streams with, while it holds it. */
  slot: SlotHandle | null;
}

/**
 * Serves replication connections for a node: authenticates them (through a
 * {@link ReplicationServer}), answers IDENTIFY_SYSTEM and BASE_BACKUP, and runs one
 * {@link WalSender} per standby that starts streaming. `maxWalSenders` bounds the number of
 * connections; the extra one is told so with `TOO_MANY_WAL_SENDERS`.
 */
export class WalService extends SafeEmitter<WalServiceEvents> {
  readonly #source: WalSource;
  readonly #options: WalServiceOptions;
  readonly #server: ReplicationServer;
  readonly #sessions = new Set<Session>();
  readonly #debug: Logger;
  readonly #running = new Set<Promise<void>>();
  #closing = false;
  /** Synchronous replication, once the node writes (a promoted standby gets it then). */
  #syncRep: SyncRep | undefined;

  constructor(source: WalSource, options: WalServiceOptions) {
    super();
    this.#source = source;
    this.#options = options;
    this.#syncRep = options.syncRep;
    this.#debug = createLogger('service', options.logPrefix);
    this.emitterLog = this.#debug;
    this.#server = new ReplicationServer({
      transport: options.transport,
      address: options.address,
      auth: options.auth,
      ...options.authenticationLimits,
      ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }),
    });
    this.#server.on('session', (session) => this.#accept(session));
  }

  /** The authenticating server, for its `auth:failed` and `connection:error` events. */
  get server(): ReplicationServer {
    return this.#server;
  }

  listen(): Promise<string> {
    return this.#server.listen();
  }

  /** One row per connected standby. */
  status(): ReplicationStatusRow[] {
    const sessions = [...this.#sessions];
    const sync = this.#syncRep?.states(this.syncInputs()) ?? [];
    return sessions.map((s, i) => {
      const progress = s.sender?.progress ?? null;
      const syncStatus = sync[i];
      const lags: Lags = s.sender?.lags ?? { writeLagMs: null, flushLagMs: null, replayLagMs: null };
      return {
        applicationName: s.info.applicationName,
        user: s.info.user,
        clientAddress: s.info.peer.remoteAddress ?? null,
        state: s.state,
        backendStart: s.started,
        sentLsn: s.sender?.sentLsn ?? null,
        timeline: s.sender?.timeline ?? null,
        writeLsn: progress?.writeLsn ?? null,
        flushLsn: progress?.flushLsn ?? null,
        replayLsn: progress?.applyLsn ?? null,
        ...lags,
        syncPriority: syncStatus?.syncPriority ?? 0,
        syncState: syncStatus?.syncState ?? 'async',
        replyTime: progress === null ? null : new Date(progress.replyTime),
      };
    });
  }

  /** The connected standbys as synchronous replication sees them, in the order of {@link status}. */
  syncInputs(): SyncStandbyInput[] {
    return [...this.#sessions].map((s) => {
      const progress = s.sender?.progress ?? null;
      // A standby cannot have WAL it was not sent: a report past that counts up to it only; nor
      // past what is durable here (an early sender sends WAL before it is).
      const sent = Math.min(s.sender?.sentLsn ?? 0, this.#source.log.readableLsn);
      const upToSent = (lsn: Lsn | undefined): Lsn | null => (lsn === undefined ? null : Math.min(lsn, sent));
      return {
        slot: s.index,
        applicationName: s.info.applicationName,
        state: s.state,
        writeLsn: upToSent(progress?.writeLsn),
        flushLsn: upToSent(progress?.flushLsn),
        applyLsn: upToSent(progress?.applyLsn),
      };
    });
  }

  /**
   * Starts synchronous replication on a running service (a standby promoted to primary): its
   * connected standbys count for it from now on.
   */
  useSyncRep(syncRep: SyncRep): void {
    this.#syncRep = syncRep;
    this.#syncChanged();
  }

  /** Tells synchronous replication that a standby reported, changed state, came or left. */
  #syncChanged(): void {
    const syncRep = this.#syncRep;
    // Most primaries run without synchronous standbys: no inputs to build on every report.
    if (syncRep === undefined || !syncRep.listening) return;
    if (syncRep.update(this.syncInputs())) this.askAgain();
  }

  /**
   * The standbys asked for what commits wait for changed (see `SyncRep.update`, `reload`): a
   * newly asked one may hold WAL a commit waits for, or its sender may hold WAL for its pace,
   * so every sender asks now, not with its next message.
   */
  askAgain(): void {
    for (const session of this.#sessions) session.sender?.askNow();
  }

  /**
   * The oldest WAL a connected standby still needs, or null when none needs any: for each
   * streaming standby the position it last reported flushed (before its first report, where it
   * asked to start), and for each connection that took a base backup the backup's position.
   */
  retainedLsn(): Lsn | null {
    let oldest: Lsn | null = null;
    for (const s of this.#sessions) {
      // A connection whose slot was invalidated is being terminated: it holds nothing.
      if (s.slot !== null && s.slot.invalidationReason !== null) continue;
      for (const lsn of [s.backupLsn, s.sender === null ? null : (s.sender.progress?.flushLsn ?? s.sender.startLsn)]) {
        if (lsn !== null && (oldest === null || lsn < oldest)) oldest = lsn;
      }
    }
    return oldest;
  }

  /**
   * Ends the connection streaming with replication slot `slotName`, if one does, telling the
   * standby `error` (used when the slot was invalidated, so that the slot is released).
   * Returns whether a connection was ended.
   */
  terminateSlotHolder(slotName: string, error: WalshipError): boolean {
    let ended = false;
    for (const s of this.#sessions) {
      if (s.slot?.slotName !== slotName || s.slot.released) continue;
      this.#debug.error('terminating the sender of %s: %s', s.info.applicationName, error.message);
      s.info.conn.fail(error);
      ended = true;
    }
    return ended;
  }

  /** Ends every connection, telling each standby `error` (the node is letting go of its WAL). */
  terminateAll(error: WalshipError): void {
    for (const s of this.#sessions) {
      s.backup?.abort();
      s.info.conn.fail(error);
    }
  }

  /**
   * Fast shutdown: stops accepting connections, lets every streaming standby receive WAL up
   * to `endLsn` (waiting at most `timeoutMs` for each to confirm it flushed), and ends every
   * other connection. A failure to stop listening is thrown after all of that.
   */
  async close(endLsn: Lsn, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    this.#closing = true;
    let error: unknown = null;
    await this.#server.close().catch((err: unknown) => {
      error = err;
      this.#debug.error('closing the listener: %s', (err as Error).message);
    });
    await Promise.all(
      [...this.#sessions].map(async (s) => {
        s.backup?.abort();
        if (s.sender !== null) await s.sender.finish(endLsn, timeoutMs, signal);
        else s.info.conn.destroy();
      }),
    );
    await Promise.all([...this.#running]);
    if (error !== null) throw error;
  }

  #accept(info: ServerSession): void {
    const event = { applicationName: info.applicationName, clientAddress: info.peer.remoteAddress ?? null };
    if (this.#closing) return info.conn.destroy();
    if (this.#sessions.size >= this.#options.maxWalSenders) {
      const error = new WalshipError(
        'TOO_MANY_WAL_SENDERS',
        `number of requested standby connections exceeds maxWalSenders (currently ${this.#options.maxWalSenders})`,
        { transient: true },
      );
      this.#debug.error('refused %s (%s): %s', info.applicationName, info.peer.description, error.message);
      info.conn.fail(error);
      this.emitSafely('standby:refused', { ...event, error });
      return;
    }
    const session: Session = { info, index: this.#freeIndex(), started: new Date(currentScheduler().now()), state: 'startup', sender: null, backup: null, backupLsn: null, slot: null };
    this.#sessions.add(session);
    this.emitSafely('standby:connected', event);
    const running = this.#serve(session).then(
      () => this.#ended(session, null),
      (err: unknown) => {
        const error = isWalshipError(err) ? err : new WalshipError('CONNECTION_FAILED', String(err), { cause: err });
        // The standby hears why (a node without local state yet, say), not just a closed connection.
        if (info.conn.failure === null) info.conn.fail(error);
        this.#ended(session, error);
      },
    );
    this.#running.add(running);
    void running.finally(() => this.#running.delete(running));
  }

  /** The lowest sender index no connected session has. */
  #freeIndex(): number {
    const taken = new Set([...this.#sessions].map((s) => s.index));
    let index = 0;
    while (taken.has(index)) index++;
    return index;
  }

  #ended(session: Session, error: WalshipError | null): void {
    this.#sessions.delete(session);
    // A synchronous standby that left: the next one takes over at once.
    if (session.sender !== null) this.#syncChanged();
    session.slot?.release();
    session.slot = null;
    session.info.conn.destroy();
    if (error !== null) this.#debug.error('standby %s disconnected: %s', session.info.applicationName, error.message);
    this.emitSafely('standby:disconnected', { applicationName: session.info.applicationName, clientAddress: session.info.peer.remoteAddress ?? null, error });
  }

  /** Answers commands until the standby starts streaming or leaves. */
  async #serve(session: Session): Promise<void> {
    const { conn } = session.info;
    const source = this.#source;
    /** Whether this connection streamed a timeline to its end (its late replies are let through). */
    let streamed = false;
    for (;;) {
      // One command at a time, each answer read by the client before the next command is: a
      // client that sends commands without reading the answers holds one answer here, and
      // the rest of what it sends waits unread in its connection (bounded by the read-ahead).
      await conn.drained({ timeoutMs: this.#options.walSenderTimeoutMs });
      const command = await conn.next({ timeoutMs: this.#options.walSenderTimeoutMs });
      if (command === null || command.kind === 'terminate') return;
      switch (command.kind) {
        case 'identifySystem':
          conn.send({
            kind: 'identifySystemResult',
            systemId: source.systemId,
            timeline: source.log.timeline,
            flushLsn: source.log.readableLsn,
            segmentSize: source.log.segmentSize,
          });
          conn.send({ kind: 'readyForCommand' });
          break;
        case 'timelineHistory':
          await this.#sendTimelineHistory(session, command.timeline);
          conn.send({ kind: 'readyForCommand' });
          break;
        case 'baseBackup':
          await this.#sendBaseBackup(session, command.label, command.maxRate);
          conn.send({ kind: 'readyForCommand' });
          break;
        case 'createReplicationSlot':
        case 'dropReplicationSlot':
          await this.#slotCommand(session, command);
          conn.send({ kind: 'readyForCommand' });
          break;
        case 'startReplication': {
          const ended = await this.#stream(session, command);
          if (ended === null) return;
          // The streamed timeline ended: back to commands (TIMELINE_HISTORY, START_REPLICATION on the next).
          streamed = true;
          conn.send({ kind: 'endOfTimeline', nextTimeline: ended.nextTimeline, switchLsn: ended.switchLsn });
          break;
        }
        // A standby's last replies of a stream that just ended at a timeline's end.
        case 'standbyStatusUpdate':
        case 'hotStandbyFeedback':
          if (streamed) break;
          throw new WalshipError('PROTOCOL_ERROR', `unexpected ${command.kind} message; expected a replication command`);
        // Handshake messages after the handshake.
        case 'startup':
        case 'saslInitialResponse':
        case 'saslResponse':
          throw new WalshipError('PROTOCOL_ERROR', `unexpected ${command.kind} message; expected a replication command`);
      }
    }
  }

  /**
   * START_REPLICATION: streams `timeline` from `startLsn`. For this node's timeline that goes on
   * until the standby leaves or the node moves to a new timeline (a promotion, or a cascading
   * standby following its upstream); for an ancestor it ends at the switch point. Either end
   * of a timeline resolves with the next timeline and the switch point, and the connection
   * goes back to commands; otherwise it resolves with null once the stream is over.
   */
  async #stream(session: Session, command: StartReplicationMessage): Promise<EndOfTimeline | null> {
    const { startLsn, timeline, slotName } = command;
    const { conn, applicationName } = session.info;
    const log = this.#source.log;
    const switchLsn = switchPointOf(log.history, timeline);
    if (switchLsn === undefined) {
      const error = new WalshipError('TIMELINE_MISMATCH', `requested timeline ${timeline} is not in this server's history (it is on timeline ${log.timeline})`);
      conn.fail(error);
      throw error;
    }
    if (switchLsn !== null && startLsn > switchLsn) {
      const error = new WalshipError(
        'TIMELINE_DIVERGED',
        `requested starting point ${formatLsn(startLsn)} on timeline ${timeline} is not in this server's history: it forked from timeline ${timeline} at ${formatLsn(switchLsn)}`,
      );
      conn.fail(error);
      throw error;
    }
    if (slotName !== '') session.slot = this.#acquireSlot(session, slotName, startLsn);
    const sender = new WalSender(conn, log, startLsn, {
      timeline,
      walSenderTimeoutMs: this.#options.walSenderTimeoutMs,
      maxMessageBytes: this.#options.maxMessageBytes,
      historyCheck: { checkFrom: command.checkFrom, checkCrc: command.checkCrc },
      historyFrom: this.#source.historyFrom?.() ?? 0,
      earlySend: this.#options.earlySend === true && log.role === 'primary' && acceptsEarlyWal(session.info.options),
      // Read when sending: a promoted standby's service gets synchronous replication later.
      wanted: flushesOnRequest(session.info.options) ? (what) => this.#syncRep?.wantedBy(session.index, applicationName, what) ?? 0 : null,
      // While it is not asked (not sync, not an asked quorum member), a paced standby takes its WAL at its pace.
      sendPaceMs: sendPaceOf(session.info.options),
      needed: () => this.#syncRep?.asks(session.index, applicationName) ?? false,
      ...(this.#options.logPrefix === undefined ? {} : { logPrefix: `${this.#options.logPrefix} ${applicationName}` }),
    });
    session.sender = sender;
    // From here the sender's start (then the standby's reports) says which WAL it still needs.
    session.backupLsn = null;
    const event = { applicationName, clientAddress: session.info.peer.remoteAddress ?? null };
    const slot = session.slot;
    if (slot !== null) {
      sender.on('standby:progress', ({ flushLsn }) => {
        if (slot.released) return;
        try {
          // Never past what the standby reported flushed, nor past what it was sent, nor past
          // what is durable here (early WAL: the standby may cut back to that).
          slot.advance(Math.min(flushLsn, sender.sentLsn, log.readableLsn));
        } catch (err) {
          // The slot was invalidated under this connection: it must stop streaming.
          const error = isWalshipError(err) ? err : new WalshipError('WAL_REMOVED', String(err), { cause: err });
          conn.fail(error);
        }
      });
    }
    // Every report may release waiting commits.
    sender.on('standby:progress', () => this.#syncChanged());
    sender.on('state:change', ({ state }) => {
      const previous = session.state;
      session.state = state;
      this.#syncChanged();
      this.#senderState(event, state, previous);
      if (previous === 'catchup' && state === 'streaming') this.emitSafely('standby:caught-up', event);
    });
    const ended = await sender.run();
    if (ended !== null) {
      // As PostgreSQL's walsender at the end of START_REPLICATION: the slot is let go until the next one.
      session.slot?.release();
      session.slot = null;
      session.sender = null;
      session.backupLsn = sender.sentLsn;
      session.state = 'startup';
      this.#syncChanged();
    }
    return ended;
  }

  /**
   * Takes replication slot `slotName` for this connection (`SLOT_NOT_FOUND`, `SLOT_ACTIVE`,
   * `WAL_REMOVED` for a lost slot, each sent to the standby). A slot that has not reserved WAL
   * reserves it where the standby starts.
   */
  #acquireSlot(session: Session, slotName: string, startLsn: Lsn): SlotHandle {
    const { conn, applicationName } = session.info;
    const slots = this.#source.slots;
    let handle: SlotHandle | null = null;
    try {
      if (slots === undefined) throw new WalshipError('SLOT_NOT_FOUND', `replication slot "${slotName}" does not exist (this node has no slots)`);
      handle = slots.acquire(slotName, applicationName);
      if (handle.restartLsn === null) {
        const log = this.#source.log;
        if (startLsn > log.readableLsn) {
          throw new WalshipError(
            'INVALID_ARGUMENT',
            `requested starting point ${formatLsn(startLsn)} is ahead of the WAL flush position ${formatLsn(log.readableLsn)}`,
          );
        }
        // Never reserve WAL that is gone: the slot would be born lost.
        assertNotRemoved(log, startLsn);
        handle.advance(startLsn);
      }
      return handle;
    } catch (err) {
      handle?.release();
      const error = isWalshipError(err) ? err : new WalshipError('CONNECTION_FAILED', String(err), { cause: err });
      conn.fail(error);
      throw error;
    }
  }

  /**
   * TIMELINE_HISTORY: the history file of `timeline`, as the node has it (PostgreSQL sends the
   * file's bytes). A timeline it has no history of is answered with an error (`INVALID_ARGUMENT`),
   * and the connection stays usable.
   */
  async #sendTimelineHistory(session: Session, timeline: number): Promise<void> {
    const { conn } = session.info;
    let history: { readonly fileName: string; readonly content: Uint8Array } | null;
    try {
      history = (await this.#source.timelineHistory?.(timeline)) ?? null;
    } catch (err) {
      // A damaged or unreadable file fails the command, not the connection.
      const error = isWalshipError(err) ? err : new WalshipError('WAL_IO', String(err), { cause: err });
      conn.send({ kind: 'error', code: error.code, message: error.message });
      return;
    }
    if (history === null) {
      conn.send({ kind: 'error', code: 'INVALID_ARGUMENT', message: `could not find the history of timeline ${timeline}` });
      return;
    }
    conn.send({ kind: 'timelineHistoryResult', timeline, fileName: history.fileName, content: history.content });
  }

  /**
   * CREATE_REPLICATION_SLOT / DROP_REPLICATION_SLOT from a standby. A refused command (bad
   * name, slot exists, in use, unknown, `maxReplicationSlots` reached) is answered with an
   * error and the connection stays usable, as in PostgreSQL; DROP … WAIT waits until the slot
   * is free.
   */
  async #slotCommand(session: Session, command: CreateReplicationSlotMessage | DropReplicationSlotMessage): Promise<void> {
    const { conn } = session.info;
    const source = this.#source;
    try {
      if (command.kind === 'createReplicationSlot') {
        if (source.createSlot === undefined) throw new WalshipError('INVALID_ARGUMENT', 'this node does not create replication slots for standbys');
        const slot = await source.createSlot(command.slotName, { reserveWal: command.reserveWal, reserveFrom: command.reserveFrom });
        this.#debug('%s created replication slot %s', session.info.applicationName, slot.slotName);
        conn.send({ kind: 'replicationSlotCreated', slotName: slot.slotName, restartLsn: slot.restartLsn });
        return;
      }
      if (source.slots === undefined) throw new WalshipError('SLOT_NOT_FOUND', `replication slot "${command.slotName}" does not exist (this node has no slots)`);
      let closed = false;
      void conn.closed.then(() => (closed = true));
      for (;;) {
        try {
          await source.slots.drop(command.slotName);
          this.#debug('%s dropped replication slot %s', session.info.applicationName, command.slotName);
          return;
        } catch (err) {
          if (!command.wait || !isWalshipError(err, 'SLOT_ACTIVE') || this.#closing || closed) throw err;
          await currentScheduler().sleep(DROP_WAIT_POLL_MS);
        }
      }
    } catch (err) {
      if (!isWalshipError(err) || !SLOT_COMMAND_ERRORS.has(err.code)) throw err;
      conn.send({ kind: 'error', code: err.code, message: err.message });
    }
  }

  /**
   * BASE_BACKUP: the snapshot is sent by {@link sendBaseBackup}; this connection shows
   * `backup` meanwhile, and holds WAL from the snapshot's position until it streams.
   */
  async #sendBaseBackup(session: Session, label: string, maxRate: number): Promise<void> {
    const { conn, applicationName } = session.info;
    checkMaxRate(conn, maxRate);
    const abort = new AbortController();
    session.backup = abort;
    const previous = session.state;
    session.state = 'backup';
    const event = { applicationName, clientAddress: session.info.peer.remoteAddress ?? null };
    this.#senderState(event, 'backup', previous);
    try {
      await sendBaseBackup(conn, this.#source, {
        label,
        maxRate,
        signal: abort.signal,
        drainTimeoutMs: this.#options.walSenderTimeoutMs,
        onSnapshot: (backup) => (session.backupLsn = backup.lsn),
      });
    } finally {
      session.backup = null;
      session.state = 'startup';
      if (conn.failure === null) this.#senderState(event, 'startup', 'backup');
    }
  }

  /** A sender's state changed: the `sender:state` event, and the `walship:sender:state` diagnostics message when someone listens. */
  #senderState(event: StandbyConnectionEvent, state: WalSenderState | 'backup', previousState: WalSenderState | 'backup'): void {
    this.emitSafely('sender:state', { ...event, state });
    if (senderStateChannel.hasSubscribers && !this.#debug.quiet) {
      const message: SenderStateDiagnostic = { ...event, serverAddress: this.#server.address, state, previousState };
      senderStateChannel.publish(message);
    }
  }
}

