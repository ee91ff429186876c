import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type ChecksumAlgorithm,
  type S3Client,
} from '@aws-sdk/client-s3';
import { setTimeout as sleep } from 'node:timers/promises';
import { WalshipError, isWalshipError, type Archiver, type ArchiverCallOptions } from 'walship';

/** Options of {@link S3Archiver}. */
export interface S3ArchiverOptions {
  /** The client to send requests with (region, credentials, endpoint, retries are its business). */
  readonly client: S3Client;
  /** The bucket that holds the archive. It must exist. */
  readonly bucket: string;
  /**
   * Put before every name to make the object key: `'cluster-a/wal/'` stores segment
   * `000000010000000000000003` as `cluster-a/wal/000000010000000000000003`. One archive per
   * cluster: two clusters must never share a prefix.
   * @defaultValue `''`
   */
  readonly prefix?: string;
  /**
   * Whether the server honours `If-None-Match: *` on PutObject (AWS S3 does, since August 2024).
   * With `false`, a put first looks for an existing object and only then puts: a conflict with
   * a file already in the archive is still refused, but two different puts of one name at the
   * same moment can both succeed, the later one kept (see the README's "Limits").
   * {@link S3Archiver.probeConditionalWrites} tells which applies to a server.
   * @defaultValue `true`
   */
  readonly conditionalWrites?: boolean;
  /**
   * The checksum sent with every put, which S3 checks before storing the object and returns
   * with every get, where the SDK checks it again; `'none'` for a server that rejects them.
   * @defaultValue `'CRC32C'`
   */
  readonly checksumAlgorithm?: ChecksumAlgorithm | 'none';
  /**
   * Keys asked for per ListObjectsV2 page (S3 returns at most 1,000); `list` follows the
   * continuation tokens until the last page.
   * @defaultValue `1000`
   */
  readonly listPageSize?: number;
}

/** The defaults of {@link S3ArchiverOptions}. */
export const S3_ARCHIVER_DEFAULTS = Object.freeze({
  prefix: '',
  conditionalWrites: true,
  checksumAlgorithm: 'CRC32C',
  listPageSize: 1000,
} as const);

const OPTION_KEYS = new Set(['client', 'bucket', 'prefix', 'conditionalWrites', 'checksumAlgorithm', 'listPageSize']);

/** The names an archiver is given (src/archive/archiver.ts): plain file names, no `/`. */
const ARCHIVE_NAME = /^[A-Za-z0-9._-]{1,255}$/;
/** What a `list` prefix may hold: the start of such a name. */
const NAME_PREFIX = /^[A-Za-z0-9._-]{0,255}$/;

/**
 * How often a conditional put that S3 answers with `409 ConditionalRequestConflict` (another
 * write of the same key was in flight) is sent again before the put fails, and the first wait.
 */
const CONFLICT_ATTEMPTS = 5;
const CONFLICT_BACKOFF_MS = 50;

/**
 * A walship {@link Archiver} on an S3 bucket, through `@aws-sdk/client-s3`: each file is one
 * object, `prefix + name`. A put is a conditional PutObject (`If-None-Match: *`), so of two
 * writers of one name exactly one creates the object; the other, and a put after a crash,
 * reads the object back and succeeds only if its bytes are identical (`ARCHIVE_CONFLICT`
 * otherwise). Errors of the S3 calls become `ARCHIVE_FAILED` with the SDK's error as `cause`.
 */
export class S3Archiver implements Archiver {
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #conditionalWrites: boolean;
  readonly #checksum: ChecksumAlgorithm | undefined;
  readonly #pageSize: number;

  constructor(options: S3ArchiverOptions) {
    checkOptions(options);
    this.#client = options.client;
    this.#bucket = options.bucket;
    this.#prefix = options.prefix ?? S3_ARCHIVER_DEFAULTS.prefix;
    this.#conditionalWrites = options.conditionalWrites ?? S3_ARCHIVER_DEFAULTS.conditionalWrites;
    const checksum = options.checksumAlgorithm ?? S3_ARCHIVER_DEFAULTS.checksumAlgorithm;
    this.#checksum = checksum === 'none' ? undefined : checksum;
    this.#pageSize = options.listPageSize ?? S3_ARCHIVER_DEFAULTS.listPageSize;
  }

