import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { NodeStorage, Primary, WalCorruptError, WalLog, isWalshipError, rebuildControlFile, segmentFileName, type Storage } from '../../src/index.js';
import { removeControlFile } from '../../src/node/control-file.js';
import { createCluster, MemoryStorage, type Cluster } from '../../src/testing/index.js';
import { PlainApp, RecordingApp } from '../helpers/apps.js';
import { caughtUp, codeOf, commitMany, sameSequence } from '../helpers/standby-harness.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * Issue #13, items 6 and 7: a data directory that lost a file in the middle (a WAL segment, the
 * control file) is refused with a coded error and left as it is; the torn end of the WAL after
 * a crash is still repaired silently. Each attack is made on real files and in memory.
 */

const SEGMENT = /^[0-9A-F]{24}$/;
const SIZE = 64 * 1024;

/** One node's storage: the cluster's memory storage, or real files in a temporary directory. */
interface Place {
  /** Options that put a node there (`dir` for real files; the cluster's storage otherwise). */
  readonly options: { dir?: string };
  /** A handle on its files, for the test to look at and damage them. */
  readonly storage: Storage;
}

const kinds = [
  {
    name: 'MemoryStorage',
    async place(cluster: Cluster, _t: TestContext, name: string): Promise<Place> {
      return { options: {}, storage: cluster.storage(name) };
    },
  },
  {
    name: 'NodeStorage',
    async place(_cluster: Cluster, t: TestContext, name: string): Promise<Place> {
      const { dir, cleanup } = await tempDir();
      t.after(cleanup);
      const path = join(dir, name);
      return { options: { dir: path }, storage: new NodeStorage(path) };
    },
  },
] as const;

/** Every file and its bytes (the lock, which an open takes and gives back, aside). */
async function contents(storage: Storage): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const name of (await storage.list()).sort()) {
    if (name === 'walship.lock') continue;
    files.set(name, (await readBytes(storage, name)).toString('hex'));
  }
  return files;
}

async function readBytes(storage: Storage, name: string): Promise<Buffer> {
  const file = await storage.open(name, { readOnly: true });
  try {
    const buf = Buffer.alloc(await file.size());
    await file.read(buf, 0, buf.length, 0);
    return buf;
  } finally {
    await file.close();
  }
}

async function writeBytes(storage: Storage, name: string, bytes: Buffer, at = 0): Promise<void> {
  const file = await storage.open(name, { create: true });
  try {
    await file.write(bytes, at);
    await file.datasync();
  } finally {
    await file.close();
  }
  await storage.syncDirectory();
}

async function segments(storage: Storage): Promise<string[]> {
  return (await storage.list()).filter((name) => SEGMENT.test(name)).sort();
}

/** A primary with `commits` batches of WAL (about 16 segments of 64 KiB), and a standby that streamed all of it. */
async function clusterWithWal(t: TestContext, kind: (typeof kinds)[number], app: () => PlainApp | RecordingApp = () => new PlainApp()) {
  const cluster = createCluster(t);
  const p = await kind.place(cluster, t, 'p');
  const s = await kind.place(cluster, t, 's1');
  const papp = app();
  const primary = await cluster.primary('p', { application: papp, ...p.options });
  const sapp = app();
  const standbyOptions = { upstream: primary, application: sapp, ...s.options };
  const standby = await cluster.standby('s1', standbyOptions);
  await commitMany(primary, 0, 250, 4000);
  await caughtUp(standby, primary);
  return { cluster, primary, standby, papp, sapp, p, s, standbyOptions };
}

