#!/usr/bin/env node
// The `walship` bin (package.json "bin"): picks the subcommand, runs it, turns its errors into
// one line on stderr and an exit code. Each command is a module of its own beside this one.
import { once } from 'node:events';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { archiveCleanupCommand } from './archive-cleanup.js';
import { CommandFailure, EXIT_FAILURE, describeError, EXIT_OK, EXIT_USAGE, UsageError, type Command, type Io } from './command.js';
import { promoteCommand } from './promote.js';
import { statusCommand } from './status.js';
import { waldumpCommand } from './waldump.js';

/** The subcommands, in the order the help lists them. */
export const COMMANDS: readonly Command[] = [waldumpCommand, statusCommand, archiveCleanupCommand, promoteCommand];

const HELP = `Usage: walship <command> [arguments]

Operator tools for walship data directories and archives.

Commands:
${COMMANDS.map((command) => `  ${command.name.padEnd(17)}${command.summary}`).join('\n')}

Run 'walship <command> --help' for a command's arguments.
Exit codes: 0 success, 1 failure (the message says why), 2 bad arguments.`;

/** Runs the `walship` command line `args` (without the node and script paths); resolves with the exit code. */
export async function main(args: readonly string[], io: Io): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    await io.out(HELP);
    return name === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (command === undefined) {
    io.err(`walship: unknown command '${name}' (commands: ${COMMANDS.map((c) => c.name).join(', ')}; see 'walship --help')`);
    return EXIT_USAGE;
  }
  try {
    return await command.run(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`walship ${name}: ${err.message} (see 'walship ${name} --help')`);
      return EXIT_USAGE;
    }
    const message = err instanceof CommandFailure ? (err.message.split('\n')[0] ?? '') : describeError(err);
    io.err(`walship ${name}: error: ${message}`);
    return EXIT_FAILURE;
  }
}

/** The process's streams as an {@link Io}: stdout waits for `drain` when its buffer is full. */
function processIo(): Io {
  return {
    out: async (line) => {
      if (!process.stdout.write(`${line}\n`)) await once(process.stdout, 'drain');
    },
    err: (line) => {
      process.stderr.write(`${line}\n`);
    },
  };
}

/** Whether this module is the program being run (not imported, e.g. by a test). */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // A reader that went away (`walship waldump dir | head`) ends the output, not with a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT_OK);
    throw err;
  });
  process.exitCode = await main(process.argv.slice(2), processIo());
}
