import { isArchiveName, type Archiver, type ArchiverCallOptions } from '../archive/archiver.js';
import { WalshipError, abortError } from '../errors.js';
import { seededRandom } from './seeded-random.js';

/** The calls of an {@link Archiver}, as {@link MemoryArchive} counts and fails them. */
export type MemoryArchiveOperation = 'put' | 'get' | 'list' | 'remove';

/** A fault for {@link MemoryArchive.injectFault}. */
export interface MemoryArchiveFault {
  /** Which calls fail. */
  operation: MemoryArchiveOperation;
  /** What they reject with. @defaultValue a transient `ARCHIVE_FAILED` {@link WalshipError} */
  error?: Error;
  /** How many calls fail, from the next one on (`Infinity` allowed). @defaultValue 1 */
  times?: number;
  /**
   * `'after'`: the call takes effect, then rejects, as when the answer of a put that
   * succeeded is lost (walship then puts the same file again). @defaultValue 'before'
   */
  when?: 'before' | 'after';
}

/** Options of a {@link MemoryArchive}. */
export interface MemoryArchiveOptions {
  /** The probability (0 to 1) that a call fails before taking effect. @defaultValue 0 */
  failureRate?: number;
  /** Seeds the draws of `failureRate`, so a failing run replays. @defaultValue 1 */
  seed?: number;
}

const OPERATIONS: readonly MemoryArchiveOperation[] = ['put', 'get', 'list', 'remove'];

interface ActiveFault {
  readonly operation: MemoryArchiveOperation;
  readonly error: Error | undefined;
  readonly when: 'before' | 'after';
  left: number;
}

/**
 * The reference {@link Archiver}: files in memory, exactly per the contract (a put copies
 * the caller's bytes, identical re-puts succeed, different ones reject `ARCHIVE_CONFLICT`,
 * absence is `null`, a get returns a copy), developed with `archiverConformance`. For
 * tests: {@link injectFault} and a seeded `failureRate` make calls fail (walship retries
 * them), {@link calls} counts calls, {@link files} and {@link has} show what is stored, and
 * {@link openAgain} is a second node's handle on the same files.
 */
export class MemoryArchive implements Archiver {
  #files = new Map<string, Uint8Array>();
  readonly #calls: Record<MemoryArchiveOperation, number> = { put: 0, get: 0, list: 0, remove: 0 };
  #faults: ActiveFault[] = [];
  readonly #failureRate: number;
  readonly #random: () => number;

  constructor(options: MemoryArchiveOptions = {}) {
    const { failureRate = 0, seed = 1 } = checkOptions(options);
    this.#failureRate = failureRate;
    this.#random = seededRandom(seed);
  }

  /** A second handle on the same files, with its own counters, faults and options, as a second node would have. */
  openAgain(options: MemoryArchiveOptions = {}): MemoryArchive {
    const other = new MemoryArchive(options);
    other.#files = this.#files; // the same map: what one handle puts, the other gets
    return other;
  }

  async put(name: string, data: Uint8Array, options: ArchiverCallOptions = {}): Promise<void> {
    this.#begin('put', name, options);
    if (!(data instanceof Uint8Array)) throw new WalshipError('INVALID_ARGUMENT', `MemoryArchive.put("${name}"): data must be a Uint8Array`);
    const fault = this.#fault('put', name);
    const existing = this.#files.get(name);
    if (existing === undefined) {
      this.#files.set(name, new Uint8Array(data));
    } else if (!sameBytes(existing, data)) {
      throw new WalshipError('ARCHIVE_CONFLICT', `MemoryArchive: "${name}" already holds different content (${existing.length} bytes, the put has ${data.length}); nothing was overwritten`);
    }
    fault?.();
  }

  async get(name: string, options: ArchiverCallOptions = {}): Promise<Uint8Array | null> {
    this.#begin('get', name, options);
    const fault = this.#fault('get', name);
    const stored = this.#files.get(name);
    fault?.();
    return stored === undefined ? null : new Uint8Array(stored);
  }

