/**
 * The standby side of the replication benchmark, in its own process as standbys are, on the
 * compiled package (dist/): `node bench/replication-peer.mjs`, driven over IPC by
 * bench/replication-cases.ts with messages
 *
 * - `{ cmd: 'open', address, dirs, names?, listen?, wait?, digest? }`: opens one Standby per directory
 *   (trust auth, a counting application, or with `digest: true` a DigestApp; application
 *   names `names[i]`, else s1, s2, …),
 *   answers `{ opened, addresses }` once each is streaming (at once with `wait: false`). With
 *   `listen: true` each also serves standbys of its own (cascading) on a loopback port, trust
 *   auth for user bench; `addresses[i]` is where they connect (else null);
 * - `{ cmd: 'open', restoreDir, restoreIntervalMs, dirs, wait? }` (section 9): the same, but
 *   each is an archive-only standby (log shipping, no primary) on a base backup's directory:
 *   `restore` is a `FileSystemArchive` on `restoreDir`, looked at again every
 *   `restoreIntervalMs` when it had nothing new; answers once each is `restoring` and
 *   consistent (at once with `wait: false`);
 * - `{ cmd: 'wait', lsn, stallMs? }`: answers `{ receivedAt, replayedAt, cpu, disconnects }`
 *   (epoch ms, this process's CPU time so far, connections to an upstream that ended since the
 *   open) once every standby has received, then replayed, up to `lsn`. With `stallMs`, a wait
 *   during which no standby's receive or replay position moved for that long gives up and
 *   answers `{ stalled }` (where each standby stands) instead;
 * - `{ cmd: 'cpu' }`: answers `{ cpu }`, this process's CPU time so far;
 * - `{ cmd: 'digest' }` (npm run bench:pg): answers `{ digests }`, per standby opened with
 *   `digest: true` the `{ batches, crc, lsn }` of every batch it applied (see DigestApp);
 * - `{ cmd: 'latency' }`: answers the apply latencies recorded since the last ask: from the
 *   commit call on the primary (an epoch-ms stamp in the first 8 bytes of each batch's first
 *   entry, 0 for none) to the end of `apply` on each standby, in microseconds;
 * - `{ cmd: 'promote', entryBytes? }` (section 8): promotes the first standby and commits one
 *   entry of `entryBytes` (default 100) on the `Primary` it resolves with, at
 *   `synchronousCommit: 'local'`; the entry's first 8 bytes carry the epoch ms at which the
 *   promotion began, so a standby downstream records (`latency`) when it applied it, counted
 *   from then. Answers `{ started, promotedAt, committedAt, lsn, timeline, switchLsn, backlog }`
 *   (epoch ms; `lsn` the commit's end; `backlog` the bytes received but not replayed when the
 *   promotion began), or `{ error }`;
 * - `{ cmd: 'replayed', lsn, timeoutMs }` (section 8): `waitForReplay(lsn)` on every standby;
 *   answers `{ replayedAt, latencies }` (epoch ms, and the apply latencies recorded since the
 *   last ask), or `{ error, states }` when it timed out or failed;
 * - `{ cmd: 'close', checkpoint? }`: closes the standbys (and the primaries they were promoted
 *   to), with `checkpoint: true` after a restartpoint (`checkpoint()`) on each, as PostgreSQL's
 *   standby makes one when it shuts down; answers `{ closed }`, and exits.
 *
 * It also exits when its IPC channel closes (the benchmark ended or was killed), so that no
 * peer outlives the run.
 */
import crc32c from 'fast-crc32c';
import { FileSystemArchive, NodeStorage, Standby, TcpTransport } from '../dist/index.js';

const now = () => performance.timeOrigin + performance.now();
let standbys = [];
/** The applications of `standbys`, in the same order. */
let apps = [];
/** The primaries that `promote` made of standbys: closing them is the peer's, not the standby's. */
let promoted = [];
let latencies = [];
let disconnects = 0;
let queue = Promise.resolve();

