import { isWalshipError } from '../../errors.js';
import type { SynchronousCommit } from '../../roles/writer.js';
import { seededRandom } from '../seeded-random.js';
import type { CatchupMode, DiskFaultKind, SimulationStep, Violation } from './history.js';
import { SimulatedCluster, type SimulationOptions } from './simulated-cluster.js';

/** The faults a generated scenario may use (all of them by default). */
export type ScenarioFault = 'crash' | 'restart' | 'partition' | 'delay' | 'stall' | 'diskFault' | 'slowDisk' | 'promote' | 'failover' | 'rejoin' | 'reload';

/** Every {@link ScenarioFault}. */
export const SCENARIO_FAULTS: readonly ScenarioFault[] = ['crash', 'restart', 'partition', 'delay', 'stall', 'diskFault', 'promote', 'failover', 'rejoin', 'reload'];

/** Options of {@link runScenario}. */
export interface ScenarioOptions extends Omit<SimulationOptions, 't' | 'seed'> {
  /**
   * Seeds the run: the same seed (and options) gives the same run, step for step. It also
   * picks the topology unless `cascade` and `archive` are given: a chain `p → s1 → s2` for
   * seeds divisible by 3, a shared archive for seeds divisible by 4.
   */
  readonly seed: number;
  /**
   * How many steps to generate (from the seed, each chosen from the cluster's state then), or
   * the exact steps to replay (from a report). @defaultValue 40
   */
  readonly steps?: number | readonly SimulationStep[];
  /** The faults the generator may use. @defaultValue every {@link SCENARIO_FAULTS}, and `slowDisk` with `earlySend` */
  readonly faults?: readonly ScenarioFault[];
  /** On a violation, look for a shorter step list that still shows it. @defaultValue true */
  readonly shrink?: boolean;
}

/** What {@link runScenario} found. */
export interface ScenarioResult {
  /** The seed. */
  readonly seed: number;
  /** True when no guarantee was broken. */
  readonly ok: boolean;
  /** The steps taken (generated or given), settling at the end included. */
  readonly steps: readonly SimulationStep[];
  /** What was broken. */
  readonly violations: readonly Violation[];
  /** A report a person can read, ending with how to replay the run. */
  readonly report: string;
  /** How many commit calls were made, and how many were acknowledged. */
  readonly commits: {
    /** Commit calls made. */
    readonly calls: number;
    /** Of them, acknowledged. */
    readonly acknowledged: number;
  };
  /** Virtual milliseconds the run covered. */
  readonly virtualMs: number;
  /** On a violation with `shrink`: a shorter step list that still breaks the same rule, and its report. */
  readonly shrunk?: {
    /** The shorter step list, which replays with the same seed. */
    readonly steps: readonly SimulationStep[];
    /** Its report. */
    readonly report: string;
  };
}

const LEVELS: readonly SynchronousCommit[] = ['off', 'local', 'remote_write', 'on', 'on', 'on', 'remote_apply'];
const CONFIGS = ['', 'FIRST 1 (s1)', 'FIRST 1 (p, s1, s2)', 'ANY 1 (p, s1, s2)', 'FIRST 2 (p, s1, s2)', 'ANY 2 (p, s1, s2)', 'FIRST 1 (*)'];
const DISK_FAULTS: readonly DiskFaultKind[] = ['write-eio', 'fsync-eio', 'enospc'];
const CATCHUP_MODES: readonly CatchupMode[] = ['write', 'flush', 'replay'];
/** The most runs a shrink tries. */
const MAX_SHRINK_RUNS = 60;

/**
 * Runs one seeded scenario on a simulated cluster (a primary and, by default, two standbys):
 * commits at mixed levels with crashes, restarts, partitions, stalls, delays, disk faults,
 * promotions, failovers, rejoins and reloads of the standby names among them, then settles
 * (heals, restarts, catches up) and checks every guarantee. Never throws for what walship
 * refuses: that is noted; a broken guarantee is a violation in the result.
 */
export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const result = await runOnce(options);
  if (result.ok || options.shrink === false) return result;
  const shrunk = await shrink(options, result);
  return shrunk === null ? result : { ...result, shrunk };
}

