// One walship node in a process of its own, started by main.ts with its config (messages.ts)
// as JSON in argv[2]: a Primary or a Standby on a real data directory (`dir`: NodeStorage,
// fdatasync) and loopback TCP, replicating a KvStore. It runs the commit load when asked and
// answers main.ts's commands over the IPC channel. main.ts may SIGKILL it at any moment.
import { Primary, Standby, TcpTransport, formatLsn, type StandbyPrimaryOptions } from 'walship';
import { KvStore } from './kv-store.js';
import type { CommandName, Commands, NodeConfig, NodeMessage, NodeStatus, Request } from './messages.js';

/** Committers running at once: concurrent commits share one write and one fdatasync (group commit). */
const CLIENTS = 8;
const STATUS_INTERVAL_MS = 250;

const config = JSON.parse(process.argv[2] ?? '') as NodeConfig;
const send = (message: NodeMessage, then: () => void = () => {}): void => void process.send?.(message, then);
/** Ends the node, telling main.ts why in one line. */
const die = (message: string): void => send({ kind: 'fatal', message }, () => process.exit(1));
process.on('uncaughtException', (err) => die(err instanceof Error ? err.message : String(err)));
// main.ts gone (it failed, or was killed): so is this node. Registered before the first await,
// so a parent that dies while the node opens is seen; a channel that closed while this script
// was still loading fired its event before anyone listened, so that is checked here once.
process.on('disconnect', () => process.exit(0));
if (!process.connected) process.exit(0);
const store = new KvStore();
const transport = new TcpTransport();
// Every node serves standbys (a standby so that it can be promoted with its listener), and
// only to the replication user with its password (SCRAM), from loopback.
const serving = {
  listen: { transport, address: '127.0.0.1:0' },
  auth: { users: { repl: { password: config.password } }, rules: [{ user: 'repl', address: '127.0.0.1/32', method: 'scram-sha-256' as const }] },
};
const upstream = (address: string): StandbyPrimaryOptions => ({ transport, address, user: 'repl', password: config.password, applicationName: config.name });

let primary: Primary | null = null;
let standby: Standby | null = null;
if (config.role === 'primary') {
  primary = await Primary.open({ dir: config.dir, application: store, ...serving, synchronousStandbyNames: config.synchronousStandbyNames ?? '' });
  primary.on('failed', ({ error }) => die(`${error.code}: ${error.message}`));
} else {
  standby = await Standby.open({ dir: config.dir, application: store, ...serving, primary: upstream(config.upstream ?? ''), retryMaxDelayMs: 1_000 });
  let connected = false; // log a lost connection once, not each failed retry
  standby.on('primary:connected', ({ address }) => ((connected = true), send({ kind: 'event', text: `connected to its upstream at ${address}` })));
  standby.on('primary:disconnected', ({ error }) => {
    if (connected) send({ kind: 'event', text: `lost its upstream (${error?.code ?? 'connection closed'}); retrying` });
    connected = false;
  });
  standby.on('timeline:switch', ({ timeline, switchLsn }) => send({ kind: 'event', text: `timeline:switch: follows timeline ${timeline} from ${formatLsn(switchLsn)}` }));
  standby.on('rewind', (e) => {
    const keys = e.batches.flatMap((batch) => batch.entries.map(({ data }) => Buffer.from(data).toString().split('=')[0] ?? ''));
    send({ kind: 'rewind', switchLsn: e.switchLsn, endLsn: e.endLsn, keys, restoredFrom: e.restoredFrom, setAside: e.setAside });
  });
  standby.on('failed', ({ error }) => die(`${error.code}: ${error.message}`));
}
send({ kind: 'ready', address: (primary ?? standby)?.address ?? '' });

