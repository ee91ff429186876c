import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Primary, type Application, type CommittedBatch, type EntryBuffers } from '../../src/index.js';
import { createCluster } from '../../src/testing/index.js';
import { within } from '../helpers/wal.js';
import { HANG_MS } from '../helpers/standby-harness.js';

const COUNT = 2_000;

/** An application that keeps every entry's buffer, as a careless but legitimate one would. */
class KeepingApp implements Application {
  readonly kept: Uint8Array[] = [];
  apply(batch: CommittedBatch): void {
    for (const entry of batch.entries) this.kept.push(entry.data);
  }
}

/** Entry `i`: distinct content of a size that varies, so reused read buffers would show. */
function entry(i: number): Buffer {
  const data = Buffer.alloc(40 + (i % 300), i & 0xff);
  data.writeUInt32LE(i, 0);
  return data;
}

/** How many kept buffers no longer hold what was committed. */
function damaged(app: KeepingApp): number {
  let bad = 0;
  for (let i = 0; i < COUNT; i++) {
    const kept = app.kept[i];
    if (kept === undefined || !Buffer.from(kept).equals(entry(i))) bad++;
  }
  return bad;
}

describe("entry buffers are the application's to keep (entryBuffers: 'owned', the default)", () => {
  it('on a live primary, on a standby, and in replay after a primary restart: every kept entry still holds what was committed', async (t) => {
    const cluster = createCluster(t);
    const appP = new KeepingApp();
    const primary = await cluster.primary('p', { application: appP });
    const appS = new KeepingApp();
    const standby = await cluster.standby('s', { upstream: primary, application: appS });
    let last = 0;
    for (let i = 0; i < COUNT; i += 50) {
      const results = await Promise.all(Array.from({ length: 50 }, (_, k) => primary.commit([entry(i + k)])));
      last = results.at(-1)?.lsn ?? last;
    }
    await within(standby.waitForReplay(last), HANG_MS, 'the standby to replay');
    assert.equal(damaged(appP), 0, 'the live primary');
    assert.equal(appS.kept.length, COUNT, 'the standby applied every entry');
    assert.equal(damaged(appS), 0, 'the standby (replay reads the WAL into reused buffers)');
    await standby.close();
    await primary.close();
    const appR = new KeepingApp();
    const restarted = await Primary.open({ storage: cluster.storage('p'), application: appR, segmentSize: 64 * 1024 });
    try {
      assert.equal(appR.kept.length, COUNT, 'the restarted primary replayed every entry');
      assert.equal(damaged(appR), 0, 'replay after a restart');
    } finally {
      await restarted.close();
    }
  });

  it("'borrowed' is the explicit zero-copy mode: entries are views, applied in order all the same", async (t) => {
    const cluster = createCluster(t);
    const mode: EntryBuffers = 'borrowed';
    const seen: string[] = [];
    const app: Application = { apply: (batch) => void seen.push(...batch.entries.map((e) => Buffer.from(e.data).toString('hex'))) };
    const primary = await cluster.primary('p', { application: { apply: () => undefined } });
    const standby = await cluster.standby('s', { upstream: primary, application: app, entryBuffers: mode });
    const { lsn } = await primary.commit([entry(1), entry(2)]);
    await within(standby.waitForReplay(lsn), HANG_MS, 'replay');
    assert.deepEqual(seen, [entry(1).toString('hex'), entry(2).toString('hex')], 'copied during apply, the views hold the committed bytes');
  });
});
