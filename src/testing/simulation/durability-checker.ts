import { formatLsn, type Lsn } from '../../lsn.js';
import type { ReplicationStatusRow } from '../../replication/wal-source.js';
import type { SyncStandbyConfig } from '../../replication/sync-standby-names.js';
import type { DiscardedBatch } from '../../roles/rewind.js';
import type { CommitRecord, Violation } from './history.js';
import { batchDigest, type AppliedBatch } from './recording-application.js';

/** The position a level waits for on a synchronous standby, as the primary's status row shows it. */
function confirmedPosition(row: ReplicationStatusRow, level: CommitRecord['level']): Lsn | null {
  if (level === 'remote_write') return row.writeLsn;
  if (level === 'remote_apply') return row.replayLsn;
  return row.flushLsn;
}

const REMOTE_LEVELS: ReadonlySet<CommitRecord['level']> = new Set(['remote_write', 'on', 'remote_apply']);

/**
 * PostgreSQL's guarantees, checked as a simulation runs. It keeps the set of acknowledged
 * commits that must survive on the current line of history ("guaranteed"), and for each
 * standby how far acknowledged commits were confirmed by it. A primary's crash keeps every
 * guaranteed commit (all but `off` were flushed before they resolved); a promotion keeps those
 * the promoted standby confirmed, or that lie below a commit it confirmed — losing the others is
 * what PostgreSQL allows when a standby that never confirmed them is promoted.
 */
export class DurabilityChecker {
  readonly violations: Violation[] = [];
  /** Acknowledged commits that must be on the current line of history. */
  #guaranteed = new Map<number, CommitRecord>();
  /** Per standby: the highest commit position it confirmed durably (flush or replay). */
  #confirmedFlush = new Map<string, Lsn>();
  /** Per standby: the highest commit position it confirmed written (lost with its power). */
  #confirmedWrite = new Map<string, Lsn>();
  /** Acknowledged commits that a legitimate failover lost, for the report. */
  readonly allowedLosses: CommitRecord[] = [];
  readonly #known = new Map<string, number>();
  /** Per node: every batch its rewinds reported, as `timeline:end:digest`. */
  readonly #rewound = new Map<string, Set<string>>();

  /** Every commit call, acknowledged or not, so that applied batches can be traced to one. */
  called(commit: CommitRecord): void {
    this.#known.set(commit.digest, (this.#known.get(commit.digest) ?? 0) + 1);
  }

  /**
   * A commit resolved. Records who confirmed it and checks that enough did (and, for
   * `remote_apply`, that they show it): `rowSets` are the primary's `replicationStatus()` now
   * and at the moments since its release could have happened (a step between the release and
   * this callback may have crashed the standby that released it), and `configs` every
   * synchronous configuration in force since the call (a reload may have released it; `null`
   * for none, which releases every waiting commit).
   */
  acknowledged(commit: CommitRecord, rowSets: readonly (readonly ReplicationStatusRow[])[], configs: readonly (SyncStandbyConfig | null)[], applied: (node: string) => readonly AppliedBatch[] | null): void {
    const lsn = commit.lsn!;
    if (commit.level !== 'off') this.#guaranteed.set(commit.id, commit);
    if (!REMOTE_LEVELS.has(commit.level) || configs.length === 0 || configs.includes(null)) return;
    const rows = rowSets[0]!;
    const satisfied = (configs as SyncStandbyConfig[]).map((config) => rowSets.map((set) => confirmersUnder(config, set, commit.level, lsn)).find((confirmers) => confirmers !== null) ?? null);
    const met = satisfied.flatMap((confirmers, i) => (confirmers !== null && confirmers.length >= (configs[i] as SyncStandbyConfig).num ? [confirmers] : []));
    const last = configs.at(-1) as SyncStandbyConfig;
    commit.needed = Math.min(...(configs as SyncStandbyConfig[]).map((config) => config.num));
    if (met.length === 0) {
      commit.confirmers = satisfied.at(-1) ?? [];
      this.#violate('released-early', `commit #${commit.id} at ${commit.level} (${formatLsn(lsn)}) resolved, but no synchronous configuration in force since its call had its confirmations (last: ${last.num} by '${last.text}'; ${describeRows(rows, commit.level)})`, { commit });
      return;
    }
    commit.confirmers = [...new Set(met.flat())];
    for (const name of commit.confirmers) {
      const table = commit.level === 'remote_write' ? this.#confirmedWrite : this.#confirmedFlush;
      table.set(name, Math.max(table.get(name) ?? 0, lsn));
      if (commit.level === 'remote_apply') {
        const sequence = applied(name);
        if (sequence !== null && !sequence.some((batch) => batch.digest === commit.digest && batch.lsn === lsn)) {
          this.#violate('remote-apply-invisible', `commit #${commit.id} at remote_apply (${formatLsn(lsn)}) resolved, but standby ${name}, which confirmed it, has not applied it`, { commit, node: name });
        }
      }
    }
  }

