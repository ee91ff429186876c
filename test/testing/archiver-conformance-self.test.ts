/**
 * Tests of the archiver conformance suite itself: it must pass correct archivers and fail
 * each deliberately broken one on the cases that cover its defect.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Archiver } from '../../src/archive/archiver.js';
import { isWalshipError } from '../../src/errors.js';
import { archiverConformance, type ArchiverConformanceHarness } from '../../src/testing/archiver-conformance.js';
import type { ConformanceAdapters } from '../../src/testing/conformance-runner.js';
import { MemoryArchive } from '../../src/testing/memory-archive.js';
import {
  BrokenArchiver,
  forgetful,
  hangingOnAbsent,
  ignoringAbort,
  ignoringPrefix,
  keepingBuffer,
  lastWriterWins,
  overwriting,
  sharingStored,
  throwingOnAbsent,
  truncating,
  visibleLater,
} from './broken-archivers.js';
import { describeFailures, runRecorded, type Outcome } from '../helpers/conformance-outcome.js';

const CASES = {
  empty: 'round-trips an empty file',
  oneByte: 'round-trips a one-byte file',
  segment: 'round-trips a segment-sized file byte for byte',
  absent: 'a get of an absent name resolves null promptly',
  identical: 'a put of identical content under an existing name succeeds',
  conflict: 'a put of different content under an existing name rejects ARCHIVE_CONFLICT and changes nothing',
  putCopies: "a put does not keep the caller's buffer",
  getCopies: 'a get returns bytes the caller may change without changing the archive',
  list: 'list returns exactly the stored names, with and without a prefix',
  many: 'list returns every one of 300 files',
  raceIdentical: 'concurrent puts of identical content under one name all succeed',
  raceDifferent: "concurrent puts of different content under one name: exactly one succeeds, the rest ARCHIVE_CONFLICT, the winner's bytes stay",
  handles: 'what one handle puts, another handle on the same archive gets, lists and conflicts with',
  remove: 'remove deletes a file, succeeds on a missing one, and frees the name',
  aborted: 'calls with an aborted signal reject; the put leaves no file or the whole file',
} as const;
type CaseKey = keyof typeof CASES;
const ALL_CASES = Object.values(CASES);

/** A harness small enough for fast runs: 1 MiB segments, a 2 s deadline (calls in memory take microseconds). */
function harness(make: () => Archiver & { openAgain(): Archiver }): ArchiverConformanceHarness {
  return {
    name: 'self-test',
    createArchiver: make,
    openAgain: (archiver) => (archiver as ReturnType<typeof make>).openAgain(),
    segmentBytes: 1024 * 1024,
    timeoutMs: 2000,
  };
}

/** Runs the suite with adapters that record each case's outcome instead of registering tests. */
function runSuite(options: ArchiverConformanceHarness): Promise<Outcome> {
  return runRecorded((adapters) => archiverConformance(options, adapters));
}

const BROKEN: ReadonlyArray<{ make: () => BrokenArchiver; defect: string; fails: readonly CaseKey[] }> = [
  { make: overwriting, defect: 'overwrites a file on conflict', fails: ['conflict', 'raceDifferent', 'handles'] },
  {
    make: forgetful,
    defect: 'returns null for every get',
    fails: ['empty', 'oneByte', 'segment', 'identical', 'conflict', 'putCopies', 'getCopies', 'raceIdentical', 'raceDifferent', 'handles', 'remove'],
  },
  { make: throwingOnAbsent, defect: 'rejects a get of an absent name', fails: ['absent', 'remove', 'aborted'] },
  { make: hangingOnAbsent, defect: 'never answers a get of an absent name', fails: ['absent', 'remove', 'aborted'] },
  { make: ignoringPrefix, defect: 'ignores the prefix of list()', fails: ['list', 'many'] },
  { make: keepingBuffer, defect: "keeps the caller's buffer", fails: ['putCopies'] },
  { make: sharingStored, defect: 'returns its stored buffer from get()', fails: ['getCopies'] },
  { make: truncating, defect: 'returns files cut at 64 KiB', fails: ['segment', 'raceIdentical', 'raceDifferent'] },
  { make: lastWriterWins, defect: 'lets the last of racing writers win', fails: ['raceDifferent'] },
  {
    make: visibleLater,
    defect: 'resolves a put before its file is visible',
    fails: ['empty', 'oneByte', 'segment', 'identical', 'conflict', 'putCopies', 'getCopies', 'list', 'many', 'raceIdentical', 'raceDifferent', 'handles', 'remove'],
  },
  { make: ignoringAbort, defect: 'ignores abort signals', fails: ['aborted'] },
];

