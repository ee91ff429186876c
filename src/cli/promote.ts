import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { syncDirectoryAt } from '../directory-sync.js';
import { CONTROL_FILE, readControlFile, type ControlData } from '../node/control-file.js';
import { PROMOTE_SIGNAL_FILE } from '../node/promote-signal.js';
import { NodeStorage, readLockHolder } from '../storage/node-storage.js';
import { CommandFailure, EXIT_OK, describeError, parseCommandArgs, secondsArg, type Command } from './command.js';
import { formatLsn } from '../lsn.js';

const HELP = `Usage: walship promote <dir> [--no-wait] [--timeout SECONDS]

Promotes the running standby whose data directory is <dir>, like pg_ctl promote: writes the
promote signal file <dir>/${PROMOTE_SIGNAL_FILE} (durably), which the standby looks for, promotes itself
on, and removes. Then waits until the control file says the node is in production and prints
its new timeline.

Options:
  --no-wait            return once the signal file is written
  --timeout SECONDS    how long to wait for the promotion (default 60)
  -h, --help           this text

Fails (exit 1) when <dir> is not a walship data directory, holds a primary, holds a standby
that is not running (a standby that is running says so in its control file once it holds the
directory's lock, also a former primary's directory opened as a standby), or the promotion does not complete in time (the signal file then stays:
the standby promotes when it can, e.g. once consistent; remove the file to cancel).`;

/** How often the control file is read while waiting (pg_ctl polls too). */
const POLL_MS = 100;
const DEFAULT_TIMEOUT_S = 60;

/** `walship promote`: asks a running standby to promote itself through its promote signal file (`pg_ctl promote`). */
export const promoteCommand: Command = {
  name: 'promote',
  summary: 'promote a running standby through its promote signal file, and wait for it',
  help: HELP,
  async run(args, io) {
    const { values, positionals, help } = parseCommandArgs(args, { 'no-wait': { type: 'boolean' }, timeout: { type: 'string' } }, ['<dir>']);
    if (help) {
      await io.out(HELP);
      return EXIT_OK;
    }
    const timeoutMs = (typeof values['timeout'] === 'string' ? secondsArg('--timeout', values['timeout']) : DEFAULT_TIMEOUT_S) * 1000;
    const storage = new NodeStorage(positionals[0] as string);
    const dir = storage.description;
    const before = await controlOf(storage);
    // A live lock holder is a running node; `in-production` is a primary process alone (a
    // standby opened on a crashed primary's directory records `shut-down` once it holds the
    // lock), so a live holder of any other state is a standby: `in-recovery`, or
    // `shut-down-in-recovery` until it streams, or `shut-down` in a former primary's directory
    // (a primary's until its upstream has compared its WAL).
    const running = await isRunning(dir);
    if (before.state === 'in-production' || (before.state === 'shut-down' && !running)) {
      throw new CommandFailure(`${dir} holds a primary (${before.state}, timeline ${before.timeline}), not a running standby: nothing to promote`);
    }
    if (!running) {
      throw new CommandFailure(`the standby in ${dir} is not running: open it (a Standby on this directory) and promote again`);
    }
    const signal = join(dir, PROMOTE_SIGNAL_FILE);
    await writeSignalFile(signal, dir);
    if (values['no-wait'] === true) {
      await io.out(`promotion requested: ${signal} written`);
      return EXIT_OK;
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const control = await controlOf(storage);
      // On a new timeline: a primary that took the directory's lock before it recorded `in-production` is not a promotion.
      if (control.state === 'in-production' && control.timeline > before.timeline) {
        const switched = control.switchedFrom === undefined ? '' : ` (from timeline ${control.switchedFrom.timeline} at ${formatLsn(control.switchedFrom.switchLsn)})`;
        await io.out(`promoted: ${dir} is a primary on timeline ${control.timeline}${switched}`);
        return EXIT_OK;
      }
      if (!(await isRunning(dir))) throw new CommandFailure(`the standby in ${dir} stopped before it promoted (${signal} stays; it is removed when a standby opens there)`);
      if (Date.now() >= deadline) {
        throw new CommandFailure(`the standby in ${dir} did not promote within ${timeoutMs / 1000} s; ${signal} stays, so it promotes when it can (e.g. once consistent): remove that file to cancel`);
      }
      await sleep(POLL_MS);
    }
  },
};

/** The control file; a directory without one, or with one that cannot be read, is a {@link CommandFailure}. */
async function controlOf(storage: NodeStorage): Promise<ControlData> {
  const control = await readControlFile(storage).catch((err: unknown) => {
    throw new CommandFailure(`cannot read ${CONTROL_FILE} in ${storage.description}: ${describeError(err)}`);
  });
  if (control === null) throw new CommandFailure(`${storage.description} is not a walship data directory (no ${CONTROL_FILE})`);
  return control;
}

/** Whether a live process holds the directory's lock (one on another host counts: it cannot be told). */
async function isRunning(dir: string): Promise<boolean> {
  const holder = await readLockHolder(dir);
  return holder !== null && holder.alive !== false;
}

/** Creates the (empty) signal file and makes it durable: the file, then its directory entry. */
async function writeSignalFile(path: string, dir: string): Promise<void> {
  try {
    const handle = await open(path, 'w');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await syncDirectoryAt(dir);
  } catch (err) {
    throw new CommandFailure(`cannot write ${path}: ${(err as Error).message}`);
  }
}
