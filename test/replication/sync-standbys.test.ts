import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/errors.js';
import { parseSynchronousStandbyNames, type SyncStandbyConfig } from '../../src/replication/sync-standby-names.js';
import {
  releasePositions,
  sameSyncSet,
  syncDecision,
  syncStandbys,
  syncStates,
  type SyncReleasePositions,
  type SyncSenderState,
  type SyncStandbyInput,
  type SyncState,
} from '../../src/replication/sync-standbys.js';

function config(text: string): SyncStandbyConfig {
  const parsed = parseSynchronousStandbyNames(text);
  assert.ok(parsed !== null, `${text} is a configuration`);
  return parsed;
}

interface Extra {
  state?: SyncSenderState;
  write?: number | null;
  flush?: number | null;
  apply?: number | null;
  cascaded?: boolean;
}

/** A standby in `slot`, streaming and caught up at 1000 unless told otherwise. */
function sb(slot: number, applicationName: string, extra: Extra = {}): SyncStandbyInput {
  const flush = extra.flush === undefined ? 1000 : extra.flush;
  return {
    slot,
    applicationName,
    state: extra.state ?? 'streaming',
    writeLsn: extra.write === undefined ? flush : extra.write,
    flushLsn: flush,
    applyLsn: extra.apply === undefined ? flush : extra.apply,
    ...(extra.cascaded === undefined ? {} : { cascaded: extra.cascaded }),
  };
}

/** Expected rows: [applicationName, syncPriority, syncState] in input order. */
type Expected = Array<[string, number, SyncState]>;
type StateRow = [what: string, text: string | null, standbys: SyncStandbyInput[], expected: Expected];

const FOUR = [sb(0, 's1'), sb(1, 's2'), sb(2, 's3'), sb(3, 's4')];

