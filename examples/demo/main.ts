/**
 * `npm run demo`: replication and failover, with real processes, files and TCP.
 *
 * A primary (p) and two standbys (s1, s2), each a process of its own (node.ts) with a data
 * directory of its own, replicate a key-value store (kv-store.ts) under a steady load of
 * commits at synchronousCommit 'on' with synchronousStandbyNames 'ANY 1 (s1, s2)': a commit
 * is acknowledged once it is durable on p and on at least one standby. Then:
 *
 * 1. p is killed (SIGKILL) in the middle of the load;
 * 2. the standby that received the most WAL is promoted: a primary on timeline 2;
 * 3. the other standby is pointed at it and follows it onto timeline 2;
 * 4. p's directory is opened as a standby of the new primary: it rejoins, rewinding what it
 *    wrote that no standby had confirmed (never an acknowledged commit);
 * 5. every commit acknowledged before the kill is looked for on the new primary, and the
 *    three nodes' states are compared.
 *
 * A status table shows each node's state and positions as it goes (redrawn in place on a
 * terminal, printed every few seconds otherwise). The data directories stay in a temporary
 * folder for inspection. Exit code 0 on success; on any failure, one line saying why, and no
 * node process is left running.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatLsn } from 'walship';
import { Display } from './display.js';
import type { NodeConfig } from './messages.js';
import { DEADLINE_MS, NodeProcess, killAll } from './node-process.js';

const LOAD_MS = 5_000;
const SYNC_NAMES = 'ANY 1 (s1, s2)';
const PASSWORD = 'demo-replication-pw';

const display = new Display(process.stdout);
const nodes: NodeProcess[] = [];
const killed = new Set<NodeProcess>();

/** Ends the demo: one line on stderr, every node killed, a non-zero exit code. */
function fail(message: string, code = 1): never {
  display.stop();
  killAll();
  console.error(`\ndemo failed: ${message}`);
  process.exit(code);
}
process.on('SIGINT', () => fail('interrupted (SIGINT)', 130));
process.on('SIGTERM', () => fail('terminated (SIGTERM)', 143));
process.on('exit', killAll);

async function start(dir: string, config: Omit<NodeConfig, 'dir' | 'password'>): Promise<NodeProcess> {
  const node = new NodeProcess({ ...config, dir: join(dir, config.name), password: PASSWORD });
  node.on('crash', (message) => fail(message));
  node.on('log', (text) => display.log(`${node.name}: ${text}`));
  await node.ready;
  nodes.push(node);
  return node;
}

/** Waits until `done()` holds, checking every 50 ms, or fails after DEADLINE_MS. */
async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = performance.now() + DEADLINE_MS;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The status table, from every node's latest status; the newest node of a name wins. */
function refresh(force = false): void {
  const latest = new Map(nodes.map((node) => [node.name, node]));
  const sorted = [...latest.values()].sort((x, y) => x.name.localeCompare(y.name));
  display.table(sorted.map((node) => ({ name: node.name, status: node.status, ...(killed.has(node) ? { gone: 'killed' } : {}) })), force);
}

