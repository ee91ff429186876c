import { WalshipError } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import { compileOptions, type OptionsValidator } from '../options.js';
import { isStorage, type Storage } from '../storage/storage.js';
import { isInHistory } from '../wal/timeline-history.js';
import { WalLog } from '../wal/wal-log.js';
import { CONTROL_FILE, newSystemId, readControlFile, switchedFromOf, writeControlFile, type ControlData } from './control-file.js';
import { listNodeFiles } from './missing-control-file.js';
import { storageOf } from './node-options.js';
import { SnapshotStore } from './snapshot-store.js';

/** Options of {@link rebuildControlFile}. Give `dir` or `storage`. */
export interface RebuildControlFileOptions {
  /** The primary's data directory. */
  readonly dir?: string;
  /** The primary's storage, instead of `dir`. */
  readonly storage?: Storage;
  /**
   * The cluster's system id, 16 lower-case hex digits: the WAL does not record it. Take it from
   * one of the primary's standbys (`standby.systemId`, or the `SYSTEM_ID_MISMATCH` message of a
   * standby that met a primary opened as a new cluster). `'new'` gives the WAL a new identity:
   * a new cluster, whose existing standbys must bootstrap again (a directory a bare
   * {@link WalLog} wrote, say).
   */
  readonly systemId: string;
  /**
   * The last `checkpoint(lsn)` of an application that keeps its own state and has no
   * `appliedLsn()` hook: only the lost control file held it. Without it, replay starts at the
   * newest snapshot in the directory, or else at the oldest WAL.
   */
  readonly checkpointLsn?: Lsn;
  /** A prefix for the `debug` lines of the WAL opened meanwhile. */
  readonly logPrefix?: string;
}

/** What {@link rebuildControlFile} wrote into the new `walship.control`. */
export interface RebuiltControlFile {
  /** The system id written: the one given, or a new one for `'new'`. */
  readonly systemId: string;
  /** The segment size, from the segment headers. */
  readonly segmentSize: number;
  /** The newest timeline in the directory (its history file must be there for a timeline after 1). */
  readonly timeline: number;
  /** Where replay starts: the newest snapshot on the timeline's history, `checkpointLsn`, or `null` (the oldest WAL). */
  readonly checkpoint: {
    /** The position replay starts from. */
    readonly lsn: Lsn;
    /** True when it is a snapshot's position (the application is restored from it), false for `checkpointLsn`. */
    readonly snapshot: boolean;
  } | null;
  /** The start of the oldest segment. */
  readonly walStart: Lsn;
  /** The end of the valid WAL. */
  readonly walEnd: Lsn;
}

/** The literal behind {@link rebuildControlFileOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const rebuildControlFileSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  required: ['systemId'],
  properties: {
    dir: { type: 'string', minLength: 1 },
    storage: {},
    systemId: { type: 'string', pattern: '^(?:[0-9a-f]{16}|new)$' },
    checkpointLsn: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    logPrefix: { type: 'string' },
  },
});

/** JSON schema of {@link RebuildControlFileOptions} (`storage` is checked by a type guard). */
export const rebuildControlFileOptionsSchema: typeof rebuildControlFileSchema = rebuildControlFileSchema;

const validateOptions: OptionsValidator<RebuildControlFileOptions> = compileOptions('rebuildControlFile', rebuildControlFileOptionsSchema);

/**
 * Writes a new `walship.control` for a primary's data directory that lost it, from what the
 * directory holds (there is no `pg_resetwal` guesswork: what cannot be read from the files is
 * asked for or left out). `Primary.open` refuses such a directory with `CONTROL_FILE_MISSING`;
 * after this it opens it as the same cluster, and its standbys continue.
 *
 * - system id: `systemId` (the WAL does not carry it);
 * - segment size and timeline: the segment headers and names (the newest timeline present,
 *   with its history file) — the WAL is recovered as an open would (a torn tail repaired; a
 *   log cut in the middle is `WAL_CORRUPT`);
 * - checkpoint: `checkpointLsn` if given, else the newest snapshot on that timeline's history
 *   (checked end to end; a damaged one is `WAL_CORRUPT`), else none: replay starts at the
 *   oldest WAL, which must then be the log's first segment (`WAL_REMOVED` at open otherwise);
 * - state `in-production`, as after a crash (nothing claims a clean shutdown).
 *
 * Refuses (`INVALID_ARGUMENT`, nothing written) a directory that has a control file, holds no
 * WAL, or was discarding a standby's state; a standby that lost its control file is better
 * given an empty directory, from which it bootstraps. Takes the directory's lock meanwhile.
 */
export async function rebuildControlFile(options: RebuildControlFileOptions): Promise<RebuiltControlFile> {
  validateOptions(options);
  if ((options.dir === undefined) === (options.storage === undefined)) {
    throw new WalshipError('INVALID_OPTIONS', 'invalid rebuildControlFile options: give exactly one of "dir" and "storage"');
  }
  if (options.storage !== undefined && !isStorage(options.storage)) {
    throw new WalshipError('INVALID_OPTIONS', 'invalid rebuildControlFile options: rebuildControlFile.storage must implement Storage');
  }
  const storage = storageOf(options);
  if ((await readControlFile(storage)) !== null) {
    throw new WalshipError('INVALID_ARGUMENT', `${storage.description} has a ${CONTROL_FILE}: there is nothing to rebuild (move a damaged one aside first)`);
  }
  const files = await listNodeFiles(storage);
  if (files.discarding) {
    throw new WalshipError('INVALID_ARGUMENT', `${storage.description} holds what a standby discarding its state left: give the standby an empty directory instead`);
  }
  if (files.segments.length === 0) {
    throw new WalshipError('INVALID_ARGUMENT', `${storage.description} holds no WAL segments to rebuild ${CONTROL_FILE} from`);
  }
  const log = await WalLog.open({ storage, ...(options.logPrefix === undefined ? {} : { logPrefix: options.logPrefix }) });
  try {
    const walStart = log.oldestLsn;
    const walEnd = log.flushedLsn;
    let checkpoint: RebuiltControlFile['checkpoint'] = null;
    if (options.checkpointLsn !== undefined) {
      if (options.checkpointLsn < walStart || options.checkpointLsn > walEnd) {
        throw new WalshipError('INVALID_ARGUMENT', `checkpointLsn ${formatLsn(options.checkpointLsn)} lies outside the WAL in ${storage.description} (${formatLsn(walStart)} to ${formatLsn(walEnd)})`);
      }
      checkpoint = { lsn: options.checkpointLsn, snapshot: false };
    } else {
      const newest = files.snapshots
        .map((name) => ({ name, timeline: Number.parseInt(name.slice(9, 17), 16), lsn: Number.parseInt(name.slice(18), 16) }))
        .filter((s) => isInHistory(log.history, s.timeline, s.lsn))
        .sort((a, b) => a.lsn - b.lsn)
        .at(-1);
      if (newest !== undefined) {
        await new SnapshotStore(storage).open(newest.name);
        checkpoint = { lsn: newest.lsn, snapshot: true };
      }
    }
    const control: ControlData = {
      state: 'in-production',
      systemId: options.systemId === 'new' ? newSystemId() : options.systemId,
      segmentSize: log.segmentSize,
      timeline: log.timeline,
      ...switchedFromOf(log.history),
      checkpoint,
      consistentLsn: 0,
    };
    await writeControlFile(storage, control);
    await log.close();
    return { systemId: control.systemId, segmentSize: control.segmentSize, timeline: control.timeline, checkpoint, walStart, walEnd };
  } catch (err) {
    await log.close().catch(() => undefined);
    throw err;
  }
}
