import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ANY_1, FIRST_1, FIRST_2, commitCases, labelOf, targetOf, type BenchCase } from '../../bench/pg/cases.js';
import { commitLimit, promotionLimit, type MeasuredLimits } from '../../bench/pg/limit-model.js';
import { evaluate, formatFloorReport, formatFloorRow, formatReport, formatRow, formatSpread, roundRatios, tally, type CaseResult } from '../../bench/pg/report.js';

const limits: MeasuredLimits = { fdatasyncUs: 400, sharedFdatasyncUs: 600, pgTestFsyncUs: 350, roundTripUs: 50, sequentialBytesPerSec: 600e6, promotionMs: 1.5 };
const onFirst1: BenchCase = { kind: 'commit', names: FIRST_1, level: 'on', committers: 1 };
const result = (c: BenchCase, pg: number[], walship: number[]): CaseResult => ({
  case: c,
  pg,
  walship,
  limit: c.kind === 'commit' ? commitLimit(c.level, c.committers, limits) : c.kind === 'promotion' ? promotionLimit(limits) : null,
});

describe('bench:pg cases and targets', () => {
  it('every level under FIRST 1 and on under ANY 1 and FIRST 2, at 1 and 16 committers', () => {
    const cases = commitCases();
    assert.equal(cases.length, 14);
    for (const committers of [1, 16]) {
      for (const level of ['off', 'local', 'remote_write', 'on', 'remote_apply']) {
        assert.ok(cases.some((c) => c.kind === 'commit' && c.names === FIRST_1 && c.level === level && c.committers === committers), `${level} × ${committers}`);
      }
      for (const names of [ANY_1, FIRST_2]) assert.ok(cases.some((c) => c.kind === 'commit' && c.names === names && c.level === 'on' && c.committers === committers));
    }
  });

  it("holds issue #17's targets", () => {
    assert.deepEqual(targetOf(onFirst1), { minRatio: 1.3, minFractionOfParallelLimit: 0.8 });
    assert.deepEqual(targetOf({ kind: 'commit', names: ANY_1, level: 'on', committers: 1 }), { minRatio: 1.2 });
    assert.deepEqual(targetOf({ kind: 'commit', names: FIRST_1, level: 'off', committers: 1 }), { minRatio: 1.2 });
    assert.deepEqual(targetOf({ kind: 'commit', names: FIRST_2, level: 'on', committers: 16 }), { minRatio: 3 });
    assert.deepEqual(targetOf({ kind: 'commit', names: FIRST_1, level: 'remote_write', committers: 16 }), { minRatio: 3 });
    assert.equal(targetOf({ kind: 'commit', names: FIRST_1, level: 'local', committers: 16 }), null);
    assert.deepEqual(targetOf({ kind: 'catch-up', bytes: 2 ** 30, quick: false }), { minRatio: 1.5 });
    assert.deepEqual(targetOf({ kind: 'promotion' }), { minRatio: 7 });
    assert.equal(targetOf({ kind: 'bulk', rowsPerCommit: 1000, rowBytes: 1000 }), null);
  });

  it('a quick catch-up says in its label that it is not the 1 GiB of the target', () => {
    assert.equal(labelOf({ kind: 'catch-up', bytes: 2 ** 28, quick: true }), 'catch-up, 256 MiB behind (--quick; target: 1 GiB)');
    assert.equal(labelOf({ kind: 'catch-up', bytes: 2 ** 30, quick: false }), 'catch-up, 1 GiB behind');
  });
});

