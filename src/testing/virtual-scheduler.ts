import { runWithScheduler, sleepOn, type Scheduler, type SchedulerTimer, type SleepOptions } from '../scheduler.js';

/** Options of {@link VirtualScheduler}. */
export interface VirtualSchedulerOptions {
  /** The wall-clock time the run starts at, in milliseconds since the epoch. @defaultValue 2026-01-01T00:00:00Z */
  readonly startTime?: number;
}

/** A pending callback of a {@link VirtualScheduler}. */
class VirtualTimer implements SchedulerTimer {
  cancelled = false;
  constructor(
    public at: number,
    public seq: number,
    readonly fn: () => void,
    readonly interval: number,
  ) {}

  unref(): this {
    return this;
  }

  cancel(): void {
    this.cancelled = true;
  }
}

/**
 * Virtual time for a simulated cluster: timers, timeouts, intervals and `setImmediate` of
 * every node run on this clock instead of Node's, so a run that covers minutes of simulated
 * time takes milliseconds, and the same inputs give the same run, event for event.
 *
 * It fires one event at a time, earliest first (ties in the order they were set), each in a
 * turn of Node's event loop of its own, after the previous event's promise continuations
 * have all run; then the clock jumps to the next event. That order is deterministic as long
 * as nothing in the run waits for real time or real I/O: use `MemoryStorage`,
 * `MemoryNetwork`, and {@link VirtualScheduler.sleep} instead of a real sleep.
 *
 * Work runs on it inside {@link VirtualScheduler.run}; a simulated cluster enters it for you.
 */
export class VirtualScheduler implements Scheduler {
  /** Always true: this scheduler decides the order of events itself. */
  readonly virtual = true;
  readonly #startTime: number;
  #now: number;
  #seq = 0;
  #fired = 0;
  #driving = false;
  #stopped = false;
  readonly #heap: VirtualTimer[] = [];

  constructor(options: VirtualSchedulerOptions = {}) {
    this.#startTime = options.startTime ?? Date.UTC(2026, 0, 1);
    this.#now = this.#startTime;
  }

  /** Virtual wall-clock milliseconds since the epoch. */
  now(): number {
    return this.#now;
  }

  /** Virtual milliseconds since the run started. */
  monotonic(): number {
    return this.#now - this.#startTime;
  }

  /** How many callbacks have fired so far: a measure of how much the run did. */
  get eventsFired(): number {
    return this.#fired;
  }

  /** How many timers are pending. */
  get pending(): number {
    return this.#heap.reduce((count, timer) => count + (timer.cancelled ? 0 : 1), 0);
  }

  /** Runs `fn` on this scheduler: everything it starts reads this clock and sets timers on it. */
  run<T>(fn: () => T): T {
    return runWithScheduler(this, fn);
  }

  /** Calls `fn` once, `ms` virtual milliseconds from now. */
  setTimeout(fn: () => void, ms: number): SchedulerTimer {
    return this.#add(fn, ms, 0);
  }

  /** Calls `fn` every `ms` virtual milliseconds (at least 1). */
  setInterval(fn: () => void, ms: number): SchedulerTimer {
    return this.#add(fn, ms, Math.max(1, ms));
  }

  /** Calls `fn` at the current virtual time, after what is already due now. */
  setImmediate(fn: () => void): void {
    this.#add(fn, 0, 0);
  }

  /** Resolves after `ms` virtual milliseconds, or rejects with an `AbortError` once the signal aborts. */
  sleep(ms: number, options?: SleepOptions): Promise<void> {
    return sleepOn(this, ms, options);
  }

  /** A signal that aborts with a `TimeoutError` after `ms` virtual milliseconds. */
  timeoutSignal(ms: number): AbortSignal {
    const controller = new AbortController();
    this.setTimeout(() => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), ms);
    return controller.signal;
  }

  /** Stops the clock for good: pending and later timers never fire. */
  stop(): void {
    this.#stopped = true;
    this.#heap.length = 0;
  }

  #add(fn: () => void, ms: number, interval: number): VirtualTimer {
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    const timer = new VirtualTimer(this.#now + delay, this.#seq++, fn, interval);
    if (this.#stopped) return timer;
    this.#push(timer);
    if (!this.#driving) {
      this.#driving = true;
      setImmediate(this.#step);
    }
    return timer;
  }

  /** Fires the earliest pending timer, in a turn of Node's event loop after all continuations ran. */
  readonly #step = (): void => {
    let timer = this.#pop();
    while (timer !== undefined && timer.cancelled) timer = this.#pop();
    if (timer === undefined) {
      this.#driving = false;
      return;
    }
    this.#now = Math.max(this.#now, timer.at);
    if (timer.interval > 0) {
      timer.at = this.#now + timer.interval;
      timer.seq = this.#seq++;
      this.#push(timer);
    }
    this.#fired++;
    // The next step first: a callback that throws fails the process as a real timer's
    // would, but does not stop the clock of what else is pending.
    setImmediate(this.#step);
    runWithScheduler(this, timer.fn);
  };

  #push(timer: VirtualTimer): void {
    const heap = this.#heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!earlier(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  #pop(): VirtualTimer | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && earlier(heap[left]!, heap[least]!)) least = left;
      if (right < heap.length && earlier(heap[right]!, heap[least]!)) least = right;
      if (least === i) return top;
      [heap[i], heap[least]] = [heap[least]!, heap[i]!];
      i = least;
    }
  }
}

function earlier(a: VirtualTimer, b: VirtualTimer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
