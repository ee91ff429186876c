/**
 * The small file-system contract that all of walship's I/O goes through, so that the same
 * log runs on real files ({@link NodeStorage}) and in a simulated, crashable memory
 * ({@link MemoryStorage}).
 *
 * A storage is one flat directory of named files. Names are plain file names: an empty name,
 * `.`, `..`, and names holding `/`, `\` or NUL are rejected with `EINVAL`, so that no name
 * reaches outside the directory. Methods return promises (they never throw synchronously) and
 * reject with Node-style errors carrying an errno `code` (`ENOENT`, `EEXIST`, `EINVAL`,
 * `EBADF`, `ENOSPC`, `EIO`, …); walship tells some apart by code (a missing file is
 * `ENOENT`) and wraps them in coded {@link WalshipError}s. Only {@link Storage.lock} rejects
 * with a walship error itself.
 *
 * Durability follows POSIX: written bytes are durable once {@link StorageFile.datasync}
 * resolves; creating, renaming or removing a file is durable once
 * {@link Storage.syncDirectory} resolves. What is not yet durable may survive a power loss,
 * in part or not at all, but never takes durable bytes or names with it.
 *
 * `storageConformance` in `walship/testing` checks a backend against this contract.
 */
export interface Storage {
  /** Where the files live, for messages and logs (a path, or `memory:<id>`). */
  readonly description: string;
  /** Creates the directory if it does not exist yet (and makes that durable). */
  prepare(): Promise<void>;
  /** Names of the regular files in the directory, in no particular order. */
  list(): Promise<string[]>;
  /**
   * Opens a file for reading and writing. With `create`, a missing file is created empty;
   * with `exclusive` too, an existing file is an `EEXIST` error. Without `create`, a
   * missing file is an `ENOENT` error. `readOnly` opens it for reading only.
   */
  open(name: string, options?: StorageOpenOptions): Promise<StorageFile>;
  /**
   * Atomically renames `from` to `to`, replacing `to` if it exists: a power loss leaves `to`
   * naming the old file or the new one, never neither. Open files keep working.
   */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a missing file is an `ENOENT` error. */
  remove(name: string): Promise<void>;
  /** Makes earlier creates, renames and removes in this directory durable (fsync on the directory). */
  syncDirectory(): Promise<void>;
  /**
   * Takes the exclusive lock on this directory, or throws a `WAL_LOCKED` {@link WalshipError}
   * when another holder (in this process or another) has it.
   */
  lock(): Promise<StorageLock>;
}

/** Options of {@link Storage.open}. */
export interface StorageOpenOptions {
  /** Create the file if it is missing. */
  create?: boolean;
  /** With `create`: fail with `EEXIST` if the file already exists. */
  exclusive?: boolean;
  /** Open for reading only. */
  readOnly?: boolean;
  /**
   * A hint: this file's {@link StorageFile.datasync} is on the commit path (the WAL writer's
   * segments), so a storage may give it a lane of its own where it waits behind nothing
   * ({@link NodeStorage} runs it on a dedicated thread). Storages may ignore it.
   */
  commitPath?: boolean;
}

/**
 * An open file of a {@link Storage}. Positions are byte offsets from the start. What a write
 * puts in the file is visible at once through every handle on it, before any datasync, and
 * the caller may reuse its buffer once the write resolves. Every call on a closed file, and
 * every write through a read-only one, rejects with `EBADF` (an allocation that would grow a
 * read-only file rejects too).
 */
export interface StorageFile {
  /** The file's name within its storage. */
  readonly name: string;
  /**
   * Reads up to `length` bytes at `position` into `buffer` starting at `offset`; resolves
   * with the number of bytes read, which is short only at the end of the file.
   */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /**
   * Writes all of `data` at `position`. On failure the error carries `bytesWritten`, the
   * count of leading bytes that did reach the file (see {@link StorageWriteError}).
   */
  write(data: Uint8Array, position: number): Promise<void>;
  /**
   * Optional: writes `buffers` back to back at `position` in one call (pwritev), with the
   * same failure contract as {@link write} (`bytesWritten` counts from `position`). The log
   * uses it to hand everything pending in a segment to the OS at once; without it, it
   * writes the buffers one by one.
   */
  writev?(buffers: readonly Uint8Array[], position: number): Promise<void>;
  /**
   * Makes this file's written bytes durable (fdatasync). `urgent: false` is a hint that this
   * sync must not hold the caller's thread: nobody waits for it right now (the WAL writer's
   * background flush), or it is long (a round of more than a MiB), or what waits for it also
   * waits for a message the thread must read (a standby's early WAL). A storage with a
   * faster but costlier way to sync (`NodeStorage`'s `commitSync: 'inline'`, which holds the
   * event loop) keeps that way for the other syncs; it must not delay such a sync, since a
   * commit may still wait on it. Storages may ignore the hint.
   */
  datasync(options?: { readonly urgent?: boolean }): Promise<void>;
  /**
   * True when an urgent {@link datasync} runs on the calling thread and holds the event loop
   * until the disk answers (`NodeStorage`'s `commitSync: 'inline'`). The WAL writer then tells
   * its `write` listeners (a standby's write report) what it wrote before such a sync rather
   * than after it. Absent or false: syncs run elsewhere, and listeners run alongside them.
   */
  readonly syncBlocks?: boolean;
  /**
   * Extends the file with zero bytes so that it is at least `size` bytes long. With `sparse`
   * the storage may leave the zeros unwritten (a file-system hole): much cheaper now, but
   * later writes there must allocate space, so they cost more and can fail with `ENOSPC`.
   */
  allocate(size: number, options?: { sparse?: boolean }): Promise<void>;
  /** The file's current size in bytes. */
  size(): Promise<number>;
  /** Closes the file; closing twice is harmless. */
  close(): Promise<void>;
}

/** The error of a failed {@link StorageFile.write}. */
export interface StorageWriteError extends Error {
  /** The errno code, e.g. `ENOSPC`. */
  code?: string;
  /** How many leading bytes of the write reached the file before it failed. */
  bytesWritten?: number;
}

/** An exclusive lock on a storage directory, from {@link Storage.lock}. */
export interface StorageLock {
  /** Releases the lock; releasing twice is harmless. */
  release(): Promise<void>;
}

/** True when `value` looks like a {@link Storage} (a type guard for options checks). */
export function isStorage(value: unknown): value is Storage {
  if (typeof value !== 'object' || value === null) return false;
  const s = value as Record<string, unknown>;
  return ['prepare', 'list', 'open', 'rename', 'remove', 'syncDirectory', 'lock'].every(
    (method) => typeof s[method] === 'function',
  );
}
