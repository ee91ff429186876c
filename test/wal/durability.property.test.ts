import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NodeStorage, WalLog, type Storage, type WalRecord } from '../../src/index.js';
import { MemoryStorage, type CrashOptions } from '../../src/testing/index.js';
import { mulberry32 } from '../helpers/random.js';
import { tempDir } from '../helpers/temp-dir.js';
import { SMALL_SEGMENT, readAll } from '../helpers/wal.js';

/**
 * The durability contract, checked on random workloads cut short by random power losses:
 * 1. every record whose flush resolved is intact after recovery (unless the workload itself
 *    removed its segment);
 * 2. recovery yields only records that were appended, in append order, with no gaps;
 * 3. appends continue correctly after recovery.
 */

type Op =
  | { kind: 'commit'; sizes: number[]; channel: boolean }
  | { kind: 'append'; size: number }
  | { kind: 'flush' }
  | { kind: 'settle' }
  | { kind: 'remove'; fraction: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('commit' as const), sizes: fc.array(fc.integer({ min: 0, max: 9000 }), { minLength: 1, maxLength: 3 }), channel: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('append' as const), size: fc.integer({ min: 0, max: 5000 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'settle' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }) },
);

interface Appended {
  lsn: number;
  endLsn: number;
  entries: { data: Buffer; channel?: string }[];
}

/** Everything a workload did, as the checks need it. */
class Model {
  readonly appended: Appended[] = [];
  readonly byLsn = new Map<number, number>();
  /** Highest endLsn whose flush resolved: every record ending at or below it was acknowledged. */
  acknowledged = 0;
  /** Highest LSN the workload asked to remove below. */
  removedBelow = 0;
  counter = 0;

  entry(size: number, channel: boolean): { data: Buffer; channel?: string } {
    const id = this.counter++;
    const data = Buffer.alloc(size + 4);
    data.writeUInt32LE(id, 0);
    for (let i = 4; i < data.length; i++) data[i] = (id * 13 + i) & 0xff;
    return channel ? { data, channel: `ch${id % 5}` } : { data };
  }

  record(result: { lsn: number; endLsn: number }, entries: { data: Buffer; channel?: string }[]): void {
    this.byLsn.set(result.lsn, this.appended.length);
    this.appended.push({ lsn: result.lsn, endLsn: result.endLsn, entries });
  }

  ack(lsn: number): void {
    this.acknowledged = Math.max(this.acknowledged, lsn);
  }
}

async function runWorkload(log: WalLog, ops: readonly Op[], model: Model): Promise<void> {
  const pending: Promise<unknown>[] = [];
  for (const op of ops) {
    try {
      switch (op.kind) {
        case 'commit': {
          const entries = op.sizes.map((size) => model.entry(size, op.channel));
          const result = log.append(entries);
          model.record(result, entries);
          pending.push(log.waitForFlush(result.endLsn).then(() => model.ack(result.endLsn)));
          break;
        }
        case 'append': {
          const entries = [model.entry(op.size, false)];
          model.record(log.append(entries), entries);
          break;
        }
        case 'flush':
          model.ack(await log.flush());
          break;
        case 'settle':
          await Promise.allSettled(pending.splice(0));
          break;
        case 'remove': {
          const acked = model.appended.filter((a) => a.endLsn <= model.acknowledged);
          const target = acked[Math.floor(op.fraction * acked.length)];
          if (target !== undefined) {
            model.removedBelow = Math.max(model.removedBelow, target.lsn);
            await log.removeSegmentsBefore(target.lsn);
          }
          break;
        }
      }
    } catch {
      // After the power loss every call fails; the checks only trust what resolved before.
    }
  }
  await Promise.allSettled(pending);
}

/** Checks the recovered records against the model; returns them. */
async function checkRecovered(log: WalLog, model: Model): Promise<WalRecord[]> {
  const records = await readAll(log);
  let previous = -1;
  for (const record of records) {
    const index = model.byLsn.get(record.lsn);
    assert.ok(index !== undefined, `recovered a record at ${record.lsn} that was never appended`);
    if (previous >= 0) assert.equal(index, previous + 1, 'recovered records must follow each other with no gap');
    previous = index;
    const expected = model.appended[index] as Appended;
    assert.equal(record.endLsn, expected.endLsn);
    assert.deepEqual(
      record.entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })),
      expected.entries.map((e) => ({ data: e.data, channel: e.channel })),
    );
  }
  const present = new Set(records.map((r) => r.lsn));
  for (const appended of model.appended) {
    if (appended.endLsn > model.acknowledged) continue;
    if (present.has(appended.lsn)) continue;
    assert.ok(
      appended.lsn < model.removedBelow && appended.lsn < log.oldestLsn,
      `acknowledged record at ${appended.lsn} (acknowledged up to ${model.acknowledged}) was lost`,
    );
  }
  return records;
}

