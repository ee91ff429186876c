/**
 * The bare-Node floor of a 1-committer commit case: what three Node processes on this machine
 * make of one commit cycle when they do nothing but a commit's work under walship's protocol,
 * measured in the same run as the cases. The primary (in the bench's process, as walship's)
 * writes the commit's bytes at the next offset of a pre-allocated file, sends them to each
 * standby it asks, then `fdatasyncSync`s and sends its durable end (early WAL, as the bench's
 * walship runs); each standby (bench/node-floor-peer.mjs, a process of its own) writes,
 * fdatasyncs on libuv's pool, and acknowledges what it wrote or made durable once the durable
 * end covers it (walship's rule for early WAL); the primary waits for the acknowledgements the
 * case's standby set needs. With a flush delay, as walship's standbys with `flushDelayMs`: only
 * the standbys a commit waits for are asked (under `ANY 1` one of them, as walship asks `n`),
 * a standby is made to flush at once only when a commit waits for its flush, and the others
 * get WAL and flush at most once per delay.
 *
 * No records, checksums, framing beyond a length and a type, no application: walship's
 * protocol with nothing else, so walship cannot go faster at 1 committer. What it does not
 * bound: group commit at more committers, or another protocol.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { closeSync, fdatasyncSync, openSync, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createZeroFilled } from '../raw-disk.js';
import { ANY_1, ENTRY_BYTES, FIRST_1, FIRST_2, type BenchCase } from './cases.js';
import { onCleanup } from './cleanup.js';

/** What the floor does for one case. */
export interface FloorPlan {
  /** What a standby acknowledges: its write (`remote_write`) or its flush (`on`, `remote_apply`: nothing to apply here). */
  readonly ack: 'write' | 'flush';
  /** How many of s1 and s2 a commit waits for, and whether any (`ANY`) or these (`FIRST`: s1, then s2). */
  readonly wait: { readonly count: 1 | 2; readonly any: boolean };
  /**
   * The standbys' flush delay (0: none). With one, only the standbys a commit needs get its WAL
   * at once (s1; and s2 under `FIRST 2`), the others every this many ms; a standby flushes at
   * once only when a commit waits for its flush, else at most once per delay.
   */
  readonly delayMs: number;
}

/** The record a walship commit of one 100-byte entry writes is about this long. */
const COMMIT_BYTES = ENTRY_BYTES + 32;
const FILE_BYTES = 16 * 1024 * 1024;

/** The floor of `c`, or null where it has none (other levels, more committers, other kinds). */
export function floorPlan(c: BenchCase, flushDelayMs: number | null): FloorPlan | null {
  if (c.kind !== 'commit' || c.committers !== 1) return null;
  if (c.level !== 'remote_write' && c.level !== 'on' && c.level !== 'remote_apply') return null;
  const wait: FloorPlan['wait'] | null = c.names === FIRST_1 ? { count: 1, any: false } : c.names === ANY_1 ? { count: 1, any: true } : c.names === FIRST_2 ? { count: 2, any: false } : null;
  if (wait === null) return null;
  return { ack: c.level === 'remote_write' ? 'write' : 'flush', wait, delayMs: flushDelayMs ?? 0 };
}

/**
 * Which of s1 and s2 get each commit's WAL at once: every standby without a flush delay (as
 * walship sends to all); with one, those a commit needs, where `ANY 1` asks one (walship asks
 * the `n` quorum standbys of the lowest sender slots).
 */
export function askedStandbys(plan: FloorPlan): [boolean, boolean] {
  if (plan.delayMs === 0) return [true, true];
  return [true, plan.wait.count === 2];
}

/** How often a standby fdatasyncs at most (0: at once): at once only when asked for its flush. */
export function syncEveryMs(plan: FloorPlan, asked: boolean): number {
  return asked && plan.ack === 'flush' ? 0 : plan.delayMs;
}

/** Whether the acknowledgements `acked` (s1's, s2's: the last commit each covers) release commit `n` under `wait`. */
export function released(wait: FloorPlan['wait'], acked: readonly [number, number], n: number): boolean {
  if (wait.count === 2) return acked[0] >= n && acked[1] >= n;
  return wait.any ? acked[0] >= n || acked[1] >= n : acked[0] >= n;
}

