/**
 * What `Primary.metrics()` and `Standby.metrics()` return: plain data gathered from what the
 * node tracks anyway (the log's positions and counters, the writer's commit counters, the WAL
 * service's rows, the slots, the archiver). Reading them costs a walk over the standbys and
 * slots; nothing is kept for them between calls. `formatPrometheus` renders them.
 * @module
 */
import type { Lsn } from '../lsn.js';
import type { NodeCore } from '../node/node-core.js';
import type { ArchiverStatus } from '../node/wal-archiver.js';
import type { ReplicationStatusRow } from '../replication/wal-source.js';
import type { CommitLevelMetrics } from '../roles/commit-metrics.js';
import type { StandbyState } from '../roles/recovery.js';
import type { SynchronousCommit } from '../roles/writer.js';
import type { WalStatus } from '../slots/retention.js';
import type { WalStats } from '../wal/wal-log.js';

export type { CommitLevelMetrics } from '../roles/commit-metrics.js';
export type { HistogramBucket, HistogramSnapshot } from '../latency-histogram.js';

/** A node's WAL: its positions and what its writer did since it was opened (PostgreSQL's `pg_stat_wal`). */
export interface WalMetrics extends WalStats {
  /** The end of what was appended (a primary's `currentLsn`; on a standby the end of what it received). */
  readonly insertLsn: Lsn;
  /** The end of what was handed to the OS. */
  readonly writtenLsn: Lsn;
  /** The durable end. */
  readonly flushedLsn: Lsn;
}

/**
 * One standby this node serves (a row of `pg_stat_replication`), with its lag in bytes behind
 * this node's durable end (what its sender can send) and in seconds (PostgreSQL's write, flush
 * and replay lag: from this node flushing WAL to hearing that the standby wrote, flushed or
 * applied it; null when unknown, or once the standby has caught up and is idle).
 */
export interface DownstreamMetrics {
  /** The standby's `applicationName`. */
  readonly applicationName: string;
  /** Its address, when the transport knows one. */
  readonly clientAddress: string | null;
  /** Its sender's state (`pg_stat_replication.state`). */
  readonly state: ReplicationStatusRow['state'];
  /** Whether commits wait for it (`sync_state`). */
  readonly syncState: ReplicationStatusRow['syncState'];
  /** The end of the WAL sent to it; null before it streams. */
  readonly sentLsn: Lsn | null;
  /** The positions it last reported written, flushed and replayed; null before its first report. */
  readonly writeLsn: Lsn | null;
  /** See {@link writeLsn}. */
  readonly flushLsn: Lsn | null;
  /** See {@link writeLsn}. */
  readonly replayLsn: Lsn | null;
  /** This node's flushed end minus the standby's reported write position; null before its first report. */
  readonly writeLagBytes: number | null;
  /** This node's flushed end minus the standby's reported flush position. */
  readonly flushLagBytes: number | null;
  /** This node's flushed end minus the standby's reported replay position. */
  readonly replayLagBytes: number | null;
  /** Write lag (`write_lag`) in seconds. */
  readonly writeLagSeconds: number | null;
  /** Flush lag (`flush_lag`) in seconds. */
  readonly flushLagSeconds: number | null;
  /** Replay lag (`replay_lag`) in seconds. */
  readonly replayLagSeconds: number | null;
}

/** One replication slot of this node, with the WAL it holds back. */
export interface SlotMetrics {
  /** The slot's name. */
  readonly slotName: string;
  /** True while a standby streams with it. */
  readonly active: boolean;
  /** The oldest WAL it holds; null until reserved and once lost. */
  readonly restartLsn: Lsn | null;
  /** `pg_replication_slots.wal_status` (see `slots()`). */
  readonly walStatus: WalStatus | null;
  /**
   * Bytes of WAL the slot holds back: this node's flushed end minus the slot's `restartLsn`
   * (`pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)`); null while it holds none.
   */
  readonly retainedBytes: number | null;
}

/** The archiver's counters (from `archiverStatus()`, PostgreSQL's `pg_stat_archiver`), times in seconds since the epoch. */
export interface ArchiverMetrics {
  /** The `archive.mode` option (`off` without archiving). */
  readonly mode: ArchiverStatus['mode'];
  /** Files archived since the node started. */
  readonly archivedCount: number;
  /** Failed attempts since the node started. */
  readonly failedCount: number;
  /** Files waiting to be archived. */
  readonly pendingCount: number;
  /** When the last file was archived, in seconds since the epoch; null before the first. */
  readonly lastArchivedTime: number | null;
  /** When archiving last failed, in seconds since the epoch; null if it never did. */
  readonly lastFailedTime: number | null;
}

