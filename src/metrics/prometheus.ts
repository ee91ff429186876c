import { WalshipError } from '../errors.js';
import type { HistogramSnapshot } from '../latency-histogram.js';
import { STANDBY_STATES } from '../roles/recovery.js';
import { SYNCHRONOUS_COMMIT_LEVELS } from '../roles/writer.js';
import type { NodeMetrics, PrimaryMetrics, StandbyMetrics } from './node-metrics.js';

/** The `Content-Type` of {@link formatPrometheus}'s text (Prometheus' text exposition format 0.0.4). */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** One node's metrics and the labels that tell it apart from the others in the same text. */
export interface PrometheusSource {
  /** `primary.metrics()` or `standby.metrics()`. */
  readonly metrics: NodeMetrics;
  /** Labels added to every sample of this node (e.g. `{ node: 'a' }`); names as Prometheus allows, none that walship uses itself. */
  readonly labels?: Readonly<Record<string, string>>;
}

/** The label names walship's own samples carry: a source's `labels` may not reuse them. */
const RESERVED_LABELS: ReadonlySet<string> = new Set(['le', 'level', 'position', 'application_name', 'client_address', 'state', 'sync_state', 'slot_name', 'role', 'system_id', 'mode']);
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const LSN_HELP = 'WAL positions in bytes: insert, written, flushed and applied on a primary; received, flushed and replayed on a standby.';

type Labels = Readonly<Record<string, string>>;
type MetricType = 'counter' | 'gauge' | 'histogram';

interface Family {
  readonly help: string;
  readonly type: MetricType;
  readonly lines: string[];
}

/**
 * Renders node metrics (`primary.metrics()`, `standby.metrics()`) in Prometheus' text
 * exposition format (version 0.0.4, served with {@link PROMETHEUS_CONTENT_TYPE}), so a host
 * serves `/metrics` with no other dependency. Give one node's metrics, or several nodes as
 * {@link PrometheusSource}s with labels that tell them apart; each metric family appears once,
 * with its `# HELP` and `# TYPE` lines. Names follow Prometheus' conventions: a `walship_`
 * prefix, base units in the name (`_seconds`, `_bytes`), `_total` on counters. LSNs are gauges
 * in bytes (an LSN is a byte position), exact up to 2^53. Values that are not known (a lag
 * before the first report) are left out rather than written as 0.
 *
 * `INVALID_ARGUMENT` for a label name Prometheus does not allow, one walship uses itself (`le`,
 * `level`, `position`, `application_name`, `client_address`, `state`, `sync_state`,
 * `slot_name`, `role`, `system_id`, `mode`), or a value that is not a string.
 */
export function formatPrometheus(input: NodeMetrics | readonly PrometheusSource[]): string {
  const sources: readonly PrometheusSource[] = Array.isArray(input) ? input : [{ metrics: input as NodeMetrics }];
  const out = new Exposition();
  for (const source of sources) {
    const labels = checkLabels(source.labels ?? {});
    const m = source.metrics;
    if (m.role === 'primary') primaryFamilies(out, m, labels);
    else standbyFamilies(out, m, labels);
    nodeFamilies(out, m, labels);
  }
  return out.text();
}

function primaryFamilies(out: Exposition, m: PrimaryMetrics, labels: Labels): void {
  for (const level of SYNCHRONOUS_COMMIT_LEVELS) {
    const commits = m.commits[level];
    const l = { ...labels, level };
    out.sample('walship_commits_total', 'counter', 'Commits that resolved, by synchronousCommit level.', l, commits.commits);
    out.sample('walship_commit_errors_total', 'counter', 'Commits that rejected (never appended, dropped, or stopped waiting: ABORTED, SYNC_REP_CANCELED), by level.', l, commits.errors);
    out.histogram('walship_commit_duration_seconds', 'Time from commit() to its resolution, by synchronousCommit level.', l, commits.latency);
  }
  out.sample('walship_lsn_bytes', 'gauge', LSN_HELP, { ...labels, position: 'applied' }, m.appliedLsn);
}