const STATE_ROWS: StateRow[] = [
  [
    'FIRST 2: the two earliest listed are sync, the third potential, the unlisted async (the documented example)',
    'FIRST 2 (s1, s2, s3)',
    FOUR,
    [['s1', 1, 'sync'], ['s2', 2, 'sync'], ['s3', 3, 'potential'], ['s4', 0, 'async']],
  ],
  [
    'FIRST 2 with s1 gone: s3 takes over',
    'FIRST 2 (s1, s2, s3)',
    [sb(1, 's2'), sb(2, 's3'), sb(3, 's4')],
    [['s2', 2, 'sync'], ['s3', 3, 'sync'], ['s4', 0, 'async']],
  ],
  [
    'FIRST 2 with s1 in catchup: s1 is potential until it streams',
    'FIRST 2 (s1, s2, s3)',
    [sb(0, 's1', { state: 'catchup' }), sb(1, 's2'), sb(2, 's3'), sb(3, 's4')],
    [['s1', 1, 'potential'], ['s2', 2, 'sync'], ['s3', 3, 'sync'], ['s4', 0, 'async']],
  ],
  [
    'the input order does not matter, the priority does',
    'FIRST 2 (s1, s2, s3)',
    [sb(2, 's3'), sb(3, 's4'), sb(1, 's2'), sb(0, 's1')],
    [['s3', 3, 'potential'], ['s4', 0, 'async'], ['s2', 2, 'sync'], ['s1', 1, 'sync']],
  ],
  [
    'the legacy list is FIRST 1',
    's1, s2',
    [sb(0, 's2'), sb(1, 's1')],
    [['s2', 2, 'potential'], ['s1', 1, 'sync']],
  ],
  [
    'ANY 2: every listed candidate is quorum with priority 1 (the documented example)',
    'ANY 2 (s1, s2, s3)',
    FOUR,
    [['s1', 1, 'quorum'], ['s2', 1, 'quorum'], ['s3', 1, 'quorum'], ['s4', 0, 'async']],
  ],
  [
    'ANY 2: a listed standby in catchup is potential, not quorum',
    'ANY 2 (s1, s2, s3)',
    [sb(0, 's1'), sb(1, 's2', { state: 'catchup' }), sb(2, 's3')],
    [['s1', 1, 'quorum'], ['s2', 1, 'potential'], ['s3', 1, 'quorum']],
  ],
  [
    'ANY 3 with only two candidates: both are still shown as quorum',
    'ANY 3 (s1, s2, s3)',
    [sb(0, 's1'), sb(1, 's2')],
    [['s1', 1, 'quorum'], ['s2', 1, 'quorum']],
  ],
  [
    '*: everyone has priority 1; the lowest slot is sync',
    '*',
    [sb(2, 'a'), sb(0, 'b'), sb(1, 'c')],
    [['a', 1, 'potential'], ['b', 1, 'sync'], ['c', 1, 'potential']],
  ],
  [
    'a name before * ranks first, everyone else after it',
    'FIRST 2 (b, *)',
    [sb(0, 'a'), sb(1, 'b'), sb(2, 'c')],
    [['a', 2, 'sync'], ['b', 1, 'sync'], ['c', 2, 'potential']],
  ],
  [
    'a duplicated name takes its first position',
    'FIRST 2 (s1, s1, s2)',
    [sb(0, 's1'), sb(1, 's2')],
    [['s1', 1, 'sync'], ['s2', 3, 'sync']],
  ],
  [
    'two standbys with the same name: both priority 1, both sync before s2',
    'FIRST 2 (s1, s2)',
    [sb(0, 's1'), sb(1, 's2'), sb(2, 'S1')],
    [['s1', 1, 'sync'], ['s2', 2, 'potential'], ['S1', 1, 'sync']],
  ],
  [
    'two standbys with the same name under FIRST 1: the lower slot wins',
    'FIRST 1 (s1)',
    [sb(5, 's1'), sb(2, 's1')],
    [['s1', 1, 'potential'], ['s1', 1, 'sync']],
  ],
  [
    'after a reconnect into a lower slot, a same-priority standby wins the tie',
    'FIRST 1 (*)',
    [sb(1, 'old'), sb(0, 'reconnected')],
    [['old', 1, 'potential'], ['reconnected', 1, 'sync']],
  ],
  [
    'FIRST 3 with two listed standbys: both sync',
    'FIRST 3 (s1, s2)',
    [sb(0, 's1'), sb(1, 's2'), sb(2, 's3')],
    [['s1', 1, 'sync'], ['s2', 2, 'sync'], ['s3', 0, 'async']],
  ],
  [
    'only streaming and stopping senders are candidates',
    'FIRST 5 (a, b, c, d, e)',
    [sb(0, 'a', { state: 'startup' }), sb(1, 'b', { state: 'catchup' }), sb(2, 'c', { state: 'backup' }), sb(3, 'd', { state: 'stopping' }), sb(4, 'e')],
    [['a', 1, 'potential'], ['b', 2, 'potential'], ['c', 3, 'potential'], ['d', 4, 'sync'], ['e', 5, 'sync']],
  ],
  [
    'a standby with no valid flush position yet is shown async with priority 0',
    'FIRST 1 (a, b, c)',
    [sb(0, 'a', { flush: null }), sb(1, 'b', { flush: 0 }), sb(2, 'c')],
    [['a', 0, 'async'], ['b', 0, 'async'], ['c', 3, 'sync']],
  ],
  [
    'an unknown write or apply position does not stop a standby being sync',
    'FIRST 1 (a)',
    [sb(0, 'a', { write: null, apply: null })],
    [['a', 1, 'sync']],
  ],
  [
    'a cascaded sender is never synchronous',
    '*',
    [sb(0, 'a', { cascaded: true }), sb(1, 'b', { cascaded: false })],
    [['a', 0, 'async'], ['b', 1, 'sync']],
  ],
  [
    'names match ignoring ASCII case, quoted or not',
    'FIRST 2 ("Node_A", NODE_B)',
    [sb(0, 'node_a'), sb(1, 'Node_B')],
    [['node_a', 1, 'sync'], ['Node_B', 2, 'sync']],
  ],
  [
    'synchronous replication off: everyone async',
    null,
    [sb(0, 's1'), sb(1, 's2')],
    [['s1', 0, 'async'], ['s2', 0, 'async']],
  ],
  ['no standbys connected', 'FIRST 1 (s1)', [], []],
];

