import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isWalshipError } from '../errors.js';
import { parseLsn, type Lsn } from '../lsn.js';

/**
 * What every `walship` subcommand shares: its shape, its output streams, its exit codes, and
 * the parsing of its arguments (`node:util` `parseArgs`, strict) into one-line usage errors.
 */

/** Exit code of a command that did what it was asked. */
export const EXIT_OK = 0;
/** Exit code of a command that failed, or found damage (`waldump`): the message says which. */
export const EXIT_FAILURE = 1;
/** Exit code of a command given bad arguments (an unknown flag, a missing operand, a bad LSN), as for `pg_*` tools. */
export const EXIT_USAGE = 2;

/**
 * Where a command writes: its results to `out`, its diagnostics to `err`, a line at a time.
 * `out` resolves once the line may be followed by more (a slow reader of a long dump holds
 * the command back instead of letting the lines pile up in memory).
 */
export interface Io {
  readonly out: (line: string) => Promise<void>;
  readonly err: (line: string) => void;
}

/** One subcommand of the `walship` bin. */
export interface Command {
  readonly name: string;
  /** One line, for the top-level help. */
  readonly summary: string;
  /** The `--help` text. */
  readonly help: string;
  /** Runs the command on its arguments (those after its name); resolves with the exit code. */
  run(args: readonly string[], io: Io): Promise<number>;
}

/** Bad arguments: printed as one line, exit code {@link EXIT_USAGE}. */
export class UsageError extends Error {}

/** A command that could not do its work: printed as one line, exit code {@link EXIT_FAILURE}. */
export class CommandFailure extends Error {}

/**
 * An error as one line of text for the operator: `CODE: message` for a {@link WalshipError}
 * (its code is the stable part a script matches, e.g. `WAL_FORMAT` apart from `WAL_CORRUPT`),
 * the message for any other error; only the message's first line.
 */
export function describeError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const line = message.split('\n')[0] ?? '';
  return isWalshipError(err) ? `${err.code}: ${line}` : line;
}

/** The parsed flags and operands of a command. */
export interface ParsedArgs {
  /** Each flag given: a string for one that takes a value, `true` for a switch. */
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
  readonly help: boolean;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses `args` strictly with `options` (plus `--help`/`-h`), requiring `operands` operands
 * exactly; a parse error becomes a one-line {@link UsageError}.
 */
export function parseCommandArgs(args: readonly string[], options: Options, operands: readonly string[]): ParsedArgs {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(describeParseError(err));
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const help = values['help'] === true;
  if (!help) {
    if (parsed.positionals.length < operands.length) throw new UsageError(`missing operand: ${operands[parsed.positionals.length] as string}`);
    if (parsed.positionals.length > operands.length) throw new UsageError(`unexpected operand '${parsed.positionals[operands.length] as string}'`);
  }
  return { values, positionals: parsed.positionals, help };
}

/** A short message for `parseArgs`' errors (its own are long and multi-clause). */
function describeParseError(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const message = (err as Error).message;
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? '';
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option '${quoted}'`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const flag = quoted.split(' ')[0] ?? quoted;
      if (message.includes('ambiguous')) return `option '${flag}' needs a value (one starting with '-' is written ${flag}=-1)`;
      return message.includes('argument missing') ? `option '${flag}' needs a value` : `option '${flag}' takes no value`;
    }
    default:
      return message.split('\n')[0] ?? message;
  }
}

/** Parses the value of an LSN flag (`X/Y`); a bad one is a {@link UsageError}. */
export function lsnArg(flag: string, text: string): Lsn {
  try {
    return parseLsn(text);
  } catch (err) {
    if (isWalshipError(err, 'INVALID_LSN')) throw new UsageError(`${flag}: '${text}' is not an LSN (expected X/Y in hexadecimal, e.g. 0/1000028)`);
    throw err;
  }
}

/** Parses the value of a flag that is a whole number from `min` to `max`; a bad one is a {@link UsageError}. */
export function integerArg(flag: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const value = /^-?\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new UsageError(`${flag}: '${text}' is not a whole number from ${min} to ${max}`);
  return value;
}

/** Parses the value of a flag that is a (positive) number of seconds; a bad one is a {@link UsageError}. */
export function secondsArg(flag: string, text: string): number {
  const value = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isFinite(value) || value <= 0 || value > 2_147_483) throw new UsageError(`${flag}: '${text}' is not a number of seconds above 0`);
  return value;
}
