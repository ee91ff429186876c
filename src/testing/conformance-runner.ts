import { createRequire } from 'node:module';
import { WalshipError } from '../errors.js';
import { seededRandom } from './seeded-random.js';

/** A test function as a conformance suite registers it. */
export type ConformanceTestFn = () => Promise<void> | void;

/** Registers a test; `skip`, when present, registers a skipped one. */
export interface ConformanceIt {
  (name: string, fn: () => Promise<void>): unknown;
  /** Registers a skipped test (`it.skip`); without it a skipped case is registered as an empty test whose name says why. */
  skip?: (name: string, fn: ConformanceTestFn) => unknown;
}

/**
 * The test runner's functions: `node:test`'s by default; mocha's, vitest's or jest's
 * globals work as they are (`{ describe, it }`). Mind the runner's own per-test timeout
 * (mocha's is 2 s): the volume cases take seconds.
 */
export interface ConformanceAdapters {
  /** Groups the suite's cases. @defaultValue `node:test`'s `describe` */
  describe?: (name: string, fn: () => void) => unknown;
  /** Registers one case. @defaultValue `node:test`'s `it` */
  it?: ConformanceIt;
}

/** What a conformance suite registers its cases with. */
export interface ConformanceRunner {
  readonly describe: (name: string, fn: () => void) => unknown;
  /** Registers a case, or, when `skip` gives a reason, a skipped case whose name says why. */
  register(name: string, skip: string | false, fn: () => Promise<void>): void;
}

/**
 * The runner of a conformance suite (`suite` names it in errors): the adapters' functions,
 * or `node:test`'s. Throws `INVALID_ARGUMENT` for adapters that are not functions.
 */
export function conformanceRunner(adapters: ConformanceAdapters, suite: string): ConformanceRunner {
  // node:test is loaded only when it is the runner, so that mocha or vitest users never load it.
  const nodeTest = adapters.describe === undefined || adapters.it === undefined ? loadNodeTest() : undefined;
  const describe = adapters.describe ?? (nodeTest as NodeTest).describe;
  const it: ConformanceIt = adapters.it ?? (nodeTest as NodeTest).it;
  if (typeof describe !== 'function' || typeof it !== 'function') {
    throw new WalshipError('INVALID_ARGUMENT', `${suite} adapters.describe and adapters.it must be functions`);
  }
  return {
    describe,
    register(name, skip, fn) {
      if (skip === false) {
        it(name, fn);
      } else if (typeof it.skip === 'function') {
        it.skip(`[skipped: ${skip}] ${name}`, () => {});
      } else {
        it(`[skipped: ${skip}] ${name}`, async () => {});
      }
    },
  };
}

type NodeTest = typeof import('node:test');

function loadNodeTest(): NodeTest {
  return createRequire(import.meta.url)('node:test') as NodeTest;
}

/** `promise`, or a rejection naming `what` after `ms`; the timer never outlives the wait. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * Marks `promise` as handled and returns it: a case may stop waiting (after a failed
 * assertion) for promises that reject later, which must not crash the process. Awaiting it
 * still throws.
 */
export function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}

/** `size` pseudo-random bytes that depend on `seed` only, so that a failing case replays. */
export function seededBytes(seed: number, size: number): Uint8Array {
  const random = seededRandom(seed);
  const data = new Uint8Array(size);
  const words = new DataView(data.buffer);
  let i = 0;
  for (; i + 4 <= size; i += 4) words.setUint32(i, Math.floor(random() * 0x1_0000_0000));
  for (; i < size; i++) data[i] = Math.floor(random() * 256);
  return data;
}

/** An error as a failure message shows it: its name, its `code` if it has one, its message. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return `${err.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${err.message}`;
  }
  return String(err);
}
