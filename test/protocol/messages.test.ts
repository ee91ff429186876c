import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import crc32c from 'fast-crc32c';
import fc from 'fast-check';
import type { Frame } from '../../src/protocol/frame-reader.js';
import {
  MESSAGE_TYPES,
  PROTOCOL_LIMITS,
  PROTOCOL_VERSION,
  baseBackupChunk,
  checkChunk,
  decodeMessage,
  encodeMessage,
  encodeMessageParts,
  type Message,
  type MessageKind,
  type ProtocolSide,
} from '../../src/protocol/messages.js';

// ---- raw body builders, for frames the encoder would refuse to produce

const u8 = (n: number): Buffer => Buffer.from([n]);
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const u64 = (n: bigint | number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};
/** A string field: u16 length, then the bytes (given as text or raw bytes). */
const str = (s: string | Buffer): Buffer => {
  const bytes = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u16(bytes.length), bytes]);
};
/** A byte field: u32 length, then the bytes. */
const bin = (bytes: Buffer): Buffer => Buffer.concat([u32(bytes.length), bytes]);
const frame = (type: string, ...parts: Buffer[]): Frame => ({ type: type.charCodeAt(0), body: Buffer.concat(parts) });
/** The frame that `encodeMessage` produced, as a reader would return it. */
const toFrame = (bytes: Buffer): Frame => ({ type: bytes[4] as number, body: bytes.subarray(5) });

function rejects(f: Frame, from: ProtocolSide, message: RegExp): void {
  assert.throws(() => decodeMessage(f, from), { name: 'WalshipError', code: 'PROTOCOL_ERROR', message });
}

function refusesToEncode(msg: unknown, message: RegExp): void {
  assert.throws(() => encodeMessage(msg as Message), { name: 'WalshipError', code: 'INVALID_ARGUMENT', message });
}

const CLIENT_KINDS = new Set<MessageKind>([
  'startup',
  'saslInitialResponse',
  'saslResponse',
  'identifySystem',
  'timelineHistory',
  'startReplication',
  'createReplicationSlot',
  'dropReplicationSlot',
  'baseBackup',
  'standbyStatusUpdate',
  'hotStandbyFeedback',
  'terminate',
]);
const sideOf = (kind: MessageKind): ProtocolSide => (CLIENT_KINDS.has(kind) ? 'client' : 'server');

const MAX_LSN = Number.MAX_SAFE_INTEGER;
const snapshotHash = Buffer.alloc(32, 0xab);

/** One example of every kind, with edge values. */
const EXAMPLES: Message[] = [
  {
    kind: 'startup',
    protocolMajor: 1,
    protocolMinor: 0,
    user: 'replicator',
    applicationName: 'standby-ä1',
    options: [
      { key: 'compression', value: 'none' },
      { key: 'x', value: '' },
    ],
  },
  { kind: 'saslInitialResponse', mechanism: 'SCRAM-SHA-256', data: Buffer.from('n,,n=,r=abc') },
  { kind: 'saslResponse', data: Buffer.alloc(0) },
  { kind: 'identifySystem' },
  { kind: 'timelineHistory', timeline: 0xffffffff },
  { kind: 'startReplication', slotName: '', startLsn: 0x2_0040, timeline: 1, checkFrom: 0x2_0020, checkCrc: 0xdeadbeef },
  { kind: 'createReplicationSlot', slotName: 's'.repeat(63), reserveWal: true, reserveFrom: MAX_LSN },
  { kind: 'dropReplicationSlot', slotName: 'standby_1', wait: false },
  { kind: 'baseBackup', label: 'nightly 🌙', maxRate: 0 },
  { kind: 'standbyStatusUpdate', writeLsn: MAX_LSN, flushLsn: 2 ** 32, applyLsn: 2 ** 32 - 1, sendTime: 1_700_000_000_000_000, replyRequested: true },
  { kind: 'hotStandbyFeedback', sendTime: 0, horizon: Buffer.from([1, 2, 3]) },
  { kind: 'terminate' },
  { kind: 'authOk' },
  { kind: 'authSasl', mechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] },
  { kind: 'authSaslContinue', data: Buffer.from('r=abcdef,s=c2FsdA==,i=4096') },
  { kind: 'authSaslFinal', data: Buffer.from('v=c2lnbmF0dXJl') },
  { kind: 'error', code: 'AUTH_FAILED', message: 'password authentication failed for user "replicator"' },
  { kind: 'readyForCommand' },
  { kind: 'identifySystemResult', systemId: '0123456789abcdef', timeline: 3, flushLsn: 0x16_b374d848, segmentSize: 16777216 },
  { kind: 'replicationSlotCreated', slotName: 'standby_1', restartLsn: null },
  { kind: 'timelineHistoryResult', timeline: 2, fileName: '00000002.history', content: Buffer.from('1\t0/3000000\tpromoted\n') },
  { kind: 'replicationStarted', timeline: 1, startLsn: 4096, historyChecked: true },
  { kind: 'walData', startLsn: 2 ** 53 - 3, walEnd: MAX_LSN, sendTime: 5, data: Buffer.from([9, 8, 7]) },
  { kind: 'keepalive', walEnd: 0x1_0000_0002, sendTime: 3, replyRequested: false },
  { kind: 'flushRequest', writeLsn: 0x1_0000_0004, flushLsn: 0x1_0000_0003 },
  { kind: 'endOfTimeline', nextTimeline: 2, switchLsn: 0x300_0000 },
  { kind: 'baseBackupBegin', startLsn: 32, timeline: 1, label: '', totalBytes: null },
  baseBackupChunk(MAX_LSN - 4, Buffer.from('data')),
  { kind: 'baseBackupEnd', totalBytes: 0, sha256: snapshotHash, endLsn: 32 },
];

