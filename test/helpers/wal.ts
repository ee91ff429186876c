import { NodeStorage, WalLog, type Storage, type WalLogOptions, type WalRecord } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { tempDir } from './temp-dir.js';

export const SMALL_SEGMENT = 64 * 1024;

/** The storages every WalLog behaviour is tested on: real files and simulated memory. */
export const storageKinds = [
  {
    name: 'NodeStorage',
    async make(): Promise<{ storage: Storage; cleanup: () => Promise<void> }> {
      const { dir, cleanup } = await tempDir();
      return { storage: new NodeStorage(dir), cleanup };
    },
  },
  {
    name: 'MemoryStorage',
    async make(): Promise<{ storage: Storage; cleanup: () => Promise<void> }> {
      return { storage: new MemoryStorage(), cleanup: async () => undefined };
    },
  },
] as const;

/**
 * Counts the reads of the files opened read-only on `storage` from now on (those of a log's
 * readers, not its writer's): `reads()` is the count so far.
 */
export function countReaderFileReads(storage: Storage): { reads: () => number } {
  let reads = 0;
  const open = storage.open.bind(storage);
  storage.open = async (name, options) => {
    const file = await open(name, options);
    if (options?.readOnly !== true) return file;
    const read = file.read.bind(file);
    file.read = (...args) => {
      reads++;
      return read(...args);
    };
    return file;
  };
  return { reads: () => reads };
}

/**
 * Records each datasync of a file opened on `storage` from now on, except `.tmp` files (the
 * control file's and snapshots' replacements): whether it was urgent (see `StorageFile.datasync`),
 * in order. `only` keeps the files whose names it accepts (say, WAL segments).
 */
export function recordDatasyncs(storage: Storage, only: (name: string) => boolean = () => true): boolean[] {
  const urgent: boolean[] = [];
  const open = storage.open.bind(storage);
  storage.open = async (name, options) => {
    const file = await open(name, options);
    if (name.endsWith('.tmp') || !only(name)) return file;
    const datasync = file.datasync.bind(file);
    file.datasync = (syncOptions) => {
      urgent.push(syncOptions?.urgent !== false);
      return datasync(syncOptions);
    };
    return file;
  };
  return urgent;
}

export function openLog(storage: Storage, options: Omit<WalLogOptions, 'storage' | 'dir'> = {}): Promise<WalLog> {
  return WalLog.open({ storage, segmentSize: SMALL_SEGMENT, ...options });
}

/** Every record from the oldest segment to the durable end. */
export async function readAll(log: WalLog, from = log.oldestLsn): Promise<WalRecord[]> {
  const records: WalRecord[] = [];
  for await (const record of log.read(from)) records.push(record);
  return records;
}

/** The entries of records as strings, for compact assertions. */
export function texts(records: readonly WalRecord[]): string[] {
  return records.flatMap((r) => r.entries.map((e) => Buffer.from(e.data).toString()));
}

/** Deterministic payload bytes for record `i`, `size` bytes long. */
export function payload(i: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let j = 0; j < size; j++) buf[j] = (i * 31 + j * 7) & 0xff;
  return buf;
}

/** A Promise that settles within `ms` or rejects, so a broken wait fails a test instead of hanging it. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Resolves once `condition()` holds, looking once per turn of the event loop; fails after `ms` (see {@link within}). */
export function turnsUntil(condition: () => boolean, ms: number, what: string): Promise<void> {
  return within(
    (async () => {
      while (!condition()) await new Promise((resolve) => setImmediate(resolve));
    })(),
    ms,
    what,
  );
}

/** Batch `i` of a random workload: 1–3 entries of 1–4000 bytes whose content depends on `i`. */
export function randomBatch(i: number, random: () => number): Buffer[] {
  const entries: Buffer[] = [];
  const n = 1 + Math.floor(random() * 3);
  for (let e = 0; e < n; e++) {
    const data = Buffer.alloc(1 + Math.floor(random() * 4000), (i + e) & 0xff);
    if (data.length >= 4) data.writeUInt32LE(i, 0);
    entries.push(data);
  }
  return entries;
}
