/**
 * The one table of `npm run bench:pg`: per case PostgreSQL's figure and walship's (medians of
 * the interleaved rounds, with their min–max), the ratio, the limit model and walship's share
 * of it, and the verdict against issue #17's target. Pure, so test/bench/pg-report.test.ts
 * checks the arithmetic and the wording without PostgreSQL.
 */
import { median } from '../stats.js';
import { formatInt, formatTable, type Row } from '../table.js';
import { higherIsBetter, labelOf, targetOf, unitOf, type BenchCase } from './cases.js';
import { fractionOfLimit, type LimitModel } from './limit-model.js';

/** What one case measured: one figure per round on each side, in round order (pairs). */
export interface CaseResult {
  readonly case: BenchCase;
  readonly pg: readonly number[];
  readonly walship: readonly number[];
  readonly limit: LimitModel | null;
  /** The bare-Node floor's figure per round (node-floor.ts), where the case has one. */
  readonly floor?: readonly number[];
}

/** A case's figures reduced to what the table shows. */
export interface Evaluation {
  readonly pg: Spread;
  readonly walship: Spread;
  /** × faster than PostgreSQL: the median of the per-round ratios (walship ÷ PG for rates, PG ÷ walship for times). */
  readonly ratio: number;
  /** walship's median as a share of each limit model (1 = at the limit); NaN without a model. */
  readonly ofSerialLimit: number;
  readonly ofParallelLimit: number;
  /** 'met', 'NOT MET', or '–' where the issue sets no target. */
  readonly verdict: 'met' | 'NOT MET' | '–';
  /** Why it is not met (which part of the target), empty otherwise. */
  readonly why: string;
  /** The bare-Node floor ÷ PostgreSQL: the median of the per-round ratios; NaN without a floor. */
  readonly floorRatio: number;
}

export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export function spreadOf(values: readonly number[]): Spread {
  const finite = values.filter((v) => Number.isFinite(v));
  return { median: median(finite), min: finite.length === 0 ? Number.NaN : Math.min(...finite), max: finite.length === 0 ? Number.NaN : Math.max(...finite) };
}

/** The per-round ratios (walship faster = above 1) of rounds measured side by side. */
export function roundRatios(result: CaseResult): number[] {
  const higher = higherIsBetter(result.case);
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(result.pg.length, result.walship.length); i++) {
    const pg = result.pg[i] as number;
    const ws = result.walship[i] as number;
    const ratio = higher ? ws / pg : pg / ws;
    if (Number.isFinite(ratio) && ratio > 0) ratios.push(ratio);
  }
  return ratios;
}

export function evaluate(result: CaseResult): Evaluation {
  const higher = higherIsBetter(result.case);
  const pg = spreadOf(result.pg);
  const walship = spreadOf(result.walship);
  const ratio = median(roundRatios(result));
  const floorRatio = result.floor === undefined ? Number.NaN : median(roundRatios({ ...result, walship: result.floor }));
  const ofSerialLimit = result.limit === null ? Number.NaN : fractionOfLimit(walship.median, result.limit.serial, higher);
  const ofParallelLimit = result.limit === null ? Number.NaN : fractionOfLimit(walship.median, result.limit.parallel, higher);
  const target = targetOf(result.case);
  if (target === null) return { pg, walship, ratio, ofSerialLimit, ofParallelLimit, verdict: '–', why: '', floorRatio };
  const missed: string[] = [];
  if (!(ratio >= target.minRatio)) {
    const floor = floorRatio < target.minRatio ? `; bare Node's floor itself ${formatRatio(floorRatio)}` : '';
    missed.push(`${formatRatio(ratio)} < ${target.minRatio}×${floor}`);
  }
  if (target.minFractionOfParallelLimit !== undefined && !(ofParallelLimit >= target.minFractionOfParallelLimit)) {
    missed.push(`${formatPercent(ofParallelLimit)} < ${formatPercent(target.minFractionOfParallelLimit)} of the parallel limit`);
  }
  return { pg, walship, ratio, ofSerialLimit, ofParallelLimit, verdict: missed.length === 0 ? 'met' : 'NOT MET', why: missed.join('; '), floorRatio };
}

/** A ratio such as `1.31×`; '–' when not a number. */
export function formatRatio(ratio: number): string {
  return Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : '–';
}

