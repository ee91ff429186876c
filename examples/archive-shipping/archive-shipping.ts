// File-based log shipping: the primary puts every WAL segment it finishes into an archive (a
// directory here; any Archiver will do), and a standby that has no connection to the primary
// restores the segments from there (PostgreSQL's archive_command and restore_command).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSystemArchive, Primary, Standby, formatLsn, type CommittedBatch, type Snapshot } from 'walship';

/** The application on every node: a list of orders. */
class Orders {
  readonly list: string[] = [];
  apply({ entries }: CommittedBatch): void {
    for (const entry of entries) this.list.push(Buffer.from(entry.data).toString());
  }
  async snapshot(): Promise<Uint8Array> {
    return Buffer.from(JSON.stringify(this.list));
  }
  async restore(snapshot: Snapshot): Promise<void> {
    this.list.splice(0, this.list.length, ...(JSON.parse((await snapshot.bytes()).toString()) as string[]));
  }
}
const order = (n: number) => Buffer.from(`order ${n}`);

const dir = await mkdtemp(join(tmpdir(), 'walship-archive-shipping-'));
const archive = new FileSystemArchive(join(dir, 'archive')); // in production: a shared volume, NFS, or S3 (examples/s3-archiver)

// The primary archives each segment it completes; timeoutMs also ends a segment that has held
// WAL that long, which bounds how far behind the standby can be. Small segments keep the demo small.
const primary = await Primary.open({ dir: join(dir, 'primary'), application: new Orders(), segmentSize: 1 << 20, archive: { mode: 'on', archiver: archive, timeoutMs: 60_000 } });
for (let n = 1; n <= 3; n++) await primary.commit(order(n));

// The standby starts from a base backup, then reads nothing but the archive.
await primary.baseBackup({ dir: join(dir, 'standby') });
const orders = new Orders();
const standby = await Standby.open({ dir: join(dir, 'standby'), application: orders, restore: archive, restoreIntervalMs: 100 });
await standby.waitForConsistent();
console.log(`standby from the base backup: ${orders.list.join(', ')}`);

let lsn = 0;
for (let n = 4; n <= 6; n++) ({ lsn } = await primary.commit(order(n)));
console.log(`committed up to ${formatLsn(lsn)}; the standby still has ${orders.list.length} orders: their segment is not archived yet`);

await primary.switchWal(); // ends the segment now (pg_switch_wal()), so it is archived and restored
await standby.waitForReplay(lsn);
console.log(`archive: ${(await archive.list()).sort().join(' ')}`);
console.log(`standby (${standby.state}) restored up to ${formatLsn(standby.replayLsn ?? 0)}: ${orders.list.join(', ')}`);

await Promise.all([standby.close(), primary.close()]);
await rm(dir, { recursive: true, force: true });
