import crc32c from 'fast-crc32c';
import { WalshipError, errnoCode } from '../errors.js';
import type { Lsn } from '../lsn.js';
import type { Storage } from '../storage/storage.js';

/** The node's control file: its identity and where its application's state is durable. */
export const CONTROL_FILE = 'walship.control';
const TEMP_FILE = `${CONTROL_FILE}.tmp`;
const FORMAT = 1;
const HEADER = 8;
/** Far more than the JSON ever needs; anything longer is damage. */
const MAX_BYTES = 64 * 1024;

/** What a node's control file records (PostgreSQL's `pg_control`, the part walship needs). */
export interface ControlData {
  /** The cluster's identity (16 hex digits): chosen by the first primary, copied by standbys. */
  readonly systemId: string;
  /** The WAL's segment size (a standby's must equal its primary's). */
  readonly segmentSize: number;
  /** The timeline the node's WAL is on. */
  readonly timeline: number;
  /**
   * The latest checkpoint: the application's state is durable up to `lsn`, kept by the
   * application itself (`snapshot: false`) or in the local snapshot file of that LSN.
   */
  readonly checkpoint: { readonly lsn: Lsn; readonly snapshot: boolean } | null;
  /** A standby's state is consistent once replay reaches this LSN (the end of its base backup). */
  readonly consistentLsn: Lsn;
}

/** Reads the control file; `null` when there is none (a new node). A damaged one is `WAL_CORRUPT`. */
export async function readControlFile(storage: Storage): Promise<ControlData | null> {
  let file;
  try {
    file = await storage.open(CONTROL_FILE, { readOnly: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new WalshipError('WAL_IO', `cannot open ${CONTROL_FILE} in ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const damaged = (why: string): WalshipError =>
      new WalshipError('WAL_CORRUPT', `${CONTROL_FILE} in ${storage.description} is damaged (${why}); restore the node from a base backup`);
    let buf: Buffer;
    try {
      const size = await file.size();
      if (size < HEADER || size > MAX_BYTES) throw damaged(`size ${size}`);
      buf = Buffer.alloc(size);
      if ((await file.read(buf, 0, size, 0)) !== size) throw damaged('short read');
    } catch (err) {
      if (err instanceof WalshipError) throw err;
      throw new WalshipError('WAL_IO', `cannot read ${CONTROL_FILE} in ${storage.description}: ${(err as Error).message}`, { cause: err });
    }
    const length = buf.readUInt32LE(4);
    if (length !== buf.length - HEADER || crc32c.calculate(buf.subarray(4)) !== buf.readUInt32LE(0)) throw damaged('checksum mismatch');
    let parsed: unknown;
    try {
      parsed = JSON.parse(buf.subarray(HEADER).toString('utf8'));
    } catch {
      throw damaged('not JSON');
    }
    const format = (parsed as { format?: unknown } | null)?.format;
    if (typeof format === 'number' && format !== FORMAT) {
      throw new WalshipError('WAL_FORMAT', `${CONTROL_FILE} has format ${format}; this walship reads format ${FORMAT}`);
    }
    const data = parsed as ControlData & { format: unknown };
    if (format !== FORMAT || !isControlData(data)) throw damaged('unexpected content');
    return {
      systemId: data.systemId,
      segmentSize: data.segmentSize,
      timeline: data.timeline,
      checkpoint: data.checkpoint === null ? null : { lsn: data.checkpoint.lsn, snapshot: data.checkpoint.snapshot },
      consistentLsn: data.consistentLsn,
    };
  } finally {
    await file.close().catch(() => undefined);
  }
}

/** The shape check of a parsed control file: a checksum only proves the bytes are what was written. */
function isControlData(value: unknown): value is ControlData {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  const isLsn = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;
  const checkpoint = v['checkpoint'] as Record<string, unknown> | null | undefined;
  return (
    typeof v['systemId'] === 'string' &&
    /^[0-9a-f]{16}$/.test(v['systemId']) &&
    Number.isSafeInteger(v['segmentSize']) &&
    (v['segmentSize'] as number) > 0 &&
    Number.isSafeInteger(v['timeline']) &&
    (v['timeline'] as number) >= 1 &&
    isLsn(v['consistentLsn']) &&
    (checkpoint === null ||
      (typeof checkpoint === 'object' && checkpoint !== undefined && isLsn(checkpoint['lsn']) && typeof checkpoint['snapshot'] === 'boolean'))
  );
}

/**
 * Replaces the control file atomically and durably: a checksummed temporary file, synced,
 * renamed over the old one, then the directory synced. A crash at any point leaves either the
 * old file or the new one, never a mix.
 */
export async function writeControlFile(storage: Storage, data: ControlData): Promise<void> {
  const json = Buffer.from(JSON.stringify({ format: FORMAT, ...data }), 'utf8');
  const buf = Buffer.alloc(HEADER + json.length);
  buf.writeUInt32LE(json.length, 4);
  json.copy(buf, HEADER);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(4)), 0);
  try {
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
    await storage.rename(TEMP_FILE, CONTROL_FILE);
    await storage.syncDirectory();
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot write ${CONTROL_FILE} in ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}

/** Removes the control file durably (undoing a bootstrap that never received anything); a missing one is fine. */
export async function removeControlFile(storage: Storage): Promise<void> {
  try {
    await storage.remove(CONTROL_FILE).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    await storage.syncDirectory();
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot remove ${CONTROL_FILE} in ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}
