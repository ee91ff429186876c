import { constants as osConstants } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import createDebug from 'debug';
import { WalshipError } from '../errors.js';
import { currentScheduler } from '../scheduler.js';
import { assertFileName } from './node-storage.js';
import type { Storage, StorageFile, StorageLock, StorageOpenOptions } from './storage.js';

const log = createDebug('walship:storage');

/** What a simulated power loss does to bytes written since a file's last `datasync()`. */
export type UnsyncedWritesMode = 'lose' | 'keep' | 'torn' | 'sectors';

/** What a simulated power loss does to creates, renames and removes since the last `syncDirectory()`. */
export type UnsyncedMetadataMode = 'lose' | 'keep' | 'prefix';

/** How {@link MemoryStorage.crash} decides what survives. */
export interface CrashOptions {
  /**
   * Source of randomness in [0, 1). Pass a seeded generator so that a failing run replays.
   * @defaultValue `Math.random`
   */
  random?: () => number;
  /**
   * - `'lose'`: every byte written since the file's last datasync is lost.
   * - `'keep'`: every such byte survives.
   * - `'torn'`: a random prefix of the file's unsynced writes and allocations survives, the
   *   last kept one cut short at a random byte half of the time.
   * - `'sectors'`: each 512-byte sector touched by unsynced writes or allocations survives
   *   or is lost independently (out-of-order writeback).
   * @defaultValue `'torn'`
   */
  unsyncedWrites?: UnsyncedWritesMode;
  /**
   * - `'lose'`: every create, rename and remove since the last syncDirectory is undone.
   * - `'keep'`: all of them survive.
   * - `'prefix'`: a random prefix of them survives, in order, as on a journaling file system.
   * @defaultValue `'prefix'`
   */
  unsyncedMetadata?: UnsyncedMetadataMode;
}

/** Options of the {@link MemoryStorage} constructor. */
export interface MemoryStorageOptions {
  /** The storage's {@link Storage.description}. @defaultValue `memory:<n>` */
  description?: string;
  /**
   * Its files say that an urgent `datasync` holds the event loop ({@link StorageFile.syncBlocks},
   * as `NodeStorage`'s with `commitSync: 'inline'`), though it does not here: the WAL writer
   * then takes its path for such storages (the `write` announcement and an early sender's turn
   * before the sync), so tests and the simulator cover it. @defaultValue false
   */
  syncBlocks?: boolean;
}

/** The operations that {@link MemoryStorage.injectFault} can make fail. */
export type MemoryStorageFaultOperation =
  | 'write'
  | 'datasync'
  | 'allocate'
  | 'open'
  | 'rename'
  | 'remove'
  | 'syncDirectory'
  | 'read';

/** A fault for {@link MemoryStorage.injectFault}. */
export interface MemoryStorageFault {
  /** Which operation fails. */
  operation: MemoryStorageFaultOperation;
  /** The errno code of the error, e.g. `'EIO'` or `'ENOSPC'`. */
  code: 'EIO' | 'ENOSPC' | (string & {});
  /** Fail the nth matching operation from now. @defaultValue 1 */
  nth?: number;
  /** How many consecutive matching operations fail from then on (`Infinity` allowed). @defaultValue 1 */
  times?: number;
  /** Only operations on this file name (or names matching it) match; a rename matches either name. */
  file?: string | RegExp;
  /**
   * For write faults: how many leading bytes reach the file before the error. For allocate
   * faults: by how many bytes the file grows before the error, as when a zero-fill runs out
   * of space part-way (`NodeStorage` allocates by writing zeros). The error carries it as
   * `bytesWritten`. @defaultValue 0
   */
  bytesWritten?: number;
}

const SECTOR_SIZE = 512;
const FAULT_OPERATIONS: readonly MemoryStorageFaultOperation[] = [
  'write',
  'datasync',
  'allocate',
  'open',
  'rename',
  'remove',
  'syncDirectory',
  'read',
];
const WRITE_MODES: readonly UnsyncedWritesMode[] = ['lose', 'keep', 'torn', 'sectors'];
const METADATA_MODES: readonly UnsyncedMetadataMode[] = ['lose', 'keep', 'prefix'];

let instanceCount = 0;

