#!/usr/bin/env node
// Runs every test/**/*.test.ts file with node:test through the tsx loader.
// Node 20's `node --test <dir>` would also run helper files, so the files are listed explicitly.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

function findTests(dir) {
  const found = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (name.endsWith('.test.ts')) found.push(path);
  }
  return found;
}

const filters = process.argv.slice(2);
const files = findTests('test')
  .map((file) => relative('.', file))
  .filter((file) => filters.length === 0 || filters.some((f) => file.includes(f)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
// A per-file deadline: a test that hangs (even in a synchronous loop) fails instead of stalling CI.
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-timeout=180000', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
