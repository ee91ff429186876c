import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

interface PackageJson {
  readonly exports: Record<string, Record<string, string> | string>;
  readonly bin?: Record<string, string>;
  readonly scripts: Record<string, string>;
  readonly allowScripts?: Record<string, boolean>;
}

const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as PackageJson;

/** The files `npm pack` would publish (dist/ as built by `prepare` at install time). */
async function packedFiles(): Promise<Set<string>> {
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, maxBuffer: 64 << 20 });
  const [result] = JSON.parse(stdout) as [{ files: { path: string }[] }];
  return new Set(result.files.map((f) => f.path));
}

describe('the published package', () => {
  it('builds itself when installed from a git URL or a clone (prepare)', () => {
    assert.match(pkg.scripts.prepare ?? '', /tsc -p tsconfig\.build\.json/);
  });

  it('ships every file its exports and bin name, and no tests, benchmarks or examples', async () => {
    assert.ok(existsSync(join(root, 'dist/index.js')), 'dist/ is missing: `npm install` builds it (the prepare script)');
    const files = await packedFiles();
    const targets = Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e)));
    for (const target of [...targets, ...Object.values(pkg.bin ?? {})]) {
      assert.ok(files.has(normalize(target)), `${target} is named by package.json but not packed`);
    }
    for (const file of files) assert.doesNotMatch(file, /^(test|bench|examples|scratch|scripts|docs)\//);
    assert.ok(files.has('CHANGELOG.md'));
  });

  it('ships every source map a packed file points at, and every source a map names', async () => {
    const files = await packedFiles();
    let maps = 0;
    for (const file of files) {
      if (!/\.(js|d\.ts)$/.test(file)) continue;
      const text = await readFile(join(root, file), 'utf8');
      const url = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(text)?.[1];
      if (url === undefined) continue;
      const map = join(dirname(file), url);
      assert.ok(files.has(map), `${file} points at ${map}, which is not packed`);
      const { sources } = JSON.parse(await readFile(join(root, map), 'utf8')) as { sources: string[] };
      for (const source of sources) {
        assert.ok(files.has(join(dirname(map), source)), `${map} names ${source}, which is not packed`);
      }
      maps++;
    }
    assert.ok(maps > 100, `only ${maps} source maps found`);
  });

  it('runs its bin as built, through a symlink as npm links bins', async () => {
    const bin = pkg.bin?.walship;
    assert.ok(bin !== undefined, 'package.json names the walship bin');
    const dir = await mkdtemp(join(tmpdir(), 'walship-bin-'));
    try {
      await symlink(join(root, bin), join(dir, 'walship'));
      const { stdout } = await run(process.execPath, [join(dir, 'walship'), '--help']);
      assert.match(stdout, /^Usage: walship <command>/);
      assert.match(stdout, /waldump/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('approves the install scripts it relies on (npm 11 allowScripts): the native CRC-32C addon', () => {
    assert.equal(pkg.allowScripts?.sse4_crc32, true);
  });
});
