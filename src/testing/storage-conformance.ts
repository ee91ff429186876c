import assert from 'node:assert/strict';
import { WalshipError, errnoCode, isWalshipError } from '../errors.js';
import { isStorage, type Storage, type StorageFile, type StorageLock } from '../storage/storage.js';
import { conformanceRunner, describeError, handled, seededBytes, within, type ConformanceAdapters } from './conformance-runner.js';

/**
 * Where a backend legitimately differs; a case that needs a behaviour that is off is
 * registered as skipped, visibly.
 */
export interface StorageCapabilities {
  /** Files have the optional `writev`. @defaultValue true */
  writev?: boolean;
  /**
   * The harness's `crash()` always loses the bytes written since a file's last `datasync()`
   * (`MemoryStorage.crash({ unsyncedWrites: 'lose' })`), so a case checks that they are gone.
   * Off, the suite only checks that they do not take synced bytes with them: the contract
   * lets them survive, or survive in part. @defaultValue false
   */
  crashLosesUnsyncedWrites?: boolean;
  /**
   * The harness's `crash()` always undoes the creates, renames and removes since the last
   * `syncDirectory()` (`MemoryStorage.crash({ unsyncedMetadata: 'lose' })`), so a case checks
   * that they are undone. @defaultValue false
   */
  crashLosesUnsyncedMetadata?: boolean;
}

/** How {@link storageConformance} gets storages to test. */
export interface StorageConformanceHarness {
  /** Shown in the suite's name. @defaultValue 'storage' */
  name?: string;
  /**
   * A storage on a fresh, empty directory, which need not exist yet (the suite calls
   * `prepare()` first, as walship does); called once per case.
   */
  createStorage(): Storage | Promise<Storage>;
  /**
   * A second storage on the same directory, as another process (or `walship waldump` beside
   * a running node) would open it: the cases of sharing files and the lock between handles
   * are skipped without it.
   */
  openAgain?(storage: Storage): Storage | Promise<Storage>;
  /**
   * Simulates a power loss of `storage` (which is not used again) and returns the storage as
   * it is found when the power comes back. The durability cases are skipped without it.
   */
  crash?(storage: Storage): Storage | Promise<Storage>;
  /** Called after every case, passed or failed, with the storage `createStorage` made. */
  cleanup?(storage: Storage): void | Promise<void>;
  /** How the backend legitimately differs. @defaultValue {@link STORAGE_CONFORMANCE_DEFAULTS}.capabilities */
  capabilities?: StorageCapabilities;
  /** Deadline of every call to the storage, its files and its locks. @defaultValue 10000 */
  timeoutMs?: number;
  /** Size of the segment-sized files, at least 64 KiB (walship's segments are 16 MiB by default). @defaultValue 16 MiB */
  segmentBytes?: number;
}

/** Defaults of the {@link StorageConformanceHarness} settings. */
export const STORAGE_CONFORMANCE_DEFAULTS = Object.freeze({
  /** Every call must settle within 10 s. */
  timeoutMs: 10_000,
  /** Files of 16 MiB, the size of a default segment. */
  segmentBytes: 16 * 1024 * 1024,
  /** A backend with `writev` whose simulated power loss may keep unsynced changes. */
  capabilities: Object.freeze({
    /** Files have `writev`. */
    writev: true,
    /** A power loss may keep bytes not datasynced. */
    crashLosesUnsyncedWrites: false,
    /** A power loss may keep creates, renames and removes not directory-synced. */
    crashLosesUnsyncedMetadata: false,
  }),
});

/** The smallest `segmentBytes`: walship's smallest segment. */
const MIN_SEGMENT_BYTES = 64 * 1024;
/** Files created in the case of many files: a directory listing of more than one small page. */
const MANY_FILES = 300;
/** Calls in flight at once while creating many files, and racing calls. */
const PARALLEL = 8;

interface Config {
  readonly timeoutMs: number;
  readonly segmentBytes: number;
  readonly capabilities: Required<StorageCapabilities>;
}

/**
 * Registers the storage conformance suite: the behaviour walship relies on from every
 * {@link Storage}, checked the way walship uses it. Run it from a test file of your backend:
 *
 * ```ts
 * import { storageConformance } from 'walship/testing';
 * storageConformance({
 *   name: 'MyStorage',
 *   createStorage: () => new MyStorage(freshDirectory()),
 *   openAgain: (storage) => new MyStorage((storage as MyStorage).directory),
 *   cleanup: (storage) => removeDirectory((storage as MyStorage).directory),
 * });
 * ```
 *
 * Cases: open, create and exclusive create with their `ENOENT` and `EEXIST` errors; reads and
 * writes at positions, through views into larger buffers, of segment-sized files in one call,
 * short only at the end; a write that does not keep the caller's buffer; bytes and sizes seen
 * at once through a second handle; concurrent writes; `writev`; `allocate` (sparse too);
 * read-only and closed files; `rename` replacing its target; `remove`; `list` of every kind of
 * name walship uses and of many files; names that are not plain names; the directory lock
 * (`WAL_LOCKED`), also between two handles on one directory. With a `crash()` hook: datasynced
 * bytes and synced creates, renames and removes survive a power loss, a replace by rename
 * leaves the old file or the new one, rewriting synced bytes keeps them, and the lock is free
 * again. Every call must return a promise (a synchronous throw fails the case) that settles
 * within `timeoutMs`, and every case closes its files and releases its locks, even when it
 * fails.
 */
