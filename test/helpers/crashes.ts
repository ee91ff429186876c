import type { CrashOptions } from '../../src/testing/index.js';

/**
 * Crash patterns for `MemoryStorage` crash tests: what survives of unsynced bytes (lost,
 * kept, torn, whole sectors) and of unsynced creates/renames/removes (lost, kept, a prefix).
 */
export const CRASH_MODES: readonly Omit<CrashOptions, 'random'>[] = [
  { unsyncedWrites: 'lose', unsyncedMetadata: 'lose' },
  { unsyncedWrites: 'keep', unsyncedMetadata: 'keep' },
  { unsyncedWrites: 'keep', unsyncedMetadata: 'lose' },
  { unsyncedWrites: 'lose', unsyncedMetadata: 'keep' },
  { unsyncedWrites: 'torn', unsyncedMetadata: 'prefix' },
  { unsyncedWrites: 'sectors', unsyncedMetadata: 'prefix' },
];
