import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  RECORD_BATCH,
  RECORD_HEADER_SIZE,
  align,
  checkRecordCrc,
  checkRecordHeader,
  decodeEntries,
  entrySize,
  readRecordHeader,
  readSegmentHeader,
  sealRecord,
  writeEntry,
  writeSegmentHeader,
  type WalEntry,
} from '../../src/wal/record.js';

function encode(entries: WalEntry[], lsn: number, flushedLsn: number): Buffer {
  let payload = 0;
  for (const e of entries) payload += entrySize(e.data.length, e.channel === undefined ? 0 : Buffer.byteLength(e.channel));
  const buf = Buffer.alloc(align(RECORD_HEADER_SIZE + payload));
  let at = RECORD_HEADER_SIZE;
  for (const e of entries) at = writeEntry(buf, at, e.data, e.channel, e.channel === undefined ? 0 : Buffer.byteLength(e.channel));
  sealRecord(buf, 0, RECORD_BATCH, payload, entries.length, lsn, flushedLsn);
  return buf;
}

/** Whether the record at offset 0, claimed to be at `lsn`, passes every check a reader makes. */
function accepted(buf: Buffer, lsn: number): boolean {
  const header = readRecordHeader(buf, 0);
  if (checkRecordHeader(header, lsn, buf.length) !== null) return false;
  if (header.length > buf.length || !checkRecordCrc(buf, 0, header)) return false;
  return decodeEntries(buf, 0, header) !== null;
}

const entryArb = fc.record(
  {
    data: fc.uint8Array({ maxLength: 300 }),
    channel: fc.string({ minLength: 1, maxLength: 20 }).filter((c) => Buffer.byteLength(c) <= 255),
  },
  { requiredKeys: ['data'] },
);
const lsnArb = fc.integer({ min: 0, max: 2 ** 40 }).map((n) => n * 8);

describe('record codec', () => {
  it('round-trips batches with and without channels, 8-byte aligned', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { minLength: 1, maxLength: 8 }), lsnArb, (entries, lsn) => {
        const buf = encode(entries, lsn, Math.floor(lsn / 2));
        assert.equal(buf.length % 8, 0);
        const header = readRecordHeader(buf, 0);
        assert.equal(header.lsn, lsn);
        assert.equal(header.flushedLsn, Math.floor(lsn / 2));
        assert.ok(accepted(buf, lsn));
        const decoded = decodeEntries(buf, 0, header);
        assert.deepEqual(
          decoded?.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })),
          entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })),
        );
      }),
      { seed: 11, numRuns: 300 },
    );
  });

  it('detects every single-bit flip anywhere in a record', () => {
    const samples: WalEntry[][] = [
      [{ data: new Uint8Array([1, 2, 3]) }],
      [{ data: Buffer.from('hello world'), channel: 'orders' }, { data: new Uint8Array(0) }],
      [{ data: Buffer.alloc(200, 0xab) }, { data: Buffer.from('x'), channel: 'ü' }],
    ];
    for (const entries of samples) {
      const lsn = 0x1_0000_0028;
      const pristine = encode(entries, lsn, 0x1_0000_0000);
      const length = readRecordHeader(pristine, 0).length;
      assert.ok(accepted(pristine, lsn));
      for (let bit = 0; bit < length * 8; bit++) {
        const damaged = Buffer.from(pristine);
        damaged[bit >> 3] = (damaged[bit >> 3] as number) ^ (1 << (bit & 7));
        assert.equal(accepted(damaged, lsn), false, `flip of bit ${bit} went unnoticed`);
      }
    }
  });

  it('rejects a valid record read at another position (recycled or stale bytes)', () => {
    const buf = encode([{ data: Buffer.from('stale') }], 4096, 0);
    assert.ok(accepted(buf, 4096));
    assert.equal(accepted(buf, 4096 + 16 * 1024 * 1024), false);
  });

  it('treats zeroed space as no record', () => {
    assert.equal(checkRecordHeader(readRecordHeader(Buffer.alloc(32), 0), 64, 1024), 'zeroed space');
  });

  it('rejects lengths beyond the room left in the segment', () => {
    const buf = encode([{ data: Buffer.alloc(100) }], 64, 0);
    const header = readRecordHeader(buf, 0);
    assert.notEqual(checkRecordHeader(header, 64, header.length - 1), null);
    assert.equal(checkRecordHeader(header, 64, header.length), null);
  });
});

describe('segment header', () => {
  it('round-trips and detects every bit flip', () => {
    const buf = Buffer.alloc(32);
    writeSegmentHeader(buf, 0, 16 * 1024 * 1024, 7, 0x3_0000_0000);
    assert.deepEqual(readSegmentHeader(buf, 0), { formatVersion: 1, segmentSize: 16 * 1024 * 1024, timeline: 7, startLsn: 0x3_0000_0000 });
    for (let bit = 0; bit < 256; bit++) {
      const damaged = Buffer.from(buf);
      damaged[bit >> 3] = (damaged[bit >> 3] as number) ^ (1 << (bit & 7));
      assert.equal(readSegmentHeader(damaged, 0), null, `flip of bit ${bit} went unnoticed`);
    }
    assert.equal(readSegmentHeader(Buffer.alloc(32), 0), null);
  });
});