export function storageConformance(harness: StorageConformanceHarness, adapters: ConformanceAdapters = {}): void {
  checkHarness(harness);
  const runner = conformanceRunner(adapters, 'storageConformance');
  const defaults = STORAGE_CONFORMANCE_DEFAULTS;
  const config: Config = {
    timeoutMs: harness.timeoutMs ?? defaults.timeoutMs,
    segmentBytes: harness.segmentBytes ?? defaults.segmentBytes,
    capabilities: { ...defaults.capabilities, ...harness.capabilities },
  };
  const { writev, crashLosesUnsyncedWrites, crashLosesUnsyncedMetadata } = config.capabilities;
  const noSecondHandle = harness.openAgain === undefined ? 'the harness has no openAgain()' : false;
  const noCrash = harness.crash === undefined ? 'the harness has no crash()' : false;

  const run = (body: (ctx: CaseContext) => Promise<void>) => async (): Promise<void> => {
    const created = await within(Promise.resolve().then(() => harness.createStorage()), config.timeoutMs, 'createStorage()');
    const ctx = new CaseContext(created, harness, config);
    let failed = true;
    try {
      assert.ok(isStorage(created), 'createStorage() must return a storage (prepare, list, open, rename, remove, syncDirectory and lock functions)');
      await ctx.storage.prepare();
      await body(ctx);
      failed = false;
    } finally {
      // A cleanup failure must not hide the case's own failure.
      const problem = await ctx.dispose();
      if (!failed && problem !== undefined) throw problem;
    }
  };
  const register = (name: string, skip: string | false, body: (ctx: CaseContext) => Promise<void>): void => runner.register(name, skip, run(body));

  runner.describe(`storage conformance: ${harness.name ?? 'storage'}`, () => {
    register('has a description and starts empty; prepare() again changes nothing', false, startsEmpty);
    register('opening a missing file without create rejects ENOENT and creates nothing', false, openMissing);
    register('create makes an empty file; opening an existing one (create or not) keeps its bytes and can write', false, createKeeps);
    register('an exclusive create of an existing file rejects EEXIST and keeps the file', false, exclusiveExisting);
    register('of concurrent exclusive creates of one name exactly one succeeds', false, exclusiveRace);
    register('writes and reads back at positions, overwriting in place, and size() follows', false, readWrite);
    register('reads into the buffer at the given offset, and reads and writes through views into larger buffers', false, views);
    register("a write does not keep the caller's buffer", false, writeCopies);
    register('a write past the end leaves a hole that reads as zeros', false, hole);
    register('a read is short only at the end of the file, and reads 0 bytes past it', false, shortOnlyAtEnd);
    register('a segment-sized write reads back whole in one read', false, segmentRoundTrip);
    register('another handle on the file sees written bytes and the size at once, before any datasync', false, sharedHandles);
    register('concurrent writes at different positions of one file and to other files all land', false, concurrentWrites);
    register('writev writes the buffers back to back at the position', writev ? false : 'capabilities.writev is false', writevCase);
    register('allocate extends with zeros to the size, never shrinks, and keeps written bytes', false, (ctx) => allocate(ctx, false));
    register('a sparse allocate reads back as zeros too, and keeps written bytes', false, (ctx) => allocate(ctx, true));
    register('a read-only file reads, and rejects writes (EBADF, bytesWritten 0) and allocations, changing nothing', false, readOnly);
    register('close is idempotent; a closed file rejects reads, writes, datasync, size and allocate with EBADF', false, closedFile);
    register('rename moves a file, replacing the target', false, renameReplaces);
    register('an open file keeps working after a rename', false, renameOpen);
    register('rename of a missing file rejects ENOENT and changes nothing', false, renameMissing);
    register('remove deletes a file; remove of a missing one rejects ENOENT', false, removeFile);
    register('list names every kind of file name walship uses, each once', false, walshipNames);
    register(`list names every one of ${MANY_FILES} files`, false, listMany);
    register('names that are not plain file names reject EINVAL and create nothing', false, badNames);
    register('datasync and syncDirectory resolve and change no bytes', false, syncs);
    register('lock is exclusive (WAL_LOCKED) until released; release is idempotent and never frees a later lock', false, lockExclusive);
    register('of concurrent lock() calls exactly one succeeds', false, lockRace);
    register('another handle on the directory sees the same files', noSecondHandle, handlesShareFiles);
    register('a lock through another handle on the directory is refused until released', noSecondHandle, handlesShareLock);
    register('an allocated, datasynced, renamed and directory-synced segment survives a power loss whole, with its datasynced bytes', noCrash, durableSegment);
    register('a create, a rename and a remove followed by syncDirectory survive a power loss', noCrash, durableMetadata);
    register('a replace by rename leaves the old file or the new one after a power loss, never a mix', noCrash, durableReplace);
    register('rewriting datasynced bytes with the same bytes keeps them through a power loss', noCrash, durableRewrite);
    register('after a power loss the directory can be locked again', noCrash, lockAfterCrash);
    register(
      'a power loss loses the bytes not datasynced',
      noCrash !== false ? noCrash : crashLosesUnsyncedWrites ? false : 'capabilities.crashLosesUnsyncedWrites is false',
      losesWrites,
    );
    register(
      'a power loss undoes the creates, renames and removes not followed by syncDirectory',
      noCrash !== false ? noCrash : crashLosesUnsyncedMetadata ? false : 'capabilities.crashLosesUnsyncedMetadata is false',
      losesMetadata,
    );
  });
}

// ---------------------------------------------------------------------------------------
// Cases

const SEGMENT = '000000010000000000000003';
const NEXT_SEGMENT = '000000010000000000000004';

/** A name of each kind walship keeps in a data directory. */
const WALSHIP_NAMES = [
  SEGMENT,
  `${SEGMENT}.tmp`,
  `${SEGMENT}.partial`,
  `${SEGMENT}.ready`,
  `${SEGMENT}.done`,
  `${SEGMENT}.diverged`,
  '00000002.history',
  '00000002.history.tmp',
  'walship.control',
  'walship.control.tmp',
  'walship.slots',
  'walship.slots.tmp',
  'snapshot-00000001-0000000003000028',
  'snapshot-00000001-0000000003000028.diverged',
  'snapshot.partial',
  'promote',
];

async function startsEmpty(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  assert.equal(typeof storage.description, 'string', 'description must be a string');
  assert.notEqual(storage.description, '', 'description must not be empty');
  assertNames(await storage.list(), [], 'list() of a fresh storage');
  await ctx.createWith(storage, 'a', bytes('kept'));
  await storage.syncDirectory();
  await storage.prepare();
  assertNames(await storage.list(), ['a'], 'list() after prepare() again');
  assertBytes(await ctx.readWhole(storage, 'a'), bytes('kept'), 'a file after prepare() again');
}

async function openMissing(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  await ctx.rejects('open("missing")', () => storage.open('missing'), 'ENOENT');
  await ctx.rejects('open("missing", { readOnly: true })', () => storage.open('missing', { readOnly: true }), 'ENOENT');
  await ctx.rejects('open("missing", { exclusive: true }) without create', () => storage.open('missing', { exclusive: true }), 'ENOENT');
  assertNames(await storage.list(), [], 'list() after opens of a missing file');
}

async function createKeeps(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const file = await storage.open('a', { create: true });
  assert.equal(file.name, 'a', 'StorageFile.name must be the name it was opened with');
  assert.equal(await file.size(), 0, 'a created file must be empty');
  await file.close();
  assertNames(await storage.list(), ['a'], 'list() after a create');
  const content = seededBytes(1, 1000);
  await ctx.createWith(storage, 'b', content);
  const again = await storage.open('b', { create: true });
  assert.equal(await again.size(), content.length, 'open() with create of an existing file must keep its size (no truncation)');
  await again.close();
  assertBytes(await ctx.readWhole(storage, 'b'), content, 'an existing file after open() with create');
  // Without options a file opens for reading and writing, as the WAL writer opens its segments.
  const plain = await storage.open('b');
  await plain.write(bytes('XY'), 10);
  assert.equal(await plain.size(), content.length, 'a write inside the file must not change its size');
  await plain.close();
  const expected = Uint8Array.from(content);
  expected.set(bytes('XY'), 10);
  assertBytes(await ctx.readWhole(storage, 'b'), expected, 'a file written through open() without options');
}

