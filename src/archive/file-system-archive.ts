import { constants } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { syncDirectoryAt } from '../directory-sync.js';
import { WalshipError, abortError, errnoCode, isWalshipError } from '../errors.js';
import { createLogger } from '../logger.js';
import { isArchiveName, type Archiver, type ArchiverCallOptions } from './archiver.js';

const log = createLogger('archive');

/**
 * Temporary files of puts in progress: `.~<32 hex digits>.tmp`. The `~` is not a character
 * of archive names (`isArchiveName`), so no archived file can ever be taken for one.
 */
const TEMP_FILE = /^\.~[0-9a-f]{32}\.tmp$/;

/**
 * Temporary files older than this (by modification time) were left by a crash and are
 * removed at an instance's first put. A live put rewrites its temporary file until it
 * publishes it, and a whole segment (at most 1 GiB) takes minutes at worst even on a slow
 * network mount; an hour leaves a wide margin, and removing a live one would only fail that
 * put (its link finds no file), never damage the archive.
 */
const STALE_TEMP_MS = 60 * 60 * 1000;

/** Without hard links: a put holds `.~<hash of the name>.lock` while it checks and renames. */
const LOCK_FILE_SUFFIX = '.lock';
/** A lock file this old was left by a crash: it is held for a stat and a rename only. */
const STALE_LOCK_MS = 10 * 60 * 1000;
/** How long a put waits for another put's lock on the same name before failing (transiently). */
const LOCK_WAIT_MS = 10_000;

/** Errors of `link()` that mean the file system has no hard links. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** Bytes written between two checks of the signal, and read at a time when comparing. */
const CHUNK_BYTES = 8 * 1024 * 1024;
const COMPARE_CHUNK_BYTES = 1024 * 1024;

/** Options of a {@link FileSystemArchive}. */
export interface FileSystemArchiveOptions {
  /**
   * Publish puts by hard link. `false` uses a lock file per name instead, which a put also
   * falls back to by itself the first time the file system refuses a link (`EPERM`,
   * `ENOTSUP`); set it on file systems known to have no hard links. @defaultValue true
   */
  hardLinks?: boolean;
}

/**
 * An {@link Archiver} on a directory: one file per archived name, as PostgreSQL's
 * `archive_command = 'test ! -f /archive/%f && cp %p /archive/%f'` keeps them, but with
 * the safety that command lacks: a put is written to a temporary file, fsynced, published
 * under its name without ever replacing a file, and the directory fsynced, so the archive
 * never holds part of a file, even after a crash. The directory may be shared by several
 * processes and hosts (NFS), e.g. a primary and its standbys: two puts of one name race
 * safely (see {@link FileSystemArchive.put}).
 *
 * The directory is created by the first put. A `get` reads the whole file into memory.
 */
export class FileSystemArchive implements Archiver {
  /** The directory's absolute path. */
  readonly dir: string;
  #hardLinks: boolean;
  /** Set once the directory exists and stale temporary files are gone; cleared on failure. */
  #prepared: Promise<void> | undefined;

  constructor(dir: string, options: FileSystemArchiveOptions = {}) {
    if (typeof dir !== 'string' || dir === '') {
      throw new WalshipError('INVALID_ARGUMENT', 'FileSystemArchive needs a directory path (a non-empty string)');
    }
    if (typeof options !== 'object' || options === null) {
      throw new WalshipError('INVALID_ARGUMENT', 'FileSystemArchive options must be an object');
    }
    for (const key of Object.keys(options)) {
      if (key !== 'hardLinks') throw new WalshipError('INVALID_ARGUMENT', `FileSystemArchive options has an unknown key "${key}" (allowed: hardLinks)`);
    }
    if (options.hardLinks !== undefined && typeof options.hardLinks !== 'boolean') {
      throw new WalshipError('INVALID_ARGUMENT', 'FileSystemArchive options.hardLinks must be a boolean');
    }
    this.dir = path.resolve(dir);
    this.#hardLinks = options.hardLinks ?? true;
  }

