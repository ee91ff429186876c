import crc32c from 'fast-crc32c';
import { WalshipError, errnoCode } from '../errors.js';
import { damaged, decodeJsonFile, ioError, parseJsonBody, readFileBytes, type JsonFileSpec } from './json-file.js';
import { replaceFileDurably } from './replace-file.js';
import type { Storage, StorageFile } from './storage.js';

/**
 * A small checksummed JSON file kept as two copies in one file and updated in place (the
 * node's control file: written at every checkpoint and state change, and the commit point of
 * a promotion, so its cost is on the failover path).
 *
 * An update writes the new content into the copy that does not hold the newest content,
 * fdatasyncs, then writes the other copy and fdatasyncs again: no temporary file, no rename,
 * no directory sync, and as the file's size never changes each fdatasync flushes data alone.
 * A crash tears at most the copy being written while the other holds the old or the new
 * content; a read takes the valid copy with the higher sequence number. Once an update is done
 * both copies hold it, so one damaged copy (a bad sector) loses nothing either. PostgreSQL
 * writes `pg_control` in place as one copy, trusting a 512-byte write to be atomic; two copies
 * need no such trust.
 *
 * Layout: two {@link COPY_BYTES} copies, each a magic number, a CRC-32C of the rest of the
 * copy's used bytes, a sequence number (low and high 4 bytes), the JSON's length, the JSON
 * (with its `format`). A file in the single-copy layout of `json-file.ts` (what walship wrote
 * before) is read too, and replaced by a two-copy file at its next update.
 */
export const COPY_BYTES = 8192;
const FILE_BYTES = 2 * COPY_BYTES;
/** 'WSC2' */
const MAGIC = 0x32435357;
const HEADER = 20;
/** The longest JSON a copy holds. */
export const MAX_TWO_COPY_JSON_BYTES = COPY_BYTES - HEADER;

interface Copy {
  readonly index: 0 | 1;
  readonly seq: number;
  readonly json: Buffer;
}

/** Reads the file: its parsed JSON (format checked), or `null` when there is none; `WAL_CORRUPT` when neither copy is valid. */
export async function readTwoCopyFile(storage: Storage, spec: JsonFileSpec): Promise<Record<string, unknown> | null> {
  const buf = await readFileBytes(storage, spec);
  if (buf === null) return null;
  if (!isTwoCopyLayout(buf)) return decodeJsonFile(buf, spec, storage);
  const newest = newestCopy(buf);
  if (newest === null) throw damaged(spec, storage, 'both copies damaged');
  return parseJsonBody(newest.json, spec, storage);
}

/**
 * Updates the file to `body` (plus its `format`) in place, durably: a crash at any point leaves
 * the old content or the new. A missing file, one in the older layout, one with no valid copy,
 * one whose in-place update fails and one whose previous update failed (in this process) is
 * replaced whole instead (temporary file, rename, directory sync), so that a failed fdatasync
 * or directory sync never leaves the next update trusting what it reads back. A rejected
 * update's outcome is unknown: the old content or the new may be what a restart finds. JSON longer than {@link MAX_TWO_COPY_JSON_BYTES}, which a read
 * would refuse, is `FILE_TOO_LARGE` and nothing is written.
 */
export async function writeTwoCopyFile(storage: Storage, spec: JsonFileSpec, body: object, options: TwoCopyWriteOptions = {}): Promise<void> {
  const json = Buffer.from(JSON.stringify({ format: spec.format, ...body }), 'utf8');
  if (json.length > MAX_TWO_COPY_JSON_BYTES) {
    // A copy's reader refuses a longer JSON (decodeCopy): it is never written.
    throw new WalshipError('FILE_TOO_LARGE', `${spec.name} would take ${json.length} bytes of JSON, more than the ${MAX_TWO_COPY_JSON_BYTES} a copy holds; nothing was written`);
  }
  let told = false;
  const onDurable = async (): Promise<void> => {
    if (told) return;
    told = true;
    try {
      await options.onDurable?.();
    } catch {
      // Only a wait: the second copy is written whatever it ended with.
    }
  };
  const uncertain = uncertainFiles.get(storage);
  if (uncertain?.has(spec.name) !== true && (await updateInPlace(storage, spec, json, onDurable))) return;
  const whole = Buffer.alloc(FILE_BYTES);
  const copy = encodeCopy(json, 1);
  copy.copy(whole, 0);
  copy.copy(whole, COPY_BYTES);
  try {
    await replaceFileDurably(storage, spec.name, whole);
    uncertain?.delete(spec.name);
    await onDurable();
  } catch (err) {
    // What is on disk is not known now (a copy, or a rename, may or may not be): until a
    // replace succeeds, no update trusts the copies it reads back.
    if (uncertain === undefined) uncertainFiles.set(storage, new Set([spec.name]));
    else uncertain.add(spec.name);
    throw ioError(spec, 'write', storage, err);
  }
}

