import { WalLog, formatLsn } from 'walship';

// A segmented, checksummed write-ahead log in ./data/wal (created if missing).
const log = await WalLog.open({ dir: './data/wal' });

// append() assigns each record's LSN at once; committers waiting together share one fdatasync.
const commits = ['alice', 'bob', 'carol'].map((name) =>
  log.append({ data: Buffer.from(`hello ${name}`), channel: 'greetings' }),
);
await Promise.all(commits.map(({ endLsn }) => log.waitForFlush(endLsn)));
console.log(`durable up to ${formatLsn(log.flushedLsn)}`);

// Read every record back, in order, from the oldest segment on disk.
for await (const record of log.read(log.oldestLsn)) {
  for (const entry of record.entries) {
    console.log(formatLsn(record.lsn), entry.channel, Buffer.from(entry.data).toString());
  }
}
await log.close();
