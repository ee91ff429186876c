/**
 * Tests of the storage conformance suite itself: it must pass a faithful storage and fail
 * each deliberately broken one on the cases that cover its defect. The suite runs against
 * MemoryStorage and NodeStorage in their own test files.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError } from '../../src/errors.js';
import { MemoryStorage } from '../../src/storage/memory-storage.js';
import type { Storage, StorageFile } from '../../src/storage/storage.js';
import type { ConformanceAdapters } from '../../src/testing/conformance-runner.js';
import { STORAGE_CONFORMANCE_DEFAULTS, storageConformance, type StorageConformanceHarness } from '../../src/testing/storage-conformance.js';
import {
  BrokenStorage,
  bufferedUntilSync,
  datasyncDoingNothing,
  datasyncHanging,
  ignoringByteOffset,
  ignoringExclusive,
  keepingBuffer,
  lockLettingTwoIn,
  lockPerHandle,
  readModifyWrite,
  readingShort,
  removeWithoutCode,
  renameNotReplacing,
  renameRemovingFirst,
  syncDirectoryDoingNothing,
  throwingSynchronously,
  truncatingCreate,
  workingAfterClose,
} from './broken-storages.js';
import { describeFailures, runRecorded, type Outcome } from '../helpers/conformance-outcome.js';

const CASES = {
  empty: 'has a description and starts empty; prepare() again changes nothing',
  openMissing: 'opening a missing file without create rejects ENOENT and creates nothing',
  create: 'create makes an empty file; opening an existing one (create or not) keeps its bytes and can write',
  exclusive: 'an exclusive create of an existing file rejects EEXIST and keeps the file',
  exclusiveRace: 'of concurrent exclusive creates of one name exactly one succeeds',
  readWrite: 'writes and reads back at positions, overwriting in place, and size() follows',
  views: 'reads into the buffer at the given offset, and reads and writes through views into larger buffers',
  writeCopies: "a write does not keep the caller's buffer",
  hole: 'a write past the end leaves a hole that reads as zeros',
  shortAtEnd: 'a read is short only at the end of the file, and reads 0 bytes past it',
  segment: 'a segment-sized write reads back whole in one read',
  shared: 'another handle on the file sees written bytes and the size at once, before any datasync',
  concurrent: 'concurrent writes at different positions of one file and to other files all land',
  writev: 'writev writes the buffers back to back at the position',
  allocate: 'allocate extends with zeros to the size, never shrinks, and keeps written bytes',
  sparse: 'a sparse allocate reads back as zeros too, and keeps written bytes',
  readOnly: 'a read-only file reads, and rejects writes (EBADF, bytesWritten 0) and allocations, changing nothing',
  closed: 'close is idempotent; a closed file rejects reads, writes, datasync, size and allocate with EBADF',
  rename: 'rename moves a file, replacing the target',
  renameOpen: 'an open file keeps working after a rename',
  renameMissing: 'rename of a missing file rejects ENOENT and changes nothing',
  remove: 'remove deletes a file; remove of a missing one rejects ENOENT',
  names: 'list names every kind of file name walship uses, each once',
  many: 'list names every one of 300 files',
  badNames: 'names that are not plain file names reject EINVAL and create nothing',
  syncs: 'datasync and syncDirectory resolve and change no bytes',
  lock: 'lock is exclusive (WAL_LOCKED) until released; release is idempotent and never frees a later lock',
  lockRace: 'of concurrent lock() calls exactly one succeeds',
  handlesFiles: 'another handle on the directory sees the same files',
  handlesLock: 'a lock through another handle on the directory is refused until released',
  durableSegment: 'an allocated, datasynced, renamed and directory-synced segment survives a power loss whole, with its datasynced bytes',
  durableMetadata: 'a create, a rename and a remove followed by syncDirectory survive a power loss',
  durableReplace: 'a replace by rename leaves the old file or the new one after a power loss, never a mix',
  durableRewrite: 'rewriting datasynced bytes with the same bytes keeps them through a power loss',
  lockAfterCrash: 'after a power loss the directory can be locked again',
  losesWrites: 'a power loss loses the bytes not datasynced',
  losesMetadata: 'a power loss undoes the creates, renames and removes not followed by syncDirectory',
} as const;
type CaseKey = keyof typeof CASES;
const ALL_CASES = Object.values(CASES);

/**
 * A harness over broken storages: 1 MiB segments, a 2 s deadline (calls in memory take
 * microseconds), a second handle, and the broken storages' deterministic power loss, which
 * loses every write not datasynced.
 */
