import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWalshipError } from '../../src/errors.js';
import {
  SyncStandbyNamesError,
  formatSynchronousStandbyNames,
  parseSynchronousStandbyNames,
  syncPriorityOf,
  type SyncMethod,
  type SyncStandbyConfig,
} from '../../src/replication/sync-standby-names.js';

type Row = [text: string, method: SyncMethod, num: number, names: string[]];

const VALID: Row[] = [
  ['s1', 'first', 1, ['s1']],
  ['s1, s2, s3', 'first', 1, ['s1', 's2', 's3']],
  ['s1,s2', 'first', 1, ['s1', 's2']],
  ['FIRST 2 (s1, s2, s3)', 'first', 2, ['s1', 's2', 's3']],
  ['ANY 2 (s1, s2, s3)', 'any', 2, ['s1', 's2', 's3']],
  ['2 (s1, s2)', 'first', 2, ['s1', 's2']],
  ['2(s1,s2)', 'first', 2, ['s1', 's2']],
  ['first 1 (a)', 'first', 1, ['a']],
  ['FiRsT 1 (a)', 'first', 1, ['a']],
  ['any 3 (a, b)', 'any', 3, ['a', 'b']],
  ['aNy 1(a)', 'any', 1, ['a']],
  ['  \t\n FIRST\v2\f(\r s1 ,\ns2 )  ', 'first', 2, ['s1', 's2']],
  ['*', 'first', 1, ['*']],
  ['ANY 1 (*)', 'any', 1, ['*']],
  ['FIRST 1 (s1, *)', 'first', 1, ['s1', '*']],
  ['"*"', 'first', 1, ['*']],
  ['"my standby"', 'first', 1, ['my standby']],
  ['FIRST 1 ("a, b", "c(d)")', 'first', 1, ['a, b', 'c(d)']],
  ['"say ""hi"""', 'first', 1, ['say "hi"']],
  ['""""', 'first', 1, ['"']],
  ['""', 'first', 1, ['']],
  ['"first", "ANY"', 'first', 1, ['first', 'ANY']],
  ['FIRST 1 ("first")', 'first', 1, ['first']],
  ['firstly, anyone, any1, first_', 'first', 1, ['firstly', 'anyone', 'any1', 'first_']],
  ['S1, Standby_A$1', 'first', 1, ['S1', 'Standby_A$1']],
  ['_x', 'first', 1, ['_x']],
  ['1, 2, 007', 'first', 1, ['1', '2', '007']],
  ['2 (1, 2)', 'first', 2, ['1', '2']],
  ['007 (a)', 'first', 7, ['a']],
  ['FIRST 2 (s1, s1, s2)', 'first', 2, ['s1', 's1', 's2']],
  ['zoë, 東京', 'first', 1, ['zoë', '東京']],
  ['"Mixed Case"', 'first', 1, ['Mixed Case']],
  ['FIRST 5 (a)', 'first', 5, ['a']],
];

type Bad = [text: string, position: number, near: string | null, reason: RegExp];

const INVALID: Bad[] = [
  ['FIRST 2 (a,', 12, null, /syntax error/],
  ['FIRST 2 (a', 11, null, /syntax error/],
  ['FIRST 2 a, b', 9, 'a', /syntax error/],
  ['FIRST (a)', 7, '(', /syntax error/],
  ['ANY (a)', 5, '(', /syntax error/],
  ['FIRST', 6, null, /syntax error/],
  ['ANY 2', 6, null, /syntax error/],
  ['FIRST 2 ()', 10, ')', /syntax error/],
  ['()', 1, '(', /syntax error/],
  ['(a)', 1, '(', /syntax error/],
  ['a b', 3, 'b', /syntax error/],
  ['a,', 3, null, /syntax error/],
  [',a', 1, ',', /syntax error/],
  ['a,,b', 3, ',', /syntax error/],
  ['2 (a) b', 7, 'b', /syntax error/],
  ['2 (a))', 6, ')', /syntax error/],
  ['2 a', 3, 'a', /syntax error/],
  ['1a', 2, 'a', /syntax error/],
  ['first, a', 6, ',', /syntax error/],
  ['a, first', 4, 'first', /syntax error/],
  ['FIRST 2 (any)', 10, 'any', /syntax error/],
  ['FIRST -1 (a)', 7, '-', /syntax error/],
  ['a; b', 2, ';', /syntax error/],
  ['$a', 1, '$', /syntax error/],
  ["'a'", 1, "'", /syntax error/],
  ['FIRST 2.5 (a)', 8, '.', /syntax error/],
  ['FIRST 0 (a)', 7, '0', /number of synchronous standbys \(0\) must be greater than zero/],
  ['ANY 00 (a, b)', 5, '00', /must be greater than zero/],
  ['0 (a)', 1, '0', /must be greater than zero/],
  ['FIRST 99999999999 (a)', 7, '99999999999', /at most 2147483647/],
  ['"abc', 1, '"abc', /unterminated quoted identifier/],
  ['FIRST 1 (a, "b', 13, '"b', /unterminated quoted identifier/],
  ['a b "c', 3, 'b', /syntax error/],
  ['zoë $', 5, '$', /syntax error/],
];