function frame(type: number, n: number, payload?: Buffer): Buffer {
  const length = payload?.length ?? 0;
  const out = Buffer.allocUnsafe(9 + length);
  out.writeUInt32LE(5 + length, 0);
  out[4] = type;
  out.writeUInt32LE(n, 5);
  payload?.copy(out, 9);
  return out;
}

/** Runs the floor of `plan` for `seconds` (after a second to warm up) in `dir` (created and removed here); commits/s. */
export async function measureNodeFloor(dir: string, plan: FloorPlan, seconds: number): Promise<number> {
  await fs.mkdir(dir, { recursive: true });
  const files = ['primary', 's1', 's2'].map((name) => path.join(dir, name));
  await Promise.all(files.map((file) => createZeroFilled(file, FILE_BYTES)));
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const peer = fileURLToPath(new URL('../node-floor-peer.mjs', import.meta.url));
  const asked = askedStandbys(plan);
  const children: ChildProcess[] = [];
  const sockets: net.Socket[] = [];
  let timer: NodeJS.Timeout | null = null;
  // A peer that exits or a socket that fails ends the run with an error instead of a hang.
  let failed: (error: Error) => void = () => undefined;
  const failure = new Promise<never>((_, reject) => {
    failed = reject;
  });
  failure.catch(() => undefined);
  let ended = false;
  const forget = onCleanup(() => {
    for (const child of children) child.kill('SIGKILL');
  });
  const fd = openSync(files[0] as string, 'r+');
  try {
    // s1 connects first, then s2, so the sockets' order is the standbys'.
    for (const [i, file] of files.slice(1).entries()) {
      const connected = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      const child = fork(peer, [String(port), file, plan.ack, String(syncEveryMs(plan, asked[i] as boolean))], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      children.push(child);
      child.once('exit', (code, signal) => {
        if (!ended) failed(new Error(`the floor's standby s${i + 1} exited (${signal ?? code})`));
      });
      const socket = await Promise.race([connected, failure]);
      socket.setNoDelay(true);
      socket.on('error', (err) => {
        if (!ended) failed(err);
      });
      sockets.push(socket);
    }
    const acked: [number, number] = [-1, -1];
    let waiter: { n: number; resolve: () => void } | null = null;
    sockets.forEach((socket, i) => {
      let pending: Buffer = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        while (pending.length >= 9) {
          acked[i] = Math.max(acked[i] as number, pending.readUInt32LE(5));
          pending = pending.subarray(9);
        }
        if (waiter !== null && released(plan.wait, acked, waiter.n)) {
          const { resolve } = waiter;
          waiter = null;
          resolve();
        }
      });
    });
    // The standbys not asked get their WAL later, all at once.
    const late: Buffer[][] = [[], []];
    const sendLate = (): void => {
      for (let i = 0; i < 2; i++) {
        if (late[i]!.length === 0) continue;
        sockets[i]!.write(Buffer.concat(late[i]!));
        late[i] = [];
      }
    };
    if (!asked.every(Boolean)) timer = setInterval(sendLate, plan.delayMs);
    const payload = Buffer.alloc(COMMIT_BYTES, 0x5a);
    let offset = 0;
    const commit = (n: number): Promise<void> => {
      if (offset + COMMIT_BYTES > FILE_BYTES) offset = 0;
      writeSync(fd, payload, 0, COMMIT_BYTES, offset);
      offset += COMMIT_BYTES;
      const wal = frame(1, n, payload);
      for (let i = 0; i < 2; i++) if (asked[i]) sockets[i]!.write(wal);
      fdatasyncSync(fd);
      const end = frame(2, n);
      for (let i = 0; i < 2; i++) {
        if (asked[i]) sockets[i]!.write(end);
        else late[i]!.push(wal, end);
      }
      if (released(plan.wait, acked, n)) return Promise.resolve();
      return Promise.race([
        new Promise<void>((resolve) => {
          waiter = { n, resolve };
        }),
        failure,
      ]);
    };
    let n = 0;
    for (const started = performance.now(); performance.now() - started < 1000; ) await commit(n++);
    const first = n;
    const started = performance.now();
    while (performance.now() - started < seconds * 1000) await commit(n++);
    return ((n - first) * 1000) / (performance.now() - started);
  } finally {
    ended = true;
    if (timer !== null) clearInterval(timer);
    closeSync(fd);
    for (const child of children) child.kill('SIGKILL');
    for (const socket of sockets) socket.destroy();
    forget();
    server.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