describe('bench:pg table', () => {
  it('the ratio is the median of the per-round ratios, PG ÷ walship for times', () => {
    assert.deepEqual(roundRatios(result(onFirst1, [1000, 2000, 1000], [1500, 2000, 3000])), [1.5, 1, 3]);
    assert.equal(evaluate(result(onFirst1, [1000, 2000, 1000], [1500, 2000, 3000])).ratio, 1.5);
    assert.deepEqual(roundRatios(result({ kind: 'promotion' }, [40, 30], [4, 10])), [10, 3]);
  });

  it('met needs both the ratio and, for 1 committer at on under FIRST 1, 80 % of the parallel limit', () => {
    // Parallel limit at on: 10⁶ / 450 µs ≈ 2,222/s; 80 % ≈ 1,778/s.
    assert.equal(evaluate(result(onFirst1, [1000, 1000, 1000], [1900, 1900, 1900])).verdict, 'met');
    const slowVsLimit = evaluate(result(onFirst1, [1000, 1000, 1000], [1400, 1400, 1400]));
    assert.equal(slowVsLimit.verdict, 'NOT MET');
    assert.match(slowVsLimit.why, /63 % < 80 % of the parallel limit/);
    assert.doesNotMatch(slowVsLimit.why, /×/);
    const slowVsPg = evaluate(result(onFirst1, [2000, 2000, 2000], [1900, 1900, 1900]));
    assert.equal(slowVsPg.verdict, 'NOT MET');
    assert.match(slowVsPg.why, /0\.95× < 1\.3×/);
  });

  it('a row without a target says –, and missing figures never count as met', () => {
    assert.equal(evaluate(result({ kind: 'commit', names: FIRST_1, level: 'local', committers: 16 }, [1], [2])).verdict, '–');
    assert.equal(evaluate(result({ kind: 'promotion' }, [], [])).verdict, 'NOT MET');
  });

  it('a row shows medians with their spread, the ratio, the limit on both paths and the verdict', () => {
    const row = formatRow(result(onFirst1, [2400, 2500, 3000], [3300, 3400, 3100]));
    assert.equal(row[2], '2,500 (2,400–3,000)');
    assert.equal(row[3], '3,300 (3,100–3,400)');
    assert.equal(row[4], '1.36×');
    assert.equal(row[6], '1,176 (850 µs) | 2,222 (450 µs)');
    assert.equal(row[7], '281 % | 149 %');
    assert.equal(row[8], '≥ 1.3×, ≥ 80 % par.');
    assert.equal(row[9], 'met');
    assert.equal(formatSpread({ kind: 'promotion' }, { median: 3.25, min: 2.5, max: 40.2 }), '3.3 (2.5–40.2)');
  });

  it('the table has a line per case and the tally counts the verdicts', () => {
    const results = [result(onFirst1, [1000], [1900]), result({ kind: 'promotion' }, [30], [10]), result({ kind: 'commit', names: FIRST_1, level: 'off', committers: 16 }, [1], [1])];
    const table = formatReport(results).split('\n');
    assert.equal(table.length, 2 + results.length);
    assert.match(table[3] ?? '', /NOT MET \(3\.00× < 7×\)/);
    assert.deepEqual(tally(results), { met: 1, notMet: 1 });
  });

  it('the bare-Node floor: its ratio to PG per round, named in a miss only when it is itself below the target', () => {
    const withFloor = (floor: number[], walship: number[]): CaseResult => ({ ...result(onFirst1, [1000, 1000, 1000], walship), floor });
    const blocked = evaluate(withFloor([1100, 1200, 1000], [1050, 1050, 1050]));
    assert.equal(blocked.floorRatio, 1.1);
    assert.equal(blocked.verdict, 'NOT MET');
    assert.match(blocked.why, /^1\.05× < 1\.3×; bare Node's floor itself 1\.10×; /);
    const reachable = evaluate(withFloor([2000, 2000, 2000], [1050, 1050, 1050]));
    assert.equal(reachable.floorRatio, 2);
    assert.match(reachable.why, /^1\.05× < 1\.3×; \d+ % < 80 %/, 'a floor above the target is no excuse');
    assert.ok(Number.isNaN(evaluate(result(onFirst1, [1000], [1050])).floorRatio), 'no floor: NaN');
    assert.deepEqual(formatFloorRow(withFloor([1100, 1200, 1000], [1050, 1050, 1050])), [labelOf(onFirst1), '1,000', '1,050', '1,100 (1,000–1,200)', '1.10×', '1.05×', '95 %', '≥ 1.3×, ≥ 80 % par.']);
    const table = formatFloorReport([withFloor([1100], [1050]), result({ kind: 'promotion' }, [30], [10])]).split('\n');
    assert.equal(table.length, 3, 'a header, a rule and the one row with a floor');
  });
});