// The runs wait out deadlines of the broken archivers, so they too run side by side.
describe('archiverConformance against known archivers', { concurrency: true }, () => {
  it('passes MemoryArchive on every case', async () => {
    const outcome = await runSuite(harness(() => new MemoryArchive()));
    assert.deepEqual([...outcome.failed.keys()], [], `failures:${describeFailures(outcome)}`);
    assert.deepEqual(outcome.passed, ALL_CASES);
  });

  it('passes the faithful base of the broken archivers', async () => {
    const outcome = await runSuite(harness(() => new BrokenArchiver('faithful')));
    assert.deepEqual([...outcome.failed.keys()], [], `failures:${describeFailures(outcome)}`);
    assert.deepEqual(outcome.passed, ALL_CASES);
  });

  for (const { make, defect, fails } of BROKEN) {
    it(`fails an archiver that ${defect}, on exactly the cases that cover it`, async () => {
      const outcome = await runSuite(harness(make));
      const expected = fails.map((key) => CASES[key]);
      assert.deepEqual([...outcome.failed.keys()], expected, `failures:${describeFailures(outcome)}`);
      assert.deepEqual(outcome.passed, ALL_CASES.filter((name) => !expected.includes(name as never)));
    });
  }
});

describe('archiverConformance registration', () => {
  /** Registers the suite with the given `it`. */
  function register(options: Partial<ArchiverConformanceHarness>, it: NonNullable<ConformanceAdapters['it']>): void {
    const suites: string[] = [];
    archiverConformance({ createArchiver: () => new MemoryArchive(), ...options }, { describe: (name, fn) => (suites.push(name), fn()), it });
    assert.deepEqual(suites, [`archiver conformance: ${options.name ?? 'archiver'}`]);
  }

  it('without openAgain() or a capability, registers the cases it cannot run under a name saying why, with an empty body', async () => {
    const registered = new Map<string, () => unknown>();
    register({ name: 'x', capabilities: { remove: false, abort: false } }, (name, fn) => void registered.set(name, fn));
    assert.equal(registered.size, ALL_CASES.length);
    const skipped = [...registered.keys()].filter((name) => name.startsWith('[skipped: '));
    assert.deepEqual(skipped, [
      `[skipped: the harness has no openAgain()] ${CASES.handles}`,
      `[skipped: capabilities.remove is false] ${CASES.remove}`,
      `[skipped: capabilities.abort is false] ${CASES.aborted}`,
    ]);
    for (const name of skipped) await registered.get(name)?.();
  });

  it('with a skip function on the adapter, registers such cases through it', () => {
    const run: string[] = [];
    const skipped: string[] = [];
    const it = Object.assign((name: string) => void run.push(name), { skip: (name: string) => void skipped.push(name) });
    register({ openAgain: (archiver) => (archiver as MemoryArchive).openAgain() }, it);
    assert.deepEqual(skipped, []);
    assert.equal(run.length, ALL_CASES.length);
  });

  it('passes MemoryArchive without a second handle, the racing cases then using one handle', async () => {
    const outcome = await runSuite({ createArchiver: () => new MemoryArchive(), segmentBytes: 1024 * 1024, timeoutMs: 2000 });
    assert.deepEqual([...outcome.failed.keys()], [], `failures:${describeFailures(outcome)}`);
    assert.deepEqual(outcome.skipped, [`[skipped: the harness has no openAgain()] ${CASES.handles}`]);
  });

  it('calls cleanup() after every case with the archiver it used, passed or failed', async () => {
    const created: Archiver[] = [];
    const cleaned: Archiver[] = [];
    await runSuite({
      ...harness(() => {
        const archiver = forgetful();
        created.push(archiver);
        return archiver;
      }),
      cleanup: (archiver) => void cleaned.push(archiver),
    });
    assert.equal(created.length, ALL_CASES.length);
    assert.deepEqual(new Set(cleaned), new Set(created));
  });

  it('rejects a malformed harness or adapters with INVALID_ARGUMENT', () => {
    const noop = (): void => {};
    const make = () => new MemoryArchive();
    const bad: unknown[] = [
      null,
      {},
      { createArchiver: make, segmentBytes: 0 },
      { createArchiver: make, timeoutMs: 1.5 },
      { createArchiver: make, capabilities: { removes: false } },
      { createArchiver: make, capabilities: { abort: 'no' } },
      { createArchiver: make, openAgain: 'b' },
      { createArchiver: make, name: 3 },
    ];
    for (const value of bad) {
      assert.throws(
        () => archiverConformance(value as ArchiverConformanceHarness, { describe: noop, it: noop }),
        (err) => isWalshipError(err, 'INVALID_ARGUMENT'),
        JSON.stringify(value),
      );
    }
    assert.throws(() => archiverConformance({ createArchiver: make }, { describe: noop, it: 'x' as never }), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });
});
