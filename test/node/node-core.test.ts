import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalLog } from '../../src/index.js';
import { readControlFile, writeControlFile, type ControlData } from '../../src/node/control-file.js';
import { NodeCore } from '../../src/node/node-core.js';
import { SlotManager } from '../../src/slots/slot-manager.js';
import { MemoryStorage } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';

describe('NodeCore', () => {
  it('control-file updates run one at a time, each on what the previous one left: none is lost', async () => {
    const storage = new MemoryStorage();
    const log = await WalLog.open({ storage, segmentSize: 64 * 1024 });
    const control: ControlData = { state: 'shut-down-in-recovery', systemId: '0123456789abcdef', segmentSize: 64 * 1024, timeline: 1, checkpoint: null, consistentLsn: 0 };
    await writeControlFile(storage, control);
    const core = new NodeCore({ storage, application: new RecordingApp(), entryBuffers: 'owned', walKeepSize: 0, maxSlotWalKeepSize: -1 });
    await core.attach({ control, log, slots: await SlotManager.open(storage) });
    // A state change and a checkpoint at once (a standby starting to stream while its
    // application checkpoints): both must survive, in memory and on disk.
    await Promise.all([
      core.updateControl((current) => ({ ...current, state: 'in-recovery' })),
      core.updateControl((current) => ({ ...current, checkpoint: { lsn: 128, snapshot: false } })),
      core.updateControl((current) => ({ ...current, consistentLsn: 64 })),
    ]);
    const expected = { ...control, state: 'in-recovery', checkpoint: { lsn: 128, snapshot: false }, consistentLsn: 64 };
    assert.deepEqual(core.control, expected, "the node's view has every change");
    assert.deepEqual(await readControlFile(storage), expected, 'the file has every change');
    await core.close();
  });
});
