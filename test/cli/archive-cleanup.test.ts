import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FileSystemArchive, MIN_SEGMENT_SIZE, Primary, segmentFileName } from '../../src/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { eventually } from '../helpers/primary-helpers.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload } from '../helpers/wal.js';
import { lines, runCli } from './run-cli.js';

// `walship archive-cleanup` on a FileSystemArchive a real primary archived into: what
// pg_archivecleanup removes (segments and .partial segments before the kept one, whatever their
// timeline), what it never removes (history files, other names), --dry-run, -b.

const SEGMENT = MIN_SEGMENT_SIZE;

/** An archive directory holding segments 1 to 5 of a primary, plus files of other kinds. */
async function filledArchive(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const data = await tempDir();
  const archived = await tempDir();
  t.after(data.cleanup);
  t.after(archived.cleanup);
  const archive = new FileSystemArchive(archived.dir);
  const primary = await Primary.open({ dir: data.dir, application: new RecordingApp(), segmentSize: SEGMENT, archive: { mode: 'on', archiver: archive } });
  try {
    for (let i = 0; primary.flushLsn < 6 * SEGMENT + 1000; i++) await primary.commit(payload(i, 8000));
    await eventually(() => primary.archiverStatus().archivedCount >= 5, 60_000, 'segments 1 to 5 archived');
  } finally {
    await primary.close();
  }
  const other = Buffer.from('not WAL');
  await archive.put('00000002.history', Buffer.from('1\t0/30000\tpromoted\n'));
  await archive.put(`${segmentFileName(1, 2, SEGMENT)}.partial`, other);
  await archive.put(segmentFileName(2, 3, SEGMENT), other);
  await archive.put(`${segmentFileName(1, 2, SEGMENT)}.00000028.backup`, other);
  await archive.put(segmentFileName(2, 4, SEGMENT), other);
  await archive.put('notes.txt', other);
  return archived.dir;
}

describe('walship archive-cleanup', () => {
  it('lists with --dry-run what it removes, then removes segments and .partial segments before the kept one on any timeline, never history files', async (t) => {
    const dir = await filledArchive(t);
    const keep = segmentFileName(1, 4, SEGMENT);
    const before = (await readdir(dir)).sort();
    const expected = [segmentFileName(1, 1, SEGMENT), segmentFileName(1, 2, SEGMENT), `${segmentFileName(1, 2, SEGMENT)}.partial`, segmentFileName(1, 3, SEGMENT), segmentFileName(2, 3, SEGMENT)];

    const dry = await runCli(['archive-cleanup', dir, keep, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(lines(dry.stdout), expected.map((name) => join(dir, name)), 'one path per file it would remove');
    assert.match(dry.stderr, /5 files before 000000010000000000000004 would be removed \(dry run\)/);
    assert.deepEqual((await readdir(dir)).sort(), before, '--dry-run removed nothing');

    const real = await runCli(['archive-cleanup', dir, keep]);
    assert.equal(real.code, 0, real.stderr);
    assert.deepEqual(lines(real.stdout), expected.map((name) => join(dir, name)));
    assert.deepEqual(
      (await readdir(dir)).sort(),
      before.filter((name) => !expected.includes(name)),
      'exactly those are gone',
    );
    const remaining = await readdir(dir);
    assert.ok(remaining.includes('00000002.history'), 'a history file stays');
    assert.ok(remaining.includes(`${segmentFileName(1, 2, SEGMENT)}.00000028.backup`), 'a backup history file stays without -b');
    assert.ok(remaining.includes('notes.txt') && remaining.includes(keep), 'other names and the kept segment stay');

    // The kept segment may be named by a .partial or backup history file name (the segment part counts); -b takes backup history files too.
    const backups = await runCli(['archive-cleanup', dir, `${segmentFileName(1, 4, SEGMENT)}.partial`, '-b']);
    assert.equal(backups.code, 0, backups.stderr);
    assert.deepEqual(lines(backups.stdout), [join(dir, `${segmentFileName(1, 2, SEGMENT)}.00000028.backup`)]);
  });

  it('refuses a kept segment that is not a WAL file name (exit 2) and a missing archive directory (exit 1)', async (t) => {
    const dir = await filledArchive(t);
    const bad = await runCli(['archive-cleanup', dir, '00000001.history']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^walship archive-cleanup: '00000001\.history' is not a WAL segment name/);
    const missing = await runCli(['archive-cleanup', join(dir, 'nope'), segmentFileName(1, 4, SEGMENT)]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no such directory/);
  });
});
