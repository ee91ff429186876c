import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import createDebug from 'debug';
import { WalshipError, errnoCode } from '../errors.js';
import type { Storage, StorageFile, StorageLock, StorageOpenOptions } from './storage.js';

const log = createDebug('walship:storage');

/** Name of the lock file {@link NodeStorage.lock} creates in the directory. */
export const LOCK_FILE_NAME = 'walship.lock';

/**
 * Directories (by real path) locked by this process, mapped to the lock's token. The lock
 * file alone cannot stop this process from locking twice: it may be deleted under us.
 */
const heldLocks = new Map<string, string>();

/** Zeros that {@link StorageFile.allocate} writes from; shared so extending never allocates. */
let zeros: Buffer | undefined;
const ZERO_CHUNK_SIZE = 1024 * 1024;

/** A {@link Storage} on a real directory, through `node:fs/promises`. */
export class NodeStorage implements Storage {
  /** The directory's resolved absolute path. */
  readonly description: string;

  constructor(dir: string) {
    if (typeof dir !== 'string' || dir === '') {
      throw new WalshipError('INVALID_ARGUMENT', 'NodeStorage needs a directory path (a non-empty string)');
    }
    this.description = path.resolve(dir);
  }

  async prepare(): Promise<void> {
    const firstCreated = await fs.mkdir(this.description, { recursive: true });
    if (firstCreated === undefined) return;
    // Each new directory's entry lives in its parent: sync from the parent of the first
    // directory created down to the parent of ours.
    let dir = path.dirname(this.description);
    const stop = path.dirname(path.resolve(firstCreated));
    for (;;) {
      await syncDirectoryAt(dir);
      if (dir === stop || dir === path.dirname(dir)) break;
      dir = path.dirname(dir);
    }
  }

  async list(): Promise<string[]> {
    const entries = await fs.readdir(this.description, { withFileTypes: true });
    return entries.filter((entry) => entry.isFile()).map((entry) => entry.name);
  }

  async open(name: string, options: StorageOpenOptions = {}): Promise<StorageFile> {
    const file = this.pathOf(name);
    let flags = options.readOnly === true ? constants.O_RDONLY : constants.O_RDWR;
    if (options.create === true) {
      flags |= constants.O_CREAT;
      if (options.exclusive === true) flags |= constants.O_EXCL;
    }
    return new NodeStorageFile(name, await fs.open(file, flags, 0o666));
  }

  async rename(from: string, to: string): Promise<void> {
    await fs.rename(this.pathOf(from), this.pathOf(to));
  }

  async remove(name: string): Promise<void> {
    await fs.unlink(this.pathOf(name));
  }

  async syncDirectory(): Promise<void> {
    await syncDirectoryAt(this.description);
  }

  /**
   * Takes the lock through an exclusively created `walship.lock` file naming this process.
   * A lock file left by a dead process on this host, or left empty or unreadable by a crash
   * while it was being written, is removed and the lock taken over.
   */
  async lock(): Promise<StorageLock> {
    const realDir = await fs.realpath(this.description);
    if (heldLocks.has(realDir)) {
      const message = `${this.description} is already locked by this process (pid ${process.pid})`;
      throw new WalshipError('WAL_LOCKED', message);
    }
    const token = randomBytes(16).toString('hex');
    // Claimed before the first await below, so concurrent calls in this process see it.
    heldLocks.set(realDir, token);
    try {
      await this.createLockFile(token);
    } catch (err) {
      heldLocks.delete(realDir);
      throw err;
    }
    log('locked %s', this.description);
    return new NodeStorageLock(this.lockPath, realDir, token);
  }

  private get lockPath(): string {
    return path.join(this.description, LOCK_FILE_NAME);
  }

  private async createLockFile(token: string): Promise<void> {
    const holder: LockHolder = { pid: process.pid, hostname: hostname(), token, createdAt: new Date().toISOString() };
    const content = Buffer.from(`${JSON.stringify(holder)}\n`);
    // One takeover of a stale lock at most: a second conflict means another live holder won.
    for (let attempt = 1; ; attempt++) {
      if (await this.tryCreateLockFile(content)) return;
      const existing = await readLockFile(this.lockPath);
      if (existing === undefined) {
        if (attempt < 2) continue; // Released between our create and read: try again.
        throw this.lockedError(undefined);
      }
      const stale = existing.holder === undefined || isStaleHolder(existing.holder);
      if (!stale || attempt >= 2) throw this.lockedError(existing.holder);
      await this.removeStaleLockFile(existing);
    }
  }

