/**
 * The CI sweep of the cluster simulator: 2,000 seeded scenarios (commits at every level among
 * crashes, restarts, partitions, stalls, delays, disk faults, promotions, failovers, rejoins and
 * reloads), each settled and checked, in a child process per core. A violation is a walship
 * bug: its report ends with the line that replays it.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { sweep } from './scenario-sweep.js';

/** How many scenarios CI runs (`npm run soak` runs more). */
const CI_SCENARIOS = 2_000;

it(`${CI_SCENARIOS.toLocaleString('en')} seeded scenarios of a simulated cluster break no guarantee`, { timeout: 900_000 }, async (t) => {
  const result = await sweep({ scenarios: CI_SCENARIOS, from: 1 });
  const seconds = result.elapsedMs / 1000;
  t.diagnostic(`${result.done} scenarios (seeds 1–${CI_SCENARIOS}) in ${seconds.toFixed(0)} s, ${(result.done / seconds).toFixed(1)}/s; ${result.acknowledged} of ${result.calls} commit calls acknowledged`);
  assert.equal(result.done, CI_SCENARIOS);
  assert.ok(result.acknowledged > CI_SCENARIOS * 5, 'the scenarios acknowledge commits, so there is something to lose');
  assert.deepEqual(
    result.violations.map((v) => v.seed),
    [],
    result.violations.map((v) => `seed ${v.seed}:\n${v.report}${v.shrunk === undefined ? '' : `\nshrunk:\n${v.shrunk}`}`).join('\n\n'),
  );
});
