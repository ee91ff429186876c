import assert from 'node:assert/strict';
import { isArchiver, type Archiver } from '../archive/archiver.js';
import { WalshipError, isWalshipError } from '../errors.js';
import { conformanceRunner, describeError, handled, seededBytes, within, type ConformanceAdapters } from './conformance-runner.js';

/** Optional behaviours; a case that needs one that is off is registered as skipped. */
export interface ArchiverCapabilities {
  /** The archiver has `remove`. @defaultValue true */
  remove?: boolean;
  /** Calls reject when their signal is already aborted. @defaultValue true */
  abort?: boolean;
}

/** How {@link archiverConformance} gets archivers to test. */
export interface ArchiverConformanceHarness {
  /** Shown in the suite's name. @defaultValue 'archiver' */
  name?: string;
  /** An empty archive; called once per case. */
  createArchiver(): Archiver | Promise<Archiver>;
  /**
   * A second handle on the same archive, as a second node (another process, another host)
   * would open it. The cases of sharing and racing between handles are skipped without it.
   */
  openAgain?(archiver: Archiver): Archiver | Promise<Archiver>;
  /** Called after every case, passed or failed, with the archiver `createArchiver` made. */
  cleanup?(archiver: Archiver): void | Promise<void>;
  /** What the archiver cannot do; the cases needing it are registered as skipped. @defaultValue everything */
  capabilities?: ArchiverCapabilities;
  /** Deadline of every call to the archiver. @defaultValue 10000 */
  timeoutMs?: number;
  /** Size of the segment-sized file (walship's segments are 16 MiB by default). @defaultValue 16 MiB */
  segmentBytes?: number;
}

/** Defaults of the numeric {@link ArchiverConformanceHarness} settings. */
export const ARCHIVER_CONFORMANCE_DEFAULTS = Object.freeze({
  /** Every archiver call must settle within 10 s. */
  timeoutMs: 10_000,
  /** A 16 MiB file, the size of a default segment. */
  segmentBytes: 16 * 1024 * 1024,
});

/** Files put in the case of many files: more than one page of a paged listing, for most stores. */
const MANY_FILES = 300;
/** Calls in flight at once while putting many files. */
const PARALLEL_PUTS = 16;
/** Puts racing for one name. */
const RACERS = 8;
const RACE_BYTES = 256 * 1024;

interface Config {
  readonly timeoutMs: number;
  readonly segmentBytes: number;
}

/**
 * Registers the archiver conformance suite: the behaviour walship relies on from every
 * {@link Archiver}. Run it from a test file of your archiver:
 *
 * ```ts
 * import { archiverConformance } from 'walship/testing';
 * archiverConformance({
 *   name: 'MyArchiver',
 *   createArchiver: () => new MyArchiver(freshBucket()),
 *   openAgain: (archiver) => new MyArchiver((archiver as MyArchiver).bucket),
 * });
 * ```
 *
 * Cases: files of 0 bytes, 1 byte and a segment round-trip byte for byte; a get of an
 * absent name is `null`, promptly; a put again with identical content succeeds, with
 * different content rejects `ARCHIVE_CONFLICT` and changes nothing; neither the put's
 * buffer nor the get's is shared with the archive; list with and without a prefix, and of
 * many files, gives exactly the stored names; concurrent identical puts of one name all
 * succeed, concurrent different ones let exactly one win; what one handle puts another
 * sees; remove; calls under an aborted signal. Every call has a deadline
 * (`timeoutMs`), and the data is seeded, so a failure replays.
 */