  /**
   * Stores `data` under `name`: written to a temporary file, fsynced, linked to `name`, the
   * temporary file unlinked and the directory fsynced. A name that exists already is
   * compared instead: identical content succeeds, different content rejects with
   * `ARCHIVE_CONFLICT` and changes nothing. An aborted or failed put removes its temporary
   * file and never leaves part of a file under `name`.
   */
  async put(name: string, data: Uint8Array, options: ArchiverCallOptions = {}): Promise<void> {
    checkName(name);
    if (!(data instanceof Uint8Array)) {
      throw new WalshipError('INVALID_ARGUMENT', `FileSystemArchive.put("${name}"): data must be a Uint8Array`);
    }
    const { signal } = options;
    throwIfAborted(signal);
    await this.#prepare();
    throwIfAborted(signal);
    const file = this.#pathOf(name);
    // A put again after a crash (walship does that) finds the file: no need to write it.
    if ((await this.#compareExisting(file, data)) === 'absent') {
      throwIfAborted(signal);
      const temp = await this.#writeTemp(data, signal);
      try {
        throwIfAborted(signal);
        await this.#publish(temp, file, data, signal);
      } finally {
        await fs.unlink(temp).catch((err: unknown) => {
          if (errnoCode(err) !== 'ENOENT') log.error('could not remove %s: %O', temp, err);
        });
      }
    }
    // Also when the file was there: the put that published it may not have synced the
    // directory yet (it may have crashed right after its link).
    await this.#syncDirectory();
  }

  /** The bytes stored under `name`, or `null` when there is no such file. */
  async get(name: string, options: ArchiverCallOptions = {}): Promise<Uint8Array | null> {
    checkName(name);
    const { signal } = options;
    throwIfAborted(signal);
    const file = this.#pathOf(name);
    try {
      // One read of the whole file (readFile reads in 512 KiB pieces, each waiting for the
      // thread pool: a standby restoring segments while it replays fetched at a tenth of this).
      const handle = await fs.open(file, 'r');
      try {
        const { size } = await handle.stat();
        const data = Buffer.allocUnsafe(size);
        let at = 0;
        while (at < size) {
          throwIfAborted(signal);
          const { bytesRead } = await handle.read(data, at, size - at, at);
          if (bytesRead === 0) break;
          at += bytesRead;
        }
        return at === size ? data : data.subarray(0, at);
      } finally {
        await handle.close();
      }
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      if (signal?.aborted === true) throw abortError(signal);
      throw failure('read', file, err);
    }
  }

  /** The archived names starting with `prefix` (every one without it); never temporary files. */
  async list(prefix = '', options: ArchiverCallOptions = {}): Promise<string[]> {
    if (typeof prefix !== 'string') throw new WalshipError('INVALID_ARGUMENT', 'FileSystemArchive.list: prefix must be a string');
    throwIfAborted(options.signal);
    let entries;
    try {
      entries = await fs.readdir(this.dir, { withFileTypes: true });
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw failure('list', this.dir, err);
    }
    throwIfAborted(options.signal);
    // isArchiveName leaves out temporary and lock files (they hold a `~`) and anything else
    // that is not a file a put could have made.
    return entries.filter((entry) => entry.isFile() && isArchiveName(entry.name) && entry.name.startsWith(prefix)).map((entry) => entry.name);
  }

  /** Deletes `name` (a missing file is not an error) and fsyncs the directory. */
  async remove(name: string, options: ArchiverCallOptions = {}): Promise<void> {
    checkName(name);
    throwIfAborted(options.signal);
    const file = this.#pathOf(name);
    try {
      await fs.unlink(file);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw failure('remove', file, err);
    }
    await this.#syncDirectory({ missingOk: true });
  }

  #pathOf(name: string): string {
    return path.join(this.dir, name);
  }

