/** Running PostgreSQL's programs: as the postgres OS user (PostgreSQL refuses to run as root), output collected, failures as errors. */
import { spawn, type ChildProcess } from 'node:child_process';

/** Where Debian's PostgreSQL 15 packages put the server and its tools. */
export const PG_BIN = '/usr/lib/postgresql/15/bin';
/** The OS user the servers and tools run as. */
export const PG_USER = 'postgres';

/** The argv that runs `program` of PG_BIN (or an absolute path) as {@link PG_USER}. */
export function asPostgres(program: string, args: readonly string[]): [string, string[]] {
  const file = program.startsWith('/') ? program : `${PG_BIN}/${program}`;
  return ['runuser', ['-u', PG_USER, '--', file, ...args]];
}

export interface Output {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end; rejects with its last lines of stderr when it exits non-zero. */
export function run(command: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Output> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            child.kill('SIGKILL');
          }, options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`${args.at(args.indexOf('--') + 1) ?? command} ${signal === null ? `exited with ${code}` : `was killed (${signal})`}: ${stderr.trim().split('\n').slice(-4).join(' | ')}`));
    });
  });
}

/** Runs a PostgreSQL program as the postgres user. */
export function runPg(program: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Output> {
  const [command, argv] = asPostgres(program, args);
  return run(command, argv, options);
}

/** Starts a PostgreSQL program as the postgres user in the background (pgbench under load); the caller waits for it. */
export function startPg(program: string, args: readonly string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const [command, argv] = asPostgres(program, args);
  return spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
}

/** A promise that resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Writes every dirty page of the machine to disk (`sync`), untimed, before a measured run:
 * PostgreSQL's standbys keep the heap pages they replayed dirty in the page cache (1.1–1.5 GB
 * after one bulk case, measured) until the kernel writes them back, which it does whenever
 * they expire, in the middle of whichever case runs then, on either side.
 */
export async function quietDisk(): Promise<void> {
  await run('sync', []);
}
