import crc32c from 'fast-crc32c';
import { WalshipError, errnoCode } from '../errors.js';
import { isLsn, type Lsn } from '../lsn.js';
import type { Storage } from '../storage/storage.js';

/** The file that holds every replication slot of a node (PostgreSQL keeps one per slot in `pg_replslot/`). */
export const SLOTS_FILE = 'walship.slots';
const TEMP_FILE = `${SLOTS_FILE}.tmp`;
const FORMAT = 1;
/** crc32c (4 bytes) of what follows, then the JSON's length (4 bytes), then the JSON. */
const HEADER = 8;
/** Room for thousands of slots; anything longer is damage. */
const MAX_BYTES = 1024 * 1024;

/** A valid slot name: PostgreSQL's rule (lower-case letters, digits, underscore; at most 63). */
export const SLOT_NAME = /^[a-z0-9_]{1,63}$/;

/** What survives a restart of a slot; `active` and `inactiveSince` do not (as in PostgreSQL). */
export interface PersistedSlot {
  readonly name: string;
  /** Null until the slot reserves WAL, and once it is lost. */
  readonly restartLsn: Lsn | null;
  /** Why the slot was invalidated (e.g. `wal_removed`); null while it is usable. */
  readonly invalidationReason: string | null;
}

/** Reads the slots file: `[]` when there is none. A damaged one is `WAL_CORRUPT`, an unreadable one `WAL_IO`. */
export async function readSlotsFile(storage: Storage): Promise<PersistedSlot[]> {
  let file;
  try {
    file = await storage.open(SLOTS_FILE, { readOnly: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw ioError('open', storage, err);
  }
  const damaged = (why: string): WalshipError =>
    new WalshipError('WAL_CORRUPT', `${SLOTS_FILE} in ${storage.description} is damaged (${why}); restore it from a backup or remove it and create the slots again`);
  try {
    let buf: Buffer;
    try {
      const size = await file.size();
      if (size < HEADER || size > MAX_BYTES) throw damaged(`size ${size}`);
      buf = Buffer.alloc(size);
      if ((await file.read(buf, 0, size, 0)) !== size) throw damaged('short read');
    } catch (err) {
      if (err instanceof WalshipError) throw err;
      throw ioError('read', storage, err);
    }
    if (buf.readUInt32LE(4) !== buf.length - HEADER || crc32c.calculate(buf.subarray(4)) !== buf.readUInt32LE(0)) {
      throw damaged('checksum mismatch');
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(buf.subarray(HEADER).toString('utf8'));
    } catch {
      throw damaged('not JSON');
    }
    const format = (parsed as { format?: unknown } | null)?.format;
    if (typeof format === 'number' && format !== FORMAT) {
      throw new WalshipError('WAL_FORMAT', `${SLOTS_FILE} has format ${format}; this walship reads format ${FORMAT}`);
    }
    const slots = (parsed as { slots?: unknown } | null)?.slots;
    if (format !== FORMAT || !Array.isArray(slots) || !slots.every(isPersistedSlot)) throw damaged('unexpected content');
    if (new Set(slots.map((s) => s.name)).size !== slots.length) throw damaged('a slot name appears twice');
    return slots.map((s) => ({ name: s.name, restartLsn: s.restartLsn, invalidationReason: s.invalidationReason }));
  } finally {
    await file.close().catch(() => undefined);
  }
}

/** The shape check of a parsed slot: a checksum only proves the bytes are what was written. */
function isPersistedSlot(value: unknown): value is PersistedSlot {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  const reason = v['invalidationReason'];
  return (
    typeof v['name'] === 'string' &&
    SLOT_NAME.test(v['name']) &&
    (v['restartLsn'] === null || isLsn(v['restartLsn'])) &&
    (reason === null || (typeof reason === 'string' && reason !== '' && v['restartLsn'] === null))
  );
}

/**
 * Replaces the slots file atomically and durably: a checksummed temporary file, synced,
 * renamed over the old one, then the directory synced. A crash at any point leaves the old
 * file or the new one, never a mix (the same steps as the control file).
 */
export async function writeSlotsFile(storage: Storage, slots: readonly PersistedSlot[]): Promise<void> {
  const json = Buffer.from(JSON.stringify({ format: FORMAT, slots }), 'utf8');
  const buf = Buffer.alloc(HEADER + json.length);
  buf.writeUInt32LE(json.length, 4);
  json.copy(buf, HEADER);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(4)), 0);
  try {
    // A temporary file left by a crash is stale: start afresh.
    await storage.remove(TEMP_FILE).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    const file = await storage.open(TEMP_FILE, { create: true, exclusive: true });
    try {
      await file.write(buf, 0);
      await file.datasync();
    } finally {
      await file.close();
    }
    await storage.rename(TEMP_FILE, SLOTS_FILE);
    await storage.syncDirectory();
  } catch (err) {
    throw ioError('write', storage, err);
  }
}

function ioError(what: string, storage: Storage, err: unknown): WalshipError {
  return new WalshipError('WAL_IO', `cannot ${what} ${SLOTS_FILE} in ${storage.description}: ${(err as Error).message}`, {
    cause: err,
    transient: errnoCode(err) === 'ENOSPC',
  });
}
