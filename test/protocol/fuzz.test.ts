import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/errors.js';
import { FrameReader, type Frame } from '../../src/protocol/frame-reader.js';
import { MESSAGE_TYPES, baseBackupChunk, decodeMessage, encodeMessage, type Message } from '../../src/protocol/messages.js';

/**
 * Seeded fuzzing of FrameReader + decodeMessage with random streams and mutated valid
 * frames, from both directions. Properties checked on every input:
 * - nothing but a PROTOCOL_ERROR WalshipError escapes;
 * - the reader never holds more than one frame's limit beyond what it has returned;
 * - no Buffer allocation is larger than the input seen so far (no length field is trusted);
 * - a frame that decodes re-encodes to the same bytes (every message has one encoding).
 */

const MAX_FRAME = 4096;

/** A valid seed of every kind, for mutation. */
const CORPUS: Message[] = [
  { kind: 'startup', protocolMajor: 1, protocolMinor: 0, user: 'rep', applicationName: 'sb', options: [{ key: 'k', value: 'v' }] },
  { kind: 'saslInitialResponse', mechanism: 'SCRAM-SHA-256', data: Buffer.from('n,,n=,r=nonce') },
  { kind: 'saslResponse', data: Buffer.from('c=biws,r=nonce,p=proof') },
  { kind: 'identifySystem' },
  { kind: 'timelineHistory', timeline: 2 },
  { kind: 'startReplication', slotName: 'slot_1', startLsn: 0x1_0000_0000, timeline: 1, checkFrom: null, checkCrc: 0 },
  { kind: 'createReplicationSlot', slotName: 'slot_1', reserveWal: false, reserveFrom: null },
  { kind: 'dropReplicationSlot', slotName: 'slot_1', wait: true },
  { kind: 'baseBackup', label: 'b', maxRate: 1000 },
  { kind: 'standbyStatusUpdate', writeLsn: 30, flushLsn: 20, applyLsn: 10, sendTime: 1e15, replyRequested: false },
  { kind: 'hotStandbyFeedback', sendTime: 7, horizon: Buffer.from([1, 2]) },
  { kind: 'terminate' },
  { kind: 'authOk' },
  { kind: 'authSasl', mechanisms: ['SCRAM-SHA-256'] },
  { kind: 'authSaslContinue', data: Buffer.from('r=nonce,s=salt,i=4096') },
  { kind: 'authSaslFinal', data: Buffer.from('v=sig') },
  { kind: 'error', code: 'WAL_REMOVED', message: 'requested WAL was removed' },
  { kind: 'readyForCommand' },
  { kind: 'identifySystemResult', systemId: 'fedcba9876543210', timeline: 1, flushLsn: 99, segmentSize: 65536 },
  { kind: 'timelineHistoryResult', timeline: 2, fileName: '00000002.history', content: Buffer.from('1\t0/100\n') },
  { kind: 'replicationSlotCreated', slotName: 'slot_1', restartLsn: 4096 },
  { kind: 'replicationStarted', timeline: 1, startLsn: 64, historyChecked: false },
  { kind: 'walData', startLsn: 64, walEnd: 128, sendTime: 1, data: Buffer.alloc(64, 0x5a) },
  { kind: 'keepalive', walEnd: 128, sendTime: 2, replyRequested: true },
  { kind: 'flushRequest', writeLsn: 512, flushLsn: 256 },
  { kind: 'endOfTimeline', nextTimeline: 2, switchLsn: 100 },
  { kind: 'baseBackupBegin', startLsn: 8, timeline: 1, label: 'L', totalBytes: 3 },
  baseBackupChunk(0, Buffer.from('abc')),
  { kind: 'baseBackupEnd', totalBytes: 3, sha256: Buffer.alloc(32, 1), endLsn: 8 },
];
const SEEDS = CORPUS.map((msg) => encodeMessage(msg));

