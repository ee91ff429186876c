import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isWalshipError, NodeStorage, Primary, TcpTransport, type Application, type CommittedBatch, type Lsn, type PrimaryOptions } from '../../src/index.js';
import { readControlFile } from '../../src/node/control-file.js';
import { SnapshotStore } from '../../src/node/snapshot-store.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { DigestApp, PlainApp, RecordingApp, type AppliedBatch } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, within } from '../helpers/wal.js';
import { DurableApp, GatedStorage } from '../helpers/primary-helpers.js';

const SEGMENT = 64 * 1024;
const hex = (text: string): string => Buffer.from(text).toString('hex');
const isCode = (code: string) => (err: unknown) => isWalshipError(err) && err.code === code;

function open(storage: MemoryStorage | GatedStorage, application: Application, extra: Partial<PrimaryOptions> = {}): Promise<Primary> {
  return Primary.open({ storage, application, segmentSize: SEGMENT, ...extra });
}

/** Commits `n` one-entry batches named `${prefix}${i}`, one after another. */
async function commitMany(primary: Primary, n: number, prefix = 'b', size = 0): Promise<Lsn[]> {
  const lsns: Lsn[] = [];
  for (let i = 0; i < n; i++) {
    const data = size > 0 ? payload(i, size) : Buffer.from(`${prefix}${i}`);
    lsns.push((await primary.commit(data)).lsn);
  }
  return lsns;
}

function segmentFiles(names: string[]): string[] {
  return names.filter((name) => /^[0-9A-F]{24}$/.test(name)).sort();
}

