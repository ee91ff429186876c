import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Lsn, WalLog } from '../../src/index.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { reportCrashPoints, runToPowerLoss, sweepCrashPoints } from '../helpers/crashes.js';
import { openLog, payload, readAll, within } from '../helpers/wal.js';

// A crash at every storage operation of a WalLog's life: opening (recovery) a log written
// before, group commits across several segment switches, an early segment switch, removing
// old segments (recycled under future names) as a checkpoint does, appends into the
// recycled files, and a clean close. The survivor must hold every acknowledged record, only
// whole records that were appended, in order and with no gap; it must open again, take
// appends, survive a second crash during that, and keep all of it across a clean reopen.
// WalLog's timeline switch (beginTimeline) is safe only with the control file written before
// it: the promotion sweeps (test/standby/promote-crash.test.ts) cover it.

const HANG_MS = 30_000;

interface Appended {
  readonly lsn: Lsn;
  readonly endLsn: Lsn;
  readonly data: Buffer;
}

/** What the workloads appended, and what the log acknowledged as durable. */
class Model {
  appended: Appended[] = [];
  /** Every record ending at or below this was acknowledged durable (a flush resolved). */
  acknowledged: Lsn = 0;
  /** Records below this may be gone: the workload removed their segments. */
  removedBelow: Lsn = 0;
  #next = 0;

  append(log: WalLog, size: number): Appended {
    const data = payload(this.#next++, size);
    const { lsn, endLsn } = log.append(data);
    const appended = { lsn, endLsn, data };
    this.appended.push(appended);
    return appended;
  }

  ack(lsn: Lsn): void {
    this.acknowledged = Math.max(this.acknowledged, lsn);
  }

  /** After recovery: the appends that did not survive are forgotten, new ones follow the survivors. */
  keepThrough(lastSurvivor: Lsn | undefined): void {
    this.appended = this.appended.filter((a) => lastSurvivor !== undefined && a.lsn <= lastSurvivor);
  }
}

/** Appends `count` records of `size` bytes, each waited for at once: one group commit or a few. */
async function groupCommit(log: WalLog, model: Model, count: number, size: number): Promise<void> {
  const waits: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const appended = model.append(log, size);
    waits.push(log.waitForFlush(appended.endLsn).then(() => model.ack(appended.endLsn)));
  }
  await Promise.all(waits);
}

/** The swept workload, from opening the log to closing it. */
async function workload(storage: MemoryStorage, model: Model): Promise<void> {
  const log = await openLog(storage, { recycleSegments: 2 });
  try {
    // Across two segment switches in a few group commits.
    await groupCommit(log, model, 14, 9000);
    await log.switchSegment();
    const afterSwitch = model.append(log, 5000);
    model.ack(await log.flush());
    // A checkpoint at the record after the switch: the segments below it go (two recycled).
    model.removedBelow = afterSwitch.lsn;
    await log.removeSegmentsBefore(afterSwitch.lsn);
    // On through the segment prepared ahead and into both recycled files.
    for (let i = 0; i < 4; i++) await groupCommit(log, model, 5, 8000);
  } finally {
    await log.close().catch(() => undefined);
  }
}

/** The recovered log holds every acknowledged record and only whole appended ones, in order, with no gap. */
async function checkRecovered(log: WalLog, model: Model, what: string): Promise<void> {
  const records = await readAll(log);
  const index = new Map(model.appended.map((a, i) => [a.lsn, i]));
  let previous: number | undefined;
  for (const record of records) {
    const i = index.get(record.lsn);
    assert.ok(i !== undefined, `${what}: a record at ${record.lsn} that was never appended`);
    if (previous !== undefined) assert.equal(i, previous + 1, `${what}: the records follow each other with no gap`);
    previous = i;
    const expected = model.appended[i] as Appended;
    assert.equal(record.endLsn, expected.endLsn, `${what}: the record at ${record.lsn} ends where it did`);
    assert.equal(record.entries.length, 1, `${what}: the record at ${record.lsn} has its one entry`);
    assert.ok(Buffer.from(record.entries[0]?.data ?? []).equals(expected.data), `${what}: the record at ${record.lsn} is whole`);
  }
  const first = records[0] === undefined ? model.appended.length : (index.get(records[0].lsn) ?? 0);
  for (const [i, appended] of model.appended.entries()) {
    if (i < first) assert.ok(appended.lsn < model.removedBelow, `${what}: the record at ${appended.lsn} is gone, though its segment was never removed`);
    else if (appended.endLsn <= model.acknowledged) assert.ok(i <= (previous ?? -1), `${what}: the acknowledged record at ${appended.lsn} (acknowledged up to ${model.acknowledged}) was lost`);
  }
  // The base written before the sweep is never removed: the log is never empty.
  assert.ok(records.length > 0, `${what}: the log holds records`);
  model.keepThrough(records.at(-1)?.lsn);
}

/** A fresh log with a few records, closed cleanly: what the swept workload opens. */
async function baseLog(): Promise<{ storage: MemoryStorage; model: Model }> {
  const storage = new MemoryStorage();
  const model = new Model();
  const log = await openLog(storage, { recycleSegments: 2 });
  for (let i = 0; i < 3; i++) model.append(log, 3000);
  await log.close();
  model.ack(model.appended.at(-1)?.endLsn ?? 0);
  return { storage, model };
}

/** After recovery: appends with flushes, cut short by a second crash at `operation`. */
async function secondLife(storage: MemoryStorage, model: Model): Promise<void> {
  const log = await openLog(storage, { recycleSegments: 2 });
  try {
    for (let i = 0; i < 4; i++) {
      const appended = model.append(log, 9000);
      await log.waitForFlush(appended.endLsn);
      model.ack(appended.endLsn);
    }
  } finally {
    await log.close().catch(() => undefined);
  }
}

describe('a crash at every storage operation of a WalLog', () => {
  it('keeps every acknowledged record and no half-written one, opens again, and goes on after a second crash', async (t) => {
    const outcomes = { completed: 0, crashedBeforeEnd: 0 };
    const points = await sweepCrashPoints({}, async (point) => {
      const { what } = point;
      const { storage, model } = await baseLog();
      const first = await within(runToPowerLoss(storage, point, () => workload(storage, model)), HANG_MS, `${what}: the workload`);
      if (first.completed) assert.equal(first.error, null, `${what}: with no crash the workload succeeds (${String(first.error)})`);
      outcomes[first.completed ? 'completed' : 'crashedBeforeEnd']++;

      const recovered = await openLog(first.survivor);
      await checkRecovered(recovered, model, `${what}, recovered`);
      await recovered.close();

      // A second crash, at one of the first operations of the next life (its recovery included).
      const secondPoint = { ...point, operation: 1 + ((point.operation * 5) % 40), what: `${what}, then again` };
      const second = await within(runToPowerLoss(first.survivor, secondPoint, () => secondLife(first.survivor, model)), HANG_MS, `${secondPoint.what}: the second life`);
      const again = await openLog(second.survivor);
      await checkRecovered(again, model, secondPoint.what);
      const last = model.append(again, 100);
      await again.close();
      model.ack(last.endLsn);
      const reopened = await openLog(second.survivor);
      await checkRecovered(reopened, model, `${secondPoint.what}, reopened`);
      assert.equal(model.appended.at(-1), last, `${secondPoint.what}: the last append survives a clean close`);
      await reopened.close();
      return { completed: first.completed };
    });
    assert.equal(outcomes.completed, 6, 'each crash mode ends with a workload that completed');
    reportCrashPoints(t, points);
  });
});