/**
 * An in-memory {@link Storage} that models what a disk keeps through a power loss, for
 * simulations and durability tests. {@link MemoryStorage.crash} returns the storage as it
 * would be found after the power came back; faults (`EIO`, `ENOSPC`, …) can be injected on
 * chosen operations.
 *
 * Written bytes become durable on `datasync()`, creates/renames/removes on
 * `syncDirectory()`, exactly as the {@link Storage} contract promises and no sooner.
 */
export class MemoryStorage implements Storage {
  readonly description: string;
  private disk: Disk;
  readonly #syncBlocks: boolean;

  constructor(options: MemoryStorageOptions = {}) {
    checkKeys(options, ['description', 'syncBlocks'], 'MemoryStorage options', 'INVALID_OPTIONS');
    if (options.description !== undefined && typeof options.description !== 'string') {
      throw new WalshipError('INVALID_OPTIONS', 'MemoryStorage options.description must be a string');
    }
    if (options.syncBlocks !== undefined && typeof options.syncBlocks !== 'boolean') {
      throw new WalshipError('INVALID_OPTIONS', 'MemoryStorage options.syncBlocks must be a boolean');
    }
    this.#syncBlocks = options.syncBlocks === true;
    this.description = options.description ?? `memory:${++instanceCount}`;
    this.disk = new Disk(new Map());
  }

  /** Storage operations performed so far (every call on the storage, its files and its lock). */
  get operationCount(): number {
    return this.disk.operationCount;
  }

  /** Whether this storage crashed ({@link crash}, {@link crashAfter}): every operation on it fails. */
  get crashed(): boolean {
    return this.disk.dead;
  }

  async prepare(): Promise<void> {
    this.disk.enter();
  }

  async list(): Promise<string[]> {
    this.disk.enter();
    return [...this.disk.files.keys()];
  }

