/**
 * A sweep whose worker fails fails at once, loudly, and leaves no worker behind: the others
 * would otherwise run their share of the seeds to the end (minutes), keeping the test
 * process alive after it failed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sweep } from './scenario-sweep.js';

const FAILING_WORKER = fileURLToPath(new URL('./sweep-failing-worker.ts', import.meta.url));

/** Whether process `pid` still runs. */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

it('a worker that fails rejects the sweep, and the other workers are stopped before it rejects', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'walship-sweep-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  process.env['WALSHIP_SWEEP_PIDS'] = dir;
  t.after(() => delete process.env['WALSHIP_SWEEP_PIDS']);
  const result = sweep({ scenarios: 6, workers: 3, worker: FAILING_WORKER });
  await assert.rejects(result, { message: /sweep worker 0 \(seeds 1, 4\) exited with 3/ });
  const pids = await Promise.all((await readdir(dir)).filter((name) => name.endsWith('.pid')).map(async (name) => Number(await readFile(join(dir, name), 'utf8'))));
  assert.equal(pids.length, 2);
  assert.deepEqual(pids.filter(running), [], 'no worker runs on');
  assert.deepEqual((await readdir(dir)).filter((name) => name.endsWith('.expired')), [], 'the sweep stopped the workers: none ran until it gave up by itself');
});