export function archiverConformance(harness: ArchiverConformanceHarness, adapters: ConformanceAdapters = {}): void {
  checkHarness(harness);
  const runner = conformanceRunner(adapters, 'archiverConformance');
  const config: Config = {
    timeoutMs: harness.timeoutMs ?? ARCHIVER_CONFORMANCE_DEFAULTS.timeoutMs,
    segmentBytes: harness.segmentBytes ?? ARCHIVER_CONFORMANCE_DEFAULTS.segmentBytes,
  };
  const removes = harness.capabilities?.remove ?? true;
  const aborts = harness.capabilities?.abort ?? true;
  const noSecondHandle = harness.openAgain === undefined ? 'the harness has no openAgain()' : false;

  const run = (body: (ctx: CaseContext) => Promise<void>) => async (): Promise<void> => {
    const archiver = await within(Promise.resolve(harness.createArchiver()), config.timeoutMs, 'createArchiver()');
    let failed = true;
    try {
      assert.ok(isArchiver(archiver), 'createArchiver() must return an archiver (put, get and list functions, remove a function or absent)');
      await body(new CaseContext(archiver, harness, config));
      failed = false;
    } finally {
      // A cleanup failure must not hide the case's own failure.
      const cleanup = harness.cleanup;
      if (cleanup !== undefined) {
        const problem = await within(Promise.resolve().then(() => cleanup.call(harness, archiver)), config.timeoutMs, 'cleanup()').then(
          () => undefined,
          (err: unknown) => err ?? new Error('cleanup() rejected'),
        );
        if (!failed && problem !== undefined) throw problem;
      }
    }
  };
  const register = (name: string, skip: string | false, body: (ctx: CaseContext) => Promise<void>): void => runner.register(name, skip, run(body));

  runner.describe(`archiver conformance: ${harness.name ?? 'archiver'}`, () => {
    register('round-trips an empty file', false, (ctx) => roundTrip(ctx, 0));
    register('round-trips a one-byte file', false, (ctx) => roundTrip(ctx, 1));
    register('round-trips a segment-sized file byte for byte', false, (ctx) => roundTrip(ctx, ctx.config.segmentBytes));
    register('a get of an absent name resolves null promptly', false, absentGet);
    register('a put of identical content under an existing name succeeds', false, identicalPut);
    register('a put of different content under an existing name rejects ARCHIVE_CONFLICT and changes nothing', false, conflictingPut);
    register("a put does not keep the caller's buffer", false, putCopies);
    register('a get returns bytes the caller may change without changing the archive', false, getCopies);
    register('list returns exactly the stored names, with and without a prefix', false, listNames);
    register(`list returns every one of ${MANY_FILES} files`, false, listMany);
    register('concurrent puts of identical content under one name all succeed', false, concurrentIdentical);
    register("concurrent puts of different content under one name: exactly one succeeds, the rest ARCHIVE_CONFLICT, the winner's bytes stay", false, concurrentDifferent);
    register('what one handle puts, another handle on the same archive gets, lists and conflicts with', noSecondHandle, acrossHandles);
    register('remove deletes a file, succeeds on a missing one, and frees the name', removes ? false : 'capabilities.remove is false', removeFile);
    register('calls with an aborted signal reject; the put leaves no file or the whole file', aborts ? false : 'capabilities.abort is false', abortedCalls);
  });
}

// ---------------------------------------------------------------------------------------
// Cases

const SEGMENT_3 = '000000010000000000000003';

async function roundTrip(ctx: CaseContext, size: number): Promise<void> {
  const name = segmentName(1, size + 1);
  const data = seededBytes(size + 1, size);
  await ctx.put(ctx.archiver, name, data);
  assertBytes(await ctx.get(ctx.archiver, name), data, `get("${name}") after a put of ${size === 1 ? '1 byte' : `${size} bytes`}`);
  assert.deepEqual(await ctx.list(ctx.archiver), [name], `list() after one put of "${name}"`);
}

async function absentGet(ctx: CaseContext): Promise<void> {
  assert.equal(await ctx.get(ctx.archiver, SEGMENT_3), null, 'get() in an empty archive must resolve null');
  await ctx.put(ctx.archiver, `${SEGMENT_3}.partial`, seededBytes(3, 100));
  await ctx.put(ctx.archiver, '00000002.history', seededBytes(2, 40));
  assert.equal(await ctx.get(ctx.archiver, SEGMENT_3), null, `get("${SEGMENT_3}") must resolve null while only "${SEGMENT_3}.partial" exists`);
  assert.equal(await ctx.get(ctx.archiver, '00000002'), null, 'get("00000002") must resolve null while only "00000002.history" exists');
  assert.equal(await ctx.get(ctx.archiver, segmentName(1, 4)), null, 'get() of a name never put must resolve null');
}

