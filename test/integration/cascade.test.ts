import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, Standby, TcpTransport } from '../../src/index.js';
import { seededRandom } from '../../src/testing/index.js';
import { DigestApp, until } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within, randomBatch } from '../helpers/wal.js';

const COMMITS = 100_000;
const WINDOW = 500;
const PASSWORD = 'cascade-pw-1';
const auth = { users: { repl: { password: PASSWORD } }, rules: [{ user: 'repl', address: 'all', method: 'scram-sha-256' as const }] };


describe('cascading over TCP with real directories: A → B → C', () => {
  it('100k commits of random sizes reach C in order, exactly once; C bootstraps from B; B restarts mid-stream; with A stopped B serves reads and streams all it has to C', async () => {
    const { dir, cleanup } = await tempDir();
    const random = seededRandom(20261206);
    const appA = new DigestApp();
    const a = await Primary.open({ dir: `${dir}/a`, application: appA, segmentSize: 1024 * 1024, listen: { transport: new TcpTransport(), address: '127.0.0.1:0' }, auth });
    let bPort = 0;
    const openB = async (): Promise<{ b: Standby; app: DigestApp }> => {
      const app = new DigestApp();
      const b = await Standby.open({
        dir: `${dir}/b`,
        application: app,
        primary: { transport: new TcpTransport(), address: a.address as string, user: 'repl', password: PASSWORD, applicationName: 'b' },
        listen: { transport: new TcpTransport(), address: `127.0.0.1:${bPort}` },
        auth,
        statusIntervalMs: 200,
        retryMinDelayMs: 10,
        retryMaxDelayMs: 200,
      });
      bPort = Number(b.address?.split(':').at(-1));
      return { b, app };
    };
    let { b, app: appB } = await openB();
    const failures: string[] = [];
    b.on('failed', ({ error }) => failures.push(`B: ${error.message}`));
    const appC = new DigestApp();
    let c: Standby | null = null;
    try {
      for (let i = 0; i < COMMITS; i += WINDOW) {
        await Promise.all(Array.from({ length: WINDOW }, (_, k) => a.commit(randomBatch(i + k, random))));
        if (i === 10_000) {
          // C bootstraps from B (a base backup of B's application), after 10k commits.
          await within(b.waitForReplay(a.currentLsn), 60_000, 'B to catch up before C starts');
          c = await Standby.open({
            dir: `${dir}/c`,
            application: appC,
            primary: { transport: new TcpTransport(), address: `127.0.0.1:${bPort}`, user: 'repl', password: PASSWORD, applicationName: 'c' },
            statusIntervalMs: 200,
            retryMinDelayMs: 10,
            retryMaxDelayMs: 200,
          });
          c.on('failed', ({ error }) => failures.push(`C: ${error.message}`));
        }
        if (i === 50_000) {
          // B restarts mid-stream on the same address; C reconnects and resumes.
          await b.close();
          ({ b, app: appB } = await openB());
          b.on('failed', ({ error }) => failures.push(`B: ${error.message}`));
        }
      }
      const end = a.currentLsn;
      assert.ok(c !== null, 'C was started');
      const cc = c;
      await within(cc.waitForReplay(end), 120_000, 'C to replay everything A committed');
      assert.deepEqual(failures, [], 'no node failed');
      assert.equal(appA.count, COMMITS, 'A applied every commit');
      assert.equal(appC.state, appA.state, "C applied A's batches in order, exactly once (same count, position and digest)");
      assert.equal(appB.state, appA.state, "B's (restarted) application holds A's state too");

      // A stops: B keeps serving reads and streams to C all that it has (A's shutdown record too).
      await a.close();
      assert.ok(b.readable, 'B serves reads with its upstream down');
      await within(
        until(() => cc.receiveLsn === b.receiveLsn && (b.receiveLsn ?? 0) >= end),
        60_000,
        'C to receive all that B has',
      );
    } finally {
      await c?.close();
      await b.close();
      await a.close();
      await cleanup();
    }
  });
});
