import type { Archiver } from '../archive/archiver.js';
import { WalshipError, isWalshipError } from '../errors.js';
import type { Logger } from '../logger.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { Storage } from '../storage/storage.js';
import { RECORD_HEADER_SIZE, RECORD_SEGMENT_END, SEGMENT_HEADER_SIZE, align, checkFormatVersion, checkRecordCrc, checkRecordHeader, readRecordHeader, readSegmentHeader } from '../wal/record.js';
import { segmentFileName } from '../wal/segment-name.js';
import {
  ancestorHistory,
  formatTimelineHistory,
  historyFileName,
  parseTimelineHistory,
  segmentTimeline,
  switchPointOf,
  type TimelineHistory,
} from '../wal/timeline-history.js';
import type { WalLog } from '../wal/wal-log.js';
import { describeHistory, extendsHistory } from './upstream.js';
import { clearTimer, currentScheduler, type SchedulerTimer } from '../scheduler.js';

/** What restoring from the archive needs of the standby. */
export interface RestoreHost {
  readonly archiver: Archiver;
  readonly storage: Storage;
  readonly log: WalLog;
  /** Which timelines to follow (`recoveryTargetTimeline`). */
  readonly recoveryTargetTimeline: 'latest' | 'current' | number;
  /** The longest one archiver call may take. */
  readonly callTimeoutMs: number;
  readonly signal: AbortSignal;
  readonly debug: Logger;
  /** Moves the standby onto `history`'s timeline at its switch point, where the log ends now (as a switch over the stream does). */
  follow(history: TimelineHistory): Promise<void>;
  /**
   * Called before WAL from the archive is first written (the directory must say "standby"
   * first); `overlapChecked` says whether the log's last bytes were compared with the archive's.
   */
  beforeWrite(overlapChecked: boolean): Promise<void>;
  /** A segment (or the part of one before a switch point) was written into the log. */
  restored(name: string, endLsn: Lsn): void;
}

/**
 * Restores WAL from the archive into the standby's log (PostgreSQL's `restore_command` loop
 * of `xlogrecovery.c`): the segment that holds the log's end, then the next, until the archive
 * has no next one, following newer timelines whose history files the archive holds
 * (`recoveryTargetTimeline`). Each segment is checked whole before a byte of it is written
 * (its header, and a chain of intact records from its start to its end), and the part the log
 * already holds must match it: WAL from the archive goes into the log exactly like WAL from
 * the stream, so replay, cascading and promotion treat both alike. One segment is in memory
 * at a time. Resolves with how many segments it restored.
 */
export async function restoreFromArchive(host: RestoreHost): Promise<number> {
  const { log } = host;
  const size = log.segmentSize;
  let target = await newestTimeline(host);
  let restored = 0;
  for (;;) {
    throwIfAborted(host.signal);
    const end = log.insertLsn;
    const segno = Math.floor(end / size);
    // The segment under the target timeline's name: one that a switch point lies in is the
    // new timeline's, its bytes below the switch point the old one's.
    const name = segmentFileName(segmentTimeline(target, segno, size), segno, size);
    const data = await call(host, `getting ${name}`, (signal) => host.archiver.get(name, { signal }));
    if (data === null) return restored;
    const segment = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    checkSegment(segment, name, segno, size);
    const overlapChecked = await checkOverlap(host, segment, name, segno);
    // Before anything changes: the directory says "standby" first (a timeline switch included).
    if (restored === 0) await host.beforeWrite(overlapChecked);
    while (target.timeline > log.timeline && end === switchPointOf(target, log.timeline)) {
      await host.follow(ancestorHistory(target, nextTimeline(target, log.timeline)) as TimelineHistory);
    }
    // Up to the switch point when the target timeline leaves this one inside the segment.
    const switchLsn = target.timeline > log.timeline ? (switchPointOf(target, log.timeline) as Lsn) : Infinity;
    const upTo = Math.min((segno + 1) * size, switchLsn);
    const within = end - segno * size;
    log.writeBytes(end, segment.subarray(within, upTo - segno * size));
    await log.flush();
    // The archive holds only WAL its primary made durable, and the log's part of the segment matched it.
    log.confirmUpstreamDurable(upTo);
    restored++;
    host.restored(name, upTo);
  }
}

/**
 * The history this standby restores along: its own, or with `recoveryTargetTimeline` `latest`
 * (or a number) the newest timeline past it whose history file the archive holds and that
 * continues it (PostgreSQL's `findNewestTimeLine`, `rescanLatestTimeLine`). A newer timeline
 * that left this one before the log's end is not followed (logged): the standby holds WAL that
 * is not on it.
 */
