/**
 * Storages with one deliberate defect each, for testing that the storage conformance suite
 * catches it. Each is a {@link BrokenStorage}: a {@link MemoryStorage} seen through a wrapper
 * that is faithful to the contract except where its defect overrides a call; with no defect
 * it must pass the whole suite, so a failure of a broken one comes from its defect.
 */
import { WalshipError } from '../../src/errors.js';
import { MemoryStorage } from '../../src/storage/memory-storage.js';
import type { Storage, StorageFile, StorageLock, StorageOpenOptions } from '../../src/storage/storage.js';

/** What a broken storage does differently; every hook is optional and replaces the faithful call. */
export interface StorageDefect {
  open?(storage: BrokenStorage, name: string, options: StorageOpenOptions | undefined): Promise<StorageFile>;
  rename?(storage: BrokenStorage, from: string, to: string): Promise<void>;
  remove?(storage: BrokenStorage, name: string): Promise<void>;
  syncDirectory?(storage: BrokenStorage): Promise<void>;
  lock?(storage: BrokenStorage): Promise<StorageLock>;
  read?(file: BrokenFile, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  write?(file: BrokenFile, data: Uint8Array, position: number): Promise<void>;
  datasync?(file: BrokenFile): Promise<void>;
  size?(file: BrokenFile): Promise<number>;
  close?(file: BrokenFile): Promise<void>;
}

/**
 * A storage over a {@link MemoryStorage} that its handles ({@link openAgain}) share. Its
 * files have `writev` (one write of the buffers joined), so the suite's `writev` case runs.
 */
export class BrokenStorage implements Storage {
  /** For a defect that keeps the lock in the handle, where other handles cannot see it. */
  handleLocked = false;

  constructor(
    readonly label: string,
    readonly defect: StorageDefect = {},
    readonly inner = new MemoryStorage(),
  ) {}

  get description(): string {
    return this.inner.description;
  }

  /** A second handle on the same directory, with the same defect. */
  openAgain(): BrokenStorage {
    return new BrokenStorage(this.label, this.defect, this.inner);
  }

  /**
   * A power loss that loses every write not datasynced and keeps a fixed prefix of the
   * creates, renames and removes not directory-synced (of n, ⌊(n + 1) / 2⌋): legal for the
   * contract, and deterministic, so that a defect is caught the same way every run.
   */
  crash(): BrokenStorage {
    return new BrokenStorage(this.label, this.defect, this.inner.crash({ unsyncedWrites: 'lose', unsyncedMetadata: 'prefix', random: () => 0.5 }));
  }

  prepare(): Promise<void> {
    return this.inner.prepare();
  }

  list(): Promise<string[]> {
    return this.inner.list();
  }

  open(name: string, options?: StorageOpenOptions): Promise<StorageFile> {
    if (this.defect.open !== undefined) return this.defect.open(this, name, options);
    return this.faithfulOpen(name, options);
  }

  async faithfulOpen(name: string, options?: StorageOpenOptions): Promise<StorageFile> {
    return new BrokenFile(await this.inner.open(name, options), this.defect);
  }

  rename(from: string, to: string): Promise<void> {
    if (this.defect.rename !== undefined) return this.defect.rename(this, from, to);
    return this.inner.rename(from, to);
  }

  remove(name: string): Promise<void> {
    if (this.defect.remove !== undefined) return this.defect.remove(this, name);
    return this.inner.remove(name);
  }

  syncDirectory(): Promise<void> {
    if (this.defect.syncDirectory !== undefined) return this.defect.syncDirectory(this);
    return this.inner.syncDirectory();
  }

  lock(): Promise<StorageLock> {
    if (this.defect.lock !== undefined) return this.defect.lock(this);
    return this.inner.lock();
  }
}

/** A file of a {@link BrokenStorage}. */
export class BrokenFile implements StorageFile {
  constructor(
    readonly inner: StorageFile,
    private readonly defect: StorageDefect,
  ) {}

  get name(): string {
    return this.inner.name;
  }

  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    if (this.defect.read !== undefined) return this.defect.read(this, buffer, offset, length, position);
    return this.inner.read(buffer, offset, length, position);
  }