async function exclusiveExisting(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const content = bytes('hello');
  await ctx.createWith(storage, 'a', content);
  await ctx.rejects('an exclusive create of an existing file', () => storage.open('a', { create: true, exclusive: true }), 'EEXIST');
  assertBytes(await ctx.readWhole(storage, 'a'), content, 'the file after a refused exclusive create');
  const fresh = await storage.open('b', { create: true, exclusive: true });
  assert.equal(await fresh.size(), 0, 'an exclusive create of a new name must make an empty file');
  await fresh.close();
  assertNames(await storage.list(), ['a', 'b'], 'list() after exclusive creates');
}

async function exclusiveRace(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const outcomes = await Promise.allSettled(Array.from({ length: PARALLEL }, () => storage.open('snapshot.partial', { create: true, exclusive: true })));
  const winners = outcomes.filter((o) => o.status === 'fulfilled');
  const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
  ctx.rethrowSuiteFailures(failures);
  const others = failures.filter((err) => errnoCode(err) !== 'EEXIST').map(describeError);
  assert.deepEqual(others, [], 'the exclusive creates that lose must reject EEXIST');
  assert.equal(winners.length, 1, `exactly one of ${PARALLEL} concurrent exclusive creates must succeed, ${winners.length} did`);
}

async function readWrite(ctx: CaseContext): Promise<void> {
  const file = await ctx.storage.open('a', { create: true });
  await file.write(bytes('hello world'), 0);
  assert.equal(await file.size(), 11, 'size() after writing 11 bytes');
  await file.write(bytes('WORLD'), 6);
  await file.write(bytes('!'), 11);
  assert.equal(await file.size(), 12, 'size() after overwriting and appending one byte');
  assertBytes(await ctx.readAt(file, 0, 12), bytes('hello WORLD!'), 'the file after writes at positions');
  assertBytes(await ctx.readAt(file, 4, 3), bytes('o W'), 'a read of 3 bytes at position 4');
  await file.write(new Uint8Array(0), 3);
  assert.equal(await file.size(), 12, 'an empty write must change nothing');
  assertBytes(await ctx.readAt(file, 0, 12), bytes('hello WORLD!'), 'the file after an empty write');
}

async function views(ctx: CaseContext): Promise<void> {
  const file = await ctx.storage.open('a', { create: true });
  await file.write(bytes('abcdef'), 0);
  const buffer = new Uint8Array(8).fill(0x2e);
  assert.equal(await file.read(buffer, 2, 3, 1), 3, 'read(buffer, 2, 3, 1) of a 6-byte file must read 3 bytes');
  assertBytes(buffer, bytes('..bcd...'), 'the buffer after read(buffer, 2, 3, 1): only bytes 2 to 4 change');
  // walship writes slices of larger buffers (a pooled record buffer, the block it rewrites).
  const backing = seededBytes(2, 10_000);
  const slice = backing.subarray(3000, 7000);
  await file.write(slice, 100);
  assertBytes(await ctx.readAt(file, 100, slice.length), slice, 'a write of a view (byteOffset 3000) into a larger buffer');
  const target = new Uint8Array(9000).fill(0xee);
  const window = target.subarray(2000, 8000);
  assert.equal(await file.read(window, 500, 4000, 100), 4000, 'a read into a view must read the whole length');
  assertBytes(target.subarray(2500, 6500), slice, 'the bytes read into a view (byteOffset 2000) at offset 500');
  assert.ok(target.subarray(0, 2500).every((b) => b === 0xee) && target.subarray(6500).every((b) => b === 0xee), 'a read into a view must not touch the bytes around what it reads');
}

async function writeCopies(ctx: CaseContext): Promise<void> {
  const file = await ctx.storage.open('a', { create: true });
  const data = seededBytes(3, 8192);
  const expected = Uint8Array.from(data);
  await file.write(data, 0);
  // walship reuses its buffers as soon as a write resolves.
  data.fill(0xee);
  assertBytes(await ctx.readAt(file, 0, 8192), expected, 'the file after the caller overwrote the buffer it wrote (once the write resolved)');
  await file.close();
  assertBytes(await ctx.readWhole(ctx.storage, 'a'), expected, 'the file, reopened, after the caller overwrote the buffer it wrote');
}

async function hole(ctx: CaseContext): Promise<void> {
  const file = await ctx.storage.open('a', { create: true });
  await file.write(bytes('head'), 0);
  await file.write(bytes('tail'), 5000);
  assert.equal(await file.size(), 5004, 'size() after a write ending at 5004');
  const whole = await ctx.readAt(file, 0, 5004);
  assertBytes(whole.subarray(0, 4), bytes('head'), 'the bytes before the hole');
  assertZeros(whole.subarray(4, 5000), 'the hole between two writes');
  assertBytes(whole.subarray(5000), bytes('tail'), 'the bytes after the hole');
}

async function shortOnlyAtEnd(ctx: CaseContext): Promise<void> {
  const file = await ctx.storage.open('a', { create: true });
  await file.write(bytes('0123456789'), 0);
  const buffer = new Uint8Array(10).fill(0xee);
  assert.equal(await file.read(buffer, 0, 10, 7), 3, 'a read of 10 bytes at 7 of a 10-byte file must read the 3 left');
  assertBytes(buffer.subarray(0, 3), bytes('789'), 'the bytes of a read that reaches the end');
  assert.ok(buffer.subarray(3).every((b) => b === 0xee), 'a read that reaches the end must not touch the buffer past what it read');
  assert.equal(await file.read(new Uint8Array(4), 0, 4, 10), 0, 'a read at the end must read 0 bytes');
  assert.equal(await file.read(new Uint8Array(4), 0, 4, 1000), 0, 'a read past the end must read 0 bytes');
  assert.equal(await file.read(new Uint8Array(4), 0, 0, 0), 0, 'a read of length 0 must read 0 bytes');
  assert.equal(await file.read(new Uint8Array(10), 0, 10, 0), 10, 'a read of the whole file must read all of it');
}

async function segmentRoundTrip(ctx: CaseContext): Promise<void> {
  const size = ctx.config.segmentBytes;
  const data = seededBytes(4, size);
  const file = await ctx.storage.open(SEGMENT, { create: true });
  await file.write(data, 0);
  assert.equal(await file.size(), size, `size() after a write of ${size} bytes`);
  const buffer = new Uint8Array(size);
  assert.equal(await file.read(buffer, 0, size, 0), size, `a read of a whole ${size}-byte file must read it all in one call (short only at the end)`);
  assertBytes(buffer, data, 'a segment-sized file read back');
  const tail = new Uint8Array(size);
  assert.equal(await file.read(tail, 0, size, 1000), size - 1000, 'a read of a segment from byte 1000 must read up to the end in one call');
  assertBytes(tail.subarray(0, size - 1000), data.subarray(1000), 'a segment read back from byte 1000');
}

