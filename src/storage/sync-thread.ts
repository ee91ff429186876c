import { getSystemErrorMap } from 'node:util';
import { Worker } from 'node:worker_threads';
import createDebug from 'debug';

const log = createDebug('walship:storage:sync-thread');

// The words of the shared control block.
/** Sequence number of the latest request, written by the caller. */
const REQUEST = 0;
/** Sequence number of the latest request done, written by the thread. */
const DONE = 1;
/** The file descriptor to sync. */
const FD = 2;
/** 0 when the sync succeeded, else the negative errno it failed with. */
const RESULT = 3;
const CONTROL_WORDS = 4;

/** The sequence numbers run 1 … 2^31 − 1 and round again (0 is "nothing yet"). */
const MAX_SEQUENCE = 0x7fffffff;

/** EIO's errno on Linux: the result of a sync whose outcome is unknown (the thread died). */
const EIO = -5;

/**
 * The thread's whole program: wait on REQUEST, fdatasync the descriptor, publish the result
 * and DONE. Plain CommonJS evaluated from a string, so it runs the same from `src/` (tsx)
 * and from `dist/`, and it loads nothing but `node:fs`.
 */
const THREAD_SOURCE = `'use strict';
const { fdatasyncSync } = require('node:fs');
const { workerData } = require('node:worker_threads');
const words = new Int32Array(workerData);
let seen = 0;
for (;;) {
  Atomics.wait(words, ${REQUEST}, seen);
  const request = Atomics.load(words, ${REQUEST});
  if (request === seen) continue;
  seen = request;
  let result = 0;
  try {
    fdatasyncSync(words[${FD}]);
  } catch (err) {
    result = typeof err.errno === 'number' && err.errno < 0 ? err.errno : ${EIO};
  }
  words[${RESULT}] = result;
  Atomics.store(words, ${DONE}, request);
  Atomics.notify(words, ${DONE});
}
`;

/** `Atomics.waitAsync` (V8, Node 16+), which the ES2023 library typings lack. */
interface AtomicsWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}
const atomics = Atomics as unknown as AtomicsWaitAsync;

/** State of the thread: one union, so each transition is one assignment. */
type ThreadState =
  | { kind: 'stopped' }
  | { kind: 'starting'; worker: Worker }
  | { kind: 'ready'; worker: Worker }
  /** It could not start or it died: every sync goes to libuv's pool from now on. */
  | { kind: 'broken' };

/**
 * A dedicated thread for the WAL's fdatasyncs (issue #17), woken through `Atomics` on a
 * small shared control block and running the synchronous `fdatasyncSync` there, so that a
 * commit's sync waits behind no other work of libuv's shared thread pool (reads, other
 * files' syncs, `dns.lookup`, zlib, crypto). The caller's event loop waits with
 * `Atomics.waitAsync`.
 *
 * One sync runs on it at a time; {@link SyncThread.datasync} resolves `false` (and does
 * nothing) when the thread is busy, not started yet, or broken, and the caller then uses the
 * pool as before, so a second log in the process, or the first syncs while the thread
 * starts, never wait for it. Memory is fixed: four shared 32-bit words.
 *
 * Lifecycle: started on the first {@link SyncThread.acquire}, stopped (terminated) when the
 * last holder releases it. The thread is unreferenced while idle, so it never keeps the
 * process alive, and referenced while it starts and while a sync runs, as the pool's request
 * would be.
 */
export class SyncThread {
  /** The control block of the thread last started (a new one per start: a new thread begins at sequence 0). */
  #words = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * Int32Array.BYTES_PER_ELEMENT));
  #state: ThreadState = { kind: 'stopped' };
  #holders = 0;
  #sequence = 0;
  /** A sync is on the thread (set from the request until its result has been read). */
  #busy = false;
  /** Settles when the thread last started is ready (true) or failed to start (false). */
  #started: Promise<boolean> = Promise.resolve(false);
  #settleStarted: (ready: boolean) => void = () => undefined;

  /** Whether a thread is started or running (for tests and diagnostics). */
  get running(): boolean {
    return this.#state.kind === 'starting' || this.#state.kind === 'ready';
  }

  /**
   * Resolves true once the thread is ready to take syncs, false when it is stopped or could
   * not start (until then, {@link datasync} resolves false and callers use the pool).
   */
  started(): Promise<boolean> {
    return this.#state.kind === 'ready' ? Promise.resolve(true) : this.running ? this.#started : Promise.resolve(false);
  }