function harness(make: () => BrokenStorage): StorageConformanceHarness {
  return {
    name: 'self-test',
    createStorage: make,
    openAgain: (storage) => (storage as BrokenStorage).openAgain(),
    crash: (storage) => (storage as BrokenStorage).crash(),
    segmentBytes: 1024 * 1024,
    timeoutMs: 2000,
    capabilities: { crashLosesUnsyncedWrites: true },
  };
}

/** Runs the suite with adapters that record each case's outcome instead of registering tests. */
function runSuite(options: StorageConformanceHarness): Promise<Outcome> {
  return runRecorded((adapters) => storageConformance(options, adapters));
}

const CRASH_CASES: readonly CaseKey[] = ['durableSegment', 'durableMetadata', 'durableReplace', 'durableRewrite', 'lockAfterCrash', 'losesWrites'];

const BROKEN: ReadonlyArray<{ make: () => BrokenStorage; defect: string; fails: readonly CaseKey[] }> = [
  { make: renameNotReplacing, defect: 'refuses to rename over an existing file', fails: ['rename', 'names', 'durableReplace'] },
  { make: renameRemovingFirst, defect: 'renames in two steps (remove the target, then move)', fails: ['durableReplace'] },
  { make: datasyncDoingNothing, defect: 'has a datasync that does nothing', fails: ['durableSegment', 'durableMetadata', 'durableReplace', 'durableRewrite', 'losesWrites'] },
  { make: syncDirectoryDoingNothing, defect: 'has a syncDirectory that does nothing', fails: ['durableSegment', 'durableMetadata', 'durableReplace'] },
  { make: lockLettingTwoIn, defect: 'has a lock that lets two in', fails: ['lock', 'lockRace', 'handlesLock', 'lockAfterCrash'] },
  { make: lockPerHandle, defect: 'keeps its lock in the handle, where another handle cannot see it', fails: ['handlesLock'] },
  { make: readingShort, defect: 'returns short reads without reaching the end', fails: ['segment', 'shared', 'writev', 'allocate', 'sparse'] },
  { make: keepingBuffer, defect: "keeps the caller's buffer after a write resolves", fails: ['writeCopies'] },
  { make: ignoringByteOffset, defect: "writes from the start of a view's ArrayBuffer", fails: ['views', 'writev'] },
  { make: throwingSynchronously, defect: 'throws synchronously instead of rejecting', fails: ['openMissing', 'rename', 'remove'] },
  { make: removeWithoutCode, defect: 'rejects a remove of a missing file without ENOENT', fails: ['remove', 'durableReplace'] },
  { make: truncatingCreate, defect: 'empties an existing file on open with create', fails: ['create'] },
  { make: ignoringExclusive, defect: 'ignores exclusive', fails: ['exclusive', 'exclusiveRace'] },
  { make: workingAfterClose, defect: 'goes on working after close', fails: ['closed'] },
  { make: readModifyWrite, defect: 'writes by rewriting the whole file', fails: ['concurrent'] },
  { make: bufferedUntilSync, defect: 'hides writes from other handles until datasync', fails: ['shared'] },
  {
    make: datasyncHanging,
    defect: 'has a datasync that never settles',
    fails: ['syncs', 'renameOpen', 'durableSegment', 'durableMetadata', 'durableReplace', 'durableRewrite', 'lockAfterCrash', 'losesWrites'],
  },
];