// ---- arbitraries of every message kind

const lsnArb = fc.oneof(fc.constantFrom(0, 1, 2 ** 32 - 1, 2 ** 32, MAX_LSN), fc.maxSafeNat());
const u32Arb = fc.oneof(fc.constantFrom(0, 0xffffffff), fc.nat({ max: 0xffffffff }));
const timelineArb = fc.oneof(fc.constantFrom(1, 0xffffffff), fc.integer({ min: 1, max: 0xffffffff }));
const bytesArb = (max: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
/** Any well-formed text, including astral characters, within `max` UTF-8 bytes. */
const textArb = (max: number, min = 0): fc.Arbitrary<string> =>
  fc.string({ unit: 'binary', minLength: min, maxLength: max }).filter((s) => Buffer.byteLength(s) <= max);
/** Records with ordinary prototypes, so they deep-equal decoded messages. */
function rec<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record<T>(model, { noNullPrototype: true }) as fc.Arbitrary<T>;
}
const ERROR_CODE_KEYS = ['INVALID_ARGUMENT', 'PROTOCOL_ERROR', 'PROTOCOL_VERSION', 'AUTH_FAILED', 'WAL_REMOVED', 'TIMEOUT'] as const;

const messageArb: fc.Arbitrary<Message> = fc.oneof(
  rec({
    kind: fc.constant('startup' as const),
    protocolMajor: fc.nat({ max: 0xffff }),
    protocolMinor: fc.nat({ max: 0xffff }),
    user: textArb(40, 1),
    applicationName: textArb(40),
    options: fc.uniqueArray(rec({ key: textArb(16, 1), value: textArb(60) }), { maxLength: 6, selector: (o) => o.key }),
  }),
  rec({ kind: fc.constant('saslInitialResponse' as const), mechanism: textArb(32, 1), data: bytesArb(64) }),
  rec({ kind: fc.constant('saslResponse' as const), data: bytesArb(64) }),
  fc.constant({ kind: 'identifySystem' as const }),
  rec({ kind: fc.constant('timelineHistory' as const), timeline: timelineArb }),
  rec({ kind: fc.constant('startReplication' as const), slotName: textArb(63), startLsn: lsnArb, timeline: timelineArb, checkFrom: fc.option(lsnArb, { nil: null }), checkCrc: u32Arb }),
  rec({ kind: fc.constant('createReplicationSlot' as const), slotName: textArb(63, 1), reserveWal: fc.boolean(), reserveFrom: fc.option(lsnArb, { nil: null }) }),
  rec({ kind: fc.constant('dropReplicationSlot' as const), slotName: textArb(63, 1), wait: fc.boolean() }),
  rec({ kind: fc.constant('baseBackup' as const), label: textArb(40), maxRate: u32Arb }),
  rec({
    kind: fc.constant('standbyStatusUpdate' as const),
    writeLsn: lsnArb,
    flushLsn: lsnArb,
    applyLsn: lsnArb,
    sendTime: lsnArb,
    replyRequested: fc.boolean(),
  }),
  rec({ kind: fc.constant('hotStandbyFeedback' as const), sendTime: lsnArb, horizon: bytesArb(64) }),
  fc.constant({ kind: 'terminate' as const }),
  fc.constant({ kind: 'authOk' as const }),
  rec({ kind: fc.constant('authSasl' as const), mechanisms: fc.array(textArb(32, 1), { minLength: 1, maxLength: 8 }) }),
  rec({ kind: fc.constant('authSaslContinue' as const), data: bytesArb(64) }),
  rec({ kind: fc.constant('authSaslFinal' as const), data: bytesArb(64) }),
  rec({ kind: fc.constant('error' as const), code: fc.constantFrom(...ERROR_CODE_KEYS), message: textArb(100) }),
  fc.constant({ kind: 'readyForCommand' as const }),
  rec({
    kind: fc.constant('identifySystemResult' as const),
    systemId: fc.stringMatching(/^[0-9a-f]{16}$/),
    timeline: timelineArb,
    flushLsn: lsnArb,
    segmentSize: fc.integer({ min: 0, max: 0xffffffff }),
  }),
  rec({ kind: fc.constant('replicationSlotCreated' as const), slotName: textArb(63, 1), restartLsn: fc.option(lsnArb, { nil: null }) }),
  rec({ kind: fc.constant('timelineHistoryResult' as const), timeline: timelineArb, fileName: textArb(40), content: bytesArb(200) }),
  rec({ kind: fc.constant('replicationStarted' as const), timeline: timelineArb, startLsn: lsnArb, historyChecked: fc.boolean() }),
  fc
    .record({ startLsn: lsnArb, walEnd: lsnArb, sendTime: lsnArb, data: bytesArb(1024) })
    .map((m) => ({ kind: 'walData' as const, ...m, startLsn: Math.min(m.startLsn, 2 ** 53 - m.data.length) })),
  rec({ kind: fc.constant('keepalive' as const), walEnd: lsnArb, sendTime: lsnArb, replyRequested: fc.boolean() }),
  rec({ kind: fc.constant('flushRequest' as const), writeLsn: lsnArb, flushLsn: lsnArb }),
  rec({ kind: fc.constant('endOfTimeline' as const), nextTimeline: timelineArb, switchLsn: lsnArb }),
  rec({
    kind: fc.constant('baseBackupBegin' as const),
    startLsn: lsnArb,
    timeline: timelineArb,
    label: textArb(40),
    totalBytes: fc.option(lsnArb, { nil: null }),
  }),
  fc.tuple(lsnArb, bytesArb(1024)).map(([offset, data]) => baseBackupChunk(Math.min(offset, MAX_LSN - data.length), data)),
  rec({
    kind: fc.constant('baseBackupEnd' as const),
    totalBytes: lsnArb,
    sha256: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a)),
    endLsn: lsnArb,
  }),
);

