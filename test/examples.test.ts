import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import ts from 'typescript';
import { tempDir } from './helpers/temp-dir.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const tsx = import.meta.resolve('tsx');

/**
 * The examples that are packages of their own (a package.json, `walship` as a dependency):
 * npm workspaces of the root package, so `npm install` installs them, and
 * scripts/run-tests.mjs runs their tests.
 */
const PACKAGE_EXAMPLES = ['archive-shipping', 'ci-durability-test', 'custom-transport', 'kv-store', 's3-archiver', 'sqlite'];

/**
 * The examples that are folders of scripts (no package.json), and the test file that runs each
 * (`test/examples.test.ts`: this one).
 */
const FOLDER_EXAMPLES = { demo: 'test/examples.test.ts' };

/**
 * Runs an example with tsx in a working directory (a fresh one unless `cwd` is given), `walship`
 * imported by name resolving to this repository's sources (as `npm run demo` does), and
 * temporary files (TMPDIR) kept in that directory; returns its output.
 */
async function runExample(file: string, { cwd, timeout = 60_000 }: { cwd?: string; timeout?: number } = {}): Promise<string> {
  if (cwd !== undefined) {
    const args = ['--conditions=walship-source', '--import', tsx, `${root}examples/${file}`];
    return (await run(process.execPath, args, { cwd, timeout, env: { ...process.env, TMPDIR: cwd } })).stdout;
  }
  const { dir, cleanup } = await tempDir();
  try {
    return await runExample(file, { cwd: dir, timeout });
  } finally {
    await cleanup();
  }
}

/**
 * Source files parsed by one example's type check, kept for the next (by name, language version
 * and module format): every example's tsconfig extends the root's and so compiles with the same
 * options, and walship's sources, which each example imports, are parsed once instead of once
 * per example (the language service shares files between projects the same way). About half
 * the CPU of a `tsc -p` per example.
 */
const parsedFiles = new Map<string, ts.SourceFile | undefined>();

/** Type-checks a project as `tsc -p <tsconfig>` would; returns its errors, formatted ('' if none). */
function typeCheck(tsconfig: string): string {
  const config = ts.getParsedCommandLineOfConfigFile(tsconfig, {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (diagnostic) => assert.fail(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')),
  });
  assert.ok(config !== undefined, `${tsconfig} is readable`);
  const host = ts.createCompilerHost(config.options);
  const parse = host.getSourceFile.bind(host);
  host.getSourceFile = (fileName, languageVersionOrOptions, ...rest) => {
    // A file parses alike only for the same language version and module format.
    const { languageVersion, impliedNodeFormat } = typeof languageVersionOrOptions === 'number' ? { languageVersion: languageVersionOrOptions, impliedNodeFormat: undefined } : languageVersionOrOptions;
    const key = `${fileName}\0${languageVersion}\0${impliedNodeFormat}`;
    if (!parsedFiles.has(key)) parsedFiles.set(key, parse(fileName, languageVersionOrOptions, ...rest));
    return parsedFiles.get(key);
  };
  const program = ts.createProgram({ rootNames: config.fileNames, options: config.options, host, configFileParsingDiagnostics: config.errors });
  const diagnostics = ts.getPreEmitDiagnostics(program);
  return ts.formatDiagnostics(diagnostics, { getCanonicalFileName: (name) => name, getCurrentDirectory: () => root, getNewLine: () => '\n' });
}

/** The environment without what marks a process as a child of this test runner, so a nested `node --test` reports as at a terminal. */
function testRunnerFree(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_TEST_CONTEXT: _context, ...rest } = env;
  return rest;
}

