import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import { describe, it, type TestContext } from 'node:test';
import { format } from 'node:util';
import createDebug from 'debug';
import { DIAGNOSTICS_CHANNELS, Standby } from '../../src/index.js';
import { QUIET_LOG_PREFIX, createLogger } from '../../src/logger.js';
import { REHEARSAL_INTERVAL_MS, rehearsePromotion, takeRehearsalTurn } from '../../src/promotion-rehearsal.js';
import { createCluster } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { payload } from '../helpers/wal.js';

// A standby rehearses a promotion on a private in-memory cluster so that V8 has compiled the
// promotion's code before promote() is called: nothing of it may show outside.

/** Every message published on walship's diagnostics channels until the test ends. */
function collectDiagnostics(t: TestContext): unknown[] {
  const messages: unknown[] = [];
  const onMessage = (message: unknown): void => void messages.push(message);
  for (const name of Object.values(DIAGNOSTICS_CHANNELS)) {
    diagnosticsChannel.subscribe(name, onMessage);
    t.after(() => void diagnosticsChannel.unsubscribe(name, onMessage));
  }
  return messages;
}

/** Every line walship's loggers write until the test ends, with every walship namespace enabled. */
function collectLogLines(t: TestContext): string[] {
  const lines: string[] = [];
  const previous = createDebug.disable();
  const log = createDebug.log;
  createDebug.enable('walship*');
  createDebug.log = (...args: unknown[]) => void lines.push(format(...args));
  t.after(() => {
    createDebug.log = log;
    createDebug.enable(previous);
  });
  return lines;
}

/** How many of each kind of resource keep the event loop alive now. */
function activeResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

/** Lets the callbacks already queued (immediates, I/O) run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('promotion rehearsal', () => {
  // First in the file: a rehearsal's standby that took the process's turn would leave none for this one.
  it('a standby that rehearses publishes only its own promotion and commits, and closes without a timer left', async (t) => {
    const messages = collectDiagnostics(t);
    const lines = collectLogLines(t);
    await settle();
    const before = activeResources();
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const standby = await cluster.standby('s', { upstream: primary, application: new RecordingApp() });
    await standby.waitForConsistent();
    await settle(); // the rehearsal starts in the turn after the standby became consistent
    const { lsn } = await primary.commit(payload(1, 10));
    await standby.waitForReplay(lsn);
    const promoted = await standby.promote();
    await promoted.commit(payload(2, 10), { synchronousCommit: 'local' });
    await promoted.close();
    await primary.close();
    await settle();
    const promotions = messages.filter((m) => (m as { standby?: unknown }).standby !== undefined);
    assert.deepEqual(promotions, [messages.find((m) => (m as { standby?: unknown }).standby === standby)], 'one promotion published: this standby\'s');
    const wals = new Set(messages.map((m) => (m as { wal?: unknown }).wal).filter((wal) => wal !== undefined));
    assert.ok([...wals].every((wal) => wal === primary.wal || wal === promoted.wal), 'commits and flushes of this cluster\'s logs only');
    assert.ok(lines.length > 0, 'the cluster\'s nodes log');
    assert.ok(lines.every((line) => !line.includes(QUIET_LOG_PREFIX)), 'none of the rehearsal\'s lines');
    assert.deepEqual(activeResources(), before, 'no timer left behind (the rehearsals\' interval is stopped)');
  });

  it('promotes a private standby and commits, publishing and logging nothing, leaving no timer', async (t) => {
    const messages = collectDiagnostics(t);
    const lines = collectLogLines(t);
    await settle();
    const before = activeResources();
    assert.equal(await rehearsePromotion(Standby), 2, 'the rehearsal promoted its standby to timeline 2');
    assert.equal(await rehearsePromotion(Standby), 2, 'and does so again: it keeps nothing between runs');
    await settle();
    assert.deepEqual(messages, [], 'nothing published on the diagnostics channels');
    assert.deepEqual(lines, [], 'no log line, with every walship namespace enabled');
    assert.deepEqual(activeResources(), before, 'no timer, handle or request left behind');
    // The collectors work: a node's logger and a publish are seen.
    createLogger('rehearsal-test', 'visible')('a line');
    diagnosticsChannel.channel(DIAGNOSTICS_CHANNELS.commit).publish({ probe: true });
    assert.equal(lines.length, 1, 'an ordinary logger writes');
    assert.equal(messages.length, 1, 'a publish is collected');
  });

  it('quiet loggers: the rehearsal prefix silences every channel of a logger, and only it', () => {
    const previous = createDebug.disable();
    createDebug.enable('walship*');
    try {
      const quiet = createLogger('standby', `${QUIET_LOG_PREFIX} s1`);
      assert.equal(quiet.quiet, true);
      assert.deepEqual([quiet.error.enabled, quiet.trace.enabled], [false, false], 'error and trace too');
      const loud = createLogger('standby', 's1');
      assert.equal(loud.quiet, false);
      assert.deepEqual([loud.error.enabled, loud.trace.enabled], [true, true]);
      assert.equal(createLogger('standby').quiet, false, 'no prefix: not quiet');
    } finally {
      createDebug.enable(previous);
    }
  });

  it('takeRehearsalTurn: one rehearsal per half interval in a process', () => {
    // Far past any monotonic clock of this process, so that no standby's turn interferes.
    const at = 1e15;
    assert.equal(takeRehearsalTurn(at), true, 'the first asks');
    assert.equal(takeRehearsalTurn(at + 1), false, 'a moment later');
    assert.equal(takeRehearsalTurn(at + REHEARSAL_INTERVAL_MS / 2 - 1), false, 'just short of half an interval');
    assert.equal(takeRehearsalTurn(at + REHEARSAL_INTERVAL_MS / 2), true, 'half an interval later');
  });
});
