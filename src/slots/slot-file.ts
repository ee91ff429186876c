import { isLsn, type Lsn } from '../lsn.js';
import { damaged, readJsonFile, writeJsonFile, type JsonFileSpec } from '../storage/json-file.js';
import type { Storage } from '../storage/storage.js';

/** The file that holds every replication slot of a node (PostgreSQL keeps one per slot in `pg_replslot/`). */
export const SLOTS_FILE = 'walship.slots';
/**
 * The longest slots file walship reads (and so writes: a longer one is refused with
 * `FILE_TOO_LARGE` before anything is written). A slot takes at most
 * {@link MAX_PERSISTED_SLOT_BYTES} of it, so the most slots a node may have
 * (`MAX_REPLICATION_SLOTS_CAP`, 1024) take under a fifth of it.
 */
export const MAX_SLOTS_FILE_BYTES = 1024 * 1024;
const SPEC: JsonFileSpec = {
  name: SLOTS_FILE,
  format: 1,
  maxBytes: MAX_SLOTS_FILE_BYTES,
  repairHint: 'restore it from a backup or remove it and create the slots again',
  enospcTransient: true,
};

/** A valid slot name: PostgreSQL's rule (lower-case letters, digits, underscore; at most 63). */
export const SLOT_NAME = /^[a-z0-9_]{1,63}$/;

/**
 * A reason a slot can be invalidated with: the same alphabet as names, as PostgreSQL's
 * `invalidation_reason` values (`wal_removed`, `rows_removed`, `idle_timeout`, …), so a slot's
 * size in the file is bounded. Files of older walship may hold other reasons: they are read.
 */
export const INVALIDATION_REASON = /^[a-z0-9_]{1,63}$/;

/**
 * The most bytes one slot takes in the file's JSON, separator included: a 63-character name
 * and either a 16-digit `restartLsn` or a 63-character reason (the longer of the two), i.e.
 * `{"name":"…","restartLsn":null,"invalidationReason":"…"},`.
 */
export const MAX_PERSISTED_SLOT_BYTES = 180;

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
  const data = await readJsonFile(storage, SPEC);
  if (data === null) return [];
  const slots = data['slots'];
  if (!Array.isArray(slots) || !slots.every(isPersistedSlot)) throw damaged(SPEC, storage, 'unexpected content');
  if (new Set(slots.map((s) => s.name)).size !== slots.length) throw damaged(SPEC, storage, 'a slot name appears twice');
  return slots.map((s) => ({ name: s.name, restartLsn: s.restartLsn, invalidationReason: s.invalidationReason }));
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

/** Replaces the slots file atomically and durably (the same steps as the control file). */
export function writeSlotsFile(storage: Storage, slots: readonly PersistedSlot[]): Promise<void> {
  return writeJsonFile(storage, SPEC, { slots });
}
