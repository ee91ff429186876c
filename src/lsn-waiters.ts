import { WalshipError, abortError } from './errors.js';
import { formatLsn, type Lsn } from './lsn.js';
import { clearTimer, currentScheduler } from './scheduler.js';

interface Waiter {
  readonly lsn: Lsn;
  /** The promise's own functions; a waiter is settled through `#settle`, once. */
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  settled: boolean;
  /** Removes the abort listener and the timer of a wait that has them. */
  cleanup: (() => void) | null;
}

/** Options of a wait for a position: `waitForReplay`, `waitForConsistent`, `waitForApply`. */
export interface WaitOptions {
  /** Gives up with `ABORTED` when aborted; the position may still be reached later. */
  readonly signal?: AbortSignal;
  /** Give up with `TIMEOUT` after this long. */
  readonly timeoutMs?: number;
}

/** The longest timer Node runs as asked (a longer one fires after 1 ms). */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** Abandoned waiters tolerated in the heap before it is compacted. */
const MIN_COMPACT = 64;

/**
 * Promises that resolve once a position reaches an LSN: replay waits, commit waits, WAL
 * flush waits. Waiters sit in a binary min-heap by LSN, so adding one and releasing each
 * costs O(log n), however many wait; an advance never scans waiters it does not release.
 * Waiters abandoned by an abort or a timeout are compacted away once they make up half of
 * the heap, so a client that keeps timing out on a far LSN does not grow memory until the
 * position gets there.
 */
export class LsnWaiters {
  #heap: Waiter[] = [];
  #position: Lsn;
  #failure: unknown = null;
  #abandoned = 0;

  constructor(position: Lsn) {
    this.#position = position;
  }

  get position(): Lsn {
    return this.#position;
  }

  /** Waiters still waiting. */
  get size(): number {
    return this.#heap.length - this.#abandoned;
  }

  /** Waiters held in memory: those waiting plus abandoned ones not yet compacted away. */
  get held(): number {
    return this.#heap.length;
  }

