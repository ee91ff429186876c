import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WalLog } from '../../src/index.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import type { ServerMessage } from '../../src/protocol/messages.js';
import { APPLY_ON_REQUEST_OPTION, APPLY_REPORT_INTERVAL_MS, ApplyReports, reportsApplyOnRequest } from '../../src/replication/apply-reports.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import { scriptedSender, statusUpdates, until } from '../helpers/scripted-sender.js';
import { walServer } from '../helpers/wal-server.js';
import { openLog, payload, within } from '../helpers/wal.js';

const HANG_MS = 30_000;

describe('ApplyReports: when replay alone is worth a report', () => {
  it('from an upstream that never asks: at once when replay catches up (once per readable end), and every few ms while it runs behind', () => {
    const reports = new ApplyReports();
    reports.sent(0, 0);
    assert.equal(reports.replayed(100, 300, 1), 'none', 'behind, and a report went out just now');
    assert.equal(reports.replayed(200, 300, 1 + APPLY_REPORT_INTERVAL_MS), 'now', 'behind for the interval');
    reports.sent(200, 1 + APPLY_REPORT_INTERVAL_MS);
    assert.equal(reports.replayed(300, 300, 2 + APPLY_REPORT_INTERVAL_MS), 'now', 'caught up');
    reports.sent(300, 2 + APPLY_REPORT_INTERVAL_MS);
    assert.equal(reports.replayed(300, 300, 3 + APPLY_REPORT_INTERVAL_MS), 'none', 'caught up with the same end again');
    assert.equal(reports.onRequest, false);
  });

  it('from an upstream that asks: an asked position at once, caught up within the interval, and the mode ends with the stream', () => {
    const reports = new ApplyReports();
    reports.sent(0, 0);
    assert.equal(reports.request(0, 0), false, 'the first request says requests will come, and asks for nothing');
    assert.equal(reports.onRequest, true);
    assert.equal(reports.replayed(300, 300, 1), 'soon', 'caught up: the next report carries it, or one within the interval');
    assert.equal(reports.replayed(300, 300, 2), 'none', 'once per readable end');
    assert.equal(reports.request(500, 300), false, 'asked for a position replay has not reached');
    assert.equal(reports.replayed(400, 600, 3), 'none');
    assert.equal(reports.replayed(500, 600, 4), 'now', 'the asked position is reached');
    reports.sent(500, 4);
    assert.equal(reports.replayed(600, 600, 5), 'soon', 'asked for no more than 500');
    assert.equal(reports.request(550, 600), true, 'asked for a position replay is past: at once');
    reports.sent(600, 6);
    assert.equal(reports.request(550, 600), false, 'an asked position already reported');
    reports.reset();
    assert.equal(reports.onRequest, false, 'a new stream: the upstream says again whether it asks');
    assert.equal(reports.replayed(700, 700, 7), 'now');
  });

  it('the startup option', () => {
    assert.equal(reportsApplyOnRequest([APPLY_ON_REQUEST_OPTION]), true);
    assert.equal(reportsApplyOnRequest([{ key: APPLY_ON_REQUEST_OPTION.key, value: 'always' }]), false);
    assert.equal(reportsApplyOnRequest([]), false);
  });
});

/**
 * A receiver that has streamed two durable records from a scripted sender and reported them
 * flushed (nothing applied yet), with its sends counted as they are made (synchronously);
 * `asks`: the sender says it asks for apply reports.
 */
async function streamingReceiver(asks: boolean) {
  const primary = await openLog(new MemoryStorage());
  for (let i = 0; i < 2; i++) primary.append(payload(i, 300));
  await primary.flush();
  const end = primary.flushedLsn;
  let script!: MessageStream<'server'>;
  const sender = await scriptedSender(async (conn, startLsn) => {
    script = conn;
    if (asks) conn.send({ kind: 'applyReportRequest', applyLsn: 0 });
    for await (const { startLsn: at, data } of primary.readBytes(startLsn)) conn.send({ kind: 'walData', startLsn: at, walEnd: end, sendTime: 0, data });
  });
  const replica = await openLog(new MemoryStorage(), { role: 'replica' });
  const conn = await sender.connection();
  let sent = 0;
  const send = conn.send.bind(conn);
  conn.send = (message) => {
    if (message.kind === 'standbyStatusUpdate') sent++;
    return send(message);
  };
  const state = { applied: replica.oldestLsn };
  const receiver = new WalReceiver(conn, replica, { statusIntervalMs: 3_600_000, receiverTimeoutMs: 0, appliedLsn: () => state.applied });
  const running = receiver.run();
  await within(until(() => statusUpdates(sender.heard).some((u) => u.flushLsn === end)), HANG_MS, 'the WAL, flushed and reported');
  return {
    end,
    receiver,
    sender,
    state,
    /** Status updates sent so far. */
    reports: () => sent,
    /** Sends `messages`, then a keepalive asking for a reply; resolves once the reply was sent (so the receiver has handled them all). */
    async tell(...messages: ServerMessage[]) {
      for (const message of messages) script.send(message);
      const replies = statusUpdates(sender.heard).length;
      const before = sent;
      script.send({ kind: 'keepalive', walEnd: end, sendTime: 0, replyRequested: true });
      await within(until(() => statusUpdates(sender.heard).length > replies && sent > before), HANG_MS, 'the reply');
    },
    async close() {
      await receiver.stop();
      await running.catch(() => undefined);
      await sender.close();
      await replica.close();
      await primary.close();
    },
  };
}

