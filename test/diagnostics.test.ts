import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import { describe, it, type TestContext } from 'node:test';
import { DIAGNOSTICS_CHANNELS, type CommitDiagnostic, type PromoteDiagnostic, type SenderStateDiagnostic, type WalFlushDiagnostic } from '../src/index.js';
import { createCluster } from '../src/testing/index.js';
import { RecordingApp } from './helpers/apps.js';
import { eventually } from './helpers/primary-helpers.js';
import { HANG_MS } from './helpers/standby-harness.js';
import { payload } from './helpers/wal.js';

// The node:diagnostics_channel messages: subscribed to as a tracer would, by channel name.

/** Collects the messages of channel `name` until the test ends. */
function collect<T>(t: TestContext, name: string): T[] {
  const messages: T[] = [];
  const onMessage = (message: unknown): void => void messages.push(message as T);
  diagnosticsChannel.subscribe(name, onMessage);
  t.after(() => void diagnosticsChannel.unsubscribe(name, onMessage));
  return messages;
}

describe('diagnostics channels', () => {
  it('has stable names', () => {
    assert.deepEqual(DIAGNOSTICS_CHANNELS, { commit: 'walship:commit', walFlush: 'walship:wal:flush', senderState: 'walship:sender:state', promote: 'walship:promote' });
    assert.ok(Object.isFrozen(DIAGNOSTICS_CHANNELS), 'frozen');
  });

  it('walship:commit: each resolved commit with its level, position and duration', async (t) => {
    const commits = collect<CommitDiagnostic>(t, DIAGNOSTICS_CHANNELS.commit);
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    const a = await primary.commit(payload(1, 10), { synchronousCommit: 'local' });
    const b = await primary.commit(payload(2, 10), { synchronousCommit: 'off' });
    await assert.rejects(primary.commit('no' as never));
    const mine = commits.filter((c) => c.wal === primary.wal);
    assert.deepEqual(
      mine.map((c) => [c.level, c.lsn, c.startLsn]),
      [
        ['local', a.lsn, a.startLsn],
        ['off', b.lsn, b.startLsn],
      ],
      'one message per resolved commit, none for the rejected one',
    );
    assert.ok(mine.every((c) => typeof c.durationMs === 'number' && c.durationMs >= 0), 'durations');
  });

  it('walship:wal:flush: the durable end as it advances, on the log that flushed', async (t) => {
    const flushes = collect<WalFlushDiagnostic>(t, DIAGNOSTICS_CHANNELS.walFlush);
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    const start = primary.flushLsn;
    const { lsn } = await primary.commit(payload(1, 100), { synchronousCommit: 'local' });
    const mine = flushes.filter((f) => f.wal === primary.wal);
    assert.ok(mine.length >= 1, 'a flush was published');
    assert.equal(mine.at(-1)?.flushedLsn, primary.flushLsn, 'the last one is the durable end');
    assert.ok(primary.flushLsn >= lsn, 'the commit is durable');
    assert.equal(
      mine.reduce((sum, f) => sum + f.bytes, 0),
      primary.flushLsn - start,
      'bytes add up to how far the durable end moved',
    );
    assert.ok(mine.every((f) => f.syncMs >= 0), 'sync times');
  });

  it('walship:sender:state and walship:promote: a standby connecting, streaming, and promoted', async (t) => {
    const states = collect<SenderStateDiagnostic>(t, DIAGNOSTICS_CHANNELS.senderState);
    const promotions = collect<PromoteDiagnostic>(t, DIAGNOSTICS_CHANNELS.promote);
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp() });
    const { lsn } = await primary.commit(payload(1, 100));
    await standby.waitForReplay(lsn, { timeoutMs: HANG_MS });
    await eventually(() => states.some((s) => s.applicationName === 's1' && s.state === 'streaming'), HANG_MS, 's1 streaming');
    const mine = states.filter((s) => s.serverAddress === primary.address && s.applicationName === 's1');
    assert.ok(mine.length >= 1, 'the primary published its sender states');
    const streaming = mine.find((s) => s.state === 'streaming');
    assert.ok(streaming !== undefined && streaming.previousState !== 'streaming', 'a change, with the state before it');

    await primary.close();
    const promoted = await standby.promote();
    const [message] = promotions.filter((p) => p.standby === standby);
    assert.ok(message !== undefined, 'the promotion was published');
    assert.equal(message.primary, promoted);
    assert.equal(message.timeline, promoted.timeline);
    assert.equal(message.timeline, 2);
    assert.ok(message.switchLsn >= lsn && message.durationMs >= 0, 'switch point and duration');
  });

  it('publishes nothing when no one subscribes', async (t) => {
    // Subscribing and unsubscribing leaves the channel without subscribers: the publishers check that first.
    for (const name of Object.values(DIAGNOSTICS_CHANNELS)) assert.equal(diagnosticsChannel.channel(name).hasSubscribers, false, name);
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp(), listen: false });
    await primary.commit(payload(1, 10));
    assert.equal(primary.metrics().commits.on.commits, 1, 'committing works without subscribers');
  });
});
