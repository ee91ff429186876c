/**
 * Promotion benchmark cases (section 8, issue #12). A `Primary` P in this process, the standby
 * S that is promoted in a peer process (bench/replication-peer.mjs), and for the follow case a
 * standby S2 of S (cascading) in another; all on the compiled package, over TcpTransport on
 * loopback, real files, fdatasync everywhere. Every promotion gets fresh directories: P is
 * opened, S bootstraps from it by base backup, P commits {@link WARM_BATCHES} batches and S
 * replays them; P stays up (and, in the loaded case, keeps committing) while S promotes.
 *
 * The clock runs in S's process: from calling `standby.promote()` to the first
 * `primary.commit([entry], { synchronousCommit: 'local' })` on the Primary it resolved with
 * having resolved (durable, applied). With S2, the committed entry carries that start time
 * (epoch ms) in its first 8 bytes, and S2's application records when it applied it: the time
 * S2 took to follow S onto the new timeline and replay the first commit made there, counted
 * from the start of the promotion (a comparison of two processes' `performance.timeOrigin`
 * clocks); `waitForReplay(lsn)` on S2 confirms it.
 *
 * The PostgreSQL side is bench/pg/pg-promote.ts (also used by `npm run bench:pg`), run by
 * {@link runPostgres}.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type * as Walship from '../src/index.js';
import { cleanupNow } from './pg/cleanup.js';
import { postgresPrerequisites } from './pg/pg-cluster.js';
import { runPostgresPromotions, type PgPromotionRuns } from './pg/pg-promote.js';
import { Peer, openPrimary } from './replication-cases.js';

/** Batches of 8 rows of 1 KiB committed before each promotion, so there is WAL to promote over. */
export const WARM_BATCHES = 64;
const WARM_ROWS = 8;
const WARM_ROW_BYTES = 1024;
/** The loaded case: commits per second on P while S promotes, one entry of this many bytes each (PostgreSQL: a one-row insert of 100 bytes). */
export const LOAD_RATE = 5000;
export const LOAD_ENTRY_BYTES = 100;
/** The loaded case: how long the load runs before the promotion (PostgreSQL's side waits as long). */
export const LOAD_WARM_MS = 1500;
/** Commits in flight on P at most: the load is open-loop up to this. */
const LOAD_MAX_IN_FLIGHT = 256;
/** How long S2 may take to replay the first commit of the new timeline before the case counts as not followed. */
const FOLLOW_TIMEOUT_MS = 10_000;
const SETUP_TIMEOUT_MS = 60_000;

export type PromotionCase = 'idle' | 'loaded' | 'follow';

/** What one promotion measured (ms). */
export interface PromotionRun {
  /** `promote()` called → resolved. */
  readonly promoteMs: number;
  /** `promote()` called → the first commit on the new primary resolved: the measured figure. */
  readonly firstCommitMs: number;
  /** Bytes S had received but not replayed when the promotion began. */
  readonly backlog: number;
  /** Bytes P had written past S's switch point by the time S answered (loaded: what S did not take along). */
  readonly primaryAhead: number;
  /** The loaded case: commits/s P took while the load ran; NaN otherwise. */
  readonly loadRate: number;
  /** The follow case: `promote()` called → S2 applied the first commit of the new timeline; null when it did not. */
  readonly followMs: number | null;
  /** The same from the first commit resolving on S. */
  readonly followAfterCommitMs: number | null;
  /** Why S2 did not follow, when it did not. */
  readonly followError: string | null;
}

interface Promoted {
  readonly started: number;
  readonly promotedAt: number;
  readonly committedAt: number;
  readonly lsn: number;
  readonly timeline: number;
  readonly switchLsn: number | null;
  readonly backlog: number;
}
interface Replayed {
  readonly replayedAt: number;
  /** Apply latencies recorded on S2 since the last ask, µs: the first commit of the new timeline's, from the promotion's start. */
  readonly latencies: readonly number[];
}
interface Failed {
  readonly error: string;
  readonly states?: unknown;
}

const isFailed = (reply: object): reply is Failed => 'error' in reply;

async function startStandby(upstream: string, dir: string, name: string, listen: boolean): Promise<{ peer: Peer; address: string | null }> {
  const peer = await Peer.start();
  try {
    const { addresses } = await peer.ask<{ addresses: readonly (string | null)[] }>({ cmd: 'open', address: upstream, dirs: [dir], names: [name], listen });
    return { peer, address: addresses[0] ?? null };
  } catch (err) {
    await peer.close().catch(() => undefined);
    throw err;
  }
}

async function replayed(peer: Peer, lsn: number, timeoutMs: number, who: string): Promise<Replayed> {
  const reply = await peer.ask<Replayed | Failed>({ cmd: 'replayed', lsn, timeoutMs });
  if (isFailed(reply)) throw new Error(`${who} did not replay ${lsn}: ${reply.error} ${JSON.stringify(reply.states ?? null)}`);
  return reply;
}

