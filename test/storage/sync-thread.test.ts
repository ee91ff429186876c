import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isWalshipError } from '../../src/errors.js';
import { NodeStorage } from '../../src/storage/node-storage.js';
import { SyncThread, sharedSyncThread } from '../../src/storage/sync-thread.js';
import { WalLog } from '../../src/wal/wal-log.js';
import { commitSyncConformance } from '../helpers/commit-path-storage.js';

/** Runs `body` with a fresh temporary directory, removed afterwards. */
function withTempDir(body: (dir: string) => Promise<void>) {
  return async (): Promise<void> => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-sync-thread-'));
    try {
      await body(dir);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  };
}

/** A started thread, stopped after `body`. */
async function withThread(body: (thread: SyncThread) => Promise<void>): Promise<void> {
  const thread = new SyncThread();
  thread.acquire();
  try {
    assert.equal(await thread.started(), true, 'the sync thread starts');
    await body(thread);
  } finally {
    thread.release();
  }
}

// The storage contract holds with every commit-path sync taken this way.
commitSyncConformance('thread', "NodeStorage, commit-path files on the sync thread");

describe('SyncThread', () => {
  it('syncs a file on the thread, one request after another', withTempDir(async (dir) => {
    const fd = openSync(path.join(dir, 'f'), 'w');
    try {
      await withThread(async (thread) => {
        for (let i = 0; i < 20; i++) assert.equal(await thread.datasync(fd), true, `sync ${i} ran on the thread`);
      });
    } finally {
      closeSync(fd);
    }
  }));

  it('takes one sync at a time: concurrent callers are told to use the pool', withTempDir(async (dir) => {
    const fd = openSync(path.join(dir, 'f'), 'w');
    try {
      await withThread(async (thread) => {
        const results = await Promise.all(Array.from({ length: 8 }, () => thread.datasync(fd)));
        assert.deepEqual(results, [true, false, false, false, false, false, false, false], 'the first call runs, the others are refused');
        assert.equal(await thread.datasync(fd), true, 'the thread takes the next sync once the first is done');
      });
    } finally {
      closeSync(fd);
    }
  }));

  it('reports a failed fdatasync as Node does: EBADF for a descriptor that is not open', async () => {
    await withThread(async (thread) => {
      await assert.rejects(thread.datasync(0x3fffffff), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'EBADF', 'the errno code');
        assert.equal(err.syscall, 'fdatasync', 'the system call');
        assert.equal(typeof err.errno, 'number', 'the errno number');
        assert.match(err.message, /^EBADF: .*, fdatasync$/, 'the message has the form of Node\'s own');
        return true;
      });
      // A failure leaves the thread usable.
      await assert.rejects(thread.datasync(0x3fffffff), /EBADF/, 'the thread answers after a failure');
    });
  });

  it('reports EINVAL for a descriptor that cannot be synced (a character device)', async () => {
    const fd = openSync('/dev/null', 'r');
    try {
      await withThread(async (thread) => {
        await assert.rejects(thread.datasync(fd), (err: NodeJS.ErrnoException) => err.code === 'EINVAL' && err.syscall === 'fdatasync');
      });
    } finally {
      closeSync(fd);
    }
  });

  it('is not used until started, and stops when its last holder releases it', withTempDir(async (dir) => {
    const fd = openSync(path.join(dir, 'f'), 'w');
    try {
      const thread = new SyncThread();
      assert.equal(await thread.datasync(fd), false, 'a stopped thread takes no sync');
      assert.equal(await thread.started(), false, 'a thread nobody acquired is not started');
      thread.acquire();
      thread.acquire();
      assert.equal(thread.running, true, 'acquire starts the thread');
      assert.equal(await thread.started(), true, 'the thread becomes ready');
      thread.release();
      assert.equal(thread.running, true, 'one holder is left');
      assert.equal(await thread.datasync(fd), true, 'it still syncs');
      thread.release();
      assert.equal(thread.running, false, 'the last release stops the thread');
      assert.equal(await thread.datasync(fd), false, 'a stopped thread takes no sync');
      thread.release(); // One release too many is harmless.
      thread.acquire();
      assert.equal(await thread.started(), true, 'it starts again');
      assert.equal(await thread.datasync(fd), true, 'and syncs again');
      thread.release();
    } finally {
      closeSync(fd);
    }
  }));

  it('never keeps the process alive: a script that leaves it started exits by itself', { timeout: 60_000 }, withTempDir(async (dir) => {
    const module = fileURLToPath(new URL('../../src/storage/sync-thread.ts', import.meta.url));
    const script = [
      `import { openSync } from 'node:fs';`,
      `import { SyncThread } from ${JSON.stringify(module)};`,
      `const thread = new SyncThread();`,
      `thread.acquire();`,
      `if (!(await thread.started())) process.exit(3);`,
      `const fd = openSync(${JSON.stringify(path.join(dir, 'f'))}, 'w');`,
      `if (!(await thread.datasync(fd))) process.exit(4);`,
      `console.log('synced');`,
    ].join('\n');
    const scriptFile = path.join(dir, 'leave-started.mts');
    await fs.writeFile(scriptFile, script);
    const child = spawn(process.execPath, ['--import', 'tsx', scriptFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, 'the script exits with 0 on its own');
    assert.equal(output.trim(), 'synced', 'its sync ran on the thread');
  }));
});

