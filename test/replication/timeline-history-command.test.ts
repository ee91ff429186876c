import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError } from '../../src/index.js';
import { fetchTimelineHistory } from '../../src/protocol/replication-client.js';
import { createCluster } from '../../src/testing/index.js';
import { FIRST_TIMELINE_HISTORY, branchHistory, parseTimelineHistory, writeTimelineHistory } from '../../src/wal/timeline-history.js';
import { RecordingApp } from '../helpers/apps.js';
import { rawStandby } from '../helpers/primary-helpers.js';

describe('TIMELINE_HISTORY', () => {
  it("answers with the node's history file; a timeline it has no history of is an error that keeps the connection", async (t) => {
    const cluster = createCluster(t, { auth: 'trust' });
    const history = branchHistory(branchHistory(FIRST_TIMELINE_HISTORY, 0x3000158, 'promoted'), 0x5000060, 'promoted again');
    // History files are a node's: written into a directory that has its control file (a new
    // directory holding them would be refused with CONTROL_FILE_MISSING).
    await (await cluster.primary('p', { application: new RecordingApp() })).close();
    await writeTimelineHistory(cluster.storage('p'), branchHistory(FIRST_TIMELINE_HISTORY, 0x3000158, 'promoted'));
    await writeTimelineHistory(cluster.storage('p'), history);
    // A damaged file of timeline 5: its request fails, the connection does not.
    const damaged = await cluster.storage('p').open('00000005.history', { create: true });
    await damaged.write(Buffer.from('1\t0/10\tx\n# crc32c 00000000\n'), 0);
    await damaged.datasync();
    await damaged.close();
    await cluster.storage('p').syncDirectory();
    const primary = await cluster.primary('p', { application: new RecordingApp() });
    const conn = await rawStandby(cluster.transport('client'), cluster.address(primary));
    try {
      const answer = await fetchTimelineHistory(conn, 3);
      assert.equal(answer.fileName, '00000003.history', 'the file name');
      assert.deepEqual(parseTimelineHistory(3, Buffer.from(answer.content).toString('utf8')), history, 'the history, as the node has it');
      for (const missing of [1, 7]) {
        await assert.rejects(fetchTimelineHistory(conn, missing), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'), `timeline ${missing} has no history file`);
      }
      await assert.rejects(fetchTimelineHistory(conn, 5), (err: unknown) => isWalshipError(err, 'WAL_CORRUPT'), 'a damaged history file is WAL_CORRUPT');
      const again = await fetchTimelineHistory(conn, 2);
      assert.equal(again.fileName, '00000002.history', 'the connection is still usable after the refusals');
    } finally {
      conn.destroy();
    }
  });
});
