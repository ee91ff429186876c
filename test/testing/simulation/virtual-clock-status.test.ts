/**
 * What a simulated node reports as a time (status rows, slots, the archiver) comes from the
 * cluster's virtual clock: a status time read from Node's real clock would differ between two
 * runs of one seed, and from every other time the run shows.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { createCluster } from '../../../src/testing/index.js';

it("a simulated node's status times (backendStart, a slot's inactiveSince, the archiver's last archived) are virtual", async (t) => {
  const cluster = await createCluster({ t, standbys: 1, archive: true });
  const virtualStart = cluster.scheduler.now() - cluster.scheduler.monotonic();
  // The virtual clock starts at 2026-01-01, months away from the real one: a real time is out of range.
  const isVirtual = (date: Date | null, what: string): void => {
    assert.ok(date !== null, `${what} is set`);
    assert.ok(date.getTime() >= virtualStart && date.getTime() <= cluster.scheduler.now(), `${what} (${date.toISOString()}) lies within the run's virtual time`);
  };
  const primary = cluster.primary!;
  isVirtual(primary.replicationStatus()[0]?.backendStart ?? null, "the standby's backendStart");
  const slot = await primary.createSlot('spare');
  isVirtual(slot.inactiveSince, "a new slot's inactiveSince");
  isVirtual(primary.slots().find((row) => row.slotName === 'spare')?.inactiveSince ?? null, "the slot row's inactiveSince");
  await cluster.commit();
  await primary.switchWal();
  await cluster.sleep(2_000);
  assert.ok(primary.archiverStatus().archivedCount > 0, 'a segment was archived');
  isVirtual(primary.archiverStatus().lastArchivedTime, "the archiver's lastArchivedTime");
});
