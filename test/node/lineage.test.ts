import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, type Standby } from '../../src/index.js';
import { readControlFile, writeControlFile } from '../../src/node/control-file.js';
import { createCluster, MemoryStorage } from '../../src/testing/index.js';
import { PlainApp, RecordingApp, until } from '../helpers/apps.js';
import { SMALL_SEGMENT, payload, within } from '../helpers/wal.js';
import { HANG_MS, caughtUp, codeOf, contents, sameSequence, copyOf } from '../helpers/standby-harness.js';


async function commitNamed(primary: Primary, names: readonly string[]): Promise<void> {
  for (const name of names) await primary.commit([Buffer.from(name)]);
}

function names(app: PlainApp): string[] {
  return app.applied.map((b) => Buffer.from(b.entries[0] ?? '', 'hex').toString());
}

const range = (prefix: string, from: number, to: number): string[] => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

/** Waits until the standby has stopped (state `failed`) and returns its failure's code. */
async function failureCode(standby: Standby): Promise<string> {
  await within(until(() => standby.state === 'failed'), HANG_MS, 'the standby to stop');
  return standby.failure?.code ?? 'none';
}

describe('lineage: a node knows what it is', () => {
  it('the silent-divergence repro ends in a coded error: Primary.open refuses a standby directory and writes nothing', async (t) => {
    const cluster = createCluster(t);
    const a = await cluster.primary('a', { application: new RecordingApp() });
    const s = cluster.storage('s');
    await commitNamed(a, range('a', 0, 10));
    // As in the repro: S streams A's WAL from its beginning (its application keeps no snapshots).
    const standby = await cluster.standby('s', { upstream: a, application: new PlainApp() });
    await caughtUp(standby, a);
    await standby.close();
    assert.equal((await readControlFile(s))?.state, 'shut-down-in-recovery', 'a closed standby says so in its control file');
    const before = contents(s);
    const code = await codeOf(Primary.open({ storage: s, application: new RecordingApp(), segmentSize: SMALL_SEGMENT }));
    assert.equal(code, 'STANDBY_DIRECTORY', 'Primary.open on a standby directory is refused');
    assert.deepEqual(contents(s), before, 'the refused open wrote nothing');

    // The standby carries on from its own directory with A's history, never a fork.
    await commitNamed(a, range('a', 11, 14));
    const appS = new PlainApp();
    const again = await cluster.standby('s', { upstream: a, application: appS });
    await caughtUp(again, a);
    assert.deepEqual(names(appS), range('a', 0, 14), "the standby holds exactly A's history");
    await again.close();
  });

  it('the repro done the supported way: the standby is promoted, and the two histories never mix', async (t) => {
    const cluster = createCluster(t);
    const a = await cluster.primary('a', { application: new RecordingApp() });
    await commitNamed(a, range('a', 0, 10));
    // RecordingApp: its snapshots make base backups (the old primary rejoins through one).
    const s = await cluster.standby('s', { upstream: a, application: new RecordingApp(), listen: true });
    await caughtUp(s, a);
    await until(() => (s.receiveLsn ?? 0) >= a.flushLsn);
    // Promoted while A still runs (the split brain the repro made by hand): S starts timeline 2.
    const promoted = await s.promote();
    t.after(() => promoted.close());
    assert.equal(promoted.timeline, 2);
    await commitNamed(promoted, range('b', 0, 3));
    await commitNamed(a, range('a', 11, 14));
    // A standby given both finds the newest timeline, and never applies A's later WAL.
    const appT = new PlainApp();
    const tNode = await cluster.standby('t', { upstream: a, application: appT, connection: { address: [cluster.address('a'), cluster.address('s')] } });
    await until(() => (tNode.replayLsn ?? 0) >= promoted.currentLsn && tNode.timeline === 2);
    assert.deepEqual(names(appT), [...range('a', 0, 10), ...range('b', 0, 3)]);
    // A, the old primary, rejoins: what it wrote after the switch point is reported and set aside.
    await a.close();
    // Its application can restore() a base backup: it has no snapshot before the switch point.
    const appA = new RecordingApp();
    const rejoined = await cluster.standby('a', { upstream: promoted, application: appA });
    const rewind = await within(new Promise<{ batches: readonly { entries: readonly { data: Uint8Array }[] }[] }>((resolve) => rejoined.once('rewind', resolve)), HANG_MS, 'the rewind');
    assert.deepEqual(rewind.batches.map((b) => Buffer.from(b.entries[0]?.data ?? []).toString()), range('a', 11, 14));
    await until(() => (rejoined.replayLsn ?? 0) >= promoted.currentLsn && rejoined.timeline === 2);
    assert.deepEqual(names(appA as unknown as PlainApp), [...range('a', 0, 10), ...range('b', 0, 3)]);
  });

  it('WAL another node wrote at the same positions is never continued: WAL_DIVERGED, and the directory is kept', async (t) => {
    const cluster = createCluster(t);
    const a = await cluster.primary('a', { application: new RecordingApp() });
    const s = cluster.storage('s');
    await commitNamed(a, range('a', 0, 10));
    const standby = await cluster.standby('s', { upstream: a, application: new PlainApp() });
    await caughtUp(standby, a);
    await standby.close();
    // A directory whose state was lost (an older tool, a hand edit): the only guard left is the byte check.
    const control = await readControlFile(s);
    assert.ok(control !== null, 'the standby has a control file');
    await writeControlFile(s, { ...control, state: 'shut-down' });
    const fork = await Primary.open({ storage: s, application: new PlainApp(), segmentSize: SMALL_SEGMENT });
    await commitNamed(fork, ['B-only']);
    await fork.close();
    // ...and says "standby" again: only the upstream's comparison of bytes can tell now.
    const forked = await readControlFile(s);
    assert.ok(forked !== null, 'the fork has a control file');
    await writeControlFile(s, { ...forked, state: 'shut-down-in-recovery' });
    await commitNamed(a, range('a', 11, 14));

    const before = contents(s);
    const appS = new PlainApp();
    const diverged = await cluster.standby('s', { upstream: a, application: appS });
    assert.equal(await failureCode(diverged), 'WAL_DIVERGED', 'the upstream refuses to continue WAL it never wrote');
    assert.match(diverged.failure?.message ?? '', /differs from this node's/, 'found by comparing bytes');
    assert.ok(!names(appS).includes('a11'), 'nothing of A after the fork was applied');
    await diverged.close();
    assert.deepEqual(contents(s), before, 'the diverged directory is kept as it was');
  });

  it("a former primary's directory becomes a standby when its WAL is a prefix of its upstream's", async (t) => {
    const cluster = createCluster(t);
    let storageA = new MemoryStorage();
    const first = await Primary.open({ storage: storageA, application: new RecordingApp(), segmentSize: SMALL_SEGMENT });
    await commitNamed(first, range('x', 0, 20));
    await first.close();
    assert.equal((await readControlFile(storageA))?.state, 'shut-down', 'a cleanly closed primary says so');
    // B starts as a copy of A's directory and goes on writing; A, left behind, follows B.
    const storageB = await copyOf(storageA);
    storageA = await copyOf(storageA);
    const appB = new RecordingApp();
    const b = await cluster.primary('b', { application: appB, storage: storageB });
    assert.equal((await readControlFile(storageB))?.state, 'in-production', 'an open primary is in production');
    await commitNamed(b, range('y', 0, 30));
    const appA = new RecordingApp();
    const a = await cluster.standby('a', { upstream: b, application: appA, storage: storageA });
    await caughtUp(a, b);
    await until(() => (a.replayLsn ?? 0) >= b.currentLsn);
    sameSequence(appA.applied, appB.applied, "the former primary's application");
    assert.equal((await readControlFile(storageA))?.state, 'in-recovery', 'its directory is a standby now');
    await a.close();
    assert.equal(await codeOf(Primary.open({ storage: storageA, application: new RecordingApp() })), 'STANDBY_DIRECTORY', 'and no longer opens as a primary');
  });

  it("a former primary whose WAL is not a prefix of its upstream's stops with WAL_DIVERGED", async (t) => {
    const cluster = createCluster(t);
    const storageA = new MemoryStorage();
    const first = await Primary.open({ storage: storageA, application: new RecordingApp(), segmentSize: SMALL_SEGMENT });
    await commitNamed(first, range('x', 0, 20));
    await first.close();
    const storageB = await copyOf(storageA);
    const old = await Primary.open({ storage: storageA, application: new RecordingApp(), segmentSize: SMALL_SEGMENT });
    await old.commit([payload(1, 300)]);
    await old.close();
    const b = await cluster.primary('b', { application: new RecordingApp(), storage: storageB });
    await commitNamed(b, range('y', 0, 30));
    const a = await cluster.standby('a', { upstream: b, application: new RecordingApp(), storage: storageA });
    assert.equal(await failureCode(a), 'WAL_DIVERGED', 'the old primary wrote WAL its upstream does not have');
    await a.close();
    assert.equal((await readControlFile(storageA))?.state, 'shut-down', 'the refused directory is still a primary’s');
  });

  it('the states a node records: in production, shut down, in recovery, shut down in recovery', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const pstore = cluster.storage('p');
    const sstore = cluster.storage('s');
    assert.equal((await readControlFile(pstore))?.state, 'in-production');
    await commitNamed(p, range('a', 0, 3));
    const backup = new MemoryStorage();
    await p.baseBackup({ storage: backup });
    assert.equal((await readControlFile(backup))?.state, 'shut-down-in-recovery', 'a base backup is a standby directory');
    assert.equal(await codeOf(Primary.open({ storage: backup, application: new RecordingApp() })), 'STANDBY_DIRECTORY');
    const standby = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    await caughtUp(standby, p);
    assert.equal((await readControlFile(sstore))?.state, 'in-recovery', 'a running standby is in recovery');
    await standby.close();
    assert.equal((await readControlFile(sstore))?.state, 'shut-down-in-recovery');
    await p.close();
    assert.equal((await readControlFile(pstore))?.state, 'shut-down');
  });
});
