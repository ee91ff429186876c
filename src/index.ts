/**
 * walship: an embeddable write-ahead-log replication library for Node.js.
 *
 * The public surface is this reviewed list; nothing is re-exported wholesale.
 * @packageDocumentation
 */
export { ERROR_CODES, WalCorruptError, WalshipError, isWalshipError } from './errors.js';
export type { ErrorCode, WalshipErrorOptions } from './errors.js';
export { formatLsn, isLsn, parseLsn } from './lsn.js';
export type { Lsn } from './lsn.js';
export { NodeStorage } from './storage/node-storage.js';
export { MemoryStorage } from './storage/memory-storage.js';
export { isStorage } from './storage/storage.js';
export type { Storage, StorageFile, StorageLock, StorageOpenOptions, StorageWriteError } from './storage/storage.js';
export { WAL_LOG_DEFAULTS, WalLog, walLogOptionsSchema } from './wal/wal-log.js';
export type {
  AppendResult,
  EntryInput,
  FlushEvent,
  SegmentRemovedEvent,
  SyncMode,
  WalErrorEvent,
  WalLogEvents,
  WalLogOptions,
} from './wal/wal-log.js';
export type { ReadOptions, WalRecord } from './wal/wal-reader.js';
export { MAX_CHANNEL_BYTES, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE } from './wal/record.js';
export type { WalEntry } from './wal/record.js';
export {
  DEFAULT_SEGMENT_SIZE,
  MAX_SEGMENT_SIZE,
  MIN_SEGMENT_SIZE,
  parseSegmentFileName,
  segmentFileName,
} from './wal/segment-name.js';
export type { SegmentName } from './wal/segment-name.js';
