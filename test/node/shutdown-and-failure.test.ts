import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, isWalshipError, type CommittedBatch, type FailedEvent } from '../../src/index.js';
import { readControlFile } from '../../src/node/control-file.js';
import { MemoryNetwork, MemoryStorage, createCluster } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { within } from '../helpers/wal.js';
import { TRUST_REPL, expectMessage, rawStandby } from '../helpers/primary-helpers.js';
import { HANG_MS, commitMany } from '../helpers/standby-harness.js';

/** A recording app whose `apply` never returns once `hang` is set. */
class HangingApp extends RecordingApp {
  hang = false;
  override apply(batch: CommittedBatch): void | Promise<void> {
    if (this.hang) return new Promise<void>(() => undefined);
    return super.apply(batch);
  }
}

describe('close({ signal }): a bounded shutdown', () => {
  it('a standby that never confirms holds a fast shutdown; the signal turns it into an immediate one, and the next open recovers', async () => {
    const net = new MemoryNetwork();
    const storage = new MemoryStorage();
    const app = new RecordingApp();
    const primary = await Primary.open({
      storage,
      application: app,
      segmentSize: 64 * 1024,
      walSenderTimeoutMs: 600_000,
      listen: { transport: net.transport('p'), address: 'p:1' },
      auth: TRUST_REPL,
    });
    const last = await commitMany(primary, 0, 20);
    // A standby that starts streaming and then never reports: the fast shutdown would wait
    // walSenderTimeoutMs (10 minutes) for its confirmation.
    const conn = await rawStandby(net.transport('s'), 'p:1', 'silent');
    conn.send({ kind: 'startReplication', slotName: '', startLsn: primary.flushLsn, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
    await expectMessage(conn, 'replicationStarted');
    let settled = false;
    const closing = primary.close().then(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(settled, false, 'the fast shutdown waits for the standby');
    // A second close() with a signal cuts the shutdown in progress short.
    await within(primary.close({ signal: AbortSignal.timeout(10) }), HANG_MS, 'the immediate shutdown');
    await closing;
    conn.destroy();
    assert.equal((await readControlFile(storage))?.state, 'in-production', 'an immediate shutdown is not a clean one');
    const again = new RecordingApp();
    const reopened = await Primary.open({ storage, application: again, segmentSize: 64 * 1024 });
    assert.equal(again.lastLsn, last, 'every durable commit is there after the immediate shutdown');
    await reopened.close();
    assert.equal((await readControlFile(storage))?.state, 'shut-down', 'a clean close says so');
  });

  it('an apply that never returns: commits in flight are rejected with WAL_CLOSED when the signal fires', async () => {
    const app = new HangingApp();
    const primary = await Primary.open({ storage: new MemoryStorage(), application: app, segmentSize: 64 * 1024 });
    await commitMany(primary, 0, 3);
    app.hang = true;
    const stuck = primary.commit([Buffer.from('never applied')]);
    const outcome = stuck.then(
      () => 'resolved',
      (err: unknown) => (isWalshipError(err) ? err.code : String(err)),
    );
    await within(primary.close({ signal: AbortSignal.timeout(50) }), HANG_MS, 'the immediate shutdown');
    assert.equal(await outcome, 'WAL_CLOSED', 'the commit in flight is told the primary closed');
  });

  it("a standby's close({ signal }) does not wait for an apply that never returns", async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const app = new HangingApp();
    const standby = await cluster.standby('s', { upstream: primary, application: app });
    {
      await commitMany(primary, 0, 3);
      await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay');
      app.hang = true;
      await commitMany(primary, 3, 2);
      await within(until(() => (standby.receiveLsn ?? 0) >= primary.currentLsn), HANG_MS, 'the standby to receive');
      await within(standby.close({ signal: AbortSignal.timeout(50) }), HANG_MS, "the standby's immediate shutdown");
      assert.equal(standby.state, 'closed');
    }
  });
});

describe('one failure event', () => {
  it("Primary and Standby both emit 'failed' with the error, which `failure` holds", async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('p', { application: papp });
    const sapp = new RecordingApp();
    const standby = await cluster.standby('s', { upstream: primary, application: sapp });
    const seen: [string, FailedEvent][] = [];
    primary.on('failed', (event) => seen.push(['primary', event]));
    standby.on('failed', (event) => seen.push(['standby', event]));
    {
      await commitMany(primary, 0, 3);
      await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay');
      sapp.failAt = 0;
      papp.failAt = 0;
      await assert.rejects(primary.commit([Buffer.from('refused')]), (err: unknown) => isWalshipError(err, 'APPLY_FAILED'));
      await within(until(() => seen.length === 2), HANG_MS, 'both failures');
      for (const [who, event] of seen) assert.ok(isWalshipError(event.error, 'APPLY_FAILED'), `${who}: ${String(event.error)}`);
      assert.equal(primary.failure, seen.find(([who]) => who === 'primary')?.[1].error, "the primary's failure is the event's error");
      assert.equal(standby.failure, seen.find(([who]) => who === 'standby')?.[1].error, "the standby's failure is the event's error");
    }
  });
});
