import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MIN_SEGMENT_SIZE, Primary, formatLsn, segmentFileName } from '../../src/index.js';
import { checksumImplementation } from '../../src/checksum.js';
import type { NodeStatusReport } from '../../src/cli/status.js';
import { RecordingApp } from '../helpers/apps.js';
import { eventually } from '../helpers/primary-helpers.js';
import { tempDir } from '../helpers/temp-dir.js';
import { TestArchive } from '../helpers/test-archive.js';
import { payload } from '../helpers/wal.js';
import { runCli } from './run-cli.js';

// `walship status` beside a running primary: what its control file, lock, WAL, slots and
// archive markers say, as text and as JSON, read without the lock.

const SEGMENT = MIN_SEGMENT_SIZE;
const segName = (segno: number): string => segmentFileName(1, segno, SEGMENT);

describe('walship status', () => {
  it('describes a running primary: identity, state, lock holder, WAL range and end, slots, archive markers, checksums', async (t) => {
    const { dir, cleanup } = await tempDir();
    const archive = new TestArchive();
    // Segments 1 and 2 are archived; segment 3 is refused, so it and the later ones wait.
    archive.failing = (name) => name >= segName(3);
    const primary = await Primary.open({ dir, application: new RecordingApp(), segmentSize: SEGMENT, archive: { mode: 'on', archiver: archive } });
    t.after(() => primary.close());
    t.after(cleanup);
    await primary.createSlot('reserving', { reserveWal: true });
    await primary.createSlot('idle');
    for (let i = 0; primary.flushLsn < 4 * SEGMENT + 1000; i++) await primary.commit(payload(i, 8000));
    await eventually(() => primary.archiverStatus().archivedCount >= 2 && primary.archiverStatus().failedCount >= 1, 60_000, 'segments 1 and 2 archived, segment 3 refused');

    const json = await runCli(['status', dir, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as NodeStatusReport;
    assert.equal(report.systemId, primary.systemId);
    assert.equal(report.state, 'in-production');
    assert.equal(report.timeline, 1);
    assert.deepEqual(report.history, []);
    assert.equal(report.segmentSize, SEGMENT);
    assert.equal(report.lock?.pid, process.pid, 'the lock holder is this test process');
    assert.equal(report.lock?.alive, true);
    assert.equal(report.wal.firstSegment, segName(1));
    assert.equal(report.wal.lastSegment, segName(4), 'the newest segment written');
    assert.equal(report.wal.endLsn, formatLsn(primary.flushLsn), 'the end of the valid WAL is the primary\'s flushed end');
    assert.ok(Array.isArray(report.slots) && report.slots.length === 2, 'both slots');
    const slots = report.slots as Exclude<NodeStatusReport['slots'], { error: string }>;
    const reserving = slots.find((slot) => slot.name === 'reserving');
    assert.equal(reserving?.walStatus, 'reserved', 'a slot holding WAL within the defaults');
    assert.notEqual(reserving?.restartLsn, null);
    assert.equal(slots.find((slot) => slot.name === 'idle')?.walStatus, null, 'a slot that reserved no WAL');
    assert.equal(report.archive.done, 2, 'segments 1 and 2 done');
    assert.ok(report.archive.ready >= 1, 'segment 3 on waits');
    assert.equal(report.archive.oldestReady?.name, segName(3), 'the archiver\'s next file');
    assert.equal(report.checksum, checksumImplementation());

    const text = await runCli(['status', dir]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^system id: +${primary.systemId}$`, 'm'));
    assert.match(text.stdout, /^node state: +in production \(a primary\)$/m);
    assert.match(text.stdout, new RegExp(`^running: +yes, pid ${process.pid} on `, 'm'));
    assert.match(text.stdout, new RegExp(`^WAL segments: +${segName(1)} to ${segName(4)} \\(4`, 'm'));
    assert.match(text.stdout, /^ {2}reserving: restart \S+, walStatus reserved$/m);
    assert.match(text.stdout, new RegExp(`^archive status: +\\d+ ready, 2 done; oldest waiting ${segName(3)} \\(ready since \\d{4}-`, 'm'));
    assert.match(text.stdout, /^checksums: +CRC-32C /m);
    if (checksumImplementation() === 'javascript') assert.match(text.stdout, /20x slower/);
  });

  it('refuses a directory that is not a walship data directory, with exit code 1', async (t) => {
    const { dir, cleanup } = await tempDir();
    t.after(cleanup);
    const result = await runCli(['status', dir]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^walship status: error: .* is not a walship data directory \(no walship\.control\)\n$/);
  });
});