function standbyFamilies(out: Exposition, m: StandbyMetrics, labels: Labels): void {
  for (const state of STANDBY_STATES) {
    out.sample('walship_standby_state', 'gauge', 'The standby state: 1 for the current one, 0 for the others.', { ...labels, state }, m.state === state ? 1 : 0);
  }
  out.sample('walship_standby_consistent', 'gauge', '1 once replay has reached a consistent point.', labels, m.consistent ? 1 : 0);
  out.sample('walship_standby_readable', 'gauge', '1 while the application may serve reads (hot standby, consistent).', labels, m.readable ? 1 : 0);
  out.sample('walship_standby_replay_paused', 'gauge', '1 while replay is paused at its recovery target.', labels, m.replayPaused ? 1 : 0);
  out.optional('walship_lsn_bytes', 'gauge', LSN_HELP, { ...labels, position: 'received' }, m.receivedLsn);
  out.optional('walship_lsn_bytes', 'gauge', LSN_HELP, { ...labels, position: 'flushed' }, m.flushedLsn);
  out.optional('walship_lsn_bytes', 'gauge', LSN_HELP, { ...labels, position: 'replayed' }, m.replayedLsn);
  out.optional('walship_standby_replay_lag_bytes', 'gauge', 'WAL flushed on the standby and not replayed yet.', labels, m.replayLagBytes);
  out.optional('walship_standby_replay_lag_seconds', 'gauge', 'How long ago the last replayed batch was committed, while replay is behind (0 once caught up).', labels, m.replayLagSeconds);
}

function nodeFamilies(out: Exposition, m: NodeMetrics, labels: Labels): void {
  if (m.systemId !== null) out.sample('walship_node_info', 'gauge', 'The node: its role and cluster identity (always 1).', { ...labels, role: m.role, system_id: m.systemId }, 1);
  out.optional('walship_timeline', 'gauge', 'The timeline the node writes or replays.', labels, m.timeline);
  const wal = m.wal;
  if (wal !== null) {
    if (m.role === 'primary') {
      out.sample('walship_lsn_bytes', 'gauge', LSN_HELP, { ...labels, position: 'insert' }, wal.insertLsn);
      out.sample('walship_lsn_bytes', 'gauge', LSN_HELP, { ...labels, position: 'written' }, wal.writtenLsn);
      out.sample('walship_lsn_bytes', 'gauge', LSN_HELP, { ...labels, position: 'flushed' }, wal.flushedLsn);
    }
    out.sample('walship_wal_written_bytes_total', 'counter', 'WAL bytes handed to the OS since the log was opened.', labels, wal.bytesWritten);
    out.sample('walship_wal_writes_total', 'counter', 'WAL write calls since the log was opened.', labels, wal.writes);
    out.sample('walship_wal_syncs_total', 'counter', 'fdatasync calls on WAL segments since the log was opened.', labels, wal.syncs);
    out.sample('walship_wal_sync_seconds_total', 'counter', 'Time spent in fdatasync of WAL segments since the log was opened.', labels, wal.syncSeconds);
  }
  out.sample('walship_replication_standbys', 'gauge', 'Standbys connected to this node.', labels, m.standbys.length);
  for (const s of m.standbys) {
    const who = { ...labels, application_name: s.applicationName };
    out.sample('walship_replication_standby_info', 'gauge', 'A connected standby, its sender state and sync state (always 1).', { ...who, client_address: s.clientAddress ?? '', state: s.state, sync_state: s.syncState }, 1);
    const bytesHelp = "How far a standby's reported position is behind this node's flushed WAL, in bytes.";
    out.optional('walship_replication_lag_bytes', 'gauge', bytesHelp, { ...who, position: 'write' }, s.writeLagBytes);
    out.optional('walship_replication_lag_bytes', 'gauge', bytesHelp, { ...who, position: 'flush' }, s.flushLagBytes);
    out.optional('walship_replication_lag_bytes', 'gauge', bytesHelp, { ...who, position: 'replay' }, s.replayLagBytes);
    const secondsHelp = 'Write, flush and replay lag of a standby (pg_stat_replication): from flushing WAL here to hearing the standby wrote, flushed or applied it.';
    out.optional('walship_replication_lag_seconds', 'gauge', secondsHelp, { ...who, position: 'write' }, s.writeLagSeconds);
    out.optional('walship_replication_lag_seconds', 'gauge', secondsHelp, { ...who, position: 'flush' }, s.flushLagSeconds);
    out.optional('walship_replication_lag_seconds', 'gauge', secondsHelp, { ...who, position: 'replay' }, s.replayLagSeconds);
  }
  for (const slot of m.slots) {
    const l = { ...labels, slot_name: slot.slotName };
    out.sample('walship_slot_active', 'gauge', '1 while a standby streams with the replication slot.', l, slot.active ? 1 : 0);
    out.optional('walship_slot_retained_bytes', 'gauge', "WAL the replication slot holds back: the node's flushed end minus the slot's restart position.", l, slot.retainedBytes);
  }
  const a = m.archiver;
  if (a.mode !== 'off') {
    const l = { ...labels, mode: a.mode };
    out.sample('walship_archiver_archived_total', 'counter', 'WAL files archived since the node started.', l, a.archivedCount);
    out.sample('walship_archiver_failed_total', 'counter', 'Failed attempts to archive a WAL file since the node started.', l, a.failedCount);
    out.sample('walship_archiver_pending_files', 'gauge', 'WAL files waiting to be archived.', l, a.pendingCount);
    out.optional('walship_archiver_last_archived_timestamp_seconds', 'gauge', 'When the last WAL file was archived (seconds since the epoch).', l, a.lastArchivedTime);
    out.optional('walship_archiver_last_failed_timestamp_seconds', 'gauge', 'When archiving last failed (seconds since the epoch).', l, a.lastFailedTime);
  }
}

