import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FileSystemArchive, isTempFileName } from '../../src/archive/file-system-archive.js';
import { isWalshipError } from '../../src/errors.js';
import { archiverConformance } from '../../src/testing/archiver-conformance.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';

const CHILD = fileURLToPath(new URL('../fixtures/archive-put-child.mjs', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const HOUR = 60 * 60 * 1000;

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** A temp directory removed after the test, and an archive in a subdirectory not made yet. */
async function archiveDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  return join(dir, 'archive', 'wal');
}

/** A signal that counts as aborted from its `n`-th check of `aborted` on: an abort at each step of a call in turn. */
function abortingAtCheck(n: number): { signal: AbortSignal; checks: () => number } {
  let checks = 0;
  const signal = {
    get aborted() {
      return ++checks >= n;
    },
    reason: new Error(`aborted at check ${n}`),
  } as unknown as AbortSignal;
  return { signal, checks: () => checks };
}

for (const hardLinks of [true, false]) {
  archiverConformance({
    name: `FileSystemArchive (${hardLinks ? 'hard links' : 'lock files'})`,
    // In a directory not made yet: the first put creates it.
    createArchiver: async () => new FileSystemArchive(join(await mkdtemp(join(tmpdir(), 'walship-test-')), 'archive'), { hardLinks }),
    // A second process's view of the directory.
    openAgain: (archiver) => new FileSystemArchive((archiver as FileSystemArchive).dir, { hardLinks }),
    cleanup: (archiver) => rm(dirname((archiver as FileSystemArchive).dir), { recursive: true, force: true }),
    // Generous: fsyncs on a busy disk.
    timeoutMs: 60_000,
  });
}

describe('FileSystemArchive', () => {
  for (const hardLinks of [true, false]) {
    const mode = hardLinks ? 'hard links' : 'lock files';

    it(`(${mode}) creates its directory on the first put, and lists nothing before`, async (t) => {
      const dir = await archiveDir(t);
      const archive = new FileSystemArchive(dir, { hardLinks });
      assert.deepEqual(await archive.list(), [], 'a missing directory lists as empty');
      assert.equal(await archive.get('000000010000000000000001'), null, 'a missing directory has no files');
      await archive.remove('000000010000000000000001');
      await archive.put('000000010000000000000001', Buffer.from('one'));
      assert.deepEqual(await readdir(dir), ['000000010000000000000001'], 'the put left exactly its file');
      assert.equal((await readFile(join(dir, '000000010000000000000001'))).toString(), 'one');
    });

    it(`(${mode}) an abort at any step leaves no temporary file, and the name absent or whole`, async (t) => {
      const dir = await archiveDir(t);
      const archive = new FileSystemArchive(dir, { hardLinks });
      // 20 MiB: more than one write chunk, so the signal is checked between writes too.
      const data = Buffer.alloc(20 * 1024 * 1024, 7);
      let completed = false;
      for (let n = 1; !completed; n++) {
        const name = `file-${n}`;
        const { signal, checks } = abortingAtCheck(n);
        try {
          await archive.put(name, data, { signal });
          completed = true;
          assert.ok(checks() < n, `put ${n} resolved although its signal counted as aborted`);
        } catch (err) {
          assert.ok(isWalshipError(err, 'ABORTED'), `put ${n}: expected ABORTED, got ${String(err)}`);
          assert.equal((err as Error).cause, signal.reason, 'the abort reason is the cause');
        }
        const names = await readdir(dir).catch(() => []);
        assert.deepEqual(names.filter(isTempFileName), [], `put ${n} left a temporary file`);
        const stored = await archive.get(name);
        if (stored !== null) assert.ok(data.equals(stored), `put ${n} left a partial file`);
        assert.ok(n < 50, 'a put checks its signal a bounded number of times');
      }
    });
  }

  it('never lists temporary files, lock files, directories or names that are not archive names', async (t) => {
    const dir = await archiveDir(t);
    const archive = new FileSystemArchive(dir);
    await archive.put('00000002.history', Buffer.from('1\t0/3000000\tno recovery target specified\n'));
    await writeFile(join(dir, `.~${'a'.repeat(32)}.tmp`), 'partial');
    await writeFile(join(dir, `.~${'b'.repeat(32)}.lock`), 'token');
    await writeFile(join(dir, 'with space'), 'x');
    await mkdir(join(dir, 'subdir'));
    assert.deepEqual(await archive.list(), ['00000002.history']);
    assert.deepEqual(await archive.list('.'), []);
  });

  it('removes temporary files over an hour old at its first put, keeps younger ones, never lists them', async (t) => {
    const dir = await archiveDir(t);
    await mkdir(dir, { recursive: true });
    const stale = `.~${'1'.repeat(32)}.tmp`;
    const young = `.~${'2'.repeat(32)}.tmp`;
    const lookalike = `.~${'3'.repeat(31)}.tmp`; // not the pattern: never removed
    for (const name of [stale, young, lookalike]) await writeFile(join(dir, name), 'left by a crash');
    const past = new Date(Date.now() - 2 * HOUR);
    await utimes(join(dir, stale), past, past);
    await utimes(join(dir, lookalike), past, past);
    const archive = new FileSystemArchive(dir);
    assert.deepEqual(await archive.list(), [], 'temporary files are never listed');
    assert.ok((await readdir(dir)).includes(stale), 'list() and get() remove nothing');
    await archive.put('000000010000000000000001', Buffer.from('x'));
    assert.deepEqual((await readdir(dir)).sort(), ['000000010000000000000001', lookalike, young].sort());
  });

  it('rejects names that are not archive names with INVALID_ARGUMENT, on every method', async (t) => {
    const archive = new FileSystemArchive(await archiveDir(t));
    for (const name of ['', '.', '..', 'a/b', '../x', 'a b', 'x'.repeat(256), 7]) {
      const bad = name as string;
      for (const call of [() => archive.put(bad, new Uint8Array(1)), () => archive.get(bad), () => archive.remove(bad)]) {
        await assert.rejects(call(), (err) => isWalshipError(err, 'INVALID_ARGUMENT'), JSON.stringify(name));
      }
    }
    await assert.rejects(archive.put('x', 'text' as never), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    await assert.rejects(archive.list(3 as never), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    assert.throws(() => new FileSystemArchive(''), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    assert.throws(() => new FileSystemArchive('x', { hardlinks: false } as never), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });

  it('reports I/O failures as ARCHIVE_FAILED naming the file and the errno, with the cause', async (t) => {
    const dir = await archiveDir(t);
    const archive = new FileSystemArchive(dir);
    await mkdir(join(dir, 'a-directory'), { recursive: true });
    await assert.rejects(archive.get('a-directory'), (err) => {
      assert.ok(isWalshipError(err, 'ARCHIVE_FAILED'), String(err));
      assert.match(err.message, /a-directory/);
      assert.match(err.message, /EISDIR/);
      assert.equal((err.cause as { code?: string }).code, 'EISDIR');
      assert.equal(err.transient, true, 'walship retries a failed call');
      return true;
    });
    await assert.rejects(archive.put('a-directory', Buffer.from('x')), (err) => isWalshipError(err, 'ARCHIVE_FAILED'));
    // The archive's directory is a file.
    await writeFile(join(dir, 'plain-file'), 'x');
    const onFile = new FileSystemArchive(join(dir, 'plain-file'));
    await assert.rejects(onFile.put('x', Buffer.from('x')), (err) => isWalshipError(err, 'ARCHIVE_FAILED') && /plain-file/.test(err.message) && /EEXIST|ENOTDIR/.test(err.message));
    await assert.rejects(onFile.list(), (err) => isWalshipError(err, 'ARCHIVE_FAILED') && /ENOTDIR/.test(err.message));
  });

  it('a conflict names the file and changes nothing, whether sizes or bytes differ', async (t) => {
    const dir = await archiveDir(t);
    const archive = new FileSystemArchive(dir);
    await archive.put('n', Buffer.from('abc'));
    const before = await stat(join(dir, 'n'));
    for (const other of ['abd', 'abcd', '']) {
      await assert.rejects(archive.put('n', Buffer.from(other)), (err) => isWalshipError(err, 'ARCHIVE_CONFLICT') && err.message.includes(join(dir, 'n')));
    }
    const after = await stat(join(dir, 'n'));
    assert.equal(after.ino, before.ino, 'the file is the same one');
    assert.equal((await readFile(join(dir, 'n'))).toString(), 'abc');
    assert.deepEqual(await readdir(dir), ['n'], 'no temporary file is left');
  });

  it('takes over a lock file left by a crash once it is stale, and waits for a live one', async (t) => {
    const dir = await archiveDir(t);
    const archive = new FileSystemArchive(dir, { hardLinks: false });
    await archive.put('first', Buffer.from('x')); // creates the directory
    const lockOf = (name: string) => join(dir, `.~${createHash('sha256').update(name).digest('hex').slice(0, 32)}.lock`);
    await writeFile(lockOf('n'), 'a crashed put');
    const past = new Date(Date.now() - HOUR);
    await utimes(lockOf('n'), past, past);
    await archive.put('n', Buffer.from('y'));
    assert.equal((await archive.get('n'))?.toString(), 'y');
    assert.deepEqual((await readdir(dir)).sort(), ['first', 'n'], 'the stale lock is gone');

    // A live lock: the put waits until it is released.
    await writeFile(lockOf('m'), 'a live put');
    let settled = false;
    const put = archive.put('m', Buffer.from('z')).finally(() => (settled = true));
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(settled, false, 'the put waits for the lock');
    assert.equal(await archive.get('m'), null, 'nothing is published under a lock held by another put');
    await unlink(lockOf('m'));
    await within(put, 10_000, 'the put after the lock was released');
    assert.equal((await archive.get('m'))?.toString(), 'z');
  });
});

// ---------------------------------------------------------------------------------------
// Other processes

/** A child process running test/fixtures/archive-put-child.mjs; `message(key)` waits for its JSON line holding `key`. */
function startChild(config: Record<string, unknown>) {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(config)], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // One iterator for all reads: leaving a for-await loop would close the interface.
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
  const message = (key: string) =>
    within(
      (async () => {
        for (let line = await lines.next(); line.done !== true; line = await lines.next()) {
          const parsed = JSON.parse(line.value as string) as Record<string, unknown>;
          if (key in parsed) return parsed;
        }
        throw new Error(`the child ended without "${key}": ${stderr}`);
      })(),
      120_000,
      `the child's "${key}"`,
    );
  return { child, message, exited, stderr: () => stderr };
}

interface RaceResult {
  outcome: string;
  sha256: string;
}

describe('FileSystemArchive shared by processes', () => {
  const NAMES = 120;
  const WRITERS = 3;

  for (const hardLinks of [true, false]) {
    const mode = hardLinks ? 'hard links' : 'lock files';
    for (const content of ['same', 'different'] as const) {
      it(`(${mode}) ${WRITERS} processes putting the same ${NAMES} names with ${content} content: ${content === 'same' ? 'all succeed' : 'exactly one wins each'}`, async (t) => {
        const dir = await archiveDir(t);
        const children = Array.from({ length: WRITERS }, (_, writer) => startChild({ dir, mode: 'race', names: NAMES, content, writer, hardLinks }));
        t.after(() => children.forEach(({ child }) => child.kill('SIGKILL')));
        await Promise.all(children.map(({ message }) => message('ready')));
        for (const { child } of children) child.stdin?.write('go\n');
        const all = (await Promise.all(children.map(({ message }) => message('results')))).map((m) => m.results as Record<string, RaceResult>);
        const archive = new FileSystemArchive(dir);
        for (let i = 0; i < NAMES; i++) {
          const name = `race-${i}`;
          const results = all.map((r) => r[name] as RaceResult);
          const errors = results.filter((r) => r.outcome !== 'ok' && r.outcome !== 'conflict');
          assert.deepEqual(errors, [], `${name}: puts failed`);
          const winners = results.filter((r) => r.outcome === 'ok');
          if (content === 'same') assert.equal(winners.length, WRITERS, `${name}: every identical put succeeds`);
          else assert.equal(winners.length, 1, `${name}: exactly one of the different puts succeeds, got ${winners.length}`);
          const stored = await archive.get(name);
          assert.ok(stored !== null, `${name} is stored`);
          assert.equal(sha256(stored), winners[0]?.sha256, `${name} holds the winner's bytes`);
        }
        const left = await readdir(dir);
        assert.deepEqual(left.filter((n) => n.startsWith('.')), [], 'no temporary or lock file is left');
        assert.equal(left.length, NAMES);
      });
    }
  }

  it('a put killed (SIGKILL) in the middle of a large file leaves the name absent or whole', async (t) => {
    const dir = await archiveDir(t);
    const { child, message, exited } = startChild({ dir, mode: 'big', bytes: 32 * 1024 * 1024 });
    t.after(() => child.kill('SIGKILL'));
    const expected = new Map<string, string>();
    const first = await message('putting');
    expected.set(first.putting as string, first.sha256 as string);
    await message('done');
    // From here on one reader takes every line: the names being put and their hashes.
    void (async () => {
      for (;;) {
        const m = await message('putting').catch(() => undefined);
        if (m === undefined) return;
        expected.set(m.putting as string, m.sha256 as string);
      }
    })();
    // Kill while a put has its temporary file: between writing it and publishing it.
    const deadline = Date.now() + 60_000;
    while (!(await readdir(dir)).some(isTempFileName)) {
      assert.ok(Date.now() < deadline, 'a put in progress was seen within 60 s');
      await new Promise((resolve) => setImmediate(resolve));
    }
    child.kill('SIGKILL');
    await within(exited, 10_000, 'the child to exit');
    const left = await readdir(dir);
    const archive = new FileSystemArchive(dir);
    const listed = await archive.list();
    assert.ok(listed.includes('big-0'), 'the finished put is there');
    for (const name of listed) {
      assert.ok(expected.has(name), `${name} was put`);
      const stored = await archive.get(name);
      assert.equal(sha256(stored as Uint8Array), expected.get(name), `${name} is whole`);
    }
    const temps = left.filter(isTempFileName);
    t.diagnostic(`after the kill: ${left.join(', ')}`);
    assert.deepEqual(left.filter((n) => !isTempFileName(n)).sort(), [...listed].sort(), 'only whole files and temporary files are left');
    // The next instance's first put removes the temporary file once it is stale.
    const past = new Date(Date.now() - 2 * HOUR);
    for (const temp of temps) await utimes(join(dir, temp), past, past);
    await archive.put('after-the-crash', Buffer.from('x'));
    assert.deepEqual((await readdir(dir)).filter(isTempFileName), [], 'the stale temporary file is gone');
  });
});
