/**
 * `npm run soak -- --scenarios N [--from SEED] [--workers W] [--steps K] [--early-send]`: a
 * long run of the cluster simulator's seeded scenarios (with `--early-send`, every one with
 * early WAL and slow disks), with a progress line, scenarios per second, the seeds
 * tried and every violation's report (exit 1 if any). Each violation is a walship bug: replay
 * it with the `replay:` line of its report, and keep its seed as a regression test.
 */
import { parseArgs } from 'node:util';
import { sweep, type SweepProgress } from './scenario-sweep.js';

const { values } = parseArgs({
  options: {
    scenarios: { type: 'string', default: '10000' },
    from: { type: 'string', default: '1' },
    workers: { type: 'string' },
    steps: { type: 'string', default: '40' },
    'early-send': { type: 'boolean', default: false },
  },
});
const count = (name: string, text: string | undefined): number => {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(`soak: --${name} must be a positive integer, got ${String(text)}`);
    process.exit(2);
  }
  return n;
};
const scenarios = count('scenarios', values.scenarios);
const from = count('from', values.from);
const steps = count('steps', values.steps);
const workers = values.workers === undefined ? undefined : count('workers', values.workers);

const line = (p: SweepProgress): string => {
  const rate = p.done / (p.elapsedMs / 1000);
  const left = rate > 0 ? Math.round((p.scenarios - p.done) / rate) : 0;
  return `soak: ${p.done.toLocaleString('en')}/${p.scenarios.toLocaleString('en')} scenarios, ${rate.toFixed(1)}/s, ${p.acknowledged.toLocaleString('en')} commits acknowledged, ${p.violations.length} violation(s), ${left} s left`;
};
let lastPrinted = 0;
let shown = 0;
const result = await sweep({
  scenarios,
  from,
  steps,
  earlySend: values['early-send'] === true,
  ...(workers === undefined ? {} : { workers }),
  onProgress: (p) => {
    // Each violation as soon as it is found: a long soak may be stopped before its end.
    while (p.violations.length > shown) {
      const v = p.violations[shown++]!;
      console.log(`\nsoak: violation, seed ${v.seed}:\n${v.report}${v.shrunk === undefined ? '' : `\nshrunk:\n${v.shrunk}`}\n`);
    }
    if (process.stdout.isTTY) process.stdout.write(`\r${line(p)}   `);
    else if (p.elapsedMs - lastPrinted >= 10_000) {
      lastPrinted = p.elapsedMs;
      console.log(line(p));
    }
  },
});
if (process.stdout.isTTY) process.stdout.write('\n');
const seconds = result.elapsedMs / 1000;
console.log(`soak: ${result.done.toLocaleString('en')} scenarios (seeds ${from}–${from + scenarios - 1}, ${steps} steps each${values['early-send'] === true ? ', early WAL' : ''}) in ${seconds.toFixed(0)} s: ${(result.done / seconds).toFixed(1)} scenarios/s, ${result.acknowledged.toLocaleString('en')} of ${result.calls.toLocaleString('en')} commit calls acknowledged`);
console.log(result.violations.length === 0 ? 'soak: no violation' : `soak: ${result.violations.length} violation(s): seeds ${result.violations.map((v) => v.seed).join(', ')}`);
process.exit(result.violations.length === 0 ? 0 : 1);