  /** Creates the directory (once per instance, again after a failure) and removes stale temporary files. */
  #prepare(): Promise<void> {
    this.#prepared ??= (async () => {
      await this.#createDirectory();
      await this.#removeStaleTemps();
    })().catch((err: unknown) => {
      this.#prepared = undefined;
      throw err;
    });
    return this.#prepared;
  }

  async #createDirectory(): Promise<void> {
    let firstCreated: string | undefined;
    try {
      firstCreated = await fs.mkdir(this.dir, { recursive: true });
    } catch (err) {
      throw failure('create the directory', this.dir, err);
    }
    if (firstCreated === undefined) return;
    // Each new directory's entry lives in its parent: sync from the parent of the first
    // directory created up to the parent of ours (as NodeStorage.prepare does).
    const stop = path.dirname(path.resolve(firstCreated));
    for (let dir = path.dirname(this.dir); ; dir = path.dirname(dir)) {
      await syncDirectoryAt(dir).catch((err: unknown) => {
        throw failure('fsync the directory', dir, err);
      });
      if (dir === stop || dir === path.dirname(dir)) break;
    }
  }

  /** Best effort: a leftover is harmless (never listed), only wasted space. */
  async #removeStaleTemps(): Promise<void> {
    try {
      const now = Date.now();
      for (const name of await fs.readdir(this.dir)) {
        if (!TEMP_FILE.test(name)) continue;
        const file = this.#pathOf(name);
        const stats = await fs.lstat(file).catch(() => undefined);
        if (stats === undefined || now - stats.mtimeMs < STALE_TEMP_MS) continue;
        log('removing %s, left by a put that did not finish', file);
        await fs.unlink(file).catch(() => undefined);
      }
    } catch (err) {
      log.error('could not look for leftover temporary files in %s: %O', this.dir, err);
    }
  }

  /**
   * Compares `data` with the file already at `file`: `'absent'` when there is none,
   * `'identical'`, or an `ARCHIVE_CONFLICT`. Reads a chunk at a time: a segment may be 1 GiB.
   */
  async #compareExisting(file: string, data: Uint8Array): Promise<'absent' | 'identical'> {
    let handle: FileHandle;
    try {
      handle = await fs.open(file, constants.O_RDONLY);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return 'absent';
      throw failure('open', file, err);
    }
    try {
      const stats = await handle.stat();
      if (!stats.isFile()) throw failure('read', file, new Error('it is not a regular file'));
      const size = stats.size;
      if (size !== data.length) throw conflict(file, `${size} bytes, the put has ${data.length}`);
      const chunk = Buffer.allocUnsafe(Math.min(COMPARE_CHUNK_BYTES, Math.max(1, size)));
      const expected = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      for (let offset = 0; offset < size; ) {
        const { bytesRead } = await handle.read(chunk, 0, Math.min(chunk.length, size - offset), offset);
        if (bytesRead === 0) throw conflict(file, `it ends at byte ${offset} while being read`);
        if (!chunk.subarray(0, bytesRead).equals(expected.subarray(offset, offset + bytesRead))) {
          throw conflict(file, `its bytes differ from the put's within bytes ${offset} to ${offset + bytesRead}`);
        }
        offset += bytesRead;
      }
      return 'identical';
    } catch (err) {
      if (isWalshipError(err)) throw err;
      throw failure('read', file, err);
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  /** Writes `data` to a new temporary file and fsyncs it; removes the file if anything fails. */
  async #writeTemp(data: Uint8Array, signal: AbortSignal | undefined): Promise<string> {
    const temp = this.#pathOf(`.~${randomBytes(16).toString('hex')}.tmp`);
    let handle: FileHandle;
    try {
      handle = await fs.open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o666);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') this.#prepared = undefined; // the directory went: the next put creates it again
      throw failure('create', temp, err);
    }
    let step = 'write';
    try {
      for (let offset = 0; offset < data.length; ) {
        throwIfAborted(signal);
        const end = Math.min(data.length, offset + CHUNK_BYTES);
        const { bytesWritten } = await handle.write(data, offset, end - offset, offset);
        // pwrite() never returns 0 for a non-empty regular-file write; guard against a spin.
        if (bytesWritten === 0) throw Object.assign(new Error('EIO: write made no progress'), { code: 'EIO' });
        offset += bytesWritten;
      }
      throwIfAborted(signal);
      step = 'fsync';
      await handle.sync();
      step = 'close';
      await handle.close();
      return temp;
    } catch (err) {
      await handle.close().catch(() => undefined);
      await fs.unlink(temp).catch(() => undefined);
      if (isWalshipError(err)) throw err;
      throw failure(step, temp, err);
    }
  }

  /**
   * Makes the complete `temp` file appear under `file`, unless a file is there already.
   * A hard link does it in one step that fails with `EEXIST` if the name exists, so of two
   * processes putting one name at once exactly one publishes its file and the other
   * compares. `rename()` would not do: it silently replaces a file another put has just
   * published, so the last writer would win and the first one's success would be a lie.
   */
  async #publish(temp: string, file: string, data: Uint8Array, signal: AbortSignal | undefined): Promise<void> {
    // A remove between a failed link and the comparison makes the name free again: link again.
    for (let attempt = 1; ; attempt++) {
      if (!this.#hardLinks) return this.#publishUnderLock(temp, file, data, signal);
      try {
        await fs.link(temp, file);
        return;
      } catch (err) {
        const code = errnoCode(err);
        if (code !== undefined && NO_HARD_LINKS.has(code)) {
          log('no hard links in %s (%s): publishing puts under a lock file per name', this.dir, code);
          this.#hardLinks = false;
          continue;
        }
        if (code !== 'EEXIST') throw failure('link', `${temp} to ${file}`, err);
      }
      if ((await this.#compareExisting(file, data)) === 'identical') return;
      if (attempt >= 3) throw failure('link', `${temp} to ${file}`, new Error('the name keeps appearing and disappearing (concurrent removes)'));
      throwIfAborted(signal);
    }
  }

  /**
   * The fallback without hard links. A lock file made with `O_EXCL` admits one put of the
   * name at a time; under it the put renames its file into place only if the name is free
   * (files in the archive are never changed, so comparing needs no lock). Race-free among
   * live processes. A lock file left by a crash is taken over once {@link STALE_LOCK_MS}
   * old, after reading it again to check it is the same one; a narrow race remains there
   * (two puts taking over one stale lock at the same instant), since file systems offer no
   * compare-and-delete.
   */
  async #publishUnderLock(temp: string, file: string, data: Uint8Array, signal: AbortSignal | undefined): Promise<void> {
    const name = path.basename(file);
    const lock = this.#pathOf(`.~${createHash('sha256').update(name).digest('hex').slice(0, 32)}${LOCK_FILE_SUFFIX}`);
    const token = randomBytes(16).toString('hex');
    await this.#takeLock(lock, token, signal);
    let published = false;
    try {
      const present = await fs.lstat(file).then(
        () => true,
        (err: unknown) => {
          if (errnoCode(err) === 'ENOENT') return false;
          throw failure('stat', file, err);
        },
      );
      if (!present) {
        await fs.rename(temp, file).catch((err: unknown) => {
          throw failure('rename', `${temp} to ${file}`, err);
        });
        published = true;
      }
    } finally {
      await this.#releaseLock(lock, token);
    }
    if (published) return;
    if ((await this.#compareExisting(file, data)) === 'absent') {
      throw failure('publish', file, new Error('the file was removed while a put of the same name compared it'));
    }
  }

  async #takeLock(lock: string, token: string, signal: AbortSignal | undefined): Promise<void> {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
      throwIfAborted(signal);
      try {
        await fs.writeFile(lock, token, { flag: 'wx' });
        return;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw failure('create the lock file', lock, err);
      }
      if (Date.now() >= deadline) {
        throw failure('take the lock file', lock, new Error(`another put of the same name held it for ${LOCK_WAIT_MS} ms`));
      }
      // Undefined when the lock was released meanwhile: try again at once.
      const held = await fs.readFile(lock, 'utf8').catch(() => undefined);
      const stats = await fs.lstat(lock).catch(() => undefined);
      if (held === undefined || stats === undefined) continue;
      if (Date.now() - stats.mtimeMs >= STALE_LOCK_MS) {
        // Re-read right before removing, so that a lock another put has just taken is kept.
        if ((await fs.readFile(lock, 'utf8').catch(() => undefined)) === held) {
          log('taking over %s, left by a put that did not finish', lock);
          await fs.unlink(lock).catch(() => undefined);
        }
        continue;
      }
      await sleep(delay);
    }
  }

  /** Removes the lock file if it is still ours. */
  async #releaseLock(lock: string, token: string): Promise<void> {
    try {
      if ((await fs.readFile(lock, 'utf8')) === token) await fs.unlink(lock);
    } catch (err) {
      log.error('could not release %s: %O', lock, err);
    }
  }

  async #syncDirectory(options: { missingOk?: boolean } = {}): Promise<void> {
    try {
      await syncDirectoryAt(this.dir);
    } catch (err) {
      if (options.missingOk === true && errnoCode(err) === 'ENOENT') return;
      throw failure('fsync the directory', this.dir, err);
    }
  }
}

/** True for the name of a temporary file of a put (for tests). @internal */
export function isTempFileName(name: string): boolean {
  return TEMP_FILE.test(name);
}

function checkName(name: unknown): asserts name is string {
  if (!isArchiveName(name)) {
    throw new WalshipError(
      'INVALID_ARGUMENT',
      `FileSystemArchive: ${JSON.stringify(name)} is not an archive name (1 to 255 letters, digits, ".", "_" or "-"; not "." or "..")`,
    );
  }
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw abortError(signal);
}

/** An I/O failure, naming what was done to which file and the errno; transient, as walship retries puts. */
function failure(action: string, file: string, err: unknown): WalshipError {
  const code = errnoCode(err);
  const reason = err instanceof Error ? err.message : String(err);
  return new WalshipError('ARCHIVE_FAILED', `FileSystemArchive could not ${action} ${file}${code === undefined ? '' : ` (${code})`}: ${reason}`, {
    cause: err,
    transient: true,
  });
}

function conflict(file: string, why: string): WalshipError {
  return new WalshipError('ARCHIVE_CONFLICT', `FileSystemArchive: ${file} already holds different content (${why}); nothing was overwritten`);
}

