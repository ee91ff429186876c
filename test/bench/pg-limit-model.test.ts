import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bulkLimit, catchUpLimit, commitLimit, fractionOfLimit, promotionLimit, type MeasuredLimits } from '../../bench/pg/limit-model.js';

const limits: MeasuredLimits = { fdatasyncUs: 400, sharedFdatasyncUs: 600, pgTestFsyncUs: 350, roundTripUs: 50, sequentialBytesPerSec: 600e6, promotionMs: 1.5 };

describe('bench:pg limit model', () => {
  it('at on, one committer: F + R + F on the serial path, max(F, R + F) on the parallel one', () => {
    const model = commitLimit('on', 1, limits);
    assert.ok(model !== null);
    assert.equal(model.serialUs, 850);
    assert.equal(model.parallelUs, 450);
    assert.equal(model.serial, 1e6 / 850);
    assert.equal(model.parallel, 1e6 / 450);
  });

  it('remote_apply is modelled like on, remote_write without the standby fdatasync', () => {
    assert.deepEqual(commitLimit('remote_apply', 1, limits), commitLimit('on', 1, limits));
    const write = commitLimit('remote_write', 1, limits);
    assert.equal(write?.serialUs, 450);
    assert.equal(write?.parallelUs, 400);
  });

  it('when the round trip is slower than the fdatasync, the parallel path waits for it', () => {
    const model = commitLimit('remote_write', 1, { ...limits, roundTripUs: 900 });
    assert.equal(model?.parallelUs, 900);
  });

  it('local is one fdatasync on both paths; off has no model', () => {
    const local = commitLimit('local', 1, limits);
    assert.equal(local?.serialUs, 400);
    assert.equal(local?.parallel, local?.serial);
    assert.equal(commitLimit('off', 16, limits), null);
  });

  it('n closed-loop committers: n commits per commit latency', () => {
    const one = commitLimit('on', 1, limits);
    const sixteen = commitLimit('on', 16, limits);
    assert.equal(sixteen?.serial, 16 * (one?.serial ?? 0));
    assert.equal(sixteen?.serialUs, one?.serialUs);
    assert.match(sixteen?.formula ?? '', /^16× /);
  });

  it('bulk divides the disk by the copies; catch-up and promotion take the raw figures', () => {
    assert.equal(bulkLimit(3, limits).serial, 200);
    assert.equal(catchUpLimit(limits).serial, 600);
    assert.equal(promotionLimit(limits).parallel, 1.5);
  });

  it('the share of a limit: measured ÷ limit for rates, limit ÷ measured for times, NaN without figures', () => {
    assert.equal(fractionOfLimit(800, 1000, true), 0.8);
    assert.equal(fractionOfLimit(3, 1.5, false), 0.5);
    assert.ok(Number.isNaN(fractionOfLimit(Number.NaN, 1000, true)));
    assert.ok(Number.isNaN(fractionOfLimit(100, 0, true)));
  });
});