/** Commits on `primary` at `rate` per second, one `LOAD_ENTRY_BYTES` entry each, until stopped; `stop` resolves with the commits/s taken. */
function startLoad(primary: Walship.Primary, rate: number): { stop: () => Promise<number> } {
  const entry = Buffer.alloc(LOAD_ENTRY_BYTES);
  const options = { synchronousCommit: 'local' } as const;
  const inFlight = new Set<Promise<unknown>>();
  let stopped = false;
  let sent = 0;
  let done = 0;
  let failure: unknown = null;
  const started = performance.now();
  const loop = (async (): Promise<void> => {
    while (!stopped) {
      const due = ((performance.now() - started) * rate) / 1000;
      while (sent < due && inFlight.size < LOAD_MAX_IN_FLIGHT) {
        const commit = primary.commit(entry, options).then(
          () => void done++,
          (err: unknown) => void (failure ??= err),
        );
        inFlight.add(commit);
        void commit.finally(() => inFlight.delete(commit));
        sent++;
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await Promise.all(inFlight);
  })();
  return {
    async stop(): Promise<number> {
      const elapsed = performance.now() - started;
      const committed = done;
      stopped = true;
      await loop;
      if (failure !== null) throw failure instanceof Error ? failure : new Error(String(failure));
      return committed / (elapsed / 1000);
    },
  };
}

/**
 * One promotion of the case `kind` in fresh directories under `base`: idle (P up, committing
 * nothing), loaded (P committing {@link LOAD_RATE}/s, from {@link LOAD_WARM_MS} before the
 * promotion until S answered), or follow (idle, with S2 streaming from S).
 */
export async function promotion(base: string, kind: PromotionCase): Promise<PromotionRun> {
  const dir = path.join(base, `promote-${kind}`);
  const primary = await openPrimary(path.join(dir, 'p'));
  const peers: Peer[] = [];
  let load: { stop: () => Promise<number> } | null = null;
  try {
    const s = await startStandby(primary.address ?? '', path.join(dir, 's'), 's', kind === 'follow');
    peers.push(s.peer);
    let s2: Peer | null = null;
    if (kind === 'follow') {
      if (s.address === null) throw new Error('the standby S does not listen');
      s2 = (await startStandby(s.address, path.join(dir, 's2'), 's2', false)).peer;
      peers.push(s2);
    }
    // Zero-filled rows: their first 8 bytes read as no timestamp in the peers' applications.
    const rows = Array.from({ length: WARM_ROWS }, () => Buffer.alloc(WARM_ROW_BYTES));
    await Promise.all(Array.from({ length: WARM_BATCHES }, () => primary.commit(rows)));
    const warmEnd = primary.currentLsn;
    for (const peer of peers) await replayed(peer, warmEnd, SETUP_TIMEOUT_MS, 'a standby, before the promotion');
    if (kind === 'loaded') {
      load = startLoad(primary, LOAD_RATE);
      await new Promise((resolve) => setTimeout(resolve, LOAD_WARM_MS));
    }
    const answer = await s.peer.ask<Promoted | Failed>({ cmd: 'promote' });
    const primaryEnd = primary.currentLsn;
    const loadRate = load === null ? Number.NaN : await load.stop();
    load = null;
    if (isFailed(answer)) throw new Error(`the promotion failed: ${answer.error}`);
    let followMs: number | null = null;
    let followError: string | null = null;
    if (s2 !== null) {
      const reply = await s2.ask<Replayed | Failed>({ cmd: 'replayed', lsn: answer.lsn, timeoutMs: FOLLOW_TIMEOUT_MS });
      if (isFailed(reply)) {
        followError = `${reply.error}; S2: ${JSON.stringify(reply.states ?? null)}`;
      } else {
        const applied = reply.latencies[0];
        followMs = applied === undefined ? reply.replayedAt - answer.started : applied / 1000;
      }
    }
    return {
      promoteMs: answer.promotedAt - answer.started,
      firstCommitMs: answer.committedAt - answer.started,
      backlog: answer.backlog,
      primaryAhead: primaryEnd - (answer.switchLsn ?? primaryEnd),
      loadRate,
      followMs,
      followAfterCommitMs: followMs === null ? null : followMs - (answer.committedAt - answer.started),
      followError,
    };
  } finally {
    if (load !== null) await load.stop().catch(() => undefined);
    for (const peer of peers.reverse()) await peer.close();
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

// ---- PostgreSQL 15, by bench/pg/pg-promote.ts (shared with npm run bench:pg) ----

/** Clients of pgbench's load in PostgreSQL's loaded case. */
const PG_LOAD_CLIENTS = 8;

/** Why PostgreSQL's side cannot run here, or null when it can: it needs root (its servers run as the postgres OS user) and PostgreSQL 15. */
export function postgresUnavailable(): string | null {
  if (process.env['BENCH_SKIP_PG'] === '1') return 'BENCH_SKIP_PG=1';
  return postgresPrerequisites()?.split('\n').join(' ') ?? null;
}

/** What one PostgreSQL run measured: its per-promotion lines, and its samples (ms) by key (idle, loaded, cascade-follow, …). */
export type PostgresRun = PgPromotionRuns;

/**
 * Runs `runs` promotions of each of PostgreSQL's cases (idle, loaded, cascade, repoint) in a
 * primary of its own under a temp dir of their own (which the postgres user can reach),
 * removed afterwards; rejects when a promotion fails. An interrupted benchmark stops its
 * servers with {@link stopPostgres}.
 */
export async function runPostgres(runs: number): Promise<PostgresRun> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-bench-pgpromote-'));
  await fs.chmod(dir, 0o755);
  try {
    return await runPostgresPromotions(path.join(dir, 'pg'), runs, { rate: LOAD_RATE, clients: PG_LOAD_CLIENTS, warmMs: LOAD_WARM_MS });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Stops PostgreSQL's servers if they run (pg_ctl stop -m immediate), on Ctrl-C or SIGTERM. */
export function stopPostgres(): void {
  cleanupNow();
}
