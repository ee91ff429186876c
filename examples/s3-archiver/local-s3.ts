import { S3Client, CreateBucketCommand, type S3ClientConfig } from '@aws-sdk/client-s3';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import S3rver from 's3rver';

/** Options of {@link startLocalS3}. */
export interface LocalS3Options {
  /**
   * Give s3rver S3's conditional PutObject (`If-None-Match: *` → `412 PreconditionFailed` when
   * the key exists, checked and stored under one lock per key). `false` leaves s3rver as it is:
   * it ignores the header and overwrites.
   * @defaultValue `true`
   */
  readonly conditionalWrites?: boolean;
}

/** A request that {@link LocalS3.failNext} answers with an error instead of serving it. */
export interface LocalS3Fault {
  readonly method: string;
  /** The object key; every key when absent. */
  readonly key?: string;
  readonly status: number;
  readonly code: string;
  /** How many matching requests fail. @defaultValue `1` */
  readonly count?: number;
}

/** A request as {@link LocalS3.requests} records it. */
export interface LocalS3Request {
  readonly method: string;
  readonly bucket: string | undefined;
  readonly key: string | undefined;
  readonly query: Readonly<Record<string, string | string[] | undefined>>;
  /** The conditional, checksum and length headers, when present. */
  readonly headers: Readonly<Record<string, string>>;
}

/** An s3rver on 127.0.0.1, in a temporary directory of its own. */
export interface LocalS3 {
  readonly endpoint: string;
  /** A new client of this server; `config` overrides the defaults (e.g. `maxAttempts`). Destroy it after use. */
  client(config?: Partial<S3ClientConfig>): S3Client;
  /** Creates a bucket with a new name and returns the name. */
  createBucket(client: S3Client): Promise<string>;
  /** Every request the server was sent, oldest first, with the headers a test looks at. */
  readonly requests: ReadonlyArray<LocalS3Request>;
  /** Answers the next matching requests with `status` and an S3 error `code`. */
  failNext(fault: LocalS3Fault): void;
  close(): Promise<void>;
}

/**
 * Starts s3rver (a fake S3 for tests, on the loopback interface, port 0) with two changes that
 * give it the S3 behaviour an archiver relies on and s3rver lacks:
 * - conditional writes (see {@link LocalS3Options.conditionalWrites});
 * - ListObjectsV2 pagination: s3rver makes its continuation tokens with DES, which the OpenSSL 3
 *   of Node 17 and later refuses (jamhall/s3rver#818), so a truncated page fails with a 500.
 *   Here a V2 listing is served by s3rver's V1 listing (a marker for the token) and answered
 *   in V2's form, with the last key as the token;
 * - atomic puts: s3rver writes the body straight into the object's file and answers before the
 *   write has finished, so a get could see part of an object, even after the put's 200, and
 *   a put cut off mid-body left the part it had. Here the body is read whole first, written to
 *   a temporary file and renamed onto the object: a get sees the old object or the new one,
 *   and an interrupted put stores nothing. (Neither server writes durably: no fsync.)
 */
