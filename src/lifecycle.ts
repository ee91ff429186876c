/**
 * What every node's shutdown shares: PostgreSQL's fast shutdown by default, its immediate
 * shutdown once the caller's signal aborts.
 */

import type { EventEmitter } from 'eventemitter3';
import { WalshipError } from './errors.js';
import { SafeEmitter } from './events.js';

/** Options of `Primary.close` and `Standby.close`. */
export interface CloseOptions {
  /**
   * Turns the fast shutdown into an immediate one once it aborts: no more waiting for
   * commits in flight, checkpoints or standbys' confirmations (e.g. `AbortSignal.timeout(5_000)`).
   */
  readonly signal?: AbortSignal;
}

/** Runs `action` once `signal` aborts (at once if it has). */
export function whenAborted(signal: AbortSignal, action: () => void): void {
  if (signal.aborted) action();
  else signal.addEventListener('abort', action, { once: true });
}

/** Waits for `promise`, or no longer once `signal` aborts (what `promise` still does is not waited for). */
export async function untilAborted(promise: Promise<unknown>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  let onAbort!: () => void;
  const aborted = new Promise<void>((resolve) => (onAbort = resolve));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.race([promise.then(() => undefined, () => undefined), aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * One node's lifecycle, written once for every class that closes: `close()` runs its work once
 * and every call shares that promise; once closing has begun, calls are refused with one coded
 * error, `WAL_CLOSED`, naming the node.
 */
export class Lifecycle {
  readonly #what: string;
  #closing: Promise<void> | null = null;

  /** `what`: how errors name the node (`'primary'`, `'standby'`). */
  constructor(what: string) {
    this.#what = what;
  }

  /** Whether `close()` has been called. */
  get closing(): boolean {
    return this.#closing !== null;
  }

  /** The promise of the close in progress (or done), null before. */
  get closed(): Promise<void> | null {
    return this.#closing;
  }

  /** `WAL_CLOSED`, naming the node (and `detail`, when given). */
  closedError(detail?: string): WalshipError {
    return new WalshipError('WAL_CLOSED', `the ${this.#what} is ${this.#closing === null ? 'closed' : 'closed or closing'}${detail === undefined ? '' : `: ${detail}`}`);
  }

  /** Throws {@link closedError} once closing has begun. */
  assertOpen(detail?: string): void {
    if (this.#closing !== null) throw this.closedError(detail);
  }

  /** Runs `work` on the first call; every call returns the same promise. */
  close(work: () => Promise<void>): Promise<void> {
    this.#closing ??= work();
    return this.#closing;
  }
}

/**
 * The base of the public node classes (`Primary`, `Standby`): typed events with safe emit,
 * and `await using node = await Primary.open(…)` closing it.
 */
export abstract class NodeBase<Events extends EventEmitter.ValidEventTypes> extends SafeEmitter<Events> {
  /** Closes the node (see each class). */
  abstract close(options?: CloseOptions): Promise<void>;

  /** Closes the node with default options, so that `await using` closes it at the end of its scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
