import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/errors.js';
import { FRAME_READER_DEFAULTS, FrameReader, type Frame } from '../../src/protocol/frame-reader.js';

function encodeFrame(type: number, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(body.length + 1);
  header[4] = type;
  return Buffer.concat([header, body]);
}

/** Splits `bytes` at the given cut points (any order, duplicates allowed). */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.subarray(from, point));
    from = point;
  }
  return chunks;
}

function drain(reader: FrameReader): Array<{ type: number; body: Buffer }> {
  return [...reader].map((f) => ({ type: f.type, body: Buffer.from(f.body) }));
}

const frameArb = fc.record(
  { type: fc.nat({ max: 255 }), body: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
  { noNullPrototype: true },
);

function protocolError(message: RegExp): (err: unknown) => boolean {
  return (err) => isWalshipError(err, 'PROTOCOL_ERROR') && message.test((err as Error).message);
}

describe('FrameReader', () => {
  it('reassembles any chunking of a stream of frames exactly', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 30 }), fc.array(fc.nat(), { maxLength: 60 }), (frames, cuts) => {
        const stream = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.body)));
        const reader = new FrameReader();
        const got: Frame[] = [];
        for (const chunk of split(stream, cuts)) {
          reader.push(chunk);
          got.push(...drain(reader));
        }
        assert.deepEqual(got, frames);
        assert.equal(reader.bufferedBytes, 0);
        assert.equal(reader.next(), null);
      }),
      { seed: 42, numRuns: 300 },
    );
  });

  it('reassembles frames fed one byte at a time, reporting what it buffers', () => {
    const frames = [
      { type: 1, body: Buffer.alloc(0) },
      { type: 2, body: Buffer.from('hello') },
      { type: 255, body: Buffer.alloc(1000, 7) },
    ];
    const stream = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.body)));
    const reader = new FrameReader();
    const got: Frame[] = [];
    let pending = 0;
    for (let i = 0; i < stream.length; i++) {
      reader.push(stream.subarray(i, i + 1));
      pending++;
      const before = got.length;
      got.push(...drain(reader));
      for (const f of got.slice(before)) pending -= 5 + f.body.length;
      assert.equal(reader.bufferedBytes, pending);
    }
    assert.deepEqual(got, frames);
  });

  it('returns frames that lie within one chunk as views of it, many frames per chunk', () => {
    const chunk = Buffer.concat([encodeFrame(7, Buffer.from('abc')), encodeFrame(8, Buffer.from('defg')), encodeFrame(9, Buffer.alloc(0))]);
    const reader = new FrameReader();
    reader.push(chunk);
    const frames = [...reader];
    assert.deepEqual(
      frames.map((f) => [f.type, f.body.toString()]),
      [
        [7, 'abc'],
        [8, 'defg'],
        [9, ''],
      ],
    );
    assert.equal(frames[0]?.body.buffer, chunk.buffer);
    assert.equal(frames[0]?.body.byteOffset, chunk.byteOffset + 5);
    assert.equal(frames[1]?.body.byteOffset, chunk.byteOffset + 13);
  });

  it('assembles a large frame from many small chunks in linear time', { timeout: 10_000 }, () => {
    // 2^20 single-byte chunks: quadratic copying or Array#shift per chunk would not finish.
    const body = Buffer.alloc(1 << 20, 3);
    const stream = encodeFrame(4, body);
    const reader = new FrameReader();
    for (let i = 0; i < stream.length; i++) {
      reader.push(stream.subarray(i, i + 1));
      if (i < stream.length - 1) assert.equal(reader.next(), null);
    }
    const frame = reader.next();
    assert.equal(frame?.type, 4);
    assert.ok(frame?.body.equals(body));
    assert.equal(reader.bufferedBytes, 0);
  });

  it('fails on a declared length above maxFrameBytes before buffering the frame', () => {
    const reader = new FrameReader({ maxFrameBytes: 1024 });
    const header = Buffer.from([0x00, 0x00, 0x04, 0x01]); // 1025
    for (let i = 0; i < 3; i++) {
      reader.push(header.subarray(i, i + 1));
      assert.equal(reader.next(), null);
      assert.ok(reader.bufferedBytes <= 4);
    }
    assert.throws(() => reader.push(header.subarray(3)), protocolError(/declares 1025 bytes, above the limit of 1024/));
    assert.equal(reader.bufferedBytes, 0);
  });

  it('fails on the default limit of 16 MiB + 64 with the whole huge frame never buffered', () => {
    const reader = new FrameReader();
    assert.equal(FRAME_READER_DEFAULTS.maxFrameBytes, 16 * 1024 * 1024 + 64);
    const header = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    reader.push(header.subarray(0, 2));
    assert.equal(reader.next(), null);
    assert.throws(() => reader.push(header.subarray(2)), protocolError(/declares 4294967295 bytes/));
  });

  it('accepts a frame of exactly maxFrameBytes', () => {
    const reader = new FrameReader({ maxFrameBytes: 11 });
    reader.push(encodeFrame(1, Buffer.alloc(10)));
    assert.equal(reader.next()?.body.length, 10);
  });

  it('fails on a zero length, also when the length arrives in pieces and frames came before', () => {
    const reader = new FrameReader();
    reader.push(Buffer.concat([encodeFrame(1, Buffer.from('ok')), Buffer.from([0, 0])]));
    assert.equal(reader.next()?.type, 1);
    assert.equal(reader.next(), null);
    assert.throws(() => reader.push(Buffer.from([0, 0])), protocolError(/declares length 0/));
  });

  it('checks a length at next() when the caller pushed frames without taking them', () => {
    const reader = new FrameReader({ maxFrameBytes: 100 });
    reader.push(Buffer.concat([encodeFrame(1, Buffer.alloc(3)), Buffer.from([0, 0, 1, 0])]));
    assert.equal(reader.next()?.type, 1);
    assert.throws(() => reader.next(), protocolError(/declares 256 bytes/));
  });

  it('keeps its error: every later call throws the same error object', () => {
    const reader = new FrameReader();
    let first: unknown;
    try {
      reader.push(Buffer.from([0, 0, 0, 0, 1, 2, 3]));
    } catch (err) {
      first = err;
    }
    assert.ok(isWalshipError(first, 'PROTOCOL_ERROR'));
    assert.throws(() => reader.next(), (err) => err === first);
    assert.throws(() => reader.push(encodeFrame(1, Buffer.alloc(0))), (err) => err === first);
    assert.throws(() => [...reader], (err) => err === first);
    assert.throws(() => reader.push(Buffer.alloc(0)), (err) => err === first);
    assert.equal(reader.bufferedBytes, 0);
  });

  it('ignores empty chunks', () => {
    const reader = new FrameReader();
    reader.push(Buffer.alloc(0));
    reader.push(encodeFrame(2, Buffer.from('x')).subarray(0, 3));
    reader.push(Buffer.alloc(0));
    reader.push(encodeFrame(2, Buffer.from('x')).subarray(3));
    assert.equal(reader.next()?.body.toString(), 'x');
  });

  it('validates its options', () => {
    for (const options of [{ maxFrameBytes: 0 }, { maxFrameBytes: 2 ** 32 }, { maxFrameBytes: 1.5 }, { maxFrameBytes: '1' }, { maxFrameByte: 10 }]) {
      assert.throws(() => new FrameReader(options as never), { name: 'WalshipError', code: 'INVALID_OPTIONS', message: /FrameReader/ });
    }
  });
});
