import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { COMMIT_LATENCY_BUCKETS, LatencyHistogram } from '../src/latency-histogram.js';

describe('LatencyHistogram', () => {
  it('counts an observation in the first bucket whose bound it does not exceed, cumulatively', () => {
    const h = new LatencyHistogram([0.001, 0.01, 0.1]);
    for (const seconds of [0.0005, 0.001, 0.002, 0.1, 5]) h.observe(seconds);
    const s = h.snapshot();
    assert.deepEqual(
      s.buckets.map((b) => [b.le, b.count]),
      [
        [0.001, 2],
        [0.01, 3],
        [0.1, 4],
        [Infinity, 5],
      ],
      'le is inclusive; +Inf takes the rest',
    );
    assert.equal(s.count, 5);
    assert.equal(h.count, 5);
    assert.ok(Math.abs(s.sum - 5.1035) < 1e-9, `sum ${s.sum}`);
  });

  it('starts empty, with the commit bounds by default', () => {
    const s = new LatencyHistogram().snapshot();
    assert.deepEqual(s.buckets.map((b) => b.le), [...COMMIT_LATENCY_BUCKETS, Infinity]);
    assert.ok(s.buckets.every((b) => b.count === 0), 'no observations');
    assert.equal(s.sum, 0);
  });

  it('refuses bounds that do not increase or are not finite', () => {
    for (const bounds of [[0.1, 0.1], [0.2, 0.1], [Infinity], [Number.NaN]]) {
      assert.throws(() => new LatencyHistogram(bounds), RangeError, JSON.stringify(bounds));
    }
  });
});
