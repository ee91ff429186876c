import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { NodeStorage, isWalshipError, type Snapshot, type Storage } from '../../src/index.js';
import { SnapshotStore, snapshotName } from '../../src/node/snapshot-store.js';
import { MemoryStorage, seededRandom, type CrashOptions } from '../../src/testing/index.js';
import { tempDir } from '../helpers/temp-dir.js';

const MiB = 1024 * 1024;

/** Deterministic bytes that differ at every offset of a snapshot (no repeating pattern that would hide a misplaced chunk). */
function bytes(size: number, seed: number): Buffer {
  const random = seededRandom(seed);
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i += 4) buf.writeUInt32LE(Math.floor(random() * 0x1_0000_0000), Math.min(i, size - 4));
  return buf;
}

/** `data` as an async stream of irregular chunks, as an application's snapshot() may yield it. */
async function* pieces(data: Buffer, sizes: readonly number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length] as number;
    yield data.subarray(at, Math.min(data.length, at + n));
    at += n;
    await Promise.resolve();
  }
}

function sha(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function streamed(snapshot: Snapshot): Promise<{ data: Buffer; largest: number }> {
  const parts: Uint8Array[] = [];
  for await (const chunk of snapshot.chunks()) parts.push(Buffer.from(chunk));
  return { data: Buffer.concat(parts), largest: Math.max(0, ...parts.map((p) => p.length)) };
}

function snapshotFiles(names: readonly string[]): string[] {
  return names.filter((n) => n.startsWith('snapshot')).sort();
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return isWalshipError(err) ? err.code : `uncoded ${String(err)}`;
  }
  return 'resolved';
}

