import { WalCorruptError, errnoCode, isWalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import { isRecoveryState } from '../node/control-file.js';
import { readLockHolder } from '../storage/node-storage.js';
import { recoverEnd } from '../wal/recovery.js';
import { parseSegmentFileName, segmentFileName, segmentStart } from '../wal/segment-name.js';
import { segmentTimeline } from '../wal/timeline-history.js';
import { scanWal, type ScanStop, type ScannedRecord } from '../wal/wal-scan.js';
import { CommandFailure, EXIT_FAILURE, EXIT_OK, UsageError, integerArg, lsnArg, parseCommandArgs, type Command, type Io } from './command.js';
import { readWalDirectory, type WalDirectory } from './wal-directory.js';

const HELP = `Usage: walship waldump <dir> [--start LSN] [--end LSN] [--timeline N]

Prints the WAL in <dir> (a node's data directory, or a directory of archived segments)
one record per line, like pg_waldump: its LSN, length, kind (batch, segment-end, shutdown,
end-of-recovery, restore-point), entry count and checksum status. Reads only: it takes no
lock and writes nothing, so it runs beside a running node.

It stops at the end of valid WAL, saying where and why. When the WAL is damaged there (a node
opening the directory would refuse it with WAL_CORRUPT: a bad record or header before WAL
that was durable, or a segment missing between segments holding WAL), it names the segment,
offset and reason and exits with 1. Beside a running node the end is where its WAL ended
when read ("end of WAL so far", exit 0): damage is reported only where it stays when read
again, and a segment a checkpoint removed while it was read is said to be so.

Options:
  --start LSN      first record to print (X/Y); default: the oldest WAL on disk
  --end LSN        stop before the first record at or past this position
  --timeline N     follow timeline N's history (default: the control file's timeline,
                   else the newest timeline of the segment files)
  -h, --help       this text

Exit codes: 0 the WAL read up to its end (or --end), 1 damage found or the directory could
not be read, 2 bad arguments.`;

/** `walship waldump`: the records of a WAL directory, one line each (PostgreSQL's `pg_waldump`). */
export const waldumpCommand: Command = {
  name: 'waldump',
  summary: 'print the WAL records of a directory, one per line, and where the valid WAL ends',
  help: HELP,
  async run(args, io) {
    const { values, positionals, help } = parseCommandArgs(args, { start: { type: 'string' }, end: { type: 'string' }, timeline: { type: 'string' } }, ['<dir>']);
    if (help) {
      await io.out(HELP);
      return EXIT_OK;
    }
    const start = typeof values['start'] === 'string' ? lsnArg('--start', values['start']) : undefined;
    const end = typeof values['end'] === 'string' ? lsnArg('--end', values['end']) : undefined;
    const timeline = typeof values['timeline'] === 'string' ? integerArg('--timeline', values['timeline'], 1, 0xffffffff) : undefined;
    if (start !== undefined && end !== undefined && end <= start) throw new UsageError(`--end ${formatLsn(end)} is not past --start ${formatLsn(start)}`);
    const wal = await readWalDirectory(positionals[0] as string, timeline);
    const size = wal.segmentSize;
    const oldest = wal.segnos[0];
    if (size === null || oldest === undefined) throw new CommandFailure(`no WAL segments of timeline ${wal.history.timeline}'s history in ${wal.dir}`);
    const from = start ?? segmentStart(oldest, size);
    if (from < segmentStart(oldest, size)) {
      throw new CommandFailure(`--start ${formatLsn(from)} lies before the oldest WAL in ${wal.dir}: segment ${segmentName(wal, oldest)}, from ${formatLsn(segmentStart(oldest, size))}`);
    }
    let first = true;
    for await (const item of scanWal({ storage: wal.storage, segmentSize: size, history: wal.history, from, ...(end === undefined ? {} : { to: end }) })) {
      if (item.kind === 'record') {
        if (first && start !== undefined && item.lsn > start) await io.out(`first record is after ${formatLsn(start)}, at ${formatLsn(item.lsn)}, skipping over ${item.lsn - start} bytes`);
        first = false;
        await io.out(describeRecord(item));
        continue;
      }
      return reportStop(wal, size, item, io);
    }
    return EXIT_OK;
  },
};

/** One record as a line. */
export function describeRecord(record: ScannedRecord): string {
  const parts = [
    `lsn: ${formatLsn(record.lsn)}`,
    `len: ${record.length}`,
    `kind: ${record.recordKind}`,
    `entries: ${record.entryCount}`,
    'crc: ok',
    `tli: ${record.timeline}`,
  ];
  if (record.recordKind === 'batch') {
    const committed = record.commitTime === null ? 'no commit time (format 1)' : `committed ${new Date(record.commitTime).toISOString()}`;
    parts.push(`desc: ${record.dataBytes} data bytes, ${committed}`);
  } else if (record.restorePoint !== null) {
    parts.push(`desc: ${JSON.stringify(record.restorePoint.name)} made ${new Date(record.restorePoint.time).toISOString()}`);
  }
  return parts.join(', ');
}

/** How often a verdict is taken again when a segment it reads was removed meanwhile (a running node's checkpoint). */
const JUDGE_ATTEMPTS = 3;

/**
 * Says where the walk stopped and whether that is the end of the WAL or damage, as a node
 * opening the directory would decide (`recoverEnd`, from the stop's segment on, over a fresh
 * listing): exit 1 for damage.
 *
 * A running node writes while this reads: the stop may be where its WAL ended when read, and
 * records it wrote since (stamped durable past the stop, or in a new segment) then look like
 * proof of damage. Damage stays put: a verdict of damage is kept only when the stop, read
 * again, is still there. Had a record been written at the stop, the records past it that made
 * the verdict were written after it (a record is appended when those before it are durable),
 * so the second read sees it: one read settles it.
 */
async function reportStop(wal: WalDirectory, size: number, stop: ScanStop, io: Io): Promise<number> {
  const where = `${formatLsn(stop.lsn)} (segment ${stop.segment}, offset ${stop.offset})`;
  const stopSegno = Math.floor(stop.lsn / size);
  for (let attempt = 1; ; attempt++) {
    const segnos = await segmentsOnPath(wal, size);
    if (stop.reason === SEGMENT_MISSING && removedWhileRead(wal, segnos, stopSegno)) return reportRemoved(stop, io);
    let verdict: Verdict | null;
    try {
      verdict = await judgeStop(wal, size, stop, segnos);
    } catch (err) {
      // A segment of the listing went before it was opened: listed again, or said so.
      if (errnoCode(err) !== 'ENOENT') throw err;
      if (attempt < JUDGE_ATTEMPTS) continue;
      return reportRemoved(stop, io);
    }
    if (verdict === null) {
      const holder = await holderNote(wal);
      io.err(`walship waldump: end of WAL at ${where}: ${stop.reason}${holder === '' ? '' : `; a node is running here${holder}: its WAL goes on`}`);
      return EXIT_OK;
    }
    const again = await stopAt(wal, size, stop.lsn);
    if (again === null || again.lsn > stop.lsn) {
      io.err(`walship waldump: end of WAL so far at ${where}: ${stop.reason} when read, and a node is running: it has written past it since${await holderNote(wal)}`);
      return EXIT_OK;
    }
    if (again.reason === SEGMENT_MISSING && again.lsn < stop.lsn && removedWhileRead(wal, await segmentsOnPath(wal, size), Math.floor(again.lsn / size))) return reportRemoved(again, io);
    if ((again.lsn < stop.lsn || again.reason !== stop.reason) && attempt < JUDGE_ATTEMPTS) continue;
    // The code first, as for every error the command prints: a script tells damage (WAL_CORRUPT) from WAL this walship cannot read (WAL_FORMAT).
    const what = verdict.code === 'WAL_CORRUPT' ? 'WAL is corrupt' : 'WAL cannot be read';
    io.err(`walship waldump: error: ${verdict.code}: ${what} at ${where}: ${verdict.text}`);
    return EXIT_FAILURE;
  }
}

const SEGMENT_MISSING = 'segment file is missing';

/** Damage at a stop: its error code and why. */
interface Verdict {
  readonly code: string;
  readonly text: string;
}

/** Whether the stop is damage (`recoverEnd`'s decision over `segnos`, the segments now on the path), `null` for the end of the WAL. */
async function judgeStop(wal: WalDirectory, size: number, stop: ScanStop, segnos: readonly number[]): Promise<Verdict | null> {
  const stopSegno = Math.floor(stop.lsn / size);
  const later = segnos.filter((segno) => segno >= stopSegno);
  // A standby's records carry its upstream's durability stamps, which prove nothing about this disk (see recoverEnd).
  const trustStamps = wal.control === null || !isRecoveryState(wal.control.state);
  try {
    if (later[0] === stopSegno) {
      await recoverEnd(wal.storage, later, size, wal.history, trustStamps, stopSegno);
    } else if (later.length > 0) {
      const found = await recoverEnd(wal.storage, later, size, wal.history, trustStamps, stopSegno);
      if (found.endLsn > segmentStart(later[0] as number, size)) {
        return { code: 'WAL_CORRUPT', text: `${stop.reason}, but segments after it hold valid WAL (from ${segmentName(wal, later[0] as number)}): the log is cut in the middle` };
      }
    }
    return null;
  } catch (err) {
    if (err instanceof WalCorruptError) return { code: err.code, text: err.message.slice(err.message.indexOf(': ') + 2) };
    if (isWalshipError(err)) return { code: err.code, text: err.message };
    throw err;
  }
}

/** The first stop of a walk from `lsn` as the files are now, `null` when a record lies there now. */
async function stopAt(wal: WalDirectory, size: number, lsn: Lsn): Promise<ScanStop | null> {
  for await (const item of scanWal({ storage: wal.storage, segmentSize: size, history: wal.history, from: lsn })) {
    if (item.kind === 'stop') return item;
    if (item.lsn >= lsn) return null;
  }
  return null;
}

function reportRemoved(stop: ScanStop, io: Io): number {
  io.err(`walship waldump: error: segment ${stop.segment} was removed while it was being read (a checkpoint of the running node removed it); dump from a later --start`);
  return EXIT_FAILURE;
}

/** The segments on the history's path as the directory lists them now, sorted. */
async function segmentsOnPath(wal: WalDirectory, size: number): Promise<number[]> {
  const names = await wal.storage.list();
  return names
    .flatMap((name) => parseSegmentFileName(name, size) ?? [])
    .filter((p) => p.timeline === segmentTimeline(wal.history, p.segno, size))
    .map((p) => p.segno)
    .sort((a, b) => a - b);
}

/** Whether every segment on the path now begins after `segno`, which the first listing reached: a running node removed it behind the walk. */
function removedWhileRead(wal: WalDirectory, segnos: readonly number[], segno: number): boolean {
  return segnos.length > 0 && (segnos[0] as number) > segno && (wal.segnos[0] ?? Infinity) <= segno;
}

/** `' (pid N)'` when a live process holds the directory's lock (` (pid N on host)` on another host), else nothing. */
async function holderNote(wal: WalDirectory): Promise<string> {
  if (wal.control === null) return '';
  const holder = await readLockHolder(wal.dir).catch(() => null);
  if (holder === null || holder.alive === false) return '';
  return holder.alive === null ? ` (pid ${holder.pid} on ${holder.hostname})` : ` (pid ${holder.pid})`;
}

function segmentName(wal: WalDirectory, segno: number): string {
  const size = wal.segmentSize as number;
  return segmentFileName(segmentTimeline(wal.history, segno, size), segno, size);
}
