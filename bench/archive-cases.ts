/**
 * Archiving benchmark cases (section 9, issue #14), on the compiled package (dist/), real
 * files in the benchmark's temp dir, fdatasync everywhere, 16 MiB segments:
 *
 * - archive throughput: a primary's directory holding N complete segments, written with
 *   archiving off, is opened again with `archive: { mode: 'on', archiver: FileSystemArchive }`;
 *   the archiver marks every complete segment ready and archives them one by one. Timed from
 *   the `Primary.open()` call until `archiverStatus()` shows all N archived and none pending.
 *   Its limit ({@link rawArchiveCopy}) copies the same files with plain node:fs calls, doing
 *   only the durable work FileSystemArchive's put must do;
 * - archive-only standby lag: a primary with `archive.timeoutMs` commits a trickle of small
 *   entries, each carrying its commit time, and an archive-only standby in a peer process
 *   (bench/replication-peer.mjs) records when it replayed each;
 * - recovery from the archive: an archive-only standby in a peer process, opened on a base
 *   backup's directory, restores and replays a backlog of archived WAL; timed from its open
 *   until it has replayed the end (compared, in bench/run.ts, with section 5's streaming
 *   catch-up of the same size).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import type * as Walship from '../src/index.js';
import { CountingApp, Peer, commitBytes, type CatchUpResult } from './replication-cases.js';

const W = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof Walship;

/** walship's default segment size, which every case here uses. */
export const SEGMENT_BYTES = 16 * 1024 * 1024;
/** Segment file names: timeline and position, 24 hex digits. */
const SEGMENT_NAME = /^[0-9A-F]{24}$/;
/** How long a setup step may take before the case gives up (a bug, not a slow machine). */
const SETUP_TIMEOUT_MS = 120_000;

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every millisecond until it holds; rejects after {@link SETUP_TIMEOUT_MS}. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + SETUP_TIMEOUT_MS;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

// ---- page cache ----

/**
 * Reads `files` once, so that they are in the page cache (this machine cannot drop caches,
 * so both sides of a comparison start from cached files instead).
 */
export async function warm(files: readonly string[]): Promise<void> {
  const buf = Buffer.allocUnsafe(SEGMENT_BYTES);
  for (const file of files) {
    const handle = await fs.open(file, 'r');
    try {
      while ((await handle.read(buf, 0, buf.length)).bytesRead > 0);
    } finally {
      await handle.close();
    }
  }
}

/** The fraction of `files`' bytes in the page cache (`fincore`), or NaN when fincore is missing. */
export function residentFraction(files: readonly string[]): number {
  if (files.length === 0) return Number.NaN;
  const out = spawnSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES,SIZE', ...files], { encoding: 'utf8' });
  if (out.status !== 0) return Number.NaN;
  let resident = 0;
  let size = 0;
  for (const line of out.stdout.trim().split('\n')) {
    const [res, total] = line.trim().split(/\s+/).map(Number);
    resident += res ?? 0;
    size += total ?? 0;
  }
  return size === 0 ? Number.NaN : resident / size;
}

// ---- 1. archive throughput ----

/** A primary's directory holding `segments` complete segments (archiving off when written). */
export interface ArchiveSource {
  readonly dir: string;
  /** The complete segments' file names, oldest first. */
  readonly segments: readonly string[];
}

/** What one archiving run (walship's or the raw copy) measured. */
export interface ArchiveRun {
  readonly segments: number;
  readonly bytes: number;
  readonly seconds: number;
  /** walship: how long `Primary.open()` took (recovery's scan of the WAL, then the archiver's start), s; raw: 0. */
  readonly openSeconds: number;
  /** walship: segments already archived when `open()` resolved. */
  readonly archivedAtOpen: number;
  /** The fraction of the source files in the page cache just before the clock started. */
  readonly sourceResident: number;
}

/**
 * Writes `segments` complete 16 MiB segments: 64 committers commit batches of 8 rows of 1 KiB
 * (section 5's) until the WAL reaches the last one, which `switchWal()` ends. A checkpoint at
 * the end (with `walKeepSize` keeping every segment) means the next open replays nothing into
 * the application, so that it only scans the WAL before archiving.
 */
