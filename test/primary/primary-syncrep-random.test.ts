import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError, Primary, type CommitResult, type Lsn, type SynchronousCommit } from '../../src/index.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import { MemoryNetwork, MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { mulberry32 } from '../helpers/random.js';
import { within } from '../helpers/wal.js';
import { TRUST_REPL, rawStandby, report } from '../helpers/primary-helpers.js';

// Synchronous replication (#6), as a seeded property: hand-driven standbys report every
// position themselves, connect, stall, leave and come back, the names change under them, and
// commits at every level come from several committers at once. A model in this file (a plain
// re-implementation of PostgreSQL's choice of synchronous standbys) says, after every change,
// which commits could be released; no commit may resolve before the model says it could
// (safety), and once every standby has reported everything, none may stay waiting (liveness).
//
// The model follows the primary exactly where the primary tells us (its `standby:connected`,
// `sender:state` and `standby:disconnected` events are emitted synchronously with its own
// change, before any released commit's callback runs); a status report is in flight from the
// moment it is sent until `replicationStatus()` shows it, and while it is, both the old and the
// new positions count as possible. Each connection has its own client address, so events name
// it even when two standbys share an application name.

const SEED = Number(process.env.SYNCREP_SEED ?? 0x5eed);
const SCENARIOS = Number(process.env.SYNCREP_SCENARIOS ?? 40);
const POOL = ['s1', 's2', 's3', 's4'] as const;
type Mode = 'write' | 'flush' | 'apply';
const MODE_OF: Readonly<Record<SynchronousCommit, Mode | null>> = { off: null, local: null, remote_write: 'write', on: 'flush', remote_apply: 'apply' };
/** A hang guard, not a timing target. */
const HANG_MS = 10_000;

interface Positions {
  readonly write: Lsn;
  readonly flush: Lsn;
  readonly apply: Lsn;
}
const NONE: Positions = Object.freeze({ write: 0, flush: 0, apply: 0 });

/** The model's synchronousStandbyNames: `null` is off. */
type Names = { readonly method: 'first' | 'any'; readonly num: number; readonly names: readonly string[]; readonly text: string } | null;

/** One physical standby: its WAL survives its connections. */
interface StandbyModel {
  readonly n: number;
  readonly name: string;
  /** Ends of the WAL messages it received (any of them is a place to resume from). */
  readonly boundaries: Lsn[];
  received: Lsn;
  conn: ConnModel | null;
}

/** One replication connection, as the test drives it and as the primary's events show it. */
interface ConnModel {
  readonly id: number;
  readonly ip: string;
  readonly standby: StandbyModel;
  /** Set once connected (the primary may announce the connection before the client sees it). */
  stream: MessageStream<'client'> | null;
  readonly startLsn: Lsn;
  received: Lsn;
  started: boolean;
  /** Its link is limited to a few kB/s (the sender stays in 'catchup' while it has a backlog). */
  slow: boolean;
  /** The test ended this connection (the primary may not know yet). */
  closed: boolean;
  /** Positions the primary has shown it processed. */
  reported: Positions;
  /** A report sent but not yet seen processed. */
  pending: Positions | null;
  // The primary's view, from its events:
  present: boolean;
  gone: boolean;
  index: number;
  state: string;
  problem: string | null;
}

interface SnapshotConn {
  readonly id: number;
  readonly name: string;
  readonly index: number;
  readonly state: string;
  readonly variants: readonly Positions[];
}

interface Snapshot {
  readonly names: Names;
  readonly conns: readonly SnapshotConn[];
  readonly step: number;
}

