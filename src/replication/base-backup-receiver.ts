/**
 * The receiving side of BASE_BACKUP (what `pg_basebackup` does): asks the server for a base
 * backup and writes the snapshot it sends into a local snapshot file, checking the offsets,
 * the size and the SHA-256 (each chunk's CRC-32C is checked as the message is decoded). What
 * the received backup means for the node (its control file, its state and events) is the
 * caller's (`Standby`).
 * @module
 */
import { WalshipError } from '../errors.js';
import type { Lsn } from '../lsn.js';
import type { BaseBackupBeginMessage, BaseBackupEndMessage } from '../protocol/messages.js';
import type { MessageStream } from '../protocol/message-stream.js';
import { expectMessage, nextMessage, type ReplyOptions } from '../protocol/replication-client.js';

/** What a finished snapshot write produced (the node's `SnapshotStore` writes one). */
export interface ReceivedSnapshot {
  readonly size: number;
  readonly sha256: Buffer;
}

/**
 * Where the snapshot goes: the node's snapshot store. A write fed by an async iterable of
 * chunks, which calls `verify` before the file is put in place (a refused or failed write
 * leaves no snapshot behind).
 */
export interface SnapshotSink {
  write(
    lsn: Lsn,
    timeline: number,
    data: AsyncIterable<Uint8Array>,
    options: { signal?: AbortSignal; verify?: (written: ReceivedSnapshot) => void },
  ): Promise<ReceivedSnapshot>;
}

/** Options of {@link receiveBaseBackup}. */
export interface ReceiveBaseBackupOptions {
  readonly snapshots: SnapshotSink;
  /** The backup's label (BASE_BACKUP's `LABEL`). */
  readonly label: string;
  /** `MAX_RATE` asked of the server, in bytes per second. @defaultValue 0 (unlimited) */
  readonly maxRate?: number;
  /** Stops waiting for the server and writing the snapshot. */
  readonly signal?: AbortSignal;
  /** Limit for each message of the server. */
  readonly timeoutMs: number;
  /** The server as error messages name it. @defaultValue 'the server' */
  readonly peer?: string;
  /** After each chunk is written: the bytes received so far, and the size the server announced (if it knows it). */
  readonly onProgress?: (progress: { readonly receivedBytes: number; readonly totalBytes: number | null }) => void;
}

/** A base backup received and in place. */
export interface ReceivedBaseBackup {
  readonly begin: BaseBackupBeginMessage;
  readonly end: BaseBackupEndMessage;
  readonly written: ReceivedSnapshot;
}

/**
 * Sends BASE_BACKUP on an authenticated connection and receives the server's snapshot into
 * `snapshots`. Only a complete, verified snapshot is put into place, so an interrupted
 * backup leaves nothing behind and simply starts over. Resolves once it is in place, before
 * the server's `readyForCommand`, which the caller reads. An `error` from the server is
 * thrown with its code; a chunk at the wrong offset, a missing end, or a size or SHA-256
 * other than announced is `BASE_BACKUP_FAILED`.
 */
export async function receiveBaseBackup(conn: MessageStream<'client'>, options: ReceiveBaseBackupOptions): Promise<ReceivedBaseBackup> {
  const { snapshots, signal, onProgress } = options;
  const reply: ReplyOptions = {
    timeoutMs: options.timeoutMs,
    ...(signal === undefined ? {} : { signal }),
    ...(options.peer === undefined ? {} : { peer: options.peer }),
  };
  conn.send({ kind: 'baseBackup', label: options.label, maxRate: options.maxRate ?? 0 });
  const begin = await expectMessage(conn, 'baseBackupBegin', reply);
  let end: BaseBackupEndMessage | null = null;
  const chunks = (async function* (): AsyncGenerator<Uint8Array> {
    let offset = 0;
    for (;;) {
      const message = await nextMessage(conn, reply);
      if (message.kind === 'baseBackupEnd') {
        end = message;
        return;
      }
      if (message.kind !== 'baseBackupChunk') throw new WalshipError('PROTOCOL_ERROR', `unexpected ${message.kind} message during a base backup`);
      if (message.offset !== offset) throw new WalshipError('BASE_BACKUP_FAILED', `base backup chunk at offset ${message.offset}; expected ${offset}`);
      offset += message.data.length;
      yield message.data;
      onProgress?.({ receivedBytes: offset, totalBytes: begin.totalBytes });
    }
  })();
  /** The server's `baseBackupEnd` (set by the generator above, which TypeScript cannot see). */
  const ended = (): BaseBackupEndMessage => {
    const last = end as BaseBackupEndMessage | null;
    if (last === null) throw new WalshipError('BASE_BACKUP_FAILED', 'the base backup ended without its final message');
    return last;
  };
  const verify = (written: ReceivedSnapshot): void => {
    const last = ended();
    if (last.totalBytes !== written.size || !written.sha256.equals(last.sha256)) {
      throw new WalshipError('BASE_BACKUP_FAILED', `the base backup does not match its checksum (${written.size} bytes received, ${last.totalBytes} announced)`);
    }
  };
  const written = await snapshots.write(begin.startLsn, begin.timeline, chunks, signal === undefined ? { verify } : { signal, verify });
  return { begin, end: ended(), written };
}