async function demo(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'walship-demo-'));
  display.log(`data directories in ${dir} (kept afterwards)`);
  const table = setInterval(() => refresh(), 200);

  // A primary and two standbys, each its own process, with SCRAM authentication on loopback TCP.
  const p = await start(dir, { name: 'p', role: 'primary', synchronousStandbyNames: SYNC_NAMES });
  display.log(`p: primary on ${p.address} (pid ${p.pid}), synchronousStandbyNames '${SYNC_NAMES}'`);
  const [s1, s2] = await Promise.all([start(dir, { name: 's1', role: 'standby', upstream: p.address }), start(dir, { name: 's2', role: 'standby', upstream: p.address })]);
  await until('s1 and s2 to stream as quorum standbys', () => ['s1', 's2'].every((name) => p.status?.standbys.some((r) => r.applicationName === name && r.state === 'streaming' && r.syncState === 'quorum')));
  display.log(`s1, s2: standbys of p, streaming (pids ${s1.pid}, ${s2.pid})`);

  const { clients } = await p.call('load', { on: true });
  display.log(`p: ${clients} clients commit new keys at synchronousCommit 'on' (each waits for p's fdatasync and one standby's)`);
  await sleep(LOAD_MS);

  // 1. The failure.
  display.log(`SIGKILL p (pid ${p.pid})`);
  await p.kill();
  killed.add(p);
  const acknowledged = [...p.acked];
  const wasAcknowledged = new Set(acknowledged);
  const killedAt = performance.now();
  display.log(`p is gone: ${acknowledged.length} commits had been acknowledged, each durable on p and on s1 or s2`);
  if (acknowledged.length === 0) throw new Error('p acknowledged no commit before it was killed');

  // 2. Promote the standby that received the most (both are prefixes of p's WAL: the further
  //    one holds everything the other does, so every commit a standby confirmed).
  await until('s1 and s2 to notice', () => [s1, s2].every((s) => s.status?.state !== 'streaming'));
  const [received1, received2] = (await Promise.all([s1.call('status', {}), s2.call('status', {})])).map((s) => s.flushLsn ?? 0);
  const [winner, other] = (received2 ?? 0) > (received1 ?? 0) ? [s2, s1] : [s1, s2];
  display.log(`s1 received WAL up to ${formatLsn(received1 ?? 0)}, s2 up to ${formatLsn(received2 ?? 0)}: promoting ${winner.name}`);
  const newSyncNames = `ANY 1 (${other.name}, p)`;
  const promoted = await winner.call('promote', { synchronousStandbyNames: newSyncNames });
  display.log(`${winner.name}: promoted in ${promoted.ms} ms: primary on timeline ${promoted.timeline} from ${formatLsn(promoted.switchLsn)}, synchronousStandbyNames '${newSyncNames}'`);
  await winner.call('load', { on: true });

  // 3. The other standby follows the new primary (PostgreSQL: primary_conninfo, reloaded).
  await other.call('follow', { upstream: winner.address });
  display.log(`${other.name}: reconfigure({ primary: ${winner.name} at ${winner.address} })`);
  await until(`${other.name} to stream on timeline ${promoted.timeline}`, () => other.status?.timeline === promoted.timeline && other.status.state === 'streaming');
  await until(`a commit acknowledged on ${winner.name}`, () => winner.firstAckAt !== null);
  const resumedMs = (winner.firstAckAt ?? killedAt) - killedAt;
  display.log(`${winner.name}: commits acknowledged again, ${(resumedMs / 1_000).toFixed(1)} s after the kill`);

  // 4. The old primary's directory rejoins, as a standby of the new primary.
  const rejoined = await start(dir, { name: 'p', role: 'standby', upstream: winner.address });
  display.log(`p: its directory opened again (pid ${rejoined.pid}), as a standby of ${winner.name}`);
  await until(`p to stream on timeline ${promoted.timeline}`, () => rejoined.status?.timeline === promoted.timeline && rejoined.status.state === 'streaming');
  const rewind = rejoined.rewinds[0];
  if (rewind === undefined) {
    display.log(`p: nothing to rewind: everything it wrote is on timeline ${promoted.timeline}'s history`);
  } else {
    const shown = rewind.keys.slice(0, 4).join(', ') + (rewind.keys.length > 4 ? ', ...' : '');
    display.log(`p: rewind: set aside its WAL from ${formatLsn(rewind.switchLsn)} to ${formatLsn(rewind.endLsn)} (${rewind.setAside.map((name) => `${name}.diverged`).join(', ')}): ` +
      `${rewind.keys.length} commits no standby had confirmed, never acknowledged (${shown}); application restored from ${rewind.restoredFrom}`);
    const discardedAcks = rewind.keys.filter((key) => wasAcknowledged.has(key));
    if (discardedAcks.length > 0) throw new Error(`the rewind discarded ${discardedAcks.length} acknowledged commits, e.g. ${discardedAcks[0]}`);
  }
  await sleep(3_000); // the three nodes under load again: see the table

  // 5. Every commit acknowledged before the kill is on the new primary, and the nodes agree.
  await winner.call('load', { on: false });
  const { missing } = await winner.call('check', { keys: acknowledged });
  if (missing.length > 0) throw new Error(`${missing.length} acknowledged commits are missing on ${winner.name}, e.g. ${missing[0]}`);
  display.log(`check: the ${acknowledged.length} commits acknowledged before the kill are all on ${winner.name}`);
  const reference = await winner.call('digest', {});
  for (const node of [other, rejoined]) {
    const copy = await node.call('digest', { lsn: reference.lsn });
    if (copy.digest !== reference.digest) throw new Error(`${node.name}'s store differs from ${winner.name}'s at ${formatLsn(reference.lsn)}`);
  }
  display.log(`check: ${winner.name}, ${other.name} and p hold the same ${reference.keys} keys at ${formatLsn(reference.lsn)} (digest ${reference.digest})`);

  clearInterval(table);
  refresh(true);
  display.stop();
  await Promise.all([other.close(), rejoined.close()]);
  await winner.close();
  const summary = [
    ['commits acknowledged before the kill', `${acknowledged.length}, lost 0`],
    ['promotion', `${winner.name} to timeline ${promoted.timeline} in ${promoted.ms} ms; commits acknowledged again ${(resumedMs / 1_000).toFixed(1)} s after the kill`],
    [`other standby ${other.name}`, `follows timeline ${promoted.timeline}`],
    ['old primary p', `rejoined as a standby on timeline ${promoted.timeline}` + (rewind === undefined ? ', nothing to rewind' : `, ${rewind.keys.length} unacknowledged commits rewound`)],
    ['data directories', dir],
  ];
  console.log(`\nsummary\n${summary.map(([what, result]) => `  ${what?.padEnd(38)} ${result}`).join('\n')}`);
}

const watchdog = setTimeout(() => fail('the demo took more than 90 s'), 90_000);
watchdog.unref();
try {
  await demo();
} catch (err) {
  fail(err instanceof Error ? err.message : String(err));
}
