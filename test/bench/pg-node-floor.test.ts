import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ANY_1, FIRST_1, FIRST_2, commitCases } from '../../bench/pg/cases.js';
import { floorPlan, released } from '../../bench/pg/node-floor.js';

describe('bench:pg bare-Node floor', () => {
  it('has a plan for the remote levels at 1 committer only', () => {
    const planned = commitCases().filter((c) => floorPlan(c, 5) !== null);
    assert.deepEqual(
      planned.map((c) => (c.kind === 'commit' ? `${c.level} ${c.names} ${c.committers}` : c.kind)),
      [`remote_write ${FIRST_1} 1`, `on ${FIRST_1} 1`, `remote_apply ${FIRST_1} 1`, `on ${ANY_1} 1`, `on ${FIRST_2} 1`],
    );
    assert.equal(floorPlan({ kind: 'promotion' }, 5), null);
  });

  it('acknowledges the write at remote_write and the flush otherwise; paces a standby no commit waits for at the flush delay', () => {
    assert.deepEqual(floorPlan({ kind: 'commit', names: FIRST_1, level: 'remote_write', committers: 1 }, 5), { ack: 'write', wait: { count: 1, any: false }, unneededEveryMs: 5 });
    assert.deepEqual(floorPlan({ kind: 'commit', names: FIRST_1, level: 'remote_apply', committers: 1 }, null), { ack: 'flush', wait: { count: 1, any: false }, unneededEveryMs: 0 });
    assert.deepEqual(floorPlan({ kind: 'commit', names: ANY_1, level: 'on', committers: 1 }, 5)?.wait, { count: 1, any: true });
    assert.deepEqual(floorPlan({ kind: 'commit', names: FIRST_2, level: 'on', committers: 1 }, 5)?.wait, { count: 2, any: false });
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
});