  /** A standby lost power: what it had only written (not flushed) is gone. */
  lostPower(node: string): void {
    this.#confirmedWrite.delete(node);
  }

  /** The primary came back after a crash, on the same line of history: every guaranteed commit must be there. */
  restarted(node: string, applied: readonly AppliedBatch[]): void {
    this.#expectGuaranteed(node, applied, 'after its crash and restart');
  }

  /**
   * `node` was promoted. Commits it confirmed (or that lie below one it confirmed) stay
   * guaranteed and must be in what it applied; the others are lost as PostgreSQL allows.
   */
  promoted(node: string, applied: readonly AppliedBatch[]): void {
    const bound = Math.max(this.#confirmedFlush.get(node) ?? -1, this.#confirmedWrite.get(node) ?? -1);
    for (const [id, commit] of this.#guaranteed) {
      if (commit.lsn! > bound) {
        this.#guaranteed.delete(id);
        this.allowedLosses.push(commit);
      }
    }
    this.#expectGuaranteed(node, applied, 'after its promotion');
    // Confirmations were given to the former primary; the new one collects its own.
    this.#confirmedFlush.clear();
    this.#confirmedWrite.clear();
  }

  /** A standby caught up with the primary holds WAL bytes the primary does not (see `SimulatedCluster.check`). */
  keptLostWal(node: string, message: string): void {
    this.#violate('kept-lost-wal', message, { node });
  }

  /** Every node's applied batches must each come from a commit call (none invented, none from another system). */
  checkApplied(node: string, applied: readonly AppliedBatch[]): void {
    for (const batch of applied) {
      if (!this.#known.has(batch.digest)) {
        this.#violate('phantom-batch', `node ${node} applied a batch at ${formatLsn(batch.lsn)} (timeline ${batch.timeline}) that no commit call wrote`, { node });
        return;
      }
    }
  }

  /**
   * A standby's applied batches must be a prefix of a line of history a primary wrote: of the
   * current primary's (`lines` is its one sequence) for a standby that caught up with it, else
   * of any primary's (a former primary not yet rejoined holds its own abandoned line).
   */
  checkPrefix(node: string, applied: readonly AppliedBatch[], of: string, lines: readonly (readonly AppliedBatch[])[]): void {
    if (lines.some((line) => isPrefix(applied, line))) return;
    const closest = lines.reduce((best, line) => Math.max(best, commonPrefix(applied, line)), 0);
    const at = applied[closest]!;
    this.#violate('diverged-history', `node ${node}'s applied batch #${closest + 1}, ending ${formatLsn(at.lsn)} on timeline ${at.timeline}, is in no history ${of === 'any primary' ? 'any primary wrote' : `of the primary ${of}`} (${applied.length} batches applied)`, { node });
  }

  /** The final line of history: every guaranteed commit must be on `node` (the primary) after the run. */
  checkFinal(node: string, applied: readonly AppliedBatch[]): void {
    this.#expectGuaranteed(node, applied, 'at the end of the run');
  }

  /**
   * A rejoining node's `rewind` report must list exactly the batches it had applied past the
   * switch point (`before`: its applied sequence when it rewound), and each must come from a
   * commit call; after it, none of them may stay applied ({@link checkRewound}).
   */
  checkRewind(node: string, event: { timeline: number; switchLsn: Lsn; batches: readonly DiscardedBatch[]; complete: boolean }, before: readonly AppliedBatch[]): void {
    const reported = event.batches.map((batch) => ({ end: batch.endLsn, digest: batchDigest(batch.entries) }));
    for (const batch of reported) {
      if (!this.#known.has(batch.digest)) this.#violate('rewind-report', `node ${node}'s rewind reported a batch ending ${formatLsn(batch.end)} that no commit call wrote`, { node });
    }
    // A rewind that fails part-way (say, restoring a snapshot on a full disk) runs again and
    // reports what is left: what an earlier report of this node listed counts as reported.
    let earlier = this.#rewound.get(node);
    if (earlier === undefined) this.#rewound.set(node, (earlier = new Set()));
    for (const batch of reported) earlier.add(`${event.timeline}:${batch.end}:${batch.digest}`);
    // An incomplete report (more than 64 MiB, or a state from a base backup past this node's
    // WAL) says so; only a complete one must list every batch applied past the switch point.
    const appliedPast = event.complete ? before.filter((batch) => batch.lsn > event.switchLsn && batch.timeline === event.timeline) : [];
    for (const batch of appliedPast) {
      if (!earlier.has(`${event.timeline}:${batch.lsn}:${batch.digest}`)) {
        this.#violate('rewind-report', `node ${node} had applied the batch ending ${formatLsn(batch.lsn)} past the switch point ${formatLsn(event.switchLsn)}, but its rewind did not report it`, { node });
      }
    }
    if (reported.some((r) => r.end <= event.switchLsn)) this.#violate('rewind-report', `node ${node}'s rewind reported a batch at or below the switch point ${formatLsn(event.switchLsn)}`, { node });
  }

  /**
   * A running standby's application must not still hold a batch one of its rewinds discarded:
   * the rewind takes the application back (a snapshot or a base backup) before the node goes
   * on, so one that keeps them holds history that is on no primary's line any more.
   */
  checkRewound(node: string, applied: readonly AppliedBatch[]): void {
    const discarded = this.#rewound.get(node);
    if (discarded === undefined) return;
    const kept = applied.find((batch) => discarded.has(`${batch.timeline}:${batch.lsn}:${batch.digest}`));
    if (kept !== undefined) {
      this.#violate('diverged-history', `node ${node} still holds the batch ending ${formatLsn(kept.lsn)} on timeline ${kept.timeline}, which its rewind discarded (${applied.length} batches applied)`, { node });
    }
  }

  #expectGuaranteed(node: string, applied: readonly AppliedBatch[], when: string): void {
    const held = new Set(applied.map((batch) => `${batch.lsn}:${batch.digest}`));
    for (const commit of this.#guaranteed.values()) {
      if (!held.has(`${commit.lsn}:${commit.digest}`)) {
        const by = commit.confirmers.length === 0 ? '' : `, confirmed by ${commit.confirmers.join(', ')}`;
        this.#violate('acknowledged-lost', `commit #${commit.id}, acknowledged at ${commit.level} by ${commit.node} (${formatLsn(commit.lsn!)}, timeline ${commit.timeline}${by}), is missing on ${node} ${when}`, { commit, node });
      }
    }
  }

  #violate(rule: string, message: string, about: { commit?: CommitRecord; node?: string }): void {
    // One report per rule and commit/node: a lost commit stays lost at every later check.
    const key = `${rule}:${about.commit?.id ?? ''}:${about.node ?? ''}`;
    if (this.#reported.has(key)) return;
    this.#reported.add(key);
    this.violations.push({ rule, message, ...about });
  }

  readonly #reported = new Set<string>();
}

function describeRows(rows: readonly ReplicationStatusRow[], level: CommitRecord['level']): string {
  if (rows.length === 0) return 'no standby connected';
  return rows.map((row) => `${row.applicationName} ${row.syncState} at ${formatLsn(confirmedPosition(row, level) ?? 0)}`).join(', ');
}

/**
 * The standbys whose confirmation released a commit under `config`, when they suffice: for
 * `ANY n`, the listed candidates at or past it (at least n); for `FIRST n`, the n listed
 * candidates (streaming, with a flush position reported) of best priority (the list's order, `*` for any other name), all at or past
 * it (among standbys tied at the last priority, any of them). `null` when they do not suffice.
 */
function confirmersUnder(config: SyncStandbyConfig, rows: readonly ReplicationStatusRow[], level: CommitRecord['level'], lsn: Lsn): string[] | null {
  const wildcard = config.names.indexOf('*');
  const priority = (name: string): number => {
    const at = config.names.indexOf(name);
    return at >= 0 ? at : wildcard;
  };
  const confirmed = (row: ReplicationStatusRow): boolean => (confirmedPosition(row, level) ?? -1) >= lsn;
  // Candidates as PostgreSQL's: streaming (or stopping), with a valid flush position reported.
  const candidate = (row: ReplicationStatusRow): boolean => (row.state === 'streaming' || row.state === 'stopping') && (row.flushLsn ?? 0) > 0;
  const listed = rows.filter((row) => candidate(row) && priority(row.applicationName) >= 0).sort((a, b) => priority(a.applicationName) - priority(b.applicationName));
  if (config.method === 'any') {
    const confirmers = listed.filter(confirmed).map((row) => row.applicationName);
    return confirmers.length >= config.num ? confirmers : null;
  }
  if (listed.length < config.num) return null;
  const boundary = priority(listed[config.num - 1]!.applicationName);
  const better = listed.filter((row) => priority(row.applicationName) < boundary);
  const tied = listed.filter((row) => priority(row.applicationName) === boundary && confirmed(row));
  if (!better.every(confirmed) || better.length + tied.length < config.num) return null;
  return [...better, ...tied].map((row) => row.applicationName);
}

function commonPrefix(a: readonly AppliedBatch[], b: readonly AppliedBatch[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i]!.lsn === b[i]!.lsn && a[i]!.digest === b[i]!.digest) i++;
  return i;
}

function isPrefix(a: readonly AppliedBatch[], of: readonly AppliedBatch[]): boolean {
  return a.length <= of.length && commonPrefix(a, of) === a.length;
}