async function identicalPut(ctx: CaseContext): Promise<void> {
  const data = seededBytes(5, 4096);
  await ctx.put(ctx.archiver, SEGMENT_3, data);
  await ctx.put(ctx.archiver, SEGMENT_3, Uint8Array.from(data), 'a put again of identical content (another buffer)');
  await ctx.put(ctx.archiver, '00000002.history', new Uint8Array(0));
  await ctx.put(ctx.archiver, '00000002.history', new Uint8Array(0), 'a put again of an identical empty file');
  assertBytes(await ctx.get(ctx.archiver, SEGMENT_3), data, 'the file after an identical put');
}

async function conflictingPut(ctx: CaseContext): Promise<void> {
  const data = seededBytes(6, 4096);
  await ctx.put(ctx.archiver, SEGMENT_3, data);
  const oneByteOff = Uint8Array.from(data);
  oneByteOff[2049] = (oneByteOff[2049] as number) ^ 0x01;
  const others: Array<[string, Uint8Array]> = [
    ['the same length with one bit changed', oneByteOff],
    ['one byte more', Uint8Array.from([...data, 0])],
    ['one byte less', data.slice(0, -1)],
    ['an empty file', new Uint8Array(0)],
  ];
  for (const [what, other] of others) {
    const err = await ctx.rejection(() => ctx.archiver.put(SEGMENT_3, other), `a put of different content (${what}) under an existing name`);
    assert.ok(isWalshipError(err, 'ARCHIVE_CONFLICT'), `a put of different content (${what}) must reject with a WalshipError of code ARCHIVE_CONFLICT, got ${describeError(err)}`);
  }
  assertBytes(await ctx.get(ctx.archiver, SEGMENT_3), data, 'the file after conflicting puts (it must be unchanged)');
}

async function putCopies(ctx: CaseContext): Promise<void> {
  // A view into the middle of a larger buffer, as walship's buffers often are.
  const backing = seededBytes(7, 70_000);
  const data = backing.subarray(1000, 66_536);
  const expected = Uint8Array.from(data);
  await ctx.put(ctx.archiver, SEGMENT_3, data);
  backing.fill(0xee);
  assertBytes(await ctx.get(ctx.archiver, SEGMENT_3), expected, 'the file after the caller overwrote the buffer it put (once the put resolved)');
}

async function getCopies(ctx: CaseContext): Promise<void> {
  const data = seededBytes(8, 65_536);
  await ctx.put(ctx.archiver, SEGMENT_3, data);
  const first = await ctx.get(ctx.archiver, SEGMENT_3);
  assertBytes(first, data, 'the first get');
  (first as Uint8Array).fill(0xee);
  assertBytes(await ctx.get(ctx.archiver, SEGMENT_3), data, 'a get after the caller overwrote what an earlier get returned');
}

async function listNames(ctx: CaseContext): Promise<void> {
  const names = [SEGMENT_3, `${SEGMENT_3}.partial`, segmentName(1, 4), '00000002.history', segmentName(2, 3), '00000003.history'];
  for (const [i, name] of names.entries()) await ctx.put(ctx.archiver, name, seededBytes(100 + i, 10 + i));
  const expectations: Array<[string | undefined, string[]]> = [
    [undefined, names],
    ['', names],
    [SEGMENT_3, [SEGMENT_3, `${SEGMENT_3}.partial`]],
    [`${SEGMENT_3}.`, [`${SEGMENT_3}.partial`]],
    ['00000002', ['00000002.history', segmentName(2, 3)]],
    ['00000002.', ['00000002.history']],
    ['0000000', names],
    [`${SEGMENT_3}0`, []],
    ['x', []],
  ];
  for (const [prefix, expected] of expectations) {
    const listed = await ctx.list(ctx.archiver, prefix);
    assertNames(listed, expected, prefix === undefined ? 'list()' : `list("${prefix}")`);
  }
}