async function sharedHandles(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  // The WAL writer writes a segment while senders and recovery read it through handles of their own.
  const writer = await storage.open(SEGMENT, { create: true });
  const first = seededBytes(5, 3000);
  await writer.write(first, 0);
  const reader = await storage.open(SEGMENT, { readOnly: true });
  assert.equal(await reader.size(), first.length, 'size() through a second handle after a write through the first');
  assertBytes(await ctx.readAt(reader, 0, first.length), first, 'the bytes through a second handle');
  const second = seededBytes(6, 70_000);
  await writer.write(second, first.length);
  assert.equal(await reader.size(), first.length + second.length, 'size() through an open second handle after the first appended');
  assertBytes(await ctx.readAt(reader, first.length, second.length), second, 'appended bytes through an open second handle');
  const other = await storage.open(SEGMENT);
  await other.write(bytes('over'), 10);
  assertBytes(await ctx.readAt(writer, 8, 8), Uint8Array.from([...first.subarray(8, 10), ...bytes('over'), ...first.subarray(14, 16)]), 'bytes one handle overwrote, through another');
}

async function concurrentWrites(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const [a, b] = await Promise.all([storage.open('a', { create: true }), storage.open('b', { create: true })]);
  const chunks = Array.from({ length: 16 }, (_, i) => ({ position: i * 8192 + (i % 3), data: seededBytes(100 + i, 5000 + i * 7) }));
  const others = chunks.map(({ position, data }) => ({ position, data: seededBytes(200 + data.length, data.length) }));
  await Promise.all([...chunks.map(({ position, data }) => a.write(data, position)), ...others.map(({ position, data }) => b.write(data, position))]);
  for (const [file, written, label] of [[a, chunks, 'a'], [b, others, 'b']] as const) {
    const last = written.at(-1) as { position: number; data: Uint8Array };
    assert.equal(await file.size(), last.position + last.data.length, `size() of "${label}" after concurrent writes`);
    for (const { position, data } of written) assertBytes(await ctx.readAt(file, position, data.length), data, `the write at ${position} of "${label}", one of concurrent writes`);
  }
}

async function writevCase(ctx: CaseContext): Promise<void> {
  const file = await ctx.storage.open('v', { create: true });
  assert.equal(typeof file.writev, 'function', "the storage's files have no writev(); set capabilities.writev to false");
  const writev = (file.writev as NonNullable<StorageFile['writev']>).bind(file);
  const parts = [bytes('abc'), new Uint8Array(0), seededBytes(7, 70_000).subarray(5), bytes('xyz')];
  const expected = Uint8Array.from([...new Uint8Array(5), ...parts.flatMap((part) => [...part])]);
  await writev(parts, 5);
  assert.equal(await file.size(), expected.length, 'size() after writev at 5');
  assertBytes(await ctx.readAt(file, 0, expected.length), expected, 'the file after writev of 4 buffers (one empty) at 5');
  await writev([bytes('12'), bytes('34')], 1);
  expected.set(bytes('1234'), 1);
  assertBytes(await ctx.readAt(file, 0, expected.length), expected, 'the file after a writev that overwrites in place');
}

async function allocate(ctx: CaseContext, sparse: boolean): Promise<void> {
  const size = ctx.config.segmentBytes;
  const options = sparse ? { sparse: true } : {};
  const file = await ctx.storage.open(`${SEGMENT}.tmp`, { create: true });
  await file.write(bytes('keep'), 0);
  await file.allocate(2, options);
  assert.equal(await file.size(), 4, 'allocate() to less than the size must not shrink the file');
  await file.allocate(size, options);
  assert.equal(await file.size(), size, `size() after allocate(${size})`);
  const middle = Math.floor(size / 2) + 3;
  await file.write(bytes('mid'), middle);
  await file.allocate(100, options);
  await file.allocate(size, options);
  assert.equal(await file.size(), size, 'allocate() to the size or less must change nothing');
  const whole = await ctx.readAt(file, 0, size);
  assertBytes(whole.subarray(0, 4), bytes('keep'), 'bytes written before allocate()');
  assertBytes(whole.subarray(middle, middle + 3), bytes('mid'), 'bytes written into allocated space');
  assertZeros(whole.subarray(4, middle), 'allocated space before the bytes written into it');
  assertZeros(whole.subarray(middle + 3), 'allocated space after the bytes written into it');
}

async function readOnly(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const content = bytes('abc');
  await ctx.createWith(storage, 'a', content);
  const file = await storage.open('a', { readOnly: true });
  assertBytes(await ctx.readAt(file, 0, 10), content, 'a read through a read-only file');
  const err = await ctx.rejects('a write to a read-only file', () => file.write(bytes('zz'), 0), 'EBADF');
  assert.equal((err as { bytesWritten?: unknown }).bytesWritten, 0, 'a failed write must say how many bytes reached the file: bytesWritten 0');
  if (typeof file.writev === 'function') {
    const writevErr = await ctx.rejects('a writev to a read-only file', () => (file.writev as NonNullable<StorageFile['writev']>)([bytes('zz'), bytes('y')], 0), 'EBADF');
    assert.equal((writevErr as { bytesWritten?: unknown }).bytesWritten, 0, 'a failed writev must say how many bytes reached the file: bytesWritten 0');
  }
  await ctx.rejects('allocate(100) of a read-only file', () => file.allocate(100));
  assert.equal(await file.size(), content.length, 'a read-only file after refused writes');
  await file.close();
  assertBytes(await ctx.readWhole(storage, 'a'), content, 'a file after refused writes through a read-only handle');
}

async function closedFile(ctx: CaseContext): Promise<void> {
  await ctx.createWith(ctx.storage, 'a', bytes('abc'));
  const file = await ctx.storage.open('a');
  await file.close();
  await file.close();
  // Node reuses a closed descriptor's number: a handle that went on working could write into another file.
  await ctx.rejects('a read of a closed file', () => file.read(new Uint8Array(1), 0, 1, 0), 'EBADF');
  await ctx.rejects('a write to a closed file', () => file.write(bytes('x'), 0), 'EBADF');
  await ctx.rejects('datasync() of a closed file', () => file.datasync(), 'EBADF');
  await ctx.rejects('size() of a closed file', () => file.size(), 'EBADF');
  await ctx.rejects('allocate() of a closed file', () => file.allocate(100), 'EBADF');
  if (typeof file.writev === 'function') await ctx.rejects('writev() to a closed file', () => (file.writev as NonNullable<StorageFile['writev']>)([bytes('x')], 0), 'EBADF');
  assertBytes(await ctx.readWhole(ctx.storage, 'a'), bytes('abc'), 'the file after calls on a closed handle');
}

async function renameReplaces(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const fresh = seededBytes(8, 300);
  await ctx.createWith(storage, 'walship.control.tmp', fresh);
  await ctx.createWith(storage, 'walship.control', seededBytes(9, 5000));
  await storage.rename('walship.control.tmp', 'walship.control');
  assertNames(await storage.list(), ['walship.control'], 'list() after a rename over an existing file');
  assertBytes(await ctx.readWhole(storage, 'walship.control'), fresh, 'the target after a rename over it');
  await ctx.rejects('open() of the old name after a rename', () => storage.open('walship.control.tmp'), 'ENOENT');
  await storage.rename('walship.control', SEGMENT);
  assertNames(await storage.list(), [SEGMENT], 'list() after a rename to a free name');
  assertBytes(await ctx.readWhole(storage, SEGMENT), fresh, 'a file renamed to a free name');
}

