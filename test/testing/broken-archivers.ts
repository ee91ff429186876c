/**
 * Archivers with one deliberate defect each, for testing that the conformance suite catches
 * it. Each is a {@link BrokenArchiver}: files in a map shared by its handles, faithful to the
 * contract except where its defect overrides a method; with no defect it must pass the whole
 * suite, so a failure of a broken one comes from its defect, not from the base.
 */
import type { Archiver, ArchiverCallOptions } from '../../src/archive/archiver.js';
import { WalshipError, abortError } from '../../src/errors.js';

/** What a broken archiver does differently; every hook is optional and replaces the faithful call. */
export interface Defect {
  put?(archiver: BrokenArchiver, name: string, data: Uint8Array): Promise<void>;
  get?(archiver: BrokenArchiver, name: string): Promise<Uint8Array | null>;
  list?(archiver: BrokenArchiver, prefix: string): Promise<string[]>;
  /** Calls go on as if no signal were given. */
  ignoreSignals?: boolean;
}

/** An archiver over a map of files that its handles (from {@link openAgain}) share. */
export class BrokenArchiver implements Archiver {
  constructor(
    readonly name: string,
    private readonly defect: Defect = {},
    readonly files = new Map<string, Uint8Array>(),
  ) {}

  /** A second handle on the same files, with the same defect. */
  openAgain(): BrokenArchiver {
    return new BrokenArchiver(this.name, this.defect, this.files);
  }

  async put(name: string, data: Uint8Array, options: ArchiverCallOptions = {}): Promise<void> {
    this.#checkSignal(options);
    if (this.defect.put !== undefined) return this.defect.put(this, name, data);
    this.faithfulPut(name, data);
  }

  async get(name: string, options: ArchiverCallOptions = {}): Promise<Uint8Array | null> {
    this.#checkSignal(options);
    if (this.defect.get !== undefined) return this.defect.get(this, name);
    const stored = this.files.get(name);
    return stored === undefined ? null : Uint8Array.from(stored);
  }

  async list(prefix = '', options: ArchiverCallOptions = {}): Promise<string[]> {
    this.#checkSignal(options);
    if (this.defect.list !== undefined) return this.defect.list(this, prefix);
    return [...this.files.keys()].filter((name) => name.startsWith(prefix));
  }

  async remove(name: string, options: ArchiverCallOptions = {}): Promise<void> {
    this.#checkSignal(options);
    this.files.delete(name);
  }

  /** The contract's put: a copy stored under a free name, identical content accepted, different refused. */
  faithfulPut(name: string, data: Uint8Array, copy = true): void {
    const existing = this.files.get(name);
    if (existing === undefined) this.files.set(name, copy ? Uint8Array.from(data) : data);
    else if (!same(existing, data)) throw conflict(name);
  }

  #checkSignal(options: ArchiverCallOptions): void {
    if (this.defect.ignoreSignals !== true && options.signal?.aborted === true) throw abortError(options.signal);
  }
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

function conflict(name: string): WalshipError {
  return new WalshipError('ARCHIVE_CONFLICT', `"${name}" already holds different content`);
}

/** A put replaces whatever the name holds. */
export function overwriting(): BrokenArchiver {
  return new BrokenArchiver('overwriting', {
    async put(archiver, name, data) {
      archiver.files.set(name, Uint8Array.from(data));
    },
  });
}

/** Every get resolves null, as if nothing were stored. */
export function forgetful(): BrokenArchiver {
  return new BrokenArchiver('forgetful', { get: async () => null });
}

/** A get of an absent name rejects instead of resolving null (as a raw S3 NoSuchKey would). */
export function throwingOnAbsent(): BrokenArchiver {
  return new BrokenArchiver('throwing-on-absent', {
    async get(archiver, name) {
      const stored = archiver.files.get(name);
      if (stored === undefined) throw new Error(`NoSuchKey: ${name}`);
      return Uint8Array.from(stored);
    },
  });
}

/** A get of an absent name never settles (as a poll that waits for the file to appear). */
export function hangingOnAbsent(): BrokenArchiver {
  return new BrokenArchiver('hanging-on-absent', {
    async get(archiver, name) {
      const stored = archiver.files.get(name);
      if (stored === undefined) return new Promise<never>(() => {});
      return Uint8Array.from(stored);
    },
  });
}

/** list() returns every name, whatever the prefix. */
export function ignoringPrefix(): BrokenArchiver {
  return new BrokenArchiver('ignoring-prefix', { list: async (archiver) => [...archiver.files.keys()] });
}

/** A put stores the caller's buffer itself, not a copy. */
export function keepingBuffer(): BrokenArchiver {
  return new BrokenArchiver('keeping-buffer', {
    async put(archiver, name, data) {
      archiver.faithfulPut(name, data, false);
    },
  });
}

/** A get returns the stored buffer itself, not a copy. */
export function sharingStored(): BrokenArchiver {
  return new BrokenArchiver('sharing-stored', { get: async (archiver, name) => archiver.files.get(name) ?? null });
}

/** A get returns at most the first 64 KiB of a file (a reader that stops after one chunk). */
export function truncating(): BrokenArchiver {
  return new BrokenArchiver('truncating', {
    async get(archiver, name) {
      const stored = archiver.files.get(name);
      return stored === undefined ? null : stored.slice(0, 64 * 1024);
    },
  });
}

/**
 * Checks for an existing file, then stores a turn of the event loop later without checking
 * again: sequential conflicts are found, but of racing puts the last one wins and all succeed.
 */
export function lastWriterWins(): BrokenArchiver {
  return new BrokenArchiver('last-writer-wins', {
    async put(archiver, name, data) {
      const existing = archiver.files.get(name);
      await new Promise((resolve) => setImmediate(resolve));
      if (existing !== undefined && !same(existing, data)) throw conflict(name);
      archiver.files.set(name, Uint8Array.from(data));
    },
  });
}

/** A put resolves at once and stores the file 50 ms later (an upload acknowledged before it lands). */
export function visibleLater(): BrokenArchiver {
  return new BrokenArchiver('visible-later', {
    async put(archiver, name, data) {
      const copy = Uint8Array.from(data);
      setTimeout(() => {
        try {
          archiver.faithfulPut(name, copy);
        } catch {
          // A conflict found late is lost, as the put already resolved.
        }
      }, 50);
    },
  });
}

/** Calls ignore their signal. */
export function ignoringAbort(): BrokenArchiver {
  return new BrokenArchiver('ignoring-abort', { ignoreSignals: true });
}
