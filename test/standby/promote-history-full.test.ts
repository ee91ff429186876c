import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CONTROL_FILE, readControlFile, writeControlFile } from '../../src/node/control-file.js';
import { createCluster } from '../../src/testing/index.js';
import { MAX_HISTORY_BYTES, historyFileName, readTimelineHistory, writeTimelineHistory } from '../../src/wal/timeline-history.js';
import { RecordingApp } from '../helpers/apps.js';
import { HANG_MS, codeOf, commitMany, receivedTo, replayedTo } from '../helpers/standby-harness.js';
import { historyOfSize } from '../helpers/timeline-history.js';
import { within } from '../helpers/wal.js';

// A timeline history grows by one line per promotion, and walship reads at most 1 MiB of it
// (#13): a promotion that would write a longer file fails before it records anything.

describe('Standby.promote on a history that can grow no more', () => {
  it('fails with FILE_TOO_LARGE before recording anything; the standby streams on, and reopens as a standby', async (t) => {
    const cluster = createCluster(t);
    // A cluster on a timeline whose history file is 10 bytes short of what walship reads (its
    // ancestors all left at 0/0, so its WAL starts afresh on that timeline).
    const history = historyOfSize(MAX_HISTORY_BYTES - 10);
    const seed = cluster.storage('p');
    await writeTimelineHistory(seed, history);
    await writeControlFile(seed, { state: 'shut-down', systemId: '0123456789abcdef', segmentSize: 64 * 1024, timeline: history.timeline, checkpoint: null, consistentLsn: 0 });
    const p = await cluster.primary('p', { application: new RecordingApp() });
    assert.equal(p.timeline, history.timeline);

    const app = new RecordingApp();
    const s = await cluster.standby('s', { upstream: p, application: app });
    await replayedTo(s, await commitMany(p, 0, 20), 'the standby to replay');
    await receivedTo(s, p.flushLsn);
    const storage = cluster.storage('s');
    assert.deepEqual(await readTimelineHistory(storage, history.timeline), history, "the standby holds its upstream's history");
    const control = Buffer.from(storage.readFile(CONTROL_FILE));

    assert.equal(await within(codeOf(s.promote()), HANG_MS, 'the promotion to fail'), 'FILE_TOO_LARGE');
    assert.notEqual(s.state, 'promoted');
    assert.deepEqual(Buffer.from(storage.readFile(CONTROL_FILE)), control, 'the control file is untouched');
    assert.ok(!storage.fileNames().includes(historyFileName(history.timeline + 1)), 'no history file for a new timeline');

    // It goes on as a standby: streaming, replaying, and opening again as one.
    await replayedTo(s, await commitMany(p, 20, 20), 'the standby to replay after the failed promotion');
    await s.close();
    assert.equal((await readControlFile(storage))?.state, 'shut-down-in-recovery');
    const reopened = await cluster.standby('s', { upstream: p, application: app });
    assert.equal(reopened.timeline, history.timeline);
    await replayedTo(reopened, await commitMany(p, 40, 5), 'the reopened standby to replay');
  });
});
