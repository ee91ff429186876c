import type { Application } from '../../application.js';
import { WalshipError, isWalshipError } from '../../errors.js';
import { formatLsn, type Lsn } from '../../lsn.js';
import { Primary } from '../../primary.js';
import { parseSynchronousStandbyNames, type SyncStandbyConfig } from '../../replication/sync-standby-names.js';
import type { RewindEvent } from '../../roles/rewind.js';
import type { SynchronousCommit } from '../../roles/writer.js';
import { Standby } from '../../standby.js';
import { MemoryStorage, type CrashOptions } from '../../storage/memory-storage.js';
import { MemoryNetwork, type MemoryTransport } from '../../transport/memory-transport.js';
import type { TeardownContext } from '../cluster.js';
import { MemoryArchive } from '../memory-archive.js';
import { seededRandom } from '../seeded-random.js';
import { VirtualScheduler } from '../virtual-scheduler.js';
import { parseWalFileName } from '../../wal/segment-name.js';
import { DurabilityChecker } from './durability-checker.js';
import { type CatchupMode, type CommitRecord, type DiskFaultKind, type SimulationStep, type Violation } from './history.js';
import { KvApplication, kvEntry } from './kv-application.js';
import { ReleaseWitness } from './release-witness.js';
import { violationReport } from './violation-report.js';
import { RecordingApplication, batchDigest, type AppliedBatch } from './recording-application.js';

/** Options of a simulated cluster ({@link createCluster} without a test context first). */
export interface SimulationOptions {
  /** A test context whose `after` closes the cluster (`node:test`'s `t`). Without it, call `close()`. */
  readonly t?: TeardownContext;
  /** Seeds every random choice: power-loss patterns and generated scenarios. @defaultValue 1 */
  readonly seed?: number;
  /** How many standbys, named `s1`, `s2`, …; the primary is `p`. @defaultValue 2 */
  readonly standbys?: number;
  /** `true` chains them: `p → s1 → s2 → …` (each standby streams from the one before). @defaultValue false */
  readonly cascade?: boolean;
  /**
   * The primary's `synchronousStandbyNames`, which promotions carry over. Listing every node
   * (`'ANY 1 (p, s1, s2)'`) keeps commits going after a failover. @defaultValue `'FIRST 1 (s1)'` with standbys, else `''`
   */
  readonly synchronousStandbyNames?: string;
  /** The default commit level. @defaultValue 'on' */
  readonly synchronousCommit?: SynchronousCommit;
  /** `true`: the primary archives into a shared `MemoryArchive` that standbys restore from. @defaultValue false */
  readonly archive?: boolean;
  /** The application of node `name` (called again at each restart): the built-in key-value one by default. */
  readonly application?: (name: string) => Application;
  /**
   * The entries of commit call number `id` (from 1, in call order) when `commit()` is given
   * none: what `application` decodes. A function of `id` alone, so that a replayed step list
   * (which records no entries) commits the same bytes again.
   * @defaultValue one write of the built-in key-value application, `kvEntry({ key: 'k' + (id % 17), value: 'v' + id })`
   */
  readonly workload?: (id: number) => readonly Uint8Array[];
  /** What a power loss keeps of unsynced writes and metadata (the randomness is seeded). @defaultValue torn writes, a prefix of metadata */
  readonly crash?: Omit<CrashOptions, 'random'>;
  /** WAL segment size. @defaultValue 65536 */
  readonly segmentSize?: number;
  /**
   * Early WAL: the cluster's first primary (and it again after restarts) sends WAL while its
   * fdatasync runs (`PrimaryOptions.earlySend`; a promoted standby sends durable WAL only),
   * and every standby accepts it (`StandbyOptions.acceptEarlyWal`). @defaultValue false
   */
  readonly earlySend?: boolean;
  /**
   * Every standby's `StandbyOptions.flushDelayMs`: above 0, standbys flush on request (what no
   * commit waits for is flushed at that pace, on the virtual clock). @defaultValue 0
   */
  readonly flushDelayMs?: number;
  /**
   * Every node's storage says its syncs hold the event loop (`MemoryStorageOptions.syncBlocks`,
   * as `NodeStorage` with `commitSync: 'inline'`): the WAL writer announces `write` and lets an
   * early sender go before each urgent sync. @defaultValue false
   */
  readonly syncBlocks?: boolean;
  /**
   * The most steps (commit calls included) one cluster records: the record of a run lives in
   * memory. @defaultValue 100 000
   */
  readonly maxSteps?: number;
}

