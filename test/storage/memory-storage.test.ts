import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/errors.js';
import {
  MemoryStorage,
  type CrashOptions,
  type UnsyncedMetadataMode,
  type UnsyncedWritesMode,
} from '../../src/storage/memory-storage.js';
import type { StorageFile } from '../../src/storage/storage.js';
import { mulberry32 as seeded } from '../helpers/random.js';
import { storageConformance } from '../../src/testing/storage-conformance.js';
import { seededRandom } from '../../src/testing/seeded-random.js';

// The storage conformance suite under each kind of power loss MemoryStorage simulates: the
// suite must hold whatever a legal power loss keeps of what was not made durable.
storageConformance({
  name: 'MemoryStorage, a power loss losing everything not synced',
  createStorage: () => new MemoryStorage(),
  crash: (storage) => (storage as MemoryStorage).crash({ unsyncedWrites: 'lose', unsyncedMetadata: 'lose' }),
  capabilities: { writev: false, crashLosesUnsyncedWrites: true, crashLosesUnsyncedMetadata: true },
});
for (const [unsyncedWrites, unsyncedMetadata] of [['keep', 'keep'], ['torn', 'prefix'], ['sectors', 'prefix']] as const) {
  let seed = 0;
  storageConformance({
    name: `MemoryStorage, a power loss with unsynced writes '${unsyncedWrites}' and metadata '${unsyncedMetadata}'`,
    createStorage: () => new MemoryStorage(),
    crash: (storage) => (storage as MemoryStorage).crash({ unsyncedWrites, unsyncedMetadata, random: seededRandom(++seed) }),
    capabilities: { writev: false },
    segmentBytes: 1024 * 1024,
  });
}

const SECTOR = 512;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string): Uint8Array => encoder.encode(text);
const text = (data: Uint8Array): string => decoder.decode(data);

function hasCode(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.equal((err as { code?: unknown }).code, code);
    return true;
  };
}

function isCrashed(err: unknown): boolean {
  assert.ok(err instanceof Error);
  assert.equal((err as { code?: unknown }).code, 'EIO');
  assert.equal(err.message, 'storage crashed (simulated power loss)');
  return true;
}

const isInvalidArgument = (err: unknown): boolean => isWalshipError(err, 'INVALID_ARGUMENT');

/** A file created, and its name made durable, so that only its data is at stake. */
async function durableFile(storage: MemoryStorage, name = 'f'): Promise<StorageFile> {
  const file = await storage.open(name, { create: true });
  await storage.syncDirectory();
  return file;
}

async function createSynced(storage: MemoryStorage, name: string, content: string): Promise<void> {
  const file = await storage.open(name, { create: true, exclusive: true });
  await file.write(bytes(content), 0);
  await file.datasync();
  await file.close();
}

/** Each file's content as text, by name. */
function snapshot(storage: MemoryStorage): Record<string, string> {
  return Object.fromEntries(storage.fileNames().map((name) => [name, text(storage.readFile(name))]));
}

// ---------------------------------------------------------------------------------------
// A reference model of one file's unsynced data operations.

type ModelOperation =
  | { kind: 'write'; position: number; bytes: Uint8Array }
  | { kind: 'extend'; from: number; to: number };

function operationRange(operation: ModelOperation): [number, number] {
  return operation.kind === 'write'
    ? [operation.position, operation.position + operation.bytes.length]
    : [operation.from, operation.to];
}

