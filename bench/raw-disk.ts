import { fdatasync, writeSync } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import { LatencyRecorder, type RunResult } from './stats.js';

/**
 * The machine's raw limits, measured with plain `node:fs` calls on the same directory as
 * the WAL: what one writer gets from write + fdatasync, and how fast bytes go
 * into the page cache.
 */

/** Size of the pre-allocated files: the same as one default WAL segment. */
export const PREALLOCATED_SIZE = 16 * 1024 * 1024;

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** Creates `file` (or truncates it) and fills it with `size` zero bytes, then fdatasyncs it. */
export async function createZeroFilled(file: string, size: number): Promise<void> {
  const handle = await fs.open(file, 'w');
  try {
    for (let at = 0; at < size; at += ZERO_CHUNK.length) {
      await writeFully(handle, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, size - at)), at);
    }
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/**
 * One writer's loop of `write(writeSize bytes at the next offset)` + fdatasync for
 * `durationMs`. With `wrapAt` the offset goes back to 0 before passing it (the file must
 * already be that long: overwrites only, no allocation); without it the file grows. The
 * cheapest calls Node has that do not block the event loop on the disk: a synchronous write
 * into the page cache and `fs.fdatasync` with a callback (bench/wal-io-paths.ts measured the
 * others; walship's WAL writer uses these two).
 */
export async function measureRawSync(options: {
  file: string;
  writeSize: number;
  durationMs: number;
  wrapAt?: number;
}): Promise<RunResult> {
  const { file, writeSize, durationMs, wrapAt } = options;
  const handle = await fs.open(file, wrapAt === undefined ? 'w' : 'r+');
  const data = Buffer.alloc(writeSize, 0xa5);
  const latencies = new LatencyRecorder();
  let offset = 0;
  const start = performance.now();
  const end = start + durationMs;
  try {
    for (let now = start; now < end; ) {
      if (wrapAt !== undefined && offset + writeSize > wrapAt) offset = 0;
      for (let written = 0; written < writeSize; ) written += writeSync(handle.fd, data, written, writeSize - written, offset + written);
      await new Promise<void>((resolve, reject) => fdatasync(handle.fd, (err) => (err === null ? resolve() : reject(err))));
      const done = performance.now();
      latencies.add((done - now) * 1000);
      offset += writeSize;
      now = done;
    }
  } finally {
    await handle.close();
  }
  const seconds = (performance.now() - start) / 1000;
  const [p50, p99] = latencies.percentiles([0.5, 0.99]);
  return {
    opsPerSec: latencies.count / seconds,
    bytesPerSec: (latencies.count * writeSize) / seconds,
    p50Us: p50 ?? Number.NaN,
    p99Us: p99 ?? Number.NaN,
    syncsPerSec: latencies.count / seconds,
  };
}

/**
 * Buffered sequential writes of `chunkSize` bytes, no sync, `totalBytes` in all, going
 * round an existing file of `fileSize` bytes: how fast this machine moves bytes into the
 * page cache with the 1 MiB writes walship's writer issues. The ceiling for `sync: 'none'`
 * appends.
 */
export async function measureRawBufferedWrite(options: {
  file: string;
  fileSize: number;
  totalBytes: number;
  chunkSize: number;
}): Promise<RunResult> {
  const { file, fileSize, totalBytes, chunkSize } = options;
  const handle = await fs.open(file, 'r+');
  const data = Buffer.alloc(chunkSize, 0x5a);
  const start = performance.now();
  try {
    for (let done = 0; done < totalBytes; done += chunkSize) await writeFully(handle, data, done % fileSize);
  } finally {
    await handle.close();
  }
  const seconds = (performance.now() - start) / 1000;
  return {
    opsPerSec: totalBytes / chunkSize / seconds,
    bytesPerSec: totalBytes / seconds,
    p50Us: Number.NaN,
    p99Us: Number.NaN,
    syncsPerSec: Number.NaN,
  };
}

async function writeFully(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    if (bytesWritten === 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

/**
 * The disk's streaming limit for a standby: `totalBytes` written sequentially into a new
 * file in `chunkSize` writes with a datasync every `syncEvery` bytes (and at the end), the
 * way a standby writes and flushes received WAL.
 */
export async function measureRawSequentialSync(options: {
  file: string;
  totalBytes: number;
  chunkSize: number;
  syncEvery: number;
}): Promise<RunResult> {
  const { file, totalBytes, chunkSize, syncEvery } = options;
  const handle = await fs.open(file, 'w');
  const data = Buffer.alloc(chunkSize, 0x5a);
  let syncs = 0;
  const start = performance.now();
  try {
    for (let done = 0; done < totalBytes; ) {
      await writeFully(handle, data, done);
      done += chunkSize;
      if (done % syncEvery === 0 || done >= totalBytes) {
        await handle.datasync();
        syncs++;
      }
    }
  } finally {
    await handle.close();
    await fs.rm(file, { force: true });
  }
  const seconds = (performance.now() - start) / 1000;
  return {
    opsPerSec: totalBytes / chunkSize / seconds,
    bytesPerSec: totalBytes / seconds,
    p50Us: Number.NaN,
    p99Us: Number.NaN,
    syncsPerSec: syncs / seconds,
  };
}

/** Writes `data` to a new file `name` in `dir` through `name.tmp`: write, datasync, close, rename, fsync of the directory. */
async function writeFileDurably(dir: string, name: string, data: Buffer): Promise<void> {
  const temp = `${dir}/${name}.tmp`;
  const handle = await fs.open(temp, 'w');
  try {
    await writeFully(handle, data, 0);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await fs.rename(temp, `${dir}/${name}`);
  const directory = await fs.open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/**
 * The minimum durable work of a promotion, done with plain `node:fs` calls in `dir`, timed
 * once per sample (ms): the control file's update (an existing 16 KiB file, `controlBytes`
 * written in place at offset 0, fdatasynced, then at 8 KiB, fdatasynced: the commit point);
 * then one record of `recordBytes` written at the next offset of a pre-allocated file (the WAL
 * segment) and fdatasynced (the end-of-recovery record). The history file is not on the path
 * (the control file records its entry; it is written a second later). `dir` must hold
 * `preallocated`, a zero-filled file of at least `samples × recordBytes` bytes.
 */
export async function measureRawPromotion(options: {
  dir: string;
  preallocated: string;
  samples: number;
  controlBytes: number;
  recordBytes: number;
}): Promise<number[]> {
  const { dir, preallocated, samples, controlBytes, recordBytes } = options;
  const control = Buffer.alloc(controlBytes, 0x63);
  const record = Buffer.alloc(recordBytes, 0x72);
  // The control file exists (two 8 KiB copies), durably, before the clock starts.
  const controlPath = `${dir}/control`;
  await writeFileDurably(dir, 'control', Buffer.alloc(16 * 1024));
  const wal = await fs.open(preallocated, 'r+');
  const times: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const start = performance.now();
      const file = await fs.open(controlPath, 'r+');
      try {
        await writeFully(file, control, 0);
        await file.datasync();
        await writeFully(file, control, 8 * 1024);
        await file.datasync();
      } finally {
        await file.close();
      }
      await writeFully(wal, record, i * recordBytes);
      await wal.datasync();
      times.push(performance.now() - start);
    }
  } finally {
    await wal.close();
  }
  return times;
}
