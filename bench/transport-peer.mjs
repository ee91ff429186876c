/**
 * The far side of the transport benchmark, run as its own process as a standby would be,
 * on the compiled package (dist/, so `npm run bench` builds first), as applications run it:
 * `node bench/transport-peer.mjs <mode> [address] [totalBytes] [tls-json]`.
 *
 * - `raw-receive <address> <bytes>` / `walship-receive <address> <bytes> [tls]`: connect,
 *   read `bytes` of payload (walship: `walData` messages, decoded), then answer with one
 *   byte (walship: a status update) and wait for the sender to close.
 * - `raw-echo` / `walship-echo [tls]`: listen, print the address, and answer every message
 *   (walship: a status update asking for a reply gets a keepalive).
 * The process exits when its connection closes; with REPORT_CPU=1 it prints its CPU time.
 */
import net from 'node:net';
import { TcpTransport } from '../dist/index.js';
import { MessageStream } from '../dist/protocol/index.js';

const [mode, ...args] = process.argv.slice(2);

function exitOnClose(stream) {
  const exit = () => {
    if (process.env.REPORT_CPU) {
      const { user, system } = process.cpuUsage();
      console.error(`${mode}: cpu user ${(user / 1000).toFixed(0)} ms, system ${(system / 1000).toFixed(0)} ms`);
    }
    process.exit(0);
  };
  stream.on('close', exit);
  stream.on('error', exit);
}

function tlsOptions(json) {
  return json === undefined || json === '' ? {} : { tls: JSON.parse(json) };
}

function port(address) {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

switch (mode) {
  case 'raw-receive': {
    const [address, bytes] = args;
    const socket = net.connect(port(address), '127.0.0.1');
    socket.setNoDelay(true);
    exitOnClose(socket);
    let received = 0;
    socket.on('data', (data) => {
      received += data.length;
      if (received >= Number(bytes)) socket.write(Buffer.from([1]));
    });
    break;
  }
  case 'walship-receive': {
    const [address, bytes, tls] = args;
    const stream = await new TcpTransport(tlsOptions(tls)).connect(address);
    exitOnClose(stream);
    const conn = new MessageStream(stream, 'client');
    let received = 0;
    while (received < Number(bytes)) {
      const message = await conn.next();
      if (message === null) process.exit(1);
      if (message.kind === 'walData') received += message.data.length;
    }
    conn.send({ kind: 'standbyStatusUpdate', writeLsn: received, flushLsn: received, applyLsn: received, sendTime: 0, replyRequested: false });
    break;
  }
  case 'raw-echo': {
    const server = net.createServer((socket) => {
      socket.setNoDelay(true);
      exitOnClose(socket);
      socket.on('data', (data) => socket.write(data));
    });
    server.listen(0, '127.0.0.1', () => console.log(`127.0.0.1:${server.address().port}`));
    break;
  }
  case 'walship-echo': {
    const listener = await new TcpTransport(tlsOptions(args[0])).listen('127.0.0.1:0', (stream) => {
      exitOnClose(stream);
      const conn = new MessageStream(stream, 'server');
      void (async () => {
        for (let m = await conn.next().catch(() => null); m !== null; m = await conn.next().catch(() => null)) {
          if (m.kind === 'standbyStatusUpdate') conn.send({ kind: 'keepalive', walEnd: m.flushLsn, sendTime: 0, replyRequested: false });
        }
      })();
    });
    console.log(listener.address);
    break;
  }
  default:
    console.error(`unknown mode ${String(mode)}`);
    process.exit(2);
}
