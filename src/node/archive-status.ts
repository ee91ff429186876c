import { errnoCode } from '../errors.js';
import type { Storage } from '../storage/storage.js';

/** Whether a file still has to go to the archive (`ready`) or needs no more archiving (`done`). */
export type ArchiveMark = 'ready' | 'done';

const MARKER = /^(.+)\.(ready|done)$/;

/**
 * Which of the node's WAL files still have to be archived, kept across restarts as empty
 * marker files beside them: `<name>.ready` once a file is complete and this node archives it,
 * `<name>.done` once the archive holds it (or when this node leaves it to another, a standby
 * in `archive.mode` `'on'`). PostgreSQL keeps the same markers in `pg_wal/archive_status`.
 *
 * Markers are created and renamed without a directory sync: a crash may lose one, and that is
 * safe. A lost `.ready` leaves a complete file without a marker, which the archiver marks again
 * when it starts; a lost `.done` puts the file again, and a put of identical content succeeds.
 * What is never lost is the rule the markers serve: the WAL stays until the archive holds it.
 */
export class ArchiveStatus {
  readonly #storage: Storage;
  readonly #marks = new Map<string, ArchiveMark>();

  private constructor(storage: Storage) {
    this.#storage = storage;
  }

  /** Reads the markers in the directory; `names` is its listing. */
  static load(storage: Storage, names: readonly string[]): ArchiveStatus {
    const status = new ArchiveStatus(storage);
    for (const name of names) {
      const match = MARKER.exec(name);
      if (match === null) continue;
      const file = match[1] as string;
      // Both (a crash between the rename's steps on some file systems): done wins.
      if (status.#marks.get(file) !== 'done') status.#marks.set(file, match[2] as ArchiveMark);
    }
    return status;
  }

  /** Whether `name` is a marker file (not WAL). */
  static isMarker(name: string): boolean {
    return MARKER.test(name);
  }

  get(name: string): ArchiveMark | undefined {
    return this.#marks.get(name);
  }

  /** The files marked `ready`, in no particular order. */
  ready(): string[] {
    return [...this.#marks].filter(([, mark]) => mark === 'ready').map(([name]) => name);
  }

  /** Every file with a marker, and its mark. */
  entries(): IterableIterator<[string, ArchiveMark]> {
    return this.#marks.entries();
  }

  /** Marks `name` (which has no marker yet, or is `ready` when `mark` is `done`). */
  async mark(name: string, mark: ArchiveMark): Promise<void> {
    const current = this.#marks.get(name);
    if (current === mark) return;
    this.#marks.set(name, mark);
    if (current === 'ready') {
      await this.#storage.rename(`${name}.ready`, `${name}.done`).catch(async (err: unknown) => {
        // The marker went missing (a crash lost it): the new one is created instead.
        if (errnoCode(err) !== 'ENOENT') throw err;
        await this.#create(`${name}.${mark}`);
      });
      return;
    }
    await this.#create(`${name}.${mark}`);
  }

  /** Forgets `name` (removed from the directory): its marker goes too. */
  async forget(name: string): Promise<void> {
    const mark = this.#marks.get(name);
    if (mark === undefined) return;
    this.#marks.delete(name);
    await this.#storage.remove(`${name}.${mark}`).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }

  async #create(marker: string): Promise<void> {
    const file = await this.#storage.open(marker, { create: true });
    await file.close();
  }
}
