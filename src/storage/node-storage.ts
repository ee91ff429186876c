import { randomBytes } from 'node:crypto';
import { constants, fdatasync, fdatasyncSync, readSync, writevSync } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import createDebug from 'debug';
import { syncDirectoryAt } from '../directory-sync.js';
import { WalshipError, errnoCode } from '../errors.js';
import { compileOptions, type OptionsValidator } from '../options.js';
import type { Storage, StorageFile, StorageLock, StorageOpenOptions } from './storage.js';
import { sharedSyncThread, type SyncThread } from './sync-thread.js';

const log = createDebug('walship:storage');

/** Name of the lock file {@link NodeStorage.lock} creates in the directory. */
export const LOCK_FILE_NAME = 'walship.lock';

/**
 * Key on `globalThis` of the registry of directories locked by this process: a
 * `Map<string, string>` from a directory's real path to the lock's token. It lives on
 * `globalThis` so that every copy of walship loaded in the process (two versions in
 * `node_modules`, an ESM and a bundled copy) shares it. Its key and shape are a contract
 * between versions: never change them; a different registry needs a different key.
 */
const HELD_LOCKS_KEY = Symbol.for('walship.storage.locks');

/**
 * The registry of directories locked by this process. The lock file alone cannot stop this
 * process from locking twice (it may be deleted under us), and it cannot tell this process
 * from an earlier one with the same pid, so this registry is the authority for this process.
 */
function heldLocks(): Map<string, string> {
  const scope = globalThis as { [HELD_LOCKS_KEY]?: Map<string, string> };
  return (scope[HELD_LOCKS_KEY] ??= new Map());
}

/**
 * Errors of `link()` on a file system without hard links: the lock file is then created in
 * place, and a reader may see it empty for a moment (and take it for stale).
 */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** Lock contents are staged in `walship.lock.<token>.new` (not `.tmp`: WalLog removes those). */
const LOCK_TEMP_PATTERN = /^walship\.lock\.[0-9a-f]{32}\.new$/;
/** Staged lock files left by a crash are removed once this old (ms); live ones last a few ms. */
const LOCK_TEMP_MAX_AGE_MS = 60_000;

/** Zeros that {@link StorageFile.allocate} writes from; shared so extending never allocates. */
let zeros: Buffer | undefined;
const ZERO_CHUNK_SIZE = 1024 * 1024;

/** Where the fdatasync of a commit-path file runs: see {@link NodeStorageOptions.commitSync}. */
export type CommitSync = 'pool' | 'thread' | 'inline';

/** Options of {@link NodeStorage}. */
export interface NodeStorageOptions {
  /**
   * Where the fdatasync of files opened with `commitPath` (the WAL writer's segments, on a
   * primary and on a standby alike) runs:
   * - `'pool'`: libuv's shared thread pool, through `fs.fdatasync`'s callback; the event loop
   *   goes on while the disk syncs, and the next write round overlaps the sync.
   * - `'thread'`: a dedicated thread of this process, woken through `Atomics`, so that a
   *   commit's sync never queues behind the application's other pool work (`crypto.pbkdf2`,
   *   zlib, file reads, `dns.lookup`). With the pool otherwise idle it is no faster than the
   *   pool; with the pool busy it roughly halves commit latency. It costs an extra isolate
   *   while a log is open.
   * - `'inline'`: on the event loop's own thread (`fs.fdatasyncSync`), as PostgreSQL's
   *   backends call fdatasync, when a commit waits for the sync (a flush nobody waits for,
   *   as after commits at `off`, goes to the pool). Both other modes hop to another thread
   *   and back, and on a machine whose cores are busy (a standby in another process, the
   *   application's own work) waking those threads costs more than the sync itself: one
   *   committer at `local` beside a streaming standby went from 1,250–2,160 to 5,100–7,000
   *   commits/s here (bench/README.md, "`commitSync: 'inline'`"). The price: the event loop, and with it
   *   the application and every connection of the process, waits for each sync (0.1–0.5 ms
   *   on an idle SSD, as long as the disk takes on a slow or failing one), and the next write
   *   round no longer overlaps the current sync.
   *
   * Measured on this machine: bench/README.md. Errors are the same in every mode
   * (`WAL_SYNC_FAILED` with the `EIO` as its cause).
   * @defaultValue `'pool'`
   */
  commitSync?: CommitSync;
}

/** Defaults of {@link NodeStorageOptions}. */
export const NODE_STORAGE_DEFAULTS: Readonly<Required<NodeStorageOptions>> = Object.freeze({ commitSync: 'pool' });