/** The result of {@link SimulatedCluster.check}. */
export interface CheckResult {
  /** True when no guarantee was broken. */
  readonly ok: boolean;
  /** What was broken. */
  readonly violations: readonly Violation[];
  /** A report a person can read: the violations, the acknowledged commits they concern, the faults, and how to replay. */
  readonly report: string;
}

/** A node of a simulated cluster. */
interface SimNode {
  readonly name: string;
  storage: MemoryStorage;
  node: Primary | Standby | null;
  recorder: RecordingApplication;
  /** The node it streams from, as a standby. */
  upstream: string | null;
  /** It was the primary until another node was promoted: what it acknowledges since counts for nothing. */
  deposed: boolean;
  /** The recorders of its earlier lives (before each restart). */
  readonly earlierLives: RecordingApplication[];
}

const USER = 'sim';
/** {@link SimulationOptions.maxSteps} by default. */
const DEFAULT_MAX_STEPS = 100_000;
const VIRTUAL_CATCHUP_TIMEOUT_MS = 10_000;
/** How often (virtual ms) a catch-up wait looks at the standby's position. */
const CATCHUP_POLL_MS = 50;
/** How long a commit step waits (virtual ms) for its commits before the scenario goes on without them. */
const COMMIT_STEP_WAIT_MS = 1_000;

/**
 * A whole cluster in one process on virtual time: a primary and standbys on `MemoryStorage`
 * and a `MemoryNetwork`, controls for faults, promotion and failover, a record of every
 * commit call and what each node applied, and a checker of PostgreSQL's guarantees. The same
 * seed and the same steps give the same run, event for event.
 */
export class SimulatedCluster {
  /** The virtual clock every node runs on. */
  readonly scheduler: VirtualScheduler;
  /** The network between the nodes. */
  readonly network = new MemoryNetwork();
  /** The seed of this run. */
  readonly seed: number;
  /** Every step taken so far, in order: what replays the run. */
  readonly steps: SimulationStep[] = [];
  /** Every commit call so far and its outcome. */
  readonly commits: CommitRecord[] = [];
  /** Things that happened that are not violations: refused steps, failures walship reported. */
  readonly notes: string[] = [];
  readonly #options: SimulationOptions;
  readonly #random: () => number;
  readonly #nodes = new Map<string, SimNode>();
  readonly #transports = new Map<string, MemoryTransport>();
  readonly #checker = new DurabilityChecker();
  readonly #archive: MemoryArchive | null;
  #primary = 'p';
  /** The current primary's timeline, also while it is down. */
  #primaryTimeline = 1;
  #syncText: string;
  /** The synchronous standby names the run started with (reload steps change `#syncText`). */
  readonly #initialSyncText: string;
  #syncConfig: SyncStandbyConfig | null;
  /** Every synchronous configuration in force so far, in order: a reload may release waiting commits. */
  readonly #syncConfigs: (SyncStandbyConfig | null)[] = [];
  readonly #witness: ReleaseWitness;
  readonly #level: SynchronousCommit;
  #closed = false;
  /** The application recorders of every node's every life as a primary: the lines of history written. */
  readonly #primaryLives = new Set<RecordingApplication>();
  /** Standbys whose last catch-up with the current primary succeeded: they must hold exactly its history. */
  readonly #caughtUp = new Set<string>();

