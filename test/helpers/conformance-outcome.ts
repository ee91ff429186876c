/**
 * What the conformance suites' self-tests share: running a suite with adapters that record
 * each case's outcome instead of registering tests, and describing the failures.
 */
import type { ConformanceAdapters } from '../../src/testing/index.js';

/** The cases of one suite run, by outcome; a failed case with the first line of its error. */
export interface Outcome {
  readonly passed: string[];
  readonly failed: Map<string, string>;
  readonly skipped: string[];
}

/**
 * Registers a suite's cases through `register` (which calls the suite with the adapters it is
 * given) and runs them side by side: each case has its own storage, archive or transport, so
 * a run takes about as long as its slowest case, a deadline at worst.
 */
export async function runRecorded(register: (adapters: ConformanceAdapters) => void): Promise<Outcome> {
  const cases: Array<{ name: string; fn: () => unknown; skip: boolean }> = [];
  const it = Object.assign((name: string, fn: () => Promise<void>) => void cases.push({ name, fn, skip: false }), {
    skip: (name: string, fn: () => unknown) => void cases.push({ name, fn, skip: true }),
  });
  register({ describe: (_name, fn) => fn(), it });
  const results = await Promise.all(
    cases.map(async ({ name, fn, skip }) => {
      if (skip) return { name, result: 'skipped' as const };
      try {
        await fn();
        return { name, result: 'passed' as const };
      } catch (err) {
        return { name, result: 'failed' as const, message: err instanceof Error ? err.message : String(err) };
      }
    }),
  );
  const outcome: Outcome = { passed: [], failed: new Map(), skipped: [] };
  for (const { name, result, message } of results) {
    if (result === 'failed') outcome.failed.set(name, message ?? '');
    else outcome[result].push(name);
  }
  return outcome;
}

/** The failed cases, one per line, with the first line of each error; ` none` when none failed. */
export function describeFailures(outcome: Outcome): string {
  return [...outcome.failed].map(([name, message]) => `\n  ${name}: ${message.split('\n')[0]}`).join('') || ' none';
}