type ReleaseRow = [what: string, text: string | null, standbys: SyncStandbyInput[], release: SyncReleasePositions];

const NONE: SyncReleasePositions = { write: null, flush: null, apply: null };

const RELEASE_ROWS: ReleaseRow[] = [
  [
    'FIRST 2: the lowest of each position over the two sync standbys; the potential one is ignored',
    'FIRST 2 (s1, s2, s3)',
    [sb(0, 's1', { write: 500, flush: 400, apply: 300 }), sb(1, 's2', { write: 450, flush: 420, apply: 100 }), sb(2, 's3', { write: 10, flush: 10, apply: 10 })],
    { write: 450, flush: 400, apply: 100 },
  ],
  [
    'FIRST 1: the sync standby decides even when a potential one is ahead',
    'FIRST 1 (s1, s2)',
    [sb(0, 's1', { write: 200, flush: 150, apply: 100 }), sb(1, 's2', { write: 900, flush: 900, apply: 900 })],
    { write: 200, flush: 150, apply: 100 },
  ],
  [
    'FIRST 2 with s1 in catchup: s2 and s3 decide',
    'FIRST 2 (s1, s2, s3)',
    [sb(0, 's1', { state: 'catchup', flush: 50 }), sb(1, 's2', { flush: 700 }), sb(2, 's3', { flush: 600 })],
    { write: 600, flush: 600, apply: 600 },
  ],
  [
    'ANY 2: the second highest of each position, each taken separately',
    'ANY 2 (s1, s2, s3)',
    [sb(0, 's1', { write: 500, flush: 300, apply: 100 }), sb(1, 's2', { write: 400, flush: 400, apply: 50 }), sb(2, 's3', { write: 300, flush: 350, apply: 200 })],
    { write: 400, flush: 350, apply: 100 },
  ],
  [
    'ANY 1: the highest of each',
    'ANY 1 (s1, s2, s3)',
    [sb(0, 's1', { write: 500, flush: 300, apply: 100 }), sb(1, 's2', { write: 400, flush: 400, apply: 50 }), sb(2, 's3', { write: 300, flush: 350, apply: 200 })],
    { write: 500, flush: 400, apply: 200 },
  ],
  [
    'ANY 3: the lowest of each',
    'ANY 3 (s1, s2, s3)',
    [sb(0, 's1', { write: 500, flush: 300, apply: 100 }), sb(1, 's2', { write: 400, flush: 400, apply: 50 }), sb(2, 's3', { write: 300, flush: 350, apply: 200 })],
    { write: 300, flush: 300, apply: 50 },
  ],
  [
    'ANY 2: unlisted and non-streaming standbys do not count, however far ahead',
    'ANY 2 (s1, s2, s3)',
    [sb(0, 's1', { flush: 100 }), sb(1, 's2', { flush: 200 }), sb(2, 's3', { state: 'catchup', flush: 900 }), sb(3, 's4', { flush: 900 })],
    { write: 100, flush: 100, apply: 100 },
  ],
  [
    'ANY 2 with equal positions',
    'ANY 2 (*)',
    [sb(0, 'a', { flush: 300 }), sb(1, 'b', { flush: 300 }), sb(2, 'c', { flush: 100 })],
    { write: 300, flush: 300, apply: 300 },
  ],
  [
    'an unknown apply position counts as 0 (FIRST)',
    'FIRST 2 (a, b)',
    [sb(0, 'a', { flush: 300, apply: null }), sb(1, 'b', { flush: 200 })],
    { write: 200, flush: 200, apply: 0 },
  ],
  [
    'an unknown write position counts as 0 (ANY)',
    'ANY 2 (a, b, c)',
    [sb(0, 'a', { flush: 300, write: null }), sb(1, 'b', { flush: 200, write: null }), sb(2, 'c', { flush: 100 })],
    { write: 0, flush: 200, apply: 200 },
  ],
  ['FIRST 3 with two candidates: no release', 'FIRST 3 (s1, s2)', [sb(0, 's1'), sb(1, 's2')], NONE],
  ['ANY 3 with two candidates: no release', 'ANY 3 (s1, s2, s3)', [sb(0, 's1'), sb(1, 's2'), sb(2, 's3', { state: 'catchup' })], NONE],
  ['FIRST 1 with the only listed standby lacking a flush position: no release', 'FIRST 1 (s1)', [sb(0, 's1', { flush: null })], NONE],
  ['nobody connected: no release', 'FIRST 1 (s1)', [], NONE],
  ['synchronous replication off: no release', null, [sb(0, 's1')], NONE],
  ['a stopping sender still releases', 'FIRST 1 (s1)', [sb(0, 's1', { state: 'stopping', flush: 42 })], { write: 42, flush: 42, apply: 42 }],
];

