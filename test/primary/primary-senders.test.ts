import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError, Primary, WalLog, type Application, type PrimaryOptions, type ReplicationStatusRow, type SnapshotData, type WalshipError } from '../../src/index.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { MemoryNetwork, MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { payload, within } from '../helpers/wal.js';
import { TRUST_REPL, eventually, expectMessage, nextEvent, rawStandby, receiveUntil, report } from '../helpers/primary-helpers.js';

const SEGMENT = 64 * 1024;

type Disconnected = { applicationName: string; clientAddress: string | null; error: WalshipError | null };

async function openServing(net: MemoryNetwork, application: Application, extra: Partial<PrimaryOptions> = {}): Promise<Primary> {
  return Primary.open({
    storage: new MemoryStorage(),
    application,
    segmentSize: SEGMENT,
    listen: { transport: net.transport('primary'), address: 'primary:0' },
    auth: TRUST_REPL,
    ...extra,
  });
}

function onlyRow(primary: Primary): ReplicationStatusRow {
  const rows = primary.replicationStatus();
  assert.equal(rows.length, 1, `one standby row expected, got ${rows.length}`);
  return rows[0] as ReplicationStatusRow;
}

/** An application whose snapshot stream waits for `open()` before yielding its bytes. */
class GatedSnapshotApp extends RecordingApp {
  #release: (() => void) | null = null;
  readonly #gate = new Promise<void>((resolve) => (this.#release = resolve));
  /** How many snapshots were taken. */
  snapshots = 0;

  open(): void {
    this.#release?.();
  }

  override async snapshot(): Promise<SnapshotData> {
    this.snapshots++;
    const bytes = (await super.snapshot()) as Buffer;
    const gate = this.#gate;
    return (async function* () {
      await gate;
      yield bytes;
    })();
  }
}

