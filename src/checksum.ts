import { createRequire } from 'node:module';
import crc32c from 'fast-crc32c';
import { createLogger } from './logger.js';

/**
 * Which CRC-32C implementation `fast-crc32c` loaded: `native` (the `sse4_crc32` addon, using
 * the CPU's CRC32 instruction) or `javascript` (its table-driven fallback, about 20 times
 * slower: every WAL record, frame and file checksum pays for it). The addon is an optional
 * dependency built by node-gyp at install time; it is missing when the install had no C++
 * toolchain, ran with `--ignore-scripts`, or npm's `allowScripts` did not approve it.
 */
export type ChecksumImplementation = 'native' | 'javascript';

let detected: ChecksumImplementation | undefined;

/** The CRC-32C implementation in use in this process (see {@link ChecksumImplementation}). */
export function checksumImplementation(): ChecksumImplementation {
  if (detected !== undefined) return detected;
  detected = 'javascript';
  try {
    const require = createRequire(import.meta.url);
    // fast-crc32c's loader returns this very module object when the addon loaded.
    if (require('fast-crc32c/impls/sse4_crc32c') === crc32c) detected = 'native';
  } catch {
    // The addon did not build or load: fast-crc32c uses its JavaScript fallback.
  }
  if (detected === 'javascript') {
    createLogger('checksum')('fast-crc32c runs without its native binding (sse4_crc32): CRC-32C checksums are about 20x slower; see the README, "Install"');
  }
  return detected;
}
