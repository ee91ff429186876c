import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { checksumImplementation } from '../src/index.js';

const run = promisify(execFile);
const tsx = import.meta.resolve('tsx');
const withoutAddon = fileURLToPath(new URL('./fixtures/without-native-crc.cjs', import.meta.url));
const walLogUrl = new URL('../src/index.ts', import.meta.url).href;

/** Opens a WalLog in a child process (optionally without the addon); returns what it printed. */
async function openWalLog(preload: string[]): Promise<{ stdout: string; stderr: string }> {
  const script = `
    const { WalLog, MemoryStorage, checksumImplementation } = await import(${JSON.stringify(walLogUrl)});
    const log = await WalLog.open({ storage: new MemoryStorage() });
    await log.close();
    console.log(checksumImplementation());`;
  return run(process.execPath, [...preload, '--import', tsx, '--input-type=module', '-e', script], {
    env: { ...process.env, DEBUG: 'walship:checksum' },
  });
}

describe('checksumImplementation', () => {
  it('is native where the sse4_crc32 addon loads, and then says nothing', async () => {
    // Whether this install built the addon (a toolchain, install scripts allowed).
    const addonLoads = (() => {
      try {
        createRequire(import.meta.url)('sse4_crc32');
        return true;
      } catch {
        return false;
      }
    })();
    const expected = addonLoads ? 'native' : 'javascript';
    assert.equal(checksumImplementation(), expected);
    const { stdout, stderr } = await openWalLog([]);
    assert.equal(stdout.trim(), expected);
    assert.equal(/without its native binding/.test(stderr), !addonLoads);
  });

  it('is javascript without the addon, and opening a WalLog says so on walship:checksum', async () => {
    const { stdout, stderr } = await openWalLog(['--require', withoutAddon]);
    assert.equal(stdout.trim(), 'javascript');
    assert.match(stderr, /walship:checksum fast-crc32c runs without its native binding \(sse4_crc32\): CRC-32C checksums are about 20x slower/);
  });
});
