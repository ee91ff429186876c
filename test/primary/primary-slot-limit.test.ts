import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Primary,
  Standby,
  isWalshipError,
  type ErrorCode,
  type Lsn,
} from '../../src/index.js';
import { createReplicationSlot, dropReplicationSlot } from '../../src/protocol/index.js';
import { SLOTS_FILE } from '../../src/slots/slot-file.js';
import { createCluster, MemoryStorage, type ClusterOptions } from '../../src/testing/index.js';
import { RecordingApp } from '../helpers/apps.js';
import { eventually, rawStandby } from '../helpers/primary-helpers.js';
import { HANG_MS } from '../helpers/standby-harness.js';
import { tempDir } from '../helpers/temp-dir.js';
import { payload, within } from '../helpers/wal.js';

// Issue #13: any authenticated client could create slots with CREATE_REPLICATION_SLOT until
// walship.slots no longer fitted what its reader accepts, and the primary could not restart.
// maxReplicationSlots bounds them; each attack below ends in a coded refusal and a restart.

const SEGMENT = 64 * 1024;
/** The tools' hand-driven connections come in as `repl` without a password. */
const TRUST: ClusterOptions = { auth: 'trust', segmentSize: SEGMENT };

async function rejectsCode(promise: Promise<unknown>, code: ErrorCode, what = ''): Promise<void> {
  await assert.rejects(promise, (err: unknown) => isWalshipError(err, code) || assert.fail(`${what}: expected ${code}, got ${String(err)}`));
}

function slotNames(node: Primary | Standby): string[] {
  return node.slots().map((r) => r.slotName);
}

/** A 63-character slot name (the longest) ending in `i`. */
function longName(i: number): string {
  return `attack_${String(i).padStart(56, '0')}`;
}

async function commitUntil(primary: Primary, lsn: Lsn): Promise<void> {
  for (let i = 0; primary.flushLsn < lsn; i++) await primary.commit(payload(i, 8000));
}

