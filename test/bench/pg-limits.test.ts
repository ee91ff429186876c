import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { sharedDiskFdatasyncUs } from '../../bench/pg/limits.js';

describe('bench:pg limits', () => {
  it('the shared-disk fdatasync (F∥) is a p50 taken while other processes sync beside it, whose files are removed after', async (t) => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-pg-limits-'));
    t.after(() => fs.rm(dir, { recursive: true, force: true }));
    const us = await sharedDiskFdatasyncUs(dir, 200, 2);
    assert.ok(Number.isFinite(us) && us > 0, `a p50 in µs: ${us}`);
    assert.deepEqual(await fs.readdir(dir), [], 'the files of all three processes are removed');
  });
});
