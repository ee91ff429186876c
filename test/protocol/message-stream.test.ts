import assert from 'node:assert/strict';
import { Duplex, PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/index.js';
import { FrameReader } from '../../src/protocol/frame-reader.js';
import { MessageStream } from '../../src/protocol/message-stream.js';
import { MESSAGE_TYPES, encodeMessage, type ServerMessage } from '../../src/protocol/messages.js';

/** Splits `bytes` at the given cut points (any order, duplicates allowed). */
function cut(bytes: Buffer, points: number[]): Buffer[] {
  const sorted = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of [...sorted, bytes.length]) {
    if (p > from) {
      // Buffer.alloc never uses the shared pool: each chunk has its own ArrayBuffer.
      const chunk = Buffer.alloc(p - from);
      bytes.copy(chunk, 0, from, p);
      chunks.push(chunk);
    }
    from = Math.max(from, p);
  }
  return chunks;
}

const messageArb: fc.Arbitrary<ServerMessage> = fc.oneof(
  fc.record({
    kind: fc.constant('walData' as const),
    startLsn: fc.integer({ min: 0, max: 2 ** 40 }),
    walEnd: fc.integer({ min: 0, max: 2 ** 40 }),
    sendTime: fc.integer({ min: 0, max: 2 ** 50 }),
    data: fc.uint8Array({ maxLength: 3000 }),
  }),
  fc.record({ kind: fc.constant('keepalive' as const), walEnd: fc.nat(), sendTime: fc.nat(), replyRequested: fc.boolean() }),
  fc.constant({ kind: 'readyForCommand' as const }),
);

/** What a list of messages says, with WAL data as one byte string per message kind order. */
function flatten(messages: ServerMessage[]): unknown[] {
  const out: unknown[] = [];
  for (const m of messages) {
    if (m.kind !== 'walData') {
      out.push(m);
      continue;
    }
    const last = out.at(-1) as { kind: string; startLsn: number; end: number; data: Buffer } | undefined;
    // Pieces of one frame continue exactly where the previous piece ended.
    if (last?.kind === 'walData' && last.end === m.startLsn && m.data.length > 0 && (last as { open?: boolean }).open) {
      last.data = Buffer.concat([last.data, Buffer.from(m.data)]);
      last.end += m.data.length;
    } else {
      out.push({ kind: 'walData', startLsn: m.startLsn, walEnd: m.walEnd, sendTime: m.sendTime, end: m.startLsn + m.data.length, data: Buffer.from(m.data), open: true });
    }
  }
  return out.map((m) => {
    const { open: _open, end: _end, ...rest } = m as { open?: boolean; end?: number };
    return rest;
  });
}

