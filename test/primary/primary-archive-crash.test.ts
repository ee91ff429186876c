import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MIN_SEGMENT_SIZE, Primary, segmentFileName } from '../../src/index.js';
import { MemoryStorage, seededRandom } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { CRASH_MODES } from '../helpers/crashes.js';
import { eventually } from '../helpers/primary-helpers.js';
import { TestArchive } from '../helpers/test-archive.js';
import { payload, within } from '../helpers/wal.js';
import { copyOf } from '../helpers/standby-harness.js';

// A crash at any storage operation while a primary archives, marks and removes segments (a
// checkpoint right after) loses nothing: reopened, it archives every completed segment, and no
// segment is ever gone from the directory before the archive holds it. Each crash point
// reopens a copy of one closed directory, `crashAfter(k)` scheduled, for k = 1, 2, … until
// the work completes: every k in two crash modes (unsynced writes and renames lost; torn
// writes and a prefix of the renames kept), a seeded quarter of them in the other four.

const SEGMENT = MIN_SEGMENT_SIZE;
const SEGMENTS = /^[0-9A-F]{24}$/;
const HANG_MS = 20_000;

function open(storage: MemoryStorage, archive: TestArchive): Promise<Primary> {
  return Primary.open({ storage, application: new RecordingApp(), segmentSize: SEGMENT, synchronousCommit: 'local', archive: { mode: 'on', archiver: archive } });
}

/** Crash modes swept at every operation; the others at a seeded sample of them. */
const FULL_MODES = new Set([0, 4]);
const SAMPLE = 0.25;

/** A closed directory with three completed segments that are not archived yet (the archive was held). */
async function subject(): Promise<{ storage: MemoryStorage; complete: string[] }> {
  const storage = new MemoryStorage();
  const archive = new TestArchive();
  archive.hold();
  const primary = await open(storage, archive);
  for (let i = 0; primary.flushLsn < 4 * SEGMENT + 100; i++) await primary.commit(payload(i, 8000));
  const complete = Array.from({ length: 3 }, (_, i) => segmentFileName(1, i + 1, SEGMENT));
  await eventually(() => primary.archiverStatus().pendingCount === 3, HANG_MS, 'three segments ready');
  await primary.close();
  return { storage, complete };
}

describe('archiving under crashes', () => {
  it('a crash at every storage operation of archiving and the checkpoint after it: every completed segment reaches the archive, none is removed before', async () => {
    const { storage: base, complete } = await subject();
    let points = 0;
    for (const [modeIndex, mode] of CRASH_MODES.entries()) {
      const sample = seededRandom(1400 + modeIndex);
      for (let k = 1; ; k++) {
        const what = `crash ${JSON.stringify(mode)} before operation ${k}`;
        assert.ok(k < 500, `${what}: the work never completes`);
        // The sampled modes still run every k up to the end: only the checks of skipped ones are left out.
        const checked = FULL_MODES.has(modeIndex) || sample() < SAMPLE;
        const storage = await copyOf(base);
        const archive = new TestArchive();
        // Every segment the archive holds must have been whole in the directory when it was put.
        const random = seededRandom(k * 7919 + modeIndex);
        let primary: Primary | null = null;
        const crashed = storage.crashAfter(k, { ...mode, random });
        let dead = false;
        void crashed.then(() => (dead = true));
        const work = (async () => {
          primary = await open(storage, archive);
          await eventually(() => dead || (primary?.archiverStatus().pendingCount === 0 && archive.files.size === complete.length), HANG_MS, `${what}: archived`);
          if (!dead) await primary.checkpoint(primary.appliedLsn);
        })().catch(() => undefined);
        await within(work, HANG_MS, `${what}: the work to end`);
        const fired = await Promise.race([crashed, new Promise<null>((resolve) => setImmediate(() => resolve(null)))]);
        if (!checked && fired !== null) {
          await (primary as Primary | null)?.close({ signal: AbortSignal.abort() }).catch(() => undefined);
          continue;
        }
        // Work that completed meets a power loss right after: what it did must be durable.
        const survivor = fired ?? storage.crash({ ...mode, random });
        await (primary as Primary | null)?.close({ signal: AbortSignal.abort() }).catch(() => undefined);
        points++;
        // Whatever the directory lost, the archive holds: no segment is gone from both.
        const present = new Set(survivor.fileNames().filter((name) => SEGMENTS.test(name)));
        for (const name of complete) assert.ok(present.has(name) || archive.files.has(name), `${what}: ${name} gone from the directory before it was archived`);
        // Reopened, the primary archives what is left to archive, identical content again.
        const reopened = await open(survivor, archive);
        try {
          await eventually(() => complete.every((name) => archive.files.has(name)), HANG_MS, `${what}: every completed segment archived after the restart`);
          assert.equal(reopened.archiverStatus().failedCount, 0, `${what}: a put again is of identical content`);
        } finally {
          await reopened.close();
        }
        if (fired === null) break;
      }
    }
    assert.ok(points > CRASH_MODES.length * 5, `${points} crash points`);
  });
});