for (const kind of kinds) {
  describe(`a WAL cut in the middle (${kind.name})`, () => {
    it("a standby missing a middle segment refuses to open, naming it, and keeps every later segment; restoring the segment heals it", async (t) => {
      const { cluster, primary, standby, papp, s } = await clusterWithWal(t, kind);
      const lastSegno = Math.floor(((standby.receiveLsn as number) - 1) / SIZE);
      await standby.close();
      const names = await segments(s.storage);
      assert.ok(names.length >= 12, `${names.length} segments`);
      const victim = names[4] as string;
      // The segments after it that hold WAL (a segment prepared ahead holds none).
      const later = names.slice(5).filter((name) => Number.parseInt(name.slice(8), 16) <= lastSegno);
      const saved = await readBytes(s.storage, victim);
      await s.storage.remove(victim);
      await s.storage.syncDirectory();
      const before = await contents(s.storage);

      const sapp = new PlainApp();
      await assert.rejects(cluster.standby('s1', { upstream: primary, application: sapp, ...s.options }), (err) => {
        assert.ok(err instanceof WalCorruptError, String(err));
        assert.equal(err.code, 'WAL_CORRUPT');
        assert.equal(err.segment, victim);
        assert.equal(err.offset, 0);
        assert.match(err.message, /segment file is missing/);
        assert.ok(err.message.includes(later[0] as string) && err.message.includes(later.at(-1) as string), err.message);
        assert.match(err.message, new RegExp(`${later.length} segments`));
        return true;
      });
      assert.deepEqual(await contents(s.storage), before, 'nothing deleted or rewritten: every later segment is still there');
      assert.deepEqual(sapp.applied, [], 'nothing was replayed');

      // The operator's way back: the segment restored (from the primary, an archive, a backup).
      await writeBytes(s.storage, victim, saved);
      const healed = await cluster.standby('s1', { upstream: primary, application: sapp, ...s.options });
      await commitMany(primary, 1000, 20);
      await caughtUp(healed, primary);
      sameSequence(sapp.applied, papp.applied);
    });

    it('a standby with a damaged record in a middle segment, intact segments after it, refuses to open (its stamps are its upstream\'s, the segment order is proof enough)', async (t) => {
      const { cluster, primary, standby, s } = await clusterWithWal(t, kind);
      await standby.close();
      const names = await segments(s.storage);
      const victim = names[4] as string;
      // A bit flipped in the first record's payload.
      const offset = 32 + 32 + 100;
      const byte = (await readBytes(s.storage, victim))[offset] as number;
      await writeBytes(s.storage, victim, Buffer.from([byte ^ 0x10]), offset);
      const before = await contents(s.storage);
      await assert.rejects(cluster.standby('s1', { upstream: primary, application: new PlainApp(), ...s.options }), (err) => {
        assert.ok(err instanceof WalCorruptError, String(err));
        assert.equal(err.segment, victim);
        assert.equal(err.offset, 32);
        assert.match(err.message, /record checksum mismatch/);
        assert.ok(err.message.includes(names[5] as string), err.message);
        return true;
      });
      assert.deepEqual(await contents(s.storage), before, 'nothing deleted or rewritten');
    });

    it("a standby's torn last record is still repaired silently, and the rest fetched again", async (t) => {
      const { cluster, primary, standby, papp, s } = await clusterWithWal(t, kind);
      const end = standby.receiveLsn as number;
      await standby.close();
      // Zero the last bytes the standby received: a short write at the end of its log.
      const segno = Math.floor((end - 1) / SIZE);
      const within = end - segno * SIZE;
      const length = Math.min(200, within);
      await writeBytes(s.storage, segmentFileName(1, segno, SIZE), Buffer.alloc(length), within - length);
      const sapp = new PlainApp();
      const reopened = await cluster.standby('s1', { upstream: primary, application: sapp, ...s.options });
      await commitMany(primary, 2000, 10);
      await caughtUp(reopened, primary);
      sameSequence(sapp.applied, papp.applied);
    });

    it('a primary missing a middle segment refuses to open, naming it; nothing is deleted', async (t) => {
      const { cluster, primary, standby, p } = await clusterWithWal(t, kind);
      await standby.close();
      await primary.close();
      const names = await segments(p.storage);
      const victim = names[6] as string;
      await p.storage.remove(victim);
      await p.storage.syncDirectory();
      const before = await contents(p.storage);
      await assert.rejects(cluster.primary('p', { application: new PlainApp(), ...p.options }), (err) => {
        assert.ok(err instanceof WalCorruptError, String(err));
        assert.equal(err.segment, victim);
        assert.ok(err.message.includes(names[7] as string), err.message);
        return true;
      });
      assert.deepEqual(await contents(p.storage), before, 'nothing deleted or rewritten');
    });
  });

  describe(`a lost snapshot (${kind.name})`, () => {
    it("a primary whose checkpoint's snapshot is gone is refused (WAL_CORRUPT), its WAL kept", async (t) => {
      const cluster = createCluster(t);
      const p = await kind.place(cluster, t, 'p');
      const primary = await cluster.primary('p', { application: new RecordingApp(), ...p.options });
      await commitMany(primary, 0, 20);
      await primary.checkpoint();
      await commitMany(primary, 100, 20);
      await primary.checkpoint();
      await primary.close();
      const snapshots = (await p.storage.list()).filter((name) => name.startsWith('snapshot-')).sort();
      assert.equal(snapshots.length, 1, 'a checkpoint removes the older snapshots');
      await p.storage.remove(snapshots[0] as string);
      await p.storage.syncDirectory();
      const before = await contents(p.storage);
      before.delete('walship.control');
      await assert.rejects(cluster.primary('p', { application: new RecordingApp(), ...p.options }), (err) => {
        assert.ok(isWalshipError(err, 'WAL_CORRUPT'), String(err));
        assert.match(err.message, /snapshot of the last checkpoint .* is missing/);
        return true;
      });
      const after = await contents(p.storage);
      after.delete('walship.control');
      assert.deepEqual(after, before, 'no segment or other file was removed or rewritten');
    });
  });

  describe(`a lost walship.control (${kind.name})`, () => {
    it('a primary with WAL but no control file is refused, nothing written; its standby waits; rebuildControlFile brings back the same cluster', async (t) => {
      const { cluster, primary, standby, papp, sapp, p } = await clusterWithWal(t, kind, () => new RecordingApp());
      await primary.checkpoint();
      await commitMany(primary, 500, 30);
      await caughtUp(standby, primary);
      const systemId = primary.systemId;
      const applied = papp.applied;
      await primary.close();
      await p.storage.remove('walship.control');
      await p.storage.syncDirectory();
      const names = await segments(p.storage);
      const before = await contents(p.storage);

      const refused = cluster.primary('p', { application: new RecordingApp(), ...p.options });
      await assert.rejects(refused, (err) => {
        assert.ok(isWalshipError(err, 'CONTROL_FILE_MISSING'), String(err));
        assert.ok(err.message.includes(`${names.length} WAL segments (${names[0] as string} to ${names.at(-1) as string}, timeline 1)`), err.message);
        assert.match(err.message, /1 snapshot/);
        assert.match(err.message, /rebuildControlFile/);
        return true;
      });
      assert.deepEqual(await contents(p.storage), before, 'nothing was written');
      assert.notEqual(standby.state, 'failed', 'the standby is not broken: it waits for its primary');
      assert.equal(standby.systemId, systemId);

      // The documented way back: the system id from a standby, the rest from the directory.
      const rebuilt = await rebuildControlFile({ ...(kind.name === 'NodeStorage' ? { dir: p.options.dir as string } : { storage: p.storage }), systemId: standby.systemId as string });
      assert.equal(rebuilt.systemId, systemId);
      assert.equal(rebuilt.timeline, 1);
      assert.equal(rebuilt.segmentSize, 64 * 1024);
      assert.equal(rebuilt.checkpoint?.snapshot, true, 'replay starts at the newest snapshot');
      const app = new RecordingApp();
      const reopened = await cluster.primary('p', { application: app, ...p.options });
      assert.equal(reopened.systemId, systemId);
      sameSequence(app.applied, applied, 'the application restored from the snapshot and the WAL after it');
      await commitMany(reopened, 3000, 20);
      await caughtUp(standby, reopened, 'the standby to continue with the rebuilt primary');
      sameSequence(sapp.applied, app.applied);
    });

    it('a standby with WAL but no control file is refused, its WAL kept; an interrupted discard (its marker) is still cleared by the next bootstrap', async (t) => {
      const { cluster, primary, standby, papp, s } = await clusterWithWal(t, kind);
      await standby.close();
      await s.storage.remove('walship.control');
      await s.storage.syncDirectory();
      const before = await contents(s.storage);
      const code = await codeOf(cluster.standby('s1', { upstream: primary, application: new PlainApp(), ...s.options }));
      assert.equal(code, 'CONTROL_FILE_MISSING');
      assert.deepEqual(await contents(s.storage), before, 'nothing was written or removed');

      // What a standby discarding its state (bootstrapping again) leaves when it crashes: the
      // marker, no control file, the old WAL. That is cleared and bootstrapped over.
      await removeControlFile(s.storage);
      const sapp = new PlainApp();
      const again = await cluster.standby('s1', { upstream: primary, application: sapp, ...s.options });
      await caughtUp(again, primary);
      sameSequence(sapp.applied, papp.applied);
      assert.equal((await s.storage.list()).includes('walship.discarding'), false);
    });
  });
}