async function newestTimeline(host: RestoreHost): Promise<TimelineHistory> {
  const { log, recoveryTargetTimeline: target } = host;
  let newest = log.history;
  if (target === 'current') return newest;
  for (let timeline = log.timeline + 1; typeof target !== 'number' || timeline <= target; timeline++) {
    const name = historyFileName(timeline);
    const data = await call(host, `getting ${name}`, (signal) => host.archiver.get(name, { signal }));
    if (data === null) break;
    let history: TimelineHistory;
    try {
      history = parseTimelineHistory(timeline, Buffer.from(data).toString('utf8'), `the archive's ${name}`);
      formatTimelineHistory(history);
    } catch (err) {
      host.debug.error('%s in the archive cannot be used: %s', name, (err as Error).message);
      break;
    }
    if (!extendsHistory(history, log.history)) continue;
    const switchLsn = switchPointOf(history, log.timeline);
    if (switchLsn === undefined || (switchLsn !== null && switchLsn < log.insertLsn)) {
      host.debug.error(
        'timeline %d in the archive (%s) left timeline %d at %s, before this standby\'s WAL ends (%s): not followed',
        timeline,
        describeHistory(history),
        log.timeline,
        switchLsn === undefined ? '?' : formatLsn(switchLsn),
        formatLsn(log.insertLsn),
      );
      continue;
    }
    newest = history;
  }
  return newest;
}

/** The timeline that follows `timeline` in `history` (an ancestor of its own). */
function nextTimeline(history: TimelineHistory, timeline: number): number {
  const at = history.entries.findIndex((entry) => entry.timeline === timeline);
  return history.entries[at + 1]?.timeline ?? history.timeline;
}

/**
 * A segment from the archive is whole and intact: `segmentSize` bytes, its header naming its
 * position, and records that chain from the header to the segment's end (or to a
 * segment-end record), each at its own position with an intact checksum. Anything else is
 * `ARCHIVE_FAILED` and nothing of it is written.
 */
function checkSegment(buf: Buffer, name: string, segno: number, size: number): void {
  const bad = (why: string): WalshipError => new WalshipError('ARCHIVE_FAILED', `the archive's ${name} is not a valid WAL segment: ${why}; it was not restored`);
  if (buf.length !== size) throw bad(`${buf.length} bytes, not ${size}`);
  const header = readSegmentHeader(buf, 0);
  if (header === null) throw bad('its header is damaged');
  if (header.segmentSize !== size || header.startLsn !== segno * size) throw bad(`its header is of a segment at ${formatLsn(header.startLsn)} of ${header.segmentSize} bytes`);
  // A format this walship does not read (written by a newer one): `WAL_FORMAT`, as from the stream.
  checkFormatVersion(header.formatVersion, `the archive's ${name}`);
  const start = segno * size;
  let at = SEGMENT_HEADER_SIZE;
  while (size - at >= RECORD_HEADER_SIZE) {
    const record = readRecordHeader(buf, at);
    const problem = checkRecordHeader(record, start + at, size - at);
    if (problem !== null) throw bad(`at ${formatLsn(start + at)}: ${problem}`);
    if (!checkRecordCrc(buf, at, record)) throw bad(`the record at ${formatLsn(start + at)} fails its checksum`);
    if (record.type === RECORD_SEGMENT_END) return;
    at += align(record.length);
  }
}

/** The part of the segment that the log already holds must be what the archive holds; resolves whether there was such a part. */
async function checkOverlap(host: RestoreHost, segment: Buffer, name: string, segno: number): Promise<boolean> {
  const { log, storage } = host;
  const start = segno * log.segmentSize;
  const from = Math.max(start, log.oldestLsn);
  const end = log.insertLsn;
  if (end <= from) return false;
  const local = Buffer.allocUnsafe(end - from);
  const file = await storage.open(log.segmentName(start), { readOnly: true });
  try {
    const read = await file.read(local, 0, local.length, from - start);
    if (read !== local.length) throw new WalshipError('WAL_IO', `${file.name} ends before ${formatLsn(end)}`);
  } finally {
    await file.close();
  }
  if (!local.equals(segment.subarray(from - start, end - start))) {
    throw new WalshipError(
      'ARCHIVE_FAILED',
      `the archive's ${name} differs from this standby's WAL between ${formatLsn(from)} and ${formatLsn(end)}: it is not the WAL this standby follows (another cluster's, or another timeline's); it was not restored`,
    );
  }
  return true;
}

/** One archiver call under the standby's signal and the call deadline; failures are `ARCHIVE_FAILED`. */
function call<T>(host: RestoreHost, what: string, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  return archiverCall(host.signal, host.callTimeoutMs, what, run);
}

/**
 * One archiver call under `signal` and a deadline of `timeoutMs`; a failure is
 * `ARCHIVE_FAILED`, an abort `ABORTED`. An archiver that ignores its signal is not waited
 * for: not once `signal` aborts, and not past the deadline.
 */
export async function archiverCall<T>(signal: AbortSignal, timeoutMs: number, what: string, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const callSignal = AbortSignal.any([signal, currentScheduler().timeoutSignal(timeoutMs)]);
  let timer: SchedulerTimer | undefined;
  let onAbort: (() => void) | undefined;
  const abandoned = new Promise<never>((_, reject) => {
    timer = currentScheduler().setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs + 1000).unref();
    onAbort = () => reject(new Error('abandoned'));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([run(callSignal), abandoned]);
  } catch (err) {
    throwIfAborted(signal);
    if (isWalshipError(err, 'ARCHIVE_FAILED')) throw err;
    throw new WalshipError('ARCHIVE_FAILED', `${what} from the archive failed: ${(err as Error)?.message ?? String(err)}`, { cause: err, transient: true });
  } finally {
    clearTimer(timer);
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
  }
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new WalshipError('ABORTED', 'restoring from the archive stopped', { cause: signal.reason });
}
