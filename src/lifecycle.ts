/**
 * What every node's shutdown shares: PostgreSQL's fast shutdown by default, its immediate
 * shutdown once the caller's signal aborts.
 */

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
