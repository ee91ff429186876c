/**
 * Write + fdatasync latency through the ways Node can issue them, interleaved, on one
 * pre-allocated file in `os.tmpdir()` (issue #17, "WAL I/O latency from Node"). Each round
 * the paths take turns commit by commit for `--ms` milliseconds (default 2000), `--rounds`
 * rounds (default 5), and the table gives the medians over rounds of each path's p50, p99 and
 * mean, and of its p50 against the first path's in the same round.
 *
 *   npx tsx bench/wal-io-paths.ts [--rounds 5] [--ms 2000] [--size 8192] [--pool-load 0]
 *
 * Paths: the promise API (`FileHandle.write` + `datasync`), walship's path before issue #17
 * (`writeSync` on the main thread, `FileHandle.datasync` on libuv's pool), callbacks
 * (`fs.write` + `fs.fdatasync`), a dedicated worker thread doing `writeSync` +
 * `fdatasyncSync` woken through `Atomics` (the main thread waiting with `Atomics.waitAsync`
 * or for a `MessagePort` message), `writeSync` on the main thread with only the fdatasync on
 * the worker, `fdatasyncSync` on the main thread (blocks the event loop: a lower bound), and
 * `fs.fdatasync` in child processes (bench/wal-io-paths-peer.mjs) with libuv's io_uring off
 * and on (`UV_USE_IO_URING`, read when a process starts), timed inside the child. With
 * `--pool-load N`, N jobs keep libuv's pool (4 threads by default) busy meanwhile: hashing, or
 * with `--pool-load-kind read` 1 MiB reads of a cached file.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { pbkdf2 } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { createZeroFilled } from './raw-disk.js';
import { LatencyRecorder, median } from './stats.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, ms: { type: 'string' }, size: { type: 'string' }, 'pool-load': { type: 'string' }, 'pool-load-kind': { type: 'string' } } });
const ROUNDS = Number(values.rounds ?? 5);
const DURATION_MS = Number(values.ms ?? 2000);
const WRITE_SIZE = Number(values.size ?? 8192);
const FILE_SIZE = 16 * 1024 * 1024;
/** Jobs kept running on libuv's pool meanwhile (the application's other pool work: hashing, zlib, reads). */
const POOL_LOAD = Number(values['pool-load'] ?? 0);

/** `hash`: CPU-bound pool work; `read`: 1 MiB reads of a cached file (pool queueing with little CPU). */
const POOL_LOAD_KIND = values['pool-load-kind'] ?? 'hash';

/**
 * Keeps `jobs` calls in flight on libuv's pool until `stop()`: `crypto.pbkdf2` of about a
 * millisecond each, or 1 MiB `fs.read`s of `readFile` (in the page cache after the first).
 */
function loadThePool(jobs: number, readFile: string): { stop(): void } {
  let stopped = false;
  const buffers = Array.from({ length: jobs }, () => Buffer.alloc(1024 * 1024));
  const fd = jobs > 0 && POOL_LOAD_KIND === 'read' ? fs.openSync(readFile, 'r') : -1;
  const next = (job: number): void => {
    if (stopped) return;
    if (fd >= 0) fs.read(fd, buffers[job]!, 0, 1024 * 1024, (job % 8) * 1024 * 1024, () => next(job));
    else pbkdf2('password', 'salt', 2000, 32, 'sha256', () => next(job));
  };
  for (let job = 0; job < jobs; job++) next(job);
  return {
    stop: () => {
      stopped = true;
      if (fd >= 0) setTimeout(() => fs.closeSync(fd), 100);
    },
  };
}

// Control words of the worker: request sequence, done sequence, operation, fd, length, result.
const REQ = 0;
const DONE = 1;
const OP = 2;
const FD = 3;
const LEN = 4;
const RESULT = 5;
const OP_WRITE_SYNC = 1;
const OP_SYNC = 2;

