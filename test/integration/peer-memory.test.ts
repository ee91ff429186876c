import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROTOCOL_VERSION, encodeMessage, type ClientMessage } from '../../src/protocol/messages.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';

// Attacks on a primary's memory through its replication port (issue #13): a real process,
// loopback TCP, its memory read after a full GC while the attacker's connections are open.
// Before the fixes each of these grew the primary by hundreds of MiB; the budget asserted here
// is the README's per-connection budget times the connections, plus room for the allocator.

const SCRIPT = join(import.meta.dirname, '..', 'fixtures', 'memory-primary.mjs');
const MiB = 1024 * 1024;
/** What a full GC leaves of a process's own churn, the allocator's free lists included. */
const SLACK = 24 * MiB;

class PrimaryProcess {
  readonly #child: ChildProcess;
  readonly ready: Promise<string>;
  #nextId = 1;
  readonly #replies = new Map<number, (reply: Record<string, unknown>) => void>();

  constructor(dir: string) {
    this.#child = fork(SCRIPT, [JSON.stringify({ dir })], { execArgv: ['--import', 'tsx', '--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.ready = new Promise((resolve, reject) => {
      this.#child.once('exit', (code) => reject(new Error(`the primary exited (${String(code)})`)));
      this.#child.on('message', (message: Record<string, unknown>) => {
        if (message['ready'] === true) resolve(message['address'] as string);
        const reply = this.#replies.get(message['id'] as number);
        if (reply !== undefined) {
          this.#replies.delete(message['id'] as number);
          reply(message);
        }
      });
    });
  }

  ask(cmd: string): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#replies.set(id, resolve);
      this.#child.send({ id, cmd });
    });
  }

  /** The primary's RSS after two full GCs. */
  async rss(): Promise<number> {
    return (await this.ask('memory'))['rss'] as number;
  }

  /**
   * The most the primary's RSS (after full GCs) exceeds `before` over a few seconds: a primary
   * still working through what it took keeps growing for a while.
   */
  async growthSince(before: number): Promise<number> {
    let most = 0;
    for (let i = 0; i < 6; i++) {
      most = Math.max(most, (await this.rss()) - before);
      await sleep(500);
    }
    return most;
  }

  async close(): Promise<void> {
    await within(this.ask('close'), 20_000, 'the primary to close').catch(() => this.#child.kill('SIGKILL'));
  }
}

/** A raw connection that writes what it is given and never reads a byte of the answers. */
async function rawConnection(address: string): Promise<Socket> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const socket = connect({ host, port });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  socket.pause();
  return socket;
}

function startup(user: string): ClientMessage {
  return { kind: 'startup', protocolMajor: PROTOCOL_VERSION.major, protocolMinor: PROTOCOL_VERSION.minor, user, applicationName: 'attacker', options: [] };
}

/** `frame` repeated to about `bytes`, in 1 MiB buffers. */
function flood(frame: Buffer, bytes: number): Buffer[] {
  const perBuffer = Math.max(1, Math.floor(MiB / frame.length));
  const buffer = Buffer.concat(Array.from({ length: perBuffer }, () => frame));
  return Array.from({ length: Math.ceil(bytes / buffer.length) }, () => buffer);
}

/**
 * Writes `buffers` on each socket (queued in this process if the primary stops reading) and
 * resolves once the primary has taken everything or has stopped taking more (no byte for
 * 300 ms): what it holds then is what the attack made it hold.
 */
async function send(sockets: readonly Socket[], buffers: readonly Buffer[]): Promise<void> {
  const total = buffers.reduce((sum, b) => sum + b.length, 0);
  for (const socket of sockets) for (const buffer of buffers) socket.write(buffer);
  const taken = (): number => sockets.reduce((sum, s) => sum + s.bytesWritten - s.writableLength, 0);
  for (let last = -1; ; ) {
    await sleep(300);
    const now = taken();
    if (now >= total * sockets.length || now === last) return;
    last = now;
  }
}

async function withPrimary(work: (primary: PrimaryProcess, address: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = await tempDir();
  const primary = new PrimaryProcess(dir);
  try {
    const address = await within(primary.ready, 30_000, 'the primary to start');
    await work(primary, address);
  } finally {
    await primary.close();
    await cleanup();
  }
}

describe("a peer cannot grow the primary's memory beyond its budget", () => {
  it('an authenticated client that pipelines commands and never reads the answers', async () => {
    await withPrimary(async (primary, address) => {
      const before = await primary.rss();
      const socket = await rawConnection(address);
      // 10 MB of IDENTIFY_SYSTEM: each answer is about 40 bytes, so 80 MB of answers at 8×.
      await send([socket], [encodeMessage(startup('repl')), ...flood(encodeMessage({ kind: 'identifySystem' }), 10 * MiB)]);
      const grown = await primary.growthSince(before);
      socket.destroy();
      assert.ok(grown < 2 * MiB + SLACK, `the primary grew by ${(grown / MiB).toFixed(1)} MiB`);
    });
  });

  it('an authenticated client whose command is blocked (DROP_REPLICATION_SLOT … WAIT) and sends on', async () => {
    await withPrimary(async (primary, address) => {
      // The slot is in use by a connection streaming from it (that never reads either).
      const holder = await rawConnection(address);
      holder.write(encodeMessage(startup('repl')));
      holder.write(encodeMessage({ kind: 'startReplication', slotName: 'held', startLsn: 0x100_0000, timeline: 1, checkFrom: null, checkCrc: 0 }));
      for (let i = 0; i < 200 && !(await primary.ask('slots'))['slots']?.toString().includes('true'); i++) await sleep(50);
      const slots = (await primary.ask('slots'))['slots'] as { slotName: string; active: boolean }[];
      assert.deepEqual(slots, [{ slotName: 'held', active: true }]);
      const before = await primary.rss();
      const socket = await rawConnection(address);
      const feedback = encodeMessage({ kind: 'hotStandbyFeedback', sendTime: 0, horizon: Buffer.alloc(1024, 7) });
      await send([socket], [encodeMessage(startup('repl')), encodeMessage({ kind: 'dropReplicationSlot', slotName: 'held', wait: true }), ...flood(feedback, 100 * MiB)]);
      const grown = await primary.growthSince(before);
      socket.destroy();
      holder.destroy();
      assert.ok(grown < 2 * MiB + SLACK, `the primary grew by ${(grown / MiB).toFixed(1)} MiB`);
    });
  });

  it('unauthenticated peers that send on while their refusal is delayed', async () => {
    await withPrimary(async (primary, address) => {
      const before = await primary.rss();
      const sockets = await Promise.all(Array.from({ length: 60 }, () => rawConnection(address)));
      // A startup-shaped frame of about 35 KB: 32 options of 1 KiB.
      const big = encodeMessage({ ...startup('nobody'), options: Array.from({ length: 32 }, (_, i) => ({ key: `k${i}`, value: 'v'.repeat(1024) })) } as ClientMessage);
      await send(sockets, [encodeMessage(startup('nobody')), ...flood(big, 2 * MiB)]);
      const grown = await primary.growthSince(before);
      for (const socket of sockets) socket.destroy();
      // The README's budget: 256 KiB per connection authenticating.
      assert.ok(grown < 60 * 0.25 * MiB + SLACK, `the primary grew by ${(grown / MiB).toFixed(1)} MiB`);
    });
  });
});
