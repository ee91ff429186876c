/**
 * Synchronous replication benchmark cases (issue #6): a Primary in this process with
 * `synchronousStandbyNames` set, each of its standbys in a process of its own
 * (bench/replication-peer.mjs, application names s1, s2, …), all on the compiled package, over TcpTransport on loopback,
 * fdatasync on both sides. Committers loop on `primary.commit(entry, { synchronousCommit })`
 * with one 100-byte entry per commit (PostgreSQL's figure: one 100-byte insert per
 * transaction), so one primary and its peers serve every level of a setup.
 */
import path from 'node:path';
import type * as Walship from '../src/index.js';
import type { SynchronousCommit } from '../src/index.js';
import { CountingApp, Peer } from './replication-cases.js';
import { LatencyRecorder, type RunResult } from './stats.js';
import { BENCH_RECYCLE_SEGMENTS, yieldToEventLoop } from './steady-log.js';

const W = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof Walship;

/** Bytes of the one entry of each commit. */
export const SYNC_REP_ENTRY_BYTES = 100;
/** Every level, weakest first. */
export const SYNC_LEVELS = ['off', 'local', 'remote_write', 'on', 'remote_apply'] as const satisfies readonly SynchronousCommit[];
/** The levels that wait for the synchronous standbys. */
export const REMOTE_LEVELS = ['remote_write', 'on', 'remote_apply'] as const satisfies readonly SynchronousCommit[];

/** How long to wait for standbys to become synchronous, or to catch up between cases. */
const SETTLE_TIMEOUT_MS = 60_000;