export async function prepareArchiveSource(base: string, segments: number): Promise<ArchiveSource> {
  const dir = path.join(base, 'archive-source');
  const primary = await W.Primary.open({ dir, application: new CountingApp(), synchronousCommit: 'local', walKeepSize: (segments + 4) * SEGMENT_BYTES });
  try {
    // Segment 1 starts at one segment's size: the WAL is complete up to segment `segments` once it reaches it.
    const last = segments * SEGMENT_BYTES;
    while (primary.currentLsn <= last) await commitBytes(primary, Math.min(64 * 1024 * 1024, last - primary.currentLsn + 8192));
    await primary.switchWal();
    await primary.checkpoint(primary.appliedLsn);
  } finally {
    await primary.close();
  }
  const names = (await fs.readdir(dir)).filter((name) => SEGMENT_NAME.test(name)).sort();
  const complete = names.slice(0, segments);
  if (complete.length !== segments) throw new Error(`expected ${segments} complete segments in ${dir}, found ${names.length} segment files`);
  return { dir, segments: complete };
}

/** Removes the archive status markers of `source` (untimed), so that the next open archives every segment again. */
async function forgetArchived(source: ArchiveSource): Promise<void> {
  for (const name of await fs.readdir(source.dir)) {
    if (/\.(ready|done)$/.test(name)) await fs.rm(path.join(source.dir, name));
  }
}

/** An empty directory at `dir` (what was there is removed, untimed). */
async function emptyDir(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
}

/**
 * walship's archiver: opens `source` again with archiving on into a `FileSystemArchive` on
 * the empty directory `archiveDir`; timed from the `open()` call until every complete
 * segment is archived (`archive:done` for each, `pendingCount` 0).
 */
export async function archiveThroughput(source: ArchiveSource, archiveDir: string): Promise<ArchiveRun> {
  await forgetArchived(source);
  await emptyDir(archiveDir);
  const files = source.segments.map((name) => path.join(source.dir, name));
  await warm(files);
  const sourceResident = residentFraction(files);
  const expected = new Set(source.segments);
  const started = performance.now();
  const primary = await W.Primary.open({
    dir: source.dir,
    application: new CountingApp(),
    synchronousCommit: 'local',
    walKeepSize: (source.segments.length + 4) * SEGMENT_BYTES,
    archive: { mode: 'on', archiver: new W.FileSystemArchive(archiveDir) },
  });
  const opened = performance.now();
  try {
    const archivedAtOpen = primary.archiverStatus().archivedCount;
    let left = expected.size - archivedAtOpen;
    let finished = opened;
    if (left > 0) {
      // Counted by event: the clock stops at the last segment's archive:done.
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`archiving did not finish within ${SETUP_TIMEOUT_MS} ms`)), SETUP_TIMEOUT_MS);
        primary.on('archive:done', ({ name }) => {
          if (expected.has(name) && --left === 0) {
            finished = performance.now();
            resolve();
          }
        });
      }).finally(() => clearTimeout(timer));
    }
    const status = primary.archiverStatus();
    if (status.pendingCount !== 0 || status.archivedCount < expected.size || status.failedCount !== 0) {
      throw new Error(`archiving ended with ${status.archivedCount} archived, ${status.pendingCount} pending, ${status.failedCount} failures`);
    }
    const seconds = (finished - started) / 1000;
    return { segments: expected.size, bytes: expected.size * SEGMENT_BYTES, seconds, openSeconds: (opened - started) / 1000, archivedAtOpen, sourceResident };
  } finally {
    await primary.close();
  }
}

/**
 * The raw limit of archiving: the same segment files copied one at a time, as the archiver
 * does, with plain node:fs calls and only the durable work of a safe put: open the segment,
 * read it whole into a reused buffer, close it; create a temporary file in `targetDir`, write
 * the segment in one write, fdatasync, close; rename it to its name; fsync the directory.
 * (FileSystemArchive also checks that the name is free, fsyncs instead of fdatasyncs, links
 * instead of renaming and unlinks the temporary name, and walship renames a marker file:
 * none of that is done here.)
 */
