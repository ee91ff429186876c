import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { ERROR_CODES } from '../src/index.js';

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has a "${title}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

describe('README', () => {
  it('lists every error code of the registry, with its meaning and action, and no others', () => {
    const rows = section('Error codes')
      .split('\n')
      .filter((line) => line.startsWith('| `'))
      .map((line) => line.slice(2, -2).split(' | '));
    const documented = rows.map(([code]) => code?.replaceAll('`', ''));
    assert.deepEqual(documented, Object.keys(ERROR_CODES));
    for (const [code, when, action] of rows) {
      const entry = ERROR_CODES[code?.replaceAll('`', '') as keyof typeof ERROR_CODES];
      assert.equal(when, entry.when, `${code}: "when" text`);
      assert.equal(action, entry.action, `${code}: "what to do" text`);
    }
  });

  it('shows examples/quick-start.ts as its quick start, importing from the package', async () => {
    const example = await readFile(new URL('../examples/quick-start.ts', import.meta.url), 'utf8');
    const block = /```ts\n([\s\S]*?)```/.exec(section('Quick start'))?.[1];
    assert.equal(block, example.replace("from '../src/index.js'", "from 'walship'"));
    assert.ok(example.split('\n').length <= 21, 'the quick start stays about 20 lines');
  });

  it('gives the two set-up commands, and .ci/run runs the same test command', async () => {
    const setup = section('Set up (two commands)');
    assert.match(setup, /npm install && npm run demo/);
    assert.match(setup, /\nnpm test /);
    const ci = await readFile(new URL('../.ci/run', import.meta.url), 'utf8');
    assert.match(ci, /^npm test$/m);
  });
});
