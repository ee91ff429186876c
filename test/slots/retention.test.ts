import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/index.js';
import {
  RETENTION_DEFAULTS,
  decideRetention,
  slotAvailability,
  type RetentionState,
  type SlotHold,
  type WalStatus,
} from '../../src/slots/retention.js';

// Segments of 1000 bytes keep the tables readable: LSN 9200 is in segment 9.
const S = 1000;
const BASE: RetentionState = {
  segmentSize: S,
  currentLsn: 9200,
  oldestLsn: 0,
  checkpointLsn: 9100,
  walKeepSize: 0,
  maxSlotWalKeepSize: -1,
};

type Row = [what: string, state: Partial<RetentionState>, slots: Array<[string, number | null]>, keepSegno: number, invalidated: string[]];

const RETENTION_ROWS: Row[] = [
  ['no slots: the checkpoint decides', { checkpointLsn: 5500 }, [], 5, []],
  ['no checkpoint yet: all WAL is kept', { checkpointLsn: null }, [], 0, []],
  ['a checkpoint at the current position keeps only the current segment', { checkpointLsn: 9200 }, [], 9, []],
  ['a checkpoint ahead of the current position still keeps the current segment', { checkpointLsn: 12_000 }, [], 9, []],
  ['walKeepSize keeps the segment that many bytes back', { walKeepSize: 2500 }, [], 6, []],
  ['walKeepSize of one byte keeps the segment of the previous byte', { currentLsn: 9000, checkpointLsn: 9000, walKeepSize: 1 }, [], 8, []],
  ['walKeepSize beyond the start keeps everything', { walKeepSize: 50_000 }, [], 0, []],
  ['the oldest unarchived segment is kept', { unarchivedLsn: 4321 }, [], 4, []],
  ['a null unarchived position keeps nothing extra', { unarchivedLsn: null }, [], 9, []],
  ['an unlimited slot holds its segment', {}, [['a', 3200]], 3, []],
  ['a slot that has not reserved WAL holds nothing', {}, [['a', null]], 9, []],
  ['the oldest of several slots decides', {}, [['a', 4100], ['b', 2999], ['c', null]], 2, []],
  ['an unlimited slot at LSN 0 keeps everything', {}, [['a', 0]], 0, []],
  ['a slot ahead of the checkpoint changes nothing', { checkpointLsn: 5000 }, [['a', 8000]], 5, []],
  ['beyond maxSlotWalKeepSize, held by nothing else: invalidated', { maxSlotWalKeepSize: 4000 }, [['a', 3200]], 9, ['a']],
  ['beyond the limit but the checkpoint still needs its segment: kept', { maxSlotWalKeepSize: 4000, checkpointLsn: 2000 }, [['a', 3200]], 2, []],
  ['beyond the limit but in the same segment as the checkpoint: kept', { maxSlotWalKeepSize: 4000, checkpointLsn: 3900 }, [['a', 3200]], 3, []],
  ['beyond the limit but walKeepSize keeps it: kept', { maxSlotWalKeepSize: 4000, walKeepSize: 7000 }, [['a', 3200]], 2, []],
  ['beyond the limit but not archived yet: kept', { maxSlotWalKeepSize: 4000, unarchivedLsn: 1500 }, [['a', 3200]], 1, []],
  ['at the limit, rounded to its segment: kept', { maxSlotWalKeepSize: 4000 }, [['a', 5000]], 5, []],
  ['one byte into the previous segment: invalidated', { maxSlotWalKeepSize: 4000 }, [['a', 4999]], 9, ['a']],
  ['a limit of 0 keeps a slot in the current segment', { maxSlotWalKeepSize: 0 }, [['a', 9000]], 9, []],
  ['a limit of 0 invalidates a slot in the previous segment', { maxSlotWalKeepSize: 0, checkpointLsn: 9200 }, [['a', 8999]], 9, ['a']],
  ['one slot invalidated, the other holds', { maxSlotWalKeepSize: 4000 }, [['old', 1000], ['ok', 7000]], 7, ['old']],
  ['several invalidated at once', { maxSlotWalKeepSize: 2000 }, [['x', 100], ['y', 6999], ['z', 7000]], 7, ['x', 'y']],
  ['an unreserved slot is not counted against the limit', { maxSlotWalKeepSize: 1000 }, [['a', null]], 9, []],
  ['a huge limit behaves as unlimited', { maxSlotWalKeepSize: 1e12 }, [['a', 100]], 0, []],
];

type StatusRow = [what: string, state: Partial<RetentionState>, restartLsn: number | null, invalidated: boolean, status: WalStatus | null, safe: number | null];

