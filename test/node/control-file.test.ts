import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { NodeStorage, isWalshipError } from '../../src/index.js';
import { CONTROL_FILE, readControlFile, switchedFromOf, writeControlFile, type ControlData } from '../../src/node/control-file.js';
import type { JsonFileSpec } from '../../src/storage/json-file.js';
import { COPY_BYTES, MAX_TWO_COPY_JSON_BYTES, readTwoCopyFile, writeTwoCopyFile } from '../../src/storage/two-copy-file.js';
import { MAX_SWITCH_REASON, branchHistory } from '../../src/wal/timeline-history.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { tempDir } from '../helpers/temp-dir.js';
import { reportCrashPoints, runToPowerLoss, sweepCrashPoints, type CrashPoint, type CrashSweepPlan } from '../helpers/crashes.js';
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
const NEXT: ControlData = { ...NEW, state: 'shut-down', checkpoint: { lsn: 2_000_000, snapshot: false } };

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

  /** Control data for a message: a long switch reason shown by its length. */
  const summary = (data: ControlData | null | undefined): string =>
    JSON.stringify(data?.switchedFrom === undefined ? data : { ...data, switchedFrom: { ...data.switchedFrom, reason: `${data.switchedFrom.reason.length} characters` } });

  /** Reads the survivor of a crash: one of `allowed`; then it takes updates, through one more crash too, and holds at most a stray temporary file. */
  async function checkSurvivor(survivor: MemoryStorage, allowed: ReadonlyArray<ControlData | null>, point: CrashPoint): Promise<void> {
    const found = await readControlFile(survivor);
    assert.ok(allowed.some((a) => isDeepStrictEqual(a, found)), `${point.what}: ${summary(found)}, expected one of ${allowed.map(summary).join(', ')}`);
    // A second crash within the next update, a state change, in place if the survivor's copies allow it.
    const what = `${point.what}, then`;
    const next = found?.state === 'shut-down' ? OLD : { ...(found ?? NEW), state: 'shut-down' as const };
    const second = await runToPowerLoss(survivor, { ...point, operation: 1 + (point.operation % 6), what }, () => writeControlFile(survivor, next));
    const afterSecond = await readControlFile(second.survivor);
    const allowedSecond = second.completed ? [next] : [found, next];
    assert.ok(allowedSecond.some((a) => isDeepStrictEqual(a, afterSecond)), `${what} a crash in an update: ${summary(afterSecond)}`);
    // Whatever the crashes left, the next updates work and are what is read.
    await writeControlFile(second.survivor, OLD);
    assert.deepEqual(await readControlFile(second.survivor), OLD, `${what}: the next update`);
    await writeControlFile(second.survivor, NEW);
    assert.deepEqual(await readControlFile(second.survivor), NEW, `${what}: the update after`);
    // At most a temporary file of a replace the crash cut short is left.
    assert.deepEqual(second.survivor.fileNames().filter((name) => name !== `${CONTROL_FILE}.tmp`), [CONTROL_FILE], `${what}: the files`);
  }

  it('a crash at any step of an update (a state change, a checkpoint) leaves the old content or the new', async (t) => {
    // Before the update: no file (it is created), a file of older walship (single copy, replaced
    // whole), and two-copy files after one, two and three updates (the copies' sequence
    // numbers differ in every way an in-place update meets).
    const before: ReadonlyArray<readonly ControlData[] | null> = [[], null, [OLD], [NEW, OLD], [OLD, NEW, OLD]];
    let points = 0;
    for (const [i, earlier] of before.entries()) {
      points += await sweepCrashPoints({ maxOperations: 100, seed: i }, async (point) => {
        const storage = new MemoryStorage();
        if (earlier === null) await putFile(storage, CONTROL_FILE, encodeJsonFile(JSON.stringify({ format: 2, ...OLD })));
        for (const data of earlier ?? []) await writeControlFile(storage, data);
        const old = earlier === null ? OLD : (earlier.at(-1) ?? null);
        const { survivor, completed, error } = await runToPowerLoss(storage, point, () => writeControlFile(storage, NEXT));
        const what = `case ${i}, ${point.what}`;
        if (completed) assert.equal(error, null, `${what}: with no crash the update succeeds`);
        // The crash may come at the update's last step (closing the file), after it was durable: then it succeeds.
        else if (error !== null) assert.ok(isWalshipError(error, 'WAL_IO'), `${what}: a failed update is WAL_IO, got ${String(error)}`);
        await checkSurvivor(survivor, completed ? [NEXT] : [old, NEXT], { ...point, what });
        return { completed };
      });
    }
    reportCrashPoints(t, points);
  });

  it('a crash at any step of a sequence of updates (a legacy file replaced, then in-place updates) leaves the content before or after the update under way', async (t) => {
    // The promoted ones record a long switch reason: copies of several 512-byte sectors, which a
    // power loss that keeps unsynced sectors out of order can tear together.
    const promoted: ControlData = { ...NEW, switchedFrom: { timeline: 2, switchLsn: 1_234_000, reason: 'r'.repeat(MAX_SWITCH_REASON) } };
    const SEQUENCE: readonly ControlData[] = [NEW, NEXT, OLD, promoted, { ...promoted, checkpoint: { lsn: 1_500_000, snapshot: false } }, NEXT];
    const sweep = (plan: CrashSweepPlan): Promise<number> =>
      sweepCrashPoints({ maxOperations: 300, ...plan }, async (point) => {
        const storage = new MemoryStorage();
        await putFile(storage, CONTROL_FILE, encodeJsonFile(JSON.stringify({ format: 2, ...OLD })));
        let done = 0;
        const { survivor, completed } = await runToPowerLoss(storage, point, async () => {
          for (const data of SEQUENCE) {
            await writeControlFile(storage, data);
            done++;
          }
        });
        const states = [OLD, ...SEQUENCE];
        await checkSurvivor(survivor, completed ? [NEXT] : states.slice(done, done + 2), point);
        return { completed };
      });
    // Every mode once; then the out-of-order sectors again with other seeds: only some of them
    // keep part of each copy of a multi-sector update, the crash that needs its first fdatasync.
    let points = await sweep({ seed: 7 });
    for (const seed of [8, 9, 10]) points += await sweep({ modes: [5], seed });
    reportCrashPoints(t, points);
  });

  it('an update is two small writes in place, each fdatasynced: no rename, no directory sync', async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, OLD);
    const counted = storage.operationCount;
    await writeControlFile(storage, NEW);
    // open, read, write, datasync, write, datasync, close
    assert.equal(storage.operationCount - counted, 7);
    assert.deepEqual(await readControlFile(storage), NEW);
    assert.equal(storage.readFile(CONTROL_FILE).length, 2 * COPY_BYTES);
  });

  it('onDurable comes once the first copy holds the new content durably: a power loss then keeps it', async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, OLD);
    let survivor: MemoryStorage | null = null;
    const writing = writeControlFile(storage, NEW, {
      onDurable: () => {
        // Every unsynced write is lost, and creates, renames and removes since the last directory sync.
        survivor = storage.crash({ unsyncedWrites: 'lose', unsyncedMetadata: 'lose' });
      },
    });
    await assert.rejects(writing, (err) => isWalshipError(err, 'WAL_IO'), 'the storage died under the second copy');
    assert.ok(survivor !== null);
    assert.deepEqual(await readControlFile(survivor), NEW);
  });

  it("the second copy waits for what onDurable returns; the update's promise settles after it", async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, OLD);
    const copies = (): string[] => {
      const bytes = Buffer.from(storage.readFile(CONTROL_FILE));
      return [bytes.subarray(0, COPY_BYTES).toString('latin1'), bytes.subarray(COPY_BYTES).toString('latin1')];
    };
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let told = 0;
    let settled = false;
    const writing = writeControlFile(storage, NEW, {
      onDurable: () => {
        told++;
        return gate;
      },
    }).then(() => (settled = true));
    while (told === 0) await new Promise((resolve) => setImmediate(resolve));
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    const [a, b] = copies();
    assert.notEqual(a, b, 'the second copy is not written while the returned promise is pending');
    assert.equal(settled, false, 'the update is not done before its second copy');
    release();
    await writing;
    const [c, d] = copies();
    assert.equal(c, d, 'both copies hold the new content (the same sequence number and JSON)');
    assert.equal(told, 1);
    assert.deepEqual(await readControlFile(storage), NEW);
  });

  it('onDurable is called once when the in-place update fails after its first copy and the file is replaced whole; a rejected wait changes nothing', async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, OLD);
    // The second write of the in-place update fails: the update falls back to a whole replace.
    const cancel = storage.injectFault({ operation: 'write', code: 'EIO', file: CONTROL_FILE, nth: 2 });
    let told = 0;
    await writeControlFile(storage, NEW, {
      onDurable: () => {
        told++;
        return Promise.reject(new Error('only a wait'));
      },
    });
    cancel();
    assert.equal(told, 1);
    assert.deepEqual(await readControlFile(storage), NEW);
  });

  it('a failed in-place update falls back to replacing the file whole; when that fails too it is WAL_IO and the old content stays', async () => {
    for (const [operation, nth] of [['read', 1], ['write', 1], ['write', 2], ['datasync', 1], ['datasync', 2]] as const) {
      {
        const storage = new MemoryStorage();
        await writeControlFile(storage, OLD);
        // Only the in-place update fails: the whole-file replace after it succeeds.
        storage.injectFault({ operation, code: 'EIO', nth, file: CONTROL_FILE });
        await writeControlFile(storage, NEW);
        assert.deepEqual(await readControlFile(storage), NEW, `${operation} #${nth}`);
        assert.equal(storage.readFile(CONTROL_FILE).length, 2 * COPY_BYTES);
      }
    }
    for (const operation of ['open', 'write', 'datasync'] as const) {
      const storage = new MemoryStorage();
      await writeControlFile(storage, OLD);
      const heal = storage.injectFault({ operation, code: 'EIO', times: Infinity });
      await assert.rejects(writeControlFile(storage, NEW), (err: unknown) => {
        assert.ok(isWalshipError(err, 'WAL_IO'), `${operation}: ${String(err)}`);
        assert.equal(((err as Error).cause as { code?: string }).code, 'EIO');
        return true;
      });
      heal();
      const found = await readControlFile(storage);
      // After a failed fdatasync the copy written first may be read (not durable), as on a real disk.
      const allowed = operation === 'datasync' ? [OLD, NEW] : [OLD];
      assert.ok(allowed.some((a) => JSON.stringify(a) === JSON.stringify(found)), `${operation}: ${JSON.stringify(found)}`);
    }
    // An in-place update renames nothing and syncs no directory.
    for (const operation of ['rename', 'syncDirectory'] as const) {
      const storage = new MemoryStorage();
      await writeControlFile(storage, OLD);
      storage.injectFault({ operation, code: 'EIO', times: Infinity });
      await writeControlFile(storage, NEW);
      assert.deepEqual(await readControlFile(storage), NEW);
    }
  });

  it("an update whose copies tie writes first the copy of its sequence number's parity: the one the previous update wrote second", async () => {
    const storage = new MemoryStorage();
    const firstWrites: number[] = [];
    const traced = Object.create(storage) as MemoryStorage;
    traced.open = async (name, options) => {
      const file = await storage.open(name, options);
      if (name !== CONTROL_FILE) return file;
      let writes = 0;
      const write = file.write.bind(file);
      file.write = async (data, position) => {
        if (writes++ === 0) firstWrites.push(position);
        return write(data, position);
      };
      return file;
    };
    await writeControlFile(traced, OLD); // created whole: both copies sequence 1
    for (const data of [NEW, OLD, NEW, OLD]) await writeControlFile(traced, data);
    // Sequences 2, 3, 4, 5: copy 0, 1, 0, 1 first.
    assert.deepEqual(firstWrites.slice(-4), [0, COPY_BYTES, 0, COPY_BYTES]);
    assert.deepEqual(await readControlFile(storage), OLD);
  });

  it('after a failed update the next one replaces the file whole (it trusts no copy it reads back), then updates go in place again', async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, OLD);
    // The second fdatasync fails, and the whole-file replace after it too.
    const heal = storage.injectFault({ operation: 'datasync', code: 'EIO', nth: 2, times: Infinity });
    await rejectsWith(writeControlFile(storage, NEW), 'WAL_IO');
    heal();
    const traceRenames: string[] = [];
    const rename = storage.rename.bind(storage);
    storage.rename = async (from, to) => {
      traceRenames.push(to);
      return rename(from, to);
    };
    await writeControlFile(storage, NEXT);
    assert.deepEqual(traceRenames, [CONTROL_FILE], 'replaced whole');
    await writeControlFile(storage, OLD);
    assert.deepEqual(traceRenames, [CONTROL_FILE], 'in place again');
    assert.deepEqual(await readControlFile(storage), OLD);
  });

  it('one damaged copy loses nothing; a flipped byte in both copies is WAL_CORRUPT', async () => {
    const storage = new MemoryStorage();
    await writeControlFile(storage, OLD);
    await writeControlFile(storage, NEW);
    const used = storage.readFile(CONTROL_FILE).subarray(0, COPY_BYTES).findLastIndex((b) => b !== 0) + 1;
    for (let offset = 0; offset < used; offset++) {
      for (const mask of [0x01, 0x80]) {
        storage.corrupt(CONTROL_FILE, offset, (b) => b ^ mask);
        assert.deepEqual(await readControlFile(storage), NEW, `copy 1 damaged at ${offset}`);
        storage.corrupt(CONTROL_FILE, COPY_BYTES + offset, (b) => b ^ mask);
        await rejectsWith(readControlFile(storage), 'WAL_CORRUPT');
        storage.corrupt(CONTROL_FILE, offset, (b) => b ^ mask);
        assert.deepEqual(await readControlFile(storage), NEW, `copy 2 damaged at ${offset}`);
        storage.corrupt(CONTROL_FILE, COPY_BYTES + offset, (b) => b ^ mask);
      }
    }
    assert.deepEqual(await readControlFile(storage), NEW);
    // An update over a damaged copy writes that copy first, then the good one.
    storage.corrupt(CONTROL_FILE, 30, (b) => b ^ 1);
    await writeControlFile(storage, OLD);
    assert.deepEqual(await readControlFile(storage), OLD);
    storage.corrupt(CONTROL_FILE, 30, (b) => b ^ 1);
    assert.deepEqual(await readControlFile(storage), OLD);
  });

  it('a file written by older walship (one copy) is read, and replaced by two copies at the next update', async () => {
    const storage = new MemoryStorage();
    await putFile(storage, CONTROL_FILE, encodeJsonFile(JSON.stringify({ format: 2, ...OLD })));
    assert.deepEqual(await readControlFile(storage), OLD);
    await writeControlFile(storage, NEW);
    assert.deepEqual(await readControlFile(storage), NEW);
    assert.equal(storage.readFile(CONTROL_FILE).length, 2 * COPY_BYTES);
    assert.deepEqual(storage.fileNames(), [CONTROL_FILE]);
  });

  it('records where the timeline branched, and refuses one that does not branch from an earlier timeline', async () => {
    const storage = new MemoryStorage();
    const promoted: ControlData = { ...NEW, switchedFrom: { timeline: 2, switchLsn: 1_234_000, reason: 'x'.repeat(3000) } };
    await writeControlFile(storage, promoted);
    assert.deepEqual(await readControlFile(storage), promoted);
    await rejectsWith(writeControlFile(storage, { ...NEW, switchedFrom: { timeline: 1, switchLsn: 0, reason: 'x'.repeat(9000) } }), 'FILE_TOO_LARGE');
    assert.deepEqual(await readControlFile(storage), promoted);
    const unbranched = new MemoryStorage();
    await putFile(unbranched, CONTROL_FILE, encodeJsonFile(JSON.stringify({ format: 2, ...NEW, switchedFrom: { timeline: 3, switchLsn: 0, reason: '' } })));
    await rejectsWith(readControlFile(unbranched), 'WAL_CORRUPT');
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

  describe('size: walship writes only what it reads back', () => {
    it("JSON of exactly a copy's room is written and read back; one byte more is FILE_TOO_LARGE and the old content stays", async () => {
      const spec: JsonFileSpec = { name: 'test.twocopy', format: 1, maxBytes: 64 * 1024, repairHint: 'none', enospcTransient: false };
      const pad = 'x'.repeat(MAX_TWO_COPY_JSON_BYTES - JSON.stringify({ format: 1, pad: '' }).length);
      const { dir, cleanup } = await tempDir();
      try {
        for (const storage of [new MemoryStorage(), new NodeStorage(dir)]) {
          await storage.prepare();
          await writeTwoCopyFile(storage, spec, { pad });
          assert.deepEqual(await readTwoCopyFile(storage, spec), { format: 1, pad }, 'the fullest copy reads back');
          await rejectsWith(writeTwoCopyFile(storage, spec, { pad: `${pad}x` }), 'FILE_TOO_LARGE');
          assert.deepEqual(await readTwoCopyFile(storage, spec), { format: 1, pad }, 'the old content stays');
        }
      } finally {
        await cleanup();
      }
    });

    it('the largest control data walship makes (the longest switch reason, the largest numbers) fits a copy and reads back', async () => {
      // Control characters take 6 bytes each in JSON (\u0001): the widest a reason can be.
      const parent = { timeline: 0xfffffffe, entries: [] };
      const history = branchHistory(parent, Number.MAX_SAFE_INTEGER, '\u0001'.repeat(MAX_SWITCH_REASON * 3));
      const largest: ControlData = {
        state: 'shut-down-in-recovery',
        systemId: 'ffffffffffffffff',
        segmentSize: 1024 * 1024 * 1024,
        timeline: 0xffffffff,
        ...switchedFromOf(history),
        checkpoint: { lsn: Number.MAX_SAFE_INTEGER, snapshot: false },
        consistentLsn: Number.MAX_SAFE_INTEGER,
      };
      const bytes = Buffer.byteLength(JSON.stringify({ format: 2, ...largest }));
      assert.ok(bytes <= MAX_TWO_COPY_JSON_BYTES - 1000, `${bytes} bytes leave room in a copy`);
      const storage = new MemoryStorage();
      await writeControlFile(storage, largest);
      assert.deepEqual(await readControlFile(storage), largest);
    });
  });
});
