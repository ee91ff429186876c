import { createHash } from 'node:crypto';
import crc32c from 'fast-crc32c';
import type { Snapshot, SnapshotData } from '../application.js';
import { WalshipError, abortError, errnoCode } from '../errors.js';
import type { Lsn } from '../lsn.js';
import type { Storage, StorageFile } from '../storage/storage.js';

const PARTIAL = 'snapshot.partial';
const NAME = /^snapshot-([0-9A-F]{8})-([0-9A-F]{16})$/;
const MAGIC = 0x504e5357; // "WSNP"
const FORMAT = 1;
/** magic, format, lsn (u64), timeline, size (u64), data crc, header crc. */
const HEADER = 36;
const CHUNK = 1024 * 1024;

/** What a finished snapshot write produced, for the caller to check against what it expected. */
export interface WrittenSnapshot {
  readonly size: number;
  readonly sha256: Buffer;
}

/**
 * The node's local snapshots: the application's state at an LSN, in checksummed files
 * written atomically (a `.partial` file, synced, renamed into place, directory synced), so a
 * crash or an interrupted base backup never leaves a snapshot that looks whole but is not.
 */
export class SnapshotStore {
  constructor(private readonly storage: Storage) {}

  /**
   * Writes a snapshot from `data`. `verify` runs before the file is renamed into place and can
   * refuse it (a base backup whose size or hash does not match what the primary announced);
   * a refused or failed write leaves no snapshot behind.
   */
  async write(
    lsn: Lsn,
    timeline: number,
    data: SnapshotData,
    options: { signal?: AbortSignal; verify?: (written: WrittenSnapshot) => void } = {},
  ): Promise<WrittenSnapshot> {
    await this.#removeIfThere(PARTIAL);
    const file = await this.#io('create', () => this.storage.open(PARTIAL, { create: true, exclusive: true }));
    const hash = createHash('sha256');
    let size = 0;
    let crc = 0;
    let done = false;
    try {
      for await (const chunk of data instanceof Uint8Array ? [data] : data) {
        if (options.signal?.aborted) throw abortError(options.signal);
        hash.update(chunk);
        crc = crc32c.calculate(chunk, crc);
        await this.#io('write', () => file.write(chunk, HEADER + size));
        size += chunk.length;
      }
      const written = { size, sha256: hash.digest() };
      options.verify?.(written);
      await this.#io('write', () => file.write(encodeHeader(lsn, timeline, size, crc), 0));
      await this.#io('sync', () => file.datasync());
      await this.#io('close', () => file.close());
      await this.#io('rename', () => this.storage.rename(PARTIAL, snapshotName(lsn, timeline)));
      await this.#io('sync', () => this.storage.syncDirectory());
      done = true;
      return written;
    } finally {
      if (!done) {
        await file.close().catch(() => undefined);
        await this.#removeIfThere(PARTIAL).catch(() => undefined);
      }
    }
  }

  /** The newest snapshot, checked end to end; `null` when there is none. */
  async latest(): Promise<Snapshot | null> {
    const found = await this.#list();
    const newest = found.at(-1);
    return newest === undefined ? null : this.open(newest.name);
  }

  /** The snapshot taken at `lsn`; a missing one is `WAL_CORRUPT` (the control file names it). */
  async at(lsn: Lsn): Promise<Snapshot> {
    const all = await this.#list();
    const found = all.find((s) => s.lsn === lsn);
    if (found === undefined) {
      const others = all.length === 0 ? 'it holds no other snapshot' : `it holds ${all.map((s) => s.name).join(', ')}`;
      throw new WalshipError(
        'WAL_CORRUPT',
        `the snapshot of the last checkpoint (at LSN ${lsn.toString(16).toUpperCase()}) is missing from ${this.storage.description} (${others}); nothing was changed: restore the file, or give a standby an empty directory`,
      );
    }
    return this.open(found.name);
  }

  /** Opens and verifies a snapshot file. A damaged one is `WAL_CORRUPT`. */
  async open(name: string): Promise<Snapshot> {
    const storage = this.storage;
    const io = <T>(what: string, op: () => Promise<T>): Promise<T> => this.#io(what, op);
    const named = NAME.exec(name);
    const file = await io('open', () => storage.open(name, { readOnly: true }));
    try {
      const header = Buffer.alloc(HEADER);
      const got = await io('read', () => file.read(header, 0, HEADER, 0));
      const decoded = got === HEADER ? decodeHeader(header) : null;
      if (decoded === null) throw corrupt(storage, name, 'bad header');
      if (named !== null && (Number.parseInt(named[1] ?? '', 16) !== decoded.timeline || Number.parseInt(named[2] ?? '', 16) !== decoded.lsn)) {
        throw corrupt(storage, name, `its header says timeline ${decoded.timeline}, LSN ${decoded.lsn.toString(16).toUpperCase()}`);
      }
      // The whole file is checked before anyone is given it.
      for await (const chunk of checkedChunks(storage, name, file, decoded.size, decoded.crc, io)) void chunk;
      const { lsn, timeline, size, crc } = decoded;
      const snapshot: Snapshot = {
        lsn,
        timeline,
        size,
        // Read again from the file, and checked again: damage after open() is still caught.
        async *chunks() {
          const f = await io('open', () => storage.open(name, { readOnly: true }));
          try {
            yield* checkedChunks(storage, name, f, size, crc, io);
          } finally {
            await f.close().catch(() => undefined);
          }
        },
        async bytes() {
          const parts: Uint8Array[] = [];
          for await (const chunk of snapshot.chunks()) parts.push(chunk);
          return Buffer.concat(parts, size);
        },
      };
      return snapshot;
    } finally {
      await file.close().catch(() => undefined);
    }
  }

