/**
 * The behaviour every {@link Storage} backend must share. Each backend's test file calls
 * {@link storageContract} with a factory for fresh, empty storages.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError } from '../../src/errors.js';
import type { Storage, StorageFile } from '../../src/storage/storage.js';

/** A fresh, empty storage and how to dispose of it. */
export interface StorageFixture {
  storage: Storage;
  cleanup(): Promise<void>;
}

const encoder = new TextEncoder();
const bytes = (text: string): Uint8Array => encoder.encode(text);

/** Reads `length` bytes at `position`, returning only what was read. */
async function readAt(file: StorageFile, position: number, length: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  const count = await file.read(buffer, 0, length, position);
  return buffer.subarray(0, count);
}

async function readWhole(storage: Storage, name: string): Promise<Uint8Array> {
  const file = await storage.open(name, { readOnly: true });
  try {
    return await readAt(file, 0, await file.size());
  } finally {
    await file.close();
  }
}

async function createWith(storage: Storage, name: string, content: Uint8Array): Promise<void> {
  const file = await storage.open(name, { create: true, exclusive: true });
  await file.write(content, 0);
  await file.close();
}

function hasCode(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.equal((err as { code?: unknown }).code, code);
    return true;
  };
}

export function storageContract(name: string, make: () => Promise<StorageFixture>): void {
  /** Runs `body` on a fresh, prepared storage and always cleans it up. */
  const withStorage = (body: (storage: Storage) => Promise<void>) => async (): Promise<void> => {
    const { storage, cleanup } = await make();
    try {
      await storage.prepare();
      await body(storage);
    } finally {
      await cleanup();
    }
  };

  describe(`Storage contract: ${name}`, () => {
    it('writev, where implemented, writes the buffers back to back at the position', withStorage(async (storage) => {
      const file = await storage.open('v', { create: true });
      if (file.writev === undefined) {
        await file.close();
        return; // optional in the contract: the log falls back to write()
      }
      const parts = [Buffer.from('abc'), Buffer.alloc(0), Buffer.alloc(70_000, 7), Buffer.from('xyz')];
      await file.writev(parts, 5);
      const out = Buffer.alloc(5 + 70_006);
      assert.equal(await file.read(out, 0, out.length, 0), out.length);
      assert.deepEqual(out, Buffer.concat([Buffer.alloc(5), ...parts]));
      await file.close();
    }));

    it('has a description', withStorage(async (storage) => {
      assert.equal(typeof storage.description, 'string');
      assert.notEqual(storage.description, '');
    }));

    it('starts empty, and prepare() is idempotent', withStorage(async (storage) => {
      await storage.prepare();
      assert.deepEqual(await storage.list(), []);
    }));

    it('opening a missing file without create fails with ENOENT', withStorage(async (storage) => {
      await assert.rejects(storage.open('missing'), hasCode('ENOENT'));
      await assert.rejects(storage.open('missing', { readOnly: true }), hasCode('ENOENT'));
      assert.deepEqual(await storage.list(), []);
    }));

    it('create makes an empty file that list() shows', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      assert.equal(file.name, 'a');
      assert.equal(await file.size(), 0);
      await file.close();
      assert.deepEqual(await storage.list(), ['a']);
    }));

    it('exclusive create of an existing file fails with EEXIST and keeps it', withStorage(async (storage) => {
      await createWith(storage, 'a', bytes('hello'));
      await assert.rejects(storage.open('a', { create: true, exclusive: true }), hasCode('EEXIST'));
      const reopened = await storage.open('a', { create: true });
      assert.equal(await reopened.size(), 5);
      await reopened.close();
      assert.deepEqual(await readWhole(storage, 'a'), bytes('hello'));
    }));

    it('writes and reads back at positions, overwriting in place', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.write(bytes('hello world'), 0);
      await file.write(bytes('WORLD'), 6);
      await file.write(bytes('!'), 11);
      assert.equal(await file.size(), 12);
      assert.deepEqual(await readAt(file, 0, 12), bytes('hello WORLD!'));
      assert.deepEqual(await readAt(file, 4, 3), bytes('o W'));
      await file.close();
    }));

    it('reads into the buffer at the given offset only', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.write(bytes('abcdef'), 0);
      const buffer = new Uint8Array(8).fill(0x2e);
      assert.equal(await file.read(buffer, 2, 3, 1), 3);
      assert.deepEqual(buffer, new Uint8Array([0x2e, 0x2e, 0x62, 0x63, 0x64, 0x2e, 0x2e, 0x2e]));
      await file.close();
    }));

    it('a write past the end leaves a hole that reads as zeros', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.write(bytes('head'), 0);
      await file.write(bytes('tail'), 5000);
      assert.equal(await file.size(), 5004);
      const whole = await readAt(file, 0, 5004);
      assert.deepEqual(whole.subarray(0, 4), bytes('head'));
      assert.ok(whole.subarray(4, 5000).every((byte) => byte === 0));
      assert.deepEqual(whole.subarray(5000), bytes('tail'));
      await file.close();
    }));

    it('reads are short only at the end of the file', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.write(bytes('0123456789'), 0);
      assert.deepEqual(await readAt(file, 7, 10), bytes('789'));
      assert.equal(await file.read(new Uint8Array(4), 0, 4, 10), 0);
      assert.equal(await file.read(new Uint8Array(4), 0, 4, 1000), 0);
      assert.equal(await file.read(new Uint8Array(4), 0, 0, 0), 0);
      await file.close();
    }));

    it('round-trips a write of several MiB', withStorage(async (storage) => {
      const data = new Uint8Array(3 * 1024 * 1024 + 17);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
      const file = await storage.open('big', { create: true });
      await file.write(data, 100);
      assert.equal(await file.size(), data.length + 100);
      assert.deepEqual(await readAt(file, 100, data.length), data);
      await file.close();
    }));

    it('allocate extends with zeros and never shrinks or changes bytes', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.write(bytes('keep'), 0);
      await file.allocate(2);
      assert.equal(await file.size(), 4);
      await file.allocate(2.5 * 1024 * 1024);
      assert.equal(await file.size(), 2.5 * 1024 * 1024);
      const whole = await readAt(file, 0, 2.5 * 1024 * 1024);
      assert.deepEqual(whole.subarray(0, 4), bytes('keep'));
      assert.ok(whole.subarray(4).every((byte) => byte === 0));
      await file.write(bytes('mid'), 1000);
      await file.allocate(100);
      await file.allocate(2.5 * 1024 * 1024);
      assert.equal(await file.size(), 2.5 * 1024 * 1024);
      assert.deepEqual(await readAt(file, 1000, 3), bytes('mid'));
      await file.close();
    }));

    it('a sparse allocate reads back as zeros like any other, and keeps written bytes', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.write(bytes('keep'), 0);
      await file.allocate(3 * 1024 * 1024, { sparse: true });
      assert.equal(await file.size(), 3 * 1024 * 1024);
      await file.write(bytes('mid'), 2 * 1024 * 1024);
      await file.allocate(100, { sparse: true });
      assert.equal(await file.size(), 3 * 1024 * 1024);
      const whole = await readAt(file, 0, 3 * 1024 * 1024);
      assert.deepEqual(whole.subarray(0, 4), bytes('keep'));
      assert.deepEqual(whole.subarray(2 * 1024 * 1024, 2 * 1024 * 1024 + 3), bytes('mid'));
      whole.fill(0, 2 * 1024 * 1024, 2 * 1024 * 1024 + 3);
      assert.ok(whole.subarray(4).every((byte) => byte === 0));
      await file.close();
    }));

    it('datasync and syncDirectory resolve', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.write(bytes('x'), 0);
      await file.datasync();
      await file.close();
      await storage.syncDirectory();
      assert.deepEqual(await readWhole(storage, 'a'), bytes('x'));
    }));

    it('close is idempotent and a closed file rejects reads and writes', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await file.close();
      await file.close();
      await assert.rejects(file.write(bytes('x'), 0), hasCode('EBADF'));
      await assert.rejects(file.read(new Uint8Array(1), 0, 1, 0), hasCode('EBADF'));
    }));

    it('a read-only file rejects writes with EBADF and bytesWritten 0', withStorage(async (storage) => {
      await createWith(storage, 'a', bytes('abc'));
      const file = await storage.open('a', { readOnly: true });
      await assert.rejects(file.write(bytes('zz'), 0), (err: unknown) => {
        assert.equal((err as { code?: unknown }).code, 'EBADF');
        assert.equal((err as { bytesWritten?: unknown }).bytesWritten, 0);
        return true;
      });
      await assert.rejects(file.allocate(100), hasCode('EBADF'));
      assert.deepEqual(await readAt(file, 0, 10), bytes('abc'));
      await file.close();
      assert.deepEqual(await readWhole(storage, 'a'), bytes('abc'));
    }));

    it('rename moves a file, replacing the target', withStorage(async (storage) => {
      await createWith(storage, 'a', bytes('new'));
      await createWith(storage, 'b', bytes('old content'));
      await storage.rename('a', 'b');
      assert.deepEqual(await storage.list(), ['b']);
      assert.deepEqual(await readWhole(storage, 'b'), bytes('new'));
      await assert.rejects(storage.open('a'), hasCode('ENOENT'));
    }));

    it('an open file keeps working after a rename', withStorage(async (storage) => {
      const file = await storage.open('a', { create: true });
      await storage.rename('a', 'b');
      await file.write(bytes('still'), 0);
      await file.close();
      assert.deepEqual(await readWhole(storage, 'b'), bytes('still'));
    }));

    it('renaming a missing file fails with ENOENT', withStorage(async (storage) => {
      await createWith(storage, 'b', bytes('b'));
      await assert.rejects(storage.rename('missing', 'b'), hasCode('ENOENT'));
      assert.deepEqual(await readWhole(storage, 'b'), bytes('b'));
    }));

    it('remove deletes a file; a missing one fails with ENOENT', withStorage(async (storage) => {
      await createWith(storage, 'a', bytes('a'));
      await createWith(storage, 'b', bytes('b'));
      await storage.remove('a');
      assert.deepEqual(await storage.list(), ['b']);
      await assert.rejects(storage.open('a'), hasCode('ENOENT'));
      await assert.rejects(storage.remove('a'), hasCode('ENOENT'));
    }));

    it('list() names every file', withStorage(async (storage) => {
      const names = ['000000010000000000000001', 'slot.json', 'x.tmp'];
      for (const file of names) await createWith(storage, file, bytes(file));
      assert.deepEqual((await storage.list()).sort(), names);
    }));

    it('rejects names that are not plain file names with EINVAL', withStorage(async (storage) => {
      await createWith(storage, 'ok', bytes('ok'));
      for (const bad of ['a/b', '../escape', 'a\\b', '.', '..', '']) {
        await assert.rejects(storage.open(bad, { create: true }), hasCode('EINVAL'), `open ${JSON.stringify(bad)}`);
        await assert.rejects(storage.rename('ok', bad), hasCode('EINVAL'), `rename to ${JSON.stringify(bad)}`);
        await assert.rejects(storage.rename(bad, 'ok'), hasCode('EINVAL'), `rename from ${JSON.stringify(bad)}`);
        await assert.rejects(storage.remove(bad), hasCode('EINVAL'), `remove ${JSON.stringify(bad)}`);
      }
      assert.deepEqual(await storage.list(), ['ok']);
    }));

    it('lock() is exclusive until released, and release is idempotent', withStorage(async (storage) => {
      const lock = await storage.lock();
      await assert.rejects(storage.lock(), (err: unknown) => isWalshipError(err, 'WAL_LOCKED'));
      await lock.release();
      await lock.release();
      const again = await storage.lock();
      await assert.rejects(storage.lock(), (err: unknown) => isWalshipError(err, 'WAL_LOCKED'));
      await again.release();
    }));

    it('a second release does not free a lock taken since', withStorage(async (storage) => {
      const first = await storage.lock();
      await first.release();
      const second = await storage.lock();
      await first.release();
      await assert.rejects(storage.lock(), (err: unknown) => isWalshipError(err, 'WAL_LOCKED'));
      await second.release();
    }));
  });
}