describe('syncStates', () => {
  for (const [what, text, standbys, expected] of STATE_ROWS) {
    it(what, () => {
      const states = syncStates(text === null ? null : config(text), standbys);
      assert.deepEqual(
        states.map((s) => [s.applicationName, s.syncPriority, s.syncState]),
        expected,
        `${text ?? '(off)'}: ${JSON.stringify(states)}`,
      );
      assert.deepEqual(states.map((s) => s.slot), standbys.map((s) => s.slot), 'rows in input order');
    });
  }
});

describe('syncStandbys', () => {
  it('returns the caller’s objects, by priority then slot', () => {
    const standbys = [sb(3, 's3'), sb(1, 'x'), sb(0, 's2'), sb(2, 's1')];
    const chosen = syncStandbys(config('FIRST 2 (s1, s2, s3)'), standbys);
    assert.deepEqual(chosen.map((s) => s.applicationName), ['s1', 's2'], 'the two of best priority');
    assert.equal(chosen[0], standbys[3], 'the same object');
    assert.deepEqual(syncStandbys(config('ANY 1 (*)'), standbys).map((s) => s.slot), [0, 1, 2, 3], 'ANY: every candidate, in slot order');
    assert.deepEqual(syncStandbys(null, standbys), [], 'none when off');
  });
});

describe('releasePositions', () => {
  for (const [what, text, standbys, release] of RELEASE_ROWS) {
    it(what, () => {
      assert.deepEqual(releasePositions(text === null ? null : config(text), standbys), release, `${text ?? '(off)'}`);
    });
  }
});

describe('syncDecision and sameSyncSet', () => {
  it('name the same set while only positions move, and another one when a member changes', () => {
    const c = config('FIRST 2 (s1, s2, s3)');
    const members = (standbys: SyncStandbyInput[]): SyncStandbyInput[] => syncDecision(c, standbys).members;
    const before = members(FOUR);
    const moved = members([sb(0, 's1', { flush: 5000 }), sb(1, 's2', { flush: 7000 }), sb(2, 's3'), sb(3, 's4')]);
    const replaced = members([sb(1, 's2'), sb(2, 's3'), sb(3, 's4')]);
    const reconnected = members([sb(4, 's1'), sb(1, 's2'), sb(2, 's3')]);
    assert.ok(sameSyncSet(moved, before), 'positions do not change the set');
    assert.ok(!sameSyncSet(replaced, before), 's3 replacing s1 changes the set');
    assert.ok(!sameSyncSet(reconnected, before), 's1 back in another slot changes the set');
    assert.ok(!sameSyncSet([{ slot: 0, applicationName: 's9' }, before[1] as SyncStandbyInput], before), 'another name in the same slot changes the set');
    assert.deepEqual(members([sb(3, 's4')]), [], 'no sync standby: no members');
    assert.deepEqual(
      syncDecision(config('ANY 1 (s1, s2)'), [sb(1, 's2'), sb(0, 's1')]).members.map((s) => [s.slot, s.applicationName]),
      [
        [0, 's1'],
        [1, 's2'],
      ],
      'quorum members in slot order',
    );
    const needed = (text: string): [number, string][] =>
      syncDecision(config(text), [sb(2, 's3'), sb(1, 's2'), sb(0, 's1')]).needed.map((s): [number, string] => [s.slot, s.applicationName]);
    assert.deepEqual(needed('ANY 1 (s1, s2, s3)'), [[0, 's1']], 'ANY 1: one member needed, the lowest slot');
    assert.deepEqual(needed('ANY 2 (s3, s2, s1)'), [[0, 's1'], [1, 's2']], 'ANY 2: the two lowest slots, whatever the list order');
    assert.deepEqual(needed('FIRST 2 (s3, s2, s1)'), [[1, 's2'], [2, 's3']], 'FIRST 2: every sync member');
    assert.deepEqual(needed('ANY 3 (s1, s2, s3)'), [[0, 's1'], [1, 's2'], [2, 's3']], 'ANY 3 of three: all');
  });
});