// The status table's figures: this node's own positions, and its standbys as it sees them.
const rate: { at: number; applied: number }[] = [];
function status(): NodeStatus {
  rate.push({ at: performance.now(), applied: store.applied });
  while (rate.length > 1 && rate[rate.length - 1]!.at - rate[0]!.at > 1_000) rate.shift();
  const first = rate[0]!;
  const last = rate[rate.length - 1]!;
  const commitsPerSecond = last.at > first.at ? ((last.applied - first.applied) * 1_000) / (last.at - first.at) : 0;
  const node = primary ?? standby!;
  const standbys = node.replicationStatus().map((r) => ({
    applicationName: r.applicationName, state: r.state, syncState: r.syncState, sentLsn: r.sentLsn, writeLsn: r.writeLsn,
    flushLsn: r.flushLsn, replayLsn: r.replayLsn, writeLagMs: r.writeLagMs, flushLagMs: r.flushLagMs, replayLagMs: r.replayLagMs,
  }));
  return primary !== null
    ? { role: 'primary', state: 'primary', timeline: primary.timeline, flushLsn: primary.flushLsn, replayLsn: primary.appliedLsn, commitsPerSecond, standbys }
    : { role: 'standby', state: standby!.state, timeline: standby!.timeline, flushLsn: standby!.receiveLsn, replayLsn: standby!.replayLsn, commitsPerSecond, standbys };
}
setInterval(() => send({ kind: 'status', status: status() }), STATUS_INTERVAL_MS).unref();

// The load: CLIENTS committers, each setting a new key per commit at synchronousCommit 'on'
// (durable here and, with synchronousStandbyNames, on the quorum). main.ts learns every key
// whose commit was acknowledged.
let loading = false;
let committers: Promise<void>[] = [];
let acked: string[] = [];
let sequence = 0;
async function committer(node: Primary): Promise<void> {
  while (loading) {
    const key = `${config.name}:${++sequence}`;
    await node.commit(KvStore.set(key, new Date().toISOString()), { synchronousCommit: 'on' });
    acked.push(key);
  }
}
setInterval(() => {
  if (acked.length === 0) return;
  send({ kind: 'acked', keys: acked });
  acked = [];
}, 20).unref();

const commands: { [C in CommandName]: (args: Commands[C]['args']) => Promise<Commands[C]['reply']> } = {
  async load({ on }) {
    loading = on;
    if (on) committers = Array.from({ length: CLIENTS }, () => committer(primary!));
    else await Promise.all(committers);
    return { clients: CLIENTS };
  },
  status: () => Promise.resolve(status()),
  async promote({ synchronousStandbyNames }) {
    const started = performance.now();
    let switchLsn = 0;
    standby!.once('promoted', (e) => (switchLsn = e.switchLsn));
    primary = await standby!.promote({ synchronousStandbyNames });
    primary.on('failed', ({ error }) => die(`${error.code}: ${error.message}`));
    standby = null;
    return { timeline: primary.timeline, switchLsn, ms: Math.round(performance.now() - started) };
  },
  follow({ upstream: address }) {
    standby!.reconfigure({ primary: upstream(address) });
    return Promise.resolve({});
  },
  check: ({ keys }) => Promise.resolve({ missing: keys.filter((key) => store.get(key) === undefined) }),
  async digest({ lsn }) {
    if (lsn !== undefined && standby !== null) await standby.waitForReplay(lsn, { timeoutMs: 20_000 });
    return { lsn: (primary?.appliedLsn ?? standby!.replayLsn)!, keys: store.size, digest: store.digest() };
  },
  async close() {
    await (primary ?? standby!).close({ signal: AbortSignal.timeout(5_000) });
    return {};
  },
};

process.on('message', (raw) => {
  const { id, cmd, args } = raw as Request;
  (commands[cmd] as (a: typeof args) => Promise<unknown>)(args).then(
    (body) => send({ kind: 'reply', id, body }, cmd === 'close' ? () => process.disconnect() : undefined),
    (err: unknown) => send({ kind: 'reply', id, error: err instanceof Error ? err.message : String(err) }),
  );
});
