import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import { syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it, mock } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isWalshipError } from '../../src/errors.js';
import { LOCK_FILE_NAME, NodeStorage } from '../../src/storage/node-storage.js';
import { storageConformance } from '../../src/testing/storage-conformance.js';

async function makeTempDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'walship-'));
}

/** Runs `body` with a fresh temporary directory, removed afterwards. */
function withTempDir(body: (dir: string) => Promise<void>) {
  return async (): Promise<void> => {
    const dir = await makeTempDir();
    try {
      await body(dir);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  };
}

// Each case's directory does not exist yet: the suite's prepare() creates it. A power loss
// cannot be simulated on real files, so the durability cases are skipped.
storageConformance({
  name: 'NodeStorage',
  createStorage: async () => new NodeStorage(path.join(await makeTempDir(), 'data')),
  openAgain: (storage) => new NodeStorage(storage.description),
  cleanup: (storage) => fs.rm(path.dirname(storage.description), { recursive: true, force: true }),
});

const isLocked = (err: unknown): boolean => isWalshipError(err, 'WAL_LOCKED');

/** The registry of locked directories that every copy of walship in a process shares. */
function sharedRegistry(): Map<string, string> {
  const scope = globalThis as { [key: symbol]: unknown };
  const registry = scope[Symbol.for('walship.storage.locks')];
  assert.ok(registry instanceof Map, 'the lock registry is a Map on globalThis');
  return registry as Map<string, string>;
}

/** Names in `dir` that start with the lock file's name: the lock file and anything staged for it. */
async function lockFileNames(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((name) => name.startsWith(LOCK_FILE_NAME)).sort();
}

/** Writes a lock file as another walship process would have. */
async function writeLockFile(dir: string, pid: number, hostname = os.hostname()): Promise<void> {
  const holder = { pid, hostname, token: 'someone-else', createdAt: new Date().toISOString() };
  await fs.writeFile(path.join(dir, LOCK_FILE_NAME), JSON.stringify(holder));
}

async function readLockFile(dir: string): Promise<{ pid: number; hostname: string; token: string; createdAt: string }> {
  return JSON.parse(await fs.readFile(path.join(dir, LOCK_FILE_NAME), 'utf8'));
}

/** The pid of a process that has already exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid !== undefined, 'child process has a pid');
  await once(child, 'exit');
  return pid;
}

/** Runs `body` with a live child process, killed and awaited afterwards. */
async function withLiveProcess(body: (pid: number) => Promise<void>): Promise<void> {
  const child: ChildProcess = spawn(process.execPath, ['-e', 'setInterval(() => {}, 60_000)'], { stdio: 'ignore' });
  try {
    await once(child, 'spawn');
    assert.ok(child.pid !== undefined, 'child process has a pid');
    await body(child.pid);
  } finally {
    const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }
}

describe('NodeStorage', () => {
  it('describes itself by its absolute path', () => {
    const storage = new NodeStorage('relative/dir');
    assert.equal(storage.description, path.resolve('relative/dir'));
  });

  it('prepare() creates missing parent directories too', withTempDir(async (dir) => {
    const nested = path.join(dir, 'a', 'b', 'wal');
    const storage = new NodeStorage(nested);
    await storage.prepare();
    assert.ok((await fs.stat(nested)).isDirectory(), `${nested} is a directory`);
    await storage.prepare();
  }));

  it('allocate() writes the zeros to disk; with sparse it leaves a hole', withTempDir(async (dir) => {
    const storage = new NodeStorage(dir);
    const size = 4 * 1024 * 1024;
    for (const sparse of [false, true]) {
      const file = await storage.open(`f${sparse}`, { create: true });
      await file.allocate(size, { sparse });
      await file.close();
    }
    // st_blocks counts 512-byte units actually allocated.
    assert.ok((await fs.stat(path.join(dir, 'ffalse'))).blocks * 512 >= size, 'zero-filled');
    assert.ok((await fs.stat(path.join(dir, 'ftrue'))).blocks * 512 < size / 2, 'sparse');
  }));

  it('list() shows regular files only, the lock file included', withTempDir(async (dir) => {
    const storage = new NodeStorage(dir);
    await fs.mkdir(path.join(dir, 'subdir'));
    await fs.writeFile(path.join(dir, 'file'), 'x');
    await fs.symlink(path.join(dir, 'file'), path.join(dir, 'link'));
    const lock = await storage.lock();
    assert.deepEqual((await storage.list()).sort(), ['file', LOCK_FILE_NAME]);
    await lock.release();
    assert.deepEqual(await storage.list(), ['file']);
  }));

  it('writes a lock file naming this process and removes it on release', withTempDir(async (dir) => {
    const storage = new NodeStorage(dir);
    const lock = await storage.lock();
    const holder = await readLockFile(dir);
    assert.equal(holder.pid, process.pid);
    assert.equal(holder.hostname, os.hostname());
    assert.match(holder.token, /^[0-9a-f]{32}$/);
    assert.ok(!Number.isNaN(Date.parse(holder.createdAt)), `createdAt ${holder.createdAt} is a date`);
    await lock.release();
    await assert.rejects(fs.access(path.join(dir, LOCK_FILE_NAME)), { code: 'ENOENT' });
  }));

  it('refuses a second NodeStorage on the same directory in this process', withTempDir(async (dir) => {
    const first = new NodeStorage(dir);
    const lock = await first.lock();
    const second = new NodeStorage(path.join(dir, '.', ''));
    await assert.rejects(second.lock(), (err: unknown) => {
      assert.ok(isLocked(err), String(err));
      assert.match((err as Error).message, new RegExp(`pid ${process.pid}`));
      return true;
    });
    // The in-process registry holds even when the lock file has vanished.
    await fs.unlink(path.join(dir, LOCK_FILE_NAME));
    await assert.rejects(second.lock(), isLocked);
    await lock.release();
    const again = await second.lock();
    await again.release();
  }));

  it('refuses a lock reached through a symlink to a locked directory', withTempDir(async (dir) => {
    const real = path.join(dir, 'real');
    await fs.mkdir(real);
    await fs.symlink(real, path.join(dir, 'alias'));
    const lock = await new NodeStorage(real).lock();
    await assert.rejects(new NodeStorage(path.join(dir, 'alias')).lock(), isLocked);
    await lock.release();
  }));

  it('concurrent lock() calls in one process: exactly one wins', withTempDir(async (dir) => {
    const results = await Promise.allSettled([new NodeStorage(dir).lock(), new NodeStorage(dir).lock()]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(won.length, 1);
    assert.equal(lost.length, 1);
    assert.ok(isLocked(lost[0]?.reason), String(lost[0]?.reason));
    await (won[0] as PromiseFulfilledResult<{ release(): Promise<void> }>).value.release();
  }));

  for (const stale of [false, true]) {
    it(`20 parallel lock() calls in one process${stale ? ' over a stale lock file' : ''}: exactly one wins`, withTempDir(async (dir) => {
      if (stale) await writeLockFile(dir, await deadPid());
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => new NodeStorage(dir).lock()));
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1);
      for (const { reason } of lost) assert.ok(isLocked(reason), String(reason));
      assert.equal((await readLockFile(dir)).pid, process.pid);
      await (won[0] as PromiseFulfilledResult<{ release(): Promise<void> }>).value.release();
      assert.deepEqual(await lockFileNames(dir), []);
    }));
  }

  it('takes over a lock file left by a dead process', withTempDir(async (dir) => {
    const pid = await deadPid();
    await writeLockFile(dir, pid);
    const lock = await new NodeStorage(dir).lock();
    const holder = await readLockFile(dir);
    assert.equal(holder.pid, process.pid);
    await lock.release();
  }));

  for (const [what, content] of [
    ['empty', ''],
    ['truncated', '{"pid":12'],
    ['not a lock', '{"hello":"world"}'],
  ] as const) {
    it(`takes over a lock file that is ${what} (a crash while locking)`, withTempDir(async (dir) => {
      await fs.writeFile(path.join(dir, LOCK_FILE_NAME), content);
      const lock = await new NodeStorage(dir).lock();
      assert.equal((await readLockFile(dir)).pid, process.pid);
      await lock.release();
    }));
  }

  it('refuses a lock held by a live process on this host', withTempDir(async (dir) => {
    await withLiveProcess(async (pid) => {
      await writeLockFile(dir, pid);
      await assert.rejects(new NodeStorage(dir).lock(), (err: unknown) => {
        assert.ok(isLocked(err), String(err));
        const { message } = err as Error;
        assert.ok(message.includes(dir), message);
        assert.ok(message.includes(`pid ${pid}`), message);
        assert.ok(message.includes(os.hostname()), message);
        return true;
      });
      // The other holder's lock file is left alone.
      assert.equal((await readLockFile(dir)).pid, pid);
    });
  }));

  it('takes over a lock file naming this process that the registry does not hold (a restart)', withTempDir(async (dir) => {
    // After a container restart the new process often has the old one's pid and hostname.
    await writeLockFile(dir, process.pid);
    const lock = await new NodeStorage(dir).lock();
    const holder = await readLockFile(dir);
    assert.equal(holder.pid, process.pid);
    assert.notEqual(holder.token, 'someone-else');
    await lock.release();
    assert.deepEqual(await lockFileNames(dir), []);
  }));

  it('keeps its registry on globalThis, shared with other copies of walship', withTempDir(async (dir) => {
    const lock = await new NodeStorage(dir).lock();
    const realDir = await fs.realpath(dir);
    assert.equal(sharedRegistry().get(realDir), (await readLockFile(dir)).token);
    await lock.release();
    assert.equal(sharedRegistry().has(realDir), false);

    // Another copy of walship in this process holds the directory: its lock file names this
    // process, and the registry says the lock is live.
    await writeLockFile(dir, process.pid);
    sharedRegistry().set(realDir, 'someone-else');
    try {
      await assert.rejects(new NodeStorage(dir).lock(), (err: unknown) => {
        assert.ok(isLocked(err), String(err));
        assert.match((err as Error).message, /already locked by this process/);
        return true;
      });
      assert.equal((await readLockFile(dir)).token, 'someone-else');
    } finally {
      sharedRegistry().delete(realDir);
    }
  }));

  it('leaves no staged lock files behind', withTempDir(async (dir) => {
    const storage = new NodeStorage(dir);
    const lock = await storage.lock();
    assert.deepEqual(await lockFileNames(dir), [LOCK_FILE_NAME]);
    await assert.rejects(new NodeStorage(dir).lock(), isLocked);
    await lock.release();
    assert.deepEqual(await lockFileNames(dir), []);
    // Nor when the lock is refused by another process's lock file.
    await writeLockFile(dir, 1, `not-${os.hostname()}`);
    await assert.rejects(storage.lock(), isLocked);
    assert.deepEqual(await lockFileNames(dir), [LOCK_FILE_NAME]);
  }));

  it('removes staged lock files left by a crash once they are old', withTempDir(async (dir) => {
    const old = `${LOCK_FILE_NAME}.${'a'.repeat(32)}.new`;
    const young = `${LOCK_FILE_NAME}.${'b'.repeat(32)}.new`;
    await fs.writeFile(path.join(dir, old), '{}');
    await fs.writeFile(path.join(dir, young), '{}');
    const longAgo = new Date(Date.now() - 10 * 60_000);
    await fs.utimes(path.join(dir, old), longAgo, longAgo);
    const lock = await new NodeStorage(dir).lock();
    assert.deepEqual(await lockFileNames(dir), [LOCK_FILE_NAME, young]);
    await lock.release();
  }));

  it('never shows a reader an empty or partial lock file', withTempDir(async (dir) => {
    let done = false;
    const seen: string[] = [];
    const reader = (async () => {
      while (!done) {
        try {
          seen.push(await fs.readFile(path.join(dir, LOCK_FILE_NAME), 'utf8'));
        } catch (err) {
          if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
    })();
    try {
      for (let i = 0; i < 50; i++) await (await new NodeStorage(dir).lock()).release();
    } finally {
      done = true;
      await reader;
    }
    for (const raw of seen) assert.equal(JSON.parse(raw).pid, process.pid, `lock file read as ${JSON.stringify(raw)}`);
  }));

  it('creates the lock file in place where the file system has no hard links', withTempDir(async (dir) => {
    const link = mock.method(fs, 'link', async () => {
      throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' });
    });
    try {
      const lock = await new NodeStorage(dir).lock();
      assert.ok(link.mock.callCount() >= 1, 'link() was tried first');
      assert.equal((await readLockFile(dir)).pid, process.pid);
      assert.deepEqual(await lockFileNames(dir), [LOCK_FILE_NAME]);
      await assert.rejects(new NodeStorage(dir).lock(), isLocked);
      await lock.release();
      assert.deepEqual(await lockFileNames(dir), []);
    } finally {
      link.mock.restore();
    }
  }));

  it('refuses a lock held on another host, even by a pid that is dead here', withTempDir(async (dir) => {
    await writeLockFile(dir, await deadPid(), `not-${os.hostname()}`);
    await assert.rejects(new NodeStorage(dir).lock(), (err: unknown) => {
      assert.ok(isLocked(err), String(err));
      assert.match((err as Error).message, /on host not-/);
      return true;
    });
  }));

  it('release leaves a lock file that is no longer ours', withTempDir(async (dir) => {
    const lock = await new NodeStorage(dir).lock();
    await writeLockFile(dir, 1234);
    await lock.release();
    assert.equal((await readLockFile(dir)).token, 'someone-else');
  }));

  it('lock() on a missing directory fails with ENOENT and holds nothing', withTempDir(async (dir) => {
    const storage = new NodeStorage(path.join(dir, 'missing'));
    await assert.rejects(storage.lock(), { code: 'ENOENT' });
    await storage.prepare();
    const lock = await storage.lock();
    await lock.release();
  }));

  it('a failed write rethrows the system error with bytesWritten', withTempDir(async (dir) => {
    const storage = new NodeStorage(dir);
    const writable = await storage.open('f', { create: true });
    await writable.write(new Uint8Array([1, 2, 3]), 0);
    await writable.close();
    const file = await storage.open('f', { readOnly: true });
    await assert.rejects(file.write(new Uint8Array(10), 0), (err: unknown) => {
      const { code, syscall, bytesWritten } = err as { code?: unknown; syscall?: unknown; bytesWritten?: unknown };
      assert.equal(code, 'EBADF');
      assert.equal(syscall, 'write');
      assert.equal(bytesWritten, 0);
      return true;
    });
    await file.close();
  }));

  it('creates files with exclusive create atomically across two storages', withTempDir(async (dir) => {
    const results = await Promise.allSettled([
      new NodeStorage(dir).open('seg', { create: true, exclusive: true }),
      new NodeStorage(dir).open('seg', { create: true, exclusive: true }),
    ]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const result of results) if (result.status === 'fulfilled') await result.value.close();
  }));

  it('processes racing for the lock: exactly one holds it at a time', { timeout: 120_000 }, withTempDir(async (dir) => {
    const children = Array.from({ length: 4 }, () => new LockingChild(dir));
    try {
      for (const child of children) assert.equal(await child.nextLine(), 'READY', child.describe());
      for (let round = 0; round < 5; round++) {
        // All children try at once; the winner holds the lock until every answer is in.
        for (const child of children) child.send('lock');
        const answers = await Promise.all(children.map((child) => child.nextLine()));
        const winners = children.filter((_, i) => answers[i] === 'LOCKED');
        assert.equal(winners.length, 1, `round ${round}: ${answers.join(', ')}\n${children.map((c) => c.describe()).join('\n')}`);
        assert.equal(answers.filter((answer) => answer === 'REFUSED').length, children.length - 1, answers.join(', '));
        const winner = winners[0] as LockingChild;
        winner.send('release');
        assert.equal(await winner.nextLine(), 'RELEASED', winner.describe());
        assert.deepEqual(await lockFileNames(dir), []);
      }
    } finally {
      await Promise.all(children.map((child) => child.stop()));
    }
  }));
});

/** The storage module's source, which child processes import through tsx. */
const NODE_STORAGE_SOURCE = new URL('../../src/storage/node-storage.ts', import.meta.url).href;
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * A child process's script: on each `lock` line it tries to lock the directory and answers
 * LOCKED or REFUSED (ERROR for anything else); on `release` it releases and answers RELEASED.
 */
const CHILD_SCRIPT = `
const { NodeStorage } = await import(process.env.WALSHIP_SOURCE);
const { createInterface } = await import('node:readline');
const storage = new NodeStorage(process.env.WALSHIP_DIR);
let lock;
console.log('READY');
for await (const line of createInterface({ input: process.stdin })) {
  try {
    if (line === 'lock') {
      lock = await storage.lock();
      console.log('LOCKED');
    } else if (line === 'release') {
      await lock.release();
      console.log('RELEASED');
    }
  } catch (err) {
    console.log(err.code === 'WAL_LOCKED' ? 'REFUSED' : 'ERROR ' + JSON.stringify(String(err.stack)));
  }
}
`;

/** A child process that locks a directory on command, answering one line per command. */
class LockingChild {
  private readonly process: ChildProcess;
  private readonly lines: string[] = [];
  private readonly waiting: Array<() => void> = [];
  private stderr = '';
  private exited = false;

  constructor(dir: string) {
    this.process = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD_SCRIPT], {
      cwd: REPO_ROOT,
      env: { ...process.env, WALSHIP_SOURCE: NODE_STORAGE_SOURCE, WALSHIP_DIR: dir },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    createInterface({ input: this.process.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      this.lines.push(line);
      this.wake();
    });
    this.process.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.process.on('exit', () => {
      this.exited = true;
      this.wake();
    });
  }

  send(command: string): void {
    this.process.stdin?.write(`${command}\n`);
  }

  /** The child's next line of output; fails if it exits first or none comes in 60 s. */
  async nextLine(): Promise<string> {
    const deadline = Date.now() + 60_000;
    while (this.lines.length === 0) {
      if (this.exited) throw new Error(`child exited without answering\n${this.describe()}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`child did not answer within 60 s\n${this.describe()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiting.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.lines.shift() as string;
  }

  describe(): string {
    return `child ${this.process.pid}: exit ${this.process.exitCode ?? this.process.signalCode ?? 'pending'}, stderr: ${this.stderr.trim() || '(none)'}`;
  }

  /** Closes the child's input, so it exits, killing it if it has not within 10 s. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = once(this.process, 'exit');
    this.process.stdin?.end();
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  private wake(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }
}

describe('NodeStorage small writes (on the calling thread)', () => {
  it('a writev of several buffers is one pwritev, and a short one goes on from where it stopped', withTempDir(async (dir) => {
    const storage = new NodeStorage(dir);
    await storage.prepare();
    const file = await storage.open('seg', { create: true });
    const original = fsSync.writevSync;
    let calls = 0;
    let shortOnce = true;
    mock.method(fsSync, 'writevSync', (fd: number, buffers: NodeJS.ArrayBufferView[], position?: number) => {
      calls++;
      // The first call writes 5 bytes only, as a short write may.
      if (shortOnce) {
        shortOnce = false;
        return original(fd, [Buffer.from((buffers[0] as Buffer).subarray(0, 5))], position);
      }
      return original(fd, buffers, position);
    });
    syncBuiltinESMExports();
    try {
      await file.writev!([Buffer.from('prefix-'), Buffer.alloc(0), Buffer.from('record'), Buffer.from('!')], 10);
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
    }
    assert.equal(calls, 2, 'one pwritev, then one for what the short write left (empty buffers skipped)');
    const back = Buffer.alloc(14);
    assert.equal(await file.read(back, 0, 14, 10), 14);
    assert.equal(back.toString(), 'prefix-record!');
    await file.close();
  }));
});
