import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog, segmentFileName } from '../../src/index.js';
import { newestTimeline } from '../../src/cli/wal-directory.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { detectSegmentSize } from '../../src/wal/wal-log.js';
import { SMALL_SEGMENT } from '../helpers/wal.js';

// What the inspecting commands read a directory with: a segment removed while they look, and
// listings too long for a spread call.

describe('reading a WAL directory for the CLI', () => {
  it('finds the segment size past a segment file removed since the listing (a checkpoint, a cleanup)', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT });
    log.append([Buffer.from('x')]);
    await log.flush();
    await log.close();
    // The listing still names a segment that is gone by the time it is read; it sorts first.
    const removed = segmentFileName(1, 0, SMALL_SEGMENT);
    assert.ok(!(await storage.list()).includes(removed));
    assert.equal(await detectSegmentSize(storage, [removed, ...(await storage.list())]), SMALL_SEGMENT);
    assert.equal(await detectSegmentSize(storage, [removed]), undefined, 'nothing readable: no size');
  });

  it('takes the newest timeline of more segment names than a call takes arguments', () => {
    const segments = Array.from({ length: 200_000 }, (_, i) => ({ timeline: i === 150_000 ? 7 : 1 + (i % 3), segno: i }));
    assert.equal(newestTimeline(segments), 7);
    assert.equal(newestTimeline([]), 1, 'no segment: timeline 1');
  });
});
