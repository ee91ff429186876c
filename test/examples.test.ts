import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { tempDir } from './helpers/temp-dir.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const tsx = import.meta.resolve('tsx');
const tsc = fileURLToPath(import.meta.resolve('typescript/bin/tsc'));

/**
 * The examples that are packages of their own (a package.json, `walship` as a dependency):
 * npm workspaces of the root package, so `npm install` installs them, and
 * scripts/run-tests.mjs runs their tests.
 */
const PACKAGE_EXAMPLES = ['kv-store', 's3-archiver'];

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
    assert.match(out, /^primary 0\/1000060 hello world$/m);
    assert.match(out, /^standby 0\/1000060 hello world$/m);
    assert.match(out, /^s1 streaming 0\/1000060$/m);
  });

  it('the WalLog example writes, flushes and reads back three records', async () => {
    const out = await runExample('wal-log.ts');
    assert.match(out, /^durable up to 0\/10000F0$/m);
    assert.match(out, /^0\/1000020 greetings hello alice$/m);
    assert.match(out, /hello carol/);
  });

  it('the demo recovers every acknowledged record and refuses bit rot', async () => {
    const out = await runExample('demo.ts');
    assert.match(out, /2000 records durable/);
    assert.match(out, /a new record went in at/);
    assert.match(out, /WAL_CORRUPT: WAL is corrupt in segment 000000010000000000000001 at offset \d+/);
  });

  for (const name of PACKAGE_EXAMPLES) {
    it(`examples/${name} is installed (a workspace) and type-checks against walship's sources`, async () => {
      const dir = `${root}examples/${name}`;
      assert.ok(existsSync(`${root}node_modules/walship`), 'node_modules/walship (the workspace link) is missing: run `npm install` at the root');
      await run(process.execPath, [tsc, '-p', `${dir}/tsconfig.json`], { cwd: root, timeout: 120_000 }).catch((err: { stdout?: string }) => {
        assert.fail(`examples/${name} does not type-check:\n${err.stdout ?? String(err)}`);
      });
    });
  }

  it('every example is covered here', async () => {
    const entries = await readdir(`${root}examples`, { withFileTypes: true });
    const files = entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => e.name).sort();
    assert.deepEqual(files, ['demo.ts', 'quick-start.ts', 'wal-log.ts'], 'each .ts example has a test above');
    const packages = entries.filter((e) => e.isDirectory() && existsSync(`${root}examples/${e.name}/package.json`)).map((e) => e.name).sort();
    assert.deepEqual(packages, [...PACKAGE_EXAMPLES].sort(), 'each example package is in PACKAGE_EXAMPLES');
  });
});
