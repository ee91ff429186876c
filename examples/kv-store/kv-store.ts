// A replicated key-value service over node:http: writes go to the primary at the commit level the
// request asks for, reads are served by hot standbys with read-your-writes (the client passes the
// LSN its write returned), and every node serves /status (JSON) and /metrics (Prometheus text).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  PROMETHEUS_CONTENT_TYPE,
  Primary,
  Standby,
  TcpTransport,
  WalshipError,
  formatLsn,
  formatPrometheus,
  isWalshipError,
  parseLsn,
  type Application,
  type CommittedBatch,
  type ErrorCode,
  type Snapshot,
  type SynchronousCommit,
} from 'walship';

/** The longest key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 256;
/** The largest value a request may carry: a body beyond it is refused (413) without being read whole. */
export const MAX_VALUE_BYTES = 64 * 1024;
/** How long a read waits for its `minLsn` by default. */
export const DEFAULT_READ_TIMEOUT_MS = 5_000;

type Operation = { readonly op: 'put'; readonly key: string; readonly value: string } | { readonly op: 'delete'; readonly key: string };

/**
 * The application walship replicates: a map from keys to values. Each batch holds one operation
 * as JSON; every node applies the same batches in the same order, so every node holds the same map.
 */
export class KvStore implements Application {
  readonly #map = new Map<string, string>();

  get size(): number {
    return this.#map.size;
  }

  get(key: string): string | undefined {
    return this.#map.get(key);
  }

  apply(batch: CommittedBatch): void {
    for (const entry of batch.entries) {
      const operation = JSON.parse(Buffer.from(entry.data).toString('utf8')) as Operation;
      if (operation.op === 'put') this.#map.set(operation.key, operation.value);
      else this.#map.delete(operation.key);
    }
  }

