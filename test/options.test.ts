import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { Ajv } from 'ajv';
import * as main from '../src/index.js';
import { createSlotOptionsSchema } from '../src/node/node-options.js';
import { compileOptions } from '../src/options.js';
import { reloadOptionsSchema } from '../src/primary.js';
import * as protocol from '../src/protocol/index.js';
import { isWalshipError } from '../src/errors.js';

// walship's ajv does not check its schemas against JSON Schema's meta-schema (compiling that
// at every import cost 10-15 % of it): this does, for every schema compileOptions is called with.
const SCHEMAS: Record<string, unknown> = {
  ...Object.fromEntries(Object.entries(main).filter(([name]) => name.endsWith('OptionsSchema'))),
  ...Object.fromEntries(Object.entries(protocol).filter(([name]) => name.endsWith('OptionsSchema'))),
  createSlotOptionsSchema,
  reloadOptionsSchema,
};

describe('options schemas', () => {
  it('are all here: one per compileOptions call in src/', async () => {
    let calls = 0;
    for (const file of await readdir(new URL('../src/', import.meta.url), { recursive: true })) {
      if (!file.endsWith('.ts') || file === 'options.ts') continue;
      const text = await readFile(new URL(`../src/${file}`, import.meta.url), 'utf8');
      calls += text.match(/compileOptions\(/g)?.length ?? 0;
    }
    assert.equal(Object.keys(SCHEMAS).length, calls, Object.keys(SCHEMAS).join(', '));
  });

  for (const [name, schema] of Object.entries(SCHEMAS)) {
    it(`${name} is a valid JSON schema that refuses an unknown option with INVALID_OPTIONS`, () => {
      const checker = new Ajv({ strict: true, allErrors: true });
      assert.equal(checker.validateSchema(schema as object), true, JSON.stringify(checker.errors));
      const validate = compileOptions(name, schema as object);
      assert.throws(
        () => validate({ noSuchOption: 1 }),
        (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'),
      );
    });
  }
});
