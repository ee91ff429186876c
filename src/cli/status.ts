import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { checksumImplementation, type ChecksumImplementation } from '../checksum.js';
import { errnoCode } from '../errors.js';
import { formatLsn, type Lsn } from '../lsn.js';
import { ArchiveStatus } from '../node/archive-status.js';
import { CONTROL_FILE, type NodeState } from '../node/control-file.js';
import { readSlotsFile } from '../slots/slot-file.js';
import { RETENTION_DEFAULTS, slotAvailability, type WalStatus } from '../slots/retention.js';
import { readLockHolder, type LockHolderInfo } from '../storage/node-storage.js';
import { SEGMENT_HEADER_SIZE, readSegmentHeader } from '../wal/record.js';
import { segmentFileName, segmentStart } from '../wal/segment-name.js';
import { segmentTimeline, timelineOf } from '../wal/timeline-history.js';
import { scanWal } from '../wal/wal-scan.js';
import { CommandFailure, EXIT_OK, describeError, integerArg, parseCommandArgs, type Command } from './command.js';
import { readWalDirectory, type WalDirectory } from './wal-directory.js';

const HELP = `Usage: walship status <dir> [--json] [--wal-keep-size BYTES] [--max-slot-wal-keep-size BYTES]

Describes the node whose data directory is <dir>, like pg_controldata plus a look at its
files: system id, node state (from the control file), timeline and its history, checkpoint,
the WAL segments on disk and where the valid WAL ends, replication slots with their
walStatus, archive status (.ready/.done markers, the oldest file waiting), whether a process
holds the directory, and which CRC-32C implementation this walship runs.

Reads only: it takes no lock and writes nothing, so it is safe beside a running node (what
it shows is a moment's view: files change underneath it).

Options:
  --json                            print one JSON object instead of text
  --wal-keep-size BYTES             the node's walKeepSize, for slots' walStatus (default 0)
  --max-slot-wal-keep-size BYTES    the node's maxSlotWalKeepSize (default -1, unlimited;
                                    write a negative value as --max-slot-wal-keep-size=-1)
  -h, --help                        this text

Slots' positions are those last saved (at a checkpoint or shutdown): a running node's may be ahead.`;

/** The node as `status` reports it (`--json` prints this object). */
export interface NodeStatusReport {
  readonly directory: string;
  readonly systemId: string;
  readonly state: NodeState;
  readonly segmentSize: number;
  readonly timeline: number;
  readonly history: readonly { readonly timeline: number; readonly switchLsn: string; readonly reason: string }[];
  readonly checkpoint: { readonly lsn: string; readonly snapshot: boolean } | null;
  readonly consistentLsn: string;
  readonly lock: LockHolderInfo | null;
  readonly wal: {
    readonly firstSegment: string | null;
    readonly lastSegment: string | null;
    readonly segments: number;
    /** Segment files past the last one written (created or recycled ahead of need). */
    readonly preparedAhead: number;
    readonly endLsn: string | null;
    readonly setAside: number;
    readonly offPath: number;
  };
  readonly slots: readonly { readonly name: string; readonly restartLsn: string | null; readonly walStatus: WalStatus | null; readonly safeWalSize: number | null; readonly invalidationReason: string | null }[] | { readonly error: string };
  readonly archive: { readonly ready: number; readonly done: number; readonly oldestReady: { readonly name: string; readonly since: string | null } | null };
  readonly checksum: ChecksumImplementation;
}

/** `walship status`: what a node's data directory says about it, read-only. */
export const statusCommand: Command = {
  name: 'status',
  summary: "describe a node's data directory: identity, state, timeline, WAL, slots, archiving",
  help: HELP,
  async run(args, io) {
    const { values, positionals, help } = parseCommandArgs(
      args,
      { json: { type: 'boolean' }, 'wal-keep-size': { type: 'string' }, 'max-slot-wal-keep-size': { type: 'string' } },
      ['<dir>'],
    );
    if (help) {
      await io.out(HELP);
      return EXIT_OK;
    }
    const walKeepSize = typeof values['wal-keep-size'] === 'string' ? integerArg('--wal-keep-size', values['wal-keep-size'], 0) : RETENTION_DEFAULTS.walKeepSize;
    const maxSlotWalKeepSize =
      typeof values['max-slot-wal-keep-size'] === 'string' ? integerArg('--max-slot-wal-keep-size', values['max-slot-wal-keep-size'], -1) : RETENTION_DEFAULTS.maxSlotWalKeepSize;
    const report = await nodeStatus(positionals[0] as string, walKeepSize, maxSlotWalKeepSize);
    await io.out(values['json'] === true ? JSON.stringify(report, null, 2) : formatStatus(report).join('\n'));
    return EXIT_OK;
  },
};

