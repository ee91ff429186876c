/**
 * walship: an embeddable write-ahead-log replication library for Node.js.
 *
 * This entry holds what an application needs: the {@link Primary} and {@link Standby}
 * facades with their options, defaults, schemas and events, the {@link WalLog} on its own,
 * storage, transports and the {@link Transport} contract, archivers, errors, LSN helpers,
 * slot and `synchronous_standby_names` helpers, and {@link scramVerifier} to create
 * credentials. The wire protocol (message codec, framing, the replication server and client,
 * SCRAM internals) is in `walship/protocol`, for tool and transport writers; test tools are in
 * `walship/testing`.
 *
 * The public surface is this reviewed list; nothing is re-exported wholesale, and
 * `test/index.test.ts` pins the runtime exports so that an addition is deliberate.
 * @packageDocumentation
 */
export { Primary, PRIMARY_DEFAULTS, primaryOptionsSchema } from './primary.js';
export type {
  ApplyErrorEvent,
  BaseBackupResult,
  CheckpointResult,
  CommitOptions,
  CommitResult,
  RestorePointResult,
  CloseOptions,
  CreateSlotOptions,
  FailedEvent,
  PrimaryEvents,
  PrimaryOptions,
  ReloadOptions,
  SlotInvalidatedEvent,
  SynchronousCommit,
} from './primary.js';
export type { EntryBuffers } from './node/applier.js';
export type { CommitDiagnostic } from './roles/writer.js';
export type { PromoteDiagnostic } from './standby.js';
export { DIAGNOSTICS_CHANNELS } from './diagnostics.js';
export { COMMIT_LATENCY_BUCKETS } from './latency-histogram.js';
export type { HistogramBucket, HistogramSnapshot } from './latency-histogram.js';
export type {
  ArchiverMetrics,
  CommitLevelMetrics,
  DownstreamMetrics,
  NodeMetrics,
  PrimaryMetrics,
  SlotMetrics,
  StandbyMetrics,
  WalMetrics,
} from './metrics/node-metrics.js';
export { PROMETHEUS_CONTENT_TYPE, formatPrometheus } from './metrics/prometheus.js';
export type { PrometheusSource } from './metrics/prometheus.js';
export { ARCHIVE_DEFAULTS, ARCHIVE_RETRY_MAX_MS, ARCHIVE_RETRY_MIN_MS } from './node/wal-archiver.js';
export type { ArchiveDoneEvent, ArchiveFailedEvent, ArchiveOptions, ArchiverStatus } from './node/wal-archiver.js';
export type { ArchiveCleanup, ArchiveCleanupPoint } from './roles/archive-cleanup.js';
export { rebuildControlFile, rebuildControlFileOptionsSchema } from './node/rebuild-control-file.js';
export type { RebuildControlFileOptions, RebuiltControlFile } from './node/rebuild-control-file.js';
export { parseSynchronousStandbyNames, formatSynchronousStandbyNames, syncPriorityOf, SyncStandbyNamesError } from './replication/sync-standby-names.js';
export type { SyncMethod, SyncStandbyConfig } from './replication/sync-standby-names.js';
export { releasePositions, syncStates, syncStandbys } from './replication/sync-standbys.js';
export type { StandbySyncStatus, SyncReleasePositions, SyncStandbyInput, SyncSenderState, SyncState } from './replication/sync-standbys.js';
export type { SyncStandbysEvent, SyncWaitMode } from './replication/sync-rep.js';
export { MAX_REPLICATION_SLOTS_CAP, SLOT_DEFAULTS, SlotManager, assertSlotName } from './slots/slot-manager.js';
export type { AdvanceTarget, InvalidatedSlot, NewSlotOptions, ReplicationSlotRow, SlotHandle, SlotInfo, SlotManagerOptions, WalRemovalPlan } from './slots/slot-manager.js';
export { RETENTION_DEFAULTS, decideRetention, slotAvailability } from './slots/retention.js';
export type { RetentionDecision, RetentionSettings, RetentionState, SlotAvailability, SlotHold, WalStatus } from './slots/retention.js';
export { Standby, STANDBY_DEFAULTS, promoteOptionsSchema, reconfigureOptionsSchema, standbyOptionsSchema } from './standby.js';
export { PROMOTE_SIGNAL_FILE } from './node/promote-signal.js';
export type {
  BaseBackupProgressEvent,
  DiscardedBatch,
  RewindEvent,
  PromoteOptions,
  PromotedEvent,
  RecoveryTarget,
  RecoveryTargetAction,
  RecoveryTargetReachedEvent,
  RecoveryTargetTimeline,
  ReconfigureOptions,
  StandbyEvents,
  StandbyOptions,
  StandbyPrimaryOptions,
  StandbyState,
} from './standby.js';
export type { Application, CommittedBatch, Snapshot, SnapshotData } from './application.js';
export type { ReplicationStatusRow, SenderStateDiagnostic, StandbyConnectionEvent, WalServiceEvents } from './replication/wal-source.js';
export type { WalSenderState } from './replication/wal-sender.js';
export type { WaitOptions } from './lsn-waiters.js';
export { ERROR_CODES, WalCorruptError, WalshipError, isWalshipError } from './errors.js';
export type { ErrorCode, ErrorCodeInfo, WalshipErrorOptions } from './errors.js';
export { formatLsn, isLsn, parseLsn } from './lsn.js';
export type { Lsn } from './lsn.js';
export { NODE_STORAGE_DEFAULTS, NodeStorage, nodeStorageOptionsSchema } from './storage/node-storage.js';
export type { CommitSync, NodeStorageOptions } from './storage/node-storage.js';
export { MemoryStorage } from './storage/memory-storage.js';
export { isStorage } from './storage/storage.js';
export { checksumImplementation } from './checksum.js';
export type { ChecksumImplementation } from './checksum.js';
export { isArchiver } from './archive/archiver.js';
export { FileSystemArchive } from './archive/file-system-archive.js';
export type { FileSystemArchiveOptions } from './archive/file-system-archive.js';
export type { Archiver, ArchiverCallOptions } from './archive/archiver.js';
export type { Storage, StorageFile, StorageLock, StorageOpenOptions, StorageWriteError } from './storage/storage.js';
export { WAL_LOG_DEFAULTS, WalLog, walLogOptionsSchema } from './wal/wal-log.js';
export type {
  AppendResult,
  EntryInput,
  FlushEvent,
  ReadableEvent,
  SegmentRemovedEvent,
  FileKeptEvent,
  WalFlushDiagnostic,
  WalStats,
  SyncMode,
  WalErrorEvent,
  WalLogEvents,
  WalLogOptions,
  WriteEvent,
} from './wal/wal-log.js';
export type { ReadOptions, RestorePointRecord, WalRecord } from './wal/wal-reader.js';
export type { ReadBytesOptions, WalChunk } from './wal/wal-byte-reader.js';
export { FORMAT_VERSION, MAX_CHANNEL_BYTES, MAX_RESTORE_POINT_NAME_BYTES, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE } from './wal/record.js';
export type { WalEntry } from './wal/record.js';
export {
  DEFAULT_SEGMENT_SIZE,
  MAX_SEGMENT_SIZE,
  MIN_SEGMENT_SIZE,
  parseSegmentFileName,
  segmentFileName,
} from './wal/segment-name.js';
export type { SegmentName } from './wal/segment-name.js';
export type { TimelineHistory, TimelineHistoryEntry } from './wal/timeline-history.js';
export { MEMORY_NETWORK_DEFAULTS, MemoryNetwork, MemoryTransport, memoryNetworkOptionsSchema, memoryTransportOptionsSchema } from './transport/memory-transport.js';
export type { MemoryEndpointOptions, MemoryNetworkOptions, MemoryTransportOptions } from './transport/memory-transport.js';
export {
  TCP_TLS_DEFAULTS,
  TCP_TRANSPORT_DEFAULTS,
  TcpTransport,
  formatTcpAddress,
  parseTcpAddress,
  tcpTransportOptionsSchema,
} from './transport/tcp-transport.js';
export type { Pem, TcpAddress, TcpTlsOptions, TcpTransportOptions } from './transport/tcp-transport.js';
export type { Listener, PeerInfo, Transport } from './transport/transport.js';
export { SCRAM_DEFAULT_ITERATIONS, SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS, scramVerifier } from './protocol/scram.js';
export type { ScramVerifierOptions } from './protocol/scram.js';
export { authOptionsSchema } from './protocol/auth-rules.js';
export type { AuthMethod, AuthOptions, AuthRule, AuthUsers } from './protocol/auth-rules.js';
export type { AuthFailedEvent, ConnectionErrorEvent } from './protocol/replication-server.js';
export type { AuthFailure, AuthFailureReason } from './protocol/handshake.js';
