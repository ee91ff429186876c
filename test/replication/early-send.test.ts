import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Lsn, Primary } from '../../src/index.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { EARLY_WAL_OPTION } from '../../src/replication/early-wal.js';
import { MemoryStorage, createCluster, type Cluster } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { GatedStorage, expectMessage, report } from '../helpers/primary-helpers.js';
import { payload, within } from '../helpers/wal.js';
import { HANG_MS } from '../helpers/standby-harness.js';

// Early WAL on the wire (issue #17): a primary with `earlySend` ships written WAL before its own
// fdatasync returns, only to standbys that said they accept it, with its durable end in every
// message; and it counts a standby's report only up to that durable end.

/** A hand-driven standby: it sends the early-WAL startup option when `early`, then START_REPLICATION from `startLsn` (with a slot when given). */
async function rawStandby(cluster: Cluster, primary: Primary, name: string, early: boolean, startLsn: Lsn, slotName = ''): Promise<MessageStream<'client'>> {
  const conn = await connectReplication({ transport: cluster.transport(name), address: cluster.address(primary), user: 'repl', applicationName: name, ...(early ? { options: [EARLY_WAL_OPTION] } : {}) });
  conn.send({ kind: 'startReplication', slotName, startLsn, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
  await expectMessage(conn, 'replicationStarted');
  return conn;
}

/** Messages until the WAL received (unless `withWal` is false) and a durable end told reach `end`: resolves with the walData and keepalive messages seen. */
async function receive(conn: MessageStream<'client'>, end: Lsn, withWal = true): Promise<{ startLsn: Lsn; endLsn: Lsn; walEnd: Lsn }[]> {
  const seen: { startLsn: Lsn; endLsn: Lsn; walEnd: Lsn }[] = [];
  return within(
    (async () => {
      for (;;) {
        const message = await conn.next();
        if (message === null) throw new Error('the connection ended');
        if (message.kind === 'walData') seen.push({ startLsn: message.startLsn, endLsn: message.startLsn + message.data.length, walEnd: message.walEnd });
        else if (message.kind === 'keepalive') seen.push({ startLsn: -1, endLsn: -1, walEnd: message.walEnd });
        if ((!withWal || seen.some((m) => m.endLsn >= end)) && seen.some((m) => m.walEnd >= end)) return seen;
      }
    })(),
    HANG_MS,
    `WAL and a durable end up to ${end}`,
  );
}

async function openPrimary(cluster: Cluster, storage: GatedStorage): Promise<Primary> {
  return cluster.primary('p', { application: new RecordingApp(), storage, earlySend: true, auth: { rules: [{ user: 'repl', address: 'all', method: 'trust' }] } });
}

describe('early WAL on the wire', () => {
  it('ships written WAL before it is durable to a standby that accepts it, its durable end in every message, and says when it is durable', async (t) => {
    const cluster = createCluster(t);
    const storage = new GatedStorage();
    const primary = await openPrimary(cluster, storage);
    await primary.commit(payload(0, 100));
    const start = primary.flushLsn;
    const early = await rawStandby(cluster, primary, 'early', true, start);
    const durableOnly = await rawStandby(cluster, primary, 'durable', false, start);
    storage.hold();
    const committing = primary.commit(payload(1, 100), { synchronousCommit: 'local' });
    // The batch is written (not durable): the early standby gets it now.
    const end = await within(
      (async () => {
        for (;;) {
          const message = await early.next();
          if (message?.kind === 'walData') {
            assert.ok(message.walEnd < message.startLsn + message.data.length, 'the WAL runs ahead of the durable end the message carries');
            assert.equal(message.walEnd, primary.flushLsn, "the message carries the primary's durable end");
            return message.startLsn + message.data.length;
          }
        }
      })(),
      HANG_MS,
      'early WAL',
    );
    assert.ok(primary.flushLsn < end, 'the primary has not made it durable yet');
    const rows = primary.replicationStatus();
    assert.ok((rows.find((r) => r.applicationName === 'durable')?.sentLsn ?? 0) <= primary.flushLsn, 'the standby that did not accept early WAL got none');
    storage.release();
    await within(committing, HANG_MS, 'the commit once its fdatasync returns');
    // Now durable: both learn it, the early one with no new WAL to carry it (a keepalive).
    const seen = await receive(early, end, false);
    assert.ok(seen.some((m) => m.startLsn === -1 && m.walEnd >= end), 'a keepalive says the early WAL is durable');
    await receive(durableOnly, end);
    // Hand-driven standbys never confirm the end of the stream: close them, or the primary's
    // close waits for their reports until its sender timeout.
    early.destroy();
    durableOnly.destroy();
  });

  it("counts a standby's flush report, for its slot and for synchronous commits, only up to its own durable end", async (t) => {
    const cluster = createCluster(t);
    const storage = new GatedStorage();
    const primary = await openPrimary(cluster, storage);
    primary.reload({ synchronousStandbyNames: 'FIRST 1 (early)' });
    await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
    await primary.createSlot('early', { reserveWal: true });
    const start = primary.flushLsn;
    const early = await rawStandby(cluster, primary, 'early', true, start, 'early');
    report(early, start, start, start);
    storage.hold();
    const durable = primary.flushLsn;
    const committing = primary.commit(payload(2, 100));
    let resolved = false;
    void committing.then(() => (resolved = true));
    const seen = await within(
      (async () => {
        for (;;) {
          const message = await early.next();
          if (message?.kind === 'walData' && message.startLsn + message.data.length > durable) return message.startLsn + message.data.length;
        }
      })(),
      HANG_MS,
      'early WAL',
    );
    // A standby that (wrongly) confirms WAL the primary has not made durable.
    report(early, seen, seen, seen);
    await within(
      (async () => {
        while ((primary.replicationStatus()[0]?.flushLsn ?? 0) < seen) await new Promise((resolve) => setTimeout(resolve, 5));
      })(),
      HANG_MS,
      'the report to arrive',
    );
    const slot = primary.slots().find((row) => row.slotName === 'early');
    assert.ok((slot?.restartLsn ?? Infinity) <= primary.flushLsn, `the slot (${slot?.restartLsn}) stays at or below the durable end (${primary.flushLsn})`);
    assert.equal(resolved, false, 'the commit waits for its own fdatasync');
    storage.release();
    // Once durable here, the same report releases it.
    await within(
      (async () => {
        while (!resolved) {
          report(early, seen, seen, seen);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })(),
      HANG_MS,
      'the commit once durable and confirmed',
    );
    early.destroy();
  });

  it("with syncs that hold the event loop, a commit that waits for a standby has its WAL sent before the primary's fdatasync; a local commit's goes after it", async (t) => {
    const cluster = createCluster(t);
    const storage = new MemoryStorage();
    // Files whose urgent syncs say they hold the event loop (as NodeStorage's with commitSync
    // 'inline'); each such sync notes how far the early standby had been sent when it began.
    const sentAtSync: number[] = [];
    let sent = (): number => -1;
    const open = storage.open.bind(storage);
    storage.open = async (name, options) => {
      const file = await open(name, options);
      const datasync = file.datasync.bind(file);
      Object.defineProperty(file, 'syncBlocks', { value: true });
      file.datasync = (hint) => {
        if (hint?.urgent !== false) sentAtSync.push(sent());
        return datasync(hint);
      };
      return file;
    };
    const primary = await cluster.primary('p', {
      application: new RecordingApp(),
      storage,
      earlySend: true,
      synchronousStandbyNames: 'FIRST 1 (early)',
      auth: { rules: [{ user: 'repl', address: 'all', method: 'trust' }] },
    });
    await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
    const early = await rawStandby(cluster, primary, 'early', true, primary.flushLsn);
    sent = () => primary.replicationStatus().find((r) => r.applicationName === 'early')?.sentLsn ?? -1;
    // Confirms everything it gets once it is durable, so that `on` commits are released.
    const confirming = (async () => {
      for (;;) {
        const message = await early.next().catch(() => null);
        if (message === null) return;
        if (message.kind === 'walData' || message.kind === 'keepalive') report(early, message.walEnd, message.walEnd, message.walEnd);
      }
    })();
    for (const level of ['on', 'local', 'on'] as const) {
      sentAtSync.length = 0;
      const { lsn } = await within(primary.commit(payload(1, 100), { synchronousCommit: level }), HANG_MS, `a commit at ${level}`);
      assert.ok(sentAtSync.length > 0, 'an urgent sync ran');
      if (level === 'on') assert.ok(sentAtSync.every((at) => at >= lsn), `${level}: sent before each sync began (${sentAtSync.join(', ')} against ${lsn})`);
      else assert.ok(sentAtSync[0]! < lsn, `${level}: the sync began before the send (${sentAtSync.join(', ')} against ${lsn})`);
      await within(
        (async () => {
          while (sent() < lsn) await new Promise((resolve) => setTimeout(resolve, 1));
        })(),
        HANG_MS,
        'the local commit sent',
      );
    }
    early.destroy();
    await confirming;
  });
});