describe('snapshot store', () => {
  it('writes, finds the latest and by LSN, removes older ones (MemoryStorage and real files)', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      for (const storage of [new MemoryStorage(), new NodeStorage(dir)] as Storage[]) {
        await storage.prepare();
        const store = new SnapshotStore(storage);
        assert.equal(await store.latest(), null);
        assert.equal(await codeOf(store.at(100)), 'WAL_CORRUPT', 'the snapshot a control file names is missing');
        const a = bytes(1000, 1);
        const b = bytes(0, 2);
        const c = bytes(70_000, 3);
        const written = await store.write(100, 1, a);
        assert.equal(written.size, 1000);
        assert.equal(written.sha256.toString('hex'), sha(a));
        await store.write(5000, 1, b);
        await store.write(3000, 2, pieces(c, [1, 4095, 65536]));
        const latest = await store.latest();
        assert.deepEqual([latest?.lsn, latest?.timeline, latest?.size], [5000, 1, 0]);
        assert.equal((await latest?.bytes())?.length, 0);
        const at = await store.at(3000);
        assert.deepEqual([at.lsn, at.timeline, at.size], [3000, 2, 70_000]);
        assert.equal(sha(await at.bytes()), sha(c));
        assert.equal(sha(await (await store.at(100)).bytes()), sha(a));
        assert.deepEqual(snapshotFiles(await storage.list()), [snapshotName(100, 1), snapshotName(5000, 1), snapshotName(3000, 2)].sort());
        await store.removeOlderThan(3000);
        assert.deepEqual(snapshotFiles(await storage.list()), [snapshotName(5000, 1), snapshotName(3000, 2)].sort());
        assert.equal(await codeOf(store.at(100)), 'WAL_CORRUPT');
        // The same LSN again replaces the file.
        await store.write(5000, 1, a);
        assert.equal(sha(await (await store.at(5000)).bytes()), sha(a));
      }
    } finally {
      await cleanup();
    }
  });

  it('chunks() and bytes() give the exact data of a multi-MiB snapshot, in bounded chunks', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      for (const storage of [new MemoryStorage(), new NodeStorage(dir)] as Storage[]) {
        await storage.prepare();
        const store = new SnapshotStore(storage);
        const data = bytes(5 * MiB + 12_345, 7);
        await store.write(1 << 20, 1, pieces(data, [MiB + 1, 333, 3 * MiB]));
        const snapshot = await store.latest();
        assert.ok(snapshot !== null);
        assert.equal(snapshot.size, data.length);
        const { data: read, largest } = await streamed(snapshot);
        assert.equal(read.length, data.length);
        assert.ok(read.equals(data), 'chunks() yields the bytes written');
        assert.ok(largest <= MiB, `chunks of at most 1 MiB, got ${largest}`);
        assert.ok((await snapshot.bytes()).equals(data), 'bytes() is the whole snapshot');
        // A Snapshot can be read more than once.
        assert.ok((await streamed(snapshot)).data.equals(data));
      }
    } finally {
      await cleanup();
    }
  });

  it('its file names and headers hold the largest LSN and timeline; sizes are bounded only by the disk (read back in chunks)', async () => {
    // Nothing caps a snapshot's size but Number.MAX_SAFE_INTEGER (its header's u64 is checked
    // against it): the reader streams it in 1 MiB chunks, so whatever was written reads back.
    const { dir, cleanup } = await tempDir();
    try {
      for (const storage of [new MemoryStorage(), new NodeStorage(dir)] as Storage[]) {
        await storage.prepare();
        const store = new SnapshotStore(storage);
        const data = bytes(MiB + 3, 5);
        await store.write(Number.MAX_SAFE_INTEGER, 0xffffffff, data);
        assert.deepEqual(snapshotFiles(await storage.list()), [snapshotName(Number.MAX_SAFE_INTEGER, 0xffffffff)]);
        const found = await store.at(Number.MAX_SAFE_INTEGER);
        assert.deepEqual([found.lsn, found.timeline, found.size], [Number.MAX_SAFE_INTEGER, 0xffffffff, data.length]);
        assert.equal(sha(await found.bytes()), sha(data));
        assert.equal(await store.newestAtOrBelow(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER);
      }
    } finally {
      await cleanup();
    }
  });

  it('an aborted, refused or failing write leaves no snapshot and no partial file', async () => {
    const storage = new MemoryStorage();
    const store = new SnapshotStore(storage);
    await store.write(10, 1, bytes(100, 1));
    const before = snapshotFiles(storage.fileNames());
    const data = bytes(3 * MiB, 2);

    const abort = new AbortController();
    async function* abortMidway(): AsyncGenerator<Uint8Array> {
      yield data.subarray(0, MiB);
      abort.abort();
      yield data.subarray(MiB);
    }
    assert.equal(await codeOf(store.write(20, 1, abortMidway(), { signal: abort.signal })), 'ABORTED');
    assert.deepEqual(snapshotFiles(storage.fileNames()), before);

    let verified = 0;
    const refused = store.write(20, 1, pieces(data, [MiB]), {
      verify: (written) => {
        verified++;
        assert.equal(written.size, data.length);
        throw new Error('size mismatch');
      },
    });
    await assert.rejects(refused, /size mismatch/);
    assert.equal(verified, 1);
    assert.deepEqual(snapshotFiles(storage.fileNames()), before);

    async function* failing(): AsyncGenerator<Uint8Array> {
      yield data.subarray(0, 1000);
      throw new Error('the application failed mid-snapshot');
    }
    await assert.rejects(store.write(20, 1, failing()), /mid-snapshot/);
    assert.deepEqual(snapshotFiles(storage.fileNames()), before);

    for (const operation of ['write', 'datasync', 'rename'] as const) {
      storage.injectFault({ operation, code: 'ENOSPC', file: /^snapshot/ });
      assert.equal(await codeOf(store.write(20, 1, data)), 'WAL_IO', operation);
      assert.deepEqual(snapshotFiles(storage.fileNames()), before, operation);
    }
    assert.equal((await store.latest())?.lsn, 10);
    assert.equal(sha(await (await store.at(10)).bytes()), sha(bytes(100, 1)));
  });

  it('a crash at any step leaves either no new snapshot or the whole one, and no partial after the next write', async () => {
    const crashes: CrashOptions[] = [
      { unsyncedWrites: 'torn', unsyncedMetadata: 'prefix' },
      { unsyncedWrites: 'keep', unsyncedMetadata: 'keep' },
      { unsyncedWrites: 'lose', unsyncedMetadata: 'keep' },
      { unsyncedWrites: 'sectors', unsyncedMetadata: 'prefix' },
    ];
    const old = bytes(5000, 11);
    const data = bytes(2 * MiB + 77, 12);
    for (const [c, crash] of crashes.entries()) {
      let completed = false;
      for (let n = 1; !completed; n++) {
        assert.ok(n < 200, 'the write never completed');
        const storage = new MemoryStorage();
        await new SnapshotStore(storage).write(100, 1, old);
        const random = seededRandom(c * 1000 + n);
        const crashed = storage.crashAfter(n, { ...crash, random });
        const code = await codeOf(new SnapshotStore(storage).write(9000, 1, pieces(data, [700_000])));
        if (code === 'resolved') {
          completed = true;
          storage.crash({ ...crash, random });
        } else {
          assert.equal(code, 'WAL_IO', `crash before operation ${n}`);
        }
        const survivor = await crashed;
        const store = new SnapshotStore(survivor);
        const latest = await store.latest();
        assert.ok(latest !== null, 'the older snapshot survives');
        if (latest.lsn === 9000) assert.ok((await latest.bytes()).equals(data), `crash before operation ${n}: the new snapshot is whole`);
        else assert.ok(!completed && latest.lsn === 100 && (await latest.bytes()).equals(old), `crash before operation ${n}: the old snapshot`);
        // Whatever a crash left half-written, the next write clears it.
        await store.write(9500, 1, bytes(10, 13));
        assert.ok(!survivor.fileNames().includes('snapshot.partial'), `after a crash before operation ${n}: ${survivor.fileNames().join(', ')}`);
        for (const name of snapshotFiles(survivor.fileNames())) await store.open(name);
      }
    }
  });

  it('a leftover partial file is removed by removeOlderThan and never taken for a snapshot', async () => {
    const storage = new MemoryStorage();
    const file = await storage.open('snapshot.partial', { create: true });
    await file.write(bytes(100, 1), 0);
    await file.close();
    const store = new SnapshotStore(storage);
    assert.equal(await store.latest(), null);
    await store.removeOlderThan(0);
    assert.deepEqual(storage.fileNames(), []);
  });

  it('a damaged snapshot is WAL_CORRUPT, wherever the damage is', async () => {
    const storage = new MemoryStorage();
    const store = new SnapshotStore(storage);
    const data = bytes(3 * MiB + 5, 21);
    await store.write(4096, 1, data);
    const name = snapshotName(4096, 1);
    const size = storage.readFile(name).length;
    const offsets = [0, 4, 8, 12, 16, 20, 28, 32, 35, 36, 37, 1000, MiB + 36, 2 * MiB + 40, size - 1];
    for (const offset of offsets) {
      storage.corrupt(name, offset, (b) => b ^ 0x10);
      assert.equal(await codeOf(store.latest()), 'WAL_CORRUPT', `a flipped byte at ${offset}`);
      assert.equal(await codeOf(store.at(4096)), 'WAL_CORRUPT', `a flipped byte at ${offset}`);
      storage.corrupt(name, offset, (b) => b ^ 0x10);
    }
    assert.ok((await (await store.at(4096)).bytes()).equals(data));

    // Damage after the snapshot was opened and checked is still caught while it is read.
    const opened = await store.at(4096);
    storage.corrupt(name, 2 * MiB, (b) => b ^ 1);
    assert.equal(await codeOf(opened.bytes()), 'WAL_CORRUPT');
    storage.corrupt(name, 2 * MiB, (b) => b ^ 1);

    // A truncated file, and a file under another snapshot's name.
    const whole = storage.readFile(name);
    const cut = await storage.open(snapshotName(8192, 1), { create: true });
    await cut.write(whole.subarray(0, whole.length - 10), 0);
    await cut.close();
    assert.equal(await codeOf(store.at(8192)), 'WAL_CORRUPT', 'truncated');
    await storage.remove(snapshotName(8192, 1));
    await storage.rename(name, snapshotName(8192, 1));
    assert.equal(await codeOf(store.at(8192)), 'WAL_CORRUPT', 'a header that names another LSN');
  });

  it('a failing read is WAL_IO', async () => {
    const storage = new MemoryStorage();
    const store = new SnapshotStore(storage);
    await store.write(1, 1, bytes(100, 1));
    storage.injectFault({ operation: 'read', code: 'EIO' });
    assert.equal(await codeOf(store.latest()), 'WAL_IO');
    const snapshot = await store.latest();
    storage.injectFault({ operation: 'read', code: 'EIO' });
    assert.equal(await codeOf(snapshot?.bytes() ?? Promise.resolve()), 'WAL_IO');
  });
});