/** A share such as `85 %`; '–' when not a number. */
export function formatPercent(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)} %` : '–';
}

/** A figure in its case's unit: whole commits/s, MB/s with one decimal under 100, ms with one decimal. */
export function formatFigure(c: BenchCase, value: number): string {
  if (!Number.isFinite(value)) return '–';
  if (c.kind === 'commit') return formatInt(value);
  return value < 100 ? value.toFixed(1) : formatInt(value);
}

/** `median (min–max)`. */
export function formatSpread(c: BenchCase, s: Spread): string {
  if (!Number.isFinite(s.median)) return '–';
  return `${formatFigure(c, s.median)} (${formatFigure(c, s.min)}–${formatFigure(c, s.max)})`;
}

/** The target in words, or '–'. */
export function formatTarget(c: BenchCase): string {
  const target = targetOf(c);
  if (target === null) return '–';
  return `≥ ${target.minRatio}×${target.minFractionOfParallelLimit === undefined ? '' : `, ≥ ${formatPercent(target.minFractionOfParallelLimit)} par.`}`;
}

/** The limit cell: the model's value on each path (a commit row also shows one commit's µs). */
export function formatLimit(c: BenchCase, limit: LimitModel | null): string {
  if (limit === null) return '–';
  const value = (v: number, us: number | undefined): string => `${formatFigure(c, v)}${us === undefined ? '' : ` (${formatInt(us)} µs)`}`;
  if (limit.serial === limit.parallel) return value(limit.serial, limit.serialUs);
  return `${value(limit.serial, limit.serialUs)} | ${value(limit.parallel, limit.parallelUs)}`;
}

export const TABLE_HEADERS: Row = [
  'case',
  'unit',
  'PG 15 (min–max)',
  'walship (min–max)',
  'walship ÷ PG',
  'limit model',
  'limit: serial | parallel',
  'walship % of limit',
  'target',
  'verdict',
];

/** One row of the table. */
export function formatRow(result: CaseResult): Row {
  const e = evaluate(result);
  const c = result.case;
  const share =
    result.limit === null
      ? '–'
      : result.limit.serial === result.limit.parallel
        ? formatPercent(e.ofSerialLimit)
        : `${formatPercent(e.ofSerialLimit)} | ${formatPercent(e.ofParallelLimit)}`;
  return [
    labelOf(c),
    unitOf(c),
    formatSpread(c, e.pg),
    formatSpread(c, e.walship),
    formatRatio(e.ratio),
    result.limit?.formula ?? '–',
    formatLimit(c, result.limit),
    share,
    formatTarget(c),
    e.verdict === 'NOT MET' ? `NOT MET (${e.why})` : e.verdict,
  ];
}

/** The whole table. */
export function formatReport(results: readonly CaseResult[]): string {
  return formatTable(TABLE_HEADERS, results.map(formatRow));
}

export const FLOOR_TABLE_HEADERS: Row = ['case', 'PG 15', 'walship', 'bare-Node floor (min–max)', 'floor ÷ PG', 'walship ÷ PG', 'walship % of floor', 'target'];

/**
 * One row of the floor table (cases with a floor only): the three figures' medians, the
 * per-round ratios' medians, and walship's median as a share of the floor's.
 */
export function formatFloorRow(result: CaseResult): Row {
  const e = evaluate(result);
  const c = result.case;
  const floor = spreadOf(result.floor ?? []);
  return [
    labelOf(c),
    formatFigure(c, e.pg.median),
    formatFigure(c, e.walship.median),
    formatSpread(c, floor),
    formatRatio(e.floorRatio),
    formatRatio(e.ratio),
    formatPercent(fractionOfLimit(e.walship.median, floor.median, true)),
    formatTarget(c),
  ];
}

/** The floor table: the rows of the cases measured with a bare-Node floor. */
export function formatFloorReport(results: readonly CaseResult[]): string {
  return formatTable(FLOOR_TABLE_HEADERS, results.filter((r) => r.floor !== undefined && r.floor.length > 0).map(formatFloorRow));
}

/** Counts of the verdicts: how many targets were met and how many not. */
export function tally(results: readonly CaseResult[]): { met: number; notMet: number } {
  let met = 0;
  let notMet = 0;
  for (const r of results) {
    const { verdict } = evaluate(r);
    if (verdict === 'met') met++;
    else if (verdict === 'NOT MET') notMet++;
  }
  return { met, notMet };
}

/** One side's CPU in one round of a commit case (see process-cpu.ts). */
export interface CpuRun {
  readonly usPerCommit: number;
  readonly cores: number;
}

/** What one commit case cost in CPU: each side's runs, one per round. */
export interface CpuResult {
  readonly case: BenchCase;
  readonly pg: readonly CpuRun[];
  readonly walship: readonly CpuRun[];
}

export const CPU_TABLE_HEADERS: Row = ['case', 'PG 15 µs/commit (cores)', 'walship µs/commit (cores)', 'walship ÷ PG'];

/** One row of the CPU table: medians over the rounds; the ratio is walship's CPU per commit over PostgreSQL's (above 1: walship spends more). */
export function formatCpuRow(result: CpuResult): Row {
  const medianOf = (runs: readonly CpuRun[], key: keyof CpuRun): number => median(runs.map((r) => r[key]).filter(Number.isFinite));
  const pg = medianOf(result.pg, 'usPerCommit');
  const walship = medianOf(result.walship, 'usPerCommit');
  const cell = (us: number, runs: readonly CpuRun[]): string => (Number.isFinite(us) ? `${formatInt(us)} (${medianOf(runs, 'cores').toFixed(2)})` : '–');
  return [labelOf(result.case), cell(pg, result.pg), cell(walship, result.walship), formatRatio(walship / pg)];
}

/** The CPU table. */
export function formatCpuReport(results: readonly CpuResult[]): string {
  return formatTable(CPU_TABLE_HEADERS, results.map(formatCpuRow));
}