async function listMany(ctx: CaseContext): Promise<void> {
  const names = Array.from({ length: MANY_FILES }, (_, i) => segmentName(1, i));
  const queue = names.map((name, i) => [name, seededBytes(1000 + i, 16 + (i % 7))] as const);
  await Promise.all(
    Array.from({ length: PARALLEL_PUTS }, async () => {
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) await ctx.put(ctx.archiver, next[0], next[1]);
    }),
  );
  assertNames(await ctx.list(ctx.archiver), names, `list() of ${MANY_FILES} files`);
  // Segments 0x10 to 0x1F: the names with this prefix.
  const prefix = '000000010000000000000001';
  assertNames(await ctx.list(ctx.archiver, prefix), names.filter((name) => name.startsWith(prefix)), `list("${prefix}") of ${MANY_FILES} files`);
}

async function concurrentIdentical(ctx: CaseContext): Promise<void> {
  const handles = await ctx.handles();
  const data = seededBytes(9, RACE_BYTES);
  const outcomes = await ctx.settleAll(
    Array.from({ length: RACERS }, (_, i) => (handles[i % handles.length] as Archiver).put(SEGMENT_3, Uint8Array.from(data))),
    `${RACERS} concurrent identical puts of one name`,
  );
  const failed = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`put ${i}: ${describeError(o.reason)}`] : []));
  assert.deepEqual(failed, [], 'every one of concurrent identical puts must succeed');
  for (const [i, handle] of handles.entries()) assertBytes(await ctx.get(handle, SEGMENT_3), data, `the file through handle ${i + 1} after the race`);
}

async function concurrentDifferent(ctx: CaseContext): Promise<void> {
  const handles = await ctx.handles();
  const contents = Array.from({ length: RACERS }, (_, i) => seededBytes(200 + i, RACE_BYTES));
  const outcomes = await ctx.settleAll(
    contents.map((data, i) => (handles[i % handles.length] as Archiver).put(SEGMENT_3, data)),
    `${RACERS} concurrent puts of different content under one name`,
  );
  const winners = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : []));
  const otherErrors = outcomes.flatMap((o, i) => (o.status === 'rejected' && !isWalshipError(o.reason, 'ARCHIVE_CONFLICT') ? [`put ${i}: ${describeError(o.reason)}`] : []));
  assert.deepEqual(otherErrors, [], 'the puts that lose must reject with ARCHIVE_CONFLICT');
  assert.equal(winners.length, 1, `exactly one of ${RACERS} concurrent puts of different content must succeed, ${winners.length} did (puts ${winners.join(', ')})`);
  const winner = contents[winners[0] as number] as Uint8Array;
  for (const [i, handle] of handles.entries()) assertBytes(await ctx.get(handle, SEGMENT_3), winner, `the file through handle ${i + 1}: the bytes of the put that succeeded`);
}

async function acrossHandles(ctx: CaseContext): Promise<void> {
  const [a, b] = (await ctx.handles()) as [Archiver, Archiver];
  const first = seededBytes(11, 3000);
  const second = seededBytes(12, 3000);
  await ctx.put(a, SEGMENT_3, first);
  assertBytes(await ctx.get(b, SEGMENT_3), first, 'a file put through the first handle, got through the second');
  assertNames(await ctx.list(b), [SEGMENT_3], 'list() through the second handle');
  await ctx.put(b, '00000002.history', second);
  assertBytes(await ctx.get(a, '00000002.history'), second, 'a file put through the second handle, got through the first');
  await ctx.put(b, SEGMENT_3, Uint8Array.from(first), 'an identical put through the second handle');
  const err = await ctx.rejection(() => b.put(SEGMENT_3, second), 'a put of different content through the second handle');
  assert.ok(isWalshipError(err, 'ARCHIVE_CONFLICT'), `a put of different content through another handle must reject ARCHIVE_CONFLICT, got ${describeError(err)}`);
  assertBytes(await ctx.get(a, SEGMENT_3), first, 'the file after a conflicting put through the other handle');
}

