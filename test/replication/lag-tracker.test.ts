import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LAG_TRACKER_CAPACITY, LagTracker, type Lags } from '../../src/replication/lag-tracker.js';

function lags(writeLagMs: number | null, flushLagMs: number | null, replayLagMs: number | null): Lags {
  return { writeLagMs, flushLagMs, replayLagMs };
}

describe('LagTracker', () => {
  it('measures each lag from when WAL up to the reported position was sent', () => {
    const tracker = new LagTracker();
    assert.deepEqual(tracker.lags, lags(null, null, null));
    tracker.sent(100, 1000);
    tracker.sent(200, 1010);
    tracker.sent(300, 1020);
    // Written to 200 (sent at 1010), flushed to 100 (1000), applied nothing yet.
    assert.deepEqual(tracker.reported(200, 100, 0, 300, 1050), lags(40, 50, null));
    // Positions between samples use the newest sample they cover.
    assert.deepEqual(tracker.reported(250, 250, 150, 300, 1060), lags(40, 50, 60));
    assert.deepEqual(tracker.reported(300, 300, 300, 300, 1100), lags(80, 80, 80));
    assert.deepEqual(tracker.lags, lags(80, 80, 80));
  });

  it('a report that covers no new sample keeps the last lags', () => {
    const tracker = new LagTracker();
    tracker.sent(100, 0);
    tracker.sent(200, 10);
    assert.deepEqual(tracker.reported(100, 100, 100, 200, 30), lags(30, 30, 30));
    assert.deepEqual(tracker.reported(150, 150, 150, 200, 500), lags(30, 30, 30));
  });

  it('clears the lags after two consecutive fully-applied reports, as PostgreSQL does', () => {
    const tracker = new LagTracker();
    tracker.sent(100, 0);
    assert.deepEqual(tracker.reported(100, 100, 100, 100, 5), lags(5, 5, 5));
    // The second fully-applied report in a row measures nothing new: idle, so unknown.
    assert.deepEqual(tracker.reported(100, 100, 100, 100, 1000), lags(null, null, null));
    assert.deepEqual(tracker.reported(100, 100, 100, 100, 2000), lags(null, null, null));
    // New traffic is measured again, even by a report that is again the second in a row.
    tracker.sent(200, 3000);
    assert.deepEqual(tracker.reported(200, 200, 200, 200, 3010), lags(10, 10, 10));
    assert.deepEqual(tracker.reported(200, 200, 200, 200, 4000), lags(null, null, null));
  });

  it('a report that is behind breaks the fully-applied streak', () => {
    const tracker = new LagTracker();
    tracker.sent(100, 0);
    tracker.sent(200, 10);
    assert.deepEqual(tracker.reported(100, 100, 100, 100, 20), lags(20, 20, 20));
    // WAL up to 200 was sent since: applied 100 of 200 is not caught up.
    assert.deepEqual(tracker.reported(200, 200, 100, 200, 40), lags(30, 30, 20));
    assert.deepEqual(tracker.reported(200, 200, 200, 200, 50), lags(30, 30, 40));
    assert.deepEqual(tracker.reported(200, 200, 200, 200, 60), lags(null, null, null));
  });

  it('ignores samples that do not advance and never reports a negative lag', () => {
    const tracker = new LagTracker();
    tracker.sent(100, 50);
    tracker.sent(100, 60);
    tracker.sent(90, 70);
    assert.equal(tracker.pending, 1);
    // The standby's clock is not involved, but ours may step back: a lag is never negative.
    assert.deepEqual(tracker.reported(100, 100, 100, 100, 40), lags(0, 0, 0));
  });

  it('a full ring overwrites its newest sample instead of growing', () => {
    const tracker = new LagTracker(8);
    for (let i = 1; i <= 100; i++) tracker.sent(i * 10, i);
    // Seven samples are kept (one slot stays free): 10…60 as sent, and the latest in the seventh.
    assert.equal(tracker.pending, 7);
    assert.deepEqual(tracker.reported(35, 35, 35, 1000, 200), lags(197, 197, 197));
    // The overwritten slot holds the last send (LSN 1000 at time 100): 70…990 left no
    // sample, so 700 is measured against 60's time, and 1000 against that later time.
    assert.deepEqual(tracker.reported(700, 700, 700, 1000, 250), lags(244, 244, 244));
    assert.deepEqual(tracker.reported(1000, 1000, 1000, 1000, 300), lags(200, 200, 200));
    assert.equal(tracker.pending, 0);
    // Space freed by the reports is used again.
    for (let i = 101; i <= 105; i++) tracker.sent(i * 10, i);
    assert.equal(tracker.pending, 5);
    assert.deepEqual(tracker.reported(1030, 1010, 1000, 1050, 400), lags(297, 299, 200));
  });

  it('the slowest of write, flush and apply decides when the ring is full', () => {
    const tracker = new LagTracker(4);
    tracker.sent(10, 1);
    tracker.sent(20, 2);
    tracker.sent(30, 3);
    // Write and flush consumed everything; apply nothing: the ring is still full for apply.
    assert.deepEqual(tracker.reported(30, 30, 0, 30, 10), lags(7, 7, null));
    assert.equal(tracker.pending, 3);
    tracker.sent(40, 4);
    tracker.sent(50, 5);
    assert.equal(tracker.pending, 3);
    assert.deepEqual(tracker.reported(50, 50, 50, 50, 20), lags(7, 7, 15));
    assert.equal(tracker.pending, 0);
  });

  it('memory stays bounded however long no report comes', () => {
    const tracker = new LagTracker();
    for (let i = 1; i <= 200_000; i++) tracker.sent(i * 100, i);
    assert.equal(tracker.pending, LAG_TRACKER_CAPACITY - 1);
    // The oldest samples are intact: the first report measures against the first send.
    assert.equal(tracker.reported(100, 100, 100, 20_000_000, 200_001).writeLagMs, 200_000);
    assert.equal(tracker.reported(20_000_000, 20_000_000, 20_000_000, 20_000_000, 200_001).writeLagMs, 1);
  });

  it('rejects a capacity that cannot hold a sample', () => {
    assert.throws(() => new LagTracker(1), RangeError);
    assert.throws(() => new LagTracker(2.5), RangeError);
  });
});
