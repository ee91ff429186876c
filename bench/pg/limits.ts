/**
 * The physical limits of this machine, measured in the same run as the cases, in the same
 * directory: `pg_test_fsync`'s fdatasync figure (PostgreSQL's own tool, from C), one write +
 * fdatasync from Node, a loopback TCP round trip between two processes, the disk's sequential
 * rate with periodic fdatasyncs, and the minimum durable work of a promotion.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { PREALLOCATED_SIZE, createZeroFilled, measureRawPromotion, measureRawSequentialSync, measureRawSync } from '../raw-disk.js';
import { median, percentileOfSorted } from '../stats.js';
import { onCleanup } from './cleanup.js';
import { runPg } from './exec.js';
import type { MeasuredLimits } from './limit-model.js';

/**
 * `pg_test_fsync`'s figure for one 8 kB write + fdatasync (the first "fdatasync" line of its
 * report: the one-write section), µs per op; NaN when the output has none.
 */
export function parsePgTestFsync(output: string): number {
  const match = /^\s*fdatasync\s+[\d.]+ ops\/sec\s+(\d+) usecs\/op/m.exec(output);
  return match === null ? Number.NaN : Number(match[1]);
}

/** Runs pg_test_fsync as the postgres user on a file in `dir` (which postgres can write), `seconds` per test. */
export async function pgTestFsyncUs(dir: string, seconds: number): Promise<number> {
  const { stdout } = await runPg('pg_test_fsync', ['-s', String(seconds), '-f', path.join(dir, 'pg_test_fsync.tmp')], { timeoutMs: 300_000 });
  return parsePgTestFsync(stdout);
}

/** One 8 KiB write + fdatasync from Node on a pre-allocated file in `dir`, for `durationMs`: p50 µs. */
export async function nodeFdatasyncUs(dir: string, durationMs: number): Promise<number> {
  const file = path.join(dir, 'raw-fdatasync');
  await createZeroFilled(file, PREALLOCATED_SIZE);
  try {
    return (await measureRawSync({ file, writeSize: 8192, durationMs, wrapAt: PREALLOCATED_SIZE })).p50Us;
  } finally {
    await fs.rm(file, { force: true });
  }
}

/** A process that writes 8 KiB + fdatasyncs its own file (argv[1]) in a loop until its stdin closes. */
const SYNC_LOOP = `
const fs = require('node:fs');
const fd = fs.openSync(process.argv[1], 'w');
const data = Buffer.alloc(8192, 0x5a);
let offset = 0;
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
process.stdout.write('ready\\n');
(function loop() {
  fs.writeSync(fd, data, 0, data.length, offset);
  offset = (offset + data.length) % (64 * 1024 * 1024);
  fs.fdatasync(fd, () => setImmediate(loop));
})();
`;

/**
 * One 8 KiB write + fdatasync from Node, as {@link nodeFdatasyncUs}, while `others` processes
 * do the same on files of their own in `dir`: a commit's copies on the primary and each
 * standby all go to this one disk, and with early WAL their fdatasyncs overlap. p50 µs.
 */
export async function sharedDiskFdatasyncUs(dir: string, durationMs: number, others: number): Promise<number> {
  const children = Array.from({ length: others }, (_, i) => spawn(process.execPath, ['-e', SYNC_LOOP, path.join(dir, `raw-fdatasync-other-${i}`)], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const forget = onCleanup(() => {
    for (const child of children) child.kill('SIGKILL');
  });
  try {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve, reject) => {
            child.once('error', reject);
            child.stdout.once('data', () => resolve());
          }),
      ),
    );
    return await nodeFdatasyncUs(dir, durationMs);
  } finally {
    await Promise.all(
      children.map((child) => {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.stdin.end();
        return exited;
      }),
    );
    forget();
    for (let i = 0; i < others; i++) await fs.rm(path.join(dir, `raw-fdatasync-other-${i}`), { force: true });
  }
}

