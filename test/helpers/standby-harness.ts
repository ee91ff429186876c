import { RECOVERY_EVENT_NAMES } from '../../src/roles/recovery.js';
import assert from 'node:assert/strict';
import { isWalshipError, type Primary, type Standby, type StandbyEvents } from '../../src/index.js';
import { MemoryStorage, type CrashOptions } from '../../src/testing/index.js';
import type { AppliedBatch } from './apps.js';
import { payload, within } from './wal.js';

// Helpers for tests of nodes that stream: the nodes themselves come from createCluster
// (walship/testing), which opens them with test defaults and closes them after each test.

/** A generous guard: a wait that should take milliseconds fails the test instead of hanging it. */
export const HANG_MS = 60_000;

/** Everything a standby emits, in order. */
export interface Recorded {
  readonly name: keyof StandbyEvents;
  readonly payload: Record<string, unknown>;
}

// Every event the standby passes on from its recovery role, and its last one.
const EVENT_NAMES: readonly (keyof StandbyEvents)[] = [...RECOVERY_EVENT_NAMES, 'promoted'];

export function record(standby: Standby): Recorded[] {
  const events: Recorded[] = [];
  for (const name of EVENT_NAMES) {
    standby.on(name, (payload: unknown) => events.push({ name, payload: payload as Record<string, unknown> }));
  }
  return events;
}

export function named(events: readonly Recorded[], name: keyof StandbyEvents): Record<string, unknown>[] {
  return events.filter((e) => e.name === name).map((e) => e.payload);
}

/** Resolves with the payload of the next `name` event that satisfies `accept`. */
export function nextEvent<E extends keyof StandbyEvents>(
  standby: Standby,
  name: E,
  accept: (payload: Parameters<StandbyEvents[E]>[0]) => boolean = () => true,
): Promise<Parameters<StandbyEvents[E]>[0]> {
  return new Promise((resolve) => {
    const listener = (payload: Parameters<StandbyEvents[E]>[0]): void => {
      if (!accept(payload)) return;
      standby.off(name, listener as never);
      resolve(payload);
    };
    standby.on(name, listener as never);
  });
}

/** Waits (with a hang guard) until the standby has replayed everything the primary committed. */
export async function caughtUp(standby: Standby, primary: Primary, what = 'the standby to catch up'): Promise<void> {
  const target = primary.currentLsn;
  await within(
    (async () => {
      while ((standby.replayLsn ?? -1) < target) {
        if (standby.state === 'failed') throw standby.failure ?? new Error('failed');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })(),
    HANG_MS,
    what,
  );
}

/** Commits `count` batches of one or two entries; returns the last commit's end LSN. */
export async function commitMany(primary: Primary, from: number, count: number, size = 700): Promise<number> {
  let lsn = 0;
  for (let i = from; i < from + count; i++) {
    const entries = i % 3 === 0 ? [payload(i, size), payload(i + 1, 17)] : [payload(i, size + (i % 13))];
    lsn = (await primary.commit(entries)).lsn;
  }
  return lsn;
}

/** Two applications applied the same batches at the same positions. */
export function sameSequence(actual: readonly AppliedBatch[], expected: readonly AppliedBatch[], what = 'applied sequence'): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} batches, expected ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (a?.lsn !== e?.lsn || JSON.stringify(a?.entries) !== JSON.stringify(e?.entries)) {
      assert.fail(`${what}: batch ${i} differs: ${JSON.stringify(a?.lsn)} vs ${JSON.stringify(e?.lsn)}`);
    }
  }
}

/** Every file's bytes, for "nothing was written" comparisons. */
export function contents(storage: MemoryStorage): Map<string, string> {
  return new Map(storage.fileNames().map((name) => [name, Buffer.from(storage.readFile(name)).toString('hex')]));
}

export async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return isWalshipError(err) ? err.code : `uncoded ${String(err)}`;
  }
  return 'resolved';
}

