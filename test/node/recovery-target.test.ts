import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError, type CommittedBatch, type Lsn, type WalLog } from '../../src/index.js';
import { Applier } from '../../src/node/applier.js';
import { RecoveryTargetCheck, findTargetStop, resolveRecoveryTarget, type ResolvedTarget } from '../../src/node/recovery-target.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { openLog } from '../helpers/wal.js';

/** What the test wrote: batches (with their commit times) and restore points, in LSN order. */
type Written = { kind: 'batch'; lsn: Lsn; endLsn: Lsn; commitTime: number } | { kind: 'restore-point'; lsn: Lsn; endLsn: Lsn; name: string };

/**
 * A log of `count` records over several 64 KiB segments: mostly batches of random sizes, whose
 * commit times wander (they may go back, as a wall clock can), and restore points named from a
 * small set (so names repeat).
 */
async function writeLog(seed: number, count: number): Promise<{ log: WalLog; written: Written[] }> {
  let state = seed;
  const random = (): number => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
  let now = 1_700_000_000_000;
  const log = await openLog(new MemoryStorage(), { clock: () => now });
  const written: Written[] = [];
  for (let i = 0; i < count; i++) {
    now += Math.floor(random() * 2000) - 300;
    if (random() < 0.15) {
      const name = `rp${Math.floor(random() * 4)}`;
      const r = log.appendRestorePoint(name);
      written.push({ kind: 'restore-point', lsn: r.lsn, endLsn: r.endLsn, name });
    } else {
      const r = log.append(Buffer.alloc(1 + Math.floor(random() * 6000), i & 0xff));
      written.push({ kind: 'batch', lsn: r.lsn, endLsn: r.endLsn, commitTime: r.commitTime });
    }
    await log.flush();
  }
  return { log, written };
}

/** The batches replay applies for `target` (PostgreSQL's rules, said plainly), from the log's start. */
function expectedBatches(written: readonly Written[], target: ResolvedTarget, inclusive: boolean): Lsn[] {
  const applied: Lsn[] = [];
  for (const record of written) {
    if (target.kind === 'lsn' && (inclusive ? record.lsn >= target.lsn : record.endLsn >= target.lsn)) break;
    if (target.kind === 'time' && record.kind === 'batch' && (inclusive ? record.commitTime * 1000 > target.micros : record.commitTime * 1000 >= target.micros)) break;
    if (record.kind === 'batch') applied.push(record.endLsn);
    if (target.kind === 'lsn' && inclusive && record.endLsn >= target.lsn) break;
    if (target.kind === 'name' && record.kind === 'restore-point' && record.name === target.name) break;
  }
  return applied;
}

class Collect {
  readonly applied: Lsn[] = [];
  apply(batch: CommittedBatch): void {
    this.applied.push(batch.lsn);
  }
}

