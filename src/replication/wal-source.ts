/**
 * The contracts of the WAL service (wal-service.ts), types only: what the node it serves
 * offers (`WalSource`, `BaseBackupData`) and what it reports about its standbys
 * (`ReplicationStatusRow`, `StandbyConnectionEvent`, `WalServiceEvents`).
 * @module
 */
import type { SnapshotData } from '../application.js';
import type { WalshipError } from '../errors.js';
import type { Lsn } from '../lsn.js';
import type { SlotInfo, SlotManager } from '../slots/slot-manager.js';
import type { WalLog } from '../wal/wal-log.js';
import type { WalSenderState } from './wal-sender.js';

/** What a node serving WAL offers its standbys. */
export interface WalSource {
  readonly log: WalLog;
  readonly systemId: string;
  /** The application's state and the LSN it includes; throws `BASE_BACKUP_FAILED` when it cannot. */
  baseBackup(): Promise<BaseBackupData>;
  /** The node's replication slots; without them a standby asking for a slot gets `SLOT_NOT_FOUND`. */
  readonly slots?: SlotManager;
  /**
   * Creates a slot for a standby that asked over the protocol (CREATE_REPLICATION_SLOT); the
   * node decides where a slot that reserves WAL at once starts. Absent: such requests are refused.
   */
  createSlot?(name: string, options: { reserveWal: boolean; reserveFrom: Lsn | null }): Promise<SlotInfo>;
  /**
   * Where the log begins to hold the cluster's WAL, byte for byte: 0 on a primary; on a
   * standby bootstrapped from a base backup, the backup's position. Lineage checks compare
   * nothing before it. @defaultValue 0
   */
  historyFrom?(): Lsn;
  /**
   * TIMELINE_HISTORY: the history file of `timeline` (its name and bytes), `null` when the
   * node has none. Absent: every request is answered with an error.
   */
  timelineHistory?(timeline: number): Promise<{ readonly fileName: string; readonly content: Uint8Array } | null>;
}

/** A snapshot of the application with the position it includes. */
export interface BaseBackupData {
  readonly lsn: Lsn;
  readonly timeline: number;
  /** Bytes, when known in advance. */
  readonly size: number | null;
  readonly data: SnapshotData;
}

/** A row of `replicationStatus()`: one connected standby, as `pg_stat_replication` shows it. */
export interface ReplicationStatusRow {
  /** The standby's `applicationName`. */
  readonly applicationName: string;
  /** The user it authenticated as. */
  readonly user: string;
  /** Its address, when the transport knows one. */
  readonly clientAddress: string | null;
  /** `backup` while it receives a base backup, as in PostgreSQL. */
  readonly state: WalSenderState | 'backup';
  /** When the connection was authenticated. */
  readonly backendStart: Date;
  /** The end of the WAL sent to it; null before streaming starts. */
  readonly sentLsn: Lsn | null;
  /** The timeline being streamed to it (an older one while it catches up to a switch point); null when not streaming. */
  readonly timeline: number | null;
  /** The end of the WAL it reported written; null before its first report. */
  readonly writeLsn: Lsn | null;
  /** The end of the WAL it reported flushed to its disk; null before its first report. */
  readonly flushLsn: Lsn | null;
  /** The end of the WAL it reported applied; null before its first report. */
  readonly replayLsn: Lsn | null;
  /** Milliseconds between this node flushing WAL and hearing the standby wrote it (`write_lag`); null when unknown or idle. */
  readonly writeLagMs: number | null;
  /** As `writeLagMs`, up to the standby's flush (`flush_lag`). */
  readonly flushLagMs: number | null;
  /** As `writeLagMs`, up to the standby's apply (`replay_lag`). */
  readonly replayLagMs: number | null;
  /**
   * Its priority as a synchronous standby (`sync_priority`): its place in
   * `synchronousStandbyNames` (1 for every listed standby under `ANY`), 0 when not listed or
   * before its first report of a flush position.
   */
  readonly syncPriority: number;
  /** `sync_state`: `sync` / `quorum` when commits wait for it, `potential` when listed but not (yet) chosen. */
  readonly syncState: 'async' | 'potential' | 'sync' | 'quorum';
  /** When the standby's last status report arrived. */
  readonly replyTime: Date | null;
}

/** A standby's connection, as events report it. */
export interface StandbyConnectionEvent {
  /** The name the standby connected with. */
  readonly applicationName: string;
  /** Its address, when the transport knows one (`null` over an in-memory transport). */
  readonly clientAddress: string | null;
}

/** The message on the `walship:sender:state` diagnostics channel: a WAL sender changed state. */
export interface SenderStateDiagnostic extends StandbyConnectionEvent {
  /** The serving node's listen address (its `address`), which tells nodes in one process apart. */
  readonly serverAddress: string | null;
  /** The sender's new state. */
  readonly state: WalSenderState | 'backup';
  /** Its state before. */
  readonly previousState: WalSenderState | 'backup';
}

/** Events of the WAL service that serves standbys (re-emitted by `Primary`). */
export interface WalServiceEvents {
  /** An authenticated standby got a WAL sender; a `standby:disconnected` follows when it leaves. */
  'standby:connected': (event: StandbyConnectionEvent) => void;
  /** A connected standby left; `error` says why, `null` when it ended the connection itself. */
  'standby:disconnected': (event: StandbyConnectionEvent & { readonly error: WalshipError | null }) => void;
  /** An authenticated standby was turned away (`TOO_MANY_WAL_SENDERS`); it never counted as connected. */
  'standby:refused': (event: StandbyConnectionEvent & { readonly error: WalshipError }) => void;
  /** A sender changed state (`pg_stat_replication.state`). */
  'sender:state': (event: StandbyConnectionEvent & { readonly state: WalSenderState | 'backup' }) => void;
  /** A standby caught up with the primary: its sender moved from `catchup` to `streaming`. */
  'standby:caught-up': (event: StandbyConnectionEvent) => void;
}