/** The literal behind {@link nodeStorageOptionsSchema}, named apart so that the API reference shows the schema, not each of its keywords. */
const nodeStorageSchema = Object.freeze({
  type: 'object',
  additionalProperties: false,
  properties: {
    commitSync: { enum: ['pool', 'thread', 'inline'] },
  },
} as const);

/** JSON schema of {@link NodeStorageOptions}. */
export const nodeStorageOptionsSchema: typeof nodeStorageSchema = nodeStorageSchema;

const validateOptions: OptionsValidator<NodeStorageOptions> = compileOptions('NodeStorage', nodeStorageOptionsSchema);

/** A {@link Storage} on a real directory, through `node:fs/promises`. */
export class NodeStorage implements Storage {
  /** The directory's resolved absolute path. */
  readonly description: string;
  /** Where commit-path syncs run. */
  readonly #commitSync: CommitSync;

  constructor(dir: string, options: NodeStorageOptions = {}) {
    if (typeof dir !== 'string' || dir === '') {
      throw new WalshipError('INVALID_ARGUMENT', 'NodeStorage needs a directory path (a non-empty string)');
    }
    validateOptions(options);
    this.description = path.resolve(dir);
    this.#commitSync = options.commitSync ?? NODE_STORAGE_DEFAULTS.commitSync;
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
    const handle = await fs.open(file, flags, 0o666);
    const sync = options.commitPath === true && options.readOnly !== true ? this.#commitSync : 'pool';
    return new NodeStorageFile(name, handle, sync === 'thread' ? sharedSyncThread : null, sync === 'inline');
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
   * Takes the lock through a `walship.lock` file naming this process. The file is written
   * and synced under a temporary name and then hard-linked into place, which fails if a lock
   * file exists, so a lock file is never seen empty or half written. A lock file left by a
   * dead process on this host, one naming this process that the in-process registry does not
   * know (an earlier process with the same pid, as after a container restart), and one that
   * cannot be read as a lock file are stale: they are removed and the lock taken over.
   */
  async lock(): Promise<StorageLock> {
    const realDir = await fs.realpath(this.description);
    const registry = heldLocks();
    if (registry.has(realDir)) {
      const message = `${this.description} is already locked by this process (pid ${process.pid})`;
      throw new WalshipError('WAL_LOCKED', message);
    }
    const token = randomBytes(16).toString('hex');
    // Claimed before the first await below, so concurrent calls in this process see it.
    registry.set(realDir, token);
    try {
      await this.createLockFile(realDir, token);
    } catch (err) {
      if (registry.get(realDir) === token) registry.delete(realDir);
      throw err;
    }
    log('locked %s', this.description);
    await this.removeLeftoverLockTemps();
    return new NodeStorageLock(this.lockPath, realDir, token);
  }

  private get lockPath(): string {
    return path.join(this.description, LOCK_FILE_NAME);
  }

  private async createLockFile(realDir: string, token: string): Promise<void> {
    const holder: LockHolder = { pid: process.pid, hostname: hostname(), token, createdAt: new Date().toISOString() };
    const content = Buffer.from(`${JSON.stringify(holder)}\n`);
    const temp = path.join(this.description, `${LOCK_FILE_NAME}.${token}.new`);
    await writeExclusive(temp, content);
    try {
      // One takeover of a stale lock at most: a second conflict means another live holder won.
      for (let attempt = 1; ; attempt++) {
        if (await this.tryLinkLockFile(temp, content)) break;
        const existing = await readLockFile(this.lockPath);
        if (existing === undefined) {
          if (attempt < 2) continue; // Released between our link and read: try again.
          throw this.lockedError(undefined);
        }
        const stale = existing.holder === undefined || isStaleHolder(existing.holder, realDir);
        if (!stale || attempt >= 2) throw this.lockedError(existing.holder);
        await this.removeStaleLockFile(existing);
      }
    } finally {
      await fs.unlink(temp).catch((err: unknown) => log('could not remove %s: %O', temp, err));
    }
    try {
      await this.syncDirectory();
    } catch (err) {
      await fs.unlink(this.lockPath).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Links the fully written `temp` file to the lock file's name; false when a lock file
   * already exists. Falls back to creating the lock file in place with `content` on a file
   * system without hard links.
   */
  private async tryLinkLockFile(temp: string, content: Buffer): Promise<boolean> {
    try {
      await fs.link(temp, this.lockPath);
      return true;
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'EEXIST') return false;
      if (code === undefined || !NO_HARD_LINKS.has(code)) throw err;
      log('no hard links in %s (%s): creating the lock file in place', this.description, code);
    }
    try {
      await writeExclusive(this.lockPath, content);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'EEXIST') return false;
      throw err;
    }
  }

  /**
   * Removes staged lock files that a crash left behind. Best effort: they are harmless, and
   * a young one may belong to another process trying to lock right now.
   */
  private async removeLeftoverLockTemps(): Promise<void> {
    try {
      const names = await fs.readdir(this.description);
      const now = Date.now();
      for (const name of names) {
        if (!LOCK_TEMP_PATTERN.test(name)) continue;
        const file = path.join(this.description, name);
        const stats = await fs.lstat(file).catch(() => undefined);
        if (stats === undefined || now - stats.mtimeMs < LOCK_TEMP_MAX_AGE_MS) continue;
        log('removing leftover %s', file);
        await fs.unlink(file).catch(() => undefined);
      }
    } catch (err) {
      log('could not look for leftover lock files in %s: %O', this.description, err);
    }
  }

  private async removeStaleLockFile(stale: LockFileContent): Promise<void> {
    // Re-read right before removing so that a lock file another process has just linked
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

/**
 * True when the holder is a process on this host that no longer exists, or names this
 * process without holding `realDir` in the registry (every copy of walship in this process
 * registers its locks there): an earlier process that had our pid, as after a container
 * restart. Called while our own claim on `realDir` is registered.
 */
function isStaleHolder(holder: LockHolder, realDir: string): boolean {
  if (holder.hostname !== hostname()) return false; // Cannot tell whether it lives.
  if (isThisProcess(holder)) return heldLocks().get(realDir) !== holder.token;
  return !processExists(holder.pid);
}

/** Whether a process `pid` exists on this host (signal 0 checks without sending anything). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) !== 'ESRCH'; // EPERM: alive, owned by another user.
  }
}

/** Who holds a directory's lock, as its lock file says (see {@link readLockHolder}). */
export interface LockHolderInfo {
  readonly pid: number;
  readonly hostname: string;
  /** When the lock was taken (ISO 8601), as the holder wrote it. */
  readonly createdAt: string;
  /** Whether that process is alive: `null` when it runs on another host (it cannot be told from here). */
  readonly alive: boolean | null;
}

/**
 * Reads the lock file of the directory `dir` without taking the lock (for tools that look at
 * a node's directory beside it): `null` when there is none, or when it names no process (a
 * lock file that cannot be read as one, which the next {@link NodeStorage.lock} takes over).
 */
export async function readLockHolder(dir: string): Promise<LockHolderInfo | null> {
  const content = await readLockFile(path.join(path.resolve(dir), LOCK_FILE_NAME));
  const holder = content?.holder;
  if (holder === undefined) return null;
  const alive = holder.hostname === hostname() ? processExists(holder.pid) : null;
  return { pid: holder.pid, hostname: holder.hostname, createdAt: holder.createdAt, alive };
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
      const registry = heldLocks();
      if (registry.get(this.realDir) === this.token) registry.delete(this.realDir);
    }
  }
}

/**
 * Reads and writes up to this size run on the calling thread instead of libuv's thread pool:
 * the WAL's tail (a group commit's write, a sender reading what was just flushed) moves
 * through the page cache in microseconds, less than the hop to a pool thread and back, which
 * on a busy machine is most of a commit's latency outside fdatasync (measured: 480 → 375 µs
 * per 1-committer commit with a standby streaming; 1,810 → 2,440 commits/s). Every
 * fdatasync and every larger transfer stays on the pool; with the default segment size and
 * WAL message size, catch-up and snapshot transfers are larger. The price: a small read
 * that misses the page cache (old WAL after a restart, or every read of a log with 64 KiB
 * segments) holds the event loop for one disk read.
 */
const INLINE_IO_BYTES = 64 * 1024;

class NodeStorageFile implements StorageFile {
  private closed: Promise<void> | undefined;
  /** Syncs of this file in flight on its descriptor: close() waits for them, so the descriptor stays this file's. */
  private readonly syncs = new Set<Promise<unknown>>();

