import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog, type Lsn, type Primary } from '../../src/index.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import type { ServerMessage } from '../../src/protocol/messages.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { FLUSH_ON_REQUEST_OPTION, FlushPacing, flushOnRequestOptions, flushesOnRequest, sendPaceOf } from '../../src/replication/flush-requests.js';
import type { WalSender, WalSenderOptions } from '../../src/replication/wal-sender.js';
import { WalReceiver } from '../../src/replication/wal-receiver.js';
import { MemoryStorage, createCluster, kvEntry, type Cluster, type SimulatedCluster } from '../../src/testing/index.js';
import { MemoryNetwork } from '../../src/transport/memory-transport.js';
import { RecordingApp } from '../helpers/apps.js';
import { report } from '../helpers/primary-helpers.js';
import { HANG_MS, caughtUp, sameSequence } from '../helpers/standby-harness.js';
import { walServer } from '../helpers/wal-server.js';
import { payload, recordDatasyncs, turnsUntil, within } from '../helpers/wal.js';

// Flushes on request (issue #17): a standby that says so flushes at once only the WAL a commit
// waits for it to write or flush (its upstream asks with a flushRequest), and paces the rest.

const SEGMENT = /^[0-9A-F]{24}$/;

function until(condition: () => boolean, what: string): Promise<void> {
  return turnsUntil(condition, HANG_MS, what);
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

describe('FlushPacing', () => {
  it('flushes at once until the upstream asks; then at once what it asked for, the rest once the last flush is delayMs old', () => {
    const pacing = new FlushPacing(10);
    assert.equal(pacing.waitMs(0, 100), 0, 'an upstream that does not ask: every flush at once');
    pacing.flushing(100);
    assert.equal(pacing.waitMs(0, 101), 0, 'still not asked');
    pacing.request(0, 0);
    assert.equal(pacing.waitMs(0, 103), 7, 'the first request asks for nothing yet: paced, 10 ms after the last flush, which began at 100');
    assert.equal(pacing.waitMs(0, 110), 0, 'the last flush is 10 ms old');
    assert.equal(pacing.waitMs(0, 250), 0);
    pacing.request(600, 500);
    assert.equal(pacing.waitMs(400, 104), 0, 'asked to flush more than is durable: at once');
    assert.equal(pacing.waitMs(500, 104), 6, 'what was asked to be flushed is durable: paced again');
    assert.equal(pacing.writeRequested, 600);
    pacing.request(300, 700);
    assert.equal(pacing.writeRequested, 700, 'a flush asked for writes too');
    pacing.request(100, 200);
    assert.equal(pacing.writeRequested, 700, 'lower requests ask for nothing more');
    assert.equal(pacing.waitMs(700, 104), 6);
    pacing.reset();
    assert.equal(pacing.waitMs(500, 104), 0, 'a new stream: at once until its upstream asks');
    assert.equal(pacing.writeRequested, 0);
  });

  it('never paces with a delay of 0', () => {
    const pacing = new FlushPacing(0);
    pacing.request(0, 0);
    pacing.flushing(100);
    assert.equal(pacing.waitMs(0, 100), 0);
  });

  it('reads the startup option', () => {
    assert.equal(flushesOnRequest([FLUSH_ON_REQUEST_OPTION]), true);
    assert.equal(flushesOnRequest([{ key: 'walship.flush', value: 'always' }]), false);
    assert.equal(flushesOnRequest([]), false);
    assert.equal(sendPaceOf(flushOnRequestOptions(5)), 5, 'the pace is the standby\'s flushDelayMs');
    assert.equal(sendPaceOf([FLUSH_ON_REQUEST_OPTION]), 0, 'no delay said: no pace');
    assert.equal(sendPaceOf(flushOnRequestOptions(5).slice(1)), 0, 'a delay without flushes on request: no pace');
    for (const value of ['0', '1001', '5.5', '-5', 'x', '', '00005000']) assert.equal(sendPaceOf([FLUSH_ON_REQUEST_OPTION, { key: 'walship.flush_delay_ms', value }]), 0, `${JSON.stringify(value)} is no pace`);
  });
});

/** A hand-driven standby that sends the flush-on-request option when `asks`, streaming from `startLsn`. */
async function rawStandby(cluster: Cluster, primary: Primary, name: string, asks: boolean, startLsn: Lsn): Promise<MessageStream<'client'>> {
  const conn = await connectReplication({ transport: cluster.transport(name), address: cluster.address(primary), user: 'repl', applicationName: name, ...(asks ? { options: [FLUSH_ON_REQUEST_OPTION] } : {}) });
  conn.send({ kind: 'startReplication', slotName: '', startLsn, timeline: primary.timeline, checkFrom: null, checkCrc: 0 });
  return conn;
}

/** The messages `conn` receives until one carries WAL up to `end` (walData) or says it is durable (keepalive). */
async function messagesUntil(conn: MessageStream<'client'>, end: Lsn): Promise<ServerMessage[]> {
  const seen: ServerMessage[] = [];
  return within(
    (async () => {
      for (;;) {
        const message = await conn.next();
        if (message === null) throw new Error('the connection ended');
        seen.push(message);
        if (message.kind === 'walData' && message.startLsn + message.data.length >= end) return seen;
      }
    })(),
    HANG_MS,
    `WAL up to ${end}`,
  );
}

function requests(messages: readonly ServerMessage[]): [write: Lsn, flush: Lsn][] {
  return messages.flatMap((m): [Lsn, Lsn][] => (m.kind === 'flushRequest' ? [[m.writeLsn, m.flushLsn]] : []));
}

describe('flush requests on the wire', () => {
  it('asks the standbys whose confirmations commits need (sync; under ANY n, n quorum members) for the WAL commits wait for, with that WAL; never a potential or asynchronous one, nor one without the option', async (t) => {
    const cluster = createCluster(t);
    const primary = await cluster.primary('p', {
      application: new RecordingApp(),
      synchronousStandbyNames: 'FIRST 1 (s1, s2)',
      auth: { rules: [{ user: 'repl', address: 'all', method: 'trust' }] },
    });
    await primary.commit(payload(0, 100), { synchronousCommit: 'local' });
    const start = primary.flushLsn;
    const s1 = await rawStandby(cluster, primary, 's1', true, start);
    const s2 = await rawStandby(cluster, primary, 's2', true, start);
    const plain = await rawStandby(cluster, primary, 's1', false, start);
    for (const conn of [s1, s2]) {
      const [started, first] = [await conn.next(), await conn.next()];
      assert.equal(started?.kind, 'replicationStarted');
      assert.deepEqual(first, { kind: 'flushRequest', writeLsn: 0, flushLsn: 0 }, 'the first request says that requests will come');
    }
    assert.equal((await plain.next())?.kind, 'replicationStarted');
    // Each reports its start: s1 is sync (the lower slot of two named s1), the others potential.
    for (const conn of [s1, s2, plain]) report(conn, start, start, start);
    const states = (): string => JSON.stringify(primary.replicationStatus().map((r) => r.syncState));
    await until(() => states() === JSON.stringify(['sync', 'potential', 'potential']), `s1 sync, the others potential (${states()})`);

    // A local commit: nobody waits for a standby, nobody is asked.
    const local = await primary.commit(payload(1, 100), { synchronousCommit: 'local' });
    for (const conn of [s1, s2, plain]) assert.deepEqual(requests(await messagesUntil(conn, local.lsn)), []);

    // A commit at `on` waits for s1 alone: s1 is asked for it, ahead of its WAL.
    const committing = primary.commit(payload(2, 100));
    const end = primary.currentLsn;
    const toS1 = await messagesUntil(s1, end);
    assert.deepEqual(requests(toS1), [[end, end]], 'a flush asked for is a write asked for too');
    assert.ok(toS1.findIndex((m) => m.kind === 'flushRequest') < toS1.findIndex((m) => m.kind === 'walData'), 'the request goes ahead of the WAL');
    assert.deepEqual(requests(await messagesUntil(s2, end)), [], 's2 is potential: no commit waits for it now');
    assert.deepEqual(requests(await messagesUntil(plain, end)), [], 'nor for the other s1');
    report(s1, end, end, end);
    await within(committing, HANG_MS, 'the commit at on');

    // remote_write waits for s1's write only.
    const writing = primary.commit(payload(3, 100), { synchronousCommit: 'remote_write' });
    const written = primary.currentLsn;
    assert.deepEqual(requests(await messagesUntil(s1, written)), [[written, end]], 'asked to write it, not to flush it');
    report(s1, written, end, end);
    await within(writing, HANG_MS, 'the commit at remote_write');

    // Under ANY 1 every listed standby is a quorum member, and a commit needs one of them: only
    // the one of the lowest slot (s1) is asked; the others' confirmations count all the same.
    primary.reload({ synchronousStandbyNames: 'ANY 1 (s1, s2)' });
    await until(() => states() === JSON.stringify(['quorum', 'quorum', 'quorum']), `all three quorum (${states()})`);
    const next = primary.commit(payload(4, 100));
    const end2 = primary.currentLsn;
    assert.deepEqual(requests(await messagesUntil(s1, end2)), [[end2, end2]]);
    assert.deepEqual(requests(await messagesUntil(s2, end2)), [], 's2 counts for the quorum, but is not asked');
    assert.deepEqual(requests(await messagesUntil(plain, end2)), [], 'no request to a standby without the option');
    report(s2, end2, end2, end2);
    await within(next, HANG_MS, 'the commit under ANY 1, released by s2');

    // s1 leaves while a commit waits: s2 is asked for it at once, with no new WAL to carry the request.
    const third = primary.commit(payload(5, 100));
    const end3 = primary.currentLsn;
    assert.deepEqual(requests(await messagesUntil(s2, end3)), [], 'not asked while s1 is');
    s1.destroy();
    assert.deepEqual(await within(s2.next(), HANG_MS, 'the request to s2'), { kind: 'flushRequest', writeLsn: end3, flushLsn: end3 });
    report(s2, end3, end3, end3);
    await within(third, HANG_MS, 'the commit under ANY 1, once s1 left');
    for (const conn of [s1, s2, plain]) conn.destroy();
    await primary.close();
  });
});

/**
 * A new primary log whose sender (options `sender`) streams to a hand-driven standby `s2` that
 * flushes on request; resolves once streaming started (its first request read), with a
 * `close` that ends it all.
 */
async function pacedSender(sender: WalSenderOptions, onSender?: (s: WalSender) => void): Promise<{ log: WalLog; conn: MessageStream<'client'>; close(): Promise<void> }> {
  const net = new MemoryNetwork();
  const log = await WalLog.open({ storage: new MemoryStorage(), segmentSize: 1024 * 1024 });
  const { server, address } = await walServer(net, log, { wanted: () => 0, ...sender }, onSender);
  const conn = await connectReplication({ transport: net.transport('s2'), address, user: 'repl', applicationName: 's2', options: flushOnRequestOptions(1000) });
  conn.send({ kind: 'startReplication', slotName: '', startLsn: log.flushedLsn, timeline: log.timeline, checkFrom: null, checkCrc: 0 });
  assert.equal((await conn.next())?.kind, 'replicationStarted');
  assert.equal((await conn.next())?.kind, 'flushRequest');
  return {
    log,
    conn,
    async close() {
      conn.destroy();
      await server.close();
      await log.close();
    },
  };
}

describe('WalSender pacing a standby no commit needs', () => {
  it('sends the first WAL after a quiet spell at once, holds the rest for the pace, and sends what it held at once when the standby becomes needed', async () => {
    let needed = false;
    let sender: WalSender | null = null;
    // A pace no test run reaches: what it holds comes only when the standby becomes needed.
    const { log, conn, close } = await pacedSender({ sendPaceMs: 3_600_000, needed: () => needed }, (s) => (sender = s));
    const commit = async (i: number): Promise<Lsn> => {
      const { endLsn } = log.append(payload(i, 100));
      await log.waitForFlush(endLsn);
      return endLsn;
    };
    const first = await commit(0);
    const message = await within(conn.next(), HANG_MS, 'the first WAL');
    assert.ok(message?.kind === 'walData' && message.startLsn + message.data.length === first, 'the first WAL, at once');
    await commit(1);
    const third = await commit(2);
    let arrived: ServerMessage | null = null;
    const next = conn.next().then((m) => (arrived = m));
    await turns(50);
    assert.equal(arrived, null, 'the next WAL waits for the pace');
    needed = true;
    (sender as WalSender | null)?.askNow();
    await within(next, HANG_MS, 'the WAL held');
    const held = arrived as ServerMessage | null;
    assert.ok(held?.kind === 'walData' && held.startLsn === first && held.startLsn + held.data.length === third, 'what the pace held, in one message, once the standby is needed');
    await close();
  });

  it('does not pause a standby that became needed while a send to it waited for the socket to drain', async () => {
    let needed = true;
    let sender: WalSender | null = null;
    const { log, conn, close } = await pacedSender({ sendPaceMs: 3_600_000, needed: () => needed }, (s) => (sender = s));
    const commit = async (i: number, size: number): Promise<Lsn> => {
      const { endLsn } = log.append(payload(i, size));
      await log.waitForFlush(endLsn);
      return endLsn;
    };
    // The standby stops reading: what it is sent while needed (never paced) fills its buffers,
    conn.setReadAhead(1);
    await commit(0, 100);
    await commit(1, 128 * 1024);
    await turns(20);
    // so this paced send waits for the socket to drain, with its pause still to come.
    needed = false;
    const end = await commit(2, 256 * 1024);
    await turns(20);
    assert.equal((sender as WalSender | null)?.sentLsn, end, 'the last WAL was sent while the standby was paced');
    // askNow finds no pause to end.
    needed = true;
    (sender as WalSender | null)?.askNow();
    conn.setReadAhead(4 * 1024 * 1024);
    await messagesUntil(conn, end);
    // The send drained: the sender must not now pause for the pace of a standby commits need.
    const next = await commit(3, 100);
    const last = (await messagesUntil(conn, next)).at(-1);
    assert.ok(last?.kind === 'walData' && last.startLsn + last.data.length === next, 'the next WAL, not held for the pace');
    await close();
  });

  it('sends a paced standby that is more than a message behind the rest back to back, not a message per pace', async () => {
    const PACE_MS = 300;
    // Messages of at most 256 bytes: the ten commits below make ten or more of them.
    const { log, conn, close } = await pacedSender({ sendPaceMs: PACE_MS, needed: () => false, maxMessageBytes: 256 });
    const first = log.append(payload(0, 200)).endLsn;
    await log.waitForFlush(first);
    await within(conn.next(), HANG_MS, 'the first WAL');
    const started = performance.now();
    let end = 0;
    for (let i = 1; i <= 10; i++) end = log.append(payload(i, 200)).endLsn;
    await log.waitForFlush(end);
    let messages = 0;
    for (let at = first; at < end; ) {
      const message = await within(conn.next(), HANG_MS, `WAL up to ${end}`);
      if (message?.kind === 'walData') [at, messages] = [message.startLsn + message.data.length, messages + 1];
    }
    const elapsed = performance.now() - started;
    assert.ok(messages >= 10, `${messages} messages`);
    // One-sided: a message per pace would take ten paces (3 s); a slow run only adds to one.
    assert.ok(elapsed < 4 * PACE_MS, `the rest took ${elapsed.toFixed(0)} ms, one pace is ${PACE_MS}`);
    await close();
  });
});

/** A primary log streaming to a replica log through a `WalReceiver` that flushes on request. */
interface PacedStream {
  readonly primary: WalLog;
  readonly replica: WalLog;
  /** The replica's storage, and each datasync of its segments (see `recordDatasyncs`). */
  readonly storage: MemoryStorage;
  readonly syncs: boolean[];
  readonly receiver: WalReceiver;
  /** The receiver's run: null when it ended cleanly, else its error. */
  readonly running: Promise<unknown>;
  /** Appends `data` on the primary and waits until it is durable there (and so sent). */
  commit(data: Uint8Array): Promise<Lsn>;
  /** Stops the receiver and closes everything. */
  close(): Promise<void>;
}

/**
 * Streams a new primary log to a new replica log: the sender asks for what `wanted` says
 * (`null`: a sender that never asks), the receiver paces to `flushDelayMs`.
 */
async function pacedStream(wanted: ((what: 'write' | 'flush') => Lsn) | null, flushDelayMs: number): Promise<PacedStream> {
  const net = new MemoryNetwork();
  const primary = await WalLog.open({ storage: new MemoryStorage(), segmentSize: 1024 * 1024 });
  const { server, address } = await walServer(net, primary, wanted === null ? {} : { wanted });
  const storage = new MemoryStorage();
  const syncs = recordDatasyncs(storage, (name) => SEGMENT.test(name));
  const replica = await WalLog.open({ storage, segmentSize: 1024 * 1024, role: 'replica' });
  const conn = await connectReplication({ transport: net.transport('s1'), address, user: 'repl', applicationName: 's1', options: [FLUSH_ON_REQUEST_OPTION] });
  const receiver = new WalReceiver(conn, replica, { flushDelayMs });
  const running = receiver.run().then(
    () => null,
    (err: unknown) => err,
  );
  return {
    primary,
    replica,
    storage,
    syncs,
    receiver,
    running,
    async commit(data) {
      const { endLsn } = primary.append(data);
      await primary.waitForFlush(endLsn);
      return endLsn;
    },
    async close() {
      await receiver.stop();
      await running;
      await server.close();
      await replica.close();
      await primary.close();
    },
  };
}

describe('WalReceiver flushing on request', () => {
  it('from an upstream that asks: writes at once what is asked to be written, flushes at once what is asked to be flushed, holds the rest until the delay since its last flush, and flushes everything when it stops', async () => {
    let [writeWanted, flushWanted] = [0, 0];
    // A delay no test run reaches: what is not asked for waits for the stop.
    const { primary, replica, syncs, receiver, running, commit, close } = await pacedStream((what) => (what === 'write' ? writeWanted : flushWanted), 3_600_000);
    const first = await commit(Buffer.from('first'));
    await until(() => replica.flushedLsn >= first, 'the first flush, at once: none came before it');
    const held = await commit(Buffer.from('not asked for'));
    await until(() => replica.insertLsn >= held, 'the WAL received');
    await turns(50);
    assert.ok(replica.flushedLsn < held, 'WAL nobody asked for waits for the delay');
    assert.ok(replica.writtenLsn < held, 'nor is it written: the next flush writes it');
    const syncsBefore = syncs.length;
    const asked = primary.append(Buffer.from('asked for')).endLsn;
    flushWanted = asked;
    await primary.waitForFlush(asked);
    await until(() => replica.flushedLsn >= asked, 'the flush asked for, at once');
    assert.equal(syncs.length, syncsBefore + 1, 'one flush for what was held and what was asked for');
    const toWrite = primary.append(Buffer.from('asked to be written')).endLsn;
    writeWanted = toWrite;
    await primary.waitForFlush(toWrite);
    await until(() => replica.writtenLsn >= toWrite, 'the write asked for, at once');
    await turns(50);
    assert.ok(replica.flushedLsn < toWrite, 'written, not flushed');
    assert.equal(syncs.length, syncsBefore + 1, 'no fdatasync for a write');
    const last = await commit(Buffer.from('not asked for either'));
    await until(() => replica.insertLsn >= last, 'the WAL received');
    await receiver.stop();
    assert.equal(await running, null);
    assert.equal(replica.flushedLsn, last, 'the stop flushed what was held');
    await close();
  });

  it('from an upstream that asks: WAL nobody asks for waits for the delay, then is made durable by itself, in one flush', async () => {
    // Long enough that the messages below, a few turns apart, land within one delay.
    const { replica, syncs, commit, close } = await pacedStream(() => 0, 1000);
    const first = await commit(payload(0, 200));
    await until(() => replica.flushedLsn >= first, 'the first flush, at once');
    const syncsBefore = syncs.length;
    let end = 0;
    for (let i = 1; i <= 3; i++) {
      end = await commit(payload(i, 200));
      await until(() => replica.insertLsn >= end, `message ${i} received`);
    }
    assert.ok(replica.flushedLsn < end, 'held for the delay');
    await until(() => replica.flushedLsn >= end, 'the paced flush, with no other traffic');
    assert.equal(syncs.length, syncsBefore + 1, 'the three messages in one flush');
    await close();
  });

  it('a write asked for that the log drops (ENOSPC) ends the stream, so the standby streams again from its end instead of leaving the commit waiting', async () => {
    let writeWanted = 0;
    const { primary, replica, storage, running, commit, close } = await pacedStream((what) => (what === 'write' ? writeWanted : 0), 3_600_000);
    const first = await commit(payload(0, 100));
    await until(() => replica.flushedLsn >= first, 'the first flush');
    storage.injectFault({ operation: 'write', code: 'ENOSPC' });
    const end = primary.append(payload(1, 100)).endLsn;
    writeWanted = end;
    await primary.waitForFlush(end);
    const error = await within(running, HANG_MS, 'the stream to end');
    assert.match(String((error as Error | null)?.message), /no space left/);
    assert.equal(replica.insertLsn, first, 'the dropped bytes are gone: the next stream starts here');
    await close();
  });

  it('from an upstream that does not ask, flushes every message at once, whatever its delay', async () => {
    const { replica, syncs, commit, close } = await pacedStream(null, 3_600_000);
    for (let i = 0; i < 5; i++) {
      const end = await commit(payload(i, 100));
      await until(() => replica.flushedLsn >= end, `message ${i} flushed at once`);
    }
    assert.ok(syncs.length >= 5, `${syncs.length} flushes`);
    await close();
  });
});

/** Stalls s1's link, then commits at `on` on the simulated primary: the commit waits; `releasedAt()` is the virtual time it resolved at (-1 before). */
async function commitWhileS1Stalled(cluster: SimulatedCluster, value: string): Promise<{ releasedAt: () => number; settled: Promise<void> }> {
  cluster.stall('p', 's1');
  const primary = cluster.primary as Primary;
  let releasedAt = -1;
  const settled = cluster.scheduler.run(() => primary.commit([kvEntry({ key: 'k', value })], { synchronousCommit: 'on' })).then(() => {
    releasedAt = cluster.scheduler.now();
  });
  await cluster.sleep(20);
  assert.equal(releasedAt, -1, 'the commit waits for s1');
  return { releasedAt: () => releasedAt, settled };
}

describe('standbys flushing on request', () => {
  it('an asynchronous standby paced with early WAL still hears the durable end and replays everything (virtual time)', async (t) => {
    const cluster = await createCluster({ t, seed: 11, standbys: 2, synchronousStandbyNames: 'FIRST 1 (s1)', flushDelayMs: 1000, earlySend: true });
    // The primary's syncs take time: its WAL reaches s2 before it is durable.
    cluster.slowDisk('p', 5);
    for (const level of ['local', 'on', 'local'] as const) await cluster.commit({ level, count: 5 });
    // After a quiet spell the next WAL goes to s2 at once, before it is durable: only the
    // sender's word at the pace, with no WAL after it, tells s2 it may replay that commit.
    await cluster.sleep(2000);
    await cluster.commit({ level: 'local' });
    const started = cluster.scheduler.now();
    await cluster.waitForCatchup('s2', { mode: 'replay' });
    // Its WAL, its flushes and the primary's word that the WAL is durable each come at most a pace apart.
    assert.ok(cluster.scheduler.now() - started <= 3000, `s2 replayed everything ${cluster.scheduler.now() - started} virtual ms after the last commit`);
    await cluster.settle();
    const result = cluster.check();
    assert.ok(result.ok, result.report);
  });

  it('a reload that makes a paced standby synchronous while a commit waits sends it the WAL its pace held, at once (virtual time)', async (t) => {
    const cluster = await createCluster({ t, seed: 5, standbys: 2, synchronousStandbyNames: 'FIRST 1 (s1)', flushDelayMs: 1000 });
    await cluster.sleep(2000);
    // s2 (asynchronous, paced) gets this at once, after a quiet spell; its pace then holds the next.
    await cluster.commit({ level: 'local' });
    const waiting = await commitWhileS1Stalled(cluster, 'held');
    const reloadedAt = cluster.scheduler.now();
    cluster.reload('FIRST 1 (s2)');
    await cluster.sleep(1500);
    await waiting.settled;
    const took = waiting.releasedAt() - reloadedAt;
    assert.ok(took < 100, `the commit was released ${took} virtual ms after the reload made s2 synchronous`);
  });

  it('a standby that becomes synchronous while a commit waits is asked for its WAL at once, not at its pace (virtual time)', async (t) => {
    const cluster = await createCluster({ t, seed: 7, standbys: 2, synchronousStandbyNames: 'FIRST 1 (s1, s2)', flushDelayMs: 1000 });
    await cluster.sleep(10);
    const [first] = await cluster.commit({ level: 'on' });
    assert.deepEqual([first?.outcome, first?.confirmers], ['acknowledged', ['s1']]);
    // s1 (sync) hears nothing more; s2 (potential, so not asked) receives the next commit's WAL
    // just after its last flush, and holds it for up to a second.
    const waiting = await commitWhileS1Stalled(cluster, 'second');
    const crashedAt = cluster.scheduler.now();
    await cluster.crash('s1');
    await cluster.sleep(1000);
    await waiting.settled;
    const took = waiting.releasedAt() - crashedAt;
    assert.ok(took < 100, `s2 took over as the synchronous standby: the commit was released ${took} virtual ms after s1 left`);
  });

  it('under FIRST 1 (s1): s1 flushes each commit at on and writes each at remote_write; s2 (asynchronous), and s1 at local and remote_write, flush at the pace; both end with everything', async (t) => {
    const cluster = createCluster(t);
    const papp = new RecordingApp();
    const primary = await cluster.primary('p', { application: papp, synchronousStandbyNames: 'FIRST 1 (s1)', sync: 'none' });
    // A delay longer than the test: the counts below cannot depend on the machine's speed.
    const s1Syncs = recordDatasyncs(cluster.storage('s1'), (name) => SEGMENT.test(name));
    const s2Syncs = recordDatasyncs(cluster.storage('s2'), (name) => SEGMENT.test(name));
    const [s1App, s2App] = [new RecordingApp(), new RecordingApp()];
    const s1 = await cluster.standby('s1', { upstream: primary, application: s1App, flushDelayMs: 1000 });
    const s2 = await cluster.standby('s2', { upstream: primary, application: s2App, flushDelayMs: 1000 });
    await caughtUp(s1, primary);
    await caughtUp(s2, primary);
    await until(() => primary.replicationStatus().some((r) => r.applicationName === 's1' && r.syncState === 'sync'), 's1 to be synchronous');
    const COMMITS = 40;
    let [s1At, s2At] = [s1Syncs.length, s2Syncs.length];
    for (let i = 0; i < COMMITS; i++) await primary.commit(payload(i, 100), { synchronousCommit: 'on' });
    assert.ok(s1Syncs.length - s1At >= COMMITS, `s1, which each commit waits for, flushed ${s1Syncs.length - s1At} times for ${COMMITS} commits`);
    assert.ok(s2Syncs.length - s2At <= COMMITS / 4, `s2, which no commit waits for, flushed ${s2Syncs.length - s2At} times for ${COMMITS} commits`);
    [s1At, s2At] = [s1Syncs.length, s2Syncs.length];
    for (let i = 0; i < COMMITS; i++) await primary.commit(payload(COMMITS + i, 100), { synchronousCommit: 'local' });
    assert.ok(s1Syncs.length - s1At <= COMMITS / 4, `at local nothing waits for s1: it flushed ${s1Syncs.length - s1At} times for ${COMMITS} commits`);
    // remote_write waits for s1's write: written at once, flushed at the pace (or these
    // commits would take a second each).
    s1At = s1Syncs.length;
    for (let i = 0; i < COMMITS; i++) await within(primary.commit(payload(2 * COMMITS + i, 100), { synchronousCommit: 'remote_write' }), HANG_MS, 'a commit at remote_write');
    assert.ok(s1Syncs.length - s1At <= COMMITS / 4, `at remote_write s1 flushed ${s1Syncs.length - s1At} times for ${COMMITS} commits`);
    await caughtUp(s1, primary);
    await caughtUp(s2, primary);
    sameSequence(s1App.applied, papp.applied, 's1');
    sameSequence(s2App.applied, papp.applied, 's2');
    await s1.close();
    await s2.close();
    await primary.close();
  });
});
