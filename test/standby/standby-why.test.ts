import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, Standby, TcpTransport, isWalshipError, type StandbyOptions } from '../../src/index.js';
import { MemoryStorage, createCluster } from '../../src/testing/index.js';
import { RecordingApp, until } from '../helpers/apps.js';
import { within } from '../helpers/wal.js';
import { HANG_MS, commitMany } from '../helpers/standby-harness.js';

describe('a standby that cannot get in says why', () => {
  it('a wrong password: lastError is AUTH_FAILED, and a wait that times out carries it as its cause', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const standby = await cluster.standby('s', { upstream: primary, application: new RecordingApp(), connection: { password: 'not-the-password' } });
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
  });

  it('nothing listening: lastError is CONNECTION_FAILED; once streaming it is null again', async (t) => {
    const cluster = createCluster(t);
    const standby = await cluster.standby('s', { upstream: cluster.address('p'), application: new RecordingApp() });
    await within(until(() => standby.lastError !== null), HANG_MS, 'the first failed connect');
    assert.equal(standby.lastError?.code, 'CONNECTION_FAILED', `unreachable: ${String(standby.lastError)}`);
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    await commitMany(primary, 0, 3);
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'replay');
    // Replay may finish from the base backup alone; streaming starts right after.
    await within(until(() => standby.lastError === null), HANG_MS, 'lastError to clear once streaming');
    assert.equal(standby.state, 'streaming', 'streaming: no error');
  });

  it('an address the transport cannot parse is INVALID_OPTIONS at open, naming the option, and nothing is created', async () => {
    for (const address of ['primary', 'primary:99999', '::1:5432', '']) {
      const storage = new MemoryStorage();
      const options: StandbyOptions = {
        storage,
        application: new RecordingApp(),
        primary: { transport: new TcpTransport(), address, user: 'repl', password: 'pw-1234567', applicationName: 's1' },
      };
      await assert.rejects(Standby.open(options), (err: unknown) => {
        assert.ok(isWalshipError(err, 'INVALID_OPTIONS'), `${JSON.stringify(address)}: ${String(err)}`);
        assert.match(err.message, /Standby\.primary/, 'the message names the option');
        return true;
      });
      assert.deepEqual(storage.fileNames(), [], 'nothing was created');
    }
    const storage = new MemoryStorage();
    await assert.rejects(
      Primary.open({ storage, application: new RecordingApp(), listen: { transport: new TcpTransport(), address: 'localhost' } }),
      (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS') && /Primary\.listen\.address/.test(err.message),
    );
    assert.deepEqual(storage.fileNames(), [], 'the primary created nothing');
  });
});
