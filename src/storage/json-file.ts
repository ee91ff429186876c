import crc32c from 'fast-crc32c';
import { WalshipError, errnoCode } from '../errors.js';
import { replaceFileDurably } from './replace-file.js';
import type { Storage } from './storage.js';

/**
 * A small JSON file replaced atomically and durably (the node's control file, its slots):
 * a CRC-32C of what follows (4 bytes), the JSON's length (4 bytes), then the JSON with a
 * `format` field. Written as a checksummed temporary file, synced, renamed over the old one,
 * then the directory synced, so a crash at any point leaves the old file or the new one.
 */
export interface JsonFileSpec {
  readonly name: string;
  readonly format: number;
  /** Anything longer is damage. */
  readonly maxBytes: number;
  /** What to do about a damaged file, appended to the `WAL_CORRUPT` message. */
  readonly repairHint: string;
  /** Whether a full disk (`ENOSPC`) is reported as transient. */
  readonly enospcTransient: boolean;
}

const HEADER = 8;

/** Reads the file: its parsed JSON (format checked), or `null` when there is none. */
export async function readJsonFile(storage: Storage, spec: JsonFileSpec): Promise<Record<string, unknown> | null> {
  const buf = await readFileBytes(storage, spec);
  return buf === null ? null : decodeJsonFile(buf, spec, storage);
}

/** The file's bytes (at most `spec.maxBytes`, else `WAL_CORRUPT`), or `null` when there is none. */
export async function readFileBytes(storage: Storage, spec: JsonFileSpec): Promise<Buffer | null> {
  let file;
  try {
    file = await storage.open(spec.name, { readOnly: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw ioError(spec, 'open', storage, err);
  }
  try {
    const size = await file.size();
    if (size < HEADER || size > spec.maxBytes) throw damaged(spec, storage, `size ${size}`);
    const buf = Buffer.alloc(size);
    if ((await file.read(buf, 0, size, 0)) !== size) throw damaged(spec, storage, 'short read');
    return buf;
  } catch (err) {
    if (err instanceof WalshipError) throw err;
    throw ioError(spec, 'read', storage, err);
  } finally {
    await file.close().catch(() => undefined);
  }
}

/** The parsed JSON of a whole file's bytes (checksum and `format` checked); `WAL_CORRUPT` when damaged. */
export function decodeJsonFile(buf: Buffer, spec: JsonFileSpec, storage: Storage): Record<string, unknown> {
  if (buf.length < HEADER || buf.readUInt32LE(4) !== buf.length - HEADER || crc32c.calculate(buf.subarray(4)) !== buf.readUInt32LE(0)) {
    throw damaged(spec, storage, 'checksum mismatch');
  }
  return parseJsonBody(buf.subarray(HEADER), spec, storage);
}

/** Parses checksummed JSON bytes and checks their `format`. */
export function parseJsonBody(bytes: Buffer, spec: JsonFileSpec, storage: Storage): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw damaged(spec, storage, 'not JSON');
  }
  const format = (parsed as { format?: unknown } | null)?.format;
  if (typeof format === 'number' && format !== spec.format) {
    throw new WalshipError('WAL_FORMAT', `${spec.name} has format ${format}; this walship reads format ${spec.format}`);
  }
  if (format !== spec.format || typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw damaged(spec, storage, 'unexpected content');
  }
  return parsed as Record<string, unknown>;
}

/**
 * Replaces the file with `body` (plus its `format`), atomically and durably. A file longer
 * than `spec.maxBytes`, which {@link readFileBytes} would refuse, is not written:
 * `FILE_TOO_LARGE`, and the old file stays as it was.
 */
export async function writeJsonFile(storage: Storage, spec: JsonFileSpec, body: object): Promise<void> {
  const json = Buffer.from(JSON.stringify({ format: spec.format, ...body }), 'utf8');
  if (HEADER + json.length > spec.maxBytes) {
    throw new WalshipError('FILE_TOO_LARGE', `${spec.name} would take ${HEADER + json.length} bytes, more than the ${spec.maxBytes} walship reads back; nothing was written`);
  }
  const buf = Buffer.alloc(HEADER + json.length);
  buf.writeUInt32LE(json.length, 4);
  json.copy(buf, HEADER);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(4)), 0);
  try {
    await replaceFileDurably(storage, spec.name, buf);
  } catch (err) {
    throw ioError(spec, 'write', storage, err);
  }
}

/** The `WAL_CORRUPT` error for a damaged file (the caller's shape checks use it too). */
export function damaged(spec: JsonFileSpec, storage: Storage, why: string): WalshipError {
  return new WalshipError('WAL_CORRUPT', `${spec.name} in ${storage.description} is damaged (${why}); ${spec.repairHint}`);
}

export function ioError(spec: JsonFileSpec, what: string, storage: Storage, err: unknown): WalshipError {
  return new WalshipError('WAL_IO', `cannot ${what} ${spec.name} in ${storage.description}: ${(err as Error).message}`, {
    cause: err,
    transient: spec.enospcTransient && errnoCode(err) === 'ENOSPC',
  });
}
