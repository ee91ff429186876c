import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { tempDir } from './helpers/temp-dir.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const tsx = import.meta.resolve('tsx');

/** Runs an example with tsx in a fresh working directory; returns its output. */
async function runExample(file: string): Promise<string> {
  const { dir, cleanup } = await tempDir();
  try {
    const { stdout } = await run(process.execPath, ['--import', tsx, `${root}examples/${file}`], { cwd: dir, timeout: 60_000 });
    return stdout;
  } finally {
    await cleanup();
  }
}

describe('examples', () => {
  it('quick start: a primary and a standby on TCP, one commit applied on both', async () => {
    const out = await runExample('quick-start.ts');
    assert.match(out, /^primary 0\/1000058 hello world$/m);
    assert.match(out, /^standby 0\/1000058 hello world$/m);
    assert.match(out, /^s1 streaming 0\/1000058$/m);
  });

  it('the WalLog example writes, flushes and reads back three records', async () => {
    const out = await runExample('wal-log.ts');
    assert.match(out, /^durable up to 0\/10000D8$/m);
    assert.match(out, /^0\/1000020 greetings hello alice$/m);
    assert.match(out, /hello carol/);
  });

  it('the demo recovers every acknowledged record and refuses bit rot', async () => {
    const out = await runExample('demo.ts');
    assert.match(out, /2000 records durable/);
    assert.match(out, /a new record went in at/);
    assert.match(out, /WAL_CORRUPT: WAL is corrupt in segment 000000010000000000000001 at offset \d+/);
  });

  it('every example is covered here', async () => {
    const files = (await readdir(`${root}examples`)).filter((f) => f.endsWith('.ts')).sort();
    assert.deepEqual(files, ['demo.ts', 'quick-start.ts', 'wal-log.ts']);
  });
});
