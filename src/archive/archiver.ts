/**
 * The archive contract: where a node puts the WAL it has finished (PostgreSQL's
 * `archive_command`) and where a standby or a restore gets it back (`restore_command`), as an
 * object. An archiver for S3, GCS or SFTP implements four methods; walship decides what to put
 * and when, retries failures, and never removes WAL before it is archived.
 *
 * The files that go through an archiver, each by its plain name:
 * - WAL segments, named as in the WAL directory (`000000010000000000000003`: timeline,
 *   then the segment's number, as PostgreSQL names them), each exactly one segment long;
 * - `.partial` segments (`000000010000000000000003.partial`): the last, incomplete segment
 *   of a timeline that a promotion left, kept so that nothing is lost, never replayed as if
 *   complete;
 * - timeline history files (`00000002.history`).
 *
 * Contract, checked by `archiverConformance` in `walship/testing`:
 * - `put` resolves only once the file is durable in the archive, whole: a `get` after that,
 *   from any process, returns exactly `data`. A failed or interrupted put leaves either no
 *   file under `name` or the whole file, never a part of it. A put of a name that exists
 *   with identical content succeeds (walship puts a file again after a crash); with different
 *   content it rejects with a `WalshipError` of code `ARCHIVE_CONFLICT` and changes nothing.
 *   Two nodes may put the same name at once (one archive shared by a primary and its
 *   standbys): one wins, the other succeeds if its content is identical.
 * - `get` resolves with the file's bytes, or `null` promptly when there is no such file:
 *   absence is a normal answer (a standby polls for the next segment) and never waits.
 * - `list(prefix)` resolves with the names of the files whose name starts with `prefix`
 *   (every file without one), in any order.
 * - `remove`, optional, deletes a file; removing a missing file succeeds. walship removes
 *   only when asked to clean up (`archiveCleanup`).
 * - Every call honours `options.signal`: once it aborts, the call may reject (with any error)
 *   and walship forgets its result. Other errors reject the call; walship retries them.
 *
 * Names are plain file names (letters, digits, `.`, `_`, `-`): no `/`.
 */
export interface Archiver {
  /** Stores `data` under `name` durably (see the contract above). `data` is valid only until the returned promise settles. */
  put(name: string, data: Uint8Array, options?: ArchiverCallOptions): Promise<void>;
  /** The bytes stored under `name`, or `null` when there are none. */
  get(name: string, options?: ArchiverCallOptions): Promise<Uint8Array | null>;
  /** The names of the stored files that start with `prefix` (all of them without it), in any order. */
  list(prefix?: string, options?: ArchiverCallOptions): Promise<string[]>;
  /** Optional: deletes the file `name`; a missing file is not an error. */
  remove?(name: string, options?: ArchiverCallOptions): Promise<void>;
}

/** Options of every {@link Archiver} call. */
export interface ArchiverCallOptions {
  /** Aborted when walship no longer wants the result (the node is closing, or the call took too long). */
  signal?: AbortSignal;
}

/** True when `value` looks like an {@link Archiver} (a type guard for options checks). */
export function isArchiver(value: unknown): value is Archiver {
  if (typeof value !== 'object' || value === null) return false;
  const a = value as Record<string, unknown>;
  return (
    typeof a.put === 'function' &&
    typeof a.get === 'function' &&
    typeof a.list === 'function' &&
    (a.remove === undefined || typeof a.remove === 'function')
  );
}

/** The characters of a name an archiver is given: at most 255 of them, no path separators. */
const ARCHIVE_NAME = /^[A-Za-z0-9._-]{1,255}$/;

/** True when `name` is a file name an archiver may be given (and `.`/`..` are not). */
export function isArchiveName(name: unknown): name is string {
  return typeof name === 'string' && ARCHIVE_NAME.test(name) && name !== '.' && name !== '..';
}
