import assert from 'node:assert/strict';
import fsModule from 'node:fs';
import fs from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { describe, it, mock, type TestContext } from 'node:test';
import { NodeStorage } from '../../src/storage/node-storage.js';
import { WalLog } from '../../src/wal/wal-log.js';
import { BLOCKING_SYNC_MAX_BYTES } from '../../src/wal/wal-writer.js';
import { commitSyncConformance } from '../helpers/commit-path-storage.js';

// The storage contract holds with every commit-path sync taken this way.
commitSyncConformance('inline', "NodeStorage, commit-path files synced inline (commitSync: 'inline')");

/** A temporary directory, removed after the test. */
async function tempDir(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-inline-sync-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Spies on `node:fs` functions, as the storage's own imports see them, until the test ends. */
function spyOnSyncs<const N extends readonly ('fdatasyncSync' | 'fdatasync')[]>(t: TestContext, names: N): { [I in keyof N]: { mock: { callCount(): number } } } {
  const spies = names.map((name) => mock.method(fsModule, name)) as { [I in keyof N]: { mock: { callCount(): number } } };
  syncBuiltinESMExports();
  t.after(() => {
    mock.restoreAll();
    syncBuiltinESMExports();
  });
  return spies;
}

/**
 * Records, in order, the syncs (by descriptor, inline and on the pool) and whatever the test
 * pushes (events), until `restore`. `seen()` keeps the events and the syncs of the files a
 * commit wrote (seen through `writevSync`): preparing the next segment ahead syncs another
 * file, whenever the pool gets to it.
 */
function recordSyncs(): { order: (string | number)[]; reset(): void; seen(): string[]; restore(): void } {
  const order: (string | number)[] = [];
  const written = new Set<number>();
  const inline = fsModule.fdatasyncSync;
  mock.method(fsModule, 'fdatasyncSync', (fd: number) => {
    order.push(fd);
    inline(fd);
  });
  const pooled = fsModule.fdatasync;
  mock.method(fsModule, 'fdatasync', (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => {
    order.push(fd);
    pooled(fd, callback);
  });
  const writev = fsModule.writevSync;
  mock.method(fsModule, 'writevSync', (fd: number, buffers: NodeJS.ArrayBufferView[], position?: number) => {
    written.add(fd);
    return writev(fd, buffers, position);
  });
  syncBuiltinESMExports();
  return {
    order,
    reset: () => {
      order.length = 0;
      written.clear();
    },
    seen: () => order.filter((e) => typeof e === 'string' || written.has(e)).map((e) => (typeof e === 'string' ? e : 'sync')),
    restore: () => {
      mock.restoreAll();
      syncBuiltinESMExports();
    },
  };
}

describe("NodeStorage with commitSync: 'inline'", () => {
  it("a WAL's commits sync on the calling thread, each of them; every record survives a reopen", async (t) => {
    const dir = await tempDir(t);
    const [inline] = spyOnSyncs(t, ['fdatasyncSync']);
    const log = await WalLog.open({ storage: new NodeStorage(dir, { commitSync: 'inline' }), segmentSize: 64 * 1024, sync: 'fdatasync' });
    const commits = 40;
    let inlineEach = 0;
    for (let i = 0; i < commits; i++) {
      const before = inline.mock.callCount();
      await log.waitForFlush(log.append(Buffer.from(`r${i}`)).endLsn);
      if (inline.mock.callCount() > before) inlineEach++;
    }
    assert.equal(inlineEach, commits, 'every commit synced inline');
    await log.close();
    const again = await WalLog.open({ dir, segmentSize: 64 * 1024 });
    let records = 0;
    for await (const _record of again.read(again.oldestLsn)) records++;
    await again.close();
    assert.equal(records, commits);
  });

  it('a flush only background waiters need (commits at off) goes to the pool; one a commit waits for runs inline', async (t) => {
    const dir = await tempDir(t);
    const [inline, pooled] = spyOnSyncs(t, ['fdatasyncSync', 'fdatasync']);
    const log = await WalLog.open({ storage: new NodeStorage(dir, { commitSync: 'inline' }), segmentSize: 64 * 1024, sync: 'fdatasync' });
    const counts = (): [number, number] => [inline.mock.callCount(), pooled.mock.callCount()];
    let [inlineBefore, pooledBefore] = counts();
    await log.waitForFlush(log.append(Buffer.from('async')), { background: true });
    assert.equal(inline.mock.callCount(), inlineBefore, 'no inline sync for a background flush');
    assert.ok(pooled.mock.callCount() > pooledBefore, 'the background flush synced on the pool');
    [inlineBefore, pooledBefore] = counts();
    await log.waitForFlush(log.append(Buffer.from('waited for')));
    assert.ok(inline.mock.callCount() > inlineBefore, 'a waited-for flush synced inline');
    assert.equal(pooled.mock.callCount(), pooledBefore);
    await log.close();
  });

  it('a waited-for sync of more than BLOCKING_SYNC_MAX_BYTES goes to the pool, so it never holds the event loop; one of at most that runs inline', async (t) => {
    const dir = await tempDir(t);
    const [inline, pooled] = spyOnSyncs(t, ['fdatasyncSync', 'fdatasync']);
    const log = await WalLog.open({ storage: new NodeStorage(dir, { commitSync: 'inline' }), segmentSize: 16 * 1024 * 1024, sync: 'fdatasync' });
    await log.waitForFlush(log.append(Buffer.from('first')).endLsn);
    const counts = (): [number, number] => [inline.mock.callCount(), pooled.mock.callCount()];
    // A bulk round, as a large commit or a standby catching up writes it.
    let [inlineBefore, pooledBefore] = counts();
    const large = log.append(Buffer.alloc(BLOCKING_SYNC_MAX_BYTES + 1, 0x6c)).endLsn;
    await log.waitForFlush(large);
    assert.equal(inline.mock.callCount(), inlineBefore, 'no inline sync for the large round');
    assert.ok(pooled.mock.callCount() > pooledBefore, 'the large round synced on the pool');
    [inlineBefore, pooledBefore] = counts();
    await log.waitForFlush(log.append(Buffer.alloc(BLOCKING_SYNC_MAX_BYTES - 1024, 0x73)).endLsn);
    assert.ok(inline.mock.callCount() > inlineBefore, 'a round of at most the limit synced inline');
    assert.equal(pooled.mock.callCount(), pooledBefore);
    // A segment switch writes a few bytes, though the rest of the segment counts as written.
    log.append(Buffer.from('before the switch'));
    [inlineBefore, pooledBefore] = counts();
    assert.notEqual(await log.switchSegment(), null);
    assert.ok(inline.mock.callCount() > inlineBefore, 'the switch synced inline');
    assert.equal(pooled.mock.callCount(), pooledBefore, 'and not on the pool');
    await log.close();
  });

  it('a failing inline sync rejects the datasync call with the errno, never throws synchronously', async (t) => {
    const dir = await tempDir(t);
    const storage = new NodeStorage(dir, { commitSync: 'inline' });
    const file = await storage.open('seg', { create: true, commitPath: true });
    mock.method(fsModule, 'fdatasyncSync', () => {
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    });
    syncBuiltinESMExports();
    try {
      let call: Promise<void> | null = null;
      assert.doesNotThrow(() => (call = file.datasync()));
      await assert.rejects(call as unknown as Promise<void>, (err: NodeJS.ErrnoException) => err.code === 'EIO');
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
      await file.close();
    }
  });
  it("a log announces what it wrote ('write', a standby's write report) before an inline sync holds the loop; with syncs on the pool, after the sync started", async (t) => {
    for (const commitSync of ['inline', 'pool'] as const) {
      const dir = await tempDir(t);
      const syncs = recordSyncs();
      try {
        const log = await WalLog.open({ storage: new NodeStorage(dir, { commitSync }), segmentSize: 64 * 1024, sync: 'fdatasync' });
        log.on('write', () => syncs.order.push('write'));
        // The first commit also prepares the segment (syncs of its own): count from the second.
        await log.waitForFlush(log.append(Buffer.from('first')).endLsn);
        await new Promise((resolve) => setImmediate(resolve));
        syncs.reset();
        await log.waitForFlush(log.append(Buffer.from('x')).endLsn);
        await new Promise((resolve) => setImmediate(resolve));
        assert.deepEqual(syncs.seen(), commitSync === 'inline' ? ['write', 'sync'] : ['sync', 'write'], commitSync);
        await log.close();
      } finally {
        syncs.restore();
      }
    }
  });

  it('an early reader of written bytes (an early sender) gets them before an inline sync holds the loop when the commit waits for a standby; after it when not', async (t) => {
    const dir = await tempDir(t);
    const syncs = recordSyncs();
    const abort = new AbortController();
    try {
      const log = await WalLog.open({ storage: new NodeStorage(dir, { commitSync: 'inline' }), segmentSize: 64 * 1024, sync: 'fdatasync' });
      const first = log.append(Buffer.from('first'));
      await log.waitForFlush(first.endLsn);
      // The reader has the segment open already, as a streaming sender has.
      let reached = (): void => undefined;
      const caughtUp = new Promise<void>((resolve) => (reached = resolve));
      const reading = (async () => {
        for await (const chunk of log.readBytes(first.lsn, { follow: true, unflushed: true, signal: abort.signal })) {
          syncs.order.push(`read to ${chunk.startLsn + chunk.data.length}`);
          if (chunk.startLsn + chunk.data.length >= first.endLsn) reached();
        }
      })().catch(() => undefined);
      await caughtUp;
      for (const replicated of [true, false]) {
        await new Promise((resolve) => setImmediate(resolve));
        syncs.reset();
        const { endLsn } = log.append(Buffer.from('x'));
        await log.waitForFlush(endLsn, { replicated });
        await new Promise((resolve) => setImmediate(resolve));
        assert.deepEqual(syncs.seen(), replicated ? [`read to ${endLsn}`, 'sync'] : ['sync', `read to ${endLsn}`], `replicated: ${replicated}`);
      }
      abort.abort();
      await reading;
      await log.close();
    } finally {
      abort.abort();
      syncs.restore();
    }
  });

  it('with no early reader waiting, a commit that waits for a standby gets no extra turn of the event loop before an inline sync', async (t) => {
    const dir = await tempDir(t);
    const syncs = recordSyncs();
    try {
      const log = await WalLog.open({ storage: new NodeStorage(dir, { commitSync: 'inline' }), segmentSize: 64 * 1024, sync: 'fdatasync' });
      await log.waitForFlush(log.append(Buffer.from('first')).endLsn);
      // A turn of the event loop queued when the write is announced runs after the sync unless the writer yields.
      log.on('write', () => setImmediate(() => syncs.order.push('turn')));
      await new Promise((resolve) => setImmediate(resolve));
      syncs.reset();
      await log.waitForFlush(log.append(Buffer.from('x')).endLsn, { replicated: true });
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(syncs.seen(), ['sync', 'turn']);
      await log.close();
    } finally {
      syncs.restore();
    }
  });
});