describe('WalReceiver: apply reports', () => {
  it('an upstream that does not ask: replay caught up is reported at once', async () => {
    const s = await streamingReceiver(false);
    const before = s.reports();
    s.state.applied = s.end;
    s.receiver.replayed(s.end);
    assert.equal(s.reports(), before + 1, 'a report, sent as replay reported its position');
    await within(until(() => statusUpdates(s.sender.heard).some((u) => u.applyLsn === s.end)), HANG_MS, 'the apply report');
    await s.close();
  });

  it('an upstream that asks: replay caught up waits for another report to carry it, or goes within the interval', async () => {
    const s = await streamingReceiver(true);
    await s.tell();
    const before = s.reports();
    s.state.applied = s.end;
    const replayedAt = performance.now();
    s.receiver.replayed(s.end);
    assert.equal(s.reports(), before, 'no report of its own yet');
    await within(until(() => statusUpdates(s.sender.heard).some((u) => u.applyLsn === s.end)), HANG_MS, 'the apply report');
    assert.ok(performance.now() - replayedAt >= APPLY_REPORT_INTERVAL_MS - 1, 'it waited for the interval');
    assert.equal(s.reports(), before + 1);
    await s.close();
  });

  it('an upstream that asks: an asked position is reported the moment replay reaches it, and only once', async () => {
    const s = await streamingReceiver(true);
    await s.tell({ kind: 'applyReportRequest', applyLsn: s.end });
    const before = s.reports();
    s.state.applied = s.end;
    s.receiver.replayed(s.end);
    assert.equal(s.reports(), before + 1, 'reported as replay reached the asked position');
    await s.tell({ kind: 'applyReportRequest', applyLsn: s.end });
    assert.equal(s.reports(), before + 2, 'asked again for a position already reported: only the reply');
    await s.close();
  });

  it('an upstream that asks for a position replay is already past: reported as the request arrives', async () => {
    const s = await streamingReceiver(true);
    await s.tell();
    // Applied, but not reported (the application got there before replay said so).
    s.state.applied = s.end;
    const before = s.reports();
    await s.tell({ kind: 'applyReportRequest', applyLsn: s.end });
    assert.equal(s.reports(), before + 2, 'the apply report, then the reply');
    const updates = statusUpdates(s.sender.heard);
    assert.equal(updates.at(-2)?.applyLsn, s.end);
    await s.close();
  });
});

describe('WalSender: apply report requests', () => {
  it('asks a standby that reports on request for the positions commits wait for: once at the start, then before the next message whenever it moved', async () => {
    const net = new MemoryNetwork();
    const primary: WalLog = await openLog(new MemoryStorage());
    primary.append(payload(0, 100));
    await primary.flush();
    let wanted = 0;
    const { server, address } = await walServer(net, primary, { applyWanted: () => wanted });
    const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
    conn.send({ kind: 'startReplication', slotName: '', startLsn: primary.oldestLsn, timeline: 1, checkFrom: null, checkCrc: 0 });
    const heard: ServerMessage[] = [];
    const reading = (async () => {
      for (;;) {
        const message = await conn.next().catch(() => null);
        if (message === null) return;
        heard.push(message);
      }
    })();
    await within(until(() => heard.some((m) => m.kind === 'walData')), HANG_MS, 'the first WAL');
    assert.deepEqual(heard.slice(0, 2).map((m) => m.kind), ['replicationStarted', 'applyReportRequest']);
    assert.deepEqual(heard[1], { kind: 'applyReportRequest', applyLsn: 0 });
    // A commit that will wait for the standby to apply it: wanted before its WAL is written.
    const first = primary.append(payload(1, 100));
    wanted = first.endLsn;
    await primary.flush();
    await within(until(() => heard.some((m) => m.kind === 'walData' && m.startLsn + m.data.length >= first.endLsn)), HANG_MS, 'its WAL');
    // One more commit that waits for nothing more.
    const second = primary.append(payload(2, 100));
    await primary.flush();
    await within(until(() => heard.some((m) => m.kind === 'walData' && m.startLsn + m.data.length >= second.endLsn)), HANG_MS, 'the next WAL');
    const requests = heard.filter((m) => m.kind === 'applyReportRequest');
    assert.deepEqual(requests, [{ kind: 'applyReportRequest', applyLsn: 0 }, { kind: 'applyReportRequest', applyLsn: first.endLsn }], 'asked once per position');
    const asked = heard.findIndex((m) => m.kind === 'applyReportRequest' && m.applyLsn === first.endLsn);
    const data = heard.findIndex((m) => m.kind === 'walData' && m.startLsn + m.data.length >= first.endLsn);
    assert.ok(asked < data, 'the request comes before the WAL it asks about');
    conn.destroy();
    await reading;
    await server.close();
    await primary.close();
  });

  it('never asks a standby that did not say it reports on request', async () => {
    const net = new MemoryNetwork();
    const primary = await openLog(new MemoryStorage());
    primary.append(payload(0, 100));
    await primary.flush();
    const { server, address } = await walServer(net, primary, { applyWanted: null });
    const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1' });
    conn.send({ kind: 'startReplication', slotName: '', startLsn: primary.oldestLsn, timeline: 1, checkFrom: null, checkCrc: 0 });
    const heard: ServerMessage[] = [];
    for (;;) {
      const message = await within(conn.next(), HANG_MS, 'a message');
      if (message === null) break;
      heard.push(message);
      if (message.kind === 'walData') break;
    }
    assert.deepEqual(heard.map((m) => m.kind), ['replicationStarted', 'walData']);
    conn.destroy();
    await server.close();
    await primary.close();
  });
});
