import { WalshipError, abortError } from '../errors.js';
import type { Lsn } from '../lsn.js';
import type { StorageFile } from '../storage/storage.js';
import { assertNotRemoved, awaitMore } from './tail.js';
import { switchPointOf, type TimelineHistory } from './timeline-history.js';
import type { WalLog } from './wal-log.js';

/** Options of {@link WalLog.readBytes}. */
export interface ReadBytesOptions {
  /** Keep waiting at the end of the durable log for more. @defaultValue false */
  follow?: boolean;
  /** Stops the iteration with an `ABORTED` error. */
  signal?: AbortSignal;
  /** Largest chunk handed out. @defaultValue 1 MiB */
  maxChunkBytes?: number;
  /**
   * Read this timeline's WAL: stop at the point where the log's history left it (looked up
   * again whenever the log moves to a new timeline, so a follower of the current timeline
   * ends where a promotion or a followed switch ended it). @defaultValue the log's timeline when reading starts
   */
  timeline?: number;
  /**
   * Also hand out bytes written but not yet durable (up to `writtenLsn`): a primary's early
   * sender, whose standbys hold them back until it says they are durable. @defaultValue false
   */
  unflushed?: boolean;
}

/** WAL bytes exactly as they are on disk, from `startLsn` on. */
export interface WalChunk {
  /** LSN of the first byte of `data`; chunks follow each other without gaps. */
  readonly startLsn: Lsn;
  /** A fresh buffer the caller may keep. */
  readonly data: Buffer;
}

const DEFAULT_CHUNK = 1024 * 1024;

/**
 * Iterates the log's durable bytes from any LSN, segment by segment, as a WAL sender ships
 * them: raw, including segment headers, so that a receiver writing them at the same LSNs
 * holds the same log. Never hands out bytes past `readableLsn` (with `unflushed`, past
 * `writtenLsn`); a segment removed or
 * recycled while being read ends the iteration with `WAL_REMOVED`.
 */
export async function* readWalBytes(log: WalLog, from: Lsn, options: ReadBytesOptions): AsyncGenerator<WalChunk, void, undefined> {
  const { signal, follow = false, maxChunkBytes = DEFAULT_CHUNK, unflushed = false } = options;
  const timeline = options.timeline ?? log.timeline;
  const size = log.segmentSize;
  let pos = from;
  let file: StorageFile | null = null;
  let fileSegno = -1;
  let fileHistory: TimelineHistory | null = null;
  try {
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      assertNotRemoved(log, pos);
      // The timeline's end, once the log's history has left it.
      const switchLsn = switchPointOf(log.history, timeline);
      // Not on the log's history at all (it was rewound onto another): nothing more of it here.
      if (switchLsn === undefined) return;
      const end = switchLsn ?? Number.MAX_SAFE_INTEGER;
      if (pos >= end) return;
      const horizon = Math.min(unflushed ? log.writtenLsn : log.readableLsn, end);
      if (pos >= horizon) {
        if (!(await awaitMore(log, pos, follow, signal, unflushed ? 'written' : 'readable'))) return;
        continue;
      }
      const segno = Math.floor(pos / size);
      // After a timeline switch the segment may live in another timeline's file.
      if (segno !== fileSegno || fileHistory !== log.history) {
        fileHistory = log.history;
        await file?.close().catch(() => undefined);
        file = null;
        try {
          file = await log.storage.open(log.segmentName(pos), { readOnly: true });
        } catch (err) {
          assertNotRemoved(log, pos);
          throw new WalshipError('WAL_IO', `opening segment ${log.segmentName(pos)} failed: ${(err as Error).message}`, { cause: err });
        }
        fileSegno = segno;
      }
      const length = Math.min(maxChunkBytes, horizon - pos, (segno + 1) * size - pos);
      const data = Buffer.allocUnsafe(length);
      let read: number;
      try {
        // WAL written a moment ago (a streaming sender's usual read) is still in the writer's
        // memory: no read from the file.
        read = log.copyWritten(data, pos, length) ? length : await (file as StorageFile).read(data, 0, length, pos - segno * size);
      } catch (err) {
        assertNotRemoved(log, pos);
        throw new WalshipError('WAL_IO', `reading segment ${log.segmentName(pos)} failed: ${(err as Error).message}`, { cause: err });
      }
      // Bytes of a segment recycled during the read are not the log's: never hand them out.
      assertNotRemoved(log, pos);
      if (read < length) throw new WalshipError('WAL_IO', `segment ${log.segmentName(pos)} is shorter than the log`);
      yield { startLsn: pos, data };
      pos += length;
    }
  } finally {
    await file?.close().catch(() => undefined);
  }
}
