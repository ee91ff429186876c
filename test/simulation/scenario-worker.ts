/**
 * A child process of a scenario sweep: runs `runScenario` for its share of the seeds and
 * reports to its parent after each one. Started by `scenario-sweep.ts`, never on its own.
 */
import { runScenario } from '../../src/testing/index.js';
import type { SweepAssignment, WorkerMessage } from './scenario-sweep.js';

const assignment = JSON.parse(process.argv[2]!) as SweepAssignment;
const send = (message: WorkerMessage): Promise<void> => new Promise((resolve, reject) => process.send!(message, (err: Error | null) => (err === null ? resolve() : reject(err))));

/** The seed being run: set when the process ends, that scenario crashed or hung it. */
let running: number | null = null;
// Also on Node's exit 13 (a top-level await that never settles: a scenario whose promises all
// wait for something that never comes), where the handler is told 0, not 13.
process.on('exit', () => {
  if (running !== null) process.stderr.write(`scenario-worker: seed ${running} did not finish; replay: runScenario({ seed: ${running}, steps: ${assignment.steps}${assignment.earlySend ? ', earlySend: true' : ''} })\n`);
});

let done = 0;
let acknowledged = 0;
let calls = 0;
for (let seed = assignment.from + assignment.offset; seed < assignment.from + assignment.count; seed += assignment.stride) {
  running = seed;
  const result = await runScenario({ seed, steps: assignment.steps, shrink: assignment.shrink, ...(assignment.earlySend ? { earlySend: true } : {}) });
  running = null;
  done++;
  acknowledged += result.commits.acknowledged;
  calls += result.commits.calls;
  const violation = result.ok ? null : { seed, report: result.report, ...(result.shrunk === undefined ? {} : { shrunk: result.shrunk.report }) };
  // Batched: a message per scenario would cost more than many scenarios do.
  if (violation !== null || done % 25 === 0) {
    await send({ kind: 'progress', done, acknowledged, calls, violation });
    done = 0;
    acknowledged = 0;
    calls = 0;
  }
}
await send({ kind: 'progress', done, acknowledged, calls, violation: null });
process.disconnect();