/** Values that stress length fields: zero, off-by-one around caps, sign bit, all ones. */
const interestingU32 = fc.oneof(
  fc.constantFrom(0, 1, 2, 31, 32, 33, 63, 64, 255, 256, 1023, 1024, 1025, 4096, 0x7fff, 0xffff, 0x10000, 1 << 20, (1 << 24) + 64, 0x7fffffff, 0x80000000, 0xffffffff),
  fc.nat({ max: 0xffffffff }),
);

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'truncate'; at: number }
  | { op: 'u32'; at: number; value: number }
  | { op: 'u16'; at: number; value: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; count: number }
  | { op: 'splice'; at: number; other: number; from: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('u32' as const), at: fc.nat(), value: interestingU32 }),
  fc.record({ op: fc.constant('u16' as const), at: fc.nat(), value: fc.oneof(fc.constantFrom(0, 1, 16, 17, 64, 256, 0xffff), fc.nat({ max: 0xffff })) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('splice' as const), at: fc.nat(), other: fc.nat({ max: SEEDS.length - 1 }), from: fc.nat() }),
);

function mutate(bytes: Buffer, m: Mutation): Buffer {
  const at = m.at % (bytes.length + 1);
  switch (m.op) {
    case 'flip': {
      if (bytes.length === 0) return bytes;
      const copy = Buffer.from(bytes);
      copy[at % bytes.length]! ^= 1 << m.bit;
      return copy;
    }
    case 'truncate':
      return bytes.subarray(0, at);
    case 'u32':
    case 'u16': {
      const width = m.op === 'u32' ? 4 : 2;
      if (bytes.length < width) return bytes;
      const copy = Buffer.from(bytes);
      const pos = at % (bytes.length - width + 1);
      if (m.op === 'u32') copy.writeUInt32BE(m.value, pos);
      else copy.writeUInt16BE(m.value, pos);
      return copy;
    }
    case 'insert':
      return Buffer.concat([bytes.subarray(0, at), m.bytes, bytes.subarray(at)]);
    case 'delete':
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + m.count)]);
    case 'splice': {
      const other = SEEDS[m.other] as Buffer;
      return Buffer.concat([bytes.subarray(0, at), other.subarray(m.from % (other.length + 1))]);
    }
  }
}

/** Splits `bytes` at the given cut points. */
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

const ALLOCATORS = ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const;

/** Runs `fn` while recording the size of every Buffer allocation made through the Buffer statics. */
function recordAllocations(fn: () => void): number[] {
  const sizes: number[] = [];
  const statics = Buffer as unknown as Record<string, (size: number, ...rest: unknown[]) => Buffer>;
  const originals = ALLOCATORS.map((name) => statics[name]!);
  ALLOCATORS.forEach((name, i) => {
    const original = originals[i]!;
    statics[name] = (size, ...rest) => {
      sizes.push(size);
      return original.call(Buffer, size, ...rest);
    };
  });
  try {
    fn();
  } finally {
    ALLOCATORS.forEach((name, i) => {
      statics[name] = originals[i]!;
    });
  }
  return sizes;
}

function expectProtocolError(err: unknown): void {
  if (!isWalshipError(err, 'PROTOCOL_ERROR')) throw new Error(`an error other than PROTOCOL_ERROR escaped: ${String(err)}`, { cause: err });
}

/** Decodes `frame` from both sides; a success must re-encode to the frame's own bytes. */
function decodeBothWays(frame: Frame): number {
  let decoded = 0;
  for (const from of ['client', 'server'] as const) {
    let msg: Message;
    try {
      msg = decodeMessage(frame, from);
    } catch (err) {
      expectProtocolError(err);
      continue;
    }
    decoded++;
    const remapped = msg.kind === 'error' && msg.message.startsWith('unknown error code ');
    if (!remapped) {
      const again = encodeMessage(msg);
      assert.equal(again[4], frame.type);
      assert.deepEqual(again.subarray(5), frame.body);
    }
  }
  assert.ok(decoded <= 1, 'a frame decoded from both sides');
  return decoded;
}

/**
 * Feeds `chunks` through a FrameReader and decodes every frame from both sides, checking
 * the properties above. Returns the number of frames that decoded.
 */
