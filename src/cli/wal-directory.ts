import { stat } from 'node:fs/promises';
import { errnoCode } from '../errors.js';
import { CONTROL_FILE, readControlFile, type ControlData } from '../node/control-file.js';
import { lostTimelineHistory } from '../node/local-state.js';
import { NodeStorage } from '../storage/node-storage.js';
import { parseSegmentFileName, type SegmentName } from '../wal/segment-name.js';
import { historyFileName, readTimelineHistory, segmentTimeline, type TimelineHistory } from '../wal/timeline-history.js';
import { detectSegmentSize } from '../wal/wal-log.js';
import { CommandFailure, describeError } from './command.js';

/**
 * A directory of WAL looked at read-only, for the commands that inspect one: a node's data
 * directory (with its control file) or any directory of segment files (an archive). Nothing
 * here takes the lock or writes: it works beside a running node.
 */
export interface WalDirectory {
  /** The directory's absolute path. */
  readonly dir: string;
  readonly storage: NodeStorage;
  /** The directory's file names when it was read. */
  readonly names: readonly string[];
  /** The control file, `null` in a directory without one (an archive). */
  readonly control: ControlData | null;
  /** The segment size: the control file's, else the first readable segment header's; `null` without either. */
  readonly segmentSize: number | null;
  /** The history whose path is followed: the control file's timeline, or the one asked for. */
  readonly history: TimelineHistory;
  /** The segments on that path, sorted: each in the file of the timeline that holds it. */
  readonly segnos: readonly number[];
  /** Segment files of timelines off that path (an old timeline's WAL past its switch point, another branch). */
  readonly offPath: number;
}

/**
 * Reads `dir`'s control file, timeline history and segment listing. The timeline is `timeline`
 * when given, else the control file's, else the newest of the segment files'. Failures are
 * one-line {@link CommandFailure}s.
 */
export async function readWalDirectory(dir: string, timeline?: number): Promise<WalDirectory> {
  const storage = new NodeStorage(dir);
  const path = storage.description;
  const stats = await stat(path).catch((err: unknown) => {
    throw new CommandFailure(errnoCode(err) === 'ENOENT' ? `${path}: no such directory` : `${path}: ${(err as Error).message}`);
  });
  if (!stats.isDirectory()) throw new CommandFailure(`${path} is not a directory`);
  const control = await readControlFile(storage).catch((err: unknown) => {
    throw new CommandFailure(`cannot read ${CONTROL_FILE} in ${path}: ${describeError(err)}`);
  });
  const names = await storage.list();
  // A segment removed between the listing and the read is skipped by trying the next name (detectSegmentSize).
  const segmentSize =
    control?.segmentSize ??
    (await detectSegmentSize(storage, names).catch((err: unknown) => {
      throw new CommandFailure(`cannot read the segment files in ${path}: ${describeError(err)}`);
    })) ??
    null;
  const parsed = segmentSize === null ? [] : names.flatMap((name) => parseSegmentFileName(name, segmentSize) ?? []);
  const target = timeline ?? control?.timeline ?? newestTimeline(parsed);
  const history = await historyOf(storage, target, control).catch((err: unknown) => {
    throw new CommandFailure(describeError(err));
  });
  if (history === null) throw new CommandFailure(`${historyFileName(target)} is missing in ${path}: without timeline ${target}'s history its WAL cannot be followed`);
  const onPath = segmentSize === null ? [] : parsed.filter((p) => p.timeline === segmentTimeline(history, p.segno, segmentSize));
  return {
    dir: path,
    storage,
    names,
    control,
    segmentSize,
    history,
    segnos: onPath.map((p) => p.segno).sort((a, b) => a - b),
    offPath: parsed.length - onPath.length,
  };
}

/**
 * The newest timeline among `segments`, 1 without any. A loop, not `Math.max(...spread)`: an
 * archive of small segments can list more files than a call takes arguments.
 */
export function newestTimeline(segments: readonly SegmentName[]): number {
  let newest = 1;
  for (const segment of segments) if (segment.timeline > newest) newest = segment.timeline;
  return newest;
}

/**
 * The history of `timeline` from its file; for the control file's timeline whose file is not
 * written yet (a promotion writes it a moment after its commit point), the history an open
 * would rebuild (`lostTimelineHistory`; nothing is written).
 */
async function historyOf(storage: NodeStorage, timeline: number, control: ControlData | null): Promise<TimelineHistory | null> {
  const history = await readTimelineHistory(storage, timeline);
  if (history !== null || control === null || control.timeline !== timeline) return history;
  return lostTimelineHistory(storage, control);
}
