import { errnoCode } from '../errors.js';
import type { Storage } from './storage.js';

/**
 * Replaces file `name` with `data` atomically and durably: written to `<name>.tmp` (a stale one
 * from a crash is removed first), fdatasynced, renamed over `name`, then the directory synced,
 * so a crash at any point leaves the old file or the new one, never a mix. With
 * `syncDirectory: false` the rename is made durable by the caller's next directory sync.
 * Throws the storage's own error; callers wrap it in their `WalshipError`.
 */
export async function replaceFileDurably(storage: Storage, name: string, data: Uint8Array, options: { syncDirectory?: boolean } = {}): Promise<void> {
  const temp = `${name}.tmp`;
  await storage.remove(temp).catch((err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
  });
  const file = await storage.open(temp, { create: true, exclusive: true });
  try {
    await file.write(data, 0);
    await file.datasync();
  } finally {
    await file.close();
  }
  await storage.rename(temp, name);
  if (options.syncDirectory !== false) await storage.syncDirectory();
}
