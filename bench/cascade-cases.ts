/**
 * Cascading replication benchmark cases: a Primary A in this process, a cascading standby B
 * (a standby that serves standbys of its own) in a peer process, and a standby C of B in
 * another (bench/replication-peer.mjs), all on the compiled package, over TcpTransport on
 * loopback, fdatasync everywhere, asynchronous replication. Each case has its direct
 * counterpart (A → one standby) in the same round, and the raw limit of the extra hop is
 * `rawCatchUp` with and without a relay process (bench/replication-cases.ts).
 *
 * - throughput A → B → C: committers on A as in section 5; timed from the first commit until
 *   C has replayed the last one (B's replay time is recorded too); beside it A → B, the same
 *   code with B not serving;
 * - catch-up through B: C (bootstrapped from B, then stopped) is restarted `bytes` of WAL
 *   behind while B is caught up with A; beside it, a direct standby D of A (bootstrapped,
 *   stopped over the same WAL) is restarted and catches up from A.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Peer, ROWS_PER_BATCH, ROW_BYTES, commitBytes, openPrimary, type CatchUpResult } from './replication-cases.js';
import type { RunResult } from './stats.js';

const now = (): number => performance.timeOrigin + performance.now();

interface Opened {
  readonly addresses: readonly (string | null)[];
}
interface Waited {
  readonly receivedAt: number;
  readonly replayedAt: number;
  readonly cpu: NodeJS.CpuUsage;
  /** Connections to its upstream that ended since the standby opened: 0 in a clean run. */
  readonly disconnects: number;
}

/**
 * A standby stopped short of the WAL it waited for: neither its receive nor its replay
 * position moved for {@link STALL_MS}. A healthy standby here moves every few milliseconds.
 */
export class StalledError extends Error {}
const STALL_MS = 10_000;

/** Asks `peer` to wait until its standby has received and replayed up to `lsn`; rejects with {@link StalledError} if it stalls. */
async function waitFor(peer: Peer, lsn: number, who: string): Promise<Waited> {
  const reply = await peer.ask<Waited | { stalled: readonly { state: string; receiveLsn: number | null; replayLsn: number | null }[] }>({ cmd: 'wait', lsn, stallMs: STALL_MS });
  if ('stalled' in reply) {
    const where = reply.stalled.map((s) => `${s.state}, received to ${s.receiveLsn ?? 'null'}, replayed to ${s.replayLsn ?? 'null'}`).join('; ');
    throw new StalledError(`${who} stalled ${lsn - Math.min(...reply.stalled.map((s) => s.receiveLsn ?? 0))} bytes short of ${lsn} (${where}; nothing moved for ${STALL_MS / 1000} s)`);
  }
  return reply;
}

const cpuSeconds = (cpu: NodeJS.CpuUsage): number => (cpu.user + cpu.system) / 1e6;

/** Starts a peer with one standby of `upstream` in `dir` (and, with `listen`, serving standbys of its own); resolves once it streams. */
async function startStandby(upstream: string, dir: string, name: string, listen = false): Promise<{ peer: Peer; address: string | null }> {
  const peer = await Peer.start();
  try {
    const { addresses } = await peer.ask<Opened>({ cmd: 'open', address: upstream, dirs: [dir], names: [name], listen });
    return { peer, address: addresses[0] ?? null };
  } catch (err) {
    await peer.close().catch(() => undefined);
    throw err;
  }
}

function throughputResult(batches: number, seconds: number): RunResult {
  return { opsPerSec: batches / seconds, bytesPerSec: (batches * ROWS_PER_BATCH * ROW_BYTES) / seconds, p50Us: NaN, p99Us: NaN, syncsPerSec: NaN };
}

/** What a throughput run measured. */
export interface ThroughputRun {
  /** Rows per second until the last standby (B direct, C cascaded) replayed the last batch. */
  readonly replayed: RunResult;
  /** Rows per second until B replayed it (the same as `replayed` when direct). */
  readonly replayedOnB: RunResult;
  readonly seconds: number;
  /** How long after B the last standby had replayed the last batch, in ms (0 when direct). */
  readonly behindBMs: number;
  /** CPU seconds each process used from the first commit until the last standby replayed the last batch: A, B and, cascaded, C. */
  readonly cpuSeconds: readonly number[];
  /** Upstream connections that ended during the run: 0 in a clean run. */
  readonly disconnects: number;
}

/**
 * Throughput A → B (`cascaded` false) or A → B → C: `bytes` of rows committed on A by
 * section 5's committers, timed from the first commit until the last standby has replayed
 * the last batch. Both sides run the same code, B listening only when cascaded. C bootstraps
 * by base backup from B before the run; every standby streams before it starts.
 */