/** The text being built: families in the order they first appear, each with its samples. */
class Exposition {
  readonly #families = new Map<string, Family>();

  sample(name: string, type: MetricType, help: string, labels: Labels, value: number): void {
    this.#family(name, type, help).lines.push(`${name}${formatLabels(labels)} ${formatValue(value)}`);
  }

  /** A sample, left out when its value is not known. */
  optional(name: string, type: MetricType, help: string, labels: Labels, value: number | null): void {
    if (value !== null) this.sample(name, type, help, labels, value);
  }

  histogram(name: string, help: string, labels: Labels, h: HistogramSnapshot): void {
    const family = this.#family(name, 'histogram', help);
    for (const bucket of h.buckets) family.lines.push(`${name}_bucket${formatLabels({ ...labels, le: formatValue(bucket.le) })} ${formatValue(bucket.count)}`);
    family.lines.push(`${name}_sum${formatLabels(labels)} ${formatValue(h.sum)}`);
    family.lines.push(`${name}_count${formatLabels(labels)} ${formatValue(h.count)}`);
  }

  text(): string {
    let text = '';
    for (const [name, family] of this.#families) {
      if (family.lines.length === 0) continue;
      text += `# HELP ${name} ${escapeHelp(family.help)}\n# TYPE ${name} ${family.type}\n${family.lines.join('\n')}\n`;
    }
    return text;
  }

  #family(name: string, type: MetricType, help: string): Family {
    let family = this.#families.get(name);
    if (family === undefined) {
      family = { help, type, lines: [] };
      this.#families.set(name, family);
    }
    return family;
  }
}

function checkLabels(labels: Labels): Labels {
  if (typeof labels !== 'object' || labels === null) throw new WalshipError('INVALID_ARGUMENT', 'formatPrometheus: labels must be an object of strings');
  for (const [name, value] of Object.entries(labels)) {
    if (!LABEL_NAME.test(name) || name.startsWith('__')) throw new WalshipError('INVALID_ARGUMENT', `formatPrometheus: "${name}" is not a valid Prometheus label name`);
    if (RESERVED_LABELS.has(name)) throw new WalshipError('INVALID_ARGUMENT', `formatPrometheus: the label "${name}" is walship's own; choose another name`);
    if (typeof value !== 'string') throw new WalshipError('INVALID_ARGUMENT', `formatPrometheus: the value of label "${name}" must be a string`);
  }
  return labels;
}

function formatLabels(labels: Labels): string {
  const pairs = Object.entries(labels);
  if (pairs.length === 0) return '';
  return `{${pairs.map(([name, value]) => `${name}="${escapeLabelValue(value)}"`).join(',')}}`;
}

/** Label values escape backslash, double quote and line feed (the exposition format's rules). */
function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and line feed. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  if (Number.isNaN(value)) return 'NaN';
  return String(value);
}