  async put(name: string, data: Uint8Array, options: ArchiverCallOptions = {}): Promise<void> {
    checkName(name);
    if (!(data instanceof Uint8Array)) throw new WalshipError('INVALID_ARGUMENT', `S3Archiver.put: data must be a Uint8Array, got ${typeof data}`);
    const { signal } = options;
    const key = this.#key(name);
    if (!this.#conditionalWrites) {
      // The server would overwrite an existing object, so look first (see the option's caveat).
      const existing = await this.#getObject(key, signal);
      if (existing !== null) return this.#sameOrConflict(name, existing, data);
    }
    for (let attempt = 1; ; attempt++) {
      let outcome: 'created' | 'exists' | 'busy';
      try {
        await this.#client.send(
          new PutObjectCommand({
            Bucket: this.#bucket,
            Key: key,
            Body: data,
            ContentLength: data.byteLength,
            ContentType: 'application/octet-stream',
            IfNoneMatch: '*',
            ...(this.#checksum === undefined ? {} : { ChecksumAlgorithm: this.#checksum }),
          }),
          signalOption(signal),
        );
        outcome = 'created'; // S3 acknowledges a PUT once the object is stored durably.
      } catch (err) {
        const status = httpStatus(err);
        if (status === 412 || errorName(err) === 'PreconditionFailed') outcome = 'exists';
        else if (status === 409 || errorName(err) === 'ConditionalRequestConflict') outcome = 'busy';
        else throw this.#failed('put', key, err, signal);
      }
      if (outcome === 'created') return;
      if (outcome === 'exists') {
        const existing = await this.#getObject(key, signal);
        // Removed between the two requests (archiveCleanup): put again.
        if (existing !== null) return this.#sameOrConflict(name, existing, data);
      }
      // 409: another conditional write of this key was in flight; S3 asks for a retry.
      if (attempt >= CONFLICT_ATTEMPTS) {
        throw new WalshipError('ARCHIVE_FAILED', `S3 put of ${this.#where(key)}: the object kept changing under ${attempt} conditional puts`, { transient: true });
      }
      await this.#pause(CONFLICT_BACKOFF_MS * 2 ** (attempt - 1), key, signal);
    }
  }

  async get(name: string, options: ArchiverCallOptions = {}): Promise<Uint8Array | null> {
    checkName(name);
    return this.#getObject(this.#key(name), options.signal);
  }

