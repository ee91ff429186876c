import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MIN_SEGMENT_SIZE, Primary, isWalshipError, type Lsn, type WalErrorEvent } from '../../src/index.js';
import { RecordingApp, type AppliedBatch } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload } from '../helpers/wal.js';

// A full disk for real (issue #13, item 5): a primary on a small tmpfs commits until the
// file system is full. On tmpfs, as on ext4 or XFS, the WAL writes go into zero-filled
// segments and never need space; what fails is zero-filling the next segment, the path on
// which the writer used to take the zero-fill's bytes for WAL bytes and stop for good.

const SEGMENT = MIN_SEGMENT_SIZE;
/** Bytes of the tmpfs, and of a file taking most of it, deleted to make space again. */
const TMPFS_BYTES = 8 * 1024 * 1024;
const FILLER_BYTES = 6 * 1024 * 1024;
const hex = (data: Uint8Array): string => Buffer.from(data).toString('hex');

/** Mounts a tmpfs of `bytes` on a new temporary directory; null when that is not possible (not root). */
async function mountTmpfs(bytes: number): Promise<{ dir: string; unmount: () => Promise<void> } | null> {
  if (process.getuid?.() !== 0) return null;
  const { dir, cleanup } = await tempDir();
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch {
    await cleanup();
    return null;
  }
  return {
    dir,
    async unmount() {
      try {
        execFileSync('umount', [dir], { stdio: 'pipe' });
      } catch {
        execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
      }
      await cleanup();
    },
  };
}

function isTransientEnospc(err: unknown): boolean {
  return isWalshipError(err, 'WAL_IO') && err.transient && (err.cause as { code?: string } | undefined)?.code === 'ENOSPC';
}

describe('a full disk on a real file system (tmpfs)', () => {
  it('fails commits transiently while it is full, goes on at the same LSN once space is back, and keeps every acknowledged commit', async (t) => {
    const mounted = await mountTmpfs(TMPFS_BYTES);
    if (mounted === null) {
      t.skip('needs root to mount a tmpfs');
      return;
    }
    let primary: Primary | null = null;
    t.after(async () => {
      await primary?.close().catch(() => undefined);
      await mounted.unmount();
    });
    const dataDir = join(mounted.dir, 'data');
    const filler = join(mounted.dir, 'filler');
    await writeFile(filler, Buffer.alloc(FILLER_BYTES, 1));

    primary = await Primary.open({ dir: dataDir, application: new RecordingApp(), segmentSize: SEGMENT });
    const walErrors: WalErrorEvent[] = [];
    primary.on('wal:error', (event) => walErrors.push(event));
    const acknowledged: AppliedBatch[] = [];
    let n = 0;
    /** Commits one batch; its LSN (end) is known as soon as it is appended, failed or not. */
    const commit = async (p: Primary, data: Buffer): Promise<{ lsn: Lsn; error: unknown }> => {
      const committed = p.commit(data);
      const lsn = p.currentLsn;
      try {
        assert.equal((await committed).lsn, lsn, 'a commit lands where it was appended');
        acknowledged.push({ lsn, entries: [hex(data)] });
        return { lsn, error: null };
      } catch (error) {
        return { lsn, error };
      }
    };

    // Commit (one at a time and three at once, in turns) until the disk is full.
    let failed: { lsn: Lsn; data: Buffer; error: unknown } | null = null;
    for (let round = 0; failed === null; round++) {
      assert.ok(round < 2000, `the tmpfs fills up (WAL at ${primary.currentLsn})`);
      const batches = Array.from({ length: round % 2 === 0 ? 1 : 3 }, () => payload(n++, 7000));
      const results = await Promise.all(batches.map((data) => commit(primary as Primary, data)));
      const first = results.findIndex((r) => r.error !== null);
      if (first === -1) continue;
      assert.ok(results.slice(first).every((r) => r.error !== null), 'commits fail from the first failed one on');
      failed = { lsn: results[first]?.lsn as Lsn, data: batches[first] as Buffer, error: results[first]?.error };
    }
    assert.ok(isTransientEnospc(failed.error), `a transient WAL_IO caused by ENOSPC, got ${String(failed.error)}`);
    assert.equal(primary.failure, null, 'the primary keeps running');
    assert.equal(primary.wal.closed, false, 'the log stays open');
    assert.ok(walErrors.length > 0 && walErrors.every((e) => !e.fatal), 'wal:error events, none fatal');

    // While the disk stays full, every commit fails the same way, and the log stays readable.
    for (let i = 0; i < 3; i++) {
      const again = await commit(primary, failed.data);
      assert.ok(isTransientEnospc(again.error), `still a transient WAL_IO, got ${String(again.error)}`);
      assert.equal(again.lsn, failed.lsn, 'at the same LSN');
    }
    const inLog: AppliedBatch[] = [];
    for await (const record of primary.wal.read(primary.wal.oldestLsn)) inLog.push({ lsn: record.endLsn, entries: record.entries.map((e) => hex(e.data)) });
    assert.deepEqual(inLog, acknowledged, 'the log holds exactly the acknowledged commits');

    // Space is back: the failed commit goes in where it failed, and commits go on.
    await rm(filler);
    const retried = await commit(primary, failed.data);
    assert.equal(retried.error, null, `the retry succeeds (${String(retried.error)})`);
    assert.equal(retried.lsn, failed.lsn, 'the retry lands at the failed commit’s LSN');
    for (let i = 0; i < 20; i++) assert.equal((await commit(primary, payload(n++, 7000))).error, null, 'later commits succeed');
    await primary.close();

    // A restart replays exactly the acknowledged commits.
    const app = new RecordingApp();
    primary = await Primary.open({ dir: dataDir, application: app, segmentSize: SEGMENT });
    assert.deepEqual(app.applied, acknowledged, 'every acknowledged commit, and nothing else, after the restart');
    assert.equal((await commit(primary, Buffer.from('after the restart'))).error, null);
  });
});
