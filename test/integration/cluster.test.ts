import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NodeStorage, Primary, Standby, TcpTransport, type Storage, type Transport } from '../../src/index.js';
import { MemoryNetwork, MemoryStorage, seededRandom } from '../../src/testing/index.js';
import { DigestApp } from '../helpers/apps.js';
import { KillableTransport } from '../helpers/killable-transport.js';
import { tempDir } from '../helpers/temp-dir.js';
import { within, randomBatch } from '../helpers/wal.js';

const COMMITS = 100_000;
const WINDOW = 500;
const auth = { users: { repl: { password: 'cluster-pw-1' } }, rules: [{ user: 'repl', address: 'all', method: 'scram-sha-256' as const }] };

interface Setup {
  /** A server-side transport and the address to listen on. */
  listen(): { transport: Transport; address: string };
  /** A client transport for standby `i`. */
  client(i: number): Transport;
  storage(name: string): Storage;
  cleanup(): Promise<void>;
}

async function memorySetup(): Promise<Setup> {
  const net = new MemoryNetwork();
  const storages = new Map<string, Storage>();
  return {
    listen: () => ({ transport: net.transport('primary'), address: 'primary:5432' }),
    client: (i) => net.transport(`standby${i}`),
    storage: (name) => storages.get(name) ?? storages.set(name, new MemoryStorage()).get(name)!,
    cleanup: async () => undefined,
  };
}

async function tcpSetup(): Promise<Setup> {
  const { dir, cleanup } = await tempDir();
  let port = 0;
  return {
    listen: () => ({ transport: new TcpTransport(), address: `127.0.0.1:${port}` }),
    client: () => new TcpTransport(),
    storage: (name) => new NodeStorage(`${dir}/${name}`),
    cleanup,
    set port(p: number) {
      port = p;
    },
  } as Setup & { port: number };
}


describe('a primary and three standbys under faults', () => {
  for (const [label, make] of [['MemoryTransport, MemoryStorage', memorySetup], ['TcpTransport, real directories with fdatasync', tcpSetup]] as const) {
    it(`${label}: 100k commits of random sizes reach every standby's application exactly once, in order`, async () => {
      const setup = await make();
      const random = seededRandom(20261122);
      const openPrimary = async (): Promise<{ primary: Primary; app: DigestApp }> => {
        const app = new DigestApp();
        const primary = await Primary.open({
          storage: setup.storage('primary'),
          application: app,
          segmentSize: 1024 * 1024,
          listen: setup.listen(),
          auth,
          walSenderTimeoutMs: 20_000,
        });
        if ('port' in setup) (setup as { port: number }).port = Number(primary.address?.split(':').at(-1));
        return { primary, app };
      };
      let { primary, app: primaryApp } = await openPrimary();
      const transports = [0, 1, 2].map((i) => new KillableTransport(setup.client(i)));
      const openStandby = async (i: number): Promise<{ standby: Standby; app: DigestApp }> => {
        const app = new DigestApp();
        const standby = await Standby.open({
          storage: setup.storage(`standby${i}`),
          application: app,
          primary: { transport: transports[i]!, address: primary.address!, user: 'repl', password: 'cluster-pw-1', applicationName: `s${i}` },
          statusIntervalMs: 200,
          retryMinDelayMs: 10,
          retryMaxDelayMs: 200,
        });
        return { standby, app };
      };
      const standbys = await Promise.all([0, 1, 2].map(openStandby));
      const failures: string[] = [];
      for (const { standby } of standbys) standby.on('failed', ({ error }) => failures.push(error.message));

      try {
        for (let i = 0; i < COMMITS; i += WINDOW) {
          await Promise.all(Array.from({ length: WINDOW }, (_, k) => primary.commit(randomBatch(i + k, random))));
          if (i % 5_000 === 0) transports[Math.floor(random() * 3)]!.kill();
          if (i === 20_000) {
            // A kill storm: every standby loses its connection several times in a row.
            for (let k = 0; k < 5; k++) {
              transports.forEach((t) => t.kill());
              await new Promise((resolve) => setTimeout(resolve, 5));
            }
          }
          if (i === 35_000) {
            // A standby restarts mid-stream with a fresh (empty) application.
            await standbys[1]!.standby.close();
            standbys[1] = await openStandby(1);
            standbys[1].standby.on('failed', ({ error }) => failures.push(error.message));
          }
          if (i === 65_000) {
            // The primary restarts mid-stream on the same address; its application replays.
            await primary.close();
            ({ primary, app: primaryApp } = await openPrimary());
          }
        }
        const end = primary.currentLsn;
        for (const { standby } of standbys) await within(standby.waitForReplay(end), 120_000, `standby replay to ${end}`);
        assert.deepEqual(failures, []);
        assert.equal(primaryApp.count, COMMITS);
        for (const { app } of standbys) assert.equal(app.state, primaryApp.state);
        assert.ok(transports.reduce((n, t) => n + t.kills, 0) >= 5, 'connections were actually killed');
      } finally {
        await Promise.all(standbys.map(({ standby }) => standby.close()));
        await primary.close();
        await setup.cleanup();
      }
    });
  }
});