class CountingApp {
  batches = 0;
  apply(batch) {
    this.batches++;
    const first = batch.entries[0]?.data;
    if (first !== undefined && first.length >= 8) {
      const stamp = Buffer.from(first.buffer, first.byteOffset, 8).readDoubleLE(0);
      if (stamp > 0) latencies.push((now() - stamp) * 1000);
    }
  }
  async snapshot() {
    return Buffer.from(String(this.batches));
  }
  async restore(snapshot) {
    this.batches = Number((await snapshot.bytes()).toString());
  }
}

/**
 * An application that keeps a digest of everything it applied, in order: the batch count, a
 * CRC-32C chained over every entry's bytes, and the last batch's position. Its snapshot holds
 * the digest, so a standby that restarts (or bootstraps from a base backup) carries on from
 * the primary's or its own earlier state: equal digests at equal positions mean equal
 * sequences of batches. bench/pg/walship-cluster.ts's DigestApp is the primary's copy of it.
 */
class DigestApp {
  batches = 0;
  crc = 0;
  lsn = 0;
  apply(batch) {
    this.batches++;
    for (const { data } of batch.entries) this.crc = crc32c.calculate(Buffer.from(data.buffer, data.byteOffset, data.length), this.crc);
    this.lsn = batch.lsn;
  }
  digest() {
    return { batches: this.batches, crc: this.crc, lsn: this.lsn };
  }
  async snapshot() {
    return Buffer.from(JSON.stringify(this.digest()));
  }
  async restore(snapshot) {
    Object.assign(this, JSON.parse((await snapshot.bytes()).toString()));
  }
}