function feed(chunks: Buffer[]): number {
  const reader = new FrameReader({ maxFrameBytes: MAX_FRAME });
  let seen = 0;
  let decoded = 0;
  const sizes = recordAllocations(() => {
    for (const chunk of chunks) {
      seen += chunk.length;
      try {
        reader.push(chunk);
        for (const frame of reader) decoded += decodeBothWays(frame);
      } catch (err) {
        expectProtocolError(err);
        assert.equal(reader.bufferedBytes, 0);
        return;
      }
      // A pending frame is incomplete, so at most its 4 length bytes and limit - 1 bytes stay.
      assert.ok(reader.bufferedBytes < MAX_FRAME + 4, `buffered ${reader.bufferedBytes}`);
    }
  });
  // Re-encoding a decoded frame allocates its own size, which is at most the input size too.
  for (const size of sizes) assert.ok(size <= seen, `allocated ${size} bytes after receiving ${seen}`);
  return decoded;
}

describe('protocol fuzzing', () => {
  it('spies on allocations (the allocation checks below can fail)', () => {
    const frame = SEEDS[19] as Buffer; // walData, joined from two chunks
    const sizes = recordAllocations(() => {
      const reader = new FrameReader();
      reader.push(frame.subarray(0, 10));
      reader.push(frame.subarray(10));
      assert.ok(reader.next());
    });
    assert.ok(sizes.includes(frame.length - 4));
  });

  it('survives random byte streams', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.array(fc.nat(), { maxLength: 8 }), (bytes, cuts) => {
        feed(split(Buffer.from(bytes), cuts));
      }),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('survives well-framed random bodies of every known type', () => {
    const types = [...new Set(Object.values(MESSAGE_TYPES))];
    const bodyArb = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Authentication frames usually start with a valid sub-code, to reach the fields behind it.
      fc.tuple(fc.constantFrom(0, 10, 11, 12), fc.uint8Array({ maxLength: 200 })).map(([sub, rest]) => {
        const body = Buffer.alloc(4 + rest.length);
        body.writeUInt32BE(sub);
        body.set(rest, 4);
        return body;
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...types), bodyArb), { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, cuts) => {
        const stream = Buffer.concat(
          frames.map(([type, body]) => {
            const header = Buffer.alloc(5);
            header.writeUInt32BE(body.length + 1);
            header[4] = type;
            return Buffer.concat([header, body]);
          }),
        );
        feed(split(stream, cuts));
      }),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('survives mutated valid frames: bit flips, truncations, length fields, insertions, splices', () => {
    let decodedTotal = 0;
    const mutatedFrame = fc.tuple(fc.nat({ max: SEEDS.length - 1 }), fc.array(mutationArb, { maxLength: 4 }));
    fc.assert(
      fc.property(fc.array(mutatedFrame, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, cuts) => {
        const stream = Buffer.concat(frames.map(([seed, mutations]) => mutations.reduce(mutate, SEEDS[seed] as Buffer)));
        decodedTotal += feed(split(stream, cuts));
      }),
      { seed: 42, numRuns: 4000 },
    );
    // The inputs stay close enough to valid that many still decode, so the decoders' deep paths run.
    assert.ok(decodedTotal > 1500, `only ${decodedTotal} frames decoded`);
  });

  it('never allocates from an adversarial length field, even with the default frame limit', () => {
    // Every variable-length field set to a huge length, in a tiny frame.
    fc.assert(
      fc.property(fc.nat({ max: SEEDS.length - 1 }), fc.nat(), interestingU32, (seed, at, value) => {
        const bytes = mutate(SEEDS[seed] as Buffer, { op: 'u32', at: 5 + (at % Math.max(1, (SEEDS[seed] as Buffer).length - 8)), value });
        const sizes = recordAllocations(() => {
          const reader = new FrameReader();
          try {
            reader.push(bytes);
            for (const frame of reader) {
              for (const from of ['client', 'server'] as const) {
                try {
                  decodeMessage(frame, from);
                } catch (err) {
                  expectProtocolError(err);
                }
              }
            }
          } catch (err) {
            expectProtocolError(err);
          }
        });
        for (const size of sizes) assert.ok(size <= bytes.length, `allocated ${size} bytes for a ${bytes.length}-byte input`);
      }),
      { seed: 42, numRuns: 1000 },
    );
  });
});
