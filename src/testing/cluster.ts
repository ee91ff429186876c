import { WalshipError } from '../errors.js';
import { Primary, Standby, type AuthOptions, type PrimaryOptions, type StandbyOptions, type StandbyPrimaryOptions, type Transport } from '../index.js';
import { MemoryStorage } from '../storage/memory-storage.js';
import { MemoryNetwork } from '../transport/memory-transport.js';
import { SimulatedCluster, type SimulationOptions } from './simulation/simulated-cluster.js';

/**
 * Where {@link createCluster} registers its teardown: any object with an `after(fn)` that
 * runs `fn` once the test is over, passed or failed. `node:test`'s test context fits
 * (`it('…', async (t) => { const cluster = createCluster(t); … })`); with another runner,
 * pass its per-test hook, e.g. vitest's `{ after: onTestFinished }`.
 */
export interface TeardownContext {
  /** Registers `fn` to run once the test is over, passed or failed. */
  after(fn: () => Promise<void>): unknown;
}

/** Options of {@link createCluster}; every one has a test default. */
export interface ClusterOptions {
  /** The network the default transports belong to; its fault controls act on the cluster. @defaultValue a new `MemoryNetwork` */
  readonly network?: MemoryNetwork;
  /**
   * The transport of the node (or endpoint) `name`, which it both listens and connects with;
   * called once per name. @defaultValue `network.transport(name)`
   */
  readonly transport?: (name: string) => Transport;
  /** The address the node `name` listens on, e.g. `() => '127.0.0.1:0'` for TCP. @defaultValue `` `${name}:1` `` */
  readonly listenAddress?: (name: string) => string;
  /**
   * How serving nodes let standbys in: `'scram-sha-256'` with {@link ClusterOptions.user} and
   * {@link ClusterOptions.password}, or `'trust'` (standbys connect without a password).
   * @defaultValue 'scram-sha-256'
   */
  readonly auth?: 'scram-sha-256' | 'trust';
  /** The replication user. @defaultValue 'repl' */
  readonly user?: string;
  /** The replication user's password. @defaultValue 'walship-test-password' */
  readonly password?: string;
  /** Segment size of every new primary's WAL. @defaultValue 65536 (the smallest) */
  readonly segmentSize?: number;
}

/** Defaults of {@link ClusterOptions}, and the quick timings every standby of a cluster gets. */
export const CLUSTER_DEFAULTS = Object.freeze({
  /** Standbys authenticate with SCRAM-SHA-256, as in production. */
  auth: 'scram-sha-256' as 'scram-sha-256' | 'trust',
  /** The replication user. */
  user: 'repl',
  /** The replication user's password. */
  password: 'walship-test-password',
  /** 64 KiB segments, the smallest, so that tests fill, switch and remove segments quickly. */
  segmentSize: 64 * 1024,
  /** Of every serving node: a refused standby is answered at once. */
  authFailureDelayMs: 0,
  /** Of every standby: its status reports. */
  statusIntervalMs: 100,
  /** Of every standby: the first wait before reconnecting. */
  retryMinDelayMs: 5,
  /** Of every standby: the longest wait between reconnects. */
  retryMaxDelayMs: 50,
});

/**
 * Where a cluster node listens: `true` for the cluster's own transport at the address
 * {@link ClusterOptions.listenAddress} gives, `false` for nowhere, or an explicit endpoint.
 */
export type ClusterListen =
  | boolean
  | {
      /** The transport to listen on. */
      readonly transport: Transport;
      /** The address to listen on, in that transport's format. */
      readonly address: string;
    };

/**
 * Options of {@link Cluster.primary}: any {@link PrimaryOptions}, which override the cluster's
 * defaults. Without `dir` or `storage` the primary uses {@link Cluster.storage} of its name.
 */
export interface ClusterPrimaryOptions extends Omit<PrimaryOptions, 'listen'> {
  /** @defaultValue true */
  readonly listen?: ClusterListen;
}

/**
 * Options of {@link Cluster.standby}: any {@link StandbyOptions} but `primary`, which the
 * cluster fills in from `upstream` and may be adjusted with `connection`. Without `dir` or
 * `storage` the standby uses {@link Cluster.storage} of its name.
 */
export interface ClusterStandbyOptions extends Omit<StandbyOptions, 'primary' | 'listen'> {
  /**
   * The node to stream from (a primary, or a standby that listens), or its address: e.g.
   * `cluster.address('p')` for a primary `p` that is not open yet.
   */
  readonly upstream: Primary | Standby | string;
  /**
   * Overrides of the connection to `upstream`, e.g. `{ slotName: 's1', createSlot: true }` or
   * a wrong `password`. By default the standby connects as the cluster's user, with the
   * cluster's password under SCRAM, and with its own name as `applicationName`.
   */
  readonly connection?: Partial<StandbyPrimaryOptions>;
  /** `true` makes it a cascading standby that serves standbys of its own. @defaultValue false */
  readonly listen?: ClusterListen;
}