// The runs wait out deadlines of the broken storages, so they too run side by side.
describe('storageConformance against known storages', { concurrency: true }, () => {
  it('passes the faithful base of the broken storages on every case', async () => {
    const outcome = await runSuite(harness(() => new BrokenStorage('faithful')));
    assert.deepEqual([...outcome.failed.keys()], [], `failures:${describeFailures(outcome)}`);
    assert.deepEqual(outcome.passed, ALL_CASES.filter((name) => name !== CASES.losesMetadata));
    assert.deepEqual(outcome.skipped, [`[skipped: capabilities.crashLosesUnsyncedMetadata is false] ${CASES.losesMetadata}`]);
  });

  for (const { make, defect, fails } of BROKEN) {
    it(`fails a storage that ${defect}, on exactly the cases that cover it`, async () => {
      const outcome = await runSuite(harness(make));
      const expected = ALL_CASES.filter((name) => fails.some((key) => CASES[key] === name));
      assert.deepEqual([...outcome.failed.keys()], expected, `failures:${describeFailures(outcome)}`);
    });
  }
});

describe('storageConformance registration', () => {
  /** Registers the suite with the given `it`. */
  function register(options: Partial<StorageConformanceHarness>, it: NonNullable<ConformanceAdapters['it']>): void {
    const suites: string[] = [];
    storageConformance({ createStorage: () => new MemoryStorage(), ...options }, { describe: (name, fn) => (suites.push(name), fn()), it });
    assert.deepEqual(suites, [`storage conformance: ${options.name ?? 'storage'}`]);
  }

  it('without openAgain(), crash() or a capability, registers the cases it cannot run under a name saying why, with an empty body', async () => {
    const registered = new Map<string, () => unknown>();
    register({ name: 'x', capabilities: { writev: false } }, (name, fn) => void registered.set(name, fn));
    assert.equal(registered.size, ALL_CASES.length);
    const skipped = [...registered.keys()].filter((name) => name.startsWith('[skipped: '));
    const noCrash = (key: CaseKey): string => `[skipped: the harness has no crash()] ${CASES[key]}`;
    assert.deepEqual(skipped, [
      `[skipped: capabilities.writev is false] ${CASES.writev}`,
      `[skipped: the harness has no openAgain()] ${CASES.handlesFiles}`,
      `[skipped: the harness has no openAgain()] ${CASES.handlesLock}`,
      ...[...CRASH_CASES, 'losesMetadata' as const].map(noCrash),
    ]);
    for (const name of skipped) await registered.get(name)?.();
  });

  it('with a skip function on the adapter, registers such cases through it', () => {
    const run: string[] = [];
    const skipped: string[] = [];
    const it = Object.assign((name: string) => void run.push(name), { skip: (name: string) => void skipped.push(name) });
    register({ crash: (storage) => (storage as MemoryStorage).crash(), capabilities: { writev: false } }, it);
    assert.deepEqual(skipped, [
      `[skipped: capabilities.writev is false] ${CASES.writev}`,
      `[skipped: the harness has no openAgain()] ${CASES.handlesFiles}`,
      `[skipped: the harness has no openAgain()] ${CASES.handlesLock}`,
      `[skipped: capabilities.crashLosesUnsyncedWrites is false] ${CASES.losesWrites}`,
      `[skipped: capabilities.crashLosesUnsyncedMetadata is false] ${CASES.losesMetadata}`,
    ]);
    assert.equal(run.length + skipped.length, ALL_CASES.length);
  });

  it('fails a case, naming the call, when a call passes its deadline', async () => {
    const outcome = await runSuite({ ...harness(datasyncHanging), timeoutMs: 50 });
    assert.match(outcome.failed.get(CASES.syncs) ?? '', /timed out after 50 ms waiting for datasync\(\) on "a"/);
  });

  it('calls cleanup() after every case with the storage it made, passed or failed, with its files closed and its locks released', async () => {
    // Files still open per storage, by label (handles from openAgain() and crash() keep it).
    const openFiles = new Map<string, Set<StorageFile>>();
    const labels = new WeakMap<StorageFile, string>();
    const created: BrokenStorage[] = [];
    const cleaned: Array<{ storage: Storage; open: number; lockFree: boolean }> = [];
    const outcome = await runSuite({
      ...harness(() => {
        const label = `counting-${created.length}`;
        openFiles.set(label, new Set());
        // Sizes one byte off and a refused lock without WAL_LOCKED: cases fail holding files and locks.
        const storage = new BrokenStorage(label, {
          async open(s, name, options) {
            const file = await s.faithfulOpen(name, options);
            labels.set(file, s.label);
            openFiles.get(s.label)?.add(file);
            return file;
          },
          close(file) {
            openFiles.get(labels.get(file) ?? '')?.delete(file);
            return file.inner.close();
          },
          size: async (file) => (await file.inner.size()) + 1,
          async lock(s) {
            try {
              return await s.inner.lock();
            } catch {
              throw new Error('busy');
            }
          },
        });
        created.push(storage);
        return storage;
      }),
      cleanup: async (storage) => {
        const { inner, label } = storage as BrokenStorage;
        const lockFree = inner.crashed || (await inner.lock().then((lock) => (void lock.release(), true), () => false));
        cleaned.push({ storage, open: openFiles.get(label)?.size ?? -1, lockFree });
      },
    });
    assert.ok(outcome.failed.has(CASES.lock) && outcome.failed.has(CASES.readOnly), `the cases fail:${describeFailures(outcome)}`);
    assert.equal(created.length, ALL_CASES.length - 1);
    assert.deepEqual(new Set(cleaned.map((c) => c.storage)), new Set(created));
    assert.deepEqual(cleaned.filter((c) => c.open !== 0 || !c.lockFree).map((c) => (c.storage as BrokenStorage).label), [], 'storages cleaned up with files open or the lock held');
  });

  it('reports a failing cleanup() of a case that passed', async () => {
    const outcome = await runSuite({
      ...harness(() => new BrokenStorage('faithful')),
      cleanup: () => {
        throw new Error('could not remove the directory');
      },
    });
    assert.equal(outcome.failed.size, ALL_CASES.length - 1);
    assert.ok([...outcome.failed.values()].every((message) => message === 'could not remove the directory'), describeFailures(outcome));
  });

  it('defaults to 16 MiB segments, a 10 s deadline and every capability but the power losses that always lose', () => {
    assert.deepEqual(STORAGE_CONFORMANCE_DEFAULTS, {
      timeoutMs: 10_000,
      segmentBytes: 16 * 1024 * 1024,
      capabilities: { writev: true, crashLosesUnsyncedWrites: false, crashLosesUnsyncedMetadata: false },
    });
    assert.ok(Object.isFrozen(STORAGE_CONFORMANCE_DEFAULTS) && Object.isFrozen(STORAGE_CONFORMANCE_DEFAULTS.capabilities), 'the defaults are frozen');
  });

  it('rejects a malformed harness or adapters with INVALID_ARGUMENT', () => {
    const noop = (): void => {};
    const make = () => new MemoryStorage();
    const bad: unknown[] = [
      null,
      {},
      { createStorage: make, segmentBytes: 1024 },
      { createStorage: make, segmentBytes: 65_535 },
      { createStorage: make, timeoutMs: 0 },
      { createStorage: make, capabilities: { writeV: false } },
      { createStorage: make, capabilities: { writev: 'no' } },
      { createStorage: make, capabilities: null },
      { createStorage: make, openAgain: 'b' },
      { createStorage: make, crash: {} },
      { createStorage: make, cleanup: 1 },
      { createStorage: make, name: 3 },
    ];
    for (const value of bad) {
      assert.throws(
        () => storageConformance(value as StorageConformanceHarness, { describe: noop, it: noop }),
        (err) => isWalshipError(err, 'INVALID_ARGUMENT'),
        JSON.stringify(value),
      );
    }
    assert.throws(() => storageConformance({ createStorage: make }, { describe: noop, it: 'x' as never }), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });
});