  async open(name: string, options: StorageOpenOptions = {}): Promise<StorageFile> {
    const disk = this.disk;
    disk.enter();
    assertFileName(name);
    disk.failOnFault('open', [name], 'open', name);
    let inode = disk.files.get(name);
    if (inode === undefined) {
      if (options.create !== true) throw systemError('ENOENT', 'open', name);
      inode = new Inode(new Content());
      disk.files.set(name, inode);
      disk.metadataLog.push({ kind: 'create', name, inode });
    } else if (options.create === true && options.exclusive === true) {
      throw systemError('EEXIST', 'open', name);
    }
    return new MemoryStorageFile(name, disk, inode, options.readOnly === true, this.#syncBlocks);
  }

  async rename(from: string, to: string): Promise<void> {
    const disk = this.disk;
    disk.enter();
    assertFileName(from);
    assertFileName(to);
    disk.failOnFault('rename', [from, to], 'rename', from);
    const inode = disk.files.get(from);
    if (inode === undefined) throw systemError('ENOENT', 'rename', from);
    if (from === to) return;
    disk.files.delete(from);
    disk.files.set(to, inode);
    disk.metadataLog.push({ kind: 'rename', from, to });
  }

  async remove(name: string): Promise<void> {
    const disk = this.disk;
    disk.enter();
    assertFileName(name);
    disk.failOnFault('remove', [name], 'unlink', name);
    if (!disk.files.delete(name)) throw systemError('ENOENT', 'unlink', name);
    disk.metadataLog.push({ kind: 'remove', name });
  }

  async syncDirectory(): Promise<void> {
    const disk = this.disk;
    disk.enter();
    disk.failOnFault('syncDirectory', [], 'fsync', this.description);
    disk.durableFiles = new Map(disk.files);
    disk.metadataLog = [];
  }

  async lock(): Promise<StorageLock> {
    const disk = this.disk;
    disk.enter();
    if (disk.locked) throw new WalshipError('WAL_LOCKED', `${this.description} is already locked`);
    disk.locked = true;
    let released = false;
    return {
      release: async () => {
        disk.enter();
        if (released) return;
        released = true;
        disk.locked = false;
      },
    };
  }

  /**
   * Simulates a power loss now: returns a new storage holding what survived, and makes this
   * one dead (every later operation on it, its files or its lock rejects with `EIO`).
   */
  crash(options: CrashOptions = {}): MemoryStorage {
    const settings = crashSettings(options);
    const disk = this.disk;
    if (disk.dead) throw crashedError();
    const survivor = new MemoryStorage({ description: this.description });
    survivor.disk = disk.powerLoss(settings, this.description);
    const scheduled = disk.scheduledCrash;
    disk.scheduledCrash = undefined;
    scheduled?.resolve(survivor);
    return survivor;
  }

  /**
   * Schedules a {@link MemoryStorage.crash} right before the `operations`-th storage
   * operation from now; that operation and every later one fail as on a dead storage.
   * Resolves with the storage that survived once the crash has happened (or when
   * {@link MemoryStorage.crash} is called earlier). One crash can be scheduled at a time.
   */
  async crashAfter(operations: number, options: CrashOptions = {}): Promise<MemoryStorage> {
    if (!Number.isSafeInteger(operations) || operations < 1) {
      throw new WalshipError(
        'INVALID_ARGUMENT',
        `crashAfter() needs a positive integer count of operations, got ${String(operations)}`,
      );
    }
    crashSettings(options);
    const disk = this.disk;
    if (disk.dead) throw crashedError();
    if (disk.scheduledCrash !== undefined) {
      throw new WalshipError('INVALID_ARGUMENT', `a crash of ${this.description} is already scheduled`);
    }
    return new Promise((resolve, reject) => {
      disk.scheduledCrash = {
        at: disk.operationCount + operations,
        fire: () => {
          try {
            this.crash(options);
          } catch (err) {
            // E.g. a random() out of range: the storage stays alive, the schedule is over.
            disk.scheduledCrash = undefined;
            reject(err);
          }
        },
        resolve,
      };
    });
  }

  /**
   * Makes matching operations fail with an injected error. Each fault counts the operations
   * that match it on its own: the `nth` to the `nth + times - 1`-th fail. Returns a function
   * that cancels the fault.
   */
  injectFault(fault: MemoryStorageFault): () => void {
    const active = activeFault(fault);
    const disk = this.disk;
    if (disk.dead) throw crashedError();
    disk.faults.push(active);
    return () => {
      disk.faults = disk.faults.filter((f) => f !== active);
    };
  }

  /**
   * A slow disk: from now until the next power loss, each file's `datasync()` resolves only
   * after `ms` of the current scheduler's time (virtual time in a simulation), and a power loss
   * meanwhile makes it fail. What is written in the meantime can be read, and is lost or torn
   * by a power loss, so a reader of not yet durable bytes (an early WAL sender) really runs
   * before they are durable. 0 makes datasync immediate again.
   */
  slowDatasync(ms: number): void {
    if (!Number.isSafeInteger(ms) || ms < 0) throw new WalshipError('INVALID_ARGUMENT', `slowDatasync(): ms must be a non-negative integer, got ${String(ms)}`);
    this.disk.datasyncDelayMs = ms;
  }

  /** A copy of a file's current content (what a read would return). */
  readFile(name: string): Uint8Array {
    return this.inspect(name).current.copy();
  }

  /** Current file names, sorted. */
  fileNames(): string[] {
    return [...this.disk.files.keys()].sort();
  }

  /** How many bytes of a file have been made durable by `datasync()`. */
  durableSize(name: string): number {
    return this.inspect(name).durable.size;
  }

  /**
   * Simulates bit rot: replaces the byte at `offset` with `mutate(byte)` in the file's
   * current content, its durable content and its pending writes, so it reads back changed
   * before and after any crash.
   */
  corrupt(name: string, offset: number, mutate: (byte: number) => number): void {
    if (this.disk.dead) throw crashedError();
    const inode = this.inspect(name);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= inode.current.size) {
      const size = inode.current.size;
      throw new WalshipError('INVALID_ARGUMENT', `corrupt(): offset ${offset} is outside ${name} (${size} bytes)`);
    }
    const byte = mutate(inode.current.bytes[offset] ?? 0);
    if (!Number.isInteger(byte) || byte < 0 || byte > 255) {
      throw new WalshipError('INVALID_ARGUMENT', `corrupt(): mutate must return a byte (0-255), got ${byte}`);
    }
    inode.setByte(offset, byte);
  }

  /** The inode now named `name`; inspection helpers still work on a crashed storage. */
  private inspect(name: string): Inode {
    const inode = this.disk.files.get(name);
    if (inode === undefined) throw systemError('ENOENT', 'open', name);
    return inode;
  }
}

/** A create, rename or remove not yet made durable by `syncDirectory()`. */
type MetadataOperation =
  | { kind: 'create'; name: string; inode: Inode }
  | { kind: 'rename'; from: string; to: string }
  | { kind: 'remove'; name: string };