describe('MessageStream receiving WAL data in pieces', () => {
  it('delivers every message, with WAL data split only at chunk boundaries and never copied', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(messageArb, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 30 }), async (messages, points) => {
        const stream = new PassThrough();
        const conn = new MessageStream(stream, 'client');
        const bytes = Buffer.concat(messages.map((m) => encodeMessage(m)));
        const chunks = cut(bytes, points);
        for (const chunk of chunks) stream.write(chunk);
        stream.end();
        const received: ServerMessage[] = [];
        for (let m = await conn.next(); m !== null; m = await conn.next()) {
          received.push(m);
          if (m.kind === 'walData' && m.data.length > 0) {
            // Zero-copy: the data is a view into one of the chunks that were written.
            assert.ok(chunks.some((c) => c.buffer === m.data.buffer), 'data is a view of a received chunk');
          }
        }
        const expected = flatten(messages.map((m) => (m.kind === 'walData' ? { ...m, data: Buffer.from(m.data) } : m)));
        // Re-merging the pieces gives back the messages that were sent (empty WAL data messages included).
        assert.deepEqual(flatten(received), expected);
      }),
      { seed: 99, numRuns: 300 },
    );
  });

  it('refuses a split WAL data frame whose header lies about its length', () => {
    const frame = encodeMessage({ kind: 'walData', startLsn: 8, walEnd: 8, sendTime: 0, data: Buffer.alloc(1000) });
    frame.writeUInt32BE(999, 5 + 24); // the data length field, inside the 28-byte header
    const reader = new FrameReader();
    reader.push(frame.subarray(0, 600));
    assert.ok(reader.nextPiece(MESSAGE_TYPES.walData, 28) !== null, 'a first piece');
    const stream = new PassThrough();
    const conn = new MessageStream(stream, 'client');
    stream.write(frame.subarray(0, 600));
    return assert.rejects(conn.next().then(() => conn.next()), (err) => isWalshipError(err, 'PROTOCOL_ERROR'));
  });

  it('decodes only while the queue is within the read-ahead bound, counting what each message holds, and pauses the peer', async () => {
    const stream = new PassThrough();
    const conn = new MessageStream(stream, 'server', { readAheadBytes: 16 * 1024 });
    // 1 KiB horizons: once counted as 5 bytes each, so a blocked reader queued everything sent.
    const frame = encodeMessage({ kind: 'hotStandbyFeedback', sendTime: 0, horizon: Buffer.alloc(1024, 3) });
    const sent = 500;
    stream.write(Buffer.concat(Array.from({ length: sent }, () => frame)));
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(stream.isPaused(), 'the stream is paused');
    // At most one message past the bound is decoded; the rest waits as received bytes.
    assert.ok(conn.queuedBytes <= 16 * 1024 + 2 * frame.length + 256, `queued ${conn.queuedBytes}`);
    assert.ok(conn.queuedBytes >= 16 * 1024, `queued ${conn.queuedBytes}`);
    // Reading on decodes the rest: nothing is lost.
    for (let i = 0; i < sent; i++) assert.equal((await conn.next())?.kind, 'hotStandbyFeedback');
    assert.equal(conn.queuedBytes, 0);
    assert.ok(!stream.isPaused(), 'reading resumed');
  });

  it('with a read-ahead of 0 holds one decoded message, and setReadAhead lets more through', async () => {
    const stream = new PassThrough();
    const conn = new MessageStream(stream, 'server', { readAheadBytes: 0 });
    const frame = encodeMessage({ kind: 'identifySystem' });
    stream.write(Buffer.concat(Array.from({ length: 100 }, () => frame)));
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(stream.isPaused());
    assert.equal(conn.queuedBytes, 256, 'one empty message');
    conn.setReadAhead(1024);
    assert.ok(conn.queuedBytes > 1024 && conn.queuedBytes <= 1024 + 256, `queued ${conn.queuedBytes}`);
    for (let i = 0; i < 100; i++) assert.equal((await conn.next())?.kind, 'identifySystem');
  });

  it('drained({ timeoutMs }) rejects with TIMEOUT when the peer does not read', async () => {
    // A peer that takes nothing until told to.
    const unread: Array<() => void> = [];
    const stream = new Duplex({
      highWaterMark: 16,
      read() {},
      write(_chunk, _encoding, callback) {
        unread.push(callback);
      },
    });
    const conn = new MessageStream(stream, 'server');
    conn.send({ kind: 'identifySystemResult', systemId: '0123456789abcdef', timeline: 1, flushLsn: 0, segmentSize: 16 * 1024 * 1024 });
    await assert.rejects(conn.drained({ timeoutMs: 20 }), (err) => isWalshipError(err, 'TIMEOUT'));
    const draining = conn.drained({ timeoutMs: 60_000 });
    for (const callback of unread.splice(0)) callback();
    await draining;
    assert.equal(stream.listenerCount('drain'), 0, 'no listener is left behind');
  });
});

describe('MessageStream.destroy', () => {
  it('with closeSoon ends reading at once and destroys the stream a moment later; a plain destroy meanwhile changes nothing', async () => {
    const stream = new PassThrough();
    const conn = new MessageStream(stream, 'client');
    const waiting = conn.next();
    conn.destroy({ closeSoon: true });
    await assert.rejects(waiting, (err) => isWalshipError(err, 'CONNECTION_FAILED'));
    await assert.rejects(conn.next(), (err) => isWalshipError(err, 'CONNECTION_FAILED'));
    assert.equal(stream.destroyed, false, 'not destroyed in the same turn');
    assert.equal(stream.isPaused(), true, 'nothing more is read');
    assert.equal(conn.send({ kind: 'terminate' }), false, 'nothing more is sent');
    // What arrives meanwhile is not decoded.
    stream.write(encodeMessage({ kind: 'keepalive', walEnd: 1, sendTime: 0, replyRequested: false }));
    conn.destroy();
    assert.equal(stream.destroyed, false, 'the close stays scheduled');
    await conn.closed;
    assert.equal(stream.destroyed, true);
    assert.equal(conn.queuedBytes, 0);
  });

  it('without closeSoon destroys the stream in the same turn', async () => {
    const stream = new PassThrough();
    const conn = new MessageStream(stream, 'client');
    conn.destroy();
    assert.equal(stream.destroyed, true);
    await assert.rejects(conn.next(), (err) => isWalshipError(err, 'CONNECTION_FAILED'));
  });
});

describe('MessageStream.interrupt', () => {
  it('rejects the pending next() with the error given and leaves the stream reading on', async () => {
    const stream = new PassThrough();
    const conn = new MessageStream(stream, 'server');
    conn.interrupt(new Error('nobody waits: nothing happens'));
    const waiting = conn.next();
    const reason = new Error('stop listening');
    conn.interrupt(reason);
    await assert.rejects(waiting, (err) => err === reason);
    stream.write(encodeMessage({ kind: 'identifySystem' }));
    assert.equal((await conn.next())?.kind, 'identifySystem', 'a later next() gets the next message');
    assert.equal(conn.failure, null);
    assert.equal(stream.destroyed, false);
  });
});
