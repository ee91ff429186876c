import assert from 'node:assert/strict';
import fsPromises, { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, mock } from 'node:test';
import { NodeStorage, PROMOTE_SIGNAL_FILE, Primary, type PromotedEvent } from '../../src/index.js';
import { createCluster } from '../../src/testing/index.js';
import { parseTimelineHistory } from '../../src/wal/timeline-history.js';
import { readControlFile } from '../../src/node/control-file.js';
import { GatedApp, RecordingApp, until, type AppliedBatch } from '../helpers/apps.js';
import { HANG_MS, codeOf, receivedTo, commitMany, nextEvent, replayedTo } from '../helpers/standby-harness.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';

/** The first entry of an applied batch as text. */
function text(batch: AppliedBatch | undefined): string {
  return Buffer.from(batch?.entries[0] ?? '', 'hex').toString();
}

describe('Standby.promote', () => {
  it('turns a standby whose primary is gone into a primary on timeline 2, with nothing replayed', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const app = new RecordingApp();
    const s = await cluster.standby('s', { upstream: p, application: app });
    const last = await commitMany(p, 0, 40);
    await replayedTo(s, last, 'the standby to replay');
    await receivedTo(s, p.flushLsn);
    await p.close();
    const applied = app.applied.length;
    const promotedEvent = nextEvent(s, 'promoted');
    const primary = await within(s.promote(), HANG_MS, 'the promotion');
    t.after(() => primary.close());
    const event = (await promotedEvent) as PromotedEvent;
    assert.equal(event.primary, primary);
    assert.equal(event.timeline, 2);
    assert.equal(primary.timeline, 2);
    assert.equal(s.state, 'promoted');
    assert.equal(app.applied.length, applied, 'no batch was applied again');
    const { lsn } = await primary.commit([Buffer.from('after promotion')]);
    assert.ok(lsn > event.switchLsn);
    assert.deepEqual(text(app.applied.at(-1)), 'after promotion');

    for (const call of [() => s.promote(), () => s.checkpoint(), () => s.waitForReplay(0), () => s.createSlot('x')]) {
      assert.equal(await codeOf(call()), 'NOT_IN_RECOVERY');
    }
    await s.close();
    assert.equal((await primary.commit([Buffer.from('still open')])).lsn > lsn, true, "closing the promoted Standby leaves the Primary running");

    const storage = cluster.storage('s');
    assert.deepEqual(primary.wal.history.entries.map((e) => [e.timeline, e.switchLsn]), [[1, event.switchLsn]]);
    // The history file is written a moment after the promotion, and at the latest by close().
    await primary.close();
    const history = parseTimelineHistory(2, Buffer.from(storage.readFile('00000002.history')).toString());
    assert.deepEqual(history.entries.map((e) => [e.timeline, e.switchLsn]), [[1, event.switchLsn]]);
    const reopenedApp = new RecordingApp();
    const reopened = await Primary.open({ storage, application: reopenedApp });
    assert.equal(reopened.timeline, 2);
    assert.deepEqual(
      reopenedApp.applied.map(text),
      app.applied.map(text),
      'every batch of both timelines replays after a restart',
    );
    await reopened.close();
  });

  it('shares one promotion between concurrent calls and refuses a standby that has nothing yet', async (t) => {
    const cluster = createCluster(t);
    const lonely = await cluster.standby('lonely', { upstream: cluster.address('nobody'), application: new RecordingApp() });
    assert.equal(await codeOf(lonely.promote()), 'NOT_CONSISTENT');
    await lonely.close();

    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    await replayedTo(s, await commitMany(p, 0, 5), 'the standby to replay');
    await receivedTo(s, p.flushLsn);
    const [a, b] = await Promise.all([s.promote(), s.promote()]);
    t.after(() => a.close());
    assert.equal(a, b);
  });

  it("refuses to promote while its WAL does not reach its base backup's state, before its commit point: no reopen, the lock held; promotes once the WAL is there", async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    await commitMany(p, 0, 5);
    // A directory holding the backup's state and none of the WAL up to it, its primary out of reach.
    const storage = cluster.storage('s');
    const backup = await p.baseBackup({ storage });
    cluster.network.partition(['s'], ['p']);
    let locks = 0;
    const lock = storage.lock.bind(storage);
    storage.lock = async () => {
      locks++;
      return lock();
    };
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    assert.equal(s.consistent, true, 'its state is the backup\'s');
    assert.ok((s.receiveLsn ?? 0) < backup.lsn, 'its WAL ends before the backup\'s state');
    const locksAtOpen = locks;
    await assert.rejects(s.promote(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'NOT_CONSISTENT', String(err));
      assert.match(err.message, /must receive the WAL up to there before it can be promoted/);
      return true;
    });
    assert.equal(locks, locksAtOpen, 'refused before the commit point: the log was not reopened, the lock never let go');
    assert.deepEqual(
      [(await readControlFile(storage))?.state, (await readControlFile(storage))?.timeline],
      ['shut-down-in-recovery', 1],
      'the directory is the standby\'s, as it was',
    );
    assert.notEqual(s.state, 'failed');
    cluster.network.heal();
    await receivedTo(s, backup.lsn, 'the standby to receive the WAL up to its state');
    const primary = await within(s.promote(), HANG_MS, 'the promotion');
    t.after(() => primary.close());
    assert.equal(primary.timeline, 2);
  });

  it('promotes while its primary is still streaming commits, and applies everything it received first', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const app = new RecordingApp();
    const s = await cluster.standby('s', { upstream: p, application: app });
    await replayedTo(s, await commitMany(p, 0, 5), 'the standby to replay');
    let stop = false;
    const load = (async () => {
      for (let i = 0; !stop; i++) {
        await p.commit([Buffer.from(`load ${i}`)], { synchronousCommit: 'local' });
        // A steady load, not a busy loop: the simulated network shares this event loop.
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    await until(() => app.applied.length > 50);
    const primary = await within(s.promote(), HANG_MS, 'the promotion');
    t.after(() => primary.close());
    stop = true;
    await load;
    const switchLsn = primary.wal.history.entries[0]?.switchLsn ?? -1;
    const texts = app.applied.map(text).filter((x) => x.startsWith('load'));
    assert.deepEqual(texts, texts.map((_, i) => `load ${i}`), 'a gapless prefix of the old primary’s commits');
    await primary.commit([Buffer.from('new')]);
    const [previous, newest] = app.applied.slice(-2);
    assert.equal(text(newest), 'new');
    assert.ok((previous?.lsn ?? Infinity) <= switchLsn && (newest?.lsn ?? 0) > switchLsn, 'the old timeline applied up to the switch point, the new one after it');
    assert.equal(primary.replicationStatus().length, 0);
  });

  it('refuses bad options and goes on as a standby', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    await replayedTo(s, await commitMany(p, 0, 3), 'the standby to replay');
    assert.equal(await codeOf(s.promote({ synchronousStandbyNames: 'FIRST 2 (' })), 'INVALID_OPTIONS');
    assert.equal(await codeOf(s.promote({ bogus: 1 } as never)), 'INVALID_OPTIONS');
    await replayedTo(s, await commitMany(p, 3, 3), 'the standby to go on replaying');
    assert.equal(s.state, 'streaming');
  });

  it('an aborted promotion leaves the standby streaming, and it can promote later', async (t) => {
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    await replayedTo(s, await commitMany(p, 0, 3), 'the standby to replay');
    // The WAL up to its state too (replayedTo is met by the base backup alone): else the promotion is NOT_CONSISTENT first.
    await receivedTo(s, p.flushLsn);
    assert.equal(await codeOf(s.promote({ signal: AbortSignal.abort() })), 'ABORTED');
    await replayedTo(s, await commitMany(p, 3, 3), 'the standby to stream again');
    const primary = await s.promote();
    t.after(() => primary.close());
    assert.equal(primary.timeline, 2);
  });

  for (const operation of ['write', 'datasync'] as const) {
    it(`a failed ${operation} of the new timeline's first record is the new primary's: its first commit fails, and the directory reopens as the promoted primary`, async (t) => {
      const cluster = createCluster(t);
      const appP = new RecordingApp();
      const p = await cluster.primary('p', { application: appP });
      const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
      await replayedTo(s, await commitMany(p, 0, 5), 'the standby to replay');
      await receivedTo(s, p.flushLsn);
      const storage = cluster.storage('s');
      // The end-of-recovery record is flushed with the first commit: promote() does not wait for it.
      const cancel = storage.injectFault({ operation, code: 'EIO', file: /^00000002[0-9A-F]{16}$/ });
      const primary = await within(s.promote(), HANG_MS, 'the promotion');
      assert.equal(primary.timeline, 2);
      // The log's writer stops at such an error (fail-stop), as it does for any commit of a primary.
      assert.equal(await codeOf(primary.commit([Buffer.from('lost')])), operation === 'write' ? 'WAL_IO' : 'WAL_SYNC_FAILED');
      cancel();
      await primary.close().catch(() => undefined);
      await s.close();
      const app = new RecordingApp();
      const reopened = await Primary.open({ storage, application: app });
      t.after(() => reopened.close());
      assert.equal(reopened.timeline, 2);
      // The failed commit was not acknowledged: after a failed fdatasync its bytes may still be
      // read back (the page cache kept them), after a failed write they are not there.
      const reopenedTexts = app.applied.map(text);
      if (operation === 'datasync' && reopenedTexts.at(-1) === 'lost') reopenedTexts.pop();
      assert.deepEqual(reopenedTexts, appP.applied.map(text), 'everything the standby had');
      await reopened.commit([Buffer.from('after')]);
    });
  }

  it("a failed control-file write at the promotion's commit point stops the standby (its outcome is unknown); the reopened directory is one or the other", async (t) => {
    const cluster = createCluster(t);
    const appP = new RecordingApp();
    const p = await cluster.primary('p', { application: appP });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
    await replayedTo(s, await commitMany(p, 0, 5), 'the standby to replay');
    await receivedTo(s, p.flushLsn);
    const storage = cluster.storage('s');
    // Every fdatasync of the control file fails: the in-place update and the whole-file replace.
    const cancel = storage.injectFault({ operation: 'datasync', code: 'EIO', file: /^walship\.control/, times: Infinity });
    assert.equal(await codeOf(s.promote()), 'WAL_IO');
    cancel();
    assert.equal(s.state, 'failed', 'the standby stopped');
    assert.equal(s.failure?.code, 'WAL_IO');
    await s.close();
    const control = await readControlFile(storage);
    if (control?.state === 'in-production') {
      const primary = await Primary.open({ storage, application: new RecordingApp() });
      assert.equal(primary.timeline, 2);
      await primary.close();
    } else {
      assert.equal(control?.timeline, 1);
      const again = await cluster.standby('s', { upstream: p, application: new RecordingApp() });
      await replayedTo(again, await commitMany(p, 5, 5), 'the reopened standby to stream');
      await again.close();
    }
  });

  it('promotes when the trigger file appears, then removes it', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'walship-trigger-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const trigger = join(dir, 'promote');
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp(), promoteTriggerFile: trigger });
    await replayedTo(s, await commitMany(p, 0, 3), 'the standby to replay');
    const promoted = nextEvent(s, 'promoted');
    await writeFile(trigger, '');
    const { primary } = (await within(promoted, HANG_MS, 'the promotion by trigger file')) as PromotedEvent;
    t.after(() => primary.close());
    await until(() => s.state === 'promoted');
    await removed(trigger, 'the trigger file to be removed');
    await primary.commit([Buffer.from('x')]);
  });

  it('promotes when the promote signal file appears in its directory, then removes it', async (t) => {
    const { dir, cleanup } = await tempDir();
    const signal = join(dir, PROMOTE_SIGNAL_FILE);
    const cluster = createCluster(t);
    let promotedPrimary: Primary | undefined;
    // After the cluster's own hook (hooks run in the order added): the new primary, then the directory.
    t.after(async () => {
      await promotedPrimary?.close();
      await cleanup();
    });
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp(), dir });
    await replayedTo(s, await commitMany(p, 0, 3), 'the standby to replay');
    const promoted = nextEvent(s, 'promoted');
    await writeFile(signal, '');
    const { primary, timeline } = (await within(promoted, HANG_MS, 'the promotion by the signal file')) as PromotedEvent;
    promotedPrimary = primary;
    assert.equal(timeline, 2);
    assert.equal((await readControlFile(new NodeStorage(dir)))?.state, 'in-production', 'the directory records a primary');
    await removed(signal, 'the signal file to be removed');
    await primary.commit([Buffer.from('x')]);
  });

  it('removes a promote signal file left from before it opened, without promoting', async (t) => {
    const { dir, cleanup } = await tempDir();
    const signal = join(dir, PROMOTE_SIGNAL_FILE);
    const cluster = createCluster(t);
    t.after(cleanup);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const first = await cluster.standby('s', { upstream: p, application: new RecordingApp(), dir });
    await replayedTo(first, await commitMany(p, 0, 3), 'the standby to replay');
    await first.close();
    await writeFile(signal, '');
    const again = await cluster.standby('s', { upstream: p, application: new RecordingApp(), dir });
    assert.equal(await exists(signal), false, 'the leftover request is gone once open() resolves');
    await replayedTo(again, await commitMany(p, 3, 3), 'the reopened standby to replay');
    assert.notEqual(again.state, 'promoted', 'still a standby');
    assert.equal((await readControlFile(new NodeStorage(dir)))?.state, 'in-recovery', 'the directory still records a standby');
  });

  it("keeps a running standby's promote request when a second open of its directory is refused (WAL_LOCKED)", async (t) => {
    const { dir, cleanup } = await tempDir();
    const signal = join(dir, PROMOTE_SIGNAL_FILE);
    const cluster = createCluster(t);
    let promotedPrimary: Primary | undefined;
    t.after(async () => {
      await promotedPrimary?.close();
      await cleanup();
    });
    const p = await cluster.primary('p', { application: new RecordingApp() });
    // Replay held at its first batch: the promotion (which applies everything first) cannot
    // finish, and remove the file, before the second open has run.
    const app = new GatedApp();
    let openGate!: () => void;
    app.gate = new Promise<void>((resolve) => (openGate = resolve));
    const s = await cluster.standby('s', { upstream: p, application: app, dir });
    await receivedTo(s, await commitMany(p, 0, 3));
    await writeFile(signal, '');
    assert.equal(await codeOf(cluster.standby('again', { upstream: p, application: new RecordingApp(), dir })), 'WAL_LOCKED');
    assert.equal(await exists(signal), true, 'the refused open left the running standby\'s request in place');
    const promoted = nextEvent(s, 'promoted');
    openGate();
    promotedPrimary = ((await within(promoted, HANG_MS, 'the promotion by the signal file')) as PromotedEvent).primary;
    assert.equal(promotedPrimary.timeline, 2);
  });

  it('stops looking for its trigger files once closed, even when the close lands during a look', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'walship-trigger-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const trigger = join(dir, 'promote-now');
    let looks = 0;
    let gate: { entered: () => void; released: Promise<void> } | null = null;
    const realStat = fsPromises.stat;
    // The standby's own stat (a named import): a look at the trigger file can be held open.
    mock.method(fsPromises, 'stat', async (...args: Parameters<typeof fsPromises.stat>) => {
      if (args[0] === trigger) {
        looks++;
        const held = gate;
        gate = null;
        if (held !== null) {
          held.entered();
          await held.released;
        }
      }
      return realStat(...args);
    });
    syncBuiltinESMExports();
    t.after(() => {
      mock.restoreAll();
      syncBuiltinESMExports();
    });
    const cluster = createCluster(t);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp(), promoteTriggerFile: trigger });
    let release!: () => void;
    const entered = new Promise<void>((resolve) => {
      gate = { entered: resolve, released: new Promise<void>((r) => (release = r)) };
    });
    await within(entered, HANG_MS, 'a look at the trigger file');
    await s.close();
    const atClose = looks;
    release();
    // Several poll intervals: a watch that went on would have looked again by then.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(looks, atClose, 'no look after close()');
  });
});

/** Whether `path` exists. */
async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

/** Waits until `path` is gone (looking every 10 ms), or fails the test after HANG_MS. */
async function removed(path: string, what: string): Promise<void> {
  await within(
    (async () => {
      while (await exists(path)) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
    HANG_MS,
    what,
  );
}