  /** Removes snapshots older than `lsn`, and any leftover partial file. */
  async removeOlderThan(lsn: Lsn): Promise<void> {
    for (const { name, lsn: at } of await this.#list()) if (at < lsn) await this.#removeIfThere(name);
    await this.#removeIfThere(PARTIAL);
  }

  /** The LSN of the newest snapshot at or below `lsn`, if any (a rewind's starting point). */
  async newestAtOrBelow(lsn: Lsn): Promise<Lsn | null> {
    return (await this.#list()).filter((s) => s.lsn <= lsn).at(-1)?.lsn ?? null;
  }

  /**
   * Renames the snapshots past `lsn` to `<name>.diverged` (a rewind: they hold a state that is
   * not on the node's new history; kept, never used again). Returns their names.
   */
  async setAsideAbove(lsn: Lsn): Promise<string[]> {
    const doomed = (await this.#list()).filter((s) => s.lsn > lsn).map((s) => s.name);
    for (const name of doomed) await this.#io('rename', () => this.storage.rename(name, `${name}.diverged`));
    if (doomed.length > 0) await this.#io('sync', () => this.storage.syncDirectory());
    return doomed;
  }

  async #list(): Promise<{ name: string; lsn: Lsn }[]> {
    const names = await this.#io('list', () => this.storage.list());
    return names
      .map((name) => ({ name, match: NAME.exec(name) }))
      .filter((e): e is { name: string; match: RegExpExecArray } => e.match !== null)
      .map(({ name, match }) => ({ name, lsn: Number.parseInt(match[2] ?? '', 16) }))
      .sort((a, b) => a.lsn - b.lsn);
  }

  async #removeIfThere(name: string): Promise<void> {
    try {
      await this.storage.remove(name);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new WalshipError('WAL_IO', `cannot remove ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  async #io<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof WalshipError) throw err;
      throw new WalshipError('WAL_IO', `snapshot ${what} failed in ${this.storage.description}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** A snapshot file's name: timeline and LSN, so names sort by LSN within a timeline. */
export function snapshotName(lsn: Lsn, timeline: number): string {
  return `snapshot-${timeline.toString(16).toUpperCase().padStart(8, '0')}-${lsn.toString(16).toUpperCase().padStart(16, '0')}`;
}

function corrupt(storage: Storage, name: string, why: string): WalshipError {
  return new WalshipError('WAL_CORRUPT', `snapshot ${name} in ${storage.description} is damaged (${why})`);
}

/**
 * The snapshot's data in chunks of at most 1 MiB; a short file or a checksum mismatch
 * (checked once the last chunk was read, before it is yielded) is `WAL_CORRUPT`.
 */
async function* checkedChunks(
  storage: Storage,
  name: string,
  file: StorageFile,
  size: number,
  expectedCrc: number,
  io: <T>(what: string, op: () => Promise<T>) => Promise<T>,
): AsyncGenerator<Buffer> {
  let crc = 0;
  for (let offset = 0; offset < size; ) {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - offset));
    const got = await io('read', () => file.read(buf, 0, buf.length, HEADER + offset));
    if (got !== buf.length) throw corrupt(storage, name, 'shorter than its header says');
    crc = crc32c.calculate(buf, crc);
    offset += got;
    if (offset === size && crc !== expectedCrc) throw corrupt(storage, name, 'checksum mismatch');
    yield buf;
  }
  if (size === 0 && expectedCrc !== 0) throw corrupt(storage, name, 'checksum mismatch');
}

function encodeHeader(lsn: Lsn, timeline: number, size: number, crc: number): Buffer {
  const buf = Buffer.alloc(HEADER);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(FORMAT, 4);
  buf.writeBigUInt64LE(BigInt(lsn), 8);
  buf.writeUInt32LE(timeline, 16);
  buf.writeBigUInt64LE(BigInt(size), 20);
  buf.writeUInt32LE(crc, 28);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(0, 32)), 32);
  return buf;
}

function decodeHeader(buf: Buffer): { lsn: Lsn; timeline: number; size: number; crc: number } | null {
  if (buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== FORMAT) return null;
  if (crc32c.calculate(buf.subarray(0, 32)) !== buf.readUInt32LE(32)) return null;
  const lsn = Number(buf.readBigUInt64LE(8));
  const size = Number(buf.readBigUInt64LE(20));
  if (!Number.isSafeInteger(lsn) || !Number.isSafeInteger(size)) return null;
  return { lsn, timeline: buf.readUInt32LE(16), size, crc: buf.readUInt32LE(28) };
}