interface CommitRecord {
  readonly id: number;
  readonly level: SynchronousCommit;
  readonly issuedAt: number;
  readonly step: number;
  readonly timeoutMs: number | undefined;
  outcome: 'pending' | 'resolved' | 'canceled' | 'failed';
  /** Its end, known as soon as commit() returns: the batch is appended synchronously. */
  readonly lsn: Lsn;
  readonly settled: Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// The model: PostgreSQL's SyncRepGetCandidateStandbys / SyncRepGetSyncRecPtr, written plainly.

function priorityOf(names: Names, applicationName: string): number {
  if (names === null) return 0;
  const i = names.names.findIndex((n) => n === '*' || n.toLowerCase() === applicationName.toLowerCase());
  if (i === -1) return 0;
  return names.method === 'first' ? i + 1 : 1;
}

interface Candidate {
  readonly id: number;
  readonly priority: number;
  readonly index: number;
  readonly pos: Positions;
}

function candidates(names: Names, conns: readonly { id: number; name: string; index: number; state: string; pos: Positions }[]): Candidate[] {
  return conns
    .filter((c) => (c.state === 'streaming' || c.state === 'stopping') && c.pos.flush !== 0 && priorityOf(names, c.name) > 0)
    .map((c) => ({ id: c.id, priority: priorityOf(names, c.name), index: c.index, pos: c.pos }))
    .sort((a, b) => a.priority - b.priority || a.index - b.index);
}

/** Whether a commit ending at `x` may be released in `mode` with exactly these positions. */
function releasable(names: Names, conns: readonly { id: number; name: string; index: number; state: string; pos: Positions }[], mode: Mode, x: Lsn): boolean {
  if (names === null) return true;
  const cands = candidates(names, conns);
  if (cands.length < names.num) return false;
  if (names.method === 'first') return cands.slice(0, names.num).every((c) => c.pos[mode] >= x);
  return cands.filter((c) => c.pos[mode] >= x).length >= names.num;
}

/** Whether any of the states a snapshot allows (each in-flight report processed or not) releases it. */
function satisfiedAt(snap: Snapshot, mode: Mode, x: Lsn): boolean {
  if (snap.names === null) return true;
  const choose = (i: number, chosen: { id: number; name: string; index: number; state: string; pos: Positions }[]): boolean => {
    const conn = snap.conns[i];
    if (conn === undefined) return releasable(snap.names, chosen, mode, x);
    return conn.variants.some((pos) => choose(i + 1, [...chosen, { id: conn.id, name: conn.name, index: conn.index, state: conn.state, pos }]));
  };
  return choose(0, []);
}

/** `sync_priority` / `sync_state` per connection id, for a state without reports in flight. */
function expectedStates(names: Names, conns: readonly ConnModel[]): Map<number, { syncPriority: number; syncState: string }> {
  const views = conns.map((c) => ({ id: c.id, name: c.standby.name, index: c.index, state: c.state, pos: c.reported }));
  const cands = names === null ? [] : candidates(names, views);
  const chosen = new Set((names !== null && names.method === 'first' ? cands.slice(0, names.num) : cands).map((c) => c.id));
  const label = names?.method === 'any' ? 'quorum' : 'sync';
  const out = new Map<number, { syncPriority: number; syncState: string }>();
  for (const v of views) {
    const syncPriority = v.pos.flush !== 0 ? priorityOf(names, v.name) : 0;
    out.set(v.id, { syncPriority, syncState: syncPriority === 0 ? 'async' : chosen.has(v.id) ? label : 'potential' });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Random choices.

type Random = () => number;
const int = (rand: Random, lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
function pick<T>(rand: Random, items: readonly T[]): T {
  assert.ok(items.length > 0, 'pick from an empty list');
  return items[Math.floor(rand() * items.length)] as T;
}
function shuffled<T>(rand: Random, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** A random synchronousStandbyNames among every form, with its model. */
function randomNames(rand: Random, allowOff: boolean): { text: string; names: Names } {
  const listed: string[] = shuffled(rand, POOL).slice(0, int(rand, 1, 4));
  if (rand() < 0.1) listed.splice(int(rand, 0, listed.length), 0, '*');
  const r = rand();
  if (allowOff && r < 0.08) return { text: pick(rand, ['', '  ']), names: null };
  if (r < 0.15) return { text: '*', names: { method: 'first', num: 1, names: ['*'], text: '*' } };
  if (r < 0.3) {
    const text = listed.join(', ');
    return { text, names: { method: 'first', num: 1, names: listed, text } };
  }
  // Mostly satisfiable, sometimes asking for more standbys than are listed.
  const num = rand() < 0.1 ? listed.length + 1 : int(rand, 1, Math.min(listed.length, 3));
  const list = `(${listed.join(', ')})`;
  if (r < 0.42) return { text: `${num} ${list}`, names: { method: 'first', num, names: listed, text: `${num} ${list}` } };
  const method = r < 0.7 ? 'first' : 'any';
  const keyword = method === 'first' ? pick(rand, ['FIRST', 'first']) : pick(rand, ['ANY', 'any']);
  const text = `${keyword} ${num} ${list}`;
  return { text, names: { method, num, names: listed, text } };
}

function randomLevel(rand: Random): SynchronousCommit {
  const r = rand();
  return r < 0.1 ? 'off' : r < 0.2 ? 'local' : r < 0.45 ? 'remote_write' : r < 0.75 ? 'on' : 'remote_apply';
}

// ---------------------------------------------------------------------------------------------
// One scenario.

let nextConnId = 1;
/** What the scenarios exercised, printed with SYNCREP_STATS=1. */
const STATS: Record<string, number> = {};
const count = (what: string): void => void (STATS[what] = (STATS[what] ?? 0) + 1);

class Scenario {
  readonly rand: Random;
  readonly trace: string[] = [];
  readonly violations: string[] = [];
  readonly snapshots: Snapshot[] = [];
  readonly commits: CommitRecord[] = [];
  readonly conns = new Map<string, ConnModel>();
  readonly standbys: StandbyModel[] = [];
  names: Names = null;
  defaultLevel: SynchronousCommit = 'on';
  step = 0;
  walStart: Lsn = 0;
  primary!: Primary;
  readonly timers: NodeJS.Timeout[] = [];
  /** The standbys the last `sync:standbys` event named. */
  syncEvent: readonly string[] = [];

  constructor(
    readonly seed: number,
    readonly net: MemoryNetwork,
  ) {
    this.rand = mulberry32(seed);
  }

  log(line: string): void {
    this.trace.push(`#${this.step} ${line}`);
  }

  violation(what: string): void {
    this.violations.push(`${what}\n  seed ${this.seed}; steps so far:\n    ${this.trace.join('\n    ')}`);
  }

  /** Records the current state as the model sees it (after every change). */
  snapshot(): void {
    const conns = [...this.conns.values()]
      .filter((c) => c.present)
      .map((c) => ({
        id: c.id,
        name: c.standby.name,
        index: c.index,
        state: c.state,
        variants: c.pending === null ? [c.reported] : [c.reported, c.pending],
      }));
    this.snapshots.push({ names: this.names, conns, step: this.step });
  }

  async open(names: { text: string; names: Names }, level: SynchronousCommit): Promise<void> {
    this.names = names.names;
    this.defaultLevel = level;
    this.primary = await Primary.open({
      storage: new MemoryStorage(),
      application: new RecordingApp(),
      segmentSize: 64 * 1024,
      // Small messages and small network buffers: a standby on a slow link stays in 'catchup'.
      maxWalMessageBytes: 4096,
      synchronousStandbyNames: names.text,
      synchronousCommit: level,
      listen: { transport: this.net.transport('primary'), address: 'primary:0' },
      auth: TRUST_REPL,
    });
    this.walStart = this.primary.flushLsn;
    this.log(`open synchronousStandbyNames=${JSON.stringify(names.text)} synchronousCommit=${level}`);
    const byIp = (ip: string | null): ConnModel | undefined => (ip === null ? undefined : this.conns.get(ip));
    this.primary.on('standby:connected', ({ clientAddress }) => {
      const c = byIp(clientAddress);
      if (c === undefined) return this.violation(`standby:connected for an unknown address ${String(clientAddress)}`);
      const taken = new Set([...this.conns.values()].filter((o) => o.present).map((o) => o.index));
      let index = 0;
      while (taken.has(index)) index++;
      c.index = index;
      c.present = true;
      c.state = 'startup';
      this.snapshot();
    });
    this.primary.on('sender:state', ({ clientAddress, state }) => {
      const c = byIp(clientAddress);
      if (c === undefined) return this.violation(`sender:state for an unknown address ${String(clientAddress)}`);
      c.state = state;
      this.snapshot();
    });
    this.primary.on('sync:standbys', ({ standbys }) => (this.syncEvent = [...standbys]));
    this.primary.on('standby:disconnected', ({ clientAddress }) => {
      const c = byIp(clientAddress);
      if (c === undefined) return this.violation(`standby:disconnected for an unknown address ${String(clientAddress)}`);
      c.present = false;
      c.gone = true;
      this.snapshot();
    });
    this.snapshot();
  }

  addStandby(named?: string): StandbyModel {
    const base = pick(this.rand, POOL);
    // Names match ignoring ASCII case, as in PostgreSQL.
    const name = named ?? (this.rand() < 0.15 ? base.toUpperCase() : base);
    const standby: StandbyModel = { n: this.standbys.length, name, boundaries: [], received: 0, conn: null };
    this.standbys.push(standby);
    return standby;
  }

  /** Connects `standby` and starts streaming from a place it had received (or the WAL's start). */
  async connect(standby: StandbyModel, maySlow = true): Promise<ConnModel> {
    const id = nextConnId++;
    const ip = `10.${(id >> 16) & 255}.${(id >> 8) & 255}.${id & 255}`;
    const from =
      standby.boundaries.length === 0 || this.rand() < 0.3
        ? this.rand() < 0.7 ? this.walStart : Math.max(this.walStart, Math.min(standby.received, this.primary.flushLsn))
        : pick(this.rand, [...standby.boundaries.slice(-6), standby.received]);
    this.log(`connect standby ${standby.n} (${standby.name}) as conn ${id} from ${from}`);
    const c: ConnModel = {
      id,
      ip,
      standby,
      stream: null,
      startLsn: from,
      received: from,
      started: false,
      slow: false,
      closed: false,
      reported: NONE,
      pending: null,
      present: false,
      gone: false,
      index: -1,
      state: 'startup',
      problem: null,
    };
    this.conns.set(ip, c);
    standby.conn = c;
    if (maySlow && this.rand() < 0.3) {
      c.slow = true;
      const bps = int(this.rand, 20, 80) * 1000;
      this.log(`conn ${id}'s link is slow from the start: ${bps} B/s`);
      this.net.bandwidth(bps, `c${id}`);
    }
    const stream = await rawStandby(this.net.transport(`c${id}`, { ip }), this.primary.address as string, standby.name);
    c.stream = stream;
    stream.send({ kind: 'startReplication', slotName: '', startLsn: from, timeline: this.primary.timeline, checkFrom: null, checkCrc: 0 });
    void this.drain(c);
    return c;
  }

  /** Reads everything the primary sends, so that its sender never stalls on backpressure. */
  async drain(c: ConnModel): Promise<void> {
    try {
      for (;;) {
        const message = await (c.stream as MessageStream<'client'>).next();
        if (message === null) return;
        if (message.kind === 'replicationStarted') {
          if (message.startLsn !== c.startLsn) c.problem = `replicationStarted at ${message.startLsn}, asked ${c.startLsn}`;
          c.started = true;
        } else if (message.kind === 'walData') {
          if (message.startLsn !== c.received) {
            c.problem = `conn ${c.id}: WAL data at ${message.startLsn}, expected ${c.received}`;
            return;
          }
          c.received += message.data.length;
          const s = c.standby;
          if (s.conn === c && c.received > s.received) {
            s.received = c.received;
            s.boundaries.push(c.received);
          }
        } else if (message.kind === 'error') {
          if (!c.closed) c.problem = `conn ${c.id}: error ${message.code}: ${message.message}`;
          return;
        }
      }
    } catch (err) {
      if (!c.closed) c.problem = `conn ${c.id}: ${String(err)}`;
    }
  }

  /** Ends a connection from the standby's side, one of three ways. */
  disconnect(c: ConnModel): void {
    const how = pick(this.rand, ['terminate', 'destroy', 'reset'] as const);
    this.log(`disconnect conn ${c.id} (${how})`);
    c.closed = true;
    c.standby.conn = null;
    const stream = c.stream as MessageStream<'client'>;
    if (how === 'terminate') {
      stream.send({ kind: 'terminate' });
      void stream.end().catch(() => undefined);
    } else if (how === 'destroy') {
      stream.destroy();
    } else {
      this.net.reset(`c${c.id}`);
    }
  }

  /** New positions for `c`: monotonic, each at most what it received, often right at a batch's end or one byte short of it. */
  newPositions(c: ConnModel): Positions | null {
    const old = c.pending ?? c.reported;
    const marks = [...c.standby.boundaries, c.received].filter((b) => b <= c.received);
    const choose = (was: Lsn, allowZero: boolean): Lsn => {
      if (this.rand() < 0.25 || (allowZero && was === 0 && this.rand() < 0.1)) return was;
      const r = this.rand();
      let v: number;
      if (r < 0.35) v = c.received;
      else if (r < 0.75 && marks.length > 0) v = pick(this.rand, marks) + pick(this.rand, [-1, 0, 0, 1]);
      else v = int(this.rand, Math.max(was, this.walStart), c.received);
      return Math.min(c.received, Math.max(was, v));
    };
    const next = { write: choose(old.write, false), flush: choose(old.flush, true), apply: choose(old.apply, false) };
    if (next.write === old.write && next.flush === old.flush && next.apply === old.apply) return null;
    if (next.write === 0 && next.flush === 0 && next.apply === 0) return null;
    return next;
  }

  /** Sends a report and waits until the primary shows it processed (or the connection is gone). */
  async report(c: ConnModel, pos: Positions): Promise<void> {
    this.log(`conn ${c.id} reports write=${pos.write} flush=${pos.flush} apply=${pos.apply} (received ${c.received})`);
    c.pending = pos;
    this.snapshot();
    report(c.stream as MessageStream<'client'>, pos.write, pos.flush, pos.apply);
    const seen = (): boolean => {
      if (!c.present) return true;
      const row = this.primary.replicationStatus().find((r) => r.clientAddress === c.ip);
      return row !== undefined && row.writeLsn === pos.write && row.flushLsn === pos.flush && row.replayLsn === pos.apply;
    };
    await until(() => seen() || c.gone, `the primary to process conn ${c.id}'s report (seed ${this.seed})`);
    c.reported = pos;
    c.pending = null;
    this.snapshot();
  }

  /** Compares `replicationStatus()`'s sync columns with the model's (no report in flight). */
  checkStates(): void {
    const present = [...this.conns.values()].filter((c) => c.present);
    const expected = expectedStates(this.names, present);
    const rows = this.primary.replicationStatus();
    const rowIps = rows.map((r) => r.clientAddress).sort();
    const modelIps = present.map((c) => c.ip).sort();
    if (JSON.stringify(rowIps) !== JSON.stringify(modelIps)) {
      return this.violation(`replicationStatus() lists ${rowIps.join(', ')} but the events say ${modelIps.join(', ')} are connected`);
    }
    const chosen = present
      .filter((c) => ['sync', 'quorum'].includes(expected.get(c.id)?.syncState ?? ''))
      .sort((a, b) => a.index - b.index)
      .map((c) => c.standby.name);
    if (JSON.stringify(chosen) !== JSON.stringify(this.syncEvent)) {
      this.violation(`the last sync:standbys event named ${JSON.stringify(this.syncEvent)}, the model's synchronous standbys are ${JSON.stringify(chosen)}`);
    }
    for (const row of rows) {
      const c = this.conns.get(row.clientAddress as string) as ConnModel;
      count(`state checked: ${c.state} ${row.syncState}`);
      const want = expected.get(c.id);
      if (want === undefined || row.syncPriority !== want.syncPriority || row.syncState !== want.syncState) {
        this.violation(
          `conn ${c.id} (${c.standby.name}, index ${c.index}, ${c.state}, flush ${c.reported.flush}): replicationStatus() says ` +
            `priority ${row.syncPriority} ${row.syncState}, the model ${want?.syncPriority} ${want?.syncState} under ${JSON.stringify(this.names?.text ?? '')}`,
        );
      }
    }
  }

  /** Issues one commit (not awaited) and records its outcome against the model. */
  commit(choice: SynchronousCommit | 'random' | 'default'): CommitRecord {
    const id = this.commits.length;
    const explicit = choice !== 'default';
    const level = choice === 'default' ? this.defaultLevel : choice === 'random' ? randomLevel(this.rand) : choice;
    const remote = MODE_OF[level] !== null;
    const timeoutMs = remote && this.rand() < 0.05 ? int(this.rand, 5, 80) : undefined;
    // A few are abandoned by their caller after a while (an AbortSignal), or time out.
    let signal: AbortSignal | undefined;
    if (remote && timeoutMs === undefined && this.rand() < 0.04) {
      const controller = new AbortController();
      const ms = int(this.rand, 1, 60);
      this.timers.push(setTimeout(() => controller.abort(), ms));
      signal = controller.signal;
    }
    const data = Buffer.alloc(this.rand() < 0.7 ? int(this.rand, 16, 600) : int(this.rand, 600, 4000), id & 0xff);
    const options = {
      ...(explicit ? { synchronousCommit: level } : {}),
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(signal === undefined ? {} : { signal }),
    };
    const issuedAt = this.snapshots.length - 1;
    this.log(`commit ${id} at ${level}${explicit ? '' : ' (default)'}${timeoutMs === undefined ? '' : ` timeoutMs=${timeoutMs}`}${signal === undefined ? '' : ' with a signal'}`);
    const promise = this.primary.commit(data, options);
    const record: CommitRecord = {
      id,
      level,
      issuedAt,
      step: this.step,
      timeoutMs,
      outcome: 'pending',
      lsn: this.primary.currentLsn,
      settled: promise.then(
        (result) => this.resolved(record, result),
        (err: unknown) => {
          // Canceled while it waited for standbys; a signal may also end the wait for the local flush.
          if ((timeoutMs !== undefined || signal !== undefined) && isWalshipError(err, 'SYNC_REP_CANCELED')) {
            count(timeoutMs === undefined ? 'canceled by a signal' : 'canceled by timeoutMs');
            record.outcome = 'canceled';
            return;
          }
          if (signal !== undefined && isWalshipError(err, 'ABORTED')) {
            count('aborted before the local flush');
            record.outcome = 'canceled';
            return;
          }
          record.outcome = 'failed';
          this.violation(`commit ${id} at ${level} failed: ${String(err)}`);
        },
      ),
    };
    this.commits.push(record);
    return record;
  }

  resolved(record: CommitRecord, result: CommitResult): void {
    record.outcome = 'resolved';
    if (result.lsn !== record.lsn) this.violation(`commit ${record.id} resolved with lsn ${result.lsn}, but the WAL's insert position after it was ${record.lsn}`);
    const mode = MODE_OF[record.level];
    if (mode === null) return;
    for (let i = record.issuedAt; i < this.snapshots.length; i++) {
      const snap = this.snapshots[i] as Snapshot;
      if (satisfiedAt(snap, mode, result.lsn)) {
        count(snap.names === null ? 'resolved: names off' : 'resolved: confirmed by standbys');
        return;
      }
    }
    const now = this.snapshots.at(-1) as Snapshot;
    this.violation(
      `SAFETY: commit ${record.id} at ${record.level} ending at ${result.lsn} (issued at step ${record.step}) resolved at step ${this.step}, ` +
        `but since it was issued the model never saw the synchronous standbys reach it in mode ${mode}; now: names ${JSON.stringify(now.names?.text ?? '')}, ` +
        `standbys ${JSON.stringify(now.conns)}`,
    );
  }

  /**
   * Liveness at a quiet moment (no report in flight, so the model is exact): every waiting commit
   * that the synchronous standbys' positions now reach resolves; none keeps waiting for a report
   * that already came.
   */
  async checkReleased(): Promise<void> {
    const snap = this.snapshots.at(-1) as Snapshot;
    if (snap.conns.some((c) => c.variants.length > 1)) return;
    const due = this.commits.filter((c) => {
      const mode = MODE_OF[c.level];
      return c.outcome === 'pending' && mode !== null && satisfiedAt(snap, mode, c.lsn);
    });
    if (due.length === 0) return;
    count('checked released at a quiet moment');
    try {
      await within(Promise.all(due.map((c) => c.settled)), HANG_MS, 'the commits the standbys confirmed');
    } catch {
      const stuck = due.filter((c) => c.outcome === 'pending');
      this.violation(
        `LIVENESS: commits ${stuck.map((c) => `${c.id}@${c.level} ending at ${c.lsn}`).join(', ')} still wait although the synchronous standbys reached them: ` +
          `names ${JSON.stringify(snap.names?.text ?? '')}, standbys ${JSON.stringify(snap.conns)}`,
      );
    }
  }

  reload(): void {
    const next = randomNames(this.rand, true);
    const level = this.rand() < 0.3 ? randomLevel(this.rand) : undefined;
    this.log(`reload synchronousStandbyNames=${JSON.stringify(next.text)}${level === undefined ? '' : ` synchronousCommit=${level}`}`);
    this.primary.reload({ synchronousStandbyNames: next.text, ...(level === undefined ? {} : { synchronousCommit: level }) });
    this.names = next.names;
    if (level !== undefined) this.defaultLevel = level;
    this.snapshot();
  }

  live(): ConnModel[] {
    return this.standbys.flatMap((s) => (s.conn !== null && s.conn.started && s.conn.problem === null ? [s.conn] : []));
  }

  describeConns(): string {
    return [...this.conns.values()]
      .map((c) => `conn ${c.id} (${c.standby.name}): ${c.closed ? 'closed' : 'open'}, ${c.present ? `present as ${c.index}, ${c.state}` : c.gone ? 'gone' : 'not seen'}, received ${c.received}${c.problem === null ? '' : `, ${c.problem}`}`)
      .join('; ');
  }

  problems(): string[] {
    return [...this.conns.values()].flatMap((c) => (c.problem === null ? [] : [c.problem]));
  }

  /** Ends everything: every commit settled by then, so close() cancels none. */
  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    if (this.primary === undefined) return;
    for (const c of this.conns.values()) {
      c.closed = true;
      c.stream?.destroy();
    }
    await within(this.primary.close(), HANG_MS, `close (seed ${this.seed})`);
  }
}

/** Polls `condition` on every turn of the event loop; fails after HANG_MS. */
async function until(condition: () => boolean, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + HANG_MS;
  for (let turns = 0; !condition(); turns++) {
    if (Date.now() > deadline) throw new Error(`timed out after ${HANG_MS} ms waiting for ${typeof what === 'string' ? what : what()}`);
    // Every turn of the event loop at first, then every few ms so as not to spin.
    await new Promise((resolve) => (turns < 20 ? setImmediate(resolve) : setTimeout(resolve, 2)));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function runScenario(seed: number): Promise<{ commits: number; violations: string[] }> {
  const sc = new Scenario(seed, new MemoryNetwork({ bufferBytes: 4096 }));
  try {
    await drive(sc);
    if (sc.violations.length === 0) assert.deepEqual(sc.problems(), [], `the standby connections saw no errors (seed ${seed})`);
    return { commits: sc.commits.length, violations: [...sc.violations] };
  } finally {
    // Whatever still waits is canceled by close(); the outcome no longer matters.
    await sc.close();
    await Promise.all(sc.commits.map((c) => c.settled));
  }
}

async function drive(sc: Scenario): Promise<void> {
  const { rand, seed } = sc;
  await sc.open(randomNames(rand, false), rand() < 0.7 ? 'on' : randomLevel(rand));
  // Some WAL first, so that a standby starting from the WAL's start has a backlog ('catchup').
  const before = int(rand, 0, 12);
  sc.log(`${before} local commits before any standby connects`);
  for (let i = 0; i < before; i++) await sc.primary.commit(Buffer.alloc(int(rand, 500, 4000), i), { synchronousCommit: 'local' });
  const standbyCount = int(rand, 2, 4);
  for (let i = 0; i < standbyCount; i++) sc.addStandby();
  for (const s of sc.standbys) if (rand() < 0.85) await sc.connect(s);
  await until(() => sc.live().length === sc.standbys.filter((s) => s.conn !== null).length || sc.problems().length > 0, `the standbys to start (seed ${seed})`);

  const steps = int(rand, 25, 45);
  for (sc.step = 1; sc.step <= steps && sc.violations.length === 0; sc.step++) {
    const r = rand();
    const live = sc.live();
    if (r < 0.3) {
      // Several committers at once, each at its own level (or the default).
      const k = int(rand, 1, 4);
      for (let i = 0; i < k; i++) sc.commit(rand() < 0.85 ? 'random' : 'default');
    } else if (r < 0.62) {
      if (live.length === 0) continue;
      // Standbys on slow links (often still in 'catchup') report more than their share.
      const slow = live.filter((c) => c.slow);
      const c = slow.length > 0 && rand() < 0.4 ? pick(rand, slow) : pick(rand, live);
      // Let it receive what is flushed by now, sometimes.
      if (!c.slow && rand() < 0.6) await until(() => c.received >= sc.primary.flushLsn || c.problem !== null || c.gone, `conn ${c.id} to receive the WAL (seed ${seed})`);
      const pos = sc.newPositions(c);
      if (pos === null) continue;
      await sc.report(c, pos);
      sc.checkStates();
    } else if (r < 0.66) {
      if (live.length === 0) continue;
      const c = pick(rand, live);
      c.slow = !c.slow;
      const bps = int(rand, 20, 80) * 1000;
      sc.log(c.slow ? `conn ${c.id}'s link slows to ${bps} B/s` : `conn ${c.id}'s link is fast again`);
      sc.net.bandwidth(c.slow ? bps : Infinity, `c${c.id}`);
    } else if (r < 0.72) {
      const ms = int(rand, 2, 25);
      sc.log(`stall ${ms} ms`);
      await sleep(ms);
    } else if (r < 0.78) {
      if (live.length === 0) continue;
      const c = pick(rand, live);
      sc.disconnect(c);
      if (rand() < 0.5) await until(() => c.gone, `the primary to see conn ${c.id} leave (seed ${seed})`);
    } else if (r < 0.88) {
      const away = sc.standbys.filter((s) => s.conn === null);
      if (away.length === 0) continue;
      const c = await sc.connect(pick(rand, away));
      await until(() => c.started || c.problem !== null, `conn ${c.id} to start streaming (seed ${seed})`);
    } else if (r < 0.94) {
      sc.reload();
      sc.checkStates();
    } else {
      // Every standby's link hangs: commits at 'local' and 'off' still resolve.
      sc.log('every link hangs; commits');
      for (const c of live) sc.net.stall(`c${c.id}`);
      const quick = [sc.commit('default'), sc.commit('default')].filter((c) => MODE_OF[c.level] === null);
      const more = Array.from({ length: 2 }, () => sc.commit('random')).filter((c) => MODE_OF[c.level] === null);
      for (const c of [...quick, ...more]) await within(c.settled, HANG_MS, `commit ${c.id} at ${c.level} without any standby (seed ${seed})`);
      for (const c of [...quick, ...more]) if (c.outcome !== 'resolved') sc.violation(`commit ${c.id} at ${c.level} did not resolve: ${c.outcome}`);
      sc.log('the links carry on');
      for (const c of live) sc.net.resume(`c${c.id}`);
    }
    await sc.checkReleased();
  }

  if (sc.violations.length === 0) {
    // Commits at 'local' and 'off' never wait for a standby.
    for (const c of sc.commits.filter((c) => MODE_OF[c.level] === null)) {
      await within(c.settled, HANG_MS, `commit ${c.id} at ${c.level} (seed ${seed})`);
    }
    // Liveness: every standby back, every connection the test ended gone, everything received
    // and reported written, flushed and applied.
    sc.step = steps + 1;
    sc.log('liveness: every standby reports everything');
    sc.net.bandwidth(Infinity);
    for (const c of sc.conns.values()) c.slow = false;
    for (const s of sc.standbys) if (s.conn === null || s.conn.problem !== null) await sc.connect(s, false);
    // Commits at 'off' resolved before their flush: wait until every batch is durable.
    await until(() => sc.primary.flushLsn >= sc.primary.currentLsn, `every batch to be flushed (seed ${seed})`);
    const end = sc.primary.flushLsn;
    const conns = sc.standbys.map((s) => s.conn as ConnModel);
    await until(
      () => [...sc.conns.values()].every((c) => (c.closed ? c.gone : c.present && c.state === 'streaming' && c.received >= end)) || sc.problems().length > 0,
      () => `every standby to stream up to ${end} (seed ${seed}): ${sc.describeConns()}`,
    );
    assert.deepEqual(sc.problems(), [], `the standby connections saw no errors (seed ${seed})`);
    for (const c of conns) {
      const pos = { write: c.received, flush: c.received, apply: c.received };
      if (pos.write !== c.reported.write || pos.flush !== c.reported.flush || pos.apply !== c.reported.apply) await sc.report(c, pos);
    }
    sc.checkStates();
    const remote = sc.commits.filter((c) => MODE_OF[c.level] !== null);
    const snap = sc.snapshots.at(-1) as Snapshot;
    const satisfiable = (['write', 'flush', 'apply'] as const).every((mode) => satisfiedAt(snap, mode, end));
    if (!satisfiable) {
      // Nobody (or not enough) is listed or connected: the commits wait, until the names change.
      sc.log(`${JSON.stringify(sc.names?.text ?? '')} cannot be satisfied: reload to FIRST 1 (*)`);
      sc.primary.reload({ synchronousStandbyNames: 'FIRST 1 (*)' });
      sc.names = { method: 'first', num: 1, names: ['*'], text: 'FIRST 1 (*)' };
      sc.snapshot();
      sc.checkStates();
    }
    try {
      await within(Promise.all(remote.map((c) => c.settled)), HANG_MS, 'every remote commit to settle');
    } catch {
      const stuck = remote.filter((c) => c.outcome === 'pending');
      sc.violation(
        `LIVENESS: ${stuck.length} commits still wait after every standby reported ${end} written, flushed and applied: ` +
          `${stuck.map((c) => `${c.id}@${c.level}`).join(', ')}; names ${JSON.stringify(sc.names?.text ?? '')}; status ${JSON.stringify(sc.primary.replicationStatus().map((r) => [r.applicationName, r.state, r.flushLsn, r.syncState]))}`,
      );
    }
  }
}

describe('synchronous replication, randomized with hand-driven standbys', () => {
  it(`never releases a commit before its synchronous standbys confirmed it, and releases every one in the end (${SCENARIOS} scenarios from seed ${SEED})`, async () => {
    const master = mulberry32(SEED);
    let commits = 0;
    const only = process.env.SYNCREP_ONE === undefined ? null : Number(process.env.SYNCREP_ONE);
    for (let i = 0; i < (only === null ? SCENARIOS : 1); i++) {
      const seed = only ?? Math.floor(master() * 2 ** 32);
      const began = Date.now();
      const result = await runScenario(seed);
      if (process.env.SYNCREP_STATS !== undefined) console.log(`scenario ${i} seed ${seed}: ${result.commits} commits, ${Date.now() - began} ms`);
      commits += result.commits;
      assert.deepEqual(result.violations, [], `scenario ${i} (seed ${seed}) broke the property (replay it alone with SYNCREP_ONE=${seed})`);
    }
    if (process.env.SYNCREP_STATS !== undefined) console.log(STATS);
    assert.ok(only !== null || commits > SCENARIOS * 10, `the scenarios committed enough to mean something (${commits} commits)`);
  });

  it('with every standby silent, remote commits keep waiting; local ones do not; clearing the names releases them all', async () => {
    const net = new MemoryNetwork();
    const sc = new Scenario(1, net);
    await sc.open({ text: 'FIRST 1 (s1, s2)', names: { method: 'first', num: 1, names: ['s1', 's2'], text: 'FIRST 1 (s1, s2)' } }, 'on');
    try {
      const standbys = [sc.addStandby('s1'), sc.addStandby('s2')];
      const events: string[][] = [];
      sc.primary.on('sync:standbys', ({ standbys: names }) => events.push([...names]));
      const conns: ConnModel[] = [];
      for (const s of standbys) conns.push(await sc.connect(s, false));
      await until(() => conns.every((c) => c.started && c.state === 'streaming'), 'both standbys streaming');
      const first = sc.commit('local');
      await within(first.settled, HANG_MS, 'a local commit');
      await until(() => conns.every((c) => c.received >= sc.primary.flushLsn), 'both standbys to receive it');
      // Both report part of it, then go silent.
      for (const c of conns) await sc.report(c, { write: sc.walStart + 1, flush: sc.walStart + 1, apply: sc.walStart + 1 });
      sc.checkStates();
      assert.deepEqual(events.at(-1), ['s1'], `s1 is the synchronous standby (events: ${JSON.stringify(events)})`);
      for (const c of conns) net.stall(`c${c.id}`);
      const waiting = (['remote_write', 'on', 'remote_apply'] as const).flatMap((level) => [0, 1].map(() => ({ level, done: false, promise: sc.primary.commit(Buffer.from(level), { synchronousCommit: level }) })));
      for (const w of waiting) void w.promise.then(() => (w.done = true), () => (w.done = true));
      const local = await within(
        Promise.all([sc.primary.commit(Buffer.from('l'), { synchronousCommit: 'local' }), sc.primary.commit(Buffer.from('o'), { synchronousCommit: 'off' })]),
        HANG_MS,
        'local and off commits while every standby is silent',
      );
      assert.equal(local.length, 2, 'both local commits resolved');
      await sleep(100);
      assert.deepEqual(waiting.filter((w) => w.done).map((w) => w.level), [], 'no remote commit resolved while the standbys were silent');
      sc.primary.reload({ synchronousStandbyNames: '' });
      // All at once: released by reload() itself, so by the next turn of the event loop.
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(waiting.filter((w) => !w.done).map((w) => w.level), [], 'every waiting commit resolved as the names were cleared');
      const results = await within(Promise.all(waiting.map((w) => w.promise)), HANG_MS, 'every waiting commit once the names are cleared');
      assert.equal(results.length, waiting.length, 'every waiting commit resolved');
      assert.deepEqual(events.at(-1), [], `no synchronous standby once the names are cleared (events: ${JSON.stringify(events)})`);
      assert.deepEqual(sc.violations, [], 'no violation');
    } finally {
      net.resume();
      await sc.close();
    }
  });
});
