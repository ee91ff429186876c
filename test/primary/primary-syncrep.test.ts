import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { isWalshipError, Primary, TcpTransport, type ErrorCode, type Lsn, type ReplicationStatusRow, type SynchronousCommit } from '../../src/index.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import { createCluster, MemoryStorage, type Cluster, type ClusterOptions } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, within } from '../helpers/wal.js';
import { eventually, GatedStorage, nextEvent, rawStandby, report } from '../helpers/primary-helpers.js';
import { HANG_MS } from '../helpers/standby-harness.js';

// Synchronous replication (#6): sync states as pg_stat_replication shows them, each level's
// release point, cancel, reload, shutdown, and a real standby over TCP.

/** The hand-driven standbys connect as `repl` without a password. */
const TRUST: ClusterOptions = { auth: 'trust' };

const connections = new Set<MessageStream<'client'>>();
afterEach(() => {
  for (const conn of connections) conn.destroy();
  connections.clear();
});

/**
 * A hand-driven standby: it streams from the primary's flushed end, reads everything sent (so
 * the sender never stalls), and reports exactly the positions the test tells it to.
 */
interface TestStandby {
  readonly name: string;
  readonly conn: MessageStream<'client'>;
  /** The end of the WAL received so far. */
  received(): Lsn;
  report(write: Lsn, flush: Lsn, apply: Lsn): void;
  /** Reports everything received as written, flushed and applied. */
  confirmAll(): void;
}