/** The worker: waits on REQ, does the operation, publishes DONE (and posts on the port, if given). */
const WORKER_SOURCE = `
const fs = require('node:fs');
const { workerData } = require('node:worker_threads');
const { control, data, port } = workerData;
const ctl = new Int32Array(control);
const pos = new Float64Array(control, 64, 1);
const bytes = new Uint8Array(data);
let seen = 0;
for (;;) {
  Atomics.wait(ctl, ${REQ}, seen);
  const req = Atomics.load(ctl, ${REQ});
  if (req === seen) continue;
  seen = req;
  if (req < 0) break;
  let result = 0;
  try {
    const fd = ctl[${FD}];
    if (ctl[${OP}] === ${OP_WRITE_SYNC}) {
      const len = ctl[${LEN}];
      for (let done = 0; done < len; ) done += fs.writeSync(fd, bytes, done, len - done, pos[0] + done);
    }
    fs.fdatasyncSync(fd);
  } catch (err) {
    result = typeof err.errno === 'number' ? err.errno : -5;
  }
  ctl[${RESULT}] = result;
  Atomics.store(ctl, ${DONE}, req);
  Atomics.notify(ctl, ${DONE});
  if (port !== undefined) port.postMessage(req);
}
`;

/** `Atomics.waitAsync` (Node 16+), which the ES2023 library typings lack. */
interface AtomicsWithWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}

class SyncWorker {
  readonly ctl: Int32Array;
  readonly pos: Float64Array;
  readonly bytes: Uint8Array;
  readonly worker: Worker;
  seq = 0;
  readonly port: MessagePort | undefined;
  #onMessage: (() => void) | undefined;

