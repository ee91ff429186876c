// The far end of bench/wal-io-paths.ts's child-process paths: on each message { offset,
// size } it writes `size` bytes at `offset` of the file named by argv[2] (writeSync) and
// fdatasyncs it through libuv (fs.fdatasync's callback), and answers with the latency it
// measured itself, so the IPC hop is not counted. Run with UV_USE_IO_URING=1 or 0 to compare
// libuv's io_uring path with its thread pool. Exits when its IPC channel closes.
import fs from 'node:fs';

const fd = fs.openSync(process.argv[2], 'r+');
const data = Buffer.alloc(1024 * 1024, 0xa5);
process.on('message', ({ offset, size }) => {
  const started = performance.now();
  for (let done = 0; done < size; ) done += fs.writeSync(fd, data, done, size - done, offset + done);
  fs.fdatasync(fd, (err) => {
    const us = (performance.now() - started) * 1000;
    process.send(err === null ? { us } : { error: String(err) });
  });
});
process.on('disconnect', () => {
  fs.closeSync(fd);
  process.exit(0);
});
process.send({ ready: true });
