import { AsyncLocalStorage } from 'node:async_hooks';
import { setTimeout as sleepFor } from 'node:timers/promises';

/**
 * A timer of a {@link Scheduler}: Node's `Timeout` fits, and so does a virtual one. `unref()`
 * lets the process exit while it is pending (a virtual scheduler ignores it).
 */
export interface SchedulerTimer {
  /** Lets the process exit while this timer is pending. */
  unref(): this;
}

/** Options of {@link Scheduler.sleep}. */
export interface SleepOptions {
  /** Cuts the sleep short with an `AbortError`. */
  readonly signal?: AbortSignal;
  /** `false` lets the process exit while sleeping. @defaultValue true */
  readonly ref?: boolean;
}

/** A timer that cancels itself, as a virtual scheduler's do. */
interface CancellableTimer extends SchedulerTimer {
  cancel(): void;
}

/**
 * Cancels a timer of any scheduler's {@link Scheduler.setTimeout} or
 * {@link Scheduler.setInterval}, whichever scheduler the caller now runs on; `undefined`
 * and `null` are ignored.
 */
export function clearTimer(timer: SchedulerTimer | null | undefined): void {
  if (timer === undefined || timer === null) return;
  if ('cancel' in timer && typeof (timer as CancellableTimer).cancel === 'function') (timer as CancellableTimer).cancel();
  else clearTimeout(timer as unknown as NodeJS.Timeout);
}

/**
 * Where walship reads the time and sets its timers. Production code runs on Node's clock and
 * timers; the test kit's `VirtualScheduler` runs a whole cluster on virtual time, so that
 * minutes of simulated time take milliseconds and the same seed gives the same run, step for
 * step.
 *
 * walship never calls `setTimeout`, `Date.now()` and the like directly: it asks for the
 * scheduler of the node whose work is running.
 */
export interface Scheduler {
  /** True for a scheduler that decides the order of events itself (virtual time). */
  readonly virtual: boolean;
  /** Wall-clock milliseconds since the epoch, as `Date.now()`. */
  now(): number;
  /** Monotonic milliseconds, as `performance.now()`: for durations and deadlines. */
  monotonic(): number;
  /** Calls `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): SchedulerTimer;
  /** Calls `fn` every `ms` milliseconds. */
  setInterval(fn: () => void, ms: number): SchedulerTimer;
  /**
   * Calls `fn` once the current work and its promise continuations are done, as
   * `setImmediate`. It cannot be cancelled: a callback that may come too late checks its state.
   */
  setImmediate(fn: () => void): void;
  /**
   * Resolves after `ms` milliseconds, or rejects with an `AbortError` once `signal` aborts,
   * as `timers/promises`' `setTimeout`; `ref: false` lets the process exit meanwhile.
   */
  sleep(ms: number, options?: SleepOptions): Promise<void>;
  /** A signal that aborts with a `TimeoutError` after `ms` milliseconds, as `AbortSignal.timeout(ms)`. */
  timeoutSignal(ms: number): AbortSignal;
}

/** Node's own clock and timers. */
export const REAL_SCHEDULER: Scheduler = Object.freeze({
  virtual: false,
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  setInterval: (fn: () => void, ms: number) => setInterval(fn, ms),
  setImmediate: (fn: () => void) => void setImmediate(fn),
  sleep: (ms: number, options?: SleepOptions) => sleepFor(ms, undefined, options),
  timeoutSignal: (ms: number) => AbortSignal.timeout(ms),
});

const ambient = new AsyncLocalStorage<Scheduler>();

/**
 * The scheduler of the work now running: the one {@link runWithScheduler} entered (a
 * simulated node's), else {@link REAL_SCHEDULER}. Until a simulation first enters one, this
 * costs a property read.
 */
export function currentScheduler(): Scheduler {
  return ambient.getStore() ?? REAL_SCHEDULER;
}

/**
 * Runs `fn` on `scheduler`: its timers and everything they start, and every promise
 * continuation of `fn`, read {@link currentScheduler} as `scheduler`.
 */
export function runWithScheduler<T>(scheduler: Scheduler, fn: () => T): T {
  if (scheduler === REAL_SCHEDULER && ambient.getStore() === undefined) return fn();
  return ambient.run(scheduler, fn);
}

/** {@link Scheduler.sleep} on top of the scheduler's own timers. */
export function sleepOn(scheduler: Scheduler, ms: number, options: SleepOptions = {}): Promise<void> {
  const { signal } = options;
  if (signal?.aborted === true) return Promise.reject(abortError(signal));
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimer(timer);
      reject(abortError(signal));
    };
    const timer = scheduler.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** What `timers/promises` rejects with when its signal aborts. */
function abortError(signal: AbortSignal | undefined): Error {
  return Object.assign(new Error('The operation was aborted', { cause: signal?.reason }), { name: 'AbortError', code: 'ABORT_ERR' });
}

/** `scheduler`'s wall clock as a function, as `Date.now` is: the real one is `Date.now` itself. */
export function schedulerClock(scheduler: Scheduler): () => number {
  return scheduler === REAL_SCHEDULER ? Date.now : () => scheduler.now();
}
