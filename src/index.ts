/**
 * walship: an embeddable write-ahead-log replication library for Node.js.
 *
 * The public surface is this reviewed list; nothing is re-exported wholesale.
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
export type { ErrorCode, WalshipErrorOptions } from './errors.js';
export { formatLsn, isLsn, parseLsn } from './lsn.js';
export type { Lsn } from './lsn.js';
export { NodeStorage } from './storage/node-storage.js';
export { MemoryStorage } from './storage/memory-storage.js';
export { isStorage } from './storage/storage.js';
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
export {
  SCRAM_DEFAULT_ITERATIONS,
  SCRAM_MAX_ITERATIONS,
  SCRAM_MIN_ITERATIONS,
  ScramClient,
  ScramServer,
  parseScramVerifier,
  scramVerifier,
} from './protocol/scram.js';
export type { ParsedVerifier, ScramClientOptions, ScramServerFinal, ScramServerOptions, ScramVerifierOptions } from './protocol/scram.js';
export { CompiledAuth, authOptionsSchema, compileAuth } from './protocol/auth-rules.js';
export type { AuthMatch, AuthMethod, AuthOptions, AuthRule, AuthUsers, CompileAuthOptions } from './protocol/auth-rules.js';
export {
  MESSAGE_TYPES,
  PROTOCOL_LIMITS,
  PROTOCOL_VERSION,
  baseBackupChunk,
  checkChunk,
  decodeMessage,
  encodeMessage,
  encodeMessageParts,
} from './protocol/messages.js';
export { FRAME_HEADER_BYTES, FRAME_READER_DEFAULTS, FrameReader, frameReaderOptionsSchema } from './protocol/frame-reader.js';
export type { Frame, FramePiece, FrameReaderOptions } from './protocol/frame-reader.js';
export type {
  AuthOkMessage,
  AuthSaslContinueMessage,
  AuthSaslFinalMessage,
  AuthSaslMessage,
  BaseBackupBeginMessage,
  BaseBackupChunkMessage,
  BaseBackupEndMessage,
  BaseBackupMessage,
  ClientMessage,
  EndOfTimelineMessage,
  ErrorMessage,
  HotStandbyFeedbackMessage,
  IdentifySystemMessage,
  IdentifySystemResultMessage,
  KeepaliveMessage,
  Message,
  MessageKind,
  ProtocolSide,
  ReadyForCommandMessage,
  ReplicationStartedMessage,
  SaslInitialResponseMessage,
  SaslResponseMessage,
  ServerMessage,
  StandbyStatusUpdateMessage,
  StartReplicationMessage,
  CreateReplicationSlotMessage,
  DropReplicationSlotMessage,
  ReplicationSlotCreatedMessage,
  StartupMessage,
  StartupOption,
  TerminateMessage,
  TimelineHistoryMessage,
  TimelineHistoryResultMessage,
  WalDataMessage,
} from './protocol/messages.js';
export { MessageStream } from './protocol/message-stream.js';
export type { Incoming, MessageStreamOptions, Outgoing } from './protocol/message-stream.js';
export { ReplicationServer } from './protocol/replication-server.js';
export type {
  AuthFailedEvent,
  ConnectionErrorEvent,
  ReplicationServerEvents,
  ReplicationServerOptions,
  ServerSession,
} from './protocol/replication-server.js';
export { connectReplication, createReplicationSlot, dropReplicationSlot } from './protocol/replication-client.js';
export type { ConnectReplicationOptions, CreatedSlot } from './protocol/replication-client.js';
export type { AuthFailure, AuthFailureReason, AuthenticatedPeer } from './protocol/handshake.js';
