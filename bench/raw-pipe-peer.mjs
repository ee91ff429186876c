/**
 * The receiving half of the raw catch-up limit (bench/replication-cases.ts `rawCatchUp`):
 * `node bench/raw-pipe-peer.mjs <port> <file> <bytes>` connects, writes what it receives
 * into <file> with plain node:fs (gathered writes at the next offset, an fdatasync every
 * 8 MiB running while the next writes go on, reading paused while more than 32 MiB is not
 * yet durable, as a standby bounds it), fdatasyncs at the end, and reports over IPC. It
 * exits when its IPC channel closes (the benchmark ended or was killed).
 */
import fs from 'node:fs/promises';
import net from 'node:net';

process.on('disconnect', () => process.exit(0));
const MiB = 1024 * 1024;
const [port, file, bytes] = process.argv.slice(2);
const handle = await fs.open(file, 'w');
const socket = net.connect(Number(port), '127.0.0.1');
let written = 0;
let synced = 0;
let syncing = null;
let pending = [];
let writing = null;
const started = performance.now();

async function pump() {
  while (pending.length > 0) {
    const buffers = pending;
    pending = [];
    const { bytesWritten } = await handle.writev(buffers, written);
    written += bytesWritten;
    if (syncing === null && written - synced >= 8 * MiB) {
      const upTo = written;
      syncing = handle.datasync().then(() => {
        synced = upTo;
        syncing = null;
      });
    }
    if (written - synced > 32 * MiB) {
      socket.pause();
      await syncing;
      socket.resume();
    }
  }
  writing = null;
}

socket.on('data', (data) => {
  pending.push(data);
  writing ??= pump();
});
socket.on('end', async () => {
  await writing;
  await syncing;
  await handle.datasync();
  const seconds = (performance.now() - started) / 1000;
  await handle.close();
  await fs.rm(file, { force: true });
  process.send({ bytesPerSec: written / seconds, ok: written === Number(bytes), cpu: process.cpuUsage() }, () => process.exit(0));
});
