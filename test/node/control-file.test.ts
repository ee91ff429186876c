import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NodeStorage, isWalshipError } from '../../src/index.js';
import { CONTROL_FILE, readControlFile, writeControlFile, type ControlData } from '../../src/node/control-file.js';
import { MemoryStorage, seededRandom } from '../../src/testing/index.js';
import { tempDir } from '../helpers/temp-dir.js';
import { CRASH_MODES } from '../helpers/crashes.js';
import { encodeJsonFile, putFile } from '../helpers/json-file.js';

// OLD and NEW differ in every field, the node's state included: the crash tests below cover a
// state change (a standby's directory becoming a primary's) as much as a checkpoint.
const OLD: ControlData = { state: 'in-recovery', systemId: '0123456789abcdef', segmentSize: 65536, timeline: 1, checkpoint: null, consistentLsn: 0 };
const NEW: ControlData = {
  state: 'in-production',
  systemId: '0123456789abcdef',
  segmentSize: 65536,
  timeline: 3,
  checkpoint: { lsn: 1_234_567, snapshot: true },
  consistentLsn: 1_300_000,
};




async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isWalshipError(err, code as never), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

describe('control file', () => {
  it('round-trips on MemoryStorage and on real files; a new node has none', async () => {
    const memory = new MemoryStorage();
    assert.equal(await readControlFile(memory), null);
    await writeControlFile(memory, OLD);
    assert.deepEqual(await readControlFile(memory), OLD);
    await writeControlFile(memory, NEW);
    assert.deepEqual(await readControlFile(memory), NEW);
    assert.deepEqual(memory.fileNames(), [CONTROL_FILE]);

    const { dir, cleanup } = await tempDir();
    try {
      const disk = new NodeStorage(dir);
      await disk.prepare();
      assert.equal(await readControlFile(disk), null);
      await writeControlFile(disk, NEW);
      await writeControlFile(disk, OLD);
      assert.deepEqual(await readControlFile(new NodeStorage(dir)), OLD);
      assert.deepEqual((await disk.list()).filter((n) => n.startsWith('walship.control')), [CONTROL_FILE]);
    } finally {
      await cleanup();
    }
  });

  for (const crash of CRASH_MODES) {
    it(`a crash at any step of a replace (a state change, a checkpoint) leaves the old or the new file (${crash.unsyncedWrites}/${crash.unsyncedMetadata})`, async () => {
      for (const hadOld of [true, false]) {
        let completed = false;
        for (let n = 1; !completed; n++) {
          assert.ok(n < 100, 'the write never completed');
          const storage = new MemoryStorage();
          if (hadOld) await writeControlFile(storage, OLD);
          const crashed = storage.crashAfter(n, { ...crash, random: seededRandom(n) });
          const writing = writeControlFile(storage, NEW).then(
            () => null,
            (err: unknown) => err,
          );
          const error = await writing;
          if (error === null) {
            completed = true;
            storage.crash({ ...crash, random: seededRandom(n) });
          } else {
            assert.ok(isWalshipError(error, 'WAL_IO'), `a failed write is WAL_IO, got ${String(error)}`);
          }
          const survivor = await crashed;
          const found = await readControlFile(survivor);
          const allowed = completed ? [NEW] : hadOld ? [OLD, NEW] : [null, NEW];
          assert.ok(
            allowed.some((a) => JSON.stringify(a) === JSON.stringify(found)),
            `after a crash before operation ${n}: ${JSON.stringify(found)}`,
          );
          // A leftover temporary file does not disturb the next replace.
          await writeControlFile(survivor, OLD);
          assert.deepEqual(await readControlFile(survivor), OLD);
          assert.deepEqual(survivor.fileNames(), [CONTROL_FILE]);
        }
      }
    });
  }

  it('a failed write leaves the old file and is WAL_IO with the cause', async () => {
    for (const operation of ['open', 'write', 'datasync', 'rename', 'syncDirectory'] as const) {
      const storage = new MemoryStorage();
      await writeControlFile(storage, OLD);
      storage.injectFault({ operation, code: 'EIO' });
      await assert.rejects(writeControlFile(storage, NEW), (err: unknown) => {
        assert.ok(isWalshipError(err, 'WAL_IO'), `${operation}: ${String(err)}`);
        assert.equal(((err as Error).cause as { code?: string }).code, 'EIO');
        return true;
      });
      const found = await readControlFile(storage);
      // A failed syncDirectory comes after the rename: the new file is in place, not yet durable.
      assert.deepEqual(found, operation === 'syncDirectory' ? NEW : OLD, operation);
    }
  });

  it('a flipped byte anywhere is WAL_CORRUPT', async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, NEW);
    const size = storage.readFile(CONTROL_FILE).length;
    for (let offset = 0; offset < size; offset++) {
      for (const mask of [0x01, 0x80]) {
        storage.corrupt(CONTROL_FILE, offset, (b) => b ^ mask);
        await rejectsWith(readControlFile(storage), 'WAL_CORRUPT');
        storage.corrupt(CONTROL_FILE, offset, (b) => b ^ mask);
      }
    }
    assert.deepEqual(await readControlFile(storage), NEW);
  });

  it('a truncated, empty, oversized or garbled file is WAL_CORRUPT; another format is WAL_FORMAT', async () => {
    const good = encodeJsonFile(JSON.stringify({ format: 2, ...NEW }));
    const cases: Array<[string, Uint8Array, string]> = [
      ['empty', Buffer.alloc(0), 'WAL_CORRUPT'],
      ['header only', good.subarray(0, 8), 'WAL_CORRUPT'],
      ['truncated', good.subarray(0, good.length - 3), 'WAL_CORRUPT'],
      ['zeros', Buffer.alloc(good.length), 'WAL_CORRUPT'],
      ['oversized', Buffer.alloc(1024 * 1024), 'WAL_CORRUPT'],
      ['a valid checksum over something that is not JSON', encodeJsonFile('not json {'), 'WAL_CORRUPT'],
      ['a valid checksum over JSON of the wrong shape', encodeJsonFile(JSON.stringify({ format: 2, systemId: 7 })), 'WAL_CORRUPT'],
      ['a valid checksum over a JSON array', encodeJsonFile('[1,2,3]'), 'WAL_CORRUPT'],
      ['a negative checkpoint', encodeJsonFile(JSON.stringify({ format: 2, ...NEW, checkpoint: { lsn: -1, snapshot: true } })), 'WAL_CORRUPT'],
      ['a format-1 file (no node state)', encodeJsonFile(JSON.stringify({ format: 1, ...NEW })), 'WAL_FORMAT'],
      ['an unknown node state', encodeJsonFile(JSON.stringify({ format: 2, ...NEW, state: 'promoting' })), 'WAL_CORRUPT'],
    ];
    for (const [what, bytes, code] of cases) {
      const storage = new MemoryStorage();
      await putFile(storage, CONTROL_FILE, bytes);
      await assert.rejects(readControlFile(storage), (err: unknown) => {
        assert.ok(isWalshipError(err, code as never), `${what}: expected ${code}, got ${String(err)}`);
        return true;
      });
    }
    // The helper's encoding is the real one.
    const storage = new MemoryStorage();
    await putFile(storage, CONTROL_FILE, good);
    assert.deepEqual(await readControlFile(storage), NEW);
  });

  it('a failing read is WAL_IO, never an uncoded error', async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, NEW);
    for (const operation of ['open', 'read'] as const) {
      storage.injectFault({ operation, code: 'EIO' });
      await rejectsWith(readControlFile(storage), 'WAL_IO');
    }
    assert.deepEqual(await readControlFile(storage), NEW);
  });
});
