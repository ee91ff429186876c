import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MIN_SEGMENT_SIZE, Primary, Standby, isWalshipError, segmentFileName, type Archiver, type CommittedBatch, type Snapshot } from 'walship';
import { MemoryStorage, archiverConformance } from 'walship/testing';
import { startLocalS3, type LocalS3 } from './local-s3.js';
import { S3Archiver, type S3ArchiverOptions } from './s3-archiver.js';

// The SDK warns once per process that its releases after January 2027 need Node 22; the
// lockfile pins one that runs on Node 20, so the warning is noise in this test's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const PREFIX = 'cluster-a/wal/';
const bytes = (text: string) => new TextEncoder().encode(text);

/** An s3rver with S3's conditional writes and atomic puts (local-s3.ts), shared by the file's tests. */
let s3: LocalS3;
/** An s3rver as published: it ignores `If-None-Match` and overwrites. */
let plainS3: LocalS3;
const clients: S3Client[] = [];

before(async () => {
  [s3, plainS3] = await Promise.all([startLocalS3(), startLocalS3({ conditionalWrites: false })]);
});
after(async () => {
  for (const client of clients.splice(0)) client.destroy();
  await Promise.all([s3?.close(), plainS3?.close()]);
});

/** A client of `server`, destroyed after the file's tests. */
function clientOf(server: LocalS3, config: Parameters<LocalS3['client']>[0] = {}): S3Client {
  const client = server.client(config);
  clients.push(client);
  return client;
}

/** An archiver on a new, empty bucket, and the means to open more on it. */
async function freshArchive(server: LocalS3 = s3, options: Partial<S3ArchiverOptions> = {}) {
  const client = clientOf(server);
  const bucket = await server.createBucket(client);
  const open = (more: Partial<S3ArchiverOptions> = {}) =>
    new S3Archiver({ client: clientOf(server), bucket, prefix: PREFIX, ...options, ...more });
  return { bucket, client, archiver: new S3Archiver({ client, bucket, prefix: PREFIX, ...options }), open };
}