async function runOnce(options: ScenarioOptions): Promise<ScenarioResult> {
  // A slow disk keeps the primary's fdatasync pending while its early sender sends: the case
  // early sending must survive (a crash then loses WAL a standby already holds).
  const { seed, steps = 40, faults = options.earlySend === true ? [...SCENARIO_FAULTS, 'slowDisk'] : SCENARIO_FAULTS, shrink: _shrink, ...clusterOptions } = options;
  // The seed picks the topology too, unless the options do: chains and archives get their share.
  const cluster = new SimulatedCluster({ synchronousStandbyNames: 'ANY 1 (p, s1, s2)', cascade: seed % 3 === 0, archive: seed % 4 === 0, ...clusterOptions, seed });
  const unexpected: Violation[] = [];
  try {
    await cluster.start();
    const random = seededRandom(seed ^ 0x9e3779b9);
    const planned = typeof steps === 'number' ? null : steps;
    const count = planned === null ? (steps as number) : planned.length;
    for (let i = 0; i < count; i++) {
      const step = planned?.[i] ?? nextStep(cluster, random, faults);
      await perform(cluster, step).catch((err: unknown) => {
        if (isWalshipError(err)) cluster.notes.push(`step ${cluster.steps.length - 1} (${step.op}): ${err.code}: ${err.message}`);
        else unexpected.push({ rule: 'unexpected-error', message: `step ${cluster.steps.length - 1} (${step.op}) threw ${(err as Error)?.stack ?? String(err)}` });
      });
    }
    await cluster.settle().catch((err: unknown) => {
      if (isWalshipError(err)) cluster.notes.push(`settle: ${err.code}: ${err.message}`);
      else unexpected.push({ rule: 'unexpected-error', message: `settling threw ${(err as Error)?.stack ?? String(err)}` });
    });
    const check = cluster.check();
    const violations = [...unexpected, ...check.violations];
    const acknowledged = cluster.commits.filter((c) => c.outcome === 'acknowledged').length;
    const report = unexpected.length === 0 ? check.report : `${unexpected.map((v) => `  [${v.rule}] ${v.message}`).join('\n')}\n${check.report}`;
    return { seed, ok: violations.length === 0, steps: [...cluster.steps], violations, report, commits: { calls: cluster.commits.length, acknowledged }, virtualMs: cluster.scheduler.monotonic() };
  } finally {
    await cluster.close();
  }
}

/** Carries out one step on the cluster. */
async function perform(cluster: SimulatedCluster, step: SimulationStep): Promise<void> {
  switch (step.op) {
    case 'commit':
      await cluster.commit(step);
      return;
    case 'crash':
      return cluster.crash(step.node);
    case 'restart':
      return cluster.restart(step.node);
    case 'partition':
      return cluster.partition(step.a, step.b);
    case 'heal':
      return cluster.heal();
    case 'delay':
      return cluster.delay(step.a, step.b, step.ms);
    case 'stall':
      return cluster.stall(step.a, step.b);
    case 'diskFault':
      return cluster.diskFault(step.node, step.kind);
    case 'slowDisk':
      return cluster.slowDisk(step.node, step.ms);
    case 'promote':
      return cluster.promote(step.node);
    case 'failover':
      await cluster.failover();
      return;
    case 'rejoin':
      return cluster.rejoin(step.node);
    case 'reload':
      return cluster.reload(step.synchronousStandbyNames);
    case 'sleep':
      return cluster.sleep(step.ms);
    case 'catchup':
      return cluster.waitForCatchup(step.node, { mode: step.mode });
  }
}

