/**
 * Replication benchmark cases: a Primary in this process and its standbys in another
 * (bench/replication-peer.mjs), both on the compiled package, over TcpTransport on
 * loopback, with fdatasync on both sides and asynchronous replication.
 *
 * - throughput: committers push 8 KiB batches (8 rows of 1 KiB) as fast as the primary takes
 *   them; timed from the first commit until every standby has replayed the last one;
 * - catch-up: a standby is stopped while the primary accumulates WAL of 1 KiB rows, then
 *   restarted; timed from its start until it has received, and replayed, the primary's end;
 * - apply latency: commits at a fixed rate; each batch carries its commit time, and the
 *   standby records how long after it its application had applied the batch.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as Walship from '../src/index.js';
import { percentileOfSorted, type RunResult } from './stats.js';

const W = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof Walship;
const PEER = fileURLToPath(new URL('./replication-peer.mjs', import.meta.url));
const RAW_PIPE_PEER = fileURLToPath(new URL('./raw-pipe-peer.mjs', import.meta.url));
const RAW_RELAY_PEER = fileURLToPath(new URL('./raw-relay-peer.mjs', import.meta.url));

/** The peer processes running now: {@link killPeers} ends them when the benchmark is interrupted. */
const running = new Set<ChildProcess>();

/** Forks a peer script with an IPC channel, its output on ours, and keeps track of it until it exits. */
function forkPeer(script: string, args: readonly string[] = [], execArgv: readonly string[] = []): ChildProcess {
  const child = fork(script, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [...execArgv] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

/**
 * Ends every peer process still running (on Ctrl-C, before the temp dir is removed). Peers
 * also exit by themselves when their IPC channel closes; this does not wait for that.
 */
export function killPeers(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

/** One row, and rows per batch: PostgreSQL's comparison used 1 KB rows. */
export const ROW_BYTES = 1024;
export const ROWS_PER_BATCH = 8;
const COMMITTERS = 64;

const now = (): number => performance.timeOrigin + performance.now();

/** An application that only counts batches; its snapshot is the count. */
export class CountingApp {
  batches = 0;
  apply(): void {
    this.batches++;
  }
  async snapshot(): Promise<Uint8Array> {
    return Buffer.from(String(this.batches));
  }
  async restore(snapshot: Walship.Snapshot): Promise<void> {
    this.batches = Number((await snapshot.bytes()).toString());
  }
}

/** A standby process (bench/replication-peer.mjs), driven over IPC. */
export class Peer {
  readonly #child: ChildProcess;
  readonly #replies: unknown[] = [];
  /** Askers waiting for their reply: the peer answers each command in the order it came. */
  readonly #waiting: ((reply: unknown) => void)[] = [];

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (reply) => {
      const resolve = this.#waiting.shift();
      if (resolve !== undefined) resolve(reply);
      else this.#replies.push(reply);
    });
  }

  static async start(): Promise<Peer> {
    const peer = new Peer(forkPeer(PEER, [], process.env.PEER_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/peerprof'] : []));
    await peer.#reply();
    return peer;
  }

  async ask<T>(message: object): Promise<T> {
    const reply = this.#reply();
    this.#child.send(message);
    return (await reply) as T;
  }

  /** Closes the peer's standbys (with `checkpoint`, after a restartpoint on each) and waits for it to exit. */
  async close({ checkpoint = false }: { checkpoint?: boolean } = {}): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = once(this.#child, 'exit');
    await this.ask({ cmd: 'close', checkpoint });
    await exited;
  }

  #reply(): Promise<unknown> {
    if (this.#replies.length > 0) return Promise.resolve(this.#replies.shift());
    return new Promise((resolve) => this.#waiting.push(resolve));
  }
}

export async function openPrimary(dir: string): Promise<Walship.Primary> {
  return W.Primary.open({
    dir,
    application: new CountingApp(),
    synchronousCommit: 'local',
    listen: { transport: new W.TcpTransport(), address: '127.0.0.1:0' },
    auth: { rules: [{ user: 'bench', address: '127.0.0.1/32', method: 'trust' }] },
  });
}

/** A batch of rows; the first 8 bytes carry the commit time (epoch ms) when `stamp` is set. */
function makeBatch(stamp: boolean): Buffer[] {
  const rows = Array.from({ length: ROWS_PER_BATCH }, () => Buffer.alloc(ROW_BYTES, 0x61));
  if (stamp) (rows[0] as Buffer).writeDoubleLE(now(), 0);
  return rows;
}

/** `COMMITTERS` loops committing until `bytes` of rows are in; resolves with the batch count. */
export async function commitBytes(primary: Walship.Primary, bytes: number): Promise<number> {
  const batches = Math.ceil(bytes / (ROW_BYTES * ROWS_PER_BATCH));
  let issued = 0;
  const rows = makeBatch(false);
  await Promise.all(
    Array.from({ length: COMMITTERS }, async () => {
      while (issued < batches) {
        issued++;
        await primary.commit(rows);
      }
    }),
  );
  return batches;
}

/** Throughput to `standbys` standbys: `bytes` of rows, timed until all have replayed them. */
export async function replicationThroughput(base: string, standbys: number, bytes: number): Promise<RunResult> {
  const dir = path.join(base, `throughput-${standbys}`);
  const primary = await openPrimary(path.join(dir, 'primary'));
  const peer = await Peer.start();
  try {
    const dirs = Array.from({ length: standbys }, (_, i) => path.join(dir, `standby${i + 1}`));
    await peer.ask({ cmd: 'open', address: primary.address, dirs });
    const started = now();
    const batches = await commitBytes(primary, bytes);
    const { replayedAt } = await peer.ask<{ replayedAt: number }>({ cmd: 'wait', lsn: primary.currentLsn });
    const seconds = (replayedAt - started) / 1000;
    return { opsPerSec: batches / seconds, bytesPerSec: (batches * ROWS_PER_BATCH * ROW_BYTES) / seconds, p50Us: NaN, p99Us: NaN, syncsPerSec: NaN };
  } finally {
    await peer.close();
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** What a catch-up run measured: WAL bytes over the time to receive them, and to replay them. */
export interface CatchUpResult {
  readonly walBytes: number;
  readonly receiveBytesPerSec: number;
  readonly replayBytesPerSec: number;
  readonly seconds: number;
  /** CPU time (user + system) each process used meanwhile: what the 2 cores spent. */
  readonly primaryCpuSeconds: number;
  readonly standbyCpuSeconds: number;
  /** The process between them, when there is one: a cascading standby, or the raw relay. */
  readonly relayCpuSeconds?: number;
}

/** A standby restarted `bytes` of WAL behind its primary. */
export async function catchUp(base: string, bytes: number): Promise<CatchUpResult> {
  const dir = path.join(base, 'catch-up');
  const primary = await openPrimary(path.join(dir, 'primary'));
  const standbyDir = path.join(dir, 'standby');
  try {
    const first = await Peer.start();
    await first.ask({ cmd: 'open', address: primary.address, dirs: [standbyDir] });
    await first.close();
    const from = primary.currentLsn;
    await commitBytes(primary, bytes);
    const to = primary.currentLsn;
    const peer = await Peer.start();
    try {
      const cpuBefore = process.cpuUsage();
      const started = now();
      const opened = peer.ask({ cmd: 'open', address: primary.address, dirs: [standbyDir], wait: false });
      const { receivedAt, replayedAt, cpu } = await peer.ask<{ receivedAt: number; replayedAt: number; cpu: NodeJS.CpuUsage }>({ cmd: 'wait', lsn: to });
      const primaryCpu = process.cpuUsage(cpuBefore);
      await opened;
      const walBytes = to - from;
      return {
        walBytes,
        receiveBytesPerSec: walBytes / ((receivedAt - started) / 1000),
        replayBytesPerSec: walBytes / ((replayedAt - started) / 1000),
        seconds: (replayedAt - started) / 1000,
        primaryCpuSeconds: (primaryCpu.user + primaryCpu.system) / 1e6,
        standbyCpuSeconds: (cpu.user + cpu.system) / 1e6,
      };
    } finally {
      await peer.close();
    }
  } finally {
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * The raw limit of catch-up on this machine: `bytes` read from a file with plain node:fs in
 * 1 MiB reads, sent over a loopback socket to a second process that writes them to a new
 * file with an fdatasync every 8 MiB (bench/raw-pipe-peer.mjs): what a standby's
 * receive path costs without walship. With `relay`, the bytes take one more hop on the way:
 * a relay process (bench/raw-relay-peer.mjs) reads them from the first socket and writes
 * them to a second one, which the writing process reads: the limit of a cascading standby's
 * extra hop.
 */
export async function rawCatchUp(base: string, bytes: number, { relay = false }: { relay?: boolean } = {}): Promise<CatchUpResult> {
  const source = path.join(base, 'raw-pipe-source');
  const MiB = 1024 * 1024;
  const handle = await fs.open(source, 'w');
  const fill = Buffer.alloc(MiB, 0x61);
  for (let at = 0; at < bytes; at += MiB) await handle.write(fill, 0, MiB, at);
  await handle.datasync();
  await handle.close();
  const net = await import('node:net');
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as import('node:net').AddressInfo;
  const connected = once(server, 'connection') as Promise<[import('node:net').Socket]>;
  let sinkPort = port;
  let relayed: Promise<[{ cpu: NodeJS.CpuUsage }]> | null = null;
  if (relay) {
    const middle = forkPeer(RAW_RELAY_PEER, [String(port)]);
    const [{ port: relayPort }] = (await once(middle, 'message')) as [{ port: number }];
    sinkPort = relayPort;
    relayed = once(middle, 'message') as Promise<[{ cpu: NodeJS.CpuUsage }]>;
  }
  const peer = forkPeer(RAW_PIPE_PEER, [String(sinkPort), path.join(base, 'raw-pipe-target'), String(bytes)]);
  const reply = once(peer, 'message') as Promise<[{ bytesPerSec: number; ok: boolean; cpu: NodeJS.CpuUsage }]>;
  const [socket] = await connected;
  const cpuBefore = process.cpuUsage();
  const reader = await fs.open(source, 'r');
  try {
    for (let at = 0; at < bytes; at += MiB) {
      const buf = Buffer.allocUnsafe(MiB);
      await reader.read(buf, 0, MiB, at);
      if (!socket.write(buf)) await once(socket, 'drain');
    }
    socket.end();
    const [result] = await reply;
    const cpu = process.cpuUsage(cpuBefore);
    if (!result.ok) throw new Error('the raw pipe lost bytes');
    const relayCpu = relayed === null ? null : (await relayed)[0].cpu;
    return {
      walBytes: bytes,
      receiveBytesPerSec: result.bytesPerSec,
      replayBytesPerSec: result.bytesPerSec,
      seconds: bytes / result.bytesPerSec,
      primaryCpuSeconds: (cpu.user + cpu.system) / 1e6,
      standbyCpuSeconds: (result.cpu.user + result.cpu.system) / 1e6,
      ...(relayCpu === null ? {} : { relayCpuSeconds: (relayCpu.user + relayCpu.system) / 1e6 }),
    };
  } finally {
    await reader.close();
    server.close();
    await fs.rm(source, { force: true });
  }
}

/** Apply latency on one standby while the primary commits `rate` batches per second for `durationMs`. */
export async function applyLatency(base: string, rate: number, durationMs: number): Promise<RunResult> {
  const dir = path.join(base, 'latency');
  const primary = await openPrimary(path.join(dir, 'primary'));
  const peer = await Peer.start();
  try {
    await peer.ask({ cmd: 'open', address: primary.address, dirs: [path.join(dir, 'standby')] });
    const started = performance.now();
    const inFlight = new Set<Promise<unknown>>();
    let sent = 0;
    for (let elapsed = 0; elapsed < durationMs; elapsed = performance.now() - started) {
      while (sent < (elapsed * rate) / 1000) {
        const commit = primary.commit(makeBatch(true));
        inFlight.add(commit);
        void commit.finally(() => inFlight.delete(commit));
        sent++;
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await Promise.all(inFlight);
    await peer.ask({ cmd: 'wait', lsn: primary.currentLsn });
    const { latencies } = await peer.ask<{ latencies: number[] }>({ cmd: 'latency' });
    const sorted = Float64Array.from(latencies).sort();
    const seconds = durationMs / 1000;
    return {
      opsPerSec: sorted.length / seconds,
      bytesPerSec: (sorted.length * ROWS_PER_BATCH * ROW_BYTES) / seconds,
      p50Us: percentileOfSorted(sorted, 0.5),
      p99Us: percentileOfSorted(sorted, 0.99),
      syncsPerSec: NaN,
    };
  } finally {
    await peer.close();
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
