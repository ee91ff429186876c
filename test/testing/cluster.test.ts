import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError, TcpTransport, type Primary, type Standby } from '../../src/index.js';
import { CLUSTER_DEFAULTS, createCluster, MemoryNetwork, type TeardownContext } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, within } from '../helpers/wal.js';

const HANG_MS = 60_000;

/** A stand-in for a test context: keeps the teardowns, which the test then runs itself. */
function fakeTest(): TeardownContext & { readonly teardowns: (() => Promise<void>)[]; end(): Promise<void> } {
  const teardowns: (() => Promise<void>)[] = [];
  return {
    teardowns,
    after: (fn) => teardowns.push(fn),
    end: async () => {
      for (const fn of teardowns) await fn();
    },
  };
}

/** Records the order in which `nodes` are closed, under the given labels. */
function closeOrder(nodes: Record<string, Primary | Standby>): string[] {
  const order: string[] = [];
  for (const [label, node] of Object.entries(nodes)) {
    const close = node.close.bind(node);
    node.close = (...args: Parameters<typeof close>) => {
      order.push(label);
      return close(...args);
    };
  }
  return order;
}

async function rejectsCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => isWalshipError(err) && err.code === code);
}

describe('createCluster', () => {
  it('opens a named primary and standby with test defaults; the standby replays every commit', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('p', { application: papp });
    assert.equal(primary.address, 'p:1', 'a primary listens at <name>:1');
    assert.equal(cluster.address(primary), 'p:1');
    assert.equal(cluster.address('p'), 'p:1', 'the address a name listens at');
    assert.ok(cluster.storage('p').fileNames().length > 0, 'the primary lives in the storage of its name');
    assert.equal(cluster.storage('p'), cluster.storage('p'), 'one storage per name');
    assert.equal(cluster.transport('p'), cluster.transport('p'), 'one transport per name');

    const app = new RecordingApp();
    const standby = await cluster.standby('s1', { upstream: primary, application: app });
    assert.equal(standby.address, null, 'a standby serves no one unless told to');
    for (let i = 0; i < 20; i++) await primary.commit(payload(i, 5000));
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay');
    assert.deepEqual(app.applied, papp.applied, 'the same history');
    assert.equal(primary.wal.segmentSize, CLUSTER_DEFAULTS.segmentSize, 'small segments');
    await within(until(() => primary.replicationStatus()[0]?.state === 'streaming'), HANG_MS, 'the standby row');
    assert.deepEqual(primary.replicationStatus().map((r) => r.applicationName), ['s1'], 'the standby connects under its name');
  });

  it('a standby with listen: true serves cascading standbys at its own address', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const a = await cluster.primary('a', { application: papp });
    const b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    assert.equal(cluster.address(b), 'b:1');
    const app = new RecordingApp();
    const c = await cluster.standby('c', { upstream: b, application: app });
    await a.commit(payload(1, 100));
    await within(c.waitForReplay(a.currentLsn), HANG_MS, 'C to replay through B');
    assert.deepEqual(app.applied, papp.applied);
    assert.deepEqual(a.replicationStatus().map((r) => r.applicationName), ['b'], 'A sees only B');
    await within(until(() => b.replicationStatus().length === 1), HANG_MS, "B's row for C");
    assert.equal(b.replicationStatus()[0]?.applicationName, 'c');
  });

  it('close() closes every node, standbys first and downstream first, once however often it is called', async () => {
    const t = fakeTest();
    const cluster = createCluster(t);
    assert.equal(t.teardowns.length, 1, 'the teardown is registered at once');
    const a = await cluster.primary('a', { application: new RecordingApp() });
    const b = await cluster.standby('b', { upstream: a, application: new RecordingApp(), listen: true });
    const c = await cluster.standby('c', { upstream: b, application: new RecordingApp() });
    const other = await cluster.primary('other', { application: new RecordingApp(), listen: false });
    await a.commit(payload(1, 100));
    await within(c.waitForReplay(a.currentLsn), HANG_MS, 'C to replay');
    const order = closeOrder({ a, b, c, other });
    const closing = cluster.close();
    assert.equal(cluster.close(), closing, 'concurrent calls share one close');
    await closing;
    await t.end();
    assert.deepEqual(order, ['c', 'b', 'other', 'a'], 'standbys (latest first), then primaries (latest first), each once');
    assert.equal(c.state, 'closed');
    assert.equal(b.state, 'closed');
    await rejectsCode(a.commit(payload(2, 100)), 'WAL_CLOSED');
    await rejectsCode(other.commit(payload(2, 100)), 'WAL_CLOSED');
    assert.equal(cluster.network.connectionCount, 0, 'no connection left');
    await rejectsCode(cluster.primary('late', { application: new RecordingApp() }), 'INVALID_ARGUMENT');
  });

  it('after a failing assertion the teardown still closes everything: the addresses and storages are free again', async () => {
    const t = fakeTest();
    const network = new MemoryNetwork();
    const cluster = createCluster(t, { network });
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await assert.rejects(async () => {
      await primary.commit(payload(1, 100));
      assert.equal(1, 2, 'a test that fails half-way');
    });
    // The runner runs the teardown whatever the outcome.
    await t.end();
    assert.equal(standby.state, 'closed');
    assert.equal(network.connectionCount, 0);
    // A new cluster on the same network and storages can take the same address and directories.
    const again = createCluster(fakeTest(), { network });
    const reopened = await again.primary('p', { application: new RecordingApp(), storage: cluster.storage('p') });
    assert.equal(reopened.address, 'p:1', 'the address was released');
    await again.close();
  });

  it('a node still opening when close() runs is closed as soon as it is open', async () => {
    const t = fakeTest();
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const opening = cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await t.end();
    const standby = await opening;
    assert.equal(standby.state, 'closed', 'closed by the teardown that was waiting for it');
    await rejectsCode(primary.commit(payload(1, 100)), 'WAL_CLOSED');
  });

  it('a reopened node gets the storage of its name back and resumes from it', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    await primary.commit(payload(1, 100));
    const app = new RecordingApp();
    let standby = await cluster.standby('s1', { upstream: primary, application: app });
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay');
    await standby.close();
    await primary.commit(payload(2, 100));
    standby = await cluster.standby('s1', { upstream: primary, application: app });
    let backups = 0;
    standby.on('base-backup:done', () => backups++);
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay after the reopen');
    assert.equal(backups, 0, 'it resumed from its own directory');
    assert.equal(app.applied.length, 2);
  });

  it("overrides: options of the node, of its connection, and the node's own storage or directory", async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), synchronousStandbyNames: 'FIRST 1 (sync)', recycleSegments: 0 });
    const standby = await cluster.standby('s1', {
      upstream: primary,
      application: new RecordingApp(),
      connection: { applicationName: 'sync', slotName: 'sync_slot', createSlot: true },
      hotStandby: false,
    });
    const { lsn } = await within(primary.commit(payload(1, 100)), HANG_MS, 'a commit that waits for the sync standby');
    assert.ok((standby.receiveLsn ?? 0) >= lsn, 'the standby named "sync" confirmed it');
    assert.deepEqual(primary.slots().map((r) => r.slotName), ['sync_slot'], 'with the slot it asked for');
    assert.equal(standby.readable, false, 'a warm standby');

    const { dir, cleanup } = await tempDir();
    t.after(cleanup);
    const onDisk = await cluster.standby('s2', { upstream: primary, application: new RecordingApp(), dir: `${dir}/s2` });
    await within(onDisk.waitForReplay(lsn), HANG_MS, 'replay into a directory');
    assert.deepEqual(cluster.storage('s2').fileNames(), [], 'its memory storage was not used');

    const wrong = await cluster.standby('s3', { upstream: primary, application: new RecordingApp(), connection: { password: 'not-the-password' } });
    await within(until(() => wrong.lastError !== null), HANG_MS, 'the refusal');
    assert.equal(wrong.lastError?.code, 'AUTH_FAILED', 'the cluster uses SCRAM by default');
  });

  it("auth: 'trust' lets standbys in without a password", async (t) => {
    const cluster = createCluster(t, { auth: 'trust', user: 'replicator' });
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await primary.commit(payload(1, 100));
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay');
    assert.equal(cluster.user, 'replicator');
  });

  it('runs over another transport: TCP on port 0, with the bound address', async (t) => {
    const cluster = createCluster(t, { transport: () => new TcpTransport(), listenAddress: () => '127.0.0.1:0' });
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    assert.match(cluster.address(primary), /^127\.0\.0\.1:[1-9][0-9]*$/, 'the bound port');
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    await primary.commit(payload(1, 100));
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay over TCP');
  });

  it('a standby may be opened before its upstream, given the address the upstream will listen at', async (t) => {
    const cluster = createCluster(t);
    const standby = await cluster.standby('s1', { upstream: cluster.address('p'), application: new RecordingApp() });
    await within(until(() => standby.lastError !== null), HANG_MS, 'the first failed connect');
    assert.equal(standby.lastError?.code, 'CONNECTION_FAILED', 'nothing listens yet');
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    await primary.commit(payload(1, 100));
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay once the primary is there');
  });

  it('address() of a node that does not listen is INVALID_ARGUMENT', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    assert.equal(primary.address, null);
    assert.throws(() => cluster.address(primary), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });
});
