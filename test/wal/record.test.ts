import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  COMMIT_TIME_SIZE,
  FORMAT_VERSION,
  MAX_RESTORE_POINT_NAME_BYTES,
  RECORD_BATCH,
  RECORD_HEADER_SIZE,
  RECORD_RESTORE_POINT,
  align,
  checkFormatVersion,
  checkRecordCrc,
  checkRecordHeader,
  decodeEntries,
  decodeRestorePoint,
  entriesOffset,
  entrySize,
  readCommitTime,
  readRecordHeader,
  readSegmentHeader,
  restorePointPayloadSize,
  sealRecord,
  writeCommitTime,
  writeEntry,
  writeRestorePoint,
  writeSegmentHeader,
  type WalEntry,
} from '../../src/wal/record.js';

/** A batch record as the writer lays it out in a segment of format `version` (2 carries `micros`). */
function encode(entries: WalEntry[], lsn: number, flushedLsn: number, version = FORMAT_VERSION, micros = 1_700_000_000_000_000): Buffer {
  let payload = version >= 2 ? COMMIT_TIME_SIZE : 0;
  for (const e of entries) payload += entrySize(e.data.length, e.channel === undefined ? 0 : Buffer.byteLength(e.channel));
  const buf = Buffer.alloc(align(RECORD_HEADER_SIZE + payload));
  if (version >= 2) writeCommitTime(buf, 0, micros);
  let at = entriesOffset(version);
  for (const e of entries) at = writeEntry(buf, at, e.data, e.channel, e.channel === undefined ? 0 : Buffer.byteLength(e.channel));
  sealRecord(buf, 0, RECORD_BATCH, payload, entries.length, lsn, flushedLsn);
  return buf;
}

/** A restore-point record named `name`, made at `micros`. */
function encodeRestorePoint(name: string, micros: number, lsn: number, flushedLsn: number): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const payload = restorePointPayloadSize(nameBytes);
  const buf = Buffer.alloc(align(RECORD_HEADER_SIZE + payload));
  writeRestorePoint(buf, 0, micros, name, nameBytes);
  sealRecord(buf, 0, RECORD_RESTORE_POINT, payload, 0, lsn, flushedLsn);
  return buf;
}

/** Whether the record at offset 0, claimed to be at `lsn` in a segment of format `version`, passes every check a reader makes. */
function accepted(buf: Buffer, lsn: number, version = FORMAT_VERSION): boolean {
  const header = readRecordHeader(buf, 0);
  if (checkRecordHeader(header, lsn, buf.length) !== null) return false;
  if (header.length > buf.length || !checkRecordCrc(buf, 0, header)) return false;
  if (header.type === RECORD_RESTORE_POINT) return decodeRestorePoint(buf, 0, header, version) !== null;
  return decodeEntries(buf, 0, header, version) !== null;
}