interface ActiveFault {
  readonly operation: MemoryStorageFaultOperation;
  readonly code: string;
  readonly file: string | RegExp | undefined;
  readonly bytesWritten: number;
  /** Matching operations still to let through before failing. */
  skip: number;
  /** Matching operations still to fail. */
  remaining: number;
}

interface ScheduledCrash {
  /** The number (counted from the storage's first operation) of the operation it precedes. */
  at: number;
  fire(): void;
  resolve(survivor: MemoryStorage): void;
}

interface CrashSettings {
  chance: Chance;
  unsyncedWrites: UnsyncedWritesMode;
  unsyncedMetadata: UnsyncedMetadataMode;
}

/** The state of one simulated disk between two power losses. */
class Disk {
  /** The namespace as operations see it. */
  files: Map<string, Inode>;
  /** The namespace as of the last `syncDirectory()`. */
  durableFiles: Map<string, Inode>;
  /** Creates, renames and removes since the last `syncDirectory()`, oldest first. */
  metadataLog: MetadataOperation[] = [];
  operationCount = 0;
  dead = false;
  locked = false;
  faults: ActiveFault[] = [];
  scheduledCrash: ScheduledCrash | undefined;
  /** See {@link MemoryStorage.slowDatasync}. */
  datasyncDelayMs = 0;

  constructor(files: Map<string, Inode>) {
    this.files = files;
    this.durableFiles = new Map(files);
  }

  /** Starts one storage operation: counts it, or rejects it when the disk is dead. */
  enter(): void {
    const scheduled = this.scheduledCrash;
    if (scheduled !== undefined && this.operationCount + 1 >= scheduled.at) scheduled.fire();
    if (this.dead) throw crashedError();
    this.operationCount++;
  }

  /** The injected fault that makes this operation fail, if any; advances every matching fault. */
  takeFault(operation: MemoryStorageFaultOperation, names: readonly string[]): ActiveFault | undefined {
    let firing: ActiveFault | undefined;
    for (const fault of this.faults) {
      if (fault.operation !== operation || !faultMatches(fault, names)) continue;
      if (fault.skip > 0) {
        fault.skip--;
        continue;
      }
      fault.remaining--;
      firing ??= fault;
    }
    if (firing !== undefined) this.faults = this.faults.filter((fault) => fault.remaining > 0);
    return firing;
  }

  failOnFault(operation: MemoryStorageFaultOperation, names: readonly string[], syscall: string, target: string): void {
    const fault = this.takeFault(operation, names);
    if (fault !== undefined) throw injectedError(fault, syscall, target);
  }

  /** Marks this disk dead and returns the disk found after the power comes back. */
  powerLoss(settings: CrashSettings, description: string): Disk {
    const pending = this.metadataLog;
    const keptMetadata =
      settings.unsyncedMetadata === 'keep'
        ? pending.length
        : settings.unsyncedMetadata === 'lose'
          ? 0
          : settings.chance.int(pending.length);
    const namespace = new Map(this.durableFiles);
    for (const operation of pending.slice(0, keptMetadata)) applyMetadata(namespace, operation);
    const survivors = new Map<string, Inode>();
    for (const [name, inode] of namespace) {
      survivors.set(name, new Inode(inode.contentAfterPowerLoss(settings.unsyncedWrites, settings.chance)));
    }
    // Only now: a throwing random() must leave this disk usable.
    this.dead = true;
    log(
      '%s crashed: kept %d of %d unsynced metadata operations, %d files',
      description,
      keptMetadata,
      pending.length,
      survivors.size,
    );
    return new Disk(survivors);
  }
}

function applyMetadata(namespace: Map<string, Inode>, operation: MetadataOperation): void {
  switch (operation.kind) {
    case 'create':
      namespace.set(operation.name, operation.inode);
      return;
    case 'rename': {
      const inode = namespace.get(operation.from);
      // Replaying a prefix of the log reproduces the namespace at that time exactly.
      if (inode === undefined) throw new Error(`internal error: rename of missing ${operation.from}`);
      namespace.delete(operation.from);
      namespace.set(operation.to, inode);
      return;
    }
    case 'remove':
      namespace.delete(operation.name);
      return;
  }
}

/** A write or allocation not yet made durable by `datasync()`. */
type DataOperation =
  | { kind: 'write'; position: number; bytes: Uint8Array }
  | { kind: 'extend'; from: number; to: number };

function dataOperationLength(operation: DataOperation): number {
  return operation.kind === 'write' ? operation.bytes.length : operation.to - operation.from;
}