describe('maxReplicationSlots', () => {
  it('a client creating slots over CREATE_REPLICATION_SLOT is refused at the limit with SLOT_LIMIT_REACHED; its connection stays usable and the primary restarts', async (t) => {
    const cluster = createCluster(t, TRUST);
    let primary = await cluster.primary('primary', { application: new RecordingApp() });
    const conn = await rawStandby(cluster.transport('tool'), cluster.address(primary), 'tool');
    const created: string[] = [];
    let refusal: unknown = null;
    for (let i = 0; i < 50 && refusal === null; i++) {
      await createReplicationSlot(conn, longName(i), { reserveWal: true }).then(
        (slot) => created.push(slot.slotName),
        (err: unknown) => (refusal = err),
      );
    }
    assert.equal(created.length, 10, 'the default limit is 10');
    assert.ok(isWalshipError(refusal, 'SLOT_LIMIT_REACHED'), `refused with SLOT_LIMIT_REACHED, got ${String(refusal)}`);
    assert.match((refusal as Error).message, /all replication slots are in use/);
    const file = Buffer.from(cluster.storage('primary').readFile(SLOTS_FILE));
    // Asking again changes nothing, and the connection answers the next command.
    await rejectsCode(createReplicationSlot(conn, 'one_more'), 'SLOT_LIMIT_REACHED', 'again');
    await rejectsCode(primary.createSlot('local_one'), 'SLOT_LIMIT_REACHED', 'locally');
    assert.deepEqual(Buffer.from(cluster.storage('primary').readFile(SLOTS_FILE)), file, 'the slots file is untouched');
    conn.send({ kind: 'identifySystem' });
    assert.equal((await within(conn.next(), HANG_MS, 'identifySystemResult'))?.kind, 'identifySystemResult', 'the connection still answers');
    assert.equal((await within(conn.next(), HANG_MS, 'readyForCommand'))?.kind, 'readyForCommand');
    conn.destroy();

    await primary.close();
    primary = await cluster.primary('primary', { application: new RecordingApp() });
    assert.deepEqual(slotNames(primary), created, 'the restart finds the ten slots');
    const again = await rawStandby(cluster.transport('tool'), cluster.address(primary), 'tool');
    await rejectsCode(createReplicationSlot(again, 'one_more'), 'SLOT_LIMIT_REACHED', 'after the restart');
    await dropReplicationSlot(again, created[0] as string);
    assert.equal((await createReplicationSlot(again, 'one_more')).slotName, 'one_more', 'a drop makes room');
    again.destroy();
  });

  it('a local createSlot loop stops at the limit; the primary restarts after every slot it created', async (t) => {
    const cluster = createCluster(t);
    const open = (): Promise<Primary> => cluster.primary('primary', { application: new RecordingApp(), listen: false, maxReplicationSlots: 4 });
    let primary = await open();
    await commitUntil(primary, SEGMENT + 10_000);
    for (let i = 0; ; i++) {
      const result = await primary.createSlot(longName(i), { reserveWal: i % 2 === 0 }).then(
        () => null,
        (err: unknown) => err,
      );
      await primary.close();
      primary = await open();
      if (result !== null) {
        assert.ok(isWalshipError(result, 'SLOT_LIMIT_REACHED'), `refused with SLOT_LIMIT_REACHED, got ${String(result)}`);
        assert.equal(i, 4, 'refused at the fifth');
        break;
      }
      assert.equal(primary.slots().length, i + 1, `the restart after slot ${i} finds it`);
    }
    assert.deepEqual(slotNames(primary), [0, 1, 2, 3].map(longName));
    await rejectsCode(primary.createSlot('one_more'), 'SLOT_LIMIT_REACHED');
  });

  it('a standby creating its slot on a full primary retries with SLOT_LIMIT_REACHED as its lastError, and streams once a slot is dropped', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp(), maxReplicationSlots: 1 });
    await primary.createSlot('taken');
    await commitUntil(primary, SEGMENT + 10_000);
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), connection: { slotName: 'mine', createSlot: true } });
    await eventually(() => standby.lastError?.code === 'SLOT_LIMIT_REACHED', HANG_MS, 'the standby to be refused its slot');
    assert.deepEqual(slotNames(primary), ['taken']);
    await primary.dropSlot('taken');
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'the standby to catch up with its slot');
    assert.deepEqual(slotNames(primary), ['mine']);
  });

  it('a directory holding more slots than a lowered limit opens with all of them; they keep working; none can be created', async (t) => {
    const cluster = createCluster(t, TRUST);
    let primary = await cluster.primary('primary', { application: new RecordingApp(), maxReplicationSlots: 6 });
    for (let i = 0; i < 6; i++) await primary.createSlot(`s${i}`);
    await primary.close();
    primary = await cluster.primary('primary', { application: new RecordingApp(), maxReplicationSlots: 2 });
    assert.deepEqual(slotNames(primary), ['s0', 's1', 's2', 's3', 's4', 's5'], 'no slot is dropped');
    await rejectsCode(primary.createSlot('s6'), 'SLOT_LIMIT_REACHED');
    const standby = await cluster.standby('s1', { upstream: primary, application: new RecordingApp(), connection: { slotName: 's3' } });
    await commitUntil(primary, SEGMENT + 10_000);
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'the standby to stream with an existing slot');
    await eventually(() => primary.slots().find((r) => r.slotName === 's3')?.active === true, HANG_MS, 'the slot to be in use');
  });

  it('a cascading standby keeps at most maxReplicationSlots for its downstreams', async (t) => {
    const cluster = createCluster(t, TRUST);
    const primary = await cluster.primary('primary', { application: new RecordingApp() });
    await commitUntil(primary, SEGMENT + 10_000);
    const standby = await cluster.standby('b', { upstream: primary, application: new RecordingApp(), listen: true, maxReplicationSlots: 2 });
    await within(standby.waitForReplay(primary.currentLsn), HANG_MS, 'the standby to catch up');
    await standby.createSlot('c1');
    const conn = await rawStandby(cluster.transport('tool'), cluster.address(standby), 'tool');
    await createReplicationSlot(conn, 'c2');
    await rejectsCode(createReplicationSlot(conn, 'c3'), 'SLOT_LIMIT_REACHED', 'over the protocol');
    await rejectsCode(standby.createSlot('c3'), 'SLOT_LIMIT_REACHED', 'locally');
    conn.destroy();
    assert.deepEqual(slotNames(standby), ['c1', 'c2']);
  });

  it('is validated like every option: an integer from 0 to 1024, on Primary and Standby', async (t) => {
    const cluster = createCluster(t);
    for (const bad of [-1, 1025, 2.5, '10', null]) {
      await rejectsCode(Primary.open({ storage: new MemoryStorage(), application: new RecordingApp(), maxReplicationSlots: bad as number }), 'INVALID_OPTIONS', `Primary ${String(bad)}`);
      await rejectsCode(
        cluster.standby(`s${String(bad)}`, { upstream: 'nowhere:1', application: new RecordingApp(), maxReplicationSlots: bad as number }),
        'INVALID_OPTIONS',
        `Standby ${String(bad)}`,
      );
    }
    const none = await cluster.primary('none', { application: new RecordingApp(), listen: false, maxReplicationSlots: 0 });
    await rejectsCode(none.createSlot('a'), 'SLOT_LIMIT_REACHED', 'a limit of 0');
  });

  it('on real files: the limit holds, the refusal writes nothing, and the primary restarts with its slots', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      let primary = await Primary.open({ dir, application: new RecordingApp(), segmentSize: SEGMENT });
      try {
        for (let i = 0; i < 10; i++) await primary.createSlot(longName(i), { reserveWal: true });
        const before = primary.slots();
        await rejectsCode(primary.createSlot(longName(10)), 'SLOT_LIMIT_REACHED');
        assert.deepEqual(primary.slots(), before, 'nothing changed');
        await primary.close();
        primary = await Primary.open({ dir, application: new RecordingApp(), segmentSize: SEGMENT });
        assert.deepEqual(slotNames(primary), before.map((r) => r.slotName), 'the restart finds them');
        await rejectsCode(primary.createSlot(longName(10)), 'SLOT_LIMIT_REACHED', 'after the restart');
        await primary.close();
        // Raised, the same directory takes more.
        primary = await Primary.open({ dir, application: new RecordingApp(), segmentSize: SEGMENT, maxReplicationSlots: 11 });
        await primary.createSlot(longName(10));
        assert.equal(primary.slots().length, 11);
      } finally {
        await primary.close();
      }
    } finally {
      await cleanup();
    }
  });
});