/** Polls `condition` every millisecond; resolves with the time it held, or null once `stalled()` says to give up. */
async function until(condition, stalled = () => false) {
  while (!condition()) {
    if (stalled()) return null;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  return now();
}

/** Whether no standby's receive or replay position has moved for `ms` (never, without `ms`). */
function stallWatch(ms) {
  if (ms === undefined) return () => false;
  let last = null;
  let since = now();
  return () => {
    const positions = standbys.map((s) => `${s.receiveLsn}/${s.replayLsn}`).join(' ');
    if (positions !== last) {
      last = positions;
      since = now();
    }
    return now() - since > ms;
  };
}

process.on('message', async (message) => {
  switch (message.cmd) {
    case 'open': {
      // An archive-only standby has no primary: it restores from the archive alone.
      const archiveOnly = message.restoreDir !== undefined;
      const source = (i) =>
        archiveOnly
          ? { restore: new FileSystemArchive(message.restoreDir), restoreIntervalMs: message.restoreIntervalMs }
          : {
              primary: { transport: new TcpTransport(), address: message.address, user: 'bench', applicationName: message.names?.[i] ?? `s${i + 1}` },
              statusIntervalMs: 1000,
              // BENCH_EARLY_SEND=1: the standbys accept early WAL (section 6's primary sends it).
              ...(process.env.BENCH_EARLY_SEND === '1' ? { acceptEarlyWal: true } : {}),
            };
      apps = message.dirs.map(() => (message.digest === true ? new DigestApp() : new CountingApp()));
      const opening = Promise.all(
        message.dirs.map((dir, i) =>
          Standby.open({
            // BENCH_COMMIT_SYNC (bench:pg --commit-sync): where the standby's WAL fdatasync runs.
            ...(process.env.BENCH_COMMIT_SYNC ? { storage: new NodeStorage(dir, { commitSync: process.env.BENCH_COMMIT_SYNC }) } : { dir }),
            application: apps[i],
            ...source(i),
            ...(process.env.PEER_SYNC ? { sync: process.env.PEER_SYNC } : {}),
            // BENCH_FLUSH_DELAY (bench:pg --flush-delay): the standby's flushDelayMs.
            ...(process.env.BENCH_FLUSH_DELAY ? { flushDelayMs: Number(process.env.BENCH_FLUSH_DELAY) } : {}),
            ...(message.listen === true
              ? { listen: { transport: new TcpTransport(), address: '127.0.0.1:0' }, auth: { rules: [{ user: 'bench', address: '127.0.0.1/32', method: 'trust' }] } }
              : {}),
          }),
        ),
      );
      // Commands are answered in order: a 'wait' sent right after this 'open' waits for it.
      queue = opening.then(async (opened) => {
        standbys = opened;
        disconnects = 0;
        for (const standby of standbys) standby.on('primary:disconnected', () => disconnects++);
        const ready = archiveOnly ? 'restoring' : 'streaming';
        if (message.wait !== false) for (const standby of standbys) await until(() => standby.state === ready && standby.consistent);
      });
      await queue;
      process.send({ opened: standbys.length, addresses: standbys.map((s) => s.address) });
      break;
    }
    case 'wait': {
      await queue;
      const stalled = stallWatch(message.stallMs);
      const receivedAt = await until(() => standbys.every((s) => (s.receiveLsn ?? 0) >= message.lsn), stalled);
      const replayedAt = receivedAt === null ? null : await until(() => standbys.every((s) => (s.replayLsn ?? 0) >= message.lsn), stalled);
      if (replayedAt === null) {
        process.send({ stalled: standbys.map((s) => ({ state: s.state, receiveLsn: s.receiveLsn, replayLsn: s.replayLsn })) });
        break;
      }
      process.send({ receivedAt, replayedAt, cpu: process.cpuUsage(), disconnects });
      break;
    }
    case 'digest': {
      await queue;
      process.send({ digests: apps.map((app) => (app instanceof DigestApp ? app.digest() : null)) });
      break;
    }
    case 'cpu': {
      process.send({ cpu: process.cpuUsage() });
      break;
    }
    case 'latency': {
      process.send({ latencies });
      latencies = [];
      break;
    }
    case 'promote': {
      await queue;
      const standby = standbys[0];
      const entry = Buffer.alloc(message.entryBytes ?? 100, 0x61);
      const backlog = (standby.receiveLsn ?? 0) - (standby.replayLsn ?? 0);
      latencies = [];
      const started = now();
      entry.writeDoubleLE(started, 0);
      try {
        const primary = await standby.promote();
        const promotedAt = now();
        promoted.push(primary);
        const { lsn } = await primary.commit([entry], { synchronousCommit: 'local' });
        const committedAt = now();
        const switchLsn = primary.wal.history.entries.at(-1)?.switchLsn ?? null;
        process.send({ started, promotedAt, committedAt, lsn, timeline: primary.timeline, switchLsn, backlog });
      } catch (err) {
        process.send({ error: `${err.code ?? ''} ${err.message}` });
      }
      break;
    }
    case 'replayed': {
      await queue;
      try {
        await Promise.all(standbys.map((s) => s.waitForReplay(message.lsn, { timeoutMs: message.timeoutMs })));
        process.send({ replayedAt: now(), latencies });
      } catch (err) {
        const states = standbys.map((s) => ({ state: s.state, timeline: s.timeline, receiveLsn: s.receiveLsn, replayLsn: s.replayLsn, failure: s.failure?.message ?? null }));
        process.send({ error: `${err.code ?? ''} ${err.message}`, states });
      }
      latencies = [];
      break;
    }
    case 'close': {
      // With `checkpoint`, a restartpoint first (PostgreSQL's standby makes one at shutdown),
      // so the next open replays only what came after it; a standby that cannot make one (it
      // failed, or was promoted) is still closed.
      if (message.checkpoint === true) {
        for (const result of await Promise.allSettled(standbys.map((s) => s.checkpoint()))) {
          if (result.status === 'rejected') console.error(`peer: restartpoint before close failed: ${result.reason?.message ?? result.reason}`);
        }
      }
      await Promise.all([...standbys.map((s) => s.close()), ...promoted.map((p) => p.close())]);
      process.send({ closed: true });
      process.disconnect();
      break;
    }
  }
});
process.on('disconnect', () => process.exit(0));
process.send({ ready: true });