describe('protocol messages: round trips', () => {
  it('has one example of every kind, each with its own type byte per direction', () => {
    assert.deepEqual(new Set(EXAMPLES.map((m) => m.kind)), new Set(Object.keys(MESSAGE_TYPES)));
    assert.deepEqual(PROTOCOL_VERSION, { major: 2, minor: 1 });
    const client = EXAMPLES.filter((m) => sideOf(m.kind) === 'client').map((m) => MESSAGE_TYPES[m.kind]);
    const server = new Set(EXAMPLES.filter((m) => sideOf(m.kind) === 'server').map((m) => MESSAGE_TYPES[m.kind]));
    assert.equal(new Set(client).size, client.length);
    for (const type of client) assert.ok(!server.has(type));
  });

  it('round-trips every example exactly, with the frame header in front', () => {
    for (const msg of EXAMPLES) {
      const bytes = encodeMessage(msg);
      assert.equal(bytes.readUInt32BE(0), bytes.length - 4, msg.kind);
      assert.equal(bytes[4], MESSAGE_TYPES[msg.kind], msg.kind);
      assert.deepEqual(decodeMessage(toFrame(bytes), sideOf(msg.kind)), msg);
      assert.deepEqual(Buffer.concat(encodeMessageParts(msg)), bytes, msg.kind);
    }
  });

  it('pins the wire layout of a few messages byte for byte', () => {
    const keepalive = encodeMessage({ kind: 'keepalive', walEnd: 0x1_0000_0002, sendTime: 3, replyRequested: true });
    assert.equal(keepalive.toString('hex'), '00000012' + '6b' + '0000000100000002' + '0000000000000003' + '01');
    const flushRequest = encodeMessage({ kind: 'flushRequest', writeLsn: 0x1_0000_0003, flushLsn: 0x1_0000_0002 });
    assert.equal(flushRequest.toString('hex'), '00000011' + '66' + '0000000100000003' + '0000000100000002');
    const startup = encodeMessage({
      kind: 'startup',
      protocolMajor: 1,
      protocolMinor: 0,
      user: 'u',
      applicationName: '',
      options: [{ key: 'k', value: 'v' }],
    });
    assert.equal(startup.toString('hex'), '00000012' + '53' + '0001' + '0000' + '000175' + '0000' + '0001' + '00016b' + '000176');
    const ok = encodeMessage({ kind: 'authSaslFinal', data: Buffer.from([0xee]) });
    assert.equal(ok.toString('hex'), '0000000a' + '41' + '0000000c' + '00000001' + 'ee');
    const begin = encodeMessage({ kind: 'baseBackupBegin', startLsn: 1, timeline: 2, label: 'l', totalBytes: 7 });
    assert.equal(begin.toString('hex'), '00000019' + '62' + '0000000000000001' + '00000002' + '00016c' + '01' + '0000000000000007');
  });

  it('encodes a plain Uint8Array like a Buffer, and decodes byte fields as views of the frame', () => {
    const data = new Uint8Array([1, 2, 3, 4]);
    const bytes = encodeMessage({ kind: 'walData', startLsn: 8, walEnd: 12, sendTime: 1, data });
    assert.deepEqual(bytes, encodeMessage({ kind: 'walData', startLsn: 8, walEnd: 12, sendTime: 1, data: Buffer.from(data) }));
    const f = toFrame(bytes);
    const decoded = decodeMessage(f, 'server');
    assert.equal(decoded.kind, 'walData');
    if (decoded.kind !== 'walData') return;
    assert.equal(decoded.data.buffer, f.body.buffer);
    assert.equal(decoded.data.byteOffset, f.body.byteOffset + 28);
  });

  it('passes large byte fields as views in encodeMessageParts, and copies small ones', () => {
    const data = Buffer.alloc(64 * 1024, 5);
    const parts = encodeMessageParts({ kind: 'walData', startLsn: 0, walEnd: data.length, sendTime: 0, data });
    assert.equal(parts.length, 2);
    assert.equal(parts[0]?.length, 5 + 28);
    assert.equal(parts[1], data);
    const plain = new Uint8Array(4096);
    const viaPlain = encodeMessageParts({ kind: 'baseBackupChunk', offset: 0, crc32c: crc32c.calculate(plain), data: plain });
    assert.equal(viaPlain[1]?.buffer, plain.buffer);
    const small = encodeMessageParts({ kind: 'walData', startLsn: 0, walEnd: 0, sendTime: 0, data: Buffer.alloc(10) });
    assert.equal(small.length, 1);
    const empty = encodeMessageParts({ kind: 'walData', startLsn: 0, walEnd: 0, sendTime: 0, data: Buffer.alloc(0) });
    assert.equal(empty.length, 1);
  });

  it('round-trips random messages of every kind', () => {
    fc.assert(
      fc.property(messageArb, (msg) => {
        const bytes = encodeMessage(msg);
        assert.deepEqual(decodeMessage(toFrame(bytes), sideOf(msg.kind)), msg);
        assert.deepEqual(Buffer.concat(encodeMessageParts(msg)), bytes);
      }),
      { seed: 42, numRuns: 500 },
    );
  });

  it('round-trips messages at every size cap', () => {
    const L = PROTOCOL_LIMITS;
    const name = 'n'.repeat(L.maxNameBytes);
    const atCaps: Message[] = [
      {
        kind: 'startup',
        protocolMajor: 0xffff,
        protocolMinor: 0xffff,
        user: 'é'.repeat(L.maxNameBytes >> 1) + 'x',
        applicationName: name,
        options: Array.from({ length: L.maxOptions }, (_, i) => ({ key: String(i).padStart(L.maxSlotNameBytes, 'k'), value: 'v'.repeat(L.maxOptionValueBytes) })),
      },
      { kind: 'startReplication', slotName: 's'.repeat(L.maxSlotNameBytes), startLsn: MAX_LSN, timeline: 0xffffffff, checkFrom: null, checkCrc: 0 },
      { kind: 'authSasl', mechanisms: Array.from({ length: L.maxMechanisms }, (_, i) => `${i}`.padEnd(L.maxMechanismBytes, 'M')) },
      { kind: 'error', code: 'PROTOCOL_ERROR', message: '😀'.repeat(L.maxErrorMessageBytes / 4) },
      { kind: 'timelineHistoryResult', timeline: 1, fileName: name, content: Buffer.alloc(L.maxHistoryBytes, 1) },
      { kind: 'walData', startLsn: 2 ** 53 - L.maxWalDataBytes, walEnd: 0, sendTime: MAX_LSN, data: Buffer.alloc(L.maxWalDataBytes, 2) },
      baseBackupChunk(0, Buffer.alloc(L.maxChunkBytes, 3)),
      { kind: 'hotStandbyFeedback', sendTime: 1, horizon: Buffer.alloc(L.maxFeedbackBytes) },
      { kind: 'baseBackupBegin', startLsn: 0, timeline: 1, label: name, totalBytes: MAX_LSN },
    ];
    for (const msg of atCaps) {
      const bytes = encodeMessage(msg);
      assert.ok(bytes.length - 4 <= 16 * 1024 * 1024 + 64, msg.kind); // fits the default frame limit
      assert.deepEqual(decodeMessage(toFrame(bytes), sideOf(msg.kind)), msg, msg.kind);
    }
  });
});