function applyData(content: Content, operation: DataOperation, length = dataOperationLength(operation)): void {
  if (operation.kind === 'write') content.write(operation.position, operation.bytes.subarray(0, length));
  else content.extendTo(operation.from + length);
}

/** A file: its content now, its content as of its last datasync, and the writes between. */
class Inode {
  readonly current: Content;
  readonly durable: Content;
  /** Since the last datasync, oldest first: applied to `durable` they give `current`. */
  private unsynced: DataOperation[] = [];

  constructor(content: Content) {
    this.current = content;
    this.durable = content.clone();
  }

  write(position: number, data: Uint8Array): void {
    if (data.length === 0) return;
    this.current.write(position, data);
    this.unsynced.push({ kind: 'write', position, bytes: new Uint8Array(data) });
  }

  extend(size: number): void {
    const from = this.current.size;
    if (size <= from) return;
    this.current.extendTo(size);
    this.unsynced.push({ kind: 'extend', from, to: size });
  }

  datasync(): void {
    for (const operation of this.unsynced) applyData(this.durable, operation);
    this.unsynced = [];
  }

  setByte(offset: number, byte: number): void {
    this.current.bytes[offset] = byte;
    if (offset < this.durable.size) this.durable.bytes[offset] = byte;
    for (const operation of this.unsynced) {
      if (operation.kind !== 'write') continue;
      const index = offset - operation.position;
      if (index >= 0 && index < operation.bytes.length) operation.bytes[index] = byte;
    }
  }

  contentAfterPowerLoss(mode: UnsyncedWritesMode, chance: Chance): Content {
    const operations = this.unsynced;
    const content = this.durable.clone();
    switch (mode) {
      case 'lose':
        return content;
      case 'keep':
        for (const operation of operations) applyData(content, operation);
        return content;
      case 'torn': {
        const kept = chance.int(operations.length);
        for (let i = 0; i < kept; i++) {
          const operation = operations[i] as DataOperation;
          // Half the time the last kept operation is torn: cut somewhere before its end.
          const torn = i === kept - 1 && chance.coin();
          applyData(content, operation, torn ? chance.int(dataOperationLength(operation) - 1) : undefined);
        }
        return content;
      }
      case 'sectors': {
        const touched = new Set<number>();
        for (const operation of operations) {
          const start = operation.kind === 'write' ? operation.position : operation.from;
          const end = start + dataOperationLength(operation);
          for (let sector = Math.floor(start / SECTOR_SIZE); sector * SECTOR_SIZE < end; sector++) touched.add(sector);
        }
        const current = this.current;
        for (const sector of [...touched].sort((a, b) => a - b)) {
          if (!chance.coin()) continue;
          const start = sector * SECTOR_SIZE;
          const end = Math.min(start + SECTOR_SIZE, current.size);
          if (end > start) content.write(start, current.bytes.subarray(start, end));
        }
        return content;
      }
    }
  }
}

/** File bytes in a growable buffer; bytes past `size` are always zero. */
class Content {
  bytes: Uint8Array;
  size: number;

  constructor(bytes: Uint8Array = new Uint8Array(0), size = 0) {
    this.bytes = bytes;
    this.size = size;
  }

  read(buffer: Uint8Array, offset: number, length: number, position: number): number {
    if (position >= this.size) return 0;
    const count = Math.min(length, this.size - position);
    buffer.set(this.bytes.subarray(position, position + count), offset);
    return count;
  }

  write(position: number, data: Uint8Array): void {
    if (data.length === 0) return;
    const end = position + data.length;
    this.reserve(end);
    this.bytes.set(data, position);
    if (end > this.size) this.size = end;
  }

  extendTo(size: number): void {
    if (size <= this.size) return;
    this.reserve(size);
    this.size = size;
  }

  copy(): Uint8Array {
    return this.bytes.slice(0, this.size);
  }

  clone(): Content {
    return new Content(this.copy(), this.size);
  }

  private reserve(capacity: number): void {
    if (capacity <= this.bytes.length) return;
    // Doubling keeps appends amortised O(1); a large allocate() gets exactly what it asked.
    const grown = new Uint8Array(Math.max(capacity, Math.min(this.bytes.length * 2, capacity * 2)));
    grown.set(this.bytes.subarray(0, this.size));
    this.bytes = grown;
  }
}

class MemoryStorageFile implements StorageFile {
  private closed = false;

