import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { WalLog, segmentFileName } from '../../src/index.js';
import { newestTimeline, readWalDirectory } from '../../src/cli/wal-directory.js';
import { readControlFile, switchedFromOf, writeControlFile } from '../../src/node/control-file.js';
import { LOCK_FILE_NAME, NodeStorage, readLockHolder } from '../../src/storage/node-storage.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { detectSegmentSize } from '../../src/wal/wal-log.js';
import { tempDir } from '../helpers/temp-dir.js';
import { SMALL_SEGMENT } from '../helpers/wal.js';

// What the inspecting commands read a directory with: a segment removed while they look, and
// listings too long for a spread call.

describe('reading a WAL directory for the CLI', () => {
  it('finds the segment size past a segment file removed since the listing (a checkpoint, a cleanup)', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: SMALL_SEGMENT });
    log.append([Buffer.from('x')]);
    await log.flush();
    await log.close();
    // The listing still names a segment that is gone by the time it is read; it sorts first.
    const removed = segmentFileName(1, 0, SMALL_SEGMENT);
    assert.ok(!(await storage.list()).includes(removed));
    assert.equal(await detectSegmentSize(storage, [removed, ...(await storage.list())]), SMALL_SEGMENT);
    assert.equal(await detectSegmentSize(storage, [removed]), undefined, 'nothing readable: no size');
  });

  it('takes the newest timeline of more segment names than a call takes arguments', () => {
    const segments = Array.from({ length: 200_000 }, (_, i) => ({ timeline: i === 150_000 ? 7 : 1 + (i % 3), segno: i }));
    assert.equal(newestTimeline(segments), 7);
    assert.equal(newestTimeline([]), 1, 'no segment: timeline 1');
  });

  it("rebuilds, in memory, the history of the control file's timeline whose file a crash lost, as an open would", async (t) => {
    const { dir, cleanup } = await tempDir();
    t.after(cleanup);
    await cp(fileURLToPath(new URL('../fixtures/timeline2', import.meta.url)), dir, { recursive: true });
    const kept = await readWalDirectory(dir);
    // A promotion records its timeline and history entry in the control file, then writes the history file.
    const storage = new NodeStorage(dir);
    const control = await readControlFile(storage);
    assert.ok(control !== null);
    await writeControlFile(storage, { ...control, ...switchedFromOf(kept.history) });
    await rm(join(dir, '00000002.history'));
    const rebuilt = await readWalDirectory(dir);
    assert.deepEqual(rebuilt.history.entries, kept.history.entries, 'the same history as from the file');
    assert.ok(!(await readdir(dir)).includes('00000002.history'), 'nothing written');
  });

  it('tells a live lock holder from a dead one and from one on another host', async (t) => {
    const { dir, cleanup } = await tempDir();
    t.after(cleanup);
    assert.equal(await readLockHolder(dir), null, 'no lock file');
    const lock = await new NodeStorage(dir).lock();
    const held = await readLockHolder(dir);
    assert.equal(held?.pid, process.pid);
    assert.equal(held?.alive, true);
    await lock.release();
    const child = spawnSync(process.execPath, ['-e', '']);
    const holder = { pid: child.pid, hostname: hostname(), token: 'x', createdAt: '2026-12-06T00:00:00.000Z' };
    await writeFile(join(dir, LOCK_FILE_NAME), JSON.stringify(holder));
    assert.equal((await readLockHolder(dir))?.alive, false, 'a process that exited');
    await writeFile(join(dir, LOCK_FILE_NAME), JSON.stringify({ ...holder, hostname: `not-${hostname()}` }));
    assert.equal((await readLockHolder(dir))?.alive, null, 'another host: cannot be told');
  });
});