/**
 * A set of named nodes for one test: each node gets its own endpoint on the network, its
 * own {@link MemoryStorage} (kept across reopens under the same name) and an address.
 * Created by {@link createCluster}, which closes it when the test ends.
 */
export interface Cluster {
  /** The network of the default transports, for faults: `cluster.network.partition(['s1'], ['p'])`. */
  readonly network: MemoryNetwork;
  /** The replication user standbys connect as. */
  readonly user: string;
  /** The replication user's password. */
  readonly password: string;
  /**
   * Opens a primary named `name`: listening on its endpoint at `` `${name}:1` `` (by default),
   * letting the cluster's user in, with the cluster's segment size and no delay after a
   * failed authentication. `options` override any of it.
   */
  primary(name: string, options: ClusterPrimaryOptions): Promise<Primary>;
  /**
   * Opens a standby named `name` that streams from `options.upstream` as the cluster's user,
   * with its name as `applicationName`, status reports every 100 ms and reconnects after
   * 5 to 50 ms. With `listen: true` it serves standbys of its own at its address, as a
   * primary of the cluster does.
   */
  standby(name: string, options: ClusterStandbyOptions): Promise<Standby>;
  /** The storage of the node `name`: a `MemoryStorage` created on first use, the same one after. */
  storage(name: string): MemoryStorage;
  /** The transport of the node (or any endpoint) `name`, the same one on every call. */
  transport(name: string): Transport;
  /**
   * Where a node listens: its actual address (after a port 0 was bound), or, for a name,
   * the address a node of that name listens on by default.
   */
  address(node: Primary | Standby | string): string;
  /**
   * Closes every node the cluster opened that is still open: standbys first, the latest
   * opened first (downstream before upstream), then primaries. Idempotent; errors of
   * closing are ignored (a test that checks `close()` calls the node's own). Registered with
   * the test's `after`, so it runs however the test ends.
   */
  close(): Promise<void>;
}

/**
 * Creates a {@link Cluster} for one test and registers its {@link Cluster.close} with
 * `t.after`, so that a failing assertion never leaves a node listening, reconnecting or
 * holding a timer.
 *
 * @example
 * ```ts
 * import { it } from 'node:test';
 * import { createCluster } from 'walship/testing';
 *
 * it('a standby replays every commit', async (t) => {
 *   const cluster = createCluster(t);
 *   const primary = await cluster.primary('p', { application: new MyApp() });
 *   const standby = await cluster.standby('s1', { upstream: primary, application: new MyApp() });
 *   const { lsn } = await primary.commit([Buffer.from('hello')]);
 *   await standby.waitForReplay(lsn);
 * });
 * ```
 */
export function createCluster(t: TeardownContext, options?: ClusterOptions): Cluster;
/**
 * Starts a simulated cluster on virtual time: a primary `p` and standbys `s1`, `s2`, … on
 * `MemoryStorage` and a `MemoryNetwork`, with fault controls, a record of every commit and a
 * durability checker (see {@link SimulatedCluster}). Resolves once every standby is
 * consistent; with `options.t`, it closes when the test ends.
 *
 * @example
 * ```ts
 * it('no acknowledged commit is lost in a failover', async (t) => {
 *   const cluster = await createCluster({ t, standbys: 2, synchronousStandbyNames: 'ANY 1 (s1, s2)', seed: 42 });
 *   await cluster.commit({ count: 10 });
 *   await cluster.failover();
 *   await cluster.settle();
 *   const result = cluster.check();
 *   assert.ok(result.ok, result.report);
 * });
 * ```
 */
export function createCluster(options: SimulationOptions): Promise<SimulatedCluster>;
export function createCluster(first: TeardownContext | SimulationOptions, options: ClusterOptions = {}): Cluster | Promise<SimulatedCluster> {
  if (!isTeardownContext(first)) return startSimulation(first);
  const cluster = new TestCluster(options);
  first.after(() => cluster.close());
  return cluster;
}

function isTeardownContext(value: TeardownContext | SimulationOptions): value is TeardownContext {
  return typeof (value as Partial<TeardownContext>).after === 'function';
}

async function startSimulation(options: SimulationOptions): Promise<SimulatedCluster> {
  const cluster = new SimulatedCluster(options);
  try {
    await cluster.start();
  } catch (err) {
    await cluster.close();
    throw err;
  }
  return cluster;
}

