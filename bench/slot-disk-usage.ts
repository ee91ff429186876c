/**
 * Replication slots and disk use (issue #5): the WAL directory's size over time while a
 * slot's standby is dead, without a limit and with `maxSlotWalKeepSize` = 64 MiB.
 *
 *   npm run build && npx tsx bench/slot-disk-usage.ts
 *
 * On the compiled package (dist/), like the other benchmark cases. For each configuration:
 * a Primary on a fresh temp dir (16 MiB segments, fdatasync, `synchronousCommit: 'local'`,
 * TcpTransport on 127.0.0.1:0), a slot created with `reserveWal`, a Standby in this process
 * streaming with that slot until the slot has advanced, then the standby is closed (dead
 * standby). Then 64 committers commit 8 KiB batches (8 rows of 1 KiB), 64 MiB of WAL per
 * step, each step followed by `primary.checkpoint(lsn)` at the last commit's lsn. The slot's
 * `walStatus` is read from `primary.slots()` before and after each checkpoint, and after it
 * the data directory's files are measured with fs.stat. The temp dirs are removed at the end, also on an error.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type * as Walship from '../src/index.js';
import { CountingApp, commitBytes } from './replication-cases.js';

const W = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof Walship;

const MiB = 1024 * 1024;
const STEP_BYTES = 64 * MiB;
const STEPS = 12;
const SLOT = 'bench_slot';
const SEGMENT_NAME = /^[0-9A-F]{24}$/;

interface Row {
  readonly step: number;
  readonly walMiB: number;
  readonly segments: number;
  readonly segmentMiB: number;
  readonly dirMiB: number;
  /** The slot's walStatus after the step's commits, before its checkpoint. */
  readonly statusBefore: string;
  readonly walStatus: string;
  readonly restartLsn: string;
  readonly safeWalSize: string;
}

/** Sizes of the data directory's files (not recursive: WAL segments live at its top). */
async function measure(dir: string): Promise<{ segments: number; segmentBytes: number; dirBytes: number }> {
  let segments = 0;
  let segmentBytes = 0;
  let dirBytes = 0;
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath ?? dir, entry.name);
    let size: number;
    try {
      size = (await fs.stat(full)).size;
    } catch {
      continue; // removed meanwhile
    }
    dirBytes += size;
    if (SEGMENT_NAME.test(entry.name)) {
      segments++;
      segmentBytes += size;
    }
  }
  return { segments, segmentBytes, dirBytes };
}

async function until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}


interface CaseResult {
  readonly label: string;
  readonly rows: Row[];
  readonly invalidatedAtStep: number | null;
  readonly firstUnreservedStep: number | null;
}

