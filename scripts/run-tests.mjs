#!/usr/bin/env node
// Runs every test/**/*.test.ts file with node:test through the tsx loader, and the tests of the
// examples that are packages of their own (examples/*/package.json: npm workspaces, so the root
// `npm install` installs their dependencies). The "walship-source" condition makes
// `import 'walship'` in an example load this repository's sources (package.json "exports"),
// so the tests need no build.
// Node 20's `node --test <dir>` would also run helper files, so the files are listed explicitly.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative } from 'node:path';

function findTests(dir) {
  const found = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (name === 'node_modules') continue;
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (name.endsWith('.test.ts')) found.push(path);
  }
  return found;
}

/** The test files of the example packages. */
function exampleTests() {
  return readdirSync('examples')
    .sort()
    .map((name) => join('examples', name))
    .filter((dir) => existsSync(join(dir, 'package.json')))
    .flatMap((dir) => findTests(dir));
}

const filters = process.argv.slice(2);
const files = [...findTests('test'), ...exampleTests()]
  .map((file) => relative('.', file))
  .filter((file) => filters.length === 0 || filters.some((f) => file.includes(f)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
// Files run at least two at a time: much of a file's time is spent waiting (fdatasync, sockets,
// child processes), and Node's default, one fewer than the cores, runs them one by one on two.
const concurrency = Math.max(2, availableParallelism() - 1);
// A per-file deadline: a test that hangs (even in a synchronous loop) fails instead of stalling CI.
const result = spawnSync(process.execPath, ['--conditions=walship-source', '--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-timeout=180000', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
