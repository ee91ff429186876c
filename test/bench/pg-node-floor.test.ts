import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { ANY_1, FIRST_1, FIRST_2, commitCases } from '../../bench/pg/cases.js';
import os from 'node:os';
import path from 'node:path';
import { askedStandbys, floorPlan, measureNodeFloor, released, syncEveryMs } from '../../bench/pg/node-floor.js';

describe('bench:pg bare-Node floor', () => {
  it('has a plan for the remote levels at 1 committer only', () => {
    const planned = commitCases().filter((c) => floorPlan(c, 5) !== null);
    assert.deepEqual(
      planned.map((c) => (c.kind === 'commit' ? `${c.level} ${c.names} ${c.committers}` : c.kind)),
      [`remote_write ${FIRST_1} 1`, `on ${FIRST_1} 1`, `remote_apply ${FIRST_1} 1`, `on ${ANY_1} 1`, `on ${FIRST_2} 1`],
    );
    assert.equal(floorPlan({ kind: 'promotion' }, 5), null);
  });

  it('acknowledges the write at remote_write and the flush otherwise, with the standbys\' flush delay', () => {
    assert.deepEqual(floorPlan({ kind: 'commit', names: FIRST_1, level: 'remote_write', committers: 1 }, 5), { ack: 'write', wait: { count: 1, any: false }, delayMs: 5 });
    assert.deepEqual(floorPlan({ kind: 'commit', names: FIRST_1, level: 'remote_apply', committers: 1 }, null), { ack: 'flush', wait: { count: 1, any: false }, delayMs: 0 });
    assert.deepEqual(floorPlan({ kind: 'commit', names: ANY_1, level: 'on', committers: 1 }, 5)?.wait, { count: 1, any: true });
    assert.deepEqual(floorPlan({ kind: 'commit', names: FIRST_2, level: 'on', committers: 1 }, 5)?.wait, { count: 2, any: false });
  });

  it('with a flush delay, asks only the standbys a commit needs (one under ANY 1) and flushes at once only what a commit waits to be flushed', () => {
    const plan = (names: string, level: 'remote_write' | 'on', delay: number | null) => floorPlan({ kind: 'commit', names, level, committers: 1 }, delay)!;
    assert.deepEqual(askedStandbys(plan(FIRST_1, 'on', 5)), [true, false]);
    assert.deepEqual(askedStandbys(plan(ANY_1, 'on', 5)), [true, false]);
    assert.deepEqual(askedStandbys(plan(FIRST_2, 'on', 5)), [true, true]);
    assert.deepEqual(askedStandbys(plan(FIRST_1, 'on', null)), [true, true], 'without a delay every standby gets every commit');
    assert.equal(syncEveryMs(plan(FIRST_1, 'on', 5), true), 0);
    assert.equal(syncEveryMs(plan(FIRST_1, 'on', 5), false), 5);
    assert.equal(syncEveryMs(plan(FIRST_1, 'remote_write', 5), true), 5, 'a write is asked for, not a flush');
    assert.equal(syncEveryMs(plan(FIRST_1, 'remote_write', null), true), 0);
  });

  it('releases a commit once the standbys the set needs acknowledged it', () => {
    const first1 = { count: 1, any: false } as const;
    const any1 = { count: 1, any: true } as const;
    const first2 = { count: 2, any: false } as const;
    assert.equal(released(first1, [7, -1], 7), true);
    assert.equal(released(first1, [6, 9], 7), false, 'FIRST 1 (s1) waits for s1, not s2');
    assert.equal(released(any1, [6, 9], 7), true);
    assert.equal(released(any1, [6, 6], 7), false);
    assert.equal(released(first2, [9, 6], 7), false);
    assert.equal(released(first2, [7, 8], 7), true);
  });

  // The frames, the acknowledgements and the release run for real: a broken parser or rule hangs the run (the test times out) instead of passing.
  for (const [names, level] of [[FIRST_1, 'remote_write'], [ANY_1, 'on'], [FIRST_2, 'on']] as const) {
    it(`runs with two standby processes: ${level} under ${names}`, { timeout: 60_000 }, async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'node-floor-'));
      try {
        const rate = await measureNodeFloor(path.join(dir, 'run'), floorPlan({ kind: 'commit', names, level, committers: 1 }, 5)!, 0.2);
        assert.ok(rate > 0, `commits went through: ${rate}/s`);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});
