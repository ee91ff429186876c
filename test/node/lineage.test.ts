import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, Standby, type Storage } from '../../src/index.js';
import { readControlFile, writeControlFile } from '../../src/node/control-file.js';
import { MemoryNetwork, MemoryStorage } from '../../src/testing/index.js';
import { PlainApp, RecordingApp, until } from '../helpers/apps.js';
import { SMALL_SEGMENT, payload, within } from '../helpers/wal.js';
import { HANG_MS, caughtUp, codeOf, contents, openPrimary, sameSequence, standbyOptions } from '../helpers/standby-harness.js';

/** A copy of a closed node's directory, file by file (as `cp -a` would make one). */
async function copyOf(storage: MemoryStorage): Promise<MemoryStorage> {
  const copy = new MemoryStorage();
  for (const name of storage.fileNames()) {
    const file = await copy.open(name, { create: true });
    await file.write(storage.readFile(name), 0);
    await file.datasync();
    await file.close();
  }
  await copy.syncDirectory();
  return copy;
}

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
  it('the silent-divergence repro ends in a coded error: Primary.open refuses a standby directory and writes nothing', async () => {
    const net = new MemoryNetwork();
    const appA = new RecordingApp();
    const a = await openPrimary(appA, net.transport('a'), 'a:1');
    const s = new MemoryStorage();
    try {
      await commitNamed(a, range('a', 0, 10));
      // As in the repro: S streams A's WAL from its beginning (its application keeps no snapshots).
      const standby = await Standby.open(standbyOptions(a, net.transport('s'), new PlainApp(), { storage: s }));
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
      const again = await Standby.open(standbyOptions(a, net.transport('s2'), appS, { storage: s }));
      await caughtUp(again, a);
      assert.deepEqual(names(appS), range('a', 0, 14), "the standby holds exactly A's history");
      await again.close();
    } finally {
      await a.close();
    }
  });

  it('WAL another node wrote at the same positions is never continued: WAL_DIVERGED, and the directory is kept', async () => {
    const net = new MemoryNetwork();
    const a = await openPrimary(new RecordingApp(), net.transport('a'), 'a:1');
    const s = new MemoryStorage();
    try {
      await commitNamed(a, range('a', 0, 10));
      const standby = await Standby.open(standbyOptions(a, net.transport('s'), new PlainApp(), { storage: s }));
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
      const diverged = await Standby.open(standbyOptions(a, net.transport('s2'), appS, { storage: s }));
      assert.equal(await failureCode(diverged), 'WAL_DIVERGED', 'the upstream refuses to continue WAL it never wrote');
      assert.match(diverged.failure?.message ?? '', /differs from this node's/, 'found by comparing bytes');
      assert.ok(!names(appS).includes('a11'), 'nothing of A after the fork was applied');
      await diverged.close();
      assert.deepEqual(contents(s), before, 'the diverged directory is kept as it was');
    } finally {
      await a.close();
    }
  });

  it("a former primary's directory becomes a standby when its WAL is a prefix of its upstream's", async () => {
    const net = new MemoryNetwork();
    let storageA = new MemoryStorage();
    const first = await Primary.open({ storage: storageA, application: new RecordingApp(), segmentSize: SMALL_SEGMENT });
    await commitNamed(first, range('x', 0, 20));
    await first.close();
    assert.equal((await readControlFile(storageA))?.state, 'shut-down', 'a cleanly closed primary says so');
    // B starts as a copy of A's directory and goes on writing; A, left behind, follows B.
    const storageB = await copyOf(storageA);
    storageA = await copyOf(storageA);
    const appB = new RecordingApp();
    const b = await openPrimary(appB, net.transport('b'), 'b:1', { storage: storageB });
    try {
      assert.equal((await readControlFile(storageB))?.state, 'in-production', 'an open primary is in production');
      await commitNamed(b, range('y', 0, 30));
      const appA = new RecordingApp();
      const a = await Standby.open(standbyOptions(b, net.transport('a'), appA, { storage: storageA }));
      await caughtUp(a, b);
      await until(() => (a.replayLsn ?? 0) >= b.currentLsn);
      sameSequence(appA.applied, appB.applied, "the former primary's application");
      assert.equal((await readControlFile(storageA))?.state, 'in-recovery', 'its directory is a standby now');
      await a.close();
      assert.equal(await codeOf(Primary.open({ storage: storageA, application: new RecordingApp() })), 'STANDBY_DIRECTORY', 'and no longer opens as a primary');
    } finally {
      await b.close();
    }
  });

  it("a former primary whose WAL is not a prefix of its upstream's stops with WAL_DIVERGED", async () => {
    const net = new MemoryNetwork();
    const storageA = new MemoryStorage();
    const first = await Primary.open({ storage: storageA, application: new RecordingApp(), segmentSize: SMALL_SEGMENT });
    await commitNamed(first, range('x', 0, 20));
    await first.close();
    const storageB = await copyOf(storageA);
    const old = await Primary.open({ storage: storageA, application: new RecordingApp(), segmentSize: SMALL_SEGMENT });
    await old.commit([payload(1, 300)]);
    await old.close();
    const b = await openPrimary(new RecordingApp(), net.transport('b'), 'b:1', { storage: storageB });
    try {
      await commitNamed(b, range('y', 0, 30));
      const a = await Standby.open(standbyOptions(b, net.transport('a'), new RecordingApp(), { storage: storageA }));
      assert.equal(await failureCode(a), 'WAL_DIVERGED', 'the old primary wrote WAL its upstream does not have');
      await a.close();
      assert.equal((await readControlFile(storageA))?.state, 'shut-down', 'the refused directory is still a primary’s');
    } finally {
      await b.close();
    }
  });

  it('the states a node records: in production, shut down, in recovery, shut down in recovery', async () => {
    const net = new MemoryNetwork();
    const pstore: Storage = new MemoryStorage();
    const p = await openPrimary(new RecordingApp(), net.transport('p'), 'p:1', { storage: pstore });
    const sstore = new MemoryStorage();
    try {
      assert.equal((await readControlFile(pstore))?.state, 'in-production');
      await commitNamed(p, range('a', 0, 3));
      const backup = new MemoryStorage();
      await p.baseBackup({ storage: backup });
      assert.equal((await readControlFile(backup))?.state, 'shut-down-in-recovery', 'a base backup is a standby directory');
      assert.equal(await codeOf(Primary.open({ storage: backup, application: new RecordingApp() })), 'STANDBY_DIRECTORY');
      const standby = await Standby.open(standbyOptions(p, net.transport('s'), new RecordingApp(), { storage: sstore }));
      await caughtUp(standby, p);
      assert.equal((await readControlFile(sstore))?.state, 'in-recovery', 'a running standby is in recovery');
      await standby.close();
      assert.equal((await readControlFile(sstore))?.state, 'shut-down-in-recovery');
    } finally {
      await p.close();
    }
    assert.equal((await readControlFile(pstore))?.state, 'shut-down');
  });
});
