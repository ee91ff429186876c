import { WalshipError, isWalshipError } from '../errors.js';
import type { Storage, StorageLock } from '../storage/storage.js';

/** The data directory's lock, taken outside the `WalLog` (which holds it while open): for work on a directory no log has open. */

/** Takes the directory's lock; failures other than `WAL_LOCKED` are `WAL_IO`. */
export async function lockStorage(storage: Storage): Promise<StorageLock> {
  try {
    return await storage.lock();
  } catch (err) {
    if (isWalshipError(err)) throw err;
    throw new WalshipError('WAL_IO', `cannot lock ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}

/** Runs `work` holding the directory's lock; the lock is released either way (a failed release after success is `WAL_IO`). */
export async function withStorageLock<T>(storage: Storage, work: () => Promise<T>): Promise<T> {
  const lock = await lockStorage(storage);
  let result: T;
  try {
    result = await work();
  } catch (err) {
    await lock.release().catch(() => undefined);
    throw err;
  }
  await releaseLock(storage, lock);
  return result;
}

export async function releaseLock(storage: Storage, lock: StorageLock): Promise<void> {
  try {
    await lock.release();
  } catch (err) {
    throw new WalshipError('WAL_IO', `cannot unlock ${storage.description}: ${(err as Error).message}`, { cause: err });
  }
}