// Defaults for this table: current 9200, checkpoint 8000, segments 2 and later present.
const STATUS_BASE: Partial<RetentionState> = { checkpointLsn: 8000, oldestLsn: 2000 };
const STATUS_ROWS: StatusRow[] = [
  ['an invalidated slot is lost', {}, null, true, 'lost', null],
  ['an invalidated slot is lost even with a limit', { maxSlotWalKeepSize: 4000 }, null, true, 'lost', null],
  ['a slot that has not reserved WAL has no status', {}, null, false, null, null],
  ['...nor a safe size, even with a limit', { maxSlotWalKeepSize: 4000 }, null, false, null, null],
  ['unlimited, within the checkpoint: reserved', {}, 8500, false, 'reserved', null],
  ['unlimited, in the checkpoint segment: reserved', {}, 8000, false, 'reserved', null],
  ['unlimited, behind the checkpoint: extended', {}, 3000, false, 'extended', null],
  ['unlimited, one byte behind the checkpoint segment: extended', {}, 7999, false, 'extended', null],
  ['limited, within the checkpoint: reserved with a safe size', { maxSlotWalKeepSize: 4000 }, 8500, false, 'reserved', 3800],
  ['limited, at the edge of its allowance: extended', { maxSlotWalKeepSize: 4000 }, 5000, false, 'extended', 800],
  ['limited, beyond its allowance: unreserved, negative safe size', { maxSlotWalKeepSize: 4000 }, 4999, false, 'unreserved', -200],
  ['limited, far beyond: unreserved while the segment exists', { maxSlotWalKeepSize: 4000 }, 2000, false, 'unreserved', -2200],
  ['its segment removed: lost', { maxSlotWalKeepSize: 4000 }, 1999, false, 'lost', null],
  ['its segment removed with no limit: lost as well', {}, 1500, false, 'lost', null],
  ['walKeepSize keeps it: reserved, safe size from walKeepSize', { maxSlotWalKeepSize: 4000, walKeepSize: 7000 }, 3000, false, 'reserved', 1800],
  ['walKeepSize smaller than the limit: the limit decides the safe size', { maxSlotWalKeepSize: 4000, walKeepSize: 1000 }, 6000, false, 'extended', 1800],
  ['no checkpoint yet: everything protected is reserved', { checkpointLsn: null }, 3000, false, 'reserved', null],
  ['no checkpoint yet but beyond the limit: unreserved (as PostgreSQL: the limit decides)', { checkpointLsn: null, maxSlotWalKeepSize: 4000 }, 3000, false, 'unreserved', -1200],
  ['a limit of 0, in the current segment: reserved', { maxSlotWalKeepSize: 0 }, 9000, false, 'reserved', 800],
  ['a limit of 0, previous segment: unreserved', { maxSlotWalKeepSize: 0 }, 8999, false, 'unreserved', -200],
  ['at the current position: reserved', { maxSlotWalKeepSize: 4000 }, 9200, false, 'reserved', 4800],
  ['early in the log, nothing far behind: reserved', { currentLsn: 500, checkpointLsn: 0, oldestLsn: 0, maxSlotWalKeepSize: 4000 }, 0, false, 'reserved', 4500],
];