/** Reads everything `status` shows from `dir`, read-only. */
export async function nodeStatus(dir: string, walKeepSize: number, maxSlotWalKeepSize: number): Promise<NodeStatusReport> {
  const wal = await readWalDirectory(dir);
  const control = wal.control;
  if (control === null) throw new CommandFailure(`${wal.dir} is not a walship data directory (no ${CONTROL_FILE})`);
  const size = control.segmentSize;
  const end = await lastWritten(wal, size);
  const first = wal.segnos[0];
  const last = end?.segno ?? wal.segnos.at(-1);
  const name = (segno: number | undefined): string | null => (segno === undefined ? null : segmentFileName(segmentTimeline(wal.history, segno, size), segno, size));
  const currentLsn = end?.lsn ?? null;
  let slots: NodeStatusReport['slots'];
  try {
    slots = (await readSlotsFile(wal.storage)).map((slot) => {
      const availability =
        currentLsn === null || first === undefined
          ? { walStatus: slot.invalidationReason === null ? null : ('lost' as const), safeWalSize: null }
          : slotAvailability(
              { segmentSize: size, currentLsn, oldestLsn: segmentStart(first, size), checkpointLsn: control.checkpoint?.lsn ?? null, walKeepSize, maxSlotWalKeepSize },
              slot.restartLsn,
              slot.invalidationReason !== null,
            );
      return { name: slot.name, restartLsn: slot.restartLsn === null ? null : formatLsn(slot.restartLsn), ...availability, invalidationReason: slot.invalidationReason };
    });
  } catch (err) {
    slots = { error: describeError(err) };
  }
  return {
    directory: wal.dir,
    systemId: control.systemId,
    state: control.state,
    segmentSize: size,
    timeline: control.timeline,
    history: wal.history.entries.map((entry) => ({ timeline: entry.timeline, switchLsn: formatLsn(entry.switchLsn), reason: entry.reason })),
    checkpoint: control.checkpoint === null ? null : { lsn: formatLsn(control.checkpoint.lsn), snapshot: control.checkpoint.snapshot },
    consistentLsn: formatLsn(control.consistentLsn),
    lock: await readLockHolder(wal.dir),
    wal: {
      firstSegment: name(first),
      lastSegment: name(last),
      segments: wal.segnos.filter((segno) => last === undefined || segno <= last).length,
      preparedAhead: wal.segnos.filter((segno) => last !== undefined && segno > last).length,
      endLsn: currentLsn === null ? null : formatLsn(currentLsn),
      setAside: wal.names.filter((n) => /^[0-9A-F]{24}\.(?:partial|diverged)$/.test(n)).length,
      offPath: wal.offPath,
    },
    slots,
    archive: await archiveReport(wal),
    checksum: checksumImplementation(),
  };
}

/**
 * The newest segment holding WAL (its own header: segments created or recycled ahead of need
 * have none) and the end of the valid WAL in it; `null` when no segment has been written.
 */
async function lastWritten(wal: WalDirectory, size: number): Promise<{ segno: number; lsn: Lsn } | null> {
  const header = Buffer.alloc(SEGMENT_HEADER_SIZE);
  for (const segno of [...wal.segnos].reverse()) {
    const base = segmentStart(segno, size);
    let file;
    try {
      file = await wal.storage.open(segmentFileName(segmentTimeline(wal.history, segno, size), segno, size), { readOnly: true });
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue; // Removed since the listing.
      throw err;
    }
    try {
      if ((await file.read(header, 0, SEGMENT_HEADER_SIZE, 0)) < SEGMENT_HEADER_SIZE) continue;
    } finally {
      await file.close().catch(() => undefined);
    }
    const found = readSegmentHeader(header, 0);
    if (found === null || found.startLsn !== base || found.timeline !== timelineOf(wal.history, base)) continue;
    let lsn = base;
    for await (const item of scanWal({ storage: wal.storage, segmentSize: size, history: wal.history, from: base })) {
      if (item.kind === 'stop') lsn = item.lsn;
    }
    return { segno, lsn };
  }
  return null;
}

/**
 * The archive markers: how many files wait (`.ready`) and are done, and the one the archiver
 * takes next (as `pgarch` does: history files first, then by name), with when it was marked.
 */