  async list(prefix = '', options: ArchiverCallOptions = {}): Promise<string[]> {
    this.#calls.list++;
    if (typeof prefix !== 'string') throw new WalshipError('INVALID_ARGUMENT', 'MemoryArchive.list: prefix must be a string');
    if (options.signal?.aborted === true) throw abortError(options.signal);
    const fault = this.#fault('list', prefix);
    const names = [...this.#files.keys()].filter((name) => name.startsWith(prefix));
    fault?.();
    return names;
  }

  async remove(name: string, options: ArchiverCallOptions = {}): Promise<void> {
    this.#begin('remove', name, options);
    const fault = this.#fault('remove', name);
    this.#files.delete(name);
    fault?.();
  }

  /**
   * Makes the next `times` calls of `operation` (on this handle) reject, before or after
   * taking effect. Returns a function that removes the fault.
   */
  injectFault(fault: MemoryArchiveFault): () => void {
    const active = activeFault(fault);
    this.#faults.push(active);
    return () => {
      this.#faults = this.#faults.filter((f) => f !== active);
    };
  }

  /** How many times each method was called on this handle, failed calls included. */
  get calls(): Readonly<Record<MemoryArchiveOperation, number>> {
    return { ...this.#calls };
  }

  /** A copy of every stored file, by name. */
  files(): Map<string, Uint8Array> {
    return new Map([...this.#files].map(([name, data]) => [name, new Uint8Array(data)]));
  }

  /** True when a file is stored under `name`. */
  has(name: string): boolean {
    return this.#files.has(name);
  }

  /** Counts the call and checks its name and signal. */
  #begin(operation: MemoryArchiveOperation, name: string, options: ArchiverCallOptions): void {
    this.#calls[operation]++;
    if (!isArchiveName(name)) throw new WalshipError('INVALID_ARGUMENT', `MemoryArchive.${operation}: ${JSON.stringify(name)} is not an archive name`);
    if (options.signal?.aborted === true) throw abortError(options.signal);
  }

  /**
   * Throws now for a fault before the call takes effect or a random failure; returns a
   * function that throws for a fault after it; undefined when the call goes through.
   */
  #fault(operation: MemoryArchiveOperation, subject: string): (() => never) | undefined {
    const failure = (error: Error | undefined) => error ?? new WalshipError('ARCHIVE_FAILED', `MemoryArchive: injected failure of ${operation}("${subject}")`, { transient: true });
    const fault = this.#faults.find((f) => f.operation === operation);
    if (fault !== undefined) {
      if (--fault.left <= 0) this.#faults = this.#faults.filter((f) => f !== fault);
      if (fault.when === 'before') throw failure(fault.error);
      return () => {
        throw failure(fault.error);
      };
    }
    if (this.#failureRate > 0 && this.#random() < this.#failureRate) throw failure(undefined);
    return undefined;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

function checkOptions(options: MemoryArchiveOptions): MemoryArchiveOptions {
  const invalid = (problem: string): WalshipError => new WalshipError('INVALID_ARGUMENT', `MemoryArchive options: ${problem}`);
  if (typeof options !== 'object' || options === null) throw invalid('must be an object');
  for (const key of Object.keys(options)) {
    if (key !== 'failureRate' && key !== 'seed') throw invalid(`unknown key "${key}" (allowed: failureRate, seed)`);
  }
  const { failureRate, seed } = options;
  if (failureRate !== undefined && !(typeof failureRate === 'number' && failureRate >= 0 && failureRate <= 1)) throw invalid('failureRate must be a number from 0 to 1');
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw invalid('seed must be an integer');
  return options;
}

function activeFault(fault: MemoryArchiveFault): ActiveFault {
  const invalid = (problem: string): WalshipError => new WalshipError('INVALID_ARGUMENT', `MemoryArchive fault: ${problem}`);
  if (typeof fault !== 'object' || fault === null) throw invalid('must be an object');
  for (const key of Object.keys(fault)) {
    if (!['operation', 'error', 'times', 'when'].includes(key)) throw invalid(`unknown key "${key}" (allowed: operation, error, times, when)`);
  }
  const { operation, error, times = 1, when = 'before' } = fault;
  if (!OPERATIONS.includes(operation)) throw invalid(`operation must be one of ${OPERATIONS.join(', ')}`);
  if (error !== undefined && !(error instanceof Error)) throw invalid('error must be an Error');
  if (times !== Infinity && !(Number.isSafeInteger(times) && times >= 1)) throw invalid('times must be a positive integer or Infinity');
  if (when !== 'before' && when !== 'after') throw invalid('when must be "before" or "after"');
  return { operation, error, when, left: times };
}
