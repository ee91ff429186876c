import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { isWalshipError } from '../../src/errors.js';
import { LOCK_FILE_NAME, NodeStorage } from '../../src/storage/node-storage.js';
import { storageContract } from './storage-contract.js';

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

storageContract('NodeStorage', async () => {
  const dir = await makeTempDir();
  return {
    storage: new NodeStorage(dir),
    cleanup: () => fs.rm(dir, { recursive: true, force: true }),
  };
});

const isLocked = (err: unknown): boolean => isWalshipError(err, 'WAL_LOCKED');

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
    assert.ok(child.pid !== undefined);
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
    assert.ok((await fs.stat(nested)).isDirectory());
    await storage.prepare();
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
    assert.ok(!Number.isNaN(Date.parse(holder.createdAt)));
    await lock.release();
    await assert.rejects(fs.access(path.join(dir, LOCK_FILE_NAME)), { code: 'ENOENT' });
  }));

  it('refuses a second NodeStorage on the same directory in this process', withTempDir(async (dir) => {
    const first = new NodeStorage(dir);
    const lock = await first.lock();
    const second = new NodeStorage(path.join(dir, '.', ''));
    await assert.rejects(second.lock(), (err: unknown) => {
      assert.ok(isLocked(err));
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
    assert.ok(isLocked(lost[0]?.reason));
    await (won[0] as PromiseFulfilledResult<{ release(): Promise<void> }>).value.release();
  }));

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
        assert.ok(isLocked(err));
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

  it('refuses a lock whose file names this process (another copy of walship)', withTempDir(async (dir) => {
    await writeLockFile(dir, process.pid);
    await assert.rejects(new NodeStorage(dir).lock(), isLocked);
    assert.equal((await readLockFile(dir)).token, 'someone-else');
  }));

  it('refuses a lock held on another host, even by a pid that is dead here', withTempDir(async (dir) => {
    await writeLockFile(dir, await deadPid(), `not-${os.hostname()}`);
    await assert.rejects(new NodeStorage(dir).lock(), (err: unknown) => {
      assert.ok(isLocked(err));
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
});
