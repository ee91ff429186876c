import { spawnSync } from 'node:child_process';
import os from 'node:os';

/** What the figures were measured on; every lookup tolerates failure. */
export interface Environment {
  readonly node: string;
  readonly cpu: string;
  readonly cores: number;
  readonly memory: string;
  readonly os: string;
  /** Filesystem type and device of the temp dir, from `df -T`, if available. */
  readonly filesystem: string;
  /** `git rev-parse --short HEAD`, with `+dirty` when src/ has uncommitted changes. */
  readonly commit: string;
}

/** Describes this machine and the checkout, for the report's header. */
export function describeEnvironment(dir: string, repoDir: string): Environment {
  const cpus = os.cpus();
  return {
    node: process.version,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: os.availableParallelism?.() ?? cpus.length,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    filesystem: filesystemOf(dir),
    commit: gitCommit(repoDir),
  };
}

function run(command: string, args: readonly string[], cwd?: string): string | undefined {
  try {
    const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
    return result.status === 0 ? result.stdout.trim() : undefined;
  } catch {
    return undefined;
  }
}

function filesystemOf(dir: string): string {
  // `df -T` prints a header line, then: device, type, blocks, used, available, use%, mount.
  const lines = run('df', ['-T', dir])?.split('\n') ?? [];
  const fields = lines[1]?.trim().split(/\s+/);
  if (fields === undefined || fields.length < 7) return 'unknown';
  return `${fields[1]} (${fields[0]}, mounted on ${fields[6]})`;
}

function gitCommit(repoDir: string): string {
  const head = run('git', ['rev-parse', '--short', 'HEAD'], repoDir);
  if (head === undefined) return 'unknown';
  const changes = run('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src'], repoDir);
  return changes === undefined || changes === '' ? head : `${head}+dirty (uncommitted changes in src/)`;
}