describe('NodeStorage with the sync thread', () => {
  it('rejects bad options with INVALID_OPTIONS', () => {
    for (const options of [{ commitSync: 'yes' }, { commitSync: true }, { syncThread: true }, null]) {
      assert.throws(
        () => new NodeStorage('/tmp/x', options as never),
        (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'),
        `options ${JSON.stringify(options)} are refused`,
      );
    }
  });

  it('a commit-path file syncs and closes; afterwards its syncs fail with EBADF', withTempDir(async (dir) => {
    const storage = new NodeStorage(dir, { commitSync: 'thread' });
    const file = await storage.open('seg', { create: true, commitPath: true });
    await file.write(Buffer.from('hello'), 0);
    await file.datasync();
    // A close while syncs run waits for them: every sync settles without EBADF.
    const syncs = [file.datasync(), file.datasync(), file.datasync()];
    const closed = file.close();
    await Promise.all(syncs);
    await closed;
    await assert.rejects(file.datasync(), (err: NodeJS.ErrnoException) => err.code === 'EBADF', 'a closed file refuses datasync');
    const check = await storage.open('seg', { readOnly: true });
    const buf = Buffer.alloc(5);
    assert.equal(await check.read(buf, 0, 5, 0), 5, 'the bytes are there');
    assert.equal(buf.toString(), 'hello', 'as written');
    await check.close();
  }));

  it('two logs in one process commit concurrently, sharing the thread, and keep every record', withTempDir(async (dir) => {
    const logs = await Promise.all(
      ['a', 'b'].map((name) => WalLog.open({ storage: new NodeStorage(path.join(dir, name), { commitSync: 'thread' }), segmentSize: 64 * 1024, sync: 'fdatasync' })),
    );
    const perLog = 300;
    await Promise.all(
      logs.map(async (log, which) => {
        const committer = async (id: number): Promise<void> => {
          for (let i = 0; i < perLog / 4; i++) {
            const { endLsn } = log.append(Buffer.from(`${which}:${id}:${i}`));
            await log.waitForFlush(endLsn);
          }
        };
        await Promise.all([0, 1, 2, 3].map(committer));
      }),
    );
    assert.equal(sharedSyncThread.running, true, 'the logs\' open segments hold the shared sync thread');
    for (const log of logs) await log.close();
    assert.equal(sharedSyncThread.running, false, 'closing the last log stopped the thread');
    for (const name of ['a', 'b']) {
      const log = await WalLog.open({ dir: path.join(dir, name), segmentSize: 64 * 1024 });
      let records = 0;
      for await (const _record of log.read(log.oldestLsn)) records++;
      await log.close();
      assert.equal(records, perLog, `log ${name} holds every committed record`);
    }
  }));

  it("by default (commitSync 'pool'), commits go through the pool alone", withTempDir(async (dir) => {
    const log = await WalLog.open({ storage: new NodeStorage(dir), segmentSize: 64 * 1024, sync: 'fdatasync' });
    for (let i = 0; i < 50; i++) await log.waitForFlush(log.append(Buffer.from(`r${i}`)).endLsn);
    assert.equal(log.stats().syncs >= 50, true, 'every commit was synced');
    assert.equal(sharedSyncThread.running, false, 'no sync thread was started');
    await log.close();
  }));
});