function parse(text: string): SyncStandbyConfig {
  const config = parseSynchronousStandbyNames(text);
  assert.ok(config !== null, `${JSON.stringify(text)} parsed to null`);
  return config;
}

describe('parseSynchronousStandbyNames', () => {
  it('is off (null) for an empty or all-whitespace text', () => {
    for (const text of ['', ' ', '\t\n\r\f\v  ']) {
      assert.equal(parseSynchronousStandbyNames(text), null, JSON.stringify(text));
    }
  });

  for (const [text, method, num, names] of VALID) {
    it(`parses ${JSON.stringify(text)}`, () => {
      const config = parse(text);
      assert.deepEqual({ ...config, names: [...config.names] }, { method, num, names, text }, JSON.stringify(text));
      assert.ok(Object.isFrozen(config) && Object.isFrozen(config.names), 'the result is frozen');
    });
  }

  for (const [text, position, near, reason] of INVALID) {
    it(`rejects ${JSON.stringify(text)} at position ${position}`, () => {
      assert.throws(
        () => parseSynchronousStandbyNames(text),
        (err: unknown) => {
          assert.ok(isWalshipError(err, 'INVALID_OPTIONS'), `INVALID_OPTIONS, got ${String(err)}`);
          assert.ok(err instanceof SyncStandbyNamesError, 'a SyncStandbyNamesError');
          assert.equal(err.position, position, `position in ${err.message}`);
          assert.equal(err.near, near, `token in ${err.message}`);
          assert.match(err.message, reason, 'reason');
          assert.ok(err.message.includes(`position ${position}`), `message names the position: ${err.message}`);
          assert.ok(err.message.includes(JSON.stringify(text)), `message quotes the text: ${err.message}`);
          return true;
        },
        JSON.stringify(text),
      );
    });
  }

  it('words its messages as documented', () => {
    assert.throws(
      () => parseSynchronousStandbyNames('FIRST 2 (a,'),
      { message: 'invalid synchronousStandbyNames "FIRST 2 (a,": syntax error at position 12 (end of input)' },
      'end of input',
    );
    assert.throws(
      () => parseSynchronousStandbyNames('FIRST (a)'),
      { message: 'invalid synchronousStandbyNames "FIRST (a)": syntax error at position 7 (at or near "(")' },
      'a token',
    );
  });

  it('counts positions in characters, not UTF-16 units', () => {
    assert.throws(
      () => parseSynchronousStandbyNames('😀 !'),
      (err: unknown) => err instanceof SyncStandbyNamesError && err.position === 3 && err.near === '!',
      'the emoji is one character (and a name)',
    );
  });

  it('rejects a value that is not a string', () => {
    for (const value of [null, undefined, 3, ['a']]) {
      assert.throws(() => parseSynchronousStandbyNames(value as never), (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'), String(value));
    }
  });
});

describe('syncPriorityOf', () => {
  type PriorityRow = [text: string, app: string, priority: number];
  const ROWS: PriorityRow[] = [
    ['FIRST 2 (s1, s2, s3)', 's1', 1],
    ['FIRST 2 (s1, s2, s3)', 's3', 3],
    ['FIRST 2 (s1, s2, s3)', 's4', 0],
    ['FIRST 2 (s1, s2, s3)', 'S2', 2],
    ['FIRST 1 ("Mixed Case")', 'mixed case', 1],
    ['FIRST 1 (ABC)', 'abc', 1],
    ['FIRST 1 (zoë)', 'ZOË', 0],
    ['FIRST 1 (zoë)', 'ZOë', 1],
    ['ANY 2 (s1, s2, s3)', 's3', 1],
    ['ANY 2 (s1, s2, s3)', 's4', 0],
    ['*', 'anything', 1],
    ['"*"', 'anything', 1],
    ['FIRST 1 (s1, *)', 's1', 1],
    ['FIRST 1 (s1, *)', 'other', 2],
    ['FIRST 1 (*, s1)', 's1', 1],
    ['ANY 1 (s1, *)', 'other', 1],
    ['FIRST 2 (s1, s1, s2)', 's2', 3],
    ['FIRST 2 (s1, s1, s2)', 's1', 1],
    ['""', '', 1],
    ['""', 'x', 0],
    ['1, 2', '2', 2],
    ['007', '7', 0],
  ];
  for (const [text, app, priority] of ROWS) {
    it(`${JSON.stringify(app)} in ${text} has priority ${priority}`, () => {
      assert.equal(syncPriorityOf(parse(text), app), priority, `${app} in ${text}`);
    });
  }

  it('is 0 when synchronous replication is off', () => {
    assert.equal(syncPriorityOf(null, 's1'), 0, 'null config');
  });
});

describe('formatSynchronousStandbyNames', () => {
  it('writes the canonical form, quoting where needed', () => {
    const config = parse('any 2 (s1, "a b", "first", "x""y", *, 007, "", zoë)');
    assert.equal(formatSynchronousStandbyNames(config), 'ANY 2 (s1, "a b", "first", "x""y", *, 007, "", zoë)', 'canonical');
    assert.equal(formatSynchronousStandbyNames(parse('s1, s2')), 'FIRST 1 (s1, s2)', 'the legacy list');
  });

  it('round-trips random configurations', () => {
    const name = fc.oneof(
      fc.string({ unit: fc.constantFrom('a', 'B', '_', '$', '1', ' ', ',', '"', '(', ')', '*', 'é', '-', '\t'), maxLength: 8 }),
      fc.constantFrom('*', 'first', 'ANY', 'any1', '0', '007', ''),
      fc.string({ maxLength: 6 }),
    );
    const arbitrary = fc.record({
      method: fc.constantFrom<SyncMethod>('first', 'any'),
      num: fc.integer({ min: 1, max: 2_147_483_647 }),
      names: fc.array(name, { minLength: 1, maxLength: 6 }),
    });
    fc.assert(
      fc.property(arbitrary, (c) => {
        const text = formatSynchronousStandbyNames(c);
        const parsed = parse(text);
        assert.deepEqual([parsed.method, parsed.num, [...parsed.names]], [c.method, c.num, c.names], text);
      }),
      { seed: 20_240_611, numRuns: 2000 },
    );
  });
});

describe('parseSynchronousStandbyNames on random text', () => {
  it('returns a configuration or null, or throws INVALID_OPTIONS with a position inside the text', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.array(fc.constantFrom('FIRST', 'any', ' ', '2', '0', '(', ')', ',', 's1', '"', '""', '*', 'x y', ';'), { maxLength: 12 }).map((parts) => parts.join('')),
    );
    fc.assert(
      fc.property(text, (t) => {
        try {
          const config = parseSynchronousStandbyNames(t);
          if (config === null) {
            assert.match(t, /^[ \t\n\r\f\v]*$/, `null only when blank: ${JSON.stringify(t)}`);
          } else {
            assert.ok(config.num >= 1 && config.names.length >= 1, `a usable configuration from ${JSON.stringify(t)}`);
          }
        } catch (err) {
          assert.ok(isWalshipError(err, 'INVALID_OPTIONS'), `INVALID_OPTIONS for ${JSON.stringify(t)}, got ${String(err)}`);
          assert.ok(err instanceof SyncStandbyNamesError, 'with a position');
          const length = Array.from(t).length;
          assert.ok(err.position >= 1 && err.position <= length + 1, `position ${err.position} within ${JSON.stringify(t)}`);
        }
      }),
      { seed: 20_240_612, numRuns: 3000 },
    );
  });
});
