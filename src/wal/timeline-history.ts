import crc32c from 'fast-crc32c';
import { WalshipError, errnoCode } from '../errors.js';
import { formatLsn, parseLsn, type Lsn } from '../lsn.js';
import type { Storage } from '../storage/storage.js';
import { replaceFileDurably } from '../storage/replace-file.js';

/**
 * Timeline history files, as PostgreSQL keeps them (`timeline.c`): when a standby is
 * promoted it starts timeline N + 1 and writes `0000000N+1.history`, one line per ancestor
 * timeline, oldest first: the ancestor's number, the LSN where the history switched away from
 * it, and a reason. WAL at or past a switch point on an ancestor timeline is not part of the
 * new timeline's history. walship writes the same text (so the files read like PostgreSQL's)
 * plus a comment line with a CRC-32C of the lines above it, which it checks when present.
 */

/** One ancestor timeline in a history: WAL on `timeline` belongs to the history below `switchLsn`. */
export interface TimelineHistoryEntry {
  /** An ancestor timeline. */
  readonly timeline: number;
  /** Where the history left this timeline (the first position of the next one). */
  readonly switchLsn: Lsn;
  /** Why the timeline was left, as written in the history file (e.g. a promotion's reason), on one line. */
  readonly reason: string;
}

/** The history of `timeline`: its ancestors, oldest first (empty for timeline 1). */
export interface TimelineHistory {
  /** The timeline this history leads to. */
  readonly timeline: number;
  /** Its ancestors, oldest first, each with where it was left. */
  readonly entries: readonly TimelineHistoryEntry[];
}

/** The history of timeline 1, which has no ancestors. */
export const FIRST_TIMELINE_HISTORY: TimelineHistory = Object.freeze({ timeline: 1, entries: Object.freeze([]) });

/**
 * Longest history file walship reads, and so writes (a PostgreSQL cluster with thousands of
 * promotions stays far below): a history that would be longer is `FILE_TOO_LARGE` when it is
 * formatted, before any file is written. It is also what TIMELINE_HISTORY carries at most
 * (`PROTOCOL_LIMITS.maxHistoryBytes`).
 */
export const MAX_HISTORY_BYTES = 1024 * 1024;
/**
 * Longest reason a new history entry keeps, in characters ({@link branchHistory} cuts longer
 * ones, as the control file's `switchedFrom` does): one promotion adds at most about 3 KiB.
 */
export const MAX_SWITCH_REASON = 1024;
const MAX_TIMELINE = 0xffffffff;
const CHECKSUM = /^# crc32c ([0-9a-f]{8})[ \t\r]*$/m;

/** `0000000N.history`, PostgreSQL's `TLHistoryFileName`. */
export function historyFileName(timeline: number): string {
  assertTimeline(timeline);
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/**
 * The file text of `history` (the checksum line last). A text longer than
 * {@link MAX_HISTORY_BYTES} in UTF-8, which no reader would take, is `FILE_TOO_LARGE`.
 */
export function formatTimelineHistory(history: TimelineHistory): string {
  checkHistory(history, 'cannot write');
  const lines = history.entries.map((e) => `${e.timeline}\t${formatLsn(e.switchLsn)}\t${oneLine(e.reason)}\n`).join('');
  const linesBytes = Buffer.from(lines, 'utf8');
  const text = `${lines}# crc32c ${crc32c.calculate(linesBytes).toString(16).padStart(8, '0')}\n`;
  // The checksum line is 18 bytes.
  if (linesBytes.length + 18 > MAX_HISTORY_BYTES) {
    throw new WalshipError(
      'FILE_TOO_LARGE',
      `the history file of timeline ${history.timeline} would take ${linesBytes.length + 18} bytes (${history.entries.length} entries), more than the ${MAX_HISTORY_BYTES} walship reads back: this history can grow no more`,
    );
  }
  return text;
}

/**
 * Parses the history file of `timeline`. Blank lines and `#` comments are skipped, as
 * PostgreSQL does; a walship checksum line, when present, must match. Timelines must rise
 * and stay below `timeline`, switch points must not go back. Anything else is `WAL_CORRUPT`.
 */
export function parseTimelineHistory(timeline: number, text: string, source = historyFileName(timeline)): TimelineHistory {
  assertTimeline(timeline);
  let lines = text;
  const sum = CHECKSUM.exec(text);
  // A checksum that is there but not on a line of its own was damaged (or folded into a line).
  if (sum === null && text.includes('# crc32c ')) throw corrupt(source, 'damaged checksum line');
  if (sum !== null) {
    // The checksum covers everything above its line; nothing but blank lines may follow it.
    lines = text.slice(0, sum.index);
    if (text.slice(sum.index + sum[0].length).trim() !== '') throw corrupt(source, 'lines after the checksum');
    if (crc32c.calculate(Buffer.from(lines, 'utf8')) !== Number.parseInt(sum[1] as string, 16)) throw corrupt(source, 'checksum mismatch');
  }
  const entries: TimelineHistoryEntry[] = [];
  for (const raw of lines.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    // Control characters never belong in a line (walship writes none): damage, e.g. a newline
    // flipped into another character that would fold the checksum line into a reason.
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(line)) throw corrupt(source, 'a control character in a line');
    const fields = line.split('\t');
    const tli = Number(fields[0]?.trim());
    if (fields.length < 2 || !Number.isInteger(tli) || tli < 1 || tli > MAX_TIMELINE) throw corrupt(source, `unexpected line ${JSON.stringify(line.slice(0, 80))}`);
    let switchLsn: Lsn;
    try {
      switchLsn = parseLsn((fields[1] as string).trim());
    } catch {
      throw corrupt(source, `invalid switch point in ${JSON.stringify(line.slice(0, 80))}`);
    }
    entries.push({ timeline: tli, switchLsn, reason: fields.slice(2).join('\t').trim() });
  }
  const history = { timeline, entries };
  checkHistory(history, `timeline history file ${source} is damaged`);
  return history;
}