  write(data: Uint8Array, position: number): Promise<void> {
    if (this.defect.write !== undefined) return this.defect.write(this, data, position);
    return this.inner.write(data, position);
  }

  /** The buffers joined, in one {@link write}: its `bytesWritten` counts from `position` too. */
  writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    return this.write(Buffer.concat(buffers), position);
  }

  datasync(): Promise<void> {
    if (this.defect.datasync !== undefined) return this.defect.datasync(this);
    return this.inner.datasync();
  }

  allocate(size: number, options?: { sparse?: boolean }): Promise<void> {
    return this.inner.allocate(size, options);
  }

  size(): Promise<number> {
    if (this.defect.size !== undefined) return this.defect.size(this);
    return this.inner.size();
  }

  close(): Promise<void> {
    if (this.defect.close !== undefined) return this.defect.close(this);
    return this.inner.close();
  }
}

function errnoError(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/** A rename refuses an existing target (`EEXIST`), as a rename without replace on Windows. */
export function renameNotReplacing(): BrokenStorage {
  return new BrokenStorage('rename-not-replacing', {
    async rename(storage, from, to) {
      const names = storage.inner.fileNames();
      if (names.includes(from) && names.includes(to)) throw errnoError('EEXIST', `rename '${from}' -> '${to}'`);
      return storage.inner.rename(from, to);
    },
  });
}

/** A rename removes the target first and then moves the file: two steps, so a power loss can keep neither. */
export function renameRemovingFirst(): BrokenStorage {
  return new BrokenStorage('rename-removing-first', {
    async rename(storage, from, to) {
      if (storage.inner.fileNames().includes(to) && storage.inner.fileNames().includes(from)) await storage.inner.remove(to);
      return storage.inner.rename(from, to);
    },
  });
}

/** datasync() checks the handle and resolves without making anything durable. */
export function datasyncDoingNothing(): BrokenStorage {
  return new BrokenStorage('datasync-doing-nothing', { datasync: (file) => file.inner.size().then(() => undefined) });
}

/** syncDirectory() resolves without making anything durable. */
export function syncDirectoryDoingNothing(): BrokenStorage {
  return new BrokenStorage('sync-directory-doing-nothing', { syncDirectory: async () => {} });
}

/** datasync() checks the handle and then never settles (a disk that stopped answering). */
export function datasyncHanging(): BrokenStorage {
  return new BrokenStorage('datasync-hanging', { datasync: (file) => file.inner.size().then(() => new Promise<never>(() => {})) });
}

/** lock() always succeeds: two holders at once. */
export function lockLettingTwoIn(): BrokenStorage {
  return new BrokenStorage('lock-letting-two-in', { lock: async () => ({ release: async () => {} }) });
}

/** lock() is kept in the handle: exclusive through one handle, but another handle on the directory gets it too. */
export function lockPerHandle(): BrokenStorage {
  return new BrokenStorage('lock-per-handle', {
    async lock(storage) {
      if (storage.handleLocked) throw new WalshipError('WAL_LOCKED', `${storage.description} is already locked`);
      storage.handleLocked = true;
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          storage.handleLocked = false;
        },
      };
    },
  });
}

/** A read returns at most 16 KiB, wherever it is in the file (a raw pread that returns short). */
export function readingShort(): BrokenStorage {
  return new BrokenStorage('reading-short', {
    read: (file, buffer, offset, length, position) => file.inner.read(buffer, offset, Math.min(length, 16 * 1024), position),
  });
}

/**
 * A write keeps the caller's buffer and writes it again at the file's next call (as a cache
 * that holds a reference and writes back later): what the caller put there since lands too.
 */
export function keepingBuffer(): BrokenStorage {
  const kept = new WeakMap<BrokenFile, Array<{ data: Uint8Array; position: number }>>();
  const writeBack = async (file: BrokenFile): Promise<void> => {
    const writes = kept.get(file) ?? [];
    kept.delete(file);
    for (const { data, position } of writes) await file.inner.write(data, position);
  };
  return new BrokenStorage('keeping-buffer', {
    async write(file, data, position) {
      await writeBack(file);
      await file.inner.write(data, position);
      kept.set(file, [...(kept.get(file) ?? []), { data, position }]);
    },
    read: async (file, buffer, offset, length, position) => (await writeBack(file), file.inner.read(buffer, offset, length, position)),
    datasync: async (file) => (await writeBack(file), file.inner.datasync()),
    size: async (file) => (await writeBack(file), file.inner.size()),
    close: async (file) => (await writeBack(file).catch(() => undefined), file.inner.close()),
  });
}