describe('directories without a control file', () => {
  it("a new directory still becomes a new cluster; a bare WalLog's directory is refused, stays a WalLog's, and is adopted only explicitly", async () => {
    const fresh = new MemoryStorage();
    const primary = await Primary.open({ storage: fresh, application: new PlainApp(), segmentSize: 64 * 1024 });
    await primary.commit([Buffer.from('first')]);
    await primary.close();

    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: 64 * 1024 });
    log.append(Buffer.from('a'));
    log.append(Buffer.from('b'));
    await log.close();
    assert.equal(await codeOf(Primary.open({ storage, application: new PlainApp() })), 'CONTROL_FILE_MISSING');
    const again = await WalLog.open({ storage });
    assert.equal(again.segmentSize, 64 * 1024);
    await again.close();
    assert.equal(await codeOf(rebuildControlFile({ storage, systemId: 'not-an-id' })), 'INVALID_OPTIONS');
    const rebuilt = await rebuildControlFile({ storage, systemId: 'new' });
    assert.match(rebuilt.systemId, /^[0-9a-f]{16}$/);
    assert.equal(rebuilt.checkpoint, null);
    assert.equal(await codeOf(rebuildControlFile({ storage, systemId: 'new' })), 'INVALID_ARGUMENT', 'a directory with a control file is not rebuilt');
    const app = new PlainApp();
    const adopted = await Primary.open({ storage, application: app });
    assert.equal(adopted.systemId, rebuilt.systemId);
    assert.deepEqual(
      app.applied.map((b) => Buffer.from(b.entries[0] as string, 'hex').toString()),
      ['a', 'b'],
    );
    await adopted.close();
  });
});
