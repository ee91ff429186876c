// s3rver 3.7 (CommonJS, `module.exports = S3rver`): the constructor and run/close it documents,
// plus the internals local-s3.ts patches (the Koa middleware list, the filesystem store), which
// @types/s3rver does not describe.
declare module 's3rver' {
  import type { Server } from 'node:http';
  import type { AddressInfo } from 'node:net';

  interface S3rverOptions {
    address?: string;
    port?: number;
    silent?: boolean;
    directory?: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
  }

  /** The part of a Koa context the patches use. */
  interface KoaContext {
    method: string;
    path: string;
    query: Record<string, string | string[] | undefined>;
    status: number;
    type: string;
    body: unknown;
    get(header: string): string;
    set(header: string, value: string): void;
  }
  type KoaMiddleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

  /** What FilesystemStore.putObject is given (lib/models/object.js). */
  interface S3Object {
    bucket: string;
    key: string;
    content: Buffer | NodeJS.ReadableStream;
    metadata: Record<string, string>;
  }

  interface FilesystemStore {
    getResourcePath(bucket: string, key: string, resource: string): string;
    existsObject(bucket: string, key: string): Promise<boolean>;
    putObject(object: S3Object): Promise<{ size: number; md5: string }>;
    putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5: string): Promise<void>;
  }

  class S3rver {
    constructor(options: S3rverOptions);
    run(): Promise<AddressInfo>;
    close(): Promise<void>;
    readonly middleware: KoaMiddleware[];
    readonly store: FilesystemStore;
    readonly httpServer: Server | undefined;
  }
  export = S3rver;
}
