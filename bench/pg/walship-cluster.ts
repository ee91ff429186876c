/**
 * walship's side of `npm run bench:pg`: a `Primary` in this process and two standbys (s1, s2),
 * each in a process of its own (bench/replication-peer.mjs), all on the compiled package
 * (dist/), over `TcpTransport` on loopback, fdatasync everywhere, directories under the run's
 * temp dir. The primary and every standby run a digest application (the batch count, a
 * CRC-32C over every entry in order, the last position), so after a case
 * {@link WalshipCluster.verify} can check that every standby holds exactly the primary's
 * batches.
 */
import crc32c from 'fast-crc32c';
import path from 'node:path';
import type * as Walship from '../../src/index.js';
import type { SynchronousCommit } from '../../src/index.js';
import { Peer, commitBytes } from '../replication-cases.js';
import { BENCH_RECYCLE_SEGMENTS, yieldToEventLoop } from '../steady-log.js';
import { BULK_ROWS, BULK_ROW_BYTES, ENTRY_BYTES } from './cases.js';
import { sleep } from './exec.js';

const W = (await import(new URL('../../dist/index.js', import.meta.url).href)) as typeof Walship;

/** The primary keeps this much WAL for standbys that are away (PostgreSQL: wal_keep_size, the same 4 GB). */
const WAL_KEEP_SIZE = 4 * 1024 ** 3;
const WAIT_MS = 120_000;

/** What an application applied, in order: see bench/replication-peer.mjs's DigestApp, of which this is the primary's copy. */
export interface Digest {
  readonly batches: number;
  readonly crc: number;
  readonly lsn: number;
}

/** The primary's digest application (the same as the peers'). */
class DigestApp {
  batches = 0;
  crc = 0;
  lsn = 0;
  apply(batch: Walship.CommittedBatch): void {
    this.batches++;
    for (const { data } of batch.entries) this.crc = crc32c.calculate(Buffer.from(data.buffer, data.byteOffset, data.length), this.crc);
    this.lsn = batch.lsn;
  }
  digest(): Digest {
    return { batches: this.batches, crc: this.crc, lsn: this.lsn };
  }
  async snapshot(): Promise<Uint8Array> {
    return Buffer.from(JSON.stringify(this.digest()));
  }
  async restore(snapshot: Walship.Snapshot): Promise<void> {
    Object.assign(this, JSON.parse((await snapshot.bytes()).toString()) as Digest);
  }
}

async function until(condition: () => boolean, what: () => string): Promise<void> {
  const deadline = performance.now() + WAIT_MS;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`walship: gave up after ${WAIT_MS / 1000} s waiting for ${what()}`);
    await sleep(2);
  }
}

export class WalshipCluster {
  readonly #dir: string;
  readonly #primary: Walship.Primary;
  readonly #app: DigestApp;
  readonly #peers = new Map<string, Peer>();
  #names: string;
  /** Distinguishes every committed entry, so the digests see order and content. */
  #sequence = 0;

  private constructor(dir: string, primary: Walship.Primary, app: DigestApp, names: string) {
    this.#dir = dir;
    this.#primary = primary;
    this.#app = app;
    this.#names = names;
  }