/** Waits (with a hang guard) until `standby` has replayed up to `lsn`; throws its failure if it stops. */
export async function replayedTo(standby: Standby, lsn: number, what: string): Promise<void> {
  await within(
    (async () => {
      while ((standby.replayLsn ?? -1) < lsn) {
        if (standby.state === 'failed') throw standby.failure ?? new Error('failed');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })(),
    HANG_MS,
    what,
  );
}

/** A copy of a closed node's `MemoryStorage`, file by file (as `cp -a` would make of a directory). */
export async function copyOf(storage: MemoryStorage): Promise<MemoryStorage> {
  const copy = new MemoryStorage();
  for (const name of storage.fileNames()) {
    const file = await copy.open(name, { create: true });
    await file.write(storage.readFile(name), 0);
    await file.datasync();
    await file.close();
  }
  await copy.syncDirectory();
  return copy;
}

/** Waits (with a hang guard) until the standby has received and flushed the WAL up to `lsn`. */
export async function receivedTo(standby: Standby, lsn: number, what = 'the standby to receive the WAL'): Promise<void> {
  await within(
    (async () => {
      while ((standby.receiveLsn ?? -1) < lsn) {
        if (standby.state === 'failed') throw standby.failure ?? new Error('failed');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })(),
    HANG_MS,
    what,
  );
}

/** What {@link promoteWithPowerLoss} saw: the promotion's outcome, and what the disk kept. */
export interface PromotionCrash {
  /** The promoted primary, or null when the promotion failed. */
  readonly primary: Primary | null;
  /** Why it failed, or null. */
  readonly error: unknown;
  /** True when the promotion needed fewer than `k` storage operations: the power stayed on. */
  readonly completed: boolean;
  /** The storage after the power loss (before operation `k`, or after a completed promotion). */
  readonly survivor: MemoryStorage;
}

/**
 * One step of a promotion crash sweep: the power fails before storage operation `k` of
 * `node.promote()` and the durable work it leaves to its first moments (the end-of-recovery
 * record's flush, the control file's second copy): once `promote()` resolved, the harness
 * waits for that record's flush and until the storage is quiet, so that the sweep's `k` runs
 * through those operations too. A promotion that completes first meets a power loss after it
 * (all of it must be durable by then). `beforePowerLoss` sees the outcome while the promoted
 * primary is still open. Both nodes are closed before it resolves.
 */
export async function promoteWithPowerLoss(
  node: Standby,
  storage: MemoryStorage,
  k: number,
  crash: Omit<CrashOptions, 'random'> & { random: () => number },
  what: string,
  beforePowerLoss?: (outcome: { primary: Primary | null; error: unknown; completed: boolean }) => void,
): Promise<PromotionCrash> {
  const crashed = storage.crashAfter(k, crash);
  const outcome = await within(
    node.promote().then(
      (primary) => ({ primary, error: null }),
      (error: unknown) => ({ primary: null, error }),
    ),
    HANG_MS,
    `${what}: the promotion to end`,
  );
  if (outcome.primary !== null && !storage.crashed) {
    await outcome.primary.wal.flush().catch(() => undefined);
    // MemoryStorage settles in microtasks: a few quiet turns mean the follow-up writes are done.
    for (let quiet = 0, turns = 0, count = storage.operationCount; quiet < 3 && turns < 1000 && !storage.crashed; turns++) {
      await new Promise((resolve) => setImmediate(resolve));
      if (storage.operationCount === count) quiet++;
      else [quiet, count] = [0, storage.operationCount];
    }
  }
  const fired = await Promise.race([crashed, new Promise<null>((resolve) => setImmediate(() => resolve(null)))]);
  const completed = fired === null;
  beforePowerLoss?.({ ...outcome, completed });
  const survivor = fired ?? storage.crash(crash);
  await within(outcome.primary?.close().catch(() => undefined) ?? Promise.resolve(), HANG_MS, `${what}: closing the promoted primary`);
  await within(node.close().catch(() => undefined), HANG_MS, `${what}: closing the crashed node`);
  return { ...outcome, completed, survivor };
}