  constructor(
    readonly name: string,
    private readonly handle: FileHandle,
    /** Where {@link datasync} runs when it can (released on close), or null: always on the pool. */
    private readonly syncThread: SyncThread | null,
    /** {@link datasync} runs on the calling thread (`commitSync: 'inline'`). */
    private readonly inlineSync: boolean,
  ) {
    syncThread?.acquire();
  }

  /** An urgent {@link datasync} holds the event loop (`commitSync: 'inline'`). */
  get syncBlocks(): boolean {
    return this.inlineSync;
  }

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    let total = 0;
    if (length <= INLINE_IO_BYTES) {
      while (total < length) {
        const bytesRead = readSync(openFd(this.handle), buffer, offset + total, length - total, position + total);
        if (bytesRead === 0) break;
        total += bytesRead;
      }
      return total;
    }
    while (total < length) {
      const { bytesRead } = await this.handle.read(buffer, offset + total, length - total, position + total);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
    return total;
  }

  async write(data: Uint8Array, position: number): Promise<void> {
    if (data.length <= INLINE_IO_BYTES) writeFullyInline(this.handle, [data], position);
    else await writeFully(this.handle, data, position);
  }

  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    let total = 0;
    for (const buffer of buffers) total += buffer.length;
    if (total <= INLINE_IO_BYTES) return writeFullyInline(this.handle, buffers, position);
    let written = 0;
    let pending = [...buffers];
    try {
      while (pending.length > 0) {
        const { bytesWritten } = await this.handle.writev(pending, position + written);
        if (bytesWritten === 0) throw Object.assign(new Error('EIO: write made no progress'), { code: 'EIO' });
        written += bytesWritten;
        pending = skipBytes(pending, bytesWritten);
      }
    } catch (err) {
      if (typeof err === 'object' && err !== null) Object.assign(err, { bytesWritten: written });
      throw err;
    }
  }

