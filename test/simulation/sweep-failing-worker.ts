/**
 * A stand-in sweep worker for scenario-sweep-failure.test.ts: the others record their pid in
 * the directory given by `WALSHIP_SWEEP_PIDS` and then run forever, as a worker stuck in a
 * long share of scenarios does (for a minute at most, then it leaves `<offset>.expired`); the
 * worker of offset 0 fails once they all run.
 */
import { readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SweepAssignment } from './scenario-sweep.js';

const assignment = JSON.parse(process.argv[2]!) as SweepAssignment;
const dir = process.env['WALSHIP_SWEEP_PIDS']!;
if (assignment.offset === 0) {
  const poll = setInterval(() => {
    if (readdirSync(dir).filter((name) => name.endsWith('.pid')).length < assignment.stride - 1) return;
    clearInterval(poll);
    process.exit(3);
  }, 10);
} else {
  // Renamed into place: a file the others see holds the whole pid.
  writeFileSync(join(dir, `${assignment.offset}.tmp`), String(process.pid));
  renameSync(join(dir, `${assignment.offset}.tmp`), join(dir, `${assignment.offset}.pid`));
  // Stopped by the sweep; a worker a broken sweep leaves behind ends after a minute, saying so.
  setTimeout(() => {
    writeFileSync(join(dir, `${assignment.offset}.expired`), '');
    process.exit(0);
  }, 60_000);
}