/** Appends after recovery, reopens cleanly, and checks that old and new records read back in order. */
async function checkContinues(storage: Storage, log: WalLog, model: Model, before: number): Promise<void> {
  const added: Appended[] = [];
  for (let i = 0; i < 5; i++) {
    const entries = [model.entry(3000 * i, false)];
    const result = log.append(entries);
    added.push({ ...result, entries });
  }
  await log.close();
  const reopened = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT });
  const records = await readAll(reopened);
  assert.equal(records.length, before + added.length);
  assert.deepEqual(
    records.slice(-added.length).map((r) => [r.lsn, Buffer.from(r.entries[0]?.data ?? [])]),
    added.map((a) => [a.lsn, a.entries[0]?.data]),
  );
  await reopened.close();
}

const crashArb = fc.record({
  unsyncedWrites: fc.constantFrom('lose' as const, 'keep' as const, 'torn' as const, 'sectors' as const),
  unsyncedMetadata: fc.constantFrom('lose' as const, 'keep' as const, 'prefix' as const),
  seed: fc.integer({ min: 1, max: 2 ** 31 }),
});

function crashOptions(c: { unsyncedWrites: CrashOptions['unsyncedWrites']; unsyncedMetadata: CrashOptions['unsyncedMetadata']; seed: number }): CrashOptions {
  return { unsyncedWrites: c.unsyncedWrites ?? 'torn', unsyncedMetadata: c.unsyncedMetadata ?? 'prefix', random: mulberry32(c.seed) };
}

describe('durability under power loss (MemoryStorage, seeded)', () => {
  it('keeps every acknowledged record, invents none, and continues after recovery', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 600 }),
        crashArb,
        fc.option(fc.integer({ min: 1, max: 80 }), { nil: undefined }),
        (ops, crashAt, crash, crashDuringRecoveryAt) =>
          crashScenario(ops, crashAt, crash, crashDuringRecoveryAt).catch((err: unknown) => {
            if (process.env['FC_PATH'] !== undefined) console.error(err);
            throw err;
          }),
      ),
      { seed: 20_261_122, numRuns: 1000, ...(process.env['FC_PATH'] === undefined ? {} : { path: process.env['FC_PATH'] }) },
    );
  });
});

async function crashScenario(ops: Op[], crashAt: number, crash: { unsyncedWrites: CrashOptions['unsyncedWrites']; unsyncedMetadata: CrashOptions['unsyncedMetadata']; seed: number }, crashDuringRecoveryAt: number | undefined): Promise<void> {
  const storage = new MemoryStorage();
  const model = new Model();
  const log = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT, recycleSegments: 2 });
  const crashed = storage.crashAfter(crashAt, crashOptions(crash));
  await runWorkload(log, ops, model);
  let survivor = await powerLoss(storage, crashed, crashOptions(crash));
  // Closing a log whose disk has lost power fails (its final flush cannot happen).
  await log.close().catch(() => undefined);

  // Optionally lose power again in the middle of recovery itself.
  if (crashDuringRecoveryAt !== undefined) {
    const options = crashOptions({ ...crash, seed: crash.seed + 1 });
    const again = survivor.crashAfter(crashDuringRecoveryAt, options);
    const attempt = await WalLog.open({ storage: survivor, segmentSize: SMALL_SEGMENT }).catch(() => null);
    await attempt?.close().catch(() => undefined);
    survivor = await powerLoss(survivor, again, options);
  }

  const recovered = await WalLog.open({ storage: survivor, segmentSize: SMALL_SEGMENT });
  const records = await checkRecovered(recovered, model);
  await checkContinues(survivor, recovered, model, records.length);
}

/** The storage after the scheduled power loss, cutting the power now if it has not happened yet. */
async function powerLoss(storage: MemoryStorage, scheduled: Promise<MemoryStorage>, options: CrashOptions): Promise<MemoryStorage> {
  try {
    storage.crash(options);
  } catch {
    // Already crashed: `scheduled` holds the survivor.
  }
  return scheduled;
}

describe('durability on real files (NodeStorage)', () => {
  it('keeps every record through clean close and reopen', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
        const { dir, cleanup } = await tempDir();
        try {
          const storage = new NodeStorage(dir);
          const model = new Model();
          const log = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT });
          await runWorkload(log, ops, model);
          await log.close();
          // A clean close makes everything appended durable.
          model.ack(model.appended.at(-1)?.endLsn ?? 0);
          const reopened = await WalLog.open({ dir, segmentSize: SMALL_SEGMENT });
          const records = await checkRecovered(reopened, model);
          assert.equal(records.at(-1)?.lsn, model.appended.at(-1)?.lsn);
          await checkContinues(storage, reopened, model, records.length);
        } finally {
          await cleanup();
        }
      }),
      { seed: 7, numRuns: 15 },
    );
  });
});