describe('input checks', () => {
  const c = config('FIRST 1 (s1)');
  const bad: Array<[string, unknown[], string]> = [
    ['duplicate slots', [sb(0, 'a'), sb(0, 'b')], 'INVALID_ARGUMENT'],
    ['a negative slot', [sb(-1, 'a')], 'INVALID_ARGUMENT'],
    ['a fractional slot', [sb(1.5, 'a')], 'INVALID_ARGUMENT'],
    ['an unknown state', [{ ...sb(0, 'a'), state: 'running' }], 'INVALID_ARGUMENT'],
    ['a name that is not a string', [{ ...sb(0, 'a'), applicationName: 3 }], 'INVALID_ARGUMENT'],
    ['a negative LSN', [sb(0, 'a', { flush: -1 })], 'INVALID_LSN'],
    ['an unsafe LSN', [sb(0, 'a', { apply: 2 ** 53 })], 'INVALID_LSN'],
    ['a missing LSN', [{ ...sb(0, 'a'), writeLsn: undefined }], 'INVALID_LSN'],
    ['not an object', [null], 'INVALID_ARGUMENT'],
  ];
  for (const [what, standbys, code] of bad) {
    it(`rejects ${what}`, () => {
      for (const fn of [syncStates, releasePositions, syncStandbys] as const) {
        assert.throws(() => fn(c, standbys as SyncStandbyInput[]), (err: unknown) => isWalshipError(err, code as never), `${fn.name}: ${what}`);
      }
    });
  }
});