/** `content` after `operation`, cut to its first `length` bytes. */
function applyModel(content: Uint8Array, operation: ModelOperation, length?: number): Uint8Array {
  if (operation.kind === 'extend') {
    const size = Math.max(content.length, operation.from + (length ?? operation.to - operation.from));
    const out = new Uint8Array(size);
    out.set(content);
    return out;
  }
  const data = operation.bytes.subarray(0, length ?? operation.bytes.length);
  if (data.length === 0) return content;
  const out = new Uint8Array(Math.max(content.length, operation.position + data.length));
  out.set(content);
  out.set(data, operation.position);
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * True when `result` is `durable` after the first k operations for some k, the last one
 * possibly cut short: what a 'torn' crash may leave.
 */
function isTornPrefix(result: Uint8Array, durable: Uint8Array, operations: readonly ModelOperation[]): boolean {
  let base = durable;
  for (let k = 0; ; k++) {
    if (equalBytes(result, base)) return true;
    const operation = operations[k];
    if (operation === undefined) return false;
    const [start, end] = operationRange(operation);
    const full = end - start;
    if (result.length > base.length) {
      // The cut is fixed by the size the file grew to.
      const cut = result.length - start;
      if (cut >= 1 && cut <= full && equalBytes(result, applyModel(base, operation, cut))) return true;
    } else if (result.length === base.length && operation.kind === 'write') {
      // A cut inside the file: the bytes that differ from `base` must be a prefix of the write.
      let first = -1;
      let last = -1;
      for (let i = 0; i < base.length; i++) {
        if (result[i] !== base[i]) {
          if (first < 0) first = i;
          last = i;
        }
      }
      // Later bytes of the write that equal the old ones are invisible: the shortest cut
      // that covers every difference stands for all longer ones.
      const shortest = last - start + 1;
      if (first >= start && last < end && equalBytes(result, applyModel(base, operation, shortest))) return true;
    }
    base = applyModel(base, operation);
  }
}

/** The bytes of sector `sector` of `content`, zero-padded, up to `size`. */
function sectorOf(content: Uint8Array, sector: number, size: number): Uint8Array {
  const out = new Uint8Array(Math.max(0, Math.min(SECTOR, size - sector * SECTOR)));
  out.set(content.subarray(sector * SECTOR, sector * SECTOR + out.length));
  return out;
}

function touchedSectors(operations: readonly ModelOperation[]): Set<number> {
  const touched = new Set<number>();
  for (const operation of operations) {
    const [start, end] = operationRange(operation);
    for (let sector = Math.floor(start / SECTOR); sector * SECTOR < end; sector++) touched.add(sector);
  }
  return touched;
}

/** Asserts what a 'sectors' crash may leave: each touched sector old or new, the rest old. */
function assertSectorsResult(
  result: Uint8Array,
  durable: Uint8Array,
  current: Uint8Array,
  operations: readonly ModelOperation[],
): void {
  const touched = touchedSectors(operations);
  assert.ok(result.length >= durable.length && result.length <= current.length, `size ${result.length}`);
  const sizeFromSector = [...touched].some((s) => Math.min((s + 1) * SECTOR, current.length) === result.length);
  assert.ok(result.length === durable.length || sizeFromSector, `size ${result.length} is no kept sector's end`);
  for (let sector = 0; sector * SECTOR < result.length; sector++) {
    const got = sectorOf(result, sector, result.length);
    const old = sectorOf(durable, sector, result.length);
    if (touched.has(sector)) {
      const now = sectorOf(current, sector, result.length);
      assert.ok(equalBytes(got, old) || equalBytes(got, now), `sector ${sector} is neither old nor new`);
    } else {
      assert.deepEqual(got, old, `untouched sector ${sector} changed`);
    }
  }
}

type WorkloadStep =
  | { kind: 'write'; position: number; length: number; fill: number }
  | { kind: 'allocate'; size: number }
  | { kind: 'datasync' };

const workloadStep: fc.Arbitrary<WorkloadStep> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      position: fc.nat(2047),
      length: fc.integer({ min: 1, max: 700 }),
      fill: fc.nat(255),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('allocate' as const), size: fc.nat(3000) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'datasync' as const }) },
);

function pattern(length: number, fill: number): Uint8Array {
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i++) data[i] = (fill + i * 7) & 0xff;
  return data;
}

interface WorkloadResult {
  storage: MemoryStorage;
  /** Content as of the last datasync. */
  durable: Uint8Array;
  /** Writes and extensions since then, oldest first. */
  unsynced: ModelOperation[];
  current: Uint8Array;
}

async function runWorkload(steps: readonly WorkloadStep[]): Promise<WorkloadResult> {
  const storage = new MemoryStorage();
  const file = await durableFile(storage);
  let durable: Uint8Array = new Uint8Array(0);
  let unsynced: ModelOperation[] = [];
  for (const step of steps) {
    if (step.kind === 'write') {
      const data = pattern(step.length, step.fill);
      await file.write(data, step.position);
      unsynced.push({ kind: 'write', position: step.position, bytes: data });
    } else if (step.kind === 'allocate') {
      const before = await file.size();
      await file.allocate(step.size);
      if (step.size > before) unsynced.push({ kind: 'extend', from: before, to: step.size });
    } else {
      await file.datasync();
      durable = storage.readFile('f');
      unsynced = [];
    }
  }
  const current = storage.readFile('f');
  // The model itself: the unsynced operations applied to the durable content give the current one.
  const replayed = unsynced.reduce<Uint8Array>((content, operation) => applyModel(content, operation), durable);
  assert.deepEqual(replayed, current);
  assert.equal(storage.durableSize('f'), durable.length);
  return { storage, durable, unsynced, current };
}

async function crashedContent(
  steps: readonly WorkloadStep[],
  options: CrashOptions,
): Promise<WorkloadResult & { result: Uint8Array }> {
  const run = await runWorkload(steps);
  const survivor = run.storage.crash({ unsyncedMetadata: 'lose', ...options });
  assert.deepEqual(survivor.fileNames(), ['f']);
  return { ...run, result: survivor.readFile('f') };
}

const WRITE_MODES: readonly UnsyncedWritesMode[] = ['lose', 'keep', 'torn', 'sectors'];