describe('Primary.open options', () => {
  const app = new PlainApp();
  const cases: Array<{ name: string; options: (dir: string) => unknown; field: RegExp }> = [
    { name: 'an unknown option', options: (dir) => ({ dir, application: app, maxWalSender: 3 }), field: /maxWalSender/ },
    { name: 'a wrong type', options: (dir) => ({ dir, application: app, maxWalSenders: '3' }), field: /maxWalSenders/ },
    { name: 'a bad synchronousCommit', options: (dir) => ({ dir, application: app, synchronousCommit: 'sometimes' }), field: /synchronousCommit/ },
    { name: 'a segment size that is not a power of two', options: (dir) => ({ dir, application: app, segmentSize: 100_000 }), field: /segmentSize/ },
    { name: 'a zero walSenderTimeoutMs', options: (dir) => ({ dir, application: app, walSenderTimeoutMs: 0 }), field: /walSenderTimeoutMs/ },
    { name: 'a bad sync mode', options: (dir) => ({ dir, application: app, sync: 'fsync' }), field: /sync/ },
    { name: 'no application', options: (dir) => ({ dir }), field: /application/ },
    { name: 'an application without apply()', options: (dir) => ({ dir, application: { snapshot: async () => Buffer.alloc(0) } }), field: /application/ },
    { name: 'both dir and storage', options: (dir) => ({ dir, storage: new MemoryStorage(), application: app }), field: /"dir".*"storage"/ },
    { name: 'a listen transport that is not one', options: (dir) => ({ dir, application: app, listen: { transport: {}, address: 'x:1' } }), field: /listen\.transport/ },
    {
      name: 'an unknown key in listen',
      options: (dir) => ({ dir, application: app, listen: { transport: new TcpTransport(), address: '127.0.0.1:0', port: 1 } }),
      field: /listen.*"port"/,
    },
    {
      name: 'a bad auth method',
      options: (dir) => ({ dir, application: app, auth: { rules: [{ user: 'repl', address: 'all', method: 'password' }] } }),
      field: /auth.*rules/,
    },
  ];

  for (const { name, options, field } of cases) {
    it(`${name} is INVALID_OPTIONS naming the field, and nothing is created`, async () => {
      const root = await tempDir();
      const dir = join(root.dir, 'data');
      try {
        await assert.rejects(Primary.open(options(dir) as PrimaryOptions), (err: unknown) => {
          assert.ok(isWalshipError(err, 'INVALID_OPTIONS'), String(err));
          assert.match(err.message, field);
          return true;
        });
        assert.equal(existsSync(dir), false, 'the data directory must not be created');
      } finally {
        await root.cleanup();
      }
    });
  }

  it('neither dir nor storage, or no options at all, is INVALID_OPTIONS', async () => {
    await assert.rejects(Primary.open({ application: app } as PrimaryOptions), (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS') && /"dir"/.test(err.message));
    await assert.rejects(Primary.open(undefined as unknown as PrimaryOptions), isCode('INVALID_OPTIONS'));
    await assert.rejects(Primary.open(null as unknown as PrimaryOptions), isCode('INVALID_OPTIONS'));
  });

  it('an invalid storage leaves the given MemoryStorage untouched', async () => {
    const storage = new MemoryStorage();
    await assert.rejects(Primary.open({ storage, application: app, segmentSize: 3 } as unknown as PrimaryOptions), isCode('INVALID_OPTIONS'));
    assert.deepEqual(storage.fileNames(), []);
  });
});

describe('Primary system id', () => {
  it('a new directory gets a random 16-hex id that survives a reopen; two directories differ', async () => {
    const a = await tempDir();
    const b = await tempDir();
    try {
      const first = await Primary.open({ dir: a.dir, application: new PlainApp(), segmentSize: SEGMENT });
      const id = first.systemId;
      assert.match(id, /^[0-9a-f]{16}$/);
      assert.notEqual(id, '0000000000000000');
      await first.commit(Buffer.from('x'));
      await first.close();
      const again = await Primary.open({ dir: a.dir, application: new PlainApp() });
      assert.equal(again.systemId, id);
      await again.close();
      const other = await Primary.open({ dir: b.dir, application: new PlainApp(), segmentSize: SEGMENT });
      assert.match(other.systemId, /^[0-9a-f]{16}$/);
      assert.notEqual(other.systemId, id);
      await other.close();
      assert.equal((await readControlFile(new NodeStorage(a.dir)))?.systemId, id);
    } finally {
      await a.cleanup();
      await b.cleanup();
    }
  });
});

describe('Primary.commit', () => {
  it('resolves with the batch end and start; the application gets the batch with its entries and channels', async () => {
    const batches: CommittedBatch[] = [];
    const app: Application = {
      apply: (batch) => {
        batches.push({ ...batch, entries: batch.entries.map((e) => ({ ...e, data: Buffer.from(e.data) })) });
      },
    };
    const primary = await open(new MemoryStorage(), app);
    const first = await primary.commit(Buffer.from('one'));
    assert.ok(first.startLsn < first.lsn);
    assert.equal(first.lsn, primary.currentLsn);
    assert.equal(primary.appliedLsn, first.lsn);
    assert.ok(primary.flushLsn >= first.lsn, 'durable when it resolves');
    const second = await primary.commit([Buffer.from('two'), { data: Buffer.from('three'), channel: 'orders' }]);
    assert.ok(second.startLsn >= first.lsn);
    assert.equal(batches.length, 2);
    assert.deepEqual(
      batches.map((b) => ({ lsn: b.lsn, startLsn: b.startLsn, timeline: b.timeline })),
      [
        { lsn: first.lsn, startLsn: first.startLsn, timeline: 1 },
        { lsn: second.lsn, startLsn: second.startLsn, timeline: 1 },
      ],
    );
    assert.equal(Buffer.from(batches[1]?.entries[1]?.data ?? []).toString(), 'three');
    assert.equal(batches[1]?.entries[1]?.channel, 'orders');
    assert.equal(batches[1]?.entries[0]?.channel, undefined);
    await primary.close();
  });

  it('group commit: many concurrent commits are all applied, in LSN order, exactly once', async () => {
    const app = new RecordingApp();
    const storage = new MemoryStorage();
    const primary = await open(storage, app);
    const results = await Promise.all(Array.from({ length: 500 }, (_, i) => primary.commit(Buffer.from(`c${i}`))));
    const lsns = results.map((r) => r.lsn);
    // Commit order is append order is LSN order.
    assert.deepEqual(lsns, [...lsns].sort((a, b) => a - b));
    assert.equal(new Set(lsns).size, 500);
    assert.deepEqual(
      app.applied.map((b) => b.lsn),
      lsns,
    );
    assert.deepEqual(
      app.applied.map((b) => b.entries),
      lsns.map((_, i) => [hex(`c${i}`)]),
    );
    await primary.close();
  });

  it("synchronousCommit 'off' resolves before the flush; the batch is applied once durable", async () => {
    const storage = new GatedStorage();
    const app = new RecordingApp();
    const primary = await open(storage, app);
    storage.hold();
    const data = Buffer.from('async one');
    const off = await within(primary.commit(data, { synchronousCommit: 'off' }), 10_000, "an 'off' commit");
    // The caller may reuse its buffer now; the application must still see what was committed.
    data.fill(0x21);
    assert.ok(primary.flushLsn < off.lsn, 'resolved while not yet durable');
    assert.equal(app.applied.length, 0);
    let onDone = false;
    const on = primary.commit(Buffer.from('sync one')).then((r) => {
      onDone = true;
      return r;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(onDone, false, "an 'on' commit waits for the flush");
    storage.release();
    const onResult = await within(on, 10_000, "the 'on' commit");
    await within(primary.waitForApply(onResult.lsn), 10_000, 'apply');
    assert.deepEqual(app.applied.map((b) => b.entries), [[hex('async one')], [hex('sync one')]]);
    await primary.close();
  });

  it("a primary whose default is 'off' resolves commits without waiting for the disk", async () => {
    const storage = new GatedStorage();
    const app = new RecordingApp();
    const primary = await open(storage, app, { synchronousCommit: 'off' });
    storage.hold();
    const results = await within(Promise.all([primary.commit(Buffer.from('a')), primary.commit(Buffer.from('b'))]), 10_000, 'the commits');
    assert.ok(primary.flushLsn < (results[1]?.lsn ?? 0));
    // A commit may still ask for more.
    const local = primary.commit(Buffer.from('c'), { synchronousCommit: 'local' });
    storage.release();
    await within(local, 10_000, "the 'local' commit");
    assert.deepEqual(app.applied.map((b) => b.entries), [[hex('a')], [hex('b')], [hex('c')]]);
    await primary.close();
  });

  it('an invalid level is INVALID_ARGUMENT and commits nothing', async () => {
    const app = new RecordingApp();
    const primary = await open(new MemoryStorage(), app);
    const before = primary.currentLsn;
    await assert.rejects(primary.commit(Buffer.from('x'), { synchronousCommit: 'always' as never }), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT') && /synchronousCommit/.test(err.message));
    await assert.rejects(primary.commit([]), isCode('INVALID_ARGUMENT'));
    await assert.rejects(primary.commit('text' as never), isCode('INVALID_ARGUMENT'));
    assert.equal(primary.currentLsn, before);
    await primary.commit(Buffer.from('ok'));
    assert.deepEqual(app.applied.map((b) => b.entries), [[hex('ok')]]);
    await primary.close();
  });

  it('an aborted wait is ABORTED, and the batch is still applied', async () => {
    const storage = new GatedStorage();
    const app = new RecordingApp();
    const primary = await open(storage, app);
    storage.hold();
    const controller = new AbortController();
    const data = Buffer.from('abandoned');
    const waiting = primary.commit(data, { signal: controller.signal });
    const lsn = primary.currentLsn;
    controller.abort(new Error('client went away'));
    await assert.rejects(waiting, (err: unknown) => isWalshipError(err, 'ABORTED') && (err.cause as Error).message === 'client went away');
    data.fill(0);
    const early = AbortSignal.abort();
    await assert.rejects(primary.commit(Buffer.from('pre-aborted'), { signal: early }), isCode('ABORTED'));
    storage.release();
    await within(primary.waitForApply(primary.currentLsn), 10_000, 'apply');
    assert.ok(lsn < primary.currentLsn);
    assert.deepEqual(app.applied.map((b) => b.entries), [[hex('abandoned')], [hex('pre-aborted')]]);
    await primary.close();
  });

  it('close() lets commits in flight finish; later calls get WAL_CLOSED', async () => {
    const app = new RecordingApp();
    const primary = await open(new MemoryStorage(), app);
    const inFlight = Array.from({ length: 20 }, (_, i) => primary.commit(Buffer.from(`f${i}`)));
    const closing = primary.close();
    await assert.rejects(primary.commit(Buffer.from('late')), isCode('WAL_CLOSED'));
    await within(closing, 20_000, 'close');
    const results = await Promise.all(inFlight);
    assert.equal(app.applied.length, 20);
    assert.equal(app.lastLsn, results.at(-1)?.lsn);
    await assert.rejects(primary.commit(Buffer.from('later')), isCode('WAL_CLOSED'));
    await assert.rejects(primary.checkpoint(), isCode('WAL_CLOSED'));
    await assert.rejects(primary.baseBackup({ storage: new MemoryStorage() }), isCode('WAL_CLOSED'));
    await assert.rejects(primary.waitForApply(primary.appliedLsn + 1), isCode('WAL_CLOSED'));
    await primary.close();
  });
});

describe('Primary restart replay', () => {
  it('an application with appliedLsn() gets only the batches after it', async () => {
    const storage = new MemoryStorage();
    const store = { applied: [] as AppliedBatch[] };
    let primary = await open(storage, new DurableApp(store));
    const lsns = await commitMany(primary, 10);
    await primary.close();
    const everything = [...store.applied];
    // Its durable state stops at the 4th batch (say it lost the rest in a crash of its own).
    store.applied = everything.slice(0, 4);
    primary = await open(storage, new DurableApp(store));
    assert.deepEqual(store.applied, everything);
    assert.equal(primary.appliedLsn, lsns[9]);
    // Up to date: nothing is applied twice.
    await primary.close();
    primary = await open(storage, new DurableApp(store));
    assert.deepEqual(store.applied, everything);
    await primary.close();
  });

  it('checkpoint(lsn): a restart replays only what follows it', async () => {
    const storage = new MemoryStorage();
    let app = new PlainApp();
    let primary = await open(storage, app);
    const lsns = await commitMany(primary, 10);
    const all = [...app.applied];
    assert.deepEqual(await primary.checkpoint(lsns[5] as Lsn), { lsn: lsns[5], snapshot: false });
    await primary.close();
    app = new PlainApp();
    primary = await open(storage, app);
    assert.deepEqual(app.applied, all.slice(6));
    assert.equal(primary.appliedLsn, lsns[9]);
    await primary.close();
  });

  it('checkpoint() stores a snapshot: a restart restores it, then replays what follows', async () => {
    const storage = new MemoryStorage();
    let app = new RecordingApp();
    let primary = await open(storage, app);
    await commitMany(primary, 5, 'before');
    const checkpoint = await primary.checkpoint();
    assert.equal(checkpoint.snapshot, true);
    assert.equal(checkpoint.lsn, primary.appliedLsn);
    await commitMany(primary, 3, 'after');
    const state = app.applied;
    await primary.close();
    app = new RecordingApp();
    primary = await open(storage, app);
    assert.equal(app.restores, 1);
    assert.deepEqual(app.applied, state);
    await primary.close();
  });

  it('without hooks, a restart replays everything from the start', async () => {
    const storage = new MemoryStorage();
    let app = new PlainApp();
    let primary = await open(storage, app);
    await commitMany(primary, 25);
    const state = app.applied;
    await primary.close();
    app = new PlainApp();
    primary = await open(storage, app);
    assert.deepEqual(app.applied, state);
    await commitMany(primary, 2, 'more');
    await primary.close();
    app = new PlainApp();
    primary = await open(storage, app);
    assert.equal(app.applied.length, 27);
    await primary.close();
  });

  it('a snapshot taken while commits stream in matches the LSN it is stored at', async () => {
    const storage = new MemoryStorage();
    // An apply that yields, so batches and the snapshot interleave for real.
    class SlowDigestApp extends DigestApp {
      override async snapshot() {
        await new Promise((resolve) => setImmediate(resolve));
        return super.snapshot();
      }
    }
    let app = new SlowDigestApp();
    const slowApply = app.apply.bind(app);
    app.apply = (batch) => {
      slowApply(batch);
    };
    let primary = await open(storage, app);
    const commits = Array.from({ length: 300 }, (_, i) => primary.commit(payload(i, 200)));
    const checkpoints = [primary.checkpoint(), primary.checkpoint()];
    await Promise.all(commits);
    const [a, b] = await Promise.all(checkpoints);
    assert.ok((a?.lsn ?? 0) <= (b?.lsn ?? 0));
    const state = app.state;
    await primary.close();
    app = new SlowDigestApp();
    primary = await open(storage, app);
    assert.equal(app.state, state);
    await primary.close();
  });

  it('the same on real files: each way of restarting rebuilds the same state', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      let app = new RecordingApp();
      let primary = await Primary.open({ dir, application: app, segmentSize: SEGMENT });
      await commitMany(primary, 40, 'r', 500);
      await primary.checkpoint();
      await commitMany(primary, 10, 'r', 500);
      const state = app.applied;
      await primary.close();
      app = new RecordingApp();
      primary = await Primary.open({ dir, application: app });
      assert.equal(app.restores, 1);
      assert.deepEqual(app.applied, state);
      await primary.close();
    } finally {
      await cleanup();
    }
  });
});

describe('Primary.checkpoint', () => {
  it('refuses an LSN beyond what is applied, and a snapshot without a snapshot hook', async () => {
    const primary = await open(new MemoryStorage(), new PlainApp());
    const { lsn } = await primary.commit(Buffer.from('x'));
    await assert.rejects(primary.checkpoint(lsn + 8), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT') && /applied/.test(err.message));
    await assert.rejects(primary.checkpoint(), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT') && /snapshot/.test(err.message));
    await assert.rejects(primary.checkpoint(-1), isCode('INVALID_LSN'));
    assert.deepEqual(await primary.checkpoint(lsn), { lsn, snapshot: false });
    await primary.close();
  });

  it('never moves back: an older checkpoint keeps the newer one', async () => {
    const storage = new MemoryStorage();
    let app = new PlainApp();
    let primary = await open(storage, app);
    const lsns = await commitMany(primary, 6);
    await primary.checkpoint(lsns[4] as Lsn);
    assert.deepEqual(await primary.checkpoint(lsns[1] as Lsn), { lsn: lsns[4], snapshot: false });
    await primary.close();
    app = new PlainApp();
    primary = await open(storage, app);
    assert.equal(app.applied.length, 1);
    await primary.close();
  });

  it('concurrent checkpoints all succeed', async () => {
    const storage = new MemoryStorage();
    const app = new DigestApp();
    const primary = await open(storage, app);
    const commits = Array.from({ length: 50 }, (_, i) => primary.commit(Buffer.from(`k${i}`)));
    const results = await Promise.all([primary.checkpoint(), primary.checkpoint(), primary.checkpoint(), ...commits, primary.checkpoint()]);
    assert.ok(results.slice(0, 3).every((r) => 'snapshot' in r && r.snapshot));
    await primary.close();
    const reopened = new DigestApp();
    await (await open(storage, reopened)).close();
    assert.equal(reopened.state, app.state);
  });

  it('removes WAL segments before the checkpoint and keeps what a restart needs (real files)', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      let app = new DigestApp();
      // No spare files after the burst: the count of segment files shows what was removed.
      let primary = await Primary.open({ dir, application: app, segmentSize: SEGMENT, maxRecycleSegments: 4 });
      await commitMany(primary, 200, 's', 3000);
      const before = segmentFiles(await readdir(dir));
      assert.ok(before.length >= 9, `${before.length} segments`);
      const checkpoint = await primary.checkpoint();
      const after = segmentFiles(await readdir(dir));
      assert.ok(after.length < before.length, 'old segments are gone');
      // Nothing at or after the checkpoint went, and nothing wholly before it stayed.
      const checkpointSegment = Math.floor(checkpoint.lsn / SEGMENT);
      assert.ok(primary.wal.oldestLsn <= checkpoint.lsn);
      assert.equal(Math.floor(primary.wal.oldestLsn / SEGMENT), checkpointSegment);
      await commitMany(primary, 30, 't', 3000);
      const state = app.state;
      await primary.close();
      app = new DigestApp();
      primary = await Primary.open({ dir, application: app });
      assert.equal(app.state, state);
      await primary.close();
      // An application that says it is older than what is left gets a clear error.
      const stale = { applied: [{ lsn: 100, entries: [] }] };
      await assert.rejects(Primary.open({ dir, application: new DurableApp(stale) }), isCode('WAL_REMOVED'));
    } finally {
      await cleanup();
    }
  });
});

describe('Primary restart after WAL was removed', () => {
  it('an application with no state at all is WAL_REMOVED, not a silent partial replay', async () => {
    const storage = new MemoryStorage();
    const store = { applied: [] as AppliedBatch[] };
    let primary = await open(storage, new DurableApp(store));
    const lsns = await commitMany(primary, 100, 'w', 3000);
    await primary.checkpoint(lsns.at(-1));
    assert.ok(primary.wal.oldestLsn > SEGMENT, 'the checkpoint removed the first segments');
    await primary.close();
    await assert.rejects(open(storage, new DurableApp({ applied: [] })), isCode('WAL_REMOVED'));
    // The application that does have its state opens fine and gets nothing twice.
    primary = await open(storage, new DurableApp(store));
    assert.equal(store.applied.length, 100);
    await primary.close();
  });
});

describe('Primary apply failures', () => {
  it('an apply that throws fails the commit with APPLY_FAILED, stops the primary, and is retried on reopen', async () => {
    const storage = new MemoryStorage();
    const app = new RecordingApp();
    const primary = await open(storage, app);
    await commitMany(primary, 2, 'ok');
    const errors: unknown[] = [];
    primary.on('apply:error', ({ error }) => errors.push(error));
    app.failAt = primary.currentLsn + 1;
    const results = await Promise.allSettled([primary.commit(Buffer.from('bad')), primary.commit(Buffer.from('queued'))]);
    const [bad, queued] = results;
    assert.equal(bad?.status, 'rejected');
    const error = (bad as PromiseRejectedResult).reason as Error;
    assert.ok(isWalshipError(error, 'APPLY_FAILED'));
    assert.match((error.cause as Error).message, /refusing the batch/);
    assert.equal(queued?.status, 'rejected');
    assert.ok(isWalshipError((queued as PromiseRejectedResult).reason, 'APPLY_FAILED'));
    assert.deepEqual(errors, [error]);
    assert.equal(primary.failure, error);
    await assert.rejects(primary.commit(Buffer.from('later')), isCode('APPLY_FAILED'));
    await assert.rejects(primary.checkpoint(), isCode('APPLY_FAILED'));
    assert.equal(app.applied.length, 2);
    await within(primary.close(), 20_000, 'close after a failure');
    // Both batches were durable: a fixed application applies them, none skipped.
    const fixed = new RecordingApp();
    const reopened = await open(storage, fixed);
    assert.deepEqual(fixed.applied.map((b) => b.entries), [[hex('ok0')], [hex('ok1')], [hex('bad')], [hex('queued')]]);
    await reopened.close();
  });

  it('an apply that still throws on reopen fails the open with APPLY_FAILED', async () => {
    const storage = new MemoryStorage();
    const primary = await open(storage, new PlainApp());
    await commitMany(primary, 3);
    await primary.close();
    const broken = new RecordingApp();
    broken.failAt = 0;
    await assert.rejects(open(storage, broken), isCode('APPLY_FAILED'));
    // The failed open released the directory.
    await (await open(storage, new PlainApp())).close();
  });
});

describe('Primary.baseBackup', () => {
  it('writes a control file and a snapshot into an empty directory', async () => {
    const root = await tempDir();
    try {
      const app = new RecordingApp();
      const primary = await open(new MemoryStorage(), app);
      await commitMany(primary, 4);
      const target = join(root.dir, 'backup');
      const result = await primary.baseBackup({ dir: target });
      assert.equal(result.lsn, primary.appliedLsn);
      assert.equal(result.timeline, 1);
      const names = (await readdir(target)).filter((n) => !n.startsWith('walship.lock'));
      assert.equal(names.length, 2, names.join());
      const control = await readControlFile(new NodeStorage(target));
      assert.equal(control?.systemId, primary.systemId);
      assert.equal(control?.segmentSize, SEGMENT);
      assert.deepEqual(control?.checkpoint, { lsn: result.lsn, snapshot: true });
      const snapshot = await new SnapshotStore(new NodeStorage(target)).latest();
      assert.equal(snapshot?.lsn, result.lsn);
      assert.equal(snapshot?.size, result.size);
      assert.deepEqual(JSON.parse((await snapshot?.bytes())?.toString() ?? 'null'), app.applied);
      await primary.close();
    } finally {
      await root.cleanup();
    }
  });

  it('refuses a directory that is not empty, and needs a snapshot hook', async () => {
    const root = await tempDir();
    try {
      const withSnapshots = await open(new MemoryStorage(), new RecordingApp());
      const used = join(root.dir, 'used');
      await mkdir(used);
      await writeFile(join(used, 'something'), 'x');
      await assert.rejects(withSnapshots.baseBackup({ dir: used }), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT') && /not empty/.test(err.message));
      await assert.rejects(withSnapshots.baseBackup({}), isCode('INVALID_ARGUMENT'));
      await assert.rejects(withSnapshots.baseBackup({ dir: used, storage: new MemoryStorage() }), isCode('INVALID_ARGUMENT'));
      await withSnapshots.close();

      const plain = await open(new MemoryStorage(), new PlainApp());
      await plain.commit(Buffer.from('x'));
      await assert.rejects(plain.baseBackup({ dir: join(root.dir, 'empty') }), isCode('BASE_BACKUP_UNAVAILABLE'));
      await plain.close();
    } finally {
      await root.cleanup();
    }
  });
});
