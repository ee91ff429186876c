import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FileSystemArchive } from '../archive/file-system-archive.js';
import { errnoCode } from '../errors.js';
import { archivedBefore } from '../roles/archive-cleanup.js';
import { NodeStorage } from '../storage/node-storage.js';
import { detectSegmentSize } from '../wal/wal-log.js';
import { CommandFailure, EXIT_OK, UsageError, describeError, parseCommandArgs, type Command } from './command.js';

const HELP = `Usage: walship archive-cleanup <archive-dir> <oldest-kept-segment> [--dry-run] [--clean-backup-history]

Removes from a FileSystemArchive directory the archived WAL that logically precedes
<oldest-kept-segment>, like pg_archivecleanup: every segment and .partial segment before it,
compared by position whatever their timeline. Timeline history files are never removed, nor
files whose names are not WAL file names. <oldest-kept-segment> may be given as a segment
name, a .partial name or a backup history file name (000000010000000000000010.00000020.backup):
the segment part is used. Typical use: the segment a standby's restartpoint needs (%r).

Each file removed (or, with --dry-run, that would be) is printed on its own line as a path.

Options:
  -n, --dry-run                 print what would be removed, remove nothing
  -b, --clean-backup-history    also remove backup history files (*.backup) before it
  -h, --help                    this text`;

const KEEP_NAME = /^([0-9A-F]{24})(?:\.partial|\.[0-9A-F]{8}\.backup)?$/;

/** `walship archive-cleanup`: removes archived WAL a standby no longer needs (PostgreSQL's `pg_archivecleanup`). */
export const archiveCleanupCommand: Command = {
  name: 'archive-cleanup',
  summary: 'remove archived WAL segments older than a given one from a FileSystemArchive directory',
  help: HELP,
  async run(args, io) {
    const { values, positionals, help } = parseCommandArgs(
      args,
      { 'dry-run': { type: 'boolean', short: 'n' }, 'clean-backup-history': { type: 'boolean', short: 'b' } },
      ['<archive-dir>', '<oldest-kept-segment>'],
    );
    if (help) {
      await io.out(HELP);
      return EXIT_OK;
    }
    const [dir, keepArg] = positionals as [string, string];
    const keep = KEEP_NAME.exec(keepArg)?.[1];
    if (keep === undefined) throw new UsageError(`'${keepArg}' is not a WAL segment name (24 hexadecimal digits, e.g. 000000010000000000000003)`);
    const archive = new FileSystemArchive(dir);
    const stats = await stat(archive.dir).catch((err: unknown) => {
      throw new CommandFailure(errnoCode(err) === 'ENOENT' ? `${archive.dir}: no such directory` : `${archive.dir}: ${(err as Error).message}`);
    });
    if (!stats.isDirectory()) throw new CommandFailure(`${archive.dir} is not a directory`);
    const names = await archive.list();
    // The archive's segments are the segment files themselves: their headers give the size
    // that positions are compared in. No readable segment means no segment to remove.
    const segmentSize = await detectSegmentSize(new NodeStorage(archive.dir), names).catch((err: unknown) => {
      throw new CommandFailure(`cannot read the segment files in ${archive.dir}: ${describeError(err)}`);
    });
    if (segmentSize === undefined) {
      io.err(`walship archive-cleanup: no archived segments in ${archive.dir}: nothing to remove`);
      return EXIT_OK;
    }
    let doomed: string[];
    try {
      doomed = archivedBefore(names, keep, segmentSize, { backupHistory: values['clean-backup-history'] === true });
    } catch {
      throw new UsageError(`'${keepArg}' is not a segment name for this archive's segment size (${segmentSize} bytes)`);
    }
    const dryRun = values['dry-run'] === true;
    for (const name of doomed) {
      if (!dryRun) await archive.remove(name);
      await io.out(join(archive.dir, name));
    }
    io.err(`walship archive-cleanup: ${doomed.length} file${doomed.length === 1 ? '' : 's'} before ${keep} ${dryRun ? 'would be removed (dry run)' : 'removed'}`);
    return EXIT_OK;
  },
};
