import assert from 'node:assert/strict';
import { cp, readFile, readdir } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { Primary, WalLog, formatLsn } from '../../src/index.js';
import { parseTimelineHistory } from '../../src/wal/timeline-history.js';
import { timelineTwoRecords } from '../fixtures/timeline2-records.js';
import { RecordingApp } from '../helpers/apps.js';
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

  it('reads a timeline-2 data directory: both timelines along the history, the old switch segment set aside', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await cp(new URL('../fixtures/timeline2', import.meta.url), dir, { recursive: true });
      const history = parseTimelineHistory(2, await readFile(`${dir}/00000002.history`, 'utf8'));
      assert.deepEqual(history.entries.map((e) => [e.timeline, formatLsn(e.switchLsn), e.reason]), [[1, '0/2FA18', 'promoted by the golden fixture']]);
      const { before, after } = timelineTwoRecords();
      // The last batch of timeline 1 had arrived only in part: the promotion cut it.
      const expected = [...before.slice(0, -1), ...after].map((batch) => Buffer.from(batch[0] ?? []).toString());
      const log = await WalLog.open({ dir });
      assert.equal(log.timeline, 2);
      const records = await readAll(log);
      assert.deepEqual(records.map((r) => Buffer.from(r.entries[0]?.data ?? []).toString()), expected);
      assert.ok(records.every((r) => r.timeline === (r.lsn < 0x2fa18 ? 1 : 2)));
      assert.equal(log.segmentName(0x2fa18), '000000020000000000000002');
      assert.equal(log.segmentName(0x1ffff), '000000010000000000000001');
      await log.close();

      const app = new RecordingApp();
      const primary = await Primary.open({ dir, application: app });
      assert.equal(primary.timeline, 2);
      assert.deepEqual(app.applied.map((b) => Buffer.from(b.entries[0] ?? '', 'hex').toString()), expected);
      await primary.commit([Buffer.from('three')]);
      await primary.close();
      assert.ok((await readdir(dir)).includes('000000010000000000000002.partial'));
    } finally {
      await cleanup();
    }
  });
});