async function runCase(base: string, label: string, maxSlotWalKeepSize: number): Promise<CaseResult> {
  const dir = path.join(base, `primary-${maxSlotWalKeepSize < 0 ? 'unlimited' : 'limited'}`);
  const standbyDir = path.join(base, `standby-${maxSlotWalKeepSize < 0 ? 'unlimited' : 'limited'}`);
  const primary = await W.Primary.open({
    dir,
    application: new CountingApp(),
    synchronousCommit: 'local',
    sync: 'fdatasync',
    maxSlotWalKeepSize,
    listen: { transport: new W.TcpTransport(), address: '127.0.0.1:0' },
    auth: { rules: [{ user: 'bench', address: '127.0.0.1/32', method: 'trust' }] },
  });
  let step = 0;
  let invalidatedAtStep: number | null = null;
  primary.on('slot:invalidated', () => (invalidatedAtStep ??= step));
  try {
    await primary.createSlot(SLOT, { reserveWal: true });
    // A standby streams with the slot until the slot has moved past some fresh WAL, then dies.
    const standby = await W.Standby.open({
      dir: standbyDir,
      application: new CountingApp(),
      primary: { transport: new W.TcpTransport(), address: primary.address as string, user: 'bench', applicationName: 'dead_standby', slotName: SLOT },
      statusIntervalMs: 50,
    });
    try {
      await until(() => standby.state === 'streaming', 'the standby to stream');
      await commitBytes(primary, 4 * MiB);
      const target = primary.currentLsn;
      await until(() => (primary.slots()[0]?.restartLsn ?? 0) >= target, 'the slot to advance');
    } finally {
      await standby.close();
    }
    await until(() => primary.slots()[0]?.active === false, 'the slot to become inactive');
    await primary.checkpoint(primary.appliedLsn);

    const rows: Row[] = [];
    const start = primary.currentLsn;
    const record = async (statusBefore: string): Promise<void> => {
      const sizes = await measure(dir);
      const slot = primary.slots().find((s) => s.slotName === SLOT);
      rows.push({
        step,
        walMiB: (primary.currentLsn - start) / MiB,
        segments: sizes.segments,
        segmentMiB: sizes.segmentBytes / MiB,
        dirMiB: sizes.dirBytes / MiB,
        statusBefore,
        walStatus: slot?.walStatus ?? 'null',
        restartLsn: slot?.restartLsn == null ? 'null' : W.formatLsn(slot.restartLsn),
        safeWalSize: slot?.safeWalSize == null ? 'null' : `${(slot.safeWalSize / MiB).toFixed(1)} MiB`,
      });
    };
    await record('–');
    for (step = 1; step <= STEPS; step++) {
      await commitBytes(primary, STEP_BYTES);
      const lsn = primary.currentLsn; // no commit is in flight: the end of the last one
      const before = primary.slots().find((s) => s.slotName === SLOT)?.walStatus ?? 'null';
      await primary.checkpoint(lsn);
      await record(before);
    }
    const firstUnreserved = rows.find((r) => r.statusBefore === 'unreserved' || r.walStatus === 'unreserved' || r.walStatus === 'lost');
    return { label, rows, invalidatedAtStep, firstUnreservedStep: firstUnreserved?.step ?? null };
  } finally {
    await primary.close();
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(standbyDir, { recursive: true, force: true });
  }
}

function printCase(result: CaseResult): void {
  console.log(`\n${result.label}\n`);
  console.log('| step | WAL written MiB | segments | segment files MiB | data dir MiB | walStatus before checkpoint | walStatus after | restartLsn | safeWalSize |');
  console.log('| ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |');
  for (const r of result.rows) {
    console.log(`| ${r.step} | ${r.walMiB.toFixed(1)} | ${r.segments} | ${r.segmentMiB.toFixed(0)} | ${r.dirMiB.toFixed(1)} | ${r.statusBefore} | ${r.walStatus} | ${r.restartLsn} | ${r.safeWalSize} |`);
  }
  const max = result.rows.reduce((m, r) => Math.max(m, r.dirMiB), 0);
  const lost = result.rows.find((r) => r.walStatus === 'lost');
  console.log(
    `\nsummary: max data dir ${max.toFixed(1)} MiB; first unreserved or lost in step ${result.firstUnreservedStep ?? '–'}; ` +
      `lost at the checkpoint of step ${lost?.step ?? '–'}; slot:invalidated during step ${result.invalidatedAtStep ?? '–'}`,
  );
}

const base = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-slot-disk-'));
const cleanup = (): void => {
  void fs.rm(base, { recursive: true, force: true }).finally(() => process.exit(130));
};
process.once('SIGINT', cleanup);
try {
  console.log(`Node ${process.version}, temp dir ${base}, ${STEPS} steps of ${STEP_BYTES / MiB} MiB of 8 KiB batches, 16 MiB segments, fdatasync`);
  printCase(await runCase(base, '(a) slot, maxSlotWalKeepSize = -1 (unlimited)', -1));
  printCase(await runCase(base, '(b) slot, maxSlotWalKeepSize = 64 MiB', 64 * MiB));
} finally {
  await fs.rm(base, { recursive: true, force: true });
  process.off('SIGINT', cleanup);
}
