/**
 * A standby of the bare-Node floor (bench/pg/node-floor.ts):
 * `node bench/node-floor-peer.mjs <port> <file> <write|flush> <syncEveryMs>` connects to the
 * floor's primary and does only what a standby must for a commit: it writes each WAL message
 * at the next offset of its pre-allocated <file> (wrapping), fdatasyncs on libuv's pool what
 * it wrote (at once with <syncEveryMs> 0, else at most once every <syncEveryMs>, as a walship
 * standby with `flushDelayMs` that no commit asks to flush), and acknowledges the last commit
 * it has written (`write`) or made durable (`flush`) once the primary's durable end covers it
 * too, as a walship standby receiving early WAL does. It exits when its IPC channel closes.
 *
 * Frames: u32 length (of what follows), u8 type, u32 commit number, payload.
 * Primary → standby: 1 = WAL (payload: the commit's bytes), 2 = the primary's durable end.
 * Standby → primary: 3 = acknowledgement.
 */
import fs from 'node:fs';
import net from 'node:net';

process.on('disconnect', () => process.exit(0));
const [port, file, ack, syncEvery] = process.argv.slice(2);
const syncEveryMs = Number(syncEvery);
const size = fs.statSync(file).size;
const fd = fs.openSync(file, 'r+');
let offset = 0;
let written = -1;
let synced = -1;
let durable = -1;
let acked = -1;
let syncing = false;
/** A paced sync's timer, and when the last sync began. */
let timer = null;
let lastSync = 0;

const socket = net.connect(Number(port), '127.0.0.1');
socket.setNoDelay(true);
// The floor's primary destroys its socket when a run ends: nothing to report.
socket.on('error', () => process.exit(0));

function acknowledge() {
  const upTo = Math.min(ack === 'write' ? written : synced, durable);
  if (upTo <= acked) return;
  acked = upTo;
  const frame = Buffer.allocUnsafe(9);
  frame.writeUInt32LE(5, 0);
  frame[4] = 3;
  frame.writeUInt32LE(upTo, 5);
  socket.write(frame);
}

function sync() {
  if (syncing || timer !== null || synced === written) return;
  const wait = lastSync + syncEveryMs - performance.now();
  if (wait > 0) {
    timer = setTimeout(() => {
      timer = null;
      sync();
    }, wait);
    return;
  }
  syncing = true;
  lastSync = performance.now();
  const upTo = written;
  fs.fdatasync(fd, () => {
    syncing = false;
    synced = upTo;
    acknowledge();
    sync();
  });
}

let pending = Buffer.alloc(0);
socket.on('data', (chunk) => {
  pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
  let at = 0;
  while (pending.length - at >= 4) {
    const length = pending.readUInt32LE(at);
    if (pending.length - at < 4 + length) break;
    const type = pending[at + 4];
    const n = pending.readUInt32LE(at + 5);
    if (type === 1) {
      const payload = pending.subarray(at + 9, at + 4 + length);
      if (offset + payload.length > size) offset = 0;
      fs.writeSync(fd, payload, 0, payload.length, offset);
      offset += payload.length;
      written = n;
    } else if (type === 2) {
      durable = n;
    }
    at += 4 + length;
  }
  pending = pending.subarray(at);
  acknowledge();
  sync();
});
socket.on('connect', () => process.send?.('connected'));
