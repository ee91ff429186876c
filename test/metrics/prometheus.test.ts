import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import parsePrometheusTextFormat, { type ParsedFamily } from 'parse-prometheus-text-format';
import { formatPrometheus, isWalshipError, PROMETHEUS_CONTENT_TYPE, type PrimaryMetrics } from '../../src/index.js';
import { createCluster, MemoryArchive } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { eventually } from '../helpers/primary-helpers.js';
import { HANG_MS } from '../helpers/standby-harness.js';
import { payload } from '../helpers/wal.js';

// formatPrometheus: the text is read back by the Prometheus text-format parser on npm
// (parse-prometheus-text-format, the only one there), and checked line by line against the
// format's grammar and histogram rules, which that parser does not enforce: it accepts a
// malformed label or value without complaint, and keeps only the buckets of a histogram with
// several labelled series (their labels, _sum and _count are lost).

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/y;
const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$/;

/** The sample lines of the text exposition format 0.0.4: `name{label="value",…} value`. */
function parseSampleLine(line: string): { name: string; labels: Map<string, string>; value: string } {
  const brace = line.indexOf('{');
  const space = line.indexOf(' ');
  const name = brace >= 0 && brace < space ? line.slice(0, brace) : line.slice(0, space);
  assert.match(name, METRIC_NAME, `a metric name: ${line}`);
  const labels = new Map<string, string>();
  let at = name.length;
  if (line[at] === '{') {
    at++;
    while (line[at] !== '}') {
      LABEL.lastIndex = at;
      const m = LABEL.exec(line);
      assert.ok(m !== null, `a label at column ${at}: ${line}`);
      const [, label, value] = m as unknown as [string, string, string];
      assert.ok(!labels.has(label), `label ${label} once: ${line}`);
      labels.set(label, value);
      at = LABEL.lastIndex;
      if (line[at] === ',') at++;
      else assert.equal(line[at], '}', `a comma or the closing brace: ${line}`);
    }
    at++;
  }
  assert.equal(line[at], ' ', `one space before the value: ${line}`);
  const value = line.slice(at + 1);
  assert.match(value, VALUE, `a float value (no timestamp): ${line}`);
  return { name, labels, value };
}

/** Checks the text's grammar and structure as Prometheus' parser does; returns the families parsed by the npm parser. */
function checkExposition(text: string): ParsedFamily[] {
  assert.ok(text.endsWith('\n'), 'the text ends with a line feed');
  const helped = new Set<string>();
  const typed = new Map<string, string>();
  let family: string | null = null;
  const finished = new Set<string>();
  const histograms = new Map<string, { le: number[]; counts: number[]; count: number | null }>();
  for (const line of text.slice(0, -1).split('\n')) {
    assert.notEqual(line, '', 'no empty lines');
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      assert.match(name, METRIC_NAME);
      if (family !== name) {
        if (family !== null) finished.add(family);
        assert.ok(!finished.has(name), `${name}'s lines are together`);
        family = name;
      }
      if (kind === 'HELP') {
        assert.ok(!helped.has(name), `one HELP for ${name}`);
        helped.add(name);
      } else {
        assert.ok(!typed.has(name), `one TYPE for ${name}`);
        assert.ok(['counter', 'gauge', 'histogram'].includes(rest), `a known type for ${name}: ${rest}`);
        typed.set(name, rest);
      }
      continue;
    }
    assert.ok(!line.startsWith('#'), `no other comments: ${line}`);
    const sample = parseSampleLine(line);
    assert.ok(family !== null, `a TYPE line before ${line}`);
    const type = typed.get(family);
    assert.ok(helped.has(family) && type !== undefined, `HELP and TYPE before the samples of ${family}`);
    if (type === 'histogram') {
      const suffix = sample.name.slice(family.length);
      assert.ok(sample.name.startsWith(family) && ['_bucket', '_sum', '_count'].includes(suffix), `${sample.name} belongs to histogram ${family}`);
      const series = [...sample.labels].filter(([k]) => k !== 'le').map(([k, v]) => `${k}=${v}`).join(',');
      const key = `${family}{${series}}`;
      let h = histograms.get(key);
      if (h === undefined) histograms.set(key, (h = { le: [], counts: [], count: null }));
      if (suffix === '_bucket') {
        const le = sample.labels.get('le');
        assert.ok(le !== undefined, `a bucket has le: ${line}`);
        h.le.push(le === '+Inf' ? Infinity : Number(le));
        h.counts.push(Number(sample.value));
      } else if (suffix === '_count') h.count = Number(sample.value);
    } else {
      assert.equal(sample.name, family, `a ${type} sample is named as its family: ${line}`);
      if (type === 'counter') assert.ok(Number(sample.value) >= 0, `a counter is not negative: ${line}`);
    }
  }
  for (const [key, h] of histograms) {
    assert.equal(h.le.at(-1), Infinity, `${key} ends with +Inf`);
    for (let i = 1; i < h.le.length; i++) {
      assert.ok((h.le[i] as number) > (h.le[i - 1] as number), `${key}: le increases`);
      assert.ok((h.counts[i] as number) >= (h.counts[i - 1] as number), `${key}: cumulative counts`);
    }
    assert.equal(h.count, h.counts.at(-1), `${key}: _count is the +Inf bucket`);
  }
  const families = parsePrometheusTextFormat(text);
  const names = families.map((f) => f.name);
  assert.deepEqual(names, [...new Set(names)], 'the npm parser sees each family once');
  for (const f of families) assert.notEqual(f.type, 'UNTYPED', `${f.name} has its type`);
  return families;
}

