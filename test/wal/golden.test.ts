import assert from 'node:assert/strict';
import { cp } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { WalLog, formatLsn } from '../../src/index.js';
import { goldenRecords } from '../fixtures/wal-v1-records.js';
import { tempDir } from '../helpers/temp-dir.js';
import { readAll } from '../helpers/wal.js';

describe('golden on-disk fixtures', () => {
  it('reads format version 1 exactly as it was written, and appends after it', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await cp(new URL('../fixtures/wal-v1', import.meta.url), dir, { recursive: true });
      const log = await WalLog.open({ dir });
      assert.equal(log.segmentSize, 64 * 1024);
      const records = await readAll(log);
      const expected = goldenRecords();
      assert.deepEqual(
        records.map((r) => r.entries.map((e) => ({ data: Buffer.from(e.data), channel: e.channel }))),
        expected.map((batch) => batch.map((e) => ({ data: Buffer.from(e.data), channel: e.channel }))),
      );
      // Positions are part of the format: the first record, and the one after the segment switch.
      assert.equal(formatLsn(records[0]?.lsn ?? 0), '0/10020');
      assert.equal(formatLsn(records.at(-2)?.lsn ?? 0), '0/20020');
      assert.equal(formatLsn(records.at(-1)?.lsn ?? 0), '0/22378');
      assert.equal(formatLsn(log.insertLsn), formatLsn(records.at(-1)?.endLsn ?? 0));
      assert.equal(formatLsn(log.insertLsn), '0/223C0');
      log.append(Buffer.from('new'));
      await log.close();
    } finally {
      await cleanup();
    }
  });
});