  async list(prefix = '', options: ArchiverCallOptions = {}): Promise<string[]> {
    if (typeof prefix !== 'string' || !NAME_PREFIX.test(prefix)) {
      throw new WalshipError('INVALID_ARGUMENT', `S3Archiver.list: prefix must be the start of an archive name (letters, digits, '.', '_', '-'), got ${JSON.stringify(prefix)}`);
    }
    const { signal } = options;
    const names: string[] = [];
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.#client.send(
          new ListObjectsV2Command({
            Bucket: this.#bucket,
            Prefix: this.#prefix + prefix,
            // Keys with a `/` after the prefix are no archive names (and the probe's key is one).
            Delimiter: '/',
            MaxKeys: this.#pageSize,
            ...(token === undefined ? {} : { ContinuationToken: token }),
          }),
          signalOption(signal),
        );
      } catch (err) {
        throw this.#failed('list', this.#prefix + prefix, err, signal);
      }
      for (const object of page.Contents ?? []) {
        if (object.Key !== undefined) names.push(object.Key.slice(this.#prefix.length));
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      if (page.IsTruncated === true && token === undefined) {
        // Stopping here would return a silently short list.
        throw new WalshipError('ARCHIVE_FAILED', `S3 list of ${this.#where(this.#prefix + prefix)}: a truncated page came without a continuation token`, { transient: true });
      }
    } while (token !== undefined);
    return names;
  }

  async remove(name: string, options: ArchiverCallOptions = {}): Promise<void> {
    checkName(name);
    const { signal } = options;
    const key = this.#key(name);
    try {
      // S3 answers 204 for a missing key too, as the contract wants.
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }), signalOption(signal));
    } catch (err) {
      throw this.#failed('remove', key, err, signal);
    }
  }

  /**
   * Finds out whether the server honours `If-None-Match: *` on PutObject: creates an object
   * under `prefix + '.walship-probe/'` (never listed as an archive file), puts it again
   * conditionally, and removes it. `true` when the second put was refused with 412, as S3
   * refuses it; `false` when the server overwrote the object (then run with
   * `conditionalWrites: false`, or use a server that has conditional writes).
   */
  async probeConditionalWrites(options: ArchiverCallOptions = {}): Promise<boolean> {
    const { signal } = options;
    const key = `${this.#prefix}.walship-probe/${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    const put = () =>
      this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: key, Body: new Uint8Array(0), IfNoneMatch: '*' }), signalOption(signal));
    try {
      await put();
      try {
        await put();
        return false;
      } catch (err) {
        if (httpStatus(err) === 412 || errorName(err) === 'PreconditionFailed') return true;
        throw err;
      }
    } catch (err) {
      throw this.#failed('probe', key, err, signal);
    } finally {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key })).catch(() => {});
    }
  }

  /** The object's bytes, or `null` when there is no such object. */
  async #getObject(key: string, signal: AbortSignal | undefined): Promise<Uint8Array | null> {
    try {
      const out = await this.#client.send(
        // ChecksumMode: the SDK checks the bytes against the checksum S3 stored with them.
        new GetObjectCommand({ Bucket: this.#bucket, Key: key, ChecksumMode: 'ENABLED' }),
        signalOption(signal),
      );
      // The SDK watches the signal until the response has ended: an abort while the body
      // arrives destroys the request, and this read rejects.
      return out.Body === undefined ? new Uint8Array(0) : await out.Body.transformToByteArray();
    } catch (err) {
      if (httpStatus(err) === 404 && !signal?.aborted) {
        // NoSuchKey is absence; NoSuchBucket is a misconfiguration, not an empty archive.
        if (errorName(err) === 'NoSuchBucket') throw this.#failed('get', key, err, signal);
        return null;
      }
      throw this.#failed('get', key, err, signal);
    }
  }

  #sameOrConflict(name: string, existing: Uint8Array, data: Uint8Array): void {
    if (Buffer.from(existing.buffer, existing.byteOffset, existing.byteLength).equals(data)) return;
    throw new WalshipError(
      'ARCHIVE_CONFLICT',
      `S3 archive ${this.#where(this.#key(name))} already holds different content (${existing.byteLength} bytes, the put had ${data.byteLength}); nothing was overwritten`,
    );
  }

  /** Waits `ms` before a retry, or rejects as soon as the signal aborts. */
  async #pause(ms: number, key: string, signal: AbortSignal | undefined): Promise<void> {
    try {
      await sleep(ms, undefined, signal === undefined ? {} : { signal });
    } catch (err) {
      throw this.#failed('put', key, err, signal);
    }
  }

  #key(name: string): string {
    return this.#prefix + name;
  }

  #where(key: string): string {
    return `s3://${this.#bucket}/${key}`;
  }

  /** The error a failed call rejects with: `ABORTED` once the signal aborted, else `ARCHIVE_FAILED`. */
  #failed(op: string, key: string, err: unknown, signal: AbortSignal | undefined): WalshipError {
    if (signal?.aborted === true) return new WalshipError('ABORTED', `S3 ${op} of ${this.#where(key)} was aborted`, { cause: signal.reason });
    if (isWalshipError(err)) return err;
    const status = httpStatus(err);
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return new WalshipError('ARCHIVE_FAILED', `S3 ${op} of ${this.#where(key)} failed${status === undefined ? '' : ` (HTTP ${status})`}: ${what}`, {
      cause: err,
      // Denied access, a missing bucket or a bad request stay so until someone changes something.
      transient: status === undefined || status >= 500 || status === 408 || status === 409 || status === 429,
    });
  }
}

function checkOptions(options: S3ArchiverOptions): void {
  const fail = (message: string) => new WalshipError('INVALID_OPTIONS', `S3Archiver: ${message}`);
  if (typeof options !== 'object' || options === null) throw fail('options must be an object');
  for (const key of Object.keys(options)) if (!OPTION_KEYS.has(key)) throw fail(`unknown option "${key}"`);
  if (typeof (options.client as { send?: unknown } | undefined)?.send !== 'function') throw fail('options.client must be an S3Client');
  if (typeof options.bucket !== 'string' || options.bucket === '') throw fail('options.bucket must be a non-empty string');
  if (options.prefix !== undefined && typeof options.prefix !== 'string') throw fail('options.prefix must be a string');
  if (options.conditionalWrites !== undefined && typeof options.conditionalWrites !== 'boolean') throw fail('options.conditionalWrites must be a boolean');
  if (options.checksumAlgorithm !== undefined && typeof options.checksumAlgorithm !== 'string') throw fail('options.checksumAlgorithm must be a checksum algorithm or "none"');
  const pageSize = options.listPageSize;
  if (pageSize !== undefined && !(Number.isInteger(pageSize) && pageSize >= 1 && pageSize <= 1000)) throw fail('options.listPageSize must be an integer from 1 to 1000');
}

function checkName(name: string): void {
  if (typeof name !== 'string' || !ARCHIVE_NAME.test(name) || name === '.' || name === '..') {
    throw new WalshipError('INVALID_ARGUMENT', `S3Archiver: ${JSON.stringify(name)} is not an archive name (letters, digits, '.', '_', '-', at most 255)`);
  }
}

function signalOption(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal === undefined ? {} : { abortSignal: signal };
}

function httpStatus(err: unknown): number | undefined {
  const status = (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

function errorName(err: unknown): string | undefined {
  return err instanceof Error ? err.name : undefined;
}
