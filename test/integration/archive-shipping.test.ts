import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FileSystemArchive, Primary, Standby, TcpTransport, type Application, type CommittedBatch, type Lsn } from '../../src/index.js';
import { seededRandom } from '../../src/testing/index.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';

// Archiving and log shipping on real files, real processes and TCP (#14).

const SCRIPT = join(import.meta.dirname, '..', 'fixtures', 'archiving-primary.mjs');
const LIMIT_MS = 60_000;
const SEGMENT_NAME = /^[0-9A-F]{24}$/;

/** Tags of applied entries, in order; snapshots are the list. */
class TagApp implements Application {
  tags: string[] = [];
  apply(batch: CommittedBatch): void {
    for (const entry of batch.entries) this.tags.push(Buffer.from(entry.data).toString().replace(/\.+$/, ''));
  }
  async snapshot(): Promise<Buffer> {
    return Buffer.from(JSON.stringify(this.tags));
  }
  async restore(snapshot: { bytes(): Promise<Uint8Array> }): Promise<void> {
    this.tags = JSON.parse(Buffer.from(await snapshot.bytes()).toString()) as string[];
  }
}

/** Runs the archiving primary child until `killAfterMs`, then SIGKILLs it; resolves with the tags it acknowledged. */
function runAndKill(config: Record<string, unknown>, killAfterMs: number): Promise<string[]> {
  return within(
    new Promise((resolve, reject) => {
      const acked: string[] = [];
      const child = fork(SCRIPT, [JSON.stringify(config)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      child.on('message', (raw) => {
        const message = raw as { ready?: boolean; acked?: string[]; finished?: boolean };
        if (message.ready === true) setTimeout(() => child.kill('SIGKILL'), killAfterMs);
        if (message.acked !== undefined) acked.push(...message.acked);
        if (message.finished === true) resolve(acked);
      });
      child.on('exit', (code, signal) => (signal === 'SIGKILL' || code === 0 ? resolve(acked) : reject(new Error(`the child exited with ${code ?? signal}`))));
    }),
    LIMIT_MS,
    'the archiving primary',
  );
}

/** A temporary directory, removed after the test once everything `closeLater` was given is closed. */
async function workspace(t: { after(fn: () => Promise<void>): unknown }): Promise<{ root: string; closeLater: (node: { close(): Promise<void> }) => void }> {
  const { dir, cleanup } = await tempDir();
  const nodes: { close(): Promise<void> }[] = [];
  t.after(async () => {
    for (const node of nodes.reverse()) await node.close().catch(() => undefined);
    await cleanup();
  });
  return { root: dir, closeLater: (node) => void nodes.push(node) };
}

async function waitFor(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  await within(
    (async () => {
      while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
    LIMIT_MS,
    what,
  );
}

describe('archiving on real files', () => {
  it('a primary SIGKILLed again and again while it archives loses nothing: the archive holds every completed segment, byte for byte, and an archive-only standby replays every acknowledged commit', async (t) => {
    const { root, closeLater } = await workspace(t);
    const dir = join(root, 'primary');
    const archiveDir = join(root, 'archive');
    const standbyDir = join(root, 'standby');
    // The cluster is made, and its base backup taken, before anything is committed.
    const first = await Primary.open({ dir, application: new TagApp(), segmentSize: 64 * 1024 });
    await first.baseBackup({ dir: standbyDir });
    await first.close();
    const random = seededRandom(1414);
    const acked: string[] = [];
    // Each run's tags are its own: a commit durable but not acknowledged before the kill is never repeated.
    for (let run = 0; run < 6; run++) {
      acked.push(...(await runAndKill({ dir, archiveDir, run }, 150 + Math.floor(random() * 350))));
    }
    await runAndKill({ dir, archiveDir, run: 6, finish: true }, LIMIT_MS);
    assert.ok(acked.length > 100, `${acked.length} commits acknowledged`);
    const archive = new FileSystemArchive(archiveDir);
    const archived = (await archive.list()).filter((name) => SEGMENT_NAME.test(name));
    const local = (await readdir(dir)).filter((name) => SEGMENT_NAME.test(name)).sort();
    // Every segment but the last one written (the open one) is complete and archived.
    const lastWritten = local.filter((name) => archived.includes(name)).at(-1) as string;
    for (const name of local.filter((n) => n <= lastWritten)) {
      assert.ok(archived.includes(name), `${name} archived`);
      assert.ok((await readFile(join(dir, name))).equals(Buffer.from((await archive.get(name)) as Uint8Array)), `${name} archived byte for byte`);
    }
    const app = new TagApp();
    const standby = await Standby.open({ dir: standbyDir, application: app, restore: archive, restoreIntervalMs: 20 });
    closeLater(standby);
    const replayed = new Set<string>();
    await waitFor(() => {
      for (const tag of app.tags) replayed.add(tag);
      return acked.every((tag) => replayed.has(tag));
    }, 'the archive-only standby to replay every acknowledged commit');
    assert.deepEqual(acked.filter((tag) => !replayed.has(tag)), [], 'every acknowledged commit replayed');
    assert.equal(new Set(app.tags).size, app.tags.length, 'none twice');
  });

  it('over TCP: a standby that fell behind what the primary keeps restores the gap from a FileSystemArchive, then streams', async (t) => {
    const { root, closeLater } = await workspace(t);
    const archive = new FileSystemArchive(join(root, 'archive'));
    const transport = new TcpTransport();
    const primaryApp = new TagApp();
    const primary = await Primary.open({
      dir: join(root, 'p'),
      application: primaryApp,
      segmentSize: 64 * 1024,
      synchronousCommit: 'local',
      listen: { transport, address: '127.0.0.1:0' },
      auth: { rules: [{ user: 'repl', address: 'all', method: 'trust' }] },
      archive: { mode: 'on', archiver: archive },
    });
    closeLater(primary);
    const commit = async (from: number, count: number): Promise<Lsn> => {
      let lsn = 0;
      for (let i = from; i < from + count; i++) lsn = (await primary.commit([Buffer.from(`t${i}`.padEnd(700, '.'))])).lsn;
      return lsn;
    };
    const options = {
      dir: join(root, 's'),
      primary: { transport, address: primary.address as string, user: 'repl', applicationName: 's1' },
      restore: archive,
      restoreIntervalMs: 20,
      retryMinDelayMs: 20,
      retryMaxDelayMs: 200,
    };
    const app = new TagApp();
    let standby = await Standby.open({ ...options, application: app });
    let end = await commit(0, 100);
    await waitFor(() => (standby.replayLsn ?? 0) >= end, 'streaming');
    await standby.close();
    end = await commit(100, 600);
    await primary.switchWal();
    await waitFor(() => primary.archiverStatus().pendingCount === 0, 'everything archived');
    await primary.checkpoint(primary.appliedLsn);
    standby = await Standby.open({ ...options, application: app });
    closeLater(standby);
    const restored: string[] = [];
    standby.on('archive:restored', ({ name }) => restored.push(name));
    const rebootstraps: unknown[] = [];
    standby.on('rebootstrap', (event) => rebootstraps.push(event));
    end = await commit(700, 20);
    await waitFor(() => (standby.replayLsn ?? 0) >= end, 'restored, then streamed');
    assert.ok(restored.length >= 5, `${restored.length} segments restored`);
    assert.deepEqual(rebootstraps, []);
    assert.deepEqual(app.tags, primaryApp.tags);
    await waitFor(() => standby.state === 'streaming', 'streaming again');
  });
});