  constructor(
    readonly name: string,
    private readonly disk: Disk,
    private readonly inode: Inode,
    private readonly readOnly: boolean,
    /** See {@link MemoryStorageOptions.syncBlocks}. */
    readonly syncBlocks: boolean,
  ) {}

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    this.enter('read');
    checkBuffer(buffer, offset, length);
    checkPosition(position);
    this.disk.failOnFault('read', [this.name], 'read', this.name);
    return this.inode.current.read(buffer, offset, length, position);
  }

  async write(data: Uint8Array, position: number): Promise<void> {
    let reached = 0;
    try {
      this.enter('write');
      if (this.readOnly) throw systemError('EBADF', 'write', this.name);
      if (!(data instanceof Uint8Array)) throw typeError('data', 'a Uint8Array', data);
      checkPosition(position);
      const fault = this.disk.takeFault('write', [this.name]);
      if (fault !== undefined) {
        reached = Math.min(fault.bytesWritten, data.length);
        this.inode.write(position, data.subarray(0, reached));
        throw injectedError(fault, 'write', this.name);
      }
      this.inode.write(position, data);
    } catch (err) {
      throw Object.assign(err as Error, { bytesWritten: reached });
    }
  }

  async datasync(): Promise<void> {
    this.enter('datasync');
    this.disk.failOnFault('datasync', [this.name], 'fdatasync', this.name);
    if (this.disk.datasyncDelayMs > 0) {
      await currentScheduler().sleep(this.disk.datasyncDelayMs);
      // The power went out while the disk was still writing: nothing more became durable.
      if (this.disk.dead) throw crashedError();
    }
    this.inode.datasync();
  }

  async allocate(size: number): Promise<void> {
    this.enter('allocate');
    checkPosition(size, 'size');
    const fault = this.disk.takeFault('allocate', [this.name]);
    if (fault !== undefined) {
      const from = this.inode.current.size;
      const reached = this.readOnly ? 0 : Math.min(fault.bytesWritten, Math.max(0, size - from));
      this.inode.extend(from + reached);
      throw Object.assign(injectedError(fault, 'write', this.name), { bytesWritten: reached });
    }
    if (size <= this.inode.current.size) return;
    if (this.readOnly) throw systemError('EBADF', 'write', this.name);
    this.inode.extend(size);
  }

  async size(): Promise<number> {
    this.enter('fstat');
    return this.inode.current.size;
  }

  async close(): Promise<void> {
    this.disk.enter();
    this.closed = true;
  }

  /** Starts an operation on this file: counts it; a closed file rejects it like a closed fd. */
  private enter(syscall: string): void {
    this.disk.enter();
    if (this.closed) throw systemError('EBADF', syscall, this.name);
  }
}

/** A validated source of random choices. */
class Chance {
  constructor(private readonly random: () => number) {}

  /** A uniform integer in [0, max]. */
  int(max: number): number {
    return Math.min(max, Math.floor(this.next() * (max + 1)));
  }

  coin(): boolean {
    return this.next() < 0.5;
  }

  private next(): number {
    const value = this.random();
    if (typeof value !== 'number' || !(value >= 0 && value < 1)) {
      throw new WalshipError(
        'INVALID_ARGUMENT',
        `CrashOptions.random must return a number in [0, 1), returned ${String(value)}`,
      );
    }
    return value;
  }
}

function crashSettings(options: CrashOptions): CrashSettings {
  checkKeys(options, ['random', 'unsyncedWrites', 'unsyncedMetadata'], 'CrashOptions', 'INVALID_ARGUMENT');
  const { random = Math.random, unsyncedWrites = 'torn', unsyncedMetadata = 'prefix' } = options;
  if (typeof random !== 'function') {
    throw new WalshipError('INVALID_ARGUMENT', 'CrashOptions.random must be a function returning numbers in [0, 1)');
  }
  if (!WRITE_MODES.includes(unsyncedWrites)) {
    throw new WalshipError(
      'INVALID_ARGUMENT',
      `CrashOptions.unsyncedWrites must be one of ${WRITE_MODES.join(', ')}, got ${describe(unsyncedWrites)}`,
    );
  }
  if (!METADATA_MODES.includes(unsyncedMetadata)) {
    throw new WalshipError(
      'INVALID_ARGUMENT',
      `CrashOptions.unsyncedMetadata must be one of ${METADATA_MODES.join(', ')}, got ${describe(unsyncedMetadata)}`,
    );
  }
  return { chance: new Chance(random), unsyncedWrites, unsyncedMetadata };
}