async function connectStandby(cluster: Cluster, primary: Primary, name: string): Promise<TestStandby> {
  const conn = await rawStandby(cluster.transport(name), cluster.address(primary), name);
  connections.add(conn);
  const start = primary.flushLsn;
  conn.send({ kind: 'startReplication', slotName: '', startLsn: start, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
  let end = start;
  void (async () => {
    for (;;) {
      const message = await conn.next().catch(() => null);
      if (message === null || message.kind === 'error') return;
      if (message.kind === 'walData') end = message.startLsn + message.data.length;
    }
  })();
  const standby: TestStandby = {
    name,
    conn,
    received: () => end,
    report: (write, flush, apply) => report(conn, write, flush, apply),
    confirmAll: () => report(conn, end, end, end),
  };
  standby.confirmAll();
  return standby;
}

function row(primary: Primary, name: string): ReplicationStatusRow {
  const rows = primary.replicationStatus().filter((r) => r.applicationName === name);
  assert.equal(rows.length, 1, `one row for ${name}`);
  return rows[0] as ReplicationStatusRow;
}

function syncTable(primary: Primary): string[] {
  return primary
    .replicationStatus()
    .map((r) => `${r.applicationName} ${r.syncPriority} ${r.syncState}`)
    .sort();
}

/** Waits until every named standby is a streaming candidate (its first report arrived). */
async function streaming(primary: Primary, names: readonly string[]): Promise<void> {
  await eventually(
    () => names.every((n) => primary.replicationStatus().some((r) => r.applicationName === n && r.state === 'streaming' && r.flushLsn !== null)),
    HANG_MS,
    `${names.join(', ')} to stream`,
  );
}

/** A commit and whether it has settled, to check that it is still waiting. */
function track<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { promise, settled: () => settled };
}

/** Lets the event loop run a little: replies in flight arrive, a wrongly released commit would settle. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 50));

async function rejectsCode(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    if (!isWalshipError(err, code)) assert.fail(`expected ${code}, got ${String(err)}`);
    if (message !== undefined) assert.match(err.message, message, 'the error message');
    return true;
  });
}

describe('synchronous standbys as pg_stat_replication shows them', () => {
  it('FIRST 2 (s1, s2, s3) with s1..s4: s1 and s2 sync, s3 potential, s4 async; s3 takes over when s1 leaves', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 'FIRST 2 (s1, s2, s3)' });
    const changes: string[][] = [];
    primary.on('sync:standbys', (e) => changes.push([...e.standbys]));
    await primary.commit(payload(1, 100), { synchronousCommit: 'local' });
    const standbys = [];
    for (const name of ['s1', 's2', 's3', 's4']) standbys.push(await connectStandby(cluster, primary, name));
    await streaming(primary, ['s1', 's2', 's3', 's4']);
    assert.deepEqual(syncTable(primary), ['s1 1 sync', 's2 2 sync', 's3 3 potential', 's4 0 async'], 'the documented example');
    assert.deepEqual(changes.at(-1), ['s1', 's2'], 'sync:standbys named the sync pair');

    standbys[0]?.conn.destroy();
    await eventually(() => primary.replicationStatus().length === 3, HANG_MS, 's1 to be gone');
    assert.deepEqual(syncTable(primary), ['s2 2 sync', 's3 3 sync', 's4 0 async'], 'the potential standby took over at once');
    assert.deepEqual(changes.at(-1), ['s2', 's3'], 'and the change was announced');
  });

  it('ANY 2 (s1, s2, s3) with s1..s4: the listed ones are quorum with priority 1', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 'ANY 2 (s1, s2, s3)' });
    await primary.commit(payload(1, 100), { synchronousCommit: 'local' });
    for (const name of ['s1', 's2', 's3', 's4']) await connectStandby(cluster, primary, name);
    await streaming(primary, ['s1', 's2', 's3', 's4']);
    assert.deepEqual(syncTable(primary), ['s1 1 quorum', 's2 1 quorum', 's3 1 quorum', 's4 0 async'], 'the documented example');
  });

  it("'*', duplicates, reconnect order and more sync standbys asked for than connected", async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 'FIRST 1 (*)' });
    await primary.commit(payload(1, 100), { synchronousCommit: 'local' });
    const a = await connectStandby(cluster, primary, 'a');
    await connectStandby(cluster, primary, 'b');
    await streaming(primary, ['a', 'b']);
    assert.deepEqual(syncTable(primary), ['a 1 sync', 'b 1 potential'], "'*' matches everyone; the first connected wins the tie");
    a.conn.destroy();
    await eventually(() => primary.replicationStatus().length === 1, HANG_MS, 'a to be gone');
    await connectStandby(cluster, primary, 'a');
    await streaming(primary, ['a', 'b']);
    // a took the lowest free sender index again: it wins the tie again, as in PostgreSQL.
    assert.deepEqual(syncTable(primary), ['a 1 sync', 'b 1 potential'], 'a reconnected into the lower sender index');

    primary.reload({ synchronousStandbyNames: 'FIRST 3 (x, b, b, a)' });
    assert.deepEqual(syncTable(primary), ['a 4 sync', 'b 2 sync'], 'fewer candidates than asked for: all are sync; a duplicate counts at its first place');
    const waiting = track(primary.commit(payload(2, 100)));
    await settle();
    assert.equal(waiting.settled(), false, 'with fewer than 3 sync standbys, commits wait');
    primary.reload({ synchronousStandbyNames: '' });
    await within(waiting.promise, HANG_MS, 'the commit released by clearing the names');
    assert.deepEqual(syncTable(primary), ['a 0 async', 'b 0 async'], 'no synchronous replication: all async');
  });
});

describe('what each level waits for', () => {
  it('remote_write waits for write, on for flush, remote_apply for apply; local and off for no standby', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 'FIRST 1 (s1)' });
    await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
    const s1 = await connectStandby(cluster, primary, 's1');
    await streaming(primary, ['s1']);
    const base = primary.flushLsn;
    s1.report(base, base, base);

    const commits = new Map<SynchronousCommit, ReturnType<typeof track<{ lsn: Lsn }>>>();
    for (const level of ['remote_write', 'on', 'remote_apply'] as const) commits.set(level, track(primary.commit(payload(1, 100), { synchronousCommit: level })));
    await primary.commit(payload(2, 100), { synchronousCommit: 'local' });
    await primary.commit(payload(3, 100), { synchronousCommit: 'off' });
    const end = primary.flushLsn;
    await eventually(() => s1.received() >= end, HANG_MS, 'the WAL to reach s1');
    await settle();
    for (const [level, c] of commits) assert.equal(c.settled(), false, `${level} waits while s1 confirmed nothing`);

    s1.report(end, base, base);
    await within(commits.get('remote_write')?.promise as Promise<unknown>, HANG_MS, 'remote_write released by the write position');
    await settle();
    assert.equal(commits.get('on')?.settled(), false, 'on still waits: written is not flushed');
    assert.equal(commits.get('remote_apply')?.settled(), false, 'remote_apply still waits');

    s1.report(end, end, base);
    await within(commits.get('on')?.promise as Promise<unknown>, HANG_MS, 'on released by the flush position');
    await settle();
    assert.equal(commits.get('remote_apply')?.settled(), false, 'remote_apply still waits: flushed is not applied');

    s1.report(end, end, end);
    await within(commits.get('remote_apply')?.promise as Promise<unknown>, HANG_MS, 'remote_apply released by the apply position');
  });

  it('a commit is released exactly at its own end: a report just short of it releases only those before', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 's1' });
    await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
    const s1 = await connectStandby(cluster, primary, 's1');
    await streaming(primary, ['s1']);
    const first = track(primary.commit(payload(1, 100)));
    const second = track(primary.commit(payload(2, 100)));
    const a = await primary.waitForApply(primary.currentLsn).then(() => primary.flushLsn);
    await eventually(() => s1.received() >= a, HANG_MS, 'the WAL to reach s1');
    // The first commit ends where the second begins: report one byte short of the second's end.
    s1.report(a - 1, a - 1, a - 1);
    await within(first.promise, HANG_MS, 'the first commit');
    await settle();
    assert.equal(second.settled(), false, 'a report one byte short of a commit does not release it');
    s1.report(a, a, a);
    await within(second.promise, HANG_MS, 'the second commit');
  });

  it('ANY 1 (s1, s2) releases at the better one; FIRST 2 (s1, s2) at the worse', async (t) => {
    for (const [names, waitsFor] of [
      ['ANY 1 (s1, s2)', 's2'],
      ['FIRST 2 (s1, s2)', 'both'],
    ] as const) {
      const cluster = createCluster(t, TRUST);
      const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: names });
      await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
      const s1 = await connectStandby(cluster, primary, 's1');
      const s2 = await connectStandby(cluster, primary, 's2');
      await streaming(primary, ['s1', 's2']);
      const commit = track(primary.commit(payload(1, 100)));
      const end = await primary.waitForApply(primary.currentLsn).then(() => primary.currentLsn);
      await eventually(() => s1.received() >= end && s2.received() >= end, HANG_MS, 'the WAL to reach both');
      s2.confirmAll();
      await settle();
      assert.equal(commit.settled(), waitsFor === 's2', `${names}: s2 alone ${waitsFor === 's2' ? 'releases' : 'does not release'} the commit`);
      s1.confirmAll();
      await within(commit.promise, HANG_MS, `${names}: the commit once both confirmed`);
    }
  });
});

describe('cancel, reload and shutdown', () => {
  it('a signal or timeoutMs ends the wait with SYNC_REP_CANCELED; the batch stays committed and applied', async (t) => {
    const cluster = createCluster(t, TRUST);
    const app = new RecordingApp();
    const primary = await cluster.primary('primary', { application: app, synchronousStandbyNames: 'FIRST 1 (s1)' });
    const abort = new AbortController();
    const commit = primary.commit(payload(1, 100), { signal: abort.signal });
    await eventually(() => app.applied.length === 1, HANG_MS, 'the batch to be applied locally');
    abort.abort();
    await rejectsCode(commit, 'SYNC_REP_CANCELED', /committed locally but might not have been replicated/);
    await rejectsCode(primary.commit(payload(2, 100), { timeoutMs: 20 }), 'SYNC_REP_CANCELED', /after 20 ms/);
    assert.equal(app.applied.length, 2, 'both batches are committed and applied: a cancel is never a rollback');
    // Node fires a longer timer after 1 ms: refused rather than canceled at once.
    await rejectsCode(primary.commit(payload(3, 100), { timeoutMs: 2 ** 31 }), 'INVALID_ARGUMENT', /timeoutMs must be an integer from 0 to 2147483647/);
    await rejectsCode(primary.waitForApply(primary.currentLsn + 1, { timeoutMs: 2 ** 31 }), 'INVALID_ARGUMENT');
    assert.equal(app.applied.length, 2, 'a refused commit appends nothing');
    assert.equal(primary.appliedLsn, primary.flushLsn, 'and durable');
  });

  it('reload: invalid names change nothing; a new list re-evaluates the waiters at once', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 'FIRST 1 (s1)' });
    await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
    const s2 = await connectStandby(cluster, primary, 's2');
    await streaming(primary, ['s2']);
    const waiting = track(primary.commit(payload(1, 100)));
    const end = await primary.waitForApply(primary.currentLsn).then(() => primary.currentLsn);
    await eventually(() => s2.received() >= end, HANG_MS, 'the WAL to reach s2');
    s2.confirmAll();
    await settle();
    assert.equal(waiting.settled(), false, 's2 is not synchronous');

    assert.throws(() => primary.reload({ synchronousStandbyNames: 'FIRST 1 (s2' }), (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS') && /position 12/.test(err.message));
    assert.throws(() => primary.reload({ synchronousCommit: 'sometimes' as never }), (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'));
    assert.throws(() => primary.reload({ walKeepSize: 1 } as never), (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'));
    await settle();
    assert.equal(waiting.settled(), false, 'a refused reload changed nothing');

    primary.reload({ synchronousStandbyNames: 'FIRST 1 (s2)' });
    await within(waiting.promise, HANG_MS, 'released at once by the reload, from the report s2 already sent');

    primary.reload({ synchronousCommit: 'local' });
    await within(primary.commit(payload(2, 100)), HANG_MS, "the default level is now 'local': no wait");
  });

  it('an invalid synchronousStandbyNames is INVALID_OPTIONS with the position, and nothing is created', async () => {
    const storage = new MemoryStorage();
    await rejectsCode(
      Primary.open({ storage, application: new RecordingApp(), synchronousStandbyNames: 'ANY 0 (s1)' }),
      'INVALID_OPTIONS',
      /must be greater than zero/,
    );
    await rejectsCode(Primary.open({ storage, application: new RecordingApp(), synchronousStandbyNames: 'FIRST 2 s1' }), 'INVALID_OPTIONS', /position 9/);
    assert.deepEqual(storage.fileNames(), [], 'nothing was written');
  });

  it('fast shutdown ends waiting commits with SYNC_REP_CANCELED', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 'FIRST 1 (s1)' });
    const commit = primary.commit(payload(1, 100));
    await primary.waitForApply(primary.currentLsn);
    await primary.close();
    await rejectsCode(commit, 'SYNC_REP_CANCELED', /shutting down/);
  });
});

describe('a real standby reports its write position before its fdatasync', () => {
  it('remote_write resolves while the standby cannot fsync; on waits for it', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), synchronousStandbyNames: 'FIRST 1 (s1)' });
    const storage = new GatedStorage();
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), storage, statusIntervalMs: 60_000 });
    try {
      await within(nextEvent(primary, 'sync:standbys', (e) => e.standbys.includes('s1')), HANG_MS, 's1 to become synchronous');
      await within(primary.commit(payload(0, 100)), HANG_MS, 'a commit with the standby fsyncing');
      storage.hold();
      const flushed = track(primary.commit(payload(1, 100), { synchronousCommit: 'on' }));
      const { lsn } = await within(primary.commit(payload(2, 100), { synchronousCommit: 'remote_write' }), HANG_MS, 'remote_write while the standby cannot fsync');
      assert.ok((standby.receiveLsn ?? 0) < lsn, 'the standby has not flushed the batch that remote_write released');
      assert.equal(flushed.settled(), false, 'on waits for the standby to flush');
      storage.release();
      await within(flushed.promise, HANG_MS, 'on, once the standby flushed');
    } finally {
      // Before the cluster closes the standby, whose close waits for its fdatasyncs.
      storage.release();
    }
  });
});

describe('synchronous replication with a real standby over TCP', () => {
  it('on resolves once the standby flushed the batch, remote_apply once it replayed it', async (t) => {
    const { dir, cleanup } = await tempDir();
    const cluster = createCluster(t, { ...TRUST, transport: () => new TcpTransport(), listenAddress: () => '127.0.0.1:0' });
    const app = new RecordingApp();
    const primary = await cluster.primary('primary', { application: app, dir: `${dir}/primary`, segmentSize: 1024 * 1024, synchronousStandbyNames: 'FIRST 1 (s1)' });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), dir: `${dir}/s1`, statusIntervalMs: 1000 });
    try {
      await within(nextEvent(primary, 'sync:standbys', (e) => e.standbys.includes('s1')), HANG_MS, 's1 to become synchronous');
      for (let i = 0; i < 50; i++) {
        const { lsn } = await primary.commit(payload(i, 100 + i), { synchronousCommit: i % 2 === 0 ? 'on' : 'remote_apply' });
        assert.ok((standby.receiveLsn ?? 0) >= lsn, `commit ${i}: the standby has flushed it when the commit resolves`);
        if (i % 2 === 1) assert.ok((standby.replayLsn ?? 0) >= lsn, `commit ${i}: the standby has replayed it (remote_apply)`);
      }
      assert.equal(row(primary, 's1').syncState, 'sync', 's1 is the sync standby');
    } finally {
      await cluster.close();
      await cleanup();
    }
  });
});