  /** Registers a user of the thread, starting it if it is stopped. */
  acquire(): void {
    this.#holders++;
    if (this.#state.kind === 'stopped') this.#start();
  }

  /** Unregisters a user; the last one stops the thread (a sync in flight finishes first: users release after their syncs). */
  release(): void {
    if (this.#holders === 0) return;
    this.#holders--;
    if (this.#holders > 0) return;
    const state = this.#state;
    if (state.kind !== 'starting' && state.kind !== 'ready') return;
    this.#state = { kind: 'stopped' };
    this.#settleStarted(false);
    // The thread sits in Atomics.wait; terminating interrupts it.
    state.worker.removeAllListeners();
    state.worker.on('error', () => undefined);
    void state.worker.terminate();
    log('stopped');
  }

  /**
   * Runs `fdatasync(fd)` on the thread. Resolves `true` once it succeeded, rejects with a
   * Node-style errno error (`code`, `errno`, `syscall: 'fdatasync'`) when it failed, and
   * resolves `false` at once, having done nothing, when the thread cannot take it now. The
   * caller keeps `fd` open until this settles.
   */
  async datasync(fd: number): Promise<boolean> {
    const state = this.#state;
    if (state.kind !== 'ready' || this.#busy) return false;
    this.#busy = true;
    const words = this.#words;
    const sequence = (this.#sequence = this.#sequence === MAX_SEQUENCE ? 1 : this.#sequence + 1);
    const worker = state.worker;
    worker.ref();
    try {
      words[FD] = fd;
      Atomics.store(words, REQUEST, sequence);
      Atomics.notify(words, REQUEST);
      // Wait until DONE holds this request: a wake-up may come for an earlier value.
      for (let done = Atomics.load(words, DONE); done !== sequence; done = Atomics.load(words, DONE)) {
        const wait = atomics.waitAsync(words, DONE, done);
        if (wait.async) await wait.value;
      }
      const result = words[RESULT] as number;
      if (result !== 0) throw errnoError(result);
      return true;
    } finally {
      this.#busy = false;
      if (this.#state.kind === 'ready' && this.#state.worker === worker) worker.unref();
    }
  }

  #start(): void {
    const words = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * Int32Array.BYTES_PER_ELEMENT));
    this.#words = words;
    this.#sequence = 0;
    let worker: Worker;
    try {
      worker = new Worker(THREAD_SOURCE, { eval: true, workerData: words.buffer, name: 'walship-sync' });
    } catch (err) {
      log('could not start the sync thread, syncing on the pool: %O', err);
      this.#state = { kind: 'broken' };
      return;
    }
    // Referenced while it starts (some tens of ms), so that waiting for it keeps the process alive.
    this.#state = { kind: 'starting', worker };
    let settle!: (ready: boolean) => void;
    this.#started = new Promise((resolve) => (settle = resolve));
    this.#settleStarted = settle;
    worker.once('online', () => {
      if (this.#state.kind === 'starting' && this.#state.worker === worker) this.#state = { kind: 'ready', worker };
      worker.unref();
      log('started');
      settle(this.#state.kind === 'ready');
    });
    const died = (reason: unknown): void => {
      settle(false);
      if ((this.#state.kind !== 'starting' && this.#state.kind !== 'ready') || this.#state.worker !== worker) return;
      log('the sync thread stopped (%O); syncing on the pool from now on', reason);
      this.#state = { kind: 'broken' };
      if (this.#busy && Atomics.load(words, DONE) !== this.#sequence) {
        // A sync was in flight and not done: its outcome is unknown, so it fails (EIO), and the waiter wakes.
        words[RESULT] = EIO;
        Atomics.store(words, DONE, this.#sequence);
        Atomics.notify(words, DONE);
      }
    };
    worker.on('error', died);
    worker.on('exit', died);
  }
}

/** The error Node's own `fs.fdatasync` gives for `errno` (e.g. `EIO: i/o error, fdatasync`). */
function errnoError(errno: number): Error {
  const [code, description] = getSystemErrorMap().get(errno) ?? ['EIO', 'i/o error'];
  return Object.assign(new Error(`${code}: ${description}, fdatasync`), { code, errno, syscall: 'fdatasync' });
}

/** The thread of this copy of walship, shared by every {@link NodeStorage} in the process. */
export const sharedSyncThread = new SyncThread();