/** A write ignores its data's `byteOffset`: a view into a larger buffer writes the wrong bytes. */
export function ignoringByteOffset(): BrokenStorage {
  return new BrokenStorage('ignoring-byte-offset', {
    write: (file, data, position) => file.inner.write(new Uint8Array(data.buffer, 0, data.length), position),
  });
}

/** open() of a missing file throws synchronously instead of returning a rejected promise. */
export function throwingSynchronously(): BrokenStorage {
  return new BrokenStorage('throwing-synchronously', {
    open(storage, name, options) {
      if (options?.create !== true && !storage.inner.fileNames().includes(name)) throw errnoError('ENOENT', `open '${name}'`);
      return storage.faithfulOpen(name, options);
    },
  });
}

/** remove() of a missing file rejects with an error that has no errno code (as a key-value store's "not found"). */
export function removeWithoutCode(): BrokenStorage {
  return new BrokenStorage('remove-without-code', {
    async remove(storage, name) {
      try {
        await storage.inner.remove(name);
      } catch (err) {
        if ((err as { code?: unknown }).code === 'ENOENT') throw new Error(`not found: ${name}`);
        throw err;
      }
    },
  });
}

/** open() with create (not exclusive) empties an existing file (O_TRUNC). */
export function truncatingCreate(): BrokenStorage {
  return new BrokenStorage('truncating-create', {
    async open(storage, name, options) {
      if (options?.create === true && options.exclusive !== true && storage.inner.fileNames().includes(name)) {
        await storage.inner.remove(name);
      }
      return storage.faithfulOpen(name, options);
    },
  });
}

/** open() ignores `exclusive`. */
export function ignoringExclusive(): BrokenStorage {
  return new BrokenStorage('ignoring-exclusive', {
    open: (storage, name, options) => storage.faithfulOpen(name, options?.create === true ? { create: true } : options),
  });
}

/** close() does nothing: a closed file goes on reading and writing. */
export function workingAfterClose(): BrokenStorage {
  return new BrokenStorage('working-after-close', { close: async () => {} });
}

/** A write reads the whole file, and a turn of the event loop later writes it back changed: concurrent writes undo each other. */
export function readModifyWrite(): BrokenStorage {
  return new BrokenStorage('read-modify-write', {
    async write(file, data, position) {
      const size = await file.inner.size();
      const whole = new Uint8Array(Math.max(size, position + data.length));
      await file.inner.read(whole, 0, size, 0);
      await new Promise((resolve) => setImmediate(resolve));
      whole.set(data, position);
      await file.inner.write(whole, 0);
    },
  });
}

/** Each handle keeps its writes to itself until its datasync() or close(): another handle does not see them. */
export function bufferedUntilSync(): BrokenStorage {
  const pending = new WeakMap<BrokenFile, Array<{ data: Uint8Array; position: number }>>();
  const flush = async (file: BrokenFile): Promise<void> => {
    const writes = pending.get(file) ?? [];
    pending.delete(file);
    for (const { data, position } of writes) await file.inner.write(data, position);
  };
  return new BrokenStorage('buffered-until-sync', {
    async write(file, data, position) {
      await file.inner.write(data.subarray(0, 0), position); // the handle's checks: closed, read-only
      const writes = pending.get(file) ?? [];
      writes.push({ data: Uint8Array.from(data), position });
      pending.set(file, writes);
    },
    read: async (file, buffer, offset, length, position) => (await flush(file), file.inner.read(buffer, offset, length, position)),
    datasync: async (file) => (await flush(file), file.inner.datasync()),
    size: async (file) => (await flush(file), file.inner.size()),
    close: async (file) => (await flush(file), file.inner.close()),
  });
}