describe('on random standbys', () => {
  const lsn = fc.oneof(fc.constant(null), fc.constant(0), { arbitrary: fc.integer({ min: 1, max: 1000 }), weight: 6 });
  const standby = fc.record({
    applicationName: fc.constantFrom('s1', 's2', 's3', 's4', 'S1', 'x'),
    state: fc.constantFrom<SyncSenderState>('startup', 'catchup', 'streaming', 'streaming', 'streaming', 'stopping', 'backup'),
    writeLsn: lsn,
    flushLsn: lsn,
    applyLsn: lsn,
  });
  const arbitrary = fc.record({
    method: fc.constantFrom('FIRST', 'ANY'),
    num: fc.integer({ min: 1, max: 4 }),
    names: fc.array(fc.constantFrom('s1', 's2', 's3', 's4', '*'), { minLength: 1, maxLength: 4 }),
    standbys: fc.array(standby, { maxLength: 7 }),
    slots: fc.shuffledSubarray([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], { minLength: 7, maxLength: 7 }),
    order: fc.array(fc.nat(), { minLength: 7, maxLength: 7 }),
  });

  it('agree with each other and with PostgreSQL’s guarantees', () => {
    fc.assert(
      fc.property(arbitrary, (r) => {
        const c = config(`${r.method} ${r.num} (${r.names.join(', ')})`);
        const standbys: SyncStandbyInput[] = r.standbys.map((s, i) => ({ ...s, slot: r.slots[i] as number }));
        const states = syncStates(c, standbys);
        const chosen = syncStandbys(c, standbys);
        const release = releasePositions(c, standbys);
        const label = c.method === 'first' ? 'sync' : 'quorum';
        const bySlot = new Map(states.map((s) => [s.slot, s]));

        // The states show exactly the chosen standbys as sync/quorum.
        assert.deepEqual(
          states.filter((s) => s.syncState === label).map((s) => s.slot).sort((a, b) => a - b),
          chosen.map((s) => s.slot).sort((a, b) => a - b),
          'sync states match the chosen set',
        );
        assert.ok(states.every((s) => (s.syncState === 'async') === (s.syncPriority === 0)), 'async exactly at priority 0');

        // Every chosen standby is a streaming (or stopping) one with a known flush position.
        for (const s of chosen) {
          assert.ok((s.state === 'streaming' || s.state === 'stopping') && s.flushLsn !== null && s.flushLsn > 0, `slot ${s.slot} is a candidate`);
        }
        const candidates = standbys.filter(
          (s) => (s.state === 'streaming' || s.state === 'stopping') && s.flushLsn !== null && s.flushLsn > 0 && (bySlot.get(s.slot)?.syncPriority ?? 0) > 0,
        );
        if (c.method === 'first') {
          assert.equal(chosen.length, Math.min(c.num, candidates.length), 'FIRST chooses num candidates, or all when fewer');
          // No candidate left out ranks before a chosen one.
          const rank = (s: SyncStandbyInput): [number, number] => [bySlot.get(s.slot)?.syncPriority ?? 0, s.slot];
          const worst = chosen.map(rank).sort((a, b) => a[0] - b[0] || a[1] - b[1]).at(-1);
          for (const s of candidates) {
            if (chosen.includes(s) || worst === undefined) continue;
            const [p, slot] = rank(s);
            assert.ok(p > worst[0] || (p === worst[0] && slot > worst[1]), `slot ${slot} (priority ${p}) left out before a worse one`);
          }
        } else {
          assert.equal(chosen.length, candidates.length, 'ANY chooses every candidate');
        }

        // Release only with enough standbys.
        assert.equal(release.flush !== null, chosen.length >= c.num, 'release iff enough candidates');
        assert.ok((release.write === null) === (release.flush === null) && (release.apply === null) === (release.flush === null), 'all or none');
        if (release.flush !== null) {
          for (const mode of ['write', 'flush', 'apply'] as const) {
            const released = release[mode] as number;
            const field = `${mode}Lsn` as const;
            const positions = chosen.map((s) => s[field] ?? 0);
            if (c.method === 'first') {
              assert.ok(positions.every((p) => p >= released), `FIRST ${mode}: no sync standby is behind ${released}`);
              assert.ok(positions.includes(released), `FIRST ${mode}: ${released} is one of theirs`);
            } else {
              assert.ok(positions.filter((p) => p >= released).length >= c.num, `ANY ${mode}: at least ${c.num} reached ${released}`);
              assert.ok(positions.filter((p) => p > released).length < c.num, `ANY ${mode}: ${released} is the ${c.num}-th highest`);
            }
          }
        }

        // The input order changes nothing.
        const shuffled = standbys.map((s, i) => [r.order[i] as number, s] as const).sort((a, b) => a[0] - b[0]).map(([, s]) => s);
        assert.deepEqual(releasePositions(c, shuffled), release, 'release is order-independent');
        const again = new Map(syncStates(c, shuffled).map((s) => [s.slot, s]));
        assert.deepEqual(again, bySlot, 'states are order-independent');
        // What each status report computes is the same choice, whatever the input order.
        const members = states.filter((s) => s.syncState === label).sort((a, b) => a.slot - b.slot);
        for (const input of [standbys, shuffled]) {
          const decision = syncDecision(c, input);
          assert.deepEqual(decision.release, release, 'syncDecision releases as releasePositions');
          assert.deepEqual(
            decision.members.map((s) => [s.slot, s.applicationName]),
            members.map((s) => [s.slot, s.applicationName]),
            'syncDecision names the sync/quorum rows, in slot order',
          );
          assert.ok(sameSyncSet(decision.members, members), 'and sameSyncSet says so');
          // The members asked at once: all of them under FIRST, the num of the lowest slots under ANY.
          const needed = c.method === 'any' ? members.slice(0, c.num) : members;
          assert.deepEqual(
            decision.needed.map((s) => [s.slot, s.applicationName]),
            needed.map((s) => [s.slot, s.applicationName]),
            'syncDecision needs every sync member, or the quorum of the lowest slots',
          );
        }
      }),
      { seed: 20_240_613, numRuns: 3000 },
    );
  });
});
