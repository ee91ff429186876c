import crc32c from 'fast-crc32c';
import type { Storage } from '../../src/index.js';

/** A checksummed JSON file's bytes as src/storage/json-file.ts lays them out: crc, length, JSON. */
export function encodeJsonFile(json: string): Buffer {
  const body = Buffer.from(json, 'utf8');
  const buf = Buffer.alloc(8 + body.length);
  buf.writeUInt32LE(body.length, 4);
  body.copy(buf, 8);
  buf.writeUInt32LE(crc32c.calculate(buf.subarray(4)), 0);
  return buf;
}

/** Writes `bytes` as file `name`, durably. */
export async function putFile(storage: Storage, name: string, bytes: Uint8Array): Promise<void> {
  const file = await storage.open(name, { create: true });
  await file.write(bytes, 0);
  await file.datasync();
  await file.close();
  await storage.syncDirectory();
}
