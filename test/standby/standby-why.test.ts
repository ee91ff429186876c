import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Standby, isWalshipError } from '../../src/index.js';
import { MemoryNetwork, MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, commitMany, openPrimary, standbyOptions } from '../helpers/standby-harness.js';

describe('a standby that cannot get in says why', () => {
  it('a wrong password: lastError is AUTH_FAILED, and a wait that times out carries it as its cause', async () => {
    const net = new MemoryNetwork();
    const primary = await openPrimary(new RecordingApp(), net.transport('p'), 'p:1');
    const options = standbyOptions(primary, net.transport('s'), new RecordingApp(), { storage: new MemoryStorage() });
    const standby = await Standby.open({ ...options, primary: { ...options.primary, password: 'not-the-password' } });
    try {
      await within(until(() => standby.lastError !== null), HANG_MS, 'the first refusal');
      assert.equal(standby.lastError?.code, 'AUTH_FAILED', `lastError names the refusal: ${String(standby.lastError)}`);
      await assert.rejects(standby.waitForConsistent({ timeoutMs: 200 }), (err: unknown) => {
        assert.ok(isWalshipError(err, 'TIMEOUT'), `a TIMEOUT, got ${String(err)}`);
        assert.ok(isWalshipError(err.cause, 'AUTH_FAILED'), `its cause is the refusal, got ${String(err.cause)}`);
        assert.match(err.message, /not streaming/, 'the message says why');
        return true;
      });
      const abort = new AbortController();
      const waiting = standby.waitForReplay(1, { signal: abort.signal });
      abort.abort(new Error('gave up'));
      await assert.rejects(waiting, (err: unknown) => {
        assert.ok(isWalshipError(err, 'ABORTED'), `an ABORTED, got ${String(err)}`);
        assert.match(err.message, /not streaming/, 'the message says why');
        return true;
      });
      assert.notEqual(standby.state, 'failed', 'a wrong password is retried (the primary may change it)');
    } finally {
      await standby.close();
      await primary.close();
    }
  });

  it('nothing listening: lastError is CONNECTION_FAILED; once streaming it is null again', async () => {
    const net = new MemoryNetwork();
    const app = new RecordingApp();
    const options = standbyOptions('p:1', net.transport('s'), new RecordingApp(), { storage: new MemoryStorage() });
    const standby = await Standby.open(options);
    try {
      await within(until(() => standby.lastError !== null), HANG_MS, 'the first failed connect');
      assert.equal(standby.lastError?.code, 'CONNECTION_FAILED', `unreachable: ${String(standby.lastError)}`);
      const primary = await openPrimary(app, net.transport('p'), 'p:1');
      try {
        await commitMany(primary, 0, 3);
        await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay');
        // Replay may finish from the base backup alone; streaming starts right after.
        await within(until(() => standby.lastError === null), HANG_MS, 'lastError to clear once streaming');
        assert.equal(standby.state, 'streaming', 'streaming: no error');
      } finally {
        await standby.close();
        await primary.close();
      }
    } finally {
      await standby.close();
    }
  });
});