export async function startLocalS3(options: LocalS3Options = {}): Promise<LocalS3> {
  const conditionalWrites = options.conditionalWrites ?? true;
  const directory = await mkdtemp(join(tmpdir(), 'walship-s3-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, vhostBuckets: false });
  const store = server.store;
  const requests: LocalS3Request[] = [];
  const faults: Array<LocalS3Fault & { left: number }> = [];
  const locks = new KeyLocks();

  store.putObject = async (object) => {
    const content = Buffer.isBuffer(object.content) ? object.content : await buffer(object.content as Readable);
    const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
    await mkdir(dirname(objectPath), { recursive: true });
    // Not ending in `._S3rver_object`, so never listed as an object.
    const temp = `${objectPath}.${randomUUID()}.partial`;
    await writeFile(temp, content);
    await rename(temp, objectPath);
    const md5 = createHash('md5').update(content).digest('hex');
    await store.putMetadata(object.bucket, object.key, object.metadata, md5);
    return { size: content.length, md5 };
  };

  // First in the chain: it sees every request before s3rver's own middleware.
  server.middleware.unshift(async (ctx, next) => {
    // Path-style addressing: /bucket, /bucket/key.
    const target = /^\/([^/]+)(?:\/(.+))?$/.exec(ctx.path);
    const bucket = target?.[1] === undefined ? undefined : decodeURIComponent(target[1]);
    const key = target?.[2] === undefined ? undefined : decodeURIComponent(target[2]);
    const plainPut = ctx.method === 'PUT' && key !== undefined && !ctx.get('x-amz-copy-source') && !['uploadId', 'tagging', 'acl'].some((q) => q in ctx.query);
    const headers: Record<string, string> = {};
    for (const name of RECORDED_HEADERS) if (ctx.get(name)) headers[name] = ctx.get(name);
    requests.push({ method: ctx.method, bucket, key, query: { ...ctx.query }, headers });
    const fault = faults.find((f) => f.left > 0 && f.method === ctx.method && (f.key === undefined || f.key === key));
    if (fault !== undefined) {
      fault.left--;
      return respondError(ctx, fault.status, fault.code, 'injected by the test');
    }
    const condition = ctx.get('if-none-match');
    if (!conditionalWrites || !plainPut || condition === '') return next();
    if (condition !== '*') return respondError(ctx, 501, 'NotImplemented', 'PutObject supports If-None-Match: * only');
    await locks.run(`${bucket}/${key}`, async () => {
      if (await store.existsObject(bucket!, key!)) {
        return respondError(ctx, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
      }
      await next();
    });
  });

  // Just before the router, so that the response is still an object, not yet XML.
  server.middleware.splice(server.middleware.length - 1, 0, listObjectsV2);

  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  let buckets = 0;
  let closed: Promise<void> | undefined;
  return {
    endpoint,
    requests,
    client: (config = {}) =>
      new S3Client({
        endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
        ...config,
      }),
    async createBucket(client) {
      const name = `walship-${process.pid}-${++buckets}`;
      await client.send(new CreateBucketCommand({ Bucket: name }));
      return name;
    },
    failNext: (fault) => void faults.push({ ...fault, left: fault.count ?? 1 }),
    close: () =>
      (closed ??= (async () => {
        server.httpServer?.closeAllConnections();
        await server.close();
        await rm(directory, { recursive: true, force: true });
      })()),
  };
}

type S3rverMiddleware = S3rver['middleware'][number];
type S3rverContext = Parameters<S3rverMiddleware>[0];

const RECORDED_HEADERS = ['if-none-match', 'x-amz-sdk-checksum-algorithm', 'x-amz-checksum-crc32c', 'x-amz-checksum-mode', 'content-md5', 'content-length'];

function respondError(ctx: S3rverContext, status: number, code: string, message: string): void {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

/** Serves ListObjectsV2 through s3rver's V1 listing (see {@link startLocalS3}). */
const listObjectsV2: S3rverMiddleware = async (ctx, next) => {
  if (ctx.method !== 'GET' || ctx.query['list-type'] !== '2' || !/^\/[^/]+\/?$/.test(ctx.path)) return next();
  const { 'list-type': _v2, 'continuation-token': token, 'start-after': startAfter, 'fetch-owner': _owner, ...rest } = ctx.query;
  const marker = typeof token === 'string' && token !== '' ? Buffer.from(token, 'base64url').toString() : startAfter;
  ctx.query = marker === undefined ? rest : { ...rest, marker };
  await next();
  const result = (ctx.body as { ListBucketResult?: Record<string, unknown> } | undefined)?.ListBucketResult;
  if (result === undefined) return;
  const { Marker: _marker, NextMarker: _next, ...common } = result;
  const contents = result.Contents as Array<{ Key: string }>;
  const last = contents[contents.length - 1];
  ctx.body = {
    ListBucketResult: {
      ...common,
      ContinuationToken: token,
      StartAfter: token === undefined ? startAfter : undefined,
      KeyCount: contents.length,
      NextContinuationToken: result.IsTruncated === true && last !== undefined ? Buffer.from(last.Key).toString('base64url') : undefined,
    },
  };
};

/** One chain of promises per key: `run` calls of one key run one after the other. */
class KeyLocks {
  readonly #tails = new Map<string, Promise<void>>();

  async run(key: string, fn: () => Promise<void>): Promise<void> {
    const before = this.#tails.get(key) ?? Promise.resolve();
    const mine = before.then(fn, fn);
    const tail = mine.catch(() => {});
    this.#tails.set(key, tail);
    try {
      await mine;
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}
