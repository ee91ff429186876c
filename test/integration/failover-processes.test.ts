import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';

const SCRIPT = join(import.meta.dirname, '..', 'fixtures', 'failover-node.mjs');
const LIMIT_MS = 60_000;

/** A walship node in a child process, driven over IPC (test/fixtures/failover-node.mjs). */
class Node {
  readonly acked: string[] = [];
  readonly events: Record<string, unknown>[] = [];
  address = '';
  #next = 0;
  #replies = new Map<number, (body: Record<string, unknown>) => void>();
  readonly #child: ChildProcess;
  readonly ready: Promise<void>;

  constructor(config: Record<string, unknown>) {
    this.#child = fork(SCRIPT, [JSON.stringify(config)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.ready = new Promise((resolve, reject) => {
      this.#child.once('exit', (code, signal) => reject(new Error(`node exited early (${code ?? signal})`)));
      this.#child.on('message', (raw) => {
        const message = raw as Record<string, unknown>;
        if (message['ready'] === true) {
          this.address = String(message['address']);
          resolve();
        } else if (Array.isArray(message['acked'])) this.acked.push(...(message['acked'] as string[]));
        else if (typeof message['event'] === 'string') this.events.push(message);
        else if (typeof message['id'] === 'number') this.#replies.get(message['id'])?.(message);
      });
    });
  }

  async call(cmd: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.#next++;
    const answer = new Promise<Record<string, unknown>>((resolve) => this.#replies.set(id, resolve));
    this.#child.send({ id, cmd, ...args });
    const body = await within(answer, LIMIT_MS, `${cmd} on a child node`);
    if (typeof body['error'] === 'string') throw Object.assign(new Error(body['error']), { code: body['code'] });
    return body;
  }

  async applied(): Promise<{ applied: string[]; timeline: number }> {
    return (await this.call('applied')) as unknown as { applied: string[]; timeline: number };
  }

  named(event: string): Record<string, unknown>[] {
    return this.events.filter((e) => e['event'] === event);
  }

  async event(event: string): Promise<Record<string, unknown>> {
    return within(
      (async () => {
        for (;;) {
          const found = this.named(event)[0];
          if (found !== undefined) return found;
          await sleep(10);
        }
      })(),
      LIMIT_MS,
      `the ${event} event`,
    );
  }

  kill(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.kill('SIGKILL');
    return exited;
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    await this.call('close').catch(() => undefined);
    await this.kill();
  }
}

async function start(config: Record<string, unknown>, nodes: Node[]): Promise<Node> {
  const node = new Node(config);
  nodes.push(node);
  await within(node.ready, LIMIT_MS, `${String(config['role'])} ${String(config['name'] ?? '')} to open`);
  return node;
}

/** A temp directory for the test's nodes, and the list of nodes, both closed and removed after the test. */
async function workspace(t: { after: (fn: () => Promise<void>) => void }): Promise<{ dir: string; nodes: Node[] }> {
  const { dir, cleanup } = await tempDir();
  const nodes: Node[] = [];
  t.after(async () => {
    for (const node of nodes) await node.close().catch(() => undefined);
    await cleanup();
  });
  return { dir, nodes };
}

/** Waits until `node`'s load has had `count` commits acknowledged. */
async function acknowledged(node: Node, count: number, what: string): Promise<void> {
  await within(
    (async () => {
      while (node.acked.length < count) await sleep(20);
    })(),
    LIMIT_MS,
    what,
  );
}