  /** Resolves once the position is at or past `lsn`. */
  wait(lsn: Lsn, options: WaitOptions = {}): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const { timeoutMs } = options;
    if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs >= 0 && timeoutMs <= MAX_TIMEOUT_MS)) {
      return Promise.reject(new WalshipError('INVALID_ARGUMENT', `timeoutMs must be an integer from 0 to ${MAX_TIMEOUT_MS}; got ${String(timeoutMs)}`));
    }
    if (lsn <= this.#position) return Promise.resolve();
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    // A plain wait allocates no closures besides the promise's: WAL flush waits come one per
    // commit, and group commit releases dozens per fdatasync.
    let waiter: Waiter | undefined;
    const promise = new Promise<void>((resolve, reject) => {
      waiter = { lsn, resolve, reject, settled: false, cleanup: null };
    });
    const waiting = waiter as Waiter;
    this.#push(waiting);
    if (signal !== undefined || timeoutMs !== undefined) {
      const onAbort = (): void => this.#abandon(waiting, abortError(signal as AbortSignal));
      signal?.addEventListener('abort', onAbort, { once: true });
      const timer =
        timeoutMs === undefined
          ? undefined
          : currentScheduler().setTimeout(() => this.#abandon(waiting, new WalshipError('TIMEOUT', `waited ${timeoutMs} ms for ${formatLsn(lsn)}; reached ${formatLsn(this.#position)}`)), timeoutMs);
      waiting.cleanup = () => {
        if (timer !== undefined) clearTimer(timer);
        signal?.removeEventListener('abort', onAbort);
      };
    }
    return promise;
  }

  /**
   * Moves the position back to `position` (a state replaced by an older one), keeping every
   * waiter: each waits for an LSN past the old position, so past the new one too.
   */
  rewind(position: Lsn): void {
    if (position < this.#position) this.#position = position;
  }

  /** Moves the position forward (never back) and releases every waiter it reaches, in LSN order. */
  advance(position: Lsn): void {
    if (position <= this.#position) return;
    this.#position = position;
    const heap = this.#heap;
    while (heap.length > 0 && (heap[0] as Waiter).lsn <= position) this.#release(this.#pop() as Waiter);
    // Abandoned waiters (aborted, timed out) are dropped when they reach the top.
    while (heap.length > 0 && (heap[0] as Waiter).settled) this.#release(this.#pop() as Waiter);
  }

  /**
   * Resolves every waiter now, whatever its LSN, leaving the position where it is (later
   * waits still wait for it): for a condition that stopped applying, e.g. synchronous
   * replication turned off.
   */
  releaseAll(): void {
    const waiters = this.#heap;
    this.#heap = [];
    this.#abandoned = 0;
    for (const waiter of waiters) this.#settle(waiter);
  }

  /**
   * Rejects every waiter for an LSN past `lsn` with `error` and keeps the others waiting,
   * leaving the position where it is; later waits are not affected. For positions that were
   * promised and then withdrawn: WAL dropped after `ENOSPC`, whose LSNs the next records
   * reuse, must not release the waiters of the dropped ones. O(n log n), for rare events.
   */
  rejectPast(lsn: Lsn, error: unknown): void {
    const waiters = this.#heap;
    this.#heap = [];
    this.#abandoned = 0;
    const rejected: Waiter[] = [];
    for (const waiter of waiters) {
      // Abandoned waiters go with the rebuild.
      if (waiter.settled) continue;
      if (waiter.lsn > lsn) rejected.push(waiter);
      else this.#push(waiter);
    }
    for (const waiter of rejected) this.#settle(waiter, error);
  }

  /** Rejects every waiter, and every later wait, with `error`. */
  fail(error: unknown): void {
    this.#failure = error;
    const waiters = this.#heap;
    this.#heap = [];
    this.#abandoned = 0;
    for (const waiter of waiters) this.#settle(waiter, error);
  }

  /** Settles a waiter taken off the heap, keeping the count of abandoned ones right. */
  #release(waiter: Waiter): void {
    if (waiter.settled) this.#abandoned--;
    else this.#settle(waiter);
  }

  /** Resolves a waiter, or rejects it with `error`; once. */
  #settle(waiter: Waiter, error?: unknown): void {
    if (waiter.settled) return;
    waiter.settled = true;
    waiter.cleanup?.();
    if (error === undefined) waiter.resolve();
    else waiter.reject(error);
  }

  /** Gives a waiter up (abort, timeout) while it is still in the heap: counted, and compacted away in bulk. */
  #abandon(waiter: Waiter, error: unknown): void {
    if (waiter.settled) return;
    this.#settle(waiter, error);
    this.#abandoned++;
    if (this.#abandoned >= MIN_COMPACT && this.#abandoned * 2 >= this.#heap.length) this.#compact();
  }

  /** Drops every abandoned waiter and rebuilds the heap (O(n), paid for by the abandons). */
  #compact(): void {
    const live = this.#heap.filter((waiter) => !waiter.settled);
    this.#heap = [];
    this.#abandoned = 0;
    for (const waiter of live) this.#push(waiter);
  }

  #push(waiter: Waiter): void {
    const heap = this.#heap;
    heap.push(waiter);
    for (let i = heap.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as Waiter).lsn <= waiter.lsn) break;
      heap[i] = heap[parent] as Waiter;
      heap[parent] = waiter;
      i = parent;
    }
  }

  #pop(): Waiter | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length === 0 || last === undefined) return top;
    heap[0] = last;
    for (let i = 0; ; ) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && (heap[left] as Waiter).lsn < (heap[smallest] as Waiter).lsn) smallest = left;
      if (right < heap.length && (heap[right] as Waiter).lsn < (heap[smallest] as Waiter).lsn) smallest = right;
      if (smallest === i) break;
      [heap[i], heap[smallest]] = [heap[smallest] as Waiter, heap[i] as Waiter];
      i = smallest;
    }
    return top;
  }
}
