import { WalshipError, abortError } from './errors.js';
import { formatLsn, type Lsn } from './lsn.js';

interface Waiter {
  readonly lsn: Lsn;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  settled: boolean;
}

/** Options of a wait for a position: `waitForReplay`, `waitForConsistent`, `waitForApply`. */
export interface WaitOptions {
  readonly signal?: AbortSignal;
  /** Give up with `TIMEOUT` after this long. */
  readonly timeoutMs?: number;
}

/** The longest timer Node runs as asked (a longer one fires after 1 ms). */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** Abandoned waiters tolerated in the heap before it is compacted. */
const MIN_COMPACT = 64;

/**
 * Promises that resolve once a position reaches an LSN: replay waits, commit waits. Waiters
 * sit in a binary min-heap by LSN, so adding one and releasing each costs O(log n), however
 * many wait; an advance never scans waiters it does not release. Waiters abandoned by an
 * abort or a timeout are compacted away once they make up half of the heap, so a client
 * that keeps timing out on a far LSN does not grow memory until the position gets there.
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
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const settle = (error?: unknown): void => {
        if (waiter.settled) return;
        waiter.settled = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (error === undefined) resolve();
        else reject(error);
      };
      // Given up while still in the heap: counted, and compacted away in bulk.
      const abandon = (error: unknown): void => {
        if (waiter.settled) return;
        settle(error);
        this.#abandoned++;
        if (this.#abandoned >= MIN_COMPACT && this.#abandoned * 2 >= this.#heap.length) this.#compact();
      };
      const onAbort = (): void => abandon(abortError(signal as AbortSignal));
      const waiter: Waiter = { lsn, resolve: () => settle(), reject: (error) => settle(error), settled: false };
      this.#push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => abandon(new WalshipError('TIMEOUT', `waited ${timeoutMs} ms for ${formatLsn(lsn)}; reached ${formatLsn(this.#position)}`)), timeoutMs);
      }
    });
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
    for (const waiter of waiters) waiter.resolve();
  }

  /** Rejects every waiter, and every later wait, with `error`. */
  fail(error: unknown): void {
    this.#failure = error;
    const waiters = this.#heap;
    this.#heap = [];
    this.#abandoned = 0;
    for (const waiter of waiters) waiter.reject(error);
  }

  /** Settles a waiter taken off the heap, keeping the count of abandoned ones right. */
  #release(waiter: Waiter): void {
    if (waiter.settled) this.#abandoned--;
    else waiter.resolve();
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