async function renameOpen(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const file = await storage.open(`${SEGMENT}.tmp`, { create: true });
  await file.write(bytes('before'), 0);
  await storage.rename(`${SEGMENT}.tmp`, SEGMENT);
  await file.write(bytes('after'), 6);
  await file.datasync();
  assertBytes(await ctx.readAt(file, 0, 11), bytes('beforeafter'), 'a file read through a handle opened before its rename');
  await file.close();
  assertBytes(await ctx.readWhole(storage, SEGMENT), bytes('beforeafter'), 'a file under its new name, written through a handle opened before the rename');
}

async function renameMissing(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  await ctx.createWith(storage, 'b', bytes('b'));
  await ctx.rejects('rename() of a missing file over an existing one', () => storage.rename('missing', 'b'), 'ENOENT');
  await ctx.rejects('rename() of a missing file to a free name', () => storage.rename('missing', 'c'), 'ENOENT');
  assertNames(await storage.list(), ['b'], 'list() after renames of a missing file');
  assertBytes(await ctx.readWhole(storage, 'b'), bytes('b'), 'the target of a refused rename');
}

async function removeFile(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  await ctx.createWith(storage, 'a', bytes('a'));
  await ctx.createWith(storage, 'b', bytes('b'));
  await storage.remove('a');
  assertNames(await storage.list(), ['b'], 'list() after a remove');
  await ctx.rejects('open() of a removed file', () => storage.open('a'), 'ENOENT');
  // replaceFileDurably and the snapshot store tell "already gone" from a failure by this code.
  await ctx.rejects('remove() of a removed file', () => storage.remove('a'), 'ENOENT');
  await ctx.rejects('remove() of a name never created', () => storage.remove('walship.control.tmp'), 'ENOENT');
  await ctx.createWith(storage, 'a', bytes('again'));
  assertBytes(await ctx.readWhole(storage, 'a'), bytes('again'), 'a file created again under a removed name');
}

async function walshipNames(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  for (const name of WALSHIP_NAMES) await ctx.createWith(storage, name, bytes(name));
  assertNames(await storage.list(), WALSHIP_NAMES, 'list() of one file of each kind walship keeps');
  for (const name of WALSHIP_NAMES) assertBytes(await ctx.readWhole(storage, name), bytes(name), `the file "${name}"`);
  await storage.rename(`${SEGMENT}.ready`, `${SEGMENT}.done`);
  for (const name of WALSHIP_NAMES.filter((n) => n.endsWith('.tmp'))) await storage.remove(name);
  const left = WALSHIP_NAMES.filter((n) => !n.endsWith('.tmp') && n !== `${SEGMENT}.ready`);
  assertNames(await storage.list(), left, 'list() after a rename and removes');
  assertBytes(await ctx.readWhole(storage, `${SEGMENT}.done`), bytes(`${SEGMENT}.ready`), 'a marker renamed over another');
}

async function listMany(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const names = Array.from({ length: MANY_FILES }, (_, i) => segmentName(i + 1));
  const queue = [...names];
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      for (let name = queue.shift(); name !== undefined; name = queue.shift()) await ctx.createWith(storage, name, bytes(name));
    }),
  );
  assertNames(await storage.list(), names, `list() of ${MANY_FILES} files`);
  for (const name of names.filter((_, i) => i % 2 === 0)) await storage.remove(name);
  assertNames(await storage.list(), names.filter((_, i) => i % 2 === 1), `list() after removing half of ${MANY_FILES} files`);
}

async function badNames(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  await ctx.createWith(storage, 'ok', bytes('ok'));
  // A name that reached outside the directory would let a caller's typo write anywhere.
  for (const bad of ['a/b', '../escape', 'a\\b', '.', '..', '', 'nul\0byte']) {
    const shown = JSON.stringify(bad);
    await ctx.rejects(`open(${shown}, { create: true })`, () => storage.open(bad, { create: true }), 'EINVAL');
    await ctx.rejects(`rename("ok", ${shown})`, () => storage.rename('ok', bad), 'EINVAL');
    await ctx.rejects(`rename(${shown}, "ok")`, () => storage.rename(bad, 'ok'), 'EINVAL');
    await ctx.rejects(`remove(${shown})`, () => storage.remove(bad), 'EINVAL');
  }
  assertNames(await storage.list(), ['ok'], 'list() after calls with names that are not plain file names');
  assertBytes(await ctx.readWhole(storage, 'ok'), bytes('ok'), 'a file after calls with names that are not plain file names');
}

async function syncs(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  await storage.syncDirectory();
  const content = seededBytes(10, 5000);
  const file = await storage.open('a', { create: true });
  await file.write(content, 0);
  await file.datasync();
  await file.datasync();
  assertBytes(await ctx.readAt(file, 0, content.length), content, 'a file after datasync()');
  await file.close();
  await storage.syncDirectory();
  assertNames(await storage.list(), ['a'], 'list() after syncDirectory()');
  assertBytes(await ctx.readWhole(storage, 'a'), content, 'a file after syncDirectory()');
}

async function lockExclusive(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const first = await storage.lock();
  await ctx.refusedLock(storage, 'a second lock() while the first is held');
  await first.release();
  await first.release();
  const second = await storage.lock();
  await ctx.refusedLock(storage, 'lock() while a lock taken after a release is held');
  // A late second release of the first lock must not free the second.
  await first.release();
  await ctx.refusedLock(storage, 'lock() after the earlier lock was released again');
  await second.release();
  const third = await storage.lock();
  await third.release();
}

async function lockRace(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const outcomes = await Promise.allSettled(Array.from({ length: PARALLEL }, () => storage.lock()));
  const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
  ctx.rethrowSuiteFailures(failures);
  const others = failures.filter((err) => !isWalshipError(err, 'WAL_LOCKED')).map(describeError);
  assert.deepEqual(others, [], 'the lock() calls that lose must reject with a WalshipError of code WAL_LOCKED');
  const winners = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
  assert.equal(winners.length, 1, `exactly one of ${PARALLEL} concurrent lock() calls must succeed, ${winners.length} did`);
  await (winners[0] as StorageLock).release();
  const after = await storage.lock();
  await after.release();
}

async function handlesShareFiles(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const other = await ctx.openAgain();
  const content = seededBytes(11, 3000);
  await ctx.createWith(storage, SEGMENT, content);
  assertNames(await other.list(), [SEGMENT], 'list() through the second handle');
  assertBytes(await ctx.readWhole(other, SEGMENT), content, 'a file written through the first handle, read through the second');
  await other.rename(SEGMENT, `${SEGMENT}.partial`);
  await ctx.createWith(other, 'walship.control', bytes('control'));
  assertNames(await storage.list(), [`${SEGMENT}.partial`, 'walship.control'], 'list() through the first handle after changes through the second');
  assertBytes(await ctx.readWhole(storage, 'walship.control'), bytes('control'), 'a file written through the second handle, read through the first');
}