/** Chooses the next step from the cluster's state: mostly commits, faults now and then. */
function nextStep(cluster: SimulatedCluster, random: () => number, faults: readonly ScenarioFault[]): SimulationStep {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const names = cluster.names;
  const up = names.filter((name) => cluster.node(name) !== null);
  const down = names.filter((name) => cluster.node(name) === null);
  const standbys = up.filter((name) => name !== cluster.primaryName);
  const pair = (): [string, string] => {
    const a = pick(names);
    const others = names.filter((name) => name !== a);
    return [a, pick(others)];
  };
  const allowed = new Set(faults);
  const options: [number, () => SimulationStep][] = [
    [40, () => ({ op: 'commit', level: pick(LEVELS), count: 1 + Math.floor(random() * 4), ...(random() < 0.1 ? { timeoutMs: Math.floor(random() * 500) } : {}) })],
    [6, () => ({ op: 'sleep', ms: Math.floor(random() * 2000) + 1 })],
    [6, () => ({ op: 'heal' })],
    [3, () => ({ op: 'catchup', node: pick(standbys.length > 0 ? standbys : names), mode: pick(CATCHUP_MODES) })],
  ];
  if (allowed.has('crash') && up.length > 0) options.push([6, () => ({ op: 'crash', node: pick(up) })]);
  if (allowed.has('restart')) options.push([down.length > 0 ? 10 : 1, () => ({ op: 'restart', node: pick(down.length > 0 ? down : names) })]);
  if (allowed.has('partition')) options.push([5, () => ({ op: 'partition', ...pairOf(pair()) })]);
  if (allowed.has('delay')) options.push([3, () => ({ op: 'delay', ...pairOf(pair()), ms: 1 + Math.floor(random() * 50) })]);
  if (allowed.has('stall')) options.push([3, () => ({ op: 'stall', ...pairOf(pair()) })]);
  if (allowed.has('diskFault') && up.length > 0) options.push([2, () => ({ op: 'diskFault', node: pick(up), kind: pick(DISK_FAULTS) })]);
  // Mostly the primary's disk (its fdatasync pending while its sender sends), then a crash soon.
  if (allowed.has('slowDisk') && up.length > 0) options.push([6, () => ({ op: 'slowDisk', node: random() < 0.7 ? cluster.primaryName : pick(up), ms: pick([0, 2, 5, 20, 50]) })]);
  // Only a standby streaming on the primary's timeline: promoting one that has not followed
  // it yet makes a sibling timeline of the same number, which PostgreSQL cannot tell apart either.
  const promotable = standbys.filter((name) => cluster.canPromote(name));
  if (allowed.has('promote') && promotable.length > 0) options.push([2, () => ({ op: 'promote', node: pick(promotable) })]);
  if (allowed.has('failover')) options.push([5, () => ({ op: 'failover' })]);
  if (allowed.has('rejoin')) options.push([5, () => ({ op: 'rejoin', node: pick(names.filter((name) => name !== cluster.primaryName)) })]);
  if (allowed.has('reload')) options.push([3, () => ({ op: 'reload', synchronousStandbyNames: pick(CONFIGS) })]);
  const total = options.reduce((sum, [weight]) => sum + weight, 0);
  let roll = random() * total;
  for (const [weight, make] of options) {
    roll -= weight;
    if (roll < 0) return make();
  }
  return options[0]![1]();
}

function pairOf([a, b]: [string, string]): { a: string; b: string } {
  return { a, b };
}

/**
 * Looks for a shorter step list that still breaks the same rule: drops halves, then quarters,
 * and so on (delta debugging), replaying each candidate with the same seed.
 */
async function shrink(options: ScenarioOptions, failed: ScenarioResult): Promise<NonNullable<ScenarioResult['shrunk']> | null> {
  const rule = failed.violations[0]!.rule;
  let steps = [...failed.steps];
  let best: ScenarioResult | null = null;
  let runs = 0;
  for (let chunk = Math.ceil(steps.length / 2); chunk >= 1 && runs < MAX_SHRINK_RUNS; chunk = Math.floor(chunk / 2)) {
    for (let start = 0; start < steps.length && runs < MAX_SHRINK_RUNS; ) {
      const candidate = [...steps.slice(0, start), ...steps.slice(start + chunk)];
      runs++;
      const result = await runOnce({ ...options, steps: candidate, shrink: false });
      if (!result.ok && result.violations.some((v) => v.rule === rule)) {
        steps = candidate;
        best = result;
      } else start += chunk;
    }
  }
  return best === null ? null : { steps: best.steps, report: best.report };
}
