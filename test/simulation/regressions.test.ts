/**
 * Seeds whose scenarios once broke a check, kept as tests. Each was a bug of the simulator or
 * its checker, not of walship; a walship bug found by a sweep goes here too, with its seed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runScenario, type SimulationStep } from '../../src/testing/index.js';

describe('scenario regressions', () => {
  // Network faults armed Node's timers: the run of seed 15 differed from one process to another.
  // A failover right after another, or a promotion of a standby that had not followed the new
  // timeline yet, made a sibling timeline of the same number (seeds 16, 19, 25, 35, 104, 121).
  // A listed standby that was connected but not streaming was taken for a FIRST candidate (7, 56).
  // A restart dropped the stalled FIRST standby's old session, so the next one released a commit,
  // and a later step's crash removed that one before the commit's callback read the rows (57202).
  // A standby restarted after applying remote_apply commits confirmed them on its old connection (66809, as 27158 below).
  for (const seed of [7, 15, 16, 19, 25, 35, 56, 104, 121, 57202, 66809]) {
    it(`seed ${seed}`, async () => {
      const result = await runScenario({ seed, shrink: false });
      assert.ok(result.ok, result.report);
    });
  }

  it('seed 173: a rewind that fails part-way (a full disk) and runs again reports the rest; the first report counts', async () => {
    const steps: SimulationStep[] = [
      { op: 'partition', a: 's2', b: 'p' },
      { op: 'commit', level: 'remote_apply', count: 1 },
      { op: 'promote', node: 's2' },
      { op: 'diskFault', node: 's1', kind: 'enospc' },
      { op: 'heal' },
    ];
    const result = await runScenario({ seed: 173, steps, shrink: false });
    assert.ok(result.ok, result.report);
  });

  it('seed 5269: a rejoining node whose state came from a base backup past its WAL says its rewind report is incomplete', async () => {
    const steps: SimulationStep[] = [
      { op: 'commit', level: 'local', count: 3 },
      { op: 'failover' },
      { op: 'commit', level: 'on', count: 4 },
      { op: 'commit', level: 'local', count: 2 },
      { op: 'restart', node: 's2' },
      { op: 'commit', level: 'off', count: 4 },
      { op: 'rejoin', node: 'p' },
      { op: 'diskFault', node: 's1', kind: 'fsync-eio' },
      { op: 'catchup', node: 's2', mode: 'replay' },
      { op: 'failover' },
      { op: 'heal' },
      { op: 'rejoin', node: 's1' },
    ];
    const result = await runScenario({ seed: 5269, steps, shrink: false });
    assert.ok(result.ok, result.report);
  });

  it('seed 27158: a standby restarted after it applied remote_apply commits confirms them on its old connection', async () => {
    const steps: SimulationStep[] = [
      { op: 'commit', level: 'on', count: 2, timeoutMs: 445 },
      { op: 'failover' },
      { op: 'reload', synchronousStandbyNames: 'FIRST 1 (s1)' },
      { op: 'commit', level: 'remote_apply', count: 4 },
      { op: 'restart', node: 'p' },
      { op: 'commit', level: 'remote_write', count: 3, timeoutMs: 57 },
      { op: 'restart', node: 's2' },
      { op: 'reload', synchronousStandbyNames: 'ANY 2 (p, s1, s2)' },
      { op: 'heal' },
    ];
    const result = await runScenario({ seed: 27158, cascade: false, archive: false, steps, shrink: false });
    assert.ok(result.ok, result.report);
  });

  it('seed 377: a commit released by a reload to no names is judged by that reload, not the one right after', async () => {
    const steps: SimulationStep[] = [
      { op: 'promote', node: 's2' },
      { op: 'commit', level: 'on', count: 1 },
      { op: 'reload', synchronousStandbyNames: '' },
      { op: 'reload', synchronousStandbyNames: 'FIRST 1 (*)' },
      { op: 'heal' },
      { op: 'rejoin', node: 'p' },
    ];
    const result = await runScenario({ seed: 377, steps, shrink: false });
    assert.equal(result.commits.acknowledged, 1, 'the reload released the commit');
    assert.ok(result.ok, result.report);
  });
});
