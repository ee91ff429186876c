import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { seededRandom, type CrashOptions, type MemoryStorage } from '../../src/testing/index.js';

/**
 * Crash patterns for `MemoryStorage` crash tests: what survives of unsynced bytes (lost,
 * kept, torn, whole sectors) and of unsynced creates/renames/removes (lost, kept, a prefix).
 */
export const CRASH_MODES: readonly Omit<CrashOptions, 'random'>[] = [
  { unsyncedWrites: 'lose', unsyncedMetadata: 'lose' },
  { unsyncedWrites: 'keep', unsyncedMetadata: 'keep' },
  { unsyncedWrites: 'keep', unsyncedMetadata: 'lose' },
  { unsyncedWrites: 'lose', unsyncedMetadata: 'keep' },
  { unsyncedWrites: 'torn', unsyncedMetadata: 'prefix' },
  { unsyncedWrites: 'sectors', unsyncedMetadata: 'prefix' },
];

/** One crash point of a {@link sweepCrashPoints} sweep. */
export interface CrashPoint {
  /** The crash comes right before this storage operation of the workload (1 = its first). */
  readonly operation: number;
  /** Index of the crash mode in {@link CRASH_MODES}. */
  readonly modeIndex: number;
  /** The crash mode with a seeded `random` of its own: the same point replays the same crash. */
  readonly crash: CrashOptions & { random: () => number };
  /** Names the point in assertion messages. */
  readonly what: string;
}

/** Which crash points a sweep tries. */
export interface CrashSweepPlan {
  /**
   * Crash modes (indexes into {@link CRASH_MODES}) swept at all.
   * @defaultValue every mode
   */
  readonly modes?: readonly number[];
  /**
   * Crash modes (indexes into {@link CRASH_MODES}) swept at every operation.
   * @defaultValue every mode
   */
  readonly every?: readonly number[];
  /**
   * In the other modes, every `stride`-th operation (1, 1 + stride, …) and the completing run:
   * for workloads whose full sweep in every mode would take too long.
   */
  readonly stride?: number;
  /** Distinguishes the seeded crash choices of sweeps that share points. @defaultValue 0 */
  readonly seed?: number;
  /** A workload still not complete after this many operations is a failure. @defaultValue 2000 */
  readonly maxOperations?: number;
}

/**
 * Runs `attempt` at crash point k = 1, 2, … of each crash mode until an attempt reports that
 * the workload completed with no crash (that last point is the power loss after a complete
 * workload). `attempt` sets the workload up afresh, schedules the crash
 * (`storage.crashAfter(point.operation, point.crash)`, or {@link runToPowerLoss}), recovers and
 * checks. Returns how many crash points were tried.
 */
export async function sweepCrashPoints(plan: CrashSweepPlan, attempt: (point: CrashPoint) => Promise<{ completed: boolean }>): Promise<number> {
  const every = new Set(plan.every ?? CRASH_MODES.keys());
  const stride = plan.stride ?? 1;
  const maxOperations = plan.maxOperations ?? 2000;
  const seed = plan.seed ?? 0;
  let points = 0;
  const modes = new Set(plan.modes ?? CRASH_MODES.keys());
  for (const [modeIndex, mode] of CRASH_MODES.entries()) {
    if (!modes.has(modeIndex)) continue;
    const step = every.has(modeIndex) ? 1 : stride;
    for (let operation = 1; ; operation += step) {
      const what = `crash ${mode.unsyncedWrites}/${mode.unsyncedMetadata} before operation ${operation}`;
      assert.ok(operation <= maxOperations, `${what}: the workload never completes`);
      const random = seededRandom(operation * 7919 + modeIndex * 104_729 + seed * 1_299_709);
      points++;
      const { completed } = await attempt({ operation, modeIndex, crash: { ...mode, random }, what });
      if (completed) break;
    }
  }
  return points;
}

/** What {@link runToPowerLoss} found. */
export interface PowerLoss<T> {
  /** The storage as found after the power loss. */
  readonly survivor: MemoryStorage;
  /** True when the workload ran to its end before the power went out (the crash point lay past it). */
  readonly completed: boolean;
  /** The workload's result when it resolved, else undefined. */
  readonly result: T | undefined;
  /** What the workload rejected with, or null. */
  readonly error: unknown;
}

/**
 * Runs `workload` on `storage` with a crash scheduled at `point`, then cuts the power if it
 * has not gone out yet: a workload that resolves before its crash point is followed by a
 * power loss in the same mode.
 */
export async function runToPowerLoss<T>(storage: MemoryStorage, point: CrashPoint, workload: () => Promise<T>): Promise<PowerLoss<T>> {
  const crashed = storage.crashAfter(point.operation, point.crash);
  const outcome = await workload().then(
    (result) => ({ result, error: null as unknown }),
    (error: unknown) => ({ result: undefined, error }),
  );
  const completed = !storage.crashed;
  const survivor = completed ? storage.crash(point.crash) : await crashed;
  // crash() settles the schedule too.
  await crashed;
  return { survivor, completed, ...outcome };
}

/** Reports a sweep's size in the test's output, in one wording for every sweep. */
export function reportCrashPoints(t: TestContext, points: number, detail?: string): void {
  t.diagnostic(detail === undefined ? `${points} crash points` : `${points} crash points; ${detail}`);
}