async function handlesShareLock(ctx: CaseContext): Promise<void> {
  const { storage } = ctx;
  const other = await ctx.openAgain();
  const first = await storage.lock();
  await ctx.refusedLock(other, 'lock() through a second handle while the first holds the lock');
  await first.release();
  const second = await other.lock();
  await ctx.refusedLock(storage, 'lock() through the first handle while the second holds the lock');
  await second.release();
  const again = await storage.lock();
  await again.release();
}

async function durableSegment(ctx: CaseContext): Promise<void> {
  const size = ctx.config.segmentBytes;
  const storage = ctx.storage;
  // As the WAL prepares its segments: zero-filled (a standby's sparse) under a temporary
  // name, datasynced, renamed into place, the directory synced.
  for (const [name, sparse] of [[SEGMENT, false], [NEXT_SEGMENT, true]] as const) {
    const temp = await storage.open(`${name}.tmp`, { create: true });
    await temp.allocate(size, { sparse });
    await temp.datasync();
    await temp.close();
    await storage.rename(`${name}.tmp`, name);
    await storage.syncDirectory();
  }
  const records = seededBytes(12, 10_000);
  const writer = await storage.open(SEGMENT);
  await writer.write(records, 0);
  await writer.datasync();
  const afterFirst = await ctx.crash();
  const when = 'after a power loss';
  await checkSegment(ctx, afterFirst, SEGMENT, size, records, when);
  const empty = await checkSegment(ctx, afterFirst, NEXT_SEGMENT, size, new Uint8Array(0), `${when} (allocated sparse)`);
  assertZeros(empty, `a segment allocated sparse and never written, ${when}`);
  // More WAL without a datasync: whatever of it survives, the datasynced records do.
  const again = await afterFirst.open(SEGMENT);
  await again.write(seededBytes(13, 20_000), records.length);
  await again.write(seededBytes(14, 1000), size - 1000);
  const afterSecond = await ctx.crash();
  await checkSegment(ctx, afterSecond, SEGMENT, size, records, 'after a second power loss, with later writes not datasynced');
}

/** Checks that segment `name` is there, whole, beginning with `records`, and returns the bytes after them. */
async function checkSegment(ctx: CaseContext, storage: Storage, name: string, size: number, records: Uint8Array, when: string): Promise<Uint8Array> {
  const names = await storage.list();
  assert.ok(names.includes(name), `segment ${name}, renamed into place and directory-synced, must exist ${when}; list(): ${names.join(', ') || 'empty'}`);
  assert.ok(!names.includes(`${name}.tmp`), `the temporary name of segment ${name}, renamed and directory-synced, must be gone ${when}`);
  const file = await storage.open(name, { readOnly: true });
  try {
    assert.equal(await file.size(), size, `segment ${name}, allocated and datasynced, must keep its size ${when}`);
    const whole = await ctx.readAt(file, 0, size);
    assertBytes(whole.subarray(0, records.length), records, `the datasynced bytes of segment ${name} ${when}`);
    return whole.subarray(records.length);
  } finally {
    await file.close();
  }
}

async function durableMetadata(ctx: CaseContext): Promise<void> {
  const storage = ctx.storage;
  const kept = seededBytes(15, 2000);
  const moved = seededBytes(16, 3000);
  await ctx.createWith(storage, 'walship.slots', kept, { datasync: true });
  await ctx.createWith(storage, `${SEGMENT}.partial`, moved, { datasync: true });
  await ctx.createWith(storage, `${SEGMENT}.ready`, bytes('x'), { datasync: true });
  await storage.syncDirectory();
  await storage.rename(`${SEGMENT}.partial`, `${SEGMENT}.diverged`);
  await storage.remove(`${SEGMENT}.ready`);
  await ctx.createWith(storage, `${SEGMENT}.done`, new Uint8Array(0));
  await storage.syncDirectory();
  const after = await ctx.crash();
  assertNames(await after.list(), ['walship.slots', `${SEGMENT}.diverged`, `${SEGMENT}.done`], 'list() after a power loss: every create, rename and remove was directory-synced');
  assertBytes(await ctx.readWhole(after, 'walship.slots'), kept, 'a datasynced file after a power loss');
  assertBytes(await ctx.readWhole(after, `${SEGMENT}.diverged`), moved, 'a datasynced file renamed and directory-synced, after a power loss');
  assertBytes(await ctx.readWhole(after, `${SEGMENT}.done`), new Uint8Array(0), 'an empty file created and directory-synced, after a power loss');
}

async function durableReplace(ctx: CaseContext): Promise<void> {
  const name = 'walship.control';
  const old = seededBytes(17, 700);
  const fresh = seededBytes(18, 900);
  await ctx.createWith(ctx.storage, name, old, { datasync: true });
  await ctx.storage.syncDirectory();
  // replaceFileDurably without its last step: the rename is not made durable yet.
  await ctx.replace(ctx.storage, name, fresh);
  const after = await ctx.crash();
  const found = await ctx.readWhole(after, name).catch((err: unknown) => {
    ctx.rethrowSuiteFailures([err]);
    assert.fail(`after a power loss in a replace by rename, "${name}" must hold the old content or the new, but it cannot be read: ${describeError(err)}`);
  });
  const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
  assert.ok(same(found, old) || same(found, fresh), `after a power loss in a replace by rename, "${name}" must hold the old ${old.length} bytes or the new ${fresh.length}, got ${found.length} bytes of neither`);
  // Then the whole replace, directory sync included: the new content is there for good.
  const newest = seededBytes(19, 800);
  await ctx.replace(after, name, newest);
  await after.syncDirectory();
  const later = await ctx.crash();
  assertBytes(await ctx.readWhole(later, name), newest, `"${name}" after a replace by rename and syncDirectory, and a power loss`);
}

async function durableRewrite(ctx: CaseContext): Promise<void> {
  const storage = ctx.storage;
  const synced = seededBytes(20, 6000);
  await ctx.createWith(storage, SEGMENT, synced, { datasync: true });
  await storage.syncDirectory();
  // As the WAL writer does: the block holding the end of the last write is written again, its
  // earlier bytes from memory, followed by new bytes.
  const file = await storage.open(SEGMENT);
  await file.write(Uint8Array.from([...synced.subarray(4096), ...seededBytes(21, 3000)]), 4096);
  const after = await ctx.crash();
  const reopened = await after.open(SEGMENT, { readOnly: true });
  assertBytes(await ctx.readAt(reopened, 0, synced.length), synced, 'datasynced bytes rewritten with the same bytes (not datasynced), after a power loss');
  await reopened.close();
}

async function lockAfterCrash(ctx: CaseContext): Promise<void> {
  await ctx.createWith(ctx.storage, 'walship.control', bytes('c'), { datasync: true });
  await ctx.storage.syncDirectory();
  await ctx.storage.lock();
  const after = await ctx.crash();
  const lock = await after.lock();
  await ctx.refusedLock(after, 'a second lock() after a power loss');
  await lock.release();
}

