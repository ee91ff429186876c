/**
 * walship's wire protocol, for writers of tools and transports: the message codec and its
 * limits, the framing of a byte stream, typed message streams, the replication server that
 * authenticates peers and hands over sessions, the client calls a standby makes
 * (`connectReplication`, slot creation), compiled auth rules and the SCRAM-SHA-256 exchange.
 *
 * An application does not need this entry: `Primary` and `Standby` (in `walship`) speak the
 * protocol themselves, and `walship` also has what configuring authentication takes
 * (`AuthOptions`, `scramVerifier`) and the payloads of the events they emit. What is here
 * follows PostgreSQL's streaming replication protocol but is walship's own; it is versioned
 * by {@link PROTOCOL_VERSION}, and peers of different major versions refuse each other.
 * @packageDocumentation
 */
export {
  MESSAGE_TYPES,
  PROTOCOL_LIMITS,
  PROTOCOL_VERSION,
  baseBackupChunk,
  checkChunk,
  decodeMessage,
  encodeMessage,
  encodeMessageParts,
} from './messages.js';
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
  FlushRequestMessage,
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
} from './messages.js';
export { FRAME_HEADER_BYTES, FRAME_READER_DEFAULTS, FrameReader, frameReaderOptionsSchema } from './frame-reader.js';
export type { Frame, FramePiece, FrameReaderOptions } from './frame-reader.js';
export { MessageStream } from './message-stream.js';
export type { Incoming, MessageStreamOptions, Outgoing } from './message-stream.js';
export { ReplicationServer } from './replication-server.js';
export type { ReplicationServerEvents, ReplicationServerOptions, ServerSession } from './replication-server.js';
export type { AuthenticatedPeer } from './handshake.js';
export { connectReplication, createReplicationSlot, dropReplicationSlot } from './replication-client.js';
export type { ConnectReplicationOptions, CreatedSlot } from './replication-client.js';
export { CompiledAuth, compileAuth } from './auth-rules.js';
export type { AuthMatch, CompileAuthOptions } from './auth-rules.js';
export { ScramClient, ScramServer, parseScramVerifier } from './scram.js';
export type { ParsedVerifier, ScramClientOptions, ScramServerFinal, ScramServerOptions } from './scram.js';