describe('protocol messages: decoding rejects malformed frames', () => {
  it('rejects every truncation of every example, naming the kind', () => {
    for (const msg of EXAMPLES) {
      const { type, body } = toFrame(encodeMessage(msg));
      for (let length = 0; length < body.length; length++) {
        const kind = type === 0x41 && length < 4 ? 'authentication' : msg.kind;
        rejects({ type, body: body.subarray(0, length) }, sideOf(msg.kind), new RegExp(`^invalid ${kind} message from the ${sideOf(msg.kind)}: \\w+ is truncated`));
      }
    }
  });

  it('rejects trailing bytes after the last field', () => {
    for (const msg of EXAMPLES) {
      const { type, body } = toFrame(encodeMessage(msg));
      rejects({ type, body: Buffer.concat([body, u8(0)]) }, sideOf(msg.kind), new RegExp(`invalid ${msg.kind} message .*: 1 unexpected byte after the last field`));
    }
  });

  it('rejects a type byte sent in the wrong direction, naming the kind', () => {
    for (const msg of EXAMPLES) {
      const f = toFrame(encodeMessage(msg));
      const wrong: ProtocolSide = sideOf(msg.kind) === 'client' ? 'server' : 'client';
      const kind = f.type === 0x41 ? 'authentication' : msg.kind;
      rejects(f, wrong, new RegExp(`\\(${kind}\\) is sent by the ${sideOf(msg.kind)}, not by the ${wrong}`));
    }
  });

  it('rejects unknown type bytes from both sides', () => {
    const known = new Set(Object.values(MESSAGE_TYPES));
    for (let type = 0; type < 256; type++) {
      if (known.has(type)) continue;
      for (const from of ['client', 'server'] as const) rejects({ type, body: Buffer.alloc(0) }, from, /unknown message type/);
    }
  });

  it('rejects strings over their cap before reading them, and invalid UTF-8', () => {
    const longUser = 'u'.repeat(256);
    rejects(frame('S', u16(1), u16(0), str(longUser), str(''), u16(0)), 'client', /startup message from the client: user must be 1 to 255 bytes, got 256/);
    rejects(frame('S', u16(1), u16(0), u16(0xffff)), 'client', /startup .*user must be 1 to 255 bytes, got 65535/);
    rejects(frame('S', u16(1), u16(0), str(''), str(''), u16(0)), 'client', /startup .*user must be 1 to 255 bytes, got 0/);
    rejects(frame('R', str('s'.repeat(64)), u64(0), u32(1)), 'client', /startReplication .*slotName must be 0 to 63 bytes, got 64/);
    rejects(frame('E', str('TIMEOUT'), str('m'.repeat(4097))), 'server', /error .*message must be 0 to 4096 bytes, got 4097/);
    rejects(frame('p', str('M'.repeat(33)), bin(Buffer.alloc(0))), 'client', /saslInitialResponse .*mechanism must be 1 to 32 bytes/);
    for (const bad of [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80]]) {
      rejects(frame('S', u16(1), u16(0), str(Buffer.from(bad)), str(''), u16(0)), 'client', /startup .*user is not valid UTF-8/);
    }
  });

  it('rejects byte fields and lists over their cap before reading them', () => {
    rejects(frame('q', u32(1025)), 'client', /saslResponse .*data must be at most 1024 bytes, got 1025/);
    rejects(frame('q', u32(0xffffffff)), 'client', /saslResponse .*data must be at most 1024 bytes, got 4294967295/);
    rejects(frame('w', u64(0), u64(0), u64(0), u32(16 * 1024 * 1024 + 1)), 'server', /walData .*data must be at most 16777216 bytes/);
    rejects(frame('c', u64(0), u32(0), u32(4 * 1024 * 1024 + 1)), 'server', /baseBackupChunk .*data must be at most 4194304 bytes/);
    rejects(frame('t', u32(1), str('f'), u32(1024 * 1024 + 1)), 'server', /timelineHistoryResult .*content must be at most 1048576 bytes/);
    rejects(frame('h', u64(0), u32(2000)), 'client', /hotStandbyFeedback .*horizon must be at most 1024 bytes/);
    rejects(frame('S', u16(1), u16(0), str('u'), str(''), u16(33)), 'client', /startup .*options must have 0 to 32 items, got 33/);
    rejects(frame('A', u32(10), u16(9)), 'server', /authSasl .*mechanisms must have 1 to 8 items, got 9/);
    rejects(frame('A', u32(10), u16(0)), 'server', /authSasl .*mechanisms must have 1 to 8 items, got 0/);
    rejects(frame('A', u32(10), u16(1), str('')), 'server', /authSasl .*mechanisms must be 1 to 32 bytes, got 0/);
    rejects(frame('S', u16(1), u16(0), str('u'), str(''), u16(1), str(''), str('v')), 'client', /startup .*options must be 1 to 63 bytes, got 0/);
  });

  it('rejects u64 values above 2^53 - 1 in every LSN, time and size field', () => {
    const big = 2n ** 53n;
    rejects(frame('w', u64(big), u64(0), u64(0), bin(Buffer.alloc(0))), 'server', /walData message from the server: startLsn is above 2\^53 - 1/);
    rejects(frame('w', u64(0), u64(0xffffffffffffffffn), u64(0), bin(Buffer.alloc(0))), 'server', /walData .*walEnd is above/);
    rejects(frame('k', u64(0), u64(big), u8(0)), 'server', /keepalive .*sendTime is above/);
    rejects(frame('r', u64(0), u64(0), u64(big), u64(0), u8(0)), 'client', /standbyStatusUpdate .*applyLsn is above/);
    rejects(frame('R', str(''), u64(big), u32(1)), 'client', /startReplication .*startLsn is above/);
    rejects(frame('d', u64(big), Buffer.alloc(32), u64(0)), 'server', /baseBackupEnd .*totalBytes is above/);
    rejects(frame('b', u64(0), u32(1), str(''), u8(1), u64(big)), 'server', /baseBackupBegin .*totalBytes is above/);
    // The largest safe value is accepted.
    const ok = decodeMessage(frame('k', u64(2n ** 53n - 1n), u64(0), u8(0)), 'server');
    assert.equal(ok.kind === 'keepalive' && ok.walEnd, MAX_LSN);
  });

  it('rejects WAL data and chunks that end beyond 2^53', () => {
    rejects(frame('w', u64(2n ** 53n - 2n), u64(0), u64(0), bin(Buffer.alloc(3))), 'server', /walData .*data ends beyond LSN 2\^53/);
    const data = Buffer.alloc(2);
    rejects(frame('c', u64(2n ** 53n - 2n), u32(crc32c.calculate(data)), bin(data)), 'server', /baseBackupChunk .*data ends beyond offset/);
  });

  it('rejects bad enum values and flags', () => {
    rejects(frame('k', u64(0), u64(0), u8(2)), 'server', /keepalive .*replyRequested must be 0 or 1, got 2/);
    rejects(frame('r', u64(0), u64(0), u64(0), u64(0), u8(0xff)), 'client', /standbyStatusUpdate .*replyRequested must be 0 or 1/);
    for (const subcode of [1, 3, 5, 9, 13, 0xffffffff]) {
      rejects(frame('A', u32(subcode)), 'server', new RegExp(`authentication message from the server: subcode ${subcode} is not one of 0, 10, 11, 12`));
    }
    rejects(frame('b', u64(0), u32(1), str(''), u8(2), u64(0)), 'server', /baseBackupBegin .*totalBytes has presence flag 2/);
    rejects(frame('b', u64(0), u32(1), str(''), u8(0), u64(5)), 'server', /baseBackupBegin .*totalBytes is absent but its value bytes are not zero/);
  });

  it('rejects timeline 0', () => {
    rejects(frame('T', u32(0)), 'client', /timelineHistory .*timeline must be at least 1, got 0/);
    rejects(frame('R', str(''), u64(0), u32(0)), 'client', /startReplication .*timeline must be at least 1/);
    rejects(frame('e', u32(0), u64(0)), 'server', /endOfTimeline .*nextTimeline must be at least 1/);
    rejects(frame('s', u32(0), u64(0)), 'server', /replicationStarted .*timeline must be at least 1/);
  });

  it('rejects a system id that is not 16 lower-case hex characters', () => {
    for (const id of ['0123456789ABCDEF', '0123456789abcde', '0123456789abcdef0', '0123456789abcdeg', 'ｆ123456789abcde']) {
      rejects(frame('i', str(id), u32(1), u64(0), u32(65536)), 'server', /identifySystemResult .*systemId (must be exactly 16 bytes|does not match)/);
    }
  });

  it('rejects a chunk whose CRC-32C does not match its data', () => {
    const good = baseBackupChunk(0, Buffer.from('snapshot bytes'));
    assert.ok(checkChunk(good));
    const bytes = Buffer.from(encodeMessage(good));
    bytes[bytes.length - 1]! ^= 1;
    const f = toFrame(bytes);
    rejects(f, 'server', /baseBackupChunk message from the server: crc32c does not match the data/);
    assert.equal(checkChunk({ ...good, crc32c: good.crc32c ^ 1 }), false);
  });

  it('rejects duplicate startup option keys', () => {
    rejects(frame('S', u16(1), u16(0), str('u'), str(''), u16(2), str('k'), str('1'), str('k'), str('2')), 'client', /startup .*options has duplicate keys/);
  });

  it('rejects malformed error codes and maps unknown well-formed ones to PROTOCOL_ERROR', () => {
    rejects(frame('E', str('timeout'), str('m')), 'server', /error .*code does not match/);
    rejects(frame('E', str(''), str('m')), 'server', /error .*code must be 1 to 63 bytes/);
    const decoded = decodeMessage(frame('E', str('SHINY_NEW_CODE'), str('from the future')), 'server');
    assert.deepEqual(decoded, { kind: 'error', code: 'PROTOCOL_ERROR', message: 'unknown error code SHINY_NEW_CODE: from the future' });
  });

  it('decodes a startup of any protocol version, so the handshake can name both', () => {
    const decoded = decodeMessage(frame('S', u16(7), u16(3), str('u'), str('a'), u16(0)), 'client');
    assert.deepEqual(decoded, { kind: 'startup', protocolMajor: 7, protocolMinor: 3, user: 'u', applicationName: 'a', options: [] });
  });
});