async function removeFile(ctx: CaseContext): Promise<void> {
  const { archiver } = ctx;
  assert.equal(typeof archiver.remove, 'function', 'the archiver has no remove(); set capabilities.remove to false');
  const remove = (name: string, what: string): Promise<void> => ctx.call((archiver.remove as NonNullable<Archiver['remove']>).call(archiver, name), what);
  const kept = seededBytes(13, 500);
  await ctx.put(archiver, SEGMENT_3, seededBytes(14, 1000));
  await ctx.put(archiver, `${SEGMENT_3}.partial`, kept);
  await remove(SEGMENT_3, `remove("${SEGMENT_3}")`);
  assert.equal(await ctx.get(archiver, SEGMENT_3), null, 'get() of a removed file must resolve null');
  assertNames(await ctx.list(archiver), [`${SEGMENT_3}.partial`], 'list() after a remove');
  await remove(SEGMENT_3, 'remove() of a file removed already');
  await remove(segmentName(1, 9), 'remove() of a name never put');
  const again = seededBytes(15, 2000);
  await ctx.put(archiver, SEGMENT_3, again, 'a put of other content under the removed name');
  assertBytes(await ctx.get(archiver, SEGMENT_3), again, 'the file put after a remove');
  assertBytes(await ctx.get(archiver, `${SEGMENT_3}.partial`), kept, 'a file next to the removed one');
}

async function abortedCalls(ctx: CaseContext): Promise<void> {
  const { archiver } = ctx;
  const signal = AbortSignal.abort(new Error('the caller gave up'));
  const data = seededBytes(16, 100_000);
  await ctx.rejection(() => archiver.put(SEGMENT_3, data, { signal }), 'a put with an aborted signal');
  const left = await ctx.get(archiver, SEGMENT_3);
  if (left !== null) assertBytes(left, data, 'the file an aborted put left (it must be whole, or absent)');
  await ctx.put(archiver, '00000002.history', seededBytes(17, 10));
  await ctx.rejection(() => archiver.get('00000002.history', { signal }), 'a get with an aborted signal');
  await ctx.rejection(() => archiver.get(segmentName(1, 4), { signal }), 'a get of an absent name with an aborted signal');
  await ctx.rejection(() => archiver.list('', { signal }), 'a list with an aborted signal');
}

// ---------------------------------------------------------------------------------------
// Per-case context

class CaseContext {
  #second: Archiver | undefined;

  constructor(
    readonly archiver: Archiver,
    readonly harness: ArchiverConformanceHarness,
    readonly config: Config,
  ) {}

  /** `promise`, or a failure naming `what` once the deadline passes. */
  call<T>(promise: Promise<T>, what: string): Promise<T> {
    return handled(within(promise, this.config.timeoutMs, what));
  }

  put(archiver: Archiver, name: string, data: Uint8Array, what = `put("${name}") of ${data.length} bytes`): Promise<void> {
    return this.call(archiver.put(name, data), what);
  }

  get(archiver: Archiver, name: string): Promise<Uint8Array | null> {
    return this.call(archiver.get(name), `get("${name}")`);
  }

  async list(archiver: Archiver, prefix?: string): Promise<string[]> {
    const names = await this.call(archiver.list(prefix), prefix === undefined ? 'list()' : `list("${prefix}")`);
    assert.ok(Array.isArray(names), `list() must resolve with an array of names, got ${typeof names}`);
    return names;
  }

  /** The rejection of the call `start` makes (a synchronous throw counts); fails if it resolves or passes the deadline. */
  async rejection(start: () => unknown, what: string): Promise<unknown> {
    let settled = false;
    const followed = handled(Promise.resolve().then(start).finally(() => (settled = true)));
    try {
      await this.call(followed, what);
    } catch (err) {
      if (settled) return err;
      throw err;
    }
    assert.fail(`${what} must reject, but it resolved`);
  }