describe('Primary: WAL senders', () => {
  it('maxWalSenders: the extra standby gets TOO_MANY_WAL_SENDERS, and a freed place is reused', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp(), { maxWalSenders: 1 });
    const address = primary.address as string;
    const connects: string[] = [];
    const disconnects: Disconnected[] = [];
    const refusals: Disconnected[] = [];
    primary.on('standby:connected', (event) => connects.push(event.applicationName));
    primary.on('standby:disconnected', (event) => disconnects.push(event));
    primary.on('standby:refused', (event) => refusals.push(event));
    const first = await rawStandby(net.transport('s1'), address, 'first');
    await eventually(() => primary.replicationStatus().length === 1, 10_000, 'the first standby');

    const second = await rawStandby(net.transport('s2', { ip: '10.9.9.9' }), address, 'second');
    second.send({ kind: 'identifySystem' });
    const refusal = await within(second.next(), 10_000, "the second standby's answer");
    assert.equal(refusal?.kind, 'error');
    assert.equal(refusal?.kind === 'error' ? refusal.code : null, 'TOO_MANY_WAL_SENDERS');
    // Refused, not disconnected: it never counted as connected.
    await eventually(() => refusals.length === 1, 10_000, 'the refusal event');
    assert.equal(refusals[0]?.applicationName, 'second');
    assert.equal(refusals[0]?.clientAddress, '10.9.9.9');
    assert.ok(isWalshipError(refusals[0]?.error, 'TOO_MANY_WAL_SENDERS'));

    // A real receiver is refused with the same code.
    const replica = await WalLog.open({ storage: new MemoryStorage(), role: 'replica', segmentSize: SEGMENT });
    const conn = await connectReplication({ transport: net.transport('s3'), address, user: 'repl', applicationName: 'third' });
    await assert.rejects(within(new WalReceiver(conn, replica).run(), 10_000, 'the refusal'), (err: unknown) => isWalshipError(err, 'TOO_MANY_WAL_SENDERS'));
    assert.deepEqual(primary.replicationStatus().map((r) => r.applicationName), ['first']);

    // The first one leaves: its place is free again.
    first.send({ kind: 'terminate' });
    await eventually(() => primary.replicationStatus().length === 0, 10_000, 'the first standby to leave');
    const again = await rawStandby(net.transport('s4'), address, 'fourth');
    again.send({ kind: 'identifySystem' });
    await expectMessage(again, 'identifySystemResult');
    assert.deepEqual(primary.replicationStatus().map((r) => r.applicationName), ['fourth']);
    await replica.close();
    await within(primary.close(), 20_000, 'close');
    assert.deepEqual(refusals.map((e) => e.applicationName), ['second', 'third']);
    assert.deepEqual(connects, ['first', 'fourth']);
    assert.deepEqual(disconnects.map((e) => e.applicationName), ['first', 'fourth']);
  });

  it('walSenderTimeoutMs: a standby that goes silent while streaming is cut off with TIMEOUT', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp(), { walSenderTimeoutMs: 200 });
    await primary.commit(Buffer.from('x'));
    const disconnected = nextEvent(primary, 'standby:disconnected');
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'silent');
    conn.send({ kind: 'startReplication', slotName: '', startLsn: primary.flushLsn, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
    await expectMessage(conn, 'replicationStarted');
    // From here on the standby says nothing, not even to the keepalives that ask it to.
    const event = await within(disconnected, 20_000, 'the timeout');
    assert.equal(event.applicationName, 'silent');
    assert.ok(isWalshipError(event.error, 'TIMEOUT'), String(event.error));
    assert.equal(primary.replicationStatus().length, 0);
    // The standby is told why, and its connection ends.
    const seen: string[] = [];
    for (;;) {
      const message = await within(conn.next(), 10_000, 'the end of the connection').catch(() => null);
      if (message === null) break;
      seen.push(message.kind === 'error' ? `error:${message.code}` : message.kind);
    }
    assert.ok(seen.includes('keepalive'), `keepalives asked for a reply first: ${seen.join()}`);
    assert.equal(seen.at(-1), 'error:TIMEOUT');
    await within(primary.close(), 20_000, 'close');
  });

  it('walSenderTimeoutMs: a standby that never sends a command is cut off with TIMEOUT', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp(), { walSenderTimeoutMs: 200 });
    const disconnected = nextEvent(primary, 'standby:disconnected');
    await rawStandby(net.transport('s1'), primary.address as string, 'idle');
    const event = await within(disconnected, 20_000, 'the timeout');
    assert.ok(isWalshipError(event.error, 'TIMEOUT'), String(event.error));
    await within(primary.close(), 20_000, 'close');
  });

  it('keepalives keep a quiet but healthy standby connected', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp(), { walSenderTimeoutMs: 1500 });
    const disconnects: Disconnected[] = [];
    primary.on('standby:disconnected', (event) => disconnects.push(event));
    const replica = await WalLog.open({ storage: new MemoryStorage(), role: 'replica', segmentSize: SEGMENT });
    const conn = await connectReplication({ transport: net.transport('s1'), address: primary.address as string, user: 'repl', applicationName: 'quiet' });
    // It would report only every minute; the sender's keepalives make it answer sooner.
    const receiver = new WalReceiver(conn, replica, { statusIntervalMs: 60_000 });
    const running = receiver.run();
    await primary.commit(Buffer.from('x'));
    const replies = new Set<number>();
    await eventually(
      () => {
        const time = primary.replicationStatus()[0]?.replyTime?.getTime();
        if (time !== undefined) replies.add(time);
        return replies.size >= 3;
      },
      30_000,
      'replies to keepalives',
    );
    assert.deepEqual(disconnects, []);
    await receiver.stop();
    await running;
    await replica.close();
    await within(primary.close(), 20_000, 'close');
  });

  it('a bad start position or timeline ends that standby alone, with a coded error', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp());
    await primary.commit(Buffer.from('x'));
    const ahead = await rawStandby(net.transport('s1'), primary.address as string, 'ahead');
    ahead.send({ kind: 'startReplication', slotName: '', startLsn: primary.flushLsn + 1024, timeline: 1, checkFrom: null, checkCrc: 0 });
    const a = await within(ahead.next(), 10_000, 'the answer');
    assert.equal(a?.kind === 'error' ? a.code : a?.kind, 'INVALID_ARGUMENT');
    const other = await rawStandby(net.transport('s2'), primary.address as string, 'other-timeline');
    other.send({ kind: 'startReplication', slotName: '', startLsn: primary.wal.oldestLsn, timeline: 7, checkFrom: null, checkCrc: 0 });
    const b = await within(other.next(), 10_000, 'the answer');
    assert.equal(b?.kind === 'error' ? b.code : b?.kind, 'TIMELINE_MISMATCH', 'a timeline not on its history');
    await eventually(() => primary.replicationStatus().length === 0, 10_000, 'both gone');
    await primary.commit(Buffer.from('still committing'));
    await within(primary.close(), 20_000, 'close');
  });

  it('a streaming reply before START_REPLICATION ends that standby with PROTOCOL_ERROR', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp());
    const disconnected = nextEvent(primary, 'standby:disconnected');
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'early-report');
    report(conn, 0, 0, 0);
    const event = await within(disconnected, 10_000, 'the disconnect');
    assert.equal(event.applicationName, 'early-report', 'the standby that sent the reply is the one disconnected');
    assert.ok(isWalshipError(event.error, 'PROTOCOL_ERROR'), `a protocol error expected, got ${String(event.error)}`);
    assert.equal(primary.replicationStatus().length, 0, 'no standby row is left behind');
    await within(primary.close(), 20_000, 'close');
  });
});