async function losesWrites(ctx: CaseContext): Promise<void> {
  const storage = ctx.storage;
  const synced = seededBytes(22, 3000);
  await ctx.createWith(storage, SEGMENT, synced, { datasync: true });
  await storage.syncDirectory();
  const file = await storage.open(SEGMENT);
  await file.write(seededBytes(23, 2000), synced.length);
  await file.write(bytes('overwritten'), 100);
  const after = await ctx.crash();
  assertBytes(await ctx.readWhole(after, SEGMENT), synced, 'a file after a power loss that loses writes not datasynced (capabilities.crashLosesUnsyncedWrites)');
}

async function losesMetadata(ctx: CaseContext): Promise<void> {
  const storage = ctx.storage;
  await ctx.createWith(storage, 'a', bytes('a'), { datasync: true });
  await ctx.createWith(storage, 'b', bytes('b'), { datasync: true });
  await storage.syncDirectory();
  await ctx.createWith(storage, 'c', bytes('c'), { datasync: true });
  await storage.rename('a', 'd');
  await storage.remove('b');
  const after = await ctx.crash();
  assertNames(await after.list(), ['a', 'b'], 'list() after a power loss that undoes creates, renames and removes not directory-synced (capabilities.crashLosesUnsyncedMetadata)');
}

// ---------------------------------------------------------------------------------------
// Per-case context

/** Marks the suite's own failures (a deadline, a call that threw instead of rejecting), which no expected rejection may absorb. */
const SUITE_FAILURE = Symbol('storageConformance failure');

function suiteFailure(message: string): Error {
  return Object.assign(new assert.AssertionError({ message }), { [SUITE_FAILURE]: true });
}

function isSuiteFailure(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[SUITE_FAILURE] === true;
}

/**
 * One case's storages, seen through wrappers that put a deadline on every call, fail a call
 * that throws instead of returning a promise, and keep the files and locks they hand out so
 * that they are closed and released when the case ends.
 */
class CaseContext {
  /** The storage as `createStorage` made it, for `cleanup`. */
  readonly created: Storage;
  /** The storage the case works on: the created one, or what the last {@link crash} left. */
  storage: Storage;
  #current: Storage;
  readonly #files = new Set<StorageFile>();
  readonly #locks = new Set<StorageLock>();

  constructor(
    created: Storage,
    readonly harness: StorageConformanceHarness,
    readonly config: Config,
  ) {
    this.created = created;
    this.#current = created;
    this.storage = this.watch(created, '');
  }

  /** The promise `start` returns, within the deadline; a synchronous throw or a non-promise is a failure. */
  call<T>(what: string, start: () => Promise<T>): Promise<T> {
    let result: unknown;
    try {
      result = start();
    } catch (err) {
      return Promise.reject(suiteFailure(`${what} threw synchronously (${describeError(err)}); it must return a rejected promise instead`));
    }
    if (typeof (result as { then?: unknown } | null)?.then !== 'function') {
      return Promise.reject(suiteFailure(`${what} must return a promise, returned ${typeof result}`));
    }
    const settled = Promise.resolve(result as Promise<T>).then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    return handled(
      within(settled, this.config.timeoutMs, what).then(
        (outcome) => {
          if (!outcome.ok) throw outcome.error;
          return outcome.value;
        },
        (err: unknown) => {
          throw suiteFailure((err as Error).message);
        },
      ),
    );
  }

  /** `storage` behind a wrapper; `label` names it in failures ('' for the case's main storage). */
  watch(storage: Storage, label: string): Storage {
    const at = label === '' ? '' : `${label}: `;
    const call = <T>(what: string, start: () => Promise<T>): Promise<T> => this.call(`${at}${what}`, start);
    return {
      get description() {
        return storage.description;
      },
      prepare: () => call('prepare()', () => storage.prepare()),
      list: () =>
        call('list()', () => storage.list()).then((names) => {
          assert.ok(Array.isArray(names) && names.every((n) => typeof n === 'string'), `${at}list() must resolve with an array of names`);
          return names;
        }),
      open: async (name, options) => {
        const file = await call(`open(${JSON.stringify(name)}${options === undefined ? '' : `, ${JSON.stringify(options)}`})`, () => storage.open(name, options));
        this.#files.add(file);
        return this.watchFile(file, at);
      },
      rename: (from, to) => call(`rename(${JSON.stringify(from)}, ${JSON.stringify(to)})`, () => storage.rename(from, to)),
      remove: (name) => call(`remove(${JSON.stringify(name)})`, () => storage.remove(name)),
      syncDirectory: () => call('syncDirectory()', () => storage.syncDirectory()),
      lock: async () => {
        const lock = await call('lock()', () => storage.lock());
        this.#locks.add(lock);
        return { release: () => call('release() of a lock', () => lock.release()) };
      },
    };
  }

  watchFile(file: StorageFile, at: string): StorageFile {
    const call = <T>(what: string, start: () => Promise<T>): Promise<T> => this.call(`${at}${what} on "${file.name}"`, start);
    const watched: StorageFile = {
      name: file.name,
      read: (buffer, offset, length, position) => call(`read(${length} bytes at ${position})`, () => file.read(buffer, offset, length, position)),
      write: (data, position) => call(`write(${data.length} bytes at ${position})`, () => file.write(data, position)),
      datasync: () => call('datasync()', () => file.datasync()),
      allocate: (size, options) => call(`allocate(${size}${options?.sparse === true ? ', sparse' : ''})`, () => file.allocate(size, options)),
      size: () => call('size()', () => file.size()),
      close: () => call('close()', () => file.close()),
    };
    if (typeof file.writev === 'function') {
      const writev = file.writev.bind(file);
      watched.writev = (buffers, position) => call(`writev(${buffers.length} buffers at ${position})`, () => writev(buffers, position));
    }
    return watched;
  }

  /** A power loss of the current storage (through the harness); the case goes on with what survived, prepared. */
  async crash(): Promise<Storage> {
    const crash = this.harness.crash as NonNullable<StorageConformanceHarness['crash']>;
    const current = this.#current;
    const survivor = await this.call('crash()', () => Promise.resolve().then(() => crash.call(this.harness, current)));
    assert.ok(isStorage(survivor), 'crash() must return the storage found after the power loss');
    this.#current = survivor;
    this.storage = this.watch(survivor, 'after the power loss');
    await this.storage.prepare();
    return this.storage;
  }

  /** A second handle on the case's directory (through the harness), prepared. */
  async openAgain(): Promise<Storage> {
    const openAgain = this.harness.openAgain as NonNullable<StorageConformanceHarness['openAgain']>;
    const other = await this.call('openAgain()', () => Promise.resolve().then(() => openAgain.call(this.harness, this.created)));
    assert.ok(isStorage(other), 'openAgain() must return a storage');
    const watched = this.watch(other, 'the second handle');
    await watched.prepare();
    return watched;
  }