/** The echo side of the round trip, in a process of its own (as a standby is); it exits when its stdin closes. */
const ECHO_SERVER = `
const net = require('node:net');
const server = net.createServer((socket) => { socket.setNoDelay(true); socket.on('data', (d) => socket.write(d)); socket.on('error', () => {}); });
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
`;

/** A 64-byte ping-pong over loopback TCP with a second process, for `durationMs`: p50 µs. */
export async function loopbackRoundTripUs(durationMs: number): Promise<number> {
  const child = spawn(process.execPath, ['-e', ECHO_SERVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  const forget = onCleanup(() => child.kill('SIGKILL'));
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.stdout.setEncoding('utf8').once('data', (line: string) => resolve(Number(line.trim())));
    });
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const ping = Buffer.alloc(64, 0x70);
    const samples: number[] = [];
    const end = performance.now() + durationMs;
    while (performance.now() < end) {
      const start = performance.now();
      let received = 0;
      await new Promise<void>((resolve) => {
        const onData = (chunk: Buffer): void => {
          received += chunk.length;
          if (received >= ping.length) {
            socket.off('data', onData);
            resolve();
          }
        };
        socket.on('data', onData);
        socket.write(ping);
      });
      samples.push((performance.now() - start) * 1000);
    }
    socket.destroy();
    return percentileOfSorted(Float64Array.from(samples).sort(), 0.5);
  } finally {
    child.stdin.end();
    child.kill();
    forget();
  }
}

/** Sequential 1 MiB writes of `bytes` into a new file in `dir`, an fdatasync every 8 MiB: bytes/s. */
export async function sequentialBytesPerSec(dir: string, bytes: number): Promise<number> {
  return (await measureRawSequentialSync({ file: path.join(dir, 'raw-sequential'), totalBytes: bytes, chunkSize: 1024 * 1024, syncEvery: 8 * 1024 * 1024 })).bytesPerSec;
}

/** The minimum durable work of a promotion (bench/raw-disk.ts), `samples` times: p50 ms. */
export async function rawPromotionMs(dir: string, samples: number): Promise<number> {
  const rawDir = path.join(dir, 'raw-promotion');
  await fs.mkdir(rawDir, { recursive: true });
  const preallocated = path.join(rawDir, 'wal');
  await createZeroFilled(preallocated, PREALLOCATED_SIZE);
  try {
    return median(await measureRawPromotion({ dir: rawDir, preallocated, samples, controlBytes: 300, recordBytes: 152 }));
  } finally {
    await fs.rm(rawDir, { recursive: true, force: true });
  }
}

/** The copies of each commit on this one disk: the primary's and its two standbys'. */
const SHARING_COPIES = 3;

/**
 * Every limit once. `pgDir` must be writable by the postgres user (pg_test_fsync runs as it);
 * `dir` is where walship's files go (the same file system).
 */
export async function measureLimits(options: { dir: string; pgDir: string; quick: boolean; fsyncTestSeconds: number }): Promise<MeasuredLimits> {
  const { dir, pgDir, quick } = options;
  await fs.mkdir(dir, { recursive: true });
  const pgTestFsync = await pgTestFsyncUs(pgDir, options.fsyncTestSeconds);
  const fdatasyncUs = await nodeFdatasyncUs(dir, quick ? 1000 : 3000);
  const sharedFdatasyncUs = await sharedDiskFdatasyncUs(dir, quick ? 1000 : 3000, SHARING_COPIES - 1);
  const roundTripUs = await loopbackRoundTripUs(quick ? 500 : 2000);
  const sequential = await sequentialBytesPerSec(dir, (quick ? 128 : 512) * 1024 * 1024);
  const promotionMs = await rawPromotionMs(dir, quick ? 10 : 30);
  return { fdatasyncUs, sharedFdatasyncUs, pgTestFsyncUs: pgTestFsync, roundTripUs, sequentialBytesPerSec: sequential, promotionMs };
}
