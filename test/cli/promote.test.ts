import assert from 'node:assert/strict';
import { access, cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { NodeStorage, PROMOTE_SIGNAL_FILE, Primary, type PromotedEvent } from '../../src/index.js';
import { readControlFile } from '../../src/node/control-file.js';
import { createCluster } from '../../src/testing/index.js';
import type { NodeStatusReport } from '../../src/cli/status.js';
import { GatedApp, RecordingApp } from '../helpers/apps.js';
import { HANG_MS, commitMany, nextEvent, receivedTo, replayedTo } from '../helpers/standby-harness.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within } from '../helpers/wal.js';
import { runCli } from './run-cli.js';

// `walship promote` run as a child process against a standby running in this process (its
// data directory a real one): the signal file, the wait for the control file, and the refusals.

/** Waits until `path` is gone. */
async function removed(path: string, what: string): Promise<void> {
  await within(
    (async () => {
      while (await access(path).then(() => true, () => false)) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
    HANG_MS,
    what,
  );
}

/**
 * Copies a running node's directory (a crash image of it), again when a file it listed went
 * away before it was copied: a segment prepared ahead is renamed from its `.tmp` name.
 */
async function copyRunning(from: string, to: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await cp(from, to, { recursive: true });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 10) throw err;
      await rm(to, { recursive: true, force: true });
    }
  }
}

/** A temporary directory removed after every other hook of the test (after hooks run in the order added). */
async function lastDir(t: { after: (fn: () => Promise<void>) => void }, closeFirst: () => Promise<void>): Promise<string> {
  const { dir, cleanup } = await tempDir();
  t.after(async () => {
    await closeFirst();
    await cleanup();
  });
  return dir;
}