describe('protocol messages: encoding validates', () => {
  const wal = { kind: 'walData', startLsn: 0, walEnd: 0, sendTime: 0, data: Buffer.alloc(0) } as const;
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown kind', { kind: 'nope' }, /unknown kind "nope"/],
    ['null', null, /unknown kind undefined/],
    ['negative LSN', { ...wal, startLsn: -1 }, /walData: startLsn must be an integer from 0 to 2\^53 - 1, got -1/],
    ['fractional LSN', { ...wal, walEnd: 1.5 }, /walData: walEnd must be an integer/],
    ['unsafe time', { ...wal, sendTime: 2 ** 53 }, /walData: sendTime must be an integer/],
    ['bigint LSN', { ...wal, startLsn: 1n }, /walData: startLsn must be an integer/],
    ['data not bytes', { ...wal, data: [1, 2] }, /walData: data must be a Uint8Array, got an array/],
    ['data beyond 2^53', { ...wal, startLsn: MAX_LSN, data: Buffer.alloc(2) }, /walData: data ends beyond LSN 2\^53/],
    ['oversized data', { ...wal, data: Buffer.alloc(16 * 1024 * 1024 + 1) }, /walData: data must be at most 16777216 bytes/],
    ['timeline 0', { kind: 'timelineHistory', timeline: 0 }, /timelineHistory: timeline must be an integer from 1 to 4294967295, got 0/],
    ['timeline too big', { kind: 'replicationStarted', timeline: 2 ** 32, startLsn: 0, historyChecked: false }, /replicationStarted: timeline must be an integer/],
    ['u16 overflow', { kind: 'startup', protocolMajor: 65536, protocolMinor: 0, user: 'u', applicationName: '', options: [] }, /startup: protocolMajor must be an integer from 0 to 65535/],
    ['empty user', { kind: 'startup', protocolMajor: 1, protocolMinor: 0, user: '', applicationName: '', options: [] }, /startup: user must be 1 to 255 bytes of UTF-8, got 0/],
    ['long user (bytes, not characters)', { kind: 'startup', protocolMajor: 1, protocolMinor: 0, user: 'é'.repeat(128), applicationName: '', options: [] }, /startup: user must be 1 to 255 bytes of UTF-8, got 256/],
    ['lone surrogate', { kind: 'baseBackup', label: 'a\ud800b', maxRate: 0 }, /baseBackup: label contains an unpaired surrogate/],
    ['too many options', { kind: 'startup', protocolMajor: 1, protocolMinor: 0, user: 'u', applicationName: '', options: Array.from({ length: 33 }, (_, i) => ({ key: `k${i}`, value: '' })) }, /startup: options must have 0 to 32 items, got 33/],
    ['option not an object', { kind: 'startup', protocolMajor: 1, protocolMinor: 0, user: 'u', applicationName: '', options: ['k=v'] }, /startup: options must be \{ key, value \} objects/],
    ['duplicate options', { kind: 'startup', protocolMajor: 1, protocolMinor: 0, user: 'u', applicationName: '', options: [{ key: 'a', value: '1' }, { key: 'a', value: '2' }] }, /startup: options has duplicate keys/],
    ['non-boolean flag', { kind: 'keepalive', walEnd: 0, sendTime: 0, replyRequested: 1 }, /keepalive: replyRequested must be a boolean, got 1/],
    ['unknown error code', { kind: 'error', code: 'NOPE', message: '' }, /error: code must be a key of ERROR_CODES, got "NOPE"/],
    ['inherited key as error code', { kind: 'error', code: 'toString', message: '' }, /error: code must be a key of ERROR_CODES/],
    ['bad system id', { kind: 'identifySystemResult', systemId: '0123456789ABCDEF', timeline: 1, flushLsn: 0, segmentSize: 65536 }, /identifySystemResult: systemId does not match/],
    ['no mechanisms', { kind: 'authSasl', mechanisms: [] }, /authSasl: mechanisms must have 1 to 8 items, got 0/],
    ['short sha256', { kind: 'baseBackupEnd', totalBytes: 0, sha256: Buffer.alloc(31), endLsn: 0 }, /baseBackupEnd: sha256 must be exactly 32 bytes, got 31/],
    ['bad totalBytes', { kind: 'baseBackupBegin', startLsn: 0, timeline: 1, label: '', totalBytes: -1 }, /baseBackupBegin: totalBytes must be null or an integer/],
    ['wrong crc', { kind: 'baseBackupChunk', offset: 0, crc32c: 1, data: Buffer.from('x') }, /baseBackupChunk: crc32c does not match the data/],
    ['missing field', { kind: 'baseBackup', label: 'x' }, /baseBackup: maxRate must be an integer from 0 to 4294967295, got undefined/],
  ];
  for (const [name, msg, message] of cases) {
    it(`refuses ${name}`, () => refusesToEncode(msg, message));
  }
});