  /**
   * On the calling thread with `commitSync: 'inline'` (unless `urgent: false`: see
   * `StorageFile.datasync`); else on the sync thread when this file has one and it is free,
   * else on libuv's pool through `fs.fdatasync`'s callback, which costs measurably less per call than
   * `FileHandle.datasync` (see bench/README.md, "WAL I/O latency from Node"). Those two work
   * on the descriptor, so {@link close} waits for them.
   */
  async datasync(options: { readonly urgent?: boolean } = {}): Promise<void> {
    if (this.closed !== undefined) throw closedError();
    const fd = openFd(this.handle);
    if (this.inlineSync && options.urgent !== false) {
      // Blocks the event loop for the sync: nothing else can run meanwhile, close() included.
      fdatasyncSync(fd);
      return;
    }
    // One tracked promise for the thread's attempt and the pool's fallback: a close() that
    // comes between them must wait for the fallback too, or it runs on a closed descriptor.
    await this.track(this.syncOn(fd));
  }

  private async syncOn(fd: number): Promise<void> {
    if (this.syncThread !== null && (await this.syncThread.datasync(fd))) return;
    await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));
  }

  /** Runs `sync` as one of this file's syncs in flight. */
  private async track<T>(sync: Promise<T>): Promise<T> {
    this.syncs.add(sync);
    try {
      return await sync;
    } finally {
      this.syncs.delete(sync);
    }
  }

  async allocate(size: number, options: { sparse?: boolean } = {}): Promise<void> {
    let current = (await this.handle.stat()).size;
    if (current >= size) return;
    if (options.sparse === true) {
      await this.handle.truncate(size);
      return;
    }
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
    this.closed ??= this.closeAfterSyncs();
    return this.closed;
  }

  private async closeAfterSyncs(): Promise<void> {
    await Promise.allSettled([...this.syncs]);
    this.syncThread?.release();
    await this.handle.close();
  }
}

/** Creates `file` exclusively (`EEXIST` if it exists) holding `content`, synced. */
async function writeExclusive(file: string, content: Uint8Array): Promise<void> {
  const handle = await fs.open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  try {
    await writeFully(handle, content, 0);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.unlink(file).catch(() => undefined);
    throw err;
  }
  await handle.close();
}

/** The handle's descriptor; `EBADF`, as the pool's calls give, once it is closed (its fd is then −1). */
function openFd(handle: FileHandle): number {
  if (handle.fd < 0) throw closedError();
  return handle.fd;
}

function closedError(): Error {
  return Object.assign(new Error('EBADF: bad file descriptor (the file is closed)'), { code: 'EBADF', errno: -9 });
}

/**
 * Writes `buffers` at `position` on the calling thread (pwrite into the page cache), adding
 * `bytesWritten` to an error as {@link writeFully} does.
 */
function writeFullyInline(handle: FileHandle, buffers: readonly Uint8Array[], position: number): void {
  let written = 0;
  // One pwritev for all of them (a group commit's record and the block prefix before it: one
  // syscall, not one per buffer), again for what a short write left; empty buffers dropped.
  let pending = skipBytes(buffers, 0);
  try {
    while (pending.length > 0) {
      const bytesWritten = writevSync(openFd(handle), pending, position + written);
      if (bytesWritten === 0) throw Object.assign(new Error('EIO: write made no progress'), { code: 'EIO' });
      written += bytesWritten;
      pending = skipBytes(pending, bytesWritten);
    }
  } catch (err) {
    if (typeof err === 'object' && err !== null) Object.assign(err, { bytesWritten: written });
    throw err;
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

/** `buffers` without their first `count` bytes (after a short pwritev). */
function skipBytes(buffers: readonly Uint8Array[], count: number): Uint8Array[] {
  const rest: Uint8Array[] = [];
  let skip = count;
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return rest;
}
