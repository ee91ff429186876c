import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseSegmentFileName, segmentFileName } from '../../src/index.js';
import { SEGMENT_SIZES } from '../../src/wal/segment-name.js';

const MiB = 1024 * 1024;

describe('segment file names', () => {
  it('match PostgreSQL names for 16 MiB segments', () => {
    assert.equal(segmentFileName(1, 3, 16 * MiB), '000000010000000000000003');
    // 256 segments of 16 MiB per 4 GiB "log id".
    assert.equal(segmentFileName(1, 255, 16 * MiB), '0000000100000000000000FF');
    assert.equal(segmentFileName(1, 256, 16 * MiB), '000000010000000100000000');
    assert.equal(segmentFileName(0x2a, 0x1234 * 256 + 0x56, 16 * MiB), '0000002A0000123400000056');
  });

  it('depend on the segment size as PostgreSQL does', () => {
    assert.equal(segmentFileName(1, 4096, 1024 * 1024), '000000010000000100000000');
    assert.equal(segmentFileName(1, 4, 1024 * MiB), '000000010000000100000000');
    assert.equal(segmentFileName(1, 65536, 64 * 1024), '000000010000000100000000');
  });

  it('round-trip for every segment size', () => {
    fc.assert(
      fc.property(fc.constantFrom(...SEGMENT_SIZES), fc.integer({ min: 1, max: 0xffffffff }), fc.nat(), (size, timeline, n) => {
        const segno = n % Math.floor(Number.MAX_SAFE_INTEGER / size);
        const name = segmentFileName(timeline, segno, size);
        assert.match(name, /^[0-9A-F]{24}$/);
        assert.deepEqual(parseSegmentFileName(name, size), { timeline, segno });
      }),
      { seed: 7, numRuns: 1000 },
    );
  });

  it('reject names that are not segments', () => {
    for (const name of ['walship.lock', '000000010000000000000003.tmp', '00000001000000000000003', '0000000100000000000000g3', '000000000000000000000003', '000000010000000000000003.partial']) {
      assert.equal(parseSegmentFileName(name, 16 * MiB), null, name);
    }
    // The low part must be below the number of segments per log id for this size.
    assert.equal(parseSegmentFileName('000000010000000000000100', 16 * MiB), null);
  });
});