function activeFault(fault: MemoryStorageFault): ActiveFault {
  checkKeys(fault, ['operation', 'code', 'nth', 'times', 'file', 'bytesWritten'], 'fault', 'INVALID_ARGUMENT');
  const { operation, code, nth = 1, times = 1, file, bytesWritten = 0 } = fault;
  const invalid = (field: string, expected: string, value: unknown): WalshipError =>
    new WalshipError('INVALID_ARGUMENT', `fault.${field} must be ${expected}, got ${describe(value)}`);
  if (!FAULT_OPERATIONS.includes(operation)) {
    throw invalid('operation', `one of ${FAULT_OPERATIONS.join(', ')}`, operation);
  }
  if (typeof code !== 'string' || code === '') throw invalid('code', 'an errno code such as "EIO"', code);
  if (!Number.isSafeInteger(nth) || nth < 1) throw invalid('nth', 'a positive integer', nth);
  if (times !== Infinity && (!Number.isSafeInteger(times) || times < 1)) {
    throw invalid('times', 'a positive integer or Infinity', times);
  }
  if (file !== undefined && typeof file !== 'string' && !(file instanceof RegExp)) {
    throw invalid('file', 'a string or a RegExp', file);
  }
  if (!Number.isSafeInteger(bytesWritten) || bytesWritten < 0) {
    throw invalid('bytesWritten', 'a non-negative integer', bytesWritten);
  }
  return { operation, code, file, bytesWritten, skip: nth - 1, remaining: times };
}

function faultMatches(fault: ActiveFault, names: readonly string[]): boolean {
  const { file } = fault;
  if (file === undefined) return true;
  return names.some((name) => {
    if (typeof file === 'string') return name === file;
    file.lastIndex = 0; // A global or sticky RegExp keeps state between test() calls.
    return file.test(name);
  });
}

/** Rejects a non-object and unknown keys, so that a typo fails loudly. */
function checkKeys(
  value: object,
  allowed: readonly string[],
  what: string,
  code: 'INVALID_OPTIONS' | 'INVALID_ARGUMENT',
): void {
  if (typeof value !== 'object' || value === null) throw new WalshipError(code, `${what} must be an object`);
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new WalshipError(code, `${what} has an unknown key "${key}" (allowed: ${allowed.join(', ')})`);
    }
  }
}

function checkBuffer(buffer: Uint8Array, offset: number, length: number): void {
  if (!(buffer instanceof Uint8Array)) throw typeError('buffer', 'a Uint8Array', buffer);
  checkPosition(offset, 'offset');
  checkPosition(length, 'length');
  if (offset + length > buffer.length) {
    throw rangeError(`offset + length (${offset + length}) exceeds the buffer's ${buffer.length} bytes`);
  }
}

function checkPosition(value: number, what = 'position'): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw rangeError(`${what} must be a non-negative integer, got ${describe(value)}`);
  }
}

function rangeError(message: string): Error {
  return Object.assign(new RangeError(message), { code: 'ERR_OUT_OF_RANGE' });
}

function typeError(what: string, expected: string, value: unknown): Error {
  const error = new TypeError(`${what} must be ${expected}, got ${describe(value)}`);
  return Object.assign(error, { code: 'ERR_INVALID_ARG_TYPE' });
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return value === null ? 'null' : typeof value;
}

/** The error every operation on a crashed storage rejects with. */
function crashedError(): Error {
  return Object.assign(new Error('storage crashed (simulated power loss)'), { code: 'EIO' });
}

let systemErrorMap: Map<number, [string, string]> | undefined;

/** An error shaped like Node's own system errors: `ENOENT: no such file or directory, open 'x'`. */
function systemError(code: string, syscall: string, target: string, note = ''): Error {
  const errno = (osConstants.errno as Record<string, number | undefined>)[code];
  systemErrorMap ??= getSystemErrorMap();
  const meaning = errno === undefined ? 'error' : (systemErrorMap.get(-errno)?.[1] ?? 'error');
  const error = new Error(`${code}: ${meaning}${note}, ${syscall} '${target}'`);
  return Object.assign(error, { code, syscall, path: target }, errno === undefined ? {} : { errno: -errno });
}

function injectedError(fault: ActiveFault, syscall: string, target: string): Error {
  return systemError(fault.code, syscall, target, ' (injected)');
}