  /** Opens the primary under `dir`/primary with `names` as its synchronous standbys, and one peer process per standby name. */
  static async open(
    dir: string,
    standbys: readonly string[],
    names: string,
    { earlySend = false, commitSync = 'pool', flushDelayMs = null }: { earlySend?: boolean; commitSync?: Walship.CommitSync; flushDelayMs?: number | null } = {},
  ): Promise<WalshipCluster> {
    const app = new DigestApp();
    // The peers read these when they open their standbys (acceptEarlyWal, their storage's commitSync, flushDelayMs).
    if (earlySend) process.env['BENCH_EARLY_SEND'] = '1';
    process.env['BENCH_COMMIT_SYNC'] = commitSync;
    if (flushDelayMs !== null) process.env['BENCH_FLUSH_DELAY'] = String(flushDelayMs);
    const primary = await W.Primary.open({
      storage: new W.NodeStorage(path.join(dir, 'primary'), { commitSync }),
      application: app,
      sync: 'fdatasync',
      synchronousCommit: 'on',
      synchronousStandbyNames: names,
      earlySend,
      recycleSegments: BENCH_RECYCLE_SEGMENTS,
      walKeepSize: WAL_KEEP_SIZE,
      listen: { transport: new W.TcpTransport(), address: '127.0.0.1:0' },
      auth: { rules: [{ user: 'bench', address: '127.0.0.1/32', method: 'trust' }] },
    });
    const cluster = new WalshipCluster(dir, primary, app, names);
    try {
      for (const name of standbys) await cluster.startStandby(name);
      await cluster.#waitForSync(standbys);
      return cluster;
    } catch (err) {
      await cluster.close().catch(() => undefined);
      throw err;
    }
  }

  /** Starts standby `name` in a process of its own, in `dir`/`name` (a base backup the first time, its own WAL after); with `wait: false` resolves before it streams. */
  async startStandby(name: string, { wait = true }: { wait?: boolean } = {}): Promise<Peer> {
    const peer = await Peer.start();
    this.#peers.set(name, peer);
    const opened = peer.ask({ cmd: 'open', address: this.#primary.address, dirs: [path.join(this.#dir, name)], names: [name], digest: true, wait });
    if (wait) await opened;
    else void opened;
    return peer;
  }

  /** Closes standby `name` after a restartpoint (its process exits; its directory stays). */
  async stopStandby(name: string): Promise<void> {
    const peer = this.#peers.get(name);
    this.#peers.delete(name);
    // A restartpoint first, as PostgreSQL's standby makes one when it shuts down: a restart
    // replays what came after it, not everything since the base backup.
    await peer?.close({ checkpoint: true });
  }

  /** Changes the synchronous standbys (`primary.reload()`, PostgreSQL's ALTER SYSTEM + reload) and waits until each standby has the expected sync state. */
  async setSynchronousStandbyNames(names: string): Promise<void> {
    this.#primary.reload({ synchronousStandbyNames: names });
    this.#names = names;
    await this.#waitForSync([...this.#peers.keys()]);
  }

  async #waitForSync(standbys: readonly string[]): Promise<void> {
    const names = this.#names;
    const listed = /\(([^)]*)\)/.exec(names)?.[1]?.split(',').map((s) => s.trim()) ?? [];
    const count = Number(/^\s*(?:FIRST|ANY)\s+(\d+)/i.exec(names)?.[1] ?? 0);
    const any = /^\s*ANY\b/i.test(names);
    const expected = (name: string): string => {
      const rank = listed.indexOf(name);
      if (rank < 0) return 'async';
      if (any) return 'quorum';
      return rank < count ? 'sync' : 'potential';
    };
    await until(
      () => {
        const rows = this.#primary.replicationStatus();
        return standbys.every((name) => rows.some((r) => r.applicationName === name && r.state === 'streaming' && r.syncState === expected(name)));
      },
      () => `standbys ${standbys.join(', ')} under '${names}'; replicationStatus(): ${JSON.stringify(this.#primary.replicationStatus().map((r) => [r.applicationName, r.state, r.syncState]))}`,
    );
  }