const entryArb = fc.record(
  {
    data: fc.uint8Array({ maxLength: 300 }),
    channel: fc.string({ minLength: 1, maxLength: 20 }).filter((c) => Buffer.byteLength(c) <= 255),
  },
  { requiredKeys: ['data'] },
);
const lsnArb = fc.integer({ min: 0, max: 2 ** 40 }).map((n) => n * 8);
/** Commit times from the epoch to the year 2255 in microseconds (2^53 − 1 at most). */
const microsArb = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
/** Restore-point names: 1 to 64 UTF-8 bytes of well-formed text. */
const nameArb = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 64 }).filter((n) => Buffer.byteLength(n) >= 1 && Buffer.byteLength(n) <= MAX_RESTORE_POINT_NAME_BYTES);

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
        const decoded = decodeEntries(buf, 0, header, FORMAT_VERSION);
        assert.deepEqual(
          decoded?.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })),
          entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })),
        );
      }),
      { seed: 11, numRuns: 300 },
    );
  });

  it('round-trips the commit time of a format-2 batch; a format-1 batch has none and starts its entries after the header', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { minLength: 1, maxLength: 4 }), lsnArb, microsArb, (entries, lsn, micros) => {
        const v2 = encode(entries, lsn, 0, 2, micros);
        const v1 = encode(entries, lsn, 0, 1);
        assert.equal(v2.length, align(readRecordHeader(v1, 0).length + COMMIT_TIME_SIZE), 'format 2 adds 8 bytes before the entries');
        assert.equal(readCommitTime(v2, 0, 2), micros);
        assert.equal(readCommitTime(v1, 0, 1), null);
        for (const [buf, version] of [[v1, 1], [v2, 2]] as const) {
          assert.ok(accepted(buf, lsn, version), `format ${version} batch accepted`);
          assert.deepEqual(
            decodeEntries(buf, 0, readRecordHeader(buf, 0), version)?.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })),
            entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel })),
          );
        }
        // Read with the other version's layout, a batch does not parse (or parses into other entries, never silently the same).
        const misread = decodeEntries(v1, 0, readRecordHeader(v1, 0), 2);
        assert.ok(misread === null || misread.length !== entries.length || misread.some((e, i) => !Buffer.from(e.data).equals(Buffer.from(entries[i]?.data ?? []))), 'a format-1 batch read as format 2 is not taken for itself');
      }),
      { seed: 12, numRuns: 300 },
    );
  });

  it('round-trips restore points: name, time, 8-byte aligned, no entries', () => {
    fc.assert(
      fc.property(nameArb, microsArb, lsnArb, (name, micros, lsn) => {
        const buf = encodeRestorePoint(name, micros, lsn, Math.floor(lsn / 2));
        assert.equal(buf.length % 8, 0);
        const header = readRecordHeader(buf, 0);
        assert.equal(header.type, RECORD_RESTORE_POINT);
        assert.equal(header.entryCount, 0);
        assert.ok(accepted(buf, lsn));
        assert.deepEqual(decodeRestorePoint(buf, 0, header, 2), { name, micros });
        assert.equal(decodeRestorePoint(buf, 0, header, 1), null, 'format 1 has no restore points');
        assert.equal(accepted(buf, lsn + 8), false, 'read at another position it is no record');
      }),
      { seed: 13, numRuns: 300 },
    );
  });

  it('refuses malformed restore points: no name, a name too long, a length that disagrees with the name', () => {
    for (const nameBytes of [0, MAX_RESTORE_POINT_NAME_BYTES + 1]) {
      const payload = restorePointPayloadSize(nameBytes);
      const buf = Buffer.alloc(align(RECORD_HEADER_SIZE + payload));
      buf[RECORD_HEADER_SIZE + 8] = nameBytes;
      sealRecord(buf, 0, RECORD_RESTORE_POINT, payload, 0, 64, 0);
      assert.equal(checkRecordHeader(readRecordHeader(buf, 0), 64, 4096), 'malformed restore point record', `a name of ${nameBytes} bytes`);
    }
    const buf = encodeRestorePoint('before-migration', 1, 64, 0);
    buf[RECORD_HEADER_SIZE + 8] = 3; // the name's length no longer matches the record's
    sealRecord(buf, 0, RECORD_RESTORE_POINT, restorePointPayloadSize(Buffer.byteLength('before-migration')), 0, 64, 0);
    const header = readRecordHeader(buf, 0);
    assert.equal(checkRecordHeader(header, 64, 4096), null);
    assert.equal(decodeRestorePoint(buf, 0, header, 2), null);
  });

  it('detects every single-bit flip anywhere in a restore point', () => {
    const pristine = encodeRestorePoint('nightly ü', 1_700_000_000_123_456, 0x1_0000_0028, 0x1_0000_0000);
    const length = readRecordHeader(pristine, 0).length;
    for (let bit = 0; bit < length * 8; bit++) {
      const damaged = Buffer.from(pristine);
      damaged[bit >> 3] = (damaged[bit >> 3] as number) ^ (1 << (bit & 7));
      assert.equal(accepted(damaged, 0x1_0000_0028), false, `flip of bit ${bit} went unnoticed`);
    }
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
    assert.deepEqual(readSegmentHeader(buf, 0), { formatVersion: 2, segmentSize: 16 * 1024 * 1024, timeline: 7, startLsn: 0x3_0000_0000 });
    for (let bit = 0; bit < 256; bit++) {
      const damaged = Buffer.from(buf);
      damaged[bit >> 3] = (damaged[bit >> 3] as number) ^ (1 << (bit & 7));
      assert.equal(readSegmentHeader(damaged, 0), null, `flip of bit ${bit} went unnoticed`);
    }
    assert.equal(readSegmentHeader(Buffer.alloc(32), 0), null);
  });
});

describe('format versions', () => {
  it('reads versions 1 and 2, and refuses others with WAL_FORMAT', () => {
    assert.equal(FORMAT_VERSION, 2);
    for (const version of [1, 2]) assert.doesNotThrow(() => checkFormatVersion(version, 'x'));
    for (const version of [0, 3, 0xffff]) assert.throws(() => checkFormatVersion(version, 'x'), { code: 'WAL_FORMAT' });
  });
});