  constructor(viaPort: boolean) {
    const control = new SharedArrayBuffer(128);
    const data = new SharedArrayBuffer(1024 * 1024);
    this.ctl = new Int32Array(control);
    this.pos = new Float64Array(control, 64, 1);
    this.bytes = new Uint8Array(data);
    let workerPort: MessagePort | undefined;
    if (viaPort) {
      const channel = new MessageChannel();
      this.port = channel.port1;
      workerPort = channel.port2;
      this.port.on('message', () => this.#onMessage?.());
    }
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { control, data, port: workerPort },
      transferList: workerPort === undefined ? [] : [workerPort],
    });
  }

  async run(op: number, fd: number, data: Uint8Array | null, position: number): Promise<void> {
    const ctl = this.ctl;
    ctl[OP] = op;
    ctl[FD] = fd;
    if (data !== null) {
      this.bytes.set(data);
      ctl[LEN] = data.length;
      this.pos[0] = position;
    }
    const seq = ++this.seq;
    if (this.port !== undefined) {
      const done = new Promise<void>((resolve) => (this.#onMessage = resolve));
      Atomics.store(ctl, REQ, seq);
      Atomics.notify(ctl, REQ);
      await done;
    } else {
      Atomics.store(ctl, REQ, seq);
      Atomics.notify(ctl, REQ);
      for (;;) {
        const wait = (Atomics as unknown as AtomicsWithWaitAsync).waitAsync(ctl, DONE, seq - 1);
        if (wait.async) await wait.value;
        if (Atomics.load(ctl, DONE) === seq) break;
      }
    }
    if (ctl[RESULT] !== 0) throw new Error(`worker errno ${ctl[RESULT]}`);
  }

  async stop(): Promise<void> {
    Atomics.store(this.ctl, REQ, -1);
    Atomics.notify(this.ctl, REQ);
    this.port?.close();
    await this.worker.terminate();
  }
}

/** Latencies plus their sum, for the mean. */
class SummingRecorder extends LatencyRecorder {
  sum = 0;
  override add(us: number): void {
    this.sum += us;
    super.add(us);
  }
}

/** A child process (bench/wal-io-paths-peer.mjs) doing write + fdatasync on request, with `UV_USE_IO_URING` set to `ioUring`. */
class PeerProcess {
  readonly child: ChildProcess;
  #answer: ((message: { us?: number; error?: string }) => void) | undefined;

  constructor(file: string, ioUring: '0' | '1') {
    const script = new URL('./wal-io-paths-peer.mjs', import.meta.url);
    this.child = fork(script, [file], { env: { ...process.env, UV_USE_IO_URING: ioUring } });
    this.child.on('message', (message: { us?: number; error?: string }) => this.#answer?.(message));
  }

  async ready(): Promise<void> {
    await once(this.child, 'message');
  }

  /** One write + fdatasync in the child; resolves with the latency it measured (µs). */
  commit(offset: number, size: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#answer = (message) => (message.us === undefined ? reject(new Error(message.error)) : resolve(message.us));
      this.child.send({ offset, size });
    });
  }

  /** CPU seconds the child used so far, all its threads (the kernel's io_uring threads too). */
  async cpuSeconds(): Promise<number> {
    const stat = await fsp.readFile(`/proc/${this.child.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  stop(): void {
    this.child.disconnect();
  }
}

interface PathCase {
  name: string;
  /** One write of `data` at `position` and one fdatasync; resolves with the latency it measured itself (µs), if it did. */
  commit(data: Buffer, position: number): Promise<void | number>;
}

function writeAllSync(fd: number, data: Uint8Array, position: number): void {
  for (let done = 0; done < data.length; ) done += fs.writeSync(fd, data, done, data.length - done, position + done);
}

function callbackWrite(fd: number, data: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.write(fd, data, 0, data.length, position, (err, written) => {
      if (err !== null) reject(err);
      else if (written !== data.length) reject(new Error('short write'));
      else resolve();
    });
  });
}

function callbackSync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));
}

async function main(): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'walship-io-paths-'));
  const file = path.join(dir, 'segment');
  await createZeroFilled(file, FILE_SIZE);
  const handle = await fsp.open(file, 'r+');
  const fd = handle.fd;
  const peers = { pool: new PeerProcess(file, '0'), ioUring: new PeerProcess(file, '1') };
  await Promise.all([peers.pool.ready(), peers.ioUring.ready()]);
  const atomicsWorker = new SyncWorker(false);
  const portWorker = new SyncWorker(true);
  const cases: PathCase[] = [
    {
      name: 'promises: FileHandle.write + datasync',
      commit: async (data, position) => {
        await handle.write(data, 0, data.length, position);
        await handle.datasync();
      },
    },
    {
      name: 'walship before: writeSync + FileHandle.datasync (pool)',
      commit: async (data, position) => {
        writeAllSync(fd, data, position);
        await handle.datasync();
      },
    },
    {
      name: 'callbacks: fs.write + fs.fdatasync (pool)',
      commit: async (data, position) => {
        await callbackWrite(fd, data, position);
        await callbackSync(fd);
      },
    },
    {
      name: 'writeSync + callback fs.fdatasync (pool)',
      commit: async (data, position) => {
        writeAllSync(fd, data, position);
        await callbackSync(fd);
      },
    },
    { name: 'worker: copy, writeSync + fdatasyncSync, waitAsync', commit: (data, position) => atomicsWorker.run(OP_WRITE_SYNC, fd, data, position) },
    {
      name: 'writeSync + worker fdatasyncSync, waitAsync',
      commit: (data, position) => {
        writeAllSync(fd, data, position);
        return atomicsWorker.run(OP_SYNC, fd, null, 0);
      },
    },
    { name: 'worker: copy, writeSync + fdatasyncSync, MessagePort', commit: (data, position) => portWorker.run(OP_WRITE_SYNC, fd, data, position) },
    {
      name: 'writeSync + worker fdatasyncSync, MessagePort',
      commit: (data, position) => {
        writeAllSync(fd, data, position);
        return portWorker.run(OP_SYNC, fd, null, 0);
      },
    },
    {
      name: 'main thread: writeSync + fdatasyncSync (blocks the loop)',
      commit: (data, position) => {
        writeAllSync(fd, data, position);
        fs.fdatasyncSync(fd);
        return Promise.resolve();
      },
    },
    { name: 'child process, UV_USE_IO_URING=0: writeSync + fs.fdatasync', commit: (data, position) => peers.pool.commit(position, data.length) },
    { name: 'child process, UV_USE_IO_URING=1: writeSync + fs.fdatasync', commit: (data, position) => peers.ioUring.commit(position, data.length) },
  ];
  const data = Buffer.alloc(WRITE_SIZE, 0xa5);
  let offset = 0;
  // Commit by commit, the paths take turns (in an order rotated each turn), so that all of
  // them see the same disk: this virtual disk's latency drifts by far more within a second
  // than the paths differ.
  const runRound = async (ms: number): Promise<SummingRecorder[]> => {
    const recorders = cases.map(() => new SummingRecorder());
    const end = performance.now() + ms;
    for (let turn = 0; performance.now() < end; turn++) {
      for (let i = 0; i < cases.length; i++) {
        const index = (i + turn) % cases.length;
        if (offset + WRITE_SIZE > FILE_SIZE) offset = 0;
        const started = performance.now();
        const measured = await cases[index]!.commit(data, offset);
        recorders[index]!.add(typeof measured === 'number' ? measured : (performance.now() - started) * 1000);
        offset += WRITE_SIZE;
      }
    }
    return recorders;
  };
  const results = cases.map(() => ({ p50: [] as number[], p99: [] as number[], mean: [] as number[] }));
  let cpu = { pool: 0, ioUring: 0 };
  const poolLoad = loadThePool(POOL_LOAD, file);
  try {
    await runRound(300); // Warm-up.
    cpu = { pool: -(await peers.pool.cpuSeconds()), ioUring: -(await peers.ioUring.cpuSeconds()) };
    for (let round = 0; round < ROUNDS; round++) {
      const recorders = await runRound(DURATION_MS);
      recorders.forEach((recorder, index) => {
        const [p50, p99] = recorder.percentiles([0.5, 0.99]);
        const into = results[index]!;
        into.p50.push(p50 ?? NaN);
        into.p99.push(p99 ?? NaN);
        into.mean.push(recorder.sum / Math.max(1, recorder.count));
      });
      process.stderr.write(`round ${round + 1}/${ROUNDS}\n`);
    }
    cpu = { pool: cpu.pool + (await peers.pool.cpuSeconds()), ioUring: cpu.ioUring + (await peers.ioUring.cpuSeconds()) };
  } finally {
    poolLoad.stop();
    peers.pool.stop();
    peers.ioUring.stop();
    await atomicsWorker.stop();
    await portWorker.stop();
    await handle.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  const range = (xs: number[]): string => `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`;
  const base = results[0]!;
  console.log(`${WRITE_SIZE} B write + fdatasync, ${ROUNDS} rounds of ${DURATION_MS} ms, paths alternating commit by commit, ${POOL_LOAD} pool jobs (${POOL_LOAD_KIND}) running meanwhile, ${os.tmpdir()}, Node ${process.version}`);
  console.log('| path | p50 µs (min–max over rounds) | p99 µs | commits/s (1e6 / mean µs) | p50 vs first line (median of per-round ratios) |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  cases.forEach((c, i) => {
    const r = results[i]!;
    const ratios = r.p50.map((p, round) => p / base.p50[round]!);
    console.log(`| ${c.name} | ${fmt(median(r.p50))} (${range(r.p50)}) | ${fmt(median(r.p99))} | ${fmt(1e6 / median(r.mean))} | ${median(ratios).toFixed(2)}× |`);
  });
  console.log(`CPU seconds of the child processes while measured: UV_USE_IO_URING=0 ${cpu.pool.toFixed(2)}, UV_USE_IO_URING=1 ${cpu.ioUring.toFixed(2)}`);
}

await main();