class TestCluster implements Cluster {
  readonly network: MemoryNetwork;
  readonly user: string;
  readonly password: string;
  readonly #options: ClusterOptions;
  readonly #trust: boolean;
  readonly #auth: AuthOptions;
  readonly #segmentSize: number;
  readonly #storages = new Map<string, MemoryStorage>();
  readonly #transports = new Map<string, Transport>();
  readonly #primaries: Primary[] = [];
  readonly #standbys: Standby[] = [];
  readonly #opening = new Set<Promise<unknown>>();
  #closing: Promise<void> | null = null;

  constructor(options: ClusterOptions) {
    this.#options = options;
    this.network = options.network ?? new MemoryNetwork();
    this.user = options.user ?? CLUSTER_DEFAULTS.user;
    this.password = options.password ?? CLUSTER_DEFAULTS.password;
    this.#segmentSize = options.segmentSize ?? CLUSTER_DEFAULTS.segmentSize;
    this.#trust = (options.auth ?? CLUSTER_DEFAULTS.auth) === 'trust';
    this.#auth = this.#trust
      ? { rules: [{ user: this.user, address: 'all', method: 'trust' }] }
      : { users: { [this.user]: { password: this.password } }, rules: [{ user: this.user, address: 'all', method: 'scram-sha-256' }] };
  }

  primary(name: string, options: ClusterPrimaryOptions): Promise<Primary> {
    const { listen = true, ...rest } = options;
    return this.#open(this.#primaries, () =>
      Primary.open({
        ...this.#where(name, rest),
        segmentSize: this.#segmentSize,
        ...this.#serve(name, listen),
        ...rest,
      }),
    );
  }

  standby(name: string, options: ClusterStandbyOptions): Promise<Standby> {
    const { upstream, connection = {}, listen = false, ...rest } = options;
    return this.#open(this.#standbys, () =>
      Standby.open({
        ...this.#where(name, rest),
        primary: {
          transport: this.transport(name),
          address: typeof upstream === 'string' ? upstream : this.address(upstream),
          user: this.user,
          ...(this.#trust ? {} : { password: this.password }),
          applicationName: name,
          ...connection,
        },
        statusIntervalMs: CLUSTER_DEFAULTS.statusIntervalMs,
        retryMinDelayMs: CLUSTER_DEFAULTS.retryMinDelayMs,
        retryMaxDelayMs: CLUSTER_DEFAULTS.retryMaxDelayMs,
        ...this.#serve(name, listen),
        ...rest,
      }),
    );
  }

  storage(name: string): MemoryStorage {
    let storage = this.#storages.get(name);
    if (storage === undefined) this.#storages.set(name, (storage = new MemoryStorage()));
    return storage;
  }

  transport(name: string): Transport {
    let transport = this.#transports.get(name);
    if (transport === undefined) this.#transports.set(name, (transport = this.#options.transport?.(name) ?? this.network.transport(name)));
    return transport;
  }

  address(node: Primary | Standby | string): string {
    if (typeof node === 'string') return this.#options.listenAddress?.(node) ?? `${node}:1`;
    if (node.address === null) throw new WalshipError('INVALID_ARGUMENT', 'the node does not listen: it has no address');
    return node.address;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // A node still opening is closed too, once it is open.
    await Promise.allSettled([...this.#opening]);
    for (const node of [...this.#standbys].reverse()) await node.close().catch(() => undefined);
    for (const node of [...this.#primaries].reverse()) await node.close().catch(() => undefined);
  }

  #open<N extends Primary | Standby>(opened: N[], open: () => Promise<N>): Promise<N> {
    if (this.#closing !== null) return Promise.reject(new WalshipError('INVALID_ARGUMENT', 'the cluster is closed: no more nodes can be opened'));
    const opening = open().then((node) => {
      opened.push(node);
      return node;
    });
    this.#opening.add(opening);
    const done = (): void => void this.#opening.delete(opening);
    opening.then(done, done);
    return opening;
  }

  /** The node's own storage unless the options name a directory or another storage. */
  #where(name: string, options: { readonly dir?: string; readonly storage?: unknown }): { storage?: MemoryStorage } {
    return options.dir === undefined && options.storage === undefined ? { storage: this.storage(name) } : {};
  }

  #serve(name: string, listen: ClusterListen): Pick<PrimaryOptions, 'listen' | 'auth' | 'authFailureDelayMs'> {
    if (listen === false) return {};
    const endpoint = listen === true ? { transport: this.transport(name), address: this.address(name) } : listen;
    return { listen: endpoint, auth: this.#auth, authFailureDelayMs: CLUSTER_DEFAULTS.authFailureDelayMs };
  }
}