  /** The whole map: what a new standby's base backup carries. */
  async snapshot(): Promise<Uint8Array> {
    return Buffer.from(JSON.stringify([...this.#map]));
  }

  async restore(snapshot: Snapshot): Promise<void> {
    this.#map.clear();
    for (const [key, value] of JSON.parse((await snapshot.bytes()).toString('utf8')) as [string, string][]) this.#map.set(key, value);
  }
}

/** Options of {@link startKvNode}. */
export interface KvNodeOptions {
  readonly role: 'primary' | 'standby';
  /** The node's data directory. */
  readonly dir: string;
  /** Where the HTTP API listens. @defaultValue '127.0.0.1' and port 0 (any free port) */
  readonly httpHost?: string;
  readonly httpPort?: number;
  /** The replication user's password (standbys authenticate with SCRAM-SHA-256). */
  readonly password: string;
  /** Primary: where standbys connect. @defaultValue '127.0.0.1:0' */
  readonly listen?: string;
  /** Primary: the addresses standbys may connect from (a CIDR block). @defaultValue '127.0.0.1/32' */
  readonly allow?: string;
  /** Primary: `synchronousStandbyNames`, e.g. `s1`: the standbys commits at `on` and above wait for. @defaultValue '' */
  readonly synchronousStandbyNames?: string;
  /** Standby: the primary's replication address. */
  readonly primary?: string;
  /** Standby: its name (`applicationName`, as `synchronousStandbyNames` lists it). @defaultValue 's1' */
  readonly name?: string;
}

/** A running node: its HTTP API and, on a primary, the replication address. */
export interface KvNode {
  readonly role: 'primary' | 'standby';
  /** The base URL of the HTTP API, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** Where standbys connect (a primary's), else null. */
  readonly replicationAddress: string | null;
  readonly node: Primary | Standby;
  /** Stops the HTTP server, then closes the node (fast shutdown). */
  close(): Promise<void>;
}

/** Opens a primary or a standby on `dir` and serves the HTTP API in front of it. */
export async function startKvNode(options: KvNodeOptions): Promise<KvNode> {
  const store = new KvStore();
  const transport = new TcpTransport();
  const user = 'repl';
  let node: Primary | Standby;
  if (options.role === 'primary') {
    node = await Primary.open({
      dir: options.dir,
      application: store,
      listen: { transport, address: options.listen ?? '127.0.0.1:0' },
      auth: { users: { [user]: { password: options.password } }, rules: [{ user, address: options.allow ?? '127.0.0.1/32', method: 'scram-sha-256' }] },
      synchronousStandbyNames: options.synchronousStandbyNames ?? '',
    });
  } else {
    if (options.primary === undefined) throw new WalshipError('INVALID_OPTIONS', 'a standby needs the primary’s replication address');
    node = await Standby.open({
      dir: options.dir,
      application: store,
      primary: { transport, address: options.primary, user, password: options.password, applicationName: options.name ?? 's1' },
    });
  }
  const server = createServer((req, res) => void handle(node, store, req, res));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.httpPort ?? 0, options.httpHost ?? '127.0.0.1', resolve);
    });
  } catch (err) {
    await node.close();
    throw err;
  }
  const { address, port } = server.address() as AddressInfo;
  return {
    role: options.role,
    url: `http://${address.includes(':') ? `[${address}]` : address}:${port}`,
    replicationAddress: node instanceof Primary ? node.address : null,
    node,
    close: async () => {
      await closeServer(server);
      await node.close();
    },
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** The HTTP API. Every answer is JSON but /metrics. */
async function handle(node: Primary | Standby, store: KvStore, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/status' && req.method === 'GET') return send(res, 200, status(node, store));
    if (url.pathname === '/metrics' && req.method === 'GET') return sendMetrics(res, node, store);
    if (url.pathname.startsWith('/kv/')) {
      const key = decodeURIComponent(url.pathname.slice('/kv/'.length));
      if (key === '' || Buffer.byteLength(key) > MAX_KEY_BYTES) return send(res, 400, { error: 'INVALID_ARGUMENT', message: `a key is 1 to ${MAX_KEY_BYTES} bytes` });
      if (req.method === 'GET') return await read(node, store, key, url, res);
      if (req.method === 'PUT' || req.method === 'DELETE') return await write(node, key, req, url, res);
    }
    send(res, 404, { error: 'NOT_FOUND', message: 'GET|PUT|DELETE /kv/<key>, GET /status, GET /metrics' });
  } catch (err) {
    const [code, httpStatus] = httpError(err);
    send(res, httpStatus, { error: code, message: err instanceof Error ? err.message : String(err) });
  }
}

/**
 * PUT (body: the value) or DELETE at `?level=` (a `synchronousCommit` level, default the
 * primary's `on`), with an optional `?timeoutMs=` for the wait for synchronous standbys. Answers
 * with the commit's `lsn`, which a read on a standby passes back as `minLsn`.
 */
