import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { ARCHIVE_DEFAULTS, ERROR_CODES, PRIMARY_DEFAULTS, STANDBY_DEFAULTS, WAL_LOG_DEFAULTS, primaryOptionsSchema, standbyOptionsSchema, walLogOptionsSchema } from '../src/index.js';
import { NODE_EVENT_NAMES } from '../src/node/node-core.js';
import { RECOVERY_EVENT_NAMES } from '../src/roles/recovery.js';
import { WRITER_EVENT_NAMES } from '../src/roles/writer.js';

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has a "${title}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** The `### title` subsection: up to the next heading of level 2 or 3. */
function subsection(title: string): string {
  const start = readme.indexOf(`\n### ${title}\n`);
  assert.ok(start >= 0, `README has a "${title}" subsection`);
  const rest = readme.slice(start + 1);
  const end = rest.search(/\n##?#? /);
  return end < 0 ? rest : rest.slice(0, end);
}

/** The rows of the tables in `text` whose first cell is code: `[name, ...other cells]`. */
function tableRows(text: string): string[][] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => line.slice(2, -2).split(' | '))
    .map(([first, ...cells]) => [(first ?? '').replaceAll('`', ''), ...cells]);
}

/** A default as the tables write it: `'on'`, `true`, 60 000, 1 MiB, −1. */
function formatDefault(value: unknown): string {
  if (typeof value === 'string') return `\`'${value}'\``;
  if (typeof value === 'boolean') return `\`${value}\``;
  if (typeof value === 'number') {
    if (value < 0) return `−${-value}`;
    if (value >= 1024 * 1024 && value % (1024 * 1024) === 0) return `${value / (1024 * 1024)} MiB`;
    return String(value).replace(/\B(?=(\d{3})+$)/g, ' ');
  }
  throw new Error(`no table format for ${String(value)}`);
}

/** Checks that a table names exactly the schema's options, and shows each exported default. */
function checkOptionsTable(title: string, properties: object, defaults: Record<string, unknown>): void {
  const rows = tableRows(subsection(title));
  assert.deepEqual(rows.map(([name]) => name).sort(), Object.keys(properties).sort(), `"${title}": one row per option of the schema`);
  for (const [name, value] of Object.entries(defaults)) {
    const row = rows.find(([option]) => option === name);
    assert.ok(row !== undefined, `"${title}" has a row for ${name}`);
    const cell = row[2] ?? '';
    assert.ok(cell.startsWith(formatDefault(value)), `"${title}": ${name} defaults to ${formatDefault(value)}, the table says "${cell}"`);
  }
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

  it('has a table of every option of Primary, Standby, its primary connection, archive and WalLog, with their defaults', () => {
    checkOptionsTable('`Primary` options', primaryOptionsSchema.properties, PRIMARY_DEFAULTS);
    checkOptionsTable('`Standby` options', standbyOptionsSchema.properties, STANDBY_DEFAULTS);
    checkOptionsTable('`Standby` `primary` options', standbyOptionsSchema.properties.primary.properties, {});
    checkOptionsTable('`archive` options', primaryOptionsSchema.properties.archive.properties, ARCHIVE_DEFAULTS);
    checkOptionsTable('`WalLog` options', walLogOptionsSchema.properties, WAL_LOG_DEFAULTS);
  });

  it('lists the events Primary and Standby pass on, and no others', () => {
    const primary = tableRows(subsection('`Primary` events')).map(([name]) => name);
    assert.deepEqual(primary.sort(), [...NODE_EVENT_NAMES, ...WRITER_EVENT_NAMES, 'wal:error'].sort());
    const standby = subsection('`Standby` events');
    assert.deepEqual(tableRows(standby).map(([name]) => name).sort(), [...RECOVERY_EVENT_NAMES, 'promoted'].sort());
    const serving = standby.slice(0, standby.indexOf('\n|'));
    for (const name of NODE_EVENT_NAMES) assert.ok(serving.includes(`\`${name}\``), `"\`Standby\` events" names the serving event ${name}`);
  });

  it('shows examples/quick-start.ts as its quick start, importing from the package', async () => {
    const example = await readFile(new URL('../examples/quick-start.ts', import.meta.url), 'utf8');
    const block = /```ts\n([\s\S]*?)```/.exec(section('Quick start'))?.[1];
    assert.equal(block, example);
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