async function until(condition: () => boolean, what: () => string): Promise<void> {
  const deadline = performance.now() + SETTLE_TIMEOUT_MS;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`gave up after ${SETTLE_TIMEOUT_MS / 1000} s waiting for ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * One setup: a primary with `synchronousStandbyNames` and `standbys` standbys (s1, s2, …),
 * each in a peer process of its own, opened once and measured at every level asked for.
 */
export class SyncRepSetup {
  readonly names: string;
  readonly standbys: number;
  readonly #primary: Walship.Primary;
  readonly #peers: readonly Peer[];

  private constructor(names: string, standbys: number, primary: Walship.Primary, peers: readonly Peer[]) {
    this.names = names;
    this.standbys = standbys;
    this.#primary = primary;
    this.#peers = peers;
  }

  /**
   * Opens the primary in `dir`/primary and the standbys in `dir`/s1, …; resolves once every
   * standby streams and the primary's `replicationStatus()` shows each with `syncState`
   * `sync` (FIRST) or `quorum` (ANY).
   */
  static async open(dir: string, names: string, standbys: number): Promise<SyncRepSetup> {
    const primary = await W.Primary.open({
      dir: path.join(dir, 'primary'),
      application: new CountingApp(),
      sync: 'fdatasync',
      synchronousCommit: 'on',
      synchronousStandbyNames: names,
      // BENCH_EARLY_SEND=1: WAL goes to the standbys while the primary's fdatasync runs.
      earlySend: process.env.BENCH_EARLY_SEND === '1',
      recycleSegments: BENCH_RECYCLE_SEGMENTS,
      listen: { transport: new W.TcpTransport(), address: '127.0.0.1:0' },
      auth: { rules: [{ user: 'bench', address: '127.0.0.1/32', method: 'trust' }] },
    });
    // One process per standby, as standbys run on their own machines: in one process they
    // would share one event loop, and ANY would wait for the slower of the two.
    const peers: Peer[] = [];
    try {
      for (let i = 0; i < standbys; i++) peers.push(await Peer.start());
      const dirs = Array.from({ length: standbys }, (_, i) => path.join(dir, `s${i + 1}`));
      await Promise.all(peers.map((peer, i) => peer.ask({ cmd: 'open', address: primary.address, dirs: [dirs[i]], names: [`s${i + 1}`] })));
      const setup = new SyncRepSetup(names, standbys, primary, peers);
      await setup.#waitForSync();
      return setup;
    } catch (err) {
      for (const peer of peers) await peer.close().catch(() => undefined);
      await primary.close().catch(() => undefined);
      throw err;
    }
  }

  /** Every standby connected and counted as synchronous (`sync`, or `quorum` under ANY). */
  async #waitForSync(): Promise<void> {
    const wanted = /^\s*ANY\b/i.test(this.names) ? 'quorum' : 'sync';
    await until(
      () => {
        const rows = this.#primary.replicationStatus();
        return rows.length === this.standbys && rows.every((r) => r.state === 'streaming' && r.syncState === wanted);
      },
      () =>
        `${this.standbys} standby(s) ${wanted} under '${this.names}'; replicationStatus(): ${
          JSON.stringify(this.#primary.replicationStatus().map((r) => ({ name: r.applicationName, state: r.state, syncState: r.syncState }))) ?? '[]'
        }`,
    );
  }

  /**
   * Untimed, between cases: waits until the primary's WAL is durable and every standby has
   * replayed it (so no case pays for the previous one's backlog), then checkpoints the primary
   * so its filled segments are recycled rather than new ones created during a measured run.
   */
  async settle(): Promise<void> {
    const primary = this.#primary;
    const end = primary.currentLsn;
    await until(
      () => primary.flushLsn >= end && primary.appliedLsn >= end,
      () => `the primary to flush and apply up to ${end}`,
    );
    await until(
      () => {
        const rows = primary.replicationStatus();
        return rows.length === this.standbys && rows.every((r) => (r.replayLsn ?? 0) >= end);
      },
      () => `the standbys to replay up to ${end}`,
    );
    await primary.checkpoint(primary.appliedLsn);
    await this.#waitForSync();
  }

  /**
   * `committers` concurrent loops of `await primary.commit(entry, { synchronousCommit: level })`
   * for `durationMs`, each commit's latency recorded. A committer starts no commit after the
   * deadline; the time runs until the last one resolves. At `off` a commit resolves without
   * any I/O, so each committer then yields one event-loop turn (`setImmediate`), as an
   * application serving requests does: otherwise the loop would never let the WAL writer run.
   * `syncsPerSec` counts the primary's WAL flushes (group-commit rounds).
   */
  async measure(level: SynchronousCommit, committers: number, durationMs: number): Promise<RunResult> {
    const primary = this.#primary;
    const entry = Buffer.alloc(SYNC_REP_ENTRY_BYTES, 0x61);
    const options = { synchronousCommit: level };
    const latencies = new LatencyRecorder();
    let flushes = 0;
    const onFlush = (): void => {
      flushes++;
    };
    primary.wal.on('flush', onFlush);
    const start = performance.now();
    const end = start + durationMs;
    const committer = async (): Promise<void> => {
      for (let now = performance.now(); now < end; ) {
        await primary.commit(entry, options);
        const done = performance.now();
        latencies.add((done - now) * 1000);
        if (level === 'off') await yieldToEventLoop();
        now = level === 'off' ? performance.now() : done;
      }
    };
    try {
      await Promise.all(Array.from({ length: committers }, committer));
    } finally {
      primary.wal.off('flush', onFlush);
    }
    const seconds = (performance.now() - start) / 1000;
    const [p50, p99] = latencies.percentiles([0.5, 0.99]);
    return {
      opsPerSec: latencies.count / seconds,
      bytesPerSec: (latencies.count * SYNC_REP_ENTRY_BYTES) / seconds,
      p50Us: p50 ?? Number.NaN,
      p99Us: p99 ?? Number.NaN,
      syncsPerSec: flushes / seconds,
    };
  }

  /**
   * Checks that commits at `level` really wait for the standbys: `commits` commits one after
   * the other, and after each resolves, whether enough standbys (`num` of FIRST/ANY num) had
   * reported the position the level waits for (written, flushed or applied) at or past the
   * commit's end in `replicationStatus()`. Resolves with how many commits had not: 0 for the
   * remote levels, about all of them for `local`, whose commits do not wait.
   */
  async unconfirmedCommits(level: SynchronousCommit, commits: number): Promise<number> {
    const field = level === 'remote_write' ? 'writeLsn' : level === 'remote_apply' ? 'replayLsn' : 'flushLsn';
    const num = Number(/^\s*(?:FIRST|ANY)\s+(\d+)/i.exec(this.names)?.[1] ?? 1);
    const entry = Buffer.alloc(SYNC_REP_ENTRY_BYTES, 0x62);
    let unconfirmed = 0;
    for (let i = 0; i < commits; i++) {
      const { lsn } = await this.#primary.commit(entry, { synchronousCommit: level });
      const confirmed = this.#primary.replicationStatus().filter((row) => (row[field] ?? 0) >= lsn).length;
      if (confirmed < num) unconfirmed++;
    }
    return unconfirmed;
  }

  /** Closes the standbys, then the primary. */
  async close(): Promise<void> {
    try {
      for (const peer of this.#peers) await peer.close();
    } finally {
      await this.#primary.close();
    }
  }
}
