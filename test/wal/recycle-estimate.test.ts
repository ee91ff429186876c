import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RecycleEstimate } from '../../src/wal/recycle-estimate.js';

const SEGMENT = 16 * 1024 * 1024;

describe('RecycleEstimate', () => {
  it('keeps min before any burst, as many as the WAL between removals after one, never more than max', () => {
    const estimate = new RecycleEstimate({ segmentSize: SEGMENT, min: 4, max: 64, openedAt: SEGMENT });
    assert.equal(estimate.spareSegments(SEGMENT + 1000), 4, 'a little WAL: the minimum');
    assert.equal(estimate.spareSegments(SEGMENT + 1000 + 10 * SEGMENT), 10, 'a burst of 10 segments: 10');
    assert.equal(estimate.spareSegments(SEGMENT + 1000 + 110 * SEGMENT), 64, 'a burst of 100: capped at max');
  });

  it("lowers the estimate by a tenth of the difference after a shorter distance (PostgreSQL's CheckPointDistanceEstimate)", () => {
    const estimate = new RecycleEstimate({ segmentSize: SEGMENT, min: 0, max: 1024, openedAt: 0 });
    let end = 100 * SEGMENT;
    assert.equal(estimate.spareSegments(end), 100);
    end += 0;
    assert.equal(estimate.spareSegments(end), 90, '0.9 × 100 + 0.1 × 0');
    end += 10 * SEGMENT;
    assert.equal(estimate.spareSegments(end), 82, '0.9 × 90 + 0.1 × 10 = 82');
    assert.equal(estimate.estimate, 82 * SEGMENT);
  });

  it('a max below min means min', () => {
    const estimate = new RecycleEstimate({ segmentSize: SEGMENT, min: 8, max: 2, openedAt: 0 });
    assert.equal(estimate.spareSegments(100 * SEGMENT), 8);
  });
});