describe('WAL retention', () => {
  for (const [what, overrides, slots, keepSegno, invalidated] of RETENTION_ROWS) {
    it(`decides: ${what}`, () => {
      const holds: SlotHold[] = slots.map(([name, restartLsn]) => ({ name, restartLsn }));
      const decision = decideRetention({ ...BASE, ...overrides }, holds);
      assert.equal(decision.keepFromSegno, keepSegno);
      assert.equal(decision.keepFromLsn, keepSegno * S);
      assert.deepEqual(
        decision.invalidate.map((h) => h.name),
        invalidated,
      );
    });
  }

  for (const [what, overrides, restartLsn, lost, walStatus, safeWalSize] of STATUS_ROWS) {
    it(`walStatus: ${what}`, () => {
      const state = { ...BASE, ...STATUS_BASE, ...overrides };
      assert.deepEqual(slotAvailability(state, restartLsn, lost), { walStatus, safeWalSize });
    });
  }

  it('defaults are PostgreSQL’s and frozen', () => {
    assert.deepEqual(RETENTION_DEFAULTS, { walKeepSize: 0, maxSlotWalKeepSize: -1 });
    assert.ok(Object.isFrozen(RETENTION_DEFAULTS), 'frozen');
  });

  it('rejects bad input with coded errors', () => {
    const bad: Array<[Partial<RetentionState>, string]> = [
      [{ segmentSize: 0 }, 'INVALID_ARGUMENT'],
      [{ walKeepSize: -1 }, 'INVALID_ARGUMENT'],
      [{ maxSlotWalKeepSize: -2 }, 'INVALID_ARGUMENT'],
      [{ maxSlotWalKeepSize: 1.5 }, 'INVALID_ARGUMENT'],
      [{ currentLsn: -1 }, 'INVALID_LSN'],
      [{ checkpointLsn: Number.NaN }, 'INVALID_LSN'],
      [{ unarchivedLsn: 2 ** 53 }, 'INVALID_LSN'],
    ];
    for (const [overrides, code] of bad) {
      const state = { ...BASE, ...overrides };
      assert.throws(() => decideRetention(state, []), (err: unknown) => isWalshipError(err, code as never), JSON.stringify(overrides));
      assert.throws(() => slotAvailability(state, 10, false), (err: unknown) => isWalshipError(err, code as never));
    }
    assert.throws(() => decideRetention(BASE, [{ name: 'a', restartLsn: -5 }]), (err: unknown) => isWalshipError(err, 'INVALID_LSN'));
  });

  it('agrees with itself on random states: kept slots are reserved or extended, invalidated ones are not', () => {
    const lsn = fc.integer({ min: 0, max: 40_000 });
    const arbitrary = fc.record({
      currentLsn: lsn,
      checkpoint: fc.option(lsn, { nil: null }),
      walKeepSize: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 20_000 })),
      maxSlotWalKeepSize: fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 20_000 })),
      unarchived: fc.option(lsn, { nil: null }),
      slots: fc.array(fc.option(lsn, { nil: null }), { maxLength: 5 }),
    });
    fc.assert(
      fc.property(arbitrary, (r) => {
        const state: RetentionState = {
          segmentSize: S,
          currentLsn: r.currentLsn,
          oldestLsn: 0,
          checkpointLsn: r.checkpoint === null ? null : Math.min(r.checkpoint, r.currentLsn),
          walKeepSize: r.walKeepSize,
          maxSlotWalKeepSize: r.maxSlotWalKeepSize,
          unarchivedLsn: r.unarchived === null ? null : Math.min(r.unarchived, r.currentLsn),
        };
        const holds = r.slots.map((restartLsn, i) => ({ name: `s${i}`, restartLsn: restartLsn === null ? null : Math.min(restartLsn, r.currentLsn) }));
        const decision = decideRetention(state, holds);
        const seg = (x: number): number => Math.floor(x / S);
        // Never more than the checkpoint, walKeepSize, the archive and the current segment allow.
        assert.ok(decision.keepFromSegno <= seg(state.currentLsn), 'the current segment is kept');
        assert.ok(decision.keepFromSegno <= seg(state.checkpointLsn ?? 0), 'the checkpoint segment is kept');
        assert.ok(decision.keepFromSegno <= seg(Math.max(0, state.currentLsn - state.walKeepSize)), 'walKeepSize is kept');
        if (state.unarchivedLsn !== null && state.unarchivedLsn !== undefined) assert.ok(decision.keepFromSegno <= seg(state.unarchivedLsn), 'unarchived WAL is kept');
        const doomed = new Set(decision.invalidate.map((h) => h.name));
        if (state.maxSlotWalKeepSize < 0) assert.equal(doomed.size, 0);
        for (const hold of holds) {
          if (hold.restartLsn === null) continue;
          const { walStatus, safeWalSize } = slotAvailability(state, hold.restartLsn, false);
          if (doomed.has(hold.name)) {
            // Its WAL goes: it was unreserved, and nothing else keeps its segment.
            assert.equal(walStatus, 'unreserved');
            assert.ok(seg(hold.restartLsn) < decision.keepFromSegno, `${hold.name}: invalidated, yet its segment is kept`);
          } else {
            // Every kept slot finds its segment kept.
            assert.ok(seg(hold.restartLsn) >= decision.keepFromSegno, `${hold.name}: kept, yet its segment goes`);
          }
          if (walStatus === 'reserved' || walStatus === 'extended') assert.ok(!doomed.has(hold.name), `${hold.name}: ${walStatus} yet invalidated`);
          // safeWalSize > 0 exactly while the slot's allowance still covers it.
          if (state.maxSlotWalKeepSize >= 0) {
            assert.ok(safeWalSize !== null, 'a limit gives a safe size');
            assert.equal(safeWalSize > 0, walStatus !== 'unreserved', `${walStatus} with safeWalSize ${safeWalSize}`);
          } else {
            assert.equal(safeWalSize, null);
          }
        }
      }),
      { seed: 20_240_605, numRuns: 2000 },
    );
  });
});
