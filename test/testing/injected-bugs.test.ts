import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StorageFile, StorageOpenOptions } from '../../src/index.js';
import type { CheckResult, SimulatedCluster, SimulationOptions } from '../../src/testing/index.js';
import { registerInjectedBugs, withInjectedBug, type InjectedBug } from './injected-bugs.js';

// The simulation's checker is itself tested (issue #16): each deliberate walship bug below is
// written into walship's source as it loads (see injected-bugs.ts beside this file) and switched
// on for one run. Every test runs one scenario twice, with the bug off and on: off, the
// checker must find nothing; on, it must report the broken guarantee. So each test can fail
// both ways: a checker that misses the bug, or one that cries wolf on walship as shipped.
//
// walship is imported only now, after the hooks that load the bugs are in place (the type
// imports above load nothing).
registerInjectedBugs();
const { createCluster, kvEntry, MemoryStorage } = await import('../../src/testing/index.js');
const { segmentFileName } = await import('../../src/wal/segment-name.js');
const { RECORD_HEADER_SIZE } = await import('../../src/wal/record.js');

/** The simulated cluster's WAL segment size (its default). */
const SEGMENT_SIZE = 64 * 1024;

/** A scenario's outcome: the checker's verdict, and what else the test asserts on. */
interface Outcome {
  readonly check: CheckResult;
  /** What else the scenario saw: a commit outcome, the code of an error walship raised (a refusal), or null. */
  readonly observed: string | null;
}

/** Runs `scenario` with the bug off and then on; returns both outcomes. */
async function bothWays(bug: InjectedBug, scenario: () => Promise<Outcome>): Promise<{ clean: Outcome; bugged: Outcome }> {
  const clean = await scenario();
  const bugged = await withInjectedBug(bug, scenario);
  return { clean, bugged };
}

function assertClean(outcome: Outcome, what: string): void {
  assert.ok(outcome.check.ok, `${what}: without the bug the checker must find nothing:\n${outcome.check.report}`);
}

function assertCaught(outcome: Outcome, rule: string, what: string): void {
  assert.ok(!outcome.check.ok, `${what}: the checker missed the injected bug:\n${outcome.check.report}`);
  const rules = outcome.check.violations.map((v) => v.rule);
  assert.ok(rules.includes(rule), `${what}: expected a '${rule}' violation, got ${rules.join(', ')}:\n${outcome.check.report}`);
}

/** Runs `fn` on a new simulated cluster, and closes it whatever happens. */
async function onCluster(options: SimulationOptions, fn: (cluster: SimulatedCluster) => Promise<string | null>): Promise<Outcome> {
  const cluster = await createCluster(options);
  try {
    const observed = await fn(cluster);
    return { check: cluster.check(), observed };
  } finally {
    await cluster.close();
  }
}