function familyOf(families: readonly ParsedFamily[], name: string): ParsedFamily {
  const family = families.find((f) => f.name === name);
  assert.ok(family !== undefined, `family ${name}`);
  return family;
}

function valueOf(families: readonly ParsedFamily[], name: string, labels: Record<string, string>): number {
  const sample = familyOf(families, name).metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  assert.ok(sample?.value !== undefined, `${name} ${JSON.stringify(labels)}`);
  return Number(sample.value);
}

describe('formatPrometheus', () => {
  it("renders a primary's and a standby's metrics as valid exposition text with the right numbers", async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), synchronousStandbyNames: 's1', archive: { mode: 'on', archiver: new MemoryArchive() } });
    await primary.createSlot('s1', { reserveWal: true });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), connection: { slotName: 's1' } });
    const n = 7;
    let lsn = 0;
    for (let i = 0; i < n; i++) lsn = (await primary.commit(payload(i, 500), { synchronousCommit: 'on' })).lsn;
    await primary.commit(payload(99, 10), { synchronousCommit: 'off' });
    await standby.waitForReplay(lsn, { timeoutMs: HANG_MS });
    await eventually(() => primary.metrics().standbys[0]?.replayLagBytes !== null, HANG_MS, 's1 to report');

    const text = formatPrometheus(primary.metrics());
    const families = checkExposition(text);
    assert.equal(valueOf(families, 'walship_commits_total', { level: 'on' }), n);
    assert.equal(valueOf(families, 'walship_commits_total', { level: 'off' }), 1);
    assert.equal(valueOf(families, 'walship_commits_total', { level: 'remote_apply' }), 0);
    assert.equal(valueOf(families, 'walship_commit_errors_total', { level: 'on' }), 0);
    assert.equal(familyOf(families, 'walship_commit_duration_seconds').type, 'HISTOGRAM');
    // Read from the text: the npm parser loses the labels, count and sum of a histogram with several series.
    assert.match(text, new RegExp(`^walship_commit_duration_seconds_count\\{level="on"\\} ${n}$`, 'm'), 'the histogram counts every commit at on');
    assert.match(text, new RegExp(`^walship_commit_duration_seconds_bucket\\{level="on",le="\\+Inf"\\} ${n}$`, 'm'));
    assert.equal(familyOf(families, 'walship_commits_total').type, 'COUNTER');
    assert.equal(valueOf(families, 'walship_lsn_bytes', { position: 'flushed' }), primary.flushLsn);
    assert.equal(valueOf(families, 'walship_replication_standbys', {}), 1);
    assert.equal(valueOf(families, 'walship_replication_standby_info', { application_name: 's1', sync_state: 'sync' }), 1);
    assert.ok(valueOf(families, 'walship_replication_lag_bytes', { application_name: 's1', position: 'replay' }) >= 0, 'replay lag in bytes');
    assert.ok(valueOf(families, 'walship_slot_retained_bytes', { slot_name: 's1' }) >= 0, 'the slot');
    assert.equal(valueOf(families, 'walship_slot_active', { slot_name: 's1' }), 1);
    assert.ok(valueOf(families, 'walship_wal_written_bytes_total', {}) > n * 500, 'WAL bytes');
    assert.ok(valueOf(families, 'walship_wal_syncs_total', {}) > 0, 'fdatasyncs');
    assert.equal(valueOf(families, 'walship_node_info', { role: 'primary', system_id: primary.systemId }), 1);
    assert.equal(valueOf(families, 'walship_archiver_archived_total', { mode: 'on' }), primary.archiverStatus().archivedCount);

    const standbyFamilies = checkExposition(formatPrometheus(standby.metrics()));
    assert.equal(valueOf(standbyFamilies, 'walship_standby_state', { state: 'streaming' }), 1);
    assert.equal(valueOf(standbyFamilies, 'walship_standby_state', { state: 'disconnected' }), 0);
    assert.ok(valueOf(standbyFamilies, 'walship_lsn_bytes', { position: 'replayed' }) >= lsn);
    assert.equal(valueOf(standbyFamilies, 'walship_timeline', {}), 1);
    assert.equal(valueOf(standbyFamilies, 'walship_standby_readable', {}), 1);
  });

  it('renders several nodes with their labels, each family once', async (t) => {
    const cluster = createCluster(t);
    const a = await cluster.primary('a', { application: new RecordingApp(), listen: false });
    const b = await cluster.primary('b', { application: new RecordingApp(), listen: false });
    await a.commit(payload(1, 10));
    await a.commit(payload(2, 10));
    await b.commit(payload(3, 10));
    const text = formatPrometheus([
      { metrics: a.metrics(), labels: { node: 'a' } },
      { metrics: b.metrics(), labels: { node: 'b' } },
    ]);
    const families = checkExposition(text);
    assert.equal(valueOf(families, 'walship_commits_total', { node: 'a', level: 'on' }), 2);
    assert.equal(valueOf(families, 'walship_commits_total', { node: 'b', level: 'on' }), 1);
    assert.equal(text.match(/^# TYPE walship_commits_total /gm)?.length, 1, 'one TYPE line for both nodes');
  });

  it('escapes label values so that they read back as given', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    const odd = 'a "quoted" \\ back\\slash\nand a new line';
    const families = checkExposition(formatPrometheus([{ metrics: primary.metrics(), labels: { instance: odd } }]));
    const sample = familyOf(families, 'walship_commits_total').metrics[0];
    // The npm parser keeps escapes as written; undo them as Prometheus does.
    const read = sample?.labels?.['instance']?.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
    assert.equal(read, odd);
  });

  it('refuses labels Prometheus does not allow and labels walship uses', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    const metrics: PrimaryMetrics = primary.metrics();
    for (const labels of [{ '1node': 'x' }, { 'no-dash': 'x' }, { __reserved: 'x' }, { level: 'x' }, { le: 'x' }, { node: 1 as unknown as string }]) {
      assert.throws(() => formatPrometheus([{ metrics, labels }]), (err) => isWalshipError(err, 'INVALID_ARGUMENT'), JSON.stringify(labels));
    }
  });

  it('the checks above refuse malformed text (they can fail)', () => {
    const ok = '# HELP a_total x\n# TYPE a_total counter\na_total{level="on"} 1\n';
    checkExposition(ok);
    const broken = [
      'a_total{level="on} 1\n',
      '# HELP a_total x\n# TYPE a_total counter\na_total{level="on"} one\n',
      '# HELP a_total x\n# TYPE a_total counter\na_total 1\n# HELP b x\n# TYPE b gauge\nb 1\n# HELP a_total x\n# TYPE a_total counter\na_total 2\n',
      '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1\nh_count 2\n',
      '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      '# HELP a_total x\n# TYPE a_total counter\na_total{x="1",x="2"} 1\n',
    ];
    for (const text of broken) assert.throws(() => checkExposition(text), assert.AssertionError, JSON.stringify(text));
  });

  it('names the content type of the text format', () => {
    assert.equal(PROMETHEUS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
  });
});