  /** Waits for every promise to settle, within one deadline for them all. */
  settleAll<T>(promises: Array<Promise<T>>, what: string): Promise<Array<PromiseSettledResult<T>>> {
    return this.call(Promise.allSettled(promises), what);
  }

  /** The case's archiver, and a second handle on it when the harness can open one. */
  async handles(): Promise<Archiver[]> {
    if (this.harness.openAgain === undefined) return [this.archiver];
    this.#second ??= await this.call(Promise.resolve(this.harness.openAgain(this.archiver)), 'openAgain()');
    assert.ok(isArchiver(this.#second), 'openAgain() must return an archiver');
    return [this.archiver, this.#second];
  }
}

// ---------------------------------------------------------------------------------------
// Helpers

/** A WAL segment's file name, as PostgreSQL names it (timeline, log, segment in hexadecimal). */
function segmentName(timeline: number, segment: number): string {
  const hex = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(timeline)}${hex(Math.floor(segment / 0x100))}${hex(segment % 0x100)}`;
}

function assertBytes(actual: unknown, expected: Uint8Array, what: string): void {
  if (actual === null) assert.fail(`${what}: get() resolved null, expected ${expected.length} bytes`);
  if (!(actual instanceof Uint8Array)) assert.fail(`${what}: get() must resolve with a Uint8Array or null, got ${describeValue(actual)}`);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  if (a.equals(expected)) return;
  const length = Math.min(a.length, expected.length);
  let first = 0;
  while (first < length && a[first] === expected[first]) first++;
  const where = first < length ? `first difference at byte ${first}` : `the shorter one is a prefix of the other`;
  assert.fail(`${what}: got ${a.length} bytes, expected ${expected.length} (${where})`);
}

function assertNames(listed: readonly string[], expected: readonly string[], what: string): void {
  const duplicates = listed.filter((name, i) => listed.indexOf(name) !== i);
  assert.deepEqual(duplicates, [], `${what} must name each file once`);
  const missing = expected.filter((name) => !listed.includes(name));
  const extra = listed.filter((name) => !expected.includes(name));
  if (missing.length > 0 || extra.length > 0) {
    const show = (names: string[]): string => (names.length > 5 ? `${names.slice(0, 5).join(', ')} and ${names.length - 5} more` : names.join(', ') || 'none');
    assert.fail(`${what} must list exactly the ${expected.length} stored names that match; missing: ${show(missing)}; not expected: ${show(extra)}`);
  }
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value !== 'object' || value === null) return `${typeof value} ${String(value)}`;
  return value.constructor?.name ?? 'an object';
}

function checkHarness(harness: ArchiverConformanceHarness): void {
  const fail = (problem: string): never => {
    throw new WalshipError('INVALID_ARGUMENT', `archiverConformance harness: ${problem}`);
  };
  if (typeof harness !== 'object' || harness === null) fail('must be an object');
  if (typeof harness.createArchiver !== 'function') fail('createArchiver must be a function');
  for (const key of ['openAgain', 'cleanup'] as const) {
    if (harness[key] !== undefined && typeof harness[key] !== 'function') fail(`${key} must be a function`);
  }
  if (harness.name !== undefined && typeof harness.name !== 'string') fail('name must be a string');
  for (const key of ['timeoutMs', 'segmentBytes'] as const) {
    const value = harness[key];
    if (value !== undefined && !(Number.isSafeInteger(value) && value > 0)) fail(`${key} must be a positive integer, got ${String(value)}`);
  }
  const capabilities: unknown = harness.capabilities ?? {};
  if (typeof capabilities !== 'object' || capabilities === null) fail('capabilities must be an object');
  for (const [key, value] of Object.entries(capabilities as object)) {
    if (key !== 'remove' && key !== 'abort') fail(`capabilities has an unknown key "${key}" (allowed: remove, abort)`);
    if (typeof value !== 'boolean') fail(`capabilities.${key} must be a boolean`);
  }
}