/**
 * The timeline that `lsn` belongs to in `history` (PostgreSQL's `tliOfPointInHistory`): the
 * first ancestor whose switch point lies past it, else the history's own timeline.
 */
export function timelineOf(history: TimelineHistory, lsn: Lsn): number {
  for (const entry of history.entries) if (lsn < entry.switchLsn) return entry.timeline;
  return history.timeline;
}

/**
 * The timeline whose segment file holds segment `segno` on the history's path: the newest
 * timeline that had begun by the end of that segment. The segment where a timeline begins
 * is copied into the new timeline's file up to the switch point (PostgreSQL's
 * `XLogInitNewTimeLine`), so from there on the new timeline's file holds it.
 */
export function segmentTimeline(history: TimelineHistory, segno: number, segmentSize: number): number {
  const entries = history.entries;
  let timeline = entries[0]?.timeline ?? history.timeline;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as TimelineHistoryEntry;
    if (Math.floor(entry.switchLsn / segmentSize) > segno) break;
    timeline = entries[i + 1]?.timeline ?? history.timeline;
  }
  return timeline;
}

/** Where `timeline` begins in `history`: 0 for the oldest, else its parent's switch point; `undefined` when not in it. */
export function timelineBegin(history: TimelineHistory, timeline: number): Lsn | undefined {
  const entries = history.entries;
  if ((entries[0]?.timeline ?? history.timeline) === timeline) return 0;
  for (let i = 1; i <= entries.length; i++) {
    if ((entries[i]?.timeline ?? history.timeline) === timeline) return (entries[i - 1] as TimelineHistoryEntry).switchLsn;
  }
  return undefined;
}

/**
 * Where `history` left `timeline` (`tliSwitchPoint`): the ancestor's switch point, `null`
 * for the history's own timeline (still current), `undefined` when it is not in the history.
 */
export function switchPointOf(history: TimelineHistory, timeline: number): Lsn | null | undefined {
  if (timeline === history.timeline) return null;
  return history.entries.find((e) => e.timeline === timeline)?.switchLsn;
}

/**
 * Whether WAL up to `lsn` written on `timeline` is part of `history`: the timeline is the
 * history's own, or an ancestor that it left at or after `lsn`. What a standby on `timeline`
 * at `lsn` asks before following a server whose timeline has this history.
 */
export function isInHistory(history: TimelineHistory, timeline: number, lsn: Lsn): boolean {
  const switchLsn = switchPointOf(history, timeline);
  if (switchLsn === undefined) return false;
  return switchLsn === null || lsn <= switchLsn;
}

/**
 * The history of the timeline `timeline` (by default the parent's plus one; a promotion takes
 * one past every timeline it knows of) that branches from `parent` at `switchLsn`, its reason
 * cut to {@link MAX_SWITCH_REASON} characters. A history whose file would be longer than
 * {@link MAX_HISTORY_BYTES} is `FILE_TOO_LARGE`: a promotion finds out here, before it
 * records anything.
 */
export function branchHistory(parent: TimelineHistory, switchLsn: Lsn, reason: string, timeline = parent.timeline + 1): TimelineHistory {
  const last = parent.entries.at(-1);
  if (last !== undefined && switchLsn < last.switchLsn) {
    throw new WalshipError('INVALID_ARGUMENT', `a branch at ${formatLsn(switchLsn)} lies before timeline ${parent.timeline} began (${formatLsn(last.switchLsn)})`);
  }
  const history = { timeline, entries: [...parent.entries, { timeline: parent.timeline, switchLsn, reason: clipReason(reason) }] };
  checkHistory(history, 'cannot branch');
  formatTimelineHistory(history);
  return history;
}