  /** Creates the lock file with `content`; false when it already exists. */
  private async tryCreateLockFile(content: Buffer): Promise<boolean> {
    let handle: FileHandle;
    try {
      handle = await fs.open(this.lockPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    } catch (err) {
      if (errnoCode(err) === 'EEXIST') return false;
      throw err;
    }
    try {
      await writeFully(handle, content, 0);
      await handle.sync();
    } catch (err) {
      // An empty lock file would read as stale anyway; removing it is just tidier.
      await handle.close().catch(() => undefined);
      await fs.unlink(this.lockPath).catch(() => undefined);
      throw err;
    }
    await handle.close();
    await this.syncDirectory();
    return true;
  }

  private async removeStaleLockFile(stale: LockFileContent): Promise<void> {
    // Re-read right before removing so that a lock file another process has just written
    // in its place is not deleted (a narrow race remains; fs offers no compare-and-delete).
    const current = await readLockFile(this.lockPath);
    if (current === undefined || current.raw !== stale.raw) return;
    log('removing stale lock file %s (holder %o)', this.lockPath, stale.holder ?? stale.raw);
    await fs.unlink(this.lockPath).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }

  private lockedError(holder: LockHolder | undefined): WalshipError {
    const who =
      holder === undefined
        ? 'another holder'
        : `pid ${holder.pid} on host ${holder.hostname}${isThisProcess(holder) ? ' (this process)' : ''}`;
    return new WalshipError('WAL_LOCKED', `${this.description} is locked by ${who} (lock file ${this.lockPath})`);
  }

  private pathOf(name: string): string {
    assertFileName(name);
    return path.join(this.description, name);
  }
}

/** What a lock file says about its holder. */
interface LockHolder {
  pid: number;
  hostname: string;
  token: string;
  createdAt: string;
}

interface LockFileContent {
  raw: string;
  /** Undefined when the file is empty or not a lock file we can read. */
  holder: LockHolder | undefined;
}

async function readLockFile(lockPath: string): Promise<LockFileContent | undefined> {
  try {
    const raw = await fs.readFile(lockPath, 'utf8');
    return { raw, holder: parseLockHolder(raw) };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

function parseLockHolder(raw: string): LockHolder | undefined {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { pid, hostname: host, token, createdAt } = value as Record<string, unknown>;
  // A pid of 0 or below would make process.kill() signal a whole process group.
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (typeof host !== 'string' || typeof token !== 'string') return undefined;
  return { pid, hostname: host, token, createdAt: typeof createdAt === 'string' ? createdAt : '' };
}

/** True when the holder is a process on this host that no longer exists. */
function isStaleHolder(holder: LockHolder): boolean {
  if (holder.hostname !== hostname()) return false; // Cannot tell whether it lives.
  if (isThisProcess(holder)) return false; // Perhaps another copy of walship in this process.
  try {
    process.kill(holder.pid, 0);
    return false;
  } catch (err) {
    return errnoCode(err) === 'ESRCH'; // EPERM: alive, owned by another user.
  }
}

function isThisProcess(holder: LockHolder): boolean {
  return holder.pid === process.pid && holder.hostname === hostname();
}

class NodeStorageLock implements StorageLock {
  private released: Promise<void> | undefined;

  constructor(
    private readonly lockPath: string,
    private readonly realDir: string,
    private readonly token: string,
  ) {}

  release(): Promise<void> {
    this.released ??= this.removeLockFile();
    return this.released;
  }

  private async removeLockFile(): Promise<void> {
    try {
      const existing = await readLockFile(this.lockPath);
      // Never delete a lock file that another holder has taken over since.
      if (existing?.holder?.token !== this.token) return;
      await fs.unlink(this.lockPath).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
      log('unlocked %s', path.dirname(this.lockPath));
    } finally {
      if (heldLocks.get(this.realDir) === this.token) heldLocks.delete(this.realDir);
    }
  }
}

class NodeStorageFile implements StorageFile {
  private closed: Promise<void> | undefined;

  constructor(
    readonly name: string,
    private readonly handle: FileHandle,
  ) {}

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    let total = 0;
    while (total < length) {
      const { bytesRead } = await this.handle.read(buffer, offset + total, length - total, position + total);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
    return total;
  }

  async write(data: Uint8Array, position: number): Promise<void> {
    await writeFully(this.handle, data, position);
  }

  async datasync(): Promise<void> {
    await this.handle.datasync();
  }

  async allocate(size: number): Promise<void> {
    let current = (await this.handle.stat()).size;
    if (current >= size) return;
    zeros ??= Buffer.alloc(ZERO_CHUNK_SIZE);
    while (current < size) {
      const chunk = Math.min(size - current, zeros.length);
      await writeFully(this.handle, zeros.subarray(0, chunk), current);
      current += chunk;
    }
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  close(): Promise<void> {
    this.closed ??= this.handle.close();
    return this.closed;
  }
}

/**
 * Writes all of `data` at `position`, looping on short writes. A failure rethrows the
 * original error with `bytesWritten`: how many bytes of `data` reached the file.
 */
async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let written = 0;
  try {
    while (written < data.length) {
      const { bytesWritten } = await handle.write(data, written, data.length - written, position + written);
      // pwrite() never returns 0 for a non-empty regular-file write; guard against a spin.
      if (bytesWritten === 0) throw Object.assign(new Error('EIO: write made no progress'), { code: 'EIO' });
      written += bytesWritten;
    }
  } catch (err) {
    if (typeof err === 'object' && err !== null) Object.assign(err, { bytesWritten: written });
    throw err;
  }
}

async function syncDirectoryAt(dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Rejects names that are not a plain file name in the one flat directory, with an `EINVAL`
 * error like the system's own.
 */
export function assertFileName(name: string): void {
  if (
    typeof name !== 'string' ||
    name === '' ||
    name === '.' ||
    name === '..' ||
    name.includes('/') ||
    name.includes('\\') ||
    name.includes('\0')
  ) {
    const error = new Error(`EINVAL: invalid file name ${JSON.stringify(name)} (a storage holds plain names only)`);
    throw Object.assign(error, { code: 'EINVAL' });
  }
}
