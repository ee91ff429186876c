/**
 * What walship's write-ahead log promises, shown on a simulated disk that loses power
 * (`npx tsx examples/power-loss.ts`).
 *
 * 1. Committers append records and wait for them to be durable (group commit).
 * 2. More records are appended but never flushed, and the power fails mid-write.
 * 3. Recovery keeps every acknowledged record, drops the torn tail, and appends go on.
 * 4. A flipped bit in the middle of the log is refused, never skipped.
 */
import { WalLog, formatLsn, isWalshipError } from 'walship';
import { MemoryStorage } from 'walship/testing';

const SEGMENT = 64 * 1024;

function line(text = ''): void {
  console.log(text);
}

async function count(log: WalLog): Promise<{ records: number; last: string }> {
  let records = 0;
  let last = '(none)';
  for await (const record of log.read(log.oldestLsn)) {
    records++;
    last = Buffer.from(record.entries[0]?.data ?? []).toString();
  }
  return { records, last };
}

const disk = new MemoryStorage();
const log = await WalLog.open({ storage: disk, segmentSize: SEGMENT });

line('1. 8 committers each commit 250 records and wait until each is durable');
let syncs = 0;
log.on('flush', () => syncs++);
await Promise.all(
  Array.from({ length: 8 }, async (_, committer) => {
    for (let i = 0; i < 250; i++) {
      const { endLsn } = log.append(Buffer.from(`order ${committer}-${i} `.padEnd(120, '.')));
      await log.waitForFlush(endLsn);
    }
  }),
);
const acknowledged = await count(log);
line(`   ${acknowledged.records} records durable up to ${formatLsn(log.flushedLsn)}, with ${syncs} group flushes`);
line(`   segments: ${disk.fileNames().filter((n) => /^[0-9A-F]{24}$/.test(n)).join(', ')}`);

line();
line('2. 100 more records are appended, the flush starts, and the power fails mid-write');
for (let i = 0; i < 100; i++) log.append(Buffer.from(`unacknowledged ${i} `.padEnd(120, '.')));
const afterCrash = disk.crashAfter(2, { unsyncedWrites: 'torn' }); // during the flush
await log.flush().catch((err: unknown) => line(`   the flush failed, as it must: ${isWalshipError(err) ? err.code : String(err)}`));
await log.close();
const survivor = await afterCrash;

line();
line('3. Recovery on the disk as the power left it');
const recovered = await WalLog.open({ storage: survivor });
const after = await count(recovered);
line(`   ${after.records} records recovered (${acknowledged.records} were acknowledged); end of WAL ${formatLsn(recovered.insertLsn)}`);
line(`   last record: "${after.last.trim()}"`);
if (after.records < acknowledged.records) throw new Error('an acknowledged record was lost');
const next = recovered.append(Buffer.from('appends continue after recovery'));
await recovered.waitForFlush(next.endLsn);
line(`   a new record went in at ${formatLsn(next.lsn)}`);
await recovered.close();

line();
line('4. A bit flips in the first segment (bit rot): opening refuses, naming the place');
survivor.corrupt('000000010000000000000001', 4096, (byte) => byte ^ 0x10);
try {
  await WalLog.open({ storage: survivor });
  throw new Error('damage went unnoticed');
} catch (err) {
  if (!isWalshipError(err, 'WAL_CORRUPT')) throw err;
  line(`   ${err.code}: ${err.message}`);
}