describe('failover with real processes, directories and TCP', () => {
  it('SIGKILL the primary under load; promote the sync standby; the async one follows by its address list; the old primary rejoins', async (t) => {
    const { dir, nodes } = await workspace(t);
    const p = await start({ role: 'primary', dir: join(dir, 'p'), synchronousStandbyNames: 'FIRST 1 (s1)' }, nodes);
    const s1 = await start({ role: 'standby', dir: join(dir, 's1'), name: 's1', addresses: [p.address], listen: true }, nodes);
    const s2 = await start({ role: 'standby', dir: join(dir, 's2'), name: 's2', addresses: [p.address, s1.address] }, nodes);
    await p.call('load', { concurrency: 4 });
    await acknowledged(p, 300, 'commits acknowledged under load');
    await p.kill();
    const acked = [...p.acked];

    const promoted = await s1.call('promote');
    assert.equal(promoted['timeline'], 2);
    const { lsn } = await s1.call('commit', { tag: 'after-failover' });
    await s2.call('wait-replay', { lsn });
    const [a1, a2] = [await s1.applied(), await s2.applied()];
    assert.equal(a2.timeline, 2, 's2 follows timeline 2');
    for (const tag of acked) {
      assert.ok(a1.applied.includes(tag), `acknowledged ${tag} is on the promoted standby`);
    }
    assert.deepEqual(a2.applied, a1.applied, 's2 holds exactly what s1 does');
    assert.equal(s2.named('timeline:switch').length, 1);

    // The old primary comes back as a standby of the new one.
    const rejoined = await start({ role: 'standby', dir: join(dir, 'p'), name: 'p', addresses: [s1.address] }, nodes);
    // Until it has connected, it is still on its own timeline 1 (positions there mean nothing on 2).
    await within(
      (async () => {
        while ((await rejoined.applied()).timeline !== 2) await sleep(20);
      })(),
      LIMIT_MS,
      'the old primary to move onto timeline 2',
    );
    const { lsn: later } = await s1.call('commit', { tag: 'after-rejoin' });
    await rejoined.call('wait-replay', { lsn: later });
    const [n1, np] = [await s1.applied(), await rejoined.applied()];
    assert.deepEqual(np.applied, n1.applied, "the old primary's state is the new primary's");
    assert.equal(np.timeline, 2);
    for (const rewind of rejoined.named('rewind')) {
      const discarded = rewind['discarded'] as string[];
      assert.deepEqual(discarded.filter((tag) => acked.includes(tag)), [], 'no acknowledged commit was discarded');
    }
  });

  describe('with early WAL (the primary sends while its fdatasync runs)', () => {
    /** A primary with earlySend and its synchronous standby s1 accepting early WAL, under load, until 300 commits are acknowledged; then p is killed. */
    async function killedUnderLoad(dir: string, nodes: Node[]): Promise<{ s1: Node; acked: string[]; address: string }> {
      const p = await start({ role: 'primary', dir: join(dir, 'p'), synchronousStandbyNames: 'FIRST 1 (s1)', earlySend: true }, nodes);
      const s1 = await start({ role: 'standby', dir: join(dir, 's1'), name: 's1', addresses: [p.address], earlySend: true }, nodes);
      await p.call('load', { concurrency: 4 });
      await acknowledged(p, 300, 'commits acknowledged under load');
      await p.kill();
      return { s1, acked: [...p.acked], address: p.address };
    }

    it('SIGKILL the primary under load; the promoted standby holds every acknowledged commit', async (t) => {
      const { dir, nodes } = await workspace(t);
      const { s1, acked } = await killedUnderLoad(dir, nodes);
      await s1.call('promote');
      const { applied } = await s1.applied();
      for (const tag of acked) assert.ok(applied.includes(tag), `acknowledged ${tag} is on the promoted standby`);
      assert.equal(new Set(applied).size, applied.length, 'no batch applied twice');
    });

    it('SIGKILL the primary under load and restart it; the standby ends with exactly its batches, every acknowledged one among them', async (t) => {
      const { dir, nodes } = await workspace(t);
      const { s1, acked, address } = await killedUnderLoad(dir, nodes);
      // On its old address, where s1 looks for it.
      const p = await start({ role: 'primary', dir: join(dir, 'p'), synchronousStandbyNames: 'FIRST 1 (s1)', earlySend: true, address }, nodes);
      const { lsn } = await p.call('commit', { tag: 'after-restart' });
      await s1.call('wait-replay', { lsn });
      const [ap, as] = [await p.applied(), await s1.applied()];
      assert.deepEqual(as.applied, ap.applied, "s1 holds exactly the restarted primary's batches");
      for (const tag of acked) assert.ok(ap.applied.includes(tag), `acknowledged ${tag} survived the primary's kill`);
    });
  });

  it('a chain A → B → C: A is killed, B promoted, C follows without reconnecting', async (t) => {
    const { dir, nodes } = await workspace(t);
    const a = await start({ role: 'primary', dir: join(dir, 'a') }, nodes);
    const b = await start({ role: 'standby', dir: join(dir, 'b'), name: 'b', addresses: [a.address], listen: true }, nodes);
    const c = await start({ role: 'standby', dir: join(dir, 'c'), name: 'c', addresses: [b.address] }, nodes);
    await a.call('load', { concurrency: 2 });
    await acknowledged(a, 200, 'commits on A');
    await a.kill();
    await sleep(100);
    const connectedBefore = c.named('primary:connected').length;
    await b.call('promote');
    const { lsn } = await b.call('commit', { tag: 'on-b' });
    await c.call('wait-replay', { lsn });
    assert.equal(c.named('primary:connected').length, connectedBefore, 'C never reconnected');
    assert.equal(c.named('timeline:switch').length, 1);
    const [ab, ac] = [await b.applied(), await c.applied()];
    assert.deepEqual(ac.applied, ab.applied);
    assert.equal(ac.timeline, 2);
  });
});