describe('walship promote', () => {
  it('promotes a running standby, waits for it, prints its new timeline; then refuses the directory, now a primary\'s', async (t) => {
    const cluster = createCluster(t);
    let promoted: Primary | undefined;
    const dir = await lastDir(t, async () => promoted?.close());
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp(), dir });
    await replayedTo(s, await commitMany(p, 0, 5), 'the standby to replay');
    const event = nextEvent(s, 'promoted');

    const result = await runCli(['promote', dir]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^promoted: .* is a primary on timeline 2 \(from timeline 1 at [0-9A-F]+\/[0-9A-F]+\)\n$/, 'the new timeline once the control file says so');
    const { primary, timeline } = (await within(event, HANG_MS, 'the promoted event')) as PromotedEvent;
    promoted = primary;
    assert.equal(timeline, 2);
    await removed(join(dir, PROMOTE_SIGNAL_FILE), 'the standby to remove the signal file');
    await primary.commit([Buffer.from('writable')]);

    const again = await runCli(['promote', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^walship promote: error: .* holds a primary \(in-production, timeline 2\), not a running standby: nothing to promote\n$/);

    // status reads the new timeline's history from the control file while its file is not
    // written yet (a promotion writes it a moment after its commit point): here, removed.
    await primary.close();
    promoted = undefined;
    await rm(join(dir, '00000002.history'), { force: true });
    const status = await runCli(['status', dir, '--json']);
    assert.equal(status.code, 0, status.stderr);
    const report = JSON.parse(status.stdout) as NodeStatusReport;
    assert.equal(report.timeline, 2);
    assert.deepEqual(report.history.map((entry) => entry.timeline), [1], 'timeline 2 branched from timeline 1');
    assert.equal(report.state, 'shut-down');
  });

  it('with --no-wait returns once the signal file is written, and the standby promotes by itself', async (t) => {
    const cluster = createCluster(t);
    let promoted: Primary | undefined;
    const dir = await lastDir(t, async () => promoted?.close());
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp(), dir });
    await replayedTo(s, await commitMany(p, 0, 3), 'the standby to replay');
    const event = nextEvent(s, 'promoted');
    const result = await runCli(['promote', dir, '--no-wait']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^promotion requested: .*promote written\n$/);
    promoted = ((await within(event, HANG_MS, 'the promotion')) as PromotedEvent).primary;
  });

  it('times out (exit 1) while the standby cannot finish promoting, leaving the request, which it carries out later', async (t) => {
    const cluster = createCluster(t);
    let promoted: Primary | undefined;
    const dir = await lastDir(t, async () => promoted?.close());
    const app = new GatedApp();
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: app, dir });
    await replayedTo(s, await commitMany(p, 0, 3), 'the standby to replay');
    // Replay stops: a promotion waits until everything received is applied.
    let open: () => void = () => undefined;
    app.gate = new Promise((resolve) => (open = resolve));
    await receivedTo(s, await commitMany(p, 3, 3));
    const event = nextEvent(s, 'promoted');
    const result = await runCli(['promote', dir, '--timeout', '1']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^walship promote: error: the standby in .* did not promote within 1 s; .*promote stays/);
    open();
    app.gate = null;
    promoted = ((await within(event, HANG_MS, 'the promotion once replay goes on')) as PromotedEvent).primary;
  });

  it('refuses a running primary\'s directory, a standby that is not running, and a directory that is not a node\'s', async (t) => {
    const cluster = createCluster(t);
    const primaryDir = await lastDir(t, async () => undefined);
    const standbyDir = await lastDir(t, async () => undefined);
    const empty = await lastDir(t, async () => undefined);
    const p = await cluster.primary('p', { application: new RecordingApp(), dir: primaryDir });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp(), dir: standbyDir });
    await replayedTo(s, await commitMany(p, 0, 3), 'the standby to replay');
    await s.close();

    const primary = await runCli(['promote', primaryDir]);
    assert.equal(primary.code, 1);
    assert.match(primary.stderr, /holds a primary \(in-production, timeline 1\), not a running standby/);
    const stopped = await runCli(['promote', standbyDir]);
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /^walship promote: error: the standby in .* is not running/);
    await assert.rejects(access(join(standbyDir, PROMOTE_SIGNAL_FILE)), 'no signal file written for a standby that is not running');
    const none = await runCli(['promote', empty]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /is not a walship data directory \(no walship\.control\)/);
  });

  it('promotes a standby reopened while its primary is down (it has streamed nothing since its clean close)', async (t) => {
    const cluster = createCluster(t);
    let promoted: Primary | undefined;
    const standbyDir = await lastDir(t, async () => void (await promoted?.close()));
    const p = await cluster.primary('p', { application: new RecordingApp() });
    const s = await cluster.standby('s', { upstream: p, application: new RecordingApp(), dir: standbyDir });
    const last = await commitMany(p, 0, 3);
    await replayedTo(s, last, 'the standby to replay');
    // Its state comes from its base backup: it replays "up to" it before it has the WAL there.
    await receivedTo(s, last, 'the standby to receive the WAL up to its state');
    await s.close();
    await p.close();
    const again = await cluster.standby('s', { upstream: p.address ?? 'p:1', application: new RecordingApp(), dir: standbyDir });
    assert.equal((await readControlFile(new NodeStorage(standbyDir)))?.state, 'shut-down-in-recovery', 'streaming nothing, it has changed nothing');
    const event = nextEvent(again, 'promoted');
    const result = await runCli(['promote', standbyDir]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^promoted: .* is a primary on timeline 2 \(from timeline 1 at /);
    promoted = ((await within(event, HANG_MS, 'the promotion')) as PromotedEvent).primary;
  });

  it("waits (exit 1 at its timeout) while the standby's WAL does not reach the state of its base backup: the standby refuses, running, and the request stays", async (t) => {
    const cluster = createCluster(t);
    const standbyDir = await lastDir(t, async () => undefined);
    const p = await cluster.primary('p', { application: new RecordingApp() });
    await commitMany(p, 0, 3);
    // The backup's state and none of the WAL up to it; its primary gone before it streams.
    await p.baseBackup({ dir: standbyDir });
    await p.close();
    const s = await cluster.standby('s', { upstream: p.address ?? 'p:1', application: new RecordingApp(), dir: standbyDir });
    const result = await runCli(['promote', standbyDir, '--timeout', '1']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^walship promote: error: the standby in .* did not promote within 1 s; .*promote stays/, 'not "stopped", not "promoted"');
    assert.notEqual(s.state, 'failed');
    assert.equal((await readControlFile(new NodeStorage(standbyDir)))?.state, 'shut-down-in-recovery');
    await access(join(standbyDir, PROMOTE_SIGNAL_FILE));
    await s.close();
  });

  it('promotes a crashed former primary opened as a standby before its upstream vouched for it', async (t) => {
    const cluster = createCluster(t);
    let promoted: Primary | undefined;
    const primaryDir = await lastDir(t, async () => undefined);
    const formerDir = await lastDir(t, async () => void (await promoted?.close()));
    const p = await cluster.primary('p', { application: new RecordingApp(), dir: primaryDir });
    await commitMany(p, 0, 3);
    // A copy of a running primary's directory: a primary that crashed (its lock names a holder gone).
    await copyRunning(primaryDir, formerDir);
    assert.equal((await readControlFile(new NodeStorage(formerDir)))?.state, 'in-production');
    // Its upstream is down: nothing compares its WAL, so the directory stays a primary's.
    const s = await cluster.standby('s', { upstream: 'nowhere:1', application: new RecordingApp(), dir: formerDir });
    assert.equal((await readControlFile(new NodeStorage(formerDir)))?.state, 'shut-down', "recovered, and still a primary's directory, not a running primary");
    const event = nextEvent(s, 'promoted');
    const result = await runCli(['promote', formerDir]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^promoted: .* is a primary on timeline 2/);
    promoted = ((await within(event, HANG_MS, 'the promotion')) as PromotedEvent).primary;
    await s.close();
    const closed = await runCli(['promote', primaryDir]);
    assert.match(closed.stderr, /holds a primary \(in-production, timeline 1\), not a running standby/, 'the running primary still is one');
  });
});