async function archiveReport(wal: WalDirectory): Promise<NodeStatusReport['archive']> {
  const status = ArchiveStatus.load(wal.storage, wal.names);
  let done = 0;
  for (const [, mark] of status.entries()) if (mark === 'done') done++;
  const ready = status.ready().sort((a, b) => Number(b.endsWith('.history')) - Number(a.endsWith('.history')) || (a < b ? -1 : a > b ? 1 : 0));
  const next = ready[0];
  if (next === undefined) return { ready: 0, done, oldestReady: null };
  // A marker renamed to .done (archived) since the listing leaves its time unknown.
  const since = await stat(join(wal.dir, `${next}.ready`)).then((s) => s.mtime.toISOString(), () => null);
  return { ready: ready.length, done, oldestReady: { name: next, since } };
}

const STATE_TEXT: Record<NodeState, string> = {
  'in-production': 'in production (a primary)',
  'shut-down': 'shut down (a primary, closed cleanly)',
  'in-recovery': 'in recovery (a standby)',
  'shut-down-in-recovery': 'shut down in recovery (a standby, closed cleanly)',
};

/** The report as text lines. */
export function formatStatus(report: NodeStatusReport): string[] {
  const line = (label: string, value: string): string => `${`${label}:`.padEnd(22)}${value}`;
  const lines = [
    line('directory', report.directory),
    line('system id', report.systemId),
    line('node state', STATE_TEXT[report.state]),
    line('running', describeLock(report.lock)),
    line('segment size', `${report.segmentSize} bytes`),
    line('timeline', String(report.timeline)),
  ];
  if (report.history.length === 0) lines.push(line('timeline history', 'none (timeline 1)'));
  for (const [i, entry] of report.history.entries()) {
    lines.push(line(i === 0 ? 'timeline history' : '', `timeline ${entry.timeline} until ${entry.switchLsn}: ${entry.reason}`));
  }
  lines.push(line('checkpoint', report.checkpoint === null ? 'none yet' : `${report.checkpoint.lsn}${report.checkpoint.snapshot ? ' (local snapshot)' : ' (kept by the application)'}`));
  if (report.state === 'in-recovery' || report.state === 'shut-down-in-recovery') lines.push(line('consistent at', report.consistentLsn));
  const w = report.wal;
  lines.push(
    line(
      'WAL segments',
      w.firstSegment === null ? 'none' : `${w.firstSegment} to ${w.lastSegment ?? '?'} (${w.segments}${w.preparedAhead > 0 ? `, and ${w.preparedAhead} prepared ahead` : ''})`,
    ),
    line('end of WAL', w.endLsn ?? 'none written'),
  );
  if (w.setAside > 0 || w.offPath > 0) lines.push(line('other WAL files', `${w.setAside} set aside (.partial, .diverged), ${w.offPath} off this timeline's path`));
  if ('error' in report.slots) {
    lines.push(line('slots', `unreadable: ${report.slots.error}`));
  } else {
    lines.push(line('slots', report.slots.length === 0 ? 'none' : String(report.slots.length)));
    for (const slot of report.slots) {
      const safe = slot.safeWalSize === null ? '' : `, safeWalSize ${slot.safeWalSize}`;
      const reason = slot.invalidationReason === null ? '' : ` (invalidated: ${slot.invalidationReason})`;
      lines.push(`  ${slot.name}: restart ${slot.restartLsn ?? 'none'}, walStatus ${slot.walStatus ?? 'none (no WAL reserved)'}${safe}${reason}`);
    }
  }
  const a = report.archive;
  const oldest = a.oldestReady === null ? '' : `; oldest waiting ${a.oldestReady.name} (ready since ${a.oldestReady.since ?? '?'})`;
  lines.push(line('archive status', `${a.ready} ready, ${a.done} done${oldest}`));
  lines.push(
    line(
      'checksums',
      report.checksum === 'native' ? 'CRC-32C native (sse4_crc32)' : "CRC-32C in JavaScript: fast-crc32c's native addon did not load, checksums are about 20x slower (see the README, \"Install\")",
    ),
  );
  return lines;
}

function describeLock(lock: LockHolderInfo | null): string {
  if (lock === null) return 'no (the directory is not locked)';
  const who = `pid ${lock.pid} on ${lock.hostname}, since ${lock.createdAt}`;
  if (lock.alive === null) return `locked by ${who} (another host: cannot tell whether it runs)`;
  return lock.alive ? `yes, ${who}` : `no (a stale lock of ${who}, which has exited)`;
}