describe('Primary.replicationStatus', () => {
  it('shows each standby as pg_stat_replication does: states, positions, lags, reply time', async () => {
    const net = new MemoryNetwork();
    const app = new GatedSnapshotApp();
    const primary = await openServing(net, app);
    for (let i = 0; i < 20; i++) await primary.commit(payload(i, 1000));
    assert.deepEqual(primary.replicationStatus(), []);
    const states: string[] = [];
    primary.on('sender:state', ({ state, applicationName }) => {
      assert.equal(applicationName, 'reporter');
      states.push(state);
    });
    let caughtUp = 0;
    primary.on('standby:caught-up', () => caughtUp++);
    const connected = nextEvent(primary, 'standby:connected');
    const conn = await rawStandby(net.transport('s1', { ip: '10.1.2.3' }), primary.address as string, 'reporter');
    assert.deepEqual(await within(connected, 10_000, 'standby:connected'), { applicationName: 'reporter', clientAddress: '10.1.2.3' });

    let row = onlyRow(primary);
    assert.equal(row.applicationName, 'reporter');
    assert.equal(row.user, 'repl');
    assert.equal(row.clientAddress, '10.1.2.3');
    assert.equal(row.state, 'startup');
    assert.ok(row.backendStart instanceof Date);
    assert.deepEqual(
      [row.sentLsn, row.writeLsn, row.flushLsn, row.replayLsn, row.writeLagMs, row.flushLagMs, row.replayLagMs, row.replyTime],
      [null, null, null, null, null, null, null, null],
    );
    assert.equal(row.syncPriority, 0);
    assert.equal(row.syncState, 'async');

    conn.send({ kind: 'identifySystem' });
    const identity = await expectMessage(conn, 'identifySystemResult');
    assert.deepEqual(identity, { kind: 'identifySystemResult', systemId: primary.systemId, timeline: 1, flushLsn: primary.flushLsn, segmentSize: SEGMENT });
    await expectMessage(conn, 'readyForCommand');

    // A base backup shows as 'backup' while it runs.
    conn.send({ kind: 'baseBackup', label: 'seed', maxRate: 0 });
    await eventually(() => onlyRow(primary).state === 'backup', 10_000, "the 'backup' state");
    app.open();
    const begin = await expectMessage(conn, 'baseBackupBegin');
    assert.equal(begin.startLsn, primary.appliedLsn);
    let backupBytes = 0;
    for (;;) {
      const message = await within(conn.next(), 10_000, 'the backup');
      if (message?.kind === 'baseBackupChunk') backupBytes += message.data.length;
      else {
        assert.equal(message?.kind, 'baseBackupEnd');
        break;
      }
    }
    assert.ok(backupBytes > 0);
    await expectMessage(conn, 'readyForCommand');
    assert.equal(onlyRow(primary).state, 'startup');

    // Streaming from the start: catchup until everything flushed was sent, then streaming.
    const oldest = primary.wal.oldestLsn;
    conn.send({ kind: 'startReplication', slotName: '', startLsn: oldest, timeline: 1, checkFrom: null, checkCrc: 0 });
    await expectMessage(conn, 'replicationStarted');
    const end = await receiveUntil(conn, oldest, primary.flushLsn);
    await eventually(() => onlyRow(primary).state === 'streaming', 10_000, 'streaming');
    assert.deepEqual(states, ['backup', 'startup', 'catchup', 'streaming']);
    assert.equal(caughtUp, 1);
    row = onlyRow(primary);
    assert.equal(row.sentLsn, end);
    assert.equal(row.replyTime, null);

    // Written and flushed, not yet applied: write and flush lags are known, replay lag is not.
    report(conn, end, end, oldest);
    await eventually(() => onlyRow(primary).flushLsn === end, 10_000, 'the first report');
    row = onlyRow(primary);
    assert.deepEqual([row.writeLsn, row.flushLsn, row.replayLsn], [end, end, oldest]);
    assert.ok(row.replyTime instanceof Date);
    assert.ok(row.writeLagMs !== null && row.writeLagMs >= 0);
    assert.ok(row.flushLagMs !== null && row.flushLagMs >= 0);
    assert.equal(row.replayLagMs, null);

    report(conn, end, end, end);
    await eventually(() => onlyRow(primary).replayLsn === end, 10_000, 'the second report');
    row = onlyRow(primary);
    assert.ok(row.replayLagMs !== null && row.replayLagMs >= 0);
    assert.ok(row.writeLagMs !== null);

    // Caught up twice in a row: idle, so the lags are cleared rather than left stale.
    report(conn, end, end, end);
    await eventually(() => onlyRow(primary).replayLagMs === null, 10_000, 'lags to clear');
    row = onlyRow(primary);
    assert.deepEqual([row.writeLagMs, row.flushLagMs, row.replayLagMs], [null, null, null]);

    // New traffic is measured again, even though this report is again caught up.
    const { lsn } = await primary.commit(Buffer.from('more'));
    const end2 = await receiveUntil(conn, end, lsn);
    report(conn, end2, end2, end2);
    await eventually(() => onlyRow(primary).flushLsn === end2, 10_000, 'the report of new WAL');
    row = onlyRow(primary);
    assert.equal(row.sentLsn, end2);
    assert.ok(row.writeLagMs !== null && row.flushLagMs !== null && row.replayLagMs !== null, JSON.stringify(row));

    const disconnected = nextEvent(primary, 'standby:disconnected');
    conn.send({ kind: 'terminate' });
    const gone = await within(disconnected, 10_000, 'standby:disconnected');
    assert.equal(gone.error, null);
    assert.deepEqual(primary.replicationStatus(), []);
    await within(primary.close(), 20_000, 'close');
  });

  it('a WalReceiver standby reaches streaming with its write, flush and replay positions at the end', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp());
    for (let i = 0; i < 50; i++) await primary.commit(payload(i, 2000));
    const replica = await WalLog.open({ storage: new MemoryStorage(), role: 'replica', segmentSize: SEGMENT });
    const conn = await connectReplication({ transport: net.transport('s1'), address: primary.address as string, user: 'repl', applicationName: 'walreceiver' });
    const receiver = new WalReceiver(conn, replica, { statusIntervalMs: 50 });
    const running = receiver.run();
    for (let i = 50; i < 80; i++) await primary.commit(payload(i, 2000));
    await eventually(() => primary.replicationStatus()[0]?.replayLsn === primary.flushLsn, 20_000, 'the standby to report the end');
    const row = onlyRow(primary);
    assert.equal(row.state, 'streaming');
    assert.deepEqual([row.sentLsn, row.writeLsn, row.flushLsn, row.replayLsn], [primary.flushLsn, primary.flushLsn, primary.flushLsn, primary.flushLsn]);
    // Idle and caught up: the standby's periodic reports clear the lags.
    await eventually(() => onlyRow(primary).writeLagMs === null, 20_000, 'lags to clear when idle');
    await receiver.stop();
    await running;
    await replica.close();
    await within(primary.close(), 20_000, 'close');
  });
});