  /** @internal Use {@link createCluster}. */
  constructor(options: SimulationOptions) {
    this.#options = options;
    this.seed = options.seed ?? 1;
    this.#random = seededRandom(this.seed);
    this.scheduler = new VirtualScheduler();
    this.#witness = new ReleaseWitness(this.scheduler, () => {
      const node = this.#nodes.get(this.#primary)?.node;
      return node instanceof Primary ? node : null;
    });
    const standbys = options.standbys ?? 2;
    this.#syncText = options.synchronousStandbyNames ?? (standbys > 0 ? 'FIRST 1 (s1)' : '');
    this.#initialSyncText = this.#syncText;
    this.#syncConfig = parseSynchronousStandbyNames(this.#syncText);
    this.#syncConfigs.push(this.#syncConfig);
    this.#level = options.synchronousCommit ?? 'on';
    this.#archive = options.archive === true ? new MemoryArchive() : null;
    for (const name of ['p', ...Array.from({ length: standbys }, (_, i) => `s${i + 1}`)]) {
      this.#nodes.set(name, { name, storage: new MemoryStorage({ description: `memory:${name}`, syncBlocks: options.syncBlocks === true }), node: null, recorder: this.#recorder(name), upstream: null, deposed: false, earlierLives: [] });
    }
    options.t?.after(() => this.close());
  }

  /** Opens the primary and the standbys, and waits until every standby is consistent. */
  async start(): Promise<void> {
    await this.scheduler.run(async () => {
      const names = this.names;
      await this.#openPrimary(this.#node('p'));
      for (let i = 1; i < names.length; i++) {
        const upstream = this.#options.cascade === true ? names[i - 1]! : 'p';
        await this.#openStandby(this.#node(names[i]!), upstream);
      }
      for (const name of names.slice(1)) await (this.#node(name).node as Standby).waitForConsistent({ timeoutMs: VIRTUAL_CATCHUP_TIMEOUT_MS });
    });
  }

  /** The nodes' names: `p`, `s1`, `s2`, … */
  get names(): string[] {
    return [...this.#nodes.keys()];
  }

  /** The name of the current primary (after a failover, the promoted node's). */
  get primaryName(): string {
    return this.#primary;
  }

  /** The running node `name` (a `Primary` or a `Standby`), or `null` while it is down. */
  node(name: string): Primary | Standby | null {
    return this.#node(name).node;
  }

  /** The current primary, or `null` while it is down. */
  get primary(): Primary | null {
    const node = this.#node(this.#primary).node;
    return node instanceof Primary ? node : null;
  }

  /** The node standby `name` streams from, or `null` for the primary. */
  upstream(name: string): string | null {
    return this.#node(name).upstream;
  }

  /**
   * Whether node `name` is a standby that streams (directly or through cascading standbys) from
   * the current primary, on its timeline: one that can be promoted without making a sibling timeline.
   */
  canPromote(name: string): boolean {
    const node = this.#node(name).node;
    return node instanceof Standby && node.state === 'streaming' && node.timeline === this.primary?.timeline && this.followsPrimary(name);
  }

  /** Whether node `name` replicates (directly or through cascading standbys) from the current primary. */
  followsPrimary(name: string): boolean {
    const seen = new Set<string>();
    for (let at: string | null = this.#node(name).upstream; at !== null && !seen.has(at); at = this.#node(at).upstream) {
      if (at === this.#primary) return true;
      seen.add(at);
    }
    return false;
  }

  /** The batches node `name`'s application holds, in the order it applied them. */
  applied(name: string): readonly AppliedBatch[] {
    return this.#node(name).recorder.sequence;
  }

  /** Node `name`'s application (the built-in `KvApplication` unless `application` gave another). */
  application(name: string): Application {
    return this.#node(name).recorder.inner;
  }

  /** Node `name`'s storage now (after a crash, what survived). */
  storage(name: string): MemoryStorage {
    return this.#node(name).storage;
  }

  /**
   * Commits `count` batches on the current primary at `level`, records each call and its
   * outcome, and waits until they settle, or for one virtual second: a commit waiting for a
   * standby that does not come is left pending while the run goes on. Resolves with the
   * records. Each batch holds `entries` if given, else the `workload` option's entries for its
   * call number (one key-value write by default); with `timeoutMs`, a wait for the standbys
   * that runs out is `SYNC_REP_CANCELED`. The step list records no entries, so only
   * the `workload`'s replay the same.
   */
  async commit(options: { level?: SynchronousCommit; count?: number; timeoutMs?: number; entries?: readonly Uint8Array[] } = {}): Promise<CommitRecord[]> {
    const { entries: _entries, ...step } = options;
    this.#step({ op: 'commit', ...step });
    return this.scheduler.run(async () => {
      const sim = this.#node(this.#primary);
      const primary = sim.node;
      if (!(primary instanceof Primary)) {
        this.notes.push(`step ${this.steps.length - 1}: no primary running, no commit made`);
        return [];
      }
      const level = options.level ?? this.#level;
      const records: CommitRecord[] = [];
      const settled: Promise<unknown>[] = [];
      for (let i = 0; i < (options.count ?? 1); i++) {
        const id = this.commits.length + 1;
        const entries = options.entries ?? this.#options.workload?.(id) ?? [kvEntry({ key: `k${id % 17}`, value: `v${id}` })];
        const record: CommitRecord = {
          id,
          step: this.steps.length - 1,
          node: sim.name,
          level,
          digest: batchDigest(entries.map((data) => ({ data }))),
          calledAt: this.scheduler.now(),
          outcome: 'pending',
          lsn: null,
          timeline: null,
          error: null,
          confirmers: [],
          needed: 0,
        };
        this.commits.push(record);
        records.push(record);
        this.#checker.called(record);
        const deposed = sim.deposed;
        const configAtCall = this.#syncConfigs.length - 1;
        settled.push(
          primary.commit([...entries], { synchronousCommit: level, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) }).then(
            (result) => {
              if (record.outcome !== 'pending') return;
              record.outcome = 'acknowledged';
              record.lsn = result.lsn;
              record.timeline = primary.timeline;
              // A deposed primary's acknowledgements promise nothing: a promotion ended its line.
              if (!deposed && !sim.deposed) this.#checker.acknowledged(record, this.#witness.rows(primary), this.#syncConfigs.slice(configAtCall), (name) => this.#aliveSequence(name));
            },
            (err: unknown) => {
              if (record.outcome !== 'pending') return;
              record.outcome = isWalshipError(err, 'SYNC_REP_CANCELED') ? 'canceled' : 'failed';
              record.error = isWalshipError(err) ? err.code : String(err);
            },
          ),
        );
      }
      await Promise.race([Promise.all(settled), this.scheduler.sleep(COMMIT_STEP_WAIT_MS)]);
      return records;
    });
  }

  /** Power loss of node `name`: what its disk had not made durable is lost or torn (seeded); its connections reset. */
  async crash(name: string): Promise<void> {
    this.#step({ op: 'crash', node: name });
    await this.scheduler.run(() => this.#crash(this.#node(name)));
  }

  /**
   * Starts node `name` again on what its disk kept: the primary as the primary (its acknowledged
   * commits must all be there), a standby as a standby of its upstream. A former primary rejoins
   * instead (see {@link rejoin}). A running node is stopped first (as after a disk fault).
   */
  async restart(name: string): Promise<void> {
    this.#step({ op: 'restart', node: name });
    await this.scheduler.run(async () => {
      const sim = this.#node(name);
      if (sim.node !== null) await this.#stop(sim);
      if (sim.deposed) return this.#rejoin(sim);
      if (name === this.#primary) {
        await this.#openPrimary(sim);
        this.#checker.restarted(name, sim.recorder.sequence);
      } else await this.#openStandby(sim, sim.upstream ?? this.#primary);
    });
  }

  /** Cuts the links between `a` and `b` both ways until {@link heal}. */
  partition(a: string, b: string): void {
    this.#step({ op: 'partition', a, b });
    this.scheduler.run(() => this.network.partition([a], [b]));
  }

  /** Removes every partition, stall and delay. */
  heal(): void {
    this.#step({ op: 'heal' });
    // On the cluster's clock: the streams this wakes pump on it.
    this.scheduler.run(() => {
      this.network.heal();
      this.network.resume();
      this.network.latency(0);
    });
  }

  /** Adds `ms` of latency to the link between `a` and `b`. */
  delay(a: string, b: string, ms: number): void {
    this.#step({ op: 'delay', a, b, ms });
    this.scheduler.run(() => this.network.latency(ms, a, b));
  }

  /** Stalls the link between `a` and `b` (bytes stop, connections stay) until {@link heal}. */
  stall(a: string, b: string): void {
    this.#step({ op: 'stall', a, b });
    this.scheduler.run(() => this.network.stall(a, b));
  }

  /** Makes node `name`'s next storage write (`write-eio`) or datasync (`fsync-eio`) fail with `EIO`, or its next three writes with `ENOSPC` (`enospc`). */
  diskFault(name: string, kind: DiskFaultKind): void {
    this.#step({ op: 'diskFault', node: name, kind });
    const storage = this.#node(name).storage;
    if (kind === 'write-eio') storage.injectFault({ operation: 'write', code: 'EIO' });
    else if (kind === 'fsync-eio') storage.injectFault({ operation: 'datasync', code: 'EIO' });
    else storage.injectFault({ operation: 'write', code: 'ENOSPC', times: 3 });
  }

  /**
   * Makes node `name`'s disk slow: each fdatasync takes `ms` of virtual time (0: instant again)
   * until its next power loss. Written WAL can be read (and sent early) meanwhile, and a crash
   * loses or tears it.
   */
  slowDisk(name: string, ms: number): void {
    this.#step({ op: 'slowDisk', node: name, ms });
    this.#node(name).storage.slowDatasync(ms);
  }

  /**
   * Promotes standby `name` (whatever the primary is doing): it becomes the cluster's primary,
   * and the former primary, if it still runs, is deposed. Standbys are not re-pointed.
   */
  async promote(name: string): Promise<void> {
    this.#step({ op: 'promote', node: name });
    await this.scheduler.run(() => this.#promote(this.#node(name)));
  }

  /**
   * PostgreSQL's failover: crashes the primary, promotes the most advanced standby among the
   * synchronous candidates (any standby of the primary when none is left), and points the
   * primary's other standbys at it. Resolves with the promoted node's name, or `null` when no
   * standby could be promoted.
   */
  async failover(): Promise<string | null> {
    this.#step({ op: 'failover' });
    return this.scheduler.run(async () => {
      const old = this.#node(this.#primary);
      const timeline = this.#primaryTimeline;
      if (old.node !== null) await this.#crash(old);
      // Only standbys that followed the primary onto its timeline: promoting one still on an
      // older timeline would make a sibling timeline of the same number (PostgreSQL's operators
      // avoid that by promoting an up-to-date standby, or by a shared archive of history files).
      const direct = [...this.#nodes.values()].filter((sim) => sim.node instanceof Standby && sim.upstream === old.name && sim.node.consistent && sim.node.timeline === timeline);
      const names = this.#syncConfig?.names ?? [];
      const listed = direct.filter((sim) => names.includes('*') || names.includes(sim.name));
      const candidates = listed.length > 0 ? listed : direct;
      if (candidates.length === 0) {
        this.notes.push(`step ${this.steps.length - 1}: failover found no standby of ${old.name} to promote`);
        return null;
      }
      const position = (sim: SimNode): Lsn => (sim.node as Standby).receiveLsn ?? -1;
      const best = candidates.reduce((a, b) => (position(b) > position(a) ? b : a));
      if (!(await this.#promote(best))) return null;
      for (const sim of direct) if (sim !== best && sim.node instanceof Standby) this.#repoint(sim, best.name);
      return best.name;
    });
  }

  /**
   * Starts a former primary (down or still running) as a standby of the current primary: it
   * rewinds what it wrote past the switch point, and the checker checks its `rewind` report.
   */
  async rejoin(name: string): Promise<void> {
    this.#step({ op: 'rejoin', node: name });
    await this.scheduler.run(async () => {
      const sim = this.#node(name);
      if (!sim.deposed) {
        this.notes.push(`step ${this.steps.length - 1}: ${name} is not a former primary; nothing to rejoin`);
        return;
      }
      if (sim.node !== null) await this.#crash(sim);
      await this.#rejoin(sim);
    });
  }

  /** Changes the primary's `synchronousStandbyNames` (a reload); promotions carry the new text over. */
  reload(synchronousStandbyNames: string): void {
    this.#step({ op: 'reload', synchronousStandbyNames });
    this.#syncText = synchronousStandbyNames;
    this.#syncConfig = parseSynchronousStandbyNames(synchronousStandbyNames);
    this.#syncConfigs.push(this.#syncConfig);
    const primary = this.primary;
    if (primary !== null && primary.failure === null) this.scheduler.run(() => primary.reload({ synchronousStandbyNames }));
  }

  /** Lets `ms` of virtual time pass. */
  async sleep(ms: number): Promise<void> {
    this.#step({ op: 'sleep', ms });
    await this.scheduler.sleep(ms);
  }

  /**
   * Waits until standby `name` has written, flushed or replayed everything the primary had
   * flushed when called (`write` and `flush` both wait for its received position, which is
   * flushed); `TIMEOUT` after 10 virtual seconds.
   */
  async waitForCatchup(name: string, options: { mode?: CatchupMode } = {}): Promise<void> {
    const mode = options.mode ?? 'replay';
    this.#step({ op: 'catchup', node: name, mode });
    this.#caughtUp.delete(name);
    await this.scheduler.run(() => this.#waitForCatchup(this.#node(name), mode));
    if (mode === 'replay') this.#caughtUp.add(name);
  }

  /**
   * Checks PostgreSQL's guarantees on the run so far (see the README's test-kit section): no
   * acknowledged commit lost beyond what the faults allow, confirmations as the level asks,
   * `remote_apply` visible where confirmed, no batch applied that no commit wrote, every
   * node's applied batches a prefix of the primary's, `rewind` reports exact, and no running
   * standby still holding a batch its rewind discarded.
   */
  check(): CheckResult {
    const primary = this.#node(this.#primary);
    for (const sim of this.#nodes.values()) this.#checker.checkApplied(sim.name, sim.recorder.sequence);
    if (primary.node instanceof Primary) this.#checker.checkFinal(primary.name, primary.recorder.sequence);
    const lives = [...this.#primaryLives].map((recorder) => recorder.sequence);
    for (const sim of this.#nodes.values()) {
      if (sim === primary || !(sim.node instanceof Standby)) continue;
      if (sim.node.failure === null) this.#checker.checkRewound(sim.name, sim.recorder.sequence);
      // A standby that caught up with the primary holds exactly its history; any other (one
      // still refused, or cut off) holds a prefix of some line of history a primary wrote.
      if (this.#caughtUp.has(sim.name)) {
        this.#checker.checkPrefix(sim.name, sim.recorder.sequence, primary.name, [primary.recorder.sequence]);
        if (primary.node instanceof Primary) this.#checkWal(primary, primary.node, sim, sim.node);
      } else this.#checker.checkPrefix(sim.name, sim.recorder.sequence, 'any primary', lives);
    }
    const violations = [...this.#checker.violations];
    return { ok: violations.length === 0, violations, report: violationReport({ seed: this.seed, steps: this.steps, commits: this.commits, notes: this.notes, options: this.#options, initialSyncText: this.#initialSyncText }, violations) };
  }

  /**
   * A standby that caught up with the primary holds the primary's WAL bytes, never WAL the
   * primary lost (sent early, before a crash) and then wrote over: every segment of the current
   * timeline both hold is compared up to the standby's received end (and the primary's durable
   * end), from the first byte the standby holds of it (one bootstrapped from a base backup
   * holds none before the backup's position).
   */
  #checkWal(primary: SimNode, node: Primary, sim: SimNode, standby: Standby): void {
    if (standby.timeline !== node.timeline) return;
    const size = this.#options.segmentSize ?? 64 * 1024;
    const end = Math.min(standby.receiveLsn ?? 0, node.flushLsn);
    const own = new Set(primary.storage.fileNames());
    for (const name of sim.storage.fileNames()) {
      const file = parseWalFileName(name, size);
      if (file?.kind !== 'segment' || file.timeline !== node.timeline || !own.has(name)) continue;
      const length = Math.min(size, end - file.segno * size);
      if (length <= 0) continue;
      const theirs = sim.storage.readFile(name);
      const ours = primary.storage.readFile(name);
      let at = 0;
      while (at < length && (theirs[at] ?? 0) === 0) at++;
      for (; at < length; at++) {
        if ((theirs[at] ?? 0) === (ours[at] ?? 0)) continue;
        this.#checker.keptLostWal(sim.name, `standby ${sim.name}'s WAL differs from the primary ${primary.name}'s at ${formatLsn(file.segno * size + at)} (segment ${name}), below both ends (${formatLsn(end)}): it kept WAL the primary does not have`);
        return;
      }
    }
  }

  /**
   * Brings the run to rest: heals the network, restarts every node that is down (a former
   * primary rejoins), and waits for every standby to replay what the primary has.
   */
  async settle(): Promise<void> {
    this.heal();
    const primary = this.#node(this.#primary);
    if (primary.node === null || primary.node.failure !== null) await this.#retrying(() => this.restart(primary.name));
    for (const sim of this.#nodes.values()) {
      if (sim.name === this.#primary) continue;
      if (sim.deposed) await this.#retrying(() => this.rejoin(sim.name));
      else if (sim.node === null || sim.node.failure !== null) await this.#retrying(() => this.restart(sim.name));
    }
    // A standby left streaming from a former primary (a promotion that re-pointed no one) moves to the current one.
    for (const sim of this.#nodes.values()) {
      if (sim.node instanceof Standby && sim.upstream !== null && !this.followsPrimary(sim.name)) this.#repoint(sim, this.#primary);
    }
    for (const sim of this.#nodes.values()) {
      if (sim.name !== this.#primary && sim.node instanceof Standby && sim.node.failure === null) await this.waitForCatchup(sim.name, { mode: 'replay' }).catch((err: unknown) => this.notes.push(`settle: ${sim.name} did not catch up: ${(err as Error).message}`));
    }
  }

  /** Tries a restart a few times: a disk fault still pending fails the first open, as it would a real one. */
  async #retrying(action: () => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await action();
      } catch (err) {
        if (!isWalshipError(err) || attempt === 5) throw err;
        this.notes.push(`settle: ${err.code}: ${err.message}`);
      }
    }
  }

  /** Closes every node and stops the clock. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.scheduler.run(async () => {
      for (const sim of [...this.#nodes.values()].reverse()) if (sim.node !== null) await this.#stop(sim);
    });
    this.scheduler.stop();
  }

  #node(name: string): SimNode {
    const sim = this.#nodes.get(name);
    if (sim === undefined) throw new WalshipError('INVALID_ARGUMENT', `the cluster has no node "${name}" (it has ${this.names.join(', ')})`);
    return sim;
  }

  #step(step: SimulationStep): void {
    if (this.#closed) throw new WalshipError('INVALID_ARGUMENT', 'the simulated cluster is closed');
    const limit = this.#options.maxSteps ?? DEFAULT_MAX_STEPS;
    if (this.steps.length + 1 + this.commits.length + (step.op === 'commit' ? (step.count ?? 1) : 0) > limit) {
      throw new WalshipError('INVALID_ARGUMENT', `the simulated cluster has recorded ${this.steps.length} steps and ${this.commits.length} commit calls; maxSteps is ${limit}`);
    }
    this.#witness.sample();
    this.steps.push(step);
  }

  #recorder(name: string): RecordingApplication {
    return new RecordingApplication(this.#options.application?.(name) ?? new KvApplication());
  }

  #transport(name: string): MemoryTransport {
    let transport = this.#transports.get(name);
    if (transport === undefined) this.#transports.set(name, (transport = this.network.transport(name)));
    return transport;
  }

  #serving(name: string): { listen: { transport: MemoryTransport; address: string }; auth: { rules: { user: string; address: 'all'; method: 'trust' }[] }; authFailureDelayMs: number } {
    return { listen: { transport: this.#transport(name), address: `${name}:5432` }, auth: { rules: [{ user: USER, address: 'all', method: 'trust' }] }, authFailureDelayMs: 0 };
  }

  /** A new life of the node's application: a fresh instance, holding what it keeps durably. */
  async #newLife(sim: SimNode): Promise<void> {
    this.#caughtUp.delete(sim.name);
    const previous = sim.recorder;
    sim.earlierLives.push(previous);
    sim.recorder = this.#recorder(sim.name);
    const durable = sim.recorder.appliedLsn === undefined ? null : await sim.recorder.appliedLsn();
    if (durable !== null) {
      previous.restart(durable);
      sim.recorder.restart(null);
      for (const batch of previous.sequence) (sim.recorder.sequence as AppliedBatch[]).push(batch);
    }
  }

  async #openPrimary(sim: SimNode): Promise<void> {
    await this.#newLife(sim);
    sim.node = this.#witness.watch(await Primary.open({
      storage: sim.storage,
      application: sim.recorder,
      segmentSize: this.#options.segmentSize ?? 64 * 1024,
      synchronousStandbyNames: this.#syncText,
      synchronousCommit: this.#level,
      logPrefix: sim.name,
      ...(this.#options.earlySend === true ? { earlySend: true } : {}),
      ...(this.#archive === null ? {} : { archive: { mode: 'on' as const, archiver: this.#archive } }),
      ...this.#serving(sim.name),
    }));
    sim.upstream = null;
    this.#primaryLives.add(sim.recorder);
    this.#primaryTimeline = sim.node.timeline;
  }

  async #openStandby(sim: SimNode, upstream: string): Promise<void> {
    await this.#newLife(sim);
    const standby = await Standby.open({
      storage: sim.storage,
      application: sim.recorder,
      primary: { transport: this.#transport(sim.name), address: `${upstream}:5432`, user: USER, applicationName: sim.name },
      ...(this.#archive === null ? {} : { restore: this.#archive }),
      statusIntervalMs: 500,
      retryMinDelayMs: 5,
      retryMaxDelayMs: 200,
      logPrefix: sim.name,
      ...(this.#options.earlySend === true ? { acceptEarlyWal: true } : {}),
      ...(this.#options.flushDelayMs === undefined ? {} : { flushDelayMs: this.#options.flushDelayMs }),
      ...this.#serving(sim.name),
    });
    sim.node = standby;
    sim.upstream = upstream;
    standby.on('rewind', (event: RewindEvent) => this.#checker.checkRewind(sim.name, event, sim.recorder.sequence));
  }

  async #crash(sim: SimNode): Promise<void> {
    if (sim.node === null) {
      this.notes.push(`step ${this.steps.length - 1}: ${sim.name} is already down`);
      return;
    }
    const node = sim.node;
    sim.node = null;
    sim.storage = sim.storage.crash({ unsyncedWrites: 'torn', unsyncedMetadata: 'prefix', ...this.#options.crash, random: this.#random });
    this.network.reset(sim.name);
    for (const record of this.commits) if (record.node === sim.name && record.outcome === 'pending') record.outcome = 'unknown';
    if (node instanceof Standby) this.#checker.lostPower(sim.name);
    // The process is gone: nothing of it may run on. Closing on a dead disk writes nothing.
    await node.close({ signal: AbortSignal.abort() }).catch(() => undefined);
  }

  /** A clean stop (a restart of a running node): what it acknowledged is on its disk. */
  async #stop(sim: SimNode): Promise<void> {
    const node = sim.node!;
    sim.node = null;
    await node.close({ signal: AbortSignal.abort() }).catch(() => undefined);
    for (const record of this.commits) if (record.node === sim.name && record.outcome === 'pending') record.outcome = 'unknown';
  }

  async #promote(sim: SimNode): Promise<boolean> {
    const standby = sim.node;
    if (!(standby instanceof Standby)) {
      this.notes.push(`step ${this.steps.length - 1}: ${sim.name} is not a running standby; not promoted`);
      return false;
    }
    try {
      sim.node = this.#witness.watch(await standby.promote({ synchronousStandbyNames: this.#syncText, synchronousCommit: this.#level }));
    } catch (err) {
      this.notes.push(`step ${this.steps.length - 1}: promoting ${sim.name} failed: ${isWalshipError(err) ? err.code : String(err)}`);
      return false;
    }
    const old = this.#node(this.#primary);
    if (old !== sim) old.deposed = true;
    sim.deposed = false;
    sim.upstream = null;
    this.#primary = sim.name;
    this.#primaryTimeline = sim.node.timeline;
    this.#primaryLives.add(sim.recorder);
    this.#checker.promoted(sim.name, sim.recorder.sequence);
    return true;
  }

  #repoint(sim: SimNode, upstream: string): void {
    sim.upstream = upstream;
    (sim.node as Standby).reconfigure({ primary: { transport: this.#transport(sim.name), address: `${upstream}:5432`, user: USER, applicationName: sim.name } });
  }

  async #rejoin(sim: SimNode): Promise<void> {
    sim.deposed = false;
    await this.#openStandby(sim, this.#primary);
  }

  async #waitForCatchup(sim: SimNode, mode: CatchupMode): Promise<void> {
    const primary = this.primary;
    const standby = sim.node;
    if (primary === null || !(standby instanceof Standby)) throw new WalshipError('INVALID_ARGUMENT', `${sim.name} is not a running standby of a running primary`);
    const target = primary.flushLsn;
    // Replay positions are ends of batches (records without one, such as an end of recovery, do
    // not move them): replay has caught up once it holds the primary's last batch.
    const replayTarget = primary.appliedLsn;
    const deadline = this.scheduler.now() + VIRTUAL_CATCHUP_TIMEOUT_MS;
    const timedOut = (): WalshipError => new WalshipError('TIMEOUT', `${sim.name} did not ${mode} up to ${formatLsn(mode === 'replay' ? replayTarget : target)} within ${VIRTUAL_CATCHUP_TIMEOUT_MS} virtual ms`);
    // Streaming on the primary's timeline: a node refused for holding WAL of its own may be past the target.
    while ((standby.receiveLsn ?? -1) < target || standby.state !== 'streaming' || standby.timeline !== primary.timeline) {
      if (standby.failure !== null) throw standby.failure;
      if (this.scheduler.now() >= deadline) throw timedOut();
      await this.scheduler.sleep(CATCHUP_POLL_MS);
    }
    if (mode === 'replay') await standby.waitForReplay(replayTarget, { timeoutMs: Math.max(1, deadline - this.scheduler.now()) }).catch((err: unknown) => Promise.reject(isWalshipError(err, 'TIMEOUT') ? timedOut() : err));
  }

  /**
   * What a running node applied in any of its lives: a standby that confirmed a commit and then
   * restarted may confirm it to the primary on its old connection while its new life replays.
   */
  #aliveSequence(name: string): readonly AppliedBatch[] | null {
    const sim = this.#nodes.get(name);
    if (sim === undefined || sim.node === null) return null;
    return [...sim.earlierLives.flatMap((life) => life.sequence), ...sim.recorder.sequence];
  }
}