describe('recovery targets: where replay stops', () => {
  it('replay (Applier.follow) and a promotion (findTargetStop) stop at the same place, applying exactly the batches the rules allow, for LSN, time and name targets', async () => {
    const { log, written } = await writeLog(7, 120);
    const start = log.oldestLsn;
    const end = written.at(-1)?.endLsn ?? 0;
    const batches = written.filter((r) => r.kind === 'batch');
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.integer({ min: start, max: end + 100 }).map((lsn): ResolvedTarget => ({ kind: 'lsn', lsn })),
          fc.constantFrom(...written.map((r): ResolvedTarget => ({ kind: 'lsn', lsn: r.endLsn }))),
          fc.constantFrom(...batches.map((b): ResolvedTarget => ({ kind: 'time', micros: b.commitTime * 1000 }))),
          fc.integer({ min: 1_699_999_000_000, max: 1_700_000_200_000 }).map((ms): ResolvedTarget => ({ kind: 'time', micros: ms * 1000 })),
          fc.constantFrom('rp0', 'rp1', 'rp2', 'rp3', 'rp9').map((name): ResolvedTarget => ({ kind: 'name', name })),
        ),
        fc.boolean(),
        async (target, inclusive) => {
          const expected = expectedBatches(written, target, inclusive);
          const app = new Collect();
          const applier = new Applier(app, start, 'borrowed');
          const stop = await applier.follow(log, start, { follow: false, target: new RecoveryTargetCheck(target, inclusive, 0) });
          assert.deepEqual(app.applied, expected, 'replay applies exactly the batches before the target');
          const found = await findTargetStop(log, start, new RecoveryTargetCheck(target, inclusive, 0));
          assert.equal(found?.stop.lsn, stop?.lsn, 'a promotion finds the stop replay made');
          if (stop === null) {
            assert.equal(expected.length, batches.length, 'no stop: everything was applied');
            return;
          }
          assert.equal(found?.lastBatchEnd, expected.at(-1) ?? start);
          const next = batches.find((b) => !expected.includes(b.endLsn));
          assert.ok(stop.lsn >= (expected.at(-1) ?? start), 'the stop is not before what was applied');
          assert.ok(next === undefined || next.lsn >= stop.lsn, 'no batch that was not applied lies before the stop');
          // From the stop's own position (a reopened standby), replay stops there again without applying anything.
          const again = new Collect();
          const resumed = await new Applier(again, applier.position, 'borrowed').follow(log, applier.position, { follow: false, target: new RecoveryTargetCheck(target, inclusive, 0) });
          assert.deepEqual(again.applied, [], 'replay from where it stopped applies nothing more');
          if (target.kind !== 'name') assert.equal(resumed?.lsn, stop.lsn, 'and stops at the same place');
        },
      ),
      { seed: 21, numRuns: 200 },
    );
    await log.close();
  });

  it("'immediate' stops where the state becomes consistent: at once when it is, else after the batch that reaches it", async () => {
    const { log, written } = await writeLog(3, 20);
    const batches = written.filter((r) => r.kind === 'batch');
    const third = batches[2]?.endLsn ?? 0;
    for (const [consistentLsn, expected] of [
      [0, []],
      [third, batches.slice(0, 3).map((b) => b.endLsn)],
      [third - 1, batches.slice(0, 3).map((b) => b.endLsn)],
    ] as const) {
      const app = new Collect();
      const stop = await new Applier(app, log.oldestLsn, 'borrowed').follow(log, log.oldestLsn, { follow: false, target: new RecoveryTargetCheck({ kind: 'immediate' }, true, consistentLsn) });
      assert.deepEqual(app.applied, expected);
      assert.equal(stop?.lsn, expected.at(-1) ?? log.oldestLsn);
    }
    await log.close();
  });

  it('a disabled check (resumeReplay) stops nothing', async () => {
    const { log, written } = await writeLog(5, 10);
    const check = new RecoveryTargetCheck({ kind: 'lsn', lsn: 0 }, true, 0);
    check.disable();
    const app = new Collect();
    assert.equal(await new Applier(app, log.oldestLsn, 'borrowed').follow(log, log.oldestLsn, { follow: false, target: check }), null);
    assert.equal(app.applied.length, written.filter((r) => r.kind === 'batch').length);
    await log.close();
  });

  it('resolves targets: LSNs as numbers or X/Y, times as Dates, numbers or strings, names of 1 to 64 UTF-8 bytes; anything else is INVALID_OPTIONS', () => {
    assert.deepEqual(resolveRecoveryTarget('immediate'), { kind: 'immediate' });
    assert.deepEqual(resolveRecoveryTarget({ lsn: 0x1_0000_0028 }), { kind: 'lsn', lsn: 0x1_0000_0028 });
    assert.deepEqual(resolveRecoveryTarget({ lsn: '1/28' }), { kind: 'lsn', lsn: 0x1_0000_0028 });
    const ms = Date.UTC(2025, 0, 1, 12);
    for (const time of [new Date(ms), ms, '2025-01-01T12:00:00Z', '2025-01-01T13:00:00+01:00']) {
      assert.deepEqual(resolveRecoveryTarget({ time }), { kind: 'time', micros: ms * 1000 });
    }
    assert.deepEqual(resolveRecoveryTarget({ name: 'ü'.repeat(32) }), { kind: 'name', name: 'ü'.repeat(32) });
    for (const bad of [{ lsn: 'x/1' }, { lsn: '200000/0' }, { time: 'yesterday' }, { time: Number.NaN }, { time: -1 }, { time: null }, { name: '' }, { name: 'ü'.repeat(33) }, { name: '\ud800' }]) {
      assert.throws(() => resolveRecoveryTarget(bad as never), (err) => isWalshipError(err, 'INVALID_OPTIONS') && err.message.includes('recoveryTarget.'), JSON.stringify(bad));
    }
  });
});