/** Options of {@link writeTwoCopyFile}. */
export interface TwoCopyWriteOptions {
  /**
   * Called once the new content is durable in one copy, before the other copy is written: a
   * crash from then on finds the new content (a promotion's commit point need not wait for the
   * second copy). Called at most once; the write's promise still settles when both are done.
   * When it returns a promise, the second copy waits for it to settle (so that its fdatasync
   * does not compete with the caller's next one).
   */
  readonly onDurable?: () => void | Promise<unknown>;
}

/** Files of a storage whose last update failed: the next one replaces them whole (see {@link writeTwoCopyFile}). */
const uncertainFiles = new WeakMap<Storage, Set<string>>();

/** The in-place update; false when the file must be replaced whole instead (see {@link writeTwoCopyFile}). */
async function updateInPlace(storage: Storage, spec: JsonFileSpec, json: Buffer, onDurable: () => Promise<void>): Promise<boolean> {
  let file: StorageFile;
  try {
    file = await storage.open(spec.name);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw ioError(spec, 'open', storage, err);
  }
  try {
    const buf = Buffer.alloc(FILE_BYTES);
    if ((await file.read(buf, 0, FILE_BYTES, 0)) !== FILE_BYTES || !isTwoCopyLayout(buf)) return false;
    const newest = newestCopy(buf);
    if (newest === null) return false;
    // First the copy that does not hold the newest content. When both do, the copy of the
    // sequence number's parity: the one the previous update wrote second, so that if that
    // update's second fdatasync failed (the copy reads back from the cache, maybe not on disk)
    // the copy it made durable first is not the one overwritten first.
    const seq = newest.seq + 1;
    const other = newest.index === 0 ? 1 : 0;
    const first = decodeCopy(buf, other)?.seq === newest.seq ? seq % 2 : other;
    const copy = encodeCopy(json, seq);
    await file.write(copy, first * COPY_BYTES);
    await file.datasync();
    await onDurable();
    await file.write(copy, (1 - first) * COPY_BYTES);
    await file.datasync();
    return true;
  } catch {
    // Whatever the copies hold now, a whole new file replaces them (with the same content
    // when the first copy was durable: a read finds it either way).
    return false;
  } finally {
    await file.close().catch(() => undefined);
  }
}

function isTwoCopyLayout(buf: Buffer): boolean {
  return buf.length === FILE_BYTES && (buf.readUInt32LE(0) === MAGIC || buf.readUInt32LE(COPY_BYTES) === MAGIC);
}

/** The valid copy with the higher sequence number (the first on a tie), or `null` when neither is valid. */
function newestCopy(buf: Buffer): Copy | null {
  const a = decodeCopy(buf, 0);
  const b = decodeCopy(buf, 1);
  if (a === null || b === null) return a ?? b;
  return b.seq > a.seq ? b : a;
}

function decodeCopy(buf: Buffer, index: 0 | 1): Copy | null {
  const at = index * COPY_BYTES;
  if (buf.readUInt32LE(at) !== MAGIC) return null;
  const length = buf.readUInt32LE(at + 16);
  if (length > MAX_TWO_COPY_JSON_BYTES) return null;
  const end = at + HEADER + length;
  if (crc32c.calculate(buf.subarray(at + 8, end)) !== buf.readUInt32LE(at + 4)) return null;
  return { index, seq: buf.readUInt32LE(at + 8) + buf.readUInt32LE(at + 12) * 2 ** 32, json: buf.subarray(at + HEADER, end) };
}

function encodeCopy(json: Buffer, seq: number): Buffer {
  const buf = Buffer.alloc(HEADER + json.length);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(seq % 2 ** 32, 8);
  buf.writeUInt32LE(Math.floor(seq / 2 ** 32), 12);
  buf.writeUInt32LE(json.length, 16);
  json.copy(buf, HEADER);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(8)), 4);
  return buf;
}
