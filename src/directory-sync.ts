import { constants } from 'node:fs';
import fs from 'node:fs/promises';

/**
 * fsyncs the directory `dir`, which makes the creates, renames and removes in it durable
 * (POSIX). Shared by `NodeStorage` and `FileSystemArchive`, which both publish files by name.
 */
export async function syncDirectoryAt(dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