/** `reason` cut to {@link MAX_SWITCH_REASON} characters, never inside a surrogate pair. */
export function clipReason(reason: string): string {
  if (reason.length <= MAX_SWITCH_REASON) return reason;
  const end = /[\ud800-\udbff]/.test(reason.charAt(MAX_SWITCH_REASON - 1)) ? MAX_SWITCH_REASON - 1 : MAX_SWITCH_REASON;
  return reason.slice(0, end);
}

/** The history of `timeline` when it is `history`'s own timeline or one of its ancestors (a prefix of it), else `null`. */
export function ancestorHistory(history: TimelineHistory, timeline: number): TimelineHistory | null {
  if (timeline === history.timeline) return history;
  const at = history.entries.findIndex((entry) => entry.timeline === timeline);
  return at < 0 ? null : { timeline, entries: history.entries.slice(0, at) };
}

/** Reads the history of `timeline` from `storage`: timeline 1's is empty; a missing file for another is `null`. */
export async function readTimelineHistory(storage: Storage, timeline: number): Promise<TimelineHistory | null> {
  if (timeline === 1) return FIRST_TIMELINE_HISTORY;
  const name = historyFileName(timeline);
  let file;
  try {
    file = await storage.open(name, { readOnly: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw ioError('open', name, storage, err);
  }
  try {
    let buf: Buffer;
    try {
      const size = await file.size();
      if (size > MAX_HISTORY_BYTES) throw corrupt(`${name} in ${storage.description}`, `size ${size}`);
      buf = Buffer.alloc(size);
      if ((await file.read(buf, 0, size, 0)) !== size) throw corrupt(`${name} in ${storage.description}`, 'short read');
    } catch (err) {
      if (err instanceof WalshipError) throw err;
      throw ioError('read', name, storage, err);
    }
    return parseTimelineHistory(timeline, buf.toString('utf8'), `${name} in ${storage.description}`);
  } finally {
    await file.close().catch(() => undefined);
  }
}

/**
 * Writes the history file of `history.timeline` durably: a temporary file, synced, renamed
 * into place, the directory synced (a crash leaves no file or the whole file). With
 * `syncDirectory: false` the rename is made durable by the caller's next directory sync (a
 * promotion's control-file write, which must not be durable without it, comes right after).
 */
export async function writeTimelineHistory(storage: Storage, history: TimelineHistory, options: { syncDirectory?: boolean } = {}): Promise<void> {
  const name = historyFileName(history.timeline);
  const data = Buffer.from(formatTimelineHistory(history), 'utf8');
  try {
    await replaceFileDurably(storage, name, data, options);
  } catch (err) {
    throw ioError('write', name, storage, err);
  }
}

/**
 * The newest timeline whose history file `storage` holds, from `from` up
 * (PostgreSQL's `findNewestTimeLine`): probes `from + 1`, `from + 2`, … until one is missing.
 */
export async function newestTimeline(storage: Storage, from: number): Promise<number> {
  assertTimeline(from);
  let newest = from;
  while (newest < MAX_TIMELINE && (await readTimelineHistory(storage, newest + 1)) !== null) newest++;
  return newest;
}

function checkHistory(history: TimelineHistory, what: string): void {
  assertTimeline(history.timeline);
  let previous: TimelineHistoryEntry | null = null;
  for (const entry of history.entries) {
    const problem =
      !Number.isInteger(entry.timeline) || entry.timeline < 1 || entry.timeline >= history.timeline
        ? `timeline ${entry.timeline} is not an ancestor of timeline ${history.timeline}`
        : previous !== null && entry.timeline <= previous.timeline
          ? `timeline ${entry.timeline} follows timeline ${previous.timeline}`
          : previous !== null && entry.switchLsn < previous.switchLsn
            ? `switch point ${formatLsn(entry.switchLsn)} lies before ${formatLsn(previous.switchLsn)}`
            : null;
    if (problem !== null) {
      if (what.startsWith('cannot')) throw new WalshipError('INVALID_ARGUMENT', `${what} the history of timeline ${history.timeline}: ${problem}`);
      throw new WalshipError('WAL_CORRUPT', `${what}: ${problem}`);
    }
    previous = entry;
  }
}

function assertTimeline(timeline: number): void {
  if (!Number.isInteger(timeline) || timeline < 1 || timeline > MAX_TIMELINE) {
    throw new WalshipError('INVALID_ARGUMENT', `a timeline is an integer from 1 to ${MAX_TIMELINE}, got ${String(timeline)}`);
  }
}

/** A reason as one line of printable text (control characters, tabs included, become spaces). */
function oneLine(reason: string): string {
  return reason.replace(/[\x00-\x1f\x7f]+/g, ' ');
}

function corrupt(source: string, why: string): WalshipError {
  return new WalshipError('WAL_CORRUPT', `timeline history file ${source} is damaged (${why})`);
}

function ioError(what: string, name: string, storage: Storage, err: unknown): WalshipError {
  return new WalshipError('WAL_IO', `cannot ${what} ${name} in ${storage.description}: ${(err as Error).message}`, { cause: err });
}
