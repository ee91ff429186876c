import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { NodeStorage, type CommitSync } from '../../src/storage/node-storage.js';
import type { Storage, StorageOpenOptions } from '../../src/storage/storage.js';
import { storageConformance } from '../../src/testing/storage-conformance.js';

/** Opens every writable file as the WAL writer opens its segments (`commitPath`), so that their syncs take the storage's commit-path way. */
export function commitPathStorage(storage: NodeStorage): Storage {
  return {
    description: storage.description,
    prepare: () => storage.prepare(),
    list: () => storage.list(),
    open: (name: string, options: StorageOpenOptions = {}) => storage.open(name, { ...options, commitPath: options.readOnly !== true }),
    rename: (from: string, to: string) => storage.rename(from, to),
    remove: (name: string) => storage.remove(name),
    syncDirectory: () => storage.syncDirectory(),
    lock: () => storage.lock(),
  };
}

/** The storage contract with every commit-path sync taken the `commitSync` way (closed files, EBADF, …). */
export function commitSyncConformance(commitSync: CommitSync, name: string): void {
  storageConformance({
    name,
    createStorage: async () => {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), `walship-commit-sync-${commitSync}-`));
      return commitPathStorage(new NodeStorage(path.join(dir, 'data'), { commitSync }));
    },
    openAgain: (storage) => commitPathStorage(new NodeStorage(storage.description, { commitSync })),
    cleanup: (storage) => fs.rm(path.dirname(storage.description), { recursive: true, force: true }),
  });
}