describe('MemoryStorage', () => {
  describe('basics', () => {
    it('has a default description memory:<n>, distinct per instance, or the given one', () => {
      const a = new MemoryStorage();
      const b = new MemoryStorage();
      assert.match(a.description, /^memory:\d+$/);
      assert.notEqual(a.description, b.description);
      assert.equal(new MemoryStorage({ description: 'disk-a' }).description, 'disk-a');
      assert.throws(
        () => new MemoryStorage({ descripton: 'typo' } as never),
        (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'),
      );
    });

    it('says its syncs hold the event loop only when told (syncBlocks), and checks the option', async () => {
      const plain = await new MemoryStorage().open('a', { create: true });
      const blocking = await new MemoryStorage({ syncBlocks: true }).open('a', { create: true });
      assert.equal(plain.syncBlocks, false);
      assert.equal(blocking.syncBlocks, true);
      assert.throws(
        () => new MemoryStorage({ syncBlocks: 'yes' } as never),
        (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'),
      );
    });

    it('rejects errors asynchronously, never throwing from the call', async () => {
      const storage = new MemoryStorage();
      const pending = storage.open('a/b', { create: true });
      assert.ok(pending instanceof Promise);
      await assert.rejects(pending, hasCode('EINVAL'));
    });

    it('readFile returns a copy; readFile and durableSize of a missing file throw ENOENT', async () => {
      const storage = new MemoryStorage();
      const file = await storage.open('f', { create: true });
      await file.write(bytes('abc'), 0);
      const copy = storage.readFile('f');
      copy[0] = 0x7a;
      assert.equal(text(storage.readFile('f')), 'abc');
      assert.throws(() => storage.readFile('missing'), hasCode('ENOENT'));
      assert.throws(() => storage.durableSize('missing'), hasCode('ENOENT'));
    });

    it('durableSize follows datasync, not write', async () => {
      const storage = new MemoryStorage();
      const file = await storage.open('f', { create: true });
      await file.write(bytes('abc'), 0);
      assert.equal(storage.durableSize('f'), 0);
      await file.datasync();
      assert.equal(storage.durableSize('f'), 3);
      await file.allocate(100);
      assert.equal(storage.durableSize('f'), 3);
      await file.datasync();
      assert.equal(storage.durableSize('f'), 100);
    });

    it('runs a long workload of small writes quickly enough for simulations', async () => {
      const storage = new MemoryStorage();
      const file = await storage.open('f', { create: true });
      const record = new Uint8Array(100).fill(7);
      for (let i = 0; i < 20_000; i++) {
        await file.write(record, i * 100);
        if (i % 10 === 9) await file.datasync();
      }
      assert.equal(await file.size(), 2_000_000);
      assert.equal(storage.durableSize('f'), 2_000_000);
    });
  });

  describe('crash: unsynced data', () => {
    const crashProperty = (check: (run: WorkloadResult & { result: Uint8Array }, mode: UnsyncedWritesMode) => void) =>
      fc.asyncProperty(fc.array(workloadStep, { maxLength: 10 }), fc.integer(), async (steps, seed) => {
        for (const mode of WRITE_MODES) {
          check(await crashedContent(steps, { unsyncedWrites: mode, random: seeded(seed) }), mode);
        }
      });

    it('datasynced bytes survive every mode unless an unsynced write covers them', async () => {
      await fc.assert(
        crashProperty(({ result, durable, unsynced }, mode) => {
          assert.ok(result.length >= durable.length, `${mode}: the file shrank below its durable size`);
          for (let i = 0; i < durable.length; i++) {
            const overwritten = unsynced.some(
              (op) => op.kind === 'write' && i >= op.position && i < op.position + op.bytes.length,
            );
            if (overwritten) continue;
            assert.equal(result[i], durable[i], `${mode}: durable byte ${i} changed`);
          }
          if (unsynced.length === 0) assert.deepEqual(result, durable, `${mode}: nothing unsynced, yet it changed`);
        }),
        { seed: 0x5eed01, numRuns: 150 },
      );
    });

    it("'lose' leaves exactly the durable content, 'keep' exactly the current one", async () => {
      await fc.assert(
        crashProperty(({ result, durable, current }, mode) => {
          if (mode === 'lose') assert.deepEqual(result, durable);
          if (mode === 'keep') assert.deepEqual(result, current);
        }),
        { seed: 0x5eed02, numRuns: 150 },
      );
    });

    it("'torn' always leaves a prefix of the unsynced operations, the last possibly cut", async () => {
      await fc.assert(
        crashProperty(({ result, durable, unsynced }, mode) => {
          if (mode === 'torn') assert.ok(isTornPrefix(result, durable, unsynced), 'not a prefix of the operations');
        }),
        { seed: 0x5eed03, numRuns: 300 },
      );
    });

    it("'sectors' changes only sectors touched by unsynced writes, each all old or all new", async () => {
      await fc.assert(
        crashProperty(({ result, durable, current, unsynced }, mode) => {
          if (mode === 'sectors') assertSectorsResult(result, durable, current, unsynced);
        }),
        { seed: 0x5eed04, numRuns: 300 },
      );
    });

    it('the reference checks reject states a crash must not produce', () => {
      const durable = new Uint8Array(1024).fill(1);
      const first: ModelOperation = { kind: 'write', position: 0, bytes: new Uint8Array(600).fill(2) };
      const second: ModelOperation = { kind: 'write', position: 700, bytes: new Uint8Array(100).fill(3) };
      const both = applyModel(applyModel(durable, first), second);
      assert.ok(isTornPrefix(both, durable, [first, second]));
      assert.ok(isTornPrefix(applyModel(durable, first, 10), durable, [first, second]));
      // The second write without the first is not a prefix.
      assert.ok(!isTornPrefix(applyModel(durable, second), durable, [first, second]));
      // Sector 1 half old, half new is not a sector-granular result.
      const halfSector = applyModel(durable, { kind: 'write', position: 0, bytes: new Uint8Array(550).fill(2) });
      assert.throws(() => assertSectorsResult(halfSector, durable, both, [first, second]), assert.AssertionError);
    });

    it("'torn' and 'sectors' produce all-lost, all-kept and partial results across seeds", async () => {
      const steps: WorkloadStep[] = [
        { kind: 'write', position: 0, length: 2048, fill: 1 },
        { kind: 'datasync' },
        ...[0, 600, 1200, 1800].map(
          (position, i): WorkloadStep => ({ kind: 'write', position, length: 300, fill: 50 * (i + 1) }),
        ),
      ];
      for (const mode of ['torn', 'sectors'] as const) {
        const seen = new Set<string>();
        for (let seed = 0; seed < 200; seed++) {
          const options = { unsyncedWrites: mode, random: seeded(seed) };
          const { result, durable, current } = await crashedContent(steps, options);
          seen.add(equalBytes(result, durable) ? 'durable' : equalBytes(result, current) ? 'current' : 'partial');
        }
        assert.deepEqual([...seen].sort(), ['current', 'durable', 'partial'], mode);
      }
    });

    it("'torn' cuts allocations too, and the size follows the kept operations", async () => {
      const sizes = new Set<number>();
      for (let seed = 0; seed < 100; seed++) {
        const options = { unsyncedWrites: 'torn', random: seeded(seed) } as const;
        const { result } = await crashedContent([{ kind: 'allocate', size: 1000 }], options);
        assert.ok(result.every((byte) => byte === 0));
        sizes.add(result.length);
      }
      const cut = [...sizes].some((size) => size > 0 && size < 1000);
      assert.ok(sizes.has(0) && sizes.has(1000) && cut, [...sizes].join());
    });

    it('the default is torn data and a prefix of metadata', async () => {
      let partial = false;
      for (let seed = 0; seed < 50 && !partial; seed++) {
        const storage = new MemoryStorage();
        const file = await durableFile(storage);
        await file.write(new Uint8Array(1000).fill(9), 0);
        const result = storage.crash({ random: seeded(seed) }).readFile('f');
        partial = result.length > 0 && result.length < 1000;
      }
      assert.ok(partial, 'no crash tore the write');
    });

    it('uses the given random source, so the same seed gives the same result', async () => {
      const steps = [0, 1, 2, 3, 4].map(
        (i): WorkloadStep => ({ kind: 'write', position: i * 333, length: 500, fill: i }),
      );
      const a = await crashedContent(steps, { unsyncedWrites: 'sectors', random: seeded(42) });
      const b = await crashedContent(steps, { unsyncedWrites: 'sectors', random: seeded(42) });
      assert.deepEqual(a.result, b.result);
    });

    it('rejects invalid crash options and a random() out of range, leaving the storage alive', async () => {
      const storage = new MemoryStorage();
      const file = await durableFile(storage);
      await file.write(bytes('x'), 0);
      assert.throws(() => storage.crash({ unsyncedWrites: 'maybe' as never }), isInvalidArgument);
      assert.throws(() => storage.crash({ unsyncedMetadata: 'most' as never }), isInvalidArgument);
      assert.throws(() => storage.crash({ sync: true } as never), isInvalidArgument);
      assert.throws(() => storage.crash({ unsyncedWrites: 'torn', random: () => 1 }), isInvalidArgument);
      await file.write(bytes('y'), 1);
      assert.equal(text(storage.readFile('f')), 'xy');
    });
  });

  describe('crash: unsynced metadata', () => {
    it("a created file vanishes under 'lose' unless the directory was synced", async () => {
      const storage = new MemoryStorage();
      await createSynced(storage, 'synced', 'one');
      await storage.syncDirectory();
      await createSynced(storage, 'unsynced', 'two');
      assert.deepEqual(snapshot(storage.crash({ unsyncedMetadata: 'lose' })), { synced: 'one' });
    });

    it("a created file survives under 'keep'", async () => {
      const storage = new MemoryStorage();
      await createSynced(storage, 'unsynced', 'two');
      assert.deepEqual(snapshot(storage.crash({ unsyncedMetadata: 'keep' })), { unsynced: 'two' });
    });

    it("a rename reverts under 'lose', restoring the file it replaced, and survives under 'keep'", async () => {
      const build = async (): Promise<MemoryStorage> => {
        const storage = new MemoryStorage();
        await createSynced(storage, 'state', 'old');
        await createSynced(storage, 'state.tmp', 'new');
        await storage.syncDirectory();
        await storage.rename('state.tmp', 'state');
        return storage;
      };
      const reverted = (await build()).crash({ unsyncedMetadata: 'lose' });
      assert.deepEqual(snapshot(reverted), { state: 'old', 'state.tmp': 'new' });
      assert.deepEqual(snapshot((await build()).crash({ unsyncedMetadata: 'keep' })), { state: 'new' });
      const synced = await build();
      await synced.syncDirectory();
      assert.deepEqual(snapshot(synced.crash({ unsyncedMetadata: 'lose' })), { state: 'new' });
    });

    it("a remove is undone under 'lose'", async () => {
      const storage = new MemoryStorage();
      await createSynced(storage, 'seg', 'data');
      await storage.syncDirectory();
      await storage.remove('seg');
      assert.deepEqual(storage.fileNames(), []);
      assert.deepEqual(snapshot(storage.crash({ unsyncedMetadata: 'lose' })), { seg: 'data' });
    });

    it('a file keeps its data through a crash that reverts its rename', async () => {
      const storage = new MemoryStorage();
      const file = await durableFile(storage, 'a');
      await storage.rename('a', 'b');
      await file.write(bytes('payload'), 0);
      await file.datasync();
      assert.deepEqual(snapshot(storage.crash({ unsyncedMetadata: 'lose' })), { a: 'payload' });
    });

    type MetaStep = { kind: 'create' | 'rename' | 'remove' | 'sync'; a: number; b: number };
    const metaStep: fc.Arbitrary<MetaStep> = fc.record({
      kind: fc.constantFrom('create' as const, 'rename' as const, 'remove' as const, 'sync' as const),
      a: fc.nat(3),
      b: fc.nat(3),
    });
    const NAMES = ['a', 'b', 'c', 'd'];

    /** Runs the steps; returns the namespace after each metadata operation since the last sync. */
    async function runMetadata(storage: MemoryStorage, steps: readonly MetaStep[]): Promise<Record<string, string>[]> {
      const namespace: Record<string, string> = {};
      let states = [{ ...namespace }];
      let created = 0;
      for (const step of steps) {
        const from = NAMES[step.a] as string;
        const to = NAMES[step.b] as string;
        if (step.kind === 'sync') {
          await storage.syncDirectory();
          states = [];
        } else if (step.kind === 'create') {
          if (from in namespace) continue;
          const content = `file-${created++}`;
          await createSynced(storage, from, content);
          namespace[from] = content;
        } else if (!(from in namespace)) {
          continue;
        } else if (step.kind === 'rename') {
          await storage.rename(from, to);
          const content = namespace[from] as string;
          delete namespace[from];
          namespace[to] = content;
        } else {
          await storage.remove(from);
          delete namespace[from];
        }
        states.push({ ...namespace });
      }
      return states;
    }

    const outcomes: Record<UnsyncedMetadataMode, string> = {
      lose: 'as of the last syncDirectory',
      keep: 'as it was',
      prefix: 'as after some prefix of the operations since the last syncDirectory',
    };
    for (const mode of ['lose', 'keep', 'prefix'] as const) {
      it(`'${mode}' leaves the namespace ${outcomes[mode]}`, async () => {
        await fc.assert(
          fc.asyncProperty(fc.array(metaStep, { maxLength: 14 }), fc.integer(), async (steps, seed) => {
            const storage = new MemoryStorage();
            const states = await runMetadata(storage, steps);
            const after = snapshot(storage.crash({ unsyncedMetadata: mode, random: seeded(seed) }));
            if (mode === 'lose') assert.deepEqual(after, states[0]);
            else if (mode === 'keep') assert.deepEqual(after, states.at(-1));
            else assert.ok(states.some((state) => isDeepEqual(state, after)), `${JSON.stringify(after)} is no prefix`);
          }),
          { seed: 0x5eed05, numRuns: 200 },
        );
      });
    }

    it("'prefix' keeps every possible prefix across seeds, and never a later operation alone", async () => {
      const seen = new Set<string>();
      for (let seed = 0; seed < 100; seed++) {
        const storage = new MemoryStorage();
        await createSynced(storage, 'a', '1');
        await storage.rename('a', 'b');
        await createSynced(storage, 'c', '2');
        seen.add(JSON.stringify(snapshot(storage.crash({ unsyncedMetadata: 'prefix', random: seeded(seed) }))));
      }
      assert.deepEqual([...seen].sort(), ['{"b":"1","c":"2"}', '{"b":"1"}', '{"a":"1"}', '{}'].sort());
    });
  });

  describe('crashAfter and operationCount', () => {
    it('counts every call on the storage, its files and its lock, failed ones included', async () => {
      const storage = new MemoryStorage();
      assert.equal(storage.operationCount, 0);
      await storage.prepare();
      const file = await storage.open('f', { create: true });
      await file.write(bytes('abc'), 0);
      await file.read(new Uint8Array(3), 0, 3, 0);
      await file.size();
      await file.datasync();
      await file.allocate(10);
      await file.close();
      await storage.list();
      await assert.rejects(storage.open('missing'), hasCode('ENOENT'));
      await storage.syncDirectory();
      const lock = await storage.lock();
      await lock.release();
      await storage.rename('f', 'g');
      await storage.remove('g');
      assert.equal(storage.operationCount, 15);
    });

    const WRITES = 8;

    /** Writes one byte at each next position, recording which calls failed and how. */
    async function writeBytes(file: StorageFile): Promise<{ completed: number; errors: unknown[] }> {
      let completed = 0;
      const errors: unknown[] = [];
      for (let i = 0; i < WRITES; i++) {
        try {
          await file.write(new Uint8Array([0x41 + i]), i);
          if (errors.length === 0) completed++;
        } catch (err) {
          errors.push(err);
        }
      }
      return { completed, errors };
    }

    it('fires right before the nth operation: that one and all later ones fail', async () => {
      for (let n = 1; n <= WRITES + 1; n++) {
        const storage = new MemoryStorage();
        const file = await durableFile(storage);
        const before = storage.operationCount;
        const crashed = storage.crashAfter(n, { unsyncedWrites: 'keep', unsyncedMetadata: 'keep' });
        const { completed, errors } = await writeBytes(file);
        const expected = Math.min(n - 1, WRITES);
        assert.equal(completed, expected, `crashAfter(${n})`);
        assert.equal(errors.length, WRITES - expected, `crashAfter(${n})`);
        for (const err of errors) assert.ok(isCrashed(err));
        assert.equal(storage.operationCount, before + expected);
        if (n <= WRITES) {
          const survivor = await crashed;
          assert.equal(text(survivor.readFile('f')), 'ABCDEFGH'.slice(0, expected), `crashAfter(${n})`);
        }
      }
    });

    it('counts from the moment it is called', async () => {
      const storage = new MemoryStorage();
      for (let i = 0; i < 5; i++) await storage.list();
      const crashed = storage.crashAfter(2);
      await storage.list();
      await assert.rejects(storage.list(), isCrashed);
      assert.ok((await crashed) instanceof MemoryStorage);
    });

    it('stays pending while fewer operations follow', async () => {
      const storage = new MemoryStorage();
      const crashed = storage.crashAfter(3);
      await storage.list();
      await storage.list();
      const marker = Symbol('pending');
      assert.equal(await Promise.race([crashed, Promise.resolve(marker)]), marker);
      await assert.rejects(storage.list(), isCrashed);
      await crashed;
    });

    it('an explicit crash() settles a scheduled crash with the same survivor', async () => {
      const storage = new MemoryStorage();
      const scheduled = storage.crashAfter(10);
      const survivor = storage.crash();
      assert.equal(await scheduled, survivor);
    });

    it('a scheduled crash that cannot happen rejects, and the storage lives on', async () => {
      const storage = new MemoryStorage();
      const scheduled = storage.crashAfter(1, { random: () => 1 });
      await storage.list();
      await assert.rejects(scheduled, isInvalidArgument);
      await storage.list();
      assert.equal(storage.operationCount, 2);
    });

    it('rejects a bad count and a second schedule', async () => {
      const storage = new MemoryStorage();
      await assert.rejects(storage.crashAfter(0), isInvalidArgument);
      await assert.rejects(storage.crashAfter(1.5), isInvalidArgument);
      await assert.rejects(storage.crashAfter(2, { unsyncedWrites: 'bad' as never }), isInvalidArgument);
      const scheduled = storage.crashAfter(2);
      await assert.rejects(storage.crashAfter(5), isInvalidArgument);
      await storage.list();
      await storage.list().catch(() => undefined);
      await scheduled;
    });
  });

  describe('fault injection', () => {
    const isInjected = (code: string, bytesWritten?: number) => (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.equal((err as { code?: unknown }).code, code);
      assert.match(err.message, new RegExp(`^${code}: .+ \\(injected\\)`));
      if (bytesWritten !== undefined) assert.equal((err as { bytesWritten?: unknown }).bytesWritten, bytesWritten);
      return true;
    };

    it('fails the nth matching write with the given code, and only it', async () => {
      const storage = new MemoryStorage();
      const file = await storage.open('f', { create: true });
      storage.injectFault({ operation: 'write', code: 'ENOSPC', nth: 2 });
      await file.write(bytes('a'), 0);
      await assert.rejects(file.write(bytes('b'), 1), (err: unknown) => {
        isInjected('ENOSPC', 0)(err);
        assert.match((err as Error).message, /^ENOSPC: no space left on device \(injected\)/);
        assert.equal((err as { errno?: unknown }).errno, -28);
        return true;
      });
      await file.write(bytes('c'), 2);
      assert.deepEqual(storage.readFile('f'), new Uint8Array([0x61, 0, 0x63]));
    });

    it('only counts and fails operations on matching files', async () => {
      const storage = new MemoryStorage();
      const segment = await storage.open('000000010000000000000001', { create: true });
      const other = await storage.open('slot.json', { create: true });
      storage.injectFault({ operation: 'write', code: 'EIO', file: /^[0-9A-F]{24}$/, nth: 2 });
      storage.injectFault({ operation: 'datasync', code: 'EIO', file: 'slot.json' });
      await segment.write(bytes('1'), 0);
      await other.write(bytes('x'), 0);
      await other.write(bytes('y'), 1);
      await segment.datasync();
      await assert.rejects(segment.write(bytes('2'), 1), isInjected('EIO', 0));
      await assert.rejects(other.datasync(), isInjected('EIO'));
      await other.datasync();
    });

    it('fails `times` consecutive matching operations, Infinity until cancelled', async () => {
      const storage = new MemoryStorage();
      const file = await storage.open('f', { create: true });
      storage.injectFault({ operation: 'read', code: 'EIO', times: 3 });
      for (let i = 0; i < 3; i++) await assert.rejects(file.read(new Uint8Array(1), 0, 1, 0), isInjected('EIO'));
      assert.equal(await file.read(new Uint8Array(1), 0, 1, 0), 0);
      const cancel = storage.injectFault({ operation: 'datasync', code: 'EIO', times: Infinity });
      for (let i = 0; i < 50; i++) await assert.rejects(file.datasync(), isInjected('EIO'));
      cancel();
      await file.datasync();
    });

    it('a cancelled fault never fires', async () => {
      const storage = new MemoryStorage();
      const cancel = storage.injectFault({ operation: 'open', code: 'EMFILE', nth: 2 });
      await storage.open('a', { create: true });
      cancel();
      cancel();
      await storage.open('b', { create: true });
    });

    it('faults count on their own: overlapping ones both apply', async () => {
      const storage = new MemoryStorage();
      storage.injectFault({ operation: 'syncDirectory', code: 'EIO', nth: 1 });
      storage.injectFault({ operation: 'syncDirectory', code: 'EROFS', nth: 2 });
      await assert.rejects(storage.syncDirectory(), isInjected('EIO'));
      await assert.rejects(storage.syncDirectory(), (err: unknown) => {
        isInjected('EROFS')(err);
        assert.match((err as Error).message, /read-only file system/);
        return true;
      });
      await storage.syncDirectory();
    });

    it('a failed write with bytesWritten k leaves exactly the first k bytes, unsynced', async () => {
      const storage = new MemoryStorage();
      const file = await durableFile(storage);
      await file.write(bytes('--------'), 0);
      await file.datasync();
      storage.injectFault({ operation: 'write', code: 'ENOSPC', bytesWritten: 3 });
      await assert.rejects(file.write(bytes('abcdef'), 2), isInjected('ENOSPC', 3));
      assert.equal(text(storage.readFile('f')), '--abc---');
      storage.injectFault({ operation: 'write', code: 'ENOSPC', bytesWritten: 100 });
      await assert.rejects(file.write(bytes('XY'), 7), isInjected('ENOSPC', 2));
      assert.equal(text(storage.readFile('f')), '--abc--XY');
      assert.equal(text(storage.crash({ unsyncedWrites: 'lose' }).readFile('f')), '--------');
    });

    it('a failed allocate with bytesWritten k grows the file by k bytes at most, unsynced, and says so', async () => {
      const storage = new MemoryStorage();
      const file = await durableFile(storage);
      await file.write(bytes('ab'), 0);
      await file.datasync();
      storage.injectFault({ operation: 'allocate', code: 'ENOSPC', bytesWritten: 3 });
      await assert.rejects(file.allocate(100), isInjected('ENOSPC', 3));
      assert.equal(await file.size(), 5);
      storage.injectFault({ operation: 'allocate', code: 'ENOSPC', bytesWritten: 100 });
      await assert.rejects(file.allocate(8), isInjected('ENOSPC', 3));
      assert.equal(await file.size(), 8);
      assert.equal(storage.crash({ unsyncedWrites: 'lose' }).readFile('f').length, 2);
    });

    it('a failed datasync makes nothing durable', async () => {
      const storage = new MemoryStorage();
      const file = await durableFile(storage);
      await file.write(bytes('data'), 0);
      storage.injectFault({ operation: 'datasync', code: 'EIO' });
      await assert.rejects(file.datasync(), isInjected('EIO'));
      assert.equal(storage.durableSize('f'), 0);
      assert.equal(storage.crash({ unsyncedWrites: 'lose' }).readFile('f').length, 0);
    });

    it('failed open, rename, remove, allocate and syncDirectory change nothing', async () => {
      const storage = new MemoryStorage();
      await createSynced(storage, 'a', 'A');
      await storage.syncDirectory();
      for (const operation of ['open', 'rename', 'remove', 'allocate', 'syncDirectory'] as const) {
        storage.injectFault({ operation, code: 'EIO' });
      }
      await assert.rejects(storage.open('new', { create: true }), isInjected('EIO'));
      await assert.rejects(storage.rename('a', 'b'), isInjected('EIO'));
      await assert.rejects(storage.remove('a'), isInjected('EIO'));
      const file = await storage.open('a');
      await assert.rejects(file.allocate(100), isInjected('EIO'));
      assert.equal(await file.size(), 1);
      await storage.open('new', { create: true });
      await assert.rejects(storage.syncDirectory(), isInjected('EIO'));
      assert.deepEqual(storage.fileNames(), ['a', 'new']);
      assert.deepEqual(snapshot(storage.crash({ unsyncedMetadata: 'lose' })), { a: 'A' });
    });

    it('a rename fault matches either name', async () => {
      const storage = new MemoryStorage();
      await createSynced(storage, 'x.tmp', 'x');
      storage.injectFault({ operation: 'rename', code: 'EIO', file: 'x' });
      await assert.rejects(storage.rename('x.tmp', 'x'), isInjected('EIO'));
      await storage.rename('x.tmp', 'x');
    });

    it('rejects invalid faults', () => {
      const storage = new MemoryStorage();
      assert.throws(() => storage.injectFault({ operation: 'fsync' as never, code: 'EIO' }), isInvalidArgument);
      assert.throws(() => storage.injectFault({ operation: 'write', code: '' }), isInvalidArgument);
      assert.throws(() => storage.injectFault({ operation: 'write', code: 'EIO', nth: 0 }), isInvalidArgument);
      assert.throws(() => storage.injectFault({ operation: 'write', code: 'EIO', times: -1 }), isInvalidArgument);
      const write = { operation: 'write', code: 'EIO' } as const;
      assert.throws(() => storage.injectFault({ ...write, bytesWritten: 1.5 }), isInvalidArgument);
      assert.throws(() => storage.injectFault({ ...write, fle: 'x' } as never), isInvalidArgument);
    });
  });

  describe('a crashed storage', () => {
    it('rejects every operation on itself, its files and its lock', async () => {
      const storage = new MemoryStorage();
      const file = await storage.open('f', { create: true });
      const lock = await storage.lock();
      const survivor = storage.crash({ unsyncedMetadata: 'keep' });
      const calls: [string, () => Promise<unknown>][] = [
        ['prepare', () => storage.prepare()],
        ['list', () => storage.list()],
        ['open', () => storage.open('f', { create: true })],
        ['rename', () => storage.rename('f', 'g')],
        ['remove', () => storage.remove('f')],
        ['syncDirectory', () => storage.syncDirectory()],
        ['lock', () => storage.lock()],
        ['crashAfter', () => storage.crashAfter(1)],
        ['read', () => file.read(new Uint8Array(1), 0, 1, 0)],
        ['write', () => file.write(bytes('x'), 0)],
        ['datasync', () => file.datasync()],
        ['allocate', () => file.allocate(10)],
        ['size', () => file.size()],
        ['close', () => file.close()],
        ['release', () => lock.release()],
      ];
      for (const [name, call] of calls) await assert.rejects(call(), isCrashed, name);
      assert.throws(() => storage.crash(), isCrashed);
      assert.throws(() => storage.injectFault({ operation: 'write', code: 'EIO' }), isCrashed);
      assert.throws(() => storage.corrupt('f', 0, (b) => b), isCrashed);
      // The survivor is a separate, working storage, unlocked.
      assert.deepEqual(await survivor.list(), ['f']);
      const relock = await survivor.lock();
      await relock.release();
    });

    it('keeps its description in the survivor', () => {
      const storage = new MemoryStorage({ description: 'node-a' });
      assert.equal(storage.crash().description, 'node-a');
    });
  });

  describe('lock', () => {
    it('is per instance', async () => {
      const a = new MemoryStorage();
      const b = new MemoryStorage();
      const lockA = await a.lock();
      const lockB = await b.lock();
      await assert.rejects(a.lock(), (err: unknown) => isWalshipError(err, 'WAL_LOCKED'));
      await lockA.release();
      await lockB.release();
    });
  });

  describe('corrupt', () => {
    it('changes the byte now and after any crash', async () => {
      for (const mode of WRITE_MODES) {
        const storage = new MemoryStorage();
        const file = await durableFile(storage);
        await file.write(bytes('abcd'), 0);
        await file.datasync();
        await file.write(bytes('WX'), 2);
        storage.corrupt('f', 1, (byte) => byte ^ 0x20);
        storage.corrupt('f', 3, () => 0x21);
        assert.equal(text(storage.readFile('f')), 'aBW!');
        // Byte 3 was durable 'd' and is pending 'X': rot hits both, so no crash brings either back.
        const after = text(storage.crash({ unsyncedWrites: mode, random: seeded(7) }).readFile('f'));
        assert.ok(['aBc!', 'aBW!'].includes(after), `${mode}: ${after}`);
        if (mode === 'lose') assert.equal(after, 'aBc!');
        if (mode === 'keep') assert.equal(after, 'aBW!');
      }
    });

    it('rejects offsets outside the file and non-byte results', async () => {
      const storage = new MemoryStorage();
      const file = await storage.open('f', { create: true });
      await file.write(bytes('ab'), 0);
      assert.throws(() => storage.corrupt('f', 2, (b) => b), isInvalidArgument);
      assert.throws(() => storage.corrupt('f', 0, () => 256), isInvalidArgument);
      assert.throws(() => storage.corrupt('missing', 0, (b) => b), hasCode('ENOENT'));
    });
  });
});

function isDeepEqual(a: unknown, b: unknown): boolean {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}
