import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';
import type { Io } from '../../src/cli/command.js';
import { lines, runCli } from './run-cli.js';

// The dispatcher and argument handling of the `walship` bin: --help everywhere, and bad
// arguments as one line on stderr with exit code 2.

/** Runs `main` in this process, collecting what it prints. */
async function runMain(args: readonly string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = {
    out: async (line) => {
      out.push(line);
    },
    err: (line) => err.push(line),
  };
  return { code: await main(args, io), out, err };
}

const COMMANDS = ['waldump', 'status', 'archive-cleanup', 'promote'];

describe('walship (the bin)', () => {
  it('runs as a process: --help lists every command, exit 0', async () => {
    const result = await runCli(['--help']);
    assert.equal(result.code, 0, result.stderr);
    for (const name of COMMANDS) assert.match(result.stdout, new RegExp(`^  ${name} +\\S`, 'm'), `${name} is listed`);
  });

  it('answers --help on each command with its usage, exit 0', async () => {
    for (const name of COMMANDS) {
      const result = await runMain([name, '--help']);
      assert.equal(result.code, 0, `${name} --help`);
      assert.match(result.out.join('\n'), new RegExp(`^Usage: walship ${name} `), `${name}'s usage`);
      assert.deepEqual(result.err, []);
    }
  });

  it('refuses bad arguments with one line on stderr and exit code 2', async () => {
    const cases: [string[], RegExp][] = [
      [[], /^$/],
      [['frobnicate'], /^walship: unknown command 'frobnicate'/],
      [['waldump'], /^walship waldump: missing operand: <dir> \(see 'walship waldump --help'\)$/],
      [['waldump', 'a', 'b'], /^walship waldump: unexpected operand 'b'/],
      [['waldump', 'dir', '--frob'], /^walship waldump: unknown option '--frob'/],
      [['waldump', 'dir', '--start', 'nope'], /^walship waldump: --start: 'nope' is not an LSN/],
      [['waldump', 'dir', '--start', '0/200', '--end', '0/100'], /^walship waldump: --end 0\/100 is not past --start 0\/200/],
      [['waldump', 'dir', '--timeline', '0'], /^walship waldump: --timeline: '0' is not a whole number from 1/],
      [['waldump', 'dir', '--start'], /^walship waldump: option '--start' needs a value/],
      [['status'], /^walship status: missing operand: <dir>/],
      [['status', 'dir', '--wal-keep-size=-5'], /^walship status: --wal-keep-size: '-5' is not a whole number from 0/],
      [['status', 'dir', '--wal-keep-size', '-5'], /^walship status: option '--wal-keep-size' needs a value \(one starting with '-' is written --wal-keep-size=-1\)/],
      [['archive-cleanup', 'dir'], /^walship archive-cleanup: missing operand: <oldest-kept-segment>/],
      [['archive-cleanup', 'dir', 'zz'], /^walship archive-cleanup: 'zz' is not a WAL segment name/],
      [['promote', 'dir', '--timeout', 'soon'], /^walship promote: --timeout: 'soon' is not a number of seconds/],
      [['promote', 'dir', '--no-wait=yes'], /^walship promote: option '--no-wait' takes no value/],
    ];
    for (const [args, message] of cases) {
      const result = await runMain(args);
      assert.equal(result.code, 2, `walship ${args.join(' ')}: exit code`);
      assert.ok(result.err.length <= 1, `walship ${args.join(' ')}: one line at most`);
      assert.match(result.err[0] ?? '', message, `walship ${args.join(' ')}: message`);
    }
  });

  it('exits with 2 and one line from the process too', async () => {
    const result = await runCli(['waldump', '--start', 'x/y/z', 'dir']);
    assert.equal(result.code, 2);
    assert.equal(lines(result.stderr).length, 1, result.stderr);
    assert.equal(result.stdout, '');
  });
});