  /** The rejection of the call `start` makes; fails if it resolves, or (with `code`) rejects with another code. */
  async rejects(what: string, start: () => Promise<unknown>, code?: string): Promise<unknown> {
    try {
      await start();
    } catch (err) {
      if (isSuiteFailure(err)) throw err;
      if (code !== undefined && errnoCode(err) !== code) assert.fail(`${what} must reject with code ${code}, got ${describeError(err)}`);
      return err;
    }
    assert.fail(`${what} must reject${code === undefined ? '' : ` with code ${code}`}, but it resolved`);
  }

  /** Fails unless `lock()` on `storage` rejects with a `WAL_LOCKED` WalshipError. */
  async refusedLock(storage: Storage, what: string): Promise<void> {
    const err = await this.rejects(what, () => storage.lock());
    assert.ok(isWalshipError(err, 'WAL_LOCKED'), `${what} must reject with a WalshipError of code WAL_LOCKED, got ${describeError(err)}`);
  }

  /** Throws the first of `errors` that is the suite's own failure (a deadline, a synchronous throw). */
  rethrowSuiteFailures(errors: readonly unknown[]): void {
    const failure = errors.find(isSuiteFailure);
    if (failure !== undefined) throw failure;
  }

  /** Creates `name` holding `content` (an exclusive create, as walship's temporary files are made), then closes it. */
  async createWith(storage: Storage, name: string, content: Uint8Array, options: { datasync?: boolean } = {}): Promise<void> {
    const file = await storage.open(name, { create: true, exclusive: true });
    if (content.length > 0) await file.write(content, 0);
    if (options.datasync === true) await file.datasync();
    await file.close();
  }

  /** replaceFileDurably (src/storage/replace-file.ts) up to the rename, without the directory sync. */
  async replace(storage: Storage, name: string, content: Uint8Array): Promise<void> {
    const temp = `${name}.tmp`;
    await storage.remove(temp).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    await this.createWith(storage, temp, content, { datasync: true });
    await storage.rename(temp, name);
  }

  /** Reads `length` bytes at `position`, returning only what was read. */
  async readAt(file: StorageFile, position: number, length: number): Promise<Uint8Array> {
    const buffer = new Uint8Array(length);
    const count = await file.read(buffer, 0, length, position);
    assert.ok(Number.isSafeInteger(count) && count >= 0 && count <= length, `read() must resolve with the count of bytes read (0 to ${length}), got ${String(count)}`);
    return buffer.subarray(0, count);
  }

  /** A whole file's bytes, through a read-only handle. */
  async readWhole(storage: Storage, name: string): Promise<Uint8Array> {
    const file = await storage.open(name, { readOnly: true });
    try {
      return await this.readAt(file, 0, await file.size());
    } finally {
      await file.close();
    }
  }

  /**
   * Closes every file and releases every lock the case left (their failures are ignored: a
   * crashed storage refuses them), then calls the harness's cleanup. Returns its failure.
   */
  async dispose(): Promise<unknown> {
    const settle = (what: string, promise: () => Promise<void>): Promise<unknown> => this.call(what, promise).then(() => undefined, (err: unknown) => err);
    await Promise.all([...this.#files].map((file) => settle('closing a file the case left open', () => file.close())));
    await Promise.all([...this.#locks].map((lock) => settle('releasing a lock the case held', () => lock.release())));
    const cleanup = this.harness.cleanup;
    if (cleanup === undefined) return undefined;
    return within(Promise.resolve().then(() => cleanup.call(this.harness, this.created)), this.config.timeoutMs, 'cleanup()').then(
      () => undefined,
      (err: unknown) => err ?? new Error('cleanup() rejected'),
    );
  }
}

// ---------------------------------------------------------------------------------------
// Helpers

const encoder = new TextEncoder();

function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Segment `segment`'s file name on timeline 1 with 16 MiB segments. */
function segmentName(segment: number): string {
  const hex = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(1)}${hex(Math.floor(segment / 0x100))}${hex(segment % 0x100)}`;
}

function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  if (a.equals(expected)) return;
  const length = Math.min(a.length, expected.length);
  let first = 0;
  while (first < length && a[first] === expected[first]) first++;
  const where = first < length ? `first difference at byte ${first}` : 'the shorter one is a prefix of the other';
  assert.fail(`${what}: got ${a.length} bytes, expected ${expected.length} (${where})`);
}

function assertZeros(actual: Uint8Array, what: string): void {
  const at = actual.findIndex((b) => b !== 0);
  if (at !== -1) assert.fail(`${what} must read as zeros, but byte ${at} of ${actual.length} is ${actual[at]}`);
}

function assertNames(listed: readonly string[], expected: readonly string[], what: string): void {
  const duplicates = listed.filter((name, i) => listed.indexOf(name) !== i);
  assert.deepEqual(duplicates, [], `${what} must name each file once`);
  const missing = expected.filter((name) => !listed.includes(name));
  const extra = listed.filter((name) => !expected.includes(name));
  if (missing.length > 0 || extra.length > 0) {
    const show = (names: string[]): string => (names.length > 5 ? `${names.slice(0, 5).join(', ')} and ${names.length - 5} more` : names.join(', ') || 'none');
    assert.fail(`${what} must name exactly the ${expected.length} files there are; missing: ${show(missing)}; not expected: ${show(extra)}`);
  }
}

function checkHarness(harness: StorageConformanceHarness): void {
  const fail = (problem: string): never => {
    throw new WalshipError('INVALID_ARGUMENT', `storageConformance harness: ${problem}`);
  };
  if (typeof harness !== 'object' || harness === null) fail('must be an object');
  if (typeof harness.createStorage !== 'function') fail('createStorage must be a function');
  for (const key of ['openAgain', 'crash', 'cleanup'] as const) {
    if (harness[key] !== undefined && typeof harness[key] !== 'function') fail(`${key} must be a function`);
  }
  if (harness.name !== undefined && typeof harness.name !== 'string') fail('name must be a string');
  const { timeoutMs, segmentBytes } = harness;
  if (timeoutMs !== undefined && !(Number.isSafeInteger(timeoutMs) && timeoutMs > 0)) fail(`timeoutMs must be a positive integer, got ${String(timeoutMs)}`);
  if (segmentBytes !== undefined && !(Number.isSafeInteger(segmentBytes) && segmentBytes >= MIN_SEGMENT_BYTES)) {
    fail(`segmentBytes must be an integer of at least ${MIN_SEGMENT_BYTES}, got ${String(segmentBytes)}`);
  }
  const capabilities: unknown = harness.capabilities === undefined ? {} : harness.capabilities;
  if (typeof capabilities !== 'object' || capabilities === null) fail('capabilities must be an object');
  const allowed = Object.keys(STORAGE_CONFORMANCE_DEFAULTS.capabilities);
  for (const [key, value] of Object.entries(capabilities as object)) {
    if (!allowed.includes(key)) fail(`capabilities has an unknown key "${key}" (allowed: ${allowed.join(', ')})`);
    if (typeof value !== 'boolean') fail(`capabilities.${key} must be a boolean`);
  }
}