  /**
   * `committers` loops of `await primary.commit(entry, { synchronousCommit: level })` for
   * `seconds`, one 100-byte entry per commit (its first 8 bytes a sequence number); commits/s.
   * At `off` a commit resolves without I/O, so each committer yields one event-loop turn per
   * commit, as an application serving requests does (otherwise the WAL writer never runs).
   */
  async commits(level: SynchronousCommit, committers: number, seconds: number): Promise<number> {
    const options = { synchronousCommit: level };
    let count = 0;
    const end = performance.now() + seconds * 1000;
    const start = performance.now();
    const committer = async (): Promise<void> => {
      while (performance.now() < end) {
        const entry = Buffer.alloc(ENTRY_BYTES, 0x61);
        entry.writeDoubleLE(++this.#sequence, 0);
        await this.#primary.commit(entry, options);
        count++;
        if (level === 'off') await yieldToEventLoop();
      }
    };
    await Promise.all(Array.from({ length: committers }, committer));
    return count / ((performance.now() - start) / 1000);
  }

  /** Bulk WAL: one committer commits batches of {@link BULK_ROWS} rows of {@link BULK_ROW_BYTES} at `on` for `seconds`; payload bytes/s. */
  async bulk(seconds: number): Promise<number> {
    const rows = Array.from({ length: BULK_ROWS }, () => Buffer.alloc(BULK_ROW_BYTES, 0x62));
    let bytes = 0;
    const start = performance.now();
    const end = start + seconds * 1000;
    while (performance.now() < end) {
      (rows[0] as Buffer).writeDoubleLE(++this.#sequence, 0);
      await this.#primary.commit(rows, { synchronousCommit: 'on' });
      bytes += BULK_ROWS * BULK_ROW_BYTES;
    }
    return bytes / ((performance.now() - start) / 1000);
  }

  /**
   * Catch-up: standby `name` is stopped, the primary commits `bytes` of WAL (1 KiB rows,
   * 64 committers, `local`: untimed), then the standby starts again; timed from its start until
   * it has replayed the primary's end. WAL bytes/s.
   */
  async catchUp(name: string, bytes: number): Promise<number> {
    await this.stopStandby(name);
    const from = this.#primary.currentLsn;
    // commitBytes counts rows, not WAL: stop once the WAL is `bytes` ahead.
    while (this.#primary.currentLsn - from < bytes) await commitBytes(this.#primary, Math.min(64 * 1024 * 1024, bytes));
    const to = this.#primary.currentLsn;
    await until(() => this.#primary.flushLsn >= to, () => `the primary to flush up to ${to}`);
    const started = performance.timeOrigin + performance.now();
    const peer = await this.startStandby(name, { wait: false });
    const { replayedAt } = await peer.ask<{ replayedAt: number }>({ cmd: 'wait', lsn: to });
    return (to - from) / ((replayedAt - started) / 1000);
  }

  /**
   * Untimed, between cases: waits until the primary's WAL is durable and applied and every
   * standby has replayed it, then checkpoints the primary (so its filled segments are recycled
   * rather than created during a measured run) and waits for the sync states again.
   */
  async settle(): Promise<void> {
    const primary = this.#primary;
    const end = primary.currentLsn;
    await until(() => primary.flushLsn >= end && primary.appliedLsn >= end, () => `the primary to flush and apply up to ${end}`);
    for (const peer of this.#peers.values()) await peer.ask({ cmd: 'wait', lsn: end });
    await primary.checkpoint(primary.appliedLsn);
    await this.#waitForSync([...this.#peers.keys()]);
  }

  /**
   * After {@link settle}: each standby's digest against the primary's. Resolves with one line
   * per standby that does not hold exactly the primary's batches (empty when all do).
   */
  async verify(): Promise<string[]> {
    const mine = this.#app.digest();
    const problems: string[] = [];
    for (const [name, peer] of this.#peers) {
      const { digests } = await peer.ask<{ digests: readonly (Digest | null)[] }>({ cmd: 'digest' });
      const theirs = digests[0] ?? null;
      if (theirs === null || theirs.batches !== mine.batches || theirs.crc !== mine.crc || theirs.lsn !== mine.lsn) {
        problems.push(`walship standby ${name} applied ${JSON.stringify(theirs)}, the primary ${JSON.stringify(mine)}`);
      }
    }
    return problems;
  }

  /** The primary's digest (batches applied). */
  digest(): Digest {
    return this.#app.digest();
  }

  /** Closes the standbys, then the primary. */
  async close(): Promise<void> {
    try {
      for (const name of [...this.#peers.keys()]) await this.stopStandby(name);
    } finally {
      await this.#primary.close();
    }
  }
}