async function write(node: Primary | Standby, key: string, req: IncomingMessage, url: URL, res: ServerResponse): Promise<void> {
  if (!(node instanceof Primary)) {
    req.resume();
    return send(res, 409, { error: 'READ_ONLY', message: 'this node is a standby: send writes to the primary' });
  }
  // Unknown levels are refused by commit() (INVALID_ARGUMENT, 400); without one, the primary's default (on).
  const level = url.searchParams.get('level');
  let operation: Operation;
  if (req.method === 'PUT') {
    const value = await readBody(req, MAX_VALUE_BYTES);
    if (value === null) return send(res, 413, { error: 'TOO_LARGE', message: `a value is at most ${MAX_VALUE_BYTES} bytes` });
    operation = { op: 'put', key, value };
  } else {
    req.resume();
    operation = { op: 'delete', key };
  }
  const timeoutMs = integerParam(url, 'timeoutMs');
  const result = await node.commit(Buffer.from(JSON.stringify(operation)), {
    ...(level === null ? {} : { synchronousCommit: level as SynchronousCommit }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });
  send(res, 200, { key, lsn: formatLsn(result.lsn), level: level ?? 'on' });
}

/**
 * GET: on a standby, with `?minLsn=` (the `lsn` of the client's own write), first waits until
 * the standby has replayed that far (read-your-writes), at most `?timeoutMs=` (504 after it).
 * Without `minLsn` a standby answers from what it has replayed, which may be behind.
 */
async function read(node: Primary | Standby, store: KvStore, key: string, url: URL, res: ServerResponse): Promise<void> {
  const minLsn = url.searchParams.get('minLsn');
  const timeoutMs = integerParam(url, 'timeoutMs') ?? DEFAULT_READ_TIMEOUT_MS;
  if (node instanceof Standby && !node.readable) return send(res, 503, { error: 'NOT_READABLE', message: `the standby cannot serve reads yet (state ${node.state})` });
  if (minLsn !== null) {
    const lsn = parseLsn(minLsn);
    if (node instanceof Primary) await node.waitForApply(lsn, { timeoutMs });
    else await node.waitForReplay(lsn, { timeoutMs });
  }
  const value = store.get(key);
  const at = formatLsn((node instanceof Primary ? node.appliedLsn : node.replayLsn) ?? 0);
  if (value === undefined) return send(res, 404, { error: 'NOT_FOUND', key, lsn: at });
  send(res, 200, { key, value, lsn: at });
}

function status(node: Primary | Standby, store: KvStore): unknown {
  const lsn = (value: number | null): string | null => (value === null ? null : formatLsn(value));
  if (node instanceof Primary) {
    return {
      role: 'primary',
      systemId: node.systemId,
      timeline: node.timeline,
      currentLsn: lsn(node.currentLsn),
      flushLsn: lsn(node.flushLsn),
      appliedLsn: lsn(node.appliedLsn),
      keys: store.size,
      standbys: node.replicationStatus().map((row) => ({
        name: row.applicationName,
        state: row.state,
        syncState: row.syncState,
        replayLsn: lsn(row.replayLsn),
        replayLagMs: row.replayLagMs,
      })),
    };
  }
  return {
    role: 'standby',
    state: node.state,
    readable: node.readable,
    timeline: node.timeline,
    receiveLsn: lsn(node.receiveLsn),
    replayLsn: lsn(node.replayLsn),
    replayDelayMs: node.replayDelayMs,
    keys: store.size,
    lastError: node.lastError?.code ?? null,
  };
}

/** walship's metrics, and one of the application's own (its family name is not walship's). */
function sendMetrics(res: ServerResponse, node: Primary | Standby, store: KvStore): void {
  const text = `${formatPrometheus(node.metrics())}# HELP kv_store_keys Keys in the store on this node.\n# TYPE kv_store_keys gauge\nkv_store_keys ${store.size}\n`;
  res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE });
  res.end(text);
}

function send(res: ServerResponse, httpStatus: number, body: unknown): void {
  res.writeHead(httpStatus, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body)}\n`);
}

/** The body as UTF-8, or null once it passes `limit` bytes (the rest is not kept). */
async function readBody(req: IncomingMessage, limit: number): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      req.resume();
      return null;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function integerParam(url: URL, name: string): number | undefined {
  const text = url.searchParams.get(name);
  if (text === null) return undefined;
  if (!/^\d{1,9}$/.test(text)) throw new WalshipError('INVALID_ARGUMENT', `${name} must be a whole number of milliseconds`);
  return Number(text);
}

/** The HTTP status that says best what a walship error code means here; any other code is a 500. */
const HTTP_STATUS: Readonly<Partial<Record<ErrorCode, number>>> = {
  INVALID_ARGUMENT: 400,
  INVALID_LSN: 400,
  READ_ONLY: 409,
  RECORD_TOO_LARGE: 413,
  TIMEOUT: 504,
  SYNC_REP_CANCELED: 504,
  HOT_STANDBY_OFF: 503,
  WAL_CLOSED: 503,
  NOT_IN_RECOVERY: 503,
};

/** A walship error's code and its HTTP status. */
function httpError(err: unknown): [string, number] {
  if (!isWalshipError(err)) return ['INTERNAL', 500];
  const { code } = err as WalshipError;
  return [code, HTTP_STATUS[code] ?? 500];
}
