import { formatStep, type CommitRecord, type SimulationStep, type Violation } from './history.js';
import type { SimulationOptions } from './simulated-cluster.js';

/** What a report is made of: the run's record, as the cluster keeps it. */
export interface ReportInput {
  readonly seed: number;
  readonly steps: readonly SimulationStep[];
  readonly commits: readonly CommitRecord[];
  readonly notes: readonly string[];
  readonly options: SimulationOptions;
  /** The synchronous standby names the run started with (reloads change the cluster's). */
  readonly initialSyncText: string;
}

/**
 * The report a person reads: the violations, for each lost commit the faults after it, every
 * step, the first notes, and the call that replays the run.
 */
export function violationReport(run: ReportInput, violations: readonly Violation[]): string {
  const lines: string[] = [];
  if (violations.length === 0) lines.push(`seed ${run.seed}: no violation in ${run.steps.length} steps, ${run.commits.length} commit calls`);
  else {
    lines.push(`seed ${run.seed}: ${violations.length} violation(s) of walship's guarantees`);
    for (const v of violations) lines.push(`  [${v.rule}] ${v.message}`);
    const concerned = violations.flatMap((v) => (v.commit === undefined ? [] : [v.commit]));
    for (const c of concerned) {
      const faults = run.steps.map((step, i) => ({ step, i })).filter(({ step, i }) => i > c.step && step.op !== 'commit' && step.op !== 'sleep' && step.op !== 'catchup');
      lines.push(`  commit #${c.id} was made at step ${c.step}; the faults after it: ${faults.map(({ step, i }) => `${i}: ${formatStep(step)}`).join('; ') || 'none'}`);
    }
  }
  lines.push(`  steps: ${run.steps.map((step, i) => `${i}: ${formatStep(step)}`).join('; ')}`);
  for (const note of run.notes.slice(0, 20)) lines.push(`  note: ${note}`);
  lines.push(`  replay: runScenario(${replayOptions(run)})`);
  return lines.join('\n');
}

/**
 * The options of the replay call: the seed, the options the run was started with (the
 * synchronous standby names always, since runScenario's default is not createCluster's;
 * `application` and `workload` by name, as the caller's own), and the steps.
 */
function replayOptions(run: ReportInput): string {
  const options = run.options;
  const parts = [`seed: ${run.seed}`];
  if (options.standbys !== undefined) parts.push(`standbys: ${options.standbys}`);
  if (options.cascade !== undefined) parts.push(`cascade: ${options.cascade}`);
  parts.push(`synchronousStandbyNames: ${JSON.stringify(run.initialSyncText)}`);
  if (options.synchronousCommit !== undefined) parts.push(`synchronousCommit: ${JSON.stringify(options.synchronousCommit)}`);
  if (options.archive !== undefined) parts.push(`archive: ${options.archive}`);
  if (options.crash !== undefined) parts.push(`crash: ${JSON.stringify(options.crash)}`);
  if (options.segmentSize !== undefined) parts.push(`segmentSize: ${options.segmentSize}`);
  if (options.earlySend !== undefined) parts.push(`earlySend: ${options.earlySend}`);
  if (options.flushDelayMs !== undefined) parts.push(`flushDelayMs: ${options.flushDelayMs}`);
  if (options.syncBlocks !== undefined) parts.push(`syncBlocks: ${options.syncBlocks}`);
  if (options.application !== undefined) parts.push('application');
  if (options.workload !== undefined) parts.push('workload');
  parts.push(`steps: ${JSON.stringify(run.steps)}`);
  return `{ ${parts.join(', ')} }`;
}