/** An application whose snapshot is `data` (a buffer, or a stream made by the function). */
function snapshotApp(data: () => SnapshotData): Application {
  return {
    apply: () => undefined,
    snapshot: async () => data(),
  };
}

/** Reads base backup messages until `kind` arrives; fails on anything else but chunks. */
async function backupUntil(conn: Awaited<ReturnType<typeof rawStandby>>, kind: 'baseBackupChunk' | 'baseBackupEnd' | 'error') {
  for (;;) {
    const message = await within(conn.next(), 20_000, `a ${kind} message`);
    if (message === null) throw new Error(`the connection ended while waiting for ${kind}`);
    if (message.kind === kind) return message;
    if (message.kind !== 'baseBackupChunk' && message.kind !== 'baseBackupBegin') throw new Error(`unexpected ${message.kind} while waiting for ${kind}`);
  }
}

describe('Primary: base backups over the replication protocol', () => {
  it("refuses a maxRate outside PostgreSQL's range (32 kB/s .. 1 GB/s; 0 is unlimited) with INVALID_ARGUMENT", async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp());
    for (const maxRate of [1, 32 * 1024 - 1, 1024 * 1024 * 1024 + 1, 0xffffffff]) {
      const disconnected = nextEvent(primary, 'standby:disconnected');
      const conn = await rawStandby(net.transport('s1'), primary.address as string, 'throttled');
      conn.send({ kind: 'baseBackup', label: 'x', maxRate });
      const answer = await within(conn.next(), 10_000, 'the answer');
      assert.equal(answer?.kind === 'error' ? answer.code : answer?.kind, 'INVALID_ARGUMENT', `maxRate ${maxRate}`);
      assert.match(answer?.kind === 'error' ? answer.message : '', /maxRate/);
      assert.ok(isWalshipError((await within(disconnected, 10_000, 'standby:disconnected')).error, 'INVALID_ARGUMENT'));
    }
    // The bounds themselves are fine.
    for (const maxRate of [32 * 1024, 1024 * 1024 * 1024]) {
      const conn = await rawStandby(net.transport('s1'), primary.address as string, 'throttled');
      conn.send({ kind: 'baseBackup', label: 'x', maxRate });
      await backupUntil(conn, 'baseBackupEnd');
      await expectMessage(conn, 'readyForCommand');
      conn.send({ kind: 'terminate' });
    }
    await within(primary.close(), 20_000, 'close');
  });

  it('a client that requests a base backup and reads none of it is dropped after walSenderTimeoutMs, releasing what the backup held', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, snapshotApp(() => Buffer.alloc(8 * 1024 * 1024, 7)), { walSenderTimeoutMs: 300 });
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'sleeper');
    const disconnected = nextEvent(primary, 'standby:disconnected');
    conn.send({ kind: 'baseBackup', label: 'x', maxRate: 0 });
    // It never reads again: the primary's writes back up, and it waits for them no longer than the timeout.
    const { error } = await within(disconnected, 20_000, 'standby:disconnected');
    assert.ok(isWalshipError(error, 'TIMEOUT'), String(error));
    assert.deepEqual(primary.replicationStatus(), []);
    conn.destroy();
    await within(primary.close(), 20_000, 'close');
  });

  it('close() does not wait for a throttled base backup to finish', async () => {
    const net = new MemoryNetwork();
    // 8 MiB at 32 kB/s would take over four minutes.
    const primary = await openServing(net, snapshotApp(() => Buffer.alloc(8 * 1024 * 1024, 7)));
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'throttled');
    conn.send({ kind: 'baseBackup', label: 'x', maxRate: 32 * 1024 });
    await backupUntil(conn, 'baseBackupChunk');
    const disconnected = nextEvent(primary, 'standby:disconnected');
    await within(primary.close(), 20_000, 'close during a throttled base backup');
    await within(disconnected, 10_000, 'standby:disconnected');
    assert.deepEqual(primary.replicationStatus(), []);
  });

  it("close() does not wait for an application's snapshot stream that never yields", async () => {
    const net = new MemoryNetwork();
    let finished = false;
    const primary = await openServing(
      net,
      snapshotApp(() =>
        (async function* () {
          try {
            yield Buffer.from('the first piece');
            await new Promise(() => undefined);
          } finally {
            finished = true;
          }
        })(),
      ),
    );
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'stuck');
    conn.send({ kind: 'baseBackup', label: 'x', maxRate: 0 });
    await backupUntil(conn, 'baseBackupChunk');
    await eventually(() => primary.replicationStatus()[0]?.state === 'backup', 10_000, "the 'backup' state");
    await within(primary.close(), 20_000, 'close during a stuck snapshot stream');
    assert.deepEqual(primary.replicationStatus(), []);
    // A generator stuck in an await cannot run its finally; nothing more is asked of it.
    assert.equal(finished, false);
  });

  it('a snapshot stream that throws midway reaches the standby as BASE_BACKUP_FAILED', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(
      net,
      snapshotApp(() =>
        (async function* () {
          yield Buffer.alloc(2 * 1024 * 1024, 1);
          throw new Error('the snapshot file vanished');
        })(),
      ),
    );
    const disconnected = nextEvent(primary, 'standby:disconnected');
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'unlucky');
    conn.send({ kind: 'baseBackup', label: 'x', maxRate: 0 });
    const failure = await backupUntil(conn, 'error');
    assert.equal(failure.kind === 'error' ? failure.code : null, 'BASE_BACKUP_FAILED');
    assert.match(failure.kind === 'error' ? failure.message : '', /the snapshot file vanished/);
    const event = await within(disconnected, 10_000, 'standby:disconnected');
    assert.ok(isWalshipError(event.error, 'BASE_BACKUP_FAILED'), String(event.error));
    // So does a piece that is not bytes.
    const odd = new MemoryNetwork();
    const other = await openServing(odd, snapshotApp(() => (async function* () { yield 'text' as unknown as Uint8Array; })()));
    const conn2 = await rawStandby(odd.transport('s1'), other.address as string, 'odd');
    conn2.send({ kind: 'baseBackup', label: 'x', maxRate: 0 });
    const failure2 = await backupUntil(conn2, 'error');
    assert.equal(failure2.kind === 'error' ? failure2.code : null, 'BASE_BACKUP_FAILED');
    await within(primary.close(), 20_000, 'close');
    await within(other.close(), 20_000, 'close');
  });
});

