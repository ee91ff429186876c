/**
 * Runs many seeded scenarios of the cluster simulator (`runScenario`) in parallel child
 * processes, one per core: the CI sweep (scenario-sweep.test.ts) and `npm run soak` use it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

/** What one worker runs: every `stride`-th seed from `from + offset`, below `from + count`. */
export interface SweepAssignment {
  readonly from: number;
  readonly count: number;
  readonly offset: number;
  readonly stride: number;
  readonly steps: number;
  readonly shrink: boolean;
  /** The scenarios' `earlySend` option (early WAL, with slow-disk faults). */
  readonly earlySend: boolean;
}

/** A violation a sweep found: the scenario's seed and its report (and a shrunk one). */
export interface SweepViolation {
  readonly seed: number;
  readonly report: string;
  readonly shrunk?: string;
}

/** What a worker tells its parent. */
export interface WorkerMessage {
  readonly kind: 'progress';
  readonly done: number;
  readonly acknowledged: number;
  readonly calls: number;
  readonly violation: SweepViolation | null;
}

/** Options of {@link sweep}. */
export interface SweepOptions {
  /** How many scenarios, with seeds `from` … `from + scenarios - 1`. */
  readonly scenarios: number;
  /** @defaultValue 1 */
  readonly from?: number;
  /** Child processes. @defaultValue the machine's parallelism */
  readonly workers?: number;
  /** Steps per scenario. @defaultValue 40 */
  readonly steps?: number;
  /** Shrink violations. @defaultValue true */
  readonly shrink?: boolean;
  /** Run every scenario with early WAL (`runScenario`'s `earlySend`). @defaultValue false */
  readonly earlySend?: boolean;
  /** Called after each batch of finished scenarios. */
  readonly onProgress?: (progress: SweepProgress) => void;
  /** The worker module each child runs (the sweep's own tests give a stand-in). @defaultValue scenario-worker.ts */
  readonly worker?: string;
}

/** How far a sweep is. */
export interface SweepProgress {
  readonly done: number;
  readonly scenarios: number;
  readonly elapsedMs: number;
  readonly acknowledged: number;
  readonly calls: number;
  readonly violations: readonly SweepViolation[];
}

const WORKER = fileURLToPath(new URL('./scenario-worker.ts', import.meta.url));

/**
 * Runs the scenarios and resolves with the totals. A worker that dies rejects the sweep, naming
 * its seeds, once the other workers are stopped: they would run their share to the end, and a
 * child left running keeps the caller's process alive after the failure.
 */
export async function sweep(options: SweepOptions): Promise<SweepProgress> {
  const { scenarios, from = 1, steps = 40, shrink = true, earlySend = false, worker = WORKER } = options;
  const workers = Math.max(1, Math.min(options.workers ?? availableParallelism(), scenarios));
  const began = performance.now();
  let done = 0;
  let acknowledged = 0;
  let calls = 0;
  const violations: SweepViolation[] = [];
  const progress = (): SweepProgress => ({ done, scenarios, elapsedMs: performance.now() - began, acknowledged, calls, violations });
  const children: ChildProcess[] = [];
  const exits = Array.from({ length: workers }, (_, offset) => {
    const assignment: SweepAssignment = { from, count: scenarios, offset, stride: workers, steps, shrink, earlySend };
    const child = fork(worker, [JSON.stringify(assignment)], { execArgv: ['--conditions=walship-source', '--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.push(child);
    child.on('message', (message: WorkerMessage) => {
      done += message.done;
      acknowledged += message.acknowledged;
      calls += message.calls;
      if (message.violation !== null) violations.push(message.violation);
      options.onProgress?.(progress());
    });
    return new Promise<void>((resolve, reject) => {
      const seeds = `${from + offset}${from + offset + workers < from + scenarios ? `, ${from + offset + workers}` : ''}${from + offset + 2 * workers < from + scenarios ? ', …' : ''}`;
      child.on('error', (err) => reject(new Error(`sweep worker ${offset} (seeds ${seeds}) failed: ${err.message}`, { cause: err })));
      // 'close', not 'exit': it comes after the IPC channel closed, so after the worker's last message.
      child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`sweep worker ${offset} (seeds ${seeds}) exited with ${signal ?? code}; its output above names the seed it was running`))));
    });
  });
  try {
    await Promise.all(exits);
  } catch (err) {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill();
    await Promise.allSettled(exits);
    throw err;
  }
  return progress();
}