describe('examples', () => {
  it('quick start: a primary and a standby on TCP, one commit applied on both; a rerun replays nothing', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const out = await runExample('quick-start.ts', { cwd: dir });
      assert.match(out, /^primary 0\/10060 hello world$/m);
      assert.match(out, /^standby 0\/10060 hello world$/m);
      assert.match(out, /^s1 streaming 0\/10060$/m);
      // The checkpoints at its end: a second run starts from them and applies only its own commit.
      const again = await runExample('quick-start.ts', { cwd: dir });
      assert.deepEqual(again.split('\n').filter((line) => /hello world$/.test(line)).sort(), ['primary 0/100C0 hello world', 'standby 0/100C0 hello world'], `second run:\n${again}`);
      assert.match(again, /^s1 streaming 0\/100C0$/m);
    } finally {
      await cleanup();
    }
  });

  it('the WalLog example writes, flushes and reads back three records', async () => {
    const out = await runExample('wal-log.ts');
    assert.match(out, /^durable up to 0\/10000F0$/m);
    assert.match(out, /^0\/1000020 greetings hello alice$/m);
    assert.match(out, /hello carol/);
  });

  it('the demo: the primary process is killed under load, a standby promoted, the other follows, the old primary rejoins, no acknowledged commit lost', async () => {
    const out = await runExample('demo/main.ts', { timeout: 150_000 });
    const at = String.raw`^\[[ \d.]+s\]`;
    const acknowledged = /^ {2}commits acknowledged before the kill +(\d+), lost 0$/m.exec(out);
    assert.ok(acknowledged !== null && Number(acknowledged[1]) > 0, `commits were acknowledged, none lost:\n${out}`);
    const promoted = new RegExp(`${at} (s1|s2): promoted in \\d+ ms: primary on timeline 2 `, 'm').exec(out)?.[1];
    assert.ok(promoted !== undefined, `a standby was promoted to timeline 2:\n${out}`);
    const other = promoted === 's1' ? 's2' : 's1';
    assert.match(out, new RegExp(`${at} ${other}: timeline:switch: follows timeline 2 from `, 'm'), 'the other standby switched timelines');
    assert.match(out, new RegExp(`^ {2}other standby ${other} +follows timeline 2$`, 'm'));
    assert.match(out, /^ {2}old primary p +rejoined as a standby on timeline 2/m);
    assert.match(out, new RegExp(`${at} {3}p +standby +streaming +2 `, 'm'), 'the last status table shows the old primary streaming on timeline 2');
    assert.doesNotMatch(out, /\x1b\[/, 'no escape codes without a terminal');
  });

  // main.ts may be SIGKILLed while a node still opens: the node must not outlive it.
  for (const when of ['while its script loads', 'while its Primary opens'] as const) {
    it(`a demo node exits when main.ts goes away ${when}`, async () => {
      const { dir, cleanup } = await tempDir();
      const config = { name: 'p', dir: `${dir}/p`, role: 'primary', password: 'pw' };
      const child = spawn(process.execPath, ['--conditions=walship-source', '--import', tsx, `${root}examples/demo/node.ts`, JSON.stringify(config)], {
        cwd: root,
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        env: { ...process.env, DEBUG: 'walship:storage' },
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      try {
        // The disconnect is what the node sees of a parent that was killed.
        if (when === 'while its script loads') child.disconnect();
        else {
          let stderr = '';
          child.stderr?.on('data', (chunk: Buffer) => {
            stderr = (stderr + chunk.toString()).slice(-1000);
            // Primary.open has taken the directory's lock and goes on opening.
            if (child.connected && stderr.includes('walship:storage locked')) child.disconnect();
          });
        }
        const deadline = new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 60_000).unref());
        const ended = await Promise.race([exited, deadline]);
        assert.deepEqual(ended, { code: 0, signal: null }, 'the node exited on its own');
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
        await cleanup();
      }
    });
  }

  it('the power-loss example recovers every acknowledged record and refuses bit rot', async () => {
    const out = await runExample('power-loss.ts');
    assert.match(out, /2000 records durable/);
    assert.match(out, /a new record went in at/);
    assert.match(out, /WAL_CORRUPT: WAL is corrupt in segment 000000010000000000000001 at offset \d+/);
  });

  for (const name of PACKAGE_EXAMPLES) {
    it(`examples/${name} is installed (a workspace) and type-checks against walship's sources`, () => {
      const dir = `${root}examples/${name}`;
      assert.ok(existsSync(`${root}node_modules/walship`), 'node_modules/walship (the workspace link) is missing: run `npm install` at the root');
      const errors = typeCheck(`${dir}/tsconfig.json`);
      assert.equal(errors, '', `examples/${name} does not type-check:\n${errors}`);
    });
  }

  // scripts/run-tests.mjs runs its test file directly; this runs it as its README says, through `npm test`.
  it("examples/ci-durability-test's npm test runs the ledger's failover test and its seed sweep, and passes", async () => {
    const { stdout } = await run('npm', ['test'], { cwd: `${root}examples/ci-durability-test`, timeout: 120_000, env: { ...testRunnerFree(process.env), LEDGER_SEED: '11', LEDGER_SEEDS: '3' } }).catch((err: { stdout?: string; stderr?: string }) => {
      assert.fail(`npm test failed in examples/ci-durability-test:\n${err.stdout ?? ''}${err.stderr ?? String(err)}`);
    });
    assert.match(stdout, /^ok \d+ - the ledger across a failover$/m, stdout);
    for (const seed of [11, 12, 13]) assert.match(stdout, new RegExp(`^ {4}ok \\d+ - seed ${seed}$`, 'm'), `seed ${seed} ran and passed:\n${stdout}`);
    assert.match(stdout, /^# tests 4$/m, stdout);
    assert.match(stdout, /^# fail 0$/m, stdout);
  });

  it('every example is covered here', async () => {
    const entries = await readdir(`${root}examples`, { withFileTypes: true });
    const files = entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => e.name).sort();
    assert.deepEqual(files, ['power-loss.ts', 'quick-start.ts', 'wal-log.ts'], 'each .ts example has a test above');
    const folders = entries.filter((e) => e.isDirectory());
    const packages = folders.filter((e) => existsSync(`${root}examples/${e.name}/package.json`)).map((e) => e.name).sort();
    assert.deepEqual(packages, [...PACKAGE_EXAMPLES].sort(), 'each example package is in PACKAGE_EXAMPLES');
    const scripts = folders.filter((e) => !packages.includes(e.name)).map((e) => e.name).sort();
    assert.deepEqual(scripts, Object.keys(FOLDER_EXAMPLES).sort(), 'each example folder is in FOLDER_EXAMPLES');
    for (const test of Object.values(FOLDER_EXAMPLES)) assert.ok(existsSync(`${root}${test}`), `${test} exists`);
  });
});