describe('Primary: WAL retention at checkpoints', () => {
  /** Commits `count` batches of 8000 bytes (about eight per 64 KiB segment). */
  async function fill(primary: Primary, from: number, count: number): Promise<void> {
    for (let i = from; i < from + count; i++) await primary.commit(payload(i, 8000));
  }
  const segmentStart = (lsn: number): number => Math.floor(lsn / SEGMENT) * SEGMENT;

  it('keeps the WAL a streaming standby asked for until it reports a flush, then from what it flushed', async () => {
    const net = new MemoryNetwork();
    const primary = await openServing(net, new RecordingApp());
    await fill(primary, 0, 40);
    const start = primary.wal.oldestLsn;
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'quiet');
    conn.send({ kind: 'startReplication', slotName: '', startLsn: start, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
    await expectMessage(conn, 'replicationStarted');
    // All of it is sent, but the standby has not said it has anything.
    await receiveUntil(conn, start, primary.flushLsn);
    assert.equal(onlyRow(primary).sentLsn, primary.flushLsn);
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, start, 'the WAL from where the standby asked to start is kept');

    const flushed = 3 * SEGMENT + 1000;
    report(conn, flushed, flushed, flushed);
    await eventually(() => onlyRow(primary).flushLsn === flushed, 10_000, 'the report');
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, 3 * SEGMENT, 'the WAL before what the standby flushed goes');
    conn.send({ kind: 'terminate' });
    await eventually(() => primary.replicationStatus().length === 0, 10_000, 'the standby to leave');
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, segmentStart(primary.appliedLsn), 'with no standby, the checkpoint decides');
    await within(primary.close(), 20_000, 'close');
  });

  it('keeps the WAL from the position of a base backup being sent; an idle connection keeps none', async () => {
    const net = new MemoryNetwork();
    const app = new GatedSnapshotApp();
    const primary = await openServing(net, app);
    await fill(primary, 0, 20);
    const idle = await rawStandby(net.transport('s0'), primary.address as string, 'idle');
    const conn = await rawStandby(net.transport('s1'), primary.address as string, 'new-standby');
    conn.send({ kind: 'baseBackup', label: 'seed', maxRate: 0 });
    await eventually(() => app.snapshots === 1, 10_000, 'the snapshot');
    const backupLsn = primary.appliedLsn;
    assert.ok(segmentStart(backupLsn) > primary.wal.oldestLsn, 'the backup starts after the oldest segment');
    await fill(primary, 20, 30);
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, segmentStart(backupLsn));

    // The standby restores it and streams from its position; its reports take over.
    app.open();
    const begin = await expectMessage(conn, 'baseBackupBegin');
    assert.equal(begin.startLsn, backupLsn);
    await backupUntil(conn, 'baseBackupEnd');
    await expectMessage(conn, 'readyForCommand');
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, segmentStart(backupLsn), 'kept until the standby streams');
    conn.send({ kind: 'startReplication', slotName: '', startLsn: backupLsn, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
    await expectMessage(conn, 'replicationStarted');
    const end = await receiveUntil(conn, backupLsn, primary.flushLsn);
    report(conn, end, end, end);
    await eventually(() => primary.replicationStatus().find((r) => r.applicationName === 'new-standby')?.flushLsn === end, 10_000, 'the report');
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, segmentStart(primary.appliedLsn));
    idle.send({ kind: 'terminate' });
    conn.send({ kind: 'terminate' });
    await within(primary.close(), 20_000, 'close');
  });

  it('keeps the WAL from the position of a baseBackup() being written', async () => {
    const app = new GatedSnapshotApp();
    const primary = await Primary.open({ storage: new MemoryStorage(), application: app, segmentSize: SEGMENT });
    await fill(primary, 0, 20);
    const backupLsn = primary.appliedLsn;
    const target = new MemoryStorage();
    const writing = primary.baseBackup({ storage: target });
    await eventually(() => app.snapshots === 1, 10_000, 'the snapshot');
    await fill(primary, 20, 30);
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, segmentStart(backupLsn));
    app.open();
    const written = await within(writing, 20_000, 'the base backup');
    assert.equal(written.lsn, backupLsn);
    await primary.checkpoint(primary.appliedLsn);
    assert.equal(primary.wal.oldestLsn, segmentStart(primary.appliedLsn));
    await within(primary.close(), 20_000, 'close');
  });
});
