import fs from 'node:fs/promises';
import { NodeStorage, WalLog, parseSegmentFileName, type NodeStorageOptions, type SyncMode } from '../src/index.js';

/**
 * Spare segment files the benchmark's logs keep (the `recycleSegments` option; the default
 * is 4). Eight 16 MiB segments are more than one measured run writes, so a run never has
 * to create and zero-fill a segment in the middle of it.
 */
export const BENCH_RECYCLE_SEGMENTS = 8;

const FILL_RECORD = Buffer.alloc(64 * 1024, 0x3c);

/**
 * Opens a log in `dir` and brings it to the steady state of a long-running log: it writes
 * past {@link BENCH_RECYCLE_SEGMENTS} + 1 segments, then removes them, so that the next
 * segments exist already (recycled, fully allocated) and the measured runs pay neither
 * the creation of a segment (16 MiB of zeros plus an fdatasync) nor block allocation.
 * `storageOptions` are those of its {@link NodeStorage}.
 */
export async function openSteadyLog(dir: string, sync: SyncMode, storageOptions?: NodeStorageOptions): Promise<WalLog> {
  const storage = new NodeStorage(dir, storageOptions);
  const log = await WalLog.open({ storage, sync, recycleSegments: BENCH_RECYCLE_SEGMENTS });
  try {
    const target = log.insertLsn + (BENCH_RECYCLE_SEGMENTS + 1) * log.segmentSize;
    for (let i = 1; log.insertLsn < target; i++) {
      log.append(FILL_RECORD);
      if (i % 16 === 0) await yieldToEventLoop();
    }
    await log.flush();
    await restock(log, dir);
  } catch (err) {
    await log.close().catch(() => undefined);
    throw err;
  }
  return log;
}

/**
 * Removes the segments the last run filled, which recycles them into future segment
 * names, and returns how many future segments are ready. Called between runs, untimed,
 * like a checkpoint in an application.
 */
export async function restock(log: WalLog, dir: string): Promise<number> {
  await log.removeSegmentsBefore(log.flushedLsn);
  const insertSegno = Math.floor(log.insertLsn / log.segmentSize);
  let ready = 0;
  for (const name of await fs.readdir(dir)) {
    const parsed = parseSegmentFileName(name, log.segmentSize);
    if (parsed !== null && parsed.timeline === log.timeline && parsed.segno > insertSegno) ready++;
  }
  return ready;
}

/** Lets the event loop run pending I/O callbacks and timers. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