/** Asserts that `promise` rejects with a WalshipError of `code`; returns the error. */
async function rejectsWith(promise: Promise<unknown>, code: string, what: string): Promise<Error & { code: string; transient: boolean; cause?: unknown }> {
  let caught: unknown;
  await promise.then(
    () => assert.fail(`${what}: resolved, expected ${code}`),
    (err: unknown) => (caught = err),
  );
  assert.ok(isWalshipError(caught), `${what}: expected a WalshipError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, `${what}: ${caught.message}`);
  return caught;
}

/** The bucket of each archiver the conformance suite was given, for openAgain. */
const bucketOf = new Map<Archiver, string>();

archiverConformance({
  name: 'S3Archiver on s3rver (examples/s3-archiver)',
  async createArchiver() {
    const client = clientOf(s3);
    const bucket = await s3.createBucket(client);
    const archiver = new S3Archiver({ client, bucket, prefix: PREFIX });
    bucketOf.set(archiver, bucket);
    return archiver;
  },
  // A second node: its own client (connections, retries) on the same bucket and prefix.
  openAgain(archiver) {
    const bucket = bucketOf.get(archiver);
    assert.ok(bucket !== undefined, 'openAgain() is given an archiver from createArchiver()');
    const again = new S3Archiver({ client: clientOf(s3), bucket, prefix: PREFIX });
    bucketOf.set(again, bucket);
    return again;
  },
  cleanup(archiver) {
    bucketOf.delete(archiver);
  },
  capabilities: { remove: true, abort: true },
});

describe('S3Archiver on s3rver (examples/s3-archiver)', () => {
  it('stores each file as one object under the prefix, and lists names without it', async () => {
    const { bucket, client, archiver, open } = await freshArchive();
    await archiver.put('000000010000000000000001', bytes('segment one'));
    await archiver.put('00000002.history', bytes('1\t0/3000000\tpromoted'));
    const raw = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${PREFIX}000000010000000000000001` }));
    assert.equal(await raw.Body?.transformToString(), 'segment one', 'the object key is prefix + name');
    assert.deepEqual((await archiver.list()).sort(), ['000000010000000000000001', '00000002.history'], 'list strips the prefix');
    assert.deepEqual(await archiver.list('0000000100'), ['000000010000000000000001'], 'list filters by the name prefix');
    const other = open({ prefix: 'cluster-b/wal/' });
    assert.deepEqual(await other.list(), [], 'another prefix in the same bucket is another archive');
    assert.equal(await other.get('000000010000000000000001'), null, 'nor does it get the first archive’s files');
    const bare = open({ prefix: '' });
    assert.deepEqual(await bare.list(), [], 'keys below a "/" are no archive names of the bucket’s root');
  });

  it('follows ListObjectsV2 continuation tokens past the first page', async () => {
    const { archiver } = await freshArchive(s3, { listPageSize: 2 });
    const names = Array.from({ length: 7 }, (_, i) => `00000001000000000000000${i}`);
    await Promise.all(names.map((name) => archiver.put(name, bytes(name))));
    const before = s3.requests.length;
    assert.deepEqual((await archiver.list()).sort(), names, 'every name, from four pages');
    const pages = s3.requests.slice(before).filter((r) => r.method === 'GET' && r.query['list-type'] === '2');
    assert.equal(pages.length, 4, 'four requests of two keys each');
    assert.equal(pages.filter((r) => r.query['continuation-token'] !== undefined).length, 3, 'three of them with a continuation token');
  });

  it('puts conditionally (If-None-Match: *) with a CRC32C checksum, and gets with checksum mode on', async () => {
    const { archiver } = await freshArchive();
    const before = s3.requests.length;
    await archiver.put('check', bytes('123456789'));
    assert.deepEqual(await archiver.get('check'), bytes('123456789'), 'read back');
    const [put, get] = s3.requests.slice(before).filter((r) => r.key === `${PREFIX}check`);
    assert.equal(put?.headers['if-none-match'], '*', 'the put is conditional');
    // 0xE3069283 is CRC-32C's check value, the checksum of "123456789".
    assert.equal(put?.headers['x-amz-checksum-crc32c'], Buffer.from([0xe3, 0x06, 0x92, 0x83]).toString('base64'), 'the put carries the CRC-32C of the bytes');
    assert.equal(get?.headers['x-amz-checksum-mode'], 'ENABLED', 'the get asks for the stored checksum');
  });

  it('a put of a name that exists succeeds with the same bytes and is refused with others, leaving the object as it was', async () => {
    const { archiver, open } = await freshArchive();
    const segment = new Uint8Array(300_000).map((_, i) => (i * 7) & 255);
    await archiver.put('000000010000000000000002', segment);
    await archiver.put('000000010000000000000002', segment.slice());
    await open().put('000000010000000000000002', segment.slice());
    const changed = segment.slice();
    changed[123_456] = changed[123_456]! ^ 1;
    const err = await rejectsWith(open().put('000000010000000000000002', changed), 'ARCHIVE_CONFLICT', 'one bit differs');
    assert.match(err.message, /already holds different content/, 'the message says why');
    assert.deepEqual(await archiver.get('000000010000000000000002'), segment, 'the first content stays');
  });

  it('of two handles putting different bytes under one name at once, exactly one wins, every time', async () => {
    const { archiver, open } = await freshArchive();
    const other = open();
    for (let round = 0; round < 20; round++) {
      const name = `00000001000000000000001${round.toString(16)}`;
      const results = await Promise.allSettled([archiver.put(name, bytes(`a${round}`)), other.put(name, bytes(`b${round}`))]);
      const won = results.map((r) => r.status === 'fulfilled');
      assert.equal(won.filter(Boolean).length, 1, `round ${round}: exactly one put succeeds (${results.map((r) => r.status).join(', ')})`);
      const lost = results.find((r) => r.status === 'rejected');
      assert.ok(isWalshipError(lost?.reason, 'ARCHIVE_CONFLICT'), `round ${round}: the other is a conflict: ${String(lost?.reason)}`);
      assert.deepEqual(await other.get(name), bytes(won[0] ? `a${round}` : `b${round}`), `round ${round}: the winner’s bytes are stored`);
      await Promise.all([archiver.put(`same-${round}`, bytes('x')), other.put(`same-${round}`, bytes('x'))]);
    }
  });

  it('retries a put that S3 answers with 409 ConditionalRequestConflict', async () => {
    const { archiver } = await freshArchive();
    s3.failNext({ method: 'PUT', key: `${PREFIX}busy`, status: 409, code: 'ConditionalRequestConflict', count: 2 });
    await archiver.put('busy', bytes('at last'));
    assert.deepEqual(await archiver.get('busy'), bytes('at last'), 'stored on the third attempt');
    s3.failNext({ method: 'PUT', key: `${PREFIX}busier`, status: 409, code: 'ConditionalRequestConflict', count: 5 });
    const err = await rejectsWith(archiver.put('busier', bytes('never')), 'ARCHIVE_FAILED', 'five conflicts in a row');
    assert.equal(err.transient, true, 'worth retrying later');
  });

  it('a missing object is null; other failures are ARCHIVE_FAILED with the SDK error as cause', async () => {
    const { archiver, bucket } = await freshArchive();
    assert.equal(await archiver.get('000000010000000000000009'), null, 'absent');
    const once = new S3Archiver({ client: clientOf(s3, { maxAttempts: 1 }), bucket, prefix: PREFIX });
    s3.failNext({ method: 'GET', key: `${PREFIX}x`, status: 500, code: 'InternalError' });
    const failed = await rejectsWith(once.get('x'), 'ARCHIVE_FAILED', 'a 500');
    assert.equal(failed.transient, true, 'a server error is transient');
    assert.equal((failed.cause as Error).name, 'InternalError', 'the SDK error is the cause');
    s3.failNext({ method: 'PUT', key: `${PREFIX}x`, status: 403, code: 'AccessDenied' });
    assert.equal((await rejectsWith(once.put('x', bytes('x')), 'ARCHIVE_FAILED', 'a 403')).transient, false, 'denied access is not transient');
    s3.failNext({ method: 'GET', status: 503, code: 'SlowDown' });
    await rejectsWith(once.list(), 'ARCHIVE_FAILED', 'a failed list');
    s3.failNext({ method: 'DELETE', status: 500, code: 'InternalError' });
    await rejectsWith(once.remove('x'), 'ARCHIVE_FAILED', 'a failed remove');
    const noBucket = new S3Archiver({ client: clientOf(s3), bucket: 'no-such-bucket' });
    await rejectsWith(noBucket.get('000000010000000000000001'), 'ARCHIVE_FAILED', 'a missing bucket is no empty archive');
  });

  it('an aborted signal rejects with ABORTED', async () => {
    const { archiver } = await freshArchive();
    const signal = AbortSignal.abort(new Error('node closing'));
    for (const call of [archiver.put('a', bytes('a'), { signal }), archiver.get('a', { signal }), archiver.list('', { signal }), archiver.remove('a', { signal })]) {
      const err = await rejectsWith(call, 'ABORTED', 'an aborted call');
      assert.equal((err.cause as Error).message, 'node closing', 'the signal’s reason is the cause');
    }
    assert.deepEqual(await archiver.list(), [], 'the aborted put stored nothing');
  });

  it('an abort while a large object’s body arrives stops the get', async () => {
    const { client, archiver } = await freshArchive();
    await archiver.put('000000010000000000000001', new Uint8Array(16 << 20));
    const controller = new AbortController();
    // Aborts once the response's headers are in, before its body is read.
    client.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        if ((args.input as { Key?: string }).Key?.endsWith('01') === true) controller.abort(new Error('node closing'));
        return out;
      },
      { step: 'initialize' },
    );
    await rejectsWith(archiver.get('000000010000000000000001', { signal: controller.signal }), 'ABORTED', 'aborted mid-body');
  });

  it('ships WAL through S3: a primary archives its segments, an archive-only standby restores and replays them', async (t) => {
    const { bucket } = await freshArchive();
    const archiver = () => new S3Archiver({ client: clientOf(s3), bucket, prefix: PREFIX });
    /** An application that keeps the entries it was given, in order. */
    const app = (seen: string[]) => ({
      apply: ({ entries }: CommittedBatch) => void seen.push(...entries.map((e) => Buffer.from(e.data).toString())),
      snapshot: async () => bytes(JSON.stringify(seen)),
      restore: async (snapshot: Snapshot) => void seen.splice(0, seen.length, ...(JSON.parse((await snapshot.bytes()).toString()) as string[])),
    });
    const onPrimary: string[] = [];
    const onStandby: string[] = [];
    const primary = await Primary.open({ storage: new MemoryStorage(), application: app(onPrimary), segmentSize: MIN_SEGMENT_SIZE, archive: { mode: 'on', archiver: archiver() } });
    t.after(() => primary.close());
    await primary.commit([bytes('before the backup')]);
    const backup = new MemoryStorage();
    await primary.baseBackup({ storage: backup });
    // No connection to the primary: everything after the backup comes from the bucket.
    const standby = await Standby.open({ storage: backup, application: app(onStandby), restore: archiver(), restoreIntervalMs: 20 });
    t.after(() => standby.close());
    const { lsn } = await primary.commit([bytes('shipped'), bytes('through S3')]);
    await primary.switchWal(); // ends the segment, which is archived once complete
    await standby.waitForReplay(lsn, { timeoutMs: 10_000 });
    assert.deepEqual(onStandby, ['before the backup', 'shipped', 'through S3'], 'the standby replayed what the primary committed');
    assert.deepEqual(onPrimary, onStandby, 'in the same order');
    const segment = segmentFileName(1, Math.floor(lsn / MIN_SEGMENT_SIZE), MIN_SEGMENT_SIZE);
    assert.ok((await archiver().list()).includes(segment), `${segment} is in the bucket`);
    assert.ok(primary.archiverStatus().archivedCount >= 1, 'the primary counts it archived');
  });

  it('checks its options and names', async () => {
    const { client, bucket, archiver } = await freshArchive();
    await rejectsWith((async () => new S3Archiver({ client, bucket, prefx: 'a/' } as S3ArchiverOptions))(), 'INVALID_OPTIONS', 'a typo');
    await rejectsWith((async () => new S3Archiver({ client, bucket: '' }))(), 'INVALID_OPTIONS', 'no bucket');
    await rejectsWith((async () => new S3Archiver({ client, bucket, listPageSize: 1001 }))(), 'INVALID_OPTIONS', 'a page past 1,000');
    await rejectsWith(archiver.put('a/b', bytes('x')), 'INVALID_ARGUMENT', 'a name with a slash');
    await rejectsWith(archiver.get('..'), 'INVALID_ARGUMENT', 'a dot-dot name');
    await rejectsWith(archiver.list('a/'), 'INVALID_ARGUMENT', 'a list prefix with a slash');
  });

  it('probeConditionalWrites tells a server with conditional writes from one without', async () => {
    const patched = (await freshArchive(s3)).archiver;
    const plain = (await freshArchive(plainS3)).archiver;
    assert.equal(await patched.probeConditionalWrites(), true, 's3rver with local-s3.ts’s conditional writes');
    assert.equal(await plain.probeConditionalWrites(), false, 's3rver as published');
    assert.deepEqual(await patched.list(), [], 'the probe leaves nothing behind');
  });

  it('with conditionalWrites: false, on a server that ignores If-None-Match, a put still refuses to overwrite a file', async () => {
    const { archiver, open } = await freshArchive(plainS3, { conditionalWrites: false });
    await archiver.put('000000010000000000000001', bytes('first'));
    await open().put('000000010000000000000001', bytes('first'));
    await rejectsWith(open().put('000000010000000000000001', bytes('second')), 'ARCHIVE_CONFLICT', 'different bytes');
    assert.deepEqual(await archiver.get('000000010000000000000001'), bytes('first'), 'not overwritten');
  });
});