export async function rawArchiveCopy(source: ArchiveSource, targetDir: string): Promise<ArchiveRun> {
  await emptyDir(targetDir);
  const files = source.segments.map((name) => path.join(source.dir, name));
  await warm(files);
  const sourceResident = residentFraction(files);
  const buf = Buffer.allocUnsafe(SEGMENT_BYTES);
  const started = performance.now();
  for (const name of source.segments) {
    const input = await fs.open(path.join(source.dir, name), 'r');
    let length = 0;
    try {
      length = (await input.read(buf, 0, buf.length, 0)).bytesRead;
    } finally {
      await input.close();
    }
    const temp = path.join(targetDir, `.${name}.tmp`);
    const output = await fs.open(temp, 'wx');
    try {
      await output.write(buf, 0, length, 0);
      await output.datasync();
    } finally {
      await output.close();
    }
    await fs.rename(temp, path.join(targetDir, name));
    const directory = await fs.open(targetDir, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  return { segments: source.segments.length, bytes: source.segments.length * SEGMENT_BYTES, seconds, openSeconds: 0, archivedAtOpen: 0, sourceResident };
}

// ---- 2. archive-only standby lag ----

/** What the lag case measured. */
export interface ArchiveLagRun {
  /** Commit → replayed on the archive-only standby, ms, one per commit, ascending. */
  readonly lagsMs: readonly number[];
  readonly commits: number;
  /** Commits per second the primary took (open loop). */
  readonly rate: number;
  /** Segments the primary archived during the trickle (each a timeout switch). */
  readonly segmentsArchived: number;
  /** The archiver's puts during the trickle, ms each. */
  readonly putMs: readonly number[];
}

/** Options of {@link archiveLag}. */
export interface ArchiveLagOptions {
  readonly timeoutMs: number;
  readonly restoreIntervalMs: number;
  /** Commits per second, each of `entryBytes`, for `durationMs`. */
  readonly rate: number;
  readonly entryBytes: number;
  readonly durationMs: number;
}

/**
 * A primary (this process) with `archive: { mode: 'on', archiver: FileSystemArchive, timeoutMs }`
 * and an archive-only standby (a peer process, `restoreIntervalMs`) on its base backup. The
 * primary commits `rate` entries per second (open loop, `synchronousCommit: 'local'`), each
 * carrying its commit time (epoch ms) in its first 8 bytes; the standby's application records
 * how long after that it applied it. The primary's puts are timed through a wrapper that
 * only calls FileSystemArchive and reads the clock.
 */
export async function archiveLag(base: string, options: ArchiveLagOptions): Promise<ArchiveLagRun> {
  const dir = path.join(base, 'archive-lag');
  const archiveDir = path.join(dir, 'archive');
  const standbyDir = path.join(dir, 'standby');
  const archive = new W.FileSystemArchive(archiveDir);
  const putMs: number[] = [];
  let timing = false;
  const timed: Walship.Archiver = {
    put: async (name, data, callOptions) => {
      const started = performance.now();
      await archive.put(name, data, callOptions);
      if (timing) putMs.push(performance.now() - started);
    },
    get: (name, callOptions) => archive.get(name, callOptions),
    list: (prefix, callOptions) => archive.list(prefix, callOptions),
  };
  const primary = await W.Primary.open({
    dir: path.join(dir, 'primary'),
    application: new CountingApp(),
    synchronousCommit: 'local',
    archive: { mode: 'on', archiver: timed, timeoutMs: options.timeoutMs },
  });
  let peer: Peer | null = null;
  try {
    await primary.baseBackup({ dir: standbyDir });
    peer = await Peer.start();
    await peer.ask({ cmd: 'open', restoreDir: archiveDir, restoreIntervalMs: options.restoreIntervalMs, dirs: [standbyDir], wait: false });
    // Warm-up: one commit, replayed once the timeout has ended and archived its segment.
    const entry = (stamp: number): Buffer => {
      const buf = Buffer.alloc(options.entryBytes, 0x61);
      buf.writeDoubleLE(stamp, 0);
      return buf;
    };
    const { lsn: warmLsn } = await primary.commit([entry(0)]);
    await peer.ask({ cmd: 'wait', lsn: warmLsn });
    await peer.ask({ cmd: 'latency' });
    const archivedBefore = primary.archiverStatus().archivedCount;
    timing = true;
    const commits: Promise<Walship.CommitResult>[] = [];
    const count = Math.round((options.durationMs / 1000) * options.rate);
    const started = performance.now();
    for (let i = 0; i < count; i++) {
      const due = started + (i * 1000) / options.rate;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      commits.push(primary.commit([entry(now())]));
    }
    const results = await Promise.all(commits);
    const seconds = (performance.now() - started) / 1000;
    const last = Math.max(...results.map((r) => r.lsn));
    await peer.ask({ cmd: 'wait', lsn: last });
    timing = false;
    const segmentsArchived = primary.archiverStatus().archivedCount - archivedBefore;
    const { latencies } = await peer.ask<{ latencies: number[] }>({ cmd: 'latency' });
    if (latencies.length !== count) throw new Error(`the standby recorded ${latencies.length} of ${count} commits`);
    return {
      lagsMs: Array.from(Float64Array.from(latencies.map((us) => us / 1000)).sort()),
      commits: count,
      rate: count / seconds,
      segmentsArchived,
      putMs,
    };
  } finally {
    await peer?.close();
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

// ---- 3. recovery from the archive ----

/** An archive holding `walBytes` of WAL past a base backup, written once and restored by every round. */
export interface RestoreSource {
  readonly archiveDir: string;
  /** A standby directory written by `primary.baseBackup()` before the WAL; each round restores onto a copy. */
  readonly backupDir: string;
  /** The base backup's position and the end of the last commit. */
  readonly from: number;
  readonly to: number;
  readonly segments: number;
}

/**
 * A primary with archiving on into a `FileSystemArchive`, a base backup taken first, then
 * `bytes` of rows (section 5's batches) committed, the last segment ended by `switchWal()`
 * and everything archived. The primary's own directory is removed afterwards (a standby
 * restoring from the archive does not need it).
 */
export async function prepareRestoreSource(base: string, bytes: number): Promise<RestoreSource> {
  const dir = path.join(base, 'restore-source');
  const archiveDir = path.join(dir, 'archive');
  const backupDir = path.join(dir, 'backup');
  const primaryDir = path.join(dir, 'primary');
  const primary = await W.Primary.open({
    dir: primaryDir,
    application: new CountingApp(),
    synchronousCommit: 'local',
    archive: { mode: 'on', archiver: new W.FileSystemArchive(archiveDir) },
  });
  let from = 0;
  let to = 0;
  try {
    await primary.baseBackup({ dir: backupDir });
    from = primary.currentLsn;
    await commitBytes(primary, bytes);
    to = primary.currentLsn;
    await primary.switchWal();
    await until(() => primary.archiverStatus().pendingCount === 0, 'the archiver to archive everything');
  } finally {
    await primary.close();
    await fs.rm(primaryDir, { recursive: true, force: true });
  }
  const segments = (await fs.readdir(archiveDir)).filter((name) => SEGMENT_NAME.test(name)).length;
  return { archiveDir, backupDir, from, to, segments };
}

/** The archive's segment files, for warming and {@link residentFraction}. */
export async function archiveFiles(source: RestoreSource): Promise<string[]> {
  return (await fs.readdir(source.archiveDir)).filter((name) => SEGMENT_NAME.test(name)).map((name) => path.join(source.archiveDir, name));
}

/** What one restore run measured; `archiveResident` is the archive's fraction in the page cache at the start. */
export interface RestoreRun extends CatchUpResult {
  readonly archiveResident: number;
}

/**
 * An archive-only standby in a peer process, on a fresh copy of the base backup, restoring
 * `restoreIntervalMs` apart from `source`'s archive: timed from the `open` command (the peer
 * process already running) until it has received (written and flushed) and replayed the
 * last commit. The archive is read once beforehand (untimed), as a streaming catch-up's
 * primary has just written its WAL.
 */
export async function archiveRecovery(base: string, source: RestoreSource, restoreIntervalMs: number): Promise<RestoreRun> {
  const standbyDir = path.join(base, 'restore-standby');
  await fs.rm(standbyDir, { recursive: true, force: true });
  await fs.cp(source.backupDir, standbyDir, { recursive: true });
  const files = await archiveFiles(source);
  await warm(files);
  const archiveResident = residentFraction(files);
  const peer = await Peer.start();
  try {
    const { cpu: cpuBefore } = await peer.ask<{ cpu: NodeJS.CpuUsage }>({ cmd: 'cpu' });
    const started = now();
    const opened = peer.ask({ cmd: 'open', restoreDir: source.archiveDir, restoreIntervalMs, dirs: [standbyDir], wait: false });
    const { receivedAt, replayedAt, cpu } = await peer.ask<{ receivedAt: number; replayedAt: number; cpu: NodeJS.CpuUsage }>({ cmd: 'wait', lsn: source.to });
    await opened;
    const walBytes = source.to - source.from;
    return {
      walBytes,
      receiveBytesPerSec: walBytes / ((receivedAt - started) / 1000),
      replayBytesPerSec: walBytes / ((replayedAt - started) / 1000),
      seconds: (replayedAt - started) / 1000,
      primaryCpuSeconds: 0,
      standbyCpuSeconds: (cpu.user + cpu.system - cpuBefore.user - cpuBefore.system) / 1e6,
      archiveResident,
    };
  } finally {
    await peer.close();
    await fs.rm(standbyDir, { recursive: true, force: true });
  }
}