export async function throughput(base: string, bytes: number, cascaded: boolean): Promise<ThroughputRun> {
  const dir = path.join(base, cascaded ? 'cascade-throughput' : 'direct-throughput');
  const primary = await openPrimary(path.join(dir, 'a'));
  const peers: Peer[] = [];
  try {
    const b = await startStandby(primary.address ?? '', path.join(dir, 'b'), 'b', cascaded);
    peers.push(b.peer);
    if (cascaded) {
      if (b.address === null) throw new Error('the cascading standby B does not listen');
      peers.push((await startStandby(b.address, path.join(dir, 'c'), 'c')).peer);
    }
    const cpuBefore = await Promise.all(peers.map(async (peer) => cpuSeconds((await peer.ask<{ cpu: NodeJS.CpuUsage }>({ cmd: 'cpu' })).cpu)));
    const primaryBefore = process.cpuUsage();
    const started = now();
    const batches = await commitBytes(primary, bytes);
    const end = primary.currentLsn;
    const waited = await Promise.all(peers.map((peer, i) => waitFor(peer, end, `${cascaded ? 'cascaded' : 'direct'} throughput: ${i === 0 ? 'B' : 'C'}`)));
    const primaryCpu = cpuSeconds(process.cpuUsage(primaryBefore));
    const cpuAfter = await Promise.all(peers.map(async (peer) => cpuSeconds((await peer.ask<{ cpu: NodeJS.CpuUsage }>({ cmd: 'cpu' })).cpu)));
    const onB = waited[0] as Waited;
    const last = waited[waited.length - 1] as Waited;
    const seconds = (last.replayedAt - started) / 1000;
    return {
      replayed: throughputResult(batches, seconds),
      replayedOnB: throughputResult(batches, (onB.replayedAt - started) / 1000),
      seconds,
      behindBMs: last.replayedAt - onB.replayedAt,
      cpuSeconds: [primaryCpu, ...cpuAfter.map((after, i) => after - (cpuBefore[i] ?? 0))],
      disconnects: waited.reduce((sum, w) => sum + w.disconnects, 0),
    };
  } finally {
    for (const peer of peers.reverse()) await peer.close();
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The two catch-ups of one round, each `bytes` of WAL, measured one after the other. */
export interface CascadedCatchUp {
  /** C through B (B caught up, C restarted behind); `relayCpuSeconds` is B's process. */
  readonly cascaded: CatchUpResult;
  /** D straight from A. */
  readonly direct: CatchUpResult;
  readonly disconnects: number;
}

/**
 * Catch-up through a cascading standby, beside a direct one. A, B (cascading, listening), C
 * (bootstrapped from B) and D (bootstrapped from A) are opened; C and D are stopped; A
 * commits `bytes` of rows and B replays them all (B caught up); then D is restarted and
 * catches up from A, and C is restarted and catches up through B (in that order, or the
 * other way round with `cascadedFirst`), each timed from its start until it has received
 * (flushed), then replayed, A's end. No checkpoint runs on A or B meanwhile, so both still
 * hold the WAL.
 */
export async function cascadedCatchUp(base: string, bytes: number, cascadedFirst: boolean): Promise<CascadedCatchUp> {
  const dir = path.join(base, 'cascade-catch-up');
  const primary = await openPrimary(path.join(dir, 'a'));
  let b: Peer | null = null;
  try {
    const opened = await startStandby(primary.address ?? '', path.join(dir, 'b'), 'b', true);
    b = opened.peer;
    const bAddress = opened.address;
    if (bAddress === null) throw new Error('the cascading standby B does not listen');
    const cDir = path.join(dir, 'c');
    const dDir = path.join(dir, 'd');
    for (const [upstream, standbyDir, name] of [
      [bAddress, cDir, 'c'],
      [primary.address ?? '', dDir, 'd'],
    ] as const) {
      const { peer } = await startStandby(upstream, standbyDir, name);
      await peer.close();
    }
    const from = primary.currentLsn;
    await commitBytes(primary, bytes);
    const to = primary.currentLsn;
    await waitFor(b, to, 'catch-up: B following A');
    const upstreamPeer = b;
    let disconnects = 0;
    /** Restarts the standby in `standbyDir` behind `upstream`; `relay` is B's peer when it goes through B. */
    const measure = async (upstream: string, standbyDir: string, name: string, relay: Peer | null): Promise<CatchUpResult> => {
      const peer = await Peer.start();
      try {
        const { cpu: standbyBefore } = await peer.ask<{ cpu: NodeJS.CpuUsage }>({ cmd: 'cpu' });
        const relayBefore = relay === null ? null : (await relay.ask<{ cpu: NodeJS.CpuUsage }>({ cmd: 'cpu' })).cpu;
        const cpuBefore = process.cpuUsage();
        const started = now();
        const opening = peer.ask({ cmd: 'open', address: upstream, dirs: [standbyDir], names: [name], wait: false });
        const waited = await waitFor(peer, to, `catch-up: ${name.toUpperCase()}`);
        const primaryCpu = process.cpuUsage(cpuBefore);
        const relayAfter = relay === null ? null : (await relay.ask<{ cpu: NodeJS.CpuUsage }>({ cmd: 'cpu' })).cpu;
        await opening;
        disconnects += waited.disconnects;
        const walBytes = to - from;
        return {
          walBytes,
          receiveBytesPerSec: walBytes / ((waited.receivedAt - started) / 1000),
          replayBytesPerSec: walBytes / ((waited.replayedAt - started) / 1000),
          seconds: (waited.replayedAt - started) / 1000,
          primaryCpuSeconds: cpuSeconds(primaryCpu),
          standbyCpuSeconds: cpuSeconds(waited.cpu) - cpuSeconds(standbyBefore),
          ...(relayBefore === null || relayAfter === null ? {} : { relayCpuSeconds: cpuSeconds(relayAfter) - cpuSeconds(relayBefore) }),
        };
      } finally {
        await peer.close();
      }
    };
    const direct = (): Promise<CatchUpResult> => measure(primary.address ?? '', dDir, 'd', null);
    const cascaded = (): Promise<CatchUpResult> => measure(bAddress, cDir, 'c', upstreamPeer);
    let c: CatchUpResult;
    let d: CatchUpResult;
    if (cascadedFirst) {
      c = await cascaded();
      d = await direct();
    } else {
      d = await direct();
      c = await cascaded();
    }
    return { cascaded: c, direct: d, disconnects };
  } finally {
    await b?.close();
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
