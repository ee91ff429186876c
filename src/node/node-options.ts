import { isApplication } from '../application.js';
import { WalshipError } from '../errors.js';
import { NodeStorage } from '../storage/node-storage.js';
import { isStorage, type Storage } from '../storage/storage.js';
import type { Transport } from '../transport/transport.js';
import { SEGMENT_SIZES } from '../wal/segment-name.js';

/** The schema parts `Primary` and `Standby` share. Objects with methods are checked by type guards. */
export const nodeStorageSchema = {
  dir: { type: 'string', minLength: 1 },
  storage: {},
  application: {},
  segmentSize: { enum: [...SEGMENT_SIZES] },
  sync: { enum: ['fdatasync', 'none'] },
  recycleSegments: { type: 'integer', minimum: 0, maximum: 1024 },
  logPrefix: { type: 'string' },
} as const;

/** A transport and an address: where a node listens, or where a standby connects. */
export const endpointSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['transport', 'address'],
  properties: { transport: {}, address: { type: 'string', minLength: 1 } },
} as const;

/** The checks a JSON schema cannot make: exactly one of dir/storage, and the objects' shapes. */
export function checkNodeObjects(what: string, options: { dir?: string; storage?: unknown; application?: unknown }): void {
  if ((options.dir === undefined) === (options.storage === undefined)) {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: give exactly one of "dir" and "storage"`);
  }
  if (options.storage !== undefined && !isStorage(options.storage)) {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: ${what}.storage must implement Storage`);
  }
  if (!isApplication(options.application)) {
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: ${what}.application must be an object with an apply() method (and optional appliedLsn, snapshot, restore functions)`);
  }
}

/** Checks that `value` is a transport, naming the option when it is not. */
export function checkTransport(what: string, value: unknown): asserts value is Transport {
  const t = value as Partial<Transport> | null;
  if (typeof t !== 'object' || t === null || typeof t.connect !== 'function' || typeof t.listen !== 'function') {
    throw new WalshipError('INVALID_OPTIONS', `invalid options: ${what} must be a Transport (with connect() and listen())`);
  }
}

export function storageOf(options: { dir?: string; storage?: Storage }): Storage {
  return options.storage ?? new NodeStorage(options.dir as string);
}