/** The code of the error `promise` rejects with, or null when it resolves. */
async function refusal(promise: Promise<unknown>): Promise<string | null> {
  try {
    await promise;
    return null;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

/**
 * A slow disk under node `name` of the simulated clusters (the storage it is given, and the
 * one a crash leaves): while held, its fdatasyncs wait, so what it wrote stays unflushed.
 * Undone by `restore()`.
 */
function slowDisk(name: string): { hold(): void; release(): void; restore(): void } {
  const open = MemoryStorage.prototype.open;
  let holding = false;
  let waiting: (() => void)[] = [];
  MemoryStorage.prototype.open = async function (this: InstanceType<typeof MemoryStorage>, file: string, options?: StorageOpenOptions): Promise<StorageFile> {
    const handle = await open.call(this, file, options);
    if (this.description !== `memory:${name}`) return handle;
    const datasync = handle.datasync.bind(handle);
    handle.datasync = async () => {
      if (holding) await new Promise<void>((go) => waiting.push(go));
      await datasync();
    };
    return handle;
  };
  const release = (): void => {
    holding = false;
    const now = waiting;
    waiting = [];
    for (const go of now) go();
  };
  return {
    hold: () => void (holding = true),
    release,
    restore: () => {
      release();
      MemoryStorage.prototype.open = open;
    },
  };
}

/**
 * Flips a payload byte of the record that begins at `lsn` in node `name`'s WAL on timeline 1:
 * a record damaged in the middle of the log, with valid records after it.
 */
function damageRecord(cluster: SimulatedCluster, name: string, lsn: number): void {
  const segment = segmentFileName(1, Math.floor(lsn / SEGMENT_SIZE), SEGMENT_SIZE);
  cluster.storage(name).corrupt(segment, (lsn % SEGMENT_SIZE) + RECORD_HEADER_SIZE, (byte) => byte ^ 0xff);
}

/** A key-value write whose record has the same size as every other one written with it. */
function sameSize(value: string): Uint8Array[] {
  return [kvEntry({ key: 'x', value })];
}

describe('the simulation checker catches injected walship bugs', () => {
  it("release-on-write: an 'on' commit released when its synchronous standby wrote it, before it flushed, is 'released-early'", async (t) => {
    // s1's disk is slow: it writes (and reports the write) at once, but its fdatasync waits.
    const disk = slowDisk('s1');
    t.after(() => disk.restore());
    const { clean, bugged } = await bothWays('release-on-write', () =>
      onCluster({ seed: 11, standbys: 1, synchronousStandbyNames: 'FIRST 1 (s1)' }, async (cluster) => {
        await cluster.commit({ count: 2 });
        disk.hold();
        const held = await cluster.commit({ count: 2 });
        // Each commit's outcome while s1 had written it but not yet flushed it.
        const outcomes = held.map((c) => c.outcome);
        disk.release();
        await cluster.settle();
        assert.equal(new Set(outcomes).size, 1, `the two commits end alike: ${outcomes.join(', ')}`);
        return outcomes[0] ?? null;
      }),
    );
    assertClean(clean, 'release-on-write');
    assert.equal(clean.observed, 'pending', 'as shipped, the commits wait while s1 has not flushed them');
    assertCaught(bugged, 'released-early', 'release-on-write');
    assert.equal(bugged.observed, 'acknowledged', 'with the bug, they resolve on the write report');
  });

  it("keep-applied-past-switch-point: a former primary that keeps, after its rewind, what it applied past the switch point is a 'diverged-history'", async () => {
    // p, cut off from s1, commits three batches s1 never gets; s1 is promoted and commits
    // three of its own; p rejoins and must rewind what it applied past the switch point.
    const { clean, bugged } = await bothWays('keep-applied-past-switch-point', () =>
      onCluster({ seed: 12, standbys: 1, synchronousStandbyNames: 'ANY 1 (p, s1)' }, async (cluster) => {
        await cluster.commit({ count: 2 });
        await cluster.waitForCatchup('s1', { mode: 'replay' });
        cluster.partition('p', 's1');
        await cluster.commit({ level: 'local', count: 3 });
        await cluster.promote('s1');
        await cluster.commit({ level: 'local', count: 3 });
        cluster.heal();
        await cluster.rejoin('p');
        return refusal(cluster.waitForCatchup('p', { mode: 'replay' }));
      }),
    );
    assertClean(clean, 'keep-applied-past-switch-point');
    assert.equal(clean.observed, null, 'as shipped, p rewinds and follows s1');
    assertCaught(bugged, 'diverged-history', 'keep-applied-past-switch-point');
  });

  describe("skip-damaged-record: recovery and replay step over a damaged record in the middle of the WAL", () => {
    it("on a standby: it applies the batches around the hole, a 'diverged-history'", async () => {
      const { clean, bugged } = await bothWays('skip-damaged-record', () =>
        onCluster({ seed: 13, standbys: 1, synchronousStandbyNames: 'FIRST 1 (s1)' }, async (cluster) => {
          const commits = await cluster.commit({ count: 5 });
          await cluster.waitForCatchup('s1', { mode: 'replay' });
          await cluster.crash('s1');
          // The third batch's record begins where the second's ends.
          damageRecord(cluster, 's1', commits[1]!.lsn!);
          await cluster.restart('s1');
          // Past the hole, s1's WAL is not p's byte for byte: p refuses to stream to it (with the bug).
          await refusal(cluster.waitForCatchup('s1', { mode: 'replay' }));
          return null;
        }),
      );
      assertClean(clean, 'skip-damaged-record on a standby');
      assertCaught(bugged, 'diverged-history', 'skip-damaged-record on a standby');
    });

    it("on the primary: it restarts without an acknowledged commit, 'acknowledged-lost'", async () => {
      const { clean, bugged } = await bothWays('skip-damaged-record', () =>
        onCluster({ seed: 14, standbys: 1, synchronousStandbyNames: 'FIRST 1 (s1)' }, async (cluster) => {
          // One at a time: each record is appended once the one before is durable, so its
          // flushed stamp proves that the damaged record before it was durable (not a torn tail).
          const commits = [];
          for (let i = 0; i < 5; i++) commits.push(...(await cluster.commit()));
          await cluster.crash('p');
          damageRecord(cluster, 'p', commits[1]!.lsn!);
          return refusal(cluster.restart('p'));
        }),
      );
      assertClean(clean, 'skip-damaged-record on the primary');
      assert.equal(clean.observed, 'WAL_CORRUPT', 'as shipped, the primary refuses to open on damage in the middle of its WAL');
      assertCaught(bugged, 'acknowledged-lost', 'skip-damaged-record on the primary');
      assert.equal(bugged.observed, null, 'with the bug, it opens');
    });
  });

  it("skip-history-check: a former primary whose WAL another primary overwrote on a sibling timeline streams on, a 'diverged-history'", async () => {
    // s1 and then s2 are promoted at the same point, making two timelines 2 with the same
    // history; each writes its own batches there (records of one size, so that they line up).
    // s1 then rejoins under s2: only the byte comparison of the history check tells them apart.
    const { clean, bugged } = await bothWays('skip-history-check', () =>
      onCluster({ seed: 15, standbys: 2, synchronousStandbyNames: 'ANY 1 (p, s1, s2)' }, async (cluster) => {
        await cluster.commit({ count: 3 });
        await cluster.waitForCatchup('s1', { mode: 'replay' });
        await cluster.waitForCatchup('s2', { mode: 'replay' });
        await cluster.promote('s1');
        for (const value of ['e1', 'e2']) await cluster.commit({ level: 'local', entries: sameSize(value) });
        await cluster.promote('s2');
        assert.equal(cluster.node('s1')?.timeline, cluster.node('s2')?.timeline, 'two timelines of the same number');
        for (const value of ['d1', 'd2', 'd3', 'd4']) await cluster.commit({ level: 'local', entries: sameSize(value) });
        await cluster.rejoin('s1');
        return refusal(cluster.waitForCatchup('s1', { mode: 'replay' }));
      }),
    );
    assertClean(clean, 'skip-history-check');
    assert.equal(clean.observed, 'WAL_DIVERGED', "as shipped, s2 refuses s1's WAL");
    assertCaught(bugged, 'diverged-history', 'skip-history-check');
    assert.equal(bugged.observed, null, 'with the bug, s1 catches up with s2');
  });
});