/** What every node reports. */
interface NodeMetricsBase {
  /** The cluster's identity; null on a standby that has not met its primary yet. */
  readonly systemId: string | null;
  /** The timeline the node writes or replays; null on a standby that does not know it yet. */
  readonly timeline: number | null;
  /** null on a standby that has no local state yet (it is bootstrapping). */
  readonly wal: WalMetrics | null;
  /** The standbys this node serves (with `listen`). */
  readonly standbys: readonly DownstreamMetrics[];
  /** This node's replication slots. */
  readonly slots: readonly SlotMetrics[];
  /** The archiver's counters. */
  readonly archiver: ArchiverMetrics;
}

/** `Primary.metrics()`: commit counters and latencies per level, its WAL, standbys, slots and archiver. */
export interface PrimaryMetrics extends NodeMetricsBase {
  /** Tells the two kinds of metrics apart. */
  readonly role: 'primary';
  /** The cluster's identity. */
  readonly systemId: string;
  /** The timeline it writes. */
  readonly timeline: number;
  /** Its WAL. */
  readonly wal: WalMetrics;
  /** Where the primary's application has applied. */
  readonly appliedLsn: Lsn;
  /** Per `synchronousCommit` level, since the primary was opened (or promoted). */
  readonly commits: Readonly<Record<SynchronousCommit, CommitLevelMetrics>>;
}

/** `Standby.metrics()`: its state, positions and replay lag, plus its WAL, downstream standbys, slots and archiver. */
export interface StandbyMetrics extends NodeMetricsBase {
  /** Tells the two kinds of metrics apart. */
  readonly role: 'standby';
  /** Its state (`Standby.state`). */
  readonly state: StandbyState;
  /** Whether replay has reached a consistent point. */
  readonly consistent: boolean;
  /** Whether it may serve reads (a hot standby, consistent). */
  readonly readable: boolean;
  /** Whether replay is paused at its recovery target. */
  readonly replayPaused: boolean;
  /** The end of the WAL received and written (handed to the OS); null without local state. */
  readonly receivedLsn: Lsn | null;
  /** The end of the WAL received and flushed (`receiveLsn`). */
  readonly flushedLsn: Lsn | null;
  /** The end of the last batch replayed (`replayLsn`). */
  readonly replayedLsn: Lsn | null;
  /** WAL flushed and not replayed yet, in bytes. */
  readonly replayLagBytes: number | null;
  /** `replayDelayMs` in seconds: how long ago the last replayed batch was committed, while replay is behind (0 once caught up). */
  readonly replayLagSeconds: number | null;
}

/** Either node's metrics. */
export type NodeMetrics = PrimaryMetrics | StandbyMetrics;

/** What both facades gather the same way from their core. */
export function coreMetrics(core: NodeCore): Pick<NodeMetricsBase, 'wal' | 'standbys' | 'slots' | 'archiver'> {
  const log = core.attached ? core.log : null;
  const flushed = log?.flushedLsn ?? null;
  return {
    wal: log === null ? null : { insertLsn: log.insertLsn, writtenLsn: log.writtenLsn, flushedLsn: log.flushedLsn, ...log.stats() },
    standbys: core.replicationStatus().map((row) => downstreamOf(row, flushed)),
    slots: log === null ? [] : core.slotRows().map((row) => ({
      slotName: row.slotName,
      active: row.active,
      restartLsn: row.restartLsn,
      walStatus: row.walStatus,
      retainedBytes: row.restartLsn === null ? null : Math.max(0, log.flushedLsn - row.restartLsn),
    })),
    archiver: archiverOf(core.archiverStatus()),
  };
}

function downstreamOf(row: ReplicationStatusRow, flushed: Lsn | null): DownstreamMetrics {
  const behind = (lsn: Lsn | null): number | null => (lsn === null || flushed === null ? null : Math.max(0, flushed - lsn));
  const seconds = (ms: number | null): number | null => (ms === null ? null : ms / 1000);
  return {
    applicationName: row.applicationName,
    clientAddress: row.clientAddress,
    state: row.state,
    syncState: row.syncState,
    sentLsn: row.sentLsn,
    writeLsn: row.writeLsn,
    flushLsn: row.flushLsn,
    replayLsn: row.replayLsn,
    writeLagBytes: behind(row.writeLsn),
    flushLagBytes: behind(row.flushLsn),
    replayLagBytes: behind(row.replayLsn),
    writeLagSeconds: seconds(row.writeLagMs),
    flushLagSeconds: seconds(row.flushLagMs),
    replayLagSeconds: seconds(row.replayLagMs),
  };
}

function archiverOf(status: ArchiverStatus): ArchiverMetrics {
  return {
    mode: status.mode,
    archivedCount: status.archivedCount,
    failedCount: status.failedCount,
    pendingCount: status.pendingCount,
    lastArchivedTime: status.lastArchivedTime === null ? null : status.lastArchivedTime.getTime() / 1000,
    lastFailedTime: status.lastFailedTime === null ? null : status.lastFailedTime.getTime() / 1000,
  };
}
